"""Section 3 of the seed (M. Lavielle, "An EM algorithm for linear mixed effects models",
2019) rerun with pylmem: the rat weight data.

3.1  a degree-2 polynomial growth curve with individual coefficients, by the seed's two EM
     versions (``em.lmem`` and the simplified ``em2.lmem``, 50 iterations each) and by
     ``lmer`` (ML); then different coefficients for males and females, and the
     likelihood-ratio test of the gender effect.
3.2  among males: do the GMO and control groups grow differently?  The likelihood-ratio
     test by χ² and by the parametric bootstrap (pbkrtest's PBmodcomp), and bootstrap
     intervals for the H1 model.

Usage::

    python examples/rat_weight.py [PLOT_DIR]        # default ./rat_weight_plots

Runs in a few seconds; the numbers printed are the seed's (R, lme4 1.1) to the digits shown.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import pylmem
from pylmem.reports import plots
from pylmem.inference.lrt import anova   # = pylmem.anova
from pylmem.estimation.em import em         # = pylmem.em (the seed's em.lmem / em2.lmem)

pd.set_option("display.width", 120)


# --------------------------------------------------------------------------- printing


def _fmt(x: float) -> str:
    return f"{x:.7g}"


def print_named(title: str, values, names) -> None:
    """An R named vector: names over values."""
    s = pd.Series(np.asarray(values, dtype=float), index=[str(n) for n in names])
    print(f"${title}")
    print(s.to_frame().T.to_string(index=False, float_format=_fmt))
    print()


def print_matrix(title: str, M, names) -> None:
    names = [str(n) for n in names]
    print(f"${title}")
    print(pd.DataFrame(np.asarray(M, dtype=float), index=names, columns=names)
          .to_string(float_format=_fmt))
    print()


def print_em(res) -> None:
    """Print an EM result as the seed prints ``em.lmem``'s list."""
    print_named("beta", res.beta, res.names)
    print_matrix("Omega", res.omega, res.re_names)
    print(f"$sigma2\n[1] {_fmt(res.sigma2)}\n")
    print_named("LL", [res.loglik, res.aic, res.bic], ["logLik", "AIC", "BIC"])


def print_lmer(fit) -> None:
    """The seed's ``res.lmer``: fixef, VarCorr, sigma^2, then logLik/AIC/BIC."""
    print_named("beta", fit.fixef.to_numpy(), fit.fixef.index)
    (name, Om), = fit.cov_re.items()
    print_matrix("Omega", Om.to_numpy(), Om.index)
    print(f"$sigma2\n[1] {_fmt(fit.sigma2)}\n")
    print_named("LL", [fit.loglik, fit.aic, fit.bic], ["logLik", "AIC", "BIC"])


