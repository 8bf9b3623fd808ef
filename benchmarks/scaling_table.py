"""Scaling table of crossed scalar terms, ``y ~ x + (1 | a) + (1 | b)``: levels × rows.

    OPENBLAS_NUM_THREADS=1 python benchmarks/scaling_table.py --out /tmp/scaling_table.md
    python benchmarks/scaling_table.py --levels 1000,10000 --rows 100000,1000000 --libs pylmem
    python benchmarks/scaling_table.py --movielens 1,2,4 --libs pylmem

Each point (L levels drawn uniformly for each of a and b, n rows: ``cases.simulate_crossed_scalar``;
or MovieLens-1M shaped, users × movies × rows scaled by k: ``cases.simulate_movielens``) is one
fit in a fresh child process, under a wall-clock limit: reported are the fit's wall and CPU
seconds, the growth of the child's peak RSS during the fit (the data generated before it), the
log-likelihood, the deviance evaluations and pylmem's rest-block path.  A point whose data
would not fit (``--max-cells``) or whose dense rest block would exceed ``--max-block-gib`` is
reported as skipped, not run; once a library times out at a number of levels it is not run
at more rows.  Run the big points one at a time (one child at a time, as here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from cases import simulate_crossed_scalar, simulate_movielens
spec = json.loads({spec!r})
if spec["kind"] == "crossed":
    data = simulate_crossed_scalar(spec["rows"], spec["levels"], spec["levels"], seed=20241004)
    formula = "y ~ x + (1 | a) + (1 | b)"
else:
    k = spec["k"]
    data = simulate_movielens(int(6040 * k), int(3706 * k), int(1_000_000 * k))
    formula = "y ~ 1 + (1 | user) + (1 | movie)"
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0, c0 = time.perf_counter(), time.process_time()
out = {{}}
if spec["lib"] == "pylmem":
    import pylmem
    f = pylmem.lmer(formula, data, reml=False)
    out["loglik"], out["evals"] = float(f.loglik), int(f.n_iter)
    r = f.dev.rest
    out["path"] = r.backend + ("/product" if getattr(r, "_product", None) is not None else "")
    out["m"] = int(r.m)
else:
    import mixedlm
    f = mixedlm.lmer(formula, data, REML=False)
    out["loglik"] = float(f.logLik())
out["seconds"], out["cpu"] = time.perf_counter() - t0, time.process_time() - c0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["rss_mib"], out["peak_mib"] = (rss1 - rss0) / 1024, rss1 / 1024
print("RESULT " + json.dumps(out))
"""


def run_point(spec, timeout):
    code = CHILD.format(here=str(HERE), spec=json.dumps(spec))
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout ({timeout:.0f} s)"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["status"] = "ok"
            return r
    err = (p.stderr.strip().splitlines() or ["?"])[-1]
    return {"status": f"failed: {err[:80]}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1000,10000,100000")
    ap.add_argument("--rows", default="100000,1000000,10000000")
    ap.add_argument("--movielens", default="", help="scale factors k of the MovieLens-shaped problem")
    ap.add_argument("--libs", default="pylmem,mixedlm")
    ap.add_argument("--timeout", type=float, default=600.0, help="limit (s) of each child (pylmem)")
    ap.add_argument("--peer-timeout", type=float, default=300.0, help="limit (s) of each child (peers)")
    ap.add_argument("--max-block-gib", type=float, default=4.0,
                    help="skip points whose dense rest block (8 m² bytes, m ~ levels) exceeds this "
                         "unless the rest block is sparse (rows per level below ~L/10)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    libs = args.libs.split(",")
    rows_out = []

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    points = []
    for L in map(int, filter(None, args.levels.split(","))):
        for n in map(int, filter(None, args.rows.split(","))):
            points.append(({"kind": "crossed", "levels": L, "rows": n}, f"{L:,} × {L:,}", n))
    for k in map(float, filter(None, args.movielens.split(","))):
        points.append(({"kind": "movielens", "k": k},
                       f"MovieLens ×{k:g} ({int(6040 * k):,} × {int(3706 * k):,})", int(1_000_000 * k)))
    dead = set()
    for spec, label, n in points:
        for lib in libs:
            key = (lib, spec.get("levels", "ml"))
            if key in dead:
                rows_out.append((label, n, lib, {"status": "not run (timed out at fewer rows)"}))
                continue
            # a dense-pattern rest block of L levels: each first-term level meets ~n/L rest levels
            L = spec.get("levels", 0)
            if L and n / L > 0.1 * L ** 0.5 and 8.0 * L * L / 2**30 > args.max_block_gib:
                rows_out.append((label, n, lib, {"status": f"skipped (dense {L:,}² block "
                                                           f"{8.0 * L * L / 2**30:.0f} GiB)"}))
                continue
            log(f"== {label}, {n:,} rows: {lib}")
            r = run_point(dict(spec, lib=lib), args.timeout if lib == "pylmem" else args.peer_timeout)
            log(f"   {r}")
            if r["status"].startswith("timeout"):
                dead.add(key)
            rows_out.append((label, n, lib, r))
    lines = [("| levels (a × b) | rows | library | wall s | CPU s | peak RSS growth / total (MiB) | logLik "
              "| evals | rest path |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for label, n, lib, r in rows_out:
        if r["status"] == "ok":
            lines.append(f"| {label} | {n:,} | {lib} | {r['seconds']:.3g} | {r['cpu']:.3g} | {r['rss_mib']:.0f} / {r.get('peak_mib', 0):.0f} | "
                         f"{r['loglik']:.4f} | {r.get('evals', '')} | "
                         f"{r.get('path', '')}{' m=' + format(r['m'], ',') if 'm' in r else ''} |")
        else:
            lines.append(f"| {label} | {n:,} | {lib} | {r['status']} | | | | | |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
