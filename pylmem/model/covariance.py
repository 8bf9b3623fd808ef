"""The covariance parameters θ of the random effects and the maps θ ↔ Λ.

Each term k has a lower-triangular relative covariance factor T_k (Ω_k = σ² T_k T_k',
Λ = ⊕_k I_{L_k} ⊗ T_k); θ holds T_k's lower triangle column by column (lme4's order), its
diagonal entries bounded below by 0 (:func:`theta_diagonal_mask`).  This module is the one
place that maps parameters to T_k: a covariance structure (a map from fewer parameters to
T_k) belongs here, and every reader of a fit (summary, profile, bootstrap, df) goes through it.

lme4's scale of the variance parameters: lme4's ``confint``, ``profile`` and ``bootMer`` report the random-effects parameters as
``.sig01, .sig02, …`` followed by ``.sigma``: for each term k in the model's term order,
the entries of its lower triangle taken column by column (θ's order), where a diagonal
entry (i, i) is the standard deviation of coefficient i and an off-diagonal entry (i, j)
the correlation of coefficients i and j.  For ``(Days | Subject)``: .sig01 = sd of the
intercept, .sig02 = cor(intercept, Days), .sig03 = sd of Days.  The numbering runs on
across terms.
"""
from __future__ import annotations

import numpy as np


def tril_colmajor(q: int):
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return rows[order], cols[order]


def sdcor_names(qs) -> list[str]:
    """``.sig01``, ``.sig02``, … for terms of sizes ``qs`` (then ``.sigma`` is separate)."""
    n = sum(q * (q + 1) // 2 for q in qs)
    return [f".sig{i + 1:02d}" for i in range(n)]


def sdcor_labels(terms) -> list[str]:
    """Readable labels for the same entries: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``."""
    out = []
    for t in terms:
        rows, cols = tril_colmajor(t.q)
        for i, j in zip(rows, cols):
            if i == j:
                out.append(f"sd_{t.coef_names[i]}|{t.name}")
            else:
                out.append(f"cor_{t.coef_names[i]}.{t.coef_names[j]}|{t.name}")
    return out


def sdcor_from_theta(theta, sigma: float, qs) -> np.ndarray:
    """The .sigNN values from θ (lme4's relative Cholesky factors) and σ.

    Ω_k = σ² T_k T_k'; sd_i = √Ω_ii, cor_ij = Ω_ij / (sd_i sd_j) (NaN when an sd is 0).
    """
    theta = np.asarray(theta, dtype=float)
    out, off = [], 0
    for q in qs:
        rows, cols = tril_colmajor(q)
        T = np.zeros((q, q))
        T[rows, cols] = theta[off:off + len(rows)]
        off += len(rows)
        Om = sigma ** 2 * T @ T.T
        sd = np.sqrt(np.maximum(np.diag(Om), 0.0))
        for i, j in zip(rows, cols):
            if i == j:
                out.append(sd[i])
            else:
                den = sd[i] * sd[j]
                out.append(Om[i, j] / den if den > 0 else np.nan)
    return np.asarray(out)


def theta_from_sdcor(sdcor, sigma: float, qs) -> np.ndarray:
    """Inverse of :func:`sdcor_from_theta` (θ = vech chol(Ω_k / σ²), lower, column-major)."""
    sdcor = np.asarray(sdcor, dtype=float)
    out, off = [], 0
    for q in qs:
        rows, cols = tril_colmajor(q)
        vals = sdcor[off:off + len(rows)]
        off += len(rows)
        sd = np.zeros(q)
        C = np.eye(q)
        for v, i, j in zip(vals, rows, cols):
            if i == j:
                sd[i] = v
            else:
                C[i, j] = C[j, i] = v
        Om = np.outer(sd, sd) * C / sigma ** 2
        T = psd_cholesky(Om)
        out.append(T[rows, cols])
    return np.concatenate(out) if out else np.zeros(0)


def psd_cholesky(M: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Lower factor T with T T' = M for a positive semi-definite M (zero pivots allowed)."""
    q = M.shape[0]
    T = np.zeros_like(M, dtype=float)
    scale = max(float(np.abs(np.diag(M)).max()), 1e-300) if q else 1.0
    for j in range(q):
        d = M[j, j] - T[j, :j] @ T[j, :j]
        if d <= tol * scale:
            continue
        T[j, j] = np.sqrt(d)
        T[j + 1:, j] = (M[j + 1:, j] - T[j + 1:, :j] @ T[j, :j]) / T[j, j]
    return T


def lower_from_theta(theta: np.ndarray, q: int) -> np.ndarray:
    """Lower-triangular q × q factor from θ, lower triangle stored column by column (lme4)."""
    T = np.zeros((q, q))
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))  # column-major
    T[rows[order], cols[order]] = theta
    return T


def theta_from_lower(T: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lower_from_theta`."""
    q = T.shape[0]
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return T[rows[order], cols[order]].copy()


def theta_diagonal_mask(q: int) -> np.ndarray:
    """Boolean mask of the θ entries that lie on the diagonal of the q × q factor."""
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return rows[order] == cols[order]
