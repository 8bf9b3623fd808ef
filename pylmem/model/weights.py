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
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = data.eval(e.replace("^", "**"), engine="python")
            except Exception as err:
                raise ValueError(f"cannot evaluate offset({e}) on the data: {err}") from err
        v = np.asarray(pd.to_numeric(pd.Series(np.asarray(v)), errors="coerce"), dtype=float)
        if v.shape != (len(data),):
            raise ValueError(f"offset({e}) gives {v.size} values for {len(data)} rows")
        total += v
    return total


def _numeric(v, label: str) -> np.ndarray:
    """``v`` as floats; text that is not a number is an error naming ``label`` (missing
    values stay NaN and are dropped with the row)."""
    s = pd.Series(np.asarray(v, dtype=object) if not isinstance(v, pd.Series) else v)
    if pd.api.types.is_bool_dtype(s) or not (pd.api.types.is_numeric_dtype(s)
                                              or s.dtype == object or pd.api.types.is_string_dtype(s)):
        raise ValueError(f"{label} is not numeric (dtype {s.dtype})")
    out = pd.to_numeric(s, errors="coerce")
    bad = out.isna() & s.notna()
    if bad.any():
        ex = s[bad].iloc[0]
        raise ValueError(f"{label} is not numeric: {int(bad.sum())} value(s) are text that is "
                         f"not a number (e.g. {ex!r})")
    return out.to_numpy(dtype=float)


def as_column(values, data: pd.DataFrame, what: str):
    """``values`` given as a column name, a Series (aligned on the data's index) or an array
    (one value per row of ``data``): returns (column name or None, float array in the
    data's row order)."""
    if values is None:
        return None, None
    if isinstance(values, str):
        if values not in data.columns:
            raise ValueError(f"{what} column {values!r} not in the data "
                             f"(columns: {', '.join(map(str, data.columns))})")
        return values, _numeric(data[values], f"{what} column {values!r}")
    if isinstance(values, pd.Series):
        if len(values) != len(data):
            raise ValueError(f"{what} has {len(values)} values but the data has {len(data)} rows")
        if not values.index.equals(data.index):
            if not (values.index.is_unique and data.index.is_unique
                    and values.index.sort_values().equals(data.index.sort_values())):
                raise ValueError(f"{what} is a Series whose index does not match the data's "
                                 "index: align it (or pass .to_numpy() to use it by position)")
            values = values.reindex(data.index)    # by index label, as pandas aligns
        return None, _numeric(values.to_numpy(), what)
    a = np.asarray(values)
    if a.dtype.kind in "OUS":
        a = _numeric(a.ravel(), what)
    elif a.dtype.kind == "b":
        raise ValueError(f"{what} is not numeric (dtype bool)")
    a = np.asarray(a, dtype=float).ravel()
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
    light = int((w < 1e-15 * w.max()).sum()) if len(w) else 0
    if 2 * light > len(w):
        raise ValueError(f"{label} puts {light} of {len(w)} rows below 1e-15 of the largest "
                         "weight: in double precision those rows carry no information and the "
                         "few heavy rows fit themselves exactly; cap the ratio of the weights")


def normalised(design):
    """(design with weights w / c, c): c the geometric mean of the weights (1 without).

    The likelihood of y is the same for weights w and w / c (σ² scales by c and θ by
    1/√c), so fitting the normalised weights makes the optimisation independent of their
    scale, and weights of 1e-300 or 1e300 are as well scaled as weights near 1."""
    w = getattr(design, "weights", None)
    if w is None:
        return design, 1.0
    c = float(np.exp(np.mean(np.log(w))))
    if c == 1.0 or not np.isfinite(c) or c <= 0:
        return design, 1.0
    from dataclasses import replace

    return replace(design, weights=w / c), c


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
