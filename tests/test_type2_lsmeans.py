"""Type II F tests and least-squares means against lmerTest (and emmeans).

Reference values: tests/reference/type2_lsmeans_refs.json, made by
tests/reference/make_type2_lsmeans_refs.R (lmerTest 3.1-3, pbkrtest 0.5.2, emmeans,
lme4 1.1-31; each fit the best of three optimisers).  Tolerances as test_inference.py:
F, DenDF, df, t to 1e-3 relative; estimates and SEs to 1e-5 / 1e-4.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.datasets import load
from pylmem.inference.lsmeans import ls_means

REFS = json.loads((Path(__file__).parent / "reference" / "type2_lsmeans_refs.json").read_text())
MODELS = [k for k in REFS if k != "provenance"]
_FITS = {}


def tab(t) -> pd.DataFrame:
    """A table as stored by jsonlite (one-row tables come unboxed)."""
    rows = [t["rows"]] if isinstance(t["rows"], str) else t["rows"]
    vals = t["values"] if isinstance(t["rows"], list) else [[v] for v in t["values"]]
    out = {}
    for c, v in zip(t["columns"], vals):
        v = np.asarray(v)
        out[c] = v.astype(float) if v.dtype.kind in "fiu" or c not in ("term", "levels", "contrast") \
            and not isinstance(v.flat[0], str) else v
    return pd.DataFrame(out, index=rows)


def load_data(name):
    if name == "cake_missing":
        d = load("cake")
        return d[~((d["recipe"] == "C") & (d["temperature"] == 225))].reset_index(drop=True)
    return load(name)


def fit_of(name, data=None):
    if name not in _FITS or data is not None:
        r = REFS[name]
        d = load_data(r["data"]) if data is None else data
        fac = r["factors"]
        fac = [fac] if isinstance(fac, str) else list(fac)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = pylmem.lmer(r["formula"], d, reml=r["reml"], factors=fac)
        if data is not None:
            return fit
        _FITS[name] = fit
    return _FITS[name]


def close(got, ref, rtol, what, atol=0.0):
    np.testing.assert_allclose(np.asarray(got, float), np.asarray(ref, float), rtol=rtol, atol=atol,
                               err_msg=what)


def close_p(got, ref, what):
    got, ref = np.asarray(got, float), np.asarray(ref, float)
    big = ref > 1e-12
    close(got[big], ref[big], 1e-3, what)
    tiny = ~big & (ref > 1e-300)
    np.testing.assert_allclose(np.log(got[tiny]), np.log(ref[tiny]), rtol=1e-2, err_msg=what)


def test_reference_fits_are_the_optimum():
    for name in MODELS:
        fit = fit_of(name)
        obj = fit.reml_criterion if REFS[name]["reml"] else fit.deviance
        assert obj <= REFS[name]["objective"] + 1e-6, name


# ------------------------------------------------------------------ type II
TYPE2 = [(m, k) for m in MODELS for k in ("anova2_satt", "anova2_kr") if k in REFS[m]]


@pytest.mark.parametrize("name,key", TYPE2)
def test_type2_matches_lmertest(name, key):
    ref = tab(REFS[name][key])
    ddf = "Kenward-Roger" if key.endswith("kr") else "Satterthwaite"
    got = pylmem.anova(fit_of(name), type=2, ddf=ddf)
    assert list(got.index) == list(ref.index)
    close(got["NumDF"], ref["NumDF"], 0, "NumDF")
    close(got["DenDF"], ref["DenDF"], 1e-3, "DenDF")
    close(got["F value"], ref["F value"], 1e-3, "F")
    close(got["Sum Sq"], ref["Sum Sq"], 1e-3, "Sum Sq")
    close_p(got["Pr(>F)"], ref["Pr(>F)"], "Pr(>F)")


def test_type2_heading_and_spellings():
    fit = fit_of("cake_reml")
    a = fit.anova(type=2)
    assert str(a).splitlines()[0] == "Type II Analysis of Variance Table with Satterthwaite's method"
    for t in ("II", "2", "type II"):
        pd.testing.assert_frame_equal(pd.DataFrame(pylmem.anova(fit, type=t)), pd.DataFrame(a))
    with pytest.raises(ValueError, match="type must be 1, 2 or 3"):
        fit.anova(type=4)


def test_type2_equals_type3_for_the_highest_order_term_and_type1_for_an_additive_model():
    fit = fit_of("cake_reml")
    a2, a3 = fit.anova(type=2), fit.anova(type=3)
    close(a2.loc["recipe:temperature", "F value"], a3.loc["recipe:temperature", "F value"], 1e-10, "F")
    add = fit_of("cake_additive_reml")
    # an additive model: each term is adjusted for all others (the marginal test = type III)
    close(add.anova(type=2)["F value"], add.anova(type=3)["F value"], 1e-8, "F")


def test_type2_invariant_to_row_order_and_response_shift():
    r = REFS["rat_mixed_reml"]
    d = load(r["data"])
    base = fit_of("rat_mixed_reml").anova(type=2)
    perm = d.sample(frac=1.0, random_state=3).reset_index(drop=True)
    shifted = d.assign(weight=d["weight"] + 1000.0)
    for dd in (perm, shifted):
        got = fit_of("rat_mixed_reml", data=dd).anova(type=2)
        close(got["F value"], base["F value"], 1e-5, "F")
        close(got["DenDF"], base["DenDF"], 1e-4, "DenDF")


# ------------------------------------------------------------------ ls_means
LSM = [(m, key, f) for m in MODELS for key in ("lsmeans", "lsmeans_pairs", "lsmeans_kr")
       for f in (REFS[m].get(key) or {})]


def check_lsm(got, ref):
    assert list(got.index) == list(ref.index)
    assert list(got["levels"]) == list(ref["levels"])
    assert list(got["term"]) == list(ref["term"])
    for c, rtol in (("Estimate", 1e-6), ("Std. Error", 1e-4), ("df", 1e-3), ("t value", 1e-3),
                    ("lower", 1e-4), ("upper", 1e-4)):
        g, r = got[c].to_numpy(float), ref[c].to_numpy(float)
        assert np.array_equal(np.isnan(g), np.isnan(r)), c
        # absolute part on the scale of the SEs (a difference that is 0 exactly; the flat
        # optimum of the singular rat fit moves estimates by ~1e-6 SE)
        atol = 1e-5 * np.nanmax(ref["Std. Error"].to_numpy(float)) if c != "t value" else 1e-5
        close(g[~np.isnan(r)], r[~np.isnan(r)], rtol, c, atol=0 if c == "df" else atol)
    g, r = got["Pr(>|t|)"].to_numpy(float), ref["Pr(>|t|)"].to_numpy(float)
    close_p(g[~np.isnan(r)], r[~np.isnan(r)], "p")


@pytest.mark.parametrize("name,key,term", LSM)
def test_ls_means_match_lmertest(name, key, term):
    ref = tab(REFS[name][key][term])
    ddf = "Kenward-Roger" if key.endswith("kr") else "Satterthwaite"
    got = pylmem.ls_means(fit_of(name), term, ddf=ddf, pairwise=key.endswith("pairs"))
    check_lsm(got, ref)


EMM = [(m, f) for m in MODELS for f in (REFS[m].get("emmeans") or {})]


@pytest.mark.parametrize("name,term", EMM)
def test_ls_means_match_emmeans(name, term):
    """emmeans' reference grid is lmerTest's: same means, SEs, df and pairwise differences."""
    fit = fit_of(name)
    ref = tab(REFS[name]["emmeans"][term])
    got = ls_means(fit, term)
    close(got["Estimate"], ref["emmean"], 1e-6, "emmean")
    close(got["Std. Error"], ref["SE"], 1e-4, "SE")
    close(got["df"], ref["df"], 1e-3, "df")
    close(got["lower"], ref["lower.CL"], 1e-4, "lower.CL")
    pr = tab(REFS[name]["emmeans_pairs"][term])
    gp = ls_means(fit, term, pairwise=True)
    close(gp["Estimate"], pr["estimate"], 1e-6, "estimate", atol=1e-5 * pr["SE"].max())
    close(gp["df"], pr["df"], 1e-3, "df")
    close(gp["t value"], pr["t.ratio"], 1e-3, "t", atol=1e-5)


def test_ls_means_default_terms_level_and_method():
    fit = fit_of("cake_reml")
    full = fit.ls_means()
    assert list(dict.fromkeys(full["term"])) == ["recipe", "temperature", "recipe:temperature"]
    assert len(full) == 3 + 6 + 18
    a90 = ls_means(fit, "recipe", level=0.9)
    a95 = ls_means(fit, "recipe")
    assert np.all(a90["upper"] - a90["lower"] < a95["upper"] - a95["lower"])
    assert "Degrees of freedom method: Satterthwaite" in str(a95)
    # averaging equally over temperature: the mean of the recipe:temperature cells
    cells = ls_means(fit, "recipe:temperature")
    by = cells.groupby(cells["levels"].str[0])["Estimate"].mean()
    close(a95["Estimate"], by.loc[["A", "B", "C"]], 1e-10, "marginal mean")


def test_ls_means_invariant_to_rows_and_shift():
    d = load("cake")
    base = ls_means(fit_of("cake_reml"), "recipe")
    perm = fit_of("cake_reml", data=d.sample(frac=1.0, random_state=5))
    close(ls_means(perm, "recipe")["Estimate"], base["Estimate"], 1e-8, "perm")
    shifted = fit_of("cake_reml", data=d.assign(angle=d["angle"] + 10.0))
    close(ls_means(shifted, "recipe")["Estimate"], base["Estimate"] + 10.0, 1e-8, "shift")
    close(ls_means(shifted, "recipe")["Std. Error"], base["Std. Error"], 1e-5, "shift se")


def test_ls_means_bad_input():
    fit = fit_of("rat_gender_reml")
    with pytest.raises(ValueError, match="not a factor term"):
        ls_means(fit, "week")
    with pytest.raises(ValueError, match="not a factor term"):
        ls_means(fit, "nosuch")
    with pytest.raises(ValueError, match="ddf must be"):
        ls_means(fit, "gender", ddf="Wald")
    with pytest.raises(ValueError, match="level must be"):
        ls_means(fit, "gender", level=95)
