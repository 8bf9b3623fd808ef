"""Standard errors and intervals of predictions, and the leverages they share.

With A = [ZΛ X] and M = A'A + diag(I, 0) = F F' the mixed-model equations at θ̂ (F the
blocked factor: F = [[L, 0], [C_X', R_X]]), the conditional covariance of the errors of
(û, β̂) is σ² M⁻¹.  A prediction x'β̂ + z'Λû of x'β + z'b therefore has variance

    σ² ‖F⁻¹ a‖²,  a = [Λ'z; x]:  L v₁ = Λ'z,  R_X v₂ = x − C_X' v₁,  var = σ²(‖v₁‖² + ‖v₂‖²),

solved per row with the blocked factor (no n × n or q × q inverse): batched q₀ × q₀
solves for the first term; for the rest block r'S r with S = (L_R L_R')⁻¹ and, per level
of the first term, H_c = M_c'S and G_c = M_c'S M_c formed once (M_c: L_R0's columns of
level c), so a row costs O((Σ q_k)²); R_X⁻¹ (p × p) once for the fixed effects.  A level of a
grouping factor absent from the fit has b at its prior, variance σ² ‖T_k' z‖²; a
prediction interval adds the residual variance σ² (σ²/w for prior weights w).  The same
solve gives the leverages: h_i = w_i ‖F⁻¹ a_i‖² is the diagonal of the hat matrix
(lme4's ``hatvalues``), and Σ h_i = tr(P).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from ..numerics import batched as B
from ..util.checks import check_level
from ..util.lazy import stats
from ..util.threads import threads_for_block
from .newdata import combine_rows, fitted_prediction, newdata_rows, selected_terms

_CHUNK = 4096   # rows per block of the solve (bounds the m × rows dense work array)


_DENSE_S_MAX = 6000   # largest rest block whose inverse S is formed (m² doubles)
_LEVEL_OPS_MAX = 10_000_000   # largest G q0 × m matrix H = L_R0'S kept for the per-level path


def _rest_operators(fit, p):
    """S = (L_RR L_RR')⁻¹ (m × m) and K = L_RR⁻ᵀ C_RX (m × p), formed once per fit.

    With them ‖L_RR⁻¹ r‖² = r'S r and C_RX'L_RR⁻¹ r = K'r for the sparse right-hand sides
    r of the rows: a sparse-dense product per block of rows instead of a dense triangular
    solve (m × nnz against m² per row).  Cached on the fit (θ̂ is fixed)."""
    cache = fit.__dict__.setdefault("_intervals_cache", {})
    if "S" not in cache:
        f = fit.factor
        m = f.LRR.m
        if m <= _DENSE_S_MAX:
            Li = f.LRR.solve_L(np.eye(m))
            cache["S"] = Li.T @ Li
        else:
            cache["S"] = None        # too large: solve per block of rows instead
        cache["K"] = f.LRR.solve_Lt(f.CR[:, :p])
    return cache["S"], cache["K"]


def _level_operators(fit, S, K, q0):
    """Per first-term level c, with M_c = L_R0[:, c] (m × q0) and H = L_R0'S:
    H (G q0 × m), G_c = M_c'S M_c (G, q0, q0) and M_c'K (G, q0, p).  Then for a row at level c
    with r = a_R − M_c v0: r'S r = a_R'S a_R − 2 v0'H_c a_R + v0'G_c v0, and K'r likewise,
    so each row costs O((Σ q_k)² + q0²) instead of a product with the m × m matrix S."""
    cache = fit.__dict__.setdefault("_intervals_cache", {})
    if "H" not in cache:
        LR0 = fit.factor.LR0
        A = sp.csc_matrix(LR0) if sp.issparse(LR0) else sp.csc_matrix(np.asarray(LR0))
        GQ = A.shape[1]
        H = np.asarray(A.T @ S)                                   # (G q0, m)
        col = np.repeat(np.arange(GQ), np.diff(A.indptr))         # column of each entry
        c, j = col // q0, col % q0
        Gc = np.zeros(GQ // q0 * q0 * q0)
        for i in range(q0):
            w = H[c * q0 + i, A.indices] * A.data
            Gc += np.bincount((c * q0 + i) * q0 + j, weights=w, minlength=len(Gc))
        cache["H"] = H
        cache["G"] = Gc.reshape(-1, q0, q0)
        cache["MK"] = np.asarray(A.T @ K).reshape(-1, q0, K.shape[1])
    return cache["H"], cache["G"], cache["MK"]


def _solve_rows(fit, X, Zs, codes, use) -> np.ndarray:
    """‖F⁻¹ a_i‖² for rows with fixed-effects row x_i and term rows z_ki at level codes_ki.

    ``Zs[k]`` (n, q_k), ``codes[k]`` (n,) with −1 for a level not in the fit, ``use[k]``
    whether term k enters the prediction (its Λ'z is 0 otherwise).
    """
    f, d = fit.factor, fit.design
    n, p = X.shape
    out = np.empty(n)
    T = f.T
    q0 = T[0].shape[0]
    # R_X⁻¹ once (p × p): a triangular solve with many right-hand sides hands off to BLAS
    # threads, ~100× slower than this product for small p on a loaded machine
    RXinv_t = sla.solve_triangular(f.RX, np.eye(p), lower=True).T if p else None
    chunk = _CHUNK
    fast = False
    if f.LRR is not None:
        S, K = _rest_operators(fit, p)
        m = f.LRR.m
        if S is None:
            chunk = max(16, 20_000_000 // m)
        elif f.L0.shape[0] * q0 * m <= _LEVEL_OPS_MAX:
            fast = True
            H, Gc, MK = _level_operators(fit, S, K, q0)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        nb = sl.stop - sl.start
        # first term: L0_c v = T0' z at the row's level c
        c0 = codes[0][sl]
        known = (c0 >= 0) & use[0]
        a0 = np.where(known[:, None], Zs[0][sl] @ T[0], 0.0)          # (nb, q0) = (T0' z)'
        cc = np.where(known, c0, 0)
        v0 = B.solve_lower(f.L0[cc], a0[:, :, None])[:, :, 0]         # (nb, q0)
        v0[~known] = 0.0
        acc = (v0 ** 2).sum(axis=1)
        CXv = np.einsum("nqp,nq->np", f.C0[cc][:, :, :p], v0)        # C_X0' v0, (nb, p)
        if fast:
            # a_R of each row: Σ_k q_k positions P and values V (0 where not used / new)
            P, V = [], []
            off = 0
            for k, t in enumerate(d.terms[1:], start=1):
                ck = codes[k][sl]
                ok = (ck >= 0) & use[k]
                P.append(off + np.where(ok, ck, 0)[:, None] * t.q + np.arange(t.q)[None, :])
                V.append(np.where(ok[:, None], Zs[k][sl] @ T[k], 0.0))
                off += t.n_levels * t.q
            P, V = np.hstack(P), np.hstack(V)                          # (nb, Q)
            aSa = np.einsum("na,nab,nb->n", V, S[P[:, :, None], P[:, None, :]], V)
            Hrow = H[(cc[:, None] * q0 + np.arange(q0))[:, :, None], P[:, None, :]]  # (nb, q0, Q)
            cross = np.einsum("ni,nia,na->n", v0, Hrow, V)
            quad = np.einsum("ni,nij,nj->n", v0, Gc[cc], v0)
            acc += aSa - 2 * cross + quad
            if p:
                CXv += np.einsum("na,nap->np", V, K[P]) - np.einsum("ni,nip->np", v0, MK[cc])
        elif f.LRR is not None:
            # r = Λ_R'z_R − L_R0 v0 (sparse, rows × m), then ‖L_RR⁻¹ r‖² = r'S r
            ri, ci, vals = [], [], []
            off = 0
            for k, t in enumerate(d.terms[1:], start=1):
                ck = codes[k][sl]
                ok = (ck >= 0) & use[k]
                z = Zs[k][sl][ok] @ T[k]                               # rows of (T' z)'
                ri.append(np.repeat(np.flatnonzero(ok), t.q))
                ci.append((off + ck[ok, None] * t.q + np.arange(t.q)[None, :]).ravel())
                vals.append(z.ravel())
                off += t.n_levels * t.q
            aR = sp.csr_matrix((np.concatenate(vals), (np.concatenate(ri), np.concatenate(ci))),
                               shape=(nb, m))
            V0 = sp.csr_matrix((v0.ravel(), (np.repeat(np.arange(nb), q0),
                                             (cc[:, None] * q0 + np.arange(q0)).ravel())),
                               shape=(nb, f.L0.shape[0] * q0))
            LR0 = f.LR0
            Rt = aR - (V0 @ LR0.T if sp.issparse(LR0) else sp.csr_matrix(V0 @ LR0.T))
            Rt = sp.csr_matrix(Rt)
            if S is not None:
                acc += np.asarray(Rt.multiply(Rt @ S).sum(axis=1)).ravel()
            else:
                acc += (f.LRR.solve_L(Rt.T.toarray()) ** 2).sum(axis=0)
            if p:
                CXv += Rt @ K
        if p:
            v2 = (X[sl] - CXv) @ RXinv_t                                # rows of R_X⁻¹(x − C_X'v)
            acc += (v2 ** 2).sum(axis=1)
        out[sl] = acc
    return out


def one_blas_thread(fit):
    """One BLAS thread for small models (m < 512): see :mod:`pylmem.util.threads`."""
    return threads_for_block(getattr(fit.dev, "m", 0), one_term_too=True)


def _prior_rows(fit, Zs, codes, use) -> np.ndarray:
    """Σ_k ‖T_k' z_k‖² over the terms whose level is new (b at its prior, / σ²)."""
    out = np.zeros(len(codes[0]))
    for k, T in enumerate(fit.factor.T):
        new = (codes[k] < 0) & use[k]
        if new.any():
            out[new] += ((Zs[k][new] @ T) ** 2).sum(axis=1)
    return out


def model_rows(fit):
    """(X, Zs, codes) of the fitted rows, model order."""
    d = fit.design
    return d.X, [t.Z for t in d.terms], [t.codes for t in d.terms]


def prediction_variance(fit, X, Zs, codes, sel) -> np.ndarray:
    """Var(prediction error)/σ² of x'β̂ + Σ_{k∈sel} z_k'b̂_k for each row (NaN rows kept)."""
    use = [k in sel for k in range(len(fit.design.terms))]
    bad = np.isnan(X).any(axis=1)
    for k in sel:
        bad |= np.isnan(Zs[k]).any(axis=1)
    Xc = np.where(bad[:, None], 0.0, X)
    Zc = [np.nan_to_num(Z) for Z in Zs]
    with one_blas_thread(fit):
        v = _solve_rows(fit, Xc, Zc, codes, use) + _prior_rows(fit, Zc, codes, use)
    v[bad] = np.nan
    return v


def hatvalues(fit) -> pd.Series:
    """Diagonal of the hat matrix P (ŷ = P y), lme4's ``hatvalues``, data row order."""
    X, Zs, codes = model_rows(fit)
    with one_blas_thread(fit):
        h = _solve_rows(fit, X, Zs, codes, [True] * len(Zs))
    w = fit.design.weights
    if w is not None:
        h = h * w
    return fit.data_series(h, "hat")


def predict_with_se(fit, newdata=None, *, re_form=None, allow_new_levels=False, se_fit=False,
                    interval=None, level=0.95) -> pd.DataFrame:
    """Predictions with standard errors and/or intervals (columns fit, se_fit, lwr, upr).

    ``interval="confidence"``: for the conditional mean x'β + z'b (or x'β for
    re_form="~0"); ``"prediction"``: for a new observation, adding σ².  Normal quantiles.
    """
    if interval not in (None, "confidence", "prediction"):
        raise ValueError(f"interval must be None, 'confidence' or 'prediction', got {interval!r}")
    level = check_level(level)
    sel = selected_terms(fit, re_form)
    if newdata is None:
        point = fitted_prediction(fit, sel)
        X, Zs, codes = model_rows(fit)
        var = fit.design.to_data_order(prediction_variance(fit, X, Zs, codes, sel))
        wres = fit.design.weights
        wres = 1.0 if wres is None else fit.design.to_data_order(wres)
    else:
        if not isinstance(newdata, pd.DataFrame):
            raise ValueError("newdata must be a pandas DataFrame")
        X, offset, Zs, codes = newdata_rows(fit, newdata, sel, allow_new_levels)
        point = pd.Series(combine_rows(fit, X, offset, Zs, codes, sel), index=newdata.index)
        var = prediction_variance(fit, X, Zs, codes, sel)
        wres = 1.0
    s2 = fit.sigma2
    se = np.sqrt(s2 * var)
    out = pd.DataFrame({"fit": point.to_numpy()}, index=point.index)
    if se_fit or interval is None:
        out["se_fit"] = se
    if interval is not None:
        width = se if interval == "confidence" else np.sqrt(s2 * var + s2 / wres)
        z = stats.norm.ppf(0.5 + level / 2)
        out["lwr"] = out["fit"] - z * width
        out["upr"] = out["fit"] + z * width
    return out
