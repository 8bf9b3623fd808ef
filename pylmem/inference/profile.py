"""Likelihood profiles and confidence intervals (lme4's ``profile`` and ``confint``).

Parameters are lme4's: φ = (.sig01, …, .sigma) on the sd / correlation scale
(:mod:`pylmem.model.covariance`), then the fixed effects.  With σ not profiled out the ML
deviance is

    D(φ) = log|L_θ|² + r²(θ)/σ² + n log(2πσ²),   θ = θ(sd, cor, σ),

and the profile of parameter ψ is ζ(ψ) = sign(ψ − ψ̂) √(min_{rest} D − D̂), the
signed square root of the likelihood-ratio statistic.  For a fixed effect β_j = b the
rest is profiled exactly: the model with X without column j and response y − b x_j,
whose cross-products are M'W'WM (W = [X y]), minimised over θ.  As lme4 does, a REML
fit is profiled on the ML deviance (its ML refit).

Profile intervals are the ψ where ζ(ψ) = ±z_{(1+level)/2}, found by bracketing and
Brent's method on ζ (no spline); a bound of the parameter space (sd = 0, |cor| = 1)
that ζ does not reach is the interval's end.  Wald intervals are β̂ ± z SE(β̂), NaN for
the variance parameters (lme4).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..model.covariance import (
    refuse_structured,
    sdcor_from_theta,
    sdcor_names,
    theta_from_sdcor,
    tril_colmajor,
)
from ..numerics.crossprod import CrossProducts, TermStats
from ..numerics.deviance import ProfiledDeviance
from ..util.checks import check_level, check_names
from ..util.lazy import stats
from ..util.threads import one_blas_thread
from .bootstrap import bootstrap


def ci_columns(level: float) -> list[str]:
    """lme4's column names: "2.5 %", "97.5 %" for level 0.95."""
    a = (1 - level) / 2
    fmt = lambda x: f"{np.format_float_positional(100 * x, precision=3, trim='-')} %"  # noqa: E731
    return [fmt(a), fmt(1 - a)]


def _var_kinds(qs):
    """'sd' or 'cor' for each .sigNN entry."""
    out = []
    for q in qs:
        rows, cols = tril_colmajor(q)
        out += ["sd" if i == j else "cor" for i, j in zip(rows, cols)]
    return out


def _run_nlopt(opt, fun, x0):
    """opt.optimize(x0), keeping the best point seen: NLopt raises RoundoffLimited when
    the objective's rounding stops it, with the optimum already found."""
    import nlopt

    best = [np.inf, np.asarray(x0, float).copy()]

    def tracked(x, grad):
        v = fun(x, grad)
        if v < best[0]:
            best[0], best[1] = v, np.array(x, float)
        return v

    opt.set_min_objective(tracked)
    try:
        x = np.asarray(opt.optimize(np.asarray(x0, float)))
        return x, opt.last_optimum_value()
    except (nlopt.RoundoffLimited, nlopt.ForcedStop, RuntimeError):
        return best[1], best[0]


# inner optimisations: an error δ in D moves ζ by ~δ/(2|ζ|), the interval end by that many SEs
_FTOL, _XTOL, _STEP = 1e-9, 1e-7, 0.02


