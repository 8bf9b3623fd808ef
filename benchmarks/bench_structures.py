"""Benchmark of covariance structures: ``ar1`` on a 10-occasion repeated-measures term.

Simulated data (fixed seed): ``n_sub`` subjects × 10 occasions, one observation each,
y = 1 + 0.2 t + b_it + e with b_i ~ AR(1) (ρ = 0.6, sd 1) across the occasions and
e ~ N(0, 0.5²).  The model ``y ~ t + ar1(0 + time | subject)`` (time categorical, so the
term has 10 columns: 2 covariance parameters instead of the unstructured 55) is fitted by
pylmem (ML), beside the same model with the unstructured term and with ``cs()``, and, when
``Rscript`` and glmmTMB are installed, by glmmTMB's ``ar1(0 + time | subject)`` (ML) in one
run.  Times are one run each (glmmTMB) and the best of ``--reps`` (pylmem); the log-likelihoods
are printed so that the fits can be seen to agree.

Run:  ``python benchmarks/bench_structures.py [--subjects 10000] [--reps 1] [--no-r]``
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
from bench_em import best_of  # noqa: E402  (the benchmarks' one timing helper)

import pylmem  # noqa: E402

R_SCRIPT = r"""
suppressMessages(library(glmmTMB))
d <- read.csv(commandArgs(TRUE)[1]); d$time <- factor(d$time); d$subject <- factor(d$subject)
t0 <- proc.time()[["elapsed"]]
m <- glmmTMB(y ~ t + ar1(0 + time | subject), data = d, REML = FALSE)
cat(sprintf("glmmTMB %.3f %.6f\n", proc.time()[["elapsed"]] - t0, as.numeric(logLik(m))))
"""


def simulate(n_sub, n_t=10, rho=0.6, seed=20261201):
    rng = np.random.default_rng(seed)
    R = rho ** np.abs(np.subtract.outer(np.arange(n_t), np.arange(n_t)))
    b = rng.standard_normal((n_sub, n_t)) @ np.linalg.cholesky(R).T
    t = np.tile(np.arange(n_t), n_sub)
    y = 1 + 0.2 * t + b.ravel() + 0.5 * rng.standard_normal(n_sub * n_t)
    return pd.DataFrame({"subject": np.repeat([f"s{i:05d}" for i in range(n_sub)], n_t),
                         "time": [f"t{k:02d}" for k in t], "t": t.astype(float), "y": y})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-r", action="store_true")
    args = ap.parse_args()
    d = simulate(args.subjects)
    print(f"{len(d)} rows, {args.subjects} subjects x 10 occasions")
    for label, f in (("ar1", "y ~ t + ar1(0 + time | subject)"),
                     ("cs", "y ~ t + cs(0 + time | subject)"),
                     ("us", "y ~ t + (0 + time | subject)")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sec, fit = best_of(lambda f=f: pylmem.lmer(f, d, reml=False), args.reps)
        print(f"pylmem {label:3s} {sec:8.3f} s  logLik {fit.loglik:.6f}  npar {fit.n_params}  "
              f"evals {fit.optsum.n_evals}")
    if args.no_r or shutil.which("Rscript") is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "ar1.csv")
        d.to_csv(csv, index=False)
        script = os.path.join(tmp, "tmb.R")
        with open(script, "w") as fh:
            fh.write(R_SCRIPT)
        t0 = time.perf_counter()
        out = subprocess.run(["Rscript", script, csv], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr.strip()[-500:],
              f"(wall {time.perf_counter() - t0:.1f} s incl. R start-up and reading)")


if __name__ == "__main__":
    main()
