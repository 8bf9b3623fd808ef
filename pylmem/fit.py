"""``lmer``: fit a linear mixed model, and the fitted-model object with lme4's accessors.

The pipeline is lme4's, visible step by step:
formula -> :func:`~pylmem.design.build_design` -> :func:`~pylmem.crossprod.crossproducts`
-> :class:`~pylmem.deviance.ProfiledDeviance` -> :func:`~pylmem.optimize.optimize_theta`
-> :class:`LmerFit`.  ``method="em"`` moves θ by the seed's EM algorithm instead.
"""
from __future__ import annotations

import time
import warnings
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp

from . import batched as B
from .crossprod import crossproducts
from .design import ModelDesign, build_design
from .deviance import Factor, ProfiledDeviance
from .optimize import OptSummary, check_convergence, optimize_theta


def _check_residual_variance(cp, response: str) -> None:
    """The response must not be fitted exactly by the fixed effects (σ² would be 0)."""
    cen = cp.centred() if hasattr(cp, "centred") else None
    W = cp.WtW if cen is None else cen[2]   # about the column means: no cancellation in ȳ²
    p = W.shape[0] - 1
    yy = W[p, p]
    if p:
        beta = np.linalg.lstsq(W[:p, :p], W[:p, p], rcond=None)[0]
        rss = yy - W[:p, p] @ beta
    else:
        rss = yy
    if not rss > 1e-12 * max(yy, 1e-300):
        raise ValueError(f"the response {response!r} is fitted exactly by the fixed effects "
                         "(constant, or a linear function of them): the residual variance is 0")


def _check_exact_fit(dev, opt, cp, response: str) -> None:
    """y = Xβ + Zb exactly: the likelihood grows without bound as σ → 0 (θ → ∞).

    Seen at the optimum as a penalised residual sum of squares r² below 1e-14 of the
    centred Σ(y − ȳ)² (or a factor that no longer exists): a clear error, not a number.
    """
    cen = cp.centred() if hasattr(cp, "centred") else None
    yy = float((cp.WtW if cen is None else cen[2])[-1, -1])
    try:
        pw = dev.factor(opt.theta).pwrss
    except np.linalg.LinAlgError:
        pw = 0.0
    if not (np.isfinite(pw) and pw > 1e-14 * max(yy, 1e-300)):
        raise ValueError(f"the response {response!r} is fitted exactly by the fixed and random "
                         "effects (y = Xβ + Zb): the residual variance is 0 and the likelihood "
                         "is unbounded")


def _blas_threads_for(dev):
    """One BLAS thread unless the dense block is large enough to gain from more
    (see :mod:`pylmem._threads`)."""
    from ._threads import threads_for_block

    return threads_for_block(dev.m)


class ConvergenceWarning(UserWarning):
    """A fit that cannot be fully trusted: no convergence, or a singular (boundary) fit."""


