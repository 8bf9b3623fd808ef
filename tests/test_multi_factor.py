"""Crossed and nested random effects: conditional modes and variances against lme4 1.1-31
(values printed by Rscript: ranef(m, condVar=TRUE))."""
import numpy as np
import pandas as pd
import pytest

import pylmem
from conftest import reference_fit


def test_penicillin_crossed_ranef_condvar():
    fit = reference_fit("penicillin_reml")
    re, cv = fit.ranef, fit.ranef_condvar()
    np.testing.assert_allclose(re["plate"].iloc[:2, 0], [0.80454690583, 0.80454690583], rtol=1e-4)
    np.testing.assert_allclose(re["sample"].iloc[:2, 0], [2.18705840184, -1.01047635020], rtol=1e-4)
    np.testing.assert_allclose(cv["plate"][:2, 0, 0], [0.0736358711014] * 2, rtol=1e-4)
    np.testing.assert_allclose(cv["sample"][:2, 0, 0], [0.040872985912] * 2, rtol=1e-4)


def test_pastes_nested_names_and_condvar():
    fit = reference_fit("pastes_reml")
    assert list(fit.ranef) == ["cask:batch", "batch"]
    re = fit.ranef["cask:batch"]
    assert list(re.index[:2]) == ["a:A", "a:B"]
    np.testing.assert_allclose(re.iloc[:2, 0], [1.774686285372, 0.883655895343], rtol=1e-4)
    np.testing.assert_allclose(fit.ranef_condvar()["cask:batch"][:2, 0, 0], [1.30352694208] * 2, rtol=1e-4)


def test_nesting_expands_like_an_explicit_interaction():
    d = pylmem.datasets.load("Pastes")
    a = pylmem.lmer("strength ~ 1 + (1 | batch/cask)", d)
    b = pylmem.lmer("strength ~ 1 + (1 | batch) + (1 | cask:batch)", d)
    assert a.reml_criterion == pytest.approx(b.reml_criterion, rel=1e-10)
    assert set(a.n_groups) == set(b.n_groups) == {"cask:batch", "batch"}


def test_same_factor_in_two_terms_vector_and_scalar():
    """(1 | Subject) + (0 + Days | Subject) is the double-bar model written out."""
    d = pylmem.datasets.load("sleepstudy")
    a = pylmem.lmer("Reaction ~ Days + (Days || Subject)", d)
    b = pylmem.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", d)
    assert a.reml_criterion == pytest.approx(b.reml_criterion, rel=1e-10)
    assert list(a.cov_re) == ["Subject", "Subject.1"]


def test_crossed_vector_terms_match_dense_likelihood():
    """A crossed model with a vector term: the profiled fit equals direct maximisation of
    the marginal likelihood with V formed explicitly (small simulated data)."""
    rng = np.random.default_rng(1)
    n, ga, gb = 240, 12, 8
    a = rng.integers(0, ga, n)
    b = rng.integers(0, gb, n)
    x = rng.normal(size=n)
    ua = rng.normal(size=(ga, 2)) * [1.0, 0.5]
    ub = rng.normal(size=gb) * 0.7
    y = 1 + 0.5 * x + ua[a, 0] + ua[a, 1] * x + ub[b] + rng.normal(size=n) * 0.8
    df = pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})
    fit = pylmem.lmer("y ~ x + (x | a) + (1 | b)", df, reml=False)
    # dense log-likelihood at the fitted parameters
    Za = np.zeros((n, 2 * ga))
    codes_a = pd.factorize(df.a, sort=True)[0]
    codes_b = pd.factorize(df.b, sort=True)[0]
    Za[np.arange(n), 2 * codes_a] = 1
    Za[np.arange(n), 2 * codes_a + 1] = x
    Zb = np.zeros((n, gb))
    Zb[np.arange(n), codes_b] = 1
    Oa = fit.cov_re["a"].to_numpy()
    ob = fit.cov_re["b"].to_numpy()[0, 0]
    V = Za @ np.kron(np.eye(ga), Oa) @ Za.T + ob * Zb @ Zb.T + fit.sigma2 * np.eye(n)
    Xm = np.column_stack([np.ones(n), x])
    r = y - Xm @ fit.beta
    ll = -0.5 * (n * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ np.linalg.solve(V, r))
    assert fit.loglik == pytest.approx(ll, rel=1e-10)
    # and β̂ is the GLS estimate at those variances
    Vi = np.linalg.inv(V)
    np.testing.assert_allclose(fit.beta, np.linalg.solve(Xm.T @ Vi @ Xm, Xm.T @ Vi @ y), rtol=1e-8)


def test_singular_term_lands_on_the_boundary_as_lme4():
    """A zero variance component: lme4 1.1-31 (Rscript) gives θ = (0.9667307293535,
    0.0151685698555, 0.2309102429532, 0) and REMLcrit 1743.62827196, a singular fit."""
    d = pylmem.datasets.load("sleepstudy")
    with pytest.warns(pylmem.ConvergenceWarning, match="singular"):
        fit = pylmem.lmer("Reaction ~ Days + (Days | Subject) + (1 | Days)", d)
    assert fit.reml_criterion == pytest.approx(1743.62827196, abs=1e-7)
    np.testing.assert_allclose(fit.theta, [0.9667307293535, 0.0151685698555, 0.2309102429532, 0],
                               atol=2e-5)
    assert fit.is_singular and fit.theta[3] == 0
    assert fit.cov_re["Days"].iloc[0, 0] == 0
