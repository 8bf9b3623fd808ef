"""Denominator degrees of freedom for fixed-effects tests: Satterthwaite and Kenward–Roger.

**Satterthwaite** (lmerTest's method).  The variance parameters are φ = (θ, σ) and the
criterion with β profiled out is

    ML:   d(θ, σ) = log|L_θ|² + r²(θ)/σ² + n log(2πσ²)
    REML: d(θ, σ) = log|L_θ|² + log|R_X|² + r²(θ)/σ² + (n − p) log(2πσ²)

(r² the penalised RSS).  Its Hessian H in φ gives Cov(φ̂) ≈ A = 2 H⁺ (pseudo-inverse on
the eigenvalues > 1e-8, as lmerTest).  C(φ) = Cov(β̂) = σ² R_X⁻ᵀ R_X⁻¹; for a contrast l,
v = l'C l and g_i = l' (∂C/∂φ_i) l, the df is ν = 2 v² / (g'A g).  The σ-derivatives are
analytic (∂C/∂σ = 2C/σ, ∂²d/∂σ² = 6r²/σ⁴ − 2ν/σ², ∂²d/∂θ∂σ = −2 ∂r²/∂θ / σ³); the
θ-derivatives of log|L|² (+ log|R_X|²), r² and R_X⁻ᵀR_X⁻¹ are central differences
(h = 10⁻³ max(|θ_i|, 0.05), error O(h²) ~ 1e-6 relative: the df agree with lmerTest's
numDeriv to ~1e-6) through the public :meth:`ProfiledDeviance.factor`, 1 + 2k² factors.

**Kenward–Roger** (pbkrtest's ``vcovAdj``).  With Σ = Σ_r γ_r G_r the marginal
covariance in its variance-scale parameters γ (each term's vech Ω_k, then σ²),
Φ = (X'Σ⁻¹X)⁻¹, P_r = −X'Σ⁻¹G_rΣ⁻¹X, Q_rs = X'Σ⁻¹G_rΣ⁻¹G_sΣ⁻¹X and the expected
information I_rs = ½[tr(Σ⁻¹G_rΣ⁻¹G_s) − 2 tr(ΦQ_rs) + tr(ΦP_rΦP_s)], W = I⁻¹:

    Φ_A = Φ + 2 Φ [Σ_rs W_rs (Q_rs − P_r Φ P_s)] Φ,

and the F statistic for H₀: Lβ = 0 is scaled by λ with denominator df m from
A₁ = Σ W_rs tr(ΘΦP_rΦ) tr(ΘΦP_sΦ), A₂ = Σ W_rs tr(ΘΦP_rΦΘΦP_sΦ), Θ = L'(LΦL')⁻¹L
(Kenward & Roger 1997).  Everything is formed from m × m matrices (m random effects,
m ≤ ``KR_MAX_M``) by Woodbury identities, never the n × n Σ (see :func:`_kr_parts`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
from scipy import stats

from .deviance import _trsolve

KR_MAX_M = 8000   # random effects (m × m dense matrices)
DDF_METHODS = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger",
               "kenward_roger": "Kenward-Roger", "kr": "Kenward-Roger"}


class InferenceWarning(UserWarning):
    """A df or test that may not be trustworthy (degenerate Hessian, boundary fit)."""


def normalize_ddf(ddf):
    """None, "Satterthwaite" or "Kenward-Roger" from any capitalisation; else ValueError."""
    if ddf is None:
        return None
    key = str(ddf).strip().lower()
    if key not in DDF_METHODS:
        raise ValueError(f"ddf must be None, 'Satterthwaite' or 'Kenward-Roger', got {ddf!r}")
    return DDF_METHODS[key]


def one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread: the matrices here are small, and OpenBLAS's thread
    hand-off costs more than the arithmetic (×3-10 on a loaded 2-core machine)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        from .fit import _BLAS_CONTROLLER

        if not _BLAS_CONTROLLER:
            try:
                from threadpoolctl import ThreadpoolController

                _BLAS_CONTROLLER.append(ThreadpoolController())
            except ImportError:  # pragma: no cover - optional speed-up
                _BLAS_CONTROLLER.append(None)
        ctl = _BLAS_CONTROLLER[0]
        if ctl is None:
            return fn(*args, **kw)
        with ctl.limit(limits=1, user_api="blas"):
            return fn(*args, **kw)

    return wrapper


# ---------------------------------------------------------------------------- Satterthwaite
@dataclass
class VarparInfo:
    """φ̂ = (θ̂, σ̂), the Hessian of d in φ, A = Cov(φ̂) and the Jacobian of Cov(β̂)."""

    varpar: np.ndarray
    hessian: np.ndarray
    vcov_varpar: np.ndarray
    jac: np.ndarray          # (k + 1, p, p): ∂Cov(β̂)/∂φ_i
    vcov_beta: np.ndarray
    warnings: list = field(default_factory=list)


def _parts(dev, theta):
    """a(θ) = log|L|² [+ log|R_X|²], r²(θ) and R_X⁻ᵀR_X⁻¹ at θ."""
    f = dev.factor(theta)
    a = f.logdet_L + (f.logdet_RX if dev.reml else 0.0)
    p = f.p
    # LAPACK's triangular solve called directly (scipy's wrapper costs ms under load)
    Ri = _trsolve(np.asfortranarray(f.RX), np.eye(p)) if p else np.zeros((0, 0))
    return a, f.pwrss, Ri.T @ Ri


_RICHARDSON = False   # one more step size and a Richardson step: O(h⁴), twice the cost


def _theta_derivatives(dev, theta, h):
    """Central differences (optionally a Richardson step): ∇a, ∇²a, ∇r², ∇²r², ∂C/∂θ_i."""
    k = len(theta)
    p = dev.p

    def one(hs):
        a0, b0, _ = _parts(dev, theta)
        ga, gb = np.zeros(k), np.zeros(k)
        Ha, Hb = np.zeros((k, k)), np.zeros((k, k))
        J = np.zeros((k, p, p))
        plus, minus = [], []
        for i in range(k):
            e = np.zeros(k)
            e[i] = hs[i]
            plus.append(_parts(dev, theta + e))
            minus.append(_parts(dev, theta - e))
            ga[i] = (plus[i][0] - minus[i][0]) / (2 * hs[i])
            gb[i] = (plus[i][1] - minus[i][1]) / (2 * hs[i])
            J[i] = (plus[i][2] - minus[i][2]) / (2 * hs[i])
            Ha[i, i] = (plus[i][0] - 2 * a0 + minus[i][0]) / hs[i] ** 2
            Hb[i, i] = (plus[i][1] - 2 * b0 + minus[i][1]) / hs[i] ** 2
        for i in range(k):
            for j in range(i + 1, k):
                vals = []
                for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    e = np.zeros(k)
                    e[i], e[j] = si * hs[i], sj * hs[j]
                    vals.append(_parts(dev, theta + e)[:2])
                vals = np.asarray(vals)
                d = (vals[0] - vals[1] - vals[2] + vals[3]) / (4 * hs[i] * hs[j])
                Ha[i, j] = Ha[j, i] = d[0]
                Hb[i, j] = Hb[j, i] = d[1]
        return ga, Ha, gb, Hb, J

    r1 = one(h)
    if not _RICHARDSON:
        return r1
    r2 = one(h / 2)
    return [(4 * b - a) / 3 for a, b in zip(r1, r2)]


@one_blas_thread
def varpar_info(fit) -> VarparInfo:
    """Hessian of d(θ, σ) at the fit, Cov(φ̂) and ∂Cov(β̂)/∂φ (cached on the fit)."""
    cached = getattr(fit, "_varpar_info_cache", None)
    if cached is not None:
        return cached
    dev = fit.dev
    theta = np.asarray(fit.theta, float)
    sigma = fit.sigma
    nu = fit.n_obs - fit.design.n_fixef if fit.reml else fit.n_obs
    k = len(theta)
    h = 1e-3 * np.maximum(np.abs(theta), 0.05)
    ga, Ha, gb, Hb, J = _theta_derivatives(dev, theta, h)
    _, b, C = _parts(dev, theta)
    H = np.zeros((k + 1, k + 1))
    H[:k, :k] = Ha + Hb / sigma ** 2
    H[:k, k] = H[k, :k] = -2.0 * gb / sigma ** 3
    H[k, k] = 6.0 * b / sigma ** 4 - 2.0 * nu / sigma ** 2
    H = 0.5 * (H + H.T)
    A, msgs = hessian_to_vcov(H)
    jac = np.concatenate([sigma ** 2 * J, (2.0 * sigma * C)[None]], axis=0)
    info = VarparInfo(varpar=np.r_[theta, sigma], hessian=H, vcov_varpar=A, jac=jac,
                      vcov_beta=sigma ** 2 * C, warnings=msgs)
    fit._varpar_info_cache = info
    return info


def hessian_to_vcov(H, tol=1e-8):
    """A = 2 H⁺ on the eigenvalues > tol, with lmerTest's warnings for the others."""
    w, V = np.linalg.eigh(H)
    msgs = []
    if np.any(w < -tol):
        neg = " ".join(f"{x:.1e}" for x in w[w < -tol])
        msgs.append(f"Model failed to converge with {int((w < -tol).sum())} negative "
                    f"eigenvalue(s) of the Hessian in (theta, sigma): {neg}")
    if np.any(np.abs(w) <= tol):
        msgs.append(f"Model may not have converged with {int((np.abs(w) <= tol).sum())} "
                    "eigenvalue(s) of the Hessian in (theta, sigma) close to zero")
    pos = w > tol
    return 2.0 * (V[:, pos] / w[pos]) @ V[:, pos].T, msgs


