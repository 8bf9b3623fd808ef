"""The multi-term ("rest") block of the profiled deviance's Cholesky factor.

With the first term eliminated level by level (batched q0 × q0 factors L0_j), the terms
after it (R) meet in the Schur complement

    A_RR(θ) = Λ_R' (Z_R'Z_R − Σ_j A_j M_j A_j') Λ_R + I,   M_j = T0 (L0_j L0_j')⁻¹ T0',

A_j = Z_R'Z_0j the (m × q0) cross-product of the rest with level j of the first term.
Its sparsity pattern does not depend on θ, so everything structural is done once
(:class:`RestStructure`):

* the pattern of A_RR at block level: level pairs (a ≥ b) of the rest terms that share an
  observation (Z_R'Z_R) or a level of the first term (A_j A_j'), each a full q_a × q_b block;
* the fixed sparse matrix K with  vec(Σ_j A_j M_j A_j') = K vec(M)  on that pattern
  (entries A_aj[s,u] A_bj[t,v] at column (j, u, v)): per θ the Schur complement is one
  sparse matrix-vector product, with no pattern work and no sparse-sparse product;
* for a dense block of scalar terms whose K map would outgrow the m × m block (MovieLens-
  shaped data: ~10⁸ pairs against m² ~ 10⁷), no K map: the Schur complement is formed per θ
  by sparse products of A scaled by θ, chunked over rest rows, with its popular rows dense
  (:class:`_ProductSchur`), in O(nnz(A) + m²) memory;
* the factorization backend: dense LAPACK when the pattern is dense (or small), else
  CHOLMOD (supernodal, ``cvxopt.cholmod``) with its fill-reducing AMD ordering and symbolic
  factorization computed once; per θ only ``cholmod.numeric`` runs.

Per θ, :meth:`RestStructure.factor` returns a :class:`RestCholesky` L_R with L_R L_R' = A_RR
(for CHOLMOD L_R = P'L, P the fill-reducing permutation, so L_R is not triangular but
every quantity of the deviance, L_R⁻¹B and log|L_R|², is what the triangular factor gives).
Memory is O(nnz(pattern) + nnz(K)) plus the factor: no m × m array unless dense.
"""
from __future__ import annotations

import ctypes

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg.blas import dsyrk

from . import batched as B
from .rest_blocks import BlockLayout, OffDiagonal

try:  # scipy's kernels behind toarray() (adds a CSR matrix into a dense array) and the
    # CSR product (with its nnz bound, here computed once: the pattern does not change with θ)
    from scipy.sparse._sparsetools import csr_matmat as _csr_matmat
    from scipy.sparse._sparsetools import csr_matmat_maxnnz as _csr_matmat_maxnnz
    from scipy.sparse._sparsetools import csr_todense as _csr_todense
except ImportError:  # pragma: no cover
    _csr_todense = _csr_matmat = _csr_matmat_maxnnz = None

# dense backend when m is at most _DENSE_M, or (m at most _DENSE_MAX_M and) the pattern is
# estimated to fill _DENSE_FRACTION of the lower triangle
_DENSE_M = 400
_DENSE_FRACTION = 0.15
_DENSE_MAX_M = 8000
_DENSE_MAX_M_PRODUCT = 20000   # scalar rest terms (the product path): 3.2 GB block
_GEMM_MAX = 10_000_000   # entries of the dense copy of A = Z_R'Z_0 for the heavy levels
_PAIR_CHUNK = 2_000_000  # pairs per chunk when forming K for a dense block
_HEAVY_FACTOR = None     # a level is "heavy" when factor × cnt² > m² q0; None: the cost model
# the cost model of the choice between K and BLAS-3 rank-k updates for a dense rest block
# (CPU seconds, measured with one BLAS thread on the benchmark machine by
# benchmarks/calibrate_rest.py; only their ratios matter)
_T_K_ENTRY = 2.3e-9      # one entry of K in the per-θ sparse mat-vec
_T_K_SETUP = 2.5e-7      # forming one entry of K (pairs, sort, sum of duplicates), once
_T_SYRK = 6.2e-11        # one multiply-add of dsyrk
_T_ELEM = 2.0e-9         # one element of a per-θ numpy pass over the rest-block rows
_T_DENSE_PASS = 2.0e-8   # per m² entry: the K path's dense passes (tril, Λ sandwich) per θ
_T_BLAS_CALL = 5.0e-4    # the BLAS-3 path's fixed cost per θ (Λ_R'Z_R'Z_RΛ_R by sparse products)
_N_EVAL = 60             # evaluations the set-up is amortised over
_BLAS = None             # None: by the cost model; True / False: always / never (tests)
_BLAS_MAX_BYTES = 2.0e9  # the dense copy of A = Z_R'Z_0 and its per-θ image
_BLOCKS_MAX = 64         # sparse path: dense blocks when every component has at most this many rows (0: never)


def blas_costs(seg_counts, m: int, L0: int, q0: int) -> tuple[float, float]:
    """Estimated seconds per evaluation (set-up amortised over ``_N_EVAL``) of the two
    paths for a dense rest block: (K map with heavy levels by a rank-k update, BLAS-3).

    ``seg_counts``: entries of A = Z_R'Z_0 per first-term level (the levels' neighbours).
    The K path's entries per level are ~ cnt²/2; the BLAS-3 path is one ``dsyrk`` with
    m² L0 q0 / 2 multiply-adds plus passes over the (L0 q0, m) image of A.
    """
    per_level_k, per_level_rank = _level_costs(seg_counts, m, q0)
    m2 = float(m) * m
    k_path = float(np.minimum(per_level_k, per_level_rank).sum()) + m2 * _T_DENSE_PASS
    blas = float(L0) * per_level_rank + m2 * 3 * _T_ELEM + _T_BLAS_CALL
    return k_path, blas


def _level_costs(seg_counts, m: int, q0: int):
    """Per first-term level: seconds per θ of its K entries (set-up amortised) and of its
    rank-q0 BLAS update.  A level with cnt entries of A has ~cnt²/2 pairs; for q0 > 1 the
    symmetric M_j merges them to ~(q0 + 1)/(2 q0) of that (measured: ~0.35-0.75)."""
    c = np.asarray(seg_counts, dtype=float)
    merge = 1.0 if q0 == 1 else 0.5
    per_level_k = merge * c * (c + 1) / 2 * (_T_K_ENTRY + _T_K_SETUP / _N_EVAL)
    per_level_rank = float(m) * m * q0 / 2 * _T_SYRK + m * q0 * (q0 + 1) * _T_ELEM
    return per_level_k, per_level_rank


