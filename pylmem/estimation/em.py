"""EM algorithm for a linear mixed-effects model with one grouping factor (the seed's
``em.lmem`` / ``em2.lmem``), vectorised over groups, with SQUAREM / ECME acceleration.

Model (Lavielle's notation)::

    y_i = X_i β + A_i η_i + e_i,   η_i ~ N(0, Ω),   e_i ~ N(0, σ² I_{n_i}),   i = 1..N

Implementation
--------------
The rows are touched once, to form per-group cross-products (segment sums with
``np.bincount`` in row order, so that within a group the summation order is the seed's)::

    A_i'A_i (q×q×N),  X_i'A_i (p×q×N),  A_i'r_i (q×N),   r = y − X β_ols

and the global X'X, X'r, r'r, X'y, y'r.  Every iteration then costs O(N q³ + N q p) with
batched linear algebra on (q, q, N) arrays (see ``_chol_soa``) and never touches the n
rows again: with δ = β − β_ols,
``A_i'z_i = A_i'r_i − A_i'X_i δ`` and ``‖y − Xβ‖² = r'r − 2δ'X'r + δ'X'Xδ`` (the OLS
reparametrisation avoids the cancellation of ``y'y − 2β'X'y + β'X'Xβ``).

The E-step never inverts Ω.  Writing Ω = L S L' (L its Cholesky factor and S = I when Ω is
positive definite; otherwise L = Q|Λ|^{1/2}, S = sign(Λ) from its eigen-decomposition, so a
singular Ω — a zero variance, a diagonal mask — is fine)::

    M_i  = S + L'A_i'A_i L / σ²                 (q×q, SPD when Ω ⪰ 0)
    Γ_i  = (A_i'A_i/σ² + Ω⁻¹)⁻¹ = L M_i⁻¹ L'
    μ_i  = Γ_i A_i'z_i / σ²
    log|A_iΩA_i' + σ²I| = n_i log σ² + log|S M_i|           (determinant lemma)
    z_i'(A_iΩA_i' + σ²I)⁻¹z_i = (z_i'z_i − z_i'A_i μ_i)/σ²   (Woodbury)

so the log-likelihood at the current parameters comes with every E-step for free, and the
sufficient statistics of the M-step are sums over groups:
``R = Σ Γ_i + μ_iμ_i' = L(ΣM_i⁻¹)L' + Σμ_iμ_i'``, ``T = Σ tr(S_i A_i'A_i)``,
``C = Σ μ_i'A_i'z_i``, ``X'u = Σ (A_i'X_i)'μ_i``, ``y'u = Σ (A_i'y_i)'μ_i``.

Seed fidelity
-------------
``em(..., simplified=False, tol=None)`` is ``em.lmem``: β₀ = OLS, Ω₀ = I, σ²₀ = 1, and in
each iteration the E-step at (β, Ω, σ²), then β, then σ² = (‖y − Xβ_new‖² − 2C + T)/n
where — exactly as in the seed's code — C = Σ μ_i'A_i'z_i uses the residual z of the
*previous* β, then Ω = R/N.  ``simplified=True`` is ``em2.lmem``: the same E-step and β,
then Ω = (R/N) ∘ mask and σ² = mean(y ∘ (y − Xβ_new − u)).  (A mask, default none, is
applied to Ω in both modes.)

Acceleration (chosen by measurement on the rat weight data, ML)
----------------------------------------------------------------
``accelerate`` selects the fixed-point map and whether SQUAREM extrapolates it:

* ``False`` — the seed's EM map (the seed-fidelity mode);
* ``"squarem"`` — SQUAREM (Varadhan & Roland 2008) on the seed's EM map;
* ``"ecme"`` — ECME (Liu & Rubin 1994): each update replaces the EM update of β by the
  GLS estimate at the current (Ω, σ²), i.e. the exact maximiser of the log-likelihood
  over β (from the same per-group quantities: σ²X'V⁻¹X = X'X − Σ(A_i'X_i)'Γ_i(A_i'X_i)/σ²),
  then makes the EM update of (Ω, σ²) given that β (the E-step moments at the new β
  share Γ_i).  Monotone like EM; same fixed points;
* ``True`` (= ``"squarem-ecme"``) — SQUAREM on the ECME map.  The default of
  :func:`fit_em`.

SQUAREM is scheme S3, α = ‖r‖/‖v‖ bounded to [1, step_max] (step_max starts at 1, ×4
each time it binds, ÷4 after a rejection), one stabilising map step after every
extrapolation, and a monotonicity safeguard: an extrapolated point whose log-likelihood
is below that of the cycle's start is dropped for the plain double step.  It works on
``(β, vech(chol Ω), log σ²)``, so every extrapolated point is a valid model (Ω = LL' ⪰ 0,
σ² > 0); each cycle costs three map evaluations.

EM updates (E+M steps, the ``n_iter`` budget) needed to reach the targets
(logLik ≥ −8691.3502 for ``weight ~ week + week2 + (week + week2 | id)``, ≥ −8480.7455
for ``weight ~ gender*week + gender*week2 + (week + week2 | id)``; the maxima are
−8691.350156 and −8480.745443), from ``benchmarks/bench_em.py`` (SQUAREM's count moves by
some 10% with rounding-level changes of the code, its step lengths being data-driven):

==============================  ==========  ============
method                          polynomial  gender model
==============================  ==========  ============
plain EM (seed)                 2007        272
SQUAREM on EM (chol Ω)          164         40
ECME                            15          16
SQUAREM on ECME (chol Ω)        **8**       **11**
==============================  ==========  ============

Also measured (a prototype, counting along the trace of accepted points): SQUAREM on EM with Ω's vech instead of
its Cholesky factor, 95 / 47 (but then extrapolated Ω can be indefinite); SQUAREM on
ECME with vech, 11 / 11; parameter-expanded EM (Liu, Rubin & Wu 1998, working parameter
α with η = αξ, joint regression on [X, ξ'⊗A]): no gain at all near the maximum (2007 /
272, identical to EM) and 242 / 38 under SQUAREM.  The slow mode of EM here is β, not
the scale of Ω: the random effects (1, week, week2) span the fixed effects, so the EM
update of β moves by the small fraction X'V⁻¹X·(X'X/σ²)⁻¹ of the way; ECME removes it.

Stopping (``tol``): the relative change of the log-likelihood between successive
iterates (SQUAREM: between successive accepted points) ``|ΔLL| ≤ tol·|LL|``.  With
``tol=1e-10`` (the default of :func:`fit_em`) SQUAREM-ECME stops after 15 / 17 updates at
the maximum (within 1e-8), ECME after 20 / 21 within 6e-7; but plain EM stops after
43 updates 4e-4 below the maximum on the polynomial model (its per-iteration gain is
tiny long before it gets there), and SQUAREM on EM after 42: do not use a tol with the
plain seed map to find the MLE.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..util.checks import check_count

__all__ = ["EMResult", "em", "fit_em"]

_LOG2PI = math.log(2.0 * math.pi)


@dataclass
class EMResult:
    """Result of :func:`em` / :func:`fit_em`.

    ``beta`` is a numpy array (``names`` holds the fixed-effect names when known);
    ``omega`` is the q×q covariance of the random effects (``re_names`` its names);
    ``loglik``, ``aic``, ``bic`` are those of the returned parameters; ``trace`` is the
    log-likelihood after each iteration (plain EM: after each EM update, ``trace[-1] ==
    loglik``; SQUAREM: at each accepted point); ``n_iter`` is the number of EM updates
    (E+M steps) performed; ``converged`` is True only when a ``tol`` was given and met.
    ``ranef`` (N×q) holds E(η_i | y) at the returned parameters, one row per group in the
    order of ``group_labels``.  ``method`` is "em", "ecme", "squarem" or "squarem-ecme";
    ``n_cycles`` counts the SQUAREM cycles, ``n_rejected`` the extrapolations its safeguard
    rejected.  ``n_params`` = p + q(q+1)/2 + 1, or with a
    mask p + (non-zero entries of its lower triangle) + 1.
    """

    beta: np.ndarray
    omega: np.ndarray
    sigma2: float
    loglik: float
    aic: float
    bic: float
    n_iter: int
    converged: bool
    trace: np.ndarray
    n_params: int
    names: list | None = None
    re_names: list | None = None
    n_obs: int = 0
    n_groups: int = 0
    ranef: np.ndarray | None = None
    group_labels: np.ndarray | None = None
    method: str = "em"
    simplified: bool = False
    n_cycles: int = 0
    n_rejected: int = 0

    @property
    def sigma(self) -> float:
        return math.sqrt(self.sigma2)

    @property
    def deviance(self) -> float:
        return -2.0 * self.loglik


# --------------------------------------------------------------------------- input


def _as_matrix(M, n_expected, what, allow_empty=False):
    names = None
    if isinstance(M, pd.DataFrame):
        names = [str(c) for c in M.columns]
        M = M.to_numpy(dtype=float)
    elif isinstance(M, pd.Series):
        names = [str(M.name)] if M.name is not None else None
        M = M.to_numpy(dtype=float)
    M = np.asarray(M, dtype=float)
    if M.ndim == 1:
        M = M[:, None]
    if M.ndim != 2:
        raise ValueError(f"{what} must be a 1-d or 2-d array, got {M.ndim} dimensions")
    if M.shape[0] != n_expected:
        raise ValueError(f"{what} has {M.shape[0]} rows but y has {n_expected} observations")
    if M.shape[1] == 0 and not allow_empty:
        raise ValueError(f"{what} has no columns")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{what} contains missing or non-finite values")
    return M, names


def _as_vector(y):
    if isinstance(y, (pd.DataFrame, pd.Series)):
        y = y.to_numpy(dtype=float)
    y = np.asarray(y, dtype=float)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be a vector (or a one-column matrix), got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("y is empty")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains missing or non-finite values")
    return y


def _check_mask(mask, q):
    if mask is None:
        return None
    C = np.asarray(mask, dtype=float)
    if C.shape != (q, q):
        raise ValueError(f"mask must be {q}×{q} (the number of random effects), got shape {C.shape}")
    if not np.allclose(C, C.T):
        raise ValueError("mask must be symmetric")
    if np.linalg.eigvalsh(C).min() < -1e-10:
        warnings.warn("the mask is not positive semi-definite (not a block-diagonal pattern): "
                      "Ω = (R/N)∘mask can become indefinite, and the log-likelihood is then "
                      "undefined (reported as -inf)", stacklevel=3)
    return C


# ------------------------------------------------ batched small matrices (q × q × G)
#
# Per-group q×q matrices are stored "structure of arrays": an array (q, q, G) whose
# entry [i, j] is the length-G vector of the (i, j) elements of all groups.  The batched
# Cholesky factorisation and inverse below loop over the q² entries (never over groups),
# each step an elementwise operation on contiguous length-G vectors; for the small q of
# a random-effects term this is several times faster than np.linalg's batched LAPACK
# calls (which pay a per-matrix overhead).


def _chol_soa(M):
    """Lower Cholesky factor of every M[:, :, g]; None when one is not positive definite."""
    q = M.shape[0]
    K = np.zeros_like(M)
    for j in range(q):
        d = M[j, j].copy()
        for k in range(j):
            d -= K[j, k] * K[j, k]
        if not np.all(d > 0):
            return None
        K[j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            v = M[i, j].copy()
            for k in range(j):
                v -= K[i, k] * K[j, k]
            K[i, j] = v / K[j, j]
    return K


def _spd_inv_soa(K):
    """M⁻¹ from the Cholesky factor K of M (both (q, q, G))."""
    q = K.shape[0]
    Ki = np.zeros_like(K)                       # K⁻¹, lower triangular
    for i in range(q):
        Ki[i, i] = 1.0 / K[i, i]
        for j in range(i):
            v = K[i, j] * Ki[j, j]
            for k in range(j + 1, i):
                v = v + K[i, k] * Ki[k, j]
            Ki[i, j] = -v * Ki[i, i]
    Mi = np.empty_like(K)                       # M⁻¹ = K⁻ᵀK⁻¹
    for i in range(q):
        for j in range(i + 1):
            v = Ki[i, i] * Ki[i, j]
            for k in range(i + 1, q):
                v = v + Ki[k, i] * Ki[k, j]
            Mi[i, j] = v
            if i != j:
                Mi[j, i] = v
    return Mi


def _matvec_soa(M, b):
    """(M_g b_g)_g for M (q, r, G) and b (r, G)."""
    q, r = M.shape[:2]
    out = np.empty((q, b.shape[1]))
    for i in range(q):
        v = M[i, 0] * b[0]
        for j in range(1, r):
            v += M[i, j] * b[j]
        out[i] = v
    return out


def _lin(L, v):
    """(L v_g)_g for a fixed q×r matrix L and v (r, G), skipping L's zeros."""
    q, r = L.shape
    out = np.zeros((q,) + v.shape[1:])
    for a in range(q):
        for j in range(r):
            if L[a, j] != 0.0:
                out[a] += L[a, j] * v[j]
    return out


