"""Maximise the GLMM likelihood: lme4's two stages, then a Newton polish and a check.

1. ``nagq = 0`` (lme4's nAGQ = 0): BOBYQA over θ alone, β and u found together by PIRLS at
   each θ (the Laplace deviance with β profiled by the penalized least squares).  Fast, and
   the start of stage 2.
2. ``nagq ≥ 1``: BOBYQA over (θ, β) with u by PIRLS; the deviance is the Laplace
   approximation (``nagq = 1``) or adaptive Gauss–Hermite quadrature.  β is moved in units
   of its stage-1 standard errors, so that the optimiser sees a well-scaled problem whatever
   the covariates' units.
3. The optimum is polished and checked: central-difference gradient and Hessian of the
   deviance in the optimiser's coordinates, Newton steps while they lower it (keeping
   variances that sit on the boundary there), then the scaled gradient H⁻¹g must be small
   and H positive definite on the free coordinates.  When the check fails the fit restarts
   from the point reached with Nelder–Mead and is checked again; a fit that still fails
   says so (``converged = False`` and a warning).  The Hessian is kept: lme4 takes the
   fixed effects' covariance from it (``vcov = 2 H⁻¹``, the β block).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..numerics.pirls import PIRLS_TOL, PirlsProblem, PirlsResult
from .convergence import _fd_grad_hess

GRAD_TOL = 1e-4      # max |H⁻¹ g| on the free coordinates (lme4 checks 1e-3 on its scale)
STAGE1_FTOL = 1e-2   # the start of stage 2: its Newton steps take it from ~1e-2 of the deviance


@dataclass
class GlmmOptimum:
    """What the estimation leaves: θ̂, β̂, the modes, the deviance and the check's record."""

    theta: np.ndarray
    beta: np.ndarray
    res: PirlsResult
    deviance: float            # −2 log L (Laplace or AGQ), every constant included
    nagq: int
    n_evals: int
    converged: bool
    message: str
    warnings: list = field(default_factory=list)
    hessian: np.ndarray | None = None   # of the deviance in (θ, β), user scale
    gradient: np.ndarray | None = None
    singular: bool = False
    stage1: tuple | None = None          # (θ, β, deviance) of the nAGQ = 0 stage


class _Objective:
    """The deviance as a function of the optimiser's coordinates, with warm-started PIRLS."""

    def __init__(self, prob: PirlsProblem, nagq: int, *, fit_beta: bool, beta0=None,
                 beta_scale=None, theta_scale=None):
        self.prob = prob
        self.nagq = nagq
        self.fit_beta = fit_beta
        self.nt = len(prob.lower)
        self.beta0 = np.zeros(prob.p) if beta0 is None else np.asarray(beta0, float)
        self.bs = np.ones(prob.p) if beta_scale is None else np.asarray(beta_scale, float)
        self.ts = np.ones(self.nt) if theta_scale is None else np.asarray(theta_scale, float)
        self.u = None
        self.beta_warm = None
        self.pirls_tol = PIRLS_TOL
        self.best = (np.inf, None, None)
        self.n = 0

    def params(self, x):
        x = np.asarray(x, float)
        theta = x[:self.nt] * self.ts
        beta = None if self.fit_beta else self.beta0 + self.bs * x[self.nt:]
        return theta, beta

    def coords(self, theta, beta=None):
        x = np.asarray(theta, float) / self.ts
        if self.fit_beta:
            return x
        return np.r_[x, (np.asarray(beta, float) - self.beta0) / self.bs]

    def evaluate(self, x) -> tuple[float, PirlsResult | None]:
        theta, beta = self.params(x)
        self.n += 1
        prob = self.prob
        for attempt in range(2):
            u0 = self.u if attempt == 0 else None
            try:
                if self.fit_beta:
                    b0 = self.beta_warm if attempt == 0 else None
                    res = prob.pirls(theta, b0, u0, fit_beta=True, tol=self.pirls_tol)
                else:
                    res = prob.pirls(theta, beta, u0)
            except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                continue
            val = res.laplace if self.nagq <= 1 else prob.agq_deviance(theta, res, self.nagq)
            if np.isfinite(val):
                self.u = res.u
                if self.fit_beta:
                    self.beta_warm = res.beta
                if val < self.best[0]:
                    self.best = (val, np.array(x, float), res)
                return val, res
        return np.inf, None

    def __call__(self, x) -> float:
        return self.evaluate(x)[0]


