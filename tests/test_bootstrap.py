"""Simulation, refits to new responses and the parametric bootstrap (pylmem.bootstrap).

References: regular pylmem fits of the simulated responses (the batched refits must
reproduce them), the model's own moments (Monte-Carlo error bounds), Wald SEs, and
lme4 1.1-31 / pbkrtest (tests/reference/boot_refs.json, made by make_boot_refs.R).
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pylmem
from pylmem.datasets import load
from pylmem.inference import bootstrap as bs

_REFS = Path(__file__).parent / "reference" / "boot_refs.json"
BOOT_REFS = json.loads(_REFS.read_text()) if _REFS.exists() else {}
SLEEP = "Reaction ~ Days + (Days | Subject)"


def _quiet_lmer(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, data, **kw)


@pytest.fixture(scope="module")
def sleep_fit():
    return pylmem.lmer(SLEEP, load("sleepstudy"))


def _rats_male():
    d = load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d[d["gender"] == "Male"].copy()


def _simulated_slopes(seed=3, G=40, m=10):
    """Well-behaved data: 40 groups × 10 obs, intercept sd 2, slope sd 0.5, cor 0.3, σ = 1."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), m)
    x = np.tile(np.linspace(-1, 1, m), G) + rng.normal(0, 0.1, G * m)
    Om = np.array([[4.0, 0.3], [0.3, 0.25]])
    b = rng.multivariate_normal([0, 0], Om, G)
    y = 10 + 2 * x + b[g, 0] + b[g, 1] * x + rng.normal(0, 1, G * m)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:02d}" for i in g]})


