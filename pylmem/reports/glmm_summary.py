"""Printed forms of a GLMM fit, laid out as lme4 prints ``glmer`` fits.

:class:`GlmmSummary` is ``summary(glmer(...))``: the title naming the approximation
(Laplace or adaptive Gauss–Hermite quadrature with its nAGQ), the ``Family:`` line with
the link, AIC / BIC / logLik / deviance / df.resid, the scaled (Pearson) residuals, the
random effects (no residual row: σ = 1 for the binomial and Poisson families), the fixed
effects with z values and Pr(>|z|), their correlations, and the fit's warnings.
``glmm_short_repr`` is ``print(fit)``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..util.deparse import deparse_formula
from ..util.rformat import (
    SIGNIF_LEGEND,
    cat_fill,
    format_pval,
    format_real,
    print_matrix,
    print_named,
    r_round,
    signif_stars,
    zapsmall,
)
from .summary import COR_MAX, DIGITS, PrintedLines, _corr_fixef_lines, _groups_line, format_vc


def _title(fit) -> list[str]:
    """lme4's two title lines (the approximation's name wraps after its first word)."""
    if fit.nagq > 1:
        first, rest = "Adaptive", f"Gauss-Hermite Quadrature, nAGQ = {fit.nagq}"
    elif fit.nagq == 0:
        first, rest = "Laplace", "Approximation, nAGQ = 0: fixed effects in PIRLS"
    else:
        first, rest = "Laplace", "Approximation"
    return [f"Generalized linear mixed model fit by maximum likelihood ({first}",
            f"  {rest}) [glmerMod]"]


def _head(fit, data_name) -> list[str]:
    lines = _title(fit)
    lines.append(f" Family: {fit.family.name}  ( {fit.family.link.name} )")
    lines += cat_fill(["Formula:"] + deparse_formula(fit.formula))
    dn = data_name if data_name is not None else getattr(fit, "data_name", None)
    if dn:
        lines += cat_fill(["   Data:", str(dn)])
    d = fit.design
    if getattr(d, "weights_name", None):
        lines += cat_fill(["Weights:", d.weights_name])
    if getattr(d, "offset_arg", None):
        lines += cat_fill([" Offset:", d.offset_arg])
    return lines


def _aictab(fit, digits) -> list[str]:
    vals = r_round([fit.aic, fit.bic, fit.loglik, fit.deviance, fit.df_resid], digits)
    f = format_real(vals)
    f[-1] = format_real([vals[-1]])[0]
    return print_named(["AIC", "BIC", "logLik", "deviance", "df.resid"], f)


def format_z_table(tab: pd.DataFrame, digits: int = DIGITS) -> list[str]:
    """``printCoefmat`` of Estimate, Std. Error, z value, Pr(>|z|) with significance stars."""
    est = tab["Estimate"].to_numpy(float)
    se = tab["Std. Error"].to_numpy(float)
    zv = tab["z value"].to_numpy(float)
    pv = tab["Pr(>|z|)"].to_numpy(float)
    acs = np.abs(np.r_[est, se])
    acs = acs[np.isfinite(acs) & (acs > 0)]
    digmin = 1 + np.floor(np.log10([acs.min(), acs.max()])) if acs.size else np.array([1.0])
    rd = max(1, int(np.max(digits - digmin)))
    p = len(est)
    cs = np.array(format_real(r_round(np.c_[est, se], rd).ravel(order="F"), digits),
                  dtype=object).reshape(2, p).T
    zs = format_real(r_round(zv, max(1, min(5, digits - 1))), digits)
    ps = format_pval(pv, max(1, min(5, digits - 1)))
    st = signif_stars(pv)
    w = max(len(s) for s in st) if st else 0
    cells = [[cs[i, 0], cs[i, 1], zs[i], ps[i], st[i].ljust(w)] for i in range(p)]
    lines = print_matrix(cells, list(tab.index), ["Estimate", "Std. Error", "z value",
                                                  "Pr(>|z|)", ""], right=True)
    if np.any(pv[np.isfinite(pv)] < 0.1):
        lines += ["---", SIGNIF_LEGEND]
    return lines


def _warning_lines(fit) -> list[str]:
    msgs = list(fit.warnings)
    if not msgs:
        return []
    code = 0 if fit.converged else 1
    return [f"optimizer (bobyqa + Newton) convergence code: {code} "
            f"({'OK' if code == 0 else 'failed'})"] + msgs


def glmm_short_repr(fit, data_name=None) -> str:
    """lme4's ``print(glmerfit)``."""
    lines = _head(fit, data_name)
    lines += _aictab(fit, 4)
    lines.append("Random effects:")
    lines += format_vc(fit, DIGITS, comp=("Std.Dev.",), residual=False)
    lines += _groups_line(fit)
    fe = fit.fixef
    if len(fe):
        lines.append("Fixed Effects:")
        lines += print_named(list(fe.index), format_real(fe.to_numpy(dtype=float), DIGITS), gap=2)
    lines += _warning_lines(fit)
    return "\n".join(lines)


