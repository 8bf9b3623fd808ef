"""The check of an optimum, as lme4's ``checkConv``: snap near-zero variances to the
boundary, polish with Newton steps, then test the scaled gradient and the Hessian, in the
optimiser's coordinates (:class:`~pylmem.estimation.coords.Coordinates`).  The record of
the optimisation (:class:`OptSummary`) and the warning class of fits that cannot be fully
trusted live here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.covariance import psd_cholesky, theta_from_lower
from .coords import Coordinates


class ConvergenceWarning(UserWarning):
    """A fit that cannot be fully trusted: no convergence, or a singular (boundary) fit."""


@dataclass
class OptSummary:
    """One record of the optimisation (MixedModels.jl's OptSummary)."""

    method: str
    theta_start: np.ndarray
    theta: np.ndarray
    objective: float
    n_evals: int
    converged: bool
    message: str
    warnings: list = field(default_factory=list)
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None
    trace: list = field(default_factory=list)  # objective at each evaluation
    singular: bool = False
    escape: np.ndarray | None = None   # a point of lower d found off the boundary (restart there)


# Hand-written on purpose: scipy.optimize.approx_fprime(x, grad, h) forms the same forward
# differences but evaluates grad(x) again (k + 1 gradients where g0 is known) and does not
# symmetrise; scipy.differentiate.hessian (scipy >= 1.15, above the pinned minimum) is
# adaptive and needs many more deviance evaluations. _fd_grad_hess is lme4's deriv12.
def _fd_hessian(grad, x, h, g0):
    """Symmetrised forward-difference Hessian from a gradient function (g0 = grad(x)).

    Forward steps stay inside the bounds (θ_diag ≥ 0) and cost k gradients, not 2k.
    """
    k = len(x)
    H = np.empty((k, k))
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        H[i] = (grad(x + e) - g0) / h[i]
    return 0.5 * (H + H.T)


def _fd_grad(f, x, h):
    """Central-difference gradient of a scalar function."""
    k = len(x)
    g = np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        g[i] = (f(x + e) - f(x - e)) / (2 * h[i])
    return g


def _fd_grad_hess(f, x, h):
    """Central-difference gradient and Hessian of a scalar function."""
    k = len(x)
    f0 = f(x)
    g = np.empty(k)
    H = np.empty((k, k))
    fp = np.empty(k)
    fm = np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        fp[i], fm[i] = f(x + e), f(x - e)
        g[i] = (fp[i] - fm[i]) / (2 * h[i])
        H[i, i] = (fp[i] - 2 * f0 + fm[i]) / h[i] ** 2
    for i in range(k):
        for j in range(i + 1, k):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            fpp = f(x + ei + ej)
            H[i, j] = H[j, i] = (fpp - fp[i] - fp[j] + f0) / (h[i] * h[j])
    return g, H


def _pinv_solve(H, g):
    """H⁺g, dropping eigen-directions with |eigenvalue| below 1e-8 of the largest (None if H
    is not finite)."""
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
        return None
    ev, V = np.linalg.eigh(0.5 * (H + H.T))
    keep = np.abs(ev) > 1e-8 * max(float(np.abs(ev).max()), 1e-300)
    return V[:, keep] @ ((V[:, keep].T @ g) / ev[keep])


def _gradient_polish(co, x, obj, g, H, free, diag, steps=3):
    """Newton steps on the analytic gradient's zero once d itself is flat to rounding: a
    step is kept when it shrinks |g| and does not raise d beyond its rounding (1e-13).
    θ̂ to ~1e-10 instead of ~1e-7: the Satterthwaite and Kenward–Roger df read it."""
    for _ in range(steps):
        gf = g[free]
        if not np.abs(gf).max() > 1e-12:
            break
        step = _pinv_solve(H[np.ix_(free, free)], gf)
        if step is None:
            break
        t2 = x.copy()
        t2[free] -= step
        if not np.all(t2[diag] >= 0):
            break
        o2, g2 = co.fg(t2)
        if not (np.isfinite(o2) and o2 <= obj + 1e-13 * max(1.0, abs(obj))
                and np.abs(g2[free]).max() < np.abs(gf).max()):
            break
        x, obj, g = t2, o2, np.asarray(g2, float)
    return x, obj, g


def _check_interior(Hf, gf, xf) -> list:
    """The second-order check on the interior coordinates: H positive semi-definite (to
    the finite-difference noise) and a small scaled gradient H⁺g.  Directions along which
    d is flat (collinear random slopes: |eigenvalue| below 1e-4 of the largest, the noise
    of the forward differences) are left out of H⁺ (a pseudo-inverse) and only need a
    small gradient; they make the fit nearly unidentifiable, not unconverged."""
    out = []
    ev, V = np.linalg.eigh(0.5 * (Hf + Hf.T))
    big = max(float(np.abs(ev).max()), 1e-300)
    flat = np.abs(ev) <= 1e-4 * big   # the forward differences' O(h) noise (h = 1e-4)
    neg = (ev < 0) & ~flat
    if neg.any():
        out.append("Model failed to converge: degenerate Hessian with "
                   f"{int(neg.sum())} negative eigenvalue(s)")
        return out
    if flat.any() or ev.max() / ev.min() > 1e12:
        ratio = np.inf if flat.any() else ev.max() / ev.min()
        out.append("Model is nearly unidentifiable: very large eigenvalue ratio "
                   f"({ratio:.2g}) - rescale variables?")
    gv = V.T @ gf
    # the Newton step relative to the coordinate's size (x is O(1) unless a variance ratio
    # is huge, where d is flat in x and only the relative step counts)
    step = V[:, ~flat] @ (gv[~flat] / ev[~flat])
    scaled = np.abs(step) / np.maximum(1.0, np.abs(xf))
    worst = float(scaled.max()) if scaled.size else 0.0
    if flat.any():
        worst = max(worst, float(np.abs(gv[flat]).max()))
    if worst > 2e-3:
        out.append(f"Model failed to converge with max|grad| = {np.abs(gf).max():.3g} "
                   f"(scaled {worst:.3g}, tol = 0.002)")
    return out


def _probe(co, x, obj, dirs, diag, both=False):
    """The first point x + a v (a growing, each direction v in turn; also −v if ``both``)
    where d is lower than ``obj`` by more than 1e-7 relative (well above the rounding and
    the optimiser's tolerance; a missed optimum is 1e-6 and more); None if there is none."""
    tol = 1e-7 * max(1.0, abs(obj)) + 1e-6
    scale = max(1.0, float(np.abs(x).max()))
    for v in dirs:
        for a in (1e-3, 1e-2, 0.1, 0.3, 1.0):
            for sgn in ((1.0, -1.0) if both else (1.0,)):
                t2 = x + sgn * a * scale * v
                t2[diag] = np.maximum(t2[diag], 0.0)
                if co.f(t2) < obj - tol:
                    return t2
    return None


def _flat_descent(co, x, obj, Hf, free, diag):
    """Directions of the interior Hessian whose eigenvalue is negative or too small to be
    told from the finite differences' noise are judged by d itself: a lower d along one
    of them (either sign) is a point to restart from; none means a flat direction (an
    unidentifiable combination, such as collinear random slopes)."""
    ev, V = np.linalg.eigh(0.5 * (Hf + Hf.T))
    big = max(float(np.abs(ev).max()), 1e-300)
    dirs = []
    for j in np.flatnonzero(ev <= 1e-4 * big)[:3]:
        v = np.zeros(len(x))
        v[free] = V[:, j]
        dirs.append(v)
    return _probe(co, x, obj, dirs, diag, both=True) if dirs else None


def _boundary_descent(co, x, obj, g, H, at_bound, diag):
    """The first- and second-order conditions on the boundary: a feasible direction along
    which d decreases (the gradient pointing into the interior, or negative curvature over
    the zero columns of T and the free coordinates).  Returns a point of lower d, or None.
    A direction is only reported when d is lower at a point along it, so a true boundary
    optimum is never called unconverged."""
    dirs = []
    gb = np.where(at_bound, np.minimum(g, 0.0), g)    # bound coordinates may only grow
    if np.abs(gb).max() > 1e-6 and (g[at_bound] < -1e-6).any():
        dirs.append(-gb / np.linalg.norm(gb))
    if H is not None and np.all(np.isfinite(H)):
        ev, V = np.linalg.eigh(0.5 * (H + H.T))
        big = max(float(np.abs(ev).max()), 1e-300)
        for j in np.flatnonzero(ev < -1e-4 * big)[:3]:
            v = V[:, j] * (1.0 if V[at_bound, j].sum() >= 0 else -1.0)
            v = np.where(at_bound, np.maximum(v, 0.0), v)
            if np.abs(v[at_bound]).max() > 0:
                dirs.append(v / np.linalg.norm(v))
    return _probe(co, x, obj, dirs, diag)


def check_convergence(dev, theta, *, theta0, method, message, trace, x=None) -> OptSummary:
    """Snap near-zero diagonal θ to 0, polish with a Newton step, and check the optimum.

    Done in the optimiser's scaled centred coordinates x (:class:`Coordinates`): the gradient
    and Hessian reported are with respect to x; the θ returned is the user's.
    """
    co = Coordinates(dev)
    x = co.from_theta(np.asarray(theta, float)) if x is None else np.array(x, dtype=float)
    diag = np.isfinite(dev.lower)
    x[diag] = np.maximum(x[diag], 0.0)
    obj = co.fg(x)[0] if dev.has_gradient else co.f(x)   # the gradient is reused below
    # MixedModels.jl: snap small diagonal entries to the boundary if d does not grow.  d is
    # flat there (it depends on θ_k²), so an optimiser stops short at θ ~ 1e-4 (lme4 and
    # its BOBYQA land on 0 exactly); each entry is tried alone, smallest first.
    for i in np.argsort(x):
        if diag[i] and 0 < x[i] < 1e-3:
            t2 = x.copy()
            t2[i] = 0.0
            o2 = co.f(t2)
            if o2 <= obj + 1e-10 * abs(obj):
                x, obj = t2, o2
    at_bound = diag & (x <= 0)
    free = ~at_bound
    h = 1e-4 * np.maximum(np.abs(x), 1e-2)
    warnings: list = []
    g = H = escape = None
    if not np.isfinite(obj):
        warnings.append("Model failed to converge: the deviance is not finite at the optimum")
    elif free.any():
        grad = (lambda z: co.fg(z)[1]) if dev.has_gradient else None  # noqa: E731

        def derivatives(x):
            if dev.has_gradient:
                g = grad(x)
                return g, _fd_hessian(grad, x, h, g)
            return _fd_grad_hess(co.f, x, h)

        g, H = derivatives(x)
        # Newton steps on the interior coordinates, each kept only if it lowers d; repeated
        # (at most 3 more) while a step still gains more than 1e-6 in d (an optimiser that
        # stopped on its function tolerance is polished to the optimum)
        for it in range(4):
            gf, Hf = g[free], H[np.ix_(free, free)]
            step = _pinv_solve(Hf, gf)
            if step is None:
                break
            t2 = x.copy()
            t2[free] -= step
            if not np.all(t2[diag] >= 0):
                break
            # with the gradient: value and gradient together (the gradient read next is cached)
            o2 = co.fg(t2)[0] if dev.has_gradient else co.f(t2)
            if not o2 < obj:
                break
            gain, x, obj = obj - o2, t2, o2
            # (1e-11 relative: on a large fit a gain of 1e-6 is far below d's tolerance and
            # not worth a new Hessian; the gradient polish below goes on with this one)
            if gain > max(1e-6, 1e-11 * abs(obj)) and it < 3:
                g, H = derivatives(x)
                continue
            gf = (grad(x) if dev.has_gradient else _fd_grad(co.f, x, h))[free]
            g = g.copy()
            g[free] = gf
            break
        if dev.has_gradient:
            x, obj, g = _gradient_polish(co, x, obj, g, H, free, diag)
        gf, Hf = g[free], H[np.ix_(free, free)]
        if not np.all(np.isfinite(Hf)):
            warnings.append("Model failed to converge: the Hessian is not finite")
        else:
            warnings += _check_interior(Hf, gf, x[free])
            escape = _flat_descent(co, x, obj, Hf, free, diag)
            if escape is not None:
                warnings = [w for w in warnings if not w.startswith("Model is nearly")]
                if not any(w.startswith("Model failed") for w in warnings):
                    warnings.append("Model failed to converge: the deviance still decreases "
                                    "along a direction of (nearly) zero curvature")
        # d is nearly flat in a huge variance ratio and a local quadratic model misjudges it:
        # probe ±10% along the large coordinates; a lower d there means the optimiser stopped short
        big = np.flatnonzero(free & (np.abs(x) > 10))
        for i in big:
            for fac in (0.9, 1.1):
                t2 = x.copy()
                t2[i] *= fac
                if co.f(t2) < obj - 1e-6 * max(1.0, abs(obj)):
                    warnings.append(f"Model failed to converge: the deviance still decreases "
                                    f"along θ[{i}] (a very large variance ratio)")
                    break
            else:
                continue
            break
    if escape is None and at_bound.any() and np.isfinite(obj) and g is not None:
        escape = _boundary_descent(co, x, obj, g, H, at_bound, diag)
        if escape is not None:
            warnings.append("Model failed to converge: the deviance still decreases off the "
                            "boundary (a zero variance component is not the optimum)")
    singular = bool(at_bound.any())
    if singular:
        warnings.append("boundary (singular) fit: a variance component is estimated as zero "
                        "(see is_singular)")
    theta = co.to_theta(x)
    converged = not any(w.startswith("Model failed") for w in warnings)
    return OptSummary(method=method, theta_start=np.asarray(theta0, float), theta=theta,
                      objective=float(obj), n_evals=dev.n_evals, converged=converged,
                      message=message, warnings=warnings, gradient=g, hessian=H, trace=trace,
                      singular=singular, escape=escape)


def check_em_optimum(dev, em_result) -> OptSummary:
    """The convergence check at the EM's optimum (θ = vech chol(Ω̂/σ̂²)); it polishes θ with a
    Newton step when that raises the likelihood.  An EM that did not converge is not converged."""
    theta = theta_from_lower(psd_cholesky(em_result.omega / em_result.sigma2))
    opt = check_convergence(dev, theta, theta0=theta, method=f"EM ({em_result.method})",
                            message=f"EM stopped after {em_result.n_iter} iterations",
                            trace=list(-2 * np.asarray(em_result.trace) - dev.log_weights))
    if not em_result.converged:
        opt.warnings.append(f"EM did not converge in {em_result.n_iter} iterations")
        opt.converged = False
    return opt
