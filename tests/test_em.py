"""Tests of pylmem.em: the seed's printed tables, acceleration, the vectorised
implementation against a per-group loop, and input checking."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pylmem.datasets import load
from pylmem.estimation.em import EMResult, em, fit_em

REF = Path(__file__).parent / "reference" / "lme4_fits.json"

# maxima required of the accelerated EM (lme4 with Nelder-Mead: -8691.350156, -8480.745443)
TARGET_POLY = -8691.3502
TARGET_GENDER = -8480.7455


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def rat():
    d = load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d


def poly_X(d):
    return np.column_stack([np.ones(len(d)), d["week"], d["week2"]])


def gender_X(d):
    male = (d["gender"] == "Male").to_numpy(dtype=float)
    w, w2 = d["week"].to_numpy(float), d["week2"].to_numpy(float)
    # the seed's column order: 1, week, week2, gender, Male:week, Male:week2
    return np.column_stack([np.ones(len(d)), w, w2, male, male * w, male * w2])


def male_X(d):
    dm = d[d["gender"] == "Male"]
    gmo = (dm["regime"] == "GMO").to_numpy(dtype=float)
    w, w2 = dm["week"].to_numpy(float), dm["week2"].to_numpy(float)
    return dm, np.column_stack([np.ones(len(dm)), w, w2, w * gmo, w2 * gmo])


def assert_printed(actual, printed):
    """``actual`` rounds to each printed value (a string, or a whitespace-separated list)."""
    vals = printed.split()
    actual = np.atleast_1d(np.asarray(actual, dtype=float)).ravel()
    assert len(actual) == len(vals), (actual, vals)
    for a, s in zip(actual, vals):
        dec = len(s.split(".")[1]) if "." in s else 0
        tol = 0.5 * 10.0 ** (-dec) * (1 + 1e-9) + 1e-12 * abs(float(s))
        assert abs(a - float(s)) <= tol, f"{a!r} does not print as {s}"


def assert_omega_printed(omega, rows):
    """R prints each column of Ω with its own digits: ``rows`` are the printed rows."""
    for i, row in enumerate(rows):
        assert_printed(omega[i], row)


# ------------------------------------------------------------- the seed's printed tables


def test_seed_em_polynomial(rat):
    X = poly_X(rat)
    res = em(rat[["weight"]], rat["id"], X, X)          # y as the seed's one-column frame
    assert isinstance(res, EMResult)
    assert res.n_iter == 50 and len(res.trace) == 50 and not res.converged
    assert_printed(res.beta, "169.030083 31.241507 -1.102003")
    assert_omega_printed(res.omega, ["823.291463 284.806010 -9.3176817",
                                     "284.806010 157.156986 -5.4430666",
                                     "-9.317682 -5.443067 0.2012885"])
    assert_printed(res.sigma2, "66.24102")
    assert_printed([res.loglik, res.aic, res.bic], "-8691.351 17402.701 17459.821")
    assert res.n_params == 10
    assert res.trace[-1] == res.loglik


def test_seed_em2_polynomial(rat):
    X = poly_X(rat)
    res = em(rat["weight"], rat["id"], X, X, simplified=True)
    assert_printed(res.beta, "169.030150 31.241562 -1.102004")
    assert_omega_printed(res.omega, ["823.291479 284.806000 -9.3176812",
                                     "284.806000 157.156984 -5.4430666",
                                     "-9.317681 -5.443067 0.2012885"])
    assert_printed(res.sigma2, "66.241")


def test_seed_em_gender(rat):
    X = gender_X(rat)
    res = em(rat["weight"], rat["id"], X, X[:, :3])
    assert_printed(res.beta, "142.7060852 19.9228293 -0.7266020 52.7738330 22.7150997 -0.7533026")
    assert_omega_printed(res.omega, ["127.3827390 -14.612490 0.61391916",
                                     "-14.6124903 28.483661 -1.17684359",
                                     "0.6139192 -1.176844 0.05979207"])
    assert_printed(res.sigma2, "66.25732")
    assert_printed([res.loglik, res.aic, res.bic], "-8480.746 16987.493 17061.749")
    assert res.n_params == 6 + 6 + 1


def test_seed_em_male_h0_h1(rat):
    dm, X = male_X(rat)
    h0 = em(dm["weight"], dm["id"], X[:, :3], X[:, :3])
    assert_printed(h0.beta, "195.460168 42.647597 -1.480638")
    assert_omega_printed(h0.omega, ["154.907759 -29.912537 1.3426990",
                                    "-29.912537 49.469278 -2.0907193",
                                    "1.342699 -2.090719 0.1097153"])
    assert_printed(h0.sigma2, "103.8647")
    assert_printed([h0.loglik, h0.aic, h0.bic], "-4480.915 8981.830 9031.996")

    h1 = em(dm["weight"], dm["id"], X, X[:, :3])
    assert_printed(h1.beta, "195.4576401 44.0082633 -1.5548673 -2.7121645 0.1479159")
    assert_omega_printed(h1.omega, ["154.731659 -29.443131 1.3185729",
                                    "-29.443131 47.596812 -1.9866343",
                                    "1.318573 -1.986634 0.1040984"])
    assert_printed(h1.sigma2, "103.8273")
    assert_printed([h1.loglik, h1.aic, h1.bic], "-4479.098 8982.196 9042.395")


def test_fifty_iterations_are_not_the_maximum(rat):
    # the seed's 50 plain EM iterations stop short of the maximum: the acceleration matters
    X = poly_X(rat)
    assert em(rat["weight"], rat["id"], X).loglik < TARGET_POLY


# ---------------------------------------------------------------------- acceleration


@pytest.mark.parametrize("accelerate", [True, "squarem-ecme", "ecme"])
def test_accelerated_reaches_maxima(rat, accelerate):
    X, Xg = poly_X(rat), gender_X(rat)
    r1 = em(rat["weight"], rat["id"], X, tol=1e-10, accelerate=accelerate)
    r2 = em(rat["weight"], rat["id"], Xg, X, tol=1e-10, accelerate=accelerate)
    assert r1.converged and r2.converged
    assert r1.loglik >= TARGET_POLY and r2.loglik >= TARGET_GENDER
    assert r1.n_iter <= 40 and r2.n_iter <= 40
    ref = json.loads(REF.read_text())
    rp = ref["rat_poly_ml"]
    np.testing.assert_allclose(r1.beta, list(rp["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(r1.omega, rp["cov_re"]["id"]["matrix"], rtol=1e-4)
    np.testing.assert_allclose(r1.sigma2, rp["sigma2"], rtol=1e-4)


def test_squarem_on_the_seed_map_reaches_maxima(rat):
    X, Xg = poly_X(rat), gender_X(rat)
    r1 = em(rat["weight"], rat["id"], X, n_iter=300, accelerate="squarem")
    r2 = em(rat["weight"], rat["id"], Xg, X, n_iter=300, accelerate="squarem")
    assert r1.loglik >= TARGET_POLY and r2.loglik >= TARGET_GENDER
    assert r1.method == "squarem" and r1.n_iter <= 300
    # plain EM with the same budget does not get there on the polynomial model
    assert em(rat["weight"], rat["id"], X, n_iter=300).loglik < TARGET_POLY
    # the accepted points of SQUAREM never decrease the log-likelihood; on this model the
    # safeguard does reject extrapolations (13 of 60 cycles at tol=1e-12)
    r3 = em(rat["weight"], rat["id"], X, tol=1e-12, accelerate="squarem", max_iter=3000)
    for r in (r1, r3):
        assert np.all(np.diff(r.trace[1:]) >= -1e-9 * abs(r.loglik))
    assert r3.n_rejected > 0 and r3.n_cycles > r3.n_rejected


def test_fit_em_design(rat):
    from pylmem.model.design import build_design

    des = build_design("weight ~ week + week2 + (week + week2 | id)", rat)
    res = fit_em(des)
    assert res.converged and res.method == "squarem-ecme"
    assert res.loglik >= TARGET_POLY
    assert res.names == des.fixef_names and res.re_names == des.terms[0].coef_names
    assert res.ranef.shape == (160, 3) and len(res.group_labels) == 160
    np.testing.assert_array_equal(res.group_labels, des.terms[0].levels)
    des2 = build_design("weight ~ gender*week + gender*week2 + (week + week2 | id)", rat)
    assert fit_em(des2).loglik >= TARGET_GENDER
    # the conditional modes are those of the row-wise model: group "B38602" in the em() fit
    r = em(rat["weight"], rat["id"], poly_X(rat), tol=1e-10, accelerate=True)
    i, j = list(r.group_labels).index("B38602"), list(res.group_labels).index("B38602")
    np.testing.assert_allclose(r.ranef[i], res.ranef[j], rtol=1e-4, atol=1e-6)


def test_fit_em_rejects_several_terms():
    from pylmem.model.design import build_design

    des = build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", load("Penicillin"))
    with pytest.raises(ValueError, match="2 terms"):
        fit_em(des)


# ------------------------------------------------------------------ convergence mode


def test_tol_mode_plain_em_monotone(rat):
    X = poly_X(rat)
    res = em(rat["weight"], rat["id"], X, tol=1e-8, max_iter=10000)
    assert res.converged and 1 < res.n_iter < 10000
    assert len(res.trace) == res.n_iter and res.trace[-1] == res.loglik
    rel = abs(res.trace[-1] - res.trace[-2]) / abs(res.trace[-1])
    assert rel <= 1e-8
    assert np.all(np.diff(res.trace) >= -1e-10 * abs(res.loglik))      # EM is monotone
    # gender model, em2 and ECME too
    r2 = em(rat["weight"], rat["id"], gender_X(rat), X, tol=1e-10, max_iter=5000)
    assert r2.converged and np.all(np.diff(r2.trace) >= -1e-10 * abs(r2.loglik))
    r3 = em(rat["weight"], rat["id"], X, tol=1e-10, accelerate="ecme")
    assert r3.converged and np.all(np.diff(r3.trace) >= -1e-10 * abs(r3.loglik))


def test_max_iter_stops_without_convergence(rat):
    res = em(rat["weight"], rat["id"], poly_X(rat), tol=1e-15, max_iter=7)
    assert not res.converged and res.n_iter == 7


def test_em2_diagonal_mask(rat):
    X = poly_X(rat)
    res = em(rat["weight"], rat["id"], X, simplified=True, mask=np.eye(3))
    off = res.omega - np.diag(np.diag(res.omega))
    assert np.all(off == 0) and np.all(np.diag(res.omega) > 0)
    assert res.n_params == 3 + 3 + 1
    rf = em(rat["weight"], rat["id"], X, mask=np.eye(3), tol=1e-10, accelerate=True)
    assert np.all(rf.omega[~np.eye(3, dtype=bool)] == 0) and rf.converged
    np.testing.assert_allclose(rf.loglik, res.loglik, rtol=1e-5)      # em2 after 50 its
    block = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    rb = em(rat["weight"], rat["id"], X, simplified=True, mask=block, n_iter=5)
    assert rb.n_params == 3 + 4 + 1 and rb.omega[0, 2] == 0 and rb.omega[0, 1] != 0
    # converged, a zero-variance mask entry reproduces the model without that column
    mask = np.diag([1.0, 1.0, 0.0])
    r3 = em(rat["weight"], rat["id"], X, simplified=True, mask=mask, tol=1e-12, accelerate=True)
    r2 = em(rat["weight"], rat["id"], X, X[:, :2], simplified=True, mask=np.eye(2), tol=1e-12,
            accelerate=True)
    assert r3.omega[2, 2] == 0 and np.isfinite(r3.loglik)
    np.testing.assert_allclose(r3.loglik, r2.loglik, rtol=1e-9)
    np.testing.assert_allclose(r3.omega[:2, :2], r2.omega, rtol=1e-5)


def test_mask_not_psd_warns(rat):
    X = poly_X(rat)
    mask = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]])
    with pytest.warns(UserWarning, match="positive semi-definite"):
        em(rat["weight"], rat["id"], X, simplified=True, mask=mask, n_iter=3)


# -------------------------------------------------- vectorised == per-group loop reference


def loop_em(y, g, X, A, niter, simplified=False, C=None):
    """The seed's em.lmem / em2.lmem, group by group, with n_i×n_i matrices for the LL."""
    y, X, A = np.asarray(y, float), np.asarray(X, float), np.asarray(A, float)
    uid = pd.unique(np.asarray(g))
    rows = [np.flatnonzero(np.asarray(g) == i) for i in uid]
    N, n, q = len(uid), len(y), A.shape[1]
    C = np.ones((q, q)) if C is None else C
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    Omega, sigma2 = np.eye(q), 1.0
    z = y - X @ beta
    trace = []

    def loglik(beta, Omega, sigma2):
        z = y - X @ beta
        ll = -0.5 * n * math.log(2 * math.pi)
        for row in rows:
            Ai, zi = A[row], z[row]
            Gi = Ai @ Omega @ Ai.T + sigma2 * np.eye(len(row))
            ll -= 0.5 * np.linalg.slogdet(Gi)[1] + 0.5 * zi @ np.linalg.solve(Gi, zi)
        return ll

    for _ in range(niter):
        i0 = np.linalg.inv(Omega)
        if simplified:
            z = y - X @ beta
        R, T, Cc = np.zeros((q, q)), 0.0, 0.0
        u = np.zeros(n)
        for row in rows:
            Ai, zi = A[row], z[row]
            AAi = Ai.T @ Ai
            Gam = np.linalg.inv(AAi / sigma2 + i0)
            mui = Gam @ Ai.T @ zi / sigma2
            u[row] = Ai @ mui
            Si = Gam + np.outer(mui, mui)
            R += Si
            T += np.trace(Si @ AAi)
            Cc += mui @ Ai.T @ zi
        beta = np.linalg.solve(X.T @ X, X.T @ (y - u))
        if simplified:
            Omega = R / N * C
            sigma2 = float(np.mean(y * (y - X @ beta - u)))
        else:
            z = y - X @ beta
            sigma2 = (z @ z - 2 * Cc + T) / n
            Omega = R / N
        trace.append(loglik(beta, Omega, sigma2))
    z = y - X @ beta                                     # conditional modes at the end
    i0 = np.linalg.inv(Omega)
    mus = np.array([np.linalg.solve(A[row].T @ A[row] / sigma2 + i0, A[row].T @ z[row]) / sigma2
                    for row in rows])
    return beta, Omega, sigma2, np.array(trace), mus


