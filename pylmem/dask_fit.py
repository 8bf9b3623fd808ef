"""Fit a linear mixed model to a Dask DataFrame: data larger than one machine.

The profiled deviance depends on the rows only through cross-products that add over row
partitions (:mod:`pylmem.crossprod`).  So the fit is three steps:

1. **levels pass**: the levels of every grouping factor (and of every categorical
   fixed-effects column) are agreed across partitions first, so that every partition
   codes its rows against the same global levels;
2. **statistics pass**: each partition, where it lives, builds its y, X, Z and codes and
   forms ``crossproducts(y, X, terms)`` plus a few counts (:class:`RowStats`); the
   per-partition results are reduced by ``+`` (on a ``distributed`` cluster one chain per
   worker thread, each link computing a partition's statistics and adding them to the
   chain's running total in one task, then the chains' totals pairwise);
3. the reduced statistics go to the same :class:`~pylmem.deviance.ProfiledDeviance`,
   optimiser (or EM) and fit object as an in-memory fit, on the client.

Memory per worker is bounded by one partition plus three statistics objects (a running
total, the partition's own, their sum), whose size depends on the number of levels
(L (q² + q r) numbers per term), not on the number of rows or partitions.  Row-level results (fitted
values, residuals, predictions) are lazy Dask series computed per partition.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from . import batched as B
from .crossprod import crossproducts
from .design import NumericSpec, _group_labels, _model_matrix, _required_variables, order_terms
from .fit import LmerFit
from .formula import parse_formula, r_column_name, translate_r

_EXTRA = "pip install pylmem[dask]"


def require_dask():
    """Import dask.dataframe, or fail with the name of the optional extra."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as e:  # pragma: no cover - exercised only without dask
        raise ImportError(f"fitting a Dask DataFrame needs dask: {_EXTRA} ({e})") from None
    return dask, dd


def is_dask_frame(obj) -> bool:
    """True for a dask DataFrame, without importing dask when it is not loaded."""
    import sys

    if "dask.dataframe" not in sys.modules:
        return False
    import dask.dataframe as dd

    return isinstance(obj, dd.DataFrame)


# ---------------------------------------------------------------------------- statistics


@dataclass
class RowStats:
    """Counts that add over partitions, next to the cross-products.

    ``n`` rows used, ``n_dropped`` rows with a missing value, ``wsum`` Σ_rows [X y],
    ``counts[k]`` rows per level of term k, ``ones[k]`` whether Z_k ≡ 1.
    """

    n: int
    n_dropped: int
    wsum: np.ndarray
    counts: list
    ones: list

    def __add__(self, other: "RowStats") -> "RowStats":
        return RowStats(self.n + other.n, self.n_dropped + other.n_dropped,
                        self.wsum + other.wsum,
                        [a + b for a, b in zip(self.counts, other.counts)],
                        [a and b for a, b in zip(self.ones, other.ones)])


@dataclass
class _Part:
    """A term-like view of one partition (what :func:`crossproducts` needs)."""

    Z: np.ndarray
    codes: np.ndarray
    n_levels: int

    def sparse(self):
        import scipy.sparse as sp

        n, q = self.Z.shape
        cols = (self.codes[:, None] * q + np.arange(q)[None, :]).ravel()
        rows = np.repeat(np.arange(n), q)
        return sp.csr_matrix((self.Z.ravel(), (rows, cols)), shape=(n, self.n_levels * q))


class _Levels:
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
        c = self.index.get_indexer(_group_labels(part, group).to_numpy())
        if (c < 0).any():
            raise ValueError(f"grouping factor {':'.join(group)!r}: a level not seen in the "
                             "levels pass (the data changed between passes?)")
        return c.astype(np.int64)


@dataclass
class _TermPlan:
    name: str
    group: tuple
    coef_names: list
    expr: str
    spec: object
    columns: list
    levels: _Levels

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
            M = _model_matrix(self.parsed.fixed, part)[0]
        else:
            M = self.fixed_spec.get_model_matrix(part, output="pandas").to_numpy(dtype=float)
        return M if self.fixed_cols == list(range(M.shape[1])) else \
            np.ascontiguousarray(M[:, self.fixed_cols])

    def term_matrix(self, t: _TermPlan, part: pd.DataFrame) -> np.ndarray:
        if isinstance(t.spec, NumericSpec):
            M = _model_matrix(t.expr, part)[0]
        else:
            M = t.spec.get_model_matrix(part, output="pandas").to_numpy(dtype=float)
        return M if t.columns == list(range(M.shape[1])) else \
            np.ascontiguousarray(M[:, t.columns])