class _Profiler:
    """ζ for each parameter of an ML fit (see module docstring)."""

    def __init__(self, fit):
        refuse_structured(fit.design.terms, "the likelihood profile",
                          "use confint(method='Wald') for the fixed effects")
        if fit.reml:
            fit = fit.refit(reml=False)
        self.fit = fit
        self.dev = fit.dev
        self.qs = list(self.dev.qs)
        self.kinds = _var_kinds(self.qs) + ["sigma"]
        self.names = sdcor_names(self.qs) + [".sigma"] + list(fit.design.fixef_names)
        self.phi_hat = np.r_[sdcor_from_theta(fit.theta, fit.sigma, self.qs), fit.sigma]
        self.phi_hat = np.where(np.isnan(self.phi_hat), 0.0, self.phi_hat)
        self.d_hat = fit.objective
        self.n = fit.n_obs
        self.n_evals = 0
        self._tril = [tril_colmajor(q) for q in self.qs]

    # ------------------------------------------------------------ variance parameters
    def D(self, phi) -> float:
        s, sigma = phi[:-1], phi[-1]
        if sigma <= 0:
            return np.inf
        theta = self._theta(s, sigma)
        self.n_evals += 1
        try:
            f = self.dev.factor(theta)
        except np.linalg.LinAlgError:
            return np.inf
        return f.logdet_L + f.pwrss / sigma ** 2 + self.n * np.log(2 * np.pi * sigma ** 2) \
            - self.dev.log_weights   # −Σ log w of prior weights, as fit.objective

    def _bounds(self):
        out = []
        for k, v in zip(self.kinds, self.phi_hat):
            out.append((-1.0, 1.0) if k == "cor" else (0.0, None) if k == "sd" else
                       (1e-8 * v, None))
        return out

    def _theta(self, s, sigma):
        """θ from (sd, cor) and σ: vech chol(Ω_k/σ²) per term (fast path of
        :func:`pylmem.model.covariance.theta_from_sdcor`)."""
        out, off = [], 0
        for q, (rows, cols) in zip(self.qs, self._tril):
            m = len(rows)
            vals = s[off:off + m]
            off += m
            if q == 1:
                out.append(vals / sigma)
                continue
            sd = np.zeros(q)
            C = np.eye(q)
            dmask = rows == cols
            sd[rows[dmask]] = vals[dmask]
            C[rows[~dmask], cols[~dmask]] = vals[~dmask]
            C[cols[~dmask], rows[~dmask]] = vals[~dmask]
            Om = np.outer(sd, sd) * C / sigma ** 2
            try:
                T = np.linalg.cholesky(Om)
            except np.linalg.LinAlgError:
                return theta_from_sdcor(s, sigma, self.qs)
            out.append(T[rows, cols])
        return np.concatenate(out)

    def zeta_var(self, i, v, start=None):
        """ζ at φ_i = v, the rest minimised (BOBYQA on a scaled φ); returns (ζ, φ)."""
        import nlopt

        phi0 = self.phi_hat.copy() if start is None else start.copy()
        free = np.array([j for j in range(len(phi0)) if j != i], dtype=int)
        scale = np.where(np.array(self.kinds) == "cor", 1.0, np.maximum(np.abs(self.phi_hat), 1e-3))
        bnds = self._bounds()
        lo = np.array([-1e6 if bnds[j][0] is None else bnds[j][0] / scale[j] for j in free])
        hi = np.array([1e6 if bnds[j][1] is None else bnds[j][1] / scale[j] for j in free])
        phi = phi0.copy()
        phi[i] = v

        def obj(x, grad=None):
            phi[free] = x * scale[free]
            return self.D(phi)

        x0 = np.clip(phi0[free] / scale[free], lo, hi)
        if len(free):
            opt = nlopt.opt(nlopt.LN_BOBYQA, len(free))
            opt.set_min_objective(obj)
            opt.set_lower_bounds(lo.tolist())
            opt.set_upper_bounds(hi.tolist())
            opt.set_ftol_abs(_FTOL)
            opt.set_xtol_abs(_XTOL)
            opt.set_maxeval(5000)
            opt.set_initial_step([_STEP] * len(free))
            x, val = _run_nlopt(opt, obj, x0)
        else:
            x, val = x0, obj(x0)
        phi[free] = x * scale[free]
        dd = max(val - self.d_hat, 0.0)
        return float(np.sign(v - self.phi_hat[i]) * np.sqrt(dd)), phi.copy()

    # ------------------------------------------------------------ fixed effects
    def _reduced_dev(self, j, b):
        cp = self.dev.cp_data   # the user's W (not the centred W̃)
        r = cp.WtW.shape[0]
        p = r - 1
        keep = [c for c in range(p) if c != j]
        M = np.zeros((r, p))
        M[keep, np.arange(p - 1)] = 1.0
        M[p, p - 1] = 1.0
        M[j, p - 1] = -b
        cpj = CrossProducts(n=cp.n, WtW=M.T @ cp.WtW @ M,
                            terms=[TermStats(t.ZtZ, t.ZtW @ M) for t in cp.terms],
                            between=cp.between)
        dev = ProfiledDeviance(cpj, self.dev.qs, self.dev.n_levels, reml=False)
        dev.log_weights = self.dev.log_weights   # prior weights' −Σ log w
        return dev

    def zeta_beta(self, j, b, start=None):
        """ζ at β_j = b: the reduced model's deviance minimised over θ; returns (ζ, θ)."""
        dev = self._reduced_dev(j, b)
        th0 = np.asarray(self.fit.theta if start is None else start, float)
        lo = np.where(np.isfinite(dev.lower), 0.0, -np.inf)
        import nlopt

        def f(x, grad):
            self.n_evals += 1
            return dev(x)
        opt = nlopt.opt(nlopt.LN_BOBYQA, len(th0))
        opt.set_min_objective(f)
        opt.set_lower_bounds(np.where(np.isfinite(lo), 0.0, -1e4).tolist())
        opt.set_upper_bounds([1e4] * len(th0))
        opt.set_ftol_abs(_FTOL)
        opt.set_xtol_abs(_XTOL * 0.1)
        opt.set_maxeval(5000)
        opt.set_initial_step([max(0.005, 0.02 * abs(t)) for t in th0])
        th, val = _run_nlopt(opt, f, np.clip(th0, np.where(np.isfinite(lo), 0.0, -1e4), None))
        bhat = self.fit.beta[j]
        return float(np.sign(b - bhat) * np.sqrt(max(val - self.d_hat, 0.0))), th

    # ------------------------------------------------------------ one parameter
    def zeta(self, k, v, start=None):
        nv = len(self.phi_hat)
        return self.zeta_var(k, v, start) if k < nv else self.zeta_beta(k - nv, v, start)

    def estimate(self, k):
        nv = len(self.phi_hat)
        return self.phi_hat[k] if k < nv else self.fit.beta[k - nv]

    def bounds_of(self, k):
        nv = len(self.phi_hat)
        if k >= nv:
            return -np.inf, np.inf
        kind = self.kinds[k]
        return (-1.0, 1.0) if kind == "cor" else (0.0, np.inf)

    def _varpar_se(self):
        """Wald-type SEs of φ from a difference Hessian of D (a first step only)."""
        if getattr(self, "_se_cache", None) is not None:
            return self._se_cache
        phi = self.phi_hat
        k = len(phi)
        h = 1e-3 * np.maximum(np.abs(phi), 1e-2 * phi[-1])
        H = np.zeros((k, k))
        d0 = self.D(phi)
        for i in range(k):
            for j in range(i, k):
                ei, ej = np.zeros(k), np.zeros(k)
                ei[i], ej[j] = h[i], h[j]
                H[i, j] = H[j, i] = (self.D(phi + ei + ej) - self.D(phi + ei - ej)
                                     - self.D(phi - ei + ej) + self.D(phi - ei - ej)) / (4 * h[i] * h[j])
        se = np.full(k, np.nan)
        try:
            w = np.linalg.eigvalsh(H)
            if np.isfinite(d0) and w.min() > 1e-8 * w.max():
                se = np.sqrt(np.maximum(np.diag(2 * np.linalg.inv(H)), 0))
        except np.linalg.LinAlgError:
            pass
        self._se_cache = se
        return se

    def step_of(self, k):
        """First step: the Wald SE (β: from the fit; φ: from the Hessian of D) or, on a
        boundary, a fraction of the estimate."""
        nv = len(self.phi_hat)
        if k >= nv:
            return float(self.fit.stderr.iloc[k - nv])
        se = self._varpar_se()[k]
        if np.isfinite(se) and se > 0:
            return float(se)
        if self.kinds[k] == "cor":
            return 0.2
        return 0.25 * max(self.phi_hat[k], 0.05 * self.phi_hat[-1])

    # Not scipy.optimize.brentq on the bracket: every ζ evaluation is an inner optimisation,
    # and brentq has only an x tolerance where this stops at |ζ − target| < ztol. Measured
    # (same bracketing, brentq with the equivalent xtol = ztol / slope): sleepstudy 62 ζ
    # evaluations against 53 here, Penicillin 41 against 35, the ends equal to ~1e-6.
    def endpoint(self, k, target, ztol=1e-4):
        """ψ with ζ(ψ) = target (its sign gives the side); the bound if ζ never gets there.

        Secant steps from ψ̂ (the first one |target| Wald SEs away), overshooting by 5%
        until the target is bracketed, then the Illinois method; stops at |ζ − target| <
        ``ztol`` (an end error of ~ztol SEs, far inside 1% of the width).
        """
        est = self.estimate(k)
        lo, hi = self.bounds_of(k)
        sgn = 1.0 if target > 0 else -1.0
        step = self.step_of(k)
        start = [None]
        cache = {}

        def z(v):
            if v not in cache:
                cache[v], st = self.zeta(k, v, start[0])
                start[0] = st
            return cache[v]

        def clip(v):
            """Inside the parameter space; (value, is_edge)."""
            bound = lo if sgn < 0 else hi
            if (sgn < 0 and v <= lo) or (sgn > 0 and v >= hi):
                return bound - sgn * 1e-10 * max(1.0, abs(bound)), True
            return v, False

        a, za = est, 0.0
        b, edge = clip(est + target * step)
        for _ in range(40):
            zb = z(b)
            if abs(zb - target) < ztol:
                return b
            if sgn * (zb - target) > 0:
                break                                   # bracketed: target between za, zb
            if edge:
                return lo if sgn < 0 else hi            # ζ does not reach the target
            slope = (zb - za) / (b - a)
            if sgn * slope * (b - a) <= 0 or not np.isfinite(slope):
                nxt = b + 1.6 * (b - a)
            else:
                nxt = b + 1.05 * (target - zb) / slope
                nxt = b + np.clip(nxt - b, 0.1 * (b - a), 4.0 * (b - a)) if sgn > 0 else \
                    b - np.clip(b - nxt, 0.1 * (a - b), 4.0 * (a - b))
            a, za = b, zb
            b, edge = clip(nxt)
        else:
            return np.nan
        # Illinois on [a, b] with za on one side of the target and zb on the other
        fa, fb = za - target, zb - target
        for _ in range(60):
            c = b - fb * (b - a) / (fb - fa)
            fc = z(c) - target
            if abs(fc) < ztol:
                return c
            if fc * fb < 0:
                a, fa = b, fb          # the root lies between b and c
            else:
                fa *= 0.5              # Illinois: keep a, halve its value
            b, fb = c, fc
            if abs(b - a) < 1e-10 * max(1.0, abs(b)):
                return b
        return b


