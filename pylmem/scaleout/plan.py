"""The levels pass: parse the formula against the frame's columns and agree the levels of
every grouping factor (and of every categorical fixed-effects column) across partitions,
so that each partition codes its rows against the same global levels.  The result, a
:class:`Plan`, is everything a partition needs to build its y, X, Z and codes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..model import weights as W
from ..model.design import order_terms
from ..model.formula import parse_formula, r_column_name, translate_r
from ..model.levels import (
    distinct_groups,
    distinct_levels,
    factor_labels,
    group_codes,
    level_index,
    level_positions,
    match_codes,
    merge_groups,
    restore_dtype,
)
from ..model.matrices import NumericSpec, build_matrix, required_variables
from .reduce import reduce_partitions


class Levels:
    """Global levels of a grouping factor (or interaction), agreed across partitions: the
    distinct value tuples that the partitions found, merged by value, as
    :func:`~pylmem.model.levels.group_codes` orders them for an in-memory fit; a
    partition's rows are coded by :func:`~pylmem.model.levels.match_codes` (by value)."""

    def __init__(self, distinct: pd.DataFrame, group, dtypes=None):
        group = tuple(group)
        if dtypes is not None:
            distinct = distinct.assign(**{g: restore_dtype(distinct[g], dtypes[g])
                                          for g in group if g in dtypes})
        _, labels, values, level_codes = group_codes(distinct, group)
        self.labels = labels
        self.group_values = values
        self.level_codes = level_codes
        self.indexes = [level_index(v) for v in values]

    def __len__(self):
        return len(self.labels)

    def codes(self, part: pd.DataFrame, group) -> np.ndarray:
        c = match_codes(self.indexes, self.level_codes, part, tuple(group))
        if (c < 0).any():
            raise ValueError(f"grouping factor {':'.join(group)!r}: a level not seen in the "
                             "levels pass (the data changed between passes?)")
        return c


@dataclass
class TermPlan:
    name: str
    group: tuple
    coef_names: list
    expr: str
    spec: object
    columns: list
    levels: Levels

    @property
    def q(self):
        return len(self.columns)

    @property
    def n_levels(self):
        return len(self.levels)


@dataclass
class Plan:
    """Everything a partition needs to build its rows (shipped once to each worker)."""

    formula: str
    parsed: object
    response: str
    used: list
    factors: list
    cat_levels: dict          # fixed-effects categorical column -> global levels
    fixed_spec: object
    fixed_cols: list          # positions of the kept X columns in the spec's matrix
    fixef_names: list
    terms: list = field(default_factory=list)
    offset_exprs: list = field(default_factory=list)   # offset(expr) terms of the formula

    def prepare(self, part: pd.DataFrame):
        """(data without rows that miss a value, number dropped)."""
        part = part[[c for c in part.columns if c in set(self.used)]]
        for f in self.factors:
            part = part.assign(**{f: factor_labels(part[f])})
        na = part.isna().any(axis=1).to_numpy()
        if na.any():
            part = part.loc[~na]
        for c, lv in self.cat_levels.items():
            part = part.assign(**{c: _as_categorical(part[c], lv)})
        return part, int(na.sum())

    def offset(self, part: pd.DataFrame):
        """The offset of a prepared partition's rows (None without offset terms)."""
        if not self.offset_exprs:
            return None
        off = W.evaluate_offset(self.offset_exprs, part)
        if len(off) and not np.isfinite(off).all():
            bad = int((~np.isfinite(off)).sum())
            raise ValueError(f"the offset {' + '.join(self.offset_exprs)} is NaN or infinite in "
                             f"{bad} row(s)")
        return off

    def fixed_matrix(self, part: pd.DataFrame) -> np.ndarray:
        if isinstance(self.fixed_spec, NumericSpec):
            M = build_matrix(self.parsed.fixed, part)[0]
        else:
            M = self.fixed_spec.get_model_matrix(part, output="pandas").to_numpy(dtype=float)
        return M if self.fixed_cols == list(range(M.shape[1])) else \
            np.ascontiguousarray(M[:, self.fixed_cols])

    def term_matrix(self, t: TermPlan, part: pd.DataFrame) -> np.ndarray:
        if isinstance(t.spec, NumericSpec):
            M = build_matrix(t.expr, part)[0]
        else:
            M = t.spec.get_model_matrix(part, output="pandas").to_numpy(dtype=float)
        return M if t.columns == list(range(M.shape[1])) else \
            np.ascontiguousarray(M[:, t.columns])


def _as_categorical(values: pd.Series, levels) -> pd.Categorical:
    """A partition's column as a Categorical of the global levels, matched by value."""
    idx = level_index(levels)
    codes = level_positions(idx, values)
    if ((codes < 0) & values.notna().to_numpy()).any():
        raise ValueError(f"column {values.name!r}: a level not seen in the levels pass (the "
                         "data changed between passes?)")
    return pd.Categorical.from_codes(codes, categories=idx)


def _unique_values(part, cols_groups, used, factors):
    """Per partition: the distinct value tuples of each grouping factor / categorical
    column (:func:`~pylmem.model.levels.distinct_groups`, by value)."""
    part = part[[c for c in part.columns if c in set(used)]]
    for f in factors:
        part = part.assign(**{f: factor_labels(part[f])})
    part = part.dropna()
    return [distinct_groups(part, g) for g in cols_groups]


