"""glmer side by side: pylmem, mixedlm 1.3.0 and lme4 (Rscript), one run each, same machine.

    python3 benchmarks/bench_glmer.py [--cases cbpp verbagg insteval] [--no-lme4]

Prints seconds and log-likelihoods per library (pylmem's includes every constant; for
Laplace fits lme4's does too).  lme4 runs with its defaults (as a user would); the best of
several optimisers with tolPwrss = 1e-12 is in tests/reference/glmer_refs.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import pylmem
from pylmem.datasets import load

REF = Path(__file__).resolve().parents[1] / "tests" / "reference" / "glmer_data"


def _cases():
    cbpp = load("cbpp")
    cbpp = cbpp.assign(fail=cbpp["size"] - cbpp["incidence"])   # mixedlm's cbind takes columns
    va = pd.read_csv(REF / "VerbAgg.csv", dtype={"id": str, "item": str})
    ie = load("InstEval")
    ie = ie.assign(good=(ie["y"] >= 4).astype(int))
    return {
        "cbpp": ("cbind(incidence, fail) ~ period + (1 | herd)", cbpp, "binomial"),
        "verbagg": ("r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", va, "binomial"),
        "insteval": ("good ~ service + (1 | s) + (1 | d) + (1 | dept)", ie, "binomial"),
    }


def run_pylmem(formula, data, family):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = pylmem.glmer(formula, data, family=family)
    return time.perf_counter() - t, m.loglik


def run_mixedlm(formula, data, family):
    import mixedlm

    fam = mixedlm.families.Binomial() if family == "binomial" else mixedlm.families.Poisson()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = mixedlm.glmer(formula, data, family=fam)
    el = time.perf_counter() - t
    ll = m.logLik() if callable(getattr(m, "logLik", None)) else getattr(m, "loglik", np.nan)
    return el, float(getattr(ll, "value", ll))


def run_lme4(formula, data, family):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "d.csv"
        data.to_csv(p, index=False)
        code = f"""
suppressMessages(library(lme4))
d <- read.csv("{p}", stringsAsFactors = TRUE)
for (v in c("herd", "period", "id", "item", "s", "d", "dept", "service")) if (v %in% names(d)) d[[v]] <- factor(d[[v]])
t <- system.time(m <- glmer({formula}, d, family = {family}))[["elapsed"]]
cat(sprintf('{{"seconds": %.4f, "loglik": %.10f}}', t, as.numeric(logLik(m))))
"""
        out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return res["seconds"], res["loglik"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=["cbpp", "verbagg"])
    ap.add_argument("--libs", nargs="*", default=["pylmem", "mixedlm", "lme4"])
    args = ap.parse_args()
    cases = _cases()
    runners = {"pylmem": run_pylmem, "mixedlm": run_mixedlm, "lme4": run_lme4}
    for name in args.cases:
        formula, data, family = cases[name]
        row = {}
        for lib in args.libs:
            try:
                row[lib] = runners[lib](formula, data, family)
            except Exception as e:  # a peer that fails is reported, not fatal
                row[lib] = (np.nan, f"failed: {type(e).__name__}: {str(e)[:60]}")
        base = row.get("pylmem", (np.nan,))[0]
        parts = [f"{lib} {s:.3f} s (ll {ll if isinstance(ll, str) else f'{ll:.4f}'}, "
                 f"{s / base:.1f}x)" for lib, (s, ll) in row.items()]
        print(f"{name:9s} n={len(data):6d}  " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