def _congruence(L, S):
    """(L S_g L')_g for a fixed q×r L and symmetric S (r, r, G)."""
    q, r = L.shape
    T = np.empty((q, r) + S.shape[2:])
    for k in range(r):
        T[:, k] = _lin(L, S[:, k])                     # (L S)[:, k]
    out = np.empty((q, q) + S.shape[2:])
    for a in range(q):
        row = _lin(L[: a + 1], T[a])                    # (L S L')[a, b] = Σ_k L[b,k](LS)[a,k]
        for b in range(a + 1):
            out[a, b] = row[b]
            out[b, a] = row[b]
    return out


def _sdot(a, b):
    """Σ a∘b over all entries (np.einsum: no BLAS threads for these long thin products)."""
    return float(np.einsum("i,i->", a.reshape(-1), b.reshape(-1)))


# Small-by-long products (q×q by q×G) are done as elementwise loops and einsum rather
# than BLAS: a multi-threaded BLAS call on such shapes costs 10-50× more than the work on
# a loaded 2-core machine (measured: 14-31 ms against 0.7-1.3 ms for G = 100,000).


# ------------------------------------------------------------------- the problem


class _Problem:
    """Per-group cross-products and the vectorised E-step / M-steps."""

    def __init__(self, y, codes, G, X, A):
        n, p = X.shape
        q = A.shape[1]
        self.n, self.p, self.q, self.G = n, p, q, G
        counts = np.bincount(codes, minlength=G)
        if np.any(counts == 0):
            raise ValueError("internal: a group without observations")
        self.counts = counts

        XtX = X.T @ X
        try:
            self.XtX_chol = np.linalg.cholesky(XtX)
        except np.linalg.LinAlgError:
            raise ValueError("X'X is singular: the fixed-effects design X is rank deficient") from None
        if p and np.linalg.cond(XtX) > 1e15:
            raise ValueError("X'X is numerically singular: the fixed-effects design X is rank deficient")
        self.XtX = XtX
        # OLS by the normal equations (as the seed) with one step of iterative refinement
        beta0 = self.solve_XtX(X.T @ y)
        r = y - X @ beta0
        beta0 = beta0 + self.solve_XtX(X.T @ r)
        r = y - X @ beta0
        self.beta0 = beta0
        self.Xtr = X.T @ r
        self.Xty = X.T @ y
        self.rr = float(r @ r)
        self.ytr = float(y @ r)

        # per-group cross-products, summed in row order (bincount), no row sorting needed
        def seg(w):
            return np.bincount(codes, weights=w, minlength=G)

        AA = np.empty((q, q, G))
        for j in range(q):
            for k in range(j, q):
                AA[j, k] = seg(A[:, j] * A[:, k])
                if k != j:
                    AA[k, j] = AA[j, k]
        if A is X or (A.shape == X.shape and np.array_equal(A, X)):
            AX = AA.copy()                              # [k, j] = Σ X_k A_j
        else:
            AX = np.empty((p, q, G))
            for k in range(p):
                for j in range(q):
                    AX[k, j] = seg(X[:, k] * A[:, j])
        Ar = np.empty((q, G))
        for j in range(q):
            Ar[j] = seg(A[:, j] * r)
        self.AA, self.AX, self.Ar = AA, AX, Ar          # (q,q,G), (p,q,G), (q,G)
        self.Ay = Ar + self.AXA(beta0)

    @classmethod
    def from_statistics(cls, n, counts, WtW, ZtZ, ZtW):
        """The same per-group statistics from sums instead of rows: n, the rows per group,
        W'W (W = [X y]) and per group Z'Z (G, q, q) and Z'W (G, q, p + 1)."""
        p = WtW.shape[0] - 1
        prob = cls.__new__(cls)
        G, q = ZtZ.shape[0], ZtZ.shape[1]
        prob.n, prob.p, prob.q, prob.G = n, p, q, G
        prob.counts = counts
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

    # --- helpers -------------------------------------------------------------

    def AXA(self, delta):
        """(A_i'X_i δ)_i as (q, G)."""
        return np.einsum("k,kjg->jg", delta, self.AX)

    def Xtu(self, mu):
        """Σ_i (A_i'X_i)'μ_i for μ (q, G)."""
        return np.einsum("kjg,jg->k", self.AX, mu)

    def solve_XtX(self, b):
        Lx = self.XtX_chol
        return np.linalg.solve(Lx.T, np.linalg.solve(Lx, b))

    def zz(self, delta):
        return self.rr - 2.0 * float(delta @ self.Xtr) + float(delta @ self.XtX @ delta)

    @staticmethod
    def factor(Omega):
        """Ω = L diag(s) L' without inverting Ω (Cholesky, else eigen-decomposition)."""
        q = Omega.shape[0]
        try:
            L = np.linalg.cholesky(Omega)
            return L, np.ones(q), True
        except np.linalg.LinAlgError:
            lam, Q = np.linalg.eigh(0.5 * (Omega + Omega.T))
            thr = q * np.finfo(float).eps * max(np.max(np.abs(lam)), np.finfo(float).tiny)
            lam = np.where(np.abs(lam) <= thr, 0.0, lam)
            s = np.where(lam < 0, -1.0, 1.0)
            return Q * np.sqrt(np.abs(lam)), s, bool(np.all(s > 0))

    # --- E-step --------------------------------------------------------------

    def estep(self, delta, Omega, sigma2):
        """Conditional moments at (β0 + δ, Ω, σ²) and the log-likelihood there."""
        q = self.q
        Az = self.Ar - self.AXA(delta)                   # (q, G): A_i'z_i
        zz = self.zz(delta)
        L, s, psd = self.factor(Omega)
        W = _congruence(L.T, self.AA) / sigma2           # L'A_i'A_i L / σ²
        M = W.copy()
        for j in range(q):
            M[j, j] += s[j]
        K = _chol_soa(M) if psd else None
        if K is not None:
            logdet = 2.0 * float(np.log(np.diagonal(K)).sum())
            Minv = _spd_inv_soa(K)
        else:                                            # indefinite Ω (a mask) or trouble
            Mb = np.ascontiguousarray(M.transpose(2, 0, 1))
            sign, ld = np.linalg.slogdet(Mb)
            logdet = np.inf if np.any(sign * np.prod(s) <= 0) else float(ld.sum())
            Minv = np.linalg.inv(Mb).transpose(1, 2, 0).copy()
        b = _lin(L.T, Az)                                # L'A_i'z_i
        c = _matvec_soa(Minv, b)                         # M_i⁻¹ L'A_i'z_i
        mu = _lin(L, c) / sigma2                         # μ_i = Γ_i A_i'z_i / σ²
        Cq = _sdot(b, c) / sigma2                        # Σ μ_i'A_i'z_i
        n = self.n
        loglik = -0.5 * (n * _LOG2PI + n * math.log(sigma2) + logdet + (zz - Cq) / sigma2)
        if not np.isfinite(loglik):
            loglik = -np.inf
        return dict(delta=delta, Az=Az, L=L, W=W, Minv=Minv, c=c, mu=mu, C=Cq,
                    loglik=float(loglik))

    # --- M-steps -------------------------------------------------------------

    def _omega_sigma2(self, R, T, C, mu, delta, simplified, mask):
        G = self.G
        R = 0.5 * (R + R.T)
        Omega = R / G if mask is None else (R / G) * mask
        if simplified:
            ytu = _sdot(self.Ay, mu)
            ytz = self.ytr - float(self.Xty @ delta)
            return Omega, (ytz - ytu) / self.n
        return Omega, (self.zz(delta) - 2.0 * C + T) / self.n

    def mstep(self, E, sigma2, simplified, mask):
        """The seed's updates from the E-step statistics; returns (δ, Ω, σ²)."""
        L, Minv, W, mu, c = E["L"], E["Minv"], E["W"], E["mu"], E["c"]
        R = L @ Minv.sum(axis=2) @ L.T + np.einsum("ig,jg->ij", mu, mu)
        delta = self.solve_XtX(self.Xtr - self.Xtu(mu))
        # T = Σ tr((Γ_i + μ_iμ_i')A_i'A_i) = σ² Σ <M_i⁻¹, W_i> + Σ c_i'W_i c_i / σ²
        T = sigma2 * _sdot(Minv, W) + _sdot(c, _matvec_soa(W, c)) / sigma2
        # C uses the residual of the previous β, exactly as the seed's code does
        Omega, s2 = self._omega_sigma2(R, T, E["C"], mu, delta, simplified, mask)
        return delta, Omega, float(s2)

    def mstep_ecme(self, E, sigma2, simplified, mask):
        """ECME (Liu & Rubin 1994): β ← GLS at the current (Ω, σ²), which maximises the
        log-likelihood itself over β, then the EM update of (Ω, σ²) given that β."""
        L, Minv, mu, delta = E["L"], E["Minv"], E["mu"], E["delta"]
        q, p, G = self.q, self.p, self.G
        Gam = _congruence(L, Minv)                       # Γ_i (q, q, G)
        GAX = np.empty((p, q, G))
        for k in range(p):
            GAX[k] = _matvec_soa(Gam, self.AX[k])        # Γ_i A_i'X_i
        # σ² X'V⁻¹X and σ² X'V⁻¹z, from Woodbury
        H = self.XtX - np.einsum("kjg,ljg->kl", self.AX, GAX) / sigma2
        g = self.Xtr - self.XtX @ delta - self.Xtu(mu)
        try:
            Hc = np.linalg.cholesky(0.5 * (H + H.T))
            step = np.linalg.solve(Hc.T, np.linalg.solve(Hc, g))
        except np.linalg.LinAlgError:                    # fall back on the EM update of β
            step = self.solve_XtX(self.Xtr - self.Xtu(mu)) - delta
        delta = delta + step
        mu = mu - np.einsum("k,kjg->jg", step, GAX) / sigma2
        Az = E["Az"] - self.AXA(step)
        R = Gam.sum(axis=2) + np.einsum("ig,jg->ij", mu, mu)
        T = _sdot(Gam, self.AA) + _sdot(mu, _matvec_soa(self.AA, mu))
        C = _sdot(mu, Az)
        Omega, s2 = self._omega_sigma2(R, T, C, mu, delta, simplified, mask)
        return delta, Omega, float(s2)


