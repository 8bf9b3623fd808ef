"""The fast paths of one-random-term fits: each against the path it replaced or a dense
reference computation, plus invariances.

* per-level cross-products in the transposed layout (``reduceat`` per row, ``bincount`` for
  tiny levels, a CSR indicator for an intercept-only term) against dense per-level sums;
* the one-term deviance and gradient (:meth:`ProfiledDeviance._one_term_batch`, the scalar
  kernel) against :meth:`ProfiledDeviance._one_term_via_factor`, against the dense
  ``log|V| + n(1 + log(2π r'V⁻¹r / n))`` and against finite differences of it;
* the rank check from the Gram matrix and the OLS start from the cross-products against
  the QR / least-squares answers.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.model.matrices import clearly_full_rank
from pylmem.numerics import crossprod as CP
from pylmem.numerics.centring import ols_coefficients
from pylmem.numerics.crossprod import (
    crossproducts,
    group_sums,
    group_sums_rows,
    indicator,
)
from pylmem.numerics.deviance import ProfiledDeviance


def _dense_products(Z, codes, L, W):
    ZtZ = np.zeros((L, Z.shape[1], Z.shape[1]))
    ZtW = np.zeros((L, Z.shape[1], W.shape[1]))
    for j in range(L):
        m = codes == j
        ZtZ[j] = Z[m].T @ Z[m]
        ZtW[j] = Z[m].T @ W[m]
    return ZtZ, ZtW


def _case(rng, n, q, r, L, *, sort=True, intercept=True):
    codes = rng.integers(0, L, n)
    codes[:L] = np.arange(L)
    if sort:
        codes = np.sort(codes)
    cols = [np.ones(n)] if intercept else []
    cols += [rng.normal(3.0, 2.0, n) for _ in range(q - len(cols))]
    return np.column_stack(cols), codes, rng.normal(size=(n, r))


@pytest.mark.parametrize("n,q,r,L,sort", [
    (3000, 3, 4, 300, True),     # reduceat per row
    (3000, 3, 4, 300, False),    # sparse indicator
    (3000, 2, 3, 1400, True),    # about 2 rows a level: bincount
    (3000, 1, 5, 40, True),      # intercept only: CSR level sums
    (3000, 1, 5, 40, False),
])
def test_products_match_dense_sums(n, q, r, L, sort):
    rng = np.random.default_rng(7)
    Z, codes, W = _case(rng, n, q, r, L, sort=sort)
    ZtZ, ZtW = CP._products(Z, codes, L, W)
    rZ, rW = _dense_products(Z, codes, L, W)
    np.testing.assert_allclose(ZtZ, rZ, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ZtW, rW, rtol=1e-12, atol=1e-9)
    if q > 1:   # shifted rows
        zc, wc = np.r_[0.0, rng.normal(size=q - 1)], rng.normal(size=r)
        Sc, Tc = CP._products(Z, codes, L, W, zc, wc)
        rZ, rW = _dense_products(Z - zc, codes, L, W - wc)
        np.testing.assert_allclose(Sc, rZ, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(Tc, rW, rtol=1e-12, atol=1e-9)


def test_products_leave_inputs_alone():
    """F-ordered inputs (a Dask partition's matrices) are read, never shifted in place."""
    rng = np.random.default_rng(6)
    Z, codes, W = _case(rng, 800, 3, 4, 60)
    ZF, WF = np.asfortranarray(Z), np.asfortranarray(W)
    zc, wc = np.r_[0.0, 1.0, -2.0], rng.normal(size=4)
    got = CP._products(ZF, codes, 60, WF, zc, wc)
    np.testing.assert_array_equal(ZF, Z)
    np.testing.assert_array_equal(WF, W)
    for a, b in zip(got, _dense_products(Z - zc, codes, 60, W - wc)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


def test_products_across_chunks(monkeypatch):
    """Levels split between chunks, and chunks whose levels are not one contiguous range."""
    rng = np.random.default_rng(8)
    Z, codes, W = _case(rng, 2000, 3, 2, 150, sort=True)
    keep = ~np.isin(codes, [10, 11, 12, 90])   # levels without rows: a chunk skips them
    Z, codes, W = Z[keep], codes[keep], W[keep]
    ref = CP._products(Z, codes, 150, W)
    monkeypatch.setattr(CP, "_CHUNK", 97)
    got = CP._products(Z, codes, 150, W)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-10)
    assert np.all(got[0][[10, 11, 12, 90]] == 0)


def test_group_sums_rows_is_group_sums_transposed():
    rng = np.random.default_rng(9)
    for sort in (True, False):
        codes = rng.integers(0, 50, 700)
        if sort:
            codes.sort()
        P = rng.normal(size=(4, 700))
        got = group_sums_rows(codes, 50, P)
        ref = group_sums(codes, 50, np.ascontiguousarray(P.T)).T
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-12)
        if sort:   # reduceat along rows: the very same sums
            np.testing.assert_array_equal(got, ref)