class Profile:
    """lme4's profile: ζ on a grid of each parameter (``frame``: .par, value, .zeta)."""

    def __init__(self, fit, which=None, zmax=None, n_points=8):
        self.profiler = pr = _Profiler(fit)
        names = pr.names
        idx = range(len(names)) if which is None else \
            [names.index(w) for w in check_names(which, "which", names, "parameter")]
        zmax = stats.norm.ppf(1 - 0.01 / 2) if zmax is None else zmax
        rows = []
        self.limits = {}
        for k in idx:
            est = pr.estimate(k)
            ends = [pr.endpoint(k, -zmax), pr.endpoint(k, zmax)]
            self.limits[names[k]] = ends
            rows.append((names[k], est, 0.0))
            for e in ends:
                if not np.isfinite(e) or e == est:
                    continue
                for v in np.linspace(est, e, n_points + 1)[1:]:
                    rows.append((names[k], v, pr.zeta(k, v)[0]))
        fr = pd.DataFrame(rows, columns=[".par", "value", ".zeta"])
        self.frame = fr.sort_values([".par", "value"], kind="stable").reset_index(drop=True)
        self.frame[".par"] = pd.Categorical(self.frame[".par"], categories=[names[k] for k in idx])
        self.frame = self.frame.sort_values([".par", "value"], kind="stable").reset_index(drop=True)
        self.estimates = {names[k]: pr.estimate(k) for k in idx}

    def __repr__(self) -> str:
        pars = ", ".join(str(p) for p in self.frame[".par"].cat.categories)
        return (f"<Profile of {len(self.estimates)} parameters ({pars}); "
                f"{len(self.frame)} points in .frame>")

    def confint(self, level=0.95) -> pd.DataFrame:
        """Intervals by interpolating the profile (the inverse of ζ, piecewise linear)."""
        z = stats.norm.ppf((1 + level) / 2)
        out = {}
        for name, g in self.frame.groupby(".par", observed=True):
            g = g.sort_values(".zeta")
            zz, vv = g[".zeta"].to_numpy(), g["value"].to_numpy()
            lo = np.interp(-z, zz, vv, left=np.nan) if zz.min() <= -z else vv.min()
            hi = np.interp(z, zz, vv, right=np.nan) if zz.max() >= z else vv.max()
            out[name] = (lo, hi)
        return pd.DataFrame.from_dict(out, orient="index", columns=ci_columns(level))


