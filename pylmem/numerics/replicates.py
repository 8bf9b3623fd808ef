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


def centred_first_term(Z, codes, starts, n_levels, X, MZ):
    """The single term's products in centred coordinates: Z̃ = Z M_Z (``MZ`` None: Z),
    G̃ (L, q, q) = Z̃_g'Z̃_g and Z̃_g'X (L, q, p), formed from the centred columns (rows
    sorted by level, ``starts`` the first row of each; every level has a row).

    Z̃T̃ = ZT for T̃ = M_Z⁻¹T, so the deviance is the same; in θ̃ the intercept and a slope on
    x = 8..14 are no longer nearly collinear, and BFGS needs far fewer steps.
    Returns (Z̃, G̃, Z̃'X).
    """
    Zc = Z if MZ is None else Z @ MZ
    q, p = Zc.shape[1], X.shape[1]
    G = np.empty((n_levels, q, q))
    ZX = np.empty((n_levels, q, p))
    for a in range(q):
        G[:, a, :] = np.add.reduceat(Zc[:, a, None] * Zc, starts, axis=0)
        if p:
            ZX[:, a, :] = np.add.reduceat(Zc[:, a, None] * X, starts, axis=0)
    return Zc, G, ZX


def lower_from_centred(bd, theta_c, MZ):
    """θ (k, R) of T = M_Z T̃ re-triangularised, from θ̃ (k, R): T T' = M_Z T̃T̃' M_Z'
    (one batched QR, the diagonal made non-negative), as the regular fitter maps θ̃ back."""
    if MZ is None:
        return bd.canonical(theta_c)
    Tc = bd.T_of(theta_c).transpose(2, 0, 1)                          # (R, q, q)
    Rf = np.linalg.qr((MZ[None] @ Tc).transpose(0, 2, 1), mode="r")   # B' = Q R: B B' = R'R
    sgn = np.where(np.diagonal(Rf, axis1=1, axis2=2) < 0, -1.0, 1.0)
    T = (Rf * sgn[:, :, None]).transpose(0, 2, 1)                     # lower, diagonal ≥ 0
    out = T[:, bd.rows, bd.cols].T.copy()
    di = bd.diag_index()
    out[di] = np.maximum(out[di], 0.0)
    return out


