"""The profiled deviance of a linear mixed model (Bates et al. 2015, lme4 §3).

Random effects b = Λ_θ u with u ~ N(0, σ² I) and Λ_θ block diagonal: I_{L_k} ⊗ T_k for
term k, T_k lower triangular (θ its lower triangle, column-major, diagonal ≥ 0), so
Ω_k = σ² T_k T_k'.  With W = [X y], the blocked Cholesky factor of

    [ Λ'Z'ZΛ + I   Λ'Z'W ]   =  F F',   F = [ L     0   ]
    [ W'ZΛ         W'W   ]                  [ C'   L_W  ]

gives everything: log|L|², the fixed-effects factor R_X (top p × p of L_W), the
profiled β̂ (R_X' β̂ = l, l the first p entries of the last row of L_W) and the
penalised residual sum of squares r² = (L_W)_{rr}².  Then

    ML:   d(θ) = log|L|² + n (1 + log(2π r²/n))
    REML: d(θ) = log|L|² + log|R_X|² + (n−p)(1 + log(2π r²/(n−p)))

L is blocked as MixedModels.jl does: the first (largest) term's block is block diagonal
(one q×q Cholesky per level, batched); the remaining terms meet in the Schur complement,
factorised as its structure allows (:mod:`pylmem.numerics.rest_block`: dense LAPACK or CHOLMOD,
symbolic work once per model).  One evaluation touches only the cross-products, never
the n rows.  The analytic gradient (:meth:`value_and_gradient`) covers one term, and
several terms with a small dense rest block (:mod:`pylmem.numerics.multi_gradient`).

Numerically stable coordinates (internal; θ, β, R_X and L_W stay the user's): W = [X y] and
the first term's Z are centred (:mod:`pylmem.numerics.centring`), so that y = 10⁶ + noise
loses no digits of r².
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dtrtrs

from ..model.covariance import theta_diagonal_mask, theta_from_lower
from . import batched as B
from .centring import Centring
from .crossprod import CrossProducts
from .multi_gradient import available, gradient, supported
from .rest_block import RestStructure

_LOG2PI = np.log(2 * np.pi)


def trsolve(L: np.ndarray, b: np.ndarray, trans: int = 0) -> np.ndarray:
    """Solve L x = b (trans=0) or L' x = b (trans=1), L lower triangular: LAPACK dtrtrs
    called directly, without scipy.linalg's per-call validation (small systems, hot path)."""
    x, info = dtrtrs(L, b, lower=1, trans=trans)
    if info != 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (dtrtrs info {info})")
    return x


@dataclass
class Factor:
    """The blocked Cholesky factor at one θ (see module docstring)."""

    theta: np.ndarray
    T: list               # T_k, q_k × q_k lower
    L0s: np.ndarray       # (q, q, L) diagonal blocks of the first term (structure of arrays)
    C0s: np.ndarray       # (q, r, L) = L0^{-1} Λ_0' Z_0'W per level
    LRR: object           # RestCholesky L_R of the rest block (None if one term)
    CR: np.ndarray        # (m, r)
    LW: np.ndarray        # (r, r) lower factor of the W block
    logdet_L: float       # log|L|²
    TtG0: np.ndarray = None  # (q, q, L) T̃0' Z̃_0'Z̃_0 per level, kept for the gradient
    C0s_w: np.ndarray = None  # C0s in the centred coordinates W̃ (internal, gradient)
    CR_w: np.ndarray = None   # CR in the centred coordinates W̃

    @property
    def LR0(self):
        """Sparse (m, L0 q0) rest-to-first block of L (None if one term), formed on demand."""
        return None if self.LRR is None else self.LRR.LR0

    @property
    def L0(self) -> np.ndarray:
        """(L, q, q) view of the first term's diagonal blocks."""
        return self.L0s.transpose(2, 0, 1)

    @property
    def C0(self) -> np.ndarray:
        """(L, q, r) view."""
        return self.C0s.transpose(2, 0, 1)

    @property
    def p(self) -> int:
        return self.LW.shape[0] - 1

    @property
    def RX(self) -> np.ndarray:
        return self.LW[:-1, :-1]

    @property
    def pwrss(self) -> float:
        return float(self.LW[-1, -1] ** 2)

    @property
    def logdet_RX(self) -> float:
        d = np.diag(self.RX)
        return 2.0 * float(np.log(d).sum()) if d.size else 0.0

    def beta(self) -> np.ndarray:
        if self.p == 0:
            return np.zeros(0)
        return trsolve(self.RX, self.LW[-1, :-1], trans=1)

    def spherical_modes(self, beta=None):
        """Conditional modes of u (spherical scale): first term (L, q), rest (m,)."""
        beta = self.beta() if beta is None else beta
        v = np.r_[-beta, 1.0]
        v0 = self.C0 @ v                           # (L, q)
        if self.LRR is None:
            uR = np.zeros(0)
            rhs0 = v0
        else:
            uR = self.LRR.solve_Lt(self.CR @ v)
            rhs0 = v0 - (self.LR0.T @ uR).reshape(v0.shape)
        u0 = B.solve_lower_t(self.L0, rhs0[:, :, None])[:, :, 0]
        return u0, uR


