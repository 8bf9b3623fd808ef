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
    W = cp.WtW
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


_BLAS_CONTROLLER = []


def _blas_threads_for(dev):
    """One BLAS thread unless the dense block is large enough to gain from more.

    Measured here (OpenBLAS, 2 cores): a 200 × 200 block evaluates in 1.5 ms on one thread
    and ~45 ms on two (thread hand-off dominates small operations); InstEval's 1156 × 1156
    block gains ~15% from two.  The libraries are looked up once (a scan of the process's
    maps costs ~3 ms), then each fit only sets the limit.
    """
    from contextlib import nullcontext

    if not 0 < dev.m < 512:   # one term: no dense block; large blocks: threads pay off
        return nullcontext()
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - optional speed-up
            _BLAS_CONTROLLER.append(None)
    ctl = _BLAS_CONTROLLER[0]
    return nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")


class ConvergenceWarning(UserWarning):
    """A fit that cannot be fully trusted: no convergence, or a singular (boundary) fit."""


def lmer(formula: str, data: pd.DataFrame, *, reml: bool = True, method: str = "profiled",
         factors=(), verbose=None, em_options=None) -> "LmerFit":
    """Fit ``formula`` (lme4 syntax) to ``data`` by ML (``reml=False``) or REML.

    ``method="profiled"`` (default) minimises the profiled deviance (lme4's algorithm);
    ``method="em"`` runs the seed's accelerated EM to convergence (ML only).
    ``factors`` names numeric-looking columns to treat as categorical.
    ``verbose``: show a progress line (None: only on a terminal for fits over ~2 s).
    """
    if not isinstance(data, pd.DataFrame) and type(data).__module__.startswith("dask"):
        from .dask_fit import lmer_dask   # issue 14: a dask DataFrame, fitted where it lives

        return lmer_dask(formula, data, reml=reml, method=method, factors=factors,
                         verbose=verbose, em_options=em_options)
    t0 = time.perf_counter()
    design = build_design(formula, data, factors=factors)
    return fit_design(design, reml=reml, method=method, verbose=verbose, em_options=em_options,
                      _t0=t0)


def fit_design(design: ModelDesign, *, reml=True, method="profiled", verbose=None, em_options=None,
               cp=None, _t0=None) -> "LmerFit":
    """Fit a prepared :class:`ModelDesign` (``cp``: precomputed cross-products, e.g. from Dask)."""
    t0 = time.perf_counter() if _t0 is None else _t0
    if method not in ("profiled", "em"):
        raise ValueError(f"method must be 'profiled' or 'em', got {method!r}")
    if method == "em" and reml:
        raise ValueError("method='em' fits by maximum likelihood: pass reml=False")
    cp = crossproducts(design.y, design.X, design.terms) if cp is None else cp
    _check_residual_variance(cp, design.response)
    dev = ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms],
                           reml=reml)
    from .progress import Progress

    progress = Progress(verbose=verbose, label="lmer")
    em_result = None
    if method == "em":
        from .em import fit_em

        em_result = fit_em(design, **(em_options or {}))
        theta = B.theta_from_lower(B.psd_cholesky(em_result.omega / em_result.sigma2))
        # the check polishes θ with one Newton step when that raises the likelihood
        opt = check_convergence(dev, theta, theta0=theta, method=f"EM ({em_result.method})",
                                message=f"EM stopped after {em_result.n_iter} iterations",
                                trace=list(-2 * np.asarray(em_result.trace)))
        if not em_result.converged:
            opt.warnings.append(f"EM did not converge in {em_result.n_iter} iterations")
            opt.converged = False
    else:
        with _blas_threads_for(dev):
            opt = optimize_theta(dev, design, verbose=verbose, callback=progress.update)
    progress.close()
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
        """True when some T_k is singular (a variance or correlation on the boundary)."""
        for T in self.factor.T:
            if np.any(np.abs(np.diag(T)) < 1e-4):
                return True
        return False

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
        out = []
        if f.LRR is None:
            return [D0]
        # L^{-1} = [[L0^{-1}, 0], [-LRR^{-1} LR0 L0^{-1}, LRR^{-1}]]
        G = len(L0inv)
        L0inv_bd = sp.bsr_matrix((L0inv, np.arange(G), np.arange(G + 1)), shape=(G * q0, G * q0))
        LR0L0inv = f.LR0 @ L0inv_bd if sp.issparse(f.LR0) else (L0inv_bd.T @ f.LR0.T).T
        LR0L0inv = LR0L0inv.toarray() if sp.issparse(LR0L0inv) else np.asarray(LR0L0inv)
        Y = sla.solve_triangular(f.LRR, LR0L0inv, lower=True)
        D0 = D0 + np.einsum("mgi,mgj->gij", Y.reshape(-1, G, q0), Y.reshape(-1, G, q0))
        out.append(D0)
        LRRinv = sla.solve_triangular(f.LRR, np.eye(f.LRR.shape[0]), lower=True)
        off = 0
        for t in self.design.terms[1:]:
            n = t.n_levels * t.q
            blk = LRRinv[:, off:off + n].reshape(-1, t.n_levels, t.q)
            out.append(np.einsum("mgi,mgj->gij", blk, blk))
            off += n
        return out

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
                ZR = sla.solve_triangular(f.LRR, f.CR[:, :p], lower=True, trans="T")
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
        Zs = [t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T) for t, T in
              zip(self.design.terms, self.factor.T)]
        ZL = np.hstack(Zs)
        A = np.hstack([ZL, self.design.X])
        M = A.T @ A
        k = ZL.shape[1]
        M[np.arange(k), np.arange(k)] += 1.0
        P = A @ np.linalg.solve(M, A.T)
        inv = np.argsort(self.design.order)
        return P[np.ix_(inv, inv)]

    # ------------------------------------------------------------------ prediction
    def predict(self, newdata=None, *, re_form=None, allow_new_levels=True) -> pd.Series:
        """Predictions as lme4's predict(): see :func:`pylmem.predict.predict`."""
        from .predict import predict

        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)

    def refit(self, *, reml: bool) -> "LmerFit":
        """The same model refitted by ML (``reml=False``) or REML, reusing the design."""
        if reml == self.reml and self.method == "profiled":
            return self
        return fit_design(self.design, reml=reml, cp=self.cp, verbose=False)

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        from .summary import short_repr

        return short_repr(self)

    def summary(self) -> "object":
        """lme4's summary(): an object whose str() is the printed summary."""
        from .summary import Summary

        return Summary(self)
