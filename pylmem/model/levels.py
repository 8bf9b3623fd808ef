"""What a level of a grouping factor is, in one place for the fit, ``predict``, refits and
every Dask partition.

Identity is by *value*, with pandas' equality (its hash tables): ``1 == 1.0``,
``0.0 == -0.0``, ``2 != "2"``; int64 ids in one partition and float64 ids of the same
integral values in another are the same levels.  :func:`distinct_levels` decides the
distinct values of a column (sorted as R sorts a factor's levels; a Categorical in its
categories' order, only the categories that occur), :func:`level_positions` finds values
among them.  Everything else here is built on those two: :func:`group_codes` (the levels of a
grouping factor or an interaction ``a:b``, the observed combinations), :func:`match_levels`
(new rows onto a term's levels, −1 for a level not in the fit), :func:`distinct_groups`
(the distinct value tuples of a frame, mergeable across partitions) and
:func:`factor_labels` (``factors=``: numbers as R's ``as.character`` writes them, by value).
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


def distinct_levels(values):
    """(codes, uniques) of a column by *value*: the one definition of a level.

    pandas' equality (``1 == 1.0``, ``0.0 == -0.0``, ``2 != "2"``); uniques sorted as R's
    factor levels (numbers by value, strings lexically, a Categorical in its categories'
    order; mixed types by type name, then text).  Missing values get code −1."""
    try:
        return pd.factorize(values, sort=True)
    except TypeError:   # mixed types (2 and "2") cannot be ordered directly
        codes, uniq = pd.factorize(values, sort=False)
        keys = [(type(v).__name__, str(v)) for v in uniq]
        order = sorted(range(len(uniq)), key=keys.__getitem__)
        remap = np.empty(len(uniq) + 1, dtype=np.int64)
        remap[order] = np.arange(len(uniq))
        remap[-1] = -1
        return remap[codes], uniq.take(order)


def level_index(uniques) -> pd.Index:
    """A pandas Index of a column's levels (its hash table is built once, on first lookup)."""
    return pd.Index(np.asarray(uniques, dtype=object) if isinstance(uniques, pd.Categorical)
                    else uniques, tupleize_cols=False)


def level_positions(index: pd.Index, values) -> np.ndarray:
    """Position of each value among a column's levels (−1: not a level), by value."""
    if isinstance(values, pd.Series) and pd.api.types.is_numeric_dtype(values.dtype) \
            and not isinstance(values.dtype, pd.CategoricalDtype):
        return np.asarray(index.get_indexer(values.to_numpy()), dtype=np.int64)
    # text and objects: look up the distinct values only (hashing strings once, not per
    # lookup: ~5x faster on a partition of 10⁶ rows); factorize keeps pandas' equality
    codes, uniq = pd.factorize(values)
    if isinstance(uniq, (pd.Categorical, pd.CategoricalIndex)):
        uniq = np.asarray(uniq, dtype=object)
    pos = np.asarray(index.get_indexer(uniq), dtype=np.int64)
    return np.where(codes >= 0, pos[np.maximum(codes, 0)] if len(pos) else -1, -1)


def factorizable(col: pd.Series):
    """What to hand ``pd.factorize`` for a column: a short text column as an object array (its
    factorization is identical (same values,
    same equality, missing values missing) and ~4x faster than the Arrow string array's
    below a few thousand rows, whose fixed cost is ~0.2 ms; above, the Arrow array's is
    the faster (192k rows: 30 ms against 90 ms)."""
    if isinstance(col.dtype, pd.StringDtype) and len(col) <= 5000:
        return col.to_numpy(dtype=object, na_value=np.nan)
    return col


def group_codes(data: pd.DataFrame, group: tuple[str, ...], cache: dict | None = None):
    """Level of each row of a grouping factor (or interaction), identity by value.

    Returns (codes, levels, group_values, level_codes): ``levels`` the display labels
    (the values themselves for one column, "a:b" strings for an interaction, sorted by
    label), ``group_values`` each column's distinct values and ``level_codes`` the
    (L, ncols) indices of each level's values into them; :func:`match_levels` matches new
    rows to levels through the latter, so int ids and float newdata ids are the same levels.
    """
    if cache is None:
        cache = {}
    per = []
    for g in group:    # a column shared by several terms (region/school/class) factorized once
        if g not in cache:
            cache[g] = distinct_levels(factorizable(data[g]))
        per.append(cache[g])
    values = [np.asarray(u, dtype=object) if isinstance(u, (pd.Categorical, pd.CategoricalIndex))
              else np.asarray(u) for _, u in per]
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
    # "a:b" labels: each column's distinct values as text once, joined per level by numpy's
    # elementwise object addition (~5x faster than a join per level)
    labels = None
    for j in range(len(group)):
        text = np.array([str(v) for v in values[j]] or [""], dtype=object)[uniq[:, j]]
        labels = text if labels is None else labels + ":" + text
    order = np.lexsort((np.arange(len(uniq)), labels.astype(str)))
    remap = np.empty(len(uniq), dtype=np.int64)
    remap[order] = np.arange(len(uniq))
    return remap[codes.ravel()], labels[order], values, uniq[order]