class ProfiledDeviance:
    """d(θ): the profiled ML deviance or REML criterion, from :class:`CrossProducts`."""

    def __init__(self, cp: CrossProducts, qs, n_levels, *, reml: bool):
        self.cp_data = cp
        self.centring = Centring(cp, qs)
        self.cp = cp = self.centring.cp   # W̃ coordinates from here on (see module docstring)
        self.qs = list(qs)
        self.n_levels = list(n_levels)
        self.reml = bool(reml)
        self.n = cp.n
        self.r = cp.WtW.shape[0]
        self.p = self.r - 1
        self.n_theta = [q * (q + 1) // 2 for q in self.qs]
        self._offsets = np.cumsum([0] + self.n_theta)
        lower = np.concatenate([np.where(theta_diagonal_mask(q), 0.0, -np.inf) for q in self.qs])
        self.lower = lower
        self.n_evals = 0
        self.log_weights = 0.0   # Σ log w_i of prior weights: subtracted from d(θ) (lme4)
        self._recent: dict = {}
        self._tril = []
        for q in self.qs:
            rows, cols = np.tril_indices(q)
            order = np.lexsort((rows, cols))  # lme4: lower triangle column by column
            self._tril.append((rows[order], cols[order]))
        G0, ZW0 = self.centring.first_term_products()
        self._sum_ZtZ0 = G0.sum(axis=0)
        self._G0 = np.ascontiguousarray(G0.transpose(1, 2, 0))   # (q, q, L)
        self._ZW0 = np.ascontiguousarray(ZW0.transpose(1, 2, 0))  # (q, r, L)
        self._GZW0 = None   # (q, q + r, L) = [G̃ | Z̃'W̃], one term: formed on first use
        self._work = None   # the one-term evaluation's work arrays (reused for every θ)
        self._setup_rest()

    @property
    def first_term_products(self):
        """Per level of the first term, Z̃'Z̃ (L, q, q) and Z̃'W̃ (L, q, r) in the deviance's
        coordinates: views of the stacks it keeps."""
        return self._G0.transpose(2, 0, 1), self._ZW0.transpose(2, 0, 1)

    # ---------------------------------------------------------------- set-up
    def _setup_rest(self):
        """Symbolic analysis of the terms after the first (see :mod:`pylmem.numerics.rest_block`)."""
        if len(self.qs) == 1:
            self.m = 0
            self.rest = None
            return
        self.rest = RestStructure(self.cp, self.qs, self.n_levels)
        self.m = self.rest.m
        self.rest_offsets = self.rest.offsets

    # ---------------------------------------------------------------- θ helpers
    def split_theta(self, theta) -> list:
        theta = np.asarray(theta, dtype=float)
        out = []
        for k, q in enumerate(self.qs):
            T = np.zeros((q, q))
            T[self._tril[k]] = theta[self._offsets[k]:self._offsets[k + 1]]
            out.append(T)
        return out

    def theta_to_centred(self, theta) -> np.ndarray:
        """θ (user's Z) -> θ̃ (centred Z̃ of the first term): see :class:`Centring`."""
        return self.centring.theta_to_centred(theta)

    def theta_from_centred(self, theta_c) -> np.ndarray:
        """θ̃ -> θ: see :class:`Centring`."""
        return self.centring.theta_from_centred(theta_c)

    def centred_scales(self) -> np.ndarray:
        """Scale of each θ̃ entry: the RMS of its row's column of Z̃ (1 if constant 0)."""
        out = []
        for k, q in enumerate(self.qs):
            G = self._sum_ZtZ0 if k == 0 else self.cp.terms[k].ZtZ.sum(axis=0)
            s = np.sqrt(np.maximum(np.diag(G), 0) / max(self.n, 1))
            s = np.where(s > 0, s, 1.0)
            out.append(s[self._tril[k][0]])
        return np.concatenate(out)

    def start_theta(self) -> np.ndarray:
        """lme4's start: each T_k the identity."""
        return np.concatenate([theta_from_lower(np.eye(q)) for q in self.qs])

    # ---------------------------------------------------------------- factor
    def factor(self, theta, *, centred: bool = False, _user_c: bool = True) -> Factor:
        """Blocked Cholesky factorisation at θ (raises LinAlgError when not PD).

        ``centred=True``: θ's first term is θ̃ (T̃0 for the centred Z̃0, see the module
        docstring); the factor's T[0] is then M_Z T̃0 (not triangular; Z0 T[0] = Z̃0 T̃0).
        ``_user_c=False`` (internal: objective, gradient) skips mapping C0s/CR back to W.
        """
        T = self.split_theta(theta)
        q0 = self.qs[0]
        if self.centring.MZinv is None:
            T0t = T[0]
        elif centred:
            T0t, T[0] = T[0], self.centring.MZ @ T[0]
        else:
            T0t = self.centring.MZinv @ T[0]                            # T̃0: Z̃0 T̃0 = Z0 T0
        TtG = B.left_mul_soa(T0t.T, self._G0)                   # T̃0' G̃ per level
        A00 = B.left_mul_soa(T0t.T, np.ascontiguousarray(TtG.transpose(1, 0, 2)))  # (T0'G T0)' = A00
        A00[np.arange(q0), np.arange(q0)] += 1.0
        L0s = B.cholesky_soa(A00)
        C0s = B.solve_lower_soa(L0s, B.left_mul_soa(T0t.T, self._ZW0))
        S = self.cp.WtW - sum(C0s[j] @ C0s[j].T for j in range(q0))   # W'W − Σ_levels C0'C0
        logdet = 2.0 * float(np.log(L0s[np.arange(q0), np.arange(q0)]).sum())
        LRR = CR = None
        if self.m:
            LRR, N = self.rest.factor(T, L0s)
            LRR.set_offdiag(self.rest, T, N)
            CR = LRR.solve_L(self.rest.rhs(T, N, C0s))
            S = S - CR.T @ CR
            logdet += LRR.logdet
        LW = np.linalg.cholesky(S)
        C0s_w, CR_w = C0s, CR
        if self.centring.icol is not None:   # back to the user's W: L_W = M_W^{-T} L̃_W, C = C̃ M_W⁻¹
            LW = LW + np.outer(self.centring.m, LW[self.centring.icol])
            if _user_c:
                C0s = self.centring.from_w_soa(C0s)
                CR = None if CR is None else self.centring.from_w(CR)
        return Factor(theta=np.asarray(theta, float), T=T, L0s=L0s, C0s=C0s, LRR=LRR, CR=CR,
                      LW=LW, logdet_L=logdet, TtG0=TtG, C0s_w=C0s_w, CR_w=CR_w)

    def objective_from(self, f: Factor) -> float:
        """The criterion from a factor."""
        n, p = self.n, self.p
        pw = f.pwrss
        if self.reml:
            nu = n - p
            return f.logdet_L + f.logdet_RX + nu * (1.0 + np.log(2 * np.pi * pw / nu)) \
                - self.log_weights
        return f.logdet_L + n * (1.0 + np.log(2 * np.pi * pw / n)) - self.log_weights

    def __call__(self, theta, *, centred: bool = False) -> float:
        key = np.asarray(theta, float).tobytes() + bytes([centred])
        if key in self._recent:
            return self._recent[key][0]
        self.n_evals += 1
        try:
            f = self.factor(theta, centred=centred, _user_c=False)
        except np.linalg.LinAlgError:
            return np.inf
        val = self.objective_from(f)
        return val if np.isfinite(val) else np.inf

    def _remember(self, theta, val, grad, centred=False):
        """Keep the last few (value, gradient) pairs: the optimiser's final point is
        evaluated again by the convergence check."""
        self._recent[np.asarray(theta, float).tobytes() + bytes([centred])] = (val, grad)
        while len(self._recent) > 4:
            self._recent.pop(next(iter(self._recent)))

    # ---------------------------------------------------------------- gradient
    @property
    def has_gradient(self) -> bool:
        """One term; or several with a small dense rest block (:mod:`pylmem.numerics.multi_gradient`)."""
        if len(self.qs) == 1:
            return True
        return available(self.rest)

    def value_and_gradient(self, theta, *, centred: bool = False):
        """d(θ) and ∂d/∂θ (several terms: :mod:`pylmem.numerics.multi_gradient`, user coordinates only).

        With D = T T' (relative covariance), V_i = I + Z_i D Z_i', K_i = Z_i'V_i^{-1}W_i:
        ∂d/∂D = Σ_i Z_i'V_i^{-1}Z_i − (ν/r²) Σ_i g_i g_i' [− Σ_i K_iX C K_iX' for REML],
        g_i = K_i [−β̂; 1], C = (X'V^{-1}X)^{-1}, ν = n (ML) or n − p (REML);
        then ∂d/∂T = 2 (∂d/∂D) T, read off on the lower triangle.
        """
        key = np.asarray(theta, float).tobytes() + bytes([centred])
        if key in self._recent and self._recent[key][1] is not None:
            val, grad = self._recent[key]
            return val, grad.copy()
        if len(self.qs) == 1:
            self.n_evals += 1
            try:
                val, grad = self._one_term_batch([theta], centred)
            except np.linalg.LinAlgError:
                return np.inf, np.zeros(len(theta))
            val, grad = float(val[0]), grad[0]
            self._remember(theta, val, grad.copy(), centred)
            return val, grad
        if not supported(self.rest):
            raise NotImplementedError(
                f"the analytic gradient for several terms needs a dense rest block of at most "
                f"500 rows (this one: {self.rest.backend}, m = {self.m})")
        self.n_evals += 1
        self.rest.keep_pre = True
        try:
            # several terms: the gradient is formed in the user's coordinates (C0, C_R for W)
            f = self.factor(theta, centred=centred, _user_c=True)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros(len(theta))
        finally:
            self.rest.keep_pre = False
        val = self.objective_from(f)
        grad = gradient(self, f, centred)
        self._remember(theta, val, grad.copy(), centred)
        return val, grad

    def _one_term_via_factor(self, theta, centred=False):
        """d and ∂d/∂θ of one term from :meth:`factor` (the reference form of
        :meth:`_one_term_batch`, kept for the tests): no caching, no evaluation count."""
        f = self.factor(theta, centred=centred, _user_c=False)
        val = self.objective_from(f)
        T0 = f.T[0]
        q = f.C0s.shape[0]
        H = B.solve_lower_soa(f.L0s, f.TtG0)                          # L^{-1} T' G, (q, q, L)
        K = self._ZW0 - np.einsum("jig,jrg->irg", H, f.C0s_w)        # Z̃'V^{-1}W̃, (q, r, L)
        K = self.centring.from_w_soa(K)                                        # Z̃'V^{-1}W
        M = self._sum_ZtZ0 - np.einsum("jig,jkg->ik", H, H)           # Σ Z'V^{-1}Z
        beta = f.beta()
        g = np.einsum("r,irg->ig", np.r_[-beta, 1.0], K)               # (q, L)
        nu = self.n - self.p if self.reml else self.n
        GD = M - (nu / f.pwrss) * (g @ g.T)
        if self.reml and self.p:
            RXinv = trsolve(f.RX, np.eye(self.p))
            KX = np.einsum("ba,iag->ibg", RXinv, K[:, :-1, :]).reshape(q, -1)
            GD = GD - KX @ KX.T
        if self.centring.MZinv is not None and centred:   # gradient in θ̃: ∂d/∂T̃ = 2 (∂d/∂D̃) T̃
            T0 = self.centring.MZinv @ T0
        elif self.centring.MZinv is not None:   # ∂d/∂D = M_Z^{-T} (∂d/∂D̃) M_Z⁻¹
            GD = self.centring.MZinv.T @ GD @ self.centring.MZinv
        GT = 2.0 * GD @ T0
        return val, GT[self._tril[0]]

    # ---------------------------------------------------------------- one term
    def _one_term_batch(self, thetas, centred):
        """(values (1,), gradients (1, n)) of the one-term deviance at ``thetas = [θ]``.

        T̃ the first term's factor in the centred Z̃: U = T̃'[G̃ | Z̃'W̃] per level (one GEMM),
        A = T̃'G̃T̃ + I, L = chol(A) and [H | C̃] = L⁻¹U (one batched solve for both:
        H = L⁻¹T̃'G̃ serves the gradient), S = W̃'W̃ − Σ C̃'C̃ = L̃_W L̃_W'.  The per-level
        blocks live in work arrays allocated once per model (layout (q, ·, 1, L)).
        For ML the gradient needs only g = K̃ṽ, ṽ = M_W⁻¹[−β̂; 1] (no q × r K per level).
        Raises LinAlgError when some A or S is not positive definite.
        """
        if self._GZW0 is None:
            self._GZW0 = np.ascontiguousarray(np.concatenate([self._G0, self._ZW0], axis=1))
        q, r, L = self._ZW0.shape
        if q == 1:
            return self._scalar_term(thetas)
        c = q + r
        cen = self.centring
        flat = self._GZW0.reshape(q, c * L)
        if len(thetas) != 1:
            raise ValueError("one θ at a time")
        w = self._work
        if w is None:   # buffers of the per-level blocks, allocated once per model
            w = self._work = {"U": np.empty((q, c * L)), "V": np.empty((q, q, L)),
                              "A": np.empty((q, q * L)), "L0": np.zeros((q, q, 1, L)),
                              "X": np.empty((q, c, 1, L))}
        k = 1
        T = self.split_theta(thetas[0])[0]
        Tt = cen.MZinv @ T if (cen.MZinv is not None and not centred) else T
        Ts = [T]
        np.matmul(Tt.T, flat, out=w["U"])                              # T̃'[G̃ | Z̃'W̃]
        w["V"][...] = w["U"].reshape(q, c, L)[:, :q].transpose(1, 0, 2)
        np.matmul(Tt.T, w["V"].reshape(q, q * L), out=w["A"])          # T̃'G̃T̃ (G̃ symmetric)
        A, U = w["A"].reshape(q, q, 1, L), w["U"].reshape(q, c, 1, L)
        for j in range(q):
            A[j, j] += 1.0
        L0 = B.cholesky_soa(A, out=w["L0"])
        X = B.solve_lower_soa(L0, U, out=w["X"])
        H, C = X[:, :q], X[:, q:]                                     # (q, q, 1, L), (q, r, 1, L)
        prod = L0[0, 0].copy()              # one log per level, not q (finite unless huge)
        for j in range(1, q):
            prod *= L0[j, j]
        if np.all(np.isfinite(prod)) and np.all(prod > 0):
            logdets = 2.0 * np.log(prod).sum(axis=1)
        else:
            logdets = 2.0 * np.log(L0[np.arange(q), np.arange(q)]).sum(axis=(0, 2))
        n, p = self.n, self.p
        nu = n - p if self.reml else n
        vals = np.empty(k)
        grads = np.empty((k, q * (q + 1) // 2))
        ZW0 = self._ZW0
        for t in range(k):
            Ct, Ht = C[:, :, t], H[:, :, t]
            S = self.cp.WtW - sum(Ct[j] @ Ct[j].T for j in range(q))
            LW = np.linalg.cholesky(S)
            if cen.icol is not None:
                LW = LW + np.outer(cen.m, LW[cen.icol])
            RX = LW[:-1, :-1]
            pw = float(LW[-1, -1] ** 2)
            dRX = 2.0 * float(np.log(np.diag(RX)).sum()) if p else 0.0
            if self.reml:
                val = logdets[t] + dRX + nu * (1.0 + np.log(2 * np.pi * pw / nu))
            else:
                val = logdets[t] + n * (1.0 + np.log(2 * np.pi * pw / n))
            vals[t] = val - self.log_weights
            beta = trsolve(RX, LW[-1, :-1], trans=1) if p else np.zeros(0)
            v = np.r_[-beta, 1.0]
            if cen.icol is not None:        # K_W v = K̃ M_W⁻¹ v
                v[cen.icol] += cen.m @ v
            Cv = np.einsum("jrg,r->jg", Ct, v)
            g = np.einsum("irg,r->ig", ZW0, v) - np.einsum("jig,jg->ig", Ht, Cv)   # (q, L)
            M = self._sum_ZtZ0 - sum(Ht[j] @ Ht[j].T for j in range(q))
            GD = M - (nu / pw) * (g @ g.T)
            if self.reml and p:
                K = ZW0 - np.einsum("jig,jrg->irg", Ht, Ct)
                K = cen.from_w_soa(K)
                RXinv = trsolve(RX, np.eye(p))
                KX = np.einsum("ba,iag->ibg", RXinv, K[:, :-1, :]).reshape(q, -1)
                GD = GD - KX @ KX.T
            if cen.MZinv is not None and not centred:   # ∂d/∂D = M_Z^{-T} (∂d/∂D̃) M_Z⁻¹
                GD = cen.MZinv.T @ GD @ cen.MZinv
            GT = 2.0 * GD @ Ts[t]
            grads[t] = GT[self._tril[0]]
        return vals, grads

    def _scalar_term(self, thetas):
        """:meth:`_one_term_batch` for a scalar term (q = 1, T = t): per level a = t²G + 1,
        log|L|² = Σ log a, W̃'W̃ − Σ C̃'C̃ = W̃'W̃ − Z̃'W̃' diag(t²/a) Z̃'W̃ (one GEMM), and the
        gradient's Σ Z'V⁻¹Z = Σ G/a, K̃ = Z̃'W̃/a per level."""
        G, ZW = self._G0[0, 0], self._ZW0[0]                # (L,), (r, L)
        cen = self.centring
        n, p = self.n, self.p
        nu = n - p if self.reml else n
        vals, grads = np.empty(len(thetas)), np.empty((len(thetas), 1))
        for i, th in enumerate(thetas):
            t = float(np.asarray(th, float).reshape(-1)[0])
            a = (t * t) * G + 1.0
            logdet = float(np.log(a).sum())
            Kt = ZW / a                                          # K̃ = Z̃'W̃ / a per level
            S = self.cp.WtW - (t * t) * (Kt @ ZW.T)
            LW = np.linalg.cholesky(S)
            if cen.icol is not None:
                LW = LW + np.outer(cen.m, LW[cen.icol])
            RX = LW[:-1, :-1]
            pw = float(LW[-1, -1] ** 2)
            if self.reml:
                dRX = 2.0 * float(np.log(np.diag(RX)).sum()) if p else 0.0
                val = logdet + dRX + nu * (1.0 + np.log(2 * np.pi * pw / nu))
            else:
                val = logdet + n * (1.0 + np.log(2 * np.pi * pw / n))
            vals[i] = val - self.log_weights
            beta = trsolve(RX, LW[-1, :-1], trans=1) if p else np.zeros(0)
            v = np.r_[-beta, 1.0]
            if cen.icol is not None:
                v[cen.icol] += cen.m @ v
            g = v @ Kt                                           # (L,)
            GD = float((G / a).sum()) - (nu / pw) * float(g @ g)
            if self.reml and p:
                KW = cen.from_w(Kt.T).T                          # K in W coordinates, (r, L)
                KX = trsolve(RX, np.eye(p)) @ KW[:-1]
                GD -= float(np.einsum("ag,ag->", KX, KX))
            grads[i, 0] = 2.0 * GD * t
        return vals, grads
