"""Shared fixtures: the lme4 reference fits and a cache of pylmem fits of them."""
import json
import warnings
from functools import lru_cache
from pathlib import Path

import pytest

import pylmem
from pylmem.datasets import load

REFERENCE = json.loads((Path(__file__).parent / "reference" / "lme4_fits.json").read_text())


def reference_data(name: str):
    """The data frame a reference fit was made on (as make_refs.R prepares it)."""
    ref = REFERENCE[name]
    d = load(ref["data"].rsplit("/", 1)[-1].removesuffix(".csv"))
    if name.startswith("rat"):
        d["week2"] = d["week"] ** 2
    if "male" in name:
        d = d[d["gender"] == "Male"]
    return d


@lru_cache(maxsize=None)
def reference_fit(name: str):
    ref = REFERENCE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", pylmem.ConvergenceWarning)
        return pylmem.lmer(ref["formula"], reference_data(name), reml=ref["reml"])


@pytest.fixture(scope="session")
def reference():
    return REFERENCE