def satterthwaite_df(fit, L) -> np.ndarray:
    """Satterthwaite df of each row l of ``L``: 2 (l'Cl)² / (g'Ag), g_i = l'(∂C/∂φ_i)l."""
    info = varpar_info(fit)
    L = np.atleast_2d(np.asarray(L, float))
    v = np.einsum("ri,ij,rj->r", L, info.vcov_beta, L)
    g = np.einsum("ri,kij,rj->rk", L, info.jac, L)
    den = np.einsum("rk,kl,rl->r", g, info.vcov_varpar, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 2.0 * v ** 2 / den, np.nan)


# ---------------------------------------------------------------------------- Kenward–Roger
@dataclass
class KRInfo:
    """pbkrtest's ``vcovAdj``: Φ, Φ_A and the P_r, W needed by the KR F test."""

    Phi: np.ndarray
    PhiA: np.ndarray
    P: list
    W: np.ndarray
    condi: float


def _kr_generators(fit):
    """G_r = A_r B_r' for each variance-scale parameter: (A_r, B_r) sparse, and γ."""
    d = fit.design
    gens, gamma = [], []
    for t, C in zip(d.terms, fit.cov_re.values()):
        Z = t.sparse()
        q = t.q
        Om = C.to_numpy()
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))
        for i, j in zip(rows[order], cols[order]):
            E = np.zeros((q, q))
            E[i, j] = E[j, i] = 1.0
            EE = sp.kron(sp.identity(t.n_levels, format="csr"), sp.csr_matrix(E), format="csr")
            gens.append((Z @ EE, Z))
            gamma.append(Om[i, j])
    n = fit.n_obs
    I = sp.identity(n, format="csr")
    gens.append((I, I))
    gamma.append(fit.sigma2)
    return gens, np.asarray(gamma)


