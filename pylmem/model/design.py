"""Model design: from an lme4 formula and a data frame to y, X and the random-effects terms.

For the model  y = X β + Σ_k Z_k b_k + e  each random-effects term k keeps its
per-observation design ``Z`` (n × q_k, the seed's A_i stacked) and the level index
``codes`` of every observation, so Z_k itself is the sparse n × (L_k q_k) matrix with row
i holding ``Z[i]`` in the columns of level ``codes[i]``.  Terms are ordered as lme4 orders
them (by decreasing number of levels) and the observations are sorted once by the levels
of the first term, so that every per-group quantity of that term is a segment operation.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import weights as W
from .covariance import TermStructure
from .formula import ParsedFormula, parse_formula, r_column_name, translate_r
from .levels import factor_labels, factorizable, group_codes
from .matrices import build_matrix, clearly_full_rank, required_variables


@dataclass
class RandomTerm:
    """One random-effects term ``(expr | group)``: its q columns vary by ``levels``."""

    name: str                 # lme4's label: "id", "cask:batch", "Subject.1"
    group: tuple[str, ...]    # grouping columns (an interaction when several)
    coef_names: list[str]     # "(Intercept)", "week", ...
    Z: np.ndarray             # (n, q) per-observation design, model row order
    codes: np.ndarray         # (n,) level index of each observation
    levels: np.ndarray        # level labels, sorted
    expr: str = "1"           # formulaic right-hand side of this term
    spec: object = None       # formulaic ModelSpec to rebuild Z on new data
    columns: list[int] = field(default_factory=list)  # columns kept of the expr matrix
    group_values: list = None   # per grouping column: its distinct values (identity by value)
    level_codes: np.ndarray = None  # (L, len(group)) index into group_values of each level
    structure: str = "us"     # covariance structure (pylmem.model.covariance.STRUCTURES)
    mask: np.ndarray = None   # the 0/1 pattern of a "mask" structure

    @property
    def q(self) -> int:
        return self.Z.shape[1]

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_theta(self) -> int:
        return self.q * (self.q + 1) // 2

    def sparse(self):
        """Z_k as a scipy CSR matrix, n × (L q), columns level-major (level, coef)."""
        import scipy.sparse as sp

        n, q = self.Z.shape
        cols = (self.codes[:, None] * q + np.arange(q)[None, :]).ravel()
        rows = np.repeat(np.arange(n), q)
        return sp.csr_matrix((self.Z.ravel(), (rows, cols)), shape=(n, self.n_levels * q))


@dataclass
class ModelDesign:
    """Everything a fit needs, rows in model order (sorted by the first term's levels)."""

    formula: str
    parsed: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    terms: list[RandomTerm]
    row_labels: np.ndarray    # index labels of the data rows used, in model order
    order: np.ndarray = None  # model row i is row order[i] of the rows used (data order)
    n_dropped: int = 0        # rows dropped for missing values
    fixed_spec: object = None
    dropped_columns: list[str] = field(default_factory=list)  # rank-deficient X columns
    weights: np.ndarray = None   # prior weights (model order), None: all 1 (pylmem.weights)
    offset: np.ndarray = None    # offset (model order), None: 0
    weights_name: str = None     # the weights column, if given by name
    offset_exprs: list = field(default_factory=list)  # offset(expr) terms and offset= column
    offset_arg: str = None       # the offset= argument as lme4 prints it (" Offset:" line)
    aliases: dict = field(default_factory=dict)  # data column -> the name formulaic saw
    factors: tuple = ()          # columns made categorical by factors= (levels.factor_labels)
    frame: pd.DataFrame = None   # the columns the model reads, rows used, model order (R's
    #                              model.frame: lmerTest's type III contrasts are built on it);
    #                              formed on first use from frame_source (_get_frame below)
    frame_source: tuple = field(default=None, repr=False)  # (data, columns, order)

    def with_aliases(self, data: pd.DataFrame) -> pd.DataFrame:
        """``data`` plus the aliased copies of columns whose names formulaic reserves."""
        add = {a: data[c] for c, a in self.aliases.items() if c in data.columns}
        return data.assign(**add) if add else data

    @property
    def n_obs(self) -> int:
        return len(self.y)

    @property
    def n_fixef(self) -> int:
        return self.X.shape[1]

    @property
    def response(self) -> str:
        return self.parsed.response

    def to_data_order(self, a: np.ndarray) -> np.ndarray:
        """Reorder a per-observation array from model order back to the data's row order."""
        out = np.empty_like(a)
        out[self.order] = a
        return out


def _get_frame(self):
    fr = self.__dict__.get("_frame")
    if fr is None and self.frame_source is not None:
        data, cols, order = self.frame_source
        fr = data[list(cols)].iloc[order]
        self.__dict__["_frame"] = fr
        self.frame_source = None
    return fr


def _set_frame(self, value):
    self.__dict__["_frame"] = value


# the model frame is formed only when asked for (type III contrasts, influence): a fit that
# never needs it saves selecting and reordering the columns (~0.4 ms of a 2 ms small fit)
ModelDesign.frame = property(_get_frame, _set_frame, doc="The columns the model reads, rows "
                             "used, in model order (R's model.frame).")


def _missing_rows(data: pd.DataFrame, cols) -> np.ndarray:
    """Whether each row has a missing value in any of ``cols`` (numpy columns by
    ``isnan``, others by pandas' ``isna``: ~10x faster than ``data[cols].isna().any(1)``)."""
    na = np.zeros(len(data), dtype=bool)
    for c in cols:
        col = data[c]
        dt = col.dtype
        if isinstance(dt, np.dtype) and dt.kind in "iub":
            continue
        if isinstance(dt, np.dtype) and dt.kind in "fc":
            na |= np.isnan(col.to_numpy())
        else:
            na |= np.asarray(col.isna().to_numpy(), dtype=bool)
    return na


def require_rows(design, what: str) -> None:
    """NotImplementedError naming ``what`` for a design without its rows in memory (a Dask
    fit's design keeps only the statistics; its rows stay in the partitions)."""
    if not hasattr(design, "order") or getattr(design, "response_fingerprint", None) is not None:
        raise NotImplementedError(
            f"{what} is not available for a Dask fit: it needs the rows in memory, which stay "
            "in the partitions (fit pylmem.lmer(formula, ddf.compute()) in memory for it)")


def _check_columns(names, data: pd.DataFrame, where: str) -> None:
    missing = [v for v in names if v not in data.columns]
    if missing:
        raise ValueError(
            f"{where} names column(s) {', '.join(map(repr, missing))} not in the data "
            f"(columns: {', '.join(map(str, data.columns))})")


def _check_finite(M: np.ndarray, names, what: str) -> None:
    """Infinite values would break the fit silently (rank checks, Cholesky): name them."""
    bad = ~np.isfinite(M)
    if bad.any():
        cols = [f"{names[j]!r} ({int(bad[:, j].sum())} rows)" for j in np.flatnonzero(bad.any(axis=0))]
        raise ValueError(f"non-finite values (inf) in the {what} column(s) {', '.join(cols)}")


_MISSING_TOKENS = {".", "", "na", "n/a", "nan", "null", "none", "-", "?", "missing", "#n/a"}


def _check_numbers_as_text(data: pd.DataFrame, cols) -> None:
    """A text column of numbers with a few missing-value tokens ('.', 'NA', '') would be read
    as a factor with one level per value: an error naming the column and the tokens."""
    for c in sorted(cols, key=str):
        if c not in data.columns:
            continue
        col = data[c]
        if not (col.dtype == object or pd.api.types.is_string_dtype(col)) or \
                isinstance(col.dtype, pd.CategoricalDtype):
            continue
        # judged on the distinct values (a text factor has few; ~50x faster on 10⁴ rows)
        codes, uniq = pd.factorize(factorizable(col))
        uniq = pd.Series(np.asarray(uniq, dtype=object))
        if not len(uniq) or not all(isinstance(x, str) for x in uniq.iloc[:1000]):
            continue
        is_text = pd.to_numeric(uniq, errors="coerce").isna().to_numpy()
        if not is_text.any() or is_text.all():
            continue
        counts = np.bincount(codes[codes >= 0], minlength=len(uniq))
        text = pd.Series(np.repeat(uniq[is_text].to_numpy(), counts[is_text]))
        tokens = sorted(set(text.str.strip()))
        if len(tokens) <= 3 and all(t.lower() in _MISSING_TOKENS for t in tokens):
            raise ValueError(
                f"column {c!r} holds numbers and {len(text)} text value(s) "
                f"{', '.join(map(repr, tokens))} that look like missing values, so it would be "
                f"a factor with one level per number: mark them missing (e.g. "
                f"pd.read_csv(..., na_values={tokens!r}) or pd.to_numeric(..., errors='coerce'))"
                f", or name it in factors= if {c!r} is meant as a factor")


def _drop_rank_deficient(X: np.ndarray, names: list[str]):
    """Drop columns of X that are linearly dependent on earlier ones (as lme4 does)."""
    if X.shape[1] == 0:
        return X, names, []
    # unpivoted QR: a tiny |R_jj| means column j lies in the span of the columns before it,
    # so the earlier column is kept, as R's qr() does for lme4
    # columns after an intercept are judged centred (same span): x = 10⁴ + 0.001·noise is
    # not collinear with the intercept, though |R_jj| / ‖x‖ ~ 1e-7 uncentred
    Xc = X
    ones = np.flatnonzero(np.all(X == 1.0, axis=0)) if len(X) else []
    if clearly_full_rank(X, ones[0] if len(ones) else None):   # the QR would keep them all
        return X, names, []
    if len(ones):
        Xc = X.copy()
        Xc[:, ones[0] + 1:] -= X[:, ones[0] + 1:].mean(axis=0)
    R = np.linalg.qr(Xc, mode="r")
    d = np.abs(np.diag(R))
    scale = np.linalg.norm(Xc, axis=0)
    keep = np.flatnonzero(d > 1e-7 * np.where(scale > 0, scale, 1.0))
    if len(keep) == X.shape[1]:
        return X, names, []
    dropped = [names[i] for i in range(X.shape[1]) if i not in set(keep.tolist())]
    warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                  f"column(s): {', '.join(dropped)}", stacklevel=3)
    return X[:, keep], [names[i] for i in keep], dropped


