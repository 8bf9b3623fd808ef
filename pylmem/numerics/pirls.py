"""Penalized iteratively reweighted least squares and the GLMM likelihood (Laplace, AGQ).

For a generalized linear mixed model  g(μ) = η = o + Xβ + ZΛ_θ u,  u ~ N(0, I), the
conditional modes û(θ, β) minimise the penalized deviance

    pdev(u) = −2 Σ_i log p(y_i | μ_i(u)) + ‖u‖²,

found by Fisher scoring (PIRLS, as lme4 and MixedModels.jl): with working weights
w_i = m_i μ'(η_i)² / V(μ_i) and the working residual (y_i − μ_i)/μ'(η_i), each step solves

    (Λ'Z'WZΛ + I) u_new = Λ'Z'W (ZΛu + (y − μ)/μ'),

halving the step while pdev does not decrease, until the Newton decrement δ'Aδ is below
a tight tolerance (1e-10: lme4's default stops earlier and loses up to 1e-3 of logLik).
``fit_beta=True`` (lme4's nAGQ = 0) solves for β in the same steps (the system bordered
by X).  The Laplace approximation of the deviance is

    −2 ℓ(θ, β) ≈ pdev(û) + log |Λ'Z'WZΛ + I|     (W at û),

and adaptive Gauss–Hermite quadrature (one term, q ≤ 3) integrates each level's factor
exactly on a product rule centred at û_j and scaled by its Cholesky factor L_j.  Every
constant of log p(y | μ) is kept, so that Laplace and AGQ log-likelihoods compare.

Structure is done once per model (:class:`PirlsProblem`): the rows are sorted by the first
term's levels; one term is a stack of per-level q × q blocks (segment sums, batched
factors); several terms form one sparse system whose pattern, the map from each row's
pairs of columns to the entries of Λ'Z'WZΛ, and CHOLMOD's symbolic factorization (AMD
ordering) are computed once; each iteration is a ``bincount`` and a numeric factorization.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special as special

from ..model.covariance import theta_diagonal_mask, tril_colmajor
from . import batched as B

PIRLS_TOL = 1e-14      # Newton decrement δ'Aδ at which PIRLS stops
PIRLS_MAXIT = 100
MAX_HALVINGS = 30
DENSE_REST_M = 1500            # the rest block is dense (LAPACK) up to this size ...
DENSE_REST_ENTRIES = 5_000_000  # ... and while B (m × the first term's columns) stays small
SPARSE_B_MIN_M = 400           # a sparse B: the dense rest pays from this size on
PAIR_MAX = 20_000_000          # pairs of B's entries kept for B̃B̃' (else a sparse product)


@dataclass
class PirlsResult:
    """The conditional modes at (θ, β) and the pieces of the likelihood there."""

    u: np.ndarray            # spherical modes, (Q,) (term-major, level-major within a term)
    beta: np.ndarray
    eta: np.ndarray          # linear predictor (model order)
    mu: np.ndarray
    loglik_cond: float       # Σ log p(y | μ̂)
    logdet: float            # log |Λ'Z'WZΛ + I| at û
    n_iter: int
    converged: bool
    factor: object = None    # the factorization at û (one term: (L, q, q) Cholesky factors)
    RX: np.ndarray = None    # nAGQ = 0: Cholesky factor of the Schur complement for β

    @property
    def pdev(self) -> float:
        return -2.0 * self.loglik_cond + float(self.u @ self.u)

    @property
    def laplace(self) -> float:
        """The Laplace approximation of −2 log L."""
        return self.pdev + self.logdet


class _SingleTerm:
    """One random-effects term: per-level q × q blocks on rows sorted by level."""

    def __init__(self, codes, L, q):
        self.L, self.q = L, q
        self.codes = codes
        self.starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        if len(self.starts) != L:
            raise ValueError("every level of the grouping factor must have rows")

    def segsum(self, M):
        return np.add.reduceat(M, self.starts, axis=0)

    def times_u(self, ZL, u):
        """ZΛu per row."""
        U = u.reshape(self.L, self.q)
        return np.einsum("nq,nq->n", ZL, U[self.codes]) if self.q > 1 else ZL[:, 0] * U[self.codes, 0]

    def factorize(self, ZL, w):
        n, q = ZL.shape
        if q == 1:
            A = 1.0 + self.segsum(w * ZL[:, 0] ** 2)
            return np.sqrt(A)[:, None, None]
        WZ = ZL * w[:, None]
        A = self.segsum((WZ[:, :, None] * ZL[:, None, :]).reshape(n, q * q)).reshape(self.L, q, q)
        A[:, np.arange(q), np.arange(q)] += 1.0
        Ls = B.cholesky_soa(np.ascontiguousarray(A.transpose(1, 2, 0)))
        return np.ascontiguousarray(Ls.transpose(2, 0, 1))

    @staticmethod
    def logdet(F):
        return 2.0 * float(np.log(np.diagonal(F, axis1=1, axis2=2)).sum())

    def crossprod(self, ZL, v):
        """Λ'Z'v (per level), v (n,) or (n, k) -> (Q,) or (Q, k)."""
        if v.ndim == 1:
            return self.segsum(ZL * v[:, None]).ravel()
        n, q = ZL.shape
        k = v.shape[1]
        return self.segsum((ZL[:, :, None] * v[:, None, :]).reshape(n, q * k)).reshape(self.L * q, k)

    def solve(self, F, b):
        """A⁻¹ b, b (Q,) or (Q, k)."""
        q = self.q
        vec = b.ndim == 1
        Bm = b.reshape(self.L, q, -1)
        if q == 1:
            X = Bm / (F ** 2)
        else:
            X = B.solve_lower_t(F, B.solve_lower(F, Bm))
        return X.reshape(-1) if vec else X.reshape(self.L * q, -1)


class _MultiTerm:
    """Several terms: one sparse symmetric system, CHOLMOD with a fixed symbolic factor."""

    def __init__(self, terms, Q):
        import cvxopt
        import cvxopt.cholmod as cm

        from .rest_block import _CholmodValues

        n = len(terms[0].codes)
        offs = np.cumsum([0] + [t.n_levels * t.q for t in terms])
        cols = np.concatenate([offs[k] + t.codes[:, None] * t.q + np.arange(t.q)[None, :]
                               for k, t in enumerate(terms)], axis=1)       # (n, s)
        self.cols = cols
        self.Q = Q
        s = cols.shape[1]
        a, b = np.tril_indices(s)
        ra, cb = cols[:, a], cols[:, b]
        hi, lo = np.maximum(ra, cb), np.minimum(ra, cb)
        key = (lo.astype(np.int64) * Q + hi).ravel()
        ukey, slot = np.unique(key, return_inverse=True)
        self.slot = slot.reshape(n, len(a))
        self.pa, self.pb = a, b
        self.nnz = len(ukey)
        rows, cj = (ukey % Q), (ukey // Q)
        self.diag_slots = np.searchsorted(ukey, np.arange(Q, dtype=np.int64) * Q + np.arange(Q))
        self._vals = _CholmodValues(rows, cj, Q)
        cm.options["supernodal"] = 2
        self._cm, self._cvx = cm, cvxopt
        init = np.zeros(self.nnz)
        init[self.diag_slots] = 1.0
        self._symbolic = cm.symbolic(self._vals.set(init), uplo="L")

    def times_u(self, ZL, u):
        return np.einsum("ns,ns->n", ZL, u[self.cols])

    def factorize(self, ZL, w):
        prod = (w[:, None] * ZL[:, self.pa] * ZL[:, self.pb]).ravel()
        vals = np.bincount(self.slot.ravel(), weights=prod, minlength=self.nnz)
        vals[self.diag_slots] += 1.0
        A = self._vals.set(vals)
        F = self._symbolic
        try:
            self._cm.numeric(A, F)
        except ArithmeticError as e:
            raise np.linalg.LinAlgError(f"PIRLS system not positive definite ({e})") from None
        return _CholmodFactor(F, np.array(self._cm.diag(F)).ravel(), self._cm, self._cvx)

    @staticmethod
    def logdet(F):
        return F.logdet

    def crossprod(self, ZL, v):
        if v.ndim == 1:
            return np.bincount(self.cols.ravel(), weights=(ZL * v[:, None]).ravel(), minlength=self.Q)
        out = np.empty((self.Q, v.shape[1]))
        for j in range(v.shape[1]):
            out[:, j] = np.bincount(self.cols.ravel(), weights=(ZL * v[:, j:j + 1]).ravel(),
                                    minlength=self.Q)
        return out

    def solve(self, F, b):
        return F.solve(b)


class _TwoLevel:
    """Several terms, the first eliminated level by level and the rest dense (lme4's and
    MixedModels.jl's blocking): A = [[D, B'], [B, C]], D block diagonal (the first term's
    q0 × q0 blocks), the Schur complement S = C − B D⁻¹ B' (m × m) factored by LAPACK.
    Chosen when the rest is small (m ≤ :data:`DENSE_REST_M`).  ``sparse_b``: B kept as a
    sparse matrix of fixed pattern (a first term of scalar blocks whose levels meet few
    levels of the rest, as students and lecturers), B D⁻¹ B' one sparse product per step."""

    def __init__(self, terms, Q, sparse_b: bool = False):
        t0 = terms[0]
        self.sparse_b = bool(sparse_b) and t0.q == 1
        self.q0, self.L0 = t0.q, t0.n_levels
        self.first = _SingleTerm(np.asarray(t0.codes), t0.n_levels, t0.q)
        self.N0 = self.L0 * self.q0
        offs = np.cumsum([0] + [t.n_levels * t.q for t in terms[1:]])
        self.m = int(offs[-1])
        self.Q = Q
        cr = np.concatenate([offs[k] + t.codes[:, None] * t.q + np.arange(t.q)[None, :]
                             for k, t in enumerate(terms[1:])], axis=1)        # (n, s_r)
        c0 = np.asarray(t0.codes)[:, None] * self.q0 + np.arange(self.q0)[None, :]
        self.cr, self.c0 = cr, c0
        sr = cr.shape[1]
        a, b = np.meshgrid(np.arange(sr), np.arange(self.q0), indexing="ij")
        self.ba, self.bb = a.ravel(), b.ravel()
        self.bslot = (cr[:, self.ba] * self.N0 + c0[:, self.bb]).ravel()
        if self.sparse_b:
            import scipy.sparse as sp

            ukey, self.bslot = np.unique(self.bslot, return_inverse=True)
            self._B = sp.csr_matrix((np.zeros(len(ukey)), (ukey // self.N0, ukey % self.N0)),
                                    shape=(self.m, self.N0))
            self._B.sort_indices()
            # CSR data order equals ukey's order (row-major, sorted): slots index the data
            self._bcol = ukey % self.N0
            self._nb = len(ukey)
            # B̃B̃' = Σ_j b̃_j b̃_j' over the first term's levels j: the pairs of B's entries in
            # one column, each to its entry of the (lower) m × m result, found once; per step
            # one product per pair and a bincount (6x faster than a sparse product on InstEval)
            self._pairs = None
            brow = ukey // self.N0
            perm = np.argsort(self._bcol, kind="stable")              # entries by column
            cols = self._bcol[perm]
            starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
            counts = np.diff(np.r_[starts, len(cols)])
            if int((counts * (counts + 1) // 2).sum()) <= PAIR_MAX:
                from .rest_block import _segment_pairs

                e, f = _segment_pairs(starts, counts)
                ia, ib = perm[e], perm[f]
                hi = np.maximum(brow[ia], brow[ib])
                lo = np.minimum(brow[ia], brow[ib])
                self._pairs = (ia, ib, hi * self.m + lo)
        ra, rb = np.tril_indices(sr)
        self.ra, self.rb = ra, rb
        hi, lo = np.maximum(cr[:, ra], cr[:, rb]), np.minimum(cr[:, ra], cr[:, rb])
        ckey, self.cslot = np.unique((hi * self.m + lo).ravel(), return_inverse=True)
        self._crow, self._ccol = ckey // self.m, ckey % self.m     # the pattern of C (lower)
        self._nc = len(ckey)
        self.ns = sr + self.q0

    def times_u(self, ZL, u):
        q0 = self.q0
        out = self.first.times_u(ZL[:, :q0], u[:self.N0])
        return out + np.einsum("ns,ns->n", ZL[:, q0:], u[self.N0:][self.cr])

    def factorize(self, ZL, w):
        from scipy.linalg import cholesky
        from scipy.linalg.blas import dsyrk

        q0 = self.q0
        Z0, ZR = ZL[:, :q0], ZL[:, q0:]
        L0 = self.first.factorize(Z0, w)                                  # (L0, q0, q0)
        wZ0 = Z0 * w[:, None]
        cv = np.bincount(self.cslot, weights=(w[:, None] * ZR[:, self.ra] * ZR[:, self.rb]).ravel(),
                         minlength=self._nc)
        Cv = np.zeros((self.m, self.m))
        Cv[self._crow, self._ccol] = cv
        Cv[np.diag_indices(self.m)] += 1.0
        if self.sparse_b:
            vals = np.bincount(self.bslot, weights=(ZR[:, self.ba] * wZ0[:, self.bb]).ravel(),
                               minlength=self._nb)
            Bt = self._B.copy()
            Bt.data = vals / L0[:, 0, 0][self._bcol]                      # B̃ = B L0⁻ᵀ
            if self._pairs is not None:
                ia, ib, slot = self._pairs
                Cv -= np.bincount(slot, weights=Bt.data[ia] * Bt.data[ib],
                                  minlength=self.m * self.m).reshape(self.m, self.m)
            else:
                Cv -= np.tril((Bt @ Bt.T).toarray())
            try:
                LS = cholesky(Cv, lower=True, check_finite=False, overwrite_a=True)
            except np.linalg.LinAlgError as e:
                raise np.linalg.LinAlgError(f"PIRLS system not positive definite ({e})") from None
            return (L0, Bt, np.tril(LS))
        Bv = np.bincount(self.bslot, weights=(ZR[:, self.ba] * wZ0[:, self.bb]).ravel(),
                         minlength=self.m * self.N0).reshape(self.m, self.N0)
        # B̃ = B L0⁻ᵀ per level block
        if q0 == 1:
            Bt = Bv / L0[:, 0, 0][None, :]
        else:
            Bt = B.solve_lower(L0, Bv.reshape(self.m, self.L0, q0).transpose(1, 2, 0)) \
                .transpose(2, 0, 1).reshape(self.m, self.N0)
        S = dsyrk(-1.0, Bt, beta=1.0, c=np.asfortranarray(Cv), lower=1)   # C − B̃B̃' (lower)
        try:
            LS = cholesky(S, lower=True, check_finite=False, overwrite_a=True)
        except np.linalg.LinAlgError as e:
            raise np.linalg.LinAlgError(f"PIRLS system not positive definite ({e})") from None
        return (L0, Bt, np.tril(LS))

    def logdet(self, F):
        L0, _, LS = F
        return _SingleTerm.logdet(L0) + 2.0 * float(np.log(np.diag(LS)).sum())

    def crossprod(self, ZL, v):
        q0 = self.q0
        top = self.first.crossprod(ZL[:, :q0], v)
        ZR = ZL[:, q0:]
        if v.ndim == 1:
            bot = np.bincount(self.cr.ravel(), weights=(ZR * v[:, None]).ravel(), minlength=self.m)
            return np.r_[top, bot]
        bot = np.empty((self.m, v.shape[1]))
        for j in range(v.shape[1]):
            bot[:, j] = np.bincount(self.cr.ravel(), weights=(ZR * v[:, j:j + 1]).ravel(),
                                    minlength=self.m)
        return np.vstack([top, bot])

    def solve(self, F, b):
        from scipy.linalg import solve_triangular

        L0, Bt, LS = F
        q0 = self.q0
        vec = b.ndim == 1
        b = b.reshape(self.Q, -1)
        b0, br = b[:self.N0], b[self.N0:]
        if q0 == 1:
            y0 = b0 / L0[:, 0, :]
        else:
            y0 = B.solve_lower(L0, b0.reshape(self.L0, q0, -1)).reshape(self.N0, -1)
        yr = solve_triangular(LS, br - Bt @ y0, lower=True, check_finite=False)
        xr = solve_triangular(LS, yr, lower=True, trans="T", check_finite=False)
        r0 = y0 - Bt.T @ xr
        if q0 == 1:
            x0 = r0 / L0[:, 0, :]
        else:
            x0 = B.solve_lower_t(L0, r0.reshape(self.L0, q0, -1)).reshape(self.N0, -1)
        out = np.vstack([x0, xr])
        return out.ravel() if vec else out


class _CholmodFactor:
    def __init__(self, F, diag, cm, cvx):
        self.F, self.cm, self.cvx = F, cm, cvx
        if not np.all(diag > 0):
            raise np.linalg.LinAlgError("PIRLS system not positive definite")
        self.logdet = 2.0 * float(np.log(diag).sum())

    def solve(self, b):
        b = np.asarray(b, float)
        vec = b.ndim == 1
        X = self.cvx.matrix(np.asfortranarray(b.reshape(len(b), -1)))
        self.cm.solve(self.F, X, sys=0)
        out = np.array(X)
        return out.ravel() if vec else out


class PirlsProblem:
    """The structural part of a GLMM, once per model (see the module docstring).

    Parameters
    ----------
    y, wt, offset : ndarray
        Response (the proportion for a binomial), prior weights (trials) and offset, in
        model order.
    X : ndarray
        Fixed-effects model matrix (n × p).
    terms : list
        Random-effects terms with ``Z`` (n × q), ``codes`` and ``n_levels``; rows sorted by
        the first term's codes.
    family : Family
        Response family with its link.
    """

    def __init__(self, y, wt, offset, X, terms, family, *, force_sparse: bool = False):
        self.y = np.asarray(y, float)
        self.n = len(self.y)
        self.wt = np.ones(self.n) if wt is None else np.asarray(wt, float)
        self.offset = np.zeros(self.n) if offset is None else np.asarray(offset, float)
        self.X = np.asarray(X, float)
        self.p = self.X.shape[1]
        self.terms = list(terms)
        self.family = family
        self.qs = [t.q for t in self.terms]
        self.Ls = [t.n_levels for t in self.terms]
        self.Q = int(sum(q * L for q, L in zip(self.qs, self.Ls)))
        self.n_theta = [q * (q + 1) // 2 for q in self.qs]
        self._toff = np.cumsum([0] + self.n_theta)
        self.lower = np.concatenate([np.where(theta_diagonal_mask(q), 0.0, -np.inf) for q in self.qs])
        self._tril = [tril_colmajor(q) for q in self.qs]
        self._loglik_fn = family.loglik_fn(self.y, self.wt)
        self.canonical = (family.name, family.link.name) in (("binomial", "logit"), ("poisson", "log"))
        self._tol_canonical = 1e-9
        if len(self.terms) == 1:
            t = self.terms[0]
            self.blocks = _SingleTerm(np.asarray(t.codes), t.n_levels, t.q)
        else:
            m = self.Q - self.terms[0].n_levels * self.terms[0].q
            nB = m * self.terms[0].n_levels * self.terms[0].q    # entries of the dense B
            nnzB = self.n * sum(t.q for t in self.terms[1:]) * self.terms[0].q
            # dense where B is (measured: grouseticks' sparse B, 1 % full, is 4x faster
            # by CHOLMOD; VerbAgg's full B 3x faster dense)
            dense = m <= DENSE_REST_M and nB <= DENSE_REST_ENTRIES and nB <= 8 * nnzB
            # a sparse B with a large rest: eliminating the first term and one dense Cholesky of
            # the rest beats CHOLMOD on the whole system (InstEval, m = 1142: 2x); a small rest
            # does not (grouseticks, m = 181: CHOLMOD 2x faster)
            sparse_b = SPARSE_B_MIN_M <= m <= DENSE_REST_M and not dense and self.terms[0].q == 1
            if force_sparse:
                self.blocks = _MultiTerm(self.terms, self.Q)
            elif dense or sparse_b:
                self.blocks = _TwoLevel(self.terms, self.Q, sparse_b=sparse_b)
            else:
                self.blocks = _MultiTerm(self.terms, self.Q)
        self.n_pirls = 0
        self.n_evals = 0

    @property
    def single(self) -> bool:
        return len(self.terms) == 1

    def split_theta(self, theta) -> list:
        """T_k of each term from θ (lower triangles, column-major)."""
        theta = np.asarray(theta, float)
        out = []
        for k, q in enumerate(self.qs):
            T = np.zeros((q, q))
            T[self._tril[k]] = theta[self._toff[k]:self._toff[k + 1]]
            out.append(T)
        return out

    def zlam(self, theta) -> np.ndarray:
        """Rows of ZΛ: (n, Σ q_k), term k's columns Z_k T_k."""
        if len(self.terms) == 1 and self.qs[0] == 1:
            return self.terms[0].Z * float(theta[0])
        Ts = self.split_theta(theta)
        return np.concatenate([t.Z @ T for t, T in zip(self.terms, Ts)], axis=1)

    # ------------------------------------------------------------------ PIRLS
    def _loglik(self, mu) -> float:
        return self._loglik_fn(mu)

    def pirls(self, theta, beta=None, u0=None, *, fit_beta=False, tol=PIRLS_TOL,
              maxit=PIRLS_MAXIT) -> PirlsResult:
        """Conditional modes at θ (and β, or β with them when ``fit_beta``)."""
        fam = self.family
        bl = self.blocks
        ZL = self.zlam(theta)
        beta = np.zeros(self.p) if beta is None else np.asarray(beta, float)
        u = np.zeros(self.Q) if u0 is None else np.array(u0, float)
        y, wt, off, X = self.y, self.wt, self.offset, self.X
        if fit_beta and u0 is None and not np.any(beta):
            # start from the GLM's working response, as R's glm.fit: η from μ_start
            eta = fam.linkfun(fam.start_mu(y, wt))
        else:
            eta = off + X @ beta + bl.times_u(ZL, u)
        mu = fam.linkinv(eta)
        ll = self._loglik(mu)
        pdev = -2.0 * ll + u @ u if not (fit_beta and u0 is None and not np.any(beta)) else np.inf
        converged = False
        it = 0
        self.n_evals += 1
        for it in range(1, maxit + 1):
            mueta = fam.mu_eta(eta)
            w = wt * mueta * mueta / fam.variance(mu)
            zr = (y - mu) / mueta
            F = bl.factorize(ZL, w)
            if fit_beta:
                r = eta - off + zr
                c = bl.crossprod(ZL, w * r)
                WX = X * w[:, None]
                Bm = bl.crossprod(ZL, WX)                      # Λ'Z'WX (Q, p)
                AiB = bl.solve(F, Bm)
                Aic = bl.solve(F, c)
                S = X.T @ WX - Bm.T @ AiB
                RX = np.linalg.cholesky(S)
                rhs = WX.T @ r - Bm.T @ Aic
                beta_new = np.linalg.solve(RX.T, np.linalg.solve(RX, rhs))
                u_new = Aic - AiB @ beta_new
                dbeta = beta_new - beta
            else:
                r = bl.times_u(ZL, u) + zr
                u_new = bl.solve(F, bl.crossprod(ZL, w * r))
                dbeta = None
            du = u_new - u
            # Newton decrement on (u, β): δ'Hδ with H the bordered matrix
            dz = bl.times_u(ZL, du) + (X @ dbeta if fit_beta else 0.0)
            dec = float(du @ du + (w * dz * dz).sum())
            step = 1.0
            for _ in range(MAX_HALVINGS):
                u_t = u + step * du
                b_t = beta + step * dbeta if fit_beta else beta
                eta_t = eta + step * dz if np.isfinite(pdev) else off + X @ b_t + bl.times_u(ZL, u_t)
                mu_t = fam.linkinv(eta_t)
                ll_t = self._loglik(mu_t)
                pdev_t = -2.0 * ll_t + u_t @ u_t
                if np.isfinite(pdev_t) and pdev_t <= pdev + 1e-12 * (1.0 + abs(pdev)):
                    break
                step *= 0.5
            else:
                break      # no decrease: at the mode to rounding
            u, eta, mu, ll, pdev = u_t, eta_t, mu_t, ll_t, pdev_t
            if fit_beta:
                beta = b_t
            # canonical links: PIRLS is Newton's method, the point after a step with
            # decrement δ is within ~δ² of the mode; otherwise (Fisher scoring) ~δ
            if dec * step < (self._tol_canonical if self.canonical else tol):
                converged = True
                break
        if not converged and it < maxit:
            converged = True      # no step improves pdev: the mode to working precision
        # the factor at the final mode (the Laplace approximation uses W at û)
        eta = off + X @ beta + bl.times_u(ZL, u)
        mu = fam.linkinv(eta)
        mueta = fam.mu_eta(eta)
        w = wt * mueta * mueta / fam.variance(mu)
        F = bl.factorize(ZL, w)
        RX = None
        if fit_beta:
            WX = X * w[:, None]
            Bm = bl.crossprod(ZL, WX)
            RX = np.linalg.cholesky(X.T @ WX - Bm.T @ bl.solve(F, Bm))
        self.n_pirls += it
        return PirlsResult(u=u, beta=beta, eta=eta, mu=mu, loglik_cond=self._loglik(mu),
                           logdet=bl.logdet(F), n_iter=it, converged=converged, factor=F, RX=RX)

    # ------------------------------------------------------------------ AGQ
    def agq_deviance(self, theta, res: PirlsResult, nagq: int) -> float:
        """−2 log L by adaptive Gauss–Hermite quadrature with ``nagq`` points per dimension
        (one term; the product rule over its q ≤ 3 dimensions)."""
        if not self.single:
            raise ValueError("adaptive Gauss-Hermite quadrature needs a single random-effects term")
        q, L = self.qs[0], self.Ls[0]
        bl = self.blocks
        x1, w1 = np.polynomial.hermite.hermgauss(nagq)
        grids = np.meshgrid(*([x1] * q), indexing="ij")
        xk = np.stack([g.ravel() for g in grids], axis=1)                 # (K, q)
        logw = sum(np.log(np.meshgrid(*([w1] * q), indexing="ij")[d].ravel()) for d in range(q))
        keep = logw > np.log(1e-300)
        xk, logw = xk[keep], logw[keep]
        Fl = res.factor                                                    # (L, q, q) lower
        if q == 1:
            D = (np.sqrt(2.0) / Fl[:, 0, 0])[:, None, None] * xk[None, :, :]   # (L, K, 1)
        else:
            LinvT = B.solve_lower_t(Fl, np.broadcast_to(np.eye(q), Fl.shape).copy())  # L⁻ᵀ
            D = np.sqrt(2.0) * np.einsum("gab,kb->gka", LinvT, xk)
        ZL = self.zlam(theta)
        U = res.u.reshape(L, q)
        K = len(xk)
        S = np.zeros((L, K))
        chunk = max(1, 4_000_000 // max(K, 1))
        codes = bl.codes
        for s0 in range(0, self.n, chunk):
            sl = slice(s0, s0 + chunk)
            c = codes[sl]
            deta = np.einsum("nq,nkq->nk", ZL[sl], D[c])
            mu = self.family.linkinv(res.eta[sl, None] + deta)
            lp = self.family.log_density(self.y[sl, None], mu, self.wt[sl, None])
            S += _group_add(c, L, lp)
        Uk = U[:, None, :] + D                                             # (L, K, q)
        g = S - 0.5 * (Uk ** 2).sum(axis=2) + logw[None, :] + (xk ** 2).sum(axis=1)[None, :]
        logdetL = np.log(np.diagonal(Fl, axis1=1, axis2=2)).sum(axis=1)
        logI = 0.5 * q * np.log(2.0) - logdetL + special.logsumexp(g, axis=1) - 0.5 * q * np.log(2 * np.pi)
        return -2.0 * float(logI.sum())


def _group_add(codes, L, M):
    """Σ of the rows of M per level, codes sorted (model order)."""
    out = np.zeros((L, M.shape[1]))
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    out[codes[starts]] = np.add.reduceat(M, starts, axis=0)
    return out
