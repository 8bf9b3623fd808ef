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
         data_name: str | None = None, REML: bool | None = None, cov_mask=None) -> "LmerFit":
    """Fit ``formula`` (lme4 syntax) to ``data`` by ML (``reml=False``) or REML.

    Parameters
    ----------
    formula : str
        An lme4 formula: ``"y ~ x + (x | g)"``, ``(x || g)``, crossed ``(1 | a) + (1 | b)``,
        nested ``(1 | a/b)``.
    data : DataFrame
        pandas, polars or pyarrow; a Dask DataFrame is fitted where it lives
        (:class:`DaskLmerFit`).
    reml : bool, default True
        REML (lme4's default) or maximum likelihood.
    method : {"profiled", "em"}, default "profiled"
        "profiled" minimises the profiled deviance (lme4's algorithm); "em" runs the seed's
        accelerated EM to convergence (ML only) for models with one random-effects term.
        Several terms (crossed, nested, ``(x || g)``) are rejected on purpose: the seed's
        E-step is per group, and with several terms the conditional covariance of b is no
        longer block diagonal, so each EM update needs the sparse factorization of
        Λ'Z'ZΛ + I (one profiled-deviance evaluation) plus the diagonal blocks of its
        inverse (a selected inversion, several times dearer), and EM needs tens to thousands
        of updates where the profiled deviance converges in ~30-120 evaluations.
    factors : sequence of str, optional
        Numeric-looking columns to treat as categorical (R's ``factor``).
    verbose : bool or None
        Show a progress line (None: only on a terminal, for fits over ~2 s).
    em_options : dict, optional
        Options of the EM for ``method="em"`` (``tol``, ``max_iter``, ``accelerate``,
        ``simplified``, ``mask``).
    weights : str or array-like, optional
        Prior weights (a column name or an array): the residual variance is σ²/w_i.
    offset : str or array-like, optional
        A known term of the linear predictor (a column name or an array), added to any
        ``offset(x)`` of the formula.
    data_name : str, optional
        The data's name, printed on the summary's ``Data:`` line (as lme4 prints the data
        argument); without it the line is left out.
    REML : bool, optional
        lme4's spelling of ``reml``, accepted as an alias (it wins when both are given).
    cov_mask : array-like or dict, optional
        The seed's mask C (q × q, symmetric 0/1, ones on the diagonal; a dict term name → C
        for several terms): covariances where C is 0 are fixed at zero
        (:func:`pylmem.model.design.apply_cov_mask`). Covariance structures in the formula:
        ``diag()``, ``cs()``, ``ar1()`` with lme4 2.0's ``hom =`` (docs/structures.md).

    Returns
    -------
    LmerFit
        The fitted model.
    """
    if REML is not None:          # lme4's spelling, accepted as an alias of reml=
        reml = REML
    fit = _lmer(formula, data, reml=reml, method=method, factors=factors, verbose=verbose,
                em_options=em_options, weights=weights, offset=offset, cov_mask=cov_mask)
    if data_name is not None:
        fit.data_name = str(data_name)
    return fit


