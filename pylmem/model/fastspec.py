"""Model matrices of sums of main effects and interactions of numeric and text columns,
built directly (formulaic's materializer costs ~8-30 ms a call whatever the rows, more than a
whole small fit); formulaic's own ModelSpec is formed only when a reader needs it.

:class:`FactorSpec` covers right-hand sides made of ``1``/``0``/``-1``, column names, ``:``
and ``*`` between names (``gender*week + gender*week2``, ``sex * age``, ``a:b + a + b``), on
numeric columns and text or categorical ones, when every text factor of every term is coded
by treatment contrasts: the term without that factor is in the model too (an intercept, or
the lower-order term), as in R's and formulaic's rule for a model with its main effects.
Anything else (functions, ``C()``, ``poly()``, parentheses, a term whose text factor would
get full dummy coding, ``0 +`` with a text factor, boolean columns) returns None from
:meth:`FactorSpec.detect` and goes to formulaic.

The matrix reproduces formulaic's exactly: its columns in formulaic's order (terms by
degree, stably in the order they appear once ``*`` is expanded; within a term the first
factor varies fastest), its names (``gender[T.Male]:week``), its levels (a categorical's
categories, else the sorted distinct values, the first as reference).  Readers that need
formulaic's spec (``encoder_state``, ``term_indices``, ``get_model_matrix`` on new data: type III
contrasts, ``ls_means``, ``predict``) get the one formulaic makes of a small frame holding every
level of the fit's data (``formulaic_spec``), checked to give the same columns.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .formula import split_sum
from .levels import factorizable

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")   # a Python name (as formulaic reads it)


def _kind(col: pd.Series):
    """"numeric", "text" (a text or categorical column; object columns of text are checked
    on their distinct values later) or None (booleans, mixed objects: formulaic's)."""
    dt = col.dtype
    if isinstance(dt, (pd.CategoricalDtype, pd.StringDtype)) or dt == object:
        return "text"
    if pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt):
        return "numeric"
    return None


