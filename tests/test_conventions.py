"""The conventions R and Python users expect: lmerTest's digits, lme4's orders and names,
broom.mixed's names, Python advice in Python output, labelled results, statsmodels' names.

Reference printouts: tests/reference/conventions_refs.json (R 4.2.2, lme4 1.1-31, lmerTest
3.1.3), made by tests/reference/make_conventions_refs.R.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pylmem
from pylmem.inference.plots import readable_names
from pylmem.reports.plots import leverage_label
from test_summary import DYESTUFF2, compare_lines

REFS = json.loads((Path(__file__).parent / "reference" / "conventions_refs.json").read_text())
SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return pylmem.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def fm(sleep):
    return pylmem.lmer(SLEEP, sleep)


def _fixed_block(text, n):
    lines = text.splitlines()
    i = lines.index("Fixed effects:")
    return lines[i + 1:i + 1 + n]


# ------------------------------------------------------------------ lmerTest's digits


def test_lmertest_df_printed_with_the_estimates_digits(fm):
    got = _fixed_block(str(fm.summary(ddf="Satterthwaite")), 3)
    compare_lines("\n".join(got), "\n".join(REFS["sleep_lmertest_fixed"]))
    assert got[1].split()[3] == "17.000"


def test_lmertest_df_digits_follow_the_coefficients():
    fp = pylmem.lmer("strength ~ 1 + (1 | batch) + (1 | batch:cask)",
                     pylmem.datasets.load("Pastes"))
    got = _fixed_block(str(fp.summary(ddf="Satterthwaite")), 2)
    compare_lines("\n".join(got), "\n".join(REFS["pastes_lmertest_fixed"]))
    assert got[1].split()[3] == "9.0000"


# ------------------------------------------------------------------ lme4's and broom's names


def test_varcorr_rows_in_lme4_order(fm):
    vc, r = fm.varcorr, REFS["sleep_varcorr"]
    assert list(vc["grp"]) == r["grp"]
    assert [None if pd.isna(v) else v for v in vc["var1"]] == r["var1"]
    assert [None if pd.isna(v) else v for v in vc["var2"]] == r["var2"]
    np.testing.assert_allclose(vc["sdcor"], r["sdcor"], rtol=1e-4)
    np.testing.assert_allclose(vc["vcov"], r["vcov"], rtol=1e-4)


def test_glance_names_the_reml_criterion(fm, sleep):
    g = fm.glance()
    assert "REMLcrit" in g.columns and "deviance" not in g.columns
    assert g["REMLcrit"].iloc[0] == pytest.approx(fm.reml_criterion, abs=1e-9)
    gm = pylmem.lmer(SLEEP, sleep, reml=False).glance()
    assert "deviance" in gm.columns and "REMLcrit" not in gm.columns


def test_reml_is_an_alias_of_reml(sleep, fm):
    ml = pylmem.lmer(SLEEP, sleep, REML=False)
    assert not ml.reml
    assert ml.loglik == pytest.approx(pylmem.lmer(SLEEP, sleep, reml=False).loglik, abs=1e-9)
    assert pylmem.lmer(SLEEP, sleep, REML=True).reml_criterion == pytest.approx(
        fm.reml_criterion, abs=1e-9)


def test_re_pca_and_its_deprecated_alias(fm):
    new = fm.re_pca()
    with pytest.warns(DeprecationWarning, match="re_pca"):
        old = fm.rePCA()
    np.testing.assert_allclose(new["Subject"].sdev, old["Subject"].sdev)


# ------------------------------------------------------------------ Python advice, Data: line


def test_no_r_advice_in_python_output():
    rng = np.random.default_rng(1)
    n, g = 400, 20
    d = pd.DataFrame(rng.normal(size=(n, 13)), columns=[f"x{i}" for i in range(13)])
    d["g"] = np.repeat(np.arange(g), n // g)
    d["y"] = d.sum(axis=1) + rng.normal(size=g)[d["g"]] + rng.normal(size=n)
    fit = pylmem.lmer("y ~ " + " + ".join(f"x{i}" for i in range(13)) + " + (1 | g)", d)
    s = str(fit.summary())
    assert "correlation=TRUE" not in s and "vcov(....)" not in s
    assert "fit.corr_fixef" in s and "fit.vcov" in s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sing = pylmem.lmer("Yield ~ 1 + (1|Batch)", DYESTUFF2)
    assert sing.is_singular
    s = str(sing.summary())
    assert "help('isSingular')" not in s
    assert "help(pylmem.LmerFit.is_singular)" in s
    assert pylmem.LmerFit.is_singular.__doc__


def test_data_line_when_the_name_is_known(sleep, fm):
    assert "   Data:" not in str(fm.summary())
    named = pylmem.lmer(SLEEP, sleep, data_name="sleepstudy")
    lines = str(named.summary()).splitlines()
    assert lines[1:3] == ["Formula: Reaction ~ Days + (Days | Subject)", "   Data: sleepstudy"]
    assert "   Data: sleepstudy" in repr(named)
    assert "   Data: sleepstudy" in str(named.summary(ddf="Satterthwaite"))


# ------------------------------------------------------------------ anova: names, one note


def test_anova_rows_named_by_the_callers_variables(sleep):
    fm1 = pylmem.lmer(SLEEP, sleep, reml=False)
    fm0 = pylmem.lmer("Reaction ~ 1 + (Days | Subject)", sleep, reml=False)
    a = pylmem.anova(fm0, fm1)
    assert list(a.index) == ["fm0", "fm1"]
    assert "fm1: Reaction ~ Days + (Days | Subject)" in str(a)
    same = fm1
    assert list(pylmem.anova(fm0, fm1, names=["a", "b"]).index) == ["a", "b"]
    # a fit held by two names, or no name: the m0, m1 fallback
    assert list(pylmem.anova(fm0, same).index) == ["m0", "m1"]
    fits = [fm0, fm1]
    assert list(pylmem.anova(*fits).index) == ["m0", "m1"]


def test_anova_refit_note_said_once(sleep, fm):
    fm0 = pylmem.lmer("Reaction ~ 1 + (Days | Subject)", sleep)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = pylmem.anova(fm0, fm)
    notes = [x for x in w if "refitting model(s) with ML" in str(x.message)]
    assert len(notes) == 1
    assert a.refitted and "refitting" not in str(a)


# ------------------------------------------------------------------ labelled results


def test_simulate_as_frame_is_labelled(fm, sleep):
    Y = fm.simulate(3, seed=4)
    F = fm.simulate(3, seed=4, as_frame=True)
    assert isinstance(Y, np.ndarray) and isinstance(F, pd.DataFrame)
    assert list(F.columns) == ["sim_1", "sim_2", "sim_3"]
    assert F.index.equals(sleep.index)
    np.testing.assert_array_equal(F.to_numpy(), Y)
    # relabelled rows follow the data's index
    d = sleep.copy()
    d.index = [f"r{i}" for i in range(len(d))]
    F2 = pylmem.lmer(SLEEP, d).simulate(3, seed=4, as_frame=True)
    assert list(F2.index[:2]) == ["r0", "r1"]
    np.testing.assert_allclose(F2.to_numpy(), Y, rtol=1e-6)


def test_ranef_condvar_as_frame_is_labelled(fm):
    arr = fm.ranef_condvar()["Subject"]
    fr = fm.ranef_condvar(as_frame=True)["Subject"]
    assert fr.index.names == ["Subject", "term"]
    assert list(fr.columns) == ["(Intercept)", "Days"]
    levels = list(fm.ranef["Subject"].index)
    k = levels.index("308")
    np.testing.assert_array_equal(fr.loc["308"].to_numpy(), arr[k])
    assert fr.loc[("309", "Days"), "Days"] == arr[levels.index("309"), 1, 1]


# ------------------------------------------------------------------ notebooks


def test_repr_html_of_the_summary_and_tables(fm, sleep):
    cake = pylmem.datasets.load("cake")
    fc = pylmem.lmer("angle ~ recipe*temperature + (1|recipe:replicate)", cake,
                     factors=["temperature"])
    objs = [fm, fm.summary(), fm.summary(ddf="Satterthwaite"), fc.anova(),
            pylmem.ranova(fm)]
    for o in objs:
        h = o._repr_html_()
        assert h.startswith("<pre>") and h.endswith("</pre>")
        assert "&lt;" not in str(o) and ("<" not in str(o) or "&lt;" in h)


# ------------------------------------------------------------------ statsmodels' names


def test_statsmodels_aliases(fm):
    pd.testing.assert_series_equal(fm.params, fm.fixef, check_names=False)
    pd.testing.assert_series_equal(fm.bse, fm.stderr, check_names=False)
    pd.testing.assert_series_equal(fm.pvalues, fm.coef_table(ddf="Satterthwaite")["Pr(>|t|)"],
                                   check_names=False)
    assert fm.llf == fm.loglik and fm.nobs == fm.n_obs == 180
    pd.testing.assert_series_equal(fm.fittedvalues, fm.fitted)
    pd.testing.assert_series_equal(fm.resid, fm.residuals)
    ci = fm.conf_int()
    assert list(ci.columns) == [0, 1] and list(ci.index) == ["(Intercept)", "Days"]
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(ci[1] - ci[0], 2 * z * fm.stderr, rtol=1e-12)
    # the Wald rows of confint(method="Wald")
    w = fm.confint(method="Wald").loc[["(Intercept)", "Days"]]
    np.testing.assert_allclose(ci.to_numpy(), w.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(fm.conf_int(0.1)[0], fm.fixef - stats.norm.ppf(0.95) * fm.stderr)
    with pytest.raises(ValueError, match="alpha"):
        fm.conf_int(1.5)
    for name in ("params", "bse", "pvalues", "llf", "nobs", "fittedvalues", "resid"):
        with pytest.raises(AttributeError):
            setattr(fm, name, 1)


# ------------------------------------------------------------------ plots' labels


def test_readable_parameter_names(fm):
    names = readable_names(fm)
    assert names == {".sig01": "sd_(Intercept)|Subject", ".sig02": "cor_Days.(Intercept)|Subject",
                     ".sig03": "sd_Days|Subject", ".sigma": "sigma"}


def test_leverage_labels_are_one_based_or_ids():
    assert leverage_label(pd.RangeIndex(5), 0) == "1"
    assert leverage_label(pd.Index([0, 1, 3, 4]), 2) == "4"     # a dropped row keeps its name
    assert leverage_label(pd.Index(["a", "b"]), 1) == "b"
    assert leverage_label(pd.Index([10, 20, 30]), 0) == "10"   # ids, not positions
