"""The levels pass: parse the formula against the frame's columns and agree the levels of
every grouping factor (and of every categorical fixed-effects column) across partitions,
so that each partition codes its rows against the same global levels.  The result, a
:class:`Plan`, is everything a partition needs to build its y, X, Z and codes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..model.design import order_terms
from ..model.formula import parse_formula, r_column_name, translate_r
from ..model.levels import group_labels
from ..model.matrices import NumericSpec, build_matrix, required_variables
from .reduce import reduce_partitions


class Levels:
    """Global levels of a grouping factor, in an in-memory fit's order (numeric ids by value,
    other labels as sorted strings); codes looked up per partition."""

    def __init__(self, uniques):
        uniques = np.asarray(uniques)
        # numeric ids are levels by value, sorted by value (as design.group_codes does)
        self.integer = uniques.dtype.kind in "iuf"
        if self.integer:
            uniques = np.unique(uniques)
            order = np.arange(len(uniques))
            self.labels = uniques
        else:
            labels = uniques.astype(object)
            order = np.argsort(labels.astype(str), kind="stable")
            self.labels = labels[order]
        if self.integer:                       # numeric ids: a lookup table, or binary search
            srt = np.argsort(uniques, kind="stable")
            self.keys = uniques[srt]
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            self.rank = rank[srt]
            self.lut = None
            if len(uniques) and uniques.dtype.kind in "iu":
                self.lo = int(self.keys[0])
                span = int(self.keys[-1]) - self.lo + 1
                if span <= 4 * len(uniques) + 1024:
                    self.lut = np.full(span, -1, np.int64)
                    self.lut[self.keys - self.lo] = self.rank
        else:
            self.index = pd.Index(self.labels)

    def __len__(self):
        return len(self.labels)

    def codes(self, part: pd.DataFrame, group) -> np.ndarray:
        if self.integer:
            v = part[group[0]].to_numpy()
            if self.lut is not None:
                off = v - self.lo
                if len(v) and (off.min() < 0 or off.max() >= len(self.lut)):
                    c = np.full(len(v), -1)
                else:
                    c = self.lut[off]
                if (c < 0).any():
                    raise ValueError(f"grouping factor {':'.join(group)!r}: a level not seen in "
                                     "the levels pass (the data changed between passes?)")
                return c
            pos = np.clip(np.searchsorted(self.keys, v), 0, len(self.keys) - 1)
            if not np.array_equal(self.keys[pos], v):
                raise ValueError(f"grouping factor {':'.join(group)!r}: a level not seen in the "
                                 "levels pass (the data changed between passes?)")
            return self.rank[pos]
        c = self.index.get_indexer(group_labels(part, group).to_numpy())
        if (c < 0).any():
            raise ValueError(f"grouping factor {':'.join(group)!r}: a level not seen in the "
                             "levels pass (the data changed between passes?)")
        return c.astype(np.int64)


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

    def prepare(self, part: pd.DataFrame):
        """(data without rows that miss a value, number dropped)."""
        part = part[[c for c in part.columns if c in set(self.used)]]
        for f in self.factors:
            part = part.assign(**{f: part[f].astype(str).where(part[f].notna())})
        na = part.isna().any(axis=1).to_numpy()
        if na.any():
            part = part.loc[~na]
        for c, lv in self.cat_levels.items():
            part = part.assign(**{c: pd.Categorical(part[c], categories=lv)})
        return part, int(na.sum())

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


def _unique_values(part, cols_groups, used, factors):
    """Per partition: the unique labels of each grouping factor / categorical column."""
    part = part[[c for c in part.columns if c in set(used)]]
    for f in factors:
        part = part.assign(**{f: part[f].astype(str).where(part[f].notna())})
    part = part.dropna()
    out = []
    for g in cols_groups:
        if len(g) == 1 and part[g[0]].dtype.kind in "iu":
            out.append(pd.unique(part[g[0]].to_numpy()))
        else:
            out.append(pd.unique(group_labels(part, g).to_numpy()))
    return out


def _merge_uniques(a, b):
    return [pd.unique(np.concatenate([x, y])) for x, y in zip(a, b)]


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
    used |= set(fixed_vars)
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
    cat_levels = {c: np.sort(uniq[(c,)]) for c in cat_cols}

    # a small sample with every level: formulaic learns the encodings (levels) from it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # "insufficient elements for head"
        sample = ddf[used].head(50, npartitions=1, compute=True)
        if len(sample.dropna()) == 0:
            sample = ddf[used].dropna().head(50, npartitions=-1, compute=True)
    for f in factors:
        sample[f] = sample[f].astype(str).where(sample[f].notna())
    sample = sample.dropna()
    if len(sample) == 0:
        raise ValueError("no rows left after dropping rows with missing values")
    for c, lv in cat_levels.items():
        sample[c] = pd.Categorical(sample[c], categories=lv)
    Xs, fcols, fixed_spec, _ = build_matrix(parsed.fixed, sample)
    fixef_names = [r_column_name(c, parsed.fixed, parsed.renames) for c in fcols]
    plan = Plan(formula, parsed, parsed.response, used, factors, cat_levels, fixed_spec,
                list(range(Xs.shape[1])), fixef_names)
    terms = []
    for spec, expr, renames, _ in rand:
        if getattr(spec, "structure", "us") != "us":
            raise ValueError(f"covariance structure {spec.structure} on ({spec.expr} | "
                             f"{spec.name}) is not supported for a Dask DataFrame yet: fit in memory")
        Zs, zcols, zspec, term_indices = build_matrix(expr, sample)
        names = [r_column_name(c, expr, renames) for c in zcols]
        col_groups = [list(range(Zs.shape[1]))] if spec.correlated else \
            [list(idx) for idx in term_indices.values()]
        lv = Levels(uniq[tuple(spec.group)])
        for cg in col_groups:
            terms.append(TermPlan(spec.name, tuple(spec.group), [names[c] for c in cg], expr,
                                   zspec, cg, lv))
    order_terms(terms)
    plan.terms = terms
    return plan