def loop_ecme(y, g, X, A, niter):
    """ECME by definition: β ← GLS at (Ω, σ²) with dense V_i, then the EM update of
    (Ω, σ²) from the moments at that β."""
    y, X, A = np.asarray(y, float), np.asarray(X, float), np.asarray(A, float)
    rows = [np.flatnonzero(np.asarray(g) == i) for i in pd.unique(np.asarray(g))]
    N, n, q = len(rows), len(y), A.shape[1]
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    Omega, sigma2 = np.eye(q), 1.0
    for _ in range(niter):
        H, h = 0.0, 0.0
        for row in rows:
            Vi = A[row] @ Omega @ A[row].T + sigma2 * np.eye(len(row))
            H = H + X[row].T @ np.linalg.solve(Vi, X[row])
            h = h + X[row].T @ np.linalg.solve(Vi, y[row])
        beta = np.linalg.solve(H, h)
        z = y - X @ beta
        i0 = np.linalg.inv(Omega)
        R, T, C = np.zeros((q, q)), 0.0, 0.0
        for row in rows:
            Ai, zi = A[row], z[row]
            Gam = np.linalg.inv(Ai.T @ Ai / sigma2 + i0)
            mui = Gam @ Ai.T @ zi / sigma2
            Si = Gam + np.outer(mui, mui)
            R, T, C = R + Si, T + np.trace(Si @ Ai.T @ Ai), C + mui @ Ai.T @ zi
        sigma2 = (z @ z - 2 * C + T) / n
        Omega = R / N
    return beta, Omega, sigma2