def _alias_reserved(parsed: ParsedFormula, data: pd.DataFrame):
    """Columns named ``Intercept`` or a number (used as ```1```) would be formulaic's
    intercept: give them aliases in the expressions, renamed back in the coefficient names."""
    import re
    from dataclasses import replace

    aliases, text = {}, [parsed.fixed] + [sp.expr for sp in parsed.random]
    for col in data.columns:
        if not isinstance(col, str):
            continue
        if col == "Intercept":
            pat = re.compile(r"(?<![\w.`])Intercept(?![\w.`])|`Intercept`")
        elif re.fullmatch(r"\d+(\.\d*)?", col):
            pat = re.compile("`" + re.escape(col) + "`")
        else:
            continue
        if not any(pat.search(t) for t in text):
            continue
        alias = "pylmem_col_%d_%s" % (len(aliases), re.sub(r"\W", "_", col))
        while alias in data.columns:
            alias += "_"
        aliases[col] = (alias, pat)
    if not aliases:
        return parsed, {}

    def sub(t):
        for alias, pat in aliases.values():
            t = pat.sub(alias, t)
        return t

    renames = tuple(parsed.renames) + tuple((a, c) for c, (a, _) in aliases.items())
    random = tuple(replace(sp, expr=sub(sp.expr)) for sp in parsed.random)
    parsed = replace(parsed, fixed=sub(parsed.fixed), random=random, renames=renames)
    return parsed, {c: a for c, (a, _) in aliases.items()}


