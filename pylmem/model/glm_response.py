"""The response of a GLMM formula: ``cbind(successes, failures)``, proportions, 0/1, factors.

R's binomial family takes its response in three forms, and so does :func:`pylmem.glmer`:

* ``cbind(s, f) ~ ...``: s successes out of s + f trials; the model's response is the
  proportion s / (s + f) and the trials are prior weights (times any ``weights=``);
* a proportion with ``weights=`` the numbers of trials;
* 0/1 numbers, a logical column, or a factor (the first level is failure, every other
  level success, as in R).

:func:`glm_response` rewrites the formula's left-hand side to a column holding the response
the model uses and returns the prior weights; the checks of the family's support
(:meth:`Family.check_response`) run on the rows the fit keeps.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from .formula import _split_top

RESPONSE = "pylmem_glm_response"
_CBIND = re.compile(r"^\s*cbind\s*\((.*)\)\s*$", re.S)


def _evaluate(expr: str, data: pd.DataFrame, where: str) -> np.ndarray:
    expr = expr.strip()
    if expr in data.columns:
        v = data[expr]
    else:
        try:
            v = data.eval(expr.replace("^", "**"), engine="python")
        except Exception as err:
            raise ValueError(f"cannot evaluate {expr!r} in {where} on the data: {err}") from None
    v = pd.Series(np.asarray(v), index=data.index)
    if v.dtype == bool:
        v = v.astype(float)
    if not pd.api.types.is_numeric_dtype(v):
        raise ValueError(f"{expr!r} in {where} is not numeric (dtype {v.dtype})")
    return v.to_numpy(dtype=float)


def _binary(col: pd.Series, name: str) -> np.ndarray:
    """A logical or factor response as 0/1 (R: the first level is failure)."""
    if col.dtype == bool:
        return col.astype(float).to_numpy()
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = list(col.cat.categories)
    else:
        cats = sorted(pd.unique(col.dropna()), key=str)
    if len(cats) < 2:
        raise ValueError(f"response {name!r} has {len(cats)} distinct value(s): a binomial "
                         "response needs both outcomes")
    out = np.where(col.isna().to_numpy(), np.nan, (col != cats[0]).to_numpy(dtype=float))
    return out


def glm_response(formula: str, data: pd.DataFrame, family, weights=None):
    """Rewrite the response of ``formula`` for ``family``.

    Parameters
    ----------
    formula : str
        The lme4 formula.
    data : DataFrame
        The data.
    family : Family
        The response family.
    weights : str or array_like, optional
        Prior weights (a column name or one value per row).

    Returns
    -------
    formula : str
        The formula with the response column :data:`RESPONSE`.
    data : DataFrame
        ``data`` with that column (a copy).
    weights : ndarray or None
        Prior weights in the data's row order (the trials of ``cbind``, times ``weights=``).
    label : str
        The response as the user wrote it (for summaries).
    """
    if not isinstance(formula, str) or "~" not in formula:
        raise ValueError(f"formula must be a string 'response ~ terms', got {formula!r}")
    parts = _split_top(formula, "~")
    if len(parts) != 2 or not parts[0].strip():
        raise ValueError(f"formula {formula!r} needs one '~' with the response on its left")
    lhs, rhs = parts[0].strip(), parts[1]
    data = data.copy()
    w = None
    if weights is not None:
        if isinstance(weights, str):
            if weights not in data.columns:
                raise ValueError(f"weights column {weights!r} not in the data")
            w = pd.to_numeric(data[weights], errors="coerce").to_numpy(dtype=float)
        else:
            if isinstance(weights, pd.Series) and weights.index.equals(data.index) is False \
                    and len(weights) == len(data) and set(weights.index) == set(data.index):
                weights = weights.reindex(data.index)
            w = np.asarray(weights, dtype=float).ravel()
            if w.shape != (len(data),):
                raise ValueError(f"weights has {w.size} values but the data has {len(data)} rows")
    m = _CBIND.match(lhs)
    if m:
        if family.name != "binomial":
            raise ValueError(f"cbind(successes, failures) is a binomial response, not {family.name}")
        args = _split_top(m.group(1), ",")
        if len(args) != 2:
            raise ValueError(f"cbind() in the response needs two arguments, got {len(args)}: {lhs!r}")
        s = _evaluate(args[0], data, "cbind()")
        f = _evaluate(args[1], data, "cbind()")
        ok = ~(np.isnan(s) | np.isnan(f))
        for part, v in ((args[0].strip(), s), (args[1].strip(), f)):
            if (v[ok] < 0).any():
                raise ValueError(f"cbind() part {part!r} has {int((v[ok] < 0).sum())} negative value(s): "
                                 "successes and failures are counts ≥ 0")
            frac = np.abs(v[ok] - np.round(v[ok])) > 1e-7 * np.maximum(1, np.abs(v[ok]))
            if frac.any():
                raise ValueError(f"cbind() part {part!r} has {int(frac.sum())} non-integer value(s): "
                                 "successes and failures are whole counts")
        n = s + f
        zero = ok & (n == 0)
        if zero.any():
            warnings.warn(f"dropping {int(zero.sum())} row(s) with no trials (cbind() parts both 0)",
                          stacklevel=3)
            n = np.where(zero, np.nan, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = s / n
        w = n if w is None else w * n
    elif lhs in data.columns:
        col = data[lhs]
        if family.name == "binomial" and (col.dtype == bool or not pd.api.types.is_numeric_dtype(col)):
            y = _binary(col, lhs)
        elif not pd.api.types.is_numeric_dtype(col):
            raise ValueError(f"response column {lhs!r} is not numeric (dtype {col.dtype})")
        else:
            y = col.to_numpy(dtype=float)
    else:
        y = _evaluate(lhs, data, "the response")
    data[RESPONSE] = y
    return f"{RESPONSE} ~ {rhs}", data, w, lhs