def _merge_uniques(a, b):
    return [merge_groups(x, y) for x, y in zip(a, b)]


def _is_categorical(s) -> bool:
    return not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)


def build_plan(formula, ddf, *, factors=(), verbose=None, complete_rows=False):
    """Parse, check columns, agree levels across partitions (one pass): a :class:`Plan`.

    The levels pass reads only the grouping and categorical columns (``complete_rows``
    False): levels of rows that the statistics pass then drops for a missing value are
    detected there (a level without rows) and the plan is rebuilt with ``complete_rows``
    True, reading every used column and dropping incomplete rows first."""
    parsed = parse_formula(formula)
    if not parsed.random:
        raise ValueError(f"formula {formula!r} has no random-effects term '(expr | group)'; "
                         "use an ordinary linear model for fixed effects only")
    fixed_rest, offset_exprs = W.split_offsets(parsed.fixed)
    if offset_exprs:
        parsed = replace(parsed, fixed=fixed_rest)
    cols = list(ddf.columns)
    meta = ddf._meta.copy()

    def check(names, where):
        missing = [v for v in names if v not in cols]
        if missing:
            raise ValueError(f"{where} names column(s) {', '.join(map(repr, missing))} not in the "
                             f"data (columns: {', '.join(map(str, cols))})")

    factors = list(factors)
    check(factors, "--factor/factors")
    for f in factors:
        meta[f] = meta[f].astype(str)
    check([parsed.response], f"the response of {formula!r}")
    if not pd.api.types.is_numeric_dtype(meta[parsed.response]):
        raise ValueError(f"response column {parsed.response!r} is not numeric "
                         f"(dtype {meta[parsed.response].dtype})")
    used = {parsed.response}
    fixed_vars = required_variables(parsed.fixed, meta)
    check(sorted(fixed_vars), f"the fixed part '{parsed.fixed}'")
    used |= set(fixed_vars) | W.offset_variables(offset_exprs, meta)
    rand = []
    for spec in parsed.random:
        expr, renames = translate_r(spec.expr)
        ev = required_variables(expr, meta)
        check(sorted(ev), f"the random term ({spec.expr} | {spec.name})")
        check(list(spec.group), f"the random term ({spec.expr} | {spec.name})")
        used |= set(ev) | set(spec.group)
        rand.append((spec, expr, renames, ev))
    used = [c for c in cols if c in used]
    cat_cols = sorted(c for c in (set(fixed_vars) | set().union(*[r[3] for r in rand]))
                      if c in used and _is_categorical(meta[c]))
    groups = [tuple(spec.group) for spec, *_ in rand]
    keys = list(dict.fromkeys(groups)) + [(c,) for c in cat_cols]

    read = used if complete_rows else [c for c in used if c in set().union(*keys)]
    uniq = reduce_partitions(ddf[read].to_delayed(), _unique_values, (keys, read, factors),
                             _merge_uniques, label="levels pass", verbose=verbose)
    uniq = dict(zip(keys, uniq))
    dtypes = dict(meta.dtypes)
    cat_levels = {c: distinct_levels(restore_dtype(uniq[(c,)][c], dtypes[c]))[1]
                  for c in cat_cols}

    # a small sample with every level: formulaic learns the encodings (levels) from it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # "insufficient elements for head"
        sample = ddf[used].head(50, npartitions=1, compute=True)
        if len(sample.dropna()) == 0:
            sample = ddf[used].dropna().head(50, npartitions=-1, compute=True)
    for f in factors:
        sample[f] = factor_labels(sample[f])
    sample = sample.dropna()
    if len(sample) == 0:
        raise ValueError("no rows left after dropping rows with missing values")
    for c, lv in cat_levels.items():
        sample[c] = _as_categorical(sample[c], lv)
    Xs, fcols, fixed_spec, _ = build_matrix(parsed.fixed, sample)
    fixef_names = [r_column_name(c, parsed.fixed, parsed.renames) for c in fcols]
    plan = Plan(formula, parsed, parsed.response, used, factors, cat_levels, fixed_spec,
                list(range(Xs.shape[1])), fixef_names, offset_exprs=offset_exprs)
    terms = []
    for spec, expr, renames, _ in rand:
        if getattr(spec, "structure", "us") != "us":
            raise ValueError(f"covariance structure {spec.structure} on ({spec.expr} | "
                             f"{spec.name}) is not supported for a Dask DataFrame yet: fit in memory")
        Zs, zcols, zspec, term_indices = build_matrix(expr, sample)
        names = [r_column_name(c, expr, renames) for c in zcols]
        col_groups = [list(range(Zs.shape[1]))] if spec.correlated else \
            [list(idx) for idx in term_indices.values()]
        lv = Levels(uniq[tuple(spec.group)], spec.group, dtypes)
        for cg in col_groups:
            terms.append(TermPlan(spec.name, tuple(spec.group), [names[c] for c in cg], expr,
                                   zspec, cg, lv))
    order_terms(terms)
    plan.terms = terms
    return plan
