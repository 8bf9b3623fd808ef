"""Response families and link functions of generalized linear mixed models (R's ``family``).

A :class:`Family` gives what penalized iteratively reweighted least squares and the
Laplace / adaptive Gauss–Hermite likelihood need: the link g and its inverse, dμ/dη, the
variance function V(μ), the unit deviance, and the full log-density log p(y | μ) with every
constant (binomial coefficients, log y!), so that log-likelihoods of fits with any number of
quadrature points compare.  The formulas and the clamps near 0 and 1 follow R's
``binomial()``, ``poisson()`` and ``make.link`` (its C code for the logit), so that pylmem's
numbers agree with lme4's to the last digits; the forms are the stable ones (``log1p``,
``expm1``, ``expit``) so that large linear predictors never overflow.

For the binomial the response is the proportion of successes y ∈ [0, 1] and the prior
weight the number of trials m (R's convention for ``cbind(successes, failures)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

_EPS = np.finfo(float).eps
_THRESH = 30.0                      # R's logit: |η| beyond this clamps μ to ε / 1 − ε
_PROBIT_THRESH = -float(special.ndtri(_EPS))


@dataclass(frozen=True)
class Link:
    """A link function g(μ) = η, its inverse and dμ/dη (R's ``make.link``)."""

    name: str
    linkfun: Callable
    linkinv: Callable
    mu_eta: Callable


def _logit_inv(eta):
    eta = np.asarray(eta, float)
    out = special.expit(eta)
    if eta.size and np.abs(eta).max() > _THRESH:     # R's clamps, only where they apply
        out = np.where(eta < -_THRESH, _EPS / (1 + _EPS), np.where(eta > _THRESH, 1 / (1 + _EPS), out))
    return out


def _logit_mu_eta(eta):
    eta = np.asarray(eta, float)
    e = np.exp(-np.abs(eta))
    out = e / ((1.0 + e) * (1.0 + e))
    if eta.size and np.abs(eta).max() > _THRESH:
        out = np.where(np.abs(eta) > _THRESH, _EPS, out)
    return out


def _probit_inv(eta):
    eta = np.clip(np.asarray(eta, float), -_PROBIT_THRESH, _PROBIT_THRESH)
    return special.ndtr(eta)


def _probit_mu_eta(eta):
    eta = np.asarray(eta, float)
    return np.maximum(np.exp(-0.5 * eta * eta) / np.sqrt(2 * np.pi), _EPS)


def _cloglog_inv(eta):
    eta = np.asarray(eta, float)
    return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), _EPS, 1 - _EPS)


def _cloglog_mu_eta(eta):
    eta = np.minimum(np.asarray(eta, float), 700.0)
    return np.maximum(np.exp(eta - np.exp(eta)), _EPS)


def _log_inv(eta):
    return np.maximum(np.exp(np.minimum(np.asarray(eta, float), 709.0)), _EPS)


LINKS = {
    "logit": Link("logit", lambda mu: special.logit(mu), _logit_inv, _logit_mu_eta),
    "probit": Link("probit", lambda mu: special.ndtri(mu), _probit_inv, _probit_mu_eta),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-np.asarray(mu, float))),
                    _cloglog_inv, _cloglog_mu_eta),
    "log": Link("log", lambda mu: np.log(mu), _log_inv, _log_inv),
    "identity": Link("identity", lambda mu: np.asarray(mu, float), lambda eta: np.asarray(eta, float),
                     lambda eta: np.ones_like(np.asarray(eta, float))),
}


def _ylogy(y, mu):
    """y log(y / μ) with 0 log 0 = 0."""
    y = np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)