# -------------------------------------------------------- parameter vector (SQUAREM)


def _chol_lower(Omega):
    """A lower-triangular L with LL' = Ω for Ω ⪰ 0 (non-negative diagonal)."""
    try:
        return np.linalg.cholesky(Omega)
    except np.linalg.LinAlgError:
        lam, Q = np.linalg.eigh(0.5 * (Omega + Omega.T))
        B = Q * np.sqrt(np.clip(lam, 0.0, None))            # Ω ≈ BB'
        R = np.linalg.qr(B.T, mode="r")                      # B' = QR  ⇒  Ω = R'R
        Lo = R.T
        sgn = np.where(np.diagonal(Lo) < 0, -1.0, 1.0)
        return Lo * sgn[None, :]


class _Packer:
    def __init__(self, p, q):
        self.p, self.q = p, q
        self.tril = np.tril_indices(q)

    def pack(self, delta, Omega, sigma2):
        return np.concatenate([delta, _chol_lower(Omega)[self.tril], [math.log(sigma2)]])

    def unpack(self, x):
        p, q = self.p, self.q
        L = np.zeros((q, q))
        L[self.tril] = x[p:-1]
        return x[:p].copy(), L @ L.T, math.exp(x[-1])


# ------------------------------------------------------------------ the drivers