def lmer(formula: str, data: pd.DataFrame, *, reml: bool = True, method: str = "profiled",
         factors=(), verbose=None, em_options=None, weights=None, offset=None) -> "LmerFit":
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
    """
    if not isinstance(data, pd.DataFrame) and type(data).__module__.startswith("dask"):
        from .dask_fit import lmer_dask   # issue 14: a dask DataFrame, fitted where it lives

        if weights is not None or offset is not None:
            raise ValueError("weights= and offset= are not supported for a Dask DataFrame yet: "
                             "fit in memory, or fold the offset into the response")
        return lmer_dask(formula, data, reml=reml, method=method, factors=factors,
                         verbose=verbose, em_options=em_options)
    t0 = time.perf_counter()
    if not isinstance(reml, (bool, np.bool_)):   # reml=None must not silently mean ML
        raise ValueError(f"reml must be True or False, got {reml!r}")
    if em_options is not None and not isinstance(em_options, dict):
        raise ValueError(f"em_options must be a dict, got {em_options!r}")
    from .io import as_pandas

    design = build_design(formula, as_pandas(data), factors=factors, weights=weights,
                          offset=offset)
    return fit_design(design, reml=reml, method=method, verbose=verbose, em_options=em_options,
                      _t0=t0)


def fit_design(design: ModelDesign, *, reml=True, method="profiled", verbose=None, em_options=None,
               cp=None, _t0=None, theta0=None) -> "LmerFit":
    """Fit a prepared :class:`ModelDesign` (``cp``: precomputed cross-products, e.g. from Dask;
    ``theta0``: start of the optimiser, e.g. a previous fit's θ̂)."""
    t0 = time.perf_counter() if _t0 is None else _t0
    if not isinstance(reml, (bool, np.bool_)):
        raise ValueError(f"reml must be True or False, got {reml!r}")
    if not isinstance(method, str) or method not in ("profiled", "em"):
        raise ValueError(f"method must be 'profiled' or 'em', got {method!r}")
    if method == "em" and reml:
        raise ValueError("method='em' fits by maximum likelihood: pass reml=False")
    from . import weights as W

    cp = crossproducts(*W.scaled(design)) if cp is None else cp
    _check_residual_variance(cp, design.response)
    dev = ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms],
                           reml=reml)
    dev.log_weights = W.log_weight_sum(design)
    from .progress import Progress

    progress = Progress(verbose=verbose, label="lmer")
    em_result = None
    if method == "em":
        from .em import fit_em

        em_result = fit_em(W.scaled_design(design), **(em_options or {}))   # √w rows, y − offset
        theta = B.theta_from_lower(B.psd_cholesky(em_result.omega / em_result.sigma2))
        # the check polishes θ with one Newton step when that raises the likelihood
        opt = check_convergence(dev, theta, theta0=theta, method=f"EM ({em_result.method})",
                                message=f"EM stopped after {em_result.n_iter} iterations",
                                trace=list(-2 * np.asarray(em_result.trace) - dev.log_weights))
        if not em_result.converged:
            opt.warnings.append(f"EM did not converge in {em_result.n_iter} iterations")
            opt.converged = False
    else:
        with _blas_threads_for(dev):
            opt = optimize_theta(dev, design, theta0=theta0, verbose=verbose,
                                 callback=progress.update)
    progress.close()
    _check_exact_fit(dev, opt, cp, design.response)
    fit = LmerFit(design, cp, dev, opt, reml=reml, method=method, em_result=em_result)
    fit.fit_seconds = time.perf_counter() - t0
    for w in opt.warnings:
        warnings.warn(w, ConvergenceWarning, stacklevel=3)
    return fit