class Family:
    """A GLM family with a link (see the module docstring).

    Parameters
    ----------
    link : str, optional
        The link's name; the family's canonical link when None.
    """

    name = ""
    links: tuple = ()
    default_link = ""

    def __init__(self, link: str | None = None):
        link = self.default_link if link is None else link
        if not isinstance(link, str) or link not in self.links:
            raise ValueError(f"link {link!r} is not available for the {self.name} family "
                             f"(choose one of {', '.join(self.links)})")
        self.link = LINKS[link]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

    # the link, forwarded
    def linkfun(self, mu):
        return self.link.linkfun(mu)

    def linkinv(self, eta):
        return self.link.linkinv(eta)

    def mu_eta(self, eta):
        return self.link.mu_eta(eta)

    # family specifics
    def variance(self, mu):  # pragma: no cover - abstract
        raise NotImplementedError

    def dev_resid(self, y, mu, wt):  # pragma: no cover - abstract
        raise NotImplementedError

    def log_density(self, y, mu, wt):  # pragma: no cover - abstract
        """log p(y_i | μ_i) per observation, every constant included."""
        raise NotImplementedError

    def loglik_fn(self, y, wt):
        """A function μ -> Σ_i log p(y_i | μ_i) for fixed data, constants computed once
        (PIRLS evaluates it at every step)."""
        return lambda mu: float(self.log_density(y, mu, wt).sum())

    def loglik_rows_fn(self, Y, wt):
        """For a stack of responses Y (R, n): a function (μ, rows) -> Σ_i log p(y_ri | μ_ki) for
        the rows ``rows`` (K,) of Y and μ (K, n) (the parametric bootstrap's replicates;
        constants per row computed once)."""
        return lambda mu, rows: self.log_density(Y[rows], mu, wt).sum(axis=1)

    def start_mu(self, y, wt):  # pragma: no cover - abstract
        """R's ``family$initialize``: a starting μ inside the support."""
        raise NotImplementedError

    def check_response(self, y, wt, name: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def simulate(self, mu, wt, rng):  # pragma: no cover - abstract
        raise NotImplementedError


class Binomial(Family):
    """Binomial responses: 0/1, logical, two-level factors, ``cbind(s, f)`` or proportions
    with the trials as prior weights.  Links: logit (canonical), probit, cloglog."""

    name = "binomial"
    links = ("logit", "probit", "cloglog")
    default_link = "logit"

    def variance(self, mu):
        return mu * (1.0 - mu)

    def dev_resid(self, y, mu, wt):
        return 2.0 * wt * (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - mu))

    def log_density(self, y, mu, wt):
        # R's aic: the binomial log density of round(m y) successes in round(m) trials
        m = np.asarray(wt, float)
        k = np.round(m * y)
        n = np.round(m)
        logc = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(k > 0, k * np.log(mu), 0.0)
            b = np.where(n - k > 0, (n - k) * np.log1p(-mu), 0.0)
        return logc + a + b

    def loglik_fn(self, y, wt):
        m = np.asarray(wt, float)
        k = np.round(m * y)
        n = np.round(m)
        const = float((special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)).sum())
        nk = n - k
        # μ is clamped inside (0, 1) by every link, so log μ and log(1 − μ) are finite
        return lambda mu: const + float(k @ np.log(mu)) + float(nk @ np.log1p(-mu))

    def loglik_rows_fn(self, Y, wt):
        m = np.asarray(wt, float)
        k = np.round(m * Y)
        n = np.round(m) + np.zeros_like(k)
        const = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)).sum(axis=1)
        nk = n - k
        return lambda mu, rows: (const[rows] + (k[rows] * np.log(mu)).sum(axis=1)
                                 + (nk[rows] * np.log1p(-mu)).sum(axis=1))

    def start_mu(self, y, wt):
        return (wt * y + 0.5) / (wt + 1.0)

    def check_response(self, y, wt, name):
        y = np.asarray(y, float)
        bad = (y < 0) | (y > 1)
        if bad.any():
            raise ValueError(f"binomial response {name!r}: {int(bad.sum())} value(s) outside [0, 1] "
                             f"(e.g. {y[bad][0]:g}); give 0/1, a proportion with weights= the "
                             "trials, or cbind(successes, failures)")
        k = wt * y
        off = np.abs(k - np.round(k)) > 1e-7 * np.maximum(1.0, np.abs(k))
        if off.any():
            raise ValueError(f"binomial response {name!r}: {int(off.sum())} row(s) with a non-integer "
                             "number of successes (proportion × weights); the weights of a "
                             "proportion must be the numbers of trials")

    def simulate(self, mu, wt, rng):
        m = np.round(np.asarray(wt, float)).astype(np.int64)
        return rng.binomial(m, mu) / np.maximum(m, 1)


class Poisson(Family):
    """Poisson counts (log link, canonical; also identity)."""

    name = "poisson"
    links = ("log", "identity")
    default_link = "log"

    def variance(self, mu):
        return np.asarray(mu, float)

    def dev_resid(self, y, mu, wt):
        return 2.0 * wt * (_ylogy(y, mu) - (y - mu))

    def log_density(self, y, mu, wt):
        y = np.asarray(y, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(y > 0, y * np.log(mu), 0.0)
        return wt * (a - mu - special.gammaln(y + 1))

    def loglik_fn(self, y, wt):
        wt = np.asarray(wt, float)
        wy = wt * np.asarray(y, float)
        const = -float((wt * special.gammaln(np.asarray(y, float) + 1)).sum())
        return lambda mu: const + float(wy @ np.log(mu)) - float(wt @ mu)

    def loglik_rows_fn(self, Y, wt):
        wt = np.asarray(wt, float)
        wy = wt * Y
        const = -(wt * special.gammaln(Y + 1)).sum(axis=1)
        return lambda mu, rows: const[rows] + (wy[rows] * np.log(mu)).sum(axis=1) - (wt * mu).sum(axis=1)

    def start_mu(self, y, wt):
        return np.asarray(y, float) + 0.1

    def check_response(self, y, wt, name):
        y = np.asarray(y, float)
        if (y < 0).any():
            raise ValueError(f"poisson response {name!r}: {int((y < 0).sum())} negative value(s) "
                             f"(e.g. {y[y < 0][0]:g}); counts must be ≥ 0")
        frac = np.abs(y - np.round(y)) > 1e-7 * np.maximum(1.0, np.abs(y))
        if frac.any():
            raise ValueError(f"poisson response {name!r}: {int(frac.sum())} non-integer value(s) "
                             f"(e.g. {y[frac][0]:g}); counts must be whole numbers")

    def simulate(self, mu, wt, rng):
        return rng.poisson(mu).astype(float)


FAMILIES = {"binomial": Binomial, "poisson": Poisson}


def get_family(family, link: str | None = None) -> Family:
    """A :class:`Family` from a name (``"binomial"``, ``"poisson"``), a Family class or instance.

    Parameters
    ----------
    family : str or Family
        The response family.
    link : str, optional
        The link; the family's canonical link when None.

    Returns
    -------
    Family
    """
    if isinstance(family, Family):
        if link is not None and link != family.link.name:
            return type(family)(link)
        return family
    if isinstance(family, type) and issubclass(family, Family):
        return family(link)
    if isinstance(family, str) and family.lower() in FAMILIES:
        return FAMILIES[family.lower()](link)
    if isinstance(family, str) and family.lower() in ("gaussian", "normal"):
        raise ValueError("family='gaussian' is a linear mixed model: use pylmem.lmer")
    raise ValueError(f"family {family!r} is not supported (choose one of "
                     f"{', '.join(FAMILIES)})")
