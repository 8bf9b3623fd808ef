"""F tests of the fixed-effects terms of one model (lmerTest's ``anova(fit, type=, ddf=)``).

Each term is tested by an F test of Lβ = 0 (:func:`pylmem.inference.ddf.contest_md`) with
Satterthwaite's or Kenward–Roger's denominator df.  The hypothesis matrices are lmerTest's:

* type 1 (sequential): with X'X = L D L' (Doolittle, unit lower L), the rows of L' of a
  term's columns;
* type 3 (marginal, SAS's): let X̃ hold every cell of every term (a full indicator per level
  of each factor, times its numeric variables) and L̃ = (X⁺X̃)' express those cells in β.
  Highest-order terms first, the columns of each term are replaced by their residuals on
  the columns of the terms that contain it (same numeric variables, more factors); the
  term's hypothesis is then those columns at the cells that are columns of X.  X̃ and X
  are evaluated on a synthetic grid (every level combination, random numeric values): a
  linear identity between columns does not depend on the rows it is checked on.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..model.formula import r_column_name
from ..util.rformat import anova_table_lines, format_real, r_round, zapsmall
from ..util.threads import one_blas_thread
from .ddf import contest_md, normalize_ddf
from .type2 import contrasts_type2

COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]


@dataclass
class FixedTerm:
    label: str          # lmerTest's row name: "recipe", "recipe:temperature"
    cols: list          # indices into fixef
    factors: list       # (expression, is_numeric)
    order: int


def fixed_terms(design) -> list:
    """The fixed-effects terms (intercept excluded) with their columns in ``fixef``."""
    spec = design.fixed_spec
    parsed = design.parsed
    names = list(getattr(spec, "column_names", None) or spec.names)
    rnames = [r_column_name(c, parsed.fixed, parsed.renames) for c in names]
    pos = {n: i for i, n in enumerate(design.fixef_names)}
    state = getattr(spec, "encoder_state", {}) or {}
    out = []
    for term, idx in spec.term_indices.items():
        label = str(term)
        if label in ("1", "Intercept"):
            continue
        for old, new in parsed.renames:
            label = label.replace(old, new)
        cols = [pos[rnames[i]] for i in idx if rnames[i] in pos]
        facs = []
        for fa in getattr(term, "factors", [label]):
            expr = getattr(fa, "expr", str(fa))
            kind = state.get(expr, (None,))[0]
            facs.append((expr, not (kind is not None and "CATEGORICAL" in str(kind).upper())))
        out.append(FixedTerm(label=label, cols=cols, factors=facs, order=len(facs)))
    return out


def _contains(a: FixedTerm, b: FixedTerm) -> bool:
    """lmerTest's term_contain: a's variables strictly inside b's, same numeric variables."""
    va, vb = {e for e, _ in a.factors}, {e for e, _ in b.factors}
    na, nb = {e for e, num in a.factors if num}, {e for e, num in b.factors if num}
    return va < vb and na == nb


def contrasts_type1(fit) -> dict:
    """Sequential hypotheses: rows of L' (X'X = L D L') for each term's columns."""
    X = fit.design.X
    p = X.shape[1]
    R = np.linalg.cholesky(X.T @ X).T           # upper: X'X = R'R, L' = diag(1/R_ii) R
    Lt = R / np.diag(R)[:, None]
    Lt[np.abs(Lt) < 1e-6] = 0.0
    return {t.label: Lt[t.cols] for t in fixed_terms(fit.design)} if p else {}


