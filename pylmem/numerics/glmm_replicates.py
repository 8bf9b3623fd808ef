"""The Laplace deviance of a one-term scalar GLMM for many (θ, β, y) at once.

The parametric bootstrap refits the model to hundreds of simulated responses.  For a model
with one scalar random-effects term ``(1 | g)`` every PIRLS step is a handful of
elementwise operations and segment sums over the rows sorted by level, so K parameter points
(replicates × finite-difference stencil points) advance together as (K, n) arrays: the
structure (level segments, the model matrix) is shared and only numeric work is done per
point, with no Python loop over replicates.  The deviance is the same Laplace approximation
as :class:`pylmem.numerics.pirls.PirlsProblem`'s (every constant included), to rounding.
"""
from __future__ import annotations

import numpy as np

from .pirls import MAX_HALVINGS


class ScalarReplicates:
    """Batched PIRLS and Laplace deviance for the one-term scalar model of ``prob``.

    Parameters
    ----------
    prob : PirlsProblem
        A problem with a single random-effects term of one column.
    Y : ndarray
        (R, n) responses in model order, one row per replicate.
    """

    def __init__(self, prob, Y):
        if not (prob.single and prob.qs[0] == 1):
            raise ValueError("ScalarReplicates needs one random-effects term of one column")
        t = prob.terms[0]
        self.z = t.Z[:, 0]
        self.codes = np.asarray(t.codes)
        self.starts = prob.blocks.starts
        self.L = t.n_levels
        self.X, self.off, self.wt = prob.X, prob.offset, prob.wt
        self.family = prob.family
        self.Y = np.asarray(Y, float)
        self._llf = self.family.loglik_rows_fn(self.Y, self.wt)
        self.tol = prob._tol_canonical if prob.canonical else 1e-14

    def _segsum(self, M):
        return np.add.reduceat(M, self.starts, axis=1)

    def _step(self, rows, Y, zl, u, eta, mu, pdev):
        """One PIRLS step (with step-halving) at the points ``rows``; returns the new
        (u, η, μ, pdev) and which points have converged."""
        fam = self.family
        mueta = fam.mu_eta(eta)
        w = self.wt * mueta * mueta / fam.variance(mu)
        r = zl * u[:, self.codes] + (Y - mu) / mueta
        A = 1.0 + self._segsum(w * zl * zl)
        du = self._segsum(w * zl * r) / A - u
        dz = zl * du[:, self.codes]
        dec = (du * du).sum(axis=1) + (w * dz * dz).sum(axis=1)
        step = np.ones(len(u))
        ut = u + du
        etat = eta + dz
        mut = fam.linkinv(etat)
        pt = -2.0 * self._llf(mut, rows) + (ut * ut).sum(axis=1)
        # halve only the points whose deviance rose (and did not only round up at the mode:
        # a decrement below the tolerance counts as converged)
        tiny = 1e-12 * (1.0 + np.abs(pdev))
        idx = np.flatnonzero(~(pt <= pdev + tiny) & (dec >= self.tol))
        for _ in range(MAX_HALVINGS):
            if not len(idx):
                break
            step[idx] *= 0.5
            ut[idx] = u[idx] + step[idx, None] * du[idx]
            etat[idx] = eta[idx] + step[idx, None] * dz[idx]
            mut[idx] = fam.linkinv(etat[idx])
            pt[idx] = -2.0 * self._llf(mut[idx], rows[idx]) + (ut[idx] ** 2).sum(axis=1)
            idx = idx[~(pt[idx] <= pdev[idx] + tiny[idx])]
        bad = np.zeros(len(u), bool)
        bad[idx] = True
        ok = ~bad & (pt <= pdev + tiny)
        u, eta, mu, pdev = u.copy(), eta.copy(), mu.copy(), pdev.copy()
        u[ok], eta[ok], mu[ok], pdev[ok] = ut[ok], etat[ok], mut[ok], pt[ok]
        return u, eta, mu, pdev, (dec * step < self.tol) | bad

    def laplace(self, rows, theta, beta, u0, maxit: int = 60):
        """Laplace deviances at K points: replicate ``rows[k]``, θ_k (K,), β_k (K, p), start
        u0 (K, L).  Returns (deviance (K,), modes (K, L)); inf where PIRLS fails.  Points
        leave the iteration as they converge."""
        fam = self.family
        rows = np.asarray(rows)
        Y = self.Y[rows]

        def llf(mu):
            return self._llf(mu, rows)
        zl = self.z[None, :] * np.asarray(theta, float)[:, None]
        base = np.asarray(beta, float) @ self.X.T + self.off
        u = np.array(u0, float)
        eta = base + zl * u[:, self.codes]
        mu = fam.linkinv(eta)
        pdev = -2.0 * llf(mu) + (u * u).sum(axis=1)
        with np.errstate(all="ignore"):
            act = np.arange(len(u))
            for _ in range(maxit):
                if not len(act):
                    break
                ua, ea, ma, pa, done = self._step(rows[act], Y[act], zl[act], u[act], eta[act],
                                                  mu[act], pdev[act])
                u[act], eta[act], mu[act], pdev[act] = ua, ea, ma, pa
                act = act[~done]
            eta = base + zl * u[:, self.codes]
            mu = fam.linkinv(eta)
            mueta = fam.mu_eta(eta)
            w = self.wt * mueta * mueta / fam.variance(mu)
            A = 1.0 + self._segsum(w * zl * zl)
            dev = -2.0 * llf(mu) + (u * u).sum(axis=1) + np.log(A).sum(axis=1)
        dev[~np.isfinite(dev)] = np.inf
        return dev, u