def test_ecme_matches_definition(rat):
    X, A = gender_X(rat), poly_X(rat)
    for k in (1, 4):
        beta, Omega, sigma2 = loop_ecme(rat["weight"], rat["id"], X, A, k)
        res = em(rat["weight"], rat["id"], X, A, n_iter=k, accelerate="ecme")
        np.testing.assert_allclose(res.beta, beta, rtol=1e-9)
        np.testing.assert_allclose(res.omega, Omega, rtol=1e-8, atol=1e-9 * np.abs(Omega).max())
        np.testing.assert_allclose(res.sigma2, sigma2, rtol=1e-9)


def _compare(res, ref, rtol=1e-10):
    beta, Omega, sigma2, trace, mus = ref
    np.testing.assert_allclose(res.beta, beta, rtol=rtol, atol=rtol * np.abs(beta).max())
    np.testing.assert_allclose(res.omega, Omega, rtol=rtol, atol=rtol * np.abs(Omega).max())
    np.testing.assert_allclose(res.sigma2, sigma2, rtol=rtol)
    np.testing.assert_allclose(res.trace, trace, rtol=rtol)
    np.testing.assert_allclose(res.loglik, trace[-1], rtol=rtol)
    np.testing.assert_allclose(res.ranef, mus, rtol=1e3 * rtol, atol=1e3 * rtol * np.abs(mus).max())


