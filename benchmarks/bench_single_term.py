"""pylmem against mixedlm on the one-random-term cases, in one process, interleaved.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_single_term.py [CASE ...] [--reps 2]

For each case: the data are loaded once, then each library fits them ``--reps`` times in
turn (pylmem, mixedlm, pylmem, ...); the best wall and CPU (``time.process_time``) times,
pylmem's deviance evaluations and both logLiks are printed as a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT = ["q5_ML", "many_covariates_ML", "growth_curves_ML", "pairs_ML", "sim_1e5_ML",
           "sim_1e6_ML"]


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", default=DEFAULT)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-mixedlm", action="store_true")
    args = ap.parse_args(argv)
    import warnings

    from cases import CASES, SCALING

    import pylmem

    print("| case | pylmem wall (CPU) s | evals | mixedlm wall (CPU) s | speed-up (wall) | "
          "logLik pylmem | logLik mixedlm |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.cases:
        case = CASES.get(name) or SCALING[name]
        data = case.load()
        best = {"p": (1e9, 1e9), "m": (1e9, 1e9)}
        llp = llm = float("nan")
        nev = -1
        for _ in range(args.reps):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f, w, c = _timed(lambda c=case, d=data: pylmem.lmer(c.formula, d, reml=c.reml))
            best["p"] = min(best["p"], (w, c))
            llp, nev = float(f.loglik), int(f.n_iter)
            if not args.no_mixedlm:
                import mixedlm

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    g, w, c = _timed(lambda c=case, d=data: mixedlm.lmer(c.formula, d, REML=c.reml))
                best["m"] = min(best["m"], (w, c))
                llm = float(g.logLik())
        (pw, pc), (mw, mc) = best["p"], best["m"]
        other = "- | -" if args.no_mixedlm else f"{mw:.3f} ({mc:.3f}) | {mw / pw:.2f}x"
        print(f"| {name} | {pw:.3f} ({pc:.3f}) | {nev} | {other} | {llp:.6f} | {llm:.6f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
