"""New data onto a fit: the rows of ``newdata`` as the fit's fixed-effects matrix, offset and
each random-effects term's Z rows and level codes (a level not in the fit coded −1), with
the fit's factor levels and column types; and which terms a ``re_form`` selects.  Shared by
point predictions (:mod:`pylmem.postfit.predict`) and their intervals
(:mod:`pylmem.postfit.intervals`).
"""
from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pandas as pd

from ..model.formula import clean_message, parse_formula, r_column_name, translate_r
from ..model.levels import factor_labels, level_index, level_positions, match_levels
from ..model.matrices import NumericSpec
from ..model.weights import newdata_offset


def _population(re_form) -> bool:
    """True for lme4's ways of asking for population-level predictions: ~0, NA, False."""
    if re_form is False:
        return True
    if isinstance(re_form, float) and np.isnan(re_form):
        return True
    if isinstance(re_form, str):
        return bool(re.fullmatch(r"\s*(NA|~\s*(0|-\s*1))\s*", re_form))
    return False


def selected_terms(fit, re_form) -> list[int]:
    """Indices of the random-effects terms included by ``re_form``."""
    terms = fit.design.terms
    if _population(re_form):
        return []
    if re_form is None or re_form is True:
        return list(range(len(terms)))
    if not isinstance(re_form, str):
        raise ValueError(f"re_form must be None, '~0', 'NA', False or a formula '~ (expr | g)', "
                         f"got {re_form!r}")
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


def _numeric_columns(spec) -> set:
    """Data columns the spec reads as plain numbers (so newdata's must be numeric)."""
    if isinstance(spec, NumericSpec):
        return set(spec.columns)
    out = set()
    for factor, (kind, _) in (getattr(spec, "encoder_state", None) or {}).items():
        if getattr(kind, "value", kind) == "numerical":
            out.add(factor)
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


def _shown(values, k: int = 5) -> str:
    vals = [v.item() if isinstance(v, np.generic) else v for v in values]
    return ", ".join(map(repr, vals[:k])) + (", ..." if len(vals) > k else "")


def _conform(fit, newdata: pd.DataFrame):
    """newdata in the fit's terms, the one place that maps it onto the fit's levels and
    categories: aliased names, ``factors=`` columns as :func:`~pylmem.model.levels.factor_labels`
    writes them, each categorical column of the model matched *by value* onto the fit's
    categories (an unseen level, or one that had no rows at fit time, is an error naming the
    column; the column then becomes a Categorical of the fit's categories, so dtypes and
    category sets of newdata change nothing) and each numeric column checked numeric.
    Returns (the conformed copy, which of its cells were missing: those rows predict NaN)."""
    d = fit.design
    out = newdata.copy()
    missing = newdata.isna()
    for c, a in (getattr(d, "aliases", None) or {}).items():
        if c in out.columns:
            out[a] = out[c]
    for f in getattr(d, "factors", ()) or ():
        if f in out.columns:
            out[f] = factor_labels(out[f])
    specs = [("fixed effects", d.fixed_spec)] + [
        (f"random-effects term {t.name!r}", t.spec) for t in d.terms]
    done = set()
    for where, spec in specs:
        for col in sorted(_numeric_columns(spec)):
            if col not in out.columns or col in done:
                continue
            v = out[col]
            if pd.api.types.is_bool_dtype(v):
                out[col] = v.astype(float)
            elif not pd.api.types.is_numeric_dtype(v):
                num = pd.to_numeric(v.astype(object), errors="coerce")
                bad = num.isna() & v.notna()
                if bad.any():
                    raise ValueError(f"newdata column {col!r} must be numeric, as in the data the "
                                     f"model was fitted to (dtype {v.dtype}; values such as "
                                     f"{_shown(pd.unique(v[bad]), 3)})")
                out[col] = num.astype(float)
            done.add(col)
        for factor, levels in _categorical_levels(spec).items():
            col = _factor_column(factor, out)
            if col is None:
                continue
            idx = level_index(levels)
            codes = level_positions(idx, out[col])
            new = (codes < 0) & out[col].notna().to_numpy()
            if new.any():
                unseen = pd.unique(out[col][new])
                raise ValueError(
                    f"newdata column {col!r} has {len(unseen)} level(s) of the factor "
                    f"{factor!r} ({where}) not present in the data the model was fitted to, in "
                    f"{int(new.sum())} row(s): {_shown(unseen)} (levels: {_shown(levels, 10)})")
            if factor == col and col not in done:
                # a missing value coded as the first level: the row is set to NaN afterwards
                out[col] = pd.Categorical.from_codes(np.maximum(codes, 0), categories=idx)
                done.add(col)
    return out, missing


def _model_matrix(spec, newdata: pd.DataFrame, where: str) -> pd.DataFrame:
    if not isinstance(spec, NumericSpec):
        spec = copy.deepcopy(spec)     # formulaic may write into the spec's encoder state
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mm = spec.get_model_matrix(newdata, output="pandas")
    except Exception as e:  # formulaic's own errors: missing columns, bad values
        raise ValueError(f"cannot build the {where} model matrix from newdata: "
                         f"{clean_message(e)}") from None
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


