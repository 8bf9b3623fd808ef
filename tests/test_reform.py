"""predict(re_form=...) naming part of a random-effects term, against lme4.

Reference values: tests/reference/reform_refs.json, made by tests/reference/make_reform_refs.R
(lme4 1.1-31): lme4 uses the named columns' conditional modes only.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.datasets import load

REFS = json.loads((Path(__file__).parent / "reference" / "reform_refs.json").read_text())
CASES = [k for k in REFS if k not in ("provenance", "newdata")]
_FITS = {}


def fit_of(formula):
    if formula not in _FITS:
        _FITS[formula] = pylmem.lmer(formula, load("sleepstudy"))
    return _FITS[formula]


@pytest.mark.parametrize("name", CASES)
def test_partial_re_form_matches_lme4(name):
    r = REFS[name]
    fit = fit_of(r["formula"])
    got = fit.predict(re_form=r["re_form"])
    np.testing.assert_allclose(got.to_numpy(), r["fitted"], rtol=1e-6)
    nd = pd.DataFrame(REFS["newdata"])
    np.testing.assert_allclose(fit.predict(nd, re_form=r["re_form"], allow_new_levels=True).to_numpy(), r["newdata"],
                               rtol=1e-6)


def test_partial_re_form_is_the_named_modes():
    fit = fit_of("Reaction ~ Days + (Days|Subject)")
    d = load("sleepstudy")
    b = fit.ranef["Subject"]
    base = fit.predict(re_form="~0").to_numpy()
    got = fit.predict(re_form="~(1|Subject)").to_numpy()
    np.testing.assert_allclose(got - base, b["(Intercept)"].loc[d["Subject"]].to_numpy(), rtol=1e-10)
    # both parts named one bar at a time add up to the whole term
    both = fit.predict(re_form="~(1|Subject) + (0+Days|Subject)").to_numpy()
    np.testing.assert_allclose(both, fit.predict().to_numpy(), rtol=1e-12)


def test_partial_re_form_bad_input():
    fit = fit_of("Reaction ~ Days + (Days|Subject)")
    with pytest.raises(ValueError, match="not a random-effects term"):
        fit.predict(re_form="~(1|Nobody)")
    with pytest.raises(ValueError, match="names no column"):
        fit.predict(re_form="~(0+Reaction|Subject)")
    with pytest.raises(ValueError, match="part of a random-effects term"):
        fit.predict(re_form="~(1|Subject)", se_fit=True)