def _lmer(formula, data, *, reml, method, factors, verbose, em_options, weights, offset,
          cov_mask=None):
    if not isinstance(data, pd.DataFrame) and type(data).__module__.startswith("dask"):
        # a dask DataFrame, fitted where it lives
        if weights is not None or offset is not None:
            raise ValueError("weights= and offset= are not supported for a Dask DataFrame yet: "
                             "fit in memory, or write the offset as offset(col) in the formula")
        if cov_mask is not None:
            raise NotImplementedError("cov_mask= is not supported for a Dask DataFrame: fit in memory")
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

    Made by :func:`lmer` or :func:`fit_design`, not directly. The state and lme4's accessors
    (``fixef``, ``ranef``, ``coef``, ``varcorr``, ``vcov``, ``loglik``, ``aic``, ``bic``,
    ``fitted``, ``residuals``, ...) come from :class:`~pylmem.estimation.state.FitState`;
    every method below delegates to a function of a capability subpackage that takes the
    fit. statsmodels' names are read-only aliases: ``params``, ``bse``, ``pvalues``,
    ``conf_int()``, ``llf``, ``nobs``, ``fittedvalues``, ``resid``.
    """

    # ------------------------------------------------------------------ hat matrix (seed 2)
    @cached_property
    def hat_trace(self) -> float:
        """tr(P), P the hat matrix (P y = ŷ): see :func:`pylmem.postfit.hat.hat_trace`.

        Returns
        -------
        float
        """
        return hat.hat_trace(self)

    @property
    def edf(self) -> float:
        """Effective degrees of freedom tr(P) (the seed's second document).

        Returns
        -------
        float
        """
        return self.hat_trace

    @property
    def df_resid_hat(self) -> float:
        """Residual degrees of freedom n − tr(P) (the seed's second document).

        Returns
        -------
        float
        """
        return self.n_obs - self.hat_trace

    def hat_matrix(self, max_n: int = 5000) -> np.ndarray:
        """The n × n hat matrix P (P y = ŷ), rows and columns in the data's row order.

        Parameters
        ----------
        max_n : int, default 5000
            The largest n for which P is formed (it is dense).

        Returns
        -------
        numpy.ndarray
            See :func:`pylmem.postfit.hat.hat_matrix`.
        """
        return hat.hat_matrix(self, max_n=max_n)

    # ------------------------------------------------------------------ prediction and refits
    def predict(self, newdata=None, *, re_form=None, allow_new_levels=False, se_fit=False,
                interval=None, level=0.95):
        """Predictions as lme4's ``predict()``: see :func:`pylmem.postfit.predict.predict`.

        Parameters
        ----------
        newdata : DataFrame, optional
            The rows to predict (pandas, polars or pyarrow); default the fitted data.
        re_form : str, bool or None
            None: all random effects; ``"~0"`` / ``"NA"`` / False: the population level
            Xβ̂; a one-sided formula naming some of the model's random-effects terms.
        allow_new_levels : bool, default False
            Levels absent from the fit get random effects 0 when True; else (lme4's default)
            a ValueError naming the term, the unseen levels and their rows.
        se_fit : bool, default False
            Add standard errors.
        interval : {None, "confidence", "prediction"}
            Add the interval's limits at ``level``.
        level : float, default 0.95
            The interval's level.

        Returns
        -------
        pandas.Series or pandas.DataFrame
            A Series indexed like the data; with ``se_fit``/``interval`` a DataFrame (fit,
            se_fit, lwr, upr).
        """
        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels,
                       se_fit=se_fit, interval=interval, level=level)

    def refit(self, y=None, *, reml: bool | None = None) -> "LmerFit":
        """The same model refitted by ML or REML, or to a new response.

        Parameters
        ----------
        y : array-like, optional
            A new response (n values, the data's row order): lme4's ``refit(fit, newresp)``,
            X, Z and their cross-products reused.
        reml : bool, optional
            The criterion of the refit (lme4's ``update(fit, REML=)``); required without ``y``.

        Returns
        -------
        LmerFit
            The refitted model (this fit itself when nothing changes).
        """
        if y is not None:
            return bootstrap_mod.refit_response(self, y, reml=reml)
        if reml is None:
            raise TypeError("refit() needs a new response y, or reml=True/False")
        if reml == self.reml and self.method == "profiled":
            return self
        return estimate(self.design, reml=reml, cp=self.cp, verbose=False, cls=type(self))

    # ------------------------------------------------------------------ simulation, bootstrap
    def simulate(self, nsim: int = 1, seed=None, use_u: bool = False, *,
                 as_frame: bool = False):
        """Responses simulated from the fit (lme4's ``simulate``).

        Parameters
        ----------
        nsim : int, default 1
            Number of simulated responses.
        seed : int, numpy Generator or None
            The random source.
        use_u : bool, default False
            Keep b at its conditional modes (lme4's ``use.u``).
        as_frame : bool, default False
            Return a DataFrame labelled as lme4's: the data's row index, columns
            ``sim_1`` … ``sim_<nsim>``.

        Returns
        -------
        numpy.ndarray or pandas.DataFrame
            (n, nsim), rows in the data's order: see
            :func:`pylmem.inference.bootstrap.simulate`.
        """
        Y = bootstrap_mod.simulate(self, nsim, seed=seed, use_u=use_u)
        if not as_frame:
            return Y
        d = self.design
        return pd.DataFrame(Y, index=d.to_data_order(d.row_labels),
                            columns=[f"sim_{i + 1}" for i in range(Y.shape[1])])

    def bootstrap(self, nsim: int, seed=None, **kw):
        """Parametric bootstrap (lme4's ``bootMer``).

        Parameters
        ----------
        nsim : int
            Number of replicates.
        seed : int, numpy Generator or None
            The random source.
        **kw
            ``use_u``, ``verbose``: see :func:`pylmem.inference.bootstrap.bootstrap`.

        Returns
        -------
        BootstrapResult
        """
        return bootstrap_mod.bootstrap(self, nsim, seed=seed, **kw)

    # ------------------------------------------------------------------ inference
    def coef_table(self, ddf=None):
        """lmerTest's coefficient table: Estimate, Std. Error[, df], t value[, Pr(>|t|)].

        Parameters
        ----------
        ddf : {None, "Satterthwaite", "Kenward-Roger"}
            None: lme4's table without df; otherwise t tests on those df.

        Returns
        -------
        pandas.DataFrame
            See :func:`pylmem.inference.ddf.coef_table`.
        """
        return coef_table(self, ddf=ddf)

    def confint(self, method="profile", level=0.95, **kw):
        """Confidence intervals as lme4's ``confint()``.

        Parameters
        ----------
        method : {"profile", "Wald", "boot"}, default "profile"
            Likelihood profile, Wald (fixed effects only) or parametric bootstrap.
        level : float, default 0.95
            The confidence level.
        **kw
            ``parm``, ``nsim``, ``seed``: see :func:`pylmem.inference.profile.confint`.

        Returns
        -------
        pandas.DataFrame
            One row per parameter (lme4's names: ``.sig01``…, ``.sigma``, fixed effects).
        """
        return profile_mod.confint(self, method=method, level=level, **kw)

    def profile(self, which=None, **kw):
        """The likelihood profile on lme4's ζ scale.

        Parameters
        ----------
        which : list of str, optional
            Parameter names; default all.
        **kw
            ``zmax``, ``n_points``: see :func:`pylmem.inference.profile.profile`.

        Returns
        -------
        Profile
        """
        return profile_mod.profile(self, which=which, **kw)

    def anova(self, type=3, ddf="Satterthwaite"):
        """lmerTest's F tests of the fixed-effects terms (``anova(fit, type=, ddf=)``).

        Parameters
        ----------
        type : {3, 1}, default 3
            Type III (marginal) or type I (sequential) hypotheses ("III", "I" accepted).
        ddf : {"Satterthwaite", "Kenward-Roger"}, default "Satterthwaite"
            The denominator df.

        Returns
        -------
        FTestTable
            See :func:`pylmem.inference.ftests.single_anova`.
        """
        return single_anova(self, type=type, ddf=ddf)

    def ls_means(self, which=None, *, level=0.95, ddf="Satterthwaite", pairwise=False, data=None):
        """lmerTest's least-squares means: see :func:`pylmem.inference.lsmeans.ls_means`.

        Parameters
        ----------
        which : str or list of str, optional
            Factor terms of the fixed part (default every term made only of factors).
        level : float
            Confidence level of the limits.
        ddf : {"Satterthwaite", "Kenward-Roger"}
            Denominator degrees of freedom.
        pairwise : bool
            Pairwise differences of the means instead of the means.
        data : DataFrame, optional
            The data, when the fit's own columns are not enough to form the grid.

        Returns
        -------
        LSMeansTable
        """
        return ls_means(self, which, level=level, ddf=ddf, pairwise=pairwise, data=data)

    # ------------------------------------------------------------------ diagnostics, measures
    def residuals_of(self, type: str = "response", scaled: bool = False) -> pd.Series:  # noqa: A002
        """Residuals of lme4's types (``residuals(fit, type=, scaled=)``).

        Parameters
        ----------
        type : {"response", "working", "pearson", "deviance"}, default "response"
            "response"/"working": y − ŷ; "pearson"/"deviance": √w (y − ŷ).
        scaled : bool, default False
            Divide by σ̂.

        Returns
        -------
        pandas.Series
            In the data's row order (index: the data's index labels).
        """
        return diagnostics.residuals_of(self, type, scaled=scaled)

    def hatvalues(self) -> pd.Series:
        """Leverages: the diagonal of the hat matrix (lme4's ``hatvalues``).

        Returns
        -------
        pandas.Series
            h_i in the data's row order; they sum to ``hat_trace``.
        """
        return diagnostics.hatvalues(self)

    def cooks_distance(self) -> pd.Series:
        """Cook's distance, as lme4's ``cooks.distance``.

        Returns
        -------
        pandas.Series
            In the data's row order.
        """
        return diagnostics.cooks_distance(self)

    def rstudent(self) -> pd.Series:
        """Studentized residuals, as lme4's ``rstudent``.

        Returns
        -------
        pandas.Series
            In the data's row order.
        """
        return diagnostics.rstudent(self)

    def influence(self, groups=None, *, data=None):
        """Case or group deletion by refitting (lme4's ``influence.merMod``).

        Parameters
        ----------
        groups : str or array-like, optional
            None: delete each case; a grouping factor of the model (``"Subject"``); a column
            of ``data``; or one label per used row in the data's row order.
        data : DataFrame, optional
            The data the model was fitted to, when ``groups`` names one of its columns.

        Returns
        -------
        Influence
            See :func:`pylmem.postfit.diagnostics.influence`.
        """
        return diagnostics.influence(self, groups, data=data)

    def r2(self) -> pd.Series:
        """Nakagawa–Schielzeth marginal and conditional R².

        Returns
        -------
        pandas.Series
            ``R2_marginal``, ``R2_conditional``.
        """
        return measures.r2(self)

    def icc(self, by_group: bool = False) -> pd.Series:
        """Intraclass correlation.

        Parameters
        ----------
        by_group : bool, default False
            One ICC per random-effects term instead.

        Returns
        -------
        pandas.Series
            ``ICC_adjusted``, ``ICC_conditional`` (or one value per term).
        """
        return measures.icc(self, by_group=by_group)

    def re_pca(self) -> dict:
        """lme4's ``rePCA``: principal components of each grouping factor's random effects.

        Returns
        -------
        dict
            Grouping factor -> PCA (``sdev``, ``rotation``, ``summary()``): see
            :func:`pylmem.postfit.measures.rePCA`.
        """
        return measures.rePCA(self)

    def rePCA(self) -> dict:  # noqa: N802 - lme4's name
        """Deprecated alias of :meth:`re_pca` (lme4's camel-case name).

        Returns
        -------
        dict
            As :meth:`re_pca`.
        """
        import warnings

        warnings.warn("rePCA() is deprecated: use re_pca()", DeprecationWarning, stacklevel=2)
        return self.re_pca()

    # ------------------------------------------------------------------ reports
    def tidy(self, effects=("ran_pars", "fixed"), conf_int: bool = False,
             conf_level: float = 0.95, ddf=None) -> pd.DataFrame:
        """broom.mixed's ``tidy`` table: one row per estimate.

        Parameters
        ----------
        effects : str or tuple of str, default ("ran_pars", "fixed")
            Among "fixed", "ran_pars", "ran_vals", "ran_coefs".
        conf_int : bool, default False
            Add ``conf.low``, ``conf.high`` (Wald for fixed effects).
        conf_level : float, default 0.95
            The intervals' level.
        ddf : {None, "Satterthwaite", "Kenward-Roger"}
            Fill ``df`` and ``p.value`` of the fixed effects.

        Returns
        -------
        pandas.DataFrame
            effect, group, term, estimate, std.error, statistic, df, p.value, ...
        """
        return tidy_mod.tidy(self, effects=effects, conf_int=conf_int, conf_level=conf_level,
                             ddf=ddf)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's one-row ``glance`` table.

        Returns
        -------
        pandas.DataFrame
            nobs, sigma, logLik, AIC, BIC, deviance (``REMLcrit`` for a REML fit),
            df.residual.
        """
        return tidy_mod.glance(self)

    def __repr__(self) -> str:
        return summary_mod.short_repr(self)

    def _repr_html_(self) -> str:
        """lme4's ``print(fit)`` layout, for notebooks."""
        import html

        return "<pre>" + html.escape(repr(self)) + "</pre>"

    # ------------------------------------------------------------------ statsmodels' names
    # read-only aliases of lme4's accessors, under the names a statsmodels user looks for
    @property
    def params(self) -> pd.Series:
        """The fixed effects β̂ (statsmodels' name; lme4's ``fixef``)."""
        return self.fixef.rename("params")

    @property
    def bse(self) -> pd.Series:
        """Standard errors of β̂ (statsmodels' name; ``stderr``)."""
        return self.stderr.rename("bse")

    @property
    def pvalues(self) -> pd.Series:
        """p-values of the t tests of β̂ with Satterthwaite's df (lmerTest's default).

        statsmodels' MixedLM gives Wald z p-values instead; ``coef_table(ddf="Kenward-Roger")``
        gives Kenward–Roger's.
        """
        return self.coef_table(ddf="Satterthwaite")["Pr(>|t|)"].rename("pvalues")

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald confidence intervals of β̂ (statsmodels' ``conf_int``: columns 0 and 1).

        Parameters
        ----------
        alpha : float, default 0.05
            1 − the confidence level.

        Returns
        -------
        pandas.DataFrame
            One row per fixed effect, the lower (column 0) and upper (column 1) limits
            β̂ ∓ z_{1−α/2} se. Profile or bootstrap intervals: :meth:`confint`.
        """
        from scipy.stats import norm

        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        z = norm.ppf(1 - alpha / 2)
        b, se = self.fixef, self.stderr
        return pd.DataFrame({0: b - z * se, 1: b + z * se})

    @property
    def llf(self) -> float:
        """The log-likelihood (statsmodels' name; ``loglik``: the REML one for a REML fit)."""
        return self.loglik

    @property
    def nobs(self) -> int:
        """Number of observations used (statsmodels' name; ``n_obs``)."""
        return self.n_obs

    @property
    def fittedvalues(self):
        """Conditional fitted values Xβ̂ + Zb̂ (statsmodels' name; ``fitted``)."""
        return self.fitted

    @property
    def resid(self):
        """Conditional residuals y − Xβ̂ − Zb̂ (statsmodels' name; ``residuals``)."""
        return self.residuals

    def summary(self, ddf=None) -> "object":
        """lme4's ``summary()``.

        Parameters
        ----------
        ddf : {None, "Satterthwaite", "Kenward-Roger"}
            None: lme4's layout; otherwise lmerTest's, with df and p-values.

        Returns
        -------
        Summary
            Its ``str()`` is the printed summary; its pieces are DataFrames
            (:class:`pylmem.reports.summary.Summary`).
        """
        return summary_mod.Summary(self) if ddf is None else summary_mod.Summary(self, ddf=ddf)


class DaskLmerFit(DaskRows, LmerFit):
    """A fit to a Dask DataFrame: :class:`LmerFit` with lazy row-level results
    (:class:`~pylmem.scaleout.results.DaskRows`).  Every accessor of :class:`LmerFit` works,
    or raises one NotImplementedError naming it where it needs the rows in memory
    (``hatvalues``, ``cooks_distance``, ``rstudent``, ``influence``, ``simulate``,
    ``bootstrap``, ``refit(y)``, ``hat_matrix``, the single-model ``anova``)."""
