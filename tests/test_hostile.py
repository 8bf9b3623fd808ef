"""Hostile input: one regression test per class of silent wrong answer.

References: lme4 1.1-31 fits of the data in tests/reference/hostile/ (best of three
optimizers, tests/reference/make_hostile_refs.R -> hostile_lme4.json), the same model on
centred data (the likelihood is invariant to the shift), and dense brute-force
log-likelihoods (n ≤ 300: V = σ²(I + ZΛΛ'Z') formed and factorised directly).
"""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.numerics.crossprod import crossproducts
from pylmem.numerics.deviance import ProfiledDeviance

REF_DIR = Path(__file__).parent / "reference"
LME4 = json.loads((REF_DIR / "hostile_lme4.json").read_text())


def data(name):
    return pd.read_csv(REF_DIR / "hostile" / name)


def fit(formula, d, **kw):
    kw.setdefault("reml", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, d, **kw)


def dense_loglik(f) -> float:
    """ML log-likelihood at the fit's (β, σ², Ω), from the n × n marginal covariance."""
    d = f.design
    Z = np.hstack([t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T)
                   for t, T in zip(d.terms, f.factor.T)])
    V = f.sigma2 * (np.eye(d.n_obs) + Z @ Z.T)
    r = d.y - d.X @ f.beta
    _, logdet = np.linalg.slogdet(V)
    return -0.5 * (d.n_obs * np.log(2 * np.pi) + logdet + r @ np.linalg.solve(V, r))


# ------------------------------------------------------------------ 1. cancellation
@pytest.mark.parametrize("shift", [1e6, 1e7])
def test_shifted_response_same_fit(shift):
    """y + 10⁶ (10⁷): same logLik and variances as y (was 0.06 above the maximum; 10⁷ was
    refused as an exact fit).  1e-10 relative on logLik, 1e-6 on the variances."""
    d = data("base.csv")
    d = d.assign(y=(d.y + shift) - shift)   # the data as y + shift can hold them (exact)
    f0, f1 = fit("y ~ x + (1 | g)", d), fit("y ~ x + (1 | g)", d.assign(y=d.y + shift))
    assert f1.loglik == pytest.approx(f0.loglik, rel=1e-10)
    assert f1.sigma2 == pytest.approx(f0.sigma2, rel=1e-6)
    assert f1.cov_re["g"].iloc[0, 0] == pytest.approx(f0.cov_re["g"].iloc[0, 0], rel=1e-6)
    assert f1.fixef["(Intercept)"] - shift == pytest.approx(f0.fixef["(Intercept)"], abs=1e-6)
    assert f0.loglik == pytest.approx(LME4["base_int"]["loglik"], abs=1e-6)
    if shift == 1e6:
        assert f1.loglik == pytest.approx(dense_loglik(f1), rel=1e-10)


def test_random_slope_on_shifted_covariate():
    """x = 10⁴ + noise in (x | g): the optimum of the centred model (was 17 below; lme4
    itself stops 8.2 below), covariance transformed as b_int(x) = b_int(xc) − 10⁴ b_x."""
    d = data("base.csv")
    f0, f1 = fit("y ~ x + (x | g)", d), fit("y ~ x + (x | g)", data("shift_x_1e4.csv"))
    assert f0.loglik == pytest.approx(LME4["base_slope"]["loglik"], abs=1e-7)
    assert f1.loglik == pytest.approx(f0.loglik, rel=1e-9)
    assert f1.loglik > LME4["shift_x_1e4"]["loglik"] + 8
    assert f1.converged and not f1.warnings
    M = np.array([[1.0, -1e4], [0.0, 1.0]])        # (b_int, b_x) at x' = x + 10⁴
    np.testing.assert_allclose(f1.cov_re["g"].to_numpy(), M @ f0.cov_re["g"].to_numpy() @ M.T,
                               rtol=1e-5)


def test_scaled_response_and_covariate():
    """y × 10¹², x × 10⁻¹²: logLik shifted by −n log 10¹² (was 229 below)."""
    d = data("base.csv")
    f0 = fit("y ~ x + (x | g)", d)
    f1 = fit("y ~ x + (x | g)", d.assign(y=d.y * 1e12, x=d.x * 1e-12))
    assert f1.loglik == pytest.approx(f0.loglik - len(d) * np.log(1e12), rel=1e-10)
    assert f1.converged and not f1.warnings