def test_indicator_sums_levels():
    rng = np.random.default_rng(10)
    codes = rng.integers(0, 30, 500)
    M = rng.normal(size=(500, 3))
    S = indicator(codes, 30)
    ref = np.zeros((30, 3))
    np.add.at(ref, codes, M)
    np.testing.assert_allclose(S @ M, ref, rtol=1e-13, atol=1e-12)


# ---------------------------------------------------------------------------- the deviance
def _dev_case(rng, q, *, n_groups=40, per=6, intercept_x=True, shift=0.0):
    n = n_groups * per
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(shift, 1.0, n)
    z = rng.normal(shift, 1.5, n)
    y = 1 + 0.5 * x + rng.normal(0, 1.0, n_groups)[g] + 0.4 * rng.normal(size=n_groups)[g] * z \
        + rng.normal(size=n)
    X = np.column_stack(([np.ones(n)] if intercept_x else []) + [x])
    Zcols = [np.ones(n), z, z ** 2 / 4][:q]
    Z = np.column_stack(Zcols)
    return y, X, Z, g


class _Term:
    def __init__(self, Z, codes, L):
        self.Z, self.codes, self.n_levels, self.q = Z, codes, L, Z.shape[1]


def _dense_deviance(y, X, Z, g, L, theta, reml):
    """log|V| + n(1 + log(2π r/n)) (ML) with V = I + Z_blk Λ Λ' Z_blk', by dense algebra."""
    q = Z.shape[1]
    T = np.zeros((q, q))
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    T[rows[order], cols[order]] = theta
    n = len(y)
    Zb = np.zeros((n, L * q))
    for j in range(q):
        Zb[np.arange(n), g * q + j] = Z[:, j]
    Lam = np.kron(np.eye(L), T)
    V = np.eye(n) + Zb @ Lam @ Lam.T @ Zb.T
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    e = y - X @ beta
    rr = e @ Vi @ e
    ld = np.linalg.slogdet(V)[1]
    if reml:
        p = X.shape[1]
        return ld + np.linalg.slogdet(X.T @ Vi @ X)[1] + (n - p) * (1 + np.log(2 * np.pi * rr / (n - p)))
    return ld + n * (1 + np.log(2 * np.pi * rr / n))


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("intercept_x", [True, False])
def test_one_term_deviance_matches_factor_path_and_dense(q, reml, intercept_x):
    rng = np.random.default_rng(11 + q)
    y, X, Z, g = _dev_case(rng, q, intercept_x=intercept_x, shift=3.0)
    L = g.max() + 1
    cp = crossproducts(y, X, [_Term(Z, g, L)])
    dev = ProfiledDeviance(cp, [q], [L], reml=reml)
    k = q * (q + 1) // 2
    for trial in range(3):
        theta = dev.start_theta() * (0.4 + rng.random(k))
        if q > 1:
            theta[1] = 0.2 * rng.normal()
        for centred in (False, True):
            v, grad = dev._one_term_batch([theta], centred)
            v0, g0 = dev._one_term_via_factor(theta, centred)
            assert abs(v[0] - v0) <= 1e-12 * abs(v0)
            np.testing.assert_allclose(grad[0], g0, rtol=1e-7, atol=1e-7 * np.abs(g0).max())
        ref = _dense_deviance(y, X, Z, g, L, theta, reml)
        vu, gu = dev._one_term_batch([theta], False)          # θ in the user's Z
        assert abs(vu[0] - ref) <= 1e-9 * abs(ref)
        # θ̃ (centred Z̃) is the same model: d(θ̃ of θ) = d(θ)
        vc, _ = dev._one_term_batch([dev.theta_to_centred(theta)], True)
        assert abs(vc[0] - ref) <= 1e-9 * abs(ref)
        # the gradient is that of the dense deviance (central differences)
        h = 1e-6
        fd = np.array([(_dense_deviance(y, X, Z, g, L, theta + h * e, reml)
                        - _dense_deviance(y, X, Z, g, L, theta - h * e, reml)) / (2 * h)
                       for e in np.eye(k)])
        np.testing.assert_allclose(gu[0], fd, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(fd).max()))


