"""Inference for GLMM fits: Wald z tests and intervals, ``drop1`` likelihood-ratio tests,
profile intervals of the fixed effects, and the parametric bootstrap.

Likelihood-ratio tests between GLMM fits go through :func:`pylmem.inference.lrt.anova`
(ML fits, so nothing is refitted); every log-likelihood includes all constants, so fits with
different ``nagq`` compare (lme4's nAGQ > 1 log-likelihoods omit a constant).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

from ..estimation.glmm_fitting import refit_glmm
from ..util.deparse import deparse1
from ..util.lazy import stats
from .ftests import fixed_terms


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
            or not 0 < float(level) < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


def wald_confint(fit, level: float = 0.95) -> pd.DataFrame:
    """Wald intervals β̂ ± z σ̂_β of the fixed effects (lme4's ``confint(method = "Wald")``)."""
    level = _check_level(level)
    z = stats.norm.ppf(0.5 + level / 2)
    est, se = fit.fixef.to_numpy(), fit.stderr.to_numpy()
    a = (1 - level) / 2
    cols = [f"{100 * a:.1f} %", f"{100 * (1 - a):.1f} %"]
    return pd.DataFrame(np.c_[est - z * se, est + z * se], index=fit.fixef.index, columns=cols)


class Drop1Table(pd.DataFrame):
    """lme4's ``drop1(fit, test = "Chisq")``: npar, AIC, LRT, Pr(Chi) per marginal term."""

    _metadata = ["heading"]

    @property
    def _constructor(self):
        return pd.DataFrame

    def __str__(self) -> str:
        return getattr(self, "heading", "") + "\n" + pd.DataFrame(self).to_string()

    def __repr__(self) -> str:
        return str(self)


def glmm_drop1(fit) -> Drop1Table:
    """Single-term deletions: each fixed-effects term that no other term contains is
    dropped and the model refitted; the likelihood-ratio statistic LRT = 2 Δ logLik on the
    term's number of columns (lme4's ``drop1(fit, test = "Chisq")``)."""
    terms = fixed_terms(fit.design)
    marginal = [t for t in terms
                if not any({e for e, _ in t.factors} < {e for e, _ in u.factors} for u in terms)]
    p = fit.design.n_fixef
    rows = {"<none>": (np.nan, fit.aic, np.nan, np.nan)}
    for t in marginal:
        keep = [j for j in range(p) if j not in set(t.cols)]
        sub = refit_glmm(fit, keep=keep)
        lrt = max(0.0, 2 * (fit.loglik - sub.loglik))
        df = len(t.cols)
        rows[t.label] = (df, sub.aic, lrt, stats.chi2.sf(lrt, df))
    out = Drop1Table(pd.DataFrame.from_dict(rows, orient="index",
                                            columns=["npar", "AIC", "LRT", "Pr(Chi)"]))
    out.heading = f"Single term deletions\n\nModel:\n{deparse1(fit.formula)}"
    return out


def profile_confint(fit, level: float = 0.95, which=None) -> pd.DataFrame:
    """Likelihood-profile intervals of fixed effects: the β_j at which the signed root of
    2 (logLik(β̂) − logLik profiled over the rest, β_j fixed) is ±z (lme4's
    ``confint(method = "profile")`` for the fixed effects).  Each point is a refit with
    β_j x_j moved into the offset."""
    from dataclasses import replace

    from ..estimation.glmm_fitting import estimate_glmm

    level = _check_level(level)
    names = list(fit.fixef.index)
    which = names if which is None else ([which] if isinstance(which, str) else list(which))
    unknown = [w for w in which if w not in names]
    if unknown:
        raise ValueError(f"which names unknown fixed effect(s) {unknown} (have {names})")
    z = stats.norm.ppf(0.5 + level / 2)
    d = fit.design
    base_off = np.zeros(d.n_obs) if d.offset is None else d.offset
    est, se = fit.fixef.to_numpy(), fit.stderr.to_numpy()
    rows = []
    for name in which:
        j = names.index(name)
        keep = [k for k in range(d.n_fixef) if k != j]

        def signed_root(b, j=j, keep=keep):
            dd = replace(d, X=np.ascontiguousarray(d.X[:, keep]),
                         fixef_names=[d.fixef_names[k] for k in keep], offset=base_off + b * d.X[:, j])
            sub = estimate_glmm(dd, fit.family, nagq=max(fit.nagq, 1), response=fit.response_label,
                                start=(fit.theta, est[keep]), quiet=True)
            dev = max(0.0, 2 * (fit.loglik - sub.loglik))
            return np.sign(b - est[j]) * np.sqrt(dev)

        lims = []
        for sgn in (-1, 1):
            target = sgn * z
            lo, hi = est[j], est[j] + sgn * 2 * z * se[j]
            g = signed_root(hi) - target
            k = 0
            while sgn * g < 0 and k < 8:
                lo, hi = hi, hi + sgn * 2 * z * se[j]
                g = signed_root(hi) - target
                k += 1
            lims.append(optimize.brentq(lambda b, t=target: signed_root(b) - t, min(lo, hi), max(lo, hi),
                                        xtol=1e-6 * max(se[j], 1e-12)))
        rows.append(lims)
    a = (1 - level) / 2
    return pd.DataFrame(rows, index=which, columns=[f"{100 * a:.1f} %", f"{100 * (1 - a):.1f} %"])


class GlmmBootstrap:
    """Parametric bootstrap replicates of a GLMM: ``estimates`` (nsim × (θ, β)), ``theta0``."""

    def __init__(self, estimates: pd.DataFrame, original: pd.Series, n_failed: int):
        self.estimates = estimates
        self.original = original
        self.n_failed = n_failed

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals."""
        level = _check_level(level)
        a = (1 - level) / 2
        q = self.estimates.quantile([a, 1 - a]).T
        q.columns = [f"{100 * a:.1f} %", f"{100 * (1 - a):.1f} %"]
        return q

    def __repr__(self) -> str:
        return (f"GlmmBootstrap: {len(self.estimates)} replicates ({self.n_failed} failed)\n"
                + pd.DataFrame({"original": self.original, "bias": self.estimates.mean() - self.original,
                                "std. error": self.estimates.std()}).to_string())


def glmm_simulate(fit, nsim: int = 1, seed=None, use_u: bool = False) -> np.ndarray:
    """Responses simulated from the fitted model, (n, nsim) in the data's row order, on the
    model's scale (proportions for a binomial with trials).  New random effects are drawn
    unless ``use_u`` (then conditional on the modes)."""
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    rng = np.random.default_rng(seed)
    d, prob = fit.design, fit.prob
    ZL = prob.zlam(fit.theta)
    base = prob.offset + d.X @ fit.beta
    out = np.empty((d.n_obs, nsim))
    for s in range(nsim):
        u = fit.opt.res.u if use_u else rng.standard_normal(prob.Q)
        mu = fit.family.linkinv(base + prob.blocks.times_u(ZL, u))
        out[:, s] = d.to_data_order(fit.family.simulate(mu, prob.wt, rng))
    return out


def glmm_bootstrap(fit, nsim: int, seed=None) -> GlmmBootstrap:
    """Parametric bootstrap: simulate from the fit and refit (θ and β of each replicate).

    A one-term scalar model refits all replicates in lock-step
    (:func:`pylmem.estimation.glmm_batch.fit_replicates`); a replicate it does not bring to a
    checked optimum, and every replicate of other models, is refitted on its own from the
    original estimates."""
    from ..estimation.glmm_batch import fit_replicates

    sims = glmm_simulate(fit, nsim, seed)
    d, prob = fit.design, fit.prob
    labels = [f"theta_{i + 1}" for i in range(len(fit.theta))] + list(fit.fixef.index)
    Y = sims[d.order].T                                  # (nsim, n), model order
    est = np.full((nsim, len(labels)), np.nan)
    todo = np.arange(nsim)
    if prob.single and prob.qs[0] == 1 and fit.nagq == 1 and prob.p:
        se = np.sqrt(np.diag(fit.vcov_conditional))
        th, be, _, ok = fit_replicates(prob, Y, fit.theta, fit.beta, se, prob_u0=fit.opt.res.u,
                                       hessian=fit.opt.hessian)
        est[ok] = np.c_[th[ok], be[ok]]
        todo = np.flatnonzero(~ok)
    failed = 0
    for s in todo:
        try:
            r = refit_glmm(fit, y=Y[s])
            est[s] = np.r_[r.theta, r.beta]
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            failed += 1
    est = pd.DataFrame(est, columns=labels).dropna()
    return GlmmBootstrap(est, pd.Series(np.r_[fit.theta, fit.beta], index=labels), failed)
