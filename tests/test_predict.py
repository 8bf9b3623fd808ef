"""pylmem.postfit.predict: fitted values, population predictions, new data and new levels."""
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.postfit.predict import predict


@lru_cache(maxsize=None)
def sleep_fit():
    return pylmem.lmer("Reaction ~ Days + (Days|Subject)", pylmem.datasets.load("sleepstudy"))


def _males():
    d = pylmem.datasets.load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d[d["gender"] == "Male"]


@lru_cache(maxsize=None)
def h1_fit():
    return pylmem.lmer("weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)",
                       _males(), reml=False)


def test_predict_without_newdata_is_fitted():
    f = sleep_fit()
    p = f.predict()
    assert p.index.equals(f.fitted.index)
    np.testing.assert_allclose(p.to_numpy(), f.fitted.to_numpy(), rtol=1e-12)
    # lme4: fitted(fm1)[1:3] for sleepstudy REML (subject 308, days 0-2)
    np.testing.assert_allclose(p.iloc[:3], [253.6637, 273.3299, 292.9962], atol=2e-3)


def test_population_prediction_is_X_beta():
    f = sleep_fit()
    d = pylmem.datasets.load("sleepstudy")
    want = 251.405105 + 10.467286 * d["Days"].to_numpy()     # lme4's fixef
    for rf in ("~0", "NA", False, np.nan, "~ 0"):
        np.testing.assert_allclose(f.predict(re_form=rf).to_numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(f.predict(d, re_form="~0").to_numpy(), want, rtol=1e-6)


def test_subset_of_rows_as_newdata():
    f = h1_fit()
    dm = _males()
    rows = dm.sample(25, random_state=1)
    p = f.predict(rows)
    assert p.index.equals(rows.index)
    np.testing.assert_allclose(p.to_numpy(), f.fitted.loc[rows.index].to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(f.predict(dm).to_numpy(), f.fitted.to_numpy(), rtol=1e-10)


def test_new_subject_gets_population_prediction():
    f = sleep_fit()
    nd = pd.DataFrame({"Days": [0, 5, 9], "Subject": ["new", "308", "new"]})
    p = f.predict(nd, allow_new_levels=True)
    pop = f.predict(nd, re_form="~0")
    np.testing.assert_allclose(pop, [251.4051, 303.7415, 345.6107], atol=1e-3)
    assert p.iloc[0] == pytest.approx(pop.iloc[0]) and p.iloc[2] == pytest.approx(pop.iloc[2])
    # subject 308 on day 5: lme4's fitted(fm1)[6]
    assert p.iloc[1] == pytest.approx(351.9950, abs=2e-3)


def test_new_levels_not_allowed():
    nd = pd.DataFrame({"Days": [0, 1], "Subject": ["999", "308"]})
    with pytest.raises(ValueError, match=r"Subject.*'999'"):
        sleep_fit().predict(nd, allow_new_levels=False)


def test_new_fixed_factor_level_is_an_error():
    nd = _males().head(3).copy()
    nd["regime"] = ["GMO", "Organic", "Control"]
    with pytest.raises(ValueError, match=r"regime.*Organic"):
        h1_fit().predict(nd)


def test_missing_column_is_a_clear_error():
    nd = _males().head(3).drop(columns=["regime"])
    with pytest.raises(ValueError, match="regime"):
        h1_fit().predict(nd)
    nd = pd.DataFrame({"Days": [1.0]})
    with pytest.raises(ValueError, match="Subject"):
        sleep_fit().predict(nd)
    np.testing.assert_allclose(sleep_fit().predict(nd, re_form="~0"), [261.8724], atol=1e-3)


def test_re_form_selecting_terms():
    d = pylmem.datasets.load("Penicillin")
    f = pylmem.lmer("diameter ~ 1 + (1|plate) + (1|sample)", d)
    only_plate = f.predict(d, re_form="~(1|plate)")
    b = f.ranef["plate"]["(Intercept)"]
    want = f.fixef.iloc[0] + b.loc[d["plate"].astype(str)].to_numpy()
    np.testing.assert_allclose(only_plate.to_numpy(), want, rtol=1e-12)
    with pytest.raises(ValueError, match="not a random-effects term"):
        f.predict(d, re_form="~(1|nonexistent)")


def test_rank_deficient_design():
    d = pylmem.datasets.load("sleepstudy")
    d["Days2"] = 2 * d["Days"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = pylmem.lmer("Reaction ~ Days + Days2 + (1|Subject)", d)
    assert f.design.dropped_columns == ["Days2"]
    np.testing.assert_allclose(predict(f, d).to_numpy(), f.fitted.to_numpy(), rtol=1e-10)


def test_factors_option_numeric_newdata():
    d = pylmem.datasets.load("sleepstudy")
    f = pylmem.lmer("Reaction ~ Days + (1|Subject)", d, factors=["Days"])
    np.testing.assert_allclose(f.predict(d).to_numpy(), f.fitted.to_numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match=r"Days.*'12'"):
        f.predict(pd.DataFrame({"Days": [12], "Subject": ["308"]}))
