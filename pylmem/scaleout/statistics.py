"""The statistics pass: each partition, where it lives, builds its rows and forms their
cross-products (:func:`pylmem.numerics.crossprod.crossproducts`) plus a few counts
(:class:`RowStats`); the sums over partitions are all an estimation needs.  From the sums
alone: the fixed-effects rank check, the optimiser's start and the EM's per-group statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..estimation.em import fit_em_statistics
from ..inference.lrt import response_fingerprint
from ..model.covariance import theta_from_lower
from ..numerics.crossprod import crossproducts
from .plan import Plan
from .reduce import reduce_partitions, share


@dataclass
class RowStats:
    """Counts that add over partitions, next to the cross-products.

    ``n`` rows used, ``n_dropped`` rows with a missing value, ``wsum`` Σ_rows [X y]
    (y − offset), ``counts[k]`` rows per level of term k, ``ones[k]`` whether Z_k ≡ 1,
    ``yprint`` the response's fingerprint (:func:`pylmem.inference.lrt.response_fingerprint`:
    what anova compares, row by row, without the rows).
    """

    n: int
    n_dropped: int
    wsum: np.ndarray
    counts: list
    ones: list
    yprint: np.ndarray = None

    def __add__(self, other: "RowStats") -> "RowStats":
        yp = None if self.yprint is None or other.yprint is None else self.yprint + other.yprint
        return RowStats(self.n + other.n, self.n_dropped + other.n_dropped,
                        self.wsum + other.wsum,
                        [a + b for a, b in zip(self.counts, other.counts)],
                        [a and b for a, b in zip(self.ones, other.ones)], yp)


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
    yprint = response_fingerprint(part.index, y)
    off = plan.offset(part)
    if off is not None:
        y = y - off
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
                  [bool(np.all(t.Z == 1.0)) for t in terms], yprint)
    return cp, rs


def add_pairs(a, b):
    return (a[0] + b[0], a[1] + b[1])


def rank_deficient(WtW, names, scale2):
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
                             add_pairs, label="statistics pass", verbose=verbose)


def cp_arrays(cp):
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
    WtW, tstats = cp_arrays(cp)
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
            parts.append(theta_from_lower(np.diag(1.0 / np.where(s > 0, s, 1.0))))
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
    return theta_from_lower(np.linalg.cholesky((V * w) @ V.T))


class ScaleView:
    """What optimize_theta reads of a design when θ0 is given: each term's Z, only through
    its column mean squares (a one-row stand-in with those mean squares)."""

    def __init__(self, cp, n):
        _, tstats = cp_arrays(cp)
        self.terms = [type("T", (), {"Z": np.sqrt(np.einsum("gii->i", ZtZ) / n)[None, :]})()
                      for ZtZ, _ in tstats]


def fit_em_stats(cp, rs, design, *, tol=1e-10, max_iter=10000, accelerate=True,
                 simplified=False, mask=None):
    """em.fit_em on statistics: same E- and M-steps, fed the per-group sums."""
    if len(design.terms) != 1:
        raise ValueError(f"the EM algorithm handles exactly one random-effects term; "
                         f"this model has {len(design.terms)} terms "
                         f"({', '.join(t.name for t in design.terms)})")
    t = design.terms[0]
    WtW, tstats = cp_arrays(cp)
    ZtZ, ZtW = tstats[0]
    return fit_em_statistics(rs.n, rs.counts[0], WtW, ZtZ, ZtW, names=list(design.fixef_names),
                             re_names=list(t.coef_names), labels=np.asarray(t.levels), tol=tol,
                             max_iter=max_iter, accelerate=accelerate, simplified=simplified,
                             mask=mask)