@one_blas_thread
def _kr_parts(fit):
    """P_r, Q_rs and K_rs = tr(Σ⁻¹G_rΣ⁻¹G_s) without any n × n matrix.

    With W = ZΛ, C = W'W + I and S = I − W C⁻¹ W' (Σ = σ² S⁻¹): S^k W = W C^{-k}, so
    B₁'S^kB₂ = B₁'B₂ − (B₁'W)(C⁻¹ + … + C^{-k})(W'B₂) and tr S² = n − m + tr C⁻².
    G_r = Z E_r Z' (E_r the indicator of one entry of Ω_k, repeated over levels) or I:
    P_r = −U'E_rU, Q_rs = U'E_r M₁ E_s U, K_rs = tr(E_r M₁ E_s M₁) with U = Z'Σ⁻¹X,
    M₁ = Z'Σ⁻¹Z; the residual generator uses Z'Σ⁻²X, Z'Σ⁻²Z, X'Σ⁻²X, X'Σ⁻³X.
    """
    d = fit.design
    X = d.X
    n = fit.n_obs
    s2 = fit.sigma2
    Z = sp.hstack([t.sparse() for t in d.terms], format="csr")
    Lam = sp.block_diag([sp.kron(sp.identity(t.n_levels), sp.csr_matrix(T))
                         for t, T in zip(d.terms, fit.factor.T)], format="csr")
    m = Z.shape[1]
    ZtZ = (Z.T @ Z).toarray()
    ZtX = np.asarray(Z.T @ X)
    XtX = X.T @ X
    ZtW = np.asarray((Lam.T @ ZtZ.T).T)                  # Z'ZΛ
    XtW = np.asarray((Lam.T @ ZtX).T)                    # X'ZΛ
    C = np.asarray(Lam.T @ ZtW) + np.eye(m)
    cf = sla.cho_factor(C, lower=True)
    Ci = sla.cho_solve(cf, np.eye(m))
    Ci2 = Ci @ Ci
    Ci3 = Ci2 @ Ci
    S1, S2, S3 = Ci, Ci + Ci2, Ci + Ci2 + Ci3

    def quad(a_W, b_W, a_b, F):
        return a_b - a_W @ F @ b_W.T

    M1 = quad(ZtW, ZtW, ZtZ, S1) / s2
    M2 = quad(ZtW, ZtW, ZtZ, S2) / s2 ** 2
    U1 = quad(ZtW, XtW, ZtX, S1) / s2
    U2 = quad(ZtW, XtW, ZtX, S2) / s2 ** 2
    X2 = quad(XtW, XtW, XtX, S2) / s2 ** 2
    X3 = quad(XtW, XtW, XtX, S3) / s2 ** 3
    trS2 = (n - m + float(np.sum(Ci * Ci))) / s2 ** 2
    Es = []
    off = 0
    for t in d.terms:
        q, L = t.q, t.n_levels
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))
        for i, j in zip(rows[order], cols[order]):
            E = np.zeros((q, q))
            E[i, j] = E[j, i] = 1.0
            blk = sp.kron(sp.identity(L), sp.csr_matrix(E), format="csr")
            Es.append(sp.block_diag([sp.csr_matrix((off, off)), blk,
                                     sp.csr_matrix((m - off - L * q, m - off - L * q))],
                                    format="csr"))
        off += L * q
    R = len(Es) + 1
    EU = [E @ U1 for E in Es]
    EM = [np.asarray(E @ M1) for E in Es]
    P = [-(U1.T @ eu) for eu in EU] + [-X2]
    P = [0.5 * (M + M.T) for M in P]
    Q = {}
    for r in range(R - 1):
        for s_ in range(r, R - 1):
            Q[r, s_] = EU[r].T @ M1 @ EU[s_]
        Q[r, R - 1] = EU[r].T @ U2
    Q[R - 1, R - 1] = X3
    K = np.zeros((R, R))
    for r in range(R - 1):
        for s_ in range(r, R - 1):
            K[r, s_] = K[s_, r] = float(np.sum(EM[r] * EM[s_].T))
        K[r, R - 1] = K[R - 1, r] = float((Es[r].multiply(M2)).sum())
    K[R - 1, R - 1] = trS2
    return P, Q, K


