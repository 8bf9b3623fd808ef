"""``lmer``: fit a linear mixed model; :class:`LmerFit`, the fitted-model hub.

The pipeline is lme4's, visible step by step: formula ->
:func:`~pylmem.model.design.build_design` -> :func:`~pylmem.estimation.fitting.estimate`
(cross-products, profiled deviance, optimiser or EM) -> :class:`LmerFit`.

:class:`LmerFit` is a thin hub: its state and lme4's accessors are
:class:`~pylmem.estimation.state.FitState`'s; every other method delegates to a function of
a capability subpackage that takes the fit (inference, post-fit, reports).  A Dask data frame
is fitted where it lives (:mod:`pylmem.scaleout`) into a :class:`DaskLmerFit`.
"""
from __future__ import annotations

import time
from functools import cached_property

import numpy as np
import pandas as pd

from ..estimation.convergence import ConvergenceWarning
from ..estimation.fitting import estimate
from ..estimation.state import FitState
from ..inference import bootstrap as bootstrap_mod
from ..inference import profile as profile_mod
from ..inference.ddf import coef_table
from ..inference.ftests import single_anova
from ..inference.lsmeans import ls_means
from ..model.design import ModelDesign, apply_cov_mask, build_design
from ..model.tables import as_pandas
from ..postfit import diagnostics, hat, measures
from ..postfit.predict import predict
from ..reports import summary as summary_mod
from ..reports import tidy as tidy_mod
from ..scaleout.fit import lmer_dask
from ..scaleout.results import DaskRows

__all__ = ["lmer", "fit_design", "LmerFit", "DaskLmerFit", "ConvergenceWarning"]


def lmer(formula: str, data: pd.DataFrame, *, reml: bool = True, method: str = "profiled",
         factors=(), verbose=None, em_options=None, weights=None, offset=None,
         cov_mask=None) -> "LmerFit":
    """Fit ``formula`` (lme4 syntax) to ``data`` by ML (``reml=False``) or REML.

    ``method="profiled"`` (default) minimises the profiled deviance (lme4's algorithm);
    ``method="em"`` runs the seed's accelerated EM to convergence (ML only), for models
    with one random-effects term.  Several terms (crossed, nested, ``(x || g)``) are
    rejected on purpose: the seed's E-step is per group, and with several terms the
    conditional covariance of b is no longer block diagonal, so each EM update needs the
    sparse factorization of Λ'Z'ZΛ + I (one profiled-deviance evaluation) plus the diagonal
    blocks of its inverse (a selected inversion, several times dearer), and EM needs tens to
    thousands of updates where the profiled deviance converges in ~30-120 evaluations.
    ``factors`` names numeric-looking columns to treat as categorical.
    ``verbose``: show a progress line (None: only on a terminal for fits over ~2 s).
    ``weights``: prior weights (column name or array; residual variance σ²/w_i);
    ``offset``: a known term of the linear predictor (column name or array), added to any
    ``offset(x)`` of the formula.  ``data`` may be pandas, polars or pyarrow.
    ``cov_mask``: the seed's mask C (q × q, symmetric 0/1, ones on the diagonal; a dict term
    name → C for several terms): covariances where C is 0 are fixed at zero
    (:func:`pylmem.model.design.apply_cov_mask`; covariance structures in the formula:
    ``diag()``, ``cs()``, ``ar1()`` with lme4 2.0's ``hom =``: see docs/structures.md).
    """
    if not isinstance(data, pd.DataFrame) and type(data).__module__.startswith("dask"):
        # a dask DataFrame, fitted where it lives
        if weights is not None or offset is not None:
            raise ValueError("weights= and offset= are not supported for a Dask DataFrame yet: "
                             "fit in memory, or fold the offset into the response")
        return lmer_dask(formula, data, reml=reml, method=method, factors=factors,
                         verbose=verbose, em_options=em_options, cls=DaskLmerFit)
    t0 = time.perf_counter()
    design = build_design(formula, as_pandas(data), factors=factors, weights=weights,
                          offset=offset)
    apply_cov_mask(design, cov_mask)
    return estimate(design, reml=reml, method=method, verbose=verbose, em_options=em_options,
                    cls=LmerFit, _t0=t0)


