"""pylmem.anova against lme4's anova() and the seed's two likelihood-ratio tests.

Expected tables were printed by R 4.2.2 / lme4 1.1-31 with the Nelder_Mead optimizer (the
best optimum for the rat models, see tests/reference/make_refs.R); the seed document
prints the same numbers in lme4's older layout (Df / Chi Df columns):
gender effect Chisq 421.21 on 3 df, p < 2.2e-16; GMO effect among males Chisq 3.6479 on
2 df, p 0.1614.
"""
import warnings
from functools import lru_cache

import numpy as np
import pytest

import pylmem
from pylmem.inference.lrt import AnovaResult, anova
from test_summary import compare_lines

R_GENDER = """\
Data: d
Models:
r1: weight ~ week + week2 + (week + week2 | id)
r2: weight ~ gender * week + gender * week2 + (week + week2 | id)
   npar   AIC   BIC  logLik deviance  Chisq Df Pr(>Chisq)
r1   10 17403 17460 -8691.4    17383
r2   13 16988 17062 -8480.7    16962 421.21  3  < 2.2e-16 ***
---
Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1
"""

R_GMO = """\
Data: dm
Models:
lmer.H0: weight ~ week + week2 + (week + week2 | id)
lmer.H1: weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)
        npar    AIC    BIC  logLik deviance  Chisq Df Pr(>Chisq)
lmer.H0   10 8981.8 9032.0 -4480.9   8961.8
lmer.H1   12 8982.2 9042.4 -4479.1   8958.2 3.6479  2     0.1614
"""

# lme4's "refitting model(s) with ML (instead of REML)" is a message (stderr), not part of
# the table; pylmem says it once, as a warning (checked below)
R_SLEEP = """\
Data: sleepstudy
Models:
fm00: Reaction ~ 1 + (1 | Subject)
fm0: Reaction ~ 1 + (Days | Subject)
fm: Reaction ~ Days + (Days | Subject)
     npar    AIC    BIC  logLik deviance   Chisq Df Pr(>Chisq)
fm00    3 1916.5 1926.1 -955.27   1910.5
fm0     5 1785.5 1801.4 -887.74   1775.5 135.065  2  < 2.2e-16 ***
fm      6 1763.9 1783.1 -875.97   1751.9  23.537  1  1.226e-06 ***
---
Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1
"""


def _rats():
    d = pylmem.datasets.load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d


@lru_cache(maxsize=None)
def fit(formula, which, reml=False):
    d = {"d": _rats, "dm": lambda: _rats().query("gender == 'Male'"),
         "sleepstudy": lambda: pylmem.datasets.load("sleepstudy")}[which]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, d, reml=reml)


H0 = "weight ~ week + week2 + (week + week2 | id)"
H1 = "weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)"
GENDER = "weight ~ gender*week + gender*week2 + (week + week2 | id)"


def test_gender_effect_seed():
    a = anova(fit(H0, "d"), fit(GENDER, "d"), names=["r1", "r2"], data_name="d")
    assert isinstance(a, AnovaResult)
    assert list(a.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df",
                               "Pr(>Chisq)"]
    assert list(a.index) == ["r1", "r2"]
    assert list(a["npar"]) == [10, 13]
    assert a.loc["r2", "Chisq"] == pytest.approx(421.21, abs=0.005)
    assert a.loc["r2", "Df"] == 3
    assert a.loc["r2", "Pr(>Chisq)"] < 2.2e-16
    # the seed's print(c(logLik, AIC, BIC)) of r1 and r2
    np.testing.assert_allclose(a["logLik"], [-8691.35, -8480.745], atol=0.005)
    np.testing.assert_allclose(a["AIC"], [17402.70, 16987.491], atol=0.005)
    np.testing.assert_allclose(a["BIC"], [17459.82, 17061.747], atol=0.005)
    np.testing.assert_allclose(a["deviance"], [17382.70, 16961.491], atol=0.005)
    assert np.isnan(a.loc["r1", "Chisq"]) and np.isnan(a.loc["r1", "Pr(>Chisq)"])
    compare_lines(str(a), R_GENDER)


def test_gmo_effect_seed():
    a = anova(fit(H0, "dm"), fit(H1, "dm"), names=["lmer.H0", "lmer.H1"], data_name="dm")
    assert a.loc["lmer.H1", "Chisq"] == pytest.approx(3.6479, abs=0.005)
    assert a.loc["lmer.H1", "Df"] == 2
    assert a.loc["lmer.H1", "Pr(>Chisq)"] == pytest.approx(0.1614, abs=5e-4)
    np.testing.assert_allclose(a["logLik"], [-4480.9, -4479.1], atol=0.05)
    np.testing.assert_allclose(a["AIC"], [8981.8, 8982.2], atol=0.05)
    np.testing.assert_allclose(a["BIC"], [9032.0, 9042.4], atol=0.05)
    compare_lines(str(a), R_GMO)
    assert "Signif. codes" not in str(a)   # no p < 0.1: no stars, as R


def test_sorted_by_npar_and_default_names():
    a = anova(fit(H1, "dm"), fit(H0, "dm"))
    assert list(a.index) == ["m1", "m0"]
    assert list(a["npar"]) == [10, 12]
    assert a.loc["m0", "Chisq"] == pytest.approx(3.6479, abs=0.005)


def test_reml_fits_are_refitted_with_ml():
    fm = fit("Reaction ~ Days + (Days|Subject)", "sleepstudy", True)
    fm0 = fit("Reaction ~ 1 + (Days|Subject)", "sleepstudy", True)
    fm00 = fit("Reaction ~ 1 + (1|Subject)", "sleepstudy", True)
    with pytest.warns(UserWarning, match=r"refitting model\(s\) with ML \(instead of REML\)"):
        a = anova(fm, fm0, fm00, names=["fm", "fm0", "fm00"], data_name="sleepstudy")
    assert a.refitted
    assert list(a.index) == ["fm00", "fm0", "fm"]
    # R: Chisq 135.06518, 23.53654; p 4.687806e-30, 1.225640e-06
    np.testing.assert_allclose(a["Chisq"].iloc[1:], [135.06518, 23.53654], rtol=1e-6)
    np.testing.assert_allclose(a["Pr(>Chisq)"].iloc[1:], [4.687806e-30, 1.225640e-06], rtol=1e-5)
    compare_lines(str(a), R_SLEEP)
    assert all(not f.reml for f in a.fits)


def test_different_data_is_an_error():
    with pytest.raises(ValueError, match="same data.*observations"):
        anova(fit(H0, "dm"), fit(H0, "d"))
    with pytest.raises(ValueError, match="same data.*respons"):
        anova(fit("Reaction ~ Days + (Days|Subject)", "sleepstudy"), fit(H0, "dm"))


def test_argument_errors():
    with pytest.raises(ValueError, match="at least two"):
        anova()
    # one model: lmerTest's F tests, not an error
    assert list(anova(fit(H0, "dm")).columns)[:2] == ["Sum Sq", "Mean Sq"]
    with pytest.raises(ValueError, match="names"):
        anova(fit(H0, "dm"), fit(H1, "dm"), names=["a"])


def test_lazy_package_attribute():
    assert pylmem.anova is anova
