"""lme4's variance parameters on the standard-deviation / correlation scale.

lme4's ``confint``, ``profile`` and ``bootMer`` report the random-effects parameters as
``.sig01, .sig02, …`` followed by ``.sigma``: for each term k in the model's term order,
the entries of its lower triangle taken column by column (θ's order), where a diagonal
entry (i, i) is the standard deviation of coefficient i and an off-diagonal entry (i, j)
the correlation of coefficients i and j.  For ``(Days | Subject)``: .sig01 = sd of the
intercept, .sig02 = cor(intercept, Days), .sig03 = sd of Days.  The numbering runs on
across terms.
"""
from __future__ import annotations

import numpy as np


def _tril_colmajor(q: int):
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
        rows, cols = _tril_colmajor(t.q)
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
        rows, cols = _tril_colmajor(q)
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
        rows, cols = _tril_colmajor(q)
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
        from .batched import psd_cholesky

        T = psd_cholesky(Om)
        out.append(T[rows, cols])
    return np.concatenate(out) if out else np.zeros(0)