def _bobyqa(obj: _Objective, x0, lower, step, maxeval=20000, ftol=1e-7):
    import nlopt

    def f(x, grad):
        return obj(x)

    opt = nlopt.opt(nlopt.LN_BOBYQA, len(x0))
    opt.set_min_objective(f)
    opt.set_lower_bounds(lower.tolist())
    opt.set_upper_bounds([np.inf] * len(x0))
    # moderate tolerances: the Newton polish takes it from there
    opt.set_ftol_abs(ftol)
    opt.set_xtol_abs(1e-6 if ftol <= 1e-7 else 1e-4)
    opt.set_maxeval(maxeval)
    opt.set_initial_step(np.asarray(step, float).tolist())
    x0 = np.maximum(np.asarray(x0, float), lower)
    try:
        x = opt.optimize(x0)
    except (nlopt.RoundoffLimited, ValueError, RuntimeError):
        x = obj.best[1] if obj.best[1] is not None else x0
    if obj.best[1] is not None and obj(x) > obj.best[0]:
        x = obj.best[1]
    return np.asarray(x, float)


def _nelder_mead(obj: _Objective, x0, lower):
    import nlopt

    opt = nlopt.opt(nlopt.LN_NELDERMEAD, len(x0))
    opt.set_min_objective(lambda x, g: obj(x))
    opt.set_lower_bounds(lower.tolist())
    opt.set_ftol_abs(1e-12)
    opt.set_xtol_abs(1e-9)
    opt.set_maxeval(20000)
    opt.set_initial_step([0.05] * len(x0))
    try:
        x = opt.optimize(np.maximum(x0, lower))
    except (nlopt.RoundoffLimited, ValueError, RuntimeError):
        x = obj.best[1]
    return obj.best[1] if obj(x) > obj.best[0] else np.asarray(x, float)


def _polish(obj: _Objective, x, lower, h=1e-3, rounds=4):
    """Snap tiny variances to 0, then Newton steps on the free coordinates.

    Returns (x, f, g, H, step): the point, its deviance, the gradient and Hessian of the
    last round and the Newton step H⁻¹g measured there.  A step whose predicted decrease
    is below 1e-9 is taken without forming a new Hessian (the quadratic model is exact to
    far below the deviance's rounding there)."""
    diag = np.isfinite(lower)
    x = np.array(x, float)
    f0 = obj(x)
    for i in np.argsort(x):
        if diag[i] and 0 < x[i] < 1e-3:
            x2 = x.copy()
            x2[i] = 0.0
            f2 = obj(x2)
            if f2 <= f0 + 1e-10 * abs(f0):
                x, f0 = x2, f2
    hs = np.full(len(x), h)
    step = np.zeros(len(x))
    for _ in range(rounds):
        g, H = _fd_grad_hess(obj, x, hs)
        # a variance at 0 where the deviance curves down is a saddle (the deviance is even
        # in a scalar θ, so its gradient there is 0): leave it, towards the interior
        saddle = diag & (x <= 0) & (np.diag(H) < 0)
        if saddle.any():
            x2 = x.copy()
            x2[saddle] = 0.5
            f2 = obj(x2)
            if f2 < f0:
                x, f0 = x2, f2
                continue
        free = ~(diag & (x <= 0) & (g >= 0))
        step = np.zeros(len(x))
        try:
            step[free] = -np.linalg.solve(H[np.ix_(free, free)], g[free])
        except np.linalg.LinAlgError:
            return x, f0, g, H, step
        predicted = -0.5 * float(g @ step)
        if np.max(np.abs(step)) < 1e-10:
            return x, f0, g, H, step
        t, improved = 1.0, False
        for _ in range(8):
            xn = np.maximum(x + t * step, np.where(diag, 0.0, -np.inf))
            fn = obj(xn)
            if fn < f0 - 1e-13 * abs(f0):
                x, f0, improved = xn, fn, True
                break
            t *= 0.5
        if not improved or (t == 1.0 and predicted < 1e-9):
            return x, f0, g, H, step
    return x, f0, g, H, step


def _check(x, g, H, step, lower):
    """(converged, message): the Newton step H⁻¹g (measured where H was formed) and the
    Hessian on the free coordinates."""
    diag = np.isfinite(lower)
    at_bound = diag & (x <= 0)
    if np.any(at_bound & (np.diag(H) < 0)):
        return False, "a variance at 0 is a saddle point of the deviance, not its minimum"
    free = ~(at_bound & (g >= -1e-6))
    Hf = H[np.ix_(free, free)]
    if free.any():
        ev = np.linalg.eigvalsh(0.5 * (Hf + Hf.T))
        if not np.all(ev > 0):
            return False, "the Hessian of the deviance is not positive definite at the optimum"
        sg = np.abs(step[free])
        if sg.max() > GRAD_TOL:
            return False, f"the scaled gradient |H⁻¹g| = {sg.max():.2g} is above {GRAD_TOL:g}"
    return True, "converged: gradient and Hessian checked"


def _checked(obj, x, lower, *, rounds=4, restarts=()):
    """Polish and check; while the check fails, restart from the point reached with each of
    ``restarts`` in turn (an optimiser ``(obj, x, lower) -> x``), polish and check again.
    Returns (x, g, H, converged, message)."""
    x, _, g, H, st = _polish(obj, x, lower, rounds=rounds)
    ok, msg = _check(x, g, H, st, lower)
    for run in restarts:
        if ok:
            break
        x, _, g, H, st = _polish(obj, run(obj, x, lower), lower)
        ok, msg = _check(x, g, H, st, lower)
    return x, g, H, ok, msg