def vcov_adj(fit) -> KRInfo:
    """Kenward–Roger's adjusted covariance Φ_A of β̂ (pbkrtest's vcovAdj), cached."""
    cached = getattr(fit, "_kr_info_cache", None)
    if cached is not None:
        return cached
    if not fit.reml:
        raise ValueError("Kenward-Roger's method is only available for REML model fits")
    m = sum(t.n_levels * t.q for t in fit.design.terms)
    if m > KR_MAX_M:
        raise ValueError(f"Kenward-Roger forms m x m matrices: {m} random effects exceed "
                         f"{KR_MAX_M}; use ddf='Satterthwaite'")
    P, Q, K = _kr_parts(fit)
    info = _kr_finish(fit, P, Q, K)
    fit._kr_info_cache = info
    return info


def _kr_finish(fit, P, Q, K) -> KRInfo:
    """W = 2 I⁻¹ (I the expected information) and Φ_A = Φ + 2Φ[Σ W_rs(Q_rs − P_rΦP_s)]Φ."""
    Phi = fit.vcov.to_numpy()
    R = len(P)
    IE2 = np.zeros((R, R))
    for r in range(R):
        PhiPr = Phi @ P[r]
        for s in range(r, R):
            IE2[r, s] = IE2[s, r] = (K[r, s] - 2 * np.sum(Phi * Q[r, s])
                                     + np.sum(PhiPr * (P[s] @ Phi)))
    ev = np.linalg.eigvalsh(IE2)
    condi = float(np.min(np.abs(ev)))
    W = 2 * np.linalg.inv(IE2) if condi > 1e-10 else 2 * np.linalg.pinv(IE2)
    W = 0.5 * (W + W.T)
    p = Phi.shape[0]
    U = np.zeros((p, p))
    for r in range(R - 1):
        for s in range(r + 1, R):
            U += W[r, s] * (Q[r, s] - P[r] @ Phi @ P[s])
    U = U + U.T
    for r in range(R):
        U += W[r, r] * (Q[r, r] - P[r] @ Phi @ P[r])
    PhiA = Phi + 2 * Phi @ U @ Phi
    return KRInfo(Phi=Phi, PhiA=PhiA, P=P, W=W, condi=condi)


