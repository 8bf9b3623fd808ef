"""Summary measures of a fit: Nakagawa–Schielzeth R², the ICC, and lme4's rePCA.

Variance components (Nakagawa & Schielzeth 2013, random slopes as Johnson 2014):

    σ²_f = var(X β̂)  (sample variance, n − 1),
    σ²_r = Σ_k mean_i z_ki' Ω_k z_ki  (= σ²_k for a random intercept),
    σ²_ε = σ²;
    R²_marginal = σ²_f / (σ²_f + σ²_r + σ²_ε),   R²_conditional = (σ²_f + σ²_r) / (…).

ICC (as the ``performance`` package): adjusted σ²_r / (σ²_r + σ²_ε), conditional
σ²_r / (σ²_f + σ²_r + σ²_ε); ``by_group`` gives σ²_k / (σ²_r + σ²_ε) per term.

rePCA (lme4): per grouping factor, the singular values of the block-diagonal relative
factor ⊕ T_k (the standard deviations of the random effects' principal components in
units of σ) and the left singular vectors; near-zero ones flag an over-parameterised term.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg as sla

from ..util.checks import check_bool


def _components_from_statistics(fit):
    """var(Xβ̂) and mean z'Ωz per term from the cross-products alone (a Dask fit keeps no
    rows): Σ(xβ − x̄β)² = β'(W̃'W̃ − s s'/n)β on the centred sums, Σ zz' = Σ_levels Z_j'Z_j."""
    cp, n, p = fit.cp, fit.n_obs, fit.design.n_fixef
    b = np.asarray(fit.beta, float)
    if cp.WtWc is not None:
        S = cp.WtWc[:p, :p] - np.outer(cp.wsum[:p], cp.wsum[:p]) / n
    else:
        xs = np.asarray(fit.row_stats.wsum[:p], float)
        S = cp.WtW[:p, :p] - np.outer(xs, xs) / n
    var_f = float(b @ S @ b) / (n - 1) if n > 1 else 0.0
    zz = [ts.ZtZ.sum(axis=0) for ts in cp.terms]
    return max(var_f, 0.0), zz


def variance_components(fit) -> dict:
    """σ²_f, σ²_r per term (dict), σ²_ε of the R² / ICC formulas above."""
    rows = hasattr(fit.design, "order")
    if rows:
        Xb = fit.design.X @ fit.beta
        var_f = float(np.var(Xb, ddof=1)) if len(Xb) > 1 else 0.0
    else:
        var_f, zz = _components_from_statistics(fit)
    var_r = {}
    for k, (t, (name, C)) in enumerate(zip(fit.design.terms, fit.cov_re.items())):
        O = C.to_numpy()
        if rows:
            var_r[name] = float(np.mean(np.einsum("ni,ij,nj->n", t.Z, O, t.Z)))
        else:
            var_r[name] = float(np.sum(O * zz[k])) / fit.n_obs
    return {"fixed": var_f, "random": var_r, "residual": fit.sigma2}


def r2(fit) -> pd.Series:
    """Marginal and conditional R² of Nakagawa & Schielzeth (2013)."""
    v = variance_components(fit)
    vr = sum(v["random"].values())
    tot = v["fixed"] + vr + v["residual"]
    return pd.Series({"R2_marginal": v["fixed"] / tot, "R2_conditional": (v["fixed"] + vr) / tot},
                     name="r2")


def icc(fit, by_group: bool = False) -> pd.Series:
    """Intraclass correlation: adjusted and conditional (or one per term, ``by_group``)."""
    by_group = check_bool(by_group, "by_group")
    v = variance_components(fit)
    vr = sum(v["random"].values())
    if by_group:
        return pd.Series({k: x / (vr + v["residual"]) for k, x in v["random"].items()}, name="icc")
    return pd.Series({"ICC_adjusted": vr / (vr + v["residual"]),
                      "ICC_conditional": vr / (v["fixed"] + vr + v["residual"])}, name="icc")


@dataclass
class PCA:
    """One grouping factor's principal components (R's prcomp fields)."""

    sdev: np.ndarray
    rotation: np.ndarray
    names: list

    def summary(self) -> pd.DataFrame:
        """Standard deviation, proportion of variance, cumulative proportion."""
        v = self.sdev ** 2
        prop = v / v.sum() if v.sum() > 0 else np.full_like(v, np.nan)
        cols = [f"PC{i + 1}" for i in range(len(v))]
        return pd.DataFrame([self.sdev, prop, np.cumsum(prop)], columns=cols,
                            index=["Standard deviation", "Proportion of Variance",
                                   "Cumulative Proportion"])

    def __repr__(self) -> str:
        return f"PCA({', '.join(self.names)})\n{self.summary().round(4)}"


def rePCA(fit) -> dict:  # noqa: N802 - lme4's name
    """lme4's ``rePCA``: grouping factor -> :class:`PCA` of its relative covariance factor."""
    groups: dict = {}
    for t, T in zip(fit.design.terms, fit.factor.T):
        groups.setdefault(":".join(t.group), []).append((t, T))
    out = {}
    for g, items in groups.items():
        M = sla.block_diag(*[T for _, T in items])
        U, s, _ = np.linalg.svd(M)
        out[g] = PCA(sdev=s, rotation=U, names=[c for t, _ in items for c in t.coef_names])
    return out
