"""R², ICC (Nakagawa–Schielzeth formulas by hand), rePCA (lme4), tidy/glance (broom.mixed)."""
import numpy as np
import pandas as pd
import pytest
from diag_refs import REFS, data, ref_fit

import pylmem


def test_r2_icc_random_intercept_by_hand():
    """Nakagawa & Schielzeth (2013), eqs. 26-27: σ²_f = var(Xβ̂), σ²_α the intercept
    variance, σ²_ε the residual variance; ICC_adj = σ²_α / (σ²_α + σ²_ε)."""
    d = data("sleepstudy")
    fit = pylmem.lmer("Reaction ~ Days + (1 | Subject)", d)
    b = fit.fixef
    vf = np.var(b["(Intercept)"] + b["Days"] * d["Days"].to_numpy(), ddof=1)
    va = fit.varcorr.loc[fit.varcorr["grp"] == "Subject", "vcov"].iloc[0]
    ve = fit.sigma ** 2
    r = fit.r2()
    assert r["R2_marginal"] == pytest.approx(vf / (vf + va + ve), rel=1e-12)
    assert r["R2_conditional"] == pytest.approx((vf + va) / (vf + va + ve), rel=1e-12)
    i = fit.icc()
    assert i["ICC_adjusted"] == pytest.approx(va / (va + ve), rel=1e-12)
    assert i["ICC_conditional"] == pytest.approx(va / (vf + va + ve), rel=1e-12)
    # sanity: R²_c ≥ R²_m, both in (0, 1)
    assert 0 < r["R2_marginal"] < r["R2_conditional"] < 1


def test_r2_random_slope_and_crossed_by_hand():
    """Random slopes (Johnson 2014): σ²_r = mean_i z_i'Ω z_i = Ω₀₀ + 2Ω₀₁ mean(x) + Ω₁₁ mean(x²);
    crossed intercepts: σ²_r = Σ_k σ²_k; ICC by group σ²_k / (σ²_r + σ²_ε)."""
    d = data("sleepstudy")
    fit = ref_fit("sleep_reml")
    O = fit.cov_re["Subject"].to_numpy()
    x = d["Days"].to_numpy()
    vr = O[0, 0] + 2 * O[0, 1] * x.mean() + O[1, 1] * np.mean(x ** 2)
    vf = np.var(fit.design.X @ fit.beta, ddof=1)
    tot = vf + vr + fit.sigma2
    assert fit.r2()["R2_marginal"] == pytest.approx(vf / tot, rel=1e-12)
    assert fit.r2()["R2_conditional"] == pytest.approx((vf + vr) / tot, rel=1e-12)
    pen = ref_fit("penicillin_reml")
    vc = pen.varcorr.set_index("grp")["vcov"]
    r = pen.r2()
    assert r["R2_marginal"] == pytest.approx(0.0, abs=1e-15)   # intercept only: var(Xβ̂) = 0
    assert r["R2_conditional"] == pytest.approx(
        (vc["plate"] + vc["sample"]) / vc.sum(), rel=1e-12)
    g = pen.icc(by_group=True)
    assert g["plate"] == pytest.approx(vc["plate"] / vc.sum(), rel=1e-12)
    assert g["sample"] == pytest.approx(vc["sample"] / vc.sum(), rel=1e-12)


@pytest.mark.parametrize("key", ["sleep_reml", "sleep_ml", "penicillin_reml", "penicillin_ml"])
def test_rePCA_matches_lme4(key):
    fit, r = ref_fit(key), REFS[key]
    pcs = fit.re_pca()
    if key.startswith("sleep"):
        np.testing.assert_allclose(pcs["Subject"].sdev, r["rePCA_sdev"], rtol=1e-5)
        # singular vectors are defined up to sign
        np.testing.assert_allclose(np.abs(pcs["Subject"].rotation),
                                   np.abs(np.array(r["rePCA_rotation"])), atol=1e-5)
        s = pcs["Subject"].summary()
        assert s.loc["Cumulative Proportion"].iloc[-1] == pytest.approx(1.0)
    else:
        np.testing.assert_allclose(pcs["plate"].sdev, r["rePCA_plate"], rtol=1e-5)
        np.testing.assert_allclose(pcs["sample"].sdev, r["rePCA_sample"], rtol=1e-5)


def test_rePCA_groups_uncorrelated_terms_by_factor():
    fit = pylmem.lmer("Reaction ~ Days + (Days || Subject)", data("sleepstudy"))
    pcs = fit.re_pca()
    assert list(pcs) == ["Subject"]
    T = [T[0, 0] for T in fit.factor.T]
    np.testing.assert_allclose(pcs["Subject"].sdev, sorted(T, reverse=True), rtol=1e-12)