def _raw_of(expr, raw):
    """The one data column a categorical expression (``recipe``, ``C(temperature)``) reads."""
    import re

    hits = [v for v in raw if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", expr)]
    if len(hits) != 1:
        raise ValueError(f"categorical expression {expr!r} does not read exactly one column")
    return hits[0]


def grid_levels(cats: dict, raw: list):
    """The factor columns of a reference grid: (raw column -> its levels, the categorical
    raw columns in order, their numbers of levels), from the categorical expressions
    ``cats`` (expression -> levels) of a model reading the columns ``raw``."""
    levels = {}
    for e, lev in cats.items():
        v = _raw_of(e, raw)
        if v in levels and list(levels[v]) != list(lev):
            raise ValueError(f"column {v!r} is used as two different categorical expressions")
        levels[v] = lev
    cat_vars = [v for v in raw if v in levels]
    return levels, cat_vars, [len(levels[v]) for v in cat_vars]


def _synthetic_grid(design, rng):
    """Every combination of the categorical variables' levels, random numeric columns."""
    spec = design.fixed_spec
    state = getattr(spec, "encoder_state", {}) or {}
    cats = {e: list(st[1]["categories"]) for e, st in state.items()
            if "CATEGORICAL" in str(st[0]).upper()}
    raw = sorted(spec.required_variables)
    levels, cat_vars, sizes = grid_levels(cats, raw)
    n_cells = int(np.prod(sizes)) if sizes else 1
    reps = max(3, int(np.ceil(3 * design.n_fixef / n_cells)))
    if n_cells * reps > 200_000:
        raise ValueError("too many cells")
    idx = np.indices(sizes).reshape(len(sizes), -1).T if sizes else np.zeros((1, 0), int)
    idx = np.repeat(idx, reps, axis=0)
    data = {}
    for j, v in enumerate(cat_vars):
        vals = levels[v]
        if all(isinstance(x, str) for x in vals):
            data[v] = pd.Categorical(np.asarray(vals, dtype=object)[idx[:, j]], categories=vals)
        else:
            data[v] = np.asarray(vals)[idx[:, j]]
    for v in raw:
        if v not in levels:
            data[v] = rng.uniform(0.5, 2.0, len(idx))
    return pd.DataFrame(data), cats


def _factor_matrix(expr, numeric, df, cats):
    """One factor of a term on the grid: every level's indicator, or the numeric column."""
    from formulaic import model_matrix

    if not numeric:
        if expr in df.columns:
            col = df[expr].astype(object).to_numpy()
            return np.stack([(col == lev).astype(float) for lev in cats[expr]], axis=1)
        M = model_matrix(f"0 + {expr}", df, ensure_full_rank=False)
        if M.shape[1] != len(cats[expr]):
            raise ValueError(f"could not expand {expr!r} into its {len(cats[expr])} levels")
        return np.asarray(M.to_numpy(dtype=float))
    return np.asarray(model_matrix(f"0 + {expr}", df).to_numpy(dtype=float))


def _cell_names(expr, numeric, width, cats):
    """R's column names of one factor of a term (``Frequency3``, ``sens2``, ``poly(sens2, 2)1``)."""
    if not numeric:
        return [f"{expr}{lev}" for lev in cats[expr]]
    return [expr] if width == 1 else [f"{expr}{k + 1}" for k in range(width)]


def _term_cells(t, df, cats):
    """All cells of term ``t`` on the rows of ``df`` (R's ``model.matrix(~ 0 + term)``: the
    first factor varies fastest), their names, and whether each factor is a one-column
    numeric variable (lmerTest's containment counts only those as numeric)."""
    n = len(df)
    M, names, numeric = np.ones((n, 1)), [""], []
    for expr, num in t.factors:
        F = _factor_matrix(expr, num, df, cats)
        fn = _cell_names(expr, num, F.shape[1], cats)
        M = np.einsum("nj,ni->nji", F, M).reshape(n, -1)
        names = [f"{b}:{a}" if b else a for a in fn for b in names]
        numeric.append((expr, num and F.shape[1] == 1))
    return M, names, numeric


def _contains_r(a, b, num) -> bool:
    """lmerTest's term_contain: a's variables strictly inside b's, the same one-column
    numeric variables (a matrix term such as ``poly(x, 2)`` counts as a factor there)."""
    va, vb = {e for e, _ in a.factors}, {e for e, _ in b.factors}
    na = {e for e, k in num[a.label] if k}
    nb = {e for e, k in num[b.label] if k}
    return va < vb and na == nb


def contrasts_type3(fit) -> dict:
    """lmerTest's type III hypotheses (see module docstring), built on the rows of the fit
    as lmerTest builds them on the model frame: a cell that no row has (an empty
    Frequency x Income cell) is a zero column, and lmerTest's message about missing
    cells is issued as a warning."""
    d = fit.design
    terms = fixed_terms(d)
    if d.n_fixef <= 1 or len(terms) <= 1:
        return contrasts_type1(fit)
    if getattr(d, "frame", None) is None:
        return _contrasts_type3_grid(fit)
    spec = d.fixed_spec
    state = getattr(spec, "encoder_state", {}) or {}
    cats = {e: list(st[1]["categories"]) for e, st in state.items()
            if "CATEGORICAL" in str(st[0]).upper()}
    df = d.frame.reset_index(drop=True)
    X = d.X
    blocks, names, owner, num = [], [], [], {}
    has_int = "(Intercept)" in d.fixef_names
    if has_int:
        blocks.append(np.ones((len(df), 1)))
        names.append("(Intercept)")
        owner.append(None)
    for t in terms:
        M, nm, num[t.label] = _term_cells(t, df, cats)
        blocks.append(M)
        names += nm
        owner += [t.label] * M.shape[1]
    rdX = np.hstack(blocks)
    empty = np.flatnonzero(np.all(rdX == 0, axis=0))
    if len(empty):
        warnings.warn(f"Missing cells for: {', '.join(names[i] for i in empty)}. "
                      "Interpret type III hypotheses with care.", UserWarning, stacklevel=4)
    L = np.linalg.lstsq(X, rdX, rcond=None)[0].T          # (cells, p): zapsmall(t(ginv(X) rdX))
    L = zapsmall(L, 7)
    owner = np.asarray(owner, dtype=object)
    rows = []
    pos = {n: i for i, n in enumerate(d.fixef_names)}
    col_term = {}
    for t in terms:
        for c in t.cols:
            col_term[c] = t.label
    for j in range(d.n_fixef):
        if has_int and j == pos.get("(Intercept)"):
            rows.append(0)
            continue
        cand = np.flatnonzero(owner == col_term.get(j))
        diff = np.abs(rdX[:, cand] - X[:, [j]]).max(axis=0)
        hit = cand[diff <= 1e-10 * max(1.0, np.abs(X[:, j]).max())]
        if not len(hit):
            raise ValueError(f"column {d.fixef_names[j]} is not a cell of its term")
        rows.append(hit[0])
    for t in sorted(terms, key=lambda t: -t.order):
        cont = [u for u in terms if _contains_r(t, u, num)]
        if cont:
            Y = L[:, t.cols]
            Xc = L[:, [c for u in cont for c in u.cols]]
            coef = np.linalg.lstsq(Xc, Y, rcond=None)[0]
            L[:, t.cols] = zapsmall(Y - Xc @ coef, 7)
    Lx = L[rows]                                             # (p, p)
    out = {}
    for t in terms:
        C = Lx[:, t.cols].T
        out[t.label] = C[np.abs(C).sum(axis=1) > 1e-8]
    return out


def _contrasts_type3_grid(fit) -> dict:
    """Type III hypotheses from a synthetic grid of every cell (a design without its model
    frame, e.g. one assembled from Dask partitions)."""
    d = fit.design
    terms = fixed_terms(d)
    if all(all(num for _, num in t.factors) for t in terms):
        return {t.label: np.eye(d.n_fixef)[t.cols] for t in terms}
    rng = np.random.default_rng(20261125)
    df, cats = _synthetic_grid(d, rng)
    spec = d.fixed_spec
    Xs_all = np.asarray(spec.get_model_matrix(df).to_numpy(dtype=float))
    names = list(spec.column_names)
    rn = [r_column_name(c, d.parsed.fixed, d.parsed.renames) for c in names]
    keep = [rn.index(n) for n in d.fixef_names]
    Xs = Xs_all[:, keep]
    blocks = []
    if "(Intercept)" in d.fixef_names:
        blocks.append(np.ones((len(df), 1)))
    for t in terms:
        M = np.ones((len(df), 1))
        for expr, num in t.factors:
            F = _factor_matrix(expr, num, df, cats)
            M = (M[:, :, None] * F[:, None, :]).reshape(len(df), -1)
        blocks.append(M)
    rdX = np.hstack(blocks)
    L = np.linalg.lstsq(Xs, rdX, rcond=None)[0].T          # (m, p)
    L[np.abs(L) < 1e-9 * max(1.0, np.abs(L).max())] = 0.0
    rows = []
    for j in range(d.n_fixef):
        diff = np.abs(rdX - Xs[:, [j]]).max(axis=0)
        hit = np.flatnonzero(diff < 1e-10)
        if not len(hit):
            raise ValueError(f"column {d.fixef_names[j]} is not a cell of its term")
        rows.append(hit[0])
    for t in sorted(terms, key=lambda t: -t.order):
        cont = [u for u in terms if _contains(t, u)]
        if cont:
            Y = L[:, t.cols]
            Xc = L[:, [c for u in cont for c in u.cols]]
            coef = np.linalg.lstsq(Xc, Y, rcond=None)[0]
            R = Y - Xc @ coef
            R[np.abs(R) < 1e-9 * max(1.0, np.abs(Y).max())] = 0.0
            L[:, t.cols] = R
    Lx = L[rows]
    out = {}
    for t in terms:
        C = Lx[:, t.cols].T
        out[t.label] = C[np.abs(C).sum(axis=1) > 1e-8]
    return out


class FTestTable(pd.DataFrame):
    """lmerTest's anova table (Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)); ``str()``
    prints it in lmerTest's layout under its heading."""

    _metadata = ["heading"]

    @property
    def _constructor(self):
        return pd.DataFrame

    def __str__(self) -> str:
        x = self[COLUMNS].to_numpy(dtype=float)
        n = len(x)
        if n == 0:
            return "\n".join([getattr(self, "heading", ""), "     " + " ".join(COLUMNS)])
        cols = {}
        for j, c in enumerate(COLUMNS[:-1]):
            v = x[:, j]
            # print.anova: the test column rounded to 4 decimals, the others zapped
            s = format_real(r_round(v, 4), 5) if c == "F value" else format_real(zapsmall(v, 5), 5)
            cols[c] = ["NA" if np.isnan(v[i]) else s[i] for i in range(n)]
        lines = [getattr(self, "heading", "")]
        lines += anova_table_lines(cols, x[:, -1], self.index, "Pr(>F)", na="NA")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self):
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"