def choose_blas(seg_counts, m: int, L0: int, q0: int) -> bool:
    """Whether a dense rest block is formed by the BLAS-3 path (:func:`blas_costs`)."""
    if _BLAS is not None:
        return bool(_BLAS)
    if 2 * 8.0 * m * L0 * q0 > _BLAS_MAX_BYTES or not len(seg_counts):
        return False
    k_path, blas = blas_costs(seg_counts, m, L0, q0)
    return blas < k_path


# the product path of a dense scalar rest block (:class:`_ProductSchur`): the Schur
# complement by sparse products of A = Z_R'Z_0 scaled per θ, no K map
_PRODUCT = None          # None: when the K map would outgrow the m × m block; True / False: always / never
_PRODUCT_K_RATIO = 1.0   # ... i.e. when 12 bytes × K entries > _PRODUCT_K_RATIO × 8 m² bytes
_PRODUCT_MIN_K_BYTES = 32e6    # ... and more than this (a small K map is kept: fewer calls per θ)
_PRODUCT_CHUNKS = 8      # row chunks of the block (the sparse products' outputs are ~1/chunks of it)
_PRODUCT_CHUNK_ROWS = 64  # ... of at least this many rows
_PRODUCT_ROWS = None     # None: dense rows by the cost model; an int: that many (tests)
_PRODUCT_DENSE_BYTES = 256e6   # the dense copy of the popular rows of A
_T_SPGEMM = 6.6e-9       # one multiply-add of a scipy sparse × sparse product (pair of A entries)
_T_SPMM = 1.0e-9         # one multiply-add of a scipy sparse × dense product
_T_SCATTER = 5.0e-9      # one entry written by fancy indexing


def _add_csr_into(P, out):
    """out += P for a CSR matrix P and a C-contiguous dense ``out`` of its shape, in place
    (scipy's ``toarray(out=)`` zeroes ``out`` first; its kernel adds)."""
    P = P.tocsr()
    if _csr_todense is not None and out.flags.c_contiguous and P.data.dtype == out.dtype:
        _csr_todense(P.shape[0], P.shape[1], P.indptr, P.indices, P.data, out)
    else:  # pragma: no cover - scipy without the kernel
        out += P.toarray()


def choose_product(est_pairs: float, m: int) -> bool:
    """Whether a dense scalar rest block is formed by :class:`_ProductSchur` (no K map)."""
    if _PRODUCT is not None:
        return bool(_PRODUCT)
    return 12.0 * est_pairs > max(_PRODUCT_K_RATIO * 8.0 * float(m) * m, _PRODUCT_MIN_K_BYTES)


