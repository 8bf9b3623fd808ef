"""Row-level results of a Dask fit as lazy Dask series computed per partition (fitted
values, residuals, predictions), the scaled-residual quantiles from one mergeable histogram
pass, and :class:`DaskRows`, the mixin that gives a fit to a Dask frame these results.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ..estimation.optimize import optimize_theta
from ..model.design import require_rows
from ..numerics.deviance import ProfiledDeviance
from ..postfit.diagnostics import RESIDUAL_TYPES
from ..postfit.predict import predict
from ..reports.summary import Summary
from .reduce import is_dask_frame, reduce_partitions, share
from .statistics import ScaleView, start_theta_stats


def _rows_part(part, func, name, plan, state):
    prepared, _ = plan.prepare(part)
    return pd.Series(func(state, plan, prepared), index=prepared.index, name=name)


def _lazy_rows(fit, func, name):
    """A lazy Dask series: func(state, plan, prepared partition) per partition, over the rows
    the fit used (the small state and plan are graph nodes shared by the partitions)."""
    import dask

    plan = fit.design.plan
    return fit.design.ddf[plan.used].map_partitions(
        _rows_part, func, name, dask.delayed(plan, traverse=False),
        dask.delayed(RowState.of(fit), traverse=False),
        meta=pd.Series(dtype=float, name=name))


def _predict_part(part, light, re_form, allow_new_levels):
    return predict(light, part, re_form=re_form, allow_new_levels=allow_new_levels)


@dataclass
class RowState:
    """What row-level results need of a fit: β̂ and the conditional modes (small)."""

    beta: np.ndarray
    modes: list

    @classmethod
    def of(cls, fit):
        return cls(np.asarray(fit.beta), [np.asarray(m) for m in fit.modes])


def _fitted_rows(state, plan, part):
    out = plan.fixed_matrix(part) @ state.beta
    off = plan.offset(part)
    if off is not None:
        out = out + off
    for t, b in zip(plan.terms, state.modes):
        if len(part):
            out = out + np.einsum("nq,nq->n", plan.term_matrix(t, part), b[t.levels.codes(part, t.group)])
    return out


def _resid_rows(state, plan, part):
    return part[plan.response].to_numpy(dtype=float) - _fitted_rows(state, plan, part)


_H_LO = -10.0       # scaled-residual histogram: lower edge, bin width, number of bins


_H_WIDTH = 1e-4


_H_BINS = 200_000


def _resid_histogram(part, plan, state, sigma):
    """(counts per bin with under/overflow, n, min, max) of one partition's scaled residuals."""
    prepared, _ = plan.prepare(part)
    r = _resid_rows(state, plan, prepared) / sigma
    idx = np.clip(np.floor((r - _H_LO) / _H_WIDTH), -1, _H_BINS).astype(np.int64) + 1
    counts = np.bincount(idx, minlength=_H_BINS + 2)
    return (counts, len(r), r.min() if len(r) else np.inf, r.max() if len(r) else -np.inf)


def _add_hist(a, b):
    return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]))


def scaled_resid_quantiles(fit, probs=(0, .25, .5, .75, 1)) -> pd.Series:
    """Quantiles of the scaled residuals r/σ̂ (R's type 7) from a mergeable histogram.

    One pass: each partition counts its scaled residuals in 2·10^5 bins of width 1e-4 on
    [−10, 10] (plus under/overflow) and keeps its min and max; counts add over partitions.
    An order statistic is placed uniformly within its bin, so a quantile inside [−10, 10]
    is within 1e-4 (one bin) of the exact one; Min and Max are exact.  A quartile outside
    [−10, 10] (a pathological fit) is reported as NaN.
    """
    plan = fit.design.plan
    counts, n, lo, hi = reduce_partitions(
        fit.design.ddf[plan.used].to_delayed(), _resid_histogram,
        (share(plan), share(RowState.of(fit)), fit.sigma), _add_hist, label="residual pass")
    cum = np.cumsum(counts)

    def order_stat(k):                       # k-th smallest (0-based)
        b = int(np.searchsorted(cum, k, side="right"))
        if b == 0 or b == len(counts) - 1:
            return np.nan
        before = cum[b - 1] if b else 0
        x = _H_LO + (b - 1) * _H_WIDTH + _H_WIDTH * (k - before + 0.5) / counts[b]
        return float(np.clip(x, lo, hi))

    out = []
    for p in probs:
        if p == 0:
            out.append(lo)
        elif p == 1:
            out.append(hi)
        else:
            h = (n - 1) * p
            k = int(np.floor(h))
            a = order_stat(k)
            out.append(a + (h - k) * (order_stat(min(k + 1, n - 1)) - a))
    names = {0: "Min", .25: "1Q", .5: "Median", .75: "3Q", 1: "Max"}
    return pd.Series(out, index=[names.get(p, str(p)) for p in probs], name="Scaled residuals")


