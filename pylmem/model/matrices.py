"""Model matrices of right-hand sides: formulaic's ModelSpec, or :class:`NumericSpec` for the
common case of an intercept and plain numeric columns (no formulaic parse, ~1 ms a call
saved); formulaic's errors as one-line messages naming the expression.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix

from .fastspec import FactorSpec
from .formula import clean_message, split_sum


class NumericSpec:
    """Model spec of an expression made of an intercept and plain numeric columns.

    Such expressions (``Days``, ``week + week2``, ``1``, ``0 + x``) are the common case of
    random-effects terms and simple fixed parts; building them directly skips formulaic's
    parse-and-materialise (about 1 ms a call).  Offers the parts of formulaic's ModelSpec
    that pylmem uses: ``get_model_matrix``, ``required_variables``, ``encoder_state``,
    ``term_indices``.
    """

    encoder_state: dict = {}

    def __init__(self, intercept: bool, columns: list[str]):
        self.intercept = intercept
        self.columns = list(columns)

    @property
    def names(self) -> list[str]:
        return (["Intercept"] if self.intercept else []) + self.columns

    @property
    def required_variables(self) -> set:
        return set(self.columns)

    @property
    def term_indices(self) -> dict:
        return {name: [i] for i, name in enumerate(self.names)}

    def get_model_matrix(self, data: pd.DataFrame, output: str = "pandas", **_) -> pd.DataFrame:
        missing = [c for c in self.columns if c not in data.columns]
        if missing:
            raise ValueError(f"column(s) {', '.join(map(repr, missing))} not found in the data")
        cols = {"Intercept": np.ones(len(data))} if self.intercept else {}
        for c in self.columns:
            cols[c] = pd.to_numeric(data[c]).to_numpy(dtype=float)
        return pd.DataFrame(cols, index=data.index, columns=self.names)

    @classmethod
    def detect(cls, expr: str, data: pd.DataFrame):
        """A NumericSpec for ``expr`` if it is only ``1``/``0``/``-1`` and numeric columns."""
        intercept, cols = True, []
        for sign, term in split_sum(expr):
            if term == "1":
                intercept = sign == "+"
            elif term == "0" and sign == "+":
                intercept = False
            elif (sign == "+" and term in data.columns and term not in cols
                  and pd.api.types.is_numeric_dtype(data[term])
                  and not pd.api.types.is_bool_dtype(data[term])):
                cols.append(term)
            else:
                return None
        return cls(intercept, cols)


def formulaic_error(e: Exception, expr: str) -> ValueError:
    """formulaic's exception as a one-line ValueError naming the expression."""
    return ValueError(f"cannot use the model terms '{expr}': {type(e).__name__}: {clean_message(e)}")


def required_variables(expr: str, data: pd.DataFrame) -> set:
    """Data columns an expression uses (formulaic's parse, skipped for plain numeric ones)."""
    spec = NumericSpec.detect(expr, data)
    if spec is not None:
        return spec.required_variables
    fs = FactorSpec.variables(expr, data)
    if fs is not None:
        return set(fs[1])
    try:
        out = set(Formula(expr).required_variables)
    except Exception as e:  # formulaic's syntax errors carry colour codes and markers
        raise formulaic_error(e, expr) from None
    # formulaic leaves out the arguments of some transforms (``poly(x, 2)``): add the data
    # columns named as variables (not called as functions) in the expression
    import re

    for c in data.columns:
        if isinstance(c, str) and c not in out and \
                re.search(rf"(?<![\w.`]){re.escape(c)}(?![\w.`(])", expr):
            out.add(c)
    return out


def build_matrix(expr: str, data: pd.DataFrame):
    """(matrix, formulaic-style column names, spec, term_indices) of a right-hand side."""
    spec = NumericSpec.detect(expr, data)
    if spec is not None:
        M = np.empty((len(data), len(spec.names)))
        if spec.intercept:
            M[:, 0] = 1.0
        for j, c in enumerate(spec.columns, start=int(spec.intercept)):
            M[:, j] = data[c].to_numpy(dtype=float)
        return M, spec.names, spec, spec.term_indices
    fspec = FactorSpec.detect(expr, data)   # text factors and interactions, without formulaic
    if fspec is not None:
        return fspec.matrix(data), fspec.names, fspec, fspec.term_index_map()
    try:
        mm = model_matrix(expr, data, na_action="ignore", output="pandas")
    except Exception as e:
        raise formulaic_error(e, expr) from None
    return (np.asarray(mm.to_numpy(dtype=float)), list(mm.columns), mm.model_spec,
            mm.model_spec.term_indices)


def clearly_full_rank(X: np.ndarray, centre_after=None, ratio: float = 1e-3) -> bool:
    """True when X (n × p) has full column rank by a wide margin, judged from its Gram matrix.

    The rank check of the fixed effects (an unpivoted QR of X, columns after the intercept
    ``centre_after`` centred) keeps column j when |R_jj| > 1e-7 ‖x_j‖.  R'R is the Gram
    matrix, so the Cholesky factor of the Gram matrix scaled to unit diagonal has the
    ratios |R_jj| / ‖x_j‖ on its diagonal.  Formed from X'X (one GEMM, ~10x cheaper than the
    QR), they carry an error of about p·ε·(1 + mean²/var); when every ratio exceeds
    ``ratio`` (far above 1e-7 and that error) the QR would keep every column, and True is
    returned.  False means "not sure": the caller does the QR.

    Parameters
    ----------
    X : ndarray
        The model matrix.
    centre_after : int or None
        Index of the intercept column: the columns after it are judged centred.
    ratio : float
        The margin on |R_jj| / ‖x_j‖.
    """
    n, p = X.shape
    if p == 0 or n < p:
        return p == 0
    G = X.T @ X
    if centre_after is not None:
        s = np.ones(n) @ X
        k = centre_after + 1
        raw = np.diag(G)[k:].copy()
        G[k:, :] -= np.outer(s[k:] / n, s)
        G[:, k:] -= np.outer(s, s[k:] / n)
        G[k:, k:] += np.outer(s[k:], s[k:]) / n
        cen = np.diag(G)[k:]
        # the cancellation of X'X − n m m' loses a factor raw/cen of the digits
        if np.any(~(cen > 1e-4 * raw)):
            return False
    d = np.diag(G)
    if not np.all(d > 0) or not np.all(np.isfinite(G)):
        return False
    sc = 1.0 / np.sqrt(d)
    try:
        L = np.linalg.cholesky(G * sc[:, None] * sc[None, :])
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.diag(L) > ratio))