# ------------------------------------------------------------------------------ refit(y)
def test_refit_new_response_matches_full_fit(sleep_fit):
    d = load("sleepstudy")
    y = sleep_fit.simulate(1, seed=5)[:, 0]
    m = sleep_fit.refit(y)
    d2 = d.copy()
    d2["Reaction"] = y
    full = _quiet_lmer(SLEEP, d2)
    np.testing.assert_allclose(m.theta, full.theta, rtol=0, atol=1e-7)
    np.testing.assert_allclose(m.beta, full.beta, rtol=1e-10)
    assert m.loglik == pytest.approx(full.loglik, rel=1e-12)
    assert m.sigma == pytest.approx(full.sigma, rel=1e-10)
    # the ML refit and reml= keep working
    ml = sleep_fit.refit(reml=False)
    assert not ml.reml and ml.loglik == pytest.approx(-875.96967, abs=1e-4)   # lme4 logLik(ML)
    assert sleep_fit.refit(y, reml=False).reml is False
    with pytest.raises(TypeError):
        sleep_fit.refit()
    with pytest.raises(ValueError, match="180 rows"):
        sleep_fit.refit(y[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        sleep_fit.refit(np.r_[y[:-1], np.nan])


def test_refit_response_in_data_row_order():
    """A shuffled data frame: y is given in the data's row order, not the model's."""
    d = load("sleepstudy").sample(frac=1.0, random_state=1)
    fit = pylmem.lmer(SLEEP, d)
    y = d["Reaction"].to_numpy() * 1.5 + 3
    m = fit.refit(y)
    d2 = d.copy()
    d2["Reaction"] = y
    full = _quiet_lmer(SLEEP, d2)
    assert m.loglik == pytest.approx(full.loglik, rel=1e-12)
    np.testing.assert_allclose(m.fitted.to_numpy(), full.fitted.to_numpy(), rtol=1e-8)


# ------------------------------------------------------------------------------ simulate
def test_simulate_moments(sleep_fit):
    """mean Xβ̂, covariance ZΣZ' + σ̂²I (one subject's 10 × 10 block, and 0 across subjects)."""
    nsim = 4000
    Y = sleep_fit.simulate(nsim, seed=11)
    assert Y.shape == (180, nsim)
    d = load("sleepstudy")
    X = np.column_stack([np.ones(180), d["Days"]])
    mu = X @ sleep_fit.beta
    Om = sleep_fit.cov_re["Subject"].to_numpy()
    s2 = sleep_fit.sigma2
    rows = np.flatnonzero(d["Subject"] == d["Subject"].iloc[0])
    Zi = X[rows]
    V = Zi @ Om @ Zi.T + s2 * np.eye(len(rows))
    vd = np.diag(V)
    # every row's mean within 4.5 standard errors
    z_mean = (Y.mean(axis=1) - mu) / np.sqrt(np.diag(Zi @ Om @ Zi.T).max() / nsim + s2 / nsim)
    assert np.abs(z_mean).max() < 4.5
    C = np.cov(Y[rows])
    se = np.sqrt((np.outer(vd, vd) + V ** 2) / nsim)
    assert np.abs((C - V) / se).max() < 4.5
    other = np.flatnonzero(d["Subject"] == d["Subject"].iloc[-1])
    Cx = np.cov(Y[rows], Y[other])[:len(rows), len(rows):]
    assert np.abs(Cx / np.sqrt(np.outer(vd, vd) / nsim)).max() < 4.5
    # the first replicates do not depend on nsim; a seed reproduces them
    np.testing.assert_array_equal(Y[:, :3], sleep_fit.simulate(3, seed=11))
    assert not np.allclose(Y[:, 0], sleep_fit.simulate(1, seed=12)[:, 0])


def test_simulate_use_u(sleep_fit):
    """use_u=True: mean = the conditional fitted values, covariance σ̂²I."""
    nsim = 3000
    Y = sleep_fit.simulate(nsim, seed=2, use_u=True)
    f = sleep_fit.fitted.to_numpy()
    z = (Y.mean(axis=1) - f) / (sleep_fit.sigma / np.sqrt(nsim))
    assert np.abs(z).max() < 4.5
    v = Y.var(axis=1, ddof=1)
    assert np.abs(v / sleep_fit.sigma2 - 1).max() < 4.5 * np.sqrt(2 / nsim) * 1.0 + 0.02


def test_simulate_bad_nsim(sleep_fit):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="nsim"):
            sleep_fit.simulate(bad)


# ------------------------------------------------------------------------------ bootstrap = refits
def _check_replicates_against_full(fit, res, formula, data, idx, *, theta_atol=2e-5):
    Y = fit.simulate(res.nsim, seed=res.seed)
    resp = fit.design.response
    for j in idx:
        d2 = data.copy()
        d2[resp] = Y[:, j]
        full = _quiet_lmer(formula, d2, reml=fit.reml)
        th = res.theta.iloc[j].to_numpy()
        np.testing.assert_allclose(th, full.theta, rtol=0, atol=theta_atol * max(1, np.abs(th).max()))
        np.testing.assert_allclose(res.fixef.iloc[j].to_numpy(), full.beta, rtol=1e-6, atol=1e-8)
        assert res.sigma.iloc[j] == pytest.approx(full.sigma, rel=1e-6)
        assert -0.5 * res.objective.iloc[j] == pytest.approx(full.loglik, rel=1e-10, abs=1e-8)
        assert (res.status.iloc[j] == "singular") == full.optsum.singular


def test_bootstrap_replicates_equal_full_fits_reml(sleep_fit):
    res = sleep_fit.bootstrap(400, seed=7)
    assert res.n_failed == 0
    sing = list(np.flatnonzero(res.status == "singular")[:3])
    assert sing, "expected some boundary replicates among 400"
    _check_replicates_against_full(sleep_fit, res, SLEEP, load("sleepstudy"), [0, 1, 2, 3] + sing)


def test_bootstrap_replicates_equal_full_fits_ml_rats():
    d = _rats_male()
    f = "weight ~ week + week2 + (week + week2 | id)"
    fit = pylmem.lmer(f, d, reml=False)
    res = pylmem.bootstrap(fit, 40, seed=3)
    _check_replicates_against_full(fit, res, f, d, [0, 1, 2, 5, 17], theta_atol=5e-5)


def test_bootstrap_multi_term_model_regular_path(monkeypatch):
    """Crossed terms, the lock-step kernel off: the replicates are refitted one by one."""
    monkeypatch.setattr(bs, "MULTI_MAX_M", 0)
    d = load("Penicillin")
    f = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    fit = pylmem.lmer(f, d)
    res = fit.bootstrap(4, seed=1)
    assert list(res.t.columns) == [".sig01", ".sig02", ".sigma", "(Intercept)"]
    _check_replicates_against_full(fit, res, f, d, range(4))


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", ["diameter ~ 1 + (1 | plate) + (1 | sample)",
                                     "y ~ x + (x | a) + (1 | b)", "y ~ x + (1 | c/a)"])