def test_value_and_gradient_caches_and_counts():
    rng = np.random.default_rng(12)
    y, X, Z, g = _dev_case(rng, 2)
    cp = crossproducts(y, X, [_Term(Z, g, g.max() + 1)])
    dev = ProfiledDeviance(cp, [2], [g.max() + 1], reml=False)
    th = dev.start_theta()
    v1, g1 = dev.value_and_gradient(th)
    v2, g2 = dev.value_and_gradient(th)
    assert dev.n_evals == 1 and v1 == v2 and np.array_equal(g1, g2)
    v0, _ = dev.value_and_gradient(np.zeros(3))      # θ = 0: A = I, the OLS deviance
    assert dev.n_evals == 2
    assert abs(v0 - dev._one_term_via_factor(np.zeros(3))[0]) <= 1e-12 * abs(v0)
    # not positive definite is d = inf with a zero gradient, not an error
    dev2 = ProfiledDeviance(cp, [2], [g.max() + 1], reml=False)
    dev2._G0 = -dev2._G0
    v, gr = dev2.value_and_gradient(np.array([3.0, 0.0, 3.0]))
    assert v == np.inf and not gr.any()


# ---------------------------------------------------------------------------- rank check, OLS
def test_clearly_full_rank_agrees_with_qr():
    rng = np.random.default_rng(13)
    n = 500
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 4))])
    assert clearly_full_rank(X, 0)
    # location and scale of a covariate do not matter (centred after the intercept)
    Xs = X.copy()
    Xs[:, 1] = 5.0 + 0.5 * Xs[:, 1]
    assert clearly_full_rank(Xs, 0)
    # x = 10⁴ + 10⁻³ noise: X'X − n m m' cancels too many digits to judge, so the QR decides
    Xs[:, 1] = 1e4 + 1e-3 * rng.normal(size=n)
    assert not clearly_full_rank(Xs, 0)
    # an exactly or nearly collinear column is never "clearly" full rank
    Xc = np.column_stack([X, X[:, 1] + 2 * X[:, 2]])
    assert not clearly_full_rank(Xc, 0)
    Xn = np.column_stack([X, X[:, 1] + 1e-6 * rng.normal(size=n)])
    assert not clearly_full_rank(Xn, 0)
    assert not clearly_full_rank(np.column_stack([X, np.zeros(n)]), 0)
    assert clearly_full_rank(X[:, 1:], None)


def test_rank_deficient_design_still_drops_columns():
    rng = np.random.default_rng(14)
    n = 400
    d = pd.DataFrame({"y": rng.normal(size=n), "a": rng.normal(size=n),
                      "g": np.repeat([f"g{i}" for i in range(40)], 10)})
    d["b"] = 2 * d["a"] - 1
    d["c"] = 1e4 + 1e-3 * rng.normal(size=n)      # not collinear with the intercept
    with pytest.warns(UserWarning, match="dropping 1 column"):
        des = pylmem.build_design("y ~ a + b + c + (1 | g)", d)
    assert des.fixef_names == ["(Intercept)", "a", "c"]


