"""Prior weights and offsets against lme4 (tests/reference/diagnostics_refs.json)."""
import numpy as np
import pandas as pd
import pytest
from diag_refs import KEYS, REFS, SLEEP, SLEEP_OFF, data, newdata, ref_fit

import pylmem


@pytest.mark.parametrize("key", KEYS)
def test_fit_matches_lme4(key):
    """θ, β, σ, the criterion (with −Σ log w) and fitted values as lme4 (bobyqa, rhoend 1e-12)."""
    fit, r = ref_fit(key), REFS[key]
    assert fit.objective == pytest.approx(r["objective"], abs=1e-6)
    assert fit.loglik == pytest.approx(r["loglik"], abs=1e-6)
    assert fit.aic == pytest.approx(r["aic"], abs=1e-6)
    np.testing.assert_allclose(fit.theta, r["theta"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.beta, list(r["fixef"].values()), rtol=1e-6)
    np.testing.assert_allclose(fit.stderr, r["stderr"], rtol=1e-4)
    assert fit.sigma == pytest.approx(r["sigma"], rel=1e-5)
    np.testing.assert_allclose(fit.varcorr["vcov"], r["vcov"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.fitted, r["fitted"], rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("key", ["sleep_w_reml", "sleep_w_ml", "sleep_off_reml", "sleep_off_ml"])
def test_predict_newdata_matches_lme4(key):
    """predict(newdata) with weights / an offset rebuilt from newdata, new level at 0."""
    fit, r = ref_fit(key), REFS[key]
    np.testing.assert_allclose(fit.predict(newdata(), allow_new_levels=True), r["predict_new"], rtol=1e-7, atol=1e-4)
    np.testing.assert_allclose(fit.predict(newdata(), re_form="~0"), r["predict_new_pop"],
                               rtol=1e-9)


def test_constant_weights_scale_sigma_only():
    """w ≡ c is the same model (residual variance σ²/c): σ² is multiplied by c, θ = Ω½/σ
    divided by √c, Ω, β, fitted values and the criterion (with −n log c) unchanged."""
    d = data("sleepstudy")
    f1 = pylmem.lmer(SLEEP, d)
    f4 = pylmem.lmer(SLEEP, d, weights=np.full(len(d), 4.0))
    np.testing.assert_allclose(f4.theta, f1.theta / 2, rtol=1e-5)
    np.testing.assert_allclose(f4.cov_re["Subject"], f1.cov_re["Subject"], rtol=1e-5)
    np.testing.assert_allclose(f4.beta, f1.beta, rtol=1e-8)
    assert f4.sigma2 == pytest.approx(4 * f1.sigma2, rel=1e-6)
    assert f4.objective == pytest.approx(f1.objective, abs=1e-6)
    np.testing.assert_allclose(f4.fitted, f1.fitted, rtol=1e-7)


def test_integer_weights_equal_replicated_rows_fixed_part():
    """Weight 2 on a row gives the same β̂ and θ̂ as that row's GLS weight doubled: checked
    against the dense GLS solution at the fitted θ with V = Z Ω Z' + σ² W⁻¹."""
    d = data("sleepstudy")
    fit = pylmem.lmer(SLEEP, d, weights="w", reml=False)
    X = np.c_[np.ones(len(d)), d["Days"]]
    Z = np.zeros((len(d), 36))
    codes = pd.factorize(d["Subject"], sort=True)[0]
    Z[np.arange(len(d)), 2 * codes] = 1
    Z[np.arange(len(d)), 2 * codes + 1] = d["Days"]
    Om = np.kron(np.eye(18), fit.cov_re["Subject"].to_numpy())
    V = Z @ Om @ Z.T + fit.sigma2 * np.diag(1 / d["w"].to_numpy())
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ d["Reaction"].to_numpy())
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-9)
    sign, logdet = np.linalg.slogdet(V)
    e = d["Reaction"].to_numpy() - X @ beta
    m2ll = logdet + e @ Vi @ e + len(d) * np.log(2 * np.pi)
    assert fit.deviance == pytest.approx(m2ll, abs=1e-6)


def test_offset_equals_shifted_response():
    """offset(o): the same fit as y − o, fitted values shifted back by o."""
    d = data("sleepstudy")
    f_off = pylmem.lmer(SLEEP_OFF, d)
    d2 = d.assign(Reaction=d["Reaction"] - d["off"])
    f2 = pylmem.lmer(SLEEP, d2)
    np.testing.assert_allclose(f_off.theta, f2.theta, rtol=1e-6)
    np.testing.assert_allclose(f_off.beta, f2.beta, rtol=1e-8)
    np.testing.assert_allclose(f_off.fitted, f2.fitted + d["off"].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(f_off.residuals, f2.residuals, atol=1e-7)
    np.testing.assert_allclose(f_off.predict(), f_off.fitted, rtol=1e-12)
    np.testing.assert_allclose(f_off.predict(d), f_off.fitted, rtol=1e-10)
    # offset= argument (column or array) is the same as offset() in the formula
    f3 = pylmem.lmer(SLEEP, d, offset="off")
    f4 = pylmem.lmer(SLEEP, d, offset=d["off"].to_numpy())
    for f in (f3, f4):
        np.testing.assert_allclose(f.beta, f_off.beta, rtol=1e-9)
    np.testing.assert_allclose(f3.predict(newdata(), allow_new_levels=True),
                               f_off.predict(newdata(), allow_new_levels=True), rtol=1e-9)
    with pytest.raises(ValueError, match="column name to predict"):
        f4.predict(newdata())
    # an offset expression is evaluated on the data
    f5 = pylmem.lmer("Reaction ~ Days + offset(2 * off) + (Days | Subject)", d)
    f6 = pylmem.lmer(SLEEP, d.assign(Reaction=d["Reaction"] - 2 * d["off"]))
    np.testing.assert_allclose(f5.beta, f6.beta, rtol=1e-8)


def test_weights_follow_rows_and_missing_values():
    """Weights are permuted with the rows; rows dropped for NA drop their weight too."""
    d = data("sleepstudy")
    f = pylmem.lmer(SLEEP, d, weights="w")
    perm = np.random.default_rng(1).permutation(len(d))
    fp = pylmem.lmer(SLEEP, d.iloc[perm], weights=d["w"].to_numpy()[perm])
    assert fp.objective == pytest.approx(f.objective, abs=1e-8)
    np.testing.assert_allclose(fp.fitted.loc[d.index], f.fitted, rtol=1e-7)
    dn = d.copy()
    dn.loc[[3, 50], "Days"] = np.nan
    fn = pylmem.lmer(SLEEP, dn, weights=dn["w"].to_numpy())
    fs = pylmem.lmer(SLEEP, d.drop(index=[3, 50]), weights="w")
    assert fn.n_obs == 178
    assert fn.objective == pytest.approx(fs.objective, abs=1e-8)


@pytest.mark.parametrize("bad,msg", [(0.0, "1 zero"), (-1.0, "1 negative"), (np.nan, "1 NaN")])
def test_bad_weights_name_column_and_count(bad, msg):
    d = data("sleepstudy")
    d.loc[7, "w"] = bad
    with pytest.raises(ValueError, match=rf"weights column 'w' has 1 row.*{msg}"):
        pylmem.lmer(SLEEP, d, weights="w")


def test_weight_input_errors():
    d = data("sleepstudy")
    with pytest.raises(ValueError, match="weights column 'nope' not in the data"):
        pylmem.lmer(SLEEP, d, weights="nope")
    with pytest.raises(ValueError, match="weights has 3 values but the data has 180 rows"):
        pylmem.lmer(SLEEP, d, weights=[1, 2, 3])


def test_summary_and_weights_accessor():
    """The summary's scaled residuals are lme4's Pearson residuals / σ (√w e / σ)."""
    fit = ref_fit("sleep_w_reml")
    s = fit.summary()
    r = np.asarray(REFS["sleep_w_reml"]["resid_pearson"]) / REFS["sleep_w_reml"]["sigma"]
    np.testing.assert_allclose(s.resid_quantiles.to_numpy(),
                               np.quantile(r, [0, .25, .5, .75, 1]), rtol=1e-4)
    np.testing.assert_array_equal(fit.weights.to_numpy(), data("sleepstudy")["w"].to_numpy())
    # lme4 prints "Weights: w" (and " Offset: o" for the offset= argument) under the formula
    assert str(s).splitlines()[2] == "Weights: w"
    f2 = pylmem.lmer(SLEEP, data("sleepstudy"), offset="off")
    assert str(f2.summary()).splitlines()[2] == " Offset: off"
    assert "Offset" not in str(ref_fit("sleep_off_ml").summary())
    assert ref_fit("sleep_reml").weights is None


def test_polars_and_pyarrow_input():
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    d = data("sleepstudy")
    ref = pylmem.lmer(SLEEP, d, weights="w")
    for tbl in (pl.from_pandas(d), pa.Table.from_pandas(d, preserve_index=False)):
        f = pylmem.lmer(SLEEP, tbl, weights="w")
        assert f.objective == pytest.approx(ref.objective, abs=1e-8)
        np.testing.assert_allclose(f.predict(pl.from_pandas(newdata()), allow_new_levels=True),
                                   ref.predict(newdata(), allow_new_levels=True), rtol=1e-10)
    with pytest.raises(ValueError, match="pandas, polars or pyarrow"):
        pylmem.lmer(SLEEP, [[1, 2]])


@pytest.mark.parametrize("key", ["sleep_w_ml", "sleep_off_ml"])
def test_em_with_weights_and_offsets_matches_lme4(key):
    """The EM fitter runs on the √w-scaled rows of y − offset: same ML fit as lme4."""
    d = data("sleepstudy")
    kw = {"weights": "w"} if key == "sleep_w_ml" else {}
    f = pylmem.lmer(SLEEP_OFF if key == "sleep_off_ml" else SLEEP, d, reml=False, method="em", **kw)
    r = REFS[key]
    assert f.converged
    assert f.objective == pytest.approx(r["objective"], abs=1e-6)
    np.testing.assert_allclose(f.fitted, r["fitted"], rtol=1e-6, atol=1e-4)


def test_bootstrap_of_weighted_or_offset_fits_is_a_clear_error():
    """simulate / refit(y) / bootstrap do not model weights or offsets yet: they say so."""
    d = data("sleepstudy")
    for f in (pylmem.lmer(SLEEP, d, weights="w"), pylmem.lmer(SLEEP_OFF, d)):
        if not hasattr(f, "simulate"):
            pytest.skip("no bootstrap in this build")
        with pytest.raises(NotImplementedError, match="prior weights or offsets"):
            f.simulate(2, seed=1)
        with pytest.raises(NotImplementedError, match="prior weights or offsets"):
            f.refit(d["Reaction"].to_numpy())
        with pytest.raises(NotImplementedError, match="prior weights or offsets"):
            f.bootstrap(3, seed=1)


def test_satterthwaite_and_kenward_roger_df_of_a_weighted_fit():
    """The weighted model is the unweighted one on √w-scaled rows, so the df machinery
    applies unchanged: Satterthwaite checked against lmerTest on the same weighted fit;
    Kenward–Roger against the dense computation with Σ = ZΩZ' + σ²W⁻¹ (pbkrtest builds Σ
    without the weights, so its df differ: docs/inference.md)."""
    fit = ref_fit("sleep_w_reml")
    if not hasattr(fit, "coef_table"):
        pytest.skip("no coef_table in this build")
    r = REFS["sleep_w_reml_ddf"]
    np.testing.assert_allclose(fit.coef_table(ddf="Satterthwaite")["df"], r["satterthwaite"],
                               rtol=1e-4)
    from pylmem.inference import kenward_roger as K

    dense = K._kr_finish(fit, *K._kr_parts_dense(fit))
    want = [K.kr_df_1d(dense, row) for row in np.eye(fit.design.n_fixef)]
    np.testing.assert_allclose(fit.coef_table(ddf="Kenward-Roger")["df"], want, rtol=1e-8)
    t = fit.tidy(effects="fixed", ddf="Satterthwaite")
    np.testing.assert_allclose(t["df"], r["satterthwaite"], rtol=1e-4)
    assert (t["p.value"] < 1e-3).all()


@pytest.mark.slow
def test_profile_confint_of_a_weighted_fit():
    """Profile intervals carry the −Σ log w term: variance parameters as lme4's profile;
    fixed effects close to Wald (lme4's own fixed-effect profile of a weighted fit is
    non-monotonic and not used)."""
    fit = ref_fit("sleep_w_ml")
    if not hasattr(fit, "confint"):
        pytest.skip("no confint in this build")
    r = REFS["sleep_w_ml_profile"]
    ci = fit.confint(method="profile")
    for name in (".sig01", ".sig02", ".sig03", ".sigma"):
        i = r["names"].index(name)
        assert ci.loc[name].iloc[0] == pytest.approx(r["lower"][i], rel=1e-4, abs=1e-4)
        assert ci.loc[name].iloc[1] == pytest.approx(r["upper"][i], rel=1e-4, abs=1e-4)
    se = fit.stderr
    for name in ("(Intercept)", "Days"):
        half = (ci.loc[name].iloc[1] - ci.loc[name].iloc[0]) / 2
        assert half == pytest.approx(1.96 * se[name], rel=0.1)