def _kr_parts_dense(fit):
    """P_r, Q_rs, tr(Σ⁻¹G_rΣ⁻¹G_s) from the dense n × n Σ (pbkrtest's computation;
    the reference for :func:`_kr_parts`)."""
    n = fit.n_obs
    X = fit.design.X
    gens, gamma = _kr_generators(fit)
    Sigma = np.zeros((n, n))
    for (A, B), g in zip(gens, gamma):
        Sigma += g * (A @ B.T).toarray()
    cf = sla.cho_factor(Sigma, lower=True)
    Si = sla.cho_solve(cf, np.eye(n))
    SiX = Si @ X
    Phi = fit.vcov.to_numpy()
    R = len(gens)
    # Y_r = B_r'Σ⁻¹ (m_r × n); H_r = G_rΣ⁻¹ = A_r Y_r;  O_r = H_r X;  U_r = Y_r X
    Ys = [np.asarray((B.T @ Si)) for _, B in gens]
    Us = [Y @ X for Y in Ys]
    Os = [np.asarray(A @ U) for (A, _), U in zip(gens, Us)]
    SiOs = [Si @ O for O in Os]
    P = [-(O.T @ SiX) for O in Os]
    P = [0.5 * (M + M.T) for M in P]
    Q = {}
    for r in range(R):
        for s in range(r, R):
            Q[r, s] = Os[r].T @ SiOs[s]
    YA = {}
    for r in range(R):
        for s in range(R):
            YA[r, s] = np.asarray((gens[s][0].T @ Ys[r].T).T)   # Y_r A_s
    K = np.zeros((R, R))
    for r in range(R):
        for s in range(r, R):
            K[r, s] = K[s, r] = float(np.sum(YA[r, s] * YA[s, r].T))
    return P, Q, K