class GlmmSummary(PrintedLines):
    """``summary(glmer(...))``; ``str()`` prints it in lme4's layout.

    Attributes: ``fixed`` (Estimate, Std. Error, z value, Pr(>|z|)), ``random``
    (``as.data.frame(VarCorr)``), ``resid_quantiles`` (scaled Pearson residuals),
    ``corr_fixef``, ``criteria`` (AIC, BIC, logLik, deviance, df.resid), ``overdispersion``
    (Pearson χ², df, ratio, p-value).
    """

    def __init__(self, fit, data_name=None, digits: int = DIGITS):
        self.fit = fit
        self.data_name = data_name
        self.digits = digits
        self.fixed = pd.DataFrame({"Estimate": fit.fixef, "Std. Error": fit.stderr,
                                   "z value": fit.zvalues, "Pr(>|z|)": fit.pvalues})
        self.random = fit.varcorr
        r = fit.residuals_of("pearson").to_numpy(dtype=float)
        self.resid_quantiles = pd.Series(np.quantile(r[~np.isnan(r)], [0, .25, .5, .75, 1]),
                                         index=["Min", "1Q", "Median", "3Q", "Max"],
                                         name="Scaled residuals")
        self.corr_fixef = fit.corr_fixef
        self.criteria = pd.Series({"AIC": fit.aic, "BIC": fit.bic, "logLik": fit.loglik,
                                   "deviance": fit.deviance, "df.resid": fit.df_resid})
        self.overdispersion = fit.overdispersion()

    def lines(self) -> list[str]:
        fit, digits = self.fit, self.digits
        out = _head(fit, self.data_name)
        out.append("")
        out += _aictab(fit, 1)
        out.append("")
        out.append("Scaled residuals:")
        rq = zapsmall(self.resid_quantiles.to_numpy(), digits + 1)
        out += print_named(list(self.resid_quantiles.index), format_real(rq, digits))
        out.append("")
        out.append("Random effects:")
        out += format_vc(fit, digits, residual=False)
        out += _groups_line(fit)
        p = len(fit.fixef)
        if p:
            out.append("")
            out.append("Fixed effects:")
            out += format_z_table(self.fixed, digits)
            if p > COR_MAX:
                out += ["", f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}:",
                        "see fit.corr_fixef"]
            elif p > 1:
                out.append("")
                out.append("Correlation of Fixed Effects:")
                out += _corr_fixef_lines(fit)
        od = self.overdispersion
        if np.isfinite(od["ratio"]) and od["ratio"] > 1.5 and od["p_value"] < 0.05:
            out.append("")
            out.append(f"Pearson chi2 / df = {od['ratio']:.3g} (p = {od['p_value']:.3g}): the data "
                       "may be overdispersed (see fit.overdispersion())")
        w = _warning_lines(fit)
        if w:
            out.append("")
            out += w
        return out