def test_partition_sums_keep_centred_statistics():
    """Partitions' centred W'W combine exactly (Chan's update): same deviance as the whole."""
    d = data("shift_y_1e6.csv")
    m = pylmem.build_design("y ~ x + (1 | g)", d)
    whole = crossproducts(m.y, m.X, m.terms)
    total = None
    for idx in np.array_split(np.random.default_rng(0).permutation(m.n_obs), 4):
        sub = [type(t)(name=t.name, group=t.group, coef_names=t.coef_names, Z=t.Z[idx],
                       codes=t.codes[idx], levels=t.levels) for t in m.terms]
        c = crossproducts(m.y[idx], m.X[idx], sub)
        total = c if total is None else total + c
    np.testing.assert_allclose(total.WtWc, whole.WtWc, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(total.WtW, whole.WtW, rtol=1e-12)
    a = ProfiledDeviance(total, [1], [m.terms[0].n_levels], reml=False)
    b = ProfiledDeviance(whole, [1], [m.terms[0].n_levels], reml=False)
    assert a(np.array([0.8])) == pytest.approx(b(np.array([0.8])), rel=1e-10)


# ------------------------------------------------------------------ 2. optimiser limits
def test_crossed_huge_variance_ratio_no_box():
    """σ_a = 10⁵ σ: θ is not stopped at a box of 10⁴ (was 182 below lme4's best here)."""
    f = fit("y ~ 1 + (1 | a) + (1 | b)", data("crossed_1e5.csv"))
    ref = LME4["crossed_1e5"]
    assert f.loglik >= ref["loglik"] - 1e-6
    assert f.theta[0] > 1e4
    assert f.converged


@pytest.mark.slow
def test_q10_rank5_term_reaches_lme4():
    f = fit("y ~ 1 + (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 | a)", data("q10_rank5.csv"))
    assert f.loglik >= LME4["q10_rank5"]["loglik"] - 1e-6
    assert f.is_singular and any("singular" in w for w in f.warnings)


def test_exact_fit_by_random_effects_is_a_clear_error():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(10), 5)
    x = rng.normal(size=50)
    d = pd.DataFrame(dict(y=1 + 2 * x + rng.normal(size=10)[g], x=x, g=g))
    with pytest.raises(ValueError, match="fitted exactly by the fixed and random effects"):
        fit("y ~ x + (1 | g)", d)
    with pytest.raises(ValueError, match="fitted exactly by the fixed effects"):
        fit("y ~ x + (1 | g)", d.assign(y=3 - x))


def test_failed_check_restarts_from_the_em(monkeypatch):
    """An optimiser that stops at its start fails the check; the EM start recovers the optimum."""
    from pylmem.estimation import optimize as O

    d = pylmem.datasets.load("sleepstudy")
    ref = fit("Reaction ~ Days + (Days | Subject)", d)
    real, calls = O._run_lbfgsb, []

    def lazy_first(co, start, record, **kw):
        calls.append(1)
        if len(calls) == 1:
            return np.asarray(start, float) * 1.5, "stopped at once (test)"
        return real(co, start, record, **kw)

    monkeypatch.setattr(O, "_run_lbfgsb", lazy_first)
    f = fit("Reaction ~ Days + (Days | Subject)", d)
    assert "EM start" in f.optsum.method and f.converged
    assert f.loglik == pytest.approx(ref.loglik, rel=1e-10)


def test_restart_when_the_check_fails():
    """A start far from the optimum on a flat ridge: the restart reaches lme4's optimum."""
    from pylmem.estimation.optimize import optimize_theta

    d = data("crossed_1e5.csv")
    m = pylmem.build_design("y ~ 1 + (1 | a) + (1 | b)", d)
    dev = ProfiledDeviance(crossproducts(m.y, m.X, m.terms), [1, 1], [20, 15], reml=False)
    opt = optimize_theta(dev, m, theta0=np.array([1.0, 1.0]))
    assert -0.5 * opt.objective >= LME4["crossed_1e5"]["loglik"] - 1e-4


# ------------------------------------------------------------------ 3. identity of labels
@pytest.fixture(scope="module")
def int_id_fit():
    d = data("base.csv")
    return d, fit("y ~ x + (x | g)", d)