def _div_zero(x, y, tol=1e-14):
    return 0.0 if abs(y) < tol else x / y


def kr_adjust(kr: KRInfo, L, beta):
    """pbkrtest's KR F test of Lβ = 0: (F scaled, F unscaled, ndf, ddf, scaling)."""
    L = np.atleast_2d(np.asarray(L, float))
    Phi = kr.Phi
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    TP = Theta @ Phi
    us = [TP @ Pr @ Phi for Pr in kr.P]
    R = len(us)
    tr = np.array([np.trace(u) for u in us])
    A1 = A2 = 0.0
    for i in range(R):
        for j in range(i, R):
            e = 1.0 if i == j else 2.0
            A1 += e * kr.W[i, j] * tr[i] * tr[j]
            A2 += e * kr.W[i, j] * np.sum(us[i] * us[j].T)
    q = int(np.linalg.matrix_rank(L))
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    den = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    rho = (1 / q) * _div_zero(1 - A2 / q, V1) ** 2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    Lb = L @ beta
    wald = float(Lb @ np.linalg.solve(L @ kr.PhiA @ L.T, Lb))
    Fu = wald / q
    return dict(F=scaling * Fu, Fu=Fu, ndf=q, ddf=df2, scaling=scaling)


def kr_df_1d(kr: KRInfo, l) -> float:
    """Kenward–Roger df of one contrast (pbkrtest's Lb_ddf)."""
    return kr_adjust(kr, np.atleast_2d(l), np.zeros(len(l)))["ddf"]


# ---------------------------------------------------------------------------- tables
def _warn(msgs):
    for m in msgs:
        warnings.warn(m, InferenceWarning, stacklevel=4)


def contest1d(fit, L, ddf="Satterthwaite"):
    """t tests of the rows of L: (estimate, se, df, t, p) arrays (lmerTest's contest1D)."""
    ddf = normalize_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, float))
    est = L @ fit.beta
    if ddf == "Kenward-Roger":
        kr = vcov_adj(fit)
        se = np.sqrt(np.einsum("ri,ij,rj->r", L, kr.PhiA, L))
        df = np.array([kr_df_1d(kr, l) for l in L])
    else:
        info = varpar_info(fit)
        _warn(info.warnings)
        se = np.sqrt(np.einsum("ri,ij,rj->r", L, info.vcov_beta, L))
        df = satterthwaite_df(fit, L)
    t = est / se
    with np.errstate(invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(t), df)
    return est, se, df, t, p


def coef_table(fit, ddf=None) -> pd.DataFrame:
    """lmerTest's coefficient table: Estimate, Std. Error[, df], t value[, Pr(>|t|)].

    ``ddf=None``: lme4's (no df or p); "Satterthwaite" or "Kenward-Roger" add df and the
    two-sided p-value from the t distribution on those df.
    """
    ddf = normalize_ddf(ddf)
    names = fit.design.fixef_names
    if ddf is None:
        return pd.DataFrame({"Estimate": fit.beta, "Std. Error": fit.stderr.to_numpy(),
                             "t value": fit.tvalues.to_numpy()}, index=pd.Index(names))
    p = fit.design.n_fixef
    est, se, df, t, pv = contest1d(fit, np.eye(p), ddf)
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "df": df, "t value": t,
                         "Pr(>|t|)": pv}, index=pd.Index(names))