def _n_params(p, q, mask):
    if mask is None:
        return p + q * (q + 1) // 2 + 1
    return p + int(np.count_nonzero(np.tril(mask))) + 1


_METHODS = {False: ("em", False), None: ("em", False), "none": ("em", False),
            "em": ("em", False), "ecme": ("ecme", False), "squarem": ("em", True),
            True: ("ecme", True), "squarem-ecme": ("ecme", True)}


def _method(accelerate):
    key = accelerate if isinstance(accelerate, (bool, str)) or accelerate is None else None
    if isinstance(key, str):
        key = key.lower()
    if key not in _METHODS:
        raise ValueError(f"accelerate must be False, True, 'squarem', 'ecme' or 'squarem-ecme', "
                         f"got {accelerate!r}")
    return _METHODS[key]


def _degenerate(sigma2):
    raise ValueError(f"the EM update gave a non-positive or non-finite residual variance "
                     f"(σ² = {sigma2!r}): the response is fitted exactly by the fixed and random "
                     "effects (a degenerate model)")


def _run(prob, *, n_iter, simplified, mask, tol, accelerate, max_iter):
    q, p = prob.q, prob.p
    mapname, squarem = _method(accelerate)
    mstep = prob.mstep_ecme if mapname == "ecme" else prob.mstep
    delta = np.zeros(p)
    Omega = np.eye(q)
    sigma2 = 1.0
    trace = []
    converged = False
    n_cycles = n_rejected = 0
    limit = n_iter if tol is None else max_iter

    def done(ll):
        prev = trace[-1] if trace else None
        trace.append(ll)
        return (tol is not None and prev is not None and math.isfinite(ll)
                and math.isfinite(prev) and abs(ll - prev) <= tol * abs(ll))

    if not squarem:
        E = prob.estep(delta, Omega, sigma2)
        k = 0
        while k < limit:
            delta, Omega, sigma2 = mstep(E, sigma2, simplified, mask)
            k += 1
            if not (sigma2 > 0 and np.all(np.isfinite(Omega))):
                _degenerate(sigma2)
            E = prob.estep(delta, Omega, sigma2)
            if done(E["loglik"]):
                converged = True
                break
        n_evals = k
    else:
        packer = _Packer(p, q)
        n_evals = 0

        def F(x):
            """One EM update from the packed point x: (loglik(x), packed F(x))."""
            d, Om, s2 = packer.unpack(x)
            Ex = prob.estep(d, Om, s2)
            d, Om, s2 = mstep(Ex, s2, simplified, mask)
            if not (s2 > 0 and np.all(np.isfinite(Om))):
                return Ex["loglik"], np.full_like(x, np.nan)
            return Ex["loglik"], packer.pack(d, Om, s2)

        x = packer.pack(delta, Omega, sigma2)
        step_min, step_max, mstep_f = 1.0, 1.0, 4.0
        while n_evals < limit:
            ll0, x1 = F(x)
            n_evals += 1
            if not np.all(np.isfinite(x1)):
                _degenerate(packer.unpack(x)[2])
            if done(ll0):
                converged = True
                break
            if n_evals >= limit:
                break
            ll1, x2 = F(x1)
            n_evals += 1
            n_cycles += 1
            if not np.all(np.isfinite(x2)):
                x = x1
                continue
            r = x1 - x
            v = x2 - x1 - r
            sr, sv = float(r @ r), float(v @ v)
            if sv == 0.0 or sr == 0.0 or n_evals >= limit or not np.isfinite(sr + sv):
                x = x2
                continue
            # S3 step length, bounded; a stabilising EM step after the extrapolation
            alpha = max(step_min, min(step_max, math.sqrt(sr / sv)))
            if abs(alpha - 1.0) > 0.01:
                xe = x + 2.0 * alpha * r + alpha * alpha * v
                lle, xs = F(xe)
                n_evals += 1
                if np.isfinite(lle) and lle >= ll0 and np.all(np.isfinite(xs)):
                    x = xs                               # loglik(F(xe)) >= loglik(xe) >= ll0
                else:                                    # safeguard: the plain double EM step
                    x = x2
                    n_rejected += 1
                    if alpha == step_max:
                        step_max = max(step_min, step_max / mstep_f)
                    alpha = 1.0
            else:
                x = x2
            if alpha == step_max:
                step_max *= mstep_f
        delta, Omega, sigma2 = packer.unpack(x)
        if mask is not None:
            Omega = Omega * mask                         # exact zeros, as the map makes them
        E = prob.estep(delta, Omega, sigma2)
        if not trace or trace[-1] != E["loglik"]:
            trace.append(E["loglik"])
    method = {("em", False): "em", ("ecme", False): "ecme", ("em", True): "squarem",
              ("ecme", True): "squarem-ecme"}[(mapname, squarem)]
    return dict(delta=delta, Omega=Omega, sigma2=sigma2, E=E, trace=np.asarray(trace),
                converged=converged, n_evals=n_evals, n_cycles=n_cycles, method=method,
                n_rejected=n_rejected)