def minimize_batch(bd: BatchedDeviance, theta0, Hinv0, Zy, Xty, yty, *, max_iter=60,
                   tol=1e-11, return_grad=False):
    """Lock-step BFGS from θ0 (k,) or (k, R) with inverse Hessian ``Hinv0`` (k, k) or
    (k, k, R) for all R replicates.  Coordinates whose rows and columns of ``Hinv0`` are
    zero stay fixed (the boundary fits: a diagonal θ held at 0).

    Returns θ (k, R), objective (R,), β̂ (p, R), r² (R,), converged (R,) bool (and the
    gradient (k, R) at θ with ``return_grad``: :func:`newton_polish` reuses it).  A replicate
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
    if return_grad:
        return x, f, beta, pw, conv, g
    return x, f, beta, pw, conv


# ----------------------------------------------------------------------------- several terms
MULTI_MAX_M = 200          # rest-block size up to which replicates of a multi-term model batch


class BatchedMultiDeviance:
    """d(θ_r) for R responses of a model with several terms and a small rest block.

    The blocked factor of :mod:`pylmem.numerics.deviance`, every replicate at once: the
    first term level by level (q0, q0, L0, R); the rest block dense, one m × m Cholesky per
    replicate (a LAPACK stack, m ≤ ``MULTI_MAX_M``); everything that does not depend on
    the response (Z'Z, Z'X, X'X, A = Z_R'Z_0) is formed once and shared.  The gradient
    is by central differences of the batched value (all 2k + 1 points in one call), so
    :func:`minimize_batch` drives it as it drives :class:`BatchedDeviance`.

    ``cp``: the fit's :class:`~pylmem.numerics.crossprod.CrossProducts` (the user's
    coordinates), ``qs``/``n_levels`` the terms'; per call the responses enter packed as
    ``Zy`` (L0 q0 + m, R) = [Z_0'y by (level, coefficient); Z_R'y], ``Xty`` (p, R), ``yty`` (R,).
    """

    def __init__(self, cp, qs, n_levels, *, reml):
        self.qs, self.n_levels = list(qs), list(n_levels)
        self.q0, self.L0 = self.qs[0], self.n_levels[0]
        self.n = int(cp.n)
        self.reml = bool(reml)
        r = cp.WtW.shape[0]
        self.p = p = r - 1
        q0, L0 = self.q0, self.L0
        self.G0 = np.ascontiguousarray(cp.terms[0].ZtZ.transpose(1, 2, 0))             # (q0, q0, L0)
        self.ZX0 = np.ascontiguousarray(cp.terms[0].ZtW[:, :, :p].transpose(1, 2, 0))  # (q0, p, L0)
        self.XtX = cp.WtW[:p, :p].copy()
        self.offsets = np.cumsum([0] + [L * q for L, q in zip(self.n_levels[1:], self.qs[1:])])
        self.m = m = int(self.offsets[-1])
        A = np.vstack([cp.between[(0, k)].T.toarray() for k in range(1, len(self.qs))])   # (m, L0 q0)
        self.A = A.reshape(m, L0, q0)
        ZZ = np.zeros((m, m))
        for k in range(1, len(self.qs)):
            a, b = self.offsets[k - 1], self.offsets[k]
            q, L = self.qs[k], self.n_levels[k]
            blk = cp.terms[k].ZtZ
            idx = np.arange(L)
            ZZ[a:b, a:b].reshape(L, q, L, q)[idx, :, idx, :] = blk
            for l_ in range(k + 1, len(self.qs)):
                c, d = self.offsets[l_ - 1], self.offsets[l_]
                Bkl = cp.between[(k, l_)].toarray()
                ZZ[a:b, c:d] = Bkl
                ZZ[c:d, a:b] = Bkl.T
        self.ZZ = ZZ
        self.ZXR = np.vstack([t.ZtW[:, :, :p].reshape(-1, p) for t in cp.terms[1:]])     # (m, p)
        self.rows, self.cols, self.term_of = [], [], []
        for k, q in enumerate(self.qs):
            rr, cc = np.tril_indices(q)
            order = np.lexsort((rr, cc))
            self.rows.append(rr[order])
            self.cols.append(cc[order])
            self.term_of.append(np.full(len(rr), k))
        self.n_theta = [len(x) for x in self.rows]
        self.toff = np.cumsum([0] + self.n_theta)
        self.k = int(self.toff[-1])
        self.term_of = np.concatenate(self.term_of)
        self._rows_all = np.concatenate(self.rows)
        self._cols_all = np.concatenate(self.cols)
        # Λ_R = ⊕ I_L ⊗ T_k: entry (s + a, s + b) of level block s is θ entry (a, b) of term k
        lr, lc, lt = [], [], []
        for k in range(1, len(self.qs)):
            q, L, a0 = self.qs[k], self.n_levels[k], self.offsets[k - 1]
            base = a0 + np.arange(L)[:, None] * q
            lr.append((base + self.rows[k][None, :]).ravel())
            lc.append((base + self.cols[k][None, :]).ravel())
            lt.append(np.tile(self.toff[k] + np.arange(self.n_theta[k]), L))
        self._lam_r, self._lam_c, self._lam_t = np.concatenate(lr), np.concatenate(lc), np.concatenate(lt)

    @staticmethod
    def pack(Z0y, ZRy):
        """Zy of :meth:`evaluate` from Z_0'y (L0, q0, R) and Z_R'y (m, R)."""
        return np.concatenate([Z0y.reshape(-1, Z0y.shape[-1]), ZRy], axis=0)

    def _T(self, theta, k):
        q = self.qs[k]
        T = np.zeros((q, q, theta.shape[1]))
        T[self.rows[k], self.cols[k]] = theta[self.toff[k]:self.toff[k + 1]]
        return T

    def value(self, theta, Zy, Xty, yty):
        """Criterion (R,), β̂ (p, R), r² (R,); NaN where a factor is not positive definite."""
        q0, L0, m, p = self.q0, self.L0, self.m, self.p
        r = p + 1
        R = theta.shape[1]
        T0 = self._T(theta, 0)
        TtG = np.einsum("jar,jbg->abgr", T0, self.G0)
        A00 = np.einsum("ajgr,jbr->abgr", TtG, T0)
        idx = np.arange(q0)
        A00[idx, idx] += 1.0
        L0f = _cholesky(A00)                                           # (q0, q0, L0, R)
        Z0y = Zy[:L0 * q0].reshape(L0, q0, R).transpose(1, 0, 2)       # (q0, L0, R)
        rhs = np.empty((q0, r, L0, R))
        rhs[:, :p] = np.einsum("jar,jcg->acgr", T0, self.ZX0)
        rhs[:, p] = np.einsum("jar,jgr->agr", T0, Z0y)
        C0 = B.solve_lower_soa(L0f, rhs)                               # (q0, r, L0, R)
        # N_j = T0 L0_j⁻ᵀ: N'_j = L0_j⁻¹ T0'
        Nt = B.solve_lower_soa(L0f, np.ascontiguousarray(
            np.broadcast_to(T0.transpose(1, 0, 2)[:, :, None, :], (q0, q0, L0, R))))  # (q0, q0, L0, R)
        # A_j N_j (m, L0, q0, R): Σ_u A[:, j, u] N_j[u, v] = Σ_u A[:, j, u] Nt[v, u, j]
        AN = np.einsum("mju,vujr->mjvr", self.A, Nt).reshape(m, L0 * q0, R)
        Lam = np.zeros((R, m, m))                                      # Λ_R per replicate
        Lam[:, self._lam_r, self._lam_c] = theta[self._lam_t].T
        ANr = AN.transpose(2, 0, 1)                                    # (R, m, L0 q0)
        X = self.ZZ[None] - ANr @ ANr.transpose(0, 2, 1)
        S = Lam.transpose(0, 2, 1) @ X @ Lam
        S[:, np.arange(m), np.arange(m)] += 1.0
        ok = np.all(np.isfinite(L0f[idx, idx]), axis=(0, 1))
        S[~ok] = np.eye(m)
        try:
            LR = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            LR = np.full_like(S, np.nan)
            for i in range(R):
                try:
                    LR[i] = np.linalg.cholesky(S[i])
                except np.linalg.LinAlgError:
                    ok[i] = False
                    LR[i] = np.eye(m)
        # B_R = Λ_R'(Z_R'W − A V), V_j = N_j C0_j
        ZRy = Zy[L0 * q0:]                                             # (m, R)
        ZRW = np.empty((R, m, r))
        ZRW[:, :, :p] = self.ZXR[None]
        ZRW[:, :, p] = ZRy.T
        C0r = C0.transpose(3, 2, 0, 1).reshape(R, L0 * q0, r)          # (R, (j, u), r)
        # A V = Σ_j A_j N_j C0_j = AN (R, m, L0 q0) @ C0 by (j, v)
        BR = Lam.transpose(0, 2, 1) @ (ZRW - ANr @ C0r)
        CR = np.linalg.solve(LR, BR)                                   # L_R⁻¹ B_R (R, m, r)
        SW = np.empty((r, r, R))
        SW[:p, :p] = self.XtX[:, :, None]
        SW[:p, p] = Xty
        SW[p, :p] = Xty
        SW[p, p] = yty
        SW -= np.einsum("acgr,adgr->cdr", C0, C0)
        SW -= np.einsum("rmc,rmd->cdr", CR, CR)
        LW = _cholesky(SW)
        logdet = 2.0 * np.log(L0f[idx, idx]).sum(axis=(0, 1)) \
            + 2.0 * np.log(np.abs(np.diagonal(LR, axis1=1, axis2=2))).sum(axis=1)
        pw = LW[p, p] ** 2
        beta = B.solve_lower_t_soa(LW[:p, :p], LW[p, :p][:, None, :])[:, 0, :] if p else np.zeros((0, R))
        if self.reml:
            nu = self.n - p
            val = logdet + 2.0 * np.log(LW[np.arange(p), np.arange(p)]).sum(axis=0) \
                + nu * (1.0 + np.log(2 * np.pi * pw / nu))
        else:
            nu = self.n
            val = logdet + nu * (1.0 + np.log(2 * np.pi * pw / nu))
        val = np.where(ok & np.isfinite(val), val, np.nan)
        return val, beta, pw

    def evaluate(self, theta, Zy, Xty, yty, *, gradient=True, h=None):
        """Criterion (R,), gradient (k, R) by central differences (step ``h``, default
        1e-5 · max(|θ|, 0.1)), β̂ (p, R), r² (R,); the value is +inf where not finite."""
        k, R = self.k, theta.shape[1]
        if not gradient:
            v, b, pw = self.value(theta, Zy, Xty, yty)
            return np.where(np.isfinite(v), v, np.inf), None, b, pw
        hh = 1e-5 * np.maximum(np.abs(theta), 0.1) if h is None else np.broadcast_to(h, theta.shape)
        pts = np.repeat(theta[:, None, :], 2 * k + 1, axis=1)         # (k, 2k + 1, R)
        for i in range(k):
            pts[i, 1 + i] += hh[i]
            pts[i, 1 + k + i] -= hh[i]
        n_pts = 2 * k + 1
        v, b, pw = self.value(pts.reshape(k, -1), np.tile(Zy, (1, n_pts)), np.tile(Xty, (1, n_pts)),
                              np.tile(yty, n_pts))
        v = v.reshape(n_pts, R)
        g = (v[1:1 + k] - v[1 + k:]) / (2 * hh)
        val = v[0]
        bad = ~np.isfinite(val) | ~np.all(np.isfinite(g), axis=0)
        val = np.where(bad, np.inf, val)
        g = np.where(bad[None], 0.0, g)
        return val, g, b.reshape(-1, n_pts, R)[:, 0], pw.reshape(n_pts, R)[0]

    def canonical(self, theta):
        """Flip columns of each T_k with a negative diagonal (T_k T_k' unchanged)."""
        theta = theta.copy()
        for k, q in enumerate(self.qs):
            rows, cols, o = self.rows[k], self.cols[k], self.toff[k]
            for j in range(q):
                neg = theta[o + np.flatnonzero((rows == j) & (cols == j))[0]] < 0
                sel = o + np.flatnonzero(cols == j)
                theta[np.ix_(sel, neg)] *= -1.0
        return theta

    def diag_index(self):
        return np.flatnonzero(self._rows_all == self._cols_all)


def newton_polish(bd, x, f, Zy, Xty, yty, *, rel_h=1e-4, fixed=None, beta=None, pw=None,
                  grad=None, by_point=True):
    """One Newton step per replicate with the Hessian from forward differences of the
    gradient (as the regular fitter's convergence check polishes its optimum), kept where
    it does not raise d by more than 1e-12 |d|.  ``x`` (k, R), ``f`` (R,); ``fixed``
    (k, R) bool: coordinates held where they are (a diagonal θ held at 0 on the
    boundary); ``beta``/``pw``/``grad``: β̂, r² and the gradient at ``x`` when known (each
    saves work: the Hessian then needs k gradients, not k + 1); ``by_point``: the
    gradients one point at a time (else all in one call).

    Returns θ (k, R), objective (R,), β̂ (p, R), r² (R,).
    """
    k, R = x.shape
    h = rel_h * np.maximum(np.abs(x), 0.1)                            # (k, R)
    if by_point:   # one point at a time: R columns, as wide as the BFGS steps (cache)
        g0 = bd.evaluate(x, Zy, Xty, yty)[1] if grad is None else grad
        H = np.empty((k, k, R))                                       # H[:, i] = ∂g/∂x_i
        for i in range(k):
            xi = x.copy()
            xi[i] += h[i]
            H[:, i] = (bd.evaluate(xi, Zy, Xty, yty)[1] - g0) / h[i]
    else:          # all points in one call (a kernel whose cost is per call, not per column)
        o = 0 if grad is not None else 1
        pts = np.repeat(x[:, None, :], k + o, axis=1)                 # (k, k + o, R)
        for i in range(k):
            pts[i, o + i] += h[i]
        tile = (1, k + o)
        _, g, _, _ = bd.evaluate(pts.reshape(k, -1), np.tile(Zy, tile), np.tile(Xty, tile),
                                 np.tile(yty, k + o))
        g = g.reshape(k, k + o, R)
        g0 = g[:, 0] if grad is None else grad
        H = (g[:, o:] - g0[:, None]) / h[None, :, :]
    H = 0.5 * (H + H.transpose(1, 0, 2))
    if fixed is not None and fixed.any():
        g0 = np.where(fixed, 0.0, g0)
        both = fixed[:, None, :] | fixed[None, :, :]
        H = np.where(both, 0.0, H)
        idx = np.arange(k)
        H[idx, idx] = np.where(fixed, 1.0, H[idx, idx])
    Hr = H.transpose(2, 0, 1)
    fin = np.all(np.isfinite(Hr), axis=(1, 2)) & np.all(np.isfinite(g0), axis=0)
    pd_ = fin.copy()
    if fin.any():
        pd_[fin] = np.all(np.linalg.eigvalsh(Hr[fin]) > 0, axis=1)
    step = np.zeros((k, R))
    if pd_.any():
        step[:, pd_] = np.linalg.solve(Hr[pd_], g0[:, pd_].T[:, :, None])[:, :, 0].T
    x2 = x - step
    f2, _, b2, pw2 = bd.evaluate(x2, Zy, Xty, yty, gradient=False)
    if beta is None or pw is None:
        _, _, beta, pw = bd.evaluate(x, Zy, Xty, yty, gradient=False)
    take = pd_ & np.isfinite(f2) & (f2 <= f + 1e-12 * np.abs(f))
    x_out = np.where(take[None], x2, x)
    return x_out, np.where(take, f2, f), np.where(take[None], b2, beta), np.where(take, pw2, pw)