@pytest.mark.parametrize("simplified", [False, True])
def test_vectorised_matches_loop(rat, simplified):
    # shuffled rows (groups interleaved), A different from X
    rng = np.random.default_rng(7)
    d = rat.iloc[rng.permutation(len(rat))].reset_index(drop=True)
    X, A = gender_X(d), poly_X(d)
    ref = loop_em(d["weight"], d["id"], X, A, 25, simplified=simplified)
    res = em(d["weight"], d["id"], X, A, n_iter=25, simplified=simplified)
    _compare(res, ref)
    # the row order does not matter
    res0 = em(rat["weight"], rat["id"], gender_X(rat), poly_X(rat), n_iter=25,
              simplified=simplified)
    pos = {lab: i for i, lab in enumerate(pd.unique(d["id"]))}
    ref0 = ref[:4] + (ref[4][[pos[lab] for lab in res0.group_labels]],)
    _compare(res0, ref0, rtol=1e-9)


def test_vectorised_matches_loop_masked_unbalanced():
    rng = np.random.default_rng(3)
    G = 40
    sizes = rng.integers(1, 9, G)                        # unbalanced, some single rows
    g = np.repeat(np.array([f"g{i:02d}" for i in range(G)]), sizes)
    order = rng.permutation(len(g))
    g = g[order]
    n = len(g)
    t = rng.uniform(0, 3, n)
    x2 = rng.normal(size=n)
    X = np.column_stack([np.ones(n), t, x2])
    A = np.column_stack([np.ones(n), t])
    codes = pd.factorize(g)[0]
    b = rng.multivariate_normal([0, 0], [[2.0, 0.3], [0.3, 0.5]], G)
    y = X @ [1.0, 0.5, -2.0] + (A * b[codes]).sum(1) + rng.normal(0, 0.7, n)
    mask = np.eye(2)
    ref = loop_em(y, g, X, A, 30, simplified=True, C=mask)
    _compare(em(y, g, X, A, n_iter=30, simplified=True, mask=mask), ref)
    ref = loop_em(y, g, X, A, 30)
    res = em(y, g, X, A, n_iter=30)
    _compare(res, ref)
    # groups in order of first appearance (the seed's unique(id)), ranef row by row
    np.testing.assert_array_equal(res.group_labels, pd.unique(g))
    assert not np.array_equal(res.group_labels, np.sort(res.group_labels))
    assert res.ranef.shape == (G, 2)


