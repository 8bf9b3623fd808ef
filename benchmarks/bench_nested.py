"""pylmem against mixedlm on the nested / crossed-with-slope multi-term cases, in one process.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_nested.py [--reps 5] [--cases a,b]

Warm fits (one warm-up each), interleaved pylmem / mixedlm, best of ``--reps``: CPU
(``time.process_time``) and wall seconds, deviance evaluations (pylmem) and logLik.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT = "nested_slope_ML,three_level_ML,crossed_slope_ML,crossed_slopes_both_ML"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=DEFAULT)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-mixedlm", action="store_true")
    args = ap.parse_args(argv)
    from cases import CASES

    import pylmem
    libs = {"pylmem": lambda c, d: pylmem.lmer(c.formula, d, reml=c.reml)}
    if not args.no_mixedlm:
        import mixedlm
        libs["mixedlm"] = lambda c, d: mixedlm.lmer(c.formula, d, REML=c.reml)
    for name in args.cases.split(","):
        case = CASES[name]
        data = case.load()
        best = {k: [float("inf"), float("inf")] for k in libs}
        info = {}
        for lib, fit in libs.items():     # warm-up
            f = fit(case, data)
            info[lib] = (float(f.loglik) if lib == "pylmem" else float(f.logLik()),
                         int(f.n_iter) if lib == "pylmem" else -1)
        for _ in range(args.reps):
            for lib, fit in libs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fit(case, data)
                t, c = time.perf_counter() - t0, time.process_time() - c0
                best[lib][0] = min(best[lib][0], c)
                best[lib][1] = min(best[lib][1], t)
        for lib in libs:
            ll, nev = info[lib]
            print(f"{name} {lib}: CPU {best[lib][0]:.3f} s, wall {best[lib][1]:.3f} s, "
                  f"evals {nev}, logLik {ll:.10f}")
        if "mixedlm" in libs:
            print(f"{name}: mixedlm/pylmem CPU {best['mixedlm'][0] / best['pylmem'][0]:.2f}x, "
                  f"wall {best['mixedlm'][1] / best['pylmem'][1]:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