def fit_ml(formula: str, data: pd.DataFrame):
    """lmer by ML, reporting any convergence warning as lme4 would."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pylmem.ConvergenceWarning)
        fit = pylmem.lmer(formula, data, reml=False)
    for w in caught:
        print(f"## Warning: {w.message}")
    if not caught:
        print(f"## (converged without warnings: logLik {fit.loglik:.6f})")
    return fit


def lrt(table, row=-1):
    """(Chisq, Df, p) of a row of an anova table."""
    return (float(table["Chisq"].iloc[row]), int(table["Df"].iloc[row]),
            float(table["Pr(>Chisq)"].iloc[row]))


def header(text: str) -> None:
    print("\n" + "=" * 78 + f"\n{text}\n" + "=" * 78)


# --------------------------------------------------------------------------- analysis


def main(plot_dir="rat_weight_plots") -> int:
    t0 = time.perf_counter()
    plot_dir = Path(plot_dir)

    d = pylmem.datasets.load("ratWeight")            # d <- read.csv("ratWeight.csv")
    d["week2"] = d["week"] ** 2                       # d['week2'] <- d["week"]^2
    print(f"ratWeight: {len(d)} observations of {d['id'].nunique()} rats "
          f"({', '.join(d.columns)})")

    # ---------------------------------------------------------------- 3.1 polynomial model
    header("3.1  Fitting a polynomial model")
    X = pd.DataFrame({"1": 1.0, "week": d["week"], "week2": d["week2"]})

    print("> res.em1 <- em.lmem(y=d['weight'], id=d[['id']], X=X, A=X)   # 50 iterations\n")
    res_em1 = em(d["weight"], d["id"], X, X, n_iter=50)
    print_em(res_em1)

    print("> res.em1b <- em2.lmem(y=d['weight'], id=d[['id']], X=X, A=X)  # simplified EM\n")
    res_em1b = em(d["weight"], d["id"], X, X, n_iter=50, simplified=True)
    print_em(res_em1b)
    print("The two versions of EM agree: max |Δβ| = "
          f"{np.abs(res_em1.beta - res_em1b.beta).max():.2g}, "
          f"max |ΔΩ| = {np.abs(res_em1.omega - res_em1b.omega).max():.2g}, "
          f"|Δσ²| = {abs(res_em1.sigma2 - res_em1b.sigma2):.2g}")

    print("\n> r1 <- lmer(weight ~ week + week2 + (week + week2 | id), data=d, REML=FALSE)")
    r1 = fit_ml("weight ~ week + week2 + (week + week2 | id)", d)
    print()
    print_lmer(r1)
    print(f"EM after 50 iterations is {r1.loglik - res_em1.loglik:.2g} below the maximum "
          f"of the log-likelihood ({r1.loglik:.4f}).")

    header("Different coefficients for males and females")
    male = (d["gender"] == "Male").astype(float)
    X2 = pd.DataFrame({"Intercept": 1.0, "week": d["week"], "week2": d["week2"], "gender": male,
                       "Male:week": d["week"] * male, "Male:week2": d["week2"] * male})
    print("> res.em2 <- em.lmem(y=d['weight'], id=d[['id']], X=X, A=X[,1:3])\n")
    res_em2 = em(d["weight"], d["id"], X2, X2.iloc[:, :3], n_iter=50)
    print_em(res_em2)

    print("> r2 <- lmer(weight ~ gender*week + gender*week2 + (week + week2 | id), "
          "data=d, REML=FALSE)")
    r2 = fit_ml("weight ~ gender*week + gender*week2 + (week + week2 | id)", d)
    print()
    print_lmer(r2)

    print("> anova(r1, r2)")
    a12 = anova(r1, r2, names=["r1", "r2"], data_name="d")
    print(a12)
    chisq, df, p = lrt(a12)
    print(f"\nConclusion: the gender effect is highly significant "
          f"(Chisq = {chisq:.1f} on {df} df, p = {p:.2g}); "
          f"AIC {r1.aic:.0f} -> {r2.aic:.0f}, BIC {r1.bic:.0f} -> {r2.bic:.0f}.")

    # ---------------------------------------------------------------- 3.2 GMO vs control
    header("3.2  Testing differences between control and GMO groups (males)")
    dm = d[d["gender"] == "Male"]
    gmo = (dm["regime"] == "GMO").astype(float)
    Xm = pd.DataFrame({"1": 1.0, "week": dm["week"], "week2": dm["week2"],
                       "week:GMO": dm["week"] * gmo, "week2:GMO": dm["week2"] * gmo})

    print("> em.H0 <- em.lmem(y=dm['weight'], id=dm[['id']], X=X[,1:3], A=X[,1:3])"
          "   # H0: no difference\n")
    em_h0 = em(dm["weight"], dm["id"], Xm.iloc[:, :3], Xm.iloc[:, :3], n_iter=50)
    print_em(em_h0)
    print("> em.H1 <- em.lmem(y=dm['weight'], id=dm[['id']], X=X, A=X[,1:3])"
          "   # H1: different coefficients\n")
    em_h1 = em(dm["weight"], dm["id"], Xm, Xm.iloc[:, :3], n_iter=50)
    print_em(em_h1)
    em_chisq = 2 * (em_h1.loglik - em_h0.loglik)
    print(f"EM: 2 (LL1 - LL0) = {em_chisq:.3f} on 2 df")

    print("\n> lmer.H0 <- lmer(weight ~ week + week2 + (week + week2 | id), data=dm, REML=FALSE)")
    h0 = fit_ml("weight ~ week + week2 + (week + week2 | id)", dm)
    print("> lmer.H1 <- lmer(weight ~ week + week:regime + week2 + week2:regime + "
          "(week + week2 | id), data=dm, REML=FALSE)")
    h1 = fit_ml("weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)", dm)
    print("> summary(lmer.H1)\n")
    print(str(h1.summary()))
    print("\n> anova(lmer.H0, lmer.H1)")
    a01 = anova(h0, h1, names=["lmer.H0", "lmer.H1"], data_name="dm")
    print(a01)
    chisq, df, p = lrt(a01)
    verdict = "not significant" if p >= 0.05 else "significant"
    print(f"\nConclusion: GMO vs control is {verdict} (Chisq = {chisq:.2f} on {df} df, "
          f"p = {p:.2f}); AIC {h0.aic:.1f} vs {h1.aic:.1f}, BIC {h0.bic:.1f} vs {h1.bic:.1f}:")
    print("H0 cannot be rejected: no good reason to conclude that the growth curves of the "
          "two groups differ.")

    # is χ²₂ the right reference distribution for 80 rats?  The parametric bootstrap
    # simulates the LRT under H0 instead (pbkrtest's PBmodcomp)
    print("\n> PBmodcomp(lmer.H1, lmer.H0, nsim = 2000)   # pbkrtest: parametric-bootstrap LRT")
    pb = pylmem.pb_anova(h0, h1, nsim=2000, seed=2019)
    print(pb)
    print(f"\nParametric bootstrap: p = {pb.p_value:.3f} (χ²: p = {p:.3f}); "
          f"{'still not' if pb.p_value >= 0.05 else 'now'} significant at 5%.")
    boot = h1.bootstrap(1000, seed=2019)
    print("\n> confint(lmer.H1, method = 'boot', nsim = 1000)   # percentile intervals")
    print(boot.confint().to_string(float_format=lambda x: f"{x:.4f}"))

    # ---------------------------------------------------------------- plots
    header(f"Plots -> {plot_dir}")
    paths = [plots.plot_em_trace(res_em1, plot_dir / "em_trace_seed_em_lmem.png",
                                 title="Seed's em.lmem on weight ~ 1 + week + week2, "
                                       "(1 + week + week2 | id): 50 iterations"),
             plots.plot_em_trace(res_em1b, plot_dir / "em_trace_seed_em2_lmem.png",
                                 title="Seed's simplified em2.lmem on weight ~ 1 + week + week2, "
                                       "(1 + week + week2 | id): 50 iterations")]
    r1_em = pylmem.lmer("weight ~ week + week2 + (week + week2 | id)", d, reml=False,
                        method="em")
    print(f"lmer(method='em') (SQUAREM to convergence): logLik {r1_em.loglik:.6f} after "
          f"{r1_em.em_result.n_iter} EM updates (profiled: {r1.loglik:.6f})")
    paths += plots.plot_all(r1_em, plot_dir)
    paths.append(boot.plot(plot_dir / "bootstrap_gmo_H1.png"))
    paths.append(plots.plot_caterpillar(r2, plot_dir / "caterpillar_gender_model.png"))
    for p_ in paths:
        print(f"  {p_}")
    print(f"\nDone in {time.perf_counter() - t0:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
