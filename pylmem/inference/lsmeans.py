"""Least-squares means (lmerTest's ``ls_means``, emmeans' ``emmeans(fit, ~ f)``).

The reference grid is every combination of the levels of the categorical variables of the
fixed part, with each numeric variable at its mean over the fitted rows (lmerTest's
``get_min_data``; a transformed variable such as ``I(x^2)`` is evaluated at the mean of
``x``, as R's model frame does).  The LS-mean of a cell of a factor term is the average of
the grid's model-matrix rows in that cell (each combination of the other factors weighted
equally), so the contrast of a cell is ``l = mean of rows of X_grid``, its estimate l'β̂,
and its t test and confidence limits are lmerTest's ``contest1D`` with Satterthwaite's or
Kenward–Roger's df (:func:`pylmem.inference.ddf.contest1d`).  ``pairwise=True`` gives the
differences of every pair of cells, named ``"recipeA - recipeB"`` (lmerTest's
``get_pairs``).  A cell mean that is not estimable (its contrast is not orthogonal to the
null space of X, e.g. an empty cell of an interaction) is NA, as lmerTest.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..model.formula import r_column_name
from ..util.lazy import stats
from .ddf import contest1d, normalize_ddf
from .ftests import _raw_of, fixed_terms, grid_levels

COLUMNS = ["Estimate", "Std. Error", "df", "t value", "lower", "upper", "Pr(>|t|)"]


class LSMeansTable(pd.DataFrame):
    """lmerTest's ls_means table: term, levels, Estimate, Std. Error, df, t value, lower,
    upper, Pr(>|t|), one row per cell (or pair of cells); ``hypotheses`` holds the
    contrast matrices (term → DataFrame with the fixed effects as columns)."""

    _metadata = ["heading", "hypotheses", "level", "ddf"]  # noqa: RUF012 (pandas)

    @property
    def _constructor(self):
        return pd.DataFrame

    def __str__(self) -> str:
        body = pd.DataFrame(self[COLUMNS]).copy()
        body["df"] = body["df"].round(1)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            text = body.to_string(float_format=lambda v: f"{v:.6g}")
        return (f"{getattr(self, 'heading', '')}\n{text}\n\n  Confidence level: "
                f"{100 * getattr(self, 'level', 0.95):g}%\n  Degrees of freedom method: "
                f"{getattr(self, 'ddf', '')}")

    def __repr__(self) -> str:
        return str(self)


def _categories(design) -> dict:
    """Categorical expression of the fixed part → its levels (formulaic's encoder state)."""
    state = getattr(design.fixed_spec, "encoder_state", {}) or {}
    return {e: list(st[1]["categories"]) for e, st in state.items()
            if "CATEGORICAL" in str(st[0]).upper()}


def _numeric_mean(design, v, data):
    """Mean of numeric variable ``v`` over the fitted rows: a column of X or of a random
    term named ``v``, else read from ``data``."""
    if data is not None:
        if v not in data.columns:
            raise ValueError(f"ls_means: data has no column {v!r}")
        vals = pd.to_numeric(data.loc[design.row_labels, v], errors="coerce").to_numpy(float)
        return float(np.mean(vals))
    if v in design.fixef_names:
        return float(design.X[:, design.fixef_names.index(v)].mean())
    for t in design.terms:
        if v in t.coef_names:
            return float(t.Z[:, t.coef_names.index(v)].mean())
    raise ValueError(f"ls_means needs the mean of the numeric variable {v!r}, which is not a "
                     "column of the fit's model matrices: pass the fitted data as data=")


def reference_grid(fit, data=None):
    """lmerTest's grid: every level combination, numeric variables at their means.

    Returns
    -------
    grid : DataFrame
        One row per combination of the categorical variables' levels (the first varies
        fastest, as R's ``expand.grid``).
    Xg : ndarray (cells, p_full)
        The fixed-effects model matrix on the grid (every column, rank-deficient ones
        included).
    names : list of str
        Its column names (R's).
    cats : dict
        Categorical expression → its levels.
    """
    d = fit.design
    spec = d.fixed_spec
    cats = _categories(d)
    raw = sorted(spec.required_variables)
    levels, cat_vars, sizes = grid_levels(cats, raw)
    n = int(np.prod(sizes)) if sizes else 1
    if n > 200_000:
        raise ValueError(f"ls_means: the reference grid would have {n} cells")
    # expand.grid: the first variable varies fastest
    idx = np.indices(sizes[::-1]).reshape(len(sizes), -1).T[:, ::-1] if sizes else \
        np.zeros((1, 0), int)
    cols = {}
    for j, v in enumerate(cat_vars):
        vals = np.asarray(levels[v], dtype=object)[idx[:, j]]
        cols[v] = pd.Categorical(vals, categories=list(levels[v])) \
            if all(isinstance(x, str) for x in levels[v]) else np.asarray(vals)
    for v in raw:
        if v not in levels:
            cols[v] = np.full(len(idx), _numeric_mean(d, v, data))
    grid = pd.DataFrame(cols)
    M = spec.get_model_matrix(grid)
    rn = [r_column_name(c, d.parsed.fixed, d.parsed.renames) for c in M.columns]
    Xall = np.asarray(M.to_numpy(dtype=float))
    return grid, Xall, rn, cats


def _rename(expr, renames):
    for old, new in renames:
        if expr == old:
            return new
    return expr


def lsmeans_contrasts(fit, which=None, data=None) -> dict:
    """term → DataFrame (cells × fixed effects) of the LS-means' contrasts (lmerTest's
    ``lsmeans_contrasts``); a non-estimable cell's row is NaN."""
    d = fit.design
    terms = [t for t in fixed_terms(d) if not any(num for _, num in t.factors)]
    labels = [t.label for t in terms]
    if which is None:
        which = labels
    elif isinstance(which, str):
        which = [which]
    which = list(which)
    for w in which:
        if w not in labels:
            raise ValueError(f"ls_means: {w!r} is not a factor term of the fixed part "
                             f"(factor terms: {', '.join(labels) or 'none'})")
    grid, Xall, rn, cats = reference_grid(fit, data)
    full_p = len(rn)
    keep = [rn.index(nm) for nm in d.fixef_names]
    null = _null_space(fit, Xall, keep, data)
    by = {t.label: t for t in terms}
    out = {}
    for w in which:
        t = by[w]
        keys, names = [], []
        for expr, _ in t.factors:
            v = _raw_of(expr, list(grid.columns))
            col = grid[v].astype(object).to_numpy()
            lev = cats[expr]
            keys.append(np.array([lev.index(x) for x in col]))
            names.append((_rename(expr, d.parsed.renames), lev))
        sizes = [len(lv) for _, lv in names]
        # model.matrix(~ 0 + a:b) column order: the first factor varies fastest
        cell = np.zeros(len(grid), int)
        mult = 1
        for k, s in zip(keys, sizes):
            cell += k * mult
            mult *= s
        ncell = mult
        cnt = np.bincount(cell, minlength=ncell).astype(float)
        L = np.zeros((ncell, full_p))
        np.add.at(L, cell, Xall)
        L /= cnt[:, None]
        if null is not None:
            bad = np.abs(L @ null).sum(axis=1) >= np.sqrt(np.finfo(float).eps)
            L[bad] = np.nan
        rows = []
        for c in range(ncell):
            parts, r = [], c
            for nm, lv in names:
                parts.append(f"{nm}{lv[r % len(lv)]}")
                r //= len(lv)
            rows.append(":".join(parts))
        out[w] = pd.DataFrame(L[:, keep], index=rows, columns=d.fixef_names)
    return out


def _null_space(fit, Xgrid, keep, data):
    """Null space (columns) of the full fixed-effects model matrix, rank-deficient columns
    included; None when no column was dropped (every cell estimable)."""
    d = fit.design
    if not d.dropped_columns:
        return None
    p_full = Xgrid.shape[1]
    dropped = [i for i in range(p_full) if i not in set(keep)]
    if data is not None:
        rows = d.with_aliases(data).loc[d.row_labels]
        Xd = np.asarray(d.fixed_spec.get_model_matrix(rows).to_numpy(dtype=float))[:, dropped]
    else:
        # no data: each fitted row is a row of the grid (all variables categorical), found
        # by its kept columns
        lookup = {tuple(r): i for i, r in enumerate(np.round(Xgrid[:, keep], 10))}
        idx = np.array([lookup.get(tuple(r), -1) for r in np.round(d.X, 10)])
        if (idx < 0).any():
            raise ValueError("ls_means: the model matrix is rank deficient; pass the fitted "
                             "data as data= to decide which means are estimable")
        Xd = Xgrid[idx][:, dropped]
    C = np.linalg.lstsq(d.X, Xd, rcond=None)[0]             # dropped = X_kept C on the data
    N = np.zeros((p_full, len(dropped)))
    N[keep] = -C
    N[dropped, np.arange(len(dropped))] = 1.0
    return np.linalg.qr(N)[0]


def ls_means(fit, which=None, *, level=0.95, ddf="Satterthwaite", pairwise=False,
             data=None) -> LSMeansTable:
    """Least-squares means of factor terms, or their pairwise differences.

    Parameters
    ----------
    fit : LmerFit
        A fitted model.
    which : str or list of str, optional
        Factor terms of the fixed part (``"recipe"``, ``"recipe:temperature"``); default
        every term made only of factors.
    level : float
        Confidence level of the limits ``lower``/``upper``.
    ddf : {"Satterthwaite", "Kenward-Roger"}
        Denominator degrees of freedom.
    pairwise : bool
        Differences of every pair of cells (``"recipeA - recipeB"``) instead of the means.
    data : DataFrame, optional
        The fitted data: only needed when a numeric variable of the fixed part is not a
        column of the model matrices (its mean is read from here).

    Returns
    -------
    LSMeansTable
        Columns ``term``, ``levels``, then lmerTest's ``Estimate``, ``Std. Error``, ``df``,
        ``t value``, ``lower``, ``upper``, ``Pr(>|t|)``.
    """
    from ..model.design import require_rows

    require_rows(fit.design, "ls_means")
    ddf = normalize_ddf(ddf) or "Satterthwaite"
    if not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    Ls = lsmeans_contrasts(fit, which, data)
    if pairwise:
        for w, L in list(Ls.items()):
            rows = list(L.index)
            if len(rows) < 2:
                raise ValueError(f"ls_means: term {w!r} has one cell, no pairs to compare")
            i, j = np.triu_indices(len(rows), 1)
            order = np.lexsort((j, i))
            i, j = i[order], j[order]
            A = L.to_numpy()
            Ls[w] = pd.DataFrame(A[i] - A[j], columns=L.columns,
                                 index=[f"{rows[a]} - {rows[b]}" for a, b in zip(i, j)])
    pieces = []
    for w, L in Ls.items():
        A = L.to_numpy()
        est = np.full(len(A), np.nan)
        se, df, tv, pv = est.copy(), est.copy(), est.copy(), est.copy()
        ok = ~np.isnan(A).any(axis=1)
        if ok.any():
            e, s, f, t, p = contest1d(fit, A[ok], ddf)
            est[ok], se[ok], df[ok], tv[ok], pv[ok] = e, s, f, t, p
        with np.errstate(invalid="ignore"):
            half = stats.t.ppf(1 - (1 - level) / 2, df) * se
        lev = [_strip_levels(w, r) for r in L.index]
        pieces.append(pd.DataFrame({"term": w, "levels": lev, "Estimate": est, "Std. Error": se,
                                    "df": df, "t value": tv, "lower": est - half,
                                    "upper": est + half, "Pr(>|t|)": pv}, index=L.index))
    tab = pd.concat(pieces) if pieces else pd.DataFrame(columns=["term", "levels"] + COLUMNS)
    out = LSMeansTable(tab)
    out.heading = "Least Squares Means table:\n"
    out.hypotheses = Ls
    out.level = float(level)
    out.ddf = ddf
    return out


def _strip_levels(term, row):
    """lmerTest's levels column: ``recipeA:temperature175`` → ``A:175`` (pairs: ``A - B``)."""
    import re

    pat = "|".join("^" + re.escape(v) for v in term.split(":"))

    def one(s):
        return ":".join(re.sub(pat, "", piece) for piece in s.split(":"))

    return " - ".join(one(s) for s in row.split(" - "))
