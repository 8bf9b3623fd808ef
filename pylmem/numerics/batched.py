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


def cholesky_soa(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a (q, q, G) stack; raises LinAlgError if not PD."""
    q = A.shape[0]
    L = np.zeros_like(A)
    for j in range(q):
        d = A[j, j] - (L[j, :j] ** 2).sum(axis=0) if j else A[j, j]
        if not np.all(d > 0):
            raise np.linalg.LinAlgError("matrix not positive definite")
        ljj = np.sqrt(d)
        L[j, j] = ljj
        inv = 1.0 / ljj
        for i in range(j + 1, q):
            acc = A[i, j] - (L[i, :j] * L[j, :j]).sum(axis=0) if j else A[i, j]
            L[i, j] = acc * inv
    return L


def solve_lower_soa(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L X = B for (q, q, G) lower-triangular L and (q, r, G) B."""
    q = L.shape[0]
    X = np.empty(B.shape)
    for i in range(q):
        acc = B[i].copy()
        for k in range(i):
            acc -= L[i, k] * X[k]
        X[i] = acc / L[i, i]
    return X


def solve_lower_t_soa(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L' X = B for (q, q, G) lower-triangular L and (q, r, G) B."""
    q = L.shape[0]
    X = np.empty(B.shape)
    for i in range(q - 1, -1, -1):
        acc = B[i].copy()
        for k in range(i + 1, q):
            acc -= L[k, i] * X[k]
        X[i] = acc / L[i, i]
    return X


def left_mul_soa(M: np.ndarray, S: np.ndarray) -> np.ndarray:
    """M S_g for every g: M (a, q) fixed, S (q, r, G) -> (a, r, G).

    einsum's small-contraction loop beats a (a × q)(q × rG) GEMM here by ~10×.
    """
    return np.einsum("aj,jrg->arg", M, S)