class DaskRows:
    """Row-level results of a Dask fit, as lazy Dask series (index = the data's index)."""

    @property
    def ddf(self):
        return self.design.ddf

    @property
    def fitted(self):
        """Conditional fitted values Xβ̂ + Zb̂ (lazy, per partition)."""
        return _lazy_rows(self, _fitted_rows, "fitted")

    @property
    def residuals(self):
        """Conditional residuals y − Xβ̂ − Zb̂ (lazy, per partition)."""
        return _lazy_rows(self, _resid_rows, "residuals")

    def predict(self, newdata=None, *, re_form=None, allow_new_levels=False, se_fit=False,
                interval=None, level=0.95):
        """lme4's predict(): a lazy Dask series for the fitted data or a Dask ``newdata``;
        a pandas ``newdata`` gives a pandas Series (as an in-memory fit), or with ``se_fit`` /
        ``interval`` the DataFrame of an in-memory fit (standard errors and intervals need
        the factor at θ̂, which a Dask fit has, and newdata's rows, so a pandas newdata)."""
        if se_fit or interval is not None:
            if newdata is None or is_dask_frame(newdata):
                raise NotImplementedError(
                    "predict(se_fit=True) / predict(interval=...) of a Dask fit needs a pandas "
                    "newdata (e.g. fit.predict(ddf.head(1000), se_fit=True)): standard errors "
                    "of the fitted rows are not computed lazily")
            return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels,
                           se_fit=se_fit, interval=interval, level=level)
        if newdata is None:
            if re_form is None:
                return self.fitted.rename("predicted")
            newdata = self.design.ddf
        if not is_dask_frame(newdata):
            return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
        from types import SimpleNamespace as NS

        import dask

        d = self.design
        light = NS(design=NS(fixed_spec=d.fixed_spec, parsed=d.parsed, fixef_names=d.fixef_names,
                             terms=d.terms, offset_exprs=list(d.offset_exprs),
                             factors=tuple(d.plan.factors), aliases=None),
                   fixef=self.fixef, modes=self.modes, formula=self.formula)
        return newdata.map_partitions(_predict_part, dask.delayed(light, traverse=False),
                                      re_form, allow_new_levels,
                                      meta=pd.Series(dtype=float, name="predicted"))

    def hat_matrix(self, max_n: int = 5000):
        raise NotImplementedError("hat_matrix() is not available for a Dask fit: it forms an "
                                  "n × n matrix (use edf, or fit in memory)")

    def residuals_of(self, type: str = "response", scaled: bool = False):  # noqa: A002
        """lme4's residual types as a lazy Dask series (no prior weights on the Dask path, so
        every type is y − ŷ; ``scaled``: divided by σ̂)."""
        if type not in RESIDUAL_TYPES:
            raise ValueError(f"type must be one of {', '.join(RESIDUAL_TYPES)}, got {type!r}")
        r = self.residuals
        return (r / self.sigma if scaled else r).rename(f"residuals.{type}")

    def hatvalues(self):
        require_rows(self.design, "hatvalues()")

    def cooks_distance(self):
        require_rows(self.design, "cooks_distance()")

    def rstudent(self):
        require_rows(self.design, "rstudent()")

    def influence(self, groups=None, *, data=None):
        require_rows(self.design, "influence()")

    def simulate(self, nsim: int = 1, seed=None, use_u: bool = False):
        require_rows(self.design, "simulate()")

    def bootstrap(self, nsim: int, seed=None, **kw):
        require_rows(self.design, "bootstrap()")

    def anova(self, type=3, ddf="Satterthwaite"):
        require_rows(self.design, "anova(fit) (lmerTest's F tests; anova(m0, m1) works)")

    def fitted_model_order(self):
        require_rows(self.design, "fitted_model_order() (use fit.fitted, lazy)")

    def data_series(self, a, name):
        require_rows(self.design, "data_series()")

    def refit(self, y=None, *, reml: bool | None = None):
        """The same model refitted by ML or REML from the stored statistics (no data pass);
        a new response ``y`` needs the rows (NotImplementedError)."""
        if y is not None:
            require_rows(self.design, "refit(y)")
        if reml is None:
            raise TypeError("refit() needs a new response y, or reml=True/False")
        if reml == self.reml and self.method == "profiled":
            return self
        qs = [t.q for t in self.design.terms]
        dev = ProfiledDeviance(self.cp, qs, [t.n_levels for t in self.design.terms], reml=reml)
        opt = optimize_theta(dev, ScaleView(self.cp, self.n_obs),
                             theta0=start_theta_stats(self.cp, self.row_stats, qs), verbose=False)
        fit = type(self)(self.design, self.cp, dev, opt, reml=reml, method="profiled")
        fit.row_stats = self.row_stats
        return fit

    @cached_property
    def resid_quantiles(self) -> pd.Series:
        """Scaled-residual quantiles (Min, 1Q, Median, 3Q, Max), from one more pass over
        the data: see :func:`scaled_resid_quantiles` (Min and Max exact, quartiles to
        within 1e-4 in units of σ̂)."""
        return scaled_resid_quantiles(self)

    def summary(self):
        """lme4's summary(); the scaled-residual quartiles are approximate (see
        ``resid_quantiles``)."""
        fit = self

        class DaskSummary(Summary):
            def __init__(self, fit, data_name=None, **kw):
                class _Proxy:
                    def __getattr__(_, name):
                        return getattr(fit, name)
                    residuals = pd.Series([0.0])

                    def residuals_of(_, *args, **kw):   # quantiles replaced below
                        return pd.Series([0.0])
                super().__init__(_Proxy(), data_name, **kw)
                self.fit = fit
                self.scaled_residuals = None
                self.resid_quantiles = fit.resid_quantiles

            def lines(self):
                out = super().lines()
                i = out.index("Scaled residuals:") if "Scaled residuals:" in out else None
                if i is not None:
                    out[i] = "Scaled residuals (quartiles to ±1e-4, from a histogram):"
                return out

        return DaskSummary(fit)