BROOM = ["effect", "group", "term", "estimate", "std.error", "statistic", "df", "p.value"]


def test_tidy_columns_and_values():
    fit = ref_fit("sleep_reml")
    t = fit.tidy()
    assert list(t.columns) == BROOM
    assert list(t["effect"]) == ["fixed"] * 2 + ["ran_pars"] * 4
    assert list(t["term"]) == ["(Intercept)", "Days", "sd__(Intercept)", "cor__(Intercept).Days",
                               "sd__Days", "sd__Observation"]
    assert list(t["group"].iloc[2:]) == ["Subject"] * 3 + ["Residual"]
    assert t["group"].iloc[:2].isna().all()
    fx = t[t.effect == "fixed"]
    np.testing.assert_allclose(fx["estimate"], fit.beta)
    np.testing.assert_allclose(fx["std.error"], fit.stderr)
    np.testing.assert_allclose(fx["statistic"], fit.tvalues)
    C = fit.cov_re["Subject"].to_numpy()
    rp = t[t.effect == "ran_pars"]["estimate"].to_numpy()
    np.testing.assert_allclose(rp, [np.sqrt(C[0, 0]), C[0, 1] / np.sqrt(C[0, 0] * C[1, 1]),
                                    np.sqrt(C[1, 1]), fit.sigma], rtol=1e-12)
    ci = fit.tidy(effects="fixed", conf_int=True, conf_level=0.9)
    assert list(ci.columns) == BROOM + ["conf.low", "conf.high"]
    np.testing.assert_allclose(ci["conf.high"] - ci["estimate"], 1.6448536269514722 * fit.stderr)
    with pytest.raises(ValueError, match="effects must be among"):
        fit.tidy(effects="random")


def test_tidy_ddf_takes_df_and_p_from_coef_table():
    """With ddf=, df and p.value come from the fit's coef_table(ddf=) (lmerTest's
    Satterthwaite / Kenward-Roger); stubbed here so the wiring is tested on its own."""
    fit = pylmem.lmer("Reaction ~ Days + (1 | Subject)", data("sleepstudy"))
    if not hasattr(fit, "coef_table"):
        with pytest.raises(ValueError, match="needs the fit's coef_table"):
            fit.tidy(ddf="Satterthwaite")
    seen = {}

    def stub(ddf=None):
        seen["ddf"] = ddf
        return pd.DataFrame({"df": [17.0, 161.0], "Pr(>|t|)": [1e-10, 2e-20]},
                            index=fit.design.fixef_names)
    fit.coef_table = stub
    t = fit.tidy(effects="fixed", ddf="Satterthwaite")
    assert seen["ddf"] == "Satterthwaite"
    np.testing.assert_array_equal(t["df"], [17.0, 161.0])
    np.testing.assert_array_equal(t["p.value"], [1e-10, 2e-20])


def test_tidy_ran_vals_and_coefs():
    fit = ref_fit("sleep_reml")
    rv = fit.tidy(effects="ran_vals")
    assert list(rv.columns) == ["effect", "group", "level", "term"] + BROOM[3:]
    assert len(rv) == 36
    re = fit.ranef["Subject"]
    sub = rv[rv.term == "Days"].set_index("level")["estimate"]
    np.testing.assert_allclose(sub.loc[re.index.astype(str)], re["Days"], rtol=1e-12)
    sd = np.sqrt(fit.ranef_condvar()["Subject"][:, 1, 1])
    np.testing.assert_allclose(rv[rv.term == "Days"]["std.error"], sd, rtol=1e-12)
    rc = fit.tidy(effects="ran_coefs")
    cf = fit.coef["Subject"]
    got = rc[rc.term == "(Intercept)"].set_index("level")["estimate"]
    np.testing.assert_allclose(got.loc[cf.index.astype(str)], cf["(Intercept)"], rtol=1e-12)


def test_glance():
    for key in ("sleep_reml", "sleep_ml"):
        fit, r = ref_fit(key), REFS[key]
        g = fit.glance()
        crit = "REMLcrit" if fit.reml else "deviance"   # broom.mixed's names
        assert list(g.columns) == ["nobs", "sigma", "logLik", "AIC", "BIC", crit,
                                   "df.residual"]
        row = g.iloc[0]
        assert row["nobs"] == 180 and row["df.residual"] == 174
        assert row["logLik"] == pytest.approx(r["loglik"], abs=1e-6)
        assert row["AIC"] == pytest.approx(r["aic"], abs=1e-6)
        assert row["BIC"] == pytest.approx(r["bic"], abs=1e-6)
        assert row[crit] == pytest.approx(r["objective"], abs=1e-6)
        assert row["sigma"] == pytest.approx(r["sigma"], rel=1e-5)
    assert isinstance(g, pd.DataFrame)