@one_blas_thread
def single_anova(fit, type=3, ddf="Satterthwaite") -> FTestTable:
    """lmerTest's ``anova(fit, type=, ddf=)``: one F test per fixed-effects term."""
    t = str(type).upper().replace("TYPE", "").strip()
    t = {"I": "1", "II": "2", "III": "3"}.get(t, t)
    if t not in ("1", "2", "3"):
        raise ValueError(f"type must be 1, 2 or 3 (lmerTest's 'I'/'II'/'III'), got {type!r}")
    ddf = normalize_ddf(ddf) or "Satterthwaite"
    if t == "1":
        Ls = contrasts_type1(fit)
    elif t == "2":   # type II (pylmem.inference.type2)
        terms = fixed_terms(fit.design)
        Ls = contrasts_type1(fit) if fit.design.n_fixef <= 1 or len(terms) <= 1 else \
            contrasts_type2(fit.design.X, terms, _contains)
    else:
        try:
            Ls = contrasts_type3(fit)
        except (ValueError, KeyError, np.linalg.LinAlgError) as e:
            warnings.warn(f"type III hypotheses could not be formed ({e}); testing each term's "
                          "own coefficients instead", UserWarning, stacklevel=2)
            Ls = {tm.label: np.eye(fit.design.n_fixef)[tm.cols] for tm in fixed_terms(fit.design)}
    rows = {label: contest_md(fit, L, ddf) for label, L in Ls.items()}
    tab = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS) if rows else \
        pd.DataFrame(columns=COLUMNS, dtype=float)
    out = FTestTable(tab)
    method = "Satterthwaite's" if ddf == "Satterthwaite" else "Kenward-Roger's"
    out.heading = f"Type {'I' * int(t)} Analysis of Variance Table with {method} method"
    return out