def _check_finite(M, names, what):
    bad = ~np.isfinite(M)
    if bad.any():
        cols = [repr(names[j]) for j in np.flatnonzero(bad.any(axis=0))]
        raise ValueError(f"non-finite values (inf) in the {what} column(s) {', '.join(cols)}")


def partition_stats(part: pd.DataFrame, plan: Plan):
    """(CrossProducts, RowStats) of one partition, coded against the global levels.

    The rows are first sorted by the first term's codes (so crossproducts takes its
    segment-sum path), then y, X and every Z are built once from the sorted rows."""
    part, n_dropped = plan.prepare(part)
    codes = [t.levels.codes(part, t.group) if len(part) else np.zeros(0, np.int64)
             for t in plan.terms]
    if codes and len(part) > 1:
        order = np.argsort(codes[0], kind="stable")
        if np.any(order[1:] < order[:-1]):
            part = part.take(order)
            codes = [c[order] for c in codes]
    y = part[plan.response].to_numpy(dtype=float)
    _check_finite(y[:, None], [plan.response], "response")
    X = plan.fixed_matrix(part)
    _check_finite(X, plan.fixef_names, "fixed-effects")
    built = {}
    terms = []
    for t, c in zip(plan.terms, codes):
        key = (t.expr, tuple(t.columns))
        if key not in built:
            built[key] = plan.term_matrix(t, part)
            _check_finite(built[key], t.coef_names, f"random-effects ({t.name})")
        terms.append(_Part(built[key], c, t.n_levels))
    cp = crossproducts(y, X, terms)
    rs = RowStats(len(y), n_dropped, np.r_[X.sum(axis=0), y.sum()],
                  [np.bincount(t.codes, minlength=t.n_levels) for t in terms],
                  [bool(np.all(t.Z == 1.0)) for t in terms])
    return cp, rs


def _add(a, b):
    return (a[0] + b[0], a[1] + b[1])


# ---------------------------------------------------------------------------- passes


def _client():
    """The active distributed client, unless dask is configured for a local scheduler."""
    import dask

    sched = dask.config.get("scheduler", None)
    if isinstance(sched, str) and sched not in ("distributed", "dask.distributed"):
        return None
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


class _PassProgress:
    """``pass over the data: k/N partitions`` on stderr (see :mod:`pylmem.progress`)."""

    def __init__(self, label, total, verbose):
        from .progress import Progress

        self.p = Progress(verbose=verbose, label=label)
        self.total = total

    def update(self, k):
        p = self.p
        if not p.enabled:
            return
        now = time.perf_counter() - p.t0
        if now < p.delay or (now - p._last < 0.2 and p.shown and k < self.total):
            return
        p._last, p.shown = now, True
        p.stream.write(f"\r{p.label}: {k}/{self.total} partitions ({now:.1f} s)")
        p.stream.flush()

    def close(self):
        self.p.close()


def share(obj):
    """``obj`` as a task argument sent once per worker: a scattered future on a
    ``distributed`` client (else the object itself, for dask's local schedulers)."""
    client = _client()
    return obj if client is None else client.scatter(obj, broadcast=True, hash=False)


STEP_SECONDS: dict = {}   # seconds spent in each func / combine by _step in this process


def _step(combine, prev, func, *args):
    """One link of a reduction chain: combine(prev, func(*args)) in one task, so a worker
    never holds more than its chain's running total, one partition and their sum."""
    t0 = time.perf_counter()
    r = func(*args)
    t1 = time.perf_counter()
    out = r if prev is None else combine(prev, r)
    for k, v in ((func.__name__, t1 - t0), (combine.__name__, time.perf_counter() - t1)):
        STEP_SECONDS[k] = STEP_SECONDS.get(k, 0.0) + v
    return out