# -------------------------------------------------------------------- inputs and misc


def test_names_from_dataframes(rat):
    X = pd.DataFrame({"Intercept": 1.0, "week": rat["week"], "week2": rat["week2"]})
    res = em(rat["weight"], rat["id"], X, X[["Intercept", "week"]], n_iter=5)
    assert res.names == ["Intercept", "week", "week2"]
    assert res.re_names == ["Intercept", "week"]
    assert isinstance(res.beta, np.ndarray) and res.omega.shape == (2, 2)
    assert res.n_obs == len(rat) and res.n_groups == 160
    assert list(res.group_labels[:2]) == ["B38602", "B38603"]   # order of first appearance


def test_integer_group_labels_and_A_default(rat):
    X = poly_X(rat)
    codes = pd.factorize(rat["id"])[0] * 7 + 3
    a = em(rat["weight"].to_numpy(), codes, X, n_iter=10)
    b = em(rat["weight"], rat["id"], X, X, n_iter=10)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-13)
    np.testing.assert_allclose(a.omega, b.omega, rtol=1e-12)


def test_no_fixed_effects():
    d = load("Dyestuff")
    n = len(d)
    r0 = em(d["Yield"], d["Batch"], np.zeros((n, 0)), np.ones((n, 1)), tol=1e-12,
            accelerate=True)
    assert r0.beta.shape == (0,) and r0.converged and np.isfinite(r0.loglik)
    r1 = em(d["Yield"], d["Batch"], np.ones((n, 1)), tol=1e-12, accelerate=True)
    ref = json.loads(REF.read_text())["dyestuff_ml"]
    np.testing.assert_allclose(r1.loglik, ref["loglik"], rtol=1e-9)
    np.testing.assert_allclose(r1.sigma2, ref["sigma2"], rtol=1e-5)