def test_multi_term_lock_step_replicates_equal_full_fits(formula, reml):
    """Several terms, small rest block: the replicates advance in lock step (batched
    deviance, BFGS, one Newton step) and equal full refits of each simulated response
    (crossed, crossed with a slope, nested; unbalanced random cells)."""
    if formula.startswith("diameter"):
        d = load("Penicillin")
    else:
        rng = np.random.default_rng(4)
        n = 300
        a, b, c = rng.integers(0, 25, n), rng.integers(0, 12, n), rng.integers(0, 5, n)
        x = rng.normal(size=n)
        y = 1 + x + rng.normal(size=25)[a] + 0.7 * rng.normal(size=12)[b] + 0.6 * rng.normal(size=5)[c] \
            + 0.4 * x * rng.normal(size=25)[a] + rng.normal(size=n)
        d = pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str), "c": c.astype(str)})
    fit = _quiet_lmer(formula, d, reml=reml)
    eng = bs._Engine(fit, reml)
    assert eng.multi
    res = fit.bootstrap(30, seed=3)
    ok = np.flatnonzero(res.status == "ok")
    assert len(ok) >= 20
    _check_replicates_against_full(fit, res, formula, d, list(ok[:4]))


# ------------------------------------------------------------------------------ result object
def test_bootstrap_result_api(sleep_fit, tmp_path):
    res = sleep_fit.bootstrap(200, seed=1)
    names = [".sig01", ".sig02", ".sig03", ".sigma", "(Intercept)", "Days"]
    assert list(res.t.columns) == names
    assert res.fixef.shape == (200, 2) and list(res.fixef.columns) == ["(Intercept)", "Days"]
    assert res.sigma.shape == (200,) and res.theta.shape == (200, 3)
    assert list(res.theta.columns) == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    cov = res.cov_re["Subject"]
    assert cov.shape == (200, 2, 2)
    np.testing.assert_allclose(np.sqrt(cov[:, 0, 0]), res.t[".sig01"], rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(cov[:, 1, 1]), res.t[".sig03"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.t0.to_numpy()[-2:], sleep_fit.beta)
    from pylmem.model.covariance import sdcor_from_theta

    for j in (0, 1, int(np.argmax(res.status == "singular"))):
        np.testing.assert_allclose(res.t.iloc[j, :3].to_numpy(), sdcor_from_theta(
            res.theta.iloc[j].to_numpy(), res.sigma.iloc[j], [2]), rtol=1e-12, atol=1e-12)
    ci = res.confint()
    assert list(ci.columns) == ["2.5 %", "97.5 %"] and list(ci.index) == names
    assert np.all(ci["2.5 %"] < ci["97.5 %"])
    assert list(res.confint(level=0.9).columns) == ["5 %", "95 %"]
    for m in ("basic", "norm"):
        c = res.confint(method=m)
        assert np.all(c.iloc[:, 0] < c.iloc[:, 1])
    with pytest.raises(ValueError, match="method"):
        res.confint(method="bca")
    assert res.n_failed + res.n_singular + res.n_unconverged + int((res.status == "ok").sum()) == 200
    assert "200 replicates" in repr(res)
    p = res.plot(tmp_path / "boot.png")
    assert p.exists() and p.stat().st_size > 10_000
    # same seed, same replicates
    again = sleep_fit.bootstrap(200, seed=1)
    np.testing.assert_array_equal(again.t.to_numpy(), res.t.to_numpy())


def test_norm_inter_matches_boot_package_rule():
    """boot's norm.inter: order statistic (R+1)α when integral, else normal-scale interpolation."""
    t = np.arange(1.0, 40.0)      # R = 39: (R+1)·0.025 = 1 exactly -> t_(1); 0.975 -> t_(39)
    np.testing.assert_allclose(bs._norm_inter(t, np.array([0.025, 0.975])), [1.0, 39.0])
    t = np.arange(1.0, 101.0)     # R = 100: rk = 2.525 -> between t_(2) and t_(3)
    z = stats.norm.ppf([0.025, 2 / 101, 3 / 101])
    assert bs._norm_inter(t, np.array([0.025]))[0] == pytest.approx(2 + (z[0] - z[1]) / (z[2] - z[1]))


def test_failed_replicates_are_counted_not_dropped(monkeypatch):
    monkeypatch.setattr(bs, "MULTI_MAX_M", 0)          # the one-by-one refits
    d = load("Penicillin")
    fit = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", d)
    real = bs._refit_model_order
    calls = []

    def flaky(f, y, reml, verbose=False):
        calls.append(1)
        if len(calls) == 2:
            raise np.linalg.LinAlgError("forced")
        return real(f, y, reml, verbose)

    monkeypatch.setattr(bs, "_refit_model_order", flaky)
    with pytest.warns(RuntimeWarning, match="1 of 3 replicates failed"):
        res = fit.bootstrap(3, seed=2)
    assert res.n_failed == 1 and len(res.t) == 3
    assert res.status.iloc[1] == "failed" and res.t.iloc[1].isna().all()
    with pytest.warns(RuntimeWarning, match="1 of 3"):
        res.confint()


def test_unconverged_replicates_keep_their_estimates(monkeypatch):
    monkeypatch.setattr(bs, "MULTI_MAX_M", 0)          # the one-by-one refits
    d = load("Penicillin")
    fit = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", d)
    real = bs._refit_model_order

    def unconverged(f, y, reml, verbose=False):
        m = real(f, y, reml, verbose)
        m.optsum.converged = False
        return m

    monkeypatch.setattr(bs, "_refit_model_order", unconverged)
    with pytest.warns(RuntimeWarning, match="2 of 2 replicates did not pass"):
        res = fit.bootstrap(2, seed=2)
    assert res.n_unconverged == 2 and res.n_failed == 0
    assert np.isfinite(res.t.to_numpy()).all()
    assert "2 unconverged" in repr(res)


# ------------------------------------------------------------------------------ against theory
def test_bootstrap_sd_of_beta_matches_wald_se():
    d = _simulated_slopes()
    fit = pylmem.lmer("y ~ x + (x | g)", d)
    nsim = 1000
    res = fit.bootstrap(nsim, seed=4)
    assert res.n_failed == 0
    sd = res.fixef.std().to_numpy()
    se = fit.stderr.to_numpy()
    # the SD of a normal sample of size nsim has relative MC error 1/sqrt(2 nsim) = 2.2%
    assert np.abs(sd / se - 1).max() < 4 * np.sqrt(1 / (2 * nsim)) + 0.03
    # the bootstrap mean of β̂ is unbiased for the simulating β̂
    z = (res.fixef.mean().to_numpy() - fit.beta) / (se / np.sqrt(nsim))
    assert np.abs(z).max() < 4.5


def test_percentile_intervals_match_lme4(sleep_fit):
    """lme4's confint(method="boot") (bootMer, nsim = 2000): endpoints agree within MC error."""
    ref = BOOT_REFS["sleepstudy"]
    nsim = ref["nsim"]
    res = sleep_fit.bootstrap(nsim, seed=ref["seed"])
    ci = res.confint()
    assert list(ci.index) == ref["names"]
    np.testing.assert_allclose(res.t0.to_numpy(), ref["t0"], rtol=2e-5)
    sd = np.asarray(ref["sd"])
    # SE of an empirical 2.5% quantile: sqrt(a(1-a)/nsim)/φ(z_a) SD = 0.06 SD for nsim = 2000;
    # two independent runs: √2 times that; 4.5 standard errors allowed
    se_q = np.sqrt(0.025 * 0.975 / nsim) / stats.norm.pdf(stats.norm.ppf(0.025)) * sd
    tol = 4.5 * np.sqrt(2) * se_q
    assert np.all(np.abs(ci["2.5 %"].to_numpy() - ref["lower"]) < tol)
    assert np.all(np.abs(ci["97.5 %"].to_numpy() - ref["upper"]) < tol)
    # bootstrap SDs agree within MC error (relative 1/sqrt(2 nsim) each; 10% covers the tails)
    np.testing.assert_allclose(res.t.std().to_numpy(), sd, rtol=0.1)


# ------------------------------------------------------------------------------ pb_anova
def test_pb_anova_gmo_matches_pbkrtest():
    ref = BOOT_REFS["gmo"]
    dm = _rats_male()
    h0 = pylmem.lmer("weight ~ week + week2 + (week + week2 | id)", dm, reml=False)
    h1 = pylmem.lmer("weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)",
                     dm, reml=False)
    nsim = 500
    pb = pylmem.pb_anova(h0, h1, nsim, seed=1)
    t = pb.test
    # the observed LRT is anova's; lme4 1.1-31 stops short on these fits (convergence
    # warnings in make_boot_refs.R), so its statistic differs in the second decimal
    chisq = pylmem.anova(h0, h1).loc["h1", "Chisq"]     # rows named by the variables
    assert t.loc["LRT", "stat"] == pytest.approx(chisq, rel=1e-12)
    assert t.loc["LRT", "stat"] == pytest.approx(ref["LRT"], abs=0.05)
    assert t.loc["LRT", "df"] == ref["df"] == 2
    assert t.loc["LRT", "p.value"] == pytest.approx(stats.chi2.sf(chisq, 2), rel=1e-12)
    # PB p-values: binomial MC error of both runs (pbkrtest used ref['nsim'] samples)
    p = ref["p_PB"]
    se = np.sqrt(p * (1 - p) * (1 / nsim + 1 / ref["nsim"]))
    assert abs(pb.p_value - p) < 4.5 * se
    assert abs(t.loc["Gamma", "p.value"] - ref["p_gamma"]) < 4.5 * se
    # the reference distribution's mean ≈ pbkrtest's (χ²_2 would give 2)
    assert np.mean(pb.ref[pb.ref > 0]) == pytest.approx(ref["ref_mean"], rel=0.25)
    assert len(pb.ref) + pb.n_failed == nsim
    assert "PBtest" in repr(pb)


def test_pb_anova_checks_models(sleep_fit):
    d = load("sleepstudy")
    m0 = pylmem.lmer("Reaction ~ 1 + (Days | Subject)", d)
    with pytest.raises(ValueError, match="smaller model"):
        pylmem.pb_anova(sleep_fit, m0, 10)
    other = load("Dyestuff")
    with pytest.raises(ValueError, match="same data"):
        pylmem.pb_anova(pylmem.lmer("Yield ~ 1 + (1 | Batch)", other), sleep_fit, 10)


def test_bootstrap_equivariant_under_response_shift(sleep_fit):
    """y + c: with the same seed every replicate's intercept moves by c, nothing else."""
    d = load("sleepstudy")
    d["Reaction"] = d["Reaction"] + 1000.0
    shifted = pylmem.lmer(SLEEP, d)
    a = sleep_fit.bootstrap(100, seed=9).t
    b = shifted.bootstrap(100, seed=9).t
    np.testing.assert_allclose(b["(Intercept)"] - 1000.0, a["(Intercept)"], rtol=0, atol=1e-6)
    cols = [c for c in a.columns if c != "(Intercept)"]
    np.testing.assert_allclose(b[cols].to_numpy(), a[cols].to_numpy(), rtol=1e-5, atol=1e-6)


def test_bootstrap_progress_line(sleep_fit, capsys):
    sleep_fit.bootstrap(20, seed=1, verbose=True)
    err = capsys.readouterr().err
    assert "bootstrap: 20/20 replicates" in err
    sleep_fit.bootstrap(20, seed=1, verbose=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_boundary_replicates_q3_match_full_fits():
    """A q = 3 model whose x² variance is 0: most replicates are singular.  Each batched
    replicate must carry the regular fitter's status and an objective no worse than its."""
    rng = np.random.default_rng(5)
    G, m = 30, 6
    g = np.repeat(np.arange(G), m)
    x = np.tile(np.arange(m, dtype=float), G)
    b0, b1 = rng.normal(0, 3, G), rng.normal(0, 0.5, G)
    y = 10 + 2 * x - 0.1 * x ** 2 + b0[g] + b1[g] * x + rng.normal(0, 1, G * m)
    d = pd.DataFrame({"y": y, "x": x, "x2": x ** 2, "g": [f"g{i}" for i in g]})
    f = "y ~ x + x2 + (x + x2 | g)"
    fit = _quiet_lmer(f, d, reml=False)
    nsim = 30
    res = fit.bootstrap(nsim, seed=1)
    assert res.n_singular > nsim // 3
    Y = fit.simulate(nsim, seed=1)
    for j in range(nsim):
        d2 = d.copy()
        d2["y"] = Y[:, j]
        with bs._one_blas_thread():
            full = _quiet_lmer(f, d2, reml=False)
        status = "unconverged" if not full.converged else ("singular" if full.optsum.singular else "ok")
        assert res.status.iloc[j] == status
        assert res.objective.iloc[j] <= full.objective + 1e-6


def test_pb_anova_reference_distribution_is_refits_of_simulated_data():
    """m0 and m1 sorted by different grouping factors (sample vs plate): each replicate's
    LRT* is the deviance difference of the two models refitted to the same simulated y."""
    d = load("Penicillin")
    m0 = pylmem.lmer("diameter ~ 1 + (1 | sample)", d, reml=False)
    m1 = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", d, reml=False)
    assert not np.array_equal(m0.design.order, m1.design.order)
    nsim = 4
    pb = pylmem.pb_anova(m0, m1, nsim, seed=3)
    Y = m0.simulate(nsim, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a few refits are singular
        expect = [m0.refit(Y[:, j]).objective - m1.refit(Y[:, j]).objective for j in range(nsim)]
    np.testing.assert_allclose(pb.ref, expect, rtol=1e-6, atol=1e-6)
    assert pb.test.loc["LRT", "stat"] == pytest.approx(m0.objective - m1.objective, rel=1e-12)


def test_bootstrap_use_u_and_em_fit():
    """use_u=True: the responses vary only by residual noise, so β̂* varies less; an EM fit
    (ML) is bootstrapped by ML refits, matching the profiled fit's bootstrap."""
    d = load("sleepstudy")
    ml = pylmem.lmer(SLEEP, d, reml=False)
    free = ml.bootstrap(300, seed=4).fixef.std()
    cond = ml.bootstrap(300, seed=4, use_u=True).fixef.std()
    assert np.all(cond.to_numpy() < 0.75 * free.to_numpy())   # measured ratios 0.55, 0.47
    em_fit = pylmem.lmer(SLEEP, d, reml=False, method="em")
    a = em_fit.bootstrap(50, seed=4)
    b = ml.bootstrap(50, seed=4)
    assert not em_fit.reml
    np.testing.assert_allclose(a.t.to_numpy(), b.t.to_numpy(), rtol=1e-4, atol=1e-4)