def reduce_partitions(parts, func, args, combine, *, label, verbose=None, chains=None):
    """combine over the partitions of func(part, *args).

    On a ``distributed`` client: one chain per worker thread; each link reads a partition,
    computes its statistics and adds them to the chain's running total in one task (a link
    is submitted when the one two places before it completes, so memory per worker stays
    bounded whatever the number of partitions); the chains' totals are then combined
    pairwise.  Otherwise a tree of delayed ``combine`` calls on dask's local scheduler.
    """
    import dask

    n = len(parts)
    client = _client()
    prog = _PassProgress(label, n, verbose)
    if client is None:
        level = [dask.delayed(func)(p, *args) for p in parts]
        while len(level) > 1:
            nxt = [dask.delayed(combine)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            level = nxt + ([level[-1]] if len(level) % 2 else [])
        out = dask.compute(level[0])[0]
        prog.update(n)
        prog.close()
        return out
    from distributed import as_completed

    if chains is None:
        chains = max(1, sum(w.get("nthreads", 1) for w in
                            client.scheduler_info(n_workers=-1)["workers"].values()))
    chains = min(chains, n)
    it = iter(parts)
    ac = as_completed()
    head = [None] * chains                 # the latest submitted link of each chain
    chain_of = {}
    remaining = n

    def extend(j):
        nonlocal remaining
        p = next(it, None)
        if p is None:
            return
        fut = client.compute(dask.delayed(_step)(combine, head[j], func, p, *args))
        head[j] = fut
        chain_of[fut.key] = j
        remaining -= 1
        ac.add(fut)

    for _ in range(2):                     # two links queued per chain hide the round trip
        for j in range(chains):
            extend(j)
    done = 0
    for fut in ac:
        if fut.status == "error":
            fut.result()                       # raises the worker's error here
        j = chain_of.pop(fut.key)
        done += 1
        prog.update(done)
        if remaining:
            extend(j)
    prog.close()
    # pair the chains' totals that sit on the same worker first (fewer transfers)
    where = client.who_has(list(head))
    totals = sorted(head, key=lambda f: (where.get(f.key) or [""])[0])
    while len(totals) > 1:
        nxt = [client.submit(combine, totals[i], totals[i + 1], pure=False)
               for i in range(0, len(totals) - 1, 2)]
        totals = nxt + ([totals[-1]] if len(totals) % 2 else [])
    return totals[0].result()


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
            out.append(pd.unique(_group_labels(part, g).to_numpy()))
    return out


def _merge_uniques(a, b):
    return [pd.unique(np.concatenate([x, y])) for x, y in zip(a, b)]


# ---------------------------------------------------------------------------- design


@dataclass
class DaskTerm:
    """A random-effects term of a Dask fit: as :class:`~pylmem.design.RandomTerm` without
    the per-row arrays ``Z`` and ``codes`` (they stay in the partitions)."""

    name: str
    group: tuple
    coef_names: list
    levels: np.ndarray
    expr: str
    spec: object
    columns: list
    group_values: object = None   # predict matches new rows by the level labels
    level_codes: object = None

    @property
    def q(self):
        return len(self.coef_names)

    @property
    def n_levels(self):
        return len(self.levels)

    @property
    def n_theta(self):
        return self.q * (self.q + 1) // 2


@dataclass
class DaskDesign:
    """The design of a Dask fit: everything :class:`~pylmem.design.ModelDesign` has except
    the n rows, which stay in ``ddf`` (the lazy frame) and are reached through ``plan``."""

    formula: str
    parsed: object
    fixef_names: list
    terms: list
    n_obs: int
    n_dropped: int
    fixed_spec: object
    dropped_columns: list
    ddf: object
    plan: Plan
    response_moments: np.ndarray = None   # (Σy, Σy²): what anova compares (no rows kept)
    # no prior weights, offsets or aliased names on the Dask path (lmer refuses them)
    weights: object = None
    offset: object = None
    weights_name: object = None
    offset_exprs: tuple = ()
    offset_arg: object = None
    aliases: object = None

    @property
    def n_fixef(self):
        return len(self.fixef_names)

    @property
    def response(self):
        return self.parsed.response

    @property
    def y(self):
        raise AttributeError("a Dask fit keeps no rows: use fit.ddf / fit.fitted (lazy)")


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
    fixed_vars = _required_variables(parsed.fixed, meta)
    check(sorted(fixed_vars), f"the fixed part '{parsed.fixed}'")
    used |= set(fixed_vars)
    rand = []
    for spec in parsed.random:
        expr, renames = translate_r(spec.expr)
        ev = _required_variables(expr, meta)
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
    Xs, fcols, fixed_spec, _ = _model_matrix(parsed.fixed, sample)
    fixef_names = [r_column_name(c, parsed.fixed, parsed.renames) for c in fcols]
    plan = Plan(formula, parsed, parsed.response, used, factors, cat_levels, fixed_spec,
                list(range(Xs.shape[1])), fixef_names)
    terms = []
    for spec, expr, renames, _ in rand:
        Zs, zcols, zspec, term_indices = _model_matrix(expr, sample)
        names = [r_column_name(c, expr, renames) for c in zcols]
        col_groups = [list(range(Zs.shape[1]))] if spec.correlated else \
            [list(idx) for idx in term_indices.values()]
        lv = _Levels(uniq[tuple(spec.group)])
        for cg in col_groups:
            terms.append(_TermPlan(spec.name, tuple(spec.group), [names[c] for c in cg], expr,
                                   zspec, cg, lv))
    order_terms(terms)
    plan.terms = terms
    return plan


def _rank_deficient(WtW, names, scale2):
    """Columns of X linearly dependent on earlier ones, from X'X (as design's unpivoted QR:
    the squared residual norm of column j after projection on the kept earlier columns)."""
    p = len(names)
    keep = []
    for j in range(p):
        if keep:
            A = WtW[np.ix_(keep, keep)]
            b = WtW[keep, j]
            d2 = WtW[j, j] - b @ np.linalg.solve(A, b)
        else:
            d2 = WtW[j, j]
        s2 = scale2[j] if scale2[j] > 0 else 1.0
        if d2 > 1e-14 * s2:
            keep.append(j)
    return keep


def collect_statistics(plan, ddf, *, verbose=None):
    """The statistics pass: reduced (CrossProducts, RowStats) over all partitions."""
    return reduce_partitions(ddf[plan.used].to_delayed(), partition_stats, (share(plan),),
                             _add, label="statistics pass", verbose=verbose)


# ---------------------------------------------------------------------------- the fit


def _cp_arrays(cp):
    """The cross-products as plain arrays: W'W and per term (Z'Z, Z'W) per level.

    The one place this module reads CrossProducts' fields (as optimize.py does for its
    start): the start value and the EM's statistics come from the same sums."""
    return cp.WtW, [(t.ZtZ, t.ZtW) for t in cp.terms]


def start_theta_stats(cp, rs, qs):
    """optimize.start_theta computed from the statistics instead of the rows.

    The same estimators (moment estimates for scalar intercept terms, Swamy's for a single
    vector term).  Exact except for Swamy's pooled σ̂² when some groups are unusable
    (n_i ≤ q or Z_i rank deficient): their share of e'e is then taken pro rata by rows.
    """
    WtW, tstats = _cp_arrays(cp)
    p = WtW.shape[0] - 1
    n = rs.n
    XtX, Xty = WtW[:p, :p], WtW[:p, p]
    beta = np.linalg.lstsq(XtX, Xty, rcond=None)[0] if p else np.zeros(0)
    v = np.r_[-beta, 1.0]
    ee = float(v @ WtW @ v)
    esum = float(rs.wsum @ v)
    if len(qs) == 1 and qs[0] > 1:
        th = _swamy(tstats[0], rs.counts[0], qs[0], v, ee, n)
        if th is not None and np.all(np.isfinite(th)):
            return th
    s2 = max(ee / n - (esum / n) ** 2, 1e-300)
    scalar = [q == 1 and ones for q, ones in zip(qs, rs.ones)]
    stats = {}
    for k, (ZtZ, ZtW) in enumerate(tstats):
        if scalar[k]:
            n_j = np.maximum(rs.counts[k].astype(float), 1)
            m_j = (ZtW[:, 0, :] @ v) / n_j
            stats[k] = (m_j.var(), np.mean(1.0 / n_j))
    sigma2 = s2
    var = {}
    for _ in range(5):
        var = {k: max(b - sigma2 * inv_n, 0.01 * sigma2) for k, (b, inv_n) in stats.items()}
        sigma2 = max(s2 - sum(var.values()), 0.1 * s2)
    parts = []
    for k, (ZtZ, _) in enumerate(tstats):
        if scalar[k]:
            parts.append(np.array([np.sqrt(var[k] / sigma2)]))
        else:
            s = np.sqrt(np.einsum("gii->i", ZtZ) / n)
            parts.append(B.theta_from_lower(np.diag(1.0 / np.where(s > 0, s, 1.0))))
    return np.concatenate(parts)


def _swamy(st, n_j, q, v, ee, n):
    ZtZ, ZtW = st
    diag = np.einsum("gii->gi", ZtZ)
    with np.errstate(divide="ignore", invalid="ignore"):
        well_posed = np.linalg.det(ZtZ) > 1e-6 * np.prod(diag, axis=1)
    ok = (n_j > q) & well_posed
    if ok.sum() < 2 * q:
        return None
    G = ZtZ[ok]
    Ze = ZtW[ok] @ v
    try:
        Ginv = np.linalg.inv(G)
    except np.linalg.LinAlgError:
        return None
    b = np.einsum("gij,gj->gi", Ginv, Ze)
    ee_ok = ee if ok.all() else ee * n_j[ok].sum() / n
    s2 = (ee_ok - np.einsum("gi,gi->g", Ze, b).sum()) / (n_j[ok] - q).sum()
    if not np.isfinite(s2) or s2 <= 0:
        return None
    w, V = np.linalg.eigh((np.cov(b.T) - s2 * Ginv.mean(axis=0)) / s2)
    w = np.maximum(w, 1e-6 * max(w.max(), 1e-12))
    return B.theta_from_lower(np.linalg.cholesky((V * w) @ V.T))


class _ScaleView:
    """What optimize_theta reads of a design when θ0 is given: each term's Z, only through
    its column mean squares (a one-row stand-in with those mean squares)."""

    def __init__(self, cp, n):
        _, tstats = _cp_arrays(cp)
        self.terms = [type("T", (), {"Z": np.sqrt(np.einsum("gii->i", ZtZ) / n)[None, :]})()
                      for ZtZ, _ in tstats]


def em_problem(cp, rs):
    """The EM's per-group statistics (em._Problem) from the reduced cross-products."""
    from .em import _Problem

    WtW, tstats = _cp_arrays(cp)
    ZtZ, ZtW = tstats[0]
    p = WtW.shape[0] - 1
    prob = _Problem.__new__(_Problem)
    G, q = ZtZ.shape[0], ZtZ.shape[1]
    prob.n, prob.p, prob.q, prob.G = rs.n, p, q, G
    prob.counts = rs.counts[0]
    XtX = WtW[:p, :p]
    try:
        prob.XtX_chol = np.linalg.cholesky(XtX)
    except np.linalg.LinAlgError:
        raise ValueError("X'X is singular: the fixed-effects design X is rank deficient") from None
    prob.XtX = XtX
    Xty, yy = WtW[:p, p], WtW[p, p]
    beta0 = prob.solve_XtX(Xty)
    beta0 = beta0 + prob.solve_XtX(Xty - XtX @ beta0)
    prob.beta0 = beta0
    prob.Xty = Xty
    prob.Xtr = Xty - XtX @ beta0
    prob.ytr = float(yy - beta0 @ Xty)
    prob.rr = float(yy - 2 * beta0 @ Xty + beta0 @ XtX @ beta0)
    prob.AA = np.ascontiguousarray(ZtZ.transpose(1, 2, 0))
    prob.AX = np.ascontiguousarray(ZtW[:, :, :p].transpose(2, 1, 0))
    prob.Ay = np.ascontiguousarray(ZtW[:, :, p].T)
    prob.Ar = prob.Ay - prob.AXA(beta0)
    return prob


def fit_em_stats(cp, rs, design, *, tol=1e-10, max_iter=10000, accelerate=True,
                 simplified=False, mask=None):
    """em.fit_em on statistics: same E- and M-steps, fed the per-group sums."""
    import importlib

    E = importlib.import_module("pylmem.em")

    if len(design.terms) != 1:
        raise ValueError(f"the EM algorithm handles exactly one random-effects term; "
                         f"this model has {len(design.terms)} terms "
                         f"({', '.join(t.name for t in design.terms)})")
    t = design.terms[0]
    E._check_opts(1, tol, max_iter)
    E._method(accelerate)
    maskm = E._check_mask(mask, t.q)
    prob = em_problem(cp, rs)
    out = E._run(prob, n_iter=int(max_iter), simplified=simplified, mask=maskm, tol=tol,
                 accelerate=accelerate, max_iter=int(max_iter))
    return E._result(prob, out, simplified=simplified, mask=maskm,
                     names=list(design.fixef_names), re_names=list(t.coef_names),
                     labels=np.asarray(t.levels))


def lmer_dask(formula, ddf, *, reml=True, method="profiled", factors=(), verbose=None,
              em_options=None):
    """``pylmem.lmer`` for a dask DataFrame (see the module docstring)."""
    from .fit import ConvergenceWarning, _check_residual_variance
    from .deviance import ProfiledDeviance
    from .optimize import check_convergence, optimize_theta
    from .progress import Progress

    require_dask()
    t0 = time.perf_counter()
    if method not in ("profiled", "em"):
        raise ValueError(f"method must be 'profiled' or 'em', got {method!r}")
    if method == "em" and reml:
        raise ValueError("method='em' fits by maximum likelihood: pass reml=False")
    times = {}
    plan = build_plan(formula, ddf, factors=factors, verbose=verbose)
    times["levels"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    cp, rs = collect_statistics(plan, ddf, verbose=verbose)
    if rs.n_dropped and (plan.cat_levels or any((c == 0).any() for c in rs.counts)):
        # rows dropped for missing values took levels with them: agree levels on complete rows
        plan = build_plan(formula, ddf, factors=factors, verbose=verbose, complete_rows=True)
        cp, rs = collect_statistics(plan, ddf, verbose=verbose)
    p = len(plan.fixef_names)
    keep = _rank_deficient(cp.WtW, plan.fixef_names, np.diag(cp.WtW)[:p]) if p else []
    dropped = [plan.fixef_names[j] for j in range(p) if j not in set(keep)]
    if dropped:
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                      f"column(s): {', '.join(dropped)}", stacklevel=2)
        plan.fixed_cols = [plan.fixed_cols[j] for j in keep]
        plan.fixef_names = [plan.fixef_names[j] for j in keep]
        cp, rs = collect_statistics(plan, ddf, verbose=verbose)
    times["statistics"] = time.perf_counter() - t1
    if rs.n == 0:
        raise ValueError(f"no rows left after dropping {rs.n_dropped} rows with missing values")
    for t in plan.terms:
        if t.n_levels >= rs.n:
            raise ValueError(f"number of levels of grouping factor {t.name!r} ({t.n_levels}) "
                             f"must be less than the number of observations ({rs.n})")
    design = DaskDesign(formula, plan.parsed, list(plan.fixef_names),
                        [DaskTerm(t.name, t.group, t.coef_names, t.levels.labels, t.expr, t.spec,
                                  t.columns) for t in plan.terms],
                        rs.n, rs.n_dropped, plan.fixed_spec, dropped, ddf, plan,
                        np.array([rs.wsum[-1], _cp_arrays(cp)[0][-1, -1]]))
    t2 = time.perf_counter()
    _check_residual_variance(cp, design.response)
    dev = ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms],
                           reml=reml)
    em_result = None
    theta0 = start_theta_stats(cp, rs, [t.q for t in design.terms])
    if method == "em":
        em_result = fit_em_stats(cp, rs, design, **(em_options or {}))
        theta = B.theta_from_lower(B.psd_cholesky(em_result.omega / em_result.sigma2))
        opt = check_convergence(dev, theta, theta0=theta, method=f"EM ({em_result.method})",
                                message=f"EM stopped after {em_result.n_iter} iterations",
                                trace=list(-2 * np.asarray(em_result.trace)))
        if not em_result.converged:
            opt.warnings.append(f"EM did not converge in {em_result.n_iter} iterations")
            opt.converged = False
    else:
        progress = Progress(verbose=verbose, label="lmer")
        opt = optimize_theta(dev, _ScaleView(cp, rs.n), theta0=theta0, verbose=verbose,
                             callback=progress.update)
        progress.close()
    times["optimise"] = time.perf_counter() - t2
    fit = DaskLmerFit(design, cp, dev, opt, reml=reml, method=method, em_result=em_result)
    fit.row_stats = rs
    fit.phase_seconds = times
    fit.fit_seconds = time.perf_counter() - t0
    for w in opt.warnings:
        warnings.warn(w, ConvergenceWarning, stacklevel=3)
    return fit


