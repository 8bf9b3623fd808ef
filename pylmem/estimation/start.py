"""Starting values of θ for the optimiser, from moment estimates.

Scalar intercept terms: the variance of the level means of the OLS residuals; a single
vector term: Swamy's per-group least-squares estimator, in the centred coordinates (invariant
to a covariate's location and scale); otherwise a scaled identity.
"""
from __future__ import annotations

import numpy as np

from ..model.covariance import theta_from_lower
from ..numerics.batched import spd_inverse_soa
from ..numerics.centring import ols_coefficients


def _random_coefficient_start(design, dev, beta, e):
    """θ from per-group least squares (Swamy's moment estimator), one vector term only.

    b̂_i = (Z_i'Z_i)⁻¹ Z_i'e_i for groups with n_i > q, σ̂² their pooled residual variance,
    Ω̂ = cov(b̂_i) − σ̂² mean (Z_i'Z_i)⁻¹ (eigenvalues floored), θ = vech chol(Ω̂/σ̂²).
    Saves 10-20% of the evaluations on the rat and simulated models.  None if unusable.
    """
    t, st = design.terms[0], dev.cp_data.terms[0]
    q = t.q
    n_j = np.bincount(t.codes, minlength=t.n_levels)
    v = np.r_[-beta, 1.0]
    cen = dev.centring
    centred = cen.MZ is not None
    if centred:   # in the centred Z̃ (invariant to a covariate's location): G̃, Z̃'W̃ M_W⁻¹ v
        ZZ, ZW = dev.first_term_products
        if cen.icol is not None:
            v = v.copy()
            v[cen.icol] += cen.m @ v
    else:
        ZZ, ZW = st.ZtZ, st.ZtW
    # Z_i of full rank: det(Z_i'Z_i) > 1e-6 Π diag; inverses batched over the groups
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        well_posed, inv = spd_inverse_soa(np.ascontiguousarray(ZZ.transpose(1, 2, 0)), 1e-6)
    ok = (n_j > q) & well_posed
    if ok.sum() < 2 * q:
        return None
    Ze = ZW[ok] @ v                                          # Z_i'e_i, e the OLS residuals
    Ginv = inv[:, :, ok].transpose(2, 0, 1)
    if not np.all(np.isfinite(Ginv)):
        return None
    b = np.einsum("gij,gj->gi", Ginv, Ze)
    ee = np.bincount(t.codes, weights=e * e, minlength=t.n_levels)[ok]
    s2 = (ee - np.einsum("gi,gi->g", Ze, b)).sum() / (n_j[ok] - q).sum()
    if not np.isfinite(s2) or s2 <= 0:
        return None
    # floor the eigenvalues in units of the Z columns' RMS (else a column ×1e-12 mixes
    # scales 1e24 apart and the floor swamps the small ones)
    sc = np.sqrt(np.maximum(np.diag(ZZ.sum(axis=0)), 1e-300) / max(len(e), 1))
    A = (np.cov(b.T) - s2 * Ginv.mean(axis=0)) / s2 * np.outer(sc, sc)
    w, V = np.linalg.eigh(A)
    w = np.maximum(w, 1e-6 * max(w.max(), 1e-12))
    th = theta_from_lower(np.linalg.cholesky((V * w) @ V.T) / sc[:, None])
    return dev.theta_from_centred(th) if centred else th


def start_theta(design, dev) -> np.ndarray:
    """Starting θ: moment estimates (scalar terms; a single vector term), else scaled identity.

    For a scalar intercept term k the variance of the level means of the OLS residuals
    estimates b_k = σ_k² + σ² mean(1/n_j); the residual variance is what the terms leave
    of the total, σ² = s² − Σ_k σ_k² (a few fixed-point sweeps, floored at s²/10), and
    θ_k = σ_k/σ.  From there BOBYQA needs ~45 evaluations on InstEval against ~115 from
    θ = 1, and ~35 instead of ~60 on Penicillin.  A model with one vector term starts
    from :func:`_random_coefficient_start`.
    """
    X, y = design.X, design.y
    if getattr(design, "offset", None) is not None:   # fit y − offset
        y = y - design.offset
    beta = None
    if X.shape[1] and getattr(design, "weights", None) is None and \
            getattr(design, "offset", None) is None:   # from the cross-products: no pass over X
        beta = ols_coefficients(dev.cp_data)
    if beta is None:
        beta = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    e = y - X @ beta
    if len(design.terms) == 1 and design.terms[0].q > 1:
        th = _random_coefficient_start(design, dev, beta, e)
        if th is not None and np.all(np.isfinite(th)):
            return th
    s2 = max(float(e.var()), 1e-300)
    scalar = [t.q == 1 and np.all(t.Z == 1.0) for t in design.terms]
    stats = {}
    for k, t in enumerate(design.terms):
        if scalar[k]:
            n_j = np.maximum(np.bincount(t.codes, minlength=t.n_levels).astype(float), 1)
            m_j = np.bincount(t.codes, weights=e, minlength=t.n_levels) / n_j
            within = (e - m_j[t.codes]) @ (e - m_j[t.codes]) / max(len(e) - t.n_levels, 1)
            stats[k] = (m_j.var(), np.mean(1.0 / n_j), within)
    sigma2 = s2
    var = {}
    # floor of σ²: the smallest pooled within-level variance (an upper bound of σ² that is
    # not swamped when one term carries nearly all of var(y), e.g. σ_a = 10⁵ σ)
    floor = min([0.1 * s2] + [w for *_, w in stats.values() if w > 0])
    for _ in range(5):
        var = {k: max(b - sigma2 * inv_n, 0.01 * sigma2) for k, (b, inv_n, _) in stats.items()}
        sigma2 = max(s2 - sum(var.values()), floor)
    parts = []
    for k, t in enumerate(design.terms):
        if scalar[k]:
            parts.append(np.array([np.sqrt(var[k] / sigma2)]))
        else:
            s = np.sqrt(np.mean(t.Z ** 2, axis=0))
            parts.append(theta_from_lower(np.diag(1.0 / np.where(s > 0, s, 1.0))))
    return np.concatenate(parts)
