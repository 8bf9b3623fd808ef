"""Seed 002: the toy model (5 observations, 3 subjects) fitted by brute force with V explicit.

The seed maximises the log-likelihood with V = σ_u² ZZ' + σ_e² I formed explicitly,
β by GLS, BLUPs from Henderson's equations, the hat matrix P = X Q_x + Z Q_z, its trace
(effective df) and the GLS covariance (X'V⁻¹X)⁻¹.  pylmem must give the same numbers
without forming V, and lme4's (printed by Rscript, lme4 1.1-31).
"""
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

import pylmem
from conftest import reference_fit

X = np.column_stack([np.ones(5), [1, 5, 2, 3, 4]])
SUBJECT = np.array([1, 2, 3, 1, 2])
Z = (SUBJECT[:, None] == np.array([1, 2, 3])[None, :]).astype(float)
Y = X @ [1.3, 2] + Z @ [-0.5, 0.6, 1.5] + np.array([0.9, 0.1, -0.2, 0.3, -0.4])


def brute_force():
    """The seed's computation: V explicit, GLS β, optimise the SDs, then P, tr(P), (X'V⁻¹X)⁻¹."""
    n = 5

    def parts(sd):
        V = sd[0] ** 2 * Z @ Z.T + sd[1] ** 2 * np.eye(n)
        Vi = np.linalg.inv(V)
        beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ Y)
        r = Y - X @ beta
        ll = -n / 2 * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(V)[1] - 0.5 * r @ Vi @ r
        return V, Vi, beta, ll

    res = minimize(lambda sd: -parts(sd)[3], [0.5, 0.2], method="Nelder-Mead",
                   options=dict(xatol=1e-12, fatol=1e-14, maxiter=20000))
    sd = np.abs(res.x)
    V, Vi, beta, ll = parts(sd)
    Qx = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
    R = Z.T @ Z + (sd[1] ** 2 / sd[0] ** 2) * np.eye(3)
    Qz = np.linalg.solve(R, Z.T @ (np.eye(n) - X @ Qx))
    P = X @ Qx + Z @ Qz
    return dict(sd=sd, beta=beta, loglik=ll, P=P, blup=Qz @ Y, vcov=np.linalg.inv(X.T @ Vi @ X))


@pytest.fixture(scope="module")
def toy_fit():
    df = pd.DataFrame({"x1": X[:, 1], "subject": SUBJECT, "y": Y})
    return pylmem.lmer("y ~ x1 + (1 | subject)", df, reml=False, factors=["subject"])


def test_toy_matches_brute_force_and_lme4(toy_fit):
    bf = brute_force()
    assert toy_fit.loglik == pytest.approx(bf["loglik"], abs=1e-9)
    assert toy_fit.loglik == pytest.approx(-3.53013619003, abs=1e-9)      # lme4 logLik
    np.testing.assert_allclose(toy_fit.beta, bf["beta"], rtol=1e-6)
    np.testing.assert_allclose(toy_fit.beta, [2.13525159106, 1.90183543863], rtol=1e-7)
    np.testing.assert_allclose(np.sqrt(toy_fit.cov_re["subject"].iloc[0, 0]), 0.348458081523, rtol=1e-5)
    np.testing.assert_allclose(toy_fit.sigma, 0.377896918052, rtol=1e-6)
    np.testing.assert_allclose(toy_fit.ranef["subject"].iloc[:, 0], bf["blup"], atol=1e-6)
    np.testing.assert_allclose(toy_fit.ranef["subject"].iloc[:, 0],
                               [-0.3393607505337, 0.0355712157884, 0.3037895347453], atol=1e-6)


def test_toy_hat_matrix_and_edf(toy_fit):
    bf = brute_force()
    P = toy_fit.hat_matrix()
    np.testing.assert_allclose(P, bf["P"], atol=1e-6)
    np.testing.assert_allclose(P @ Y, toy_fit.fitted.to_numpy(), atol=1e-10)
    assert toy_fit.edf == pytest.approx(np.trace(bf["P"]), abs=1e-6)
    assert toy_fit.df_resid_hat == pytest.approx(5 - np.trace(bf["P"]), abs=1e-6)


def test_toy_gls_covariance(toy_fit):
    bf = brute_force()
    np.testing.assert_allclose(toy_fit.vcov.to_numpy(), bf["vcov"], rtol=1e-5)
    np.testing.assert_allclose(toy_fit.vcov.to_numpy(), [[0.2941112256133, -0.0766413271068],
                                                         [-0.0766413271068, 0.0262845790662]], rtol=1e-6)


@pytest.mark.parametrize("name", ["sleepstudy_reml", "rat_male_h1_ml", "penicillin_reml", "pastes_reml"])
def test_hat_trace_equals_dense_trace(name):
    """tr(P) computed from the blocked factor equals the trace of the explicit P."""
    fit = reference_fit(name)
    P = fit.hat_matrix()
    assert fit.edf == pytest.approx(np.trace(P), rel=1e-9)
    np.testing.assert_allclose(P @ fit.design.to_data_order(fit.design.y), fit.fitted.to_numpy(),
                               atol=1e-8 * np.abs(fit.fitted).max())


def test_hat_matrix_refuses_large_n():
    fit = reference_fit("rat_poly_ml")
    with pytest.raises(ValueError, match="n × n"):
        fit.hat_matrix(max_n=1000)