def _result(prob, out, *, simplified, mask, names, re_names, labels):
    p, q, n = prob.p, prob.q, prob.n
    k = _n_params(p, q, mask)
    E, Omega = out["E"], out["Omega"]
    ll = E["loglik"]
    return EMResult(
        beta=prob.beta0 + out["delta"], omega=0.5 * (Omega + Omega.T),
        sigma2=float(out["sigma2"]), loglik=ll, aic=-2.0 * ll + 2.0 * k,
        bic=-2.0 * ll + math.log(n) * k, n_iter=int(out["n_evals"]),
        converged=bool(out["converged"]), trace=out["trace"], n_params=k,
        names=names, re_names=re_names, n_obs=n, n_groups=prob.G,
        ranef=np.ascontiguousarray(E["mu"].T), group_labels=labels, method=out["method"],
        simplified=simplified, n_cycles=out["n_cycles"], n_rejected=out["n_rejected"])


def _check_opts(n_iter, tol, max_iter):
    check_count(n_iter, "n_iter", 0)
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
                            or not tol > 0):
        raise ValueError(f"tol must be positive or None, got {tol!r}")
    check_count(max_iter, "max_iter", 1)


def _check_identifiable(y, X, G):
    """Refuse what has no (finite, unique) ML estimate, as lmer does: a response fitted
    exactly by X (σ² → 0, log-likelihood unbounded), or as many groups as observations
    (σ² and Ω not separable)."""
    n = len(y)
    if G >= n:
        raise ValueError(f"the number of groups ({G}) must be less than the number of "
                         f"observations ({n}): σ² and Ω cannot be separated")
    yc = y - y.mean()
    if X.shape[1]:
        r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    else:
        r = y
    if not float(r @ r) > 1e-24 * max(float(yc @ yc), float(y @ y) * 1e-12, 1e-300) or \
            not np.ptp(y) > 0:
        raise ValueError("the response is fitted exactly by the fixed effects (constant, or a "
                         "linear function of them): the residual variance is 0")