def fit_design(design: ModelDesign, *, reml=True, method="profiled", verbose=None, em_options=None,
               cp=None, theta0=None) -> "LmerFit":
    """Fit a prepared :class:`~pylmem.model.design.ModelDesign`.

    Parameters
    ----------
    design : ModelDesign
        From :func:`~pylmem.model.design.build_design`.
    reml, method, verbose, em_options
        As for :func:`lmer`.
    cp : CrossProducts, optional
        Precomputed cross-products (e.g. summed over Dask partitions).
    theta0 : array, optional
        Start of the optimiser (e.g. a previous fit's θ̂).

    Returns
    -------
    LmerFit
    """
    return estimate(design, reml=reml, method=method, verbose=verbose, em_options=em_options,
                    cp=cp, theta0=theta0, cls=LmerFit)


class LmerFit(FitState):
    """A fitted linear mixed model; names follow lme4 (fixef, ranef, VarCorr, logLik).

    The state and lme4's accessors (``fixef``, ``ranef``, ``coef``, ``varcorr``, ``vcov``,
    ``loglik``, ``aic``, ``bic``, ``fitted``, ``residuals``, ...) come from
    :class:`~pylmem.estimation.state.FitState`; every method below delegates to a function
    of a capability subpackage that takes the fit.
    """

    # ------------------------------------------------------------------ hat matrix (seed 2)
    @cached_property
    def hat_trace(self) -> float:
        """tr(P), P the hat matrix (P y = ŷ): see :func:`pylmem.postfit.hat.hat_trace`."""
        return hat.hat_trace(self)

    @property
    def edf(self) -> float:
        """Effective degrees of freedom tr(P) (seed 2)."""
        return self.hat_trace

    @property
    def df_resid_hat(self) -> float:
        """Residual degrees of freedom n − tr(P) (seed 2)."""
        return self.n_obs - self.hat_trace

    def hat_matrix(self, max_n: int = 5000) -> np.ndarray:
        """The n × n hat matrix P (data row order), small n only: :func:`pylmem.postfit.hat.hat_matrix`."""
        return hat.hat_matrix(self, max_n=max_n)

    # ------------------------------------------------------------------ prediction and refits
    def predict(self, newdata=None, *, re_form=None, allow_new_levels=True, se_fit=False,
                interval=None, level=0.95):
        """Predictions as lme4's predict(): see :func:`pylmem.postfit.predict.predict`; with
        ``se_fit``/``interval`` a DataFrame (fit, se_fit, lwr, upr)."""
        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels,
                       se_fit=se_fit, interval=interval, level=level)

    def refit(self, y=None, *, reml: bool | None = None) -> "LmerFit":
        """The same model refitted by ML (``reml=False``) or REML, reusing the design; with
        ``y`` (n values, the data's row order) refitted to that new response (lme4's
        ``refit(fit, newresp)``: X, Z and their cross-products reused)."""
        if y is not None:
            return bootstrap_mod.refit_response(self, y, reml=reml)
        if reml is None:
            raise TypeError("refit() needs a new response y, or reml=True/False")
        if reml == self.reml and self.method == "profiled":
            return self
        return estimate(self.design, reml=reml, cp=self.cp, verbose=False, cls=type(self))

    # ------------------------------------------------------------------ simulation, bootstrap
    def simulate(self, nsim: int = 1, seed=None, use_u: bool = False) -> np.ndarray:
        """(n, nsim) responses simulated from the fit: see :func:`pylmem.inference.bootstrap.simulate`."""
        return bootstrap_mod.simulate(self, nsim, seed=seed, use_u=use_u)

    def bootstrap(self, nsim: int, seed=None, **kw):
        """Parametric bootstrap (lme4's bootMer): see :func:`pylmem.inference.bootstrap.bootstrap`."""
        return bootstrap_mod.bootstrap(self, nsim, seed=seed, **kw)

    # ------------------------------------------------------------------ inference
    def coef_table(self, ddf=None):
        """lmerTest's coefficient table (``ddf``: None, "Satterthwaite", "Kenward-Roger")."""
        return coef_table(self, ddf=ddf)

    def confint(self, method="profile", level=0.95, **kw):
        """Confidence intervals as lme4's confint(): see :func:`pylmem.inference.profile.confint`."""
        return profile_mod.confint(self, method=method, level=level, **kw)

    def profile(self, which=None, **kw):
        """The likelihood profile on lme4's ζ scale: see :func:`pylmem.inference.profile.profile`."""
        return profile_mod.profile(self, which=which, **kw)

    def anova(self, type=3, ddf="Satterthwaite"):
        """lmerTest's F tests of the fixed-effects terms: see :func:`pylmem.inference.ftests.single_anova`."""
        return single_anova(self, type=type, ddf=ddf)

    def ls_means(self, which=None, *, level=0.95, ddf="Satterthwaite", pairwise=False, data=None):
        """lmerTest's least-squares means: see :func:`pylmem.inference.lsmeans.ls_means`."""
        return ls_means(self, which, level=level, ddf=ddf, pairwise=pairwise, data=data)

    # ------------------------------------------------------------------ diagnostics, measures
    def residuals_of(self, type: str = "response", scaled: bool = False) -> pd.Series:  # noqa: A002
        """Residuals of lme4's types ("response", "pearson", ...): :mod:`pylmem.postfit.diagnostics`."""
        return diagnostics.residuals_of(self, type, scaled=scaled)

    def hatvalues(self) -> pd.Series:
        """Leverages (diagonal of the hat matrix; they sum to ``hat_trace``)."""
        return diagnostics.hatvalues(self)

    def cooks_distance(self) -> pd.Series:
        """Cook's distance, as lme4's cooks.distance."""
        return diagnostics.cooks_distance(self)

    def rstudent(self) -> pd.Series:
        """Studentized residuals, as lme4's rstudent."""
        return diagnostics.rstudent(self)

    def influence(self, groups=None, *, data=None):
        """Case / group deletion by refitting (lme4's influence.merMod)."""
        return diagnostics.influence(self, groups, data=data)

    def r2(self) -> pd.Series:
        """Nakagawa–Schielzeth marginal and conditional R²."""
        return measures.r2(self)

    def icc(self, by_group: bool = False) -> pd.Series:
        """Intraclass correlation (adjusted and conditional)."""
        return measures.icc(self, by_group=by_group)

    def rePCA(self) -> dict:  # noqa: N802 - lme4's name
        """lme4's rePCA: principal components of each grouping factor's random effects."""
        return measures.rePCA(self)

    # ------------------------------------------------------------------ reports
    def tidy(self, effects=("ran_pars", "fixed"), conf_int: bool = False,
             conf_level: float = 0.95, ddf=None) -> pd.DataFrame:
        """broom.mixed's tidy table (effect, group, term, estimate, std.error, ...)."""
        return tidy_mod.tidy(self, effects=effects, conf_int=conf_int, conf_level=conf_level,
                             ddf=ddf)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's one-row glance table."""
        return tidy_mod.glance(self)

    def __repr__(self) -> str:
        return summary_mod.short_repr(self)

    def summary(self, ddf=None) -> "object":
        """lme4's summary(): an object whose str() is the printed summary; ``ddf``
        ("Satterthwaite", "Kenward-Roger") gives lmerTest's layout with df and p-values."""
        return summary_mod.Summary(self) if ddf is None else summary_mod.Summary(self, ddf=ddf)


class DaskLmerFit(DaskRows, LmerFit):
    """A fit to a Dask DataFrame: :class:`LmerFit` with lazy row-level results
    (:class:`~pylmem.scaleout.results.DaskRows`)."""
