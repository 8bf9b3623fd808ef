"""Bundled data sets: the seed's rat weights and lme4's classic examples.

``load(name)`` returns a pandas DataFrame.  Grouping columns that look numeric
(``Subject`` in sleepstudy, the ids of InstEval, ...) are returned as strings,
as R's ``factor`` would treat them, so that formulas need no ``factor()``.

A leaf: imports nothing of pylmem (the command line and users load from it).
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

# name -> (file, columns to read as categorical strings)
_DATASETS = {
    "ratWeight": ("ratWeight.csv", ("id", "regime", "gender", "dosage")),
    "sleepstudy": ("sleepstudy.csv", ("Subject",)),
    "Dyestuff": ("Dyestuff.csv", ("Batch",)),
    "Penicillin": ("Penicillin.csv", ("plate", "sample")),
    "Pastes": ("Pastes.csv", ("batch", "cask", "sample")),
    "cake": ("cake.csv", ("replicate", "recipe")),
    "Machines": ("Machines.csv", ("Worker", "Machine")),
    "InstEval": ("InstEval.csv.gz", ("s", "d", "studage", "lectage", "service", "dept")),
    "cbpp": ("cbpp.csv", ("herd", "period")),
}


def names() -> list[str]:
    """Names of the bundled data sets."""
    return sorted(_DATASETS)


def path(name: str):
    """Filesystem path of a bundled data set's file."""
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(names())}")
    return resources.files(__name__).joinpath("data", _DATASETS[name][0])


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set by name (see :func:`names`)."""
    p = path(name)
    factors = _DATASETS[name][1]
    with resources.as_file(p) as fp:
        df = pd.read_csv(fp, dtype={c: str for c in factors})
    return df
