"""Denominator degrees of freedom for fixed-effects tests: Satterthwaite and Kenward–Roger.

**Satterthwaite** (lmerTest's method).  The variance parameters are φ = (θ, σ) and the
criterion with β profiled out is

    ML:   d(θ, σ) = log|L_θ|² + r²(θ)/σ² + n log(2πσ²)
    REML: d(θ, σ) = log|L_θ|² + log|R_X|² + r²(θ)/σ² + (n − p) log(2πσ²)

(r² the penalised RSS).  Its Hessian H in φ gives Cov(φ̂) ≈ A = 2 H⁺ (pseudo-inverse on
the eigenvalues > 1e-8, as lmerTest).  C(φ) = Cov(β̂) = σ² R_X⁻ᵀ R_X⁻¹; for a contrast l,
v = l'C l and g_i = l' (∂C/∂φ_i) l, the df is ν = 2 v² / (g'A g).  The σ-derivatives are
analytic (∂C/∂σ = 2C/σ, ∂²d/∂σ² = 6r²/σ⁴ − 2ν/σ², ∂²d/∂θ∂σ = −2 ∂r²/∂θ / σ³); the
θ-derivatives of log|L|² (+ log|R_X|²), r² and R_X⁻ᵀR_X⁻¹ are central differences at
h, h/2 and h/4 (h = 0.03 max(|θ_i|, 0.05)) combined by two Richardson steps (error
O(h⁶), ~1e-9 relative: the balanced sleepstudy design gives df = 17 to ~1e-9, where one
central difference at h = 10⁻³ was 1e-5 off) through the public
:meth:`ProfiledDeviance.factor`, 3(1 + 2k²) factors.

**Kenward–Roger**: :mod:`pylmem.inference.kenward_roger`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..numerics.deviance import trsolve
from ..util.lazy import stats
from ..util.threads import one_blas_thread
from .kenward_roger import kr_adjust, kr_df_1d, vcov_adj

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
    Ri = trsolve(np.asfortranarray(f.RX), np.eye(p)) if p else np.zeros((0, 0))
    return a, f.pwrss, Ri.T @ Ri


_RICHARDSON = 3   # step sizes: 1 (O(h²)), 2 (one Richardson step, O(h⁴)), 3 (two, O(h⁶))


def _theta_derivatives(dev, theta, h):
    """Central differences with Richardson steps (``_RICHARDSON``): ∇a, ∇²a, ∇r², ∇²r², ∂C/∂θ_i."""
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
    if _RICHARDSON == 1:
        return r1
    r2 = one(h / 2)
    if _RICHARDSON == 2:
        return [(4 * b - a) / 3 for a, b in zip(r1, r2)]
    r3 = one(h / 4)
    e1 = [(4 * b - a) / 3 for a, b in zip(r1, r2)]
    e2 = [(4 * b - a) / 3 for a, b in zip(r2, r3)]
    return [(16 * b - a) / 15 for a, b in zip(e1, e2)]


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
    h = 0.03 * np.maximum(np.abs(theta), 0.05)
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

    Parameters
    ----------
    fit : LmerFit
        The model (Kenward-Roger needs a REML fit).
    ddf : {None, "Satterthwaite", "Kenward-Roger"}
        None: lme4's table (no df or p); "Satterthwaite" or "Kenward-Roger" add the df and
        the two-sided p-value from the t distribution on those df (any capitalisation).

    Returns
    -------
    pandas.DataFrame
        One row per fixed effect.
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