def match_codes(indexes, level_codes, data: pd.DataFrame, group) -> np.ndarray:
    """Index of each row's level given each column's level Index and the levels' value
    codes (−1 for a level not among them): the lookup behind :func:`match_levels`."""
    n = len(data)
    C = np.empty((n, len(group)), dtype=np.int64)
    for j, g in enumerate(group):
        C[:, j] = level_positions(indexes[j], data[g])
    if len(group) == 1:
        return C[:, 0]
    # mixed-radix key of each code tuple, looked up among the levels' keys
    radix = np.cumprod([1] + [len(v) for v in indexes[:-1]])
    lvl_key = np.asarray(level_codes) @ radix
    order = np.argsort(lvl_key)
    if not len(order):
        return np.full(n, -1, dtype=np.int64)
    key = C @ radix
    pos = np.clip(np.searchsorted(lvl_key[order], key), 0, len(order) - 1)
    hit = (C >= 0).all(axis=1) & (lvl_key[order][pos] == key)
    return np.where(hit, order[pos], -1)


def match_levels(term, data: pd.DataFrame) -> np.ndarray:
    """Index of each row's level among ``term``'s levels (−1 for a level not in the fit),
    by value (:func:`level_positions`)."""
    if term.group_values is None:
        raise ValueError(f"random-effects term {term.name!r} keeps no level values to match "
                         "new rows against")
    return match_codes([level_index(v) for v in term.group_values], term.level_codes, data,
                       term.group)


def distinct_groups(data: pd.DataFrame, group) -> pd.DataFrame:
    """The distinct value tuples of the grouping columns (rows with a missing value left
    out), by value: what one Dask partition contributes to the levels pass; two such frames
    merge by :func:`merge_groups`, and :func:`group_codes` of the result gives the levels."""
    sub = data[list(group)].dropna()
    return sub.drop_duplicates(ignore_index=True)


def merge_groups(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Distinct value tuples of two :func:`distinct_groups` frames (by value: an int64
    partition's ids and a float64 partition's equal ids are one level)."""
    if not len(a):
        return b
    if not len(b):
        return a
    for c in a.columns:                  # int64 ∪ float64 → float64 values, equal by value
        if a[c].dtype != b[c].dtype and not (pd.api.types.is_numeric_dtype(a[c])
                                              and pd.api.types.is_numeric_dtype(b[c])):
            a = a.assign(**{c: a[c].astype(object)})
            b = b.assign(**{c: b[c].astype(object)})
    return pd.concat([a, b], ignore_index=True).drop_duplicates(ignore_index=True)


def restore_dtype(values: pd.Series, dtype) -> pd.Series:
    """``values`` (merged across partitions) in the frame's declared ``dtype`` when that is
    lossless (float ids that are all integral back to int64), else unchanged."""
    if values.dtype == dtype:
        return values
    try:
        cast = values.astype(dtype)
    except (TypeError, ValueError):
        return values
    if isinstance(dtype, pd.CategoricalDtype):
        return cast if not cast.isna().any() else values
    try:
        same = bool((cast.to_numpy() == values.to_numpy()).all())
    except (TypeError, ValueError):
        return values
    return cast if same else values


def _r_character(v) -> str:
    """R's ``as.character`` of one value: integral numbers without ``.0``, 15 digits."""
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f == 0:
            return "0"
        if np.isfinite(f) and f == round(f) and abs(f) < 1e15:
            return str(int(f))
        return format(f, ".15g")
    return str(v)


def factor_labels(values: pd.Series) -> pd.Series:
    """A column as the text levels of R's ``factor(x)`` (``factors=``): each distinct value
    (by value, so ``1``, ``1.0`` and ``-0.0``/``0.0`` agree) written as R's ``as.character``
    writes it; missing values stay missing.  The fit, predict's newdata and every Dask
    partition convert through this one function."""
    codes, uniq = pd.factorize(values, sort=False)
    labels = np.array([_r_character(v) for v in uniq] + [None], dtype=object)
    out = pd.Series(labels[codes], index=values.index, name=values.name, dtype=object)
    return out.where(codes >= 0)
