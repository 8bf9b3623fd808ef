"""The profiled deviance in a covariance structure's parameters φ (d(θ(φ))).

:class:`StructuredDeviance` wraps a :class:`~pylmem.numerics.deviance.ProfiledDeviance`:
the deviance itself still sees θ = vech T_k (Λ's blocks), mapped from φ by
:class:`pylmem.model.covariance.StructureMap`; its gradient is the chain rule
∂d/∂φ = (dθ/dφ)' ∂d/∂θ, with the analytic ∂d/∂θ where the deviance has one.  Everything
that reads a fit through ``fit.dev`` and ``fit.theta`` (the factor, the Satterthwaite
Hessian, the convergence check) then works in φ: ``fit.theta`` of a structured fit is φ̂.
The optimiser's coordinates are φ itself (no centring: the scales are 1).
"""
from __future__ import annotations

import numpy as np


class StructuredDeviance:
    """d(φ) = d(θ(φ)); reads like a ProfiledDeviance whose parameters are φ."""

    def __init__(self, dev, smap):
        self.inner = dev
        self.smap = smap
        self.lower = smap.lower

    def __getattr__(self, name):          # qs, n_levels, reml, n, p, cp, centring, ...
        return getattr(self.inner, name)

    @property
    def n_evals(self) -> int:
        return self.inner.n_evals

    @property
    def has_gradient(self) -> bool:
        return self.inner.has_gradient

    def theta_of(self, phi) -> np.ndarray:
        """θ (Λ's blocks) at φ."""
        return self.smap.theta(phi)

    # the optimiser's coordinates are φ (see module docstring)
    def theta_to_centred(self, phi) -> np.ndarray:
        return np.asarray(phi, float).copy()

    def theta_from_centred(self, phi) -> np.ndarray:
        return np.asarray(phi, float).copy()

    def centred_scales(self) -> np.ndarray:
        return np.ones(self.smap.n_par)

    def start_theta(self) -> np.ndarray:
        return self.smap.start()

    def factor(self, phi, *, centred: bool = False, _user_c: bool = True):
        f = self.inner.factor(self.smap.theta(phi), _user_c=_user_c)
        f.theta = np.asarray(phi, float)
        return f

    def __call__(self, phi, *, centred: bool = False) -> float:
        try:
            theta = self.smap.theta(phi)
        except np.linalg.LinAlgError:
            return np.inf
        return self.inner(theta)

    def value_and_gradient(self, phi, *, centred: bool = False):
        phi = np.asarray(phi, float)
        try:
            theta = self.smap.theta(phi)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros(len(phi))
        val, g = self.inner.value_and_gradient(theta)
        if not np.isfinite(val):
            return np.inf, np.zeros(len(phi))
        return val, self.smap.jacobian(phi).T @ g


class FixedCoordinates:
    """``dev`` with some of its coordinates held fixed: reads like ``dev`` in the others.

    Used to check a structured optimum whose correlation sits at a bound of its range
    (ρ → ±1 pushes its coordinate z to ±∞, where d is flat): the check is made on the
    other coordinates, as it is on the interior coordinates of θ at a zero variance.
    """

    def __init__(self, dev, fixed, values):
        self.outer = dev
        self.fixed = np.asarray(fixed, int)
        self.values = np.asarray(values, float)
        self.free = np.setdiff1d(np.arange(len(dev.lower)), self.fixed)
        self.lower = dev.lower[self.free]

    def __getattr__(self, name):
        return getattr(self.outer, name)

    @property
    def n_evals(self) -> int:
        return self.outer.n_evals

    def full(self, x) -> np.ndarray:
        out = np.empty(len(self.outer.lower))
        out[self.free] = x
        out[self.fixed] = self.values
        return out

    def theta_to_centred(self, x) -> np.ndarray:
        return np.asarray(x, float).copy()

    def theta_from_centred(self, x) -> np.ndarray:
        return np.asarray(x, float).copy()

    def centred_scales(self) -> np.ndarray:
        return np.ones(len(self.free))

    def factor(self, x, **kw):
        return self.outer.factor(self.full(x), **kw)

    def __call__(self, x, *, centred: bool = False) -> float:
        return self.outer(self.full(x))

    def value_and_gradient(self, x, *, centred: bool = False):
        v, g = self.outer.value_and_gradient(self.full(x))
        return v, g[self.free]