def test_float_newdata_ids_match_int_levels(int_id_fit):
    d, f = int_id_fit
    nd = d.head(20).copy()
    ref = f.predict(nd)
    np.testing.assert_allclose(f.predict(nd.assign(g=nd.g.astype(float))), ref, rtol=1e-13)
    with_nan = nd.assign(g=nd.g.astype(float))
    with_nan.loc[with_nan.index[0], "g"] = np.nan          # int column promoted to float
    out = f.predict(with_nan)
    np.testing.assert_allclose(out.iloc[1:], ref.iloc[1:], rtol=1e-13)
    assert out.iloc[0] == pytest.approx(f.predict(nd.head(1), re_form="~0").iloc[0])


def test_ids_by_value_zero_signs_and_mixed_types():
    rng = np.random.default_rng(1)
    d = pd.DataFrame(dict(y=rng.normal(size=40), g=[0.0, -0.0, 1.0, 2.0] * 10))
    assert fit("y ~ 1 + (1 | g)", d).n_groups == {"g": 3}
    g = pd.Series([2, "2", 3] * 10, dtype=object)
    d = pd.DataFrame(dict(y=np.tile([-2.0, 0.0, 2.0], 10) + rng.normal(size=30), g=g))
    f = fit("y ~ 1 + (1 | g)", d)
    assert f.n_groups == {"g": 3}
    nd = pd.DataFrame({"g": pd.Series([2, "2"], dtype=object)})
    b = f.ranef["g"]["(Intercept)"]
    pred = f.predict(nd)
    assert pred.iloc[0] != pred.iloc[1]
    assert set(np.round(pred - f.fixef.iloc[0], 12)) == set(np.round(b.loc[[2, "2"]], 12))


def test_interaction_levels_by_value():
    d = pylmem.datasets.load("Pastes")
    f = fit("strength ~ 1 + (1 | batch/cask)", d)
    np.testing.assert_allclose(f.predict(d.head(12)), f.fitted.iloc[:12], rtol=1e-12)


# ------------------------------------------------------------------ 4. names
def _named_data():
    rng = np.random.default_rng(2)
    n = 60
    return pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                         "Intercept": rng.normal(size=n), "1": rng.normal(size=n),
                         "g": np.repeat(np.arange(6), 10)})


@pytest.mark.parametrize("formula,col", [("y ~ x + Intercept + (1 | g)", "Intercept"),
                                         ("y ~ x + `1` + (1 | g)", "1")])
def test_columns_named_like_the_intercept(formula, col):
    d = _named_data()
    f = fit(formula, d)
    ref = fit("y ~ x + z + (1 | g)", d.assign(z=d[col]))
    assert list(f.fixef.index) == ["(Intercept)", "x", col]
    np.testing.assert_allclose(f.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(f.predict(d.head(5)), ref.predict(d.assign(z=d[col]).head(5)),
                               rtol=1e-10)


def test_random_term_on_a_column_named_intercept():
    f = fit("y ~ x + (Intercept | g)", _named_data())
    assert list(f.ranef["g"].columns) == ["(Intercept)", "Intercept"]


def test_indexing_in_formula_is_refused():
    with pytest.raises(ValueError, match=r"indexing with \[...\]"):
        fit("y ~ x[1] + (1 | g)", _named_data())


def test_backticked_names_with_spaces():
    d = _named_data().rename(columns={"y": "my y", "g": "my g", "x": "my x"})
    f = fit("`my y` ~ `my x` + (1 | `my g`)", d)
    ref = fit("y ~ x + (1 | g)", _named_data())
    assert f.loglik == pytest.approx(ref.loglik, rel=1e-12)
    assert list(f.n_groups) == ["my g"]


# ------------------------------------------------------------------ 5. arguments, messages
@pytest.mark.parametrize("reml", [None, "no", 0, 1.0])
def test_reml_must_be_bool(reml):
    with pytest.raises(ValueError, match="reml must be True or False"):
        pylmem.lmer("y ~ x + (1 | g)", _named_data(), reml=reml)


def test_predict_argument_checks(int_id_fit):
    d, f = int_id_fit
    with pytest.raises(ValueError, match="allow_new_levels must be True or False"):
        f.predict(d.head(2), allow_new_levels=None)


@pytest.mark.parametrize("formula,msg", [
    ("y ~ x + (0 | g)", r"\(0 \| g\) has no columns"),
    ("log(y) ~ x + (1 | g)", r"the response 'log\(y\)' must be a column"),
    ("y ~ x + x:::x + (1 | g)", "cannot use the model terms"),
])
def test_formula_messages(formula, msg):
    with pytest.raises(ValueError, match=msg) as e:
        fit(formula, _named_data())
    assert "\x1b" not in str(e.value) and "\n" not in str(e.value)


def test_no_rows():
    with pytest.raises(ValueError, match="no rows"):
        fit("y ~ x + (1 | g)", _named_data().iloc[:0])


def test_em_constant_response_and_one_obs_per_group():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(8), 5)
    X = np.ones((40, 1))
    with pytest.raises(ValueError, match="fitted exactly"):
        pylmem.em(np.full(40, 3.0), g, X)
    with pytest.raises(ValueError, match="must be less than the number of observations"):
        pylmem.em(rng.normal(size=40), np.arange(40), X, tol=1e-10, accelerate=True)
    with pytest.raises(ValueError, match="fitted exactly by the fixed and random effects"):
        pylmem.em(1 + rng.normal(size=8)[g], g, X, tol=1e-10, accelerate=True)


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "pylmem", *args], capture_output=True, text=True,
                          input=stdin, cwd=Path(__file__).parents[1])


