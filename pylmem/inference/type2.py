"""Type II hypotheses of the fixed-effects terms (lmerTest's ``anova(fit, type = 2)``).

Marginality: a term is tested adjusted for every term that does not contain it, and not
for the terms that contain it (``A`` is not adjusted for ``A:B``; ``A:B`` is adjusted for
``A`` and ``B``).  "Contains" is lmerTest's ``term_contain``: the term's variables are a
strict subset of the other term's, with the same numeric variables (so ``A`` is contained
in ``A:B`` but not in ``A:x`` for a numeric ``x``).

As lmerTest's ``get_contrasts_type2_unfolded``:

* a term contained in no other term is tested on its own coefficients (rows of the
  identity, the marginal test);
* otherwise the columns of X are reordered as [terms unrelated to it, the term, the terms
  containing it], X'X = L D L' (Doolittle, unit lower L) is formed in that order, and the
  term's hypothesis is its rows of L' (entries below 10⁻⁶ zeroed, as lmerTest's
  ``doolittle``), columns put back in X's order.

The functions here take the design matrix and the terms, so that :mod:`.ftests` (which
owns the terms) can call them without an import cycle.
"""
from __future__ import annotations

import numpy as np


def doolittle_lt(XtX: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """L' of X'X = L D L' (L unit lower triangular), entries with |·| < ``eps`` zeroed."""
    R = np.linalg.cholesky(XtX).T                 # X'X = R'R, R = D^{1/2} L'
    Lt = R / np.diag(R)[:, None]
    Lt[np.abs(Lt) < eps] = 0.0
    return Lt


def contrasts_type2(X: np.ndarray, terms: list, contains) -> dict:
    """Type II hypothesis matrices, one per term: ``{label: L}`` with L of shape (k, p).

    Parameters
    ----------
    X : ndarray (n, p)
        The fixed-effects model matrix (the fit's columns, rank-deficient ones dropped).
    terms : list
        The fixed-effects terms (intercept excluded), each with ``label`` and ``cols``
        (indices of its columns in X).
    contains : callable
        ``contains(a, b)``: term ``a`` is contained in term ``b`` (lmerTest's
        ``term_contain``).

    Returns
    -------
    dict
        Term label → hypothesis matrix (rows of the identity for a term no other term
        contains; rows of the reordered Doolittle factor otherwise).
    """
    X = np.asarray(X, float)
    p = X.shape[1]
    eye = np.eye(p)
    XtX = X.T @ X
    out = {}
    for t in terms:
        cont = [u for u in terms if u is not t and contains(t, u)]
        if not cont:
            out[t.label] = eye[list(t.cols)]
            continue
        last = list(t.cols) + [c for u in cont for c in u.cols]
        seen = set(last)
        perm = [j for j in range(p) if j not in seen] + last
        Lt = doolittle_lt(XtX[np.ix_(perm, perm)])
        start = p - len(last)
        C = np.zeros((len(t.cols), p))
        C[:, perm] = Lt[start:start + len(t.cols)]
        out[t.label] = C
    return out
