"""Minimise the profiled deviance over θ, and check the optimum as lme4's checkConv does.

Choice of optimiser (measured, see benchmarks/):

Both optimisers work in the coordinates x of :class:`_Coords`: θ̃ for the first term's
centred columns (Z̃ = Z − 1c'), each row of T̃ scaled by the RMS of its Z̃ column, so the
problem does not depend on the location or units of y or of a covariate; no upper box.

* one random-effects term: L-BFGS-B with the analytic gradient of
  :meth:`ProfiledDeviance.value_and_gradient` (so ``week2`` ~ 100 and the intercept ~ 1
  get comparable coordinates).  lme4's BOBYQA stops short on the rat models; this reaches the
  optimum (Δdeviance ≤ 1e-7) in ~60-120 evaluations, then one Newton step with the
  finite-difference Hessian of the gradient polishes it to machine precision.
* several terms: BOBYQA (NLopt, as lme4 and MixedModels.jl), derivative free, started
  from moment estimates of the scalar terms (group-mean variances of OLS residuals):
  InstEval needs ~45 evaluations from there against ~115 from θ = 1.

Convergence is then checked at θ̂ (lme4's checkConv): the gradient and Hessian of d
(analytic or central differences) give the scaled gradient H⁻¹g, which must be small
on the interior coordinates, and H must be positive definite; θ on the boundary
(a zero diagonal entry of some T_k) is reported as a singular fit.  The check works in x
(OptSummary.gradient / hessian are with respect to x).  When it fails, the fit restarts
(EM start for one vector term, the other optimiser from the point reached) and keeps the best.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from . import batched as B


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


def _row_scales(terms, dev) -> np.ndarray:
    """Scale of each θ entry: RMS of the Z column of its row (1 for constant columns)."""
    out = []
    for t, q in zip(terms, dev.qs):
        s = np.sqrt(np.mean(t.Z ** 2, axis=0)) if t.Z.size else np.ones(q)
        s = np.where(s > 0, s, 1.0)
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))
        out.append(s[rows[order]])
    return np.concatenate(out)


def _random_coefficient_start(design, dev, beta, e):
    """θ from per-group least squares (Swamy's moment estimator), one vector term only.

    b̂_i = (Z_i'Z_i)⁻¹ Z_i'e_i for groups with n_i > q, σ̂² their pooled residual variance,
    Ω̂ = cov(b̂_i) − σ̂² mean (Z_i'Z_i)⁻¹ (eigenvalues floored), θ = vech chol(Ω̂/σ̂²).
    Saves 10-20% of the evaluations on the rat and simulated models.  None if unusable.
    """
    t, st = design.terms[0], getattr(dev, "cp_data", dev.cp).terms[0]
    q = t.q
    n_j = np.bincount(t.codes, minlength=t.n_levels)
    v = np.r_[-beta, 1.0]
    centred = getattr(dev, "_MZ", None) is not None
    if centred:   # in the centred Z̃ (invariant to a covariate's location): G̃, Z̃'W̃ M_W⁻¹ v
        ZZ = dev._G0.transpose(2, 0, 1)
        if dev._icol is not None:
            v = v.copy()
            v[dev._icol] += dev._m @ v
        ZW = dev._ZW0.transpose(2, 0, 1)
    else:
        ZZ, ZW = st.ZtZ, st.ZtW
    diag = np.einsum("gii->gi", ZZ)
    with np.errstate(divide="ignore", invalid="ignore"):
        well_posed = np.linalg.det(ZZ) > 1e-6 * np.prod(diag, axis=1)  # Z_i of full rank
    ok = (n_j > q) & well_posed
    if ok.sum() < 2 * q:
        return None
    G = ZZ[ok]
    Ze = ZW[ok] @ v                                          # Z_i'e_i, e the OLS residuals
    try:
        Ginv = np.linalg.inv(G)
    except np.linalg.LinAlgError:
        return None
    b = np.einsum("gij,gj->gi", Ginv, Ze)
    ee = np.bincount(t.codes, weights=e * e, minlength=t.n_levels)[ok]
    s2 = (ee - np.einsum("gi,gi->g", Ze, b)).sum() / (n_j[ok] - q).sum()
    if not np.isfinite(s2) or s2 <= 0:
        return None
    # floor the eigenvalues in units of the Z columns' RMS (else a column ×1e-12 mixes
    # scales 1e24 apart and the floor swamps the small ones)
    sc = np.sqrt(np.maximum(np.diag(ZZ.sum(axis=0)), 1e-300) / max(len(e), 1))
    A = (np.cov(b.T) - s2 * Ginv.mean(axis=0)) / s2 * np.outer(sc, sc)
    w, V = np.linalg.eigh(A)
    w = np.maximum(w, 1e-6 * max(w.max(), 1e-12))
    th = B.theta_from_lower(np.linalg.cholesky((V * w) @ V.T) / sc[:, None])
    return dev.theta_from_centred(th) if centred else th


def start_theta(design, dev) -> np.ndarray:
    """Starting θ: moment estimates (scalar terms; a single vector term), else scaled identity.

    For a scalar intercept term k the variance of the level means of the OLS residuals
    estimates b_k = σ_k² + σ² mean(1/n_j); the residual variance is what the terms leave
    of the total, σ² = s² − Σ_k σ_k² (a few fixed-point sweeps, floored at s²/10), and
    θ_k = σ_k/σ.  From there BOBYQA needs ~45 evaluations on InstEval against ~115 from
    θ = 1, and ~35 instead of ~60 on Penicillin.  A model with one vector term starts
    from :func:`_random_coefficient_start`.
    """
    X, y = design.X, design.y
    if getattr(design, "offset", None) is not None:   # issue 13: fit y − offset
        y = y - design.offset
    beta = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    e = y - X @ beta
    if len(design.terms) == 1 and design.terms[0].q > 1:
        th = _random_coefficient_start(design, dev, beta, e)
        if th is not None and np.all(np.isfinite(th)):
            return th
    s2 = max(float(e.var()), 1e-300)
    scalar = [t.q == 1 and np.all(t.Z == 1.0) for t in design.terms]
    stats = {}
    for k, t in enumerate(design.terms):
        if scalar[k]:
            n_j = np.maximum(np.bincount(t.codes, minlength=t.n_levels).astype(float), 1)
            m_j = np.bincount(t.codes, weights=e, minlength=t.n_levels) / n_j
            within = (e - m_j[t.codes]) @ (e - m_j[t.codes]) / max(len(e) - t.n_levels, 1)
            stats[k] = (m_j.var(), np.mean(1.0 / n_j), within)
    sigma2 = s2
    var = {}
    # floor of σ²: the smallest pooled within-level variance (an upper bound of σ² that is
    # not swamped when one term carries nearly all of var(y), e.g. σ_a = 10⁵ σ)
    floor = min([0.1 * s2] + [w for *_, w in stats.values() if w > 0])
    for _ in range(5):
        var = {k: max(b - sigma2 * inv_n, 0.01 * sigma2) for k, (b, inv_n, _) in stats.items()}
        sigma2 = max(s2 - sum(var.values()), floor)
    parts = []
    for k, t in enumerate(design.terms):
        if scalar[k]:
            parts.append(np.array([np.sqrt(var[k] / sigma2)]))
        else:
            s = np.sqrt(np.mean(t.Z ** 2, axis=0))
            parts.append(B.theta_from_lower(np.diag(1.0 / np.where(s > 0, s, 1.0))))
    return np.concatenate(parts)


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


class _Coords:
    """The optimiser's coordinates x = θ̃ ∘ s, in which d is well scaled.

    θ̃ is θ for the first term's centred columns Z̃0 = Z0 M_Z (a random slope on
    x = 10⁴ + noise is, in θ, a near-singular T with entries 10⁴ apart; in θ̃ it is not),
    and s scales each row of T̃ by the RMS of its Z̃ column (x×10⁻¹² gets θ̃ s ~ 1).
    Both maps are exact reparametrisations: d is invariant, so the optimum is the same,
    and the optimiser sees the same problem whatever the location and scale of the
    covariates (the scale of y does not enter θ).  No box: θ̃'s diagonal is only ≥ 0.
    """

    def __init__(self, dev):
        self.dev = dev
        self.s = dev.centred_scales()
        self.lower = dev.lower

    def to_theta(self, x) -> np.ndarray:
        th = self.dev.theta_from_centred(np.asarray(x, float) / self.s)
        th[np.isfinite(self.lower)] = np.maximum(th[np.isfinite(self.lower)], 0.0)
        return th

    def from_theta(self, theta) -> np.ndarray:
        return self.dev.theta_to_centred(theta) * self.s

    def f(self, x) -> float:
        return self.dev(np.asarray(x, float) / self.s, centred=True)

    def fg(self, x):
        v, g = self.dev.value_and_gradient(np.asarray(x, float) / self.s, centred=True)
        return v, g / self.s


class _Stalled(Exception):
    pass


def _run_lbfgsb(co, start, record, patience=6):
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
                       options=dict(ftol=1e-10, gtol=1e-6, maxiter=2000, maxcor=20))
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

    The optimisers work in the scaled centred coordinates of :class:`_Coords`.
    d depends on a scalar θ_k only through θ_k², so its derivative vanishes on the
    boundary θ_k = 0 and a gradient method that lands there stops.  Every diagonal θ
    that ends on the boundary is therefore probed at small positive values; if d is
    lower there, the optimiser restarts from the best probe (at most twice).  When the
    convergence check fails, the other optimiser (BOBYQA <-> L-BFGS-B) restarts from the
    point reached, and for one vector term also the EM's optimum is tried; the best wins.
    """
    theta0 = start_theta(design, dev) if theta0 is None else np.asarray(theta0, float)
    co = _Coords(dev)
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
        other = run   # a fresh trust region from the point reached

    x0 = co.from_theta(theta0)
    if not np.isfinite(co.f(x0)):   # a hopeless start: T̃ = diag(1/s) (identity in x)
        x0 = np.concatenate([B.theta_from_lower(np.eye(q)) for q in dev.qs])
    x, message = run(x0)
    x, message = _probe_boundary(co, x, message, run)
    opt = check_convergence(dev, co.to_theta(x), theta0=theta0, method=method, message=message,
                            trace=trace, x=x)
    if opt.converged:
        return opt
    starts = [("restart", lambda: other(co.from_theta(opt.theta)))]
    if len(dev.qs) == 1 and dev.qs[0] > 1 and design is not None:
        starts.insert(0, ("EM start", lambda: run(_em_start(design, co))))   # cheaper first
    best = opt
    for label, go in starts:
        try:
            x2, msg2 = go()
        except Exception:  # pragma: no cover - a failed restart keeps the first result
            continue
        x2, msg2 = _probe_boundary(co, x2, msg2, run)
        o2 = check_convergence(dev, co.to_theta(x2), theta0=theta0, method=f"{method} + {label}",
                               message=msg2, trace=trace, x=x2)
        if o2.objective < best.objective - 1e-10 * abs(best.objective) or \
                (o2.converged and o2.objective <= best.objective + 1e-8 * abs(best.objective)):
            best = o2
        if best.converged:
            break
    return best


def _em_start(design, co):
    """x from the accelerated EM's optimum (one vector term; ML, a fine start for REML)."""
    from .em import fit_em

    r = fit_em(design, tol=1e-7, max_iter=500)
    T = B.psd_cholesky(r.omega / r.sigma2)
    return co.from_theta(B.theta_from_lower(T))


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


def check_convergence(dev, theta, *, theta0, method, message, trace, x=None) -> OptSummary:
    """Snap near-zero diagonal θ to 0, polish with a Newton step, and check the optimum.

    Done in the optimiser's scaled centred coordinates x (:class:`_Coords`): the gradient
    and Hessian reported are with respect to x; the θ returned is the user's.
    """
    co = _Coords(dev)
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
    g = H = None
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
            try:
                step = np.linalg.solve(Hf, gf)
            except np.linalg.LinAlgError:
                break
            t2 = x.copy()
            t2[free] -= step
            if not np.all(t2[diag] >= 0):
                break
            o2 = co.f(t2)
            if not o2 < obj:
                break
            gain, x, obj = obj - o2, t2, o2
            if gain > 1e-6 and it < 3:
                g, H = derivatives(x)
                continue
            gf = (grad(x) if dev.has_gradient else _fd_grad(co.f, x, h))[free]
            g = g.copy()
            g[free] = gf
            break
        gf, Hf = g[free], H[np.ix_(free, free)]
        if not np.all(np.isfinite(Hf)):
            warnings.append("Model failed to converge: the Hessian is not finite")
            ev = None
        else:
            ev = np.linalg.eigvalsh(Hf)
        if ev is None:
            pass
        elif ev.min() <= 0:
            warnings.append("Model failed to converge: degenerate Hessian with "
                            f"{int((ev <= 0).sum())} negative eigenvalue(s)")
        else:
            if ev.max() / ev.min() > 1e12:
                warnings.append("Model is nearly unidentifiable: very large eigenvalue ratio "
                                f"({ev.max() / ev.min():.2g}) - rescale variables?")
            # the Newton step relative to the coordinate's size (x is O(1) unless a
            # variance ratio is huge, where d is flat in x and only the relative step counts)
            scaled = np.abs(np.linalg.solve(Hf, gf)) / np.maximum(1.0, np.abs(x[free]))
            if scaled.max() > 2e-3:
                warnings.append(f"Model failed to converge with max|grad| = {np.abs(gf).max():.3g} "
                                f"(scaled {scaled.max():.3g}, tol = 0.002)")
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
    singular = bool(at_bound.any())
    if singular:
        warnings.append("boundary (singular) fit: a variance component is estimated as zero "
                        "(see is_singular)")
    theta = co.to_theta(x)
    converged = not any(w.startswith("Model failed") for w in warnings)
    return OptSummary(method=method, theta_start=np.asarray(theta0, float), theta=theta,
                      objective=float(obj), n_evals=dev.n_evals, converged=converged,
                      message=message, warnings=warnings, gradient=g, hessian=H, trace=trace,
                      singular=singular)
