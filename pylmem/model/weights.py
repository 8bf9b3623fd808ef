"""Prior weights and offsets, as lme4's ``weights=`` and ``offset()``.

Prior weights w_i give observation i the residual variance σ²/w_i.  Scaling the rows of
y, X and Z by √w_i turns the model into an unweighted one, so the profiled deviance is
computed from the cross-products of the scaled rows; only the Jacobian of the scaling
remains: −2 log L gains −Σ log w_i (lme4's deviance and REML criterion both subtract it).

An offset o_i is a known part of the linear predictor: the model is fitted to y − o and
fitted values / predictions add o back.  ``offset(expr)`` terms of the fixed part and the
``offset=`` argument (a column name or an array) add up, as in R.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .formula import split_sum

_OFFSET = re.compile(r"^offset\((.*)\)$", re.S)


def split_offsets(fixed: str) -> tuple[str, list[str]]:
    """Remove ``offset(expr)`` terms from a fixed right-hand side: (rest, [expr, ...])."""
    keep, offs = [], []
    for sign, term in split_sum(fixed):
        m = _OFFSET.match(term.strip())
        if m:
            if sign == "-":
                raise ValueError(f"an offset cannot be subtracted: '- {term}'")
            offs.append(m.group(1).strip())
        else:
            keep.append(term if sign == "+" else f"- {term}")
    if not offs:
        return fixed, []
    rest = " + ".join(keep).replace("+ -", "-") if keep else "1"
    if rest.startswith("- "):
        rest = "1 " + rest
    return rest, offs


def offset_variables(exprs, data: pd.DataFrame) -> set:
    """Data columns used by offset expressions (plain names; else every column named)."""
    out = set()
    for e in exprs:
        if e in data.columns:
            out.add(e)
        else:
            out |= {c for c in data.columns if re.search(rf"(?<![\w.]){re.escape(str(c))}(?![\w.])", e)}
    return out


def evaluate_offset(exprs, data: pd.DataFrame) -> np.ndarray | None:
    """Σ of the offset expressions over the rows of ``data`` (None without offsets)."""
    if not exprs:
        return None
    total = np.zeros(len(data))
    for e in exprs:
        if e in data.columns:
            v = data[e]
        else:
            try:
                v = data.eval(e.replace("^", "**"), engine="python")
            except Exception as err:
                raise ValueError(f"cannot evaluate offset({e}) on the data: {err}") from err
        v = np.asarray(pd.to_numeric(pd.Series(np.asarray(v)), errors="coerce"), dtype=float)
        if v.shape != (len(data),):
            raise ValueError(f"offset({e}) gives {v.size} values for {len(data)} rows")
        total += v
    return total


def as_column(values, data: pd.DataFrame, what: str):
    """``values`` given as a column name or an array (one value per row of ``data``):
    returns (column name or None, float array in the data's row order)."""
    if values is None:
        return None, None
    if isinstance(values, str):
        if values not in data.columns:
            raise ValueError(f"{what} column {values!r} not in the data "
                             f"(columns: {', '.join(map(str, data.columns))})")
        return values, pd.to_numeric(data[values], errors="coerce").to_numpy(dtype=float)
    a = np.asarray(values, dtype=float).ravel()
    if a.shape != (len(data),):
        raise ValueError(f"{what} has {a.size} values but the data has {len(data)} rows")
    return None, a


def check_weights(w: np.ndarray, name: str) -> None:
    """Prior weights must be finite and positive: name the column and the row count."""
    label = f"weights column {name!r}" if name else "weights"
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        kinds = []
        for k, m in (("zero", w == 0), ("negative", w < 0), ("NaN", np.isnan(w)),
                     ("infinite", np.isinf(w))):
            if m.any():
                kinds.append(f"{int(m.sum())} {k}")
        raise ValueError(f"{label} has {int(bad.sum())} row(s) with a zero, negative or "
                         f"non-finite weight ({', '.join(kinds)}): prior weights must be > 0")


def log_weight_sum(design) -> float:
    """Σ log w_i (0 without weights): the deviance correction of a weighted fit."""
    w = getattr(design, "weights", None)
    return 0.0 if w is None else float(np.log(w).sum())


def scaled(design):
    """(y − offset, X, terms) with rows scaled by √w, for the cross-products."""
    y = design.y if getattr(design, "offset", None) is None else design.y - design.offset
    w = getattr(design, "weights", None)
    if w is None:
        return y, design.X, design.terms
    s = np.sqrt(w)
    from copy import copy

    terms = []
    for t in design.terms:
        t2 = copy(t)
        t2.Z = t.Z * s[:, None]
        terms.append(t2)
    return y * s, design.X * s[:, None], terms


def scaled_design(design):
    """The design with y − offset and rows scaled by √w (the unweighted equivalent model,
    for the EM fitter); the design itself when it has neither."""
    if getattr(design, "weights", None) is None and getattr(design, "offset", None) is None:
        return design
    from dataclasses import replace

    y, X, terms = scaled(design)
    return replace(design, y=y, X=X, terms=terms, weights=None, offset=None)


def newdata_offset(design, newdata: pd.DataFrame) -> np.ndarray:
    """The offset of ``newdata`` rebuilt from the fit's offset terms (predict)."""
    exprs = list(design.offset_exprs)
    if "<offset array>" in exprs:
        raise ValueError("the model was fitted with offset= given as an array: pass it as a "
                         "column name to predict from newdata")
    for e in exprs:
        if e not in newdata.columns and not offset_variables([e], newdata):
            raise ValueError(f"newdata lacks the column(s) of the offset {e!r}")
    return evaluate_offset(exprs, newdata)


def reject_weighted(fit, what: str) -> None:
    """A clear error where prior weights / offsets are not (yet) supported."""
    d = fit.design
    if getattr(d, "weights", None) is not None or getattr(d, "offset", None) is not None:
        raise NotImplementedError(f"{what} does not support fits with prior weights or offsets yet")