def order_terms(terms: list) -> None:
    """lme4's term order, in place: by decreasing number of levels (stable), names made
    unique (``Subject``, ``Subject.1``); a term needs at least 2 levels."""
    terms.sort(key=lambda t: -t.n_levels)
    seen: dict[str, int] = {}
    for t in terms:
        k = seen.get(t.name, 0)
        seen[t.name] = k + 1
        if k:
            t.name = f"{t.name}.{k}"
    for t in terms:
        if t.n_levels < 2:
            raise ValueError(f"grouping factor {t.name!r} has {t.n_levels} level: a random-effects "
                             "term needs at least 2 levels")


def build_design(formula: str, data: pd.DataFrame, *, factors=(), weights=None,
                 offset=None, check_nlev: bool = True) -> ModelDesign:
    """Parse ``formula`` against ``data`` and build y, X and the random terms.

    Rows with a missing value in any column the model uses are dropped and counted.

    Parameters
    ----------
    formula : str
        An lme4 formula, e.g. ``"y ~ x + (x | g)"``.
    data : pandas.DataFrame
        The data (other tables through :func:`pylmem.model.tables.as_pandas`).
    factors : sequence of str, optional
        Columns to treat as categorical even if numeric (R's ``factor``).
    weights, offset : str or array-like, optional
        Prior weights and an offset: a column name or an array (see
        :mod:`pylmem.model.weights`).
    check_nlev : bool, optional
        False allows a grouping factor with as many levels as observations (an
        observation-level random effect of a GLMM; lme4's glmer allows it, lmer does not).

    Returns
    -------
    ModelDesign
        y, X and the random-effects terms, rows sorted by the first term's levels.
    """
    if not isinstance(data, pd.DataFrame):
        raise ValueError("data must be a pandas DataFrame")
    parsed = parse_formula(formula)
    if not parsed.random:
        raise ValueError(f"formula {formula!r} has no random-effects term '(expr | group)'; "
                         "use an ordinary linear model for fixed effects only")
    if isinstance(factors, str):
        factors = (factors,)
    try:
        factors = tuple(factors)
    except TypeError:
        raise ValueError("factors must be a column name or a list of column names, "
                         f"got {factors!r}") from None
    data = data.copy(deep=False)   # copy-on-write: the columns added below stay ours
    if len(data) == 0:
        raise ValueError("the data have no rows")
    parsed, aliases = _alias_reserved(parsed, data)
    for c, a in aliases.items():
        data[a] = data[c]
    fixed_rest, offset_exprs = W.split_offsets(parsed.fixed)
    if offset_exprs:
        from dataclasses import replace

        parsed = replace(parsed, fixed=fixed_rest)
    w_name, w_all = W.as_column(weights, data, "weights")
    o_name, o_all = W.as_column(offset, data, "offset")
    _check_columns(list(factors), data, "--factor/factors")
    for f in factors:
        data[f] = factor_labels(data[f])

    _check_columns([parsed.response], data, f"the response of {formula!r}")
    if not pd.api.types.is_numeric_dtype(data[parsed.response]):
        raise ValueError(f"response column {parsed.response!r} is not numeric "
                         f"(dtype {data[parsed.response].dtype})")
    used = {parsed.response}
    expr_cols: set = set()
    fixed_vars = required_variables(parsed.fixed, data)
    _check_columns(sorted(fixed_vars), data, f"the fixed part '{parsed.fixed}'")
    used |= set(fixed_vars) | W.offset_variables(offset_exprs, data) | ({o_name} - {None})
    for spec in parsed.random:
        expr_vars = required_variables(translate_r(spec.expr)[0], data)
        _check_columns(sorted(expr_vars), data, f"the random term ({spec.expr} | {spec.name})")
        _check_columns(list(spec.group), data, f"the random term ({spec.expr} | {spec.name})")
        used |= set(expr_vars) | set(spec.group)
        expr_cols |= set(expr_vars)

    _check_numbers_as_text(data, (set(fixed_vars) | expr_cols) - set(factors))
    used_cols = [c for c in data.columns if c in used]
    na = _missing_rows(data, used_cols)
    # an offset that evaluates to NaN (log of a negative or missing t) is a missing value,
    # as an NaN in an offset column: the row is dropped and counted (R's na.omit)
    off = W.evaluate_offset(offset_exprs, data)
    if off is not None:
        na = na | np.isnan(off)
    if o_all is not None:
        na = na | np.isnan(o_all)
    n_dropped = int(na.sum())
    if n_dropped:
        data = data.loc[~na]
        w_all = None if w_all is None else w_all[~na]
        o_all = None if o_all is None else o_all[~na]
        off = None if off is None else off[~na]
    if w_all is not None:
        W.check_weights(w_all, w_name)
    if o_all is not None:
        off = o_all if off is None else off + o_all
        offset_exprs = offset_exprs + [o_name if o_name else "<offset array>"]
    if off is not None:
        _check_finite(off[:, None], ["offset"], "offset")
    if len(data) == 0:
        raise ValueError(f"no rows left after dropping {n_dropped} rows with missing values")
    dtypes = data.dtypes
    for c in used_cols:   # lme4's drop.unused.levels: a category without rows is no level
        if isinstance(dtypes[c], pd.CategoricalDtype):
            data[c] = data[c].cat.remove_unused_categories()
        elif isinstance(dtypes[c], pd.StringDtype) and dtypes[c].na_value is pd.NA:
            # pandas' "string" dtype (convert_dtypes, dtype_backend=): formulaic multiplies
            # it as numbers; as pandas' default text dtype it is a factor (no missing left)
            data[c] = data[c].astype("str")

    # fixed effects
    y = data[parsed.response].to_numpy(dtype=float)
    _check_finite(y[:, None], [parsed.response], "response")
    X, fcols, fixed_spec, _ = build_matrix(parsed.fixed, data)
    fixef_names = [r_column_name(c, parsed.fixed, parsed.renames) for c in fcols]
    _check_finite(X, fixef_names, "fixed-effects")
    X, fixef_names, dropped_cols = _drop_rank_deficient(X, fixef_names)

    # random effects
    terms: list[RandomTerm] = []
    level_cache: dict = {}   # each grouping column factorized once for all its terms
    for spec in parsed.random:
        expr = translate_r(spec.expr)[0]
        Zfull, zcols, zspec, term_indices = build_matrix(expr, data)
        names = [r_column_name(c, expr, translate_r(spec.expr)[1] + list(parsed.renames))
                 for c in zcols]
        if not names:
            raise ValueError(f"random-effects term ({spec.expr} | {spec.name}) has no columns: "
                             "drop it, or write (1 | g) for a random intercept")
        _check_finite(Zfull, names, f"random-effects ({spec.expr} | {spec.name})")
        codes, levels, group_values, level_codes = group_codes(data, spec.group, level_cache)
        # (a + b || g): one term per formula term of the expression, as lme4's double bar
        col_groups = [list(range(Zfull.shape[1]))] if spec.correlated else \
            [list(idx) for idx in term_indices.values()]
        for cols in col_groups:
            terms.append(RandomTerm(name=spec.name, group=spec.group,
                                    coef_names=[names[c] for c in cols],
                                    Z=np.ascontiguousarray(Zfull[:, cols]),
                                    codes=codes.astype(np.int64), levels=np.asarray(levels),
                                    expr=expr, spec=zspec,
                                    columns=list(cols), group_values=group_values,
                                    level_codes=level_codes, structure=spec.structure))
    order_terms(terms)
    for t in terms:
        if t.structure != "us":
            TermStructure(t.structure, t.q, name=t.name)   # a structure the term cannot have
    for t in terms:
        if check_nlev and t.n_levels >= len(y) and t.q >= 1:
            raise ValueError(f"number of levels of grouping factor {t.name!r} ({t.n_levels}) "
                             f"must be less than the number of observations ({len(y)})")

    # sort rows once by the levels of the first (largest) term
    order = np.argsort(terms[0].codes, kind="stable")
    for t in terms:
        t.Z = t.Z[order]
        t.codes = t.codes[order]
    return ModelDesign(formula=formula, parsed=parsed, y=y[order], X=np.ascontiguousarray(X[order]),
                       fixef_names=fixef_names, terms=terms,
                       row_labels=np.asarray(data.index)[order], order=order, n_dropped=n_dropped,
                       fixed_spec=fixed_spec, dropped_columns=dropped_cols,
                       weights=None if w_all is None else w_all[order],
                       offset=None if off is None else off[order], weights_name=w_name,
                       offset_exprs=offset_exprs,
                       offset_arg=None if o_all is None else (o_name or "<array>"),
                       aliases=aliases, factors=tuple(factors),
                       frame_source=(data, used_cols, order))


