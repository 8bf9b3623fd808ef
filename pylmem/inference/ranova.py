"""lmerTest's ``ranova`` (LRT for each random-effects term) and ``drop1`` (F tests for the
fixed-effects terms that can be dropped).

``ranova``: each term ``(1 | g)`` (or one without intercept) is removed, and each slope of a
term with an intercept, ``(x + z | g)``, is removed on its own ("x in (x + z | g)"); every
reduced model is refitted by the fit's criterion (REML or ML), a model without any
random effects being the linear model (REML: −½[(n−p)(1 + log(2π RSS/(n−p))) + log|X'X|]).
LRT = 2 (logLik − logLik_reduced) on the difference in parameters.

``drop1``: one F test (Satterthwaite or Kenward–Roger) per term that no other term contains
(the type III hypothesis of that term), lmerTest's "Single term deletions".
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..estimation.fitting import estimate
from ..util.deparse import deparse1
from ..util.lazy import stats
from ..util.rformat import anova_table_lines, format_real, zapsmall
from .ddf import contest_md, normalize_ddf
from .ftests import COLUMNS, FTestTable, contrasts_type3, fixed_terms

RANOVA_COLUMNS = ["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)"]


def _term_label(t, coefs=None) -> str:
    coefs = list(t.coef_names) if coefs is None else coefs
    g = ":".join(t.group)
    if coefs == ["(Intercept)"]:
        return f"(1 | {g})"
    if "(Intercept)" in coefs:
        return f"({' + '.join(c for c in coefs if c != '(Intercept)')} | {g})"
    return f"(0 + {' + '.join(coefs)} | {g})"


def _lm_loglik(X, y, reml: bool) -> float:
    n, p = X.shape
    if p:
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        rss = float(np.sum((y - X @ beta) ** 2))
    else:
        rss = float(y @ y)
    if not reml:
        return -0.5 * n * (1 + np.log(2 * np.pi * rss / n))
    nu = n - p
    logdet = np.linalg.slogdet(X.T @ X)[1] if p else 0.0
    return -0.5 * (nu * (1 + np.log(2 * np.pi * rss / nu)) + logdet)


def _reduced_fits(fit):
    """(label, reduced design or None for the linear model) for each reduction."""
    d = fit.design
    out = []
    for k, t in enumerate(d.terms):
        coefs = list(t.coef_names)
        if "(Intercept)" in coefs and len(coefs) > 1:
            for j, c in enumerate(coefs):
                if c == "(Intercept)":
                    continue
                keep = [i for i in range(len(coefs)) if i != j]
                nt = dataclasses.replace(t, Z=t.Z[:, keep], coef_names=[coefs[i] for i in keep],
                                         columns=[t.columns[i] for i in keep] if t.columns else [])
                if t.mask is not None:          # the seed's mask: its rows and columns kept
                    nt.mask = t.mask[np.ix_(keep, keep)]
                if nt.structure in ("cs", "hcs", "ar1", "har1") and len(keep) < 2:
                    nt.structure = "us"         # one column left: a variance, no structure
                terms = list(d.terms)
                terms[k] = nt
                out.append((f"{c} in {_term_label(t)}", terms))
        else:
            terms = [u for i, u in enumerate(d.terms) if i != k]
            out.append((_term_label(t), terms))
    return out


class RanovaTable(pd.DataFrame):
    """lmerTest's ranova table; ``str()`` prints it as R's print.anova does."""

    _metadata = ["heading"]

    @property
    def _constructor(self):
        return pd.DataFrame

    def __str__(self) -> str:
        x = self[RANOVA_COLUMNS].to_numpy(dtype=float)
        n = len(x)
        cols = {}
        for j, c in enumerate(RANOVA_COLUMNS[:-1]):
            v = x[:, j]
            s = format_real(v if c == "Df" else zapsmall(v, 5), 5)
            cols[c] = ["" if np.isnan(v[i]) else s[i].strip() for i in range(n)]
        lines = getattr(self, "heading", "").split("\n")
        lines += anova_table_lines(cols, x[:, -1], self.index, "Pr(>Chisq)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:  # notebooks: the R layout too
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"


def ranova(fit) -> pd.DataFrame:
    """lmerTest's ``ranova``: likelihood-ratio tests of the random-effects terms.

    Each term is reduced in turn (a term with slopes to its intercept, an intercept term
    removed), the reduced model refitted by the fit's criterion, and compared with the fit.

    Parameters
    ----------
    fit : LmerFit
        The full model.

    Returns
    -------
    RanovaTable
        npar, logLik, AIC, LRT, Df, Pr(>Chisq); the first row, ``<none>``, is the fit.
    """
    import warnings

    d = fit.design
    rows = [("<none>", fit.n_params, fit.loglik)]
    for label, terms in _reduced_fits(fit):
        if not terms:
            ll = _lm_loglik(d.X, d.y, fit.reml)
            npar = d.n_fixef + 1
        else:
            order = np.argsort([-t.n_levels for t in terms], kind="stable")
            terms = [terms[i] for i in order]
            nd = dataclasses.replace(d, terms=terms)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f2 = estimate(nd, reml=fit.reml, verbose=False, cls=type(fit))
            ll, npar = f2.loglik, f2.n_params
        rows.append((label, npar, ll))
    names = [r[0] for r in rows]
    npar = np.array([r[1] for r in rows], float)
    ll = np.array([r[2] for r in rows], float)
    lrt = np.r_[np.nan, 2 * (ll[0] - ll[1:])]
    df = np.r_[np.nan, npar[0] - npar[1:]]
    with np.errstate(invalid="ignore"):
        p = np.r_[np.nan, stats.chi2.sf(np.maximum(lrt[1:], 0), df[1:])]
    tab = pd.DataFrame({"npar": npar.astype(int), "logLik": ll, "AIC": -2 * ll + 2 * npar,
                        "LRT": lrt, "Df": df, "Pr(>Chisq)": p}, index=pd.Index(names))
    out = RanovaTable(tab)
    out.heading = ("ANOVA-like table for random-effects: Single term deletions\n\nModel:\n"
                   f"{deparse1(fit.formula)}")
    return out


def drop1(fit, ddf="Satterthwaite") -> FTestTable:
    """lmerTest's ``drop1``: F tests of the fixed-effects terms no other term contains.

    Parameters
    ----------
    fit : LmerFit
        The model.
    ddf : {"Satterthwaite", "Kenward-Roger"}, default "Satterthwaite"
        The denominator df.

    Returns
    -------
    FTestTable
        Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F) per marginal term.
    """
    ddf = normalize_ddf(ddf) or "Satterthwaite"
    terms = fixed_terms(fit.design)
    marginal = [t for t in terms
                if not any({e for e, _ in t.factors} < {e for e, _ in u.factors} for u in terms)]
    Ls = contrasts_type3(fit) if terms else {}
    rows = {t.label: contest_md(fit, Ls[t.label], ddf) for t in marginal}
    tab = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS) if rows else \
        pd.DataFrame(columns=COLUMNS, dtype=float)
    out = FTestTable(tab)
    method = "Satterthwaite's" if ddf == "Satterthwaite" else "Kenward-Roger's"
    out.heading = f"Single term deletions using {method} method:\n\nModel:\n{deparse1(fit.formula)}"
    return out
