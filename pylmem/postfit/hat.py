"""The hat matrix of the mixed-model equations (seed 2): P with P y = ŷ (fixed plus random
parts), its trace tr(P) (the effective degrees of freedom) without any n × n matrix, and the
dense P itself for small n.  The leverages (the diagonal of P) are
:func:`pylmem.postfit.intervals.hatvalues`.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ..model.weights import scaled
from ..numerics import batched as B
from ..util.checks import check_count


def hat_trace(fit) -> float:
    """tr(P) for the hat matrix P (P y = ŷ, fixed plus random parts): the effective df.

    P is the hat matrix of Henderson's mixed-model equations; with M the penalised
    cross-product of [ZΛ X], tr(P) = q + p − tr((M⁻¹)_uu) and
    tr((M⁻¹)_uu) = tr((LL')⁻¹) + ‖R_X⁻¹ C_X' L⁻¹‖²_F, without any n × n matrix.
    """
    f = fit.factor
    p = fit.design.n_fixef
    trLL = sum(float(np.trace(D, axis1=1, axis2=2).sum()) for D in fit.inv_diag_blocks)
    q_tot = sum(t.n_levels * t.q for t in fit.design.terms)
    extra = 0.0
    if p:
        # Zm = L^{-T} C_X (q_tot × p), by the blocked back-substitution
        CX0 = f.C0[:, :, :p]
        if f.LRR is None:
            Z0 = B.solve_lower_t(f.L0, CX0)
            Zall = Z0.reshape(-1, p)
        else:
            ZR = f.LRR.solve_Lt(f.CR[:, :p])
            Z0 = B.solve_lower_t(f.L0, CX0 - (f.LR0.T @ ZR).reshape(CX0.shape))
            Zall = np.vstack([Z0.reshape(-1, p), ZR])
        W = sla.solve_triangular(f.RX, Zall.T, lower=True)
        extra = float((W ** 2).sum())
    return q_tot + p - (trLL + extra)


def hat_matrix(fit, max_n: int = 5000) -> np.ndarray:
    """The n × n hat matrix P (rows/columns in the data's row order); small n only."""
    n = fit.n_obs
    max_n = check_count(max_n, "max_n", 1)
    if n > max_n:
        raise ValueError(f"hat_matrix forms an n × n matrix; n = {n} exceeds max_n = {max_n}")
    _, Xs, terms = scaled(fit.design)   # rows scaled by √w for a weighted fit
    Zs = [t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T) for t, T in
          zip(terms, fit.factor.T)]
    ZL = np.hstack(Zs)
    A = np.hstack([ZL, Xs])
    M = A.T @ A
    k = ZL.shape[1]
    M[np.arange(k), np.arange(k)] += 1.0
    P = A @ np.linalg.solve(M, A.T)
    inv = np.argsort(fit.design.order)
    return P[np.ix_(inv, inv)]
