"""One estimation, step by step (lme4's pipeline): design -> cross-products
(:mod:`pylmem.numerics.crossprod`) -> checks -> profiled deviance
(:mod:`pylmem.numerics.deviance`) -> optimiser (:mod:`pylmem.estimation.optimize`) or the
seed's EM (:mod:`pylmem.estimation.em`) -> fitted state (:class:`~pylmem.estimation.state.FitState`).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from ..model import weights as W
from ..model.covariance import KEYWORD, psd_cholesky, structure_map, theta_from_lower
from ..model.design import ModelDesign
from ..numerics.checks import check_exact_fit, check_residual_variance
from ..numerics.crossprod import crossproducts
from ..numerics.deviance import ProfiledDeviance
from ..numerics.structured import FixedCoordinates, StructuredDeviance
from ..util.progress import Progress
from ..util.threads import threads_for_block
from .convergence import ConvergenceWarning, check_convergence, check_em_optimum
from .em import fit_em
from .optimize import optimize_theta
from .start import start_theta
from .state import FitState


def estimate(design: ModelDesign, *, reml=True, method="profiled", verbose=None, em_options=None,
             cp=None, theta0=None, cls=FitState, _t0=None):
    """Fit a prepared design: an instance of ``cls`` (a :class:`FitState` or a subclass).

    Parameters
    ----------
    design : ModelDesign
        The model's design.
    reml : bool
        REML (True) or ML (False).
    method : {"profiled", "em"}
        Minimise the profiled deviance (lme4's algorithm), or move θ by the seed's EM (ML only).
    verbose : bool or None
        Show a progress line (None: only on a terminal for fits over ~2 s).
    em_options : dict, optional
        Keyword arguments of :func:`pylmem.estimation.em.fit_em`.
    cp : CrossProducts, optional
        Precomputed cross-products (a refit to a new response, Dask partitions).
    theta0 : array, optional
        Start of the optimiser (e.g. a previous fit's θ̂).
    cls : type
        The class of the result; its constructor takes ``(design, cp, dev, opt, reml=,
        method=, em_result=)``.

    Warnings of the optimiser are issued as :class:`ConvergenceWarning` (at the caller of
    the function that called this one).
    """
    t0 = time.perf_counter() if _t0 is None else _t0
    if not isinstance(reml, (bool, np.bool_)):
        raise ValueError(f"reml must be True or False, got {reml!r}")
    if not isinstance(method, str) or method not in ("profiled", "em"):
        raise ValueError(f"method must be 'profiled' or 'em', got {method!r}")
    if method == "em" and reml:
        raise ValueError("method='em' fits by maximum likelihood: pass reml=False")
    if verbose is not None and not isinstance(verbose, (bool, np.bool_)):
        raise ValueError(f"verbose must be None, True or False, got {verbose!r}")
    if em_options is not None and not isinstance(em_options, dict):
        raise ValueError(f"em_options must be a dict, got {em_options!r}")
    # prior weights enter the fit divided by their geometric mean c (exact: the likelihood
    # of y does not change, only σ² and θ rescale), so the optimiser sees the same problem
    # whatever the weights' scale; the state is then formed on the user's scale (lme4's σ, θ)
    # (covariance structures: their parameters do not rescale with θ, so fitted as given)
    smap = structure_map(design.terms)
    fit_design, c = (design, 1.0) if cp is not None or not smap.trivial else W.normalised(design)
    if cp is None:
        with np.errstate(over="ignore", invalid="ignore"):   # overflow: a clear error below
            cp_fit = crossproducts(*W.scaled(fit_design))
    else:
        cp_fit = cp
    check_residual_variance(cp_fit, design.response)
    dev = ProfiledDeviance(cp_fit, [t.q for t in design.terms], [t.n_levels for t in design.terms],
                           reml=reml)
    dev.log_weights = W.log_weight_sum(fit_design)
    if theta0 is not None and c != 1.0:
        theta0 = np.asarray(theta0, float) * np.sqrt(c)
    progress = Progress(verbose=verbose, label="lmer")
    em_result = None
    if not smap.trivial:   # covariance structures: d(θ(φ)), fitted in φ (weights as given)
        dev, opt, em_result = _fit_structured(design, dev, smap, method, em_options, theta0,
                                              verbose, progress)
    elif method == "em":
        em_result = fit_em(W.scaled_design(fit_design), **(em_options or {}))   # √w rows, y − offset
        opt = check_em_optimum(dev, em_result)
    else:
        # one BLAS thread unless the dense rest block is large enough to gain from more
        with threads_for_block(dev.m):
            opt = optimize_theta(dev, fit_design, theta0=theta0, verbose=verbose,
                                 callback=progress.update)
    progress.close()
    # one factor at θ̂ serves the exact-fit check and the fit (on the user's scale)
    f_hat = check_exact_fit(dev, opt, cp_fit, design.response)
    cp = cp_fit
    if c != 1.0:
        cp, dev, opt = _to_user_scale(design, dev, opt, c, reml)
        f_hat = check_exact_fit(dev, opt, cp, design.response)
    fit = cls(design, cp, dev, opt, reml=reml, method=method, em_result=em_result,
              factor=f_hat)
    fit.fit_seconds = time.perf_counter() - t0
    for w in opt.warnings:
        warnings.warn(w, ConvergenceWarning, stacklevel=3)
    return fit


def _fit_structured(design, dev, smap, method, em_options, theta0, verbose, progress):
    """Fit a model with covariance structures: the optimiser (or, for the seed's mask, the
    EM) in the structures' parameters φ (:class:`StructuredDeviance`); φ̂ is the fit's θ."""
    sdev = StructuredDeviance(dev, smap)
    qs = [t.q for t in design.terms]
    em_result = None
    if method == "em":
        kinds = {s.kind for s in smap.structures}
        if len(design.terms) != 1 or kinds != {"mask"}:
            raise ValueError("method='em' fits the seed's cov_mask on one term; fit the "
                             "covariance structures with method='profiled'")
        opts = dict(em_options or {})
        opts["mask"] = design.terms[0].mask
        em_result = fit_em(W.scaled_design(design), **opts)
        th = theta_from_lower(psd_cholesky(em_result.omega / em_result.sigma2))
        phi = smap.from_theta(th, qs, clip=False)
        opt = check_convergence(sdev, phi, theta0=phi, method=f"EM ({em_result.method})",
                                message=f"EM stopped after {em_result.n_iter} iterations",
                                trace=list(-2 * np.asarray(em_result.trace) - dev.log_weights))
        if not em_result.converged:
            opt.warnings.append(f"EM did not converge in {em_result.n_iter} iterations")
            opt.converged = False
    else:
        if theta0 is None:
            theta0 = smap.from_theta(start_theta(design, dev), qs)
        with threads_for_block(dev.m):
            opt = optimize_theta(sdev, None, theta0=theta0, verbose=verbose,
                                 callback=progress.update)
            start2 = smap.start()
            if not opt.converged and not np.allclose(start2, theta0):
                o2 = optimize_theta(sdev, None, theta0=start2, verbose=verbose,
                                    callback=progress.update)
                if o2.objective < opt.objective:
                    opt = o2
    return sdev, _check_correlation_bounds(sdev, smap, opt, design), em_result


def _check_correlation_bounds(sdev, smap, opt, design):
    """A correlation at a bound of its range (its coordinate z at ±∞, where d is flat): a
    boundary fit, with the convergence check redone on the other coordinates."""
    fixed, notes = [], []
    for s, p, t, off in zip(smap.structures, smap.split(opt.theta), design.terms, smap.offsets):
        if s.at_boundary(p):
            notes.append(f"boundary (singular) fit: the correlation of the {KEYWORD[s.kind]} term "
                         f"{t.name!r} is at a bound of its range "
                         f"({', '.join(f'{r:.6g}' for r in s.correlations(p))})")
            rho = s.correlations(p)
            zs = np.arange(s.n_sd, s.n_par)
            edge = (rho > 1 - 1e-6) | (rho < s.rho_min + 1e-6)
            fixed += list(off + zs[edge])
    if not fixed:
        return opt
    phi = np.asarray(opt.theta, float)
    sub = FixedCoordinates(sdev, fixed, phi[fixed])
    o2 = check_convergence(sub, phi[sub.free], theta0=opt.theta_start[sub.free],
                           method=opt.method, message=opt.message, trace=opt.trace)
    if o2.objective <= opt.objective + 1e-10 * abs(opt.objective):
        opt.theta = sub.full(o2.theta)
        opt.objective = o2.objective
        opt.converged = o2.converged
        opt.warnings = list(o2.warnings)
        opt.gradient, opt.hessian = None, None
    opt.warnings += notes
    opt.singular = True
    return opt


def _to_user_scale(design, dev_fit, opt, c, reml):
    """The fit of the weights w/c moved to the user's weights w: θ / √c (σ² × c follows
    from the cross-products); the likelihood, β, the fitted values and the optimiser's
    record in its scaled coordinates are unchanged."""
    name = f"weights column {design.weights_name!r}" if design.weights_name else "weights"
    msg = (f"the {name} (geometric mean {c:.3g}) times the data overflow or underflow "
           "floating point: divide the weights by a constant (the fit does not depend on "
           "their scale, only σ does)")
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        cp = crossproducts(*W.scaled(design))
    if not (np.isfinite(cp.WtW).all() and all(np.isfinite(t.ZtZ).all() for t in cp.terms)):
        raise ValueError(msg)
    dev = ProfiledDeviance(cp, dev_fit.qs, dev_fit.n_levels, reml=reml)
    dev.log_weights = W.log_weight_sum(design)
    dev.n_evals = dev_fit.n_evals
    opt.theta = opt.theta / np.sqrt(c)
    opt.theta_start = opt.theta_start / np.sqrt(c)
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ok = np.isfinite(dev.objective_from(dev.factor(opt.theta)))
    except (np.linalg.LinAlgError, FloatingPointError, ValueError):
        ok = False
    if not ok:
        raise ValueError(msg)
    return cp, dev, opt