@one_blas_thread
def profile(fit, which=None, **kw) -> Profile:
    """The likelihood profile of each parameter on lme4's ζ scale (see module docstring).

    Parameters
    ----------
    fit : LmerFit
        The model (a REML fit is profiled on its ML refit, as lme4 does).
    which : list of str, optional
        Parameter names (``.sig01``, ``.sigma``, fixed effects); default all.
    **kw
        ``zmax`` (the largest |ζ| profiled, default the 99% two-sided normal quantile) and
        ``n_points`` (points on each side, default 8).

    Returns
    -------
    Profile
        ``frame`` (.par, value, .zeta) and ``confint(level)``.
    """
    return Profile(fit, which=which, **kw)


@one_blas_thread
def confint(fit, method="profile", level=0.95, *, parm=None, nsim=500, seed=None, **kw) -> pd.DataFrame:
    """Confidence intervals with lme4's row names (.sig01…, .sigma, fixed effects).

    Parameters
    ----------
    fit : LmerFit
        The model.
    method : {"profile", "Wald", "boot"}, default "profile"
        "Wald": fixed effects only (NaN for the variance parameters, as lme4); "profile":
        the likelihood profile (see the module docstring); "boot": parametric-bootstrap
        percentile intervals (:func:`pylmem.inference.bootstrap.bootstrap`).
    level : float, default 0.95
        The confidence level.
    parm : str or list of str, optional
        A subset of the row names.
    nsim : int, default 500
        Replicates for ``method="boot"``.
    seed : int, numpy Generator or None
        The random source for ``method="boot"``.
    **kw
        Ignored (accepted for lme4's other arguments).

    Returns
    -------
    pandas.DataFrame
        Columns "2.5 %" and "97.5 %" (for ``level=0.95``), one row per parameter.
    """
    if not isinstance(method, str):
        raise ValueError(f"confint: method must be 'Wald', 'profile' or 'boot', got {method!r}")
    m = method.lower()
    level = check_level(level)
    cols = ci_columns(level)
    names = sdcor_names(fit.dev.qs) + [".sigma"] + list(fit.design.fixef_names)
    if parm is not None:
        parm = check_names(parm, "parm", names, "parameter")
    if m == "wald":
        z = stats.norm.ppf((1 + level) / 2)
        nv = len(names) - fit.design.n_fixef
        lo = np.r_[np.full(nv, np.nan), fit.beta - z * fit.stderr.to_numpy()]
        hi = np.r_[np.full(nv, np.nan), fit.beta + z * fit.stderr.to_numpy()]
        out = pd.DataFrame({cols[0]: lo, cols[1]: hi}, index=pd.Index(names))
    elif m == "profile":
        pr = _Profiler(fit)
        z = stats.norm.ppf((1 + level) / 2)
        idx = range(len(names)) if parm is None else [names.index(p) for p in parm]
        rows = {}
        for k in idx:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                rows[names[k]] = (pr.endpoint(k, -z), pr.endpoint(k, z))
        out = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
        if out.isna().any().any():
            warnings.warn("confint: some profile interval ends could not be found (NaN)",
                          UserWarning, stacklevel=2)
        return out
    elif m in ("boot", "bootstrap"):
        out = bootstrap(fit, nsim, seed=seed).confint(level=level)
    else:
        raise ValueError(f"confint: method must be 'Wald', 'profile' or 'boot', got {method!r}")
    return out if parm is None else out.loc[parm]
