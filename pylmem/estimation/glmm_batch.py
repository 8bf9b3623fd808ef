"""Lock-step refits of a one-term scalar GLMM to many responses (the parametric bootstrap).

Every replicate starts at the original estimates (θ̂, β̂) and takes Newton steps on the
central-difference gradient and Hessian of its Laplace deviance, in the coordinates of the
main fit (β in units of its standard errors).  All replicates' stencil points are evaluated
in one batched call (:class:`pylmem.numerics.glmm_replicates.ScalarReplicates`), so the cost
per replicate is a few hundred vectorised PIRLS solves of the n rows, with no optimiser
loop per replicate.  The deviance depends on θ only through θ² (a scalar term), so the
steps need no bound; θ̂ is reported as |θ|.  A replicate whose Newton steps do not reach
a checked optimum (a positive definite Hessian and a Newton step below 1e-6 or predicted to
gain less than 1e-10) is flagged and refitted one at a time by the caller.
"""
from __future__ import annotations

import numpy as np

from ..numerics.glmm_replicates import ScalarReplicates


def _stencil(d: int, h: float):
    """Offsets of the central-difference gradient/Hessian: 0, ±h e_i, h(e_i + e_j), i < j."""
    pts = [np.zeros(d)]
    for i in range(d):
        for s in (1, -1):
            e = np.zeros(d)
            e[i] = s * h
            pts.append(e)
    pairs = []
    for i in range(d):
        for j in range(i + 1, d):
            e = np.zeros(d)
            e[i] = e[j] = h
            pts.append(e)
            pairs.append((i, j))
    return np.array(pts), pairs


def fit_replicates(prob, Y, theta, beta, beta_scale, *, h: float = 1e-3, iters: int = 15,
                   prob_u0=None, hessian=None):
    """Fit the model of ``prob`` to each row of Y (R, n; model order).

    Returns
    -------
    theta : ndarray (R,)
    beta : ndarray (R, p)
    deviance : ndarray (R,)
    converged : ndarray of bool (R,)
    """
    kern = ScalarReplicates(prob, Y)
    R = len(Y)
    p = prob.p
    d = 1 + p
    bs = np.asarray(beta_scale, float)
    b0 = np.asarray(beta, float)
    x = np.zeros((R, d))
    x[:, 0] = float(theta[0])
    U = np.zeros((R, kern.L))
    offs, pairs = _stencil(d, h)
    P = len(offs)
    done = np.zeros(R, bool)
    f0 = np.full(R, np.inf)

    def evaluate(rows, X, Ustart):
        dev, Uo = kern.laplace(rows, X[:, 0], b0 + X[:, 1:] * bs, Ustart)
        return dev, Uo

    Hkeep = np.zeros((R, d, d))
    H0 = None
    if hessian is not None:     # the original fit's Hessian (θ, β), in these coordinates
        S = np.r_[1.0, bs]
        H0 = np.asarray(hessian, float) * np.outer(S, S)
        if H0.shape == (d, d) and np.all(np.linalg.eigvalsh(H0) > 0):
            Hkeep[:] = H0
        else:
            H0 = None
    U[:] = np.asarray(prob_u0, float) if prob_u0 is not None else 0.0
    nd = 1 + 2 * d
    for it in range(iters):
        act = np.flatnonzero(~done)
        if not len(act):
            break
        # the full stencil (gradient and Hessian) first and every third round; between them
        # the gradient and the Hessian's diagonal, its off-diagonal kept (a chord step, which
        # converges to the same stationary point at a third of the evaluations)
        full = it % 3 == (2 if H0 is not None else 0)
        Pk = P if full else nd
        pts = (x[act, None, :] + offs[None, :Pk, :]).reshape(-1, d)
        rows = np.repeat(act, Pk)
        f, Uo = evaluate(rows, pts, np.repeat(U[act], Pk, axis=0))
        f = f.reshape(len(act), Pk)
        U[act] = Uo.reshape(len(act), Pk, -1)[:, 0]
        f0[act] = f[:, 0]
        fp, fm = f[:, 1:nd:2], f[:, 2:nd:2]
        g = (fp - fm) / (2 * h)
        H = Hkeep[act].copy()
        idx = np.arange(d)
        H[:, idx, idx] = (fp - 2 * f[:, :1] + fm) / h ** 2
        if full:
            for k, (i, j) in enumerate(pairs):
                v = (f[:, nd + k] - fp[:, i] - fp[:, j] + f[:, 0]) / h ** 2
                H[:, i, j] = H[:, j, i] = v
        Hkeep[act] = H
        good = np.all(np.isfinite(f), axis=1)
        step = np.zeros((len(act), d))
        pd = np.zeros(len(act), bool)
        gi = np.flatnonzero(good)
        if len(gi):
            # Newton where H is positive definite; elsewhere the step of |H| (eigenvalues made
            # positive), which descends, towards the region where Newton takes over
            ev, V = np.linalg.eigh(0.5 * (H[gi] + H[gi].transpose(0, 2, 1)))
            pd[gi] = ev.min(axis=1) > 0
            evm = np.maximum(np.abs(ev), 1e-3 * np.maximum(np.abs(ev).max(axis=1, keepdims=True), 1e-12))
            gv = np.einsum("kji,kj->ki", V, g[gi])
            step[gi] = -np.einsum("kij,kj->ki", V, gv / evm)
        # at the optimum when the step is tiny or its predicted decrease is below the
        # deviance's finite-difference noise (the gradient's O(h²) bias makes steps of ~1e-6)
        pred = -0.5 * (g * step).sum(axis=1)
        small = pd & ((np.abs(step).max(axis=1) < 1e-6) | (pred < 1e-10))
        done[act[small]] = True
        move = good & ~small
        # one trial step, halved (up to 6 times) where the deviance does not decrease
        pos = np.flatnonzero(move)                 # positions in act
        t = np.ones(len(pos))
        for _ in range(6):
            if not len(pos):
                break
            mv = act[pos]
            trial = x[mv] + t[:, None] * step[pos]
            ft, Ut = evaluate(mv, trial, U[mv])
            better = ft < f0[mv]
            x[mv[better]], U[mv[better]], f0[mv[better]] = trial[better], Ut[better], ft[better]
            pos, t = pos[~better], t[~better] * 0.5
        if len(pos):      # no decrease along a Newton step predicted to gain < 1e-8: converged
            stuck = pd[pos] & (pred[pos] < 1e-8)
            done[act[pos[stuck]]] = True
        # replicates without a positive definite Hessian stay not done (fallback)
    theta_out = np.abs(x[:, 0])
    beta_out = b0 + x[:, 1:] * bs
    return theta_out, beta_out, f0, done
