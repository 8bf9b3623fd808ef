"""``re_form`` naming part of a random-effects term, as lme4's ``predict``.

lme4 predicts with ``re.form = ~(1 | Subject)`` on a fit with ``(Days | Subject)`` by using
only the named columns of the term: the conditional modes of the intercept, the slope's
set to zero (the modes are not re-estimated).  So does :func:`partial_terms`: each bar of
``re_form`` is matched by its grouping factor to the model's terms, its expression's
formula terms (``1``, ``Days``, ``f``) pick the columns of those terms, and the prediction
is x'β̂ + Σ z_k'(m_k ∘ b̂_k) with m_k the picked columns.  A ``re_form`` whose bars are all
whole terms of the model is left to :func:`pylmem.postfit.newdata.selected_terms`.
"""
from __future__ import annotations

import numpy as np

from ..model.formula import parse_formula, translate_r
from .newdata import _population


def _formula_terms(expr: str) -> list[str]:
    """The formula terms of a right-hand side as formulaic names them (``1``, ``Days``)."""
    from formulaic import Formula

    from ..model.matrices import formulaic_error

    try:
        return [str(t) for t in Formula(expr)]
    except Exception as e:  # noqa: BLE001 (formulaic's syntax errors)
        raise formulaic_error(e, expr) from None


def _term_key(key) -> str:
    s = str(key)
    return "1" if s in ("Intercept", "1") else s


class _PartialModes:
    """The fit seen through masked conditional modes (the unnamed columns set to 0)."""

    def __init__(self, fit, masks):
        self._fit = fit
        self.modes = [m * mask[None, :] for m, mask in zip(fit.modes, masks)]

    def __getattr__(self, name):
        return getattr(self._fit, name)


def partial_terms(fit, re_form):
    """``(fit_view, sel)`` when ``re_form`` names part of a random-effects term, else None.

    ``fit_view`` reads like the fit with the conditional modes of the columns ``re_form``
    does not name set to zero; ``sel`` are the indices of the terms with a named column.
    Raises ValueError for a bar whose grouping factor or terms the model does not have.
    """
    if re_form is None or re_form is True or _population(re_form) or not isinstance(re_form, str):
        return None
    text = re_form.strip()
    if not text.startswith("~"):
        return None
    try:
        parsed = parse_formula("..y.. " + text)
    except ValueError:
        return None
    terms = fit.design.terms
    want = [(tuple(s.group), " ".join(translate_r(s.expr)[0].split())) for s in parsed.random]
    whole = all(any(tuple(t.group) == g and " ".join(t.expr.split()) == e for t in terms)
                for g, e in want)
    if whole:
        return None
    masks = [np.zeros(t.q) for t in terms]
    for g, e in want:
        ks = [k for k, t in enumerate(terms) if tuple(t.group) == g]
        if not ks:
            raise ValueError(f"re_form term ({e} | {':'.join(g)}) is not a random-effects term "
                             f"of the model {fit.formula!r}")
        names = set(_formula_terms(e))
        hit = False
        for k in ks:
            t = terms[k]
            idx = getattr(t.spec, "term_indices", {}) or {}
            cols = {c for key, ii in idx.items() if _term_key(key) in names for c in ii}
            for j, c in enumerate(t.columns):
                if c in cols:
                    masks[k][j] = 1.0
                    hit = True
        if not hit:
            raise ValueError(f"re_form term ({e} | {':'.join(g)}) names no column of the model's "
                             f"random-effects terms for {':'.join(g)!r} in {fit.formula!r}")
    sel = [k for k, m in enumerate(masks) if m.any()]
    return _PartialModes(fit, masks), sel
