"""Likelihood-ratio tests between nested fits, as lme4's ``anova(m0, m1, ...)``.

REML fits are refitted by maximum likelihood first (lme4 says "refitting model(s) with
ML (instead of REML)"); the models are ordered by their number of parameters and each
is compared with the one before it: Chisq = 2 (logLik_k - logLik_{k-1}) (0 if
negative) on npar_k - npar_{k-1} degrees of freedom.
"""
from __future__ import annotations

import builtins
import sys
import warnings

import numpy as np
import pandas as pd

from ..util.deparse import deparse1
from ..util.lazy import stats
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


def response_fingerprint(labels, y) -> np.ndarray:
    """(Σ yᵢuᵢ, Σ yᵢuᵢ²), uᵢ ∈ (0, 1) a hash of row i's index label: equal for the same
    response values on the same rows whatever their order or partitioning, different (to
    rounding) when the same values sit on other rows.  Adds over Dask partitions."""
    labels = pd.Index(labels)
    if pd.api.types.is_numeric_dtype(labels.dtype) and not pd.api.types.is_bool_dtype(labels):
        keys = np.asarray(labels, dtype=float) + 0.0        # 1 and 1.0, 0.0 and -0.0 agree
    else:
        keys = np.asarray(labels.astype(str), dtype=object)
    h = pd.util.hash_array(keys, categorize=False)
    u = ((h >> np.uint64(11)).astype(float) + 0.5) * 2.0 ** -53
    y = np.asarray(y, dtype=float)
    return np.array([y @ u, y @ (u * u)])


def _is_fit(obj) -> bool:
    return hasattr(obj, "design") and hasattr(obj, "loglik") and hasattr(obj, "n_params")


def _has_rows(design) -> bool:
    """True for an in-memory design (a Dask design keeps no rows)."""
    return getattr(design, "response_fingerprint", None) is None and hasattr(design, "order")


def _fingerprint(fit) -> np.ndarray:
    d = fit.design
    if not _has_rows(d):
        return np.asarray(d.response_fingerprint, float)
    return response_fingerprint(d.row_labels, d.y)


def _row_alignment(a, b) -> np.ndarray:
    """Positions of a's rows (data order) among b's: by index label when both label sets
    are unique and equal (the same rows, reordered), else by position."""
    la = pd.Index(a.to_data_order(np.asarray(a.row_labels, dtype=object)))
    lb = pd.Index(b.to_data_order(np.asarray(b.row_labels, dtype=object)))
    if la.is_unique and lb.is_unique:
        pos = lb.get_indexer(la)
        if (pos >= 0).all():
            return pos
    return np.arange(len(lb))


def check_same_data(fits, what: str = "anova") -> None:
    """Refuse models not fitted to the same data, as lme4's anova does (same number of
    observations, same data): the same response column, the same number of rows, and the
    same response values on the same rows, compared row by row (rows matched by their index
    labels when these are unique, else by position in the data's order; for a Dask fit,
    which keeps no rows, through :func:`response_fingerprint` of the rows' index labels and
    values); also the same prior weights.  Not a check that the covariates are the same:
    :func:`nesting_problem` compares the model matrices."""
    for i, f in enumerate(fits):
        if not _is_fit(f):
            raise TypeError(f"{what}: argument {i + 1} is a {type(f).__name__}, not a fitted "
                            "model (a result of pylmem.lmer)")
    ref = fits[0]
    for f in fits[1:]:
        if f.design.response != ref.design.response:
            raise ValueError(f"{what}: all models must be fitted to the same data: responses "
                             f"differ ({ref.design.response!r} vs {f.design.response!r})")
        if f.n_obs != ref.n_obs:
            raise ValueError(f"{what}: all models must be fitted to the same data: numbers of "
                             f"observations differ ({ref.n_obs} vs {f.n_obs})")
        a, b = ref.design, f.design
        if _has_rows(a) and _has_rows(b):
            pos = _row_alignment(a, b)
            ya, yb = a.to_data_order(a.y), b.to_data_order(b.y)[pos]
            same = np.allclose(ya, yb, rtol=1e-12, atol=0)
            wa, wb = getattr(a, "weights", None), getattr(b, "weights", None)
            if (wa is None) != (wb is None) or (
                    wa is not None and not np.allclose(a.to_data_order(wa),
                                                       b.to_data_order(wb)[pos],
                                                       rtol=1e-12, atol=0)):
                raise ValueError(f"{what}: all models must be fitted to the same data: the "
                                 "prior weights differ")
        else:
            same = np.allclose(_fingerprint(ref), _fingerprint(f), rtol=1e-10, atol=0)
        if not same:
            raise ValueError(f"{what}: all models must be fitted to the same data: the response "
                             f"values of {f.design.response!r} differ row by row (same "
                             "values on other rows, or other rows)")


