"""Covariance structures of random-effects terms and the seed's mask.

Reference values: tests/reference/structures_refs.json, made by
tests/reference/make_structures_refs.R: nlme 3.1 (pdDiag, pdCompSymm) and glmmTMB 1.1.5
(diag, cs = pylmem's hcs, ar1), ML and REML, each the best of two optimisers.  pylmem's
optimum must be at least as good (log-likelihood ≥ the reference − 1e-7) and equal to it
(|Δ| < 1e-6): the same criterion, the true optimum.  The simulated AR(1) data
(tests/reference/ar1_sim.csv) are written by the same script.  As lme4 2.0 and glmmTMB,
cs() has a variance per column unless hom = TRUE; ar1() one variance unless hom = FALSE.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.datasets import load
from pylmem.estimation.convergence import ConvergenceWarning
from pylmem.model.covariance import TermStructure

HERE = Path(__file__).parent / "reference"
REFS = json.loads((HERE / "structures_refs.json").read_text())
CASES = [k for k in REFS if k != "provenance"]


def data_of(name):
    if name == "ar1_sim":
        d = pd.read_csv(HERE / "ar1_sim.csv")
        d["ftime"] = d["time"].astype(str)
        return d
    return load(name)


_FITS = {}


def fit_of(formula, data, reml, **kw):
    key = (formula, data, reml, str(kw))
    if key not in _FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[key] = pylmem.lmer(formula, data_of(data), reml=reml, **kw)
    return _FITS[key]


@pytest.mark.parametrize("name", CASES)
def test_structure_matches_nlme_and_glmmtmb(name):
    r = REFS[name]
    fit = fit_of(r["formula"], r["data"], r["reml"])
    assert fit.converged
    assert fit.loglik >= r["logLik"] - 1e-7, "pylmem's optimum is worse than R's"
    assert abs(fit.loglik - r["logLik"]) < 1e-6
    assert fit.n_params == r["df"]
    np.testing.assert_allclose(fit.aic, r["AIC"], rtol=1e-9)
    np.testing.assert_allclose(fit.beta, r["fixef"], rtol=1e-5)
    np.testing.assert_allclose(fit.sigma, r["sigma"], rtol=1e-4)
    Om = next(iter(fit.cov_re.values())).to_numpy()
    np.testing.assert_allclose(Om, np.asarray(r["cov_re"]), rtol=2e-4,
                               atol=2e-4 * np.abs(Om).max())


def test_structures_that_coincide():
    """q = 2: ar1 is cs(hom = TRUE) and ar1(hom = FALSE) is cs (ρ^1 = ρ); cs on two columns
    is us; diag is '||'; a full mask is us; an identity mask is diag; spellings agree."""
    f = "Reaction ~ Days + {}"
    forms = {"ar1": "ar1(Days | Subject)", "cs1": "cs(Days | Subject, hom = TRUE)",
             "har1": "ar1(Days | Subject, hom = FALSE)", "cs": "cs(Days | Subject)",
             "diag": "diag(Days | Subject)", "us": "us(Days | Subject)",
             "homcs": "homcs(Days | Subject)", "hetar1": "hetar1(Days | Subject)",
             "hcs": "hcs(Days | Subject)", "homdiag": "diag(Days | Subject, hom = TRUE)"}
    fits = {k: fit_of(f.format(v), "sleepstudy", False) for k, v in forms.items()}
    dev = {k: m.deviance for k, m in fits.items()}
    assert dev["ar1"] == pytest.approx(dev["cs1"], abs=1e-7)
    assert dev["homcs"] == pytest.approx(dev["cs1"], abs=1e-7)
    assert dev["har1"] == pytest.approx(dev["cs"], abs=1e-7)
    assert dev["hetar1"] == pytest.approx(dev["cs"], abs=1e-7)
    assert dev["hcs"] == pytest.approx(dev["cs"], abs=1e-7)
    assert dev["cs"] == pytest.approx(dev["us"], abs=1e-7)
    assert [fits[k].n_params for k in ("us", "cs", "cs1", "ar1", "har1", "diag", "homdiag")] == \
        [6, 6, 5, 5, 6, 5, 4]
    om = fits["homdiag"].cov_re["Subject"].to_numpy()
    assert om[0, 0] == pytest.approx(om[1, 1]) and om[0, 1] == 0
    assert dev["homdiag"] > dev["diag"]
    dbl = fit_of("Reaction ~ Days + (Days || Subject)", "sleepstudy", False)
    assert dev["diag"] == pytest.approx(dbl.deviance, abs=1e-7)
    base = "Reaction ~ Days + (Days | Subject)"
    assert fit_of(base, "sleepstudy", False, cov_mask=np.eye(2)).deviance == \
        pytest.approx(dev["diag"], abs=1e-7)
    assert fit_of(base, "sleepstudy", False, cov_mask=np.ones((2, 2))).deviance == \
        pytest.approx(dev["us"], abs=1e-7)


def test_diag_satterthwaite_equals_double_bar():
    """diag() is the '||' model with the same parameters: same Satterthwaite df."""
    a = fit_of("Reaction ~ Days + diag(Days | Subject)", "sleepstudy", True)
    b = fit_of("Reaction ~ Days + (Days || Subject)", "sleepstudy", True)
    np.testing.assert_allclose(a.coef_table(ddf="Satterthwaite")["df"],
                               b.coef_table(ddf="Satterthwaite")["df"], rtol=1e-5)


MASKS = {"block": np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]]),
         "band": np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]])}


@pytest.mark.parametrize("kind", list(MASKS))
def test_mask_profiled_equals_em(kind):
    """lmer(cov_mask=C) by the profiled deviance reaches the seed's EM optimum."""
    d = load("sleepstudy").assign(D2=lambda x: (x["Days"] - 4.5) ** 2 / 10)
    f = "Reaction ~ Days + (Days + D2 | Subject)"
    C = MASKS[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prof = pylmem.lmer(f, d, reml=False, cov_mask=C)
        em = pylmem.lmer(f, d, reml=False, cov_mask=C, method="em",
                         em_options={"tol": 1e-12, "max_iter": 100000})
    assert prof.n_params == 2 + int(np.tril(C).sum()) + 1
    assert prof.loglik == pytest.approx(em.loglik, abs=1e-6)
    Om = prof.cov_re["Subject"].to_numpy()
    np.testing.assert_allclose(Om[C == 0], 0.0, atol=1e-10)
    np.testing.assert_allclose(Om, em.cov_re["Subject"].to_numpy(), rtol=1e-3, atol=1e-3)
    # the masked model sits between diag and us
    us = pylmem.lmer(f, d, reml=False)
    assert us.loglik >= prof.loglik - 1e-8


def test_structured_fit_invariances():
    r = REFS["sim_tmbar1_ml"]
    d = data_of("ar1_sim")
    base = fit_of(r["formula"], "ar1_sim", False)
    perm = d.sample(frac=1.0, random_state=11).reset_index(drop=True)
    f2 = pylmem.lmer(r["formula"], perm, reml=False)
    assert f2.deviance == pytest.approx(base.deviance, abs=1e-7)
    scaled = d.assign(y=d["y"] * 100.0)
    f3 = pylmem.lmer(r["formula"], scaled, reml=False)
    np.testing.assert_allclose(f3.sigma, 100 * base.sigma, rtol=1e-5)
    np.testing.assert_allclose(f3.cov_re["subject"].to_numpy(),
                               1e4 * base.cov_re["subject"].to_numpy(), rtol=1e-4)
    relab = d.assign(subject="id_" + d["subject"].str[::-1])
    f4 = pylmem.lmer(r["formula"], relab, reml=False)
    assert f4.deviance == pytest.approx(base.deviance, abs=1e-7)


def test_summary_varcorr_anova_df():
    fit = fit_of("score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", "Machines", True)
    s = str(fit.summary())
    assert "Covariance structures:" in s
    assert "cs(hom = TRUE): compound symmetry, one variance, rho = 0.622" in s
    vc = fit.varcorr
    sub = vc[vc["grp"] == "Worker"]
    assert np.allclose(sub["vcov"].to_numpy()[:3], sub["vcov"].to_numpy()[0])
    assert np.allclose(sub["sdcor"].to_numpy()[3:], sub["sdcor"].to_numpy()[3])
    m_cs = fit_of("score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", "Machines", False)
    m_us = fit_of("score ~ Machine + (0 + Machine | Worker)", "Machines", False)
    lrt = pylmem.anova(m_cs, m_us)
    assert list(lrt["npar"]) == [6, 10]
    assert lrt["Df"].iloc[1] == 4
    tab = fit.coef_table(ddf="Satterthwaite")
    assert np.all(np.isfinite(tab["df"])) and np.all(tab["df"] > 0)
    # the REML fit refitted by ML for the LRT is the ML fit
    assert fit.refit(reml=False).deviance == pytest.approx(m_cs.deviance, abs=1e-7)


def test_rho_at_the_boundary_warns():
    """Two columns carrying the same random effect: ρ → 1, reported as a boundary fit."""
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(40), 6)
    f = np.tile(["a", "b"], 120)
    b = rng.normal(size=40)[g] * 2.0
    y = b + rng.normal(size=240) * 0.5
    d = pd.DataFrame({"y": y, "g": g.astype(str), "f": f})
    with pytest.warns(ConvergenceWarning, match=r"correlation of the cs\(hom = TRUE\) term"):
        fit = pylmem.lmer("y ~ 1 + cs(0 + f | g, hom = TRUE)", d, reml=False)
    assert fit.is_singular
    # checked on the other coordinates (z → ∞ is flat): converged, no gradient complaint
    assert fit.converged
    assert not [w for w in fit.warnings if w.startswith("Model failed")]
    rho = fit.varcorr["sdcor"].iloc[2]
    assert rho > 1 - 1e-5