def test_cli_header_only_csv_and_clean_errors(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("y,x,g\n")
    r = _cli("fit", str(p), "y ~ x + (1 | g)")
    assert r.returncode == 2 and "no rows" in r.stderr and "Traceback" not in r.stderr
    r = _cli("fit", "sleepstudy", "Reaction ~ Days + Days:::Days + (1 | Subject)")
    assert r.returncode == 2 and "\x1b" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_untrustworthy_fit_says_so_in_summary_and_json():
    from pylmem.io.cli import fit_to_dict

    rng = np.random.default_rng(4)
    d = pd.DataFrame(dict(y=rng.normal(size=60), g=np.repeat(np.arange(12), 5)))
    f = fit("y ~ 1 + (1 | g)", d)   # no group variance in the truth: a singular fit
    assert f.is_singular and f.warnings
    assert "boundary (singular) fit" in str(f.summary())
    assert fit_to_dict(f)["warnings"] == f.warnings


def test_partition_sums_keep_centred_term_statistics():
    """The random-slope term's centred per-level statistics also add over partitions."""
    d = data("shift_x_1e4.csv").assign(y=lambda e: e.y + 1e5)
    m = pylmem.build_design("y ~ x + (x | g)", d)
    whole = crossproducts(m.y, m.X, m.terms)
    total = None
    parts = np.array_split(np.random.default_rng(1).permutation(m.n_obs), 3)
    for idx in [parts[0], np.arange(0), *parts[1:]]:     # an empty partition too
        sub = [type(t)(name=t.name, group=t.group, coef_names=t.coef_names, Z=t.Z[idx],
                       codes=t.codes[idx], levels=t.levels) for t in m.terms]
        c = crossproducts(m.y[idx], m.X[idx], sub)
        total = c if total is None else total + c
    t, w = total.terms[0], whole.terms[0]
    ZtZc, ZtWc = t.centred_to(w.zshift, w.wshift)
    np.testing.assert_allclose(ZtZc, w.ZtZc, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ZtWc, w.ZtWc, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(t.ZtZ, w.ZtZ, rtol=1e-12)
    th = np.array([1.0, -0.3, 0.5])
    a = ProfiledDeviance(total, [2], [m.terms[0].n_levels], reml=True)
    b = ProfiledDeviance(whole, [2], [m.terms[0].n_levels], reml=True)
    assert a(th) == pytest.approx(b(th), rel=1e-9)
    # and the deviance equals the one of centred x (the model is invariant to the shift)
    m0 = pylmem.build_design("y ~ x + (x | g)", data("base.csv").assign(y=d.y))
    c0 = ProfiledDeviance(crossproducts(m0.y, m0.X, m0.terms), [2], [m0.terms[0].n_levels], reml=True)
    T = np.array([[1.0, 0.0], [-0.3, 0.5]])
    Minv = np.array([[1.0, -1e4], [0.0, 1.0]])   # Z_shifted = Z_base M -> T_shifted = M⁻¹ T
    R = np.linalg.qr((Minv @ T).T, mode="r")
    R = R * np.sign(np.diag(R))[:, None]
    assert b(np.array([R[0, 0], R[0, 1], R[1, 1]])) == pytest.approx(c0(th), rel=1e-9)
