"""Kernels: batched small-matrix algebra, cross-products, the profiled deviance and its
gradient, each against dense numpy/scipy computations."""
import numpy as np
import pytest

import pylmem
from pylmem.model import covariance as C
from pylmem.numerics import batched as B
from pylmem.numerics.crossprod import crossproducts
from pylmem.model.design import build_design
from pylmem.numerics.deviance import ProfiledDeviance


def test_batched_kernels_match_numpy():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(50, 4, 4))
    A = M @ M.transpose(0, 2, 1) + 4 * np.eye(4)
    L = B.cholesky_soa(A.transpose(1, 2, 0)).transpose(2, 0, 1)
    np.testing.assert_allclose(L, np.linalg.cholesky(A), rtol=1e-12)
    R = rng.normal(size=(50, 4, 3))
    np.testing.assert_allclose(B.solve_lower(L, R), np.linalg.solve(L, R), rtol=1e-10)
    np.testing.assert_allclose(B.solve_lower_t(L, R), np.linalg.solve(L.transpose(0, 2, 1), R), rtol=1e-10)
    with pytest.raises(np.linalg.LinAlgError):
        B.cholesky_soa(-A.transpose(1, 2, 0))
    T = np.array([[4.0, 0, 0], [2, 3, 0], [1, 0, 0]])   # semi-definite: a zero pivot
    np.testing.assert_allclose(C.psd_cholesky(T @ T.T) @ C.psd_cholesky(T @ T.T).T, T @ T.T, atol=1e-12)
    T = np.tril(rng.normal(size=(3, 3)))
    np.testing.assert_array_equal(C.lower_from_theta(C.theta_from_lower(T), 3), T)
    # lme4's θ order: lower triangle column by column
    np.testing.assert_array_equal(C.theta_from_lower(np.array([[1, 0], [2, 3]])), [1, 2, 3])


def _setup(formula, data, reml):
    m = build_design(formula, data)
    cp = crossproducts(m.y, m.X, m.terms)
    return m, cp, ProfiledDeviance(cp, [t.q for t in m.terms], [t.n_levels for t in m.terms], reml=reml)


def _dense_deviance(m, theta_parts, reml):
    """−2 log L (ML) or the REML criterion at its profiled optimum, from V formed explicitly."""
    n, p = m.X.shape
    V = np.eye(n)
    for t, T in zip(m.terms, theta_parts):
        Z = t.sparse().toarray()
        Lam = np.kron(np.eye(t.n_levels), T)
        V += Z @ Lam @ Lam.T @ Z.T
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(m.X.T @ Vi @ m.X, m.X.T @ Vi @ m.y)
    r = m.y - m.X @ beta
    r2 = r @ Vi @ r
    ld = np.linalg.slogdet(V)[1]
    if reml:
        nu = n - p
        return ld + np.linalg.slogdet(m.X.T @ Vi @ m.X)[1] + nu * (1 + np.log(2 * np.pi * r2 / nu))
    return ld + n * (1 + np.log(2 * np.pi * r2 / n))


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("dataset, formula, theta", [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", [0.9, 0.05, 0.2]),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", [1.5, 3.0]),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", [3.5, 1.5]),
])
def test_profiled_deviance_equals_dense_likelihood(dataset, formula, theta, reml):
    m, cp, dev = _setup(formula, pylmem.datasets.load(dataset), reml)
    got = dev(np.array(theta))
    want = _dense_deviance(m, dev.split_theta(theta), reml)
    assert got == pytest.approx(want, rel=1e-11)


@pytest.mark.parametrize("reml", [False, True])
def test_analytic_gradient_matches_finite_differences(reml):
    d = pylmem.datasets.load("ratWeight")
    d["week2"] = d["week"] ** 2
    m, cp, dev = _setup("weight ~ week + week2 + (week + week2 | id)", d, reml)
    theta = np.array([3.5, 1.2, -0.04, 1.5, -0.06, 0.05])
    val, g = dev.value_and_gradient(theta)
    assert val == pytest.approx(dev(theta), rel=1e-14)
    h = 1e-4  # central differences: truncation and rounding errors both ~1e-6 relative here
    fd = np.array([(dev(theta + e) - dev(theta - e)) / (2 * h) for e in np.eye(len(theta)) * h])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-3)
    assert np.abs(g).max() > 1  # away from the optimum: a real test


def test_crossproducts_add_over_row_partitions():
    """The sufficient statistics of the whole equal the sum over partitions (the Dask seam)."""
    m, cp, _ = _setup("diameter ~ 1 + (1 | plate) + (1 | sample)", pylmem.datasets.load("Penicillin"), True)
    parts = np.array_split(np.random.default_rng(3).permutation(m.n_obs), 3)
    total = None
    for idx in parts:
        sub = [type(t)(name=t.name, group=t.group, coef_names=t.coef_names, Z=t.Z[idx],
                       codes=t.codes[idx], levels=t.levels) for t in m.terms]
        c = crossproducts(m.y[idx], m.X[idx], sub)
        total = c if total is None else total + c
    np.testing.assert_allclose(total.WtW, cp.WtW)
    for a, b in zip(total.terms, cp.terms):
        np.testing.assert_allclose(a.ZtZ, b.ZtZ)
        np.testing.assert_allclose(a.ZtW, b.ZtW)
    np.testing.assert_allclose(total.between[(0, 1)].toarray(), cp.between[(0, 1)].toarray())
