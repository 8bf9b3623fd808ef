"""Kenward–Roger's adjusted covariance and scaled F test (pbkrtest's ``vcovAdj``, ``KRmodcomp``).

With Σ = Σ_r γ_r G_r the marginal covariance in its variance-scale parameters γ (each term's vech Ω_k, then σ²),
Φ = (X'Σ⁻¹X)⁻¹, P_r = −X'Σ⁻¹G_rΣ⁻¹X, Q_rs = X'Σ⁻¹G_rΣ⁻¹G_sΣ⁻¹X and the expected
information I_rs = ½[tr(Σ⁻¹G_rΣ⁻¹G_s) − 2 tr(ΦQ_rs) + tr(ΦP_rΦP_s)], W = I⁻¹:

    Φ_A = Φ + 2 Φ [Σ_rs W_rs (Q_rs − P_r Φ P_s)] Φ,

and the F statistic for H₀: Lβ = 0 is scaled by λ with denominator df m from
A₁ = Σ W_rs tr(ΘΦP_rΦ) tr(ΘΦP_sΦ), A₂ = Σ W_rs tr(ΘΦP_rΦΘΦP_sΦ), Θ = L'(LΦL')⁻¹L
(Kenward & Roger 1997).  Everything is formed from m × m matrices (m random effects,
m ≤ ``KR_MAX_M``) by Woodbury identities, never the n × n Σ (see :func:`_kr_parts`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ..model.covariance import refuse_structured
from ..model.weights import scaled
from ..util.threads import one_blas_thread

KR_MAX_M = 8000   # random effects (m × m dense matrices)


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
    w = getattr(d, "weights", None)
    I = sp.identity(n, format="csr")
    # prior weights: the residual covariance is σ² W⁻¹ (pbkrtest uses σ² I: see docs/inference.md)
    gens.append((I if w is None else sp.diags(1.0 / w, format="csr"), I))
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
    # with prior weights, the rows scaled by √w: Σ̃ = W^½ΣW^½ = Z̃ΩZ̃' + σ²I, and every
    # quantity of the KR formulas (X'Σ⁻¹X, X'Σ⁻¹G_rΣ⁻¹X, tr(Σ⁻¹G_rΣ⁻¹G_s)) is unchanged by it
    _, X, terms = scaled(d)
    n = fit.n_obs
    s2 = fit.sigma2
    Z = sp.hstack([t.sparse() for t in terms], format="csr")
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
    refuse_structured(fit.design.terms, "Kenward-Roger's method", "use ddf='Satterthwaite'")
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
