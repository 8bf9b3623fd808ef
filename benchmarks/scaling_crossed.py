"""Scaling curve of crossed scalar terms: ``y ~ x + (1 | a) + (1 | b)`` with L levels each.

    python benchmarks/scaling_crossed.py --out /tmp/scaling_crossed.md
    python benchmarks/scaling_crossed.py --levels 1000,10000 --libs pylmem,mixedlm

For L in 10^3 .. 10^5 (2 L rows, levels drawn uniformly: see ``cases.SCALING``) each library
fits once after a warm-up in its own child process (``compare.py``'s workers), under a
wall-clock limit; reported: seconds of the fit, the child's peak RSS, the log-likelihood.
Once a library times out it is not run at the larger sizes.  pylmem's rest block is the
Schur complement of the first term (~0.86 L levels of b), factorised by CHOLMOD: its fill,
not the rows, sets the time (see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    import compare
    from cases import SCALING, SCALING_LEVELS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default=",".join(map(str, SCALING_LEVELS)))
    ap.add_argument("--libs", default="pylmem,lme4,mixedlm")
    ap.add_argument("--timeout", type=float, default=600.0, help="limit (s) of each child process")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    args.reps, args.budget, args.quick = 1, 1.0, False
    libs = args.libs.split(",")
    skip = compare.available_peers()
    rows, dead = [], set()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="pylmem-scale-") as tmp:
        for L in map(int, args.levels.split(",")):
            case = SCALING[f"scale_{L}"]
            log(f"== {case.name}: {case.description}")
            live = [lib for lib in libs if lib not in dead]
            compare.DEFAULT_TIMEOUT["pylmem"] = args.timeout
            out = compare.run_case(case, live, skip, args, tmp, log)
            for r in out:
                r["levels"] = L
                if r.get("status", "").startswith("timeout"):
                    dead.add(r["lib"])
            rows += out
    lines = ["| levels per factor | rows | library | seconds | peak RSS (MiB) | logLik |",
             "|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        sec = f"{r['seconds']:.3g}" if r.get("status") == "ok" else r.get("status", "")
        rss = f"{r['maxrss_kib'] / 1024:.0f}" if r.get("maxrss_kib") else ""
        ll = f"{r['loglik']:.4f}" if "loglik" in r else ""
        lines.append(f"| {r['levels']} | {2 * r['levels']} | {r['lib']} | {sec} | {rss} | {ll} |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