class LmerFit:
    """A fitted linear mixed model; names follow lme4 (fixef, ranef, VarCorr, logLik)."""

    def __init__(self, design: ModelDesign, cp, dev: ProfiledDeviance, opt: OptSummary, *,
                 reml: bool, method: str, em_result=None):
        self.design = design
        self.cp = cp
        self.dev = dev
        self.optsum = opt
        self.reml = bool(reml)
        self.method = method
        self.em_result = em_result
        self.theta = opt.theta
        self.factor: Factor = dev.factor(self.theta)
        self.fit_seconds = float("nan")

    # ------------------------------------------------------------------ basics
    @property
    def formula(self) -> str:
        return self.design.formula

    @property
    def n_obs(self) -> int:
        return self.design.n_obs

    @property
    def n_dropped(self) -> int:
        """Rows dropped for missing values."""
        return self.design.n_dropped

    @property
    def n_groups(self) -> dict:
        """Number of levels of each grouping factor (lme4's ngrps)."""
        out: dict = {}
        for t in self.design.terms:
            out.setdefault(":".join(t.group), t.n_levels)
        return out

    @property
    def converged(self) -> bool:
        return self.optsum.converged

    @property
    def warnings(self) -> list:
        return list(self.optsum.warnings)

    @property
    def n_iter(self) -> int:
        return self.em_result.n_iter if self.em_result is not None else self.optsum.n_evals

    @property
    def is_singular(self) -> bool:
        """True when some T_k is singular (a variance or correlation on the boundary).

        lme4's test (a diagonal θ below 1e-4), made in the optimiser's scaled centred
        coordinates so that it does not depend on the units or location of a covariate."""
        from .optimize import _Coords

        try:
            x = _Coords(self.dev).from_theta(self.theta)
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
        return self.factor.beta()

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.beta, index=self.design.fixef_names, name="Estimate")

    @property
    def sigma2(self) -> float:
        n, p = self.n_obs, self.design.n_fixef
        return self.factor.pwrss / (n - p if self.reml else n)

    @property
    def sigma(self) -> float:
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
        rows = []
        for name, C in self.cov_re.items():
            sd = np.sqrt(np.diag(C.to_numpy()))
            names = list(C.index)
            for i, a in enumerate(names):
                rows.append((name, a, None, C.iloc[i, i], sd[i]))
            for j in range(len(names)):
                for i in range(j + 1, len(names)):
                    den = sd[i] * sd[j]
                    rows.append((name, names[i], names[j], C.iloc[i, j], C.iloc[i, j] / den if den > 0 else np.nan))
        rows.append(("Residual", None, None, self.sigma2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

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
        return self.objective if self.reml else None

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + np.log(self.n_obs) * self.n_params

    @property
    def df_resid(self) -> int:
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
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.design.fixef_names,
                         name="Std. Error")

    @property
    def tvalues(self) -> pd.Series:
        return pd.Series(self.beta / self.stderr.to_numpy(), index=self.design.fixef_names, name="t value")

    @property
    def corr_fixef(self) -> pd.DataFrame:
        V = self.vcov.to_numpy()
        s = np.sqrt(np.diag(V))
        return pd.DataFrame(V / np.outer(s, s), index=self.vcov.index, columns=self.vcov.columns)

    # ------------------------------------------------------------------ random effects
    @cached_property
    def _modes(self):
        """Conditional modes b_k = Λ_k u_k per term, each (L_k, q_k)."""
        u0, uR = self.factor.spherical_modes(self.beta)
        out = [u0 @ self.factor.T[0].T]
        off = 0
        for t, T in zip(self.design.terms[1:], self.factor.T[1:]):
            n = t.n_levels * t.q
            out.append(uR[off:off + n].reshape(t.n_levels, t.q) @ T.T)
            off += n
        return out

    @property
    def ranef(self) -> dict:
        """Conditional modes of the random effects (BLUPs): name -> DataFrame levels × coefs."""
        return {t.name: pd.DataFrame(b, index=pd.Index(t.levels, name=t.name), columns=t.coef_names)
                for t, b in zip(self.design.terms, self._modes)}

    @cached_property
    def _inv_diag_blocks(self):
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

    def ranef_condvar(self) -> dict:
        """Conditional covariance of each level's random effects: σ² T (LL')⁻¹_jj T'."""
        out = {}
        for t, T, D in zip(self.design.terms, self.factor.T, self._inv_diag_blocks):
            out[t.name] = self.sigma2 * np.einsum("ik,gkl,jl->gij", T, D, T)
        return out

    @property
    def coef(self) -> dict:
        """Fixed plus random effects per level (lme4's coef)."""
        out = {}
        fe = self.fixef
        for name, re in self.ranef.items():
            df = pd.DataFrame(np.repeat(fe.to_numpy()[None, :], len(re), axis=0),
                              index=re.index, columns=fe.index)
            for c in re.columns:
                if c in df.columns:
                    df[c] = df[c] + re[c]
                else:
                    df[c] = re[c]
            out[name] = df
        return out

    # ------------------------------------------------------------------ fitted values
    def _fitted_model_order(self) -> np.ndarray:
        fit = self.design.X @ self.beta
        if self.design.offset is not None:
            fit = fit + self.design.offset
        for t, b in zip(self.design.terms, self._modes):
            fit = fit + np.einsum("nq,nq->n", t.Z, b[t.codes])
        return fit

    def _data_series(self, a: np.ndarray, name: str) -> pd.Series:
        d = self.design
        return pd.Series(d.to_data_order(a), index=d.to_data_order(d.row_labels), name=name)

    @property
    def fitted(self) -> pd.Series:
        """Conditional fitted values Xβ̂ + Zb̂, in the data's row order (index = data index)."""
        return self._data_series(self._fitted_model_order(), "fitted")

    @property
    def residuals(self) -> pd.Series:
        """Conditional residuals y − Xβ̂ − Zb̂, in the data's row order."""
        return self._data_series(self.design.y - self._fitted_model_order(), "residuals")

    # ------------------------------------------------------------------ hat matrix (seed 2)
    @cached_property
    def hat_trace(self) -> float:
        """tr(P) for the hat matrix P (P y = ŷ, fixed plus random parts): the effective df.

        P is the hat matrix of Henderson's mixed-model equations; with M the penalised
        cross-product of [ZΛ X], tr(P) = q + p − tr((M⁻¹)_uu) and
        tr((M⁻¹)_uu) = tr((LL')⁻¹) + ‖R_X⁻¹ C_X' L⁻¹‖²_F, without any n × n matrix.
        """
        f = self.factor
        p = self.design.n_fixef
        trLL = sum(float(np.trace(D, axis1=1, axis2=2).sum()) for D in self._inv_diag_blocks)
        q_tot = sum(t.n_levels * t.q for t in self.design.terms)
        extra = 0.0
        if p:
            # Zm = L^{-T} C_X (q_tot × p), by the blocked back-substitution
            CX0 = f.C0[:, :, :p]
            if f.LRR is None:
                Z0 = B.solve_lower_t(f.L0, CX0)
                Zall = Z0.reshape(-1, p)
            else:
                ZR = f.LRR.solve_Lt(f.CR[:, :p])
                Z0 = B.solve_lower_t(f.L0, CX0 - (f.LR0.T @ ZR).reshape(CX0.shape))
                Zall = np.vstack([Z0.reshape(-1, p), ZR])
            W = sla.solve_triangular(f.RX, Zall.T, lower=True)
            extra = float((W ** 2).sum())
        return q_tot + p - (trLL + extra)

    @property
    def edf(self) -> float:
        """Effective degrees of freedom tr(P) (seed 2)."""
        return self.hat_trace

    @property
    def df_resid_hat(self) -> float:
        """Residual degrees of freedom n − tr(P) (seed 2)."""
        return self.n_obs - self.hat_trace

    def hat_matrix(self, max_n: int = 5000) -> np.ndarray:
        """The n × n hat matrix P (rows/columns in the data's row order); small n only."""
        n = self.n_obs
        if n > max_n:
            raise ValueError(f"hat_matrix forms an n × n matrix; n = {n} exceeds max_n = {max_n}")
        from .weights import scaled

        _, Xs, terms = scaled(self.design)   # rows scaled by √w for a weighted fit
        Zs = [t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T) for t, T in
              zip(terms, self.factor.T)]
        ZL = np.hstack(Zs)
        A = np.hstack([ZL, Xs])
        M = A.T @ A
        k = ZL.shape[1]
        M[np.arange(k), np.arange(k)] += 1.0
        P = A @ np.linalg.solve(M, A.T)
        inv = np.argsort(self.design.order)
        return P[np.ix_(inv, inv)]

    # ------------------------------------------------------------------ prediction
    def predict(self, newdata=None, *, re_form=None, allow_new_levels=True, se_fit=False,
                interval=None, level=0.95):
        """Predictions as lme4's predict(): see :func:`pylmem.predict.predict`; with
        ``se_fit``/``interval`` a DataFrame (fit, se_fit, lwr, upr: :mod:`pylmem.intervals`)."""
        from .predict import predict

        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels,
                       se_fit=se_fit, interval=interval, level=level)

    def refit(self, y=None, *, reml: bool | None = None) -> "LmerFit":
        """The same model refitted by ML (``reml=False``) or REML, reusing the design; with
        ``y`` (n values, the data's row order) refitted to that new response (lme4's
        ``refit(fit, newresp)``: X, Z and their cross-products reused)."""
        if y is not None:
            from .bootstrap import refit_response

            return refit_response(self, y, reml=reml)
        if reml is None:
            raise TypeError("refit() needs a new response y, or reml=True/False")
        if reml == self.reml and self.method == "profiled":
            return self
        return fit_design(self.design, reml=reml, cp=self.cp, verbose=False)

    # ---- issue 12: simulation and the parametric bootstrap
    def simulate(self, nsim: int = 1, seed=None, use_u: bool = False) -> np.ndarray:
        """(n, nsim) responses simulated from the fit: see :func:`pylmem.bootstrap.simulate`."""
        from .bootstrap import simulate

        return simulate(self, nsim, seed=seed, use_u=use_u)

    def bootstrap(self, nsim: int, seed=None, **kw):
        """Parametric bootstrap (lme4's bootMer): see :func:`pylmem.bootstrap.bootstrap`."""
        from .bootstrap import bootstrap

        return bootstrap(self, nsim, seed=seed, **kw)

    # ---- issue 11: inference (df, F tests, confidence intervals, profiles)
    def coef_table(self, ddf=None):
        """lmerTest's coefficient table (``ddf``: None, "Satterthwaite", "Kenward-Roger")."""
        from .inference import coef_table

        return coef_table(self, ddf=ddf)

    def confint(self, method="profile", level=0.95, **kw):
        """Confidence intervals as lme4's confint(): see :func:`pylmem.profile.confint`."""
        from .profile import confint

        return confint(self, method=method, level=level, **kw)

    def profile(self, which=None, **kw):
        """The likelihood profile on lme4's ζ scale: see :func:`pylmem.profile.profile`."""
        from .profile import profile

        return profile(self, which=which, **kw)

    def anova(self, type=3, ddf="Satterthwaite"):
        """lmerTest's F tests of the fixed-effects terms: see :func:`pylmem.ftests.single_anova`."""
        from .ftests import single_anova

        return single_anova(self, type=type, ddf=ddf)

    # ------------------------------------------------------------------ display
    # ---- issue 13: weights, diagnostics, measures, tidy tables
    @property
    def weights(self):
        """Prior weights in the data's row order (None for an unweighted fit)."""
        w = self.design.weights
        return None if w is None else self._data_series(w, "weights")

    def residuals_of(self, type: str = "response", scaled: bool = False) -> pd.Series:  # noqa: A002
        """Residuals of lme4's types ("response", "pearson", ...): :mod:`pylmem.diagnostics`."""
        from .diagnostics import residuals_of

        return residuals_of(self, type, scaled=scaled)

    def hatvalues(self) -> pd.Series:
        """Leverages (diagonal of the hat matrix; they sum to ``hat_trace``)."""
        from .diagnostics import hatvalues

        return hatvalues(self)

    def cooks_distance(self) -> pd.Series:
        """Cook's distance, as lme4's cooks.distance."""
        from .diagnostics import cooks_distance

        return cooks_distance(self)

    def rstudent(self) -> pd.Series:
        """Studentized residuals, as lme4's rstudent."""
        from .diagnostics import rstudent

        return rstudent(self)

    def influence(self, groups=None, *, data=None):
        """Case / group deletion by refitting (lme4's influence.merMod)."""
        from .diagnostics import influence

        return influence(self, groups, data=data)

    def r2(self) -> pd.Series:
        """Nakagawa–Schielzeth marginal and conditional R²."""
        from .measures import r2

        return r2(self)

    def icc(self, by_group: bool = False) -> pd.Series:
        """Intraclass correlation (adjusted and conditional)."""
        from .measures import icc

        return icc(self, by_group=by_group)

    def rePCA(self) -> dict:  # noqa: N802 - lme4's name
        """lme4's rePCA: principal components of each grouping factor's random effects."""
        from .measures import rePCA

        return rePCA(self)

    def tidy(self, effects=("ran_pars", "fixed"), conf_int: bool = False,
             conf_level: float = 0.95, ddf=None) -> pd.DataFrame:
        """broom.mixed's tidy table (effect, group, term, estimate, std.error, ...)."""
        from .tidy import tidy

        return tidy(self, effects=effects, conf_int=conf_int, conf_level=conf_level, ddf=ddf)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's one-row glance table."""
        from .tidy import glance

        return glance(self)

    def __repr__(self) -> str:
        from .summary import short_repr

        return short_repr(self)

    def summary(self, ddf=None) -> "object":
        """lme4's summary(): an object whose str() is the printed summary; ``ddf``
        ("Satterthwaite", "Kenward-Roger") gives lmerTest's layout with df and p-values."""
        from .summary import Summary

        return Summary(self) if ddf is None else Summary(self, ddf=ddf)
