"""Diagnostics after the fit: pylmem beside lme4 in one run.

Times, for an already fitted model, hatvalues (all n leverages), cooks.distance,
prediction standard errors (pylmem only: lme4 has none) and group deletion
(influence by refitting).  lme4 runs in one Rscript child per case; figures are medians
of ``--reps`` repetitions, and ratios are lme4 / pylmem.

    python benchmarks/bench_diagnostics.py [--reps 3] [--cases sleepstudy,Penicillin,InstEval]
                                           [--no-lme4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import pylmem  # noqa: E402
from pylmem.datasets import load  # noqa: E402

CASES = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "Subject"),
    "Penicillin": ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "plate"),
    "InstEval": ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", None),
}

R_CODE = r"""
suppressMessages({library(lme4); library(jsonlite)})
a <- commandArgs(TRUE); d <- read.csv(a[1], stringsAsFactors=TRUE)
for (g in strsplit(a[4], ",")[[1]]) d[[g]] <- factor(d[[g]])
reps <- as.integer(a[3]); grp <- a[5]
f <- lmer(as.formula(a[2]), data=d, REML=FALSE)
tm <- function(fn) {  # median over reps of the mean time of k calls (k: >= 0.2 s a batch)
  k <- 1; while ((e <- system.time(for (j in 1:k) fn())[["elapsed"]]) < 0.2 && k < 1e4) k <- k * 4
  t <- numeric(reps); for (i in 1:reps) t[i] <- system.time(for (j in 1:k) fn())[["elapsed"]] / k
  median(t) }
out <- list(hatvalues=tm(function() hatvalues(f)), cooks=tm(function() cooks.distance(f)))
if (grp != "none") out$influence <- tm(function() influence(f, groups=grp))
cat(toJSON(out, auto_unbox=TRUE, digits=NA))
"""


def _median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def run_case(name, reps, lme4=True):
    ds, formula, grp = CASES[name]
    d = load(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pylmem.lmer(formula, d, reml=False)
    out = {"n": fit.n_obs}

    def fresh(method):
        def go():
            fit.__dict__.pop("_intervals_cache", None)
            return getattr(fit, method)()
        return go
    out["pylmem"] = {"hatvalues": _median_time(fresh("hatvalues"), reps),
                     "cooks": _median_time(fresh("cooks_distance"), reps),
                     "predict_se": _median_time(lambda: (fit.__dict__.pop("_intervals_cache", None),
                                                         fit.predict(d, se_fit=True)), reps)}
    if grp:
        out["pylmem"]["influence"] = _median_time(lambda: fit.influence(grp), reps)
    if not lme4:
        out["lme4"] = {}
        return out
    cats = [c for c in d.columns if d[c].dtype == object or str(d[c].dtype) in ("str", "string")]
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "d.csv")
        d.to_csv(csv, index=False)
        rs = os.path.join(tmp, "b.R")
        with open(rs, "w") as fh:
            fh.write(R_CODE)
        try:
            p = subprocess.run(["Rscript", rs, csv, formula, str(reps), ",".join(cats),
                                grp or "none"], capture_output=True, text=True, timeout=600)
            out["lme4"] = json.loads(p.stdout.strip().splitlines()[-1])
        except Exception as e:  # R missing or failed: pylmem figures only
            out["lme4"] = {"error": str(e)[:200]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--no-lme4", action="store_true", help="pylmem figures only")
    args = ap.parse_args(argv)
    print("| case | n | operation | pylmem (s) | lme4 (s) | lme4 / pylmem |")
    print("|---|---:|---|---:|---:|---:|")
    for name in args.cases.split(","):
        res = run_case(name, args.reps, lme4=not args.no_lme4)
        for op, t in res["pylmem"].items():
            r = res["lme4"].get(op)
            ratio = f"{r / t:.1f}" if isinstance(r, (int, float)) and t > 0 else "-"
            rtxt = f"{r:.4f}" if isinstance(r, (int, float)) else "-"
            print(f"| {name} | {res['n']} | {op} | {t:.4f} | {rtxt} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
