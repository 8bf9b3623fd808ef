"""Batched profiled deviance and gradient over many responses (a replicate axis).

For a model with one random-effects term, every replicate r of a bootstrap shares X, Z
and hence G_g = Z_g'Z_g and Z_g'X per level g; only Z_g'y_r, X'y_r and y_r'y_r change.
With θ_r (its own for each replicate, T_r lower q × q) the blocked factor of
:mod:`pylmem.numerics.deviance` is, for every (level, replicate) pair at once,

    L_gr L_gr' = T_r' G_g T_r + I,     C_gr = L_gr^{-1} T_r' Z_g'[X y_r],
    S_r = W_r'W_r − Σ_g C_gr'C_gr = L_W L_W',

so that log|L|², β̂, r² and the criterion follow as in :class:`ProfiledDeviance`, and the
gradient ∂d/∂T = 2 (∂d/∂D) T (see :meth:`ProfiledDeviance.value_and_gradient`) too.
Arrays put the replicate axis last ("structure of arrays"): (q, q, G, R), so that every
step is a vector operation over G·R entries and the q-loops are a handful of iterations.

:func:`minimize_batch` runs BFGS on all replicates in lock step (one batched value and
gradient per iteration, Armijo backtracking per replicate, starting from a shared inverse
Hessian), θ unconstrained: d depends on T only through T T', so a column of T may change
sign freely and is flipped back to a non-negative diagonal at the end.
"""
from __future__ import annotations

import numpy as np

from . import batched as B

_LOG2PI = np.log(2 * np.pi)


def _cholesky(A):
    """Lower Cholesky factors of a (q, q, ...) stack; NaN where a pivot is not positive."""
    q = A.shape[0]
    L = np.zeros_like(A)
    for j in range(q):
        d = A[j, j] - (L[j, :j] ** 2).sum(axis=0) if j else A[j, j]
        with np.errstate(invalid="ignore"):
            ljj = np.sqrt(np.where(d > 0, d, np.nan))
        L[j, j] = ljj
        for i in range(j + 1, q):
            acc = A[i, j] - (L[i, :j] * L[j, :j]).sum(axis=0) if j else A[i, j]
            L[i, j] = acc / ljj
    return L


class BatchedDeviance:
    """d(θ_r) and ∇d(θ_r) for R responses of one single-term model.

    ``G`` (L, q, q) = Z_g'Z_g, ``ZX`` (L, q, p) = Z_g'X, ``XtX`` (p, p), ``n``; per call
    the responses enter as ``Zy`` (q, L, R), ``Xty`` (p, R), ``yty`` (R,).
    """

    def __init__(self, G, ZX, XtX, n, *, reml):
        self.L, self.q, _ = G.shape
        self.p = XtX.shape[0]
        self.n = int(n)
        self.reml = bool(reml)
        self.G = np.ascontiguousarray(G.transpose(1, 2, 0))       # (q, q, L)
        self.ZX = np.ascontiguousarray(ZX.transpose(1, 2, 0))     # (q, p, L)
        self.sumG = G.sum(axis=0)
        self.XtX = XtX
        rows, cols = np.tril_indices(self.q)
        order = np.lexsort((rows, cols))
        self.rows, self.cols = rows[order], cols[order]
        self.k = len(self.rows)

    # ------------------------------------------------------------------ helpers
    def T_of(self, theta):
        """(q, q, R) lower factors from θ (k, R)."""
        T = np.zeros((self.q, self.q, theta.shape[1]))
        T[self.rows, self.cols] = theta
        return T

    def evaluate(self, theta, Zy, Xty, yty, *, gradient=True):
        """Criterion (R,), gradient (k, R) and the pieces (β̂ (p, R), r² (R,))."""
        q, p, r = self.q, self.p, self.p + 1
        R = theta.shape[1]
        T = self.T_of(theta)
        # T' G per (level, replicate): TtG[a, b, g, r] = Σ_j T[j, a, r] G[j, b, g]
        TtG = np.einsum("jar,jbg->abgr", T, self.G)
        A = np.einsum("ajgr,jbr->abgr", TtG, T)
        idx = np.arange(q)
        A[idx, idx] += 1.0
        Lf = _cholesky(A)                                     # (q, q, L, R)
        rhs = np.empty((q, r, self.L, R))
        rhs[:, :p] = np.einsum("jar,jcg->acgr", T, self.ZX)
        rhs[:, p] = np.einsum("jar,jgr->agr", T, Zy)
        C = B.solve_lower_soa(Lf, rhs)                             # (q, r, L, R)
        S = np.empty((r, r, R))
        S[:p, :p] = self.XtX[:, :, None]
        S[:p, p] = Xty
        S[p, :p] = Xty
        S[p, p] = yty
        S -= np.einsum("acgr,adgr->cdr", C, C)
        LW = _cholesky(S)
        logdet = 2.0 * np.log(Lf[idx, idx]).sum(axis=(0, 1))
        pw = LW[p, p] ** 2
        beta = B.solve_lower_t_soa(LW[:p, :p], LW[p, :p][:, None, :])[:, 0, :] if p else np.zeros((0, R))
        if self.reml:
            nu = self.n - p
            logdet_RX = 2.0 * np.log(LW[np.arange(p), np.arange(p)]).sum(axis=0)
            val = logdet + logdet_RX + nu * (1.0 + np.log(2 * np.pi * pw / nu))
        else:
            nu = self.n
            val = logdet + nu * (1.0 + np.log(2 * np.pi * pw / nu))
        if not gradient:
            return val, None, beta, pw
        H = B.solve_lower_soa(Lf, TtG)                             # L^{-1} T'G
        K = -np.einsum("jigr,jcgr->icgr", H, C)                    # Z'V^{-1}W
        K[:, :p] += self.ZX[:, :, :, None]
        K[:, p] += Zy
        M = self.sumG[:, :, None] - np.einsum("jigr,jkgr->ikr", H, H)
        v = np.concatenate([-beta, np.ones((1, R))], axis=0)        # (r, R)
        g = np.einsum("cr,icgr->igr", v, K)
        GD = M - (nu / pw) * np.einsum("igr,kgr->ikr", g, g)
        if self.reml and p:
            eye = np.broadcast_to(np.eye(p)[:, :, None], (p, p, R)).copy()
            RXinv = B.solve_lower_soa(LW[:p, :p], eye)              # (p, p, R)
            KX = np.einsum("bar,iagr->ibgr", RXinv, K[:, :p])
            GD = GD - np.einsum("ibgr,kbgr->ikr", KX, KX)
        GT = 2.0 * np.einsum("ijr,jkr->ikr", GD, T)
        return val, GT[self.rows, self.cols], beta, pw

    def canonical(self, theta):
        """Flip columns of T with a negative diagonal (T T' unchanged): lme4's θ."""
        theta = theta.copy()
        for j in range(self.q):
            neg = theta[(self.rows == j) & (self.cols == j)][0] < 0
            sel = self.cols == j
            theta[np.ix_(sel, neg)] *= -1.0
        return theta

    def diag_index(self):
        return np.flatnonzero(self.rows == self.cols)


