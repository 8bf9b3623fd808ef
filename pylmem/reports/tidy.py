"""Tidy tables of a fit, with broom.mixed's column names.

``tidy``: one row per estimate, columns ``effect, group, term, estimate, std.error,
statistic, df, p.value`` (+ ``conf.low, conf.high``); ``effect`` is "fixed", "ran_pars"
(terms ``sd__X``, ``cor__X.Y``, residual ``sd__Observation`` in group "Residual"),
"ran_vals" (conditional modes with their conditional sd, plus a ``level`` column) or
"ran_coefs".  Fixed-effect intervals are Wald (normal) intervals; ``df`` and ``p.value``
are NaN (lme4 gives none) unless ``ddf="Satterthwaite"`` / ``"Kenward-Roger"`` asks the
fit's lmerTest-style ``coef_table(ddf=)`` for them (as broom.mixed does for lmerTest fits).
``glance``: one row, ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual`` for an ML
fit; a REML fit's criterion is named ``REMLcrit`` in place of ``deviance`` (broom.mixed).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..util.checks import check_level
from ..util.lazy import stats

COLUMNS = ["effect", "group", "level", "term", "estimate", "std.error", "statistic", "df",
           "p.value", "conf.low", "conf.high"]
EFFECTS = ("fixed", "ran_pars", "ran_vals", "ran_coefs")


def _fixed(fit, z, ddf=None):
    est = fit.beta
    se = fit.stderr.to_numpy()
    dfs = pv = np.full(len(est), np.nan)
    if ddf is not None:
        if not hasattr(fit, "coef_table"):
            raise ValueError(f"ddf={ddf!r} needs the fit's coef_table(ddf=) (Satterthwaite / "
                             "Kenward-Roger inference), which this build lacks")
        ct = fit.coef_table(ddf=ddf)
        dfs, pv = ct["df"].to_numpy(dtype=float), ct["Pr(>|t|)"].to_numpy(dtype=float)
    df = pd.DataFrame({"effect": "fixed", "group": None, "term": fit.design.fixef_names,
                       "estimate": est, "std.error": se, "statistic": est / se,
                       "df": dfs, "p.value": pv})
    df["conf.low"], df["conf.high"] = est - z * se, est + z * se
    return df


def _ran_pars(fit):
    """Per term, column by column: sd__a, then cor__a.b for the later coefficients b."""
    rows = []
    for name, C in fit.cov_re.items():
        M, cn = C.to_numpy(), list(C.columns)
        sd = np.sqrt(np.diag(M))
        for j in range(len(cn)):
            rows.append((name, f"sd__{cn[j]}", sd[j]))
            for i in range(j + 1, len(cn)):
                den = sd[i] * sd[j]
                rows.append((name, f"cor__{cn[j]}.{cn[i]}", M[i, j] / den if den > 0 else np.nan))
    rows.append(("Residual", "sd__Observation", fit.sigma))
    df = pd.DataFrame(rows, columns=["group", "term", "estimate"])
    df.insert(0, "effect", "ran_pars")
    return df


def _ran_vals(fit, z):
    out = []
    cv = fit.ranef_condvar()
    for name, re in fit.ranef.items():
        sd = np.sqrt(np.einsum("gii->gi", cv[name]))
        for j, term in enumerate(re.columns):
            est = re[term].to_numpy()
            out.append(pd.DataFrame({"effect": "ran_vals", "group": name,
                                     "level": re.index.astype(str), "term": term,
                                     "estimate": est, "std.error": sd[:, j],
                                     "conf.low": est - z * sd[:, j],
                                     "conf.high": est + z * sd[:, j]}))
    return pd.concat(out, ignore_index=True)


def _ran_coefs(fit):
    out = []
    for name, cf in fit.coef.items():
        long = cf.reset_index(names="level").melt(id_vars="level", var_name="term",
                                                  value_name="estimate")
        long.insert(0, "group", name)
        long.insert(0, "effect", "ran_coefs")
        long["level"] = long["level"].astype(str)
        out.append(long)
    return pd.concat(out, ignore_index=True)


def tidy(fit, effects=("ran_pars", "fixed"), conf_int: bool = False,
         conf_level: float = 0.95, ddf=None) -> pd.DataFrame:
    """broom.mixed's ``tidy(fit, effects=, conf.int=)`` as a pandas DataFrame."""
    if isinstance(effects, str):
        effects = (effects,)
    if not isinstance(effects, (list, tuple)):
        raise ValueError(f"effects must be a name or a list of names among "
                         f"{', '.join(EFFECTS)}, got {effects!r}")
    bad = [e for e in effects if e not in EFFECTS]
    if bad:
        raise ValueError(f"effects must be among {', '.join(EFFECTS)}, got {', '.join(bad)}")
    conf_level = check_level(conf_level, "conf_level")
    if not isinstance(conf_int, (bool, np.bool_)):
        raise ValueError(f"conf_int must be True or False, got {conf_int!r}")
    z = stats.norm.ppf(0.5 + conf_level / 2)
    parts = []
    for e in ("fixed", "ran_pars", "ran_vals", "ran_coefs"):   # broom.mixed's order
        if e in effects:
            parts.append({"fixed": lambda: _fixed(fit, z, ddf), "ran_pars": lambda: _ran_pars(fit),
                          "ran_vals": lambda: _ran_vals(fit, z),
                          "ran_coefs": lambda: _ran_coefs(fit)}[e]())
    df = pd.concat(parts, ignore_index=True)
    cols = [c for c in COLUMNS if c != "level" or "level" in df.columns]
    if not conf_int:
        cols = [c for c in cols if c not in ("conf.low", "conf.high")]
    return df.reindex(columns=cols)


def glance(fit) -> pd.DataFrame:
    """broom.mixed's ``glance``: one-row model summary."""
    crit = "REMLcrit" if fit.reml else "deviance"   # broom.mixed's names
    return pd.DataFrame([{"nobs": fit.n_obs, "sigma": fit.sigma, "logLik": fit.loglik,
                          "AIC": fit.aic, "BIC": fit.bic, crit: fit.objective,
                          "df.residual": fit.df_resid}])
