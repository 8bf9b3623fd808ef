"""``glmer``: generalized linear mixed models (binomial, Poisson) in lme4's formula language.

:func:`glmer` builds the design as :func:`pylmem.lmer` does (crossed, nested, ``||``,
offsets, factors, pandas / polars / pyarrow tables), with the response forms of R's
binomial family (``cbind(s, f)``, proportions with ``weights=`` the trials, 0/1, logical or
factor), and fits it by PIRLS and the Laplace approximation (``nagq=1``), nAGQ = 0, or
adaptive Gauss–Hermite quadrature (``nagq > 1``, one term of up to 3 columns).
:class:`GlmerFit` is the hub: lme4's accessors come from
:class:`~pylmem.estimation.glmm_state.GlmmState`, and its methods delegate to the
capabilities (inference, prediction, reports).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..estimation.glmm_fitting import estimate_glmm
from ..estimation.glmm_state import GlmmState
from ..inference import glmm_tests
from ..inference.lrt import anova as _anova
from ..model.design import build_design
from ..model.families import get_family
from ..model.glm_response import glm_response
from ..model.tables import as_pandas
from ..postfit.predict import predict as _predict
from ..reports.glmm_plots import binned_residuals, plot_binned_residuals
from ..reports.glmm_summary import GlmmSummary, glmm_short_repr

PREDICT_TYPES = ("link", "response")


def glmer(formula: str, data, family="binomial", *, link: str | None = None, nagq: int = 1,
          weights=None, offset=None, factors=(), data_name: str | None = None) -> "GlmerFit":
    """Fit a generalized linear mixed model (lme4's ``glmer``).

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"cbind(incidence, size - incidence) ~ period + (1 | herd)"``.
    data : DataFrame
        pandas, polars or pyarrow table.  A Dask frame is refused (GLMMs run in memory).
    family : str or Family
        ``"binomial"`` or ``"poisson"`` (or a :class:`pylmem.model.families.Family`).
    link : str, optional
        ``"logit"`` (default), ``"probit"``, ``"cloglog"`` for binomial; ``"log"`` for Poisson.
    nagq : int
        1: Laplace approximation (default); 0: lme4's nAGQ = 0 (fixed effects inside PIRLS,
        fast); > 1: adaptive Gauss–Hermite quadrature points per dimension (one
        random-effects term of up to 3 columns).
    weights : str or array_like, optional
        Prior weights (for a proportion response: the numbers of trials).
    offset : str or array_like, optional
        An offset on the linear-predictor scale (adds to ``offset(...)`` terms).
    factors : sequence of str
        Numeric columns to treat as factors.
    data_name : str, optional
        Name printed on the summary's ``Data:`` line.

    Returns
    -------
    GlmerFit

    Examples
    --------
    >>> import pylmem
    >>> from pylmem.datasets import load
    >>> cbpp = load("cbpp")
    >>> m = pylmem.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
    ...                  family="binomial")
    >>> round(m.loglik, 3)
    -92.026
    """
    if type(data).__module__.split(".")[0] == "dask":
        raise NotImplementedError("glmer runs in memory: GLMMs are not available on Dask frames yet; "
                                  "compute() the frame (or a sample) and pass a pandas DataFrame")
    data = as_pandas(data, "data")
    if not isinstance(data, pd.DataFrame):
        raise ValueError("data must be a pandas DataFrame")
    fam = get_family(family, link)
    f2, d2, w, label = glm_response(formula, data, fam, weights)
    design = build_design(f2, d2, factors=factors, weights=w, offset=offset, check_nlev=False)
    if design.weights_name is None and isinstance(weights, str):
        design.weights_name = weights
    fit = estimate_glmm(design, fam, nagq=nagq, response=label, formula=formula, cls=GlmerFit)
    fit.data_name = data_name
    return fit


class GlmerFit(GlmmState):
    """A fitted GLMM (lme4's ``glmerMod``): accessors of :class:`GlmmState` and the methods below.

    Attributes users read: ``fixef``, ``ranef``, ``coef``, ``varcorr``, ``vcov``, ``stderr``,
    ``zvalues``, ``pvalues``, ``loglik``, ``aic``, ``bic``, ``deviance``, ``df_resid``,
    ``fitted``, ``residuals``, ``is_singular``, ``converged``, ``warnings``, ``family``,
    ``nagq``, ``theta``.
    """

    #: name printed on the summary's ``Data:`` line
    data_name = None

    def summary(self, data_name=None) -> GlmmSummary:
        """lme4's ``summary(fit)`` (print it).

        Parameters
        ----------
        data_name : str, optional
            Printed on the ``Data:`` line (default: the fit's ``data_name``).

        Returns
        -------
        GlmmSummary
        """
        return GlmmSummary(self, data_name=data_name)

    def __repr__(self) -> str:
        return glmm_short_repr(self)

    def predict(self, newdata=None, *, type: str = "link", re_form=None,  # noqa: A002
                allow_new_levels: bool = False) -> pd.Series:
        """Predictions on the link (default) or response scale (lme4's ``predict``).

        Parameters
        ----------
        newdata : DataFrame, optional
            Rows to predict (default: the fitted rows).
        type : {"link", "response"}
            The scale.
        re_form : None, "~0" or a formula
            Which random effects to include (None: all; "~0": none).
        allow_new_levels : bool
            Predict levels not in the fit at the population level (default: an error).

        Returns
        -------
        Series
        """
        if type not in PREDICT_TYPES:
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        eta = _predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
        if type == "response":
            return pd.Series(self.family.linkinv(eta.to_numpy(dtype=float)), index=eta.index,
                             name="predicted")
        return eta

    def residuals_of(self, type: str = "deviance") -> pd.Series:  # noqa: A002
        """Residuals of ``type`` (lme4's ``residuals(fit, type)``).

        Parameters
        ----------
        type : {"deviance", "pearson", "response", "working"}
            The kind of residual; deviance by default, as lme4.

        Returns
        -------
        pandas.Series
            In the data's row order.
        """
        return super().residuals_of(type)

    def anova(self, *others, names=None):
        """Likelihood-ratio tests against other GLMM fits of the same data (lme4's anova).

        Parameters
        ----------
        *others : GlmerFit
            Fits of the same family to the same data.
        names : list of str, optional
            Row names.

        Returns
        -------
        AnovaResult
        """
        for o in others:
            if not isinstance(o, GlmmState):
                raise ValueError(f"anova: {type(o).__name__} is not a GLMM fit")
            if o.family.name != self.family.name:
                raise ValueError(f"anova: families differ ({self.family.name} vs {o.family.name})")
        return _anova(self, *others, names=names)

    def drop1(self):
        """Likelihood-ratio tests of dropping each marginal fixed-effects term (lme4's
        ``drop1(fit, test = "Chisq")``).

        Returns
        -------
        Drop1Table
        """
        return glmm_tests.glmm_drop1(self)

    def confint(self, method: str = "Wald", level: float = 0.95, nsim: int = 500, seed=None,
                which=None) -> pd.DataFrame:
        """Confidence intervals.

        Parameters
        ----------
        method : {"Wald", "profile", "boot"}
            Wald and likelihood-profile intervals of the fixed effects, or percentile
            intervals of θ and the fixed effects from a parametric bootstrap.
        level : float
            Confidence level in (0, 1).
        nsim, seed
            Bootstrap replicates and seed (``method="boot"``).
        which : str or list of str, optional
            Fixed effects to profile (default all).

        Returns
        -------
        pandas.DataFrame
        """
        m = str(method).lower()
        if m == "wald":
            return glmm_tests.wald_confint(self, level)
        if m == "profile":
            return glmm_tests.profile_confint(self, level, which=which)
        if m in ("boot", "bootstrap"):
            return glmm_tests.glmm_bootstrap(self, nsim, seed).confint(level)
        raise ValueError(f"method must be 'Wald', 'profile' or 'boot', got {method!r}")

    def simulate(self, nsim: int = 1, seed=None, use_u: bool = False) -> np.ndarray:
        """Responses simulated from the fitted model.

        Parameters
        ----------
        nsim : int
            Number of simulations.
        seed : int or Generator, optional
            Random seed.
        use_u : bool
            Condition on the conditional modes instead of drawing new random effects.

        Returns
        -------
        numpy.ndarray
            (n, nsim), data row order, on the model's scale (proportions for a binomial).
        """
        return glmm_tests.glmm_simulate(self, nsim, seed, use_u)

    def bootstrap(self, nsim: int, seed=None):
        """Parametric bootstrap of θ and β (one-term scalar models refit in lock-step).

        Parameters
        ----------
        nsim : int
            Number of replicates.
        seed : int or Generator, optional
            Random seed.

        Returns
        -------
        GlmmBootstrap
        """
        return glmm_tests.glmm_bootstrap(self, nsim, seed)

    def binned_residuals(self, n_bins: int | None = None) -> pd.DataFrame:
        """Mean residual per bin of fitted values with its ±2 SE band (``arm::binnedplot``).

        Parameters
        ----------
        n_bins : int, optional
            Number of bins (default √n).

        Returns
        -------
        pandas.DataFrame
        """
        return binned_residuals(self, n_bins)

    def plot_binned_residuals(self, n_bins: int | None = None, path=None, title=None):
        """The binned residual plot.

        Parameters
        ----------
        n_bins : int, optional
            Number of bins (default √n).
        path : str or Path, optional
            Save as PNG there.
        title : str, optional
            Replaces the default title.

        Returns
        -------
        matplotlib.figure.Figure
        """
        return plot_binned_residuals(self, n_bins, path=path, title=title)

    def tidy(self, conf_int: bool = False, conf_level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy``: one row per fixed effect and random-effect parameter.

        Parameters
        ----------
        conf_int : bool
            Add Wald confidence limits of the fixed effects.
        conf_level : float
            Their level.

        Returns
        -------
        pandas.DataFrame
        """
        fx = pd.DataFrame({"effect": "fixed", "group": None, "term": self.fixef.index,
                           "estimate": self.fixef.to_numpy(), "std.error": self.stderr.to_numpy(),
                           "statistic": self.zvalues.to_numpy(), "p.value": self.pvalues.to_numpy()})
        if conf_int:
            ci = glmm_tests.wald_confint(self, conf_level).to_numpy()
            fx["conf.low"], fx["conf.high"] = ci[:, 0], ci[:, 1]
        vc = self.varcorr
        rp = pd.DataFrame({"effect": "ran_pars", "group": vc["grp"],
                           "term": [f"sd__{a}" if b is None else f"cor__{a}.{b}"
                                    for a, b in zip(vc["var1"], vc["var2"])],
                           "estimate": vc["sdcor"].to_numpy()})
        return pd.concat([fx, rp], ignore_index=True)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's ``glance``: nobs, sigma, logLik, AIC, BIC, deviance, df.residual.

        Returns
        -------
        pandas.DataFrame
        """
        return pd.DataFrame([{"nobs": self.n_obs, "sigma": 1.0, "logLik": self.loglik,
                              "AIC": self.aic, "BIC": self.bic, "deviance": self.deviance,
                              "df.residual": self.df_resid}])
