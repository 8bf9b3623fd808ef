"""Measure the constants of the rest block's cost model (``pylmem/numerics/rest_block.py``).

    OMP_NUM_THREADS=1 python benchmarks/calibrate_rest.py

On the crossed-slopes design (``crossed_slopes_both_ML``, 1,000 × 500, q = 2 on both) it
forms the K map once (its set-up per entry), times the per-θ sparse mat-vec per entry of
K, and one ``dsyrk`` per multiply-add; CPU seconds, so that a loaded machine changes them
less.  Only the ratios enter the choice: copy the printed values into ``_T_K_SETUP``,
``_T_K_ENTRY`` and ``_T_SYRK`` if the machine differs much.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg.blas import dsyrk

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    import cases

    import pylmem.numerics.rest_block as rb
    from pylmem.estimation.fitting import W, crossproducts
    from pylmem.model.design import build_design
    from pylmem.numerics.deviance import ProfiledDeviance

    rb._BLAS = False
    des = build_design("y ~ x + (x | subj) + (x | item)", cases.simulate_crossed_slopes())
    cp = crossproducts(*W.scaled(des))
    t = time.process_time()
    dev = ProfiledDeviance(cp, [t_.q for t_ in des.terms], [t_.n_levels for t_ in des.terms], reml=False)
    setup = time.process_time() - t
    K = dev.rest.K
    v = np.random.default_rng(0).random(K.shape[1])
    t = time.process_time()
    for _ in range(5):
        K @ v
    mv = (time.process_time() - t) / 5
    A = np.asfortranarray(np.random.default_rng(1).random((1000, 2000)))
    C = np.zeros((1000, 1000), order="F")
    t = time.process_time()
    for _ in range(3):
        dsyrk(-1.0, A, beta=0.0, c=C, lower=1, overwrite_c=1)
    sy = (time.process_time() - t) / 3
    print(f"K entries {K.nnz}: set-up {setup / K.nnz:.2e} s/entry (_T_K_SETUP), "
          f"mat-vec {mv / K.nnz:.2e} s/entry (_T_K_ENTRY); dsyrk {sy / 1e9:.2e} s/multiply-add (_T_SYRK)")
    print(f"in the code: _T_K_SETUP {rb._T_K_SETUP:.2e}, _T_K_ENTRY {rb._T_K_ENTRY:.2e}, _T_SYRK {rb._T_SYRK:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