def _codes_levels(col: pd.Series):
    """(codes, levels) of a text column as formulaic levels it: a categorical's categories,
    else the sorted distinct values (None if some value is not text or is missing)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = np.asarray(col.cat.codes, dtype=np.int64)
        levels = list(col.cat.categories)
        if not all(isinstance(v, str) for v in levels):
            return None
    else:
        try:
            codes, uniq = pd.factorize(factorizable(col), sort=True)
        except TypeError:
            return None
        levels = list(uniq)
        if not all(isinstance(v, str) for v in levels):
            return None
    if (codes < 0).any():
        return None
    return codes, levels


def _expand(expr: str):
    """(intercept, terms as tuples of names in written order) or None if unsupported."""
    intercept, terms = True, []
    for sign, term in split_sum(expr):
        term = term.strip()
        if term == "1":
            intercept = sign == "+"
            continue
        if term == "0" and sign == "+":
            intercept = False
            continue
        if sign != "+":
            return None
        if "*" in term:
            names = [t.strip() for t in term.split("*")]
            if not all(_NAME.match(n) for n in names):
                return None
            # a*b*c: all non-empty products, by degree, each in written order
            k = len(names)
            subsets = []
            for mask in range(1, 2 ** k):
                subsets.append(tuple(names[i] for i in range(k) if mask >> i & 1))
            subsets.sort(key=lambda s: (len(s), [names.index(n) for n in s]))
            terms += subsets
        else:
            names = tuple(t.strip() for t in term.split(":"))
            if not all(_NAME.match(n) for n in names):
                return None
            terms.append(names)
    out, seen = [], {}
    for t in terms:
        if len(set(t)) != len(t):
            return None
        key = frozenset(t)
        if key in seen:
            if seen[key] != t:      # a:b and b:a: formulaic's spelling rules not mirrored
                return None
            continue
        seen[key] = t
        out.append(t)
    out.sort(key=len)               # by degree, stably
    return intercept, out


class FactorSpec:
    """Model spec of main effects and interactions of numeric and text columns (module
    docstring); offers what pylmem reads of formulaic's ModelSpec, formulaic's own spec
    formed on first use for the rest."""

    def __init__(self, expr, intercept, terms, kinds, levels, proto):
        self.expr = expr
        self.intercept = intercept
        self.terms = terms            # tuples of column names, formulaic's order
        self.kinds = kinds            # column -> "numeric" | "text"
        self.levels = levels          # text column -> levels (first: reference)
        self._proto = proto           # rows holding every level (for formulaic's spec), or
        #                               (data, columns, rows) to take them from
        self._formulaic = None

    # ------------------------------------------------------------------ detection
    @classmethod
    def variables(cls, expr: str, data: pd.DataFrame):
        """The columns ``expr`` reads if :meth:`detect` may take it (by the parse and the
        columns' types, not their values), else None."""
        parsed = _expand(expr)
        if parsed is None:
            return None
        cols = {n for t in parsed[1] for n in t}
        if not all(c in data.columns for c in cols):
            return None
        kinds = {c: _kind(data[c]) for c in cols}
        if None in kinds.values() or "text" not in kinds.values():
            return None
        return parsed, kinds

    @classmethod
    def detect(cls, expr: str, data: pd.DataFrame):
        """A FactorSpec for ``expr`` on ``data``, or None when formulaic is needed."""
        found = cls.variables(expr, data)
        if found is None:
            return None
        (intercept, terms), kinds = found
        levels, codes = {}, {}
        for c, k in kinds.items():
            if k == "text":
                cl = _codes_levels(data[c])
                if cl is None:
                    return None
                codes[c], levels[c] = cl
        present = {frozenset(t) for t in terms}
        if intercept:
            present.add(frozenset())
        for t in terms:               # treatment coding for every text factor of every term
            for c in t:
                if kinds[c] == "text" and frozenset(t) - {c} not in present:
                    return None
        # rows holding every level of every text column (the first row of each)
        idx = set()
        for c in levels:
            idx.update(np.unique(codes[c], return_index=True)[1].tolist())
        # formed only if formulaic's spec is asked for (keeps a reference to data till then)
        proto = (data, sorted(kinds, key=str), sorted(idx))
        spec = cls(expr, intercept, terms, kinds, levels, proto)
        spec._codes = codes           # the codes of ``data`` (used once by matrix())
        spec._n = len(data)
        return spec

    # ------------------------------------------------------------------ the matrix
    @property
    def names(self) -> list[str]:
        out = ["Intercept"] if self.intercept else []
        for t in self.terms:
            out += self._term_names(t)
        return out

    def _factor_labels(self, c):
        if self.kinds[c] == "numeric":
            return [c]
        return [f"{c}[T.{lev}]" for lev in self.levels[c][1:]]

    def _term_names(self, t):
        labels = [""]
        for c in t:                   # the first factor varies fastest
            labels = [f"{a}:{b}" if a else b for b in self._factor_labels(c) for a in labels]
        return labels

    def term_index_map(self) -> dict:
        """Formula term (``"a:u"``) -> the matrix columns it spans (``1`` the intercept)."""
        out, j = {}, 0
        if self.intercept:
            out["1"], j = [0], 1
        for t in self.terms:
            k = len(self._term_names(t))
            out[":".join(t)] = list(range(j, j + k))
            j += k
        return out

    def matrix(self, data: pd.DataFrame) -> np.ndarray:
        """The model matrix of ``data`` (the fit's data: every value one of the levels)."""
        n = len(data)
        blocks = [np.ones((n, 1))] if self.intercept else []
        cache = {}
        known = self.__dict__.pop("_codes", None) if self.__dict__.get("_n") == n else None
        for c in self.kinds:
            col = data[c]
            if self.kinds[c] == "numeric":
                cache[c] = col.to_numpy(dtype=float)[:, None]
            else:
                lev = self.levels[c]
                codes = known[c] if known is not None else pd.Categorical(col, categories=lev).codes
                if (codes < 0).any():
                    raise ValueError(f"column {c!r} has a value that is not one of its levels")
                D = np.zeros((n, len(lev) - 1))
                rows = np.flatnonzero(codes > 0)
                D[rows, codes[rows] - 1] = 1.0
                cache[c] = D
        for t in self.terms:
            M = cache[t[0]]
            for c in t[1:]:           # first factor fastest: column (i, j) = j * k0 + i
                F = cache[c]
                M = (M[:, None, :] * F[:, :, None]).reshape(n, -1)
            blocks.append(M)
        return np.hstack(blocks) if blocks else np.empty((n, 0))

    # ------------------------------------------------------------------ formulaic's parts
    def _prototype(self) -> pd.DataFrame:
        if isinstance(self._proto, tuple):
            data, cols, rows = self._proto
            self._proto = data[cols].iloc[rows].copy()
        return self._proto

    def formulaic_spec(self):
        """formulaic's ModelSpec of the same expression and levels (formed once)."""
        if self._formulaic is None:
            from formulaic import model_matrix

            mm = model_matrix(self.expr, self._prototype(), na_action="ignore", output="pandas")
            if list(mm.columns) != self.names:   # pragma: no cover - guarded by the tests
                raise RuntimeError(f"model matrix of {self.expr!r}: formulaic's columns "
                                   f"{list(mm.columns)} differ from {self.names}")
            self._formulaic = mm.model_spec
        return self._formulaic

    @property
    def required_variables(self) -> set:
        return set(self.kinds)

    @property
    def encoder_state(self) -> dict:
        return self.formulaic_spec().encoder_state

    @property
    def term_indices(self) -> dict:
        return self.formulaic_spec().term_indices

    def get_model_matrix(self, data, *args, **kwargs):
        return self.formulaic_spec().get_model_matrix(data, *args, **kwargs)

    def __getattr__(self, name):
        # any other attribute of formulaic's ModelSpec (formula, structure, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.formulaic_spec(), name)

    def __getstate__(self):
        self._prototype()             # the rows it needs, not the whole frame
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_formulaic", "_codes")} | {"_formulaic": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