# ---------------------------------------------------------------------------- fit object


def _rows_part(part, func, name, plan, state):
    prepared, _ = plan.prepare(part)
    return pd.Series(func(state, plan, prepared), index=prepared.index, name=name)


def _lazy_rows(fit, func, name):
    """A lazy Dask series: func(state, plan, prepared partition) per partition, over the rows
    the fit used (the small state and plan are graph nodes shared by the partitions)."""
    import dask

    plan = fit.design.plan
    return fit.design.ddf[plan.used].map_partitions(
        _rows_part, func, name, dask.delayed(plan, traverse=False),
        dask.delayed(_RowState.of(fit), traverse=False),
        meta=pd.Series(dtype=float, name=name))


def _predict_part(part, light, re_form, allow_new_levels):
    from .predict import predict

    return predict(light, part, re_form=re_form, allow_new_levels=allow_new_levels)


@dataclass
class _RowState:
    """What row-level results need of a fit: β̂ and the conditional modes (small)."""

    beta: np.ndarray
    modes: list

    @classmethod
    def of(cls, fit):
        return cls(np.asarray(fit.beta), [np.asarray(m) for m in fit._modes])


def _fitted_rows(state, plan, part):
    out = plan.fixed_matrix(part) @ state.beta
    for t, b in zip(plan.terms, state.modes):
        if len(part):
            out = out + np.einsum("nq,nq->n", plan.term_matrix(t, part), b[t.levels.codes(part, t.group)])
    return out