def _check_sigma2(out, y):
    """A residual variance at rounding level means y = Xβ + Aη exactly: no MLE."""
    s2 = float(out["sigma2"])
    scale = float(np.var(y)) if len(y) else 0.0
    if not (math.isfinite(s2) and s2 > 1e-14 * max(scale, 1e-300)):
        raise ValueError(f"the EM drove the residual variance to {s2:.3g} (var(y) = {scale:.3g}): "
                         "the response is fitted exactly by the fixed and random effects and the "
                         "likelihood is unbounded")


def em(y, groups, X, A=None, *, n_iter=50, simplified=False, mask=None, tol=None,
       accelerate=False, max_iter=10000) -> EMResult:
    """ML fit of ``y = Xβ + Aη_group + e`` by EM (the seed's ``em.lmem`` / ``em2.lmem``).

    Parameters
    ----------
    y : (n,) response (array, Series or one-column DataFrame).
    groups : (n,) group labels of the observations, any hashable values, in any order.
    X : (n, p) fixed-effects design (a DataFrame's column names become ``result.names``).
    A : (n, q) random-effects design; defaults to X.
    n_iter : number of EM updates when ``tol`` is None (seed fidelity, default 50).
    simplified : False → ``em.lmem``; True → ``em2.lmem`` (σ² = mean(y(y − Xβ − u))).
    mask : q×q symmetric 0/1 matrix C: Ω = (R/N) ∘ C, as in ``em2.lmem`` (default all
        ones, i.e. no constraint).  Zeros constrain covariances (a diagonal mask gives
        uncorrelated random effects).  Applied in both modes: for a block-diagonal pattern
        it is the exact constrained M-step; a mask that is not positive semi-definite
        triggers a warning (Ω can become indefinite).  ``n_params`` counts the non-zero
        entries of its lower triangle.
    tol : None → exactly ``n_iter`` updates; a float → iterate until the relative change
        of the log-likelihood ``|ΔLL| ≤ tol·|LL|`` or ``max_iter`` updates.  1e-10 is the
        default of :func:`fit_em` (with ``accelerate=True``; see the module docstring for
        why a tol should not be used with the plain seed map to find the MLE).
    accelerate : False (the seed's EM), "squarem" (SQUAREM on the EM map), "ecme", or
        True = "squarem-ecme" (SQUAREM on the ECME map; fastest, see the module
        docstring).  ``n_iter`` (tol None) / ``max_iter`` bound the number of map updates.
    max_iter : the most EM updates when ``tol`` is given.

    Returns
    -------
    EMResult
        With ``simplified=False, mask=None, tol=None, accelerate=False`` its beta, omega,
        sigma2 and loglik are those of the seed's ``em.lmem(y, id, X, A, niter=n_iter)``.
    """
    _check_opts(n_iter, tol, max_iter)
    yv = _as_vector(y)
    n = len(yv)
    g = groups.to_numpy() if isinstance(groups, (pd.Series, pd.Index)) else np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be 1-d, got shape {g.shape}")
    if len(g) != n:
        raise ValueError(f"groups has length {len(g)} but y has {n} observations")
    Xm, names = _as_matrix(X, n, "X", allow_empty=True)
    if A is None:
        if Xm.shape[1] == 0:
            raise ValueError("X has no columns: give the random-effects design A explicitly")
        Am, re_names = Xm, names
    else:
        Am, re_names = _as_matrix(A, n, "A")
    # group index in order of first appearance (the seed's unique(id))
    codes, labels = pd.factorize(g, sort=False, use_na_sentinel=True)
    if np.any(codes < 0):
        raise ValueError("groups contains missing values")
    _method(accelerate)
    maskm = _check_mask(mask, Am.shape[1])
    _check_identifiable(yv, Xm, len(labels))
    prob = _Problem(yv, codes.astype(np.intp), len(labels), Xm, Am)
    out = _run(prob, n_iter=int(n_iter), simplified=simplified, mask=maskm, tol=tol,
               accelerate=accelerate, max_iter=int(max_iter))
    _check_sigma2(out, yv)
    return _result(prob, out, simplified=simplified, mask=maskm,
                   names=names, re_names=re_names, labels=np.asarray(labels))