def fit_glmm(prob: PirlsProblem, *, nagq: int = 1, theta0=None, start=None) -> GlmmOptimum:
    """Fit a GLMM by the stages of the module docstring.

    Parameters
    ----------
    prob : PirlsProblem
        The model's structure.
    nagq : int
        0: nAGQ = 0 only; 1: Laplace; > 1: adaptive Gauss–Hermite points per dimension.
    theta0 : array_like, optional
        Start for θ (default: 1 on the diagonals, 0 elsewhere, as lme4).
    start : (theta, beta), optional
        A start near the optimum for ``nagq ≥ 1`` (a refit: profile, bootstrap): stage 1 is
        skipped and Newton steps start there.

    Returns
    -------
    GlmmOptimum
    """
    nt = len(prob.lower)
    diag = np.isfinite(prob.lower)
    if theta0 is None:
        theta0 = np.where(diag, 1.0, 0.0)
    warns: list = []
    o1 = _Objective(prob, 1, fit_beta=True)
    lower1 = np.where(diag, 0.0, -np.inf)
    if start is not None and nagq >= 1:
        theta1 = np.maximum(np.asarray(start[0], float), lower1)
        beta1 = np.asarray(start[1], float)
        r0 = prob.pirls(theta1, beta1)
        r1 = prob.pirls(theta1, beta1, r0.u, fit_beta=True, maxit=0)    # R_X at the mode
        r1.u, r1.beta = r0.u, beta1
        stage1 = None
    else:
        # stage 1: θ only, β inside PIRLS
        # a start for stage 2 needs no tight optimum (its Newton steps polish) and PIRLS to
        # ~1e-8 of the deviance; nAGQ = 0 is the final fit and gets both in full
        prob_tol = prob._tol_canonical
        if nagq:
            o1.pirls_tol, prob._tol_canonical = 1e-8, 1e-6
        try:
            x1 = _bobyqa(o1, np.asarray(theta0, float), lower1, np.full(nt, 0.25),
                         ftol=1e-7 if nagq == 0 else STAGE1_FTOL)
        finally:
            prob._tol_canonical, o1.pirls_tol = prob_tol, PIRLS_TOL
        v1, r1 = o1.evaluate(x1)
        if r1 is None:
            raise RuntimeError("PIRLS failed at every θ tried: the model cannot be fitted (check the "
                               "response and the linear predictor's scale)")
        theta1, beta1 = x1.copy(), r1.beta.copy()
        stage1 = (theta1, beta1, v1)
    p = prob.p
    if p:
        Ri = np.linalg.inv(r1.RX)
        se = np.sqrt(np.maximum((Ri * Ri).sum(axis=0), 1e-300))
        se = np.where(np.isfinite(se) & (se > 0), se, 1.0)
    else:
        se = np.ones(0)
    if nagq == 0:
        obj = o1
        x, g, H, ok, msg = _checked(o1, x1, lower1, restarts=(_nelder_mead,))
        v, res = o1.evaluate(x)
        theta, beta = x.copy(), res.beta.copy()
        Huser = None
    else:
        obj = _Objective(prob, nagq, fit_beta=False, beta0=beta1, beta_scale=se)
        obj.u = r1.u
        lower = np.r_[lower1, np.full(p, -np.inf)]
        x0 = obj.coords(theta1, beta1)
        # the nAGQ = 0 optimum is close to the Laplace one: Newton steps on the
        # finite-difference Hessian first (a few Hessians, ~(d + 1)(d + 2)/2 evaluations each),
        # BOBYQA from there only when they do not reach a checked optimum
        step = np.r_[np.full(nt, 0.1), np.full(p, 0.5)]
        x, g, H, ok, msg = _checked(obj, x0, lower, rounds=6, restarts=(
            lambda o, xx, lo: _bobyqa(o, xx, lo, step), _nelder_mead))
        v, res = obj.evaluate(x)
        theta, beta = obj.params(x)
        s = np.r_[obj.ts, obj.bs]
        Huser = H / np.outer(s, s)
        g = g / s
    singular = bool(np.any(np.abs(theta[diag]) < 1e-4))
    if not ok:
        warns.append(f"the GLMM fit did not converge: {msg}")
    if not res.converged:
        warns.append("PIRLS did not converge at the optimum")
    return GlmmOptimum(theta=np.asarray(theta, float), beta=np.asarray(beta, float), res=res,
                       deviance=float(v), nagq=nagq, n_evals=o1.n + (obj.n if obj is not o1 else 0),
                       converged=ok and res.converged, message=msg, warnings=warns,
                       hessian=Huser, gradient=g, singular=singular, stage1=stage1)
