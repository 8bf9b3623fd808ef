"""From a GLMM design to a fitted state: checks of the response, the fit, its warnings.

:func:`estimate_glmm` is to ``glmer`` what :func:`pylmem.estimation.fitting.estimate` is to
``lmer``: it checks the response against the family's support and the design against the
quadrature asked for, builds the PIRLS structure once, runs the stages of
:func:`pylmem.estimation.glmm.fit_glmm`, and flags what makes a fit untrustworthy
(separation, a boundary fit, no convergence) in ``warnings``.  Refits (drop1, bootstrap)
call it with ``cls=type(fit)`` so that the result has the caller's class.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np

from ..numerics.pirls import PirlsProblem
from ..util.threads import threads_for_block
from .convergence import ConvergenceWarning
from .glmm import fit_glmm
from .glmm_state import GlmmState

MAX_AGQ_POINTS = 10_000


def check_nagq(nagq, design) -> int:
    """``nagq`` must be an integer ≥ 0; more than 1 needs one term of at most 3 columns."""
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or nagq < 0:
        raise ValueError(f"nagq must be an integer >= 0, got {nagq!r}")
    nagq = int(nagq)
    if nagq > 1:
        terms = design.terms
        if len(terms) != 1:
            raise ValueError(f"nagq = {nagq} (adaptive Gauss-Hermite quadrature) needs a single "
                             f"random-effects term; the model has {len(terms)} "
                             f"({', '.join(t.name for t in terms)}): use nagq=1 (Laplace)")
        q = terms[0].q
        if q > 3:
            raise ValueError(f"nagq = {nagq} needs a random-effects term of at most 3 columns; "
                             f"({' + '.join(terms[0].coef_names)} | {terms[0].name}) has {q}")
        if nagq ** q > MAX_AGQ_POINTS:
            raise ValueError(f"nagq = {nagq} on a term of {q} columns needs {nagq ** q} points "
                             f"per level (at most {MAX_AGQ_POINTS}): use fewer points")
    return nagq


def check_response(design, family, label: str) -> None:
    """The family's support, and a response that varies."""
    y = design.y
    wt = np.ones(len(y)) if design.weights is None else design.weights
    family.check_response(y, wt, label)
    if family.name == "binomial":
        if np.all(y == 0) or np.all(y == 1):
            v = "0 (failure)" if np.all(y == 0) else "1 (success)"
            raise ValueError(f"binomial response {label!r} is {v} in every one of the {len(y)} "
                             "rows: the model cannot be estimated")
    elif family.name == "poisson" and np.all(y == 0):
        raise ValueError(f"poisson response {label!r} is 0 in every one of the {len(y)} rows: "
                         "the model cannot be estimated")


def separation(design, family) -> list[str]:
    """Fixed-effect indicator columns whose rows all have one outcome (quasi-complete
    separation: the estimate diverges)."""
    if family.name != "binomial":
        return []
    out = []
    X, y = design.X, design.y
    for j, name in enumerate(design.fixef_names):
        col = X[:, j]
        if name == "(Intercept)" or not np.all((col == 0) | (col == 1)):
            continue
        on = col == 1
        if not on.any() or on.all():
            continue
        for val, what in ((0.0, "0"), (1.0, "1")):
            if np.all(y[on] == val):
                out.append(f"{name} (every one of its {int(on.sum())} rows has response {what})")
    return out


def estimate_glmm(design, family, *, nagq=1, response="y", formula=None, cls=GlmmState,
                  theta0=None, start=None, quiet=False):
    """Fit the GLMM of ``design`` and return a ``cls`` (a :class:`GlmmState`).

    Parameters
    ----------
    design : ModelDesign
        The design, response on the model's scale (proportions for a binomial).
    family : Family
        Response family.
    nagq : int
        0, 1 (Laplace) or the number of adaptive Gauss–Hermite points per dimension.
    response : str
        The response as written (for messages and summaries).
    formula : str, optional
        The formula as written (default: the design's).
    cls : type
        The class of the result.
    theta0 : array_like, optional
        Start for θ.
    start : (theta, beta), optional
        A start near the optimum (refits): the nAGQ = 0 stage is skipped.
    quiet : bool
        Do not emit warnings (they are still recorded in ``fit.warnings``).

    Returns
    -------
    GlmmState
    """
    nagq = check_nagq(nagq, design)
    check_response(design, family, response)
    t0 = time.perf_counter()
    prob = PirlsProblem(design.y, design.weights, design.offset, design.X, design.terms, family)
    m = getattr(prob.blocks, "m", 0)
    with threads_for_block(m, one_term_too=True):
        opt = fit_glmm(prob, nagq=nagq, theta0=theta0, start=start)
    sep = separation(design, family)
    if sep:
        opt.warnings.append("quasi-complete separation: the estimate of " + "; ".join(sep)
                            + " diverges (its z test is meaningless; drop or merge the level)")
    # a huge coefficient with a huge standard error: separation the column check missed
    big = [n for n, b, s in zip(design.fixef_names, opt.beta, _se(opt, prob))
           if abs(b) > 10 and s > 20 and not any(x.startswith(n + " ") for x in sep)]
    if big:
        opt.warnings.append("a fixed effect diverges (possible separation): " + ", ".join(big))
    fit = cls(design, family, prob, opt, response=response,
              formula=formula if formula is not None else design.formula)
    fit.fit_seconds = time.perf_counter() - t0
    if not quiet:
        for w in opt.warnings:
            warnings.warn(w, ConvergenceWarning, stacklevel=3)
        if opt.singular:
            warnings.warn("boundary (singular) fit: a random-effect variance is 0 (see is_singular)",
                          ConvergenceWarning, stacklevel=3)
    return fit


def _se(opt, prob):
    """Rough standard errors of β from the stage-1 factor (for the divergence check)."""
    p = prob.p
    if not p:
        return np.zeros(0)
    try:
        res = prob.pirls(opt.theta, opt.beta, opt.res.u, fit_beta=True, maxit=0)
        Ri = np.linalg.inv(res.RX)
        return np.sqrt((Ri * Ri).sum(axis=0))
    except np.linalg.LinAlgError:
        return np.full(p, np.inf)


def refit_glmm(fit, *, y=None, keep=None, quiet=True):
    """``fit`` refitted to a new response ``y`` (model order) or on the fixed-effects columns
    ``keep`` (indices), as the same class, started from the fit's estimates."""
    d = fit.design
    beta = fit.beta if keep is None else fit.beta[list(keep)]
    if y is not None:
        d = replace(d, y=np.asarray(y, float))
    if keep is not None:
        keep = list(keep)
        d = replace(d, X=np.ascontiguousarray(d.X[:, keep]),
                    fixef_names=[d.fixef_names[i] for i in keep])
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return estimate_glmm(d, fit.family, nagq=fit.nagq, response=fit.response_label,
                             formula=fit.formula, cls=type(fit), quiet=quiet,
                             start=(fit.theta, beta) if fit.nagq >= 1 else None)