def fit_em(design, *, tol=1e-10, max_iter=10000, accelerate=True, simplified=False,
           mask=None) -> EMResult:
    """EM fit of a :class:`pylmem.model.design.ModelDesign` with exactly one random-effects term.

    Several terms are rejected: see :func:`pylmem.api.lmer.lmer` (each EM update would cost more
    than a profiled-deviance evaluation, and EM needs many more of them).

    Uses ``design.y``, ``design.X``, ``design.terms[0].Z`` and ``design.terms[0].codes``;
    ``result.ranef`` rows follow ``result.group_labels`` (the term's levels that occur).
    ``tol=None`` runs ``max_iter`` EM updates.
    """
    terms = design.terms
    if len(terms) != 1:
        raise ValueError(f"the EM algorithm handles exactly one random-effects term; "
                         f"this model has {len(terms)} terms "
                         f"({', '.join(t.name for t in terms)})")
    t = terms[0]
    _check_opts(1, tol, max_iter)
    y = _as_vector(design.y)
    n = len(y)
    Xm, _ = _as_matrix(design.X, n, "design.X", allow_empty=True)
    Am, _ = _as_matrix(t.Z, n, "the random-effects design Z")
    codes = np.asarray(t.codes)
    if codes.shape != (n,):
        raise ValueError(f"the term's codes have shape {codes.shape}, expected ({n},)")
    if n and (codes.min() < 0 or codes.max() >= len(t.levels)):
        raise ValueError("the term's codes must index its levels (0 .. n_levels-1)")
    present = np.unique(codes)
    if len(present) == len(t.levels) and present[0] == 0:
        cidx, labels = codes.astype(np.intp), np.asarray(t.levels)
    else:
        cidx = np.searchsorted(present, codes).astype(np.intp)
        labels = np.asarray(t.levels)[present]
    _method(accelerate)
    maskm = _check_mask(mask, Am.shape[1])
    _check_identifiable(y, Xm, len(labels))
    prob = _Problem(y, cidx, len(labels), Xm, Am)
    out = _run(prob, n_iter=int(max_iter), simplified=simplified, mask=maskm, tol=tol,
               accelerate=accelerate, max_iter=int(max_iter))
    _check_sigma2(out, y)
    return _result(prob, out, simplified=simplified, mask=maskm,
                   names=list(design.fixef_names), re_names=list(t.coef_names),
                   labels=labels)


def fit_em_statistics(n, counts, WtW, ZtZ, ZtW, *, names, re_names, labels, tol=1e-10,
                      max_iter=10000, accelerate=True, simplified=False, mask=None) -> EMResult:
    """:func:`fit_em` fed with sufficient statistics instead of rows (data that stay where
    they live, e.g. Dask partitions): the same E- and M-steps.

    ``n`` rows, ``counts`` rows per group, ``WtW`` = W'W with W = [X y], per group ``ZtZ``
    (G, q, q) and ``ZtW`` (G, q, p + 1); ``names``/``re_names``/``labels`` label the result.
    """
    _check_opts(1, tol, max_iter)
    _method(accelerate)
    maskm = _check_mask(mask, ZtZ.shape[1])
    prob = _Problem.from_statistics(n, counts, WtW, ZtZ, ZtW)
    out = _run(prob, n_iter=int(max_iter), simplified=simplified, mask=maskm, tol=tol,
               accelerate=accelerate, max_iter=int(max_iter))
    return _result(prob, out, simplified=simplified, mask=maskm, names=names,
                   re_names=re_names, labels=labels)
