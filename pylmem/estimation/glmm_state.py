"""The fitted state of a generalized linear mixed model, and lme4's accessors of it.

:class:`GlmmState` holds the design, the family, the PIRLS structure and the optimum
(:class:`~pylmem.estimation.glmm.GlmmOptimum`), and derives what lme4's ``glmer`` users read:
fixef, ranef with conditional variances, coef, VarCorr, vcov (from the Hessian of the
deviance, as lme4's default ``use.hessian = TRUE``), logLik with every constant, AIC, BIC,
fitted values on the response scale, the four kinds of residuals, and the Pearson
overdispersion statistic.  Capabilities (inference, prediction, reports) read this state;
the user's hub (:class:`pylmem.api.glmer.GlmerFit`) subclasses it.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from ..model.design import ModelDesign
from ..numerics.pirls import PirlsProblem
from ..util.lazy import stats
from .accessors import VARCORR_COLUMNS, ModelAccessors, varcorr_rows
from .glmm import GlmmOptimum

RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


class GlmmState(ModelAccessors):
    """A fitted GLMM: state and lme4's accessors.

    Parameters
    ----------
    design : ModelDesign
        The design (rows in model order); ``design.y`` is the model's response (the
        proportion of successes for a binomial), ``design.weights`` the prior weights.
    family : Family
        The response family and link.
    prob : PirlsProblem
        The PIRLS structure of the model.
    opt : GlmmOptimum
        The optimum.
    response : str
        The response as written in the formula (``cbind(incidence, size - incidence)``).
    formula : str
        The formula as the user gave it.
    """

    reml = False

    def __init__(self, design: ModelDesign, family, prob: PirlsProblem, opt: GlmmOptimum, *,
                 response: str, formula: str):
        self.design = design
        self.family = family
        self.prob = prob
        self.opt = opt
        self.response_label = response
        self._formula = formula
        self.theta = opt.theta
        self.nagq = opt.nagq
        self.fit_seconds = float("nan")

    # ------------------------------------------------------------------ basics
    @property
    def formula(self) -> str:
        """The formula as the user wrote it."""
        return self._formula

    @property
    def converged(self) -> bool:
        """True when the optimum passed the gradient and Hessian check."""
        return bool(self.opt.converged)

    @property
    def warnings(self) -> list:
        """What makes the fit less than fully trustworthy (no convergence, separation, a
        boundary fit), as text."""
        out = list(self.opt.warnings)
        if self.is_singular:
            out.append("boundary (singular) fit: see is_singular")
        return out

    @property
    def is_singular(self) -> bool:
        """A variance on the boundary: some diagonal θ below 1e-4 (lme4's isSingular)."""
        return bool(self.opt.singular)

    # ------------------------------------------------------------------ parameters
    @property
    def beta(self) -> np.ndarray:
        """The fixed effects β̂ as an array."""
        return self.opt.beta

    @property
    def T(self) -> list:
        """The relative covariance factors T_k of the terms (Ω_k = T_k T_k')."""
        return self.prob.split_theta(self.theta)

    @property
    def cov_re(self) -> dict:
        """Covariance matrix Ω_k = T_k T_k' of each term (no residual scale: σ = 1)."""
        return {t.name: pd.DataFrame(T @ T.T, index=t.coef_names, columns=t.coef_names)
                for t, T in zip(self.design.terms, self.T)}

    @property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor (no Residual row)."""
        return pd.DataFrame(varcorr_rows(self.cov_re), columns=VARCORR_COLUMNS)

    @property
    def sigma(self) -> float:
        """The residual scale: 1 for the binomial and Poisson families (lme4's sigma)."""
        return 1.0

    @property
    def n_params(self) -> int:
        """Fixed effects plus θ (lme4's logLik df for binomial and Poisson)."""
        return self.design.n_fixef + len(self.theta)

    # ------------------------------------------------------------------ criteria
    @property
    def deviance(self) -> float:
        """−2 logLik (Laplace or AGQ, every constant included; see the docs for lme4)."""
        return float(self.opt.deviance)

    @property
    def loglik(self) -> float:
        """The log-likelihood, every constant included (lme4's logLik for Laplace fits)."""
        return -0.5 * self.deviance

    @property
    def aic(self) -> float:
        """Akaike's criterion, −2 logLik + 2 n_params."""
        return self.deviance + 2 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion, −2 logLik + log(n) n_params."""
        return self.deviance + np.log(self.n_obs) * self.n_params

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, n − n_params (lme4's df.resid)."""
        return self.n_obs - self.n_params

    # ------------------------------------------------------------------ inference
    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of β̂: 2 H⁻¹ (β block) from the Hessian H of the deviance in (θ, β),
        variances on the boundary held fixed (lme4's ``use.hessian = TRUE``); the
        conditional (X'WX − …)⁻¹ of PIRLS where H is not positive definite or nAGQ = 0."""
        names = self.design.fixef_names
        p = len(names)
        H = self.opt.hessian
        V = None
        if H is not None and p:
            nt = len(self.theta)
            diag = np.isfinite(self.prob.lower)
            keep = np.r_[~(diag & (np.abs(self.theta) < 1e-10)), np.ones(p, bool)]
            Hk = 0.5 * (H + H.T)[np.ix_(keep, keep)]
            try:
                np.linalg.cholesky(Hk)
                Vk = 2.0 * np.linalg.inv(Hk)
                V = Vk[-p:, -p:]
            except np.linalg.LinAlgError:
                V = None
            del nt
        if V is None:
            V = self.vcov_conditional
        return pd.DataFrame(V, index=names, columns=names)

    @cached_property
    def vcov_conditional(self) -> np.ndarray:
        """(R_X'R_X)⁻¹ of PIRLS at the optimum (lme4's ``use.hessian = FALSE``)."""
        res = self.prob.pirls(self.theta, self.beta, self.opt.res.u, fit_beta=True, maxit=0)
        p = self.design.n_fixef
        if not p:
            return np.zeros((0, 0))
        Ri = np.linalg.inv(res.RX)
        return Ri.T @ Ri

    @property
    def stderr(self) -> pd.Series:
        """Standard errors of the fixed effects (from :attr:`vcov`)."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.design.fixef_names,
                         name="Std. Error")

    @property
    def zvalues(self) -> pd.Series:
        """Wald z statistics β̂ / SE."""
        return pd.Series(self.beta / self.stderr.to_numpy(), index=self.design.fixef_names,
                         name="z value")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided Wald p-values, Pr(>|z|)."""
        return pd.Series(2 * stats.norm.sf(np.abs(self.zvalues.to_numpy())),
                         index=self.design.fixef_names, name="Pr(>|z|)")

    # ------------------------------------------------------------------ random effects
    @cached_property
    def modes(self) -> list:
        """Conditional modes b_k = T_k u_k per term, each (L_k, q_k)."""
        u = self.opt.res.u
        out, off = [], 0
        for t, T in zip(self.design.terms, self.T):
            n = t.n_levels * t.q
            out.append(u[off:off + n].reshape(t.n_levels, t.q) @ T.T)
            off += n
        return out

    @cached_property
    def _inv_diag_blocks(self) -> list:
        """Diagonal q × q blocks of (Λ'Z'WZΛ + I)⁻¹ at the optimum, per term (L, q, q)."""
        prob, F = self.prob, self.opt.res.factor
        if prob.single:
            q = prob.qs[0]
            eye = np.broadcast_to(np.eye(q), (prob.Ls[0], q, q)).reshape(-1, q).copy()
            out = prob.blocks.solve(F, eye)       # rows: level-major (L q, q)
            return [out.reshape(prob.Ls[0], q, q)]
        Q = prob.Q
        out, off = [], 0
        for q, L in zip(prob.qs, prob.Ls):
            D = np.empty((L, q, q))
            step = max(1, 2_000_000 // max(Q * q, 1))
            for g0 in range(0, L, step):
                g1 = min(L, g0 + step)
                cols = np.arange(off + g0 * q, off + g1 * q)
                E = np.zeros((Q, len(cols)))
                E[cols, np.arange(len(cols))] = 1.0
                S = prob.blocks.solve(F, E)[cols]                   # (len, len)
                idx = np.arange(g1 - g0)
                D[g0:g1] = S.reshape(g1 - g0, q, g1 - g0, q)[idx, :, idx, :]
            out.append(D)
            off += L * q
        return out

    def ranef_condvar(self) -> dict:
        """Conditional covariance of each level's random effects, T (A⁻¹)_jj T' (lme4's condVar).

        Returns
        -------
        dict
            Term name -> array (levels, q, q).
        """
        return {t.name: np.einsum("ik,gkl,jl->gij", T, D, T)
                for t, T, D in zip(self.design.terms, self.T, self._inv_diag_blocks)}

    # ------------------------------------------------------------------ fitted values
    def eta_model_order(self) -> np.ndarray:
        """The linear predictor o + Xβ̂ + Zb̂ in model order.

        Returns
        -------
        numpy.ndarray
        """
        return self.opt.res.eta

    def mu_model_order(self) -> np.ndarray:
        """The fitted means μ̂ in model order.

        Returns
        -------
        numpy.ndarray
        """
        return self.family.linkinv(self.eta_model_order())

    @property
    def fitted(self) -> pd.Series:
        """Fitted values on the response scale μ̂ (proportions for a binomial), data order."""
        return self.data_series(self.mu_model_order(), "fitted")

    @property
    def prior_weights(self) -> np.ndarray:
        """Prior weights in model order (the trials of a binomial)."""
        return self.prob.wt

    def residuals_of(self, type: str = "deviance") -> pd.Series:
        """Residuals of ``type``: deviance (lme4's default), pearson, response or working.

        Parameters
        ----------
        type : {"deviance", "pearson", "response", "working"}
            The kind of residual.

        Returns
        -------
        pandas.Series
            In the data's row order.
        """
        if type not in RESIDUAL_TYPES:
            raise ValueError(f"type must be one of {', '.join(RESIDUAL_TYPES)}, got {type!r}")
        y, mu, wt, eta = self.design.y, self.mu_model_order(), self.prob.wt, self.eta_model_order()
        fam = self.family
        if type == "response":
            r = y - mu
        elif type == "working":
            r = (y - mu) / fam.mu_eta(eta)
        elif type == "pearson":
            r = (y - mu) * np.sqrt(wt) / np.sqrt(fam.variance(mu))
        else:
            r = np.sign(y - mu) * np.sqrt(np.maximum(fam.dev_resid(y, mu, wt), 0.0))
        return self.data_series(r, "residuals")

    @property
    def residuals(self) -> pd.Series:
        """Deviance residuals (lme4's default type), data row order."""
        return self.residuals_of("deviance")

    def overdispersion(self) -> dict:
        """Pearson χ² / residual df and its p-value (a quick check for overdispersion).

        Returns
        -------
        dict
            ``chisq``, ``df``, ``ratio`` and ``p_value``.
        """
        r = self.residuals_of("pearson").to_numpy()
        chisq = float(r @ r)
        df = self.df_resid
        return {"chisq": chisq, "df": df, "ratio": chisq / df if df > 0 else np.nan,
                "p_value": float(stats.chi2.sf(chisq, df)) if df > 0 else np.nan}