class _ProductSchur:
    """−S A W A' S of a scalar rest block (q0 = 1, all rest terms scalar), added into a
    zeroed dense m × m array: S = diag(s) the rest scales, W = diag(N²) per first-term level.

    Rows of A are split by their number of entries: the nd most popular rows (D, chosen by
    a cost model) are kept as a dense (L0, nd) copy, giving the D × D block by one ``dsyrk``
    (chunked over first-term levels) and the S × D block by sparse × dense products; the
    remaining rows' block S × S is a sparse × sparse product per pair of row chunks (c ≥ c'),
    whose output (a chunk's rows) is added into the array in place (scipy's ``csr_todense``).
    Nothing larger than the dense rows and one chunk's output is formed per θ: memory is
    O(nnz(A) + nd L0) besides the m × m array.
    """

    def __init__(self, A, chunks=None):
        A = sp.csr_matrix(A)
        A.sum_duplicates()
        A.sort_indices()
        m, L0 = A.shape
        self.m, self.L0 = m, L0
        deg = np.diff(A.indptr)
        nd = self._choose_rows(A, deg)
        order = np.argsort(-deg, kind="stable")
        d = np.sort(order[:nd])
        self.d = d
        isD = np.zeros(m, dtype=bool)
        isD[d] = True
        self.ADt = np.ascontiguousarray(A[d].toarray().T) if nd else None      # (L0, nd)
        rows = np.repeat(np.arange(m), deg)
        keep = ~isD[rows]
        ind = np.asarray(A.indices[keep], dtype=np.int32)
        self.S_rows, self.S_cols, self.S_vals = rows[keep].astype(np.int32), ind, A.data[keep]
        self.S_indptr = np.r_[0, np.cumsum(np.bincount(self.S_rows, minlength=m))].astype(np.int32)
        C = max(1, min(int(chunks or _PRODUCT_CHUNKS), m // max(_PRODUCT_CHUNK_ROWS, 1)))
        self.bounds = np.linspace(0, m, C + 1).astype(np.int64)
        # right factors: A_S' restricted to the rest rows of each chunk, as L0 × m CSR
        At = sp.csr_matrix((self.S_vals, (self.S_cols, self.S_rows)), shape=(L0, m))
        At.sort_indices()
        at_rows = np.repeat(np.arange(L0), np.diff(At.indptr))
        self.right = []
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:]):
            sel = (At.indices >= lo) & (At.indices < hi)
            ip = np.r_[0, np.cumsum(np.bincount(at_rows[sel], minlength=L0))].astype(np.int32)
            self.right.append(sp.csr_matrix((At.data[sel], At.indices[sel].astype(np.int32), ip), shape=(L0, m)))
        # the S rows of each chunk (for the S × D block)
        self.chunk_srows = [np.flatnonzero(~isD[lo:hi]) for lo, hi in zip(self.bounds[:-1], self.bounds[1:])]
        # the kernels called directly: each chunk pair's product has a fixed nnz bound
        self._nnz = None
        same = all(a.dtype == np.int32 for R in self.right for a in (R.indptr, R.indices)) \
            and self.S_cols.dtype == self.S_indptr.dtype == np.int32
        if _csr_matmat is not None and _csr_todense is not None and same:
            self._nnz = {}
            for c, (lo, hi) in enumerate(zip(self.bounds[:-1], self.bounds[1:])):
                p0, p1 = self.S_indptr[lo], self.S_indptr[hi]
                ip = self.S_indptr[lo:hi + 1] - p0
                for c2, R in enumerate(self.right[:c + 1]):
                    self._nnz[c, c2] = int(_csr_matmat_maxnnz(int(hi - lo), m, ip, self.S_cols[p0:p1],
                                                              R.indptr, R.indices))

    @staticmethod
    def _choose_rows(A, deg) -> int:
        """Number of dense rows minimising the cost model (seconds per θ)."""
        m, L0 = A.shape
        cap = int(min(m, _PRODUCT_DENSE_BYTES // max(8 * L0, 1)))
        if _PRODUCT_ROWS is not None:
            return int(min(_PRODUCT_ROWS, m))
        order = np.argsort(-deg, kind="stable")
        Ao = A[order]
        cnt = np.diff(A.tocsc().indptr).astype(float)
        nnz_cum = np.r_[0, np.cumsum(deg[order])]
        best, best_nd = None, 0
        for nd in np.unique(np.linspace(0, cap, 41).astype(int)):
            cD = np.bincount(Ao.indices[:Ao.indptr[nd]], minlength=L0).astype(float)
            cS = cnt - cD
            nS = m - nd
            t = (_T_SYRK * nd * nd / 2 * L0 + _T_SPMM * (nnz_cum[-1] - nnz_cum[nd]) * nd
                 + _T_SPGEMM * float((cS * (cS + 1) / 2).sum()) + _T_SCATTER * (2 * nS * nd + nd * nd))
            if best is None or t < best:
                best, best_nd = t, int(nd)
        return best_nd

    def add_into(self, X, s, N):
        """X −= S A W A' S (lower triangle valid; S × S, S × D, D × D blocks) for X zeroed
        where A's products land; ``s`` (m,) the rest scales, ``N`` (L0,) with W = diag(N²)."""
        m, d = self.m, self.d
        w = N * N
        one_scale = bool(np.all(s == s[0])) if m else True
        left = self.S_vals * w[self.S_cols] * s[self.S_rows]
        left *= -1.0
        if one_scale:                            # the right factor's scale folded into the left
            left_ss = left * s[0]
            right = self.right
        else:
            left_ss = left
            right = [sp.csr_matrix((R.data * s[R.indices], R.indices, R.indptr), shape=R.shape)
                     for R in self.right]
        sd = s[d]
        for c, (lo, hi) in enumerate(zip(self.bounds[:-1], self.bounds[1:])):
            p0, p1 = self.S_indptr[lo], self.S_indptr[hi]
            ip = self.S_indptr[lo:hi + 1] - p0
            Lss = sp.csr_matrix((left_ss[p0:p1], self.S_cols[p0:p1], ip), shape=(hi - lo, self.L0))
            Xc = X[lo:hi]
            if self._nnz is not None:
                top = max(self._nnz[c, c2] for c2 in range(c + 1))
                Cp, Cj, Cx = np.empty(hi - lo + 1, np.int32), np.empty(top, np.int32), np.empty(top)
                for c2, R in enumerate(right[:c + 1]):
                    if self._nnz[c, c2]:
                        _csr_matmat(int(hi - lo), m, ip, self.S_cols[p0:p1], left_ss[p0:p1],
                                    R.indptr, R.indices, R.data, Cp, Cj, Cx)
                        _csr_todense(int(hi - lo), m, Cp, Cj, Cx, Xc)
            else:  # pragma: no cover - scipy without the kernels
                for R in right[:c + 1]:
                    _add_csr_into(Lss @ R, Xc)
            Lc = sp.csr_matrix((left[p0:p1], self.S_cols[p0:p1], ip), shape=(hi - lo, self.L0))
            if len(d) and len(self.chunk_srows[c]):
                rs = self.chunk_srows[c]
                Q = (Lc[rs] @ self.ADt) * sd[None, :]        # (|rs|, nd)
                X[(lo + rs)[:, None], d[None, :]] = Q
                X[d[:, None], (lo + rs)[None, :]] = Q.T
        if len(d):
            nd = len(d)
            G = np.zeros((nd, nd), order="F")
            absN = np.abs(N)
            step = max(1, int(4_000_000 // max(nd, 1)))
            for j0 in range(0, self.L0, step):
                Bc = self.ADt[j0:j0 + step] * absN[j0:j0 + step, None]
                G = dsyrk(-1.0, Bc.T, beta=1.0, c=G, trans=0, lower=1, overwrite_c=1)
            G *= sd[:, None]
            G *= sd[None, :]
            G = np.tril(G) + np.tril(G, -1).T
            X[d[:, None], d[None, :]] = G
        return X


def _segment_pairs(starts: np.ndarray, counts: np.ndarray):
    """All pairs (e, e') with e' ≤ e inside each segment [start, start + count)."""
    counts = counts.astype(np.int64)
    N = int(counts.sum())
    start_e = np.repeat(starts.astype(np.int64), counts)
    pos = np.arange(N, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    elem = start_e + pos
    reps = pos + 1
    total = int(reps.sum())
    first = np.repeat(elem, reps)
    second = np.repeat(start_e, reps) + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(reps) - reps, reps))
    return first, second


class _CholmodValues:
    """A cvxopt sparse matrix of fixed pattern whose values are rewritten in place.

    cvxopt copies the values on every construction (~75 ns per entry, with sorting); the
    values array of its CCS struct is reached through ctypes instead, checked once against
    the constructor's result (falling back to construction if the layout differs).
    """

    def __init__(self, rows, cols, m):
        import cvxopt

        self.rows = cvxopt.matrix(rows.astype(int))
        self.cols = cvxopt.matrix(cols.astype(int))
        self.m = m
        nnz = len(rows)
        probe = np.arange(1.0, nnz + 1.0)
        self.A = cvxopt.spmatrix(cvxopt.matrix(probe), self.rows, self.cols, (m, m))
        self._view = None
        try:
            head = ctypes.c_void_p.from_address(id(self.A) + object.__basicsize__).value
            values = ctypes.c_void_p.from_address(head).value
            view = np.ctypeslib.as_array((ctypes.c_double * nnz).from_address(values))
            if np.array_equal(view, probe) and np.array_equal(np.asarray(self.A.V).ravel(), probe):
                view[0] = -1.0
                if self.A.V[0] == -1.0:
                    self._view = view
        except Exception:  # pragma: no cover - layout differs: construct each time
            self._view = None

    def set(self, vals: np.ndarray):
        if self._view is not None:
            self._view[:] = vals
        else:  # pragma: no cover
            self.A = self.fresh(vals)
        return self.A

    def fresh(self, vals: np.ndarray):
        """A new cvxopt matrix of the pattern holding ``vals`` (not shared)."""
        import cvxopt

        return cvxopt.spmatrix(cvxopt.matrix(np.ascontiguousarray(vals, dtype=float)), self.rows,
                               self.cols, (self.m, self.m))


class RestCholesky(OffDiagonal):
    """L_R with L_R L_R' = A_RR at one θ (dense lower triangular, or CHOLMOD's P'L)."""

    def __init__(self, m, logdet, dense=None, chol=None, structure=None, values=None):
        self.m = m
        self.logdet = logdet
        self.dense = dense      # (m, m) lower factor, or None
        self._chol = chol       # cvxopt factor (the structure's, shared) or None
        self._structure = structure
        self._values = values   # A_RR's entries (CSC order) for a private refactorization
        self._gen = structure._gen if structure is not None else None

    def _factor(self):
        """The CHOLMOD factor of this θ: the structure's shared one refactorises at every
        evaluation, so a factor kept (e.g. by a fitted model) makes its own copy on first
        use after that (one symbolic + numeric factorization)."""
        st = self._structure
        if self._chol is None or (self._gen is not None and self._gen != st._gen):
            import cvxopt.cholmod as cm

            Ac = st._vals.fresh(self._values)
            F = cm.symbolic(Ac, uplo="L")
            cm.numeric(Ac, F)
            self._chol, self._gen = F, None        # private from now on
        return self._chol

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("_structure") is not None:
            state["_chol"] = None               # rebuilt from the values on first use
        return state

    def _cholmod(self, Bm, systems):
        import cvxopt
        import cvxopt.cholmod as cm

        Bm = np.asarray(Bm, dtype=float)
        vec = Bm.ndim == 1
        X = cvxopt.matrix(np.asfortranarray(Bm.reshape(self.m, -1)))
        F = self._factor()
        for s in systems:
            cm.solve(F, X, sys=s)
        out = np.array(X)
        return out.ravel() if vec else out

    def solve_L(self, Bm):
        """L_R⁻¹ B."""
        if self.dense is not None:
            return sla.solve_triangular(self.dense, Bm, lower=True, check_finite=False)
        return self._cholmod(Bm, (7, 4))          # L⁻¹ P B

    def solve_Lt(self, Bm):
        """L_R⁻ᵀ B."""
        if self.dense is not None:
            return sla.solve_triangular(self.dense, Bm, lower=True, trans="T", check_finite=False)
        return self._cholmod(Bm, (5, 8))          # P' L⁻ᵀ B

    def inv_diag_blocks(self, sizes, chunk=256):
        """Diagonal blocks of A_RR⁻¹ = L_R⁻ᵀ L_R⁻¹ for consecutive block sizes (q_k, L_k)."""
        out = []
        if self.dense is not None:
            Linv = sla.solve_triangular(self.dense, np.eye(self.m), lower=True, check_finite=False)
            off = 0
            for q, L in sizes:
                blk = Linv[:, off:off + L * q].reshape(-1, L, q)
                out.append(np.einsum("mgi,mgj->gij", blk, blk))
                off += L * q
            return out
        # sparse: A_RR⁻¹ E for chunks of unit columns (chunk columns at a time)
        off = 0
        for q, L in sizes:
            D = np.empty((L, q, q))
            step = max(1, chunk // q)
            for g0 in range(0, L, step):
                g1 = min(L, g0 + step)
                cols = np.arange(off + g0 * q, off + g1 * q)
                E = np.zeros((self.m, len(cols)))
                E[cols, np.arange(len(cols))] = 1.0
                X = self._cholmod(E, (0,))
                blk = X[cols].reshape(g1 - g0, q, g1 - g0, q)
                idx = np.arange(g1 - g0)
                D[g0:g1] = blk[idx, :, idx, :]
            out.append(D)
            off += L * q
        return out


class RestStructure:
    """Symbolic analysis of the rest block, once per model (see module docstring)."""

    def __init__(self, cp, qs, n_levels, *, backend=None):
        self.qs = list(qs)
        self.n_levels = list(n_levels)
        q0, L0 = self.qs[0], self.n_levels[0]
        self.q0, self.L0 = q0, L0
        rq = self.qs[1:]
        rL = self.n_levels[1:]
        KR = len(rq)
        self.r = cp.WtW.shape[0]
        # rest entries: term-major, then level, then coefficient; blocks: (term, level)
        self.offsets = np.cumsum([0] + [L * q for L, q in zip(rL, rq)])
        self.m = m = int(self.offsets[-1])
        self.boffsets = np.cumsum([0] + rL)
        nb = int(self.boffsets[-1])
        blk_term = np.repeat(np.arange(KR), rL)
        blk_q = np.asarray(rq, dtype=np.int64)[blk_term]
        blk_start = np.repeat(self.offsets[:-1], rL) + (np.arange(nb) - np.repeat(self.boffsets[:-1], rL)) * blk_q
        ent_blk = np.repeat(np.arange(nb), blk_q)        # block of each rest entry
        self.ent_blk = ent_blk

        # A = Z_R'Z_0 (m × L0 q0), entries sorted by first-term level j, then rest row
        A = sp.vstack([cp.between[(0, k)].T for k in range(1, KR + 1)], format="csc")
        A.sum_duplicates()
        A.sort_indices()
        self.A = A.tocsr()
        Acol = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
        j_of = Acol // q0
        u_of = Acol % q0
        row_of = A.indices.astype(np.int64)
        order = np.lexsort((u_of, row_of, j_of))          # by j, then row (block-major), then u
        j_of, u_of, row_of, val = j_of[order], u_of[order], row_of[order], A.data[order]
        seg_starts = np.flatnonzero(np.r_[True, j_of[1:] != j_of[:-1]]) if len(j_of) else np.zeros(0, int)
        seg_counts = np.diff(np.r_[seg_starts, len(j_of)])
        # backend, from the pattern's size before it is formed: the pairs of A's entries
        # that share a first-term level bound the entries of Σ_j A_j M_j A_j'
        est = float((seg_counts.astype(float) * (seg_counts + 1) / 2).sum())
        est_density = min(1.0, (est + m) / (m * (m + 1) / 2))
        if backend is None:
            # the product path (scalar terms) keeps no K map: a dense pattern stays dense up
            # to a larger block (CHOLMOD's factor of it would be as dense)
            max_m = _DENSE_MAX_M_PRODUCT if (q0 == 1 and all(q == 1 for q in rq)) else _DENSE_MAX_M
            backend = "dense" if (m <= _DENSE_M or (est_density >= _DENSE_FRACTION and m <= max_m)) \
                else "cholmod"
            if backend == "dense" and choose_blas(seg_counts, m, L0, q0):
                backend = "blas"
        if backend == "cholmod":
            try:
                import cvxopt.cholmod  # noqa: F401
            except ImportError:  # pragma: no cover - cvxopt is a dependency
                backend = "dense"
        self.backend = backend
        self.ZRtW = np.vstack([t.ZtW.reshape(-1, self.r) for t in cp.terms[1:]])
        if backend == "blas":
            self._setup_blas(cp, est_density)
            return
        self._product = None
        if backend == "dense" and q0 == 1 and all(q == 1 for q in rq) and (m > _DENSE_MAX_M or choose_product(est, m)):
            self._setup_product(cp, est_density)
            return
        nq = q0 * (q0 + 1) // 2
        # dense: a first-term level j with many rest neighbours (cnt_j entries of A) costs
        # cnt_j²/2 K entries (~20 flops' time each) against m² q0 flops of a BLAS rank-q0
        # update: such "heavy" levels (popular items, or all levels of a small dense block)
        # go to one dense rank-k update, the others to K
        self._Ad = self._heavy = None
        if backend == "dense" and len(seg_counts):
            if _HEAVY_FACTOR is None:
                per_k, per_rank = _level_costs(seg_counts, m, q0)
                heavy = per_k > per_rank
            else:
                heavy = _HEAVY_FACTOR * seg_counts.astype(float) ** 2 > float(m) * m * q0
            cap = _GEMM_MAX // max(m * q0, 1)
            if heavy.sum() > cap:
                keep = np.argsort(-seg_counts, kind="stable")[:cap]
                heavy = np.zeros_like(heavy)
                heavy[keep] = True
            if heavy.any():
                jh = j_of[seg_starts[heavy]]
                cols = (jh[:, None] * q0 + np.arange(q0)[None, :]).ravel()
                self._heavy = jh
                # (m, q0, H): each coefficient's columns contiguous for the per-θ products
                self._Ad = np.ascontiguousarray(A[:, cols].toarray().reshape(m, len(jh), q0).transpose(0, 2, 1))
                seg_starts, seg_counts = seg_starts[~heavy], seg_counts[~heavy]

        # pairs of A's entries in one column block j: (hi, lo) rows with block(hi) ≥ block(lo);
        # inside one block both orders (the diagonal blocks are kept whole for the Λ sandwich)
        # M_j symmetric: (u, v) and (v, u) share the column of its upper triangle
        tri = np.zeros((q0, q0), dtype=np.int64)
        iu = np.triu_indices(q0)
        tri[iu] = np.arange(nq)
        tri = np.maximum(tri, tri.T)
        self._triu = iu

        def pairs(starts, counts):
            f, s = _segment_pairs(starts, counts)
            same = (ent_blk[row_of[f]] == ent_blk[row_of[s]]) & (f != s)
            if same.any():
                f, s = np.r_[f, s[same]], np.r_[s, f[same]]
            return row_of[f], row_of[s], j_of[f] * nq + tri[u_of[f], u_of[s]], val[f] * val[s]

        if backend == "dense":
            # flat positions in the m × m block, formed in chunks of ~2M pairs (int32): the
            # set-up's peak memory stays ~16 bytes per K entry
            itype = np.int32 if (m * m < 2**31 and L0 * nq < 2**31) else np.int64
            per = seg_counts.astype(np.int64) * (seg_counts + 1) // 2
            bounds = np.searchsorted(np.cumsum(per), np.arange(1, int(per.sum()) // _PAIR_CHUNK + 2) * _PAIR_CHUNK)
            # scalar terms: column j's pairs are one segment, exactly per_j of them, no duplicates
            direct = q0 == 1 and all(q == 1 for q in rq)
            total = int(per.sum())
            if direct:
                kr, kval = np.empty(total, itype), np.empty(total)
            else:
                kr_l, kc_l, kv_l = [], [], []
            lo_c = pos = 0
            for hi_c in np.unique(np.r_[np.minimum(bounds + 1, len(per)), len(per)]):
                if hi_c <= lo_c:
                    continue
                h, l, kc, kv = pairs(seg_starts[lo_c:hi_c], seg_counts[lo_c:hi_c])
                if direct:
                    kr[pos:pos + len(h)] = h * m + l
                    kval[pos:pos + len(h)] = kv
                    pos += len(h)
                else:
                    kr_l.append((h * m + l).astype(itype))
                    kc_l.append(kc.astype(itype))
                    kv_l.append(kv)
                lo_c = hi_c
            if direct:
                cnt = np.zeros(L0, dtype=np.int64)
                cnt[j_of[seg_starts]] = per
                indptr = np.r_[0, np.cumsum(cnt)].astype(itype)
                self.K = sp.csc_matrix((kval, kr, indptr), shape=(m * m, L0)) if total else None
                kcol = None
            else:
                kr = np.concatenate(kr_l) if kr_l else np.zeros(0, itype)
                kcol = np.concatenate(kc_l) if kc_l else np.zeros(0, itype)
                kval = np.concatenate(kv_l) if kv_l else np.zeros(0)
                del kr_l, kc_l, kv_l
        else:
            pr_hi, pr_lo, kcol, kval = pairs(seg_starts, seg_counts)

        # Z_R'Z_R: diagonal blocks whole, between rest terms the lower blocks
        zz_rows, zz_cols, zz_vals, zz_keys = [], [], [], []
        for k in range(KR):
            Lk, qk = rL[k], rq[k]
            g, a_, b_ = np.meshgrid(np.arange(Lk), np.arange(qk), np.arange(qk), indexing="ij")
            zz_rows.append(self.offsets[k] + g.ravel() * qk + a_.ravel())
            zz_cols.append(self.offsets[k] + g.ravel() * qk + b_.ravel())
            zz_vals.append(cp.terms[k + 1].ZtZ.ravel())
            for l in range(k + 1, KR):
                Bkl = cp.between[(k + 1, l + 1)].tocoo()      # Z_k'Z_l: rows of term l are hi
                hi = self.offsets[l] + Bkl.col.astype(np.int64)
                lo = self.offsets[k] + Bkl.row.astype(np.int64)
                zz_rows.append(hi)
                zz_cols.append(lo)
                zz_vals.append(Bkl.data)
                zz_keys.append(ent_blk[hi] * nb + ent_blk[lo])
        zz_rows, zz_cols, zz_vals = np.concatenate(zz_rows), np.concatenate(zz_cols), np.concatenate(zz_vals)
        itype = np.int32

        if backend == "dense":
            # the pattern is (nearly) full: entries are the flat positions of the m × m block
            self.nnz = m * m
            self.zz = np.bincount(zz_rows * m + zz_cols, weights=zz_vals, minlength=m * m)
            if kcol is not None:
                self.K = sp.csc_matrix((kval, (kr, kcol)), shape=(m * m, L0 * nq)) if len(kval) else None
                if self.K is not None:
                    self.K.sum_duplicates()
            del kr, kcol, kval
            self.diag_idx = np.arange(m) * (m + 1)
            self.density = est_density
            self.groups = None
            return

        # block pattern: diagonal blocks, Z_R'Z_R between rest terms, and the A-pairs
        keys = [np.arange(nb, dtype=np.int64) * (nb + 1)] + zz_keys + [ent_blk[pr_hi] * nb + ent_blk[pr_lo]]
        bkeys = np.unique(np.concatenate(keys))
        bhi, blo = bkeys // nb, bkeys % nb
        th, tl = blk_term[bhi], blk_term[blo]
        border = np.lexsort((blo, bhi, tl, th))
        bhi, blo, th, tl = bhi[border], blo[border], th[border], tl[border]
        # expand to entries, group by group (k_hi, k_lo): (n_pairs, q_hi, q_lo) row-major
        groups = []
        e_rows, e_cols = [], []
        pos = 0
        gstart = np.flatnonzero(np.r_[True, (th[1:] != th[:-1]) | (tl[1:] != tl[:-1])])
        gend = np.r_[gstart[1:], len(th)]
        for a_, b_ in zip(gstart, gend):
            kh, kl = int(th[a_]), int(tl[a_])
            qh, ql = rq[kh], rq[kl]
            hs = blk_start[bhi[a_:b_]][:, None, None] + np.arange(qh)[None, :, None]
            ls = blk_start[blo[a_:b_]][:, None, None] + np.arange(ql)[None, None, :]
            hs, ls = np.broadcast_arrays(hs, ls)
            e_rows.append(hs.ravel())
            e_cols.append(ls.ravel())
            n_e = (b_ - a_) * qh * ql
            groups.append((kh, kl, pos, pos + n_e, b_ - a_))
            pos += n_e
        self.groups = groups
        e_rows, e_cols = np.concatenate(e_rows), np.concatenate(e_cols)
        self.nnz = len(e_rows)
        ekey = e_rows * m + e_cols
        esort = np.argsort(ekey, kind="stable")
        skey = ekey[esort]

        def lookup(r, c):
            return esort[np.searchsorted(skey, r * m + c)]

        self.zz = np.bincount(lookup(zz_rows, zz_cols), weights=zz_vals, minlength=self.nnz)
        kr = lookup(pr_hi, pr_lo)
        del pr_hi, pr_lo
        if max(self.nnz, L0 * nq) >= 2**31:  # pragma: no cover
            itype = np.int64
        self.K = sp.csc_matrix((kval, (kr.astype(itype), kcol.astype(itype))), shape=(self.nnz, L0 * nq))
        self.K.sum_duplicates()
        del kr, kcol, kval
        self.diag_idx = lookup(np.arange(m), np.arange(m))
        low = e_rows >= e_cols
        self.density = int(low.sum()) / (m * (m + 1) / 2)
        import cvxopt.cholmod as cm

        csc = np.lexsort((e_rows[low], e_cols[low]))
        self.sel = np.flatnonzero(low)[csc]
        self._low = (e_rows[low][csc], e_cols[low][csc])
        cm.options["supernodal"] = 2
        # nested designs: the pattern splits into small independent blocks, factorised
        # densely in batches instead (and then with an analytic gradient)
        self.blocks = BlockLayout.build(*self._low, m, _BLOCKS_MAX) if _BLOCKS_MAX else None
        if self.blocks is None:
            self._setup_cholmod()

    def _setup_blas(self, cp, est_density):
        """The dense BLAS-3 path (``backend="blas"``): A' = Z_0'Z_R as a dense (L0, q0, m)
        array, Z_R'Z_R as a sparse m × m matrix, the pattern of Λ_R; nothing larger.

        Per θ: B_j = N_j' A_j' (a batched product, written into a buffer kept here),
        B ← B Λ_R in place, X = Λ_R'Z_R'Z_RΛ_R + I − B'B by one ``dsyrk`` on the lower
        triangle of a Fortran array that LAPACK then factorises in place.
        """
        m, L0, q0 = self.m, self.L0, self.q0
        rq, rL = self.qs[1:], self.n_levels[1:]
        self._At = np.ascontiguousarray(self.A.T.toarray().reshape(L0, q0, m))
        self._A_dense = self._At.transpose(2, 0, 1)      # (m, L0, q0) view for the gradient
        self._B = None
        # Z_R'Z_R, both triangles: diagonal blocks per level, and the blocks between terms
        rows, cols, vals = [], [], []
        for k in range(len(rq)):
            Lk, qk = rL[k], rq[k]
            g, a_, b_ = np.meshgrid(np.arange(Lk), np.arange(qk), np.arange(qk), indexing="ij")
            rows.append(self.offsets[k] + g.ravel() * qk + a_.ravel())
            cols.append(self.offsets[k] + g.ravel() * qk + b_.ravel())
            vals.append(cp.terms[k + 1].ZtZ.ravel())
            for l in range(k + 1, len(rq)):
                Bkl = cp.between[(k + 1, l + 1)].tocoo()
                hi = self.offsets[l] + Bkl.col.astype(np.int64)
                lo = self.offsets[k] + Bkl.row.astype(np.int64)
                rows += [hi, lo]
                cols += [lo, hi]
                vals += [Bkl.data, Bkl.data]
        self._ZZ = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                 shape=(m, m))
        self._ZZ.sum_duplicates()
        # Λ_R = ⊕_k I_{L_k} ⊗ T_k: its entries' positions, and where each takes its value
        lr, lc, lsrc = [], [], []
        tpos = 0
        self._lam_src_off = []
        for k in range(len(rq)):
            Lk, qk = rL[k], rq[k]
            a_, b_ = np.tril_indices(qk)
            g = np.repeat(np.arange(Lk), len(a_))
            lr.append(self.offsets[k] + g * qk + np.tile(a_, Lk))
            lc.append(self.offsets[k] + g * qk + np.tile(b_, Lk))
            lsrc.append(tpos + np.tile(a_ * qk + b_, Lk))
            tpos += qk * qk
        self._lam_rows, self._lam_cols = np.concatenate(lr), np.concatenate(lc)
        self._lam_src = np.concatenate(lsrc)
        self.K = None
        self.zz = None
        self._Ad = self._heavy = None
        self._zz_low = None
        self._diag_rc = np.arange(m)
        self.nnz = m * m
        self.diag_idx = np.arange(m) * (m + 1)
        self.density = est_density
        self.groups = None

    def _setup_product(self, cp, est_density):
        """The product path (:class:`_ProductSchur`) of a dense scalar rest block: A, its
        popular rows dense, Z_R'Z_R as its (lower) entries; no K map, no m × m array kept."""
        m = self.m
        rq = self.qs[1:]
        self._product = _ProductSchur(self.A)
        rows, cols, vals = [np.arange(m)], [np.arange(m)], [np.concatenate(
            [cp.terms[k + 1].ZtZ.reshape(-1) for k in range(len(rq))])]
        for k in range(len(rq)):
            for l in range(k + 1, len(rq)):
                Bkl = cp.between[(k + 1, l + 1)].tocoo()      # Z_k'Z_l: rows of term l are hi
                rows.append(self.offsets[l] + Bkl.col.astype(np.int64))
                cols.append(self.offsets[k] + Bkl.row.astype(np.int64))
                vals.append(Bkl.data)
        Z = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(m, m)).tocsr()
        Z.sum_duplicates()
        Z = Z.tocoo()
        self._zz_low = (Z.row, Z.col, Z.data)
        self.K = None
        self.zz = None
        self._Ad = self._heavy = None
        self.nnz = m * m
        self.diag_idx = np.arange(m) * (m + 1)
        self.density = est_density
        self.groups = None

    def _schur_product(self, T, N):
        """Λ_R'(Z_R'Z_R − A W A')Λ_R + I by :class:`_ProductSchur` (lower triangle valid)."""
        m = self.m
        s = np.concatenate([np.full(L, Tk[0, 0]) for L, Tk in zip(self.n_levels[1:], T[1:])])
        if self.keep_pre:                        # for the gradient: X before the Λ_R sandwich
            X = np.zeros((m, m))
            self._product.add_into(X, np.ones(m), N)
            r_, c_, v_ = self._zz_low
            X[r_, c_] += v_
            X = np.tril(X) + np.tril(X, -1).T
            self.last_pre = X.copy()
            X *= s[:, None]
            X *= s[None, :]
        else:
            X = self._product.add_into(np.zeros((m, m)), s, N)
            r_, c_, v_ = self._zz_low
            X[r_, c_] += v_ * s[r_] * s[c_]
        X[np.arange(m), np.arange(m)] += 1.0
        return X

    def _lam_sparse(self, T):
        """Λ_R as a sparse m × m matrix (CSR) at θ."""
        tv = np.concatenate([Tk.ravel() for Tk in T[1:]])
        return sp.csr_matrix((tv[self._lam_src], (self._lam_rows, self._lam_cols)), shape=(self.m, self.m))

    def _blas_image(self, T, N):
        """B (L0 q0, m) with B_j = N_j' A_j' (and B ← B Λ_R unless the gradient keeps X
        before the sandwich): in a buffer reused across θ."""
        m, L0, q0 = self.m, self.L0, self.q0
        if self._B is None or self._B.shape != self._At.shape:
            self._B = np.empty_like(self._At)
        Bf = self._B
        if q0 == 1:
            np.multiply(self._At[:, 0, :], N[:, None], out=Bf[:, 0, :])
        else:
            np.matmul(N.transpose(0, 2, 1), self._At, out=Bf)
        Bm = Bf.reshape(L0 * q0, m)
        if self.keep_pre:
            return Bm
        return self.fold_lam(T, Bm)

    def _schur_blas(self, T, N):
        m = self.m
        Bm = self._blas_image(T, N)
        X = np.empty((m, m), order="F")
        # X = −B'B on the lower triangle (beta = 0: X's contents are not read)
        X = dsyrk(-1.0, Bm.T, beta=0.0, c=X, trans=0, lower=1, overwrite_c=1)
        if self.keep_pre:                        # for the gradient: X before the Λ_R sandwich
            S = self._ZZ.tocoo()
            low = S.row >= S.col
            X[S.row[low], S.col[low]] += S.data[low]
            Xf = np.tril(X) + np.tril(X, -1).T
            self.last_pre = Xf
            X = self._lam_t_dense(T, self._lam_t_dense(T, Xf).T).T
            X[np.arange(m), np.arange(m)] += 1.0
            return np.asfortranarray(X)
        if all(q == 1 for q in self.qs[1:]):     # scalar rest terms: s_a s_b (Z_R'Z_R)_ab
            if getattr(self, "_zz_low", None) is None:
                S = self._ZZ.tocoo()
                low = S.row >= S.col
                self._zz_low = (S.row[low], S.col[low], S.data[low])
            r_, c_, v_ = self._zz_low
            sc = np.concatenate([np.full(L, Tk[0, 0]) for L, Tk in zip(self.n_levels[1:], T[1:])])
            X[r_, c_] += v_ * sc[r_] * sc[c_]
        else:
            Lam = self._lam_sparse(T)
            S = (Lam.T @ self._ZZ @ Lam).tocoo()
            low = S.row >= S.col
            X[S.row[low], S.col[low]] += S.data[low]
        X[self._diag_rc, self._diag_rc] += 1.0
        return X

    def _setup_cholmod(self):
        """The cvxopt matrix of the pattern and CHOLMOD's symbolic factorization (AMD)."""
        import cvxopt.cholmod as cm

        rows, cols = self._low
        self._vals = _CholmodValues(rows, cols, self.m)
        self._symbolic = cm.symbolic(self._vals.set(np.where(rows == cols, 1.0, 0.0)), uplo="L")
        self._gen = 0

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_vals", None)
        state.pop("_symbolic", None)
        state.pop("_B", None)
        state.pop("_A_dense", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.backend == "blas":
            self._B = None
            self._A_dense = self._At.transpose(2, 0, 1)
        if self.backend == "cholmod" and self.blocks is None:
            self._setup_cholmod()

    blocks = None
    keep_pre = False
    last_pre = None
    _A_dense = None

    def dense_A(self):
        """A = Z_R'Z_0 as a dense (m, L0, q0) array (formed once, for the gradient)."""
        if self._A_dense is None:
            self._A_dense = self.A.toarray().reshape(self.m, self.L0, self.q0)
        return self._A_dense

    # ------------------------------------------------------------------ per θ
    def lam_dense(self, T, M, transpose: bool = False):
        """Λ_R M (``transpose``: Λ_R' M) for a dense M with the rest block's m rows."""
        out = np.empty_like(M)
        for k in range(len(self.qs) - 1):
            a, b = self.offsets[k], self.offsets[k + 1]
            q, L = self.qs[k + 1], self.n_levels[k + 1]
            Tk = T[k + 1]
            if q == 1:
                np.multiply(M[a:b], Tk[0, 0], out=out[a:b])
            else:      # (Λ'M)[l, i] = Σ_j T[j, i] M[l, j]: one batched matmul over the L levels
                # (2-7x faster than q(q+1)/2 strided passes, from m = 90 to m = 2,000)
                Mv = M[a:b].reshape(L, q, -1)
                np.matmul(Tk.T if transpose else Tk, Mv, out=out[a:b].reshape(L, q, -1))
        return out

    def _lam_t_dense(self, T, M):
        """Λ_R' M for a dense M with the rest block's m rows."""
        return self.lam_dense(T, M, transpose=True)

    def fold_lam(self, T, Bm):
        """B ← B Λ_R in place, for a dense B (rows, m) (C order)."""
        rows = Bm.shape[0]
        for k in range(len(self.qs) - 1):
            a, b = self.offsets[k], self.offsets[k + 1]
            Tk = T[k + 1]
            q = Tk.shape[0]
            if q == 1:
                Bm[:, a:b] *= Tk[0, 0]
                continue
            V = Bm[:, a:b].reshape(rows, -1, q)         # (rows, L_k, q) view
            V[...] = V @ Tk                             # (B Λ)[:, l, i] = Σ_j B[:, l, j] T[j, i]
        return Bm

    def dense_At(self):
        """A' = Z_0'Z_R as a dense (L0, q0, m) C-ordered array (kept by the BLAS-3 path)."""
        if getattr(self, "_At", None) is None:
            self._At = np.ascontiguousarray(self.dense_A().transpose(1, 2, 0))
        return self._At

    def schur_values(self, T, L0s):
        """Entries of A_RR on the pattern (group order), and the per-level N_j = T0 L0_j⁻ᵀ."""
        q0 = self.q0
        T0 = T[0]
        if q0 == 1:
            N = (T0[0, 0] / L0s[0, 0])                  # (L0,)
        else:
            # N_j = T0 L0_j^{-T}: solve L0_j X = T0' then transpose
            rhs = np.ascontiguousarray(np.broadcast_to(T0.T[:, :, None], L0s.shape))
            X = B.solve_lower_soa(L0s, rhs)                    # L0^{-1} T0'  (q, q, G)
            N = X.transpose(2, 1, 0)                           # (G, q, q): T0 L0^{-T}
        if self.backend == "blas":
            return self._schur_blas(T, N), N
        if getattr(self, "_product", None) is not None:
            return self._schur_product(T, N), N
        if q0 == 1:
            vecM = N * N
        else:
            vecM = np.einsum("gik,gjk->gij", N, N)[:, self._triu[0], self._triu[1]].ravel()
        x = self.zz - self.K @ vecM if self.K is not None else self.zz.copy()
        X = x.reshape(self.m, self.m) if self.groups is None else None
        if self._Ad is not None:                 # heavy levels: one rank-k update
            jh = self._heavy
            Ad = self._Ad
            if q0 == 1:
                AN = Ad[:, 0, :] * N[jh]
            else:
                # AN_j = A_j N_j, as (heavy level j, v, row) = Σ_u N_j[u, v] A_j[row, u]: one
                # batched matmul over the heavy levels (A kept as (j, u, row), formed once)
                if getattr(self, "_Ad_t", None) is None or self._Ad_t.shape[0] != Ad.shape[2]:
                    self._Ad_t = np.ascontiguousarray(Ad.transpose(2, 1, 0))
                ANt = np.matmul(N[jh].transpose(0, 2, 1), self._Ad_t).reshape(-1, self.m)
            if q0 == 1:
                # X −= AN AN' on the lower triangle = the upper triangle of X' (Fortran order)
                X = dsyrk(-1.0, AN.T, beta=1.0, c=X.T, trans=1, lower=0, overwrite_c=1).T
            else:      # the same with AN' = ANt given as rows (a C array of AN' is AN in F order)
                X = dsyrk(-1.0, ANt.T, beta=1.0, c=X.T, trans=0, lower=0, overwrite_c=1).T
        if self.groups is None:                  # dense: X the m × m block, lower triangle valid
            sym = None
            if self.keep_pre:                    # for the gradient: X before the Λ_R sandwich
                sym = self.last_pre = np.tril(X) + np.tril(X, -1).T
            if all(q == 1 for q in self.qs[1:]):
                s = np.concatenate([np.full(L, Tk[0, 0]) for L, Tk in zip(self.n_levels[1:], T[1:])])
                X *= s[:, None]
                X *= s[None, :]
            else:
                if sym is None:                  # diagonal blocks whole from the lower triangle
                    sym = np.tril(X) + np.tril(X, -1).T
                X = self._lam_t_dense(T, self._lam_t_dense(T, sym).T).T
            X[np.arange(self.m), np.arange(self.m)] += 1.0
            return X, N
        for kh, kl, a, b, n in self.groups:
            Th, Tl = T[kh + 1], T[kl + 1]
            if Th.shape[0] == 1 and Tl.shape[0] == 1:
                x[a:b] *= Th[0, 0] * Tl[0, 0]
            else:
                blk = x[a:b].reshape(n, Th.shape[0], Tl.shape[0])
                x[a:b] = np.einsum("ji,njk,kl->nil", Th, blk, Tl).ravel()
        x[self.diag_idx] += 1.0
        return x, N

    def factor(self, T, L0s) -> tuple:
        """(RestCholesky, N) at θ: raises LinAlgError when A_RR is not positive definite."""
        x, N = self.schur_values(T, L0s)
        m = self.m
        if self.backend == "blas":            # x: lower-valid Fortran array, factorised in place
            Lr = sla.cholesky(x, lower=True, check_finite=False, overwrite_a=True)
            return RestCholesky(m, 2.0 * float(np.log(np.diag(Lr)).sum()), dense=Lr), N
        if self.backend == "dense":
            # x is lower-valid and C-ordered: its transpose is an upper-valid Fortran array,
            # which LAPACK factors in place as U'U (L = U')
            Lr = sla.cholesky(x.T, lower=False, check_finite=False, overwrite_a=True).T
            return RestCholesky(m, 2.0 * float(np.log(np.diag(Lr)).sum()), dense=Lr), N
        if self.blocks is not None:
            return self.blocks.factor(x[self.sel]), N
        import cvxopt.cholmod as cm

        vals = x[self.sel]
        Ac = self._vals.set(vals)
        F = self._symbolic
        self._gen += 1
        try:
            cm.numeric(Ac, F)
        except ArithmeticError as e:
            raise np.linalg.LinAlgError(f"rest block not positive definite ({e})") from None
        d = np.array(cm.diag(F)).ravel()
        if not np.all(d > 0):
            raise np.linalg.LinAlgError("rest block not positive definite")
        return RestCholesky(m, 2.0 * float(np.log(d).sum()), chol=F, structure=self, values=vals), N

    def off_diagonal(self, T, N):
        """L_R0 = Λ_R' A (⊕_j N_j), sparse m × L0 q0 (for readers of the factor, not per θ)."""
        A = self.A
        q0 = self.q0
        if q0 == 1:
            right = sp.diags(np.asarray(N).ravel())
        else:
            G = N.shape[0]
            right = sp.bsr_matrix((np.ascontiguousarray(N), np.arange(G), np.arange(G + 1)),
                                  shape=(G * q0, G * q0))
        AN = (A @ right).tocsr()
        if all(q == 1 for q in self.qs[1:]):
            s = np.concatenate([np.full(L, Tk[0, 0]) for L, Tk in zip(self.n_levels[1:], T[1:])])
            return sp.csr_matrix(sp.diags(s) @ AN)
        LamR = sp.block_diag([sp.kron(sp.identity(L), sp.csr_matrix(Tk))
                              for L, Tk in zip(self.n_levels[1:], T[1:])], format="csr")
        return sp.csr_matrix(LamR.T @ AN)

    def rhs(self, T, N, C0s):
        """B_R = Λ_R'(Z_R'W − A V), V_j = N_j C0_j: the rest rows of L⁻¹Λ'Z'W before L_R⁻¹."""
        q0 = self.q0
        if q0 == 1:
            V = N[:, None] * C0s[0].T                            # (L0, r)
        else:
            V = np.einsum("guv,vrg->gur", N, C0s).reshape(-1, self.r)
        return self._lam_t_dense(T, self.ZRtW - self.A @ V)
