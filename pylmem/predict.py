"""Predictions from a fit, as lme4's ``predict.merMod``.

``predict(fit)`` gives the conditional fitted values Xβ̂ + Zb̂ (``re_form=None``) or the
population-level Xβ̂ (``re_form="~0"``, ``"NA"``, ``False``), in the data's row order.
With ``newdata`` the fixed-effects model matrix and each random-effects term's design are
rebuilt from the stored formulaic specs; levels of a grouping factor not seen in the fit
contribute 0 (the population prediction) when ``allow_new_levels`` and raise otherwise;
an unseen level of a fixed-effect factor always raises.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

from .design import _group_labels, match_levels
from .formula import r_column_name

def _population(re_form) -> bool:
    """True for lme4's ways of asking for population-level predictions: ~0, NA, False."""
    if re_form is False:
        return True
    if isinstance(re_form, float) and np.isnan(re_form):
        return True
    if isinstance(re_form, str):
        return bool(re.fullmatch(r"\s*(NA|~\s*(0|-\s*1))\s*", re_form))
    return False


def _selected_terms(fit, re_form) -> list[int]:
    """Indices of the random-effects terms included by ``re_form``."""
    terms = fit.design.terms
    if _population(re_form):
        return []
    if re_form is None or re_form is True:
        return list(range(len(terms)))
    if not isinstance(re_form, str):
        raise ValueError(f"re_form must be None, '~0', 'NA', False or a formula '~ (expr | g)', "
                         f"got {re_form!r}")
    from .formula import parse_formula, translate_r

    text = re_form.strip()
    if not text.startswith("~"):
        raise ValueError(f"re_form must be a one-sided formula starting with '~', got {re_form!r}")
    parsed = parse_formula("..y.. " + text)
    want = [(spec.group, " ".join(translate_r(spec.expr)[0].split()), spec.correlated)
            for spec in parsed.random]
    if not want:
        return []
    out = []
    for group, expr, _ in want:
        hits = [k for k, t in enumerate(terms)
                if tuple(t.group) == tuple(group) and " ".join(t.expr.split()) == expr]
        if not hits:
            raise ValueError(f"re_form term ({expr} | {':'.join(group)}) is not a random-effects "
                             f"term of the model {fit.formula!r}")
        out += [k for k in hits if k not in out]
    return sorted(out)


def _categorical_levels(spec) -> dict:
    """factor expression -> list of levels seen at fit time, from a formulaic ModelSpec."""
    out = {}
    for factor, (kind, state) in (getattr(spec, "encoder_state", None) or {}).items():
        if getattr(kind, "value", kind) == "categorical" and "categories" in state:
            out[factor] = list(state["categories"])
    return out


def _factor_column(expr: str, data: pd.DataFrame):
    """The data column behind a factor expression ``x``, ``C(x)``, ``C(x, ...)``."""
    if expr in data.columns:
        return expr
    m = re.match(r"^\s*C\(\s*([A-Za-z_.][A-Za-z0-9_.]*|`[^`]*`)\s*[,)]", expr)
    if m:
        col = m.group(1).strip("`")
        if col in data.columns:
            return col
    return None


def _check_fixed_levels(spec, newdata: pd.DataFrame, where: str) -> None:
    """Raise a clear error for levels of a categorical factor that the fit never saw."""
    for factor, levels in _categorical_levels(spec).items():
        col = _factor_column(factor, newdata)
        if col is None:
            continue
        vals = newdata[col]
        seen = set(map(str, levels)) | set(levels)
        new = [v for v in pd.unique(vals.dropna()) if v not in seen and str(v) not in seen]
        if new:
            raise ValueError(
                f"newdata column {col!r} has level(s) {', '.join(map(repr, map(str, new)))} of "
                f"the {where} factor {factor!r} not present in the data the model was fitted to "
                f"(levels: {', '.join(map(str, levels))})")