def test_errors(rat):
    X = poly_X(rat)
    y, g = rat["weight"], rat["id"]
    with pytest.raises(ValueError, match="groups has length 2234 but y has 2235"):
        em(y, g[:-1], X)
    with pytest.raises(ValueError, match="X has 2234 rows but y has 2235"):
        em(y, g, X[:-1])
    with pytest.raises(ValueError, match="A has 2234 rows but y has 2235"):
        em(y, g, X, X[:-1])
    ybad = y.to_numpy().copy()
    ybad[3] = np.nan
    with pytest.raises(ValueError, match="y contains missing"):
        em(ybad, g, X)
    gbad = g.to_numpy().copy()
    gbad[0] = None
    with pytest.raises(ValueError, match="groups contains missing"):
        em(y, gbad, X)
    with pytest.raises(ValueError, match="rank deficient"):
        em(y, g, np.column_stack([X, X[:, 1]]), X)
    with pytest.raises(ValueError, match="mask must be 3×3"):
        em(y, g, X, simplified=True, mask=np.eye(2))
    with pytest.raises(ValueError, match="accelerate must be"):
        em(y, g, X, accelerate="fast")
    with pytest.raises(ValueError, match="tol must be positive"):
        em(y, g, X, tol=0.0)
    with pytest.raises(ValueError, match="n_iter must be"):
        em(y, g, X, n_iter=-1)