def _resid_rows(state, plan, part):
    return part[plan.response].to_numpy(dtype=float) - _fitted_rows(state, plan, part)


_H_LO, _H_WIDTH, _H_BINS = -10.0, 1e-4, 200_000


def _resid_histogram(part, plan, state, sigma):
    """(counts per bin with under/overflow, n, min, max) of one partition's scaled residuals."""
    prepared, _ = plan.prepare(part)
    r = _resid_rows(state, plan, prepared) / sigma
    idx = np.clip(np.floor((r - _H_LO) / _H_WIDTH), -1, _H_BINS).astype(np.int64) + 1
    counts = np.bincount(idx, minlength=_H_BINS + 2)
    return (counts, len(r), r.min() if len(r) else np.inf, r.max() if len(r) else -np.inf)


def _add_hist(a, b):
    return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]))


def scaled_resid_quantiles(fit, probs=(0, .25, .5, .75, 1)) -> pd.Series:
    """Quantiles of the scaled residuals r/σ̂ (R's type 7) from a mergeable histogram.

    One pass: each partition counts its scaled residuals in 2·10^5 bins of width 1e-4 on
    [−10, 10] (plus under/overflow) and keeps its min and max; counts add over partitions.
    An order statistic is placed uniformly within its bin, so a quantile inside [−10, 10]
    is within 1e-4 (one bin) of the exact one; Min and Max are exact.  A quartile outside
    [−10, 10] (a pathological fit) is reported as NaN.
    """
    plan = fit.design.plan
    counts, n, lo, hi = reduce_partitions(
        fit.design.ddf[plan.used].to_delayed(), _resid_histogram,
        (share(plan), share(_RowState.of(fit)), fit.sigma), _add_hist, label="residual pass")
    cum = np.cumsum(counts)

    def order_stat(k):                       # k-th smallest (0-based)
        b = int(np.searchsorted(cum, k, side="right"))
        if b == 0 or b == len(counts) - 1:
            return np.nan
        before = cum[b - 1] if b else 0
        x = _H_LO + (b - 1) * _H_WIDTH + _H_WIDTH * (k - before + 0.5) / counts[b]
        return float(np.clip(x, lo, hi))

    out = []
    for p in probs:
        if p == 0:
            out.append(lo)
        elif p == 1:
            out.append(hi)
        else:
            h = (n - 1) * p
            k = int(np.floor(h))
            a = order_stat(k)
            out.append(a + (h - k) * (order_stat(min(k + 1, n - 1)) - a))
    names = {0: "Min", .25: "1Q", .5: "Median", .75: "3Q", 1: "Max"}
    return pd.Series(out, index=[names.get(p, str(p)) for p in probs], name="Scaled residuals")


