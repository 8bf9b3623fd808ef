"""Inference timings: pylmem beside lmerTest / pbkrtest / lme4 (Rscript), in one run.

    python benchmarks/bench_inference.py [--reps 5] [--out FILE]

Cases: the rat data ``weight ~ week + (week | id)`` (160 groups, q = 2, 2,235 rows),
sleepstudy ``Reaction ~ Days + (Days | Subject)`` and cake ``angle ~ recipe * temperature
+ (1 | recipe:replicate)``.  pylmem: best of ``reps`` after a warm-up; the inference
caches are cleared between repetitions, so each timing is the full cost "beyond the fit".
R: the same, with ``system.time`` (lmerTest computes its Hessian and Jacobian inside
``lmer``, so its Satterthwaite cost is lmerTest's fit minus lme4's).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pylmem  # noqa: E402
from pylmem.datasets import load  # noqa: E402

CASES = [("rat", "weight ~ week + (week | id)", "ratWeight", ()),
         ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "sleepstudy", ()),
         ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", "cake", ("temperature",))]


def best(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def fresh(fit):
    for a in ("_varpar_info_cache", "_kr_info_cache"):
        fit.__dict__.pop(a, None)
    return fit


def run_pylmem(reps):
    out = {}
    warnings.simplefilter("ignore")
    for name, formula, data, factors in CASES:
        d = load(data)
        fit = pylmem.lmer(formula, d, factors=factors)
        ml = pylmem.lmer(formula, d, factors=factors, reml=False)
        r = {"fit": best(lambda: pylmem.lmer(formula, d, factors=factors), reps),
             "fit_ml": best(lambda: pylmem.lmer(formula, d, factors=factors, reml=False), reps),
             "satt_table": best(lambda: fresh(fit).coef_table("Satterthwaite"), reps),
             "anova3": best(lambda: pylmem.anova(fresh(fit)), reps),
             "kr_table": best(lambda: fresh(fit).coef_table("Kenward-Roger"), max(1, reps // 2))}
        if name != "cake":
            t0 = time.perf_counter()
            ml.confint(method="profile")
            r["profile_confint"] = time.perf_counter() - t0
        out[name] = r
    return out


def run_r(reps):
    try:
        res = subprocess.run(["Rscript", str(ROOT / "benchmarks" / "bench_inference.R"), str(reps)],
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
        return json.loads(res.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as e:
        print(f"R timings unavailable: {e}", file=sys.stderr)
        return {}


def fmt(x):
    return "—" if x is None else f"{1000 * x:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    py = run_pylmem(a.reps)
    R = run_r(a.reps)
    lines = ["| case | step | pylmem (ms) | R (ms) | R function |", "| --- | --- | ---: | ---: | --- |"]
    for name, *_ in CASES:
        p, r = py[name], R.get(name, {})
        satt_r = None if not r else r["lmerTest_fit"] - r["lme4_fit"] + r["satt_table"]
        rows = [("fit (REML)", p["fit"], r.get("lme4_fit"), "lme4::lmer"),
                ("Satterthwaite table, beyond the fit", p["satt_table"], satt_r,
                 "lmerTest::lmer − lme4::lmer + summary()"),
                ("type III anova (Satterthwaite)", p["anova3"], r.get("anova3"), "anova(lmerTest fit)"),
                ("Kenward–Roger table", p["kr_table"], r.get("kr_table"), "summary(ddf = \"Kenward-Roger\")"),
                ("fit (ML)", p["fit_ml"], r.get("lme4_fit_ml"), "lme4::lmer(REML = FALSE)")]
        if "profile_confint" in p:
            rows.append(("profile confint (ML)", p["profile_confint"], r.get("profile_confint"),
                         "confint(method = \"profile\")"))
        for step, x, y, fn in rows:
            lines.append(f"| {name} | {step} | {fmt(x)} | {fmt(y)} | {fn} |")
    ratios = ["", f"Profile CIs / ML fit time, pylmem: rat {py['rat']['profile_confint'] / py['rat']['fit_ml']:.0f}×, "
              f"sleepstudy {py['sleepstudy']['profile_confint'] / py['sleepstudy']['fit_ml']:.0f}×."]
    import datetime
    import os

    head = [f"Inference timings (benchmarks/bench_inference.py, {datetime.date.today()}, best of "
            f"{a.reps}; load average at the end {os.getloadavg()[0]:.1f} on this 2-core machine "
            "shared with other jobs, so absolute times are inflated; compare within a row).", ""]
    text = "\n".join(head + lines + ratios)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
