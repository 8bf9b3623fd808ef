"""matplotlib helpers shared by every plot: a figure on the Agg canvas (no display, pyplot's
global backend left alone, so safe in notebooks and threads), the title naming the model,
and saving as PNG.  Support code: it reads a fit only through ``formula``, ``reml`` and
``method``.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

DPI = 110


def new_figure(figsize, nrows=1, ncols=1, **kw):
    """A Figure on the Agg canvas, outside pyplot: no display, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def model_label(fit) -> str:
    """'<formula>  (ML|REML[, EM])' for an LmerFit; '' when unknown."""
    formula = getattr(fit, "formula", None)
    if not formula:
        return ""
    crit = "REML" if getattr(fit, "reml", False) else "ML"
    if getattr(fit, "method", "profiled") == "em":
        crit += ", EM"
    return f"{formula}  ({crit})"


def set_title(fig, main: str, fit, title=None) -> None:
    label = model_label(fit)
    width = max(40, int(fig.get_figwidth() * 12))     # ~12 characters per inch at 11 pt
    lines = []
    for part in (title if title is not None else main).split("\n") + ([label] if label else []):
        lines += textwrap.wrap(part, width) or [""]
    fig.suptitle("\n".join(lines), fontsize=11)


def save_png(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path
