"""Analytic gradient of the profiled deviance for several random-effects terms.

With D_k = T_k T_k' and V = I + Σ_k Z_k (I ⊗ D_k) Z_k' (relative), for each term k

    ∂d/∂D_k = Σ_l [Z'V⁻¹Z]_{kl,kl} − (ν/r²) Σ_l g_kl g_kl' [− Σ_l K_kl K_kl' for REML],

g = Z'V⁻¹(y − Xβ̂), K = Z'V⁻¹X R_X⁻ᵀ, ν = n (ML) or n − p (REML), and ∂d/∂T_k = 2 (∂d/∂D_k) T_k
on the lower triangle.  Everything comes from Φ = L⁻¹Λ'Z'Z (Z'V⁻¹Z = Z'Z − Φ'Φ) and
L⁻¹Λ'Z'W = [C0; C_R], with the blocked factor of :mod:`pylmem.numerics.deviance`:

* first term, level j: Φ_{0j} = [H_j = L0_j⁻¹T0'G_j ; L_R⁻¹ Λ_R'A_j (I − N_j H_j)],
  N_j = T0 L0_j⁻ᵀ, A_j = Z_R'Z_0j;
* rest columns: Φ_R = [L0⁻¹T0'A' ; L_R⁻¹ Λ_R' X], X = Z_R'Z_R − Σ_j A_j N_j N_j' A_j' the
  Schur complement before the Λ_R sandwich, whose first part's diagonal blocks sum with
  X's own to Σ_l X_{kl,kl}.

Only the sums over levels are needed.  Costs O(m² L0 q0 + m³) on top of an evaluation, so
it is offered only when the rest block is dense and small (:func:`supported`).

Not used by the optimiser by default (``ENABLED = False``): measured on the benchmarks' multi-term designs
and the test designs, L-BFGS-B with this gradient needs 3-6× fewer evaluations than BOBYQA
but each costs ~3-5× an evaluation (CPU within ±20%), and on a small 3-level design
(tests/test_sparse_factor.py's ``(1 | c/e/a)``) it stopped on the boundary 0.32 deviance
units above BOBYQA's optimum (probing the zero coordinate alone does not escape).  With
``ENABLED = True`` ``ProfiledDeviance.has_gradient`` turns on for such models.  On the BLAS-3
rest block (:mod:`pylmem.numerics.rest_block`, ``backend="blas"``) with m > ``MIN_M_BLAS``
it is on by default: there an evaluation already costs one ``dsyrk`` of m² L0 q0 / 2
multiply-adds and the gradient about as much again, while L-BFGS-B needs several times fewer
evaluations (crossed slopes on both factors, 1,000 × 500: 36 against 200, same optimum).
On the sparse path of a nested design, whose rest block is factorised in small dense blocks,
the gradient is :func:`pylmem.numerics.rest_blocks.gradient` (from the blocks' inverses).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from . import batched as B
from .rest_blocks import available as blocks_available
from .rest_blocks import gradient as blocks_gradient
from .rest_blocks import profiled_parts

MAX_M = 500                 # rest block size up to which the gradient is offered
MAX_A_DENSE = 10_000_000    # entries of the dense m × L0 q0 copy of A = Z_R'Z_0
MAX_M_BLAS = 4000           # the BLAS-3 path: rest block size up to which it is offered
MIN_M_BLAS = 400            # the BLAS-3 path: the optimiser uses it above this size


MIN_FLOPS_BLAS = 5e7        # the BLAS-3 path: or above this many multiply-adds per evaluation
BLOCKS_ENABLED = True       # the gradient on the dense blocks of a nested rest block


ENABLED = False
# the small dense path with this many θ or more: L-BFGS-B with the gradient
# (~1.5-5 evaluations each) needs 3-6x fewer evaluations than BOBYQA, the convergence
# check's Hessian costs k gradients instead of k(k+3)/2 evaluations, and BOBYQA stalls on
# many θ near a singular fit (kb07-shaped, 20 θ: 556 BOBYQA evaluations 0.09 short of the
# optimum, against 85 with the gradient).  Measured (CPU, same process, interleaved): three
# crossed terms with a slope (5 θ) 112 -> 61 ms, (1 | a) + (x | b) 71 -> 44 ms, three scalar
# terms 47 -> 33 ms; with two θ BOBYQA is as fast (Penicillin 14.6 ms against 15.6 ms with
# the gradient: 35 cheap evaluations against 15 dearer ones); same optimum to 1e-8.
MIN_THETA_DENSE = 3


def supported(rest) -> bool:
    """True when the rest block is dense and small enough for the gradient to be cheap: the
    small dense (K) path, or the BLAS-3 path (whose evaluation already costs one ``dsyrk``
    of the same size as the gradient's triangular solve) up to m = ``MAX_M_BLAS``; or the
    sparse path factorised in small dense blocks (nested designs, :mod:`pylmem.numerics.rest_blocks`)."""
    if rest is not None and getattr(rest, "blocks", None) is not None:
        return blocks_available(rest)
    if rest is None or rest.m * rest.L0 * rest.q0 > MAX_A_DENSE:
        return False
    if rest.backend == "blas":
        return rest.m <= MAX_M_BLAS
    return rest.backend == "dense" and rest.m <= MAX_M


def available(rest) -> bool:
    """Whether the optimiser is offered the gradient: on the BLAS-3 path with a rest block
    of more than ``MIN_M_BLAS`` rows or an evaluation of at least ``MIN_FLOPS_BLAS``
    multiply-adds (m² L0 q0: there L-BFGS-B with the gradient, ~2.5 evaluations each, needs
    several times fewer of them than BOBYQA: crossed slopes 2,000 × 200, 24 against 127);
    on the dense blocks of a nested design (a gradient costs ~1-2 evaluations there); on
    the small dense path (``MIN_THETA_DENSE``); or anywhere :func:`supported` with ``ENABLED``."""
    if not supported(rest):
        return False
    if getattr(rest, "blocks", None) is not None:
        return BLOCKS_ENABLED
    if rest.backend == "dense" and sum(q * (q + 1) // 2 for q in rest.qs) >= MIN_THETA_DENSE:
        return True
    return ENABLED or (rest.backend == "blas" and (
        rest.m > MIN_M_BLAS or float(rest.m) ** 2 * rest.L0 * rest.q0 >= MIN_FLOPS_BLAS))


def gradient(dev, f, centred: bool = False) -> np.ndarray:
    """∂d/∂θ at the factor ``f`` (computed with ``dev.rest.keep_pre`` set); ``centred``: ∂d/∂θ̃
    for the first term's centred coordinates (∂d/∂D̃ = M_Z' (∂d/∂D) M_Z, T̃0 = M_Z⁻¹ T0)."""
    rest = dev.rest
    if getattr(rest, "blocks", None) is not None:
        return blocks_gradient(dev, f, centred)
    T = f.T
    q0, G, m, r, p = dev.qs[0], dev.n_levels[0], dev.m, dev.r, dev.p
    T0 = T[0]
    L0s, C0s = f.L0s, f.C0s
    H = B.solve_lower_soa(L0s, f.TtG0)                                  # (q0, q0, G)
    # the user's coordinates (the deviance may work in centred ones: T̃0'G̃ = T0'G M_Z)
    if dev.centring.MZinv is not None:
        H = np.ascontiguousarray(np.einsum("uvg,vw->uwg", H, dev.centring.MZinv))
    st0 = dev.cp_data.terms[0]
    ZW0 = st0.ZtW                                                       # (G, q0, r)
    sum_ZtZ0 = st0.ZtZ.sum(axis=0)
    ZRtW = dev.centring.from_w(rest.ZRtW)
    Xs = B.solve_lower_soa(L0s, np.ascontiguousarray(np.broadcast_to(T0.T[:, :, None], L0s.shape)))
    N = Xs.transpose(2, 1, 0)                                           # (G, q0, q0) T0 L0⁻ᵀ
    Hg = H.transpose(2, 0, 1)                                           # (G, q0, q0)
    E = np.eye(q0)[None] - N @ Hg
    # (Λ_R'A E)' in rows (j, v): one batched product with A' (G, q0, m), then Λ_R in place
    AEt = np.matmul(E.transpose(0, 2, 1), rest.dense_At()).reshape(G * q0, m)
    rest.fold_lam(T, AEt)
    Lr = f.LRR.dense
    # bottom of Φ_0: Y = L_R⁻¹ Λ_R'A E, (m, G q0) in Fortran order = rows (j, v) of Yt
    Y = sla.solve_triangular(Lr, AEt.T, lower=True, check_finite=False, overwrite_b=True)
    Yt = Y.T                                                            # (G q0, m) C order
    Xpre = rest.last_pre
    Psi = f.LRR.solve_L(rest._lam_t_dense(T, Xpre))                      # bottom of Φ_R, (m, m)
    CR = f.CR
    # Z'V⁻¹W = Z'W − Φ'[C0; C_R]
    K0 = ZW0 - np.einsum("uvg,urg->gvr", H, C0s) \
        - (Yt @ CR).reshape(G, q0, r)                                  # (G, q0, r)
    Y3 = Yt.reshape(G, q0, m)
    YY = np.empty((q0, q0))
    for u in range(q0):
        for w in range(u, q0):
            YY[u, w] = YY[w, u] = np.einsum("gm,gm->", Y3[:, u], Y3[:, w])
    V = np.einsum("guv,vrg->gur", N, C0s).reshape(-1, r)
    KR = ZRtW - rest.A @ V - Psi.T @ CR                            # (m, r)
    g0, gR, c, KX0, KXR = profiled_parts(dev, f, K0, KR)
    reml_p = KX0 is not None
    parts = []
    # first term
    GD = sum_ZtZ0 - np.einsum("uvg,uwg->vw", H, H) - YY - c * g0.T @ g0
    if reml_p:
        GD = GD - np.einsum("gup,gvp->uv", KX0, KX0)
    MZ, MZinv = dev.centring.MZ, dev.centring.MZinv
    if centred and MZ is not None:
        parts.append((2.0 * (MZ.T @ GD @ MZ) @ (MZinv @ T0))[dev._tril[0]])
    else:
        parts.append((2.0 * GD @ T0)[dev._tril[0]])
    # rest terms
    for k in range(1, len(dev.qs)):
        a, b = rest.offsets[k - 1], rest.offsets[k]
        q, L = dev.qs[k], dev.n_levels[k]
        blk = Xpre[a:b, a:b].reshape(L, q, L, q)
        idx = np.arange(L)
        GD = blk[idx, :, idx, :].sum(axis=0)
        P = Psi[:, a:b].reshape(m, L, q)
        for u in range(q):
            for w in range(u, q):
                s_uw = np.einsum("ml,ml->", P[:, :, u], P[:, :, w])
                GD[u, w] -= s_uw
                if w != u:
                    GD[w, u] -= s_uw
        gk = gR[a:b].reshape(L, q)
        GD = GD - c * gk.T @ gk
        if reml_p:
            Kk = KXR[a:b].reshape(L, q, p)
            GD = GD - np.einsum("lup,lvp->uv", Kk, Kk)
        parts.append((2.0 * GD @ T[k])[dev._tril[k]])
    return np.concatenate(parts)
