"""Diagnostic plots of a fit, written as PNG files (matplotlib's Agg canvas, no display;
pyplot and its global backend are left alone, so this is safe in notebooks and threads).

Every function writes one PNG and returns its path:

* :func:`plot_em_trace` — log-likelihood per EM iteration (and the distance to the final value);
* :func:`plot_caterpillar` — conditional modes with 95% intervals, one panel per coefficient;
* :func:`plot_resid_fitted` — conditional residuals against fitted values;
* :func:`plot_qq` — normal QQ plot of the scaled residuals with a reference line;
* :func:`plot_leverage` — Pearson residuals against leverage, with Cook's distance contours;
* :func:`plot_all` — all of them for one fit, into a directory.

The pictures of inference results, :func:`plot_profile` and :func:`plot_bootstrap`, live with
those results (:mod:`pylmem.inference.plots`) and are re-exported here.

Titles name the model (its formula and ML/REML); ``title=`` overrides the first line.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..inference.plots import plot_bootstrap, plot_profile
from ..util.figures import new_figure, save_png, set_title

__all__ = ["plot_em_trace", "plot_caterpillar", "plot_resid_fitted", "plot_qq", "plot_all",
           "plot_leverage", "plot_profile", "plot_bootstrap", "leverage_label"]


# --------------------------------------------------------------------------- EM trace


def plot_em_trace(fit_or_emresult, path, *, title=None) -> Path:
    """Log-likelihood per EM iteration of an EM fit (``lmer(method="em")``) or an EMResult.

    Left: the log-likelihood; right: its distance to the last value on a log scale, which
    shows the (linear) rate of convergence of plain EM or the jumps of SQUAREM.
    """
    res = getattr(fit_or_emresult, "em_result", fit_or_emresult)
    if res is None or getattr(res, "trace", None) is None:
        raise ValueError("plot_em_trace needs an EM fit (lmer(..., method='em')) or an EMResult "
                         "from pylmem.em; this fit was made by the profiled deviance")
    trace = np.asarray(res.trace, dtype=float)
    if trace.size == 0:
        raise ValueError("the EM result has an empty log-likelihood trace")
    fit = fit_or_emresult if fit_or_emresult is not res else None
    rmethod = str(getattr(res, "method", "em"))
    accel = "squarem" in rmethod.lower()
    if accel:
        kind = f"SQUAREM-accelerated EM ({rmethod})"
    else:
        kind = "simplified EM (em2.lmem)" if getattr(res, "simplified", False) else "EM"
    xlabel = "accepted SQUAREM point" if accel else "EM iteration"
    it = np.arange(1, trace.size + 1)

    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = new_figure((10, 4.2), 1, 2)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.plot(it, trace, "o-", ms=3, lw=1.2, color="C0")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("log-likelihood")
    ax1.set_title("log-likelihood", fontsize=10)
    # start the y axis where the curve becomes interesting (the first values can be far off)
    k0 = max(1, int(np.ceil(0.1 * trace.size))) if trace.size > 2 else 0
    lo = trace[k0:].min()
    span = trace.max() - lo
    if span > 0:
        ax1.set_ylim(lo - 0.05 * span, trace.max() + 0.05 * span)
    off = int((trace < lo - 0.05 * span).sum()) if span > 0 else 0
    if off:
        ax1.annotate(f"{off} earlier value{'s' if off > 1 else ''} off scale "
                     f"(first: {trace[0]:.6g})", xy=(0.98, 0.12), xycoords="axes fraction",
                     ha="right", va="bottom", fontsize=9, color="dimgrey")
    ax1.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax1.axhline(trace[-1], color="grey", lw=0.8, ls="--")
    ax1.annotate(f"final {trace[-1]:.4f}", xy=(0.98, 0.04), xycoords="axes fraction",
                 ha="right", va="bottom", fontsize=9)
    ax1.grid(alpha=0.3)

    gap = trace[-1] - trace[:-1]
    ok = gap > 0
    if ok.any():
        ax2.semilogy(it[:-1][ok], gap[ok], "o-", ms=3, lw=1.2, color="C1")
    else:
        ax2.text(0.5, 0.5, "no increase to show", ha="center", va="center",
                 transform=ax2.transAxes)
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel("final logLik − logLik")
    ax2.set_title("distance to the final log-likelihood", fontsize=10)
    ax2.grid(alpha=0.3, which="major")

    main = f"{kind}: {res.n_iter} EM updates, logLik = {res.loglik:.4f}"
    if fit is None and getattr(res, "names", None):
        main += "\nfixed effects: " + ", ".join(map(str, res.names))
    set_title(fig, main if title is None else title, fit)
    return save_png(fig, path)


# --------------------------------------------------------------------------- caterpillar


def caterpillar_order(modes) -> np.ndarray:
    """The row order of every caterpillar panel: the levels sorted by the first
    coefficient's conditional mode (lme4's ``dotplot.ranef.mer``), one order for all."""
    return np.argsort(np.asarray(modes.iloc[:, 0], dtype=float), kind="stable")


def plot_caterpillar(fit, path, term=None, *, title=None, max_labels=50) -> Path:
    """Conditional modes of one random-effects term with 95% intervals (±1.96·sqrt(condvar)).

    One panel per coefficient, the levels in one order across the panels (lme4's
    ``dotplot(ranef(fit))``: sorted by the first coefficient's mode), so a level is read
    across on one row; ``term`` is the term's name (default: the first term).  Level
    labels are shown when there are at most ``max_labels``.
    """
    ranef = fit.ranef
    if term is None:
        term = next(iter(ranef))
    if term not in ranef:
        raise ValueError(f"no random-effects term {term!r}; terms: {', '.join(ranef)}")
    modes = ranef[term]
    cv = fit.ranef_condvar()[term]
    sd = np.sqrt(np.clip(np.diagonal(cv, axis1=1, axis2=2), 0, None))
    L, q = modes.shape
    show_labels = L <= max_labels

    height = min(max(3.2, 0.2 * L + 1.6), 11) if show_labels else 6
    width = min(max(4.2 * q + 1.0, 6.4), 16)
    fig, axes = new_figure((width, height), 1, q, squeeze=False)
    levels = np.asarray(modes.index).astype(str)
    order = caterpillar_order(modes)
    for j, ax in enumerate(axes[0]):
        m = modes.iloc[:, j].to_numpy()
        s = sd[:, j]
        ypos = np.arange(L)
        ax.errorbar(m[order], ypos, xerr=1.96 * s[order], fmt="o", ms=2.5,
                    color="C0", ecolor="#9ecae1", elinewidth=0.9, capsize=0)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_title(str(modes.columns[j]), fontsize=10)
        ax.set_ylim(-1, L)
        if show_labels:
            ax.set_yticks(ypos)
            ax.set_yticklabels(levels[order], fontsize=7 if L > 25 else 8)
        else:
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{L} levels of {term}, sorted by {modes.columns[0]}")
        ax.grid(alpha=0.3, axis="x")
        ax.set_xlabel("conditional mode ± 1.96 sd")
    main = f"Random effects of {term}: conditional modes with 95% intervals"
    set_title(fig, main if title is None else title, fit)
    return save_png(fig, path)


# --------------------------------------------------------------------------- residuals


def _binned_median(x, y, nbins=20):
    if len(x) < 3 * nbins:
        nbins = max(3, len(x) // 3)
    edges = np.quantile(x, np.linspace(0, 1, nbins + 1))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nbins - 1)
    cx, cy = [], []
    for b in range(nbins):
        sel = idx == b
        if sel.sum() >= 3:
            cx.append(np.median(x[sel]))
            cy.append(np.median(y[sel]))
    return np.asarray(cx), np.asarray(cy)


def plot_resid_fitted(fit, path, *, title=None) -> Path:
    """Conditional residuals y − Xβ̂ − Zb̂ against fitted values, with a running median."""
    fitted = fit.fitted.to_numpy()
    resid = fit.residuals.to_numpy()
    n = len(resid)
    fig, ax = new_figure((7.5, 5.2))
    ax.scatter(fitted, resid, s=8 if n > 500 else 16, alpha=0.35 if n > 500 else 0.7,
               color="C0", edgecolors="none", label="observations")
    ax.axhline(0, color="grey", lw=1, ls="--")
    if n >= 9:
        cx, cy = _binned_median(fitted, resid)
        ax.plot(cx, cy, color="C3", lw=1.8, label="running median")
        ax.legend(loc="upper left", fontsize=9, frameon=False)
    ax.set_xlabel("fitted values (fixed + random)")
    ax.set_ylabel("residuals")
    ax.grid(alpha=0.3)
    main = f"Residuals vs fitted (n = {n}, σ = {fit.sigma:.4g})"
    set_title(fig, main if title is None else title, fit)
    return save_png(fig, path)


def plot_qq(fit, path, *, title=None) -> Path:
    """Normal QQ plot of the scaled residuals (residual / σ̂) with R's qqline."""
    from scipy import stats

    r = fit.residuals.to_numpy() / fit.sigma
    n = len(r)
    (osm, osr), _ = stats.probplot(r, dist="norm", fit=True)
    # R's qqline: the line through the first and third quartiles
    q_s = np.quantile(r, [0.25, 0.75])
    q_t = stats.norm.ppf([0.25, 0.75])
    slope = (q_s[1] - q_s[0]) / (q_t[1] - q_t[0])
    intercept = q_s[0] - slope * q_t[0]

    fig, ax = new_figure((6.2, 6.0))
    ax.scatter(osm, osr, s=8 if n > 500 else 16, alpha=0.5 if n > 500 else 0.8, color="C0",
               edgecolors="none", label="scaled residuals")
    xx = np.array([osm.min(), osm.max()])
    ax.plot(xx, intercept + slope * xx, color="C3", lw=1.5, label="line through the quartiles")
    ax.set_xlabel("theoretical normal quantiles")
    ax.set_ylabel("scaled residuals (residual / σ)")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    ax.grid(alpha=0.3)
    main = f"Normal QQ plot of residuals (n = {n})"
    set_title(fig, main if title is None else title, fit)
    return save_png(fig, path)


# --------------------------------------------------------------------------- all


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "term"


def plot_all(fit, directory) -> list:
    """Write every diagnostic plot of ``fit`` into ``directory``; return the paths.

    ``resid_fitted.png``, ``qq.png``, one ``caterpillar_<term>.png`` per random-effects
    term, and ``em_trace.png`` for EM fits (``lmer(..., method="em")``).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    if getattr(fit, "em_result", None) is not None:
        paths.append(plot_em_trace(fit, d / "em_trace.png"))
    paths.append(plot_resid_fitted(fit, d / "resid_fitted.png"))
    paths.append(plot_qq(fit, d / "qq.png"))
    for term in fit.ranef:
        paths.append(plot_caterpillar(fit, d / f"caterpillar_{_safe(term)}.png", term=term))
    return paths


# --------------------------------------------------------------------------- leverage


def leverage_label(index, i: int) -> str:
    """The name of row ``i`` (position among the rows used): its index label, 1-based (R's
    row names "1", "2", …) when the data had pandas' default 0-based integer index."""
    lab = index[i]
    if isinstance(index, pd.RangeIndex) or (
            index.dtype.kind in "iu" and index.min() == 0 and index.is_monotonic_increasing
            and index.is_unique):
        return str(int(lab) + 1)
    return str(lab)


def plot_leverage(fit, path, *, title=None, label: int = 3) -> Path:
    """Studentized residuals against leverage h_i, with the Cook's distance contours
    D = 0.5 and 1 (D = r² h / (p (1 − h)) for a studentized r); the ``label`` rows of
    largest Cook's distance are named as lme4 names them: by their 1-based row number when
    the data have pandas' default index, else by their index label (an id)."""
    h = fit.hatvalues()
    r = fit.rstudent().to_numpy()
    cook = fit.cooks_distance().to_numpy()
    hv = h.to_numpy()
    n, p = len(hv), max(fit.design.n_fixef, 1)
    fig, ax = new_figure((7.5, 5.2))
    ax.scatter(hv, r, s=8 if n > 500 else 16, alpha=0.35 if n > 500 else 0.7, color="C0",
               edgecolors="none", label="observations")
    ax.axhline(0, color="grey", lw=1, ls="--")
    hh = np.linspace(max(hv.min(), 1e-6), min(hv.max() * 1.05, 0.999), 100)
    for D, ls in ((0.5, ":"), (1.0, "--")):
        rr = np.sqrt(D * p * (1 - hh) / hh)
        if np.any(rr < max(np.abs(r).max(), 1) * 1.5):
            ax.plot(hh, rr, color="C3", lw=1, ls=ls, label=f"Cook's D = {D:g}")
            ax.plot(hh, -rr, color="C3", lw=1, ls=ls)
    lim = max(np.nanmax(np.abs(r)), 1) * 1.15
    ax.set_ylim(-lim, lim)
    for i in np.argsort(-np.nan_to_num(cook))[:label]:
        ax.annotate(leverage_label(h.index, i), (hv[i], r[i]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("leverage h (diagonal of the hat matrix)")
    ax.set_ylabel("studentized residuals")
    ax.legend(loc="upper right", fontsize=9, frameon=False)
    ax.grid(alpha=0.3)
    main = f"Residuals vs leverage (n = {n}, Σh = {hv.sum():.4g})"
    set_title(fig, main if title is None else title, fit)
    return save_png(fig, path)
