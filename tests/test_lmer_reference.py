"""pylmem.lmer against lme4 1.1-31 (tests/reference/lme4_fits.json, made by make_refs.R).

Tolerances: logLik / REML criterion 1e-6 relative (higher allowed where
lme4 warned), fixed effects and standard errors 1e-4 relative, variance components
1e-3 relative (to the largest entry of each covariance matrix).  Every fit must come
back without a convergence warning (reference_fit turns warnings into errors).
"""
import numpy as np
import pytest

from conftest import REFERENCE, reference_data, reference_fit

ONE_FACTOR = ["rat_poly_ml", "rat_poly_reml", "rat_gender_ml", "rat_male_h0_ml", "rat_male_h1_ml",
              "sleepstudy_reml", "sleepstudy_ml", "sleepstudy_uncorr_reml", "dyestuff_reml",
              "dyestuff_ml"]
MULTI_FACTOR = ["penicillin_reml", "pastes_reml", "cake_reml",
                pytest.param("insteval_ml", marks=pytest.mark.slow)]


def _check(name):
    ref = REFERENCE[name]
    fit = reference_fit(name)
    assert fit.converged and not fit.warnings
    assert fit.n_obs == ref["n_obs"]
    assert fit.n_groups == ref["groups"]
    assert fit.n_params == ref["n_params"]
    assert fit.df_resid == ref["df_resid"]
    # criterion: equal to 1e-6 relative, or better where lme4's default stopped short
    rel = (fit.loglik - ref["loglik"]) / abs(ref["loglik"])
    assert rel > -1e-6, (fit.loglik, ref["loglik"])
    if not ref["lme4_default_warned"]:
        assert abs(rel) < 1e-6
    assert fit.aic == pytest.approx(ref["aic"], rel=1e-6)
    assert fit.bic == pytest.approx(ref["bic"], rel=1e-6)
    if ref["reml"]:
        assert fit.reml_criterion == pytest.approx(ref["reml_criterion"], rel=1e-6)
    else:
        assert fit.deviance == pytest.approx(ref["deviance"], rel=1e-6)
    assert list(fit.fixef.index) == list(ref["fixef"])
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-4)
    np.testing.assert_allclose(fit.stderr.to_numpy(), list(ref["stderr"].values()), rtol=1e-4)
    assert fit.sigma2 == pytest.approx(ref["sigma2"], rel=1e-3)
    assert list(fit.cov_re) == list(ref["cov_re"])
    for g, c in ref["cov_re"].items():
        names = c["names"] if isinstance(c["names"], list) else [c["names"]]
        assert list(fit.cov_re[g].index) == names
        want = np.atleast_2d(np.array(c["matrix"], dtype=float))
        got = fit.cov_re[g].to_numpy()
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("name", ONE_FACTOR)
def test_one_factor_matches_lme4(name):
    _check(name)


@pytest.mark.parametrize("name", MULTI_FACTOR)
def test_multi_factor_matches_lme4(name):
    _check(name)


def test_rat_models_reach_the_true_maximum():
    """lme4 1.1-31 stops short and warns on the rat models; pylmem must not."""
    assert reference_fit("rat_poly_ml").loglik >= -8691.3502
    assert reference_fit("rat_gender_ml").loglik >= -8480.7455
    for name in ["rat_poly_ml", "rat_gender_ml", "rat_poly_reml", "rat_male_h0_ml", "rat_male_h1_ml"]:
        assert REFERENCE[name]["lme4_default_warned"]
        assert reference_fit(name).loglik > REFERENCE[name]["lme4_default_loglik"]


def test_varcorr_layout_sleepstudy():
    fit = reference_fit("sleepstudy_reml")
    vc = fit.varcorr
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert list(vc.grp) == ["Subject", "Subject", "Subject", "Residual"]
    # lme4 1.1-31: as.data.frame(VarCorr(fm1))$sdcor
    np.testing.assert_allclose(vc.sdcor.to_numpy(), [24.74065799, 5.92213766, 0.06555124, 25.59179572],
                               rtol=1e-4)


def test_ranef_coef_and_residuals_sleepstudy():
    fit = reference_fit("sleepstudy_reml")
    re = fit.ranef["Subject"]
    assert re.shape == (18, 2)
    # lme4's ranef(fm1)$Subject["308", ] and ["309", ]
    np.testing.assert_allclose(re.loc["308"].to_numpy(), [2.25855095, 9.198975766], atol=2e-4)
    np.testing.assert_allclose(re.loc["309"].to_numpy(), [-40.39873808, -8.619680615], atol=2e-4)
    co = fit.coef["Subject"]
    np.testing.assert_allclose(co.loc["308"].to_numpy(), [253.6636558, 19.66626173], atol=2e-3)
    # conditional modes sum to ~0 and the residuals are y − fitted in data order
    y = reference_data("sleepstudy_reml")["Reaction"].to_numpy()
    np.testing.assert_allclose((fit.fitted + fit.residuals).to_numpy(), y)
    # lme4 (Rscript, lme4 1.1-31): resid(fm1)[1:3]
    np.testing.assert_allclose(fit.residuals.iloc[:3].to_numpy(),
                               [-4.103655798, -14.625217524, -42.195579249], atol=1e-4)


def test_condvar_sleepstudy():
    """lme4 1.1-31 (Rscript): attr(ranef(fm1, condVar=TRUE)$Subject, 'postVar')[, , 1] (subject 308)."""
    fit = reference_fit("sleepstudy_reml")
    cv = fit.ranef_condvar()["Subject"]
    assert cv.shape == (18, 2, 2)
    np.testing.assert_allclose(cv[0], [[145.7055875, -21.444503598], [-21.4445036, 5.312282912]], rtol=2e-3)


def test_vcov_and_t_values_rat_h1():
    """The seed's printed summary of lmer.H1: t values 111.64 39.21 -27.70 -1.72 1.93."""
    fit = reference_fit("rat_male_h1_ml")
    np.testing.assert_allclose(fit.tvalues.to_numpy(), [111.64, 39.21, -27.70, -1.72, 1.93], atol=0.011)
    corr = fit.corr_fixef.to_numpy()
    # the seed: correlation of fixed effects, week2 vs week -0.888, wk:GMO vs week -0.663
    assert corr[2, 1] == pytest.approx(-0.888, abs=1.5e-3)
    assert corr[3, 1] == pytest.approx(-0.663, abs=1.5e-3)


def test_small_variance_near_the_boundary_is_not_called_singular():
    """d depends on a scalar θ through θ², so its gradient is 0 at θ = 0: the optimiser must
    not stop there.  lme4 1.1-31 (Rscript): REMLcrit 1876.29418405, variances 0.0804359170769
    and 60.3051608630079, isSingular FALSE."""
    import pylmem

    fit = pylmem.lmer("angle ~ temperature + (1 | recipe)", pylmem.datasets.load("cake"))
    assert fit.reml_criterion == pytest.approx(1876.29418405, abs=1e-6)
    assert fit.cov_re["recipe"].iloc[0, 0] == pytest.approx(0.0804359170769, rel=1e-4)
    assert fit.sigma2 == pytest.approx(60.3051608630079, rel=1e-6)
    assert not fit.is_singular and not fit.warnings
