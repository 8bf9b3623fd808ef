"""Simulation from a fitted model, refits to new responses, and the parametric bootstrap.

* :func:`simulate` — lme4's ``simulate.merMod``: y* = Xβ̂ + Z Λ_θ̂ u σ̂ + σ̂ ε with
  u, ε ~ N(0, I) (``use_u=True``: the conditional modes b̂ instead of new b).
* :func:`refit_response` — the fit of the same model to a new response (lme4's
  ``refit(fit, newresp)``): X, Z and every cross-product of them are reused; only X'y,
  Z'y and y'y are formed.
* :func:`bootstrap` — lme4's ``bootMer`` for the parameters: ``nsim`` responses simulated
  from the fit, each refitted.  For one random-effects term the refits run together
  (:mod:`pylmem.numerics.replicates`: the profiled deviance with a replicate axis, in the fit's
  centred coordinates Z̃, W̃ (:mod:`pylmem.numerics.centring`), a lock-step BFGS from θ̂ and one
  Newton step); replicates that end near the boundary are refitted, still batched, with
  the vanishing variance held at 0 (kept when the regular fitter's snapping rule would
  keep it); the few that converge in neither way are refitted one by one by the regular
  optimiser.  A model with several terms and a rest block of at most ``MULTI_MAX_M`` rows
  runs in lock step too (:class:`~pylmem.numerics.replicates.BatchedMultiDeviance`: the
  cross-products of X and Z shared, BFGS with batched central-difference gradients, one
  Newton step); its boundary and unconverged replicates are refitted one by one.  Singular, unconverged
  and failed replicates are counted and reported (``status``), never dropped.
* :func:`pb_anova` — pbkrtest's ``PBmodcomp``: the parametric-bootstrap likelihood-ratio
  test of a smaller model m0 against m1, simulating under m0.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from ..estimation.fitting import estimate
from ..model.covariance import (
    lambda_theta,
    sdcor_from_theta,
    sdcor_names,
    structured_terms,
)
from ..model.design import require_rows
from ..model.weights import reject_weighted
from ..numerics.centring import Centring
from ..numerics.crossprod import CrossProducts, TermStats, group_sums
from ..numerics.replicates import (
    MULTI_MAX_M,
    BatchedDeviance,
    BatchedMultiDeviance,
    centred_first_term,
    lower_from_centred,
    minimize_batch,
    newton_polish,
)
from ..util.checks import check_level
from ..util.lazy import stats
from ..util.progress import Progress
from ..util.threads import single_thread
from .lrt import check_same_data, nesting_problem
from .plots import plot_bootstrap

_SIM_CHUNK = 1000      # replicates drawn per block (the stream does not depend on the model)
# lock-step BFGS iterations: only the replicates still active iterate, and one that falls
# back to a one-by-one refit costs ~1000 batched replicates (an Orthodont-shaped model in
# the user's θ: 37 of 1000 replicates needed more than 60 iterations, 4 more than 200; in
# the centred θ̃ growth_sex needs 11-18 for its slowest replicate of 296)
_MAX_ITER = 400
# the one-term BFGS stops on a Newton decrement of 1e-11 |d|, then one Newton step polishes
_TOL = 1e-11
# entries of the (q, max(q, p + 1), L, R) arrays per sub-block: growth_sex (L = 27, p = 4)
# 296 replicates, sleepstudy 740, the rat model 128 (per-column cost of an evaluation,
# growth_sex: 8 µs at R = 256, 15 µs at 512; the rat model flat at 128-256)
_SUB_ENTRIES = 80_000


# ------------------------------------------------------------------------------ simulate
def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _simulate_block(fit, rng, nsim, use_u):
    """(nsim, n) responses, one replicate per row, columns in the model's row order.

    Replicate r takes the next Σ_k L_k q_k + n standard normals of the stream (u of each
    term, then ε), so the first replicates do not depend on ``nsim`` or the block size.
    """
    d = fit.design
    n = d.n_obs
    mu = d.X @ fit.beta if d.n_fixef else np.zeros(n)
    sigma = fit.sigma
    sizes = [] if use_u else [t.n_levels * t.q for t in d.terms]
    Z = rng.standard_normal((nsim, sum(sizes) + n))
    Y = sigma * Z[:, sum(sizes):]
    Y += (fit.fitted_model_order() if use_u else mu)[None, :]
    off = 0
    for k, (t, T, m) in enumerate(zip(d.terms, fit.factor.T, sizes)):
        u = Z[:, off:off + m].reshape(nsim, t.n_levels, t.q)
        off += m
        counts = np.bincount(t.codes, minlength=t.n_levels) if k == 0 else None
        for i in range(t.q):
            b_i = sigma * np.einsum("j,rgj->rg", T[i], u)        # (R, L) coefficient i
            # rows are sorted by the first term's levels: a repeat instead of a gather
            rows = np.repeat(b_i, counts, axis=1) if k == 0 else b_i[:, t.codes]
            Y += t.Z[None, :, i] * rows
    return Y


def _simulate_blocks(fit, nsim, seed, use_u):
    """Yield (start, Y block (R, n), model order) for the replicates, _SIM_CHUNK at a time."""
    rng = _rng(seed)
    for s in range(0, nsim, _SIM_CHUNK):
        yield s, _simulate_block(fit, rng, min(_SIM_CHUNK, nsim - s), use_u)


def simulate(fit, nsim: int = 1, seed=None, use_u: bool = False) -> np.ndarray:
    """``nsim`` responses simulated from ``fit``: an (n, nsim) array, one row per observation
    the fit used (rows with missing values dropped), in the data's row order.

    y* = Xβ̂ + Σ_k Z_k b_k + σ̂ε with b_k = σ̂ T_k u (u, ε ~ N(0, I)), i.e. y* ~ N(Xβ̂, ZΣZ' + σ̂²I).

    Parameters
    ----------
    fit : LmerFit
        An unweighted fit.
    nsim : int, default 1
        Number of simulated responses.
    seed : int, numpy Generator or None
        The random source.
    use_u : bool, default False
        Keep b at its conditional modes (lme4's ``use.u``).

    Returns
    -------
    numpy.ndarray
        (n, nsim). ``LmerFit.simulate(..., as_frame=True)`` labels it as lme4 does.
    """
    require_rows(fit.design, "simulate()")
    reject_weighted(fit, "simulate")
    nsim = _check_nsim(nsim)
    out = np.empty((fit.n_obs, nsim))
    order = fit.design.order
    for s, Y in _simulate_blocks(fit, nsim, seed, use_u):
        out[order, s:s + Y.shape[0]] = Y.T
    return out


def _check_nsim(nsim) -> int:
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    return int(nsim)


# ------------------------------------------------------------------------------ refit
def _crossproducts_for(fit, y):
    """The fit's cross-products with the response replaced by ``y`` (model order)."""
    cp, d = fit.cp, fit.design
    p = d.n_fixef
    WtW = cp.WtW.copy()
    WtW[:p, p] = WtW[p, :p] = d.X.T @ y
    WtW[p, p] = y @ y
    terms = []
    for t, st in zip(d.terms, cp.terms):
        ZtW = st.ZtW.copy()
        ZtW[:, :, p] = group_sums(t.codes, t.n_levels, t.Z * y[:, None])
        terms.append(TermStats(st.ZtZ, ZtW))
    return CrossProducts(n=cp.n, WtW=WtW, terms=terms, between=cp.between)


def _refit_model_order(fit, y, reml, verbose=False):
    design = replace(fit.design, y=y)
    return estimate(design, reml=reml, cp=_crossproducts_for(fit, y), verbose=verbose,
                    cls=type(fit))


def refit_response(fit, y, *, reml=None):
    """The model refitted to a new response ``y`` (one value per observation the fit used,
    in the data's row order, as :func:`simulate` returns them).

    X, Z and their cross-products are reused (lme4's ``refit(fit, newresp)``); ``reml``
    defaults to the fit's criterion.
    """
    reject_weighted(fit, "refit(y)")
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != fit.n_obs:
        raise ValueError(f"refit: the new response has {len(y)} values, the model {fit.n_obs} rows")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"refit: the new response has {int((~np.isfinite(y)).sum())} "
                         "non-finite value(s)")
    reml = fit.reml if reml is None else bool(reml)
    return _refit_model_order(fit, y[fit.design.order], reml)


# ------------------------------------------------------------------------------ engine
def _centring(fit):
    """The fit's :class:`~pylmem.numerics.centring.Centring` (its deviance's, so the
    replicates share the fit's centred coordinates)."""
    cen = getattr(getattr(fit, "dev", None), "centring", None)
    if cen is None:
        cen = Centring(fit.cp, [t.q for t in fit.design.terms])
    return cen


class _Engine:
    """Refits many responses of one model: batched for one term, else one by one."""

    def __init__(self, fit, reml):
        self.fit = fit
        self.reml = reml
        d = fit.design
        self.p = d.n_fixef
        self.k = len(lambda_theta(fit))     # θ of Λ's blocks (a structured fit's θ is φ)
        self.batched = len(d.terms) == 1 and not structured_terms(d.terms)
        if self.batched:
            cp, p = fit.cp, self.p
            self.t = d.terms[0]
            self.starts = np.flatnonzero(np.r_[True, np.diff(self.t.codes) != 0])
            # the kernel runs in the fit's centred coordinates θ̃ (Z̃ = Z M_Z): the same
            # deviance, the regular fitter's boundary, and far fewer BFGS steps
            self.cen = _centring(fit)
            self.MZ = self.cen.MZ
            # and in W̃ = [X̃ ỹ] (X's columns and y shifted by the fit's means, the intercept
            # kept): d and r² are the same, β̂ differs in its intercept only, and y'y − Σ C'C
            # no longer cancels ~8 digits (the rat model: d to ~1e-15 relative, not ~1e-11,
            # which had a third of the Newton polish steps rejected as noise)
            self.Xc, self.ymean, self.xmean, self.icol = d.X, 0.0, None, None
            if self.cen.icol is not None:
                self.icol, self.xmean = self.cen.icol, self.cen.m[:p]
                self.ymean = float(self.cen.m[p])
                self.Xc = d.X - self.xmean[None, :]
            self.Zc, G, ZX = centred_first_term(self.t.Z, self.t.codes, self.starts,
                                                self.t.n_levels, self.Xc, self.MZ)
            self.bd = BatchedDeviance(G, ZX, self.Xc.T @ self.Xc, cp.n, reml=reml)
            s = np.sqrt(np.mean(self.Zc ** 2, axis=0))
            self.scale = np.where(s > 0, s, 1.0)
            # replicates per batched sub-block, so that the (q, r, L, R) arrays stay in cache
            # (see _SUB_ENTRIES; earlier, per 1000 replicates: rat 0.5 s at R = 128-250
            # against 1.3 s at R = 1000)
            per = self.t.q * max(self.t.q, p + 1) * self.t.n_levels
            self.sub = int(np.clip(_SUB_ENTRIES // per, 128, _SIM_CHUNK))
            self._start(fit)
        m = sum(t.q * t.n_levels for t in d.terms[1:])
        # structured fits (θ is φ) are refitted one by one
        self.multi = len(d.terms) > 1 and 0 < m <= MULTI_MAX_M and not structured_terms(d.terms)
        if self.multi:
            self._start_multi(fit, m)

    # ------------------------------------------------------------- several terms, lock-step
    def _start_multi(self, fit, m):
        """The multi-term lock-step refits: the shared cross-products of
        :class:`BatchedMultiDeviance`, Z' as one sparse matrix (for Z'y of a block), θ0 = θ̂
        and an inverse Hessian from differences of the batched gradient at the fit's y."""
        d = fit.design
        self.bdm = bd = BatchedMultiDeviance(fit.cp, [t.q for t in d.terms],
                                             [t.n_levels for t in d.terms], reml=self.reml)
        import scipy.sparse as sp

        self.Zt = sp.hstack([t.sparse() for t in d.terms], format="csc").T.tocsr()
        # per replicate the (q0, q0, L0) and (m, L0 q0) arrays: sub-blocks stay ~ 4 M entries
        self.sub_multi = int(np.clip(4_000_000 // max(m * (m + d.terms[0].n_levels * d.terms[0].q)
                                                      * (2 * bd.k + 1), 1), 8, _SIM_CHUNK))
        k = bd.k
        th = fit.theta.copy()
        di = bd.diag_index()
        scale = self._multi_scale(fit)
        th[di] = np.maximum(np.abs(th[di]), 0.05 / scale[di])
        self.mscale = scale
        Zy, Xty, yty = self._responses_multi(np.repeat(fit.design.y[None, :], k + 1, axis=0))
        h = 1e-3 * np.maximum(np.abs(th), 0.1)
        pts = np.repeat(th[:, None], k + 1, axis=1)
        pts[np.arange(k), np.arange(k) + 1] += h
        _, g, _, _ = bd.evaluate(pts, Zy, Xty, yty)
        H = (g[:, 1:] - g[:, :1]) / h[None, :]
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        w = np.maximum(w, 1e-6 * max(w.max(), 1e-12))
        self.mtheta0, self.mHinv0 = th, (V / w) @ V.T

    def _multi_scale(self, fit):
        """RMS of the Z column of each θ entry's row (the scale of the rows of T_k)."""
        out = []
        for t, rows in zip(fit.design.terms, self.bdm.rows):
            s = np.sqrt(np.mean(t.Z ** 2, axis=0))
            out.append(np.where(s > 0, s, 1.0)[rows])
        return np.concatenate(out)

    def _responses_multi(self, Y):
        """Zy (L0 q0 + m, R) packed as :class:`BatchedMultiDeviance` reads it, X'Y, y'y."""
        return np.asarray(self.Zt @ Y.T), (Y @ self.fit.design.X).T, np.einsum("rn,rn->r", Y, Y)

    def _batched_multi(self, Y, theta, beta, sigma, obj, status, nu):
        """Lock-step refits of a sub-block; the accepted ones (converged, interior) are
        filled in place; returns their mask (the others are refitted one by one)."""
        bd = self.bdm
        Zy, Xty, yty = self._responses_multi(Y)
        x, f, b, pw, conv, g = minimize_batch(bd, self.mtheta0, self.mHinv0, Zy, Xty, yty,
                                              max_iter=_MAX_ITER, return_grad=True)
        # the BFGS decrement leaves θ ~1e-5 off along flat directions: one Newton step
        x, f, b, pw = newton_polish(bd, x, f, Zy, Xty, yty, beta=b, pw=pw, grad=g,
                                    by_point=False)
        x = bd.canonical(x)
        di = bd.diag_index()
        interior = np.all(x[di] * self.mscale[di, None] > 1e-3, axis=0)
        ok = conv & interior & np.isfinite(f)
        theta[ok], beta[ok] = x[:, ok].T, b[:, ok].T
        sigma[ok] = np.sqrt(pw[ok] / nu)
        obj[ok] = f[ok]
        status[ok] = "ok"
        return ok

    def _responses(self, Y):
        """Z̃y (q, L, R), X'Y (p, R), y'y (R,) of a block of responses Y (R, n), model order."""
        Zc = self.Zc
        if self.ymean:
            Y = Y - self.ymean
        Zy = np.stack([np.add.reduceat(Zc[None, :, a] * Y, self.starts, axis=1).T
                       for a in range(Zc.shape[1])])
        return Zy, (Y @ self.Xc).T, np.einsum("rn,rn->r", Y, Y)

    def _beta_from_centred(self, b):
        """β (p, R) from β̃ of W̃: only the intercept moves, by ȳ − x̄'β̃."""
        if self.icol is None:
            return b
        b = b.copy()
        b[self.icol] += self.ymean - self.xmean @ b
        return b

    def _start(self, fit):
        """θ0 = θ̂ (diagonal floored away from 0: d is flat in a zero column of T) and the
        Hessian of d there for the fit's own response, by forward differences of the
        batched gradient (eigenvalues floored to keep it positive definite)."""
        bd, k = self.bd, self.k
        th = self.cen.theta_to_centred(fit.theta) if self.MZ is not None else fit.theta.copy()
        di = bd.diag_index()
        th[di] = np.maximum(np.abs(th[di]), 0.05 / self.scale[bd.rows[di]])
        Zy, Xty, yty = self._responses(np.repeat(fit.design.y[None, :], k + 1, axis=0))
        h = 1e-5 * np.maximum(np.abs(th), 1e-2)
        pts = np.repeat(th[:, None], k + 1, axis=1)
        pts[np.arange(k), np.arange(k) + 1] += h
        _, g, _, _ = bd.evaluate(pts, Zy, Xty, yty)
        H = (g[:, 1:] - g[:, :1]) / h[None, :]
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        w = np.maximum(w, 1e-6 * max(w.max(), 1e-12))
        self.theta0, self.Hinv0, self.H0 = th, (V / w) @ V.T, (V * w) @ V.T

    def _boundary(self, x, f, conv, Zy, Xty, yty):
        """Refit with the near-zero diagonal θ of each replicate held at 0 (batched).

        Returns (θ, objective, β, r², accepted) where accepted marks replicates whose
        boundary fit converged and is at least as good as the interior one (lme4's and
        :func:`check_convergence`'s snapping rule: d(boundary) ≤ d + 1e-10 |d|).
        """
        bd = self.bd
        di = bd.diag_index()
        small = (np.abs(x[di]) * self.scale[bd.rows[di], None] < 1e-2) | (np.abs(x[di]) < 1e-3)
        fixed = np.zeros(x.shape, bool)
        fixed[di] = small
        x0 = np.where(fixed, 0.0, x)
        R = x.shape[1]
        Hinv = np.zeros((bd.k, bd.k, R))
        for pat in np.unique(fixed, axis=1).T:           # a few patterns: loop over them
            cols = np.all(fixed == pat[:, None], axis=0)
            free = ~pat
            Hf = np.zeros((bd.k, bd.k))
            Hf[np.ix_(free, free)] = np.linalg.inv(self.H0[np.ix_(free, free)])
            Hinv[:, :, cols] = Hf[:, :, None]
        xb, fb, bb, pb, cb, gb = minimize_batch(bd, x0, Hinv, Zy, Xty, yty, max_iter=_MAX_ITER,
                                                tol=_TOL, return_grad=True)
        ok_u = conv & np.isfinite(f)
        acc = small.any(axis=0) & cb & np.isfinite(fb) & (~ok_u | (fb <= f + 1e-10 * np.abs(f)))
        return xb, fb, bb, pb, gb, acc

    def _batched(self, Y, theta, beta, sigma, obj, status, nu):
        """The batched refits of a sub-block (filled in place); returns the fitted mask."""
        bd = self.bd
        Zy, Xty, yty = self._responses(Y)
        x, f, b, pw, conv, g = minimize_batch(bd, self.theta0, self.Hinv0, Zy, Xty, yty,
                                              max_iter=_MAX_ITER, tol=_TOL, return_grad=True)
        di = bd.diag_index()
        interior = np.all(np.abs(x[di]) * self.scale[bd.rows[di], None] > 1e-3, axis=0)
        ok = conv & interior & np.isfinite(f)
        near = np.flatnonzero(~ok)
        if len(near):
            xb, fb, bb, pb, gb, acc = self._boundary(x[:, near], f[near], conv[near],
                                                     Zy[..., near], Xty[:, near], yty[near])
            sel = near[acc]
            x[:, sel], f[sel], b[:, sel], pw[sel] = xb[:, acc], fb[acc], bb[:, acc], pb[acc]
            g[:, sel] = gb[:, acc]
            status[sel] = "singular"
            # not accepted, but a converged interior fit (a small variance): keep it
            ok[near[~acc & conv[near] & np.isfinite(f[near])]] = True
        fitted = ok | (status == "singular")
        # BFGS stops on its decrement with θ ~1e-5 off along flat directions: one Newton
        # step (a zero diagonal held at 0) puts it where the regular fitter's polish does
        fi = np.flatnonzero(fitted)
        if len(fi):
            xf = x[:, fi]
            fixed = np.zeros(xf.shape, bool)
            fixed[di] = xf[di] == 0.0
            x[:, fi], f[fi], b[:, fi], pw[fi] = newton_polish(
                bd, xf, f[fi], Zy[..., fi], Xty[:, fi], yty[fi], fixed=fixed, beta=b[:, fi],
                pw=pw[fi], grad=g[:, fi])
        theta[fitted] = lower_from_centred(bd, bd.canonical(x[:, fitted]), self.MZ).T
        beta[fitted] = self._beta_from_centred(b[:, fitted]).T
        sigma[fitted] = np.sqrt(pw[fitted] / nu)
        obj[fitted] = f[fitted]
        status[ok] = "ok"
        return fitted

    def run_block(self, Y):
        """Fit every row of Y (R, n; model order): θ (R, k), β (R, p), σ (R,), objective (R,),
        status (R,) of 'ok', 'singular', 'unconverged' (estimates kept, as lme4's bootMer
        keeps them) or 'failed' (the refit raised: NaN)."""
        R = Y.shape[0]
        theta = np.full((R, self.k), np.nan)
        beta = np.full((R, self.p), np.nan)
        sigma = np.full(R, np.nan)
        obj = np.full(R, np.nan)
        status = np.array(["failed"] * R, dtype=object)
        todo = np.arange(R)
        nu = self.fit.n_obs - (self.p if self.reml else 0)
        if self.batched:
            fitted = np.zeros(R, bool)
            for a in range(0, R, self.sub):
                sl = slice(a, min(a + self.sub, R))
                fitted[sl] = self._batched(Y[sl], theta[sl], beta[sl], sigma[sl], obj[sl],
                                           status[sl], nu)
            todo = np.flatnonzero(~fitted)
        elif self.multi:
            fitted = np.zeros(R, bool)
            for a in range(0, R, self.sub_multi):
                sl = slice(a, min(a + self.sub_multi, R))
                fitted[sl] = self._batched_multi(Y[sl], theta[sl], beta[sl], sigma[sl], obj[sl],
                                                 status[sl], nu)
            todo = np.flatnonzero(~fitted)
        for r in todo:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = _refit_model_order(self.fit, Y[r], self.reml)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError):
                continue
            theta[r], beta[r], sigma[r], obj[r] = lambda_theta(m), m.beta, m.sigma, m.objective
            status[r] = ("unconverged" if not m.converged else
                         "singular" if m.optsum.singular else "ok")
        return theta, beta, sigma, obj, status


# ------------------------------------------------------------------------------ result
def _theta_names(fit) -> list[str]:
    """lme4's names of θ: 'Subject.(Intercept)', 'Subject.Days.(Intercept)', 'Subject.Days'."""
    out = []
    for t in fit.design.terms:
        rows, cols = np.tril_indices(t.q)
        order = np.lexsort((rows, cols))
        for i, j in zip(rows[order], cols[order]):
            out.append(f"{t.name}.{t.coef_names[i]}" if i == j else
                       f"{t.name}.{t.coef_names[i]}.{t.coef_names[j]}")
    return out


def _sdcor_batch(theta, sigma, qs) -> np.ndarray:
    """Rows of :func:`pylmem.model.covariance.sdcor_from_theta` for many replicates at once."""
    out, off = [], 0
    for q in qs:
        rows, cols = np.tril_indices(q)
        order = np.lexsort((rows, cols))
        rows, cols = rows[order], cols[order]
        T = np.zeros((len(sigma), q, q))
        T[:, rows, cols] = theta[:, off:off + len(rows)]
        off += len(rows)
        Om = sigma[:, None, None] ** 2 * T @ T.transpose(0, 2, 1)
        sd = np.sqrt(np.maximum(np.einsum("rii->ri", Om), 0.0))
        den = sd[:, rows] * sd[:, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = np.where(den > 0, Om[:, rows, cols] / np.where(den > 0, den, 1.0), np.nan)
        out.append(np.where(rows == cols, sd[:, rows], cor))
    return np.concatenate(out, axis=1) if out else np.zeros((len(sigma), 0))


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Quantiles as the boot package's ``norm.inter`` (used by lme4's percentile intervals):
    order statistic (R+1)α, interpolated on the normal scale between neighbours."""
    t = np.sort(t)
    R = len(t)
    rk = (R + 1) * alpha
    k = np.floor(rk).astype(int)
    out = np.empty(len(alpha))
    for i in range(len(alpha)):
        if k[i] == rk[i] and 0 < k[i] <= R:
            out[i] = t[k[i] - 1]
        elif k[i] <= 0:
            out[i] = t[0]
        elif k[i] >= R:
            out[i] = t[-1]
        else:
            z1, z2, z3 = stats.norm.ppf([alpha[i], k[i] / (R + 1), (k[i] + 1) / (R + 1)])
            out[i] = t[k[i] - 1] + (z1 - z2) / (z3 - z2) * (t[k[i]] - t[k[i] - 1])
    return out


class BootstrapResult:
    """Parametric-bootstrap replicates of a fit (lme4's ``bootMer`` object).

    ``t``: one row per replicate, columns ``.sig01 …`` (sd/cor of the random effects),
    ``.sigma`` and the fixed effects (lme4's ``confint(method="boot")`` parameters);
    ``t0``: the same for the fit.  ``status``: 'ok', 'singular' (a variance on the
    boundary), 'unconverged' (the optimiser's convergence check failed: estimates kept, as
    lme4 keeps them) or 'failed' (the refit raised an error: its row is NaN).
    """

    def __init__(self, fit, theta, beta, sigma, objective, status, *, seed, seconds):
        self.fit = fit
        self.nsim = len(sigma)
        self.seed = seed
        self.seconds = seconds
        idx = pd.RangeIndex(self.nsim, name="replicate")
        self.theta = pd.DataFrame(theta, index=idx, columns=_theta_names(fit))
        self.fixef = pd.DataFrame(beta, index=idx, columns=list(fit.design.fixef_names))
        self.sigma = pd.Series(sigma, index=idx, name="sigma")
        self.objective = pd.Series(objective, index=idx, name="objective")
        self.status = pd.Series(status, index=idx, name="status")
        qs = [t.q for t in fit.design.terms]
        sd = _sdcor_batch(theta, sigma, qs)
        names = sdcor_names(qs) + [".sigma"] + list(fit.design.fixef_names)
        self.t = pd.DataFrame(np.column_stack([sd, sigma, beta]), index=idx, columns=names)
        self.t0 = pd.Series(np.r_[sdcor_from_theta(lambda_theta(fit), fit.sigma, qs), fit.sigma,
                                  fit.beta],
                            index=names, name="original")

    @property
    def n_failed(self) -> int:
        return int((self.status == "failed").sum())

    @property
    def n_singular(self) -> int:
        return int((self.status == "singular").sum())

    @property
    def n_unconverged(self) -> int:
        return int((self.status == "unconverged").sum())

    @property
    def cov_re(self) -> dict:
        """Ω_k = σ² T_k T_k' of each replicate: term name -> (nsim, q, q) array."""
        out, off = {}, 0
        th = self.theta.to_numpy()
        s2 = self.sigma.to_numpy() ** 2
        for t in self.fit.design.terms:
            k = t.n_theta
            rows, cols = np.tril_indices(t.q)
            order = np.lexsort((rows, cols))
            T = np.zeros((self.nsim, t.q, t.q))
            T[:, rows[order], cols[order]] = th[:, off:off + k]
            out[t.name] = s2[:, None, None] * T @ T.transpose(0, 2, 1)
            off += k
        return out

    def summary_frame(self) -> pd.DataFrame:
        """original, bias, std. error of each parameter (the print of a ``boot`` object)."""
        t = self.t
        return pd.DataFrame({"original": self.t0, "bias": t.mean() - self.t0, "std. error": t.std()})

    def confint(self, level: float = 0.95, method: str = "percentile") -> pd.DataFrame:
        """Bootstrap intervals, rows as lme4's ``confint`` (.sig01 …, .sigma, fixed effects).

        ``method``: "percentile" (boot's ``norm.inter`` order statistics, lme4's default
        ``boot.type="perc"``), "basic" (2θ̂ − the percentile limits) or "norm" (θ̂ − bias
        ± z·sd).  Failed replicates (NaN) are left out, with a warning that counts them.
        """
        level = check_level(level)
        method = {"perc": "percentile"}.get(method, method)
        if method not in ("percentile", "basic", "norm"):
            raise ValueError(f"method must be 'percentile', 'basic' or 'norm', got {method!r}")
        a = (1 - level) / 2
        cols = [f"{100 * a:.3g} %", f"{100 * (1 - a):.3g} %"]
        if self.n_failed:
            warnings.warn(f"{self.n_failed} of {self.nsim} bootstrap replicates failed "
                          "and are left out of the intervals", RuntimeWarning, stacklevel=2)
        rows = []
        for name in self.t.columns:
            v = self.t[name].to_numpy()
            v = v[np.isfinite(v)]
            t0 = self.t0[name]
            if len(v) < 2:
                rows.append([np.nan, np.nan])
            elif method == "percentile":
                rows.append(list(_norm_inter(v, np.array([a, 1 - a]))))
            elif method == "basic":
                lo, hi = _norm_inter(v, np.array([1 - a, a]))
                rows.append([2 * t0 - lo, 2 * t0 - hi])
            else:
                z = stats.norm.ppf(1 - a)
                c, s = 2 * t0 - v.mean(), v.std(ddof=1)
                rows.append([c - z * s, c + z * s])
        return pd.DataFrame(rows, index=self.t.columns, columns=cols)

    def plot(self, path, **kw):
        """Histograms with density estimates of the replicates (see :func:`pylmem.inference.plots.plot_bootstrap`)."""
        return plot_bootstrap(self, path, **kw)

    def __repr__(self) -> str:
        head = (f"Parametric bootstrap of {self.fit.formula} ({'REML' if self.fit.reml else 'ML'}): "
                f"{self.nsim} replicates in {self.seconds:.2f} s, {self.n_singular} singular, "
                f"{self.n_unconverged} unconverged, {self.n_failed} failed")
        return head + "\n" + self.summary_frame().to_string(float_format=lambda x: f"{x:.6g}")


# ------------------------------------------------------------------------------ bootstrap
class _BootProgress:
    """'bootstrap: 3000/10000 replicates (1.2 s)' on stderr (see :class:`pylmem.util.progress.Progress`)."""

    def __init__(self, verbose, label):
        self.p = Progress(verbose=verbose, label=label)

    def update(self, done, total):
        p = self.p
        if not p.enabled:
            return
        now = time.perf_counter() - p.t0
        if now < p.delay:
            return
        p.shown = True
        p.stream.write(f"\r{p.label}: {done}/{total} replicates ({now:.1f} s)")
        p.stream.flush()

    def close(self):
        self.p.close()


def _run(fits, nsim, seed, use_u, verbose, label="bootstrap"):
    """Simulate from fits[0] and refit every fit in ``fits`` to each response."""
    for f in fits:
        require_rows(f.design, f"{label}()")
        reject_weighted(f, "the parametric bootstrap")
    nsim = _check_nsim(nsim)
    src = fits[0]
    engines = [_Engine(f, f.reml) for f in fits]
    outs = [[np.full((nsim, len(lambda_theta(f))), np.nan), np.full((nsim, f.design.n_fixef), np.nan),
             np.full(nsim, np.nan), np.full(nsim, np.nan), np.array(["failed"] * nsim, dtype=object)]
            for f in fits]
    prog = _BootProgress(verbose, label)
    with _one_blas_thread():
        _run_blocks(fits, engines, outs, src, nsim, seed, use_u, prog)
    prog.close()
    return outs


def _one_blas_thread():
    """Small LAPACK calls (the one-by-one refits) run ~100× slower when OpenBLAS hands them
    to a thread pool on a busy machine: one BLAS thread for the whole run."""
    return single_thread()


def _run_blocks(fits, engines, outs, src, nsim, seed, use_u, prog):
    for s, Y in _simulate_blocks(src, nsim, seed, use_u):
        Yd = None
        for f, eng, out in zip(fits, engines, outs):
            if f is src:
                Ym = Y
            else:
                if Yd is None:
                    Yd = np.empty_like(Y)
                    Yd[:, src.design.order] = Y
                Ym = Yd[:, f.design.order]
            res = eng.run_block(Ym)
            for o, r in zip(out, res):
                o[s:s + Y.shape[0]] = r
        prog.update(s + Y.shape[0], nsim)


def bootstrap(fit, nsim: int, seed=None, *, use_u: bool = False, verbose=None) -> BootstrapResult:
    """Parametric bootstrap (lme4's ``bootMer``): ``nsim`` responses simulated from ``fit``
    (:func:`simulate`), each refitted by the fit's criterion (ML or REML).

    Parameters
    ----------
    fit : LmerFit
        An unweighted fit.
    nsim : int
        Number of replicates.
    seed : int, numpy Generator or None
        The random source.
    use_u : bool, default False
        Simulate with b at its conditional modes (lme4's ``use.u``).
    verbose : bool or None
        Progress line (None: on a terminal, for runs over ~2 s).

    Returns
    -------
    BootstrapResult
        The replicates' estimates (``t``), the fit's (``t0``), statuses and ``confint()``.
    """
    t0 = time.perf_counter()
    (theta, beta, sigma, obj, status), = _run([fit], nsim, seed, use_u, verbose)
    res = BootstrapResult(fit, theta, beta, sigma, obj, status, seed=seed,
                          seconds=time.perf_counter() - t0)
    if res.n_failed:
        warnings.warn(f"bootstrap: {res.n_failed} of {nsim} replicates failed "
                      "(status 'failed', NaN rows)", RuntimeWarning, stacklevel=2)
    if res.n_unconverged:
        warnings.warn(f"bootstrap: {res.n_unconverged} of {nsim} replicates did not pass the "
                      "convergence check (status 'unconverged', estimates kept)",
                      RuntimeWarning, stacklevel=2)
    return res


# ------------------------------------------------------------------------------ PB test
class PBTest:
    """pbkrtest's ``PBmodcomp`` result: ``test`` (LRT, PBtest, Gamma, Bartlett, F rows),
    ``ref`` (the simulated LRT statistics), counts and times."""

    def __init__(self, test, ref, n_failed, n_singular, seconds, names, n_unconverged=0):
        self.test = test
        self.n_unconverged = n_unconverged
        self.ref = ref
        self.n_failed = n_failed
        self.n_singular = n_singular
        self.seconds = seconds
        self.names = names

    @property
    def p_value(self) -> float:
        """The parametric-bootstrap p-value."""
        return float(self.test.loc["PBtest", "p.value"])

    def __repr__(self) -> str:
        npos = int((self.ref > 0).sum())
        lines = [f"Bootstrap test; time: {self.seconds:.2f} sec; samples: {len(self.ref)}; "
                 f"extremes: {int((self.ref > self.test.loc['LRT', 'stat']).sum())} "
                 f"(positive: {npos}; failed: {self.n_failed}, unconverged: {self.n_unconverged}, "
                 f"singular fits: {self.n_singular})",
                 f"large : {self.names[1]}", f"small : {self.names[0]}",
                 self.test.to_string(float_format=lambda x: f"{x:.5g}", na_rep="")]
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # notebooks: the printed layout too
        import html

        return "<pre>" + html.escape(repr(self)) + "</pre>"


def pb_anova(m0, m1, nsim: int = 1000, seed=None, *, verbose=None) -> PBTest:
    """Parametric-bootstrap likelihood-ratio test of the smaller model ``m0`` against ``m1``
    (pbkrtest's ``PBmodcomp``).

    Both models are (re)fitted by ML; responses are simulated from m0 and both models
    refitted to each; LRT* = 2(ℓ1* − ℓ0*).  p_PB = (1 + #{LRT* > LRT}) / (1 + #{LRT* > 0});
    also the χ² p-value, the Bartlett-corrected χ², the moment-matched Gamma and the F
    approximation (pbkrtest's summary).

    Parameters
    ----------
    m0, m1 : LmerFit
        The smaller and the larger model, fitted to the same data.
    nsim : int, default 1000
        Number of simulated responses.
    seed : int, numpy Generator or None
        The random source.
    verbose : bool or None
        Progress line (None: on a terminal, for runs over ~2 s).

    Returns
    -------
    PBTest
        ``test`` (LRT, PBtest, Gamma, Bartlett, F rows), ``p_value``, the reference
        distribution ``ref`` and the replicates' statuses.
    """
    check_same_data([m0, m1], "pb_anova")
    why = nesting_problem(m0, m1)
    if why:
        raise ValueError(f"pb_anova: m0 is not nested in m1 ({why}): the bootstrap "
                         "likelihood-ratio test compares nested models only")
    if m0.n_params >= m1.n_params:
        raise ValueError(f"pb_anova: m0 must be the smaller model ({m0.n_params} parameters, "
                         f"m1 has {m1.n_params})")
    t0 = time.perf_counter()
    m0 = m0.refit(reml=False) if m0.reml else m0
    m1 = m1.refit(reml=False) if m1.reml else m1
    tobs = max(m0.objective - m1.objective, 0.0)
    ndf = m1.n_params - m0.n_params
    o0, o1 = _run([m0, m1], nsim, seed, False, verbose, label="pb_anova")
    ref = o0[3] - o1[3]
    failed = (o0[4] == "failed") | (o1[4] == "failed")
    singular = (o0[4] == "singular") | (o1[4] == "singular")
    ref = ref[~failed]
    pos = ref[ref > 0]
    EE, VV = pos.mean(), pos.var(ddof=1)
    n_ext = int((pos > tobs).sum())
    p_pb = (1 + n_ext) / (1 + len(pos))
    bc = ndf * tobs / EE
    scale, shape = VV / EE, EE ** 2 / VV
    ddf = 2 * EE / (EE - 1)
    fobs = tobs / ndf
    test = pd.DataFrame(
        [[tobs, ndf, np.nan, stats.chi2.sf(tobs, ndf)],
         [tobs, np.nan, np.nan, p_pb],
         [tobs, np.nan, np.nan, stats.gamma.sf(tobs, shape, scale=scale)],
         [bc, ndf, np.nan, stats.chi2.sf(bc, ndf)],
         [fobs, ndf, ddf, stats.f.sf(fobs, ndf, ddf) if ddf > 0 else np.nan]],
        index=["LRT", "PBtest", "Gamma", "Bartlett", "F"], columns=["stat", "df", "ddf", "p.value"])
    if failed.any():
        warnings.warn(f"pb_anova: {int(failed.sum())} of {nsim} replicates failed "
                      "and are left out", RuntimeWarning, stacklevel=2)
    unconv = (o0[4] == "unconverged") | (o1[4] == "unconverged")
    return PBTest(test, ref, int(failed.sum()), int(singular.sum()), time.perf_counter() - t0,
                  (m0.formula, m1.formula), n_unconverged=int(unconv.sum()))