def _missing_rows(spec, missing: pd.DataFrame) -> np.ndarray:
    used = [c for c in _used_columns(spec) if c in missing.columns]
    return missing[used].any(axis=1).to_numpy() if used else np.zeros(len(missing), bool)


def _fixed_matrix(fit, newdata: pd.DataFrame, missing: pd.DataFrame) -> np.ndarray:
    d = fit.design
    mm = _model_matrix(d.fixed_spec, newdata, "fixed-effects")
    names = [r_column_name(c, d.parsed.fixed, d.parsed.renames) for c in mm.columns]
    pos = {n: i for i, n in enumerate(names)}
    lacking = [n for n in d.fixef_names if n not in pos]
    if lacking:
        raise ValueError(f"newdata gives no fixed-effects column(s) {', '.join(lacking)}")
    X = mm.to_numpy(dtype=float)[:, [pos[n] for n in d.fixef_names]]
    # rows with a missing value in a fixed-effects variable predict NaN (R's na.pass)
    X[_missing_rows(d.fixed_spec, missing)] = np.nan
    return X


def newdata_rows(fit, newdata: pd.DataFrame, sel, allow_new_levels: bool):
    """(X, offset, Zs, codes) of ``newdata``: the fixed-effects rows (NaN where a variable is
    missing), the offset (0 without one), and for each selected term its Z rows and level
    codes (−1 for a level not in the fit; zeros and −1 for terms not in ``sel``).  Raises
    for a missing grouping column, and for new levels unless ``allow_new_levels``; never
    changes the fit (newdata is conformed on a copy, formulaic's specs are copied)."""
    d = fit.design
    absent = [g for k in sel for g in d.terms[k].group if g not in newdata.columns]
    if absent:
        names = [t.name for k, t in enumerate(d.terms) if k in sel
                 and set(t.group) & set(absent)]
        raise ValueError(f"newdata lacks the grouping column(s) "
                         f"{', '.join(map(repr, dict.fromkeys(absent)))} of the random-effects "
                         f"term(s) {', '.join(map(repr, names))} (use re_form='~0' for "
                         "population-level predictions)")
    newdata, missing = _conform(fit, newdata)
    X = _fixed_matrix(fit, newdata, missing)
    offset = np.zeros(len(newdata))
    if getattr(d, "offset_exprs", None):
        offset = offset + newdata_offset(d, newdata)
    Zs, codes = [], []
    for k, t in enumerate(d.terms):
        if k not in sel:
            Zs.append(np.zeros((len(newdata), t.q)))
            codes.append(np.full(len(newdata), -1))
            continue
        mm = _model_matrix(t.spec, newdata, f"random-effects term {t.name!r}")
        Z = mm.to_numpy(dtype=float)[:, t.columns]
        Z[_missing_rows(t.spec, missing)] = np.nan
        na_group = newdata[list(t.group)].isna().any(axis=1).to_numpy()
        c = np.asarray(match_levels(t, newdata))   # by value: int ids match float newdata ids
        new = (c < 0) & ~na_group
        if new.any() and not allow_new_levels:
            rows = newdata[list(t.group)].iloc[np.flatnonzero(new)]
            lv = list(dict.fromkeys(zip(*[rows[g].tolist() for g in t.group])))
            lv = [v[0] if len(v) == 1 else ":".join(map(str, v)) for v in lv]
            raise ValueError(f"newdata has {len(lv)} level(s) of the grouping factor "
                             f"{':'.join(t.group)!r} (random-effects term {t.name!r}) not in the "
                             f"fit, in {int(new.sum())} row(s): {_shown(lv)} (pass "
                             "allow_new_levels=True to predict them at population level)")
        Zs.append(Z)
        codes.append(c)
    return X, offset, Zs, codes


def combine_rows(fit, X, offset, Zs, codes, sel) -> np.ndarray:
    """x'β̂ + offset + Σ_{k∈sel} z_k'b̂_k per row; a new level contributes 0, a row with a
    missing z of a known level is NaN."""
    out = X @ fit.fixef.to_numpy(dtype=float) + offset
    modes = fit.modes
    for k in sel:
        Z, c = Zs[k], codes[k]
        b = np.zeros(Z.shape)
        ok = c >= 0
        b[ok] = modes[k][c[ok]]
        contrib = np.einsum("nq,nq->n", np.nan_to_num(Z), b)
        contrib[np.isnan(Z).any(axis=1) & ok] = np.nan
        out = out + contrib
    return out


def fitted_prediction(fit, sel) -> pd.Series:
    """x'β̂ + offset + Σ_{k∈sel} z_k'b̂_k for the fitted rows, in the data's row order."""
    d = fit.design
    out = d.X @ fit.fixef.to_numpy(dtype=float)
    if d.offset is not None:
        out = out + d.offset
    modes = fit.modes
    for k in sel:
        t = d.terms[k]
        out = out + np.einsum("nq,nq->n", t.Z, modes[k][t.codes])
    return pd.Series(d.to_data_order(out), index=d.to_data_order(d.row_labels), name="predicted")
