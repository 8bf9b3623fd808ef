"""Fit a linear mixed model to a Dask DataFrame: data larger than one machine.

The profiled deviance depends on the rows only through cross-products that add over row
partitions (:mod:`pylmem.numerics.crossprod`).  So the fit is three steps, one module each:

1. the **levels pass** (:mod:`pylmem.scaleout.plan`): the levels of every grouping factor
   (and of every categorical fixed-effects column) are agreed across partitions first, so
   that every partition codes its rows against the same global levels;
2. the **statistics pass** (:mod:`pylmem.scaleout.statistics`, reduced by
   :mod:`pylmem.scaleout.reduce`): each partition, where it lives, builds its y, X, Z and
   codes and forms their cross-products plus a few counts; the per-partition results are
   added up;
3. here, the reduced statistics go to the same profiled deviance, optimiser (or EM) and
   fitted state as an in-memory fit, on the client.

Memory per worker is bounded by one partition plus three statistics objects (a running
total, the partition's own, their sum), whose size depends on the number of levels
(L (q² + q r) numbers per term), not on the number of rows or partitions.  Row-level
results (fitted values, residuals, predictions) are lazy Dask series computed per partition
(:mod:`pylmem.scaleout.results`).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..estimation.convergence import ConvergenceWarning, check_em_optimum
from ..estimation.optimize import optimize_theta
from ..estimation.state import FitState
from ..numerics.checks import check_residual_variance
from ..numerics.deviance import ProfiledDeviance
from ..util.progress import Progress
from .plan import Plan, build_plan
from .reduce import require_dask
from .results import DaskRows
from .statistics import (
    ScaleView,
    collect_statistics,
    fit_em_stats,
    rank_deficient,
    start_theta_stats,
)


@dataclass
class DaskTerm:
    """A random-effects term of a Dask fit: as :class:`~pylmem.model.design.RandomTerm` without
    the per-row arrays ``Z`` and ``codes`` (they stay in the partitions)."""

    name: str
    group: tuple
    coef_names: list
    levels: np.ndarray
    expr: str
    spec: object
    columns: list
    group_values: object = None   # each grouping column's distinct values (levels by value)
    level_codes: object = None    # (L, len(group)) indices of each level's values into them

    @property
    def q(self):
        return len(self.coef_names)

    @property
    def n_levels(self):
        return len(self.levels)

    @property
    def n_theta(self):
        return self.q * (self.q + 1) // 2


@dataclass
class DaskDesign:
    """The design of a Dask fit: everything :class:`~pylmem.model.design.ModelDesign` has except
    the n rows, which stay in ``ddf`` (the lazy frame) and are reached through ``plan``."""

    formula: str
    parsed: object
    fixef_names: list
    terms: list
    n_obs: int
    n_dropped: int
    fixed_spec: object
    dropped_columns: list
    ddf: object
    plan: Plan
    response_fingerprint: np.ndarray = None   # what anova compares (no rows kept)
    # no prior weights, offset= or aliased names on the Dask path (lmer refuses them);
    # offset(expr) terms of the formula are evaluated per partition (plan.offset)
    weights: object = None
    offset: object = None
    weights_name: object = None
    offset_exprs: tuple = ()
    offset_arg: object = None
    aliases: object = None

    @property
    def n_fixef(self):
        return len(self.fixef_names)

    @property
    def response(self):
        return self.parsed.response

    @property
    def factors(self):
        return tuple(self.plan.factors)

    @property
    def y(self):
        raise AttributeError("a Dask fit keeps no rows: use fit.ddf / fit.fitted (lazy)")


# ---------------------------------------------------------------------------- the fit


class DaskFit(DaskRows, FitState):
    """A fit to a Dask DataFrame: the fitted state with lazy row-level results (the user's
    hub, with every capability method, is :class:`pylmem.api.lmer.DaskLmerFit`)."""


def lmer_dask(formula, ddf, *, reml=True, method="profiled", factors=(), verbose=None,
              em_options=None, cls=DaskFit):
    """``pylmem.lmer`` for a dask DataFrame (see the module docstring); the result is an
    instance of ``cls``."""
    require_dask()
    t0 = time.perf_counter()
    if method not in ("profiled", "em"):
        raise ValueError(f"method must be 'profiled' or 'em', got {method!r}")
    if method == "em" and reml:
        raise ValueError("method='em' fits by maximum likelihood: pass reml=False")
    times = {}
    plan = build_plan(formula, ddf, factors=factors, verbose=verbose)
    times["levels"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    cp, rs = collect_statistics(plan, ddf, verbose=verbose)
    if rs.n_dropped and (plan.cat_levels or any((c == 0).any() for c in rs.counts)):
        # rows dropped for missing values took levels with them: agree levels on complete rows
        plan = build_plan(formula, ddf, factors=factors, verbose=verbose, complete_rows=True)
        cp, rs = collect_statistics(plan, ddf, verbose=verbose)
    p = len(plan.fixef_names)
    keep = rank_deficient(cp.WtW, plan.fixef_names, np.diag(cp.WtW)[:p]) if p else []
    dropped = [plan.fixef_names[j] for j in range(p) if j not in set(keep)]
    if dropped:
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                      f"column(s): {', '.join(dropped)}", stacklevel=2)
        plan.fixed_cols = [plan.fixed_cols[j] for j in keep]
        plan.fixef_names = [plan.fixef_names[j] for j in keep]
        cp, rs = collect_statistics(plan, ddf, verbose=verbose)
    times["statistics"] = time.perf_counter() - t1
    if rs.n == 0:
        raise ValueError(f"no rows left after dropping {rs.n_dropped} rows with missing values")
    for t in plan.terms:
        if t.n_levels >= rs.n:
            raise ValueError(f"number of levels of grouping factor {t.name!r} ({t.n_levels}) "
                             f"must be less than the number of observations ({rs.n})")
    design = DaskDesign(formula, plan.parsed, list(plan.fixef_names),
                        [DaskTerm(t.name, t.group, t.coef_names, t.levels.labels, t.expr, t.spec,
                                  t.columns, t.levels.group_values, t.levels.level_codes)
                         for t in plan.terms],
                        rs.n, rs.n_dropped, plan.fixed_spec, dropped, ddf, plan,
                        rs.yprint, offset_exprs=list(plan.offset_exprs))
    t2 = time.perf_counter()
    check_residual_variance(cp, design.response)
    dev = ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms],
                           reml=reml)
    em_result = None
    theta0 = start_theta_stats(cp, rs, [t.q for t in design.terms])
    if method == "em":
        em_result = fit_em_stats(cp, rs, design, **(em_options or {}))
        opt = check_em_optimum(dev, em_result)   # no prior weights on the Dask path
    else:
        progress = Progress(verbose=verbose, label="lmer")
        opt = optimize_theta(dev, ScaleView(cp, rs.n), theta0=theta0, verbose=verbose,
                             callback=progress.update)
        progress.close()
    times["optimise"] = time.perf_counter() - t2
    fit = cls(design, cp, dev, opt, reml=reml, method=method, em_result=em_result)
    fit.row_stats = rs
    fit.phase_seconds = times
    fit.fit_seconds = time.perf_counter() - t0
    for w in opt.warnings:
        warnings.warn(w, ConvergenceWarning, stacklevel=3)
    return fit