@pytest.mark.parametrize("formula,match", [
    ("Reaction ~ Days + ar1(1 | Subject)", "at least 2 columns"),
    ("Reaction ~ Days + cs(1 | Subject)", "at least 2 columns"),
    ("Reaction ~ Days + toep(Days | Subject)", "unknown covariance structure 'toep'"),
    ("Reaction ~ Days + cs(Days || Subject)", "single bar"),
    ("Reaction ~ Days + cs(Days | Subject, hom = 3)", "hom = TRUE/FALSE"),
    ("Reaction ~ Days + us(Days | Subject, hom = FALSE)", "applies to diag"),
])
def test_bad_structures(formula, match):
    with pytest.raises(ValueError, match=match):
        pylmem.lmer(formula, load("sleepstudy"))


@pytest.mark.parametrize("mask,match", [
    (np.array([[1, 1], [0, 1]]), "symmetric"),
    (np.array([[1, 2], [2, 1]]), "only 0 and 1"),
    (np.array([[0, 0], [0, 1]]), "ones on the diagonal"),
    (np.eye(3), "must be 2×2"),
])
def test_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        pylmem.lmer("Reaction ~ Days + (Days | Subject)", load("sleepstudy"), cov_mask=mask)


def test_refusals_name_the_structure():
    fit = fit_of("score ~ Machine + cs(0 + Machine | Worker)", "Machines", True)
    for call in (lambda: fit.coef_table(ddf="Kenward-Roger"), lambda: fit.confint(method="profile")):
        with pytest.raises(ValueError, match=r"cs\(\) on 'Worker'"):
            call()
    with pytest.raises(ValueError, match="cov_mask applies to an unstructured term"):
        pylmem.lmer("Reaction ~ Days + diag(Days | Subject)", load("sleepstudy"),
                    cov_mask=np.eye(2))
    with pytest.raises(ValueError, match="method='em'"):
        pylmem.lmer("Reaction ~ Days + diag(Days | Subject)", load("sleepstudy"), reml=False,
                    method="em")


