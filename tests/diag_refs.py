"""Fits of tests/reference/diagnostics_refs.json (made by make_diagnostics_refs.R)."""
import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

import pylmem
from pylmem.datasets import load

REFS = json.loads((Path(__file__).parent / "reference" / "diagnostics_refs.json").read_text())

SLEEP = "Reaction ~ Days + (Days | Subject)"
PEN = "diameter ~ 1 + (1 | plate) + (1 | sample)"
SLEEP_OFF = "Reaction ~ Days + offset(off) + (Days | Subject)"


def data(name: str) -> pd.DataFrame:
    d = load(name)
    if name == "sleepstudy":
        d["w"] = REFS["data"]["sleepstudy_w"]
        d["off"] = REFS["data"]["sleepstudy_off"]
    if name == "Penicillin":
        d["w"] = REFS["data"]["penicillin_w"]
    return d


def newdata() -> pd.DataFrame:
    return pd.DataFrame(REFS["newdata"])


@lru_cache(maxsize=None)
def ref_fit(key: str):
    """The pylmem fit of reference ``key`` (e.g. "sleep_w_reml")."""
    base, tag = key.rsplit("_", 1)
    reml = tag == "reml"
    if base == "sleep_w":
        return pylmem.lmer(SLEEP, data("sleepstudy"), reml=reml, weights="w")
    if base == "penicillin_w":
        d = data("Penicillin")
        return pylmem.lmer(PEN, d, reml=reml, weights=d["w"].to_numpy())
    if base == "sleep":
        return pylmem.lmer(SLEEP, data("sleepstudy"), reml=reml)
    if base == "penicillin":
        return pylmem.lmer(PEN, data("Penicillin"), reml=reml)
    if base == "sleep_off":
        return pylmem.lmer(SLEEP_OFF, data("sleepstudy"), reml=reml)
    raise KeyError(key)


KEYS = [f"{b}_{t}" for b in ("sleep_w", "penicillin_w", "sleep", "penicillin", "sleep_off")
        for t in ("reml", "ml")]
WEIGHTED = [k for k in KEYS if "_w_" in k]
