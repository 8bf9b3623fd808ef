"""Per-observation diagnostics, as lme4: residual types, leverages, Cook's distance,
studentized residuals, and case / group deletion (``influence.merMod``).

With e_i = y_i − ŷ_i (response residual), r_i = √w_i e_i (Pearson, lme4's ``wtres``),
h_i the leverage (diagonal of the hat matrix, :func:`pylmem.postfit.intervals.hatvalues`) and p
the rank of X:

    Cook's D_i = (r_i / (1 − h_i))² h_i / (σ² p),    rstudent_i = r_i / (σ √(1 − h_i)).

``influence`` refits the model with each case (or each level of ``groups``) deleted,
starting from θ̂, on the same design (rows removed; a deleted level's random effect is
then fixed by its prior alone, which leaves the estimates as a refit on the subset would).
"""
from __future__ import annotations

import warnings
from copy import copy
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..estimation.fitting import estimate
from ..model.tables import as_pandas
from .intervals import hatvalues as _h
from .intervals import one_blas_thread

RESIDUAL_TYPES = ("response", "pearson", "working", "deviance")


def residuals_of(fit, type: str = "response", scaled: bool = False) -> pd.Series:  # noqa: A002
    """lme4's ``residuals(fit, type=)``: "response"/"working" y − ŷ; "pearson"/"deviance"
    √w (y − ŷ) (equal for a Gaussian model); ``scaled``: divided by σ."""
    if type not in RESIDUAL_TYPES:
        raise ValueError(f"type must be one of {', '.join(RESIDUAL_TYPES)}, got {type!r}")
    d = fit.design
    e = d.y - fit.fitted_model_order()
    if type in ("pearson", "deviance") and d.weights is not None:
        e = e * np.sqrt(d.weights)
    if scaled:
        e = e / fit.sigma
    return fit.data_series(e, f"residuals.{type}")


def hatvalues(fit) -> pd.Series:
    """Leverages h_i (lme4's ``hatvalues``); Σ h_i = ``fit.hat_trace``."""
    return _h(fit)


