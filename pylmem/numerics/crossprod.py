"""Sufficient statistics of the linear mixed model: cross-products formed in one pass.

With W = [X y] (n × r, r = p + 1) and the random-effects terms Z_k, the profiled
deviance depends on the data only through

* W'W (r × r) and n,
* per level j of each term k: Z_kj'Z_kj (q_k × q_k) and Z_kj'W_j (q_k × r),
* between terms k < l: Z_k'Z_l (sparse, L_k q_k × L_l q_l).

All are sums over rows, so they add across row partitions: this module is the seam
through which data larger than one machine (Dask partitions) enters the fit.

W'W is also kept *centred*: with m the column means of W (m_j = 0 for the intercept
column of X, if any), ``WtWc`` = Σ (w − m)(w − m)' formed from centred rows, and
``wsum`` = Σ (w − m).  Formed uncentred, W'W loses everything below ε·n·ȳ² (y = 10⁶ + noise
loses 4 digits of the residual sum of squares); the centred form is exact to ε·n·var(y).
Partitions with different shifts combine exactly (Chan, Golub & LeVeque's pairwise update):
Σ(w − m)(w − m)' = Σ(w − mₐ)(w − mₐ)' + sₐd' + ds'ₐ + nₐdd',  d = mₐ − m,  sₐ = Σ(w − mₐ).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

_CHUNK = 1 << 17  # rows per chunk when forming row-wise products


@dataclass
class TermStats:
    """Per-level cross-products of one term: ZtZ (L, q, q), ZtW (L, q, r).

    A term whose first column is the intercept (and q > 1) also keeps them formed about
    shifts c (Z's column means, c_0 = 0) and m (W's): ZtZc = Σ (z − c)(z − c)', ZtWc =
    Σ (z − c)(w − m)' per level, from centred rows (a slope on x = 10⁴ + noise loses
    nothing).  Per level, row 0 of ZtZc is Σ (z − c) and ZtZc[0, 0] the count, so two
    parts combine exactly after moving one to the other's shifts.
    """

    ZtZ: np.ndarray
    ZtW: np.ndarray
    intercept: bool = False   # column 0 of Z is the constant 1 (a centrable term)
    zshift: np.ndarray | None = None
    wshift: np.ndarray | None = None
    ZtZc: np.ndarray | None = None
    ZtWc: np.ndarray | None = None

    def centred_to(self, c, m):
        """(ZtZc, ZtWc) moved to the shifts (c, m): exact, d = old − new shift."""
        dz, dw = self.zshift - c, self.wshift - m
        s = self.ZtZc[:, :, 0]            # Σ (z − c_old) per level
        t = self.ZtWc[:, 0, :]            # Σ (w − m_old) per level
        n = self.ZtZc[:, 0, 0]
        sd = s[:, :, None] * dz[None, None, :]
        ZtZc = self.ZtZc + sd + sd.transpose(0, 2, 1) + n[:, None, None] * np.outer(dz, dz)
        ZtWc = (self.ZtWc + s[:, :, None] * dw[None, None, :] + dz[None, :, None] * t[:, None, :]
                + n[:, None, None] * np.outer(dz, dw))
        return ZtZc, ZtWc

    def __add__(self, other: "TermStats") -> "TermStats":
        out = TermStats(self.ZtZ + other.ZtZ, self.ZtW + other.ZtW,
                        self.intercept and other.intercept)
        empty = [t for t in (self, other) if t.ZtZc is None and not t.ZtZ.any()]
        if empty and len(empty) < 2:   # an empty partition: keep the other's centring
            full = other if empty[0] is self else self
            if full.ZtZc is not None:
                out.intercept, out.zshift, out.wshift = True, full.zshift, full.wshift
                out.ZtZc, out.ZtWc = full.ZtZc.copy(), full.ZtWc.copy()
            return out
        if self.ZtZc is not None and other.ZtZc is not None:
            ZtZc, ZtWc = other.centred_to(self.zshift, self.wshift)
            out.zshift, out.wshift = self.zshift, self.wshift
            out.ZtZc, out.ZtWc = self.ZtZc + ZtZc, self.ZtWc + ZtWc
        return out


@dataclass
class CrossProducts:
    """All the sufficient statistics of a design (see module docstring)."""

    n: int
    WtW: np.ndarray
    terms: list[TermStats]
    between: dict = field(default_factory=dict)  # (k, l) -> sparse Z_k'Z_l, k < l
    icol: int | None = None            # index of X's intercept column (all ones), if any
    shift: np.ndarray | None = None    # m: centring of W's columns (0 at icol)
    WtWc: np.ndarray | None = None     # Σ (w − m)(w − m)'
    wsum: np.ndarray | None = None     # Σ (w − m)

    def __add__(self, other: "CrossProducts") -> "CrossProducts":
        if other.n == 0 or self.n == 0:   # an empty partition adds nothing (keep the centring)
            a, b = (self, other) if other.n == 0 else (other, self)
            return CrossProducts(
                n=a.n, WtW=a.WtW + b.WtW, terms=[x + y for x, y in zip(a.terms, b.terms)],
                between={k: a.between[k] + b.between[k] for k in a.between},
                icol=a.icol, shift=a.shift, WtWc=a.WtWc, wsum=a.wsum)
        n = self.n + other.n
        icol = self.icol if self.icol == other.icol else None
        shift = WtWc = wsum = None
        if icol is not None and self.WtWc is not None and other.WtWc is not None and n:
            shift = (self.n * self.shift + self.wsum + other.n * other.shift + other.wsum) / n
            shift[icol] = 0.0                      # the intercept column is never centred
            WtWc, wsum = np.zeros_like(self.WtWc), np.zeros_like(self.wsum)
            for part in (self, other):
                d = part.shift - shift
                sd = np.outer(part.wsum, d)
                WtWc += part.WtWc + sd + sd.T + part.n * np.outer(d, d)
                wsum += part.wsum + part.n * d
        return CrossProducts(
            n=n,
            WtW=self.WtW + other.WtW,
            terms=[a + b for a, b in zip(self.terms, other.terms)],
            between={k: self.between[k] + other.between[k] for k in self.between},
            icol=icol, shift=shift, WtWc=WtWc, wsum=wsum,
        )

    def centred(self):
        """(icol, m, W̃'W̃) with W̃ = W − 1m' (column icol kept), or None without an intercept."""
        if self.icol is None or self.WtWc is None:
            return None
        return self.icol, self.shift, self.WtWc


def _segments(codes: np.ndarray):
    """Segment starts of sorted codes (None when the codes are not sorted)."""
    if len(codes) and np.all(codes[1:] >= codes[:-1]):
        return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return None


def group_sums(codes: np.ndarray, n_levels: int, M: np.ndarray) -> np.ndarray:
    """Σ over rows of each level: (n, k) -> (n_levels, k), chunked over rows.

    Sorted codes use ``np.add.reduceat`` on segment starts; unsorted ones a sparse
    indicator product.  Neither loops over groups in Python.
    """
    n = len(codes)
    starts = _segments(codes)
    if starts is not None:
        out = np.zeros((n_levels, M.shape[1]))
        out[codes[starts]] = np.add.reduceat(M, starts, axis=0)
        return out
    S = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_levels, n))
    return np.asarray(S @ M)


def group_sums_rows(codes: np.ndarray, n_levels: int, P: np.ndarray, starts=None,
                    out=None) -> np.ndarray:
    """Σ over the columns of each level for a (k, n) array: (k, n) -> (k, n_levels).

    The transposed layout of :func:`group_sums` (each row one contiguous vector over the
    observations): for sorted codes ``np.add.reduceat`` along the rows, bitwise the sums
    :func:`group_sums` forms from P.T and several times faster; unsorted codes a sparse
    product.  With ``out`` (k, n_levels) the sums are added to it (returned).
    """
    starts = _segments(codes) if starts is None else starts
    if out is None:
        out = np.zeros((P.shape[0], n_levels))
    if starts is not None and len(starts) * 6 > P.shape[1]:
        # levels of fewer than ~6 rows: reduceat's cost per segment dominates; bincount
        # accumulates each row in order instead
        codes = np.asarray(codes, dtype=np.intp)
        for i in range(P.shape[0]):
            out[i] += np.bincount(codes, weights=P[i], minlength=n_levels)
        return out
    if starts is not None:
        sums = np.add.reduceat(P, starts, axis=1)
        idx = codes[starts]
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if hi - lo == len(idx):          # levels lo..hi-1 all present: a slice, no scatter
            out[:, lo:hi] += sums
        else:
            out[:, idx] += sums
        return out
    n = len(codes)
    S = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_levels, n))
    out += np.asarray(S @ P.T).T
    return out


def indicator(codes: np.ndarray, n_levels: int, counts=None) -> sp.csr_matrix:
    """The (n_levels, n) 0/1 matrix of the codes, built as CSR directly (rows of one level
    in their order), so that ``indicator(c, L) @ M`` sums the rows of M by level."""
    n = len(codes)
    counts = np.bincount(codes, minlength=n_levels) if counts is None else counts
    indptr = np.zeros(n_levels + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if n and np.all(codes[1:] >= codes[:-1]):
        idx = np.arange(n)
    else:
        idx = np.argsort(codes, kind="stable")
    return sp.csr_matrix((np.ones(n), idx, indptr), shape=(n_levels, n))


def _products(Z, codes, n_levels, W, zc=None, wc=None):
    """Per-level Σ (z − zc)(z − zc)' and Σ (z − zc)(w − wc)', shifted chunk by chunk.

    Formed in the transposed layout: each product z_a z_b (lower triangle only) and z_a w_c
    is one contiguous vector over the chunk's rows, summed per level by
    :func:`group_sums_rows`.  A term that is the intercept alone (z = 1, not shifted) needs
    no products: Z'Z is the counts and Z'W the level sums of W.
    """
    n, q = Z.shape
    r = W.shape[1]
    if q == 1 and zc is None and n and np.all(Z[:, 0] == 1.0):
        counts = np.bincount(codes, minlength=n_levels)
        ZtW = indicator(codes, n_levels, counts) @ np.ascontiguousarray(W)
        return counts.astype(float).reshape(n_levels, 1, 1), ZtW.reshape(n_levels, 1, r)
    rows, cols = np.tril_indices(q)
    nt = len(rows)
    ZtZ = np.zeros((nt, n_levels))
    ZtW = np.zeros((q * r, n_levels))
    for s in range(0, n, _CHUNK):
        c = codes[s:s + _CHUNK]
        m = len(c)
        # fresh C-ordered (·, m) copies (never views of the caller's arrays: an F-ordered Z
        # has Z.T C-contiguous), shifted on the way
        zt, wt = np.empty((q, m)), np.empty((r, m))
        if zc is not None:
            np.subtract(Z[s:s + _CHUNK].T, np.asarray(zc, float)[:, None], out=zt)
            np.subtract(W[s:s + _CHUNK].T, np.asarray(wc, float)[:, None], out=wt)
        else:
            zt[...] = Z[s:s + _CHUNK].T
            wt[...] = W[s:s + _CHUNK].T
        starts = _segments(c)
        P = np.empty((max(nt, q * r), m))
        for i in range(nt):          # one row per product: no (k, m) temporaries
            np.multiply(zt[rows[i]], zt[cols[i]], out=P[i])
        group_sums_rows(c, n_levels, P[:nt], starts, out=ZtZ)
        for a in range(q):
            np.multiply(zt[a], wt, out=P[a * r:(a + 1) * r])
        group_sums_rows(c, n_levels, P[:q * r], starts, out=ZtW)
    full = np.empty((q, q, n_levels))
    full[rows, cols] = ZtZ
    full[cols, rows] = ZtZ
    return (np.ascontiguousarray(full.transpose(2, 0, 1)),
            np.ascontiguousarray(ZtW.T).reshape(n_levels, q, r))


def _term_stats(Z: np.ndarray, codes: np.ndarray, n_levels: int, W: np.ndarray,
                wshift=None) -> TermStats:
    n, q = Z.shape
    r = W.shape[1]
    if q > 1 and n and np.all(Z[:, 0] == 1.0):
        # centred rows; the plain products follow exactly: Z = Zc + 1c', W = Wc + 1m'
        c = _colmeans(Z)
        c[0] = 0.0
        m = np.zeros(r) if wshift is None else np.asarray(wshift, float)
        Sc, Tc = _products(Z, codes, n_levels, W, c, m)
        s, t, nj = Sc[:, :, 0], Tc[:, 0, :], Sc[:, 0, 0]
        ZtZ = Sc.copy()
        ZtZ += s[:, :, None] * c
        ZtZ += c[:, None] * s[:, None, :]
        ZtZ += nj[:, None, None] * np.outer(c, c)
        ZtW = Tc.copy()
        ZtW += s[:, :, None] * m
        ZtW += c[:, None] * t[:, None, :]
        ZtW += nj[:, None, None] * np.outer(c, m)
        return TermStats(ZtZ, ZtW, intercept=True, zshift=c, wshift=m, ZtZc=Sc, ZtWc=Tc)
    return TermStats(*_products(Z, codes, n_levels, W))


def _colmeans(A: np.ndarray) -> np.ndarray:
    """Column means by a BLAS product (numpy's axis-0 mean of a C-ordered array is slow)."""
    return np.ones(len(A)) @ A / len(A)


def _intercept_column(X: np.ndarray):
    """Index of the first column of X that is identically 1, or None."""
    if X.shape[0] == 0:
        return None
    for j in range(X.shape[1]):
        if X[0, j] == 1.0 and np.all(X[:, j] == 1.0):
            return j
    return None


def crossproducts(y, X, terms) -> CrossProducts:
    """Form every cross-product of the model in one pass over the rows.

    ``terms`` is a sequence of objects with ``Z`` (n × q), ``codes`` (n,), ``n_levels``
    and ``sparse()`` (see :class:`pylmem.model.design.RandomTerm`).
    """
    W = np.column_stack([X, y])
    icol = _intercept_column(np.asarray(X))
    shift = None
    if icol is not None:
        shift = _colmeans(W)
        shift[icol] = 0.0
    stats = [_term_stats(t.Z, t.codes, t.n_levels, W, shift) for t in terms]
    between = {}
    if len(terms) > 1:
        Zs = [t.sparse() for t in terms]
        for k in range(len(terms)):
            for m in range(k + 1, len(terms)):
                between[(k, m)] = (Zs[k].T @ Zs[m]).tocsr()
    WtWc = wsum = None
    if icol is not None:
        Wc = W                               # our own copy, no longer needed as W
        Wc -= shift
        WtWc, wsum = Wc.T @ Wc, Wc.sum(axis=0)
        WtW = WtWc + np.outer(wsum, shift)   # W'W = Wc'Wc + s m' + m s' + n m m'
        WtW += WtW.T - WtWc + len(y) * np.outer(shift, shift)
    else:
        WtW = W.T @ W
    return CrossProducts(n=len(y), WtW=WtW, terms=stats, between=between,
                         icol=icol, shift=shift, WtWc=WtWc, wsum=wsum)
