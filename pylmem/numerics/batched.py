"""Batched kernels for stacks of small matrices (G matrices of q × q, q small).

numpy's ``linalg`` gufuncs call LAPACK once per matrix, which costs about a
microsecond each and dominates for 10^5 groups of 3 × 3 blocks.  These kernels loop
over the q columns (a handful) and do the arithmetic for all G matrices at once, on
the "structure of arrays" layout (q, q, G); ``solve_lower``/``solve_lower_t`` accept the
(G, q, q) layout as views of the same kernels.
"""
from __future__ import annotations

import numpy as np


def solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L X = B for stacks: L (G, q, q) lower triangular, B (G, q, r)."""
    return solve_lower_soa(L.transpose(1, 2, 0), B.transpose(1, 2, 0)).transpose(2, 0, 1)


def solve_lower_t(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L' X = B for stacks: L (G, q, q) lower triangular, B (G, q, r)."""
    return solve_lower_t_soa(L.transpose(1, 2, 0), B.transpose(1, 2, 0)).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------
# "Structure of arrays" layout: a stack of G small matrices stored as (q, q, G), so that each
# entry is one contiguous vector over the groups and every step below is a vector operation.


def cholesky_soa(A: np.ndarray, out=None) -> np.ndarray:
    """Lower Cholesky factors of a (q, q, G) stack; raises LinAlgError if not PD.

    ``out``: a buffer of A's shape whose strict upper triangle is 0 (reused across calls).
    """
    q = A.shape[0]
    L = np.zeros_like(A) if out is None else out
    s = np.empty(A.shape[2:])        # Σ_k of the products, accumulated in order (as .sum(0))
    tmp = np.empty(A.shape[2:])
    inv = np.empty(A.shape[2:])

    def dot(i, j):                   # Σ_{k<j} L[i, k] L[j, k] into s
        np.multiply(L[i, 0], L[j, 0], out=s)
        for k in range(1, j):
            np.multiply(L[i, k], L[j, k], out=tmp)
            np.add(s, tmp, out=s)
        return s

    for j in range(q):
        ljj = L[j, j]
        if j:
            np.subtract(A[j, j], dot(j, j), out=ljj)
        else:
            ljj[...] = A[j, j]
        if not np.all(ljj > 0):
            raise np.linalg.LinAlgError("matrix not positive definite")
        np.sqrt(ljj, out=ljj)
        np.divide(1.0, ljj, out=inv)
        for i in range(j + 1, q):
            lij = L[i, j]
            if j:
                np.subtract(A[i, j], dot(i, j), out=lij)
            else:
                lij[...] = A[i, j]
            lij *= inv
    return L


def solve_lower_soa(L: np.ndarray, B: np.ndarray, out=None) -> np.ndarray:
    """Solve L X = B for (q, q, G) lower-triangular L and (q, r, G) B (into ``out``)."""
    q = L.shape[0]
    X = np.empty(B.shape) if out is None else out
    tmp = np.empty(B.shape[1:])      # one product buffer: no temporary array per step
    for i in range(q):
        acc = X[i]
        acc[...] = B[i]
        for k in range(i):
            np.multiply(L[i, k], X[k], out=tmp)
            acc -= tmp
        np.divide(acc, L[i, i], out=acc)
    return X


def solve_lower_t_soa(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L' X = B for (q, q, G) lower-triangular L and (q, r, G) B."""
    q = L.shape[0]
    X = np.empty(B.shape)
    tmp = np.empty(B.shape[1:])
    for i in range(q - 1, -1, -1):
        acc = X[i]
        acc[...] = B[i]
        for k in range(i + 1, q):
            np.multiply(L[k, i], X[k], out=tmp)
            acc -= tmp
        np.divide(acc, L[i, i], out=acc)
    return X


def left_mul_soa(M: np.ndarray, S: np.ndarray) -> np.ndarray:
    """M S_g for every g: M (a, q) fixed, S (q, r, G) -> (a, r, G).

    einsum's small-contraction loop beats a (a × q)(q × rG) GEMM here by ~10×.
    """
    return np.einsum("aj,jrg->arg", M, S)


def spd_inverse_soa(A: np.ndarray, rtol: float = 1e-6):
    """Inverses of a (q, q, G) stack of symmetric PSD matrices, and which are well posed.

    Returns ``(ok, inv)``: ``ok`` (G,) is True where every diagonal entry is positive and
    det(A) > ``rtol`` · Π diag(A) (the determinant of the unit-diagonal scaled matrix, from the
    pivots of its Cholesky factor); ``inv`` (q, q, G) holds A⁻¹ there (and finite garbage
    elsewhere).  Never raises: a non-positive pivot marks the matrix and is replaced by 1.
    """
    q = A.shape[0]
    idx = np.arange(q)
    d = A[idx, idx]                                        # (q, G)
    ok = np.all(d > 0, axis=0)
    s = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    As = A * s[:, None] * s[None, :]
    L = np.zeros_like(As)
    for j in range(q):
        dj = As[j, j] - (L[j, :j] ** 2).sum(axis=0) if j else As[j, j].copy()
        ok &= dj > 0
        ljj = np.sqrt(np.where(dj > 0, dj, 1.0))
        L[j, j] = ljj
        for i in range(j + 1, q):
            acc = As[i, j] - (L[i, :j] * L[j, :j]).sum(axis=0) if j else As[i, j]
            L[i, j] = acc / ljj
    ok &= np.prod(L[idx, idx] ** 2, axis=0) > rtol
    Linv = solve_lower_soa(L, np.broadcast_to(np.eye(q)[:, :, None], A.shape))
    inv = np.einsum("kig,kjg->ijg", Linv, Linv)            # (L L')⁻¹ = L⁻ᵀ L⁻¹
    return ok, inv * s[:, None] * s[None, :]
