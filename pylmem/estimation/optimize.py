"""Minimise the profiled deviance over θ, and check the optimum as lme4's checkConv does.

Choice of optimiser (measured, see benchmarks/):

Both optimisers work in the coordinates x of :class:`Coordinates`: θ̃ for the first term's
centred columns (Z̃ = Z − 1c'), each row of T̃ scaled by the RMS of its Z̃ column, so the
problem does not depend on the location or units of y or of a covariate; no upper box.

* one random-effects term: L-BFGS-B with the analytic gradient of
  :meth:`ProfiledDeviance.value_and_gradient` (so ``week2`` ~ 100 and the intercept ~ 1
  get comparable coordinates).  lme4's BOBYQA stops short on the rat models; this reaches the
  optimum (Δdeviance ≤ 1e-7) in ~60-120 evaluations, then one Newton step with the
  finite-difference Hessian of the gradient polishes it to machine precision.
* several terms: BOBYQA (NLopt, as lme4 and MixedModels.jl), derivative free, started
  from moment estimates of the scalar terms (group-mean variances of OLS residuals):
  InstEval needs ~45 evaluations from there against ~115 from θ = 1.  Where the
  deviance offers an analytic gradient for several terms (``dev.has_gradient``: a large
  BLAS-3 rest block, or a nested design's rest block in dense blocks,
  :mod:`pylmem.numerics.rest_blocks`), L-BFGS-B with it, as for one term (three-level
  nesting: 32 evaluations against BOBYQA's 129).

Convergence is then checked at θ̂ (lme4's checkConv, :mod:`pylmem.estimation.convergence`):
the gradient and Hessian of d give the scaled gradient H⁻¹g, which must be small on the
interior coordinates, and H must be positive definite; θ on the boundary (a zero diagonal
entry of some T_k) is reported as a singular fit.  When the check fails, the fit restarts
(see :func:`optimize_theta`) and keeps the best; ``converged`` is True only when the final
check holds.  Starting values: :mod:`pylmem.estimation.start`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ..model.covariance import psd_cholesky, theta_from_lower
from .convergence import OptSummary, check_convergence
from .coords import Coordinates
from .em import fit_em
from .start import start_theta


class _Stalled(Exception):
    pass


def _run_lbfgsb(co, start, record, patience=6, ftol=1e-10):
    """L-BFGS-B; stops once d has not decreased by 1e-12 relative in ``patience``
    evaluations (at the optimum the line search otherwise chases rounding noise)."""
    diag = np.isfinite(co.lower)
    best = [np.inf, np.asarray(start, float), 0]

    def fg(x):
        v, g = co.fg(x)
        record(v)
        if v < best[0] - 1e-12 * abs(best[0]):
            best[0], best[1], best[2] = v, np.array(x), 0
        else:
            best[2] += 1
            if v < best[0]:
                best[0], best[1] = v, np.array(x)
            if best[2] >= patience:
                raise _Stalled
        return v, g

    bounds = [(0.0, None) if d else (None, None) for d in diag]
    try:
        res = minimize(fg, start, jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(ftol=ftol, gtol=1e-6, maxiter=2000, maxcor=20))
        x, msg = res.x, str(res.message)
        if res.fun > best[0]:
            x = best[1]
    except _Stalled:
        x, msg = best[1], f"no decrease of d in {patience} evaluations (at rounding level)"
    return np.maximum(x, np.where(diag, 0.0, -np.inf)), msg


def _run_bobyqa(co, start, record):
    import nlopt

    diag = np.isfinite(co.lower)

    best = [np.inf, np.asarray(start, float)]

    def f(x, grad):
        v = co.f(x)
        record(v)
        if v < best[0]:
            best[0], best[1] = v, np.array(x)
        return v

    opt = nlopt.opt(nlopt.LN_BOBYQA, len(start))
    opt.set_min_objective(f)
    opt.set_lower_bounds(np.where(diag, 0.0, -np.inf).tolist())   # no artificial box
    opt.set_upper_bounds([np.inf] * len(start))
    # moderate tolerances: the Newton step in check_convergence polishes the optimum
    # to ~1e-13 relative in d, and saves ~15% of the evaluations (InstEval: 63 -> 54)
    opt.set_ftol_rel(1e-9)
    opt.set_xtol_abs(1e-7)
    opt.set_maxeval(10000)
    opt.set_initial_step([max(0.1, 0.2 * abs(t)) for t in start])
    try:
        x = opt.optimize(np.where(diag, np.maximum(start, 0.0), start))
    except nlopt.RoundoffLimited:   # keep the best point NLopt saw
        x = best[1]
    return np.asarray(x), f"NLopt return code {opt.last_optimize_result()}"


def optimize_theta(dev, design, *, theta0=None, verbose=None, callback=None) -> OptSummary:
    """Minimise ``dev`` over θ and check convergence (see module docstring).

    The optimisers work in the scaled centred coordinates of :class:`Coordinates`.
    d depends on a scalar θ_k only through θ_k², so its derivative vanishes on the
    boundary θ_k = 0 and a gradient method that lands there stops.  Every diagonal θ
    that ends on the boundary is therefore probed at small positive values; if d is
    lower there, the optimiser restarts from the best probe (at most twice).  When the
    convergence check fails, the fit restarts from a point of lower d that the check found
    (off the boundary, or along a direction of near-zero curvature), from the EM's optimum
    (one vector term) and with the other optimiser (BOBYQA <-> L-BFGS-B) from the point
    reached; the best wins.  A singular fit of one vector term with q ≥ 3 is compared with
    the EM's optimum too (a T with one zero column too many can be a local optimum: the
    q = 10 term of the hostile tests).  ``converged`` is True only when the final check holds.
    """
    theta0 = start_theta(design, dev) if theta0 is None else np.asarray(theta0, float)
    co = Coordinates(dev)
    trace: list = []

    def record(v):
        trace.append(v)
        if callback is not None:
            callback(len(trace), v)

    if dev.has_gradient:
        method = "L-BFGS-B (analytic gradient)"
        run = lambda x: _run_lbfgsb(co, x, record)   # noqa: E731
        other = lambda x: _run_bobyqa(co, x, record)   # noqa: E731
    else:
        method = "BOBYQA (NLopt)"
        run = lambda x: _run_bobyqa(co, x, record)   # noqa: E731
        # a restart after a failed check: with the analytic gradient where the rest block
        # allows it (BOBYQA stalls on many θ near a singular fit: 20 θ of a kb07-shaped
        # model stopped 0.09 short of the optimum), else a fresh trust region
        other = (lambda x: _run_lbfgsb(co, x, record)) if _gradient_supported(dev) else run  # noqa: E731

    x0 = co.from_theta(theta0)
    if not np.isfinite(co.f(x0)):   # a hopeless start: T̃ = diag(1/s) (identity in x)
        x0 = np.concatenate([theta_from_lower(np.eye(q)) for q in dev.qs])
    x, message = run(x0)
    x, message = _probe_boundary(co, x, message, run)
    opt = check_convergence(dev, co.to_theta(x), theta0=theta0, method=method, message=message,
                            trace=trace, x=x)
    em_ok = len(dev.qs) == 1 and dev.qs[0] > 1 and design is not None
    # a singular fit of a large vector term may be a rank-deficient local optimum (q = 10:
    # one zero column of T too many): the EM's optimum is a second opinion
    second_opinion = opt.converged and opt.singular and em_ok and dev.qs[0] >= 3
    if opt.converged and not second_opinion:
        return opt
    starts = []
    if opt.escape is not None:   # a lower d off the boundary: restart from there first
        esc = opt.escape
        starts.append(("boundary escape", lambda: run(esc)))
        if dev.has_gradient:   # d flat along the escape direction: derivative free too
            starts.append(("boundary escape, BOBYQA", lambda: _run_bobyqa(co, esc, record)))
    if em_ok:
        starts.append(("EM start", lambda: run(_em_start(design, co))))   # cheaper first
    if not opt.converged:
        if dev.has_gradient:
            # L-BFGS-B stopped on its relative tolerance on a flat ridge (many θ near a
            # singular fit): go on from where it stopped with a tolerance at rounding level
            x_end = x
            starts.append(("L-BFGS-B continued",
                           lambda: _run_lbfgsb(co, x_end, record, patience=12, ftol=1e-13)))
            # its first steps can leave for a far region where d is flat (a variance ratio
            # of 10⁵ on one crossed term took the other to θ ~ 10⁴): derivative free from
            # the start
            starts.append(("BOBYQA from the start", lambda: _run_bobyqa(co, x0, record)))
        elif other is not run:
            # the gradient path from the first start, not from where BOBYQA stalled (a
            # boundary point where the gradient of the zeroed coordinates vanishes)
            starts.append(("L-BFGS-B (analytic gradient) from the start", lambda: other(x0)))
        starts.append(("restart", lambda: other(co.from_theta(opt.theta))))
    best = opt
    escapes = 0
    while starts:
        label, go = starts.pop(0)
        try:
            x2, msg2 = go()
        except Exception:  # pragma: no cover - a failed restart keeps the first result
            continue
        x2, msg2 = _probe_boundary(co, x2, msg2, run)
        o2 = check_convergence(dev, co.to_theta(x2), theta0=theta0, method=f"{method} + {label}",
                               message=msg2, trace=trace, x=x2)
        if o2.objective < best.objective - 1e-10 * abs(best.objective) or \
                (o2.converged and not best.converged
                 and o2.objective <= best.objective + 1e-8 * abs(best.objective)):
            best = o2
        if best.converged and not (second_opinion and label == "boundary escape"):
            break
        if not o2.converged and o2.escape is not None and escapes < 2:
            # the restart's own check found a lower d along a flat direction: go there next
            # (derivative free: d is flat there, where a gradient method stalls)
            escapes += 1
            esc2 = o2.escape
            starts.insert(0, (f"{label}, escape", lambda e=esc2: _run_bobyqa(co, e, record)))
    return best


def _gradient_supported(dev) -> bool:
    """Whether :meth:`value_and_gradient` works for ``dev`` although the optimiser is not
    offered it by default (several terms with a small dense rest block)."""
    if len(getattr(dev, "qs", ())) < 2 or getattr(dev, "rest", None) is None:
        return False
    from ..numerics.multi_gradient import supported
    return supported(dev.rest)


def _em_start(design, co):
    """x from the accelerated EM's optimum (one vector term; ML, a fine start for REML)."""
    r = fit_em(design, tol=1e-7, max_iter=100)   # a start: L-BFGS-B polishes it
    T = psd_cholesky(r.omega / r.sigma2)
    return co.from_theta(theta_from_lower(T))


def _probe_boundary(co, x, message, run):
    diag = np.isfinite(co.lower)
    for _ in range(2):
        at_bound = np.flatnonzero(diag & (x <= 0))
        if not len(at_bound):
            break
        best, best_val = None, co.f(x)
        for i in at_bound:
            for t in (1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0):
                probe = x.copy()
                probe[i] = t
                v = co.f(probe)
                if v < best_val:
                    best, best_val = probe, v
        if best is None:
            break
        x, message = run(best)
    return x, message