def cooks_distance(fit) -> pd.Series:
    """Cook's distance as lme4's ``cooks.distance.merMod`` (see module docstring)."""
    hs = hatvalues(fit)
    h = hs.to_numpy()
    r = residuals_of(fit, "pearson").to_numpy()
    p = max(fit.design.n_fixef, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (r / (1 - h)) ** 2 * h / (fit.sigma2 * p)
    out[np.isinf(out)] = np.nan
    return pd.Series(out, index=hs.index, name="cooks")


def rstudent(fit) -> pd.Series:
    """Studentized residuals as lme4's ``rstudent.merMod``: r_i / (σ √(1 − h_i))."""
    h = hatvalues(fit)
    r = residuals_of(fit, "pearson").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sign(r) * np.sqrt(r ** 2 + h.to_numpy() * r ** 2 / (1 - h.to_numpy())) / fit.sigma
    out[np.isinf(out)] = np.nan
    return pd.Series(out, index=h.index, name="rstudent")


# ----------------------------------------------------------------------------- deletion
def subset_design(design, keep: np.ndarray):
    """The design restricted to the model-order rows ``keep`` (boolean), levels kept."""
    terms = []
    for t in design.terms:
        t2 = copy(t)
        t2.Z = t.Z[keep]
        t2.codes = t.codes[keep]
        terms.append(t2)
    kept_pos = design.order[keep]
    return replace(design, y=design.y[keep], X=design.X[keep], terms=terms,
                   row_labels=design.row_labels[keep],
                   order=np.argsort(np.argsort(kept_pos, kind="stable"), kind="stable"),
                   weights=None if design.weights is None else design.weights[keep],
                   offset=None if design.offset is None else design.offset[keep],
                   frame=None if getattr(design, "frame", None) is None
                   else design.frame.iloc[np.flatnonzero(keep)])


def _var_comp(fit) -> pd.Series:
    """σ² then each term's lower-triangle covariances, named as lme4's influence()."""
    vals, names = [fit.sigma2], ["sigma^2"]
    cov = fit.cov_re
    one = len(cov) == 1
    for g, C in cov.items():
        cn = list(C.columns)
        M = C.to_numpy()
        for j in range(len(cn)):
            for i in range(j, len(cn)):
                e = f"v[{cn[i]}]" if i == j else f"C[{cn[i]},{cn[j]}]"
                names.append(e if one else f"{g}:{e}")
                vals.append(M[i, j])
    return pd.Series(vals, index=names)


@dataclass
class Influence:
    """Deletion diagnostics (lme4's ``influence.merMod``): one row per deleted case/group."""

    groups: str
    fixed_effects: pd.DataFrame     # β̂ with the row/group deleted
    var_comp: pd.DataFrame          # σ² and covariances with it deleted
    vcov: dict                      # deleted label -> vcov(β̂) of the refit
    converged: pd.Series
    fixef: pd.Series                # β̂ of the full fit
    hat: pd.Series                  # leverages of the full fit

    full_vcov: np.ndarray = None    # vcov(β̂) of the full fit

    def dfbeta(self) -> pd.DataFrame:
        """β̂₍₋ᵢ₎ − β̂ for each deletion (lme4's ``dfbeta.influence.merMod``)."""
        return self.fixed_effects - self.fixef

    def dfbetas(self) -> pd.DataFrame:
        """(β̂₍₋ᵢ₎ − β̂) / SE₍₋ᵢ₎(β̂) as lme4's ``dfbetas.influence.merMod``."""
        se = np.array([np.sqrt(np.diag(self.vcov[k])) for k in self.fixed_effects.index])
        return self.dfbeta() / se

    def cooks_distance(self) -> pd.Series:
        """Deletion Cook's distance as lme4's ``cooks.distance.influence.merMod``:
        dᵢ' V⁻¹ dᵢ (n − p)/(n p), dᵢ = β̂₍₋ᵢ₎ − β̂, V = vcov(β̂) of the full fit,
        n the number of deletions."""
        D = self.dfbeta().to_numpy()
        n, p = D.shape
        Vi = np.linalg.inv(self.full_vcov) * (n - p) / (n * p)
        return pd.Series(np.einsum("ij,jk,ik->i", D, Vi, D), index=self.fixed_effects.index,
                         name="cooks")


def influence(fit, groups=None, *, data: pd.DataFrame | None = None) -> Influence:
    """Refit with each case (``groups=None``) or each level of ``groups`` deleted.

    ``groups``: the name of a grouping factor of the model (e.g. ``"Subject"``), a column
    of ``data`` (the data the model was fitted to), or an array of labels one per used row
    in the data's row order.  Each refit starts from θ̂ (cheap: a few evaluations).
    """
    d = fit.design
    n = d.n_obs
    if groups is None:
        labels = np.asarray(d.row_labels)            # model order
        gname = ".case"
    elif isinstance(groups, str) and any(":".join(t.group) == groups for t in d.terms):
        t = next(t for t in d.terms if ":".join(t.group) == groups)
        labels = np.asarray(t.levels)[t.codes]
        gname = groups
    elif isinstance(groups, str):
        if data is not None:
            data = as_pandas(data)
        if data is None or groups not in getattr(data, "columns", []):
            raise ValueError(f"groups {groups!r} is not a grouping factor of the model "
                             "(pass data= holding that column)")
        labels = data.loc[d.row_labels, groups].to_numpy()
        gname = groups
    else:
        a = np.asarray(groups)
        if a.shape != (n,):
            raise ValueError(f"groups has {a.size} labels for {n} rows")
        labels = a[d.order]                          # data order -> model order
        gname = "groups"
    uniq = pd.unique(labels)
    fe, vc, vcov, conv = [], [], {}, []
    with one_blas_thread(fit):
        for g in uniq:
            keep = labels != g
            sub = subset_design(d, keep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f1 = estimate(sub, reml=fit.reml, verbose=False, theta0=fit.theta, cls=type(fit))
            fe.append(f1.beta)
            vc.append(_var_comp(f1).to_numpy())
            vcov[g] = f1.vcov.to_numpy()
            conv.append(f1.converged)
    idx = pd.Index(uniq, name=gname)
    return Influence(groups=gname,
                     fixed_effects=pd.DataFrame(np.array(fe), index=idx, columns=d.fixef_names),
                     var_comp=pd.DataFrame(np.array(vc), index=idx, columns=_var_comp(fit).index),
                     vcov=vcov, converged=pd.Series(conv, index=idx, name="converged"),
                     fixef=fit.fixef, hat=hatvalues(fit), full_vcov=fit.vcov.to_numpy())