class _DaskFitMixin:
    """Row-level results of a Dask fit, as lazy Dask series (index = the data's index)."""

    @property
    def ddf(self):
        return self.design.ddf

    @property
    def fitted(self):
        """Conditional fitted values Xβ̂ + Zb̂ (lazy, per partition)."""
        return _lazy_rows(self, _fitted_rows, "fitted")

    @property
    def residuals(self):
        """Conditional residuals y − Xβ̂ − Zb̂ (lazy, per partition)."""
        return _lazy_rows(self, _resid_rows, "residuals")

    def predict(self, newdata=None, *, re_form=None, allow_new_levels=True):
        """lme4's predict(): a lazy Dask series for the fitted data or a Dask ``newdata``;
        a pandas ``newdata`` gives a pandas Series (as an in-memory fit)."""
        from .predict import predict

        if newdata is None:
            if re_form is None:
                return self.fitted.rename("predicted")
            newdata = self.design.ddf
        if not is_dask_frame(newdata):
            return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
        import dask
        from types import SimpleNamespace as NS

        d = self.design
        light = NS(design=NS(fixed_spec=d.fixed_spec, parsed=d.parsed, fixef_names=d.fixef_names,
                             terms=d.terms), fixef=self.fixef, _modes=self._modes,
                   formula=self.formula)
        return newdata.map_partitions(_predict_part, dask.delayed(light, traverse=False),
                                      re_form, allow_new_levels,
                                      meta=pd.Series(dtype=float, name="predicted"))

    def hat_matrix(self, max_n: int = 5000):
        raise ValueError("hat_matrix forms an n × n matrix: not for a Dask fit (use edf)")

    def refit(self, *, reml: bool):
        """The same model refitted by ML or REML from the stored statistics (no data pass)."""
        if reml == self.reml and self.method == "profiled":
            return self
        from .deviance import ProfiledDeviance
        from .optimize import optimize_theta

        qs = [t.q for t in self.design.terms]
        dev = ProfiledDeviance(self.cp, qs, [t.n_levels for t in self.design.terms], reml=reml)
        opt = optimize_theta(dev, _ScaleView(self.cp, self.n_obs),
                             theta0=start_theta_stats(self.cp, self.row_stats, qs), verbose=False)
        fit = type(self)(self.design, self.cp, dev, opt, reml=reml, method="profiled")
        fit.row_stats = self.row_stats
        return fit

    @cached_property
    def resid_quantiles(self) -> pd.Series:
        """Scaled-residual quantiles (Min, 1Q, Median, 3Q, Max), from one more pass over
        the data: see :func:`scaled_resid_quantiles` (Min and Max exact, quartiles to
        within 1e-4 in units of σ̂)."""
        return scaled_resid_quantiles(self)

    def summary(self):
        """lme4's summary(); the scaled-residual quartiles are approximate (see
        ``resid_quantiles``)."""
        from .summary import Summary

        fit = self

        class DaskSummary(Summary):
            def __init__(self, fit, data_name=None, **kw):
                class _Proxy:
                    def __getattr__(_, name):
                        return getattr(fit, name)
                    residuals = pd.Series([0.0])

                    def residuals_of(_, *args, **kw):   # quantiles replaced below
                        return pd.Series([0.0])
                super().__init__(_Proxy(), data_name, **kw)
                self.fit = fit
                self.scaled_residuals = None
                self.resid_quantiles = fit.resid_quantiles

            def lines(self):
                out = super().lines()
                i = out.index("Scaled residuals:") if "Scaled residuals:" in out else None
                if i is not None:
                    out[i] = "Scaled residuals (quartiles to ±1e-4, from a histogram):"
                return out

        return DaskSummary(fit)


