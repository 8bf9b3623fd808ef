"""The fitted state of a linear mixed model, and lme4's accessors of it.

:class:`FitState` holds what an estimation leaves behind: the design, its cross-products,
the profiled deviance, the optimiser's record and the blocked Cholesky factor at θ̂.  From
them it derives the quantities lme4 users know (fixef, ranef with conditional variances,
coef, VarCorr, vcov, logLik, AIC, BIC) and the per-row pieces every capability needs: the
conditional modes (:attr:`FitState.modes`), the fitted values in model order
(:meth:`FitState.fitted_model_order`) and the map back to the data's rows
(:meth:`FitState.data_series`).

This is the interface the capability subpackages (inference, post-fit, reports, scale-out)
read; they never import the user's hub object (:class:`pylmem.api.lmer.LmerFit`, a subclass
of FitState whose methods delegate to them).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from ..model.design import ModelDesign
from ..numerics import batched as B
from ..numerics.deviance import Factor, ProfiledDeviance
from .accessors import VARCORR_COLUMNS, ModelAccessors, varcorr_rows
from .convergence import OptSummary
from .coords import Coordinates


class FitState(ModelAccessors):
    """A fitted linear mixed model: state and lme4's accessors (fixef, ranef, VarCorr, logLik).

    Parameters
    ----------
    design : ModelDesign
        The model's design (rows in model order).
    cp : CrossProducts
        Its cross-products.
    dev : ProfiledDeviance
        The profiled deviance (ML or REML) the optimiser minimised.
    opt : OptSummary
        The optimiser's record; ``opt.theta`` is θ̂.
    reml : bool
        Whether the criterion is REML.
    method : str
        ``"profiled"`` or ``"em"``.
    em_result : EMResult, optional
        The EM's result for ``method="em"``.
    factor : Factor, optional
        ``dev``'s factor at ``opt.theta``, if already formed (else it is formed here).
    """

    def __init__(self, design: ModelDesign, cp, dev: ProfiledDeviance, opt: OptSummary, *,
                 reml: bool, method: str, em_result=None, factor: Factor | None = None):
        self.design = design
        self.cp = cp
        self.dev = dev
        self.optsum = opt
        self.reml = bool(reml)
        self.method = method
        self.em_result = em_result
        self.theta = opt.theta
        # ``factor``: dev's factor at θ̂ if the caller formed it already
        self.factor: Factor = dev.factor(self.theta) if factor is None else factor
        self.fit_seconds = float("nan")

    # ------------------------------------------------------------------ basics
    @property
    def formula(self) -> str:
        """The model's formula, as given."""
        return self.design.formula

    @property
    def converged(self) -> bool:
        """Whether the optimiser's convergence check passed (see ``warnings``)."""
        return self.optsum.converged

    @property
    def warnings(self) -> list:
        """The fit's warnings (convergence, singular fit), as lme4 lists them."""
        return list(self.optsum.warnings)

    @property
    def n_iter(self) -> int:
        """EM updates (``method="em"``) or deviance evaluations of the optimiser."""
        return self.em_result.n_iter if self.em_result is not None else self.optsum.n_evals

    @property
    def is_singular(self) -> bool:
        """True when some T_k is singular (a variance or correlation on the boundary).

        lme4's test (a diagonal θ below 1e-4), made in the optimiser's scaled centred
        coordinates so that it does not depend on the units or location of a covariate.
        A covariance structure is also singular when a correlation is at a bound."""
        if getattr(self.dev, "smap", None) is not None and self.optsum.singular:
            return True
        try:
            x = Coordinates(self.dev).from_theta(self.theta)
        except Exception:  # pragma: no cover - fall back to lme4's raw test
            x = self.theta
        return bool(np.any(np.abs(x[np.isfinite(self.dev.lower)]) < 1e-4))

    @property
    def objective(self) -> float:
        """The minimised criterion: ML deviance or REML criterion."""
        return self.dev.objective_from(self.factor)

    # ------------------------------------------------------------------ parameters
    @cached_property
    def beta(self) -> np.ndarray:
        """The fixed effects β̂ as an array (``fixef`` is the labelled Series)."""
        return self.factor.beta()

    @property
    def sigma2(self) -> float:
        """The residual variance σ̂²: pwrss / (n − p) for REML, pwrss / n for ML."""
        n, p = self.n_obs, self.design.n_fixef
        return self.factor.pwrss / (n - p if self.reml else n)

    @property
    def sigma(self) -> float:
        """The residual standard deviation σ̂ (lme4's ``sigma``)."""
        return float(np.sqrt(self.sigma2))

    @property
    def cov_re(self) -> dict:
        """Covariance matrix Ω_k = σ² T_k T_k' of each random-effects term (name -> DataFrame)."""
        out = {}
        for t, T in zip(self.design.terms, self.factor.T):
            out[t.name] = pd.DataFrame(self.sigma2 * T @ T.T, index=t.coef_names, columns=t.coef_names)
        return out

    @property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        rows = varcorr_rows(self.cov_re)
        rows.append(("Residual", None, None, self.sigma2, self.sigma))
        return pd.DataFrame(rows, columns=VARCORR_COLUMNS)

    @property
    def n_params(self) -> int:
        """Number of parameters: fixed effects, θ, and σ (lme4's logLik df)."""
        return self.design.n_fixef + len(self.theta) + 1

    # ------------------------------------------------------------------ criteria
    @property
    def loglik(self) -> float:
        """Log-likelihood (the REML log-likelihood for a REML fit, as lme4)."""
        return -0.5 * self.objective

    @property
    def deviance(self) -> float | None:
        """−2 logLik of an ML fit (None for REML fits: see ``reml_criterion``)."""
        return None if self.reml else self.objective

    @property
    def reml_criterion(self) -> float | None:
        """The REML criterion at the optimum (lme4's ``REMLcrit``); None for ML fits."""
        return self.objective if self.reml else None

    @property
    def aic(self) -> float:
        """Akaike's information criterion −2 logLik + 2 npar (the REML logLik for a REML fit, as lme4)."""
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        """The Bayesian information criterion −2 logLik + log(n) npar."""
        return -2 * self.loglik + np.log(self.n_obs) * self.n_params

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom n − npar (lme4's ``df.residual``)."""
        return self.n_obs - self.n_params

    # ------------------------------------------------------------------ inference
    @cached_property
    def vcov(self) -> pd.DataFrame:
        """GLS covariance of β̂: σ² (X'V⁻¹X)⁻¹ = σ² R_X^{-T} R_X^{-1}."""
        p = self.design.n_fixef
        Ri = sla.solve_triangular(self.factor.RX, np.eye(p), lower=True) if p else np.zeros((0, 0))
        V = self.sigma2 * Ri.T @ Ri
        return pd.DataFrame(V, index=self.design.fixef_names, columns=self.design.fixef_names)

    @property
    def stderr(self) -> pd.Series:
        """Standard errors of β̂: the square roots of ``vcov``'s diagonal."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.design.fixef_names,
                         name="Std. Error")

    @property
    def tvalues(self) -> pd.Series:
        """t statistics β̂ / se(β̂) (lme4's summary column ``t value``)."""
        return pd.Series(self.beta / self.stderr.to_numpy(), index=self.design.fixef_names, name="t value")

    # ------------------------------------------------------------------ random effects
    @cached_property
    def modes(self):
        """Conditional modes b_k = Λ_k u_k per term, each (L_k, q_k)."""
        u0, uR = self.factor.spherical_modes(self.beta)
        out = [u0 @ self.factor.T[0].T]
        off = 0
        for t, T in zip(self.design.terms[1:], self.factor.T[1:]):
            n = t.n_levels * t.q
            out.append(uR[off:off + n].reshape(t.n_levels, t.q) @ T.T)
            off += n
        return out

    @cached_property
    def inv_diag_blocks(self):
        """Diagonal q_k × q_k blocks of (L L')⁻¹ for every level of every term."""
        f = self.factor
        q0 = f.L0.shape[1]
        L0inv = B.solve_lower(f.L0, np.broadcast_to(np.eye(q0), f.L0.shape).copy())
        D0 = np.einsum("gki,gkj->gij", L0inv, L0inv)
        if f.LRR is None:
            return [D0]
        # L⁻¹ = [[L0⁻¹, 0], [−L_R⁻¹ L_R0 L0⁻¹, L_R⁻¹]]: the first term's blocks gain the
        # rows of Y = L_R⁻¹ L_R0 L0⁻¹, the rest's are the diagonal blocks of A_RR⁻¹
        sizes = [(t.q, t.n_levels) for t in self.design.terms[1:]]
        G = len(L0inv)
        L0inv_bd = sp.bsr_matrix((L0inv, np.arange(G), np.arange(G + 1)), shape=(G * q0, G * q0))
        LR0L0inv = sp.csc_matrix(f.LR0 @ L0inv_bd)
        m = f.LRR.m
        if m * G * q0 <= 20_000_000:
            Y = f.LRR.solve_L(LR0L0inv.toarray())
            D0 = D0 + np.einsum("mgi,mgj->gij", Y.reshape(-1, G, q0), Y.reshape(-1, G, q0))
        else:
            # sparse rest: Y'Y blocks in chunks of the first term's levels (Y is m × G q0)
            step = max(1, 4_000_000 // max(m * q0, 1))
            for g0 in range(0, G, step):
                g1 = min(G, g0 + step)
                Y = f.LRR.solve_L(LR0L0inv[:, g0 * q0:g1 * q0].toarray())
                Yb = Y.reshape(-1, g1 - g0, q0)
                D0[g0:g1] += np.einsum("mgi,mgj->gij", Yb, Yb)
        return [D0] + f.LRR.inv_diag_blocks(sizes)

    def ranef_condvar(self, as_frame: bool = False) -> dict:
        """Conditional covariance of each level's random effects: σ² T (LL')⁻¹_jj T'
        (lme4's ``attr(ranef(fit, condVar=TRUE)[[g]], "postVar")``).

        Parameters
        ----------
        as_frame : bool, default False
            False: each term's (levels, q, q) array, levels in the order of
            ``ranef[name].index``. True: each term's DataFrame with a (level, coefficient)
            MultiIndex on the rows and the coefficients as columns, so
            ``cv.loc["308"]`` is level 308's q × q block.

        Returns
        -------
        dict
            Term name -> array or DataFrame.
        """
        out = {}
        for t, T, D in zip(self.design.terms, self.factor.T, self.inv_diag_blocks):
            V = self.sigma2 * np.einsum("ik,gkl,jl->gij", T, D, T)
            if as_frame:
                idx = pd.MultiIndex.from_product([pd.Index(t.levels), list(t.coef_names)],
                                                 names=[t.name, "term"])
                V = pd.DataFrame(V.reshape(-1, t.q), index=idx, columns=list(t.coef_names))
            out[t.name] = V
        return out

    # ------------------------------------------------------------------ fitted values
    def fitted_model_order(self) -> np.ndarray:
        """Conditional fitted values Xβ̂ + offset + Zb̂ in model order (rows sorted by the
        first term's levels, as ``design.y``).

        Returns
        -------
        numpy.ndarray
        """
        fit = self.design.X @ self.beta
        if self.design.offset is not None:
            fit = fit + self.design.offset
        for t, b in zip(self.design.terms, self.modes):
            fit = fit + np.einsum("nq,nq->n", t.Z, b[t.codes])
        return fit

    @property
    def fitted(self) -> pd.Series:
        """Conditional fitted values Xβ̂ + Zb̂, in the data's row order (index = data index)."""
        return self.data_series(self.fitted_model_order(), "fitted")

    @property
    def residuals(self) -> pd.Series:
        """Conditional residuals y − Xβ̂ − Zb̂, in the data's row order."""
        return self.data_series(self.design.y - self.fitted_model_order(), "residuals")

    @property
    def weights(self):
        """Prior weights in the data's row order (None for an unweighted fit)."""
        w = self.design.weights
        return None if w is None else self.data_series(w, "weights")
