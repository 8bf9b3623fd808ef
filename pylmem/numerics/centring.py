"""The numerically stable coordinates of the profiled deviance (internal; θ, β, R_X and L_W
stay the user's).

With an intercept column in X, W = [X y] is replaced by W̃ = W M_W, M_W = I − e_i m' (m the
column means, i the intercept column), and when the first term has an intercept, its Z by
Z̃ = Z M_Z, M_Z = I − e_0 c' (c the means of its columns), T̃ = M_Z⁻¹ T (so Z̃T̃ = ZT and the
factor L is unchanged).  The deviance is invariant; L_W = M_W^{-T} L̃_W stays lower
triangular (M_W is unit upper triangular), C = C̃ M_W⁻¹.  Formed uncentred, y = 10⁶ + noise
loses 4 digits of the penalised residual sum of squares.

The centred sums themselves are formed from centred rows by
:mod:`pylmem.numerics.crossprod`; this module reads the shifts off them, moves the
statistics into W̃ / Z̃ coordinates and maps θ ↔ θ̃ and products back.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..model.covariance import lower_from_theta, theta_from_lower


class Centring:
    """M_W (``icol``, ``m``) and M_Z (``MZ``, ``MZinv``, ``zc``) of one model's cross-products.

    Parameters
    ----------
    cp : CrossProducts
        The model's statistics in the user's coordinates.
    qs : sequence of int
        The number of columns of each random-effects term.

    Attributes
    ----------
    cp : CrossProducts
        The statistics in W̃ coordinates (W'W centred, Z'W moved to W̃).
    icol, m : int or None, array or None
        The intercept column of X and the column means of W (None without centring).
    MZ, MZinv, zc : arrays or None
        M_Z, its inverse and the first term's column means c (None when the first term has
        no intercept, or its other columns have mean 0).
    """

    def __init__(self, cp, qs):
        self.cp_data = cp
        self.q0 = int(qs[0])
        cen = cp.centred()
        self.icol = self.m = None
        self.cp = cp
        if cen is not None and np.any(cen[1] != 0):
            icol, m, WtWc = cen
            self.icol, self.m = icol, np.asarray(m, float)
            terms = [replace(t, ZtW=self.to_w(t.ZtW)) for t in cp.terms]
            self.cp = replace(cp, WtW=WtWc, terms=terms)
        self.MZ = self.MZinv = self.zc = None
        t0 = cp.terms[0]
        q0 = t0.ZtZ.shape[1]
        if getattr(t0, "intercept", False) and q0 > 1:
            if getattr(t0, "zshift", None) is not None:
                # the column means, exactly (a sum of partitions keeps its first part's shift):
                # the same coordinates whatever the partitioning
                c = np.array(t0.zshift, dtype=float)
                n0 = t0.ZtZc[:, 0, 0].sum()
                if n0 > 0:
                    c = c + t0.ZtZc[:, 0, :].sum(axis=0) / n0
            else:
                n0 = t0.ZtZ[:, 0, 0].sum()
                c = t0.ZtZ[:, 0, :].sum(axis=0) / n0 if n0 > 0 else np.zeros(q0)
            c[0] = 0.0
            self.zc = c
            if np.any(c != 0):
                self.MZ = np.eye(q0)
                self.MZ[0] -= c            # M_Z = I − e_0 c'
                self.MZinv = np.eye(q0)
                self.MZinv[0] += c         # M_Z⁻¹ = I + e_0 c'

    # ---------------------------------------------------------------- W ↔ W̃
    def to_w(self, A):
        """A M_W for A (..., r): W-coordinates to W̃."""
        if self.icol is None:
            return A
        return A - A[..., self.icol, None] * self.m

    def from_w(self, A):
        """A M_W⁻¹ (W̃-coordinates back to W)."""
        if self.icol is None:
            return A
        return A + A[..., self.icol, None] * self.m

    def from_w_soa(self, A):
        """A M_W⁻¹ for a (q, r, L) stack: one axpy per centred column."""
        if self.icol is None:
            return A
        out = A.copy()
        a0 = A[:, self.icol, :]
        for j in np.flatnonzero(self.m):
            out[:, j, :] += self.m[j] * a0
        return out

    # ---------------------------------------------------------------- the first term
    def first_term_products(self):
        """Per level of the first term, Z̃'Z̃ (L, q, q) and Z̃'W̃ (L, q, r)."""
        G0, ZW0 = self.cp.terms[0].ZtZ, self.cp.terms[0].ZtW
        t0 = self.cp_data.terms[0]
        if self.MZ is not None and getattr(t0, "ZtZc", None) is not None:
            # formed from centred rows (crossprod), moved exactly to this W̃'s shift
            m = self.m if self.icol is not None else np.zeros(self.cp.WtW.shape[0])
            G0, ZW0 = t0.centred_to(self.zc, m)
        elif self.MZ is not None:   # Z̃_0 = Z_0 M_Z: M_Z' G M_Z, M_Z' Z'W̃
            G0 = np.einsum("ji,gjk,kl->gil", self.MZ, G0, self.MZ)
            ZW0 = np.einsum("ji,gjr->gir", self.MZ, ZW0)
        return G0, ZW0

    def _first_term_map(self, theta, M) -> np.ndarray:
        """θ with the first term's T0 replaced by the lower factor of (M T0)(M T0)' (by QR)."""
        theta = np.array(theta, dtype=float)
        if M is None:
            return theta
        k = self.q0 * (self.q0 + 1) // 2
        T0 = M @ lower_from_theta(theta[:k], self.q0)
        R = np.linalg.qr(T0.T, mode="r")                # T0 = R'Q': R' is lower, R'R = T0 T0'
        R = R * np.where(np.diag(R) < 0, -1.0, 1.0)[:, None]
        theta[:k] = theta_from_lower(R.T)
        return theta

    def theta_to_centred(self, theta) -> np.ndarray:
        """θ (user's Z) -> θ̃ (centred Z̃ of the first term): T̃0 T̃0' = M_Z⁻¹ T0 T0' M_Z^{-T}."""
        return self._first_term_map(theta, self.MZinv)

    def theta_from_centred(self, theta_c) -> np.ndarray:
        """θ̃ -> θ: T0 T0' = M_Z T̃0 T̃0' M_Z'."""
        return self._first_term_map(theta_c, self.MZ)


def ols_coefficients(cp, ratio: float = 1e-3):
    """β̂ of the ordinary least-squares fit of y on X from centred cross-products, or None.

    From W̃'W̃ (``cp.centred()``: X's columns other than the intercept and y about their
    means), X̃'X̃ β̃ = X̃'ỹ is solved by a Cholesky factor of the unit-diagonal scaled
    X̃'X̃, and β = β̃ but for the intercept, β_i = β̃_i − m_X'β̃ + m_y (X̃β̃ = ỹ read back in X
    and y).  None (the caller fits by least squares on the rows) without centred statistics,
    or when a diagonal entry of the scaled factor is below ``ratio`` (conditioning where the
    normal equations lose digits that a QR keeps).
    """
    cen = cp.centred() if hasattr(cp, "centred") else None
    if cen is None:
        return None
    icol, m, WtWc = cen
    p = WtWc.shape[0] - 1
    A, b = WtWc[:p, :p], WtWc[:p, p]
    d = np.diag(A)
    if not (np.all(d > 0) and np.all(np.isfinite(WtWc))):
        return None
    sc = 1.0 / np.sqrt(d)
    try:
        L = np.linalg.cholesky(A * sc[:, None] * sc[None, :])
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.diag(L) > ratio):
        return None
    z = np.linalg.solve(L, b * sc)
    beta = np.linalg.solve(L.T, z) * sc
    mx = np.asarray(m[:p], float)
    beta[icol] += m[p] - mx @ beta    # m[icol] = 0: the intercept is not in mx @ beta
    return beta
