"""Checks on the cross-products that no optimiser can repair: a response fitted exactly by
the fixed effects (σ² = 0 before any θ), or by the fixed and random effects together (the
likelihood unbounded as σ → 0).  Both read the centred W'W, so a large constant in y does
not trigger them by cancellation.
"""
from __future__ import annotations

import numpy as np


def check_finite_products(cp, response: str) -> None:
    """Cross-products that overflow (|y| ~ 1e160: y² > 1e308) would pass for an exact fit:
    name the column whose squares overflow."""
    cen = cp.centred() if hasattr(cp, "centred") else None
    W = cp.WtW if cen is None else cen[2]
    d = np.diag(W)
    bad = ~np.isfinite(d)
    terms_bad = [k for k, t in enumerate(getattr(cp, "terms", [])) if not np.isfinite(t.ZtZ).all()]
    if not bad.any() and not terms_bad:
        return
    if bad[-1]:
        what = f"the response {response!r}"
    elif bad.any():
        what = f"fixed-effects column {int(np.flatnonzero(bad)[0]) + 1}"
    else:
        what = f"random-effects term {terms_bad[0] + 1}"
    raise ValueError(f"{what} (times the weights, if any) has values whose squares overflow "
                     "floating point (|value| > ~1e154): rescale it (e.g. divide by a power "
                     "of 10) and fit again")


def check_residual_variance(cp, response: str) -> None:
    """The response must not be fitted exactly by the fixed effects (σ² would be 0)."""
    with np.errstate(over="ignore", invalid="ignore"):
        check_finite_products(cp, response)
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


def check_exact_fit(dev, opt, cp, response: str, factor=None):
    """y = Xβ + Zb exactly: the likelihood grows without bound as σ → 0 (θ → ∞).

    Seen at the optimum as a penalised residual sum of squares r² below 1e-14 of the
    centred Σ(y − ȳ)² (or a factor that no longer exists): a clear error, not a number.
    ``factor``: ``dev``'s factor at ``opt.theta`` if already formed.  Returns the factor
    (None if there is none), for the fit to keep.
    """
    cen = cp.centred() if hasattr(cp, "centred") else None
    yy = float((cp.WtW if cen is None else cen[2])[-1, -1])
    try:
        if factor is None:
            factor = dev.factor(opt.theta)
        pw = factor.pwrss
    except np.linalg.LinAlgError:
        factor, pw = None, 0.0
    if not (np.isfinite(pw) and pw > 1e-14 * max(yy, 1e-300)):
        raise ValueError(f"the response {response!r} is fitted exactly by the fixed and random "
                         "effects (y = Xβ + Zb): the residual variance is 0 and the likelihood "
                         "is unbounded")
    return factor
