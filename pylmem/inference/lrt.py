"""Likelihood-ratio tests between nested fits, as lme4's ``anova(m0, m1, ...)``.

REML fits are refitted by maximum likelihood first (lme4 says "refitting model(s) with
ML (instead of REML)"); the models are ordered by their number of parameters and each
is compared with the one before it: Chisq = 2 (logLik_k - logLik_{k-1}) (0 if
negative) on npar_k - npar_{k-1} degrees of freedom.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ..util.deparse import deparse1
from ..util.rformat import anova_table_lines, format_real, r_round, zapsmall
from .ftests import single_anova

REFIT_MESSAGE = "refitting model(s) with ML (instead of REML)"
COLUMNS = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]


class AnovaResult(pd.DataFrame):
    """lme4's anova table (a DataFrame: npar, AIC, BIC, logLik, deviance, Chisq, Df,
    Pr(>Chisq)); ``str()``/``repr()`` print it as R does.

    Extra attributes: ``formulas`` (row name -> formula), ``refitted`` (True when REML
    fits were refitted by ML), ``fits`` (the ML fits compared, in row order),
    ``data_name``.
    """

    _metadata = ["formulas", "refitted", "fits", "data_name"]

    @property
    def _constructor(self):
        return pd.DataFrame  # slices are plain DataFrames

    def heading(self) -> list[str]:
        # the REML -> ML refit is said once, as lme4's message, by the warning of anova();
        # the table keeps it in ``refitted``
        lines = []
        dn = getattr(self, "data_name", None)
        n = self.fits[0].n_obs if getattr(self, "fits", None) else None
        lines.append(f"Data: {dn}" if dn else f"Data: ({n} observations)")
        lines.append("Models:")
        for name, f in (getattr(self, "formulas", None) or {}).items():
            lines.append(f"{name}: {deparse1(f)}")
        return lines

    def table_lines(self, digits: int = 5, signif: bool = True) -> list[str]:
        """``print.anova``: printCoefmat with zapped columns, Chisq as a test statistic."""
        x = self[COLUMNS].to_numpy(dtype=float)
        n = len(x)
        cols = {}
        for j, c in enumerate(COLUMNS[:-1]):
            v = x[:, j]
            if c == "Chisq":
                s = format_real(r_round(v, max(1, min(5, digits - 1))), digits)
            elif c == "Df":
                s = format_real(v, digits)
            else:
                s = format_real(zapsmall(v, digits), digits)
            cols[c] = ["" if np.isnan(v[i]) else s[i] for i in range(n)]
        return anova_table_lines(cols, x[:, -1], self.index, "Pr(>Chisq)",
                                 p_digits=max(1, min(5, digits - 1)), signif=signif)

    def __str__(self) -> str:
        return "\n".join(self.heading() + self.table_lines())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self):  # notebooks: the R layout too
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self)


def _response_values(design, moments: bool) -> np.ndarray:
    """Sorted y, or (Σy, Σy²) when some fit is a Dask fit (it keeps no rows)."""
    m = getattr(design, "response_moments", None)
    if m is not None:
        return np.asarray(m, float)
    y = np.asarray(design.y, float)
    return np.array([y.sum(), y @ y]) if moments else np.sort(y)


def check_same_data(fits) -> None:
    ref = fits[0]
    for f in fits[1:]:
        if f.design.response != ref.design.response:
            raise ValueError("anova: all models must be fitted to the same data: responses "
                             f"differ ({ref.design.response!r} vs {f.design.response!r})")
        if f.n_obs != ref.n_obs:
            raise ValueError("anova: all models must be fitted to the same data: numbers of "
                             f"observations differ ({ref.n_obs} vs {f.n_obs})")
        mom = any(hasattr(x.design, "response_moments") for x in (ref, f))
        a, b = _response_values(ref.design, mom), _response_values(f.design, mom)
        if not np.allclose(a, b, rtol=1e-10 if mom else 1e-12, atol=0):
            raise ValueError("anova: all models must be fitted to the same data: the response "
                             f"values of {f.design.response!r} differ")


def caller_names(fits, frame) -> list | None:
    """The names of the caller's variables holding ``fits`` (lme4 labels the rows by the
    arguments' expressions): each fit bound to exactly one name, locals before globals;
    None when some fit has no name or several (``anova(*fits)``, ``anova(f(a), f(b))``)."""
    names = []
    for f in fits:
        found = None
        for scope in (frame.f_locals, frame.f_globals):
            hits = [k for k, v in list(scope.items()) if v is f and not k.startswith("_")]
            if hits:
                found = hits
                break
        if found is None or len(found) != 1:
            return None
        names.append(found[0])
    return names if len(set(names)) == len(names) else None


def anova(*fits, names=None, data_name=None, refit: bool = True, type=None, ddf=None):
    """Compare nested fits by likelihood-ratio tests (lme4's ``anova(m0, m1, ...)``).

    Each model is compared with the one before it, the rows ordered by number of parameters
    (stable). With one fit: lmerTest's F tests of its fixed-effects terms instead
    (:func:`pylmem.inference.ftests.single_anova`).

    Parameters
    ----------
    *fits : LmerFit
        Two or more fits to the same data (or one fit, or one list of fits).
    names : list of str, optional
        Row names. Default: the names of the caller's variables holding the fits, as lme4
        labels the rows ``fm0``, ``fm1``; "m0", "m1", ... in argument order when the fits
        are not each held by exactly one variable.
    data_name : str, optional
        Shown on the table's ``Data:`` line.
    refit : bool, default True
        Refit REML fits by ML first (with one warning, lme4's note).
    type : {1, 3}, optional
        One fit only: the type of the F tests (default 3).
    ddf : {"Satterthwaite", "Kenward-Roger"}, optional
        One fit only: the denominator df of the F tests (default Satterthwaite).

    Returns
    -------
    AnovaResult or FTestTable
        lme4's table (npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)), printed as R
        prints it; lmerTest's F table for one fit.
    """
    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) == 1 or (fits and (type is not None or ddf is not None)):  # lmerTest's F tests
        if len(fits) != 1:
            raise ValueError("anova: type= and ddf= apply to a single model; "
                             f"got {len(fits)} models")
        return single_anova(fits[0], type=3 if type is None else type,
                            ddf="Satterthwaite" if ddf is None else ddf)
    if len(fits) < 2:
        raise ValueError("anova needs at least two fitted models to compare")
    if names is None:
        names = caller_names(fits, sys._getframe(1)) or [f"m{i}" for i in range(len(fits))]
    names = [str(n) for n in names]
    if len(names) != len(fits):
        raise ValueError(f"anova: {len(names)} names given for {len(fits)} models")
    if len(set(names)) != len(names):
        raise ValueError("anova: model names must be unique")
    check_same_data(fits)
    refitted = False
    if refit and any(f.reml for f in fits):
        refitted = True
        warnings.warn(REFIT_MESSAGE, UserWarning, stacklevel=2)
        fits = tuple(f.refit(reml=False) if f.reml else f for f in fits)
    npar = np.array([f.n_params for f in fits])
    order = np.argsort(npar, kind="stable")
    fits = [fits[i] for i in order]
    names = [names[i] for i in order]
    ll = np.array([f.loglik for f in fits], dtype=float)
    npar = npar[order].astype(float)
    chisq = np.concatenate([[np.nan], 2 * np.maximum(0.0, np.diff(ll))])
    df = np.concatenate([[np.nan], np.diff(npar)])
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, stats.chi2.sf(chisq, np.where(df > 0, df, np.nan)))
    p[0] = np.nan
    table = pd.DataFrame({"npar": npar.astype(int), "AIC": [f.aic for f in fits],
                          "BIC": [f.bic for f in fits], "logLik": ll, "deviance": -2 * ll,
                          "Chisq": chisq, "Df": df, "Pr(>Chisq)": p},
                         index=pd.Index(names))
    out = AnovaResult(table)
    out.formulas = {n: f.formula for n, f in zip(names, fits)}
    out.refitted = refitted
    out.fits = fits
    out.data_name = data_name
    return out
