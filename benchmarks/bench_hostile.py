"""Hostile-input cases: pylmem's logLik against lme4's best, and fit time.

    python benchmarks/bench_hostile.py

lme4's numbers are read from tests/reference/hostile_lme4.json (best of nloptwrap,
bobyqa and Nelder_Mead; make_hostile_refs.R), so R is not needed.
"""
import json
import time
import warnings
from pathlib import Path

import pandas as pd

import pylmem

REF = Path(__file__).resolve().parents[1] / "tests" / "reference"


def main():
    refs = json.loads((REF / "hostile_lme4.json").read_text())
    print("| case | pylmem logLik − lme4 best | lme4's best optimizer | pylmem s | warnings |")
    print("| --- | ---: | --- | ---: | --- |")
    for name, r in refs.items():
        d = pd.read_csv(REF / "hostile" / r["data"])
        best = float("inf")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(3):
                t = time.perf_counter()
                f = pylmem.lmer(r["formula"], d, reml=False)
                best = min(best, time.perf_counter() - t)
        print(f"| {name} | {f.loglik - r['loglik']:.3g} | {r['optimizer']} | {best:.3f} | "
              f"{'; '.join(f.warnings) or '-'} |")


if __name__ == "__main__":
    main()
