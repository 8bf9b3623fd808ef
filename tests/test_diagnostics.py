"""Residual types, leverages, Cook's distance, rstudent and influence against lme4."""
import numpy as np
import pandas as pd
import pytest
from diag_refs import KEYS, REFS, data, ref_fit

import pylmem


@pytest.mark.parametrize("key", KEYS)
def test_observation_diagnostics_match_lme4(key):
    """hatvalues, cooks.distance, rstudent, residuals(type=) as lme4 1.1-31.

    The fits agree to ~1e-7 in θ; per-observation values are compared to 1e-4 relative
    (plus a small absolute slack for values near 0)."""
    fit, r = ref_fit(key), REFS[key]
    np.testing.assert_allclose(fit.hatvalues(), r["hatvalues"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fit.cooks_distance(), r["cooks"], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(fit.rstudent(), r["rstudent"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.residuals_of("response"), r["resid_response"], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(fit.residuals_of("pearson"), r["resid_pearson"], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(fit.residuals_of("response"), fit.residuals, rtol=1e-12)
    assert fit.hatvalues().sum() == pytest.approx(fit.hat_trace, rel=1e-10)


@pytest.mark.parametrize("key", ["sleep_w_reml", "penicillin_ml"])
def test_hatvalues_are_the_diagonal_of_the_hat_matrix(key):
    fit = ref_fit(key)
    P = fit.hat_matrix()
    np.testing.assert_allclose(fit.hatvalues(), np.diag(P), rtol=1e-10)
    # P maps √w y to √w ŷ
    d = data("sleepstudy" if key.startswith("sleep") else "Penicillin")
    y = d[fit.design.response].to_numpy()
    s = np.sqrt(fit.weights.to_numpy()) if fit.weights is not None else np.ones(len(y))
    np.testing.assert_allclose(P @ (s * y), s * fit.fitted.to_numpy(), rtol=1e-8)


def test_residual_type_errors_and_scaling():
    fit = ref_fit("sleep_w_ml")
    with pytest.raises(ValueError, match="type must be one of"):
        fit.residuals_of("partial")
    np.testing.assert_allclose(fit.residuals_of("pearson", scaled=True),
                               fit.residuals_of("pearson") / fit.sigma, rtol=1e-12)


def _check_influence(inf, r, rtol=1e-5):
    assert [str(g) for g in inf.fixed_effects.index] == r["groups"]
    np.testing.assert_allclose(inf.fixed_effects.to_numpy().T, r["fixef"], rtol=rtol)
    assert list(inf.var_comp.columns) == r["vc_names"]
    # lme4's influence() refits with default optimiser tolerances (σ² to ~1e-5 relative):
    # each component is compared relative to its largest absolute value over deletions
    vc, ref = inf.var_comp.to_numpy().T, np.array(r["vc"])
    assert np.all(np.abs(vc - ref) <= 1e-3 * np.abs(ref).max(axis=1, keepdims=True))
    se = np.array([np.sqrt(np.diag(inf.vcov[g])) for g in inf.fixed_effects.index])
    np.testing.assert_allclose(se.T.ravel(), np.ravel(np.array(list(r["se"].values())).T),
                               rtol=50 * rtol)
    if r.get("dfbetas"):
        db = inf.dfbetas().to_numpy().T
        scale = np.abs(np.array(r["dfbetas"])).max(axis=1, keepdims=True)
        assert np.all(np.abs(db - np.array(r["dfbetas"])) <= 1e-3 * scale)
    else:   # one fixed effect: dfbeta / SE₍₋ᵢ₎ by hand
        np.testing.assert_allclose(inf.dfbetas().iloc[:, 0],
                                   inf.dfbeta().iloc[:, 0] / se[:, 0], rtol=1e-12)
    np.testing.assert_allclose(inf.cooks_distance(), r["cooks"], rtol=1e-3, atol=1e-6)


def test_influence_group_deletion_matches_lme4():
    fit = pylmem.lmer("Yield ~ 1 + (1 | Batch)", pylmem.datasets.load("Dyestuff"))
    inf = fit.influence("Batch")
    _check_influence(inf, REFS["dyestuff_influence"])
    assert inf.converged.all()
    np.testing.assert_allclose(inf.dfbeta()["(Intercept)"],
                               np.array(REFS["dyestuff_influence"]["fixef"][0]) - fit.beta[0],
                               rtol=1e-6)
    fs = ref_fit("sleep_ml")
    _check_influence(fs.influence("Subject"), REFS["sleep_influence"], rtol=1e-4)


def test_influence_case_deletion_matches_lme4_and_a_subset_refit():
    dy = pylmem.datasets.load("Dyestuff")
    fit = pylmem.lmer("Yield ~ 1 + (1 | Batch)", dy)
    r = REFS["dyestuff_influence_case"]
    inf = fit.influence()
    # lme4 labels cases by row name (1-based); ours by the data index (0-based)
    inf.fixed_effects.index = [str(i + 1) for i in inf.fixed_effects.index]
    inf.vcov = {str(k + 1): v for k, v in inf.vcov.items()}
    _check_influence(inf, r)
    # one deletion against an explicit refit on the subset
    sub = pylmem.lmer("Yield ~ 1 + (1 | Batch)", dy.drop(index=[4]))
    assert inf.fixed_effects.loc["5"].iloc[0] == pytest.approx(sub.beta[0], rel=1e-8)


def test_influence_groups_from_data_or_array():
    d = data("sleepstudy")
    fit = pylmem.lmer("Reaction ~ Days + (1 | Subject)", d)
    d["half"] = np.where(d["Days"] < 5, "early", "late")
    a = fit.influence("half", data=d)
    b = fit.influence(d["half"].to_numpy())
    np.testing.assert_allclose(a.fixed_effects.loc[["early", "late"]],
                               b.fixed_effects.loc[["early", "late"]], rtol=1e-10)
    sub = pylmem.lmer("Reaction ~ Days + (1 | Subject)", d[d["half"] == "late"])
    np.testing.assert_allclose(a.fixed_effects.loc["early"], sub.beta, rtol=1e-6)
    with pytest.raises(ValueError, match="not a grouping factor"):
        fit.influence("half")
    assert isinstance(a.cooks_distance(), pd.Series)


def test_diagnostics_invariant_to_row_order_shift_and_scale():
    """Permuting rows, shifting y and rescaling a covariate leave leverages, Cook's
    distances and rstudent unchanged (matched by the data index)."""
    d = data("sleepstudy")
    f = pylmem.lmer("Reaction ~ Days + (Days | Subject)", d, weights="w")
    perm = np.random.default_rng(7).permutation(len(d))
    d2 = d.iloc[perm].assign(Reaction=lambda x: x["Reaction"] + 1000, Days=lambda x: 3 * x["Days"])
    f2 = pylmem.lmer("Reaction ~ Days + (Days | Subject)", d2, weights="w")
    for name in ("hatvalues", "cooks_distance", "rstudent"):
        a, b = getattr(f, name)(), getattr(f2, name)()
        np.testing.assert_allclose(b.loc[a.index], a, rtol=1e-5, atol=1e-8)


def test_influence_of_a_weighted_offset_fit_equals_subset_refits():
    d = data("sleepstudy")
    fit = pylmem.lmer("Reaction ~ Days + offset(off) + (Days | Subject)", d, weights="w")
    inf = fit.influence("Subject")
    keep = d["Subject"] != "309"
    sub = pylmem.lmer("Reaction ~ Days + offset(off) + (Days | Subject)", d[keep], weights="w")
    np.testing.assert_allclose(inf.fixed_effects.loc["309"], sub.beta, rtol=1e-6)
    assert inf.var_comp.loc["309", "sigma^2"] == pytest.approx(sub.sigma2, rel=1e-5)