def apply_cov_mask(design: ModelDesign, cov_mask) -> ModelDesign:
    """Give the design's terms the seed's mask structure (``em2.lmem``'s C), in place.

    ``cov_mask``: a q × q symmetric 0/1 array with ones on the diagonal (0: a covariance fixed
    at zero) for a model with one random-effects term, or a dict term name → array.
    """
    if cov_mask is None:
        return design
    if isinstance(cov_mask, dict):
        masks = dict(cov_mask)
        names = [t.name for t in design.terms]
        unknown = [k for k in masks if k not in names]
        if unknown:
            raise ValueError(f"cov_mask names term(s) {', '.join(map(repr, unknown))} not in the "
                             f"model (terms: {', '.join(names)})")
    else:
        if len(design.terms) != 1:
            raise ValueError("cov_mask as one array needs a model with one random-effects term; "
                             "give a dict term name -> mask for several terms")
        masks = {design.terms[0].name: cov_mask}
    for t in design.terms:
        if t.name in masks:
            if t.structure != "us":
                raise ValueError(f"term {t.name!r} already has the covariance structure "
                                 f"{t.structure}(): cov_mask applies to an unstructured term")
            TermStructure("mask", t.q, masks[t.name], t.name)      # validates the mask
            t.structure = "mask"
            t.mask = np.asarray(masks[t.name], dtype=float)
    return design
