"""Benchmark of the Dask fit: 10^7 / 10^8 rows from Parquet on a LocalCluster.

    python benchmarks/bench_dask.py --rows 1e7 [--rows 1e8] [--workers 2] [--in-memory]

Model: y = 1 + 0.5 x1 − 0.3 x2 + b0_g + b1_g x1 + b2_g x2 + e, 10^6 groups (ids in random
order over the rows, so every partition touches almost every group: the worst case for the
per-partition statistics), q = 3, fitted as ``y ~ x1 + x2 + (x1 + x2 | g)`` by ML.
The data are written once to ``benchmarks/out/dask_<rows>/part-*.parquet`` (git-ignored),
in files of ``--rows-per-file`` rows, reusing files already there.

Reported per size: wall time per pass (levels pass, statistics pass = read + statistics +
reduce, optimise on the client) and, from the cluster's task stream, the summed task time
by kind (read Parquet, statistics, reduce; inside the fused chain links, the time in the statistics and in the add is
measured separately); each worker's peak RSS (``ru_maxrss`` of the
worker process, a fresh cluster per size); and, with ``--in-memory`` (sizes ≤ 2·10^7), the
in-memory fit's logLik for comparison.  Results go to ``benchmarks/out/bench_dask.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

FORMULA = "y ~ x1 + x2 + (x1 + x2 | g)"
N_GROUPS = 10 ** 6


def write_data(rows: int, rows_per_file: int, seed: int = 14) -> Path:
    """Write (once) ``rows`` rows in Parquet files of ``rows_per_file`` rows."""
    import pandas as pd

    out = ROOT / "out" / f"dask_{rows:.0e}_{N_GROUPS:.0e}_{rows_per_file:.0e}".replace("+", "")
    out.mkdir(parents=True, exist_ok=True)
    n_files = -(-rows // rows_per_file)
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(np.array([[1.0, 0.1, -0.05], [0.1, 0.09, 0.0], [-0.05, 0.0, 0.04]]))
    b = rng.standard_normal((N_GROUPS, 3)) @ L.T
    t0 = time.perf_counter()
    for i in range(n_files):
        path = out / f"part-{i:04d}.parquet"
        m = min(rows_per_file, rows - i * rows_per_file)
        if path.exists():
            continue
        r = np.random.default_rng([seed, i])
        g = r.integers(0, N_GROUPS, m)
        x1, x2 = r.standard_normal(m), r.standard_normal(m)
        bg = b[g]
        y = 1 + 0.5 * x1 - 0.3 * x2 + bg[:, 0] + bg[:, 1] * x1 + bg[:, 2] * x2 + r.standard_normal(m)
        pd.DataFrame({"g": g, "x1": x1, "x2": x2, "y": y}).to_parquet(str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)
    print(f"data: {rows:.0e} rows in {n_files} files at {out} "
          f"({time.perf_counter() - t0:.1f} s to write)", flush=True)
    return out


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # bytes (Linux: KiB)


def _step_seconds():
    from pylmem.scaleout import reduce as dask_reduce

    return dict(dask_reduce.STEP_SECONDS)


def run_dask(path: Path, workers: int, memory_limit: str) -> dict:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster, get_task_stream
    from distributed.utils import key_split

    import pylmem

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", memory_limit=memory_limit,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        t0 = time.perf_counter()
        ddf = dd.read_parquet(str(path / "*.parquet"))
        with get_task_stream(client) as ts, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = pylmem.lmer(FORMULA, ddf, reml=False, verbose=True)
        wall = time.perf_counter() - t0
        kinds: dict = {}
        for task in ts.data:
            k = key_split(task["key"])
            for ss in task["startstops"]:
                if ss["action"] == "compute":
                    kinds[k] = kinds.get(k, 0.0) + ss["stop"] - ss["start"]
        peaks = client.run(_peak_rss)
        # inside the fused chain links: statistics (partition_stats) vs reduce (add_pairs)
        for per_worker in client.run(_step_seconds).values():
            for k, v in per_worker.items():
                kinds[f"link: {k}"] = kinds.get(f"link: {k}", 0.0) + v
        return dict(rows=fit.n_obs, partitions=ddf.npartitions, workers=workers,
                    loglik=fit.loglik, fixef=fit.fixef.to_dict(), theta=fit.theta.tolist(),
                    n_evals=fit.optsum.n_evals, converged=fit.converged, wall_seconds=wall,
                    phase_seconds=fit.phase_seconds, task_seconds=kinds,
                    worker_peak_rss_gib=[v / 2 ** 30 for v in peaks.values()])
    finally:
        client.close()
        cluster.close()


def run_in_memory(path: Path) -> dict:
    import pandas as pd

    import pylmem

    d = pd.read_parquet(path)
    t0 = time.perf_counter()
    fit = pylmem.lmer(FORMULA, d, reml=False)
    return dict(loglik=fit.loglik, fixef=fit.fixef.to_dict(), theta=fit.theta.tolist(),
                seconds=time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="append", type=float, help="1e7, 1e8 (repeatable)")
    ap.add_argument("--rows-per-file", type=float, default=2e6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--groups", type=float, default=1e6)
    ap.add_argument("--memory-limit", default="4GiB", help="dask worker memory limit")
    ap.add_argument("--in-memory", action="store_true", help="also fit in memory (≤ 2e7 rows)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_dask.json"))
    args = ap.parse_args(argv)
    global N_GROUPS
    N_GROUPS = int(args.groups)
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for rows in [int(r) for r in (args.rows or [1e7])]:
        path = write_data(rows, int(args.rows_per_file))
        res = run_dask(path, args.workers, args.memory_limit)
        if args.in_memory and rows <= 2 * 10 ** 7:
            mem = run_in_memory(path)
            res["in_memory"] = mem
            res["loglik_rel_diff"] = abs(res["loglik"] - mem["loglik"]) / abs(mem["loglik"])
        print(json.dumps(res, indent=1), flush=True)
        results[f"{rows:.0e} rows, {N_GROUPS:.0e} groups"] = res
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