def contest_md(fit, L, ddf="Satterthwaite") -> dict:
    """F test of Lβ = 0 (lmerTest's contestMD): Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)."""
    ddf = normalize_ddf(ddf) or "Satterthwaite"
    L = np.atleast_2d(np.asarray(L, float))
    sigma = fit.sigma
    nan = dict.fromkeys(["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"], np.nan)
    if L.shape[0] == 0 or np.isnan(L).any():
        return nan

    def table(F, ndf, den, scale=1.0):
        MS = F * sigma ** 2
        Fv = F * scale
        return {"Sum Sq": MS * ndf, "Mean Sq": MS, "NumDF": ndf, "DenDF": den, "F value": Fv,
                "Pr(>F)": stats.f.sf(Fv, ndf, den)}

    if ddf == "Kenward-Roger":
        kr = vcov_adj(fit)
        r = kr_adjust(kr, L, fit.beta)
        return table(r["Fu"], r["ndf"], r["ddf"], r["scaling"])
    info = varpar_info(fit)
    _warn(info.warnings)
    VL = L @ info.vcov_beta @ L.T
    d, P = np.linalg.eigh(VL)
    d, P = d[::-1], P[:, ::-1]
    tol = max(np.sqrt(np.finfo(float).eps) * d[0], 0.0)
    pos = d > tol
    q = int(pos.sum())
    if q == 0:
        return nan
    PtL = (P.T @ L)[:q]
    if q == 1:
        _, _, df, t, _ = contest1d(fit, PtL, "Satterthwaite")
        return table(float(t[0] ** 2), 1, float(df[0]))
    t2 = (PtL @ fit.beta) ** 2 / d[:q]
    F = t2.sum() / q
    g = np.einsum("ri,kij,rj->rk", PtL, info.jac, PtL)
    nu = 2 * d[:q] ** 2 / np.einsum("rk,kl,rl->r", g, info.vcov_varpar, g)
    return table(F, q, _fstat_ddf(nu))


def _fstat_ddf(nu, tol=1e-8) -> float:
    """lmerTest's get_Fstat_ddf: 2E/(E − q), E = Σ ν_m/(ν_m − 2) (2 if some ν_m ≤ 2)."""
    nu = np.asarray(nu, float)
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - len(nu))


# ---------------------------------------------------------------------------- printing
def lmertest_title(fit, ddf) -> str:
    """lmerTest's summary title: "… fit by REML. t-tests use Satterthwaite's method …"."""
    how = "REML" if fit.reml else "maximum likelihood "
    method = "Satterthwaite's" if normalize_ddf(ddf) == "Satterthwaite" else "Kenward-Roger's"
    return f"Linear mixed model fit by {how}. t-tests use {method} method ['lmerModLmerTest']"


def format_coef_table(tab: pd.DataFrame, digits: int = 4) -> list:
    """``printCoefmat`` of lmerTest's table: Estimate, Std. Error, df, t value, Pr(>|t|), stars."""
    from .summary import SIGNIF_LEGEND, format_pval, format_real, print_matrix, r_round, signif_stars

    est = tab["Estimate"].to_numpy(float)
    se = tab["Std. Error"].to_numpy(float)
    df = tab["df"].to_numpy(float)
    tv = tab["t value"].to_numpy(float)
    pv = tab["Pr(>|t|)"].to_numpy(float)
    acs = np.abs(np.r_[est, se])
    acs = acs[np.isfinite(acs) & (acs > 0)]
    digmin = 1 + np.floor(np.log10([acs.min(), acs.max()])) if acs.size else np.array([1.0])
    rd = max(1, int(np.max(digits - digmin)))
    cs = format_real(r_round(np.r_[est, se], rd), digits)
    p = len(est)
    ds = format_real(df, digits)
    ts = format_real(r_round(tv, max(1, min(5, digits - 1))), digits)
    ps = format_pval(pv, max(1, min(5, digits - 1)))
    st = signif_stars(pv)
    w = max(len(s) for s in st) if st else 0
    cells = [[cs[i], cs[p + i], ds[i], ts[i], ps[i], st[i].ljust(w)] for i in range(p)]
    lines = print_matrix(cells, list(tab.index), ["Estimate", "Std. Error", "df", "t value",
                                                  "Pr(>|t|)", ""], right=True)
    if np.any(pv[np.isfinite(pv)] < 0.1):
        lines += ["---", SIGNIF_LEGEND]
    return lines