def minimize_batch(bd: BatchedDeviance, theta0, Hinv0, Zy, Xty, yty, *, max_iter=60,
                   tol=1e-11):
    """Lock-step BFGS from θ0 (k,) or (k, R) with inverse Hessian ``Hinv0`` (k, k) or
    (k, k, R) for all R replicates.  Coordinates whose rows and columns of ``Hinv0`` are
    zero stay fixed (the boundary fits: a diagonal θ held at 0).

    Returns θ (k, R), objective (R,), β̂ (p, R), r² (R,), converged (R,) bool.  A replicate
    converges when its Newton decrement g'H⁻¹g (≈ 2 × the distance to the minimum of d)
    falls below ``tol`` relative to max(1, |d|) (d is computed to ~1e-12 relative: a
    replicate whose line search cannot descend any more is converged when its decrement
    is below 100 ``tol``).
    """
    R = Zy.shape[-1]
    theta0, Hinv0 = np.asarray(theta0, float), np.asarray(Hinv0, float)
    x = theta0.copy() if theta0.ndim == 2 else np.repeat(theta0[:, None], R, axis=1)
    f, g, beta, pw = bd.evaluate(x, Zy, Xty, yty)
    Hi = Hinv0.copy() if Hinv0.ndim == 3 else np.repeat(Hinv0[:, :, None], R, axis=2)
    conv = np.zeros(R, bool)
    alpha = np.ones(R)
    active = np.arange(R)
    for _ in range(max_iter):
        dec = np.einsum("ir,ijr,jr->r", g[:, active], Hi[:, :, active], g[:, active])
        done = dec < tol * np.maximum(1.0, np.abs(f[active]))
        conv[active[done]] = True
        active = active[~done]
        if not len(active):
            break
        a = active
        d = -np.einsum("ijr,jr->ir", Hi[:, :, a], g[:, a])
        xn = x[:, a] + alpha[a] * d
        fn, gn, bn, pn = bd.evaluate(xn, Zy[..., a], Xty[:, a], yty[a])
        slope = np.einsum("ir,ir->r", g[:, a], d)
        ok = np.isfinite(fn) & (fn <= f[a] + 1e-4 * alpha[a] * slope)
        # accepted: BFGS update of the inverse Hessian
        acc = a[ok]
        if len(acc):
            s = xn[:, ok] - x[:, acc]
            yv = gn[:, ok] - g[:, acc]
            sy = np.einsum("ir,ir->r", s, yv)
            good = sy > 1e-300
            rho = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
            Hy = np.einsum("ijr,jr->ir", Hi[:, :, acc], yv)
            yHy = np.einsum("ir,ir->r", yv, Hy)
            upd = (rho[None, None] * (
                -np.einsum("ir,jr->ijr", s, Hy) - np.einsum("ir,jr->ijr", Hy, s))
                + (rho ** 2 * yHy + rho)[None, None] * np.einsum("ir,jr->ijr", s, s))
            Hi[:, :, acc] += upd
            x[:, acc] = xn[:, ok]
            f[acc], g[:, acc], beta[:, acc], pw[acc] = fn[ok], gn[:, ok], bn[:, ok], pn[ok]
            alpha[acc] = 1.0
        rej = a[~ok]
        alpha[rej] *= 0.25
        # a step too small to move θ: give up on that replicate (the caller refits it)
        stuck = rej[alpha[rej] < 1e-8]
        if len(stuck):
            dec = np.einsum("ir,ijr,jr->r", g[:, stuck], Hi[:, :, stuck], g[:, stuck])
            conv[stuck] = dec < 100 * tol * np.maximum(1.0, np.abs(f[stuck]))
            active = np.setdiff1d(active, stuck)
    return x, f, beta, pw, conv