class DaskLmerFit(_DaskFitMixin, LmerFit):
    """A fit to a Dask DataFrame: LmerFit with lazy row-level results."""


# ---------------------------------------------------------------------------- command line


def read_dask(spec: str):
    """A dask DataFrame from a Parquet or CSV file, directory or glob."""
    import glob
    import os

    _, dd = require_dask()
    files = sorted(glob.glob(spec)) if not os.path.isdir(spec) else [spec]
    if not files:
        raise ValueError(f"no file matches {spec!r}")
    low = files[0].lower().removesuffix(".gz")
    if os.path.isdir(files[0]) or low.endswith((".parquet", ".pq", ".parq")):
        return dd.read_parquet(spec)
    if low.endswith((".csv", ".tsv", ".tab")):
        return dd.read_csv(spec, sep="\t" if low.endswith((".tsv", ".tab")) else ",")
    raise ValueError(f"{spec!r}: --dask reads Parquet (.parquet) or CSV (.csv) files")


def open_client(address: str):
    """A distributed Client: to ``address``, or to a new LocalCluster for ``"local"``."""
    require_dask()
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover
        raise ImportError(f"--dask needs dask.distributed: {_EXTRA} ({e})") from None
    if address == "local":
        import logging

        cluster = LocalCluster(dashboard_address=":0", silence_logs=logging.ERROR)
        return Client(cluster), cluster
    return Client(address), None


def cli_fit(args, *, reml, warnings_block, to_dict, dumps, error):
    """``pylmem fit DATA FORMULA --dask [ADDRESS]`` (called by :mod:`pylmem.cli`)."""
    import sys

    if args.plot:
        raise error("--plot draws every row: not available with --dask")
    for flag in ("weights", "offset", "ddf"):
        if getattr(args, flag, None):
            raise error(f"--{flag} is not available with --dask yet")
    verbose = False if args.quiet else (True if args.verbose else None)
    try:
        client, cluster = open_client(args.dask)
    except ImportError as e:
        raise error(str(e)) from None
    try:
        with client:
            ddf = read_dask(args.data)
            with warnings_block(quiet=args.quiet):
                fit = lmer_dask(args.formula, ddf, reml=reml, method=args.method,
                                factors=list(args.factor), verbose=verbose)
            if args.json:
                out = to_dict(fit, data=args.data)
                out["dask"] = {"partitions": ddf.npartitions,
                               "phase_seconds": fit.phase_seconds}
                print(dumps(out))
            else:
                print(str(fit.summary()))
    finally:
        if cluster is not None:
            cluster.close()
    sys.stdout.flush()
    return 0