def _as_fitted_types(spec, newdata: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns that were categorical (strings) at fit time, e.g. ``factors=``,
    are turned into strings as build_design did."""
    out = newdata
    for factor, levels in _categorical_levels(spec).items():
        col = _factor_column(factor, newdata)
        if col is None or not levels or not all(isinstance(v, str) for v in levels):
            continue
        if not pd.api.types.is_numeric_dtype(newdata[col]):
            continue
        if out is newdata:
            out = newdata.copy()
        out[col] = newdata[col].astype(str).where(newdata[col].notna())
    return out


def _model_matrix(spec, newdata: pd.DataFrame, where: str) -> pd.DataFrame:
    newdata = _as_fitted_types(spec, newdata)
    _check_fixed_levels(spec, newdata, where)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mm = spec.get_model_matrix(newdata, output="pandas")
    except Exception as e:  # formulaic's own errors: missing columns, bad values
        raise ValueError(f"cannot build the {where} model matrix from newdata: {e}") from e
    for w in caught:
        msg = str(w.message)
        if "categories outside" in msg or "not seen in original dataset" in msg:
            raise ValueError(f"newdata has a level of a {where} factor not present in the data "
                             f"the model was fitted to: {msg}")
    return mm


def _used_columns(spec) -> set:
    try:
        return set(spec.required_variables)
    except Exception:  # pragma: no cover - older formulaic
        return set()


def _fixed_matrix(fit, newdata: pd.DataFrame) -> np.ndarray:
    d = fit.design
    mm = _model_matrix(d.fixed_spec, newdata, "fixed-effects")
    names = [r_column_name(c, d.parsed.fixed, d.parsed.renames) for c in mm.columns]
    pos = {n: i for i, n in enumerate(names)}
    missing = [n for n in d.fixef_names if n not in pos]
    if missing:
        raise ValueError(f"newdata gives no fixed-effects column(s) {', '.join(missing)}")
    X = mm.to_numpy(dtype=float)[:, [pos[n] for n in d.fixef_names]]
    # rows with a missing value in a fixed-effects variable predict NaN (R's na.pass)
    used = [c for c in _used_columns(d.fixed_spec) if c in newdata.columns]
    if used:
        na = newdata[used].isna().any(axis=1).to_numpy()
        X[na] = np.nan
    return X


def predict(fit, newdata: pd.DataFrame | None = None, *, re_form=None,
            allow_new_levels: bool = True, se_fit: bool = False, interval=None,
            level: float = 0.95):
    """Predictions from ``fit`` (lme4's ``predict``).

    ``se_fit`` / ``interval`` ("confidence" or "prediction", at ``level``): a DataFrame with
    columns fit, se_fit, lwr, upr instead (see :mod:`pylmem.intervals`).

    ``re_form``: None (all random effects), "~0" / "NA" / False (population level Xβ̂),
    or a one-sided formula naming some of the model's random-effects terms.
    ``allow_new_levels``: levels of a grouping factor absent from the fit get random
    effects 0 (else ValueError naming the term and levels).
    Returns a Series indexed like the data (``newdata`` or the fitted data).
    """
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise ValueError(f"allow_new_levels must be True or False, got {allow_new_levels!r}")
    if newdata is not None:
        from .io import as_pandas

        newdata = as_pandas(newdata, "newdata")
    if se_fit or interval is not None:
        from .intervals import predict_with_se

        return predict_with_se(fit, newdata, re_form=re_form, allow_new_levels=allow_new_levels,
                               se_fit=se_fit, interval=interval, level=level)
    d = fit.design
    sel = _selected_terms(fit, re_form)
    beta = fit.fixef.to_numpy(dtype=float)
    if newdata is None:
        out = d.X @ beta
        if d.offset is not None:
            out = out + d.offset
        modes = fit._modes
        for k in sel:
            t = d.terms[k]
            out = out + np.einsum("nq,nq->n", t.Z, modes[k][t.codes])
        return pd.Series(d.to_data_order(out), index=d.to_data_order(d.row_labels),
                         name="predicted")
    if not isinstance(newdata, pd.DataFrame):
        raise ValueError("newdata must be a pandas DataFrame")
    X, offset, Zs, codes = newdata_rows(fit, newdata, sel, allow_new_levels)
    return pd.Series(combine_rows(fit, X, offset, Zs, codes, sel), index=newdata.index,
                     name="predicted")


def newdata_rows(fit, newdata: pd.DataFrame, sel, allow_new_levels: bool):
    """(X, offset, Zs, codes) of ``newdata``: the fixed-effects rows (NaN where a variable is
    missing), the offset (0 without one), and for each selected term its Z rows and level
    codes (−1 for a level not in the fit; zeros and −1 for terms not in ``sel``).  Raises
    for a missing grouping column, and for new levels unless ``allow_new_levels``."""
    d = fit.design
    newdata = d.with_aliases(newdata) if getattr(d, "aliases", None) else newdata
    X = _fixed_matrix(fit, newdata)
    offset = np.zeros(len(newdata))
    if getattr(d, "offset_exprs", None):
        from .weights import newdata_offset

        offset = offset + newdata_offset(d, newdata)
    Zs, codes = [], []
    for k, t in enumerate(d.terms):
        if k not in sel:
            Zs.append(np.zeros((len(newdata), t.q)))
            codes.append(np.full(len(newdata), -1))
            continue
        missing = [g for g in t.group if g not in newdata.columns]
        if missing:
            raise ValueError(f"newdata lacks the grouping column(s) {', '.join(map(repr, missing))} "
                             f"of the random-effects term {t.name!r} (use re_form='~0' for "
                             "population-level predictions)")
        mm = _model_matrix(t.spec, newdata, f"random-effects term {t.name!r}")
        Z = mm.to_numpy(dtype=float)[:, t.columns]
        na_group = newdata[list(t.group)].isna().any(axis=1).to_numpy()
        c = np.asarray(match_levels(t, newdata))   # by value: int ids match float newdata ids
        new = (c < 0) & ~na_group
        if new.any() and not allow_new_levels:
            labels = _group_labels(newdata, t.group)
            lv = list(dict.fromkeys(labels.to_numpy()[new]))
            shown = ", ".join(map(repr, lv[:10])) + (", ..." if len(lv) > 10 else "")
            raise ValueError(f"newdata has {len(lv)} level(s) of the grouping factor of "
                             f"random-effects term {t.name!r} not in the fit: {shown} "
                             "(pass allow_new_levels=True to predict them at population level)")
        Zs.append(Z)
        codes.append(c)
    return X, offset, Zs, codes


def combine_rows(fit, X, offset, Zs, codes, sel) -> np.ndarray:
    """x'β̂ + offset + Σ_{k∈sel} z_k'b̂_k per row; a new level contributes 0, a row with a
    missing z of a known level is NaN."""
    out = X @ fit.fixef.to_numpy(dtype=float) + offset
    modes = fit._modes
    for k in sel:
        Z, c = Zs[k], codes[k]
        b = np.zeros(Z.shape)
        ok = c >= 0
        b[ok] = modes[k][c[ok]]
        contrib = np.einsum("nq,nq->n", np.nan_to_num(Z), b)
        contrib[np.isnan(Z).any(axis=1) & ok] = np.nan
        out = out + contrib
    return out

