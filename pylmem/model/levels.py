"""What a level of a grouping factor is: identity by value (pandas' equality: 1 == 1.0,
0.0 == -0.0, 2 != "2"), levels sorted as R's factor levels, interactions ``a:b`` as the
observed combinations; and the lookup of new rows among a term's levels (predict).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def group_labels(data: pd.DataFrame, group: tuple[str, ...]) -> pd.Series:
    """Display label of each row for a grouping factor or an interaction ``a:b``."""
    cols = [data[g].astype(str) for g in group]
    lab = cols[0]
    for c in cols[1:]:
        lab = lab + ":" + c
    return lab


def _distinct_sorted(values: pd.Series):
    """(codes, uniques) of a column by *value* (pandas' equality: 1 == 1.0, 0.0 == -0.0,
    2 != "2"), uniques sorted (as R's factor levels; mixed types by type name, then str)."""
    try:
        return pd.factorize(values, sort=True)
    except TypeError:   # mixed types (2 and "2") cannot be ordered directly
        codes, uniq = pd.factorize(values, sort=False)
        keys = [(type(v).__name__, str(v)) for v in uniq]
        order = sorted(range(len(uniq)), key=keys.__getitem__)
        remap = np.empty(len(uniq), dtype=np.int64)
        remap[order] = np.arange(len(uniq))
        return remap[codes], uniq.take(order)


def group_codes(data: pd.DataFrame, group: tuple[str, ...]):
    """Level of each row of a grouping factor (or interaction), identity by value.

    Returns (codes, levels, group_values, level_codes): ``levels`` the display labels
    (the values themselves for one column, "a:b" strings for an interaction, sorted by
    label), ``group_values`` each column's distinct values and ``level_codes`` the
    (L, ncols) indices of each level's values into them; predict matches new data to
    levels through the latter, so int ids and float newdata ids are the same levels.
    """
    per = [_distinct_sorted(data[g]) for g in group]
    values = [np.asarray(u, dtype=object) if isinstance(u, pd.Categorical) else
              np.asarray(u) for _, u in per]
    if len(group) == 1:
        codes = np.asarray(per[0][0], dtype=np.int64)
        levels = np.asarray(per[0][1])
        return codes, levels, values, np.arange(len(levels))[:, None]
    C = np.column_stack([np.asarray(c, dtype=np.int64) for c, _ in per])
    sizes = [max(len(v), 1) for v in values]
    if float(np.prod(sizes, dtype=float)) < 2.0 ** 62:   # one int64 key per row (fast sort)
        radix = np.cumprod([1] + sizes[:0:-1])[::-1]     # column 0 most significant
        ukey, codes = np.unique(C @ radix, return_inverse=True)
        uniq = (ukey[:, None] // radix[None, :]) % np.asarray(sizes)[None, :]
    else:
        uniq, codes = np.unique(C, axis=0, return_inverse=True)
    labels = np.array([":".join(str(values[j][uniq[i, j]]) for j in range(len(group)))
                       for i in range(len(uniq))], dtype=object)
    order = np.lexsort((np.arange(len(uniq)), labels.astype(str)))
    remap = np.empty(len(uniq), dtype=np.int64)
    remap[order] = np.arange(len(uniq))
    return remap[codes.ravel()], labels[order], values, uniq[order]


def match_levels(term, data: pd.DataFrame) -> np.ndarray:
    """Index of each row's level among ``term``'s levels (−1 for a level not in the fit)."""
    n = len(data)
    if term.group_values is None:   # a term built elsewhere: fall back to the labels
        return pd.Index(term.levels).get_indexer(group_labels(data, term.group).to_numpy())
    C = np.empty((n, len(term.group)), dtype=np.int64)
    for j, g in enumerate(term.group):
        C[:, j] = pd.Index(term.group_values[j]).get_indexer(data[g])
    if len(term.group) == 1:
        return C[:, 0]
    # mixed-radix key of each code tuple, looked up among the levels' keys
    radix = np.cumprod([1] + [len(v) for v in term.group_values[:-1]])
    lvl_key = term.level_codes @ radix
    order = np.argsort(lvl_key)
    key = C @ radix
    pos = np.clip(np.searchsorted(lvl_key[order], key), 0, max(len(order) - 1, 0))
    hit = (C >= 0).all(axis=1) & (lvl_key[order][pos] == key) if len(order) else np.zeros(n, bool)
    return np.where(hit, order[pos] if len(order) else -1, -1)