def test_parametrisation_maps():
    """ρ stays inside (ρ_min, 1) for every z; D(φ) is a covariance; from_relcov inverts D."""
    for kind, q in (("cs", 4), ("hcs", 3), ("ar1", 5), ("har1", 3), ("homdiag", 3), ("diag", 2)):
        s = TermStructure(kind, q)
        for z in (-30.0, -2.0, 0.0, 2.0, 30.0):
            rho = float(s.rho(z))
            assert s.rho_min <= rho <= 1.0
        rng = np.random.default_rng(1)
        phi = np.r_[rng.uniform(0.5, 2.0, s.n_sd), [0.3] * (s.n_par - s.n_sd)]
        D = s.relcov(phi)
        assert np.linalg.eigvalsh(D).min() > 0
        np.testing.assert_allclose(s.relcov(s.from_relcov(D, clip=False)), D, rtol=1e-10)
        T = s.lower_factor(phi)
        np.testing.assert_allclose(T @ T.T, D, rtol=1e-10, atol=1e-12)


def test_ranova_and_json_of_structured_fits():
    from pylmem.io.cli import fit_to_dict

    fit = fit_of("Reaction ~ Days + ar1(Days | Subject)", "sleepstudy", True)
    r = pylmem.ranova(fit)
    assert list(r["npar"]) == [5, 4]          # ar1: 2 parameters; one column left: 1
    assert r["Df"].iloc[1] == 1
    d = load("sleepstudy").assign(D2=lambda x: (x["Days"] - 4.5) ** 2 / 10)
    C = MASKS["band"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = pylmem.lmer("Reaction ~ Days + (Days + D2 | Subject)", d, cov_mask=C)
    assert list(pylmem.ranova(m)["npar"]) == [8, 5, 6]
    out = fit_to_dict(fit, data="sleepstudy")
    assert out["cov_structures"] == {"Subject": "ar1"} and out["n_params"] == 5


def test_satterthwaite_is_invariant_to_the_parametrisation():
    """cs() on two columns is the unstructured model in other coordinates (sds and z
    instead of θ): the df from the Hessian in φ are the same."""
    a = fit_of("Reaction ~ Days + cs(Days | Subject)", "sleepstudy", True)
    b = fit_of("Reaction ~ Days + (Days | Subject)", "sleepstudy", True)
    assert a.reml_criterion == pytest.approx(b.reml_criterion, abs=1e-7)
    np.testing.assert_allclose(a.coef_table(ddf="Satterthwaite")["df"],
                               b.coef_table(ddf="Satterthwaite")["df"], rtol=1e-3)


def test_bootstrap_of_a_structured_fit():
    """Replicates are refitted in the structure: each keeps its pattern (one variance, one
    correlation), t0 is the fit's implied sd/cor, and a seed reproduces the run."""
    fit = fit_of("score ~ Machine + cs(0 + Machine | Worker, hom = TRUE)", "Machines", True)
    b = fit.bootstrap(nsim=8, seed=3)
    assert b.n_failed == 0
    t = b.t
    np.testing.assert_allclose(t[".sig04"], t[".sig01"], rtol=1e-8)
    np.testing.assert_allclose(t[".sig06"], t[".sig01"], rtol=1e-8)
    np.testing.assert_allclose(t[".sig03"], t[".sig02"], rtol=1e-8, atol=1e-10)
    sd = np.sqrt(fit.cov_re["Worker"].to_numpy()[0, 0])
    assert b.t0[".sig01"] == pytest.approx(sd, rel=1e-10)
    assert b.t0[".sig02"] == pytest.approx(fit.varcorr["sdcor"].iloc[3], rel=1e-10)
    again = fit.bootstrap(nsim=8, seed=3)
    np.testing.assert_allclose(again.t.to_numpy(), t.to_numpy(), rtol=1e-10)
    # each replicate is the refit of its simulated response
    y = fit.simulate(1, seed=3)[:, 0]
    np.testing.assert_allclose(b.fixef.iloc[0].to_numpy(), fit.refit(y).beta, rtol=1e-6)
