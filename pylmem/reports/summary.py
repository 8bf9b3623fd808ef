"""Printed forms of a fit, laid out as lme4 prints them.

``short_repr(fit)`` is lme4's ``print(fit)``; :class:`Summary` is ``summary(fit)``, whose
``str()`` follows ``lme4:::print.summary.merMod`` line by line (R's ``format``,
``printCoefmat``, ``zapsmall`` and ``abbreviate`` rules are reproduced in
:mod:`pylmem.util.rformat`, so the numbers carry the digits R would print).  The pieces are also kept as DataFrames:
``Summary.random``, ``Summary.fixed``, ``Summary.resid_quantiles``, ``Summary.corr_fixef``.

Our fits carry no data-set name, so the ``   Data:`` line is printed only when one is
given (``Summary(fit, data_name="sleepstudy")`` or an attribute ``fit.data_name``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..inference.ddf import coef_table, normalize_ddf
from ..util.deparse import deparse_formula
from ..util.rformat import (
    SIGNIF_LEGEND,
    abbreviate,
    cat_fill,
    format_pval,
    format_real,
    print_matrix,
    print_named,
    r_round,
    signif_stars,
    zapsmall,
)

# lme4's advice, in Python: where a Python user finds what R's help page would show
SINGULAR_ADVICE = "boundary (singular) fit: see help(pylmem.LmerFit.is_singular)"
DIGITS = 4          # lme4: max(3, getOption("digits") - 3)
COR_MAX = 12        # getOption("lme4.summary.cor.max")

# ============================================================== pieces of the summary


def _title(fit) -> str:
    mtit = "Linear mixed model fit by REML" if fit.reml else \
        "Linear mixed model fit by maximum likelihood "
    return f"{mtit} ['lmerMod']"


def _data_name(fit, data_name):
    return data_name if data_name is not None else getattr(fit, "data_name", None)


def _call_lines(fit, data_name) -> list[str]:
    lines = cat_fill(["Formula:"] + deparse_formula(fit.formula))
    dn = _data_name(fit, data_name)
    if dn:
        lines += cat_fill(["   Data:", str(dn)])
    d = fit.design   # lme4 names the weights and the offset= argument
    if getattr(d, "weights", None) is not None:
        lines += cat_fill(["Weights:", d.weights_name or "<array>"])
    if getattr(d, "offset_arg", None):
        lines += cat_fill([" Offset:", d.offset_arg])
    return lines


def _aictab(fit, digits: int) -> list[str]:
    if fit.reml:
        v = float(r_round(fit.reml_criterion, digits))
        return cat_fill(["REML criterion at convergence:", f"{v:.7g}"])
    vals = r_round([fit.aic, fit.bic, fit.loglik, fit.deviance, fit.df_resid], digits)
    f = format_real(vals)
    f[-1] = format_real([vals[-1]])[0]
    return print_named(["AIC", "BIC", "logLik", "deviance", "df.resid"], f)


def _ranef_blocks(fit):
    """(group label, coef names, std devs, correlation matrix) per term, then the residual."""
    out = []
    for name, C in fit.cov_re.items():
        m = C.to_numpy()
        sd = np.sqrt(np.clip(np.diag(m), 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = m / np.outer(sd, sd)
        np.fill_diagonal(cor, 1.0)
        out.append((name, list(C.index), sd, cor))
    return out


def format_vc(fit, digits: int = DIGITS, comp=("Variance", "Std.Dev."), residual: bool = True) -> list[str]:
    """lme4's ``formatVC`` + print: the random-effects table lines (``residual=False``: no
    Residual row, as for a GLMM of the binomial or Poisson family)."""
    blocks = _ranef_blocks(fit)
    groups, names, sds = [], [], []
    for name, cn, sd, _ in blocks:
        for k, c in enumerate(cn):
            groups.append(name if k == 0 else "")
            names.append(c)
            sds.append(sd[k])
    if residual:
        groups.append("Residual")
        names.append("")
        sds.append(fit.sigma)
    sds = np.asarray(sds, dtype=float)
    cols = ["Groups", "Name"]
    data = [groups, names]
    if "Variance" in comp:
        cols.append("Variance")
        data.append(format_real(sds ** 2, digits))
    if "Std.Dev." in comp:
        cols.append("Std.Dev.")
        data.append(format_real(sds, digits))
    maxlen = max(len(b[1]) for b in blocks) if blocks else 1
    if maxlen > 1:
        dig = max(2, digits - 2)
        corr_rows = []
        for _, cn, _, cor in blocks:
            q = len(cn)
            rc = r_round(cor, dig)
            cc = np.array(format_real(rc.ravel(), 7, nsmall=dig), dtype=object).reshape(q, q)
            for i in range(q):
                row = [cc[i, j] if j < i else "" for j in range(q)] + [""] * (maxlen - q)
                corr_rows.append(row[:maxlen - 1])
        if residual:
            corr_rows.append([""] * (maxlen - 1))
        for j in range(maxlen - 1):
            cols.append("Corr" if j == 0 else "")
            data.append([r[j] for r in corr_rows])
    cells = list(zip(*data))
    return print_matrix(cells, [""] * len(cells), cols, right=False)


def structure_lines(fit) -> list[str]:
    """One line per random-effects term with a covariance structure (none for a model
    without structures): the structure, its correlation parameter and its parameter count."""
    smap = getattr(fit.dev, "smap", None)
    if smap is None:
        return []
    out = []
    for s, p, t in zip(smap.structures, smap.split(fit.theta), fit.design.terms):
        if s.kind != "us":
            out.append(f" {t.name}: {s.describe(p, fit.sigma)}")
    return ["Covariance structures:"] + out if out else []


def _groups_line(fit) -> list[str]:
    grp = "; ".join(f"{k}, {v}" for k, v in fit.n_groups.items())
    lines = cat_fill([f"Number of obs: {fit.n_obs}, groups: ", grp])
    if getattr(fit, "n_dropped", 0):
        # as R's summary.lm: rows with missing values are counted, never silently dropped
        lines.append(f"({fit.n_dropped} observation{'s' if fit.n_dropped != 1 else ''} "
                     "deleted due to missingness)")
    return lines


def _fixef_table(fit, digits: int = DIGITS):
    """``printCoefmat`` of Estimate / Std. Error / t value (lme4's summary)."""
    est = fit.fixef.to_numpy(dtype=float)
    se = fit.stderr.to_numpy(dtype=float)
    tv = fit.tvalues.to_numpy(dtype=float)
    p = len(est)
    coef_se = np.column_stack([est, se])
    acs = np.abs(coef_se)
    acs_ok = acs[np.isfinite(acs) & (acs != 0)]
    if acs_ok.size:
        digmin = 1 + np.floor(np.log10([acs_ok.min(), acs_ok.max()]))
    else:
        digmin = np.array([1.0])
    rd = max(1, int(np.max(digits - digmin)))
    cs = np.array(format_real(r_round(coef_se, rd).ravel(order="F"), digits),
                  dtype=object).reshape(2, p).T
    dig_tst = max(1, min(5, digits - 1))
    ts = format_real(r_round(tv, dig_tst), digits)
    # entries printed as zero that are not zero get digits - 1 significant digits
    for i in range(p):
        for j in range(2):
            if coef_se[i, j] != 0 and np.isfinite(coef_se[i, j]) and float(cs[i, j]) == 0:
                cs[i, j] = format_real([coef_se[i, j]], max(1, digits - 1))[0]
    cells = [[cs[i, 0], cs[i, 1], ts[i]] for i in range(p)]
    return print_matrix(cells, list(fit.fixef.index), ["Estimate", "Std. Error", "t value"],
                        right=True)


def _corr_fixef_lines(fit) -> list[str]:
    rn = list(fit.fixef.index)
    p = len(rn)
    C = fit.corr_fixef.to_numpy()
    f = np.array(format_real(r_round(C, 3).ravel(), 7, nsmall=3), dtype=object).reshape(p, p)
    rows = abbreviate(rn, 11)
    cols = abbreviate(rn, 6)
    cells = [[f[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return print_matrix(cells, rows[1:], cols[:-1], right=False)


def _warning_lines(fit, summary: bool) -> list[str]:
    msgs = []
    for w in fit.warnings:
        msgs.append(SINGULAR_ADVICE
                    if w.startswith("boundary (singular) fit") else w)
    if not msgs:
        return []
    conv = 0 if fit.converged else 1
    head = f"optimizer ({getattr(fit.optsum, 'method', 'pylmem')}) convergence code: {conv} " \
           f"({'OK' if conv == 0 else 'failed'})"
    if summary:
        # lme4's summary: the messages of a fit that failed its convergence check follow
        failed = [] if fit.converged else [m for m in msgs if not m.startswith("boundary")]
        return [f"{head} ; 0 optimizer warnings; {len(msgs)} lme4 warnings"] + failed
    return [head] + msgs + [""]


def _fit_msgs(fit) -> list[str]:
    dropped = getattr(fit.design, "dropped_columns", []) or []
    if not dropped:
        return []
    k = len(dropped)
    s = "s" if k > 1 else ""
    return ["fit warnings:",
            f"fixed-effect model matrix is rank deficient so dropping {k} column{s} / coefficient{s}"]


def lmertest_title(fit, ddf) -> str:
    """lmerTest's summary title: "… fit by REML. t-tests use Satterthwaite's method …"."""
    how = "REML" if fit.reml else "maximum likelihood "
    method = "Satterthwaite's" if normalize_ddf(ddf) == "Satterthwaite" else "Kenward-Roger's"
    return f"Linear mixed model fit by {how}. t-tests use {method} method ['lmerModLmerTest']"


def format_coef_table(tab: pd.DataFrame, digits: int = 4) -> list:
    """``printCoefmat`` of lmerTest's table: Estimate, Std. Error, df, t value, Pr(>|t|), stars."""
    est = tab["Estimate"].to_numpy(float)
    se = tab["Std. Error"].to_numpy(float)
    df = tab["df"].to_numpy(float)
    tv = tab["t value"].to_numpy(float)
    pv = tab["Pr(>|t|)"].to_numpy(float)
    # printCoefmat's cs.ind is 1:3 here (five columns, one test statistic, a p-value): the
    # df column is rounded and formatted with the estimates and standard errors (17.000)
    acs = np.abs(np.r_[est, se, df])
    acs = acs[np.isfinite(acs) & (acs > 0)]
    digmin = 1 + np.floor(np.log10([acs.min(), acs.max()])) if acs.size else np.array([1.0])
    rd = max(1, int(np.max(digits - digmin)))
    cs = format_real(r_round(np.r_[est, se, df], rd), digits)
    p = len(est)
    ds = cs[2 * p:]
    ts = format_real(r_round(tv, max(1, min(5, digits - 1))), digits)
    ps = format_pval(pv, max(1, min(5, digits - 1)))
    st = signif_stars(pv)
    w = max(len(s) for s in st) if st else 0
    cells = [[cs[i], cs[p + i], ds[i], ts[i], ps[i], st[i].ljust(w)] for i in range(p)]
    lines = print_matrix(cells, list(tab.index), ["Estimate", "Std. Error", "df", "t value",
                                                  "Pr(>|t|)", ""], right=True)
    if np.any(pv[np.isfinite(pv)] < 0.1):
        lines += ["---", SIGNIF_LEGEND]
    return lines


# ============================================================== public API


def short_repr(fit, data_name=None) -> str:
    """lme4's ``print(fit)``: criterion, random-effect standard deviations, fixed effects."""
    lines = [_title(fit)]
    lines += _call_lines(fit, data_name)
    lines += _aictab(fit, 4)
    lines.append("Random effects:")
    lines += format_vc(fit, DIGITS, comp=("Std.Dev.",))
    lines += _groups_line(fit)
    fe = fit.fixef
    if len(fe):
        lines.append("Fixed Effects:")
        lines += print_named(list(fe.index), format_real(fe.to_numpy(dtype=float), DIGITS), gap=2)
    else:
        lines.append("No fixed effect coefficients")
    lines += _fit_msgs(fit)
    lines += _warning_lines(fit, summary=True)
    return "\n".join(lines)


class PrintedLines:
    """Printing of a report made of ``lines()``: str, repr, IPython and notebooks."""

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))

    def _repr_html_(self) -> str:
        """The printed summary, for notebooks (lme4's layout needs a fixed-width font)."""
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"


class Summary(PrintedLines):
    """lme4's ``summary(lmer(...))``; ``str()`` prints it in lme4's layout.

    Attributes (DataFrames): ``random`` (lme4's ``as.data.frame(VarCorr)``),
    ``fixed`` (Estimate, Std. Error, t value), ``resid_quantiles`` (scaled residuals
    Min/1Q/Median/3Q/Max), ``corr_fixef``; ``criteria`` a Series (AIC, BIC, logLik,
    deviance, df.resid, or the REML criterion).
    """

    def __init__(self, fit, data_name=None, digits: int = DIGITS, ddf=None):
        self.fit = fit
        self.data_name = data_name
        self.digits = digits
        self.random = fit.varcorr
        self.fixed = pd.DataFrame({"Estimate": fit.fixef, "Std. Error": fit.stderr,
                                   "t value": fit.tvalues})
        self.ddf = None
        if ddf is not None:  # lmerTest's layout (df and p-values)
            self.ddf = normalize_ddf(ddf)
            self.fixed = coef_table(fit, ddf=self.ddf)
        r = fit.residuals_of("pearson", scaled=True).to_numpy(dtype=float)  # √w e / σ, lme4
        self.scaled_residuals = r
        self.resid_quantiles = pd.Series(np.quantile(r[~np.isnan(r)], [0, .25, .5, .75, 1]),
                                         index=["Min", "1Q", "Median", "3Q", "Max"],
                                         name="Scaled residuals")
        self.corr_fixef = fit.corr_fixef
        if fit.reml:
            self.criteria = pd.Series({"REML": fit.reml_criterion})
        else:
            self.criteria = pd.Series({"AIC": fit.aic, "BIC": fit.bic, "logLik": fit.loglik,
                                       "deviance": fit.deviance, "df.resid": fit.df_resid})

    def lines(self) -> list[str]:
        fit, digits = self.fit, self.digits
        out = [_title(fit)]
        if self.ddf is not None:  # lmerTest's title names the df method
            out = [lmertest_title(fit, self.ddf)]
        out += _call_lines(fit, self.data_name)
        out.append("")
        out += _aictab(fit, 1)
        out.append("")
        out.append("Scaled residuals:")
        rq = zapsmall(self.resid_quantiles.to_numpy(), digits + 1)
        out += print_named(list(self.resid_quantiles.index), format_real(rq, digits))
        out.append("")
        out.append("Random effects:")
        out += format_vc(fit, digits)
        out += structure_lines(fit)
        out += _groups_line(fit)
        p = len(fit.fixef)
        if p > 0:
            out.append("")
            out.append("Fixed effects:")
            if self.ddf is not None:
                out += format_coef_table(self.fixed, digits)
            else:
                out += _fixef_table(fit, digits)
            if p > COR_MAX:
                out += ["", f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}.",
                        "Use fit.corr_fixef  or",
                        "    fit.vcov        if you need it", ""]
            elif p > 1:
                out.append("")
                out.append("Correlation of Fixed Effects:")
                out += _corr_fixef_lines(fit)
        out += _fit_msgs(fit)
        out += _warning_lines(fit, summary=False)
        return out


