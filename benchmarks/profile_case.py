"""Profile one pylmem fit of a benchmark case: time, peak memory, evaluations, cProfile.

    python benchmarks/profile_case.py crossed_slopes_both_ML [--top 25] [--lib mixedlm]

Prints the fit's wall time, the process's peak RSS growth during the fit, logLik, the
number of deviance evaluations and (unless ``--no-profile``) the top of a cProfile sorted by
cumulative time of a second fit.  Run with ``OMP_NUM_THREADS=1``.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--lib", default="pylmem")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    from cases import CASES, SCALING

    case = CASES.get(args.case) or SCALING[args.case]
    data = case.load()
    if args.lib == "pylmem":
        import pylmem

        def fit():
            return pylmem.lmer(case.formula, data, reml=case.reml)

        def ll(f):
            return float(f.loglik), int(f.n_iter)
    else:
        import mixedlm

        def fit():
            return mixedlm.lmer(case.formula, data, REML=case.reml)

        def ll(f):
            return float(f.logLik()), -1
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    f = fit()
    t, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    val, nev = ll(f)
    print(f"{args.case} [{args.lib}]: {t:.3f} s (CPU {cpu:.3f} s), peak RSS +{(rss1 - rss0) / 1024:.0f} MiB "
          f"(total {rss1 / 1024:.0f} MiB), logLik {val:.10f}, evals {nev}")
    if not args.no_profile:
        pr = cProfile.Profile()
        pr.enable()
        fit()
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