def test_ols_coefficients_match_lstsq():
    rng = np.random.default_rng(15)
    y, X, Z, g = _dev_case(rng, 2, shift=50.0)
    X = np.column_stack([X, rng.normal(-20, 3, len(y))])
    cp = crossproducts(y, X, [_Term(Z, g, g.max() + 1)])
    b = ols_coefficients(cp)
    np.testing.assert_allclose(b, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10, atol=1e-10)
    cp0 = crossproducts(y, X[:, 1:], [_Term(Z, g, g.max() + 1)])   # no intercept: no centring
    assert ols_coefficients(cp0) is None
    Xn = np.column_stack([X, X[:, 1] + 1e-7 * rng.normal(size=len(y))])
    assert ols_coefficients(crossproducts(y, Xn, [_Term(Z, g, g.max() + 1)])) is None


# ---------------------------------------------------------------------------- invariances
def _fit_frame(rng, n_groups, per):
    n = n_groups * per
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=n)
    y = 2 + 0.3 * x + rng.normal(0, 0.8, n_groups)[g] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": np.char.add("g", g.astype(str))})


@pytest.mark.parametrize("per", [2, 12])
def test_scalar_term_fit_invariances(per):
    """Row order, level labels and the scale of y do not change the fit (tiny and larger levels)."""
    rng = np.random.default_rng(16 + per)
    d = _fit_frame(rng, 300, per)
    f0 = pylmem.lmer("y ~ x + (1 | g)", d, reml=False)
    perm = rng.permutation(len(d))
    f1 = pylmem.lmer("y ~ x + (1 | g)", d.iloc[perm].reset_index(drop=True), reml=False)
    d2 = d.copy()
    d2["g"] = "L" + d2["g"].str[::-1]
    f2 = pylmem.lmer("y ~ x + (1 | g)", d2, reml=False)
    assert abs(f1.loglik - f0.loglik) <= 1e-10 * abs(f0.loglik)
    assert abs(f2.loglik - f0.loglik) <= 1e-10 * abs(f0.loglik)
    d3 = d.copy()
    d3["y"] = 1000 * d3["y"]
    f3 = pylmem.lmer("y ~ x + (1 | g)", d3, reml=False)
    assert abs(f3.loglik - (f0.loglik - len(d) * np.log(1000))) <= 1e-9 * abs(f0.loglik)
    np.testing.assert_allclose(f3.theta, f0.theta, rtol=1e-6)


def test_vector_term_fit_row_order():
    rng = np.random.default_rng(17)
    n_groups, per = 200, 8
    n = n_groups * per
    g = np.repeat(np.arange(n_groups), per)
    t = rng.normal(size=n)
    y = 1 + 0.5 * t + rng.normal(0, 1, n_groups)[g] + rng.normal(0, 0.5, n_groups)[g] * t \
        + rng.normal(size=n)
    d = pd.DataFrame({"y": y, "t": t, "g": np.char.add("s", g.astype(str))})
    f0 = pylmem.lmer("y ~ t + (t | g)", d, reml=True)
    f1 = pylmem.lmer("y ~ t + (t | g)", d.iloc[rng.permutation(n)], reml=True)
    assert abs(f1.loglik - f0.loglik) <= 1e-10 * abs(f0.loglik)
    np.testing.assert_allclose(f1.theta, f0.theta, rtol=1e-6, atol=1e-8)


def test_spd_inverse_soa_matches_inv_and_flags_singular():
    from pylmem.numerics.batched import spd_inverse_soa

    rng = np.random.default_rng(18)
    Z = rng.normal(size=(40, 6, 3))
    A = np.einsum("gni,gnj->gij", Z, Z)
    A[1] = np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])         # rank 1
    A[2, 0, :] = A[2, :, 0] = 0.0                               # a zero column
    A[3, 2] = A[3, 1] * (1 + 1e-9)                              # nearly collinear
    A[3, :, 2] = A[3, 2]
    ok, inv = spd_inverse_soa(np.ascontiguousarray(A.transpose(1, 2, 0)), 1e-6)
    with np.errstate(all="ignore"):
        ref_ok = np.linalg.det(A) > 1e-6 * np.prod(np.einsum("gii->gi", A), axis=1)
    np.testing.assert_array_equal(ok, ref_ok)
    assert not ok[[1, 2, 3]].any() and ok[0] and ok[4:].all()
    np.testing.assert_allclose(inv[:, :, ok].transpose(2, 0, 1), np.linalg.inv(A[ok]),
                               rtol=1e-10, atol=1e-12)
