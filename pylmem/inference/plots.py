"""Pictures of the inference results: the likelihood profile on lme4's ζ scale
(:func:`plot_profile`) and the parametric-bootstrap replicates (:func:`plot_bootstrap`,
also ``BootstrapResult.plot``).  Each writes one PNG and returns its path; the fit-level
diagnostic plots are :mod:`pylmem.reports.plots`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.covariance import sdcor_labels, sdcor_names
from ..util.figures import new_figure, save_png, set_title


def readable_names(fit) -> dict:
    """lme4's parameter names -> readable ones (``confint(oldNames=FALSE)``):
    ``.sig01`` -> ``sd_(Intercept)|Subject``, ``.sig02`` -> ``cor_Days.(Intercept)|Subject``,
    ``.sigma`` -> ``sigma``; fixed effects keep their names."""
    terms = getattr(getattr(fit, "design", None), "terms", None)
    if not terms:
        return {}
    out = dict(zip(sdcor_names([t.q for t in terms]), sdcor_labels(terms)))
    out[".sigma"] = "sigma"
    return out


def _reflected_kde(v, lo, hi, grid):
    """Gaussian-kernel density of ``v`` on ``grid`` with reflection at the bounds lo/hi (a
    correlation's density stays inside [−1, 1] and integrates to one there)."""
    from scipy.stats import gaussian_kde

    k = gaussian_kde(v)
    dens = k(grid)
    if np.isfinite(lo):
        dens = dens + k(2 * lo - grid)
    if np.isfinite(hi):
        dens = dens + k(2 * hi - grid)
    return dens


def plot_profile(prof, path, *, level=0.95, absval=False, title=None) -> Path:
    """lme4's ``xyplot(profile(fit))``: ζ (or |ζ|) against each parameter, one panel per
    parameter, with the ±z of ``level`` and the interval ends marked.

    ``prof``: a :class:`pylmem.inference.profile.Profile` or a fit (profiled here).
    """
    from scipy import stats

    if not hasattr(prof, "frame"):
        prof = prof.profile()
    fr = prof.frame
    pars = [str(p) for p in fr[".par"].cat.categories if (fr[".par"] == p).any()]
    k = len(pars)
    ncols = min(3, k)
    nrows = int(np.ceil(k / ncols))
    fig, axes = new_figure((3.4 * ncols, 2.9 * nrows + 0.6), nrows, ncols, squeeze=False)
    z = stats.norm.ppf((1 + level) / 2)
    ci = prof.confint(level=level)
    names = readable_names(getattr(getattr(prof, "profiler", None), "fit", None))
    for ax, par in zip(axes.ravel(), pars):
        g = fr[fr[".par"] == par].sort_values("value")
        zeta = g[".zeta"].to_numpy()
        ax.plot(g["value"], np.abs(zeta) if absval else zeta, "-o", ms=3, color="C0")
        for h in ([z] if absval else [-z, z]):
            ax.axhline(h, color="grey", lw=0.8, ls="--")
        for v in ci.loc[par]:
            if np.isfinite(v):
                ax.axvline(v, color="C3", lw=0.8, ls=":")
        ax.set_title(names.get(par, par), fontsize=9)
        ax.set_xlabel(names.get(par, par))
        ax.set_ylabel("|ζ|" if absval else "ζ")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    fit = getattr(getattr(prof, "profiler", None), "fit", None)
    main = f"Profile zeta ({int(round(100 * level))}% intervals dotted)"
    set_title(fig, main if title is None else title, fit)
    return save_png(fig, path)


def plot_bootstrap(result, path, *, level=0.95, params=None, title=None) -> Path:
    """Histogram and Gaussian-kernel density of each bootstrap parameter (one panel each).

    ``result``: a :class:`pylmem.inference.bootstrap.BootstrapResult`; ``params``: the columns of
    ``result.t`` to show (default all: .sig01 …, .sigma, fixed effects).  Each panel marks
    the fit's estimate (solid) and the percentile interval at ``level`` (dashed); its
    title names the parameter readably (``sd_(Intercept)|Subject`` for ``.sig01``) and
    counts the replicates used (failed ones are NaN and left out).  The density of a
    standard deviation is reflected at 0 and that of a correlation at ±1, so it stays in
    the parameter's range.
    """
    t = result.t if params is None else result.t[list(params)]
    import warnings

    with warnings.catch_warnings():   # failed replicates are counted in the title instead
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = result.confint(level=level)
    k = t.shape[1]
    ncols = min(3, k)
    nrows = -(-k // ncols)
    fig, axes = new_figure((4.0 * ncols, 3.0 * nrows + 0.8), nrows, ncols, squeeze=False)
    names = readable_names(result.fit)
    for ax, name in zip(axes.ravel(), t.columns):
        label = names.get(name, name)
        lo, hi = (-1.0, 1.0) if label.startswith("cor_") else \
            (0.0, np.inf) if (label.startswith("sd_") or label == "sigma") else (-np.inf, np.inf)
        v = t[name].to_numpy()
        v = v[np.isfinite(v)]
        if len(v):
            ax.hist(v, bins=min(60, max(10, len(v) // 25)), density=True, color="0.8",
                    edgecolor="0.6", linewidth=0.5)
            if len(v) > 2 and np.ptp(v) > 0:
                pad = 0.1 * np.ptp(v)
                grid = np.linspace(max(lo, v.min() - pad), min(hi, v.max() + pad), 200)
                try:
                    ax.plot(grid, _reflected_kde(v, lo, hi, grid), color="C0", linewidth=1.2)
                except np.linalg.LinAlgError:  # pragma: no cover - degenerate sample
                    pass
        ax.axvline(result.t0[name], color="k", linewidth=1.2)
        for x in ci.loc[name]:
            if np.isfinite(x):
                ax.axvline(x, color="C3", linestyle="--", linewidth=1)
        ax.set_title(f"{label}  (n = {len(v)})", fontsize=9)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    main = (f"Parametric bootstrap: {result.nsim} replicates, {result.n_singular} singular, "
            f"{result.n_unconverged} unconverged, {result.n_failed} failed; estimate (solid), "
            f"{100 * level:g}% percentile interval (dashed)")
    set_title(fig, main, result.fit, title)
    return save_png(fig, path)
