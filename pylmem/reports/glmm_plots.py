"""Plots of GLMM fits: the binned residual plot (Gelman & Hill; R's ``arm::binnedplot``).

For a binary or count response the raw residuals y − μ̂ are uninformative point by point;
averaged within bins of the fitted values they should scatter around 0 inside ±2 standard
errors of the bin mean, √(Σ V(μ̂_i)/m_i) / n_bin.  Bins are equal-count quantile bins
(√n of them by default, at least 5 rows each, as ``binnedplot``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..util.figures import new_figure, save_png, set_title


def binned_residuals(fit, n_bins: int | None = None) -> pd.DataFrame:
    """Per bin of fitted values: mean fitted, mean residual (y − μ̂), its ±2 SE band, count.

    Parameters
    ----------
    fit : GlmerFit
        A fitted GLMM.
    n_bins : int, optional
        Number of bins (default ⌊√n⌋, capped so that each bin has at least 5 rows).

    Returns
    -------
    DataFrame
        Columns ``fitted``, ``residual``, ``se2``, ``n``.
    """
    mu = fit.mu_model_order()
    r = fit.design.y - mu
    var = fit.family.variance(mu) / np.maximum(fit.prob.wt, 1e-300)
    n = len(mu)
    if n_bins is None:
        n_bins = int(np.sqrt(n))
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(max(1, min(n_bins, n // 5 if n >= 5 else 1)))
    order = np.argsort(mu, kind="stable")
    groups = np.array_split(order, n_bins)
    rows = [(mu[g].mean(), r[g].mean(), 2.0 * np.sqrt(var[g].sum()) / len(g), len(g)) for g in groups]
    return pd.DataFrame(rows, columns=["fitted", "residual", "se2", "n"])


def plot_binned_residuals(fit, n_bins: int | None = None, path=None, title=None):
    """The binned residual plot of ``fit``; saved as PNG when ``path`` is given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    b = binned_residuals(fit, n_bins)
    fig, ax = new_figure((6.0, 4.2))
    ax.plot(b["fitted"], b["se2"], color="0.5", lw=1)
    ax.plot(b["fitted"], -b["se2"], color="0.5", lw=1)
    ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
    outside = np.abs(b["residual"]) > b["se2"]
    ax.scatter(b["fitted"][~outside], b["residual"][~outside], s=14, color="C0")
    ax.scatter(b["fitted"][outside], b["residual"][outside], s=18, color="C3",
               label=f"{int(outside.sum())} of {len(b)} bins outside ±2 SE")
    ax.set_xlabel("Expected values (mean fitted in bin)")
    ax.set_ylabel("Average residual (y − fitted)")
    ax.legend(loc="best", fontsize=8, frameon=False)
    set_title(fig, "Binned residual plot", fit, title)
    if path is not None:
        save_png(fig, path)
    return fig