def _in_span(A: np.ndarray, B: np.ndarray) -> bool:
    """Every column of A (n × a) in the column space of B (n × b), to rounding."""
    if A.shape[1] == 0:
        return True
    if B.shape[1] == 0:
        return False
    coef = np.linalg.lstsq(B, A, rcond=None)[0]
    r = np.linalg.norm(A - B @ coef, axis=0)
    return bool(np.all(r <= 1e-7 * np.maximum(np.linalg.norm(A, axis=0), 1e-300)))


def nesting_problem(small, large) -> str | None:
    """Why ``small`` is not nested in ``large`` (None if it is): its fixed-effects columns
    must lie in the span of the larger model's, and each of its random-effects terms inside
    one term of the larger model with the same grouping factor (its Z columns in that
    term's span; one correlated term cannot sit inside two uncorrelated ones), with the
    same offset.  In-memory fits are compared on their model matrices (data row order);
    a Dask fit, which keeps no rows, by the coefficient names."""
    a, b = small.design, large.design
    rows = _has_rows(a) and _has_rows(b)
    if rows:
        pos = _row_alignment(a, b)

        def rows_of(d, M, p=None):
            M = d.to_data_order(M)
            return M if p is None else M[p]
        oa, ob = getattr(a, "offset", None), getattr(b, "offset", None)
        oa = np.zeros(a.n_obs) if oa is None else rows_of(a, oa)
        ob = np.zeros(b.n_obs) if ob is None else rows_of(b, ob, pos)
        if not np.allclose(oa, ob, rtol=1e-12, atol=0):
            return "their offsets differ"
        if not _in_span(rows_of(a, a.X), rows_of(b, b.X, pos)):
            return "the fixed effects of the smaller model are not in the span of the larger's"
    elif list(getattr(a, "offset_exprs", ())) != list(getattr(b, "offset_exprs", ())):
        return "their offsets differ"
    elif not set(a.fixef_names) <= set(b.fixef_names):
        return "the fixed effects of the smaller model are not among the larger's"
    for t in a.terms:
        hosts = [u for u in b.terms if tuple(u.group) == tuple(t.group)]
        if rows:
            za = rows_of(a, t.Z)
            ok = any(_in_span(za, rows_of(b, u.Z, pos)) for u in hosts)
        else:
            ok = any(set(t.coef_names) <= set(u.coef_names) for u in hosts)
        if not ok:
            return (f"the random-effects term ({' + '.join(t.coef_names)} | {t.name}) of the "
                    "smaller model is not inside one term of the larger model")
    return None


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

    Notes
    -----
    The models must be fitted to the same data (:func:`check_same_data`: the same response
    values on the same rows, not only the same sorted values; lme4 checks the number of
    observations and the data object): otherwise ValueError.  Each model must be nested in
    the next larger one (:func:`nesting_problem`: fixed-effects column spaces and random
    terms); lme4 does not check this, pylmem warns, since the χ² test assumes nested
    models while AIC and BIC still compare non-nested ones.
    """
    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) == 1 or (fits and (type is not None or ddf is not None)):  # lmerTest's F tests
        if len(fits) != 1:
            raise ValueError("anova: type= and ddf= apply to a single model; "
                             f"got {len(fits)} models")
        if not _is_fit(fits[0]):
            raise TypeError(f"anova: argument 1 is a {builtins.type(fits[0]).__name__}, not a "
                            "fitted model (a result of pylmem.lmer)")
        if not _has_rows(fits[0].design):
            raise NotImplementedError("anova(fit) (lmerTest's F tests) is not available for a "
                                      "Dask fit: it needs the model matrix, which stays in the "
                                      "partitions (compare two Dask fits by anova(m0, m1))")
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
    for i in range(1, len(fits)):
        why = nesting_problem(fits[i - 1], fits[i])
        if why:
            warnings.warn(f"anova: models {names[i - 1]} and {names[i]} are not nested ({why}): "
                          "the likelihood-ratio test assumes nested models (AIC and BIC still "
                          "compare them)", UserWarning, stacklevel=2)
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
