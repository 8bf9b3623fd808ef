"""Level identity (pandas' equality of values, one definition in pylmem.model.levels) and
predict's mapping of newdata onto the fit's levels and categories: lme4's unseen-level
error by default, unused categories as unseen levels, dtype- and category-set invariance,
and a failed call that leaves the fit unchanged (bad-input tests and property tests)."""
import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylmem
from pylmem.model.levels import (
    distinct_levels,
    factor_labels,
    group_codes,
    merge_groups,
)

prop = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _data(seed=0, n=240, G=12):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    f = rng.choice(["a", "b", "c"], n)
    y = (1 + x + (f == "b") - 0.5 * (f == "c") + rng.normal(size=G)[g]
         + 0.4 * rng.normal(size=G)[g] * x + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "g": g, "f": f})


def _fit(formula, d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, d, **kw)


# ----------------------------------------------------------------------- what a level is


def test_level_is_pandas_value_equality():
    codes, lv = distinct_levels(pd.Series([0.0, -0.0, 1.0, 1.0]))
    assert len(lv) == 2 and list(codes) == [0, 0, 1, 1]
    codes, lv = distinct_levels(pd.Series([2, "2", 2.0, "a"], dtype=object))
    assert len(lv) == 3 and codes[0] == codes[2] != codes[1]
    # int64 ids of one partition and float64 ids of another merge by value
    a = pd.DataFrame({"g": np.array([1, 2, 3])})
    b = pd.DataFrame({"g": np.array([2.0, 3.0, 4.0])})
    assert len(group_codes(merge_groups(a, b), ("g",))[1]) == 4
    # factors=: numbers written as R's as.character, by value
    assert list(factor_labels(pd.Series([1.0, 2.5, -0.0, np.nan]))[:3]) == ["1", "2.5", "0"]
    assert factor_labels(pd.Series([1.0, np.nan])).isna().tolist() == [False, True]
    assert list(factor_labels(pd.Series([308, 7]))) == ["308", "7"]


def test_signed_zero_and_mixed_types_in_memory():
    d = _data().assign(g=lambda d: d.g.astype(float))
    d.loc[d.index[::2][d.g[::2] == 0], "g"] = -0.0
    assert _fit("y ~ x + (1 | g)", d).design.terms[0].n_levels == 12
    d2 = _data().assign(g=lambda d: d.g.astype(object))
    d2.loc[d2.index[::2], "g"] = d2.g[::2].astype(str)
    assert _fit("y ~ x + (1 | g)", d2).design.terms[0].n_levels == 24


def test_factors_float_ids_match_int_newdata():
    d = _data().assign(g=lambda d: d.g.astype(float))
    f = _fit("y ~ x + (1 | g)", d, factors=["g"])
    assert list(f.design.terms[0].levels[:3]) == ["0", "1", "10"]     # R's factor levels
    new = d.head(5)
    p = f.predict(new)
    np.testing.assert_allclose(f.predict(new.assign(g=new.g.astype(int))), p, rtol=1e-12)
    np.testing.assert_allclose(p, f.fitted.head(5), rtol=1e-10)


# ----------------------------------------------------------------------- unseen levels


def test_unseen_level_is_an_error_by_default():
    f = _fit("y ~ x + (1 | g)", _data())
    new = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": [3, 99, 99, 98]})
    with pytest.raises(ValueError, match=r"2 level\(s\) of the grouping factor 'g'.*in 3 row\(s\): "
                                         r"99, 98 \(pass allow_new_levels=True"):
        f.predict(new)
    with pytest.raises(ValueError, match="allow_new_levels=True"):
        f.predict(new, se_fit=True)
    p = f.predict(new, allow_new_levels=True)
    pop = f.predict(new, re_form="~0")
    np.testing.assert_allclose(p.iloc[1:], pop.iloc[1:], rtol=1e-12)
    assert p.iloc[0] != pytest.approx(pop.iloc[0])


def test_int_id_against_text_id_is_unseen():
    """int 308 against str "308": two different levels (pandas' equality), so an error
    instead of a silent population-level prediction."""
    sleep = pylmem.datasets.load("sleepstudy")
    f = _fit("Reaction ~ Days + (Days | Subject)", sleep.assign(Subject=sleep.Subject.astype(str)))
    with pytest.raises(ValueError, match=r"grouping factor 'Subject'.*: 308"):
        f.predict(pd.DataFrame({"Days": [1], "Subject": [308]}))
    assert f.predict(pd.DataFrame({"Days": [1], "Subject": ["308"]})).notna().all()


def test_unused_category_at_fit_time_is_unseen():
    """A Categorical category without rows at fit time is no level (lme4 drops unused
    levels): predicting it is an error, never the baseline."""
    d = _data()
    cats = ["a", "b", "c", "zz"]
    d = d.assign(f=pd.Categorical(d.f, categories=cats),
                 g=pd.Categorical(d.g, categories=list(range(13))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no rank-deficiency warning for f[T.zz]
        f = pylmem.lmer("y ~ x + f + (1 | g)", d)
    assert f.fixef.index.tolist() == ["(Intercept)", "x", "fb", "fc"]
    assert f.design.terms[0].n_levels == 12
    plain = _fit("y ~ x + f + (1 | g)", d.assign(f=d.f.astype(str), g=d.g.astype(int)))
    assert f.loglik == pytest.approx(plain.loglik, rel=1e-12)
    np.testing.assert_allclose(f.fixef, plain.fixef, rtol=1e-10)
    new = d.head(2).copy()
    with pytest.raises(ValueError, match=r"column 'f' has 1 level\(s\) of the factor 'f'.*'zz'"):
        f.predict(new.assign(f=pd.Categorical(["zz", "a"], categories=cats)))
    with pytest.raises(ValueError, match=r"grouping factor 'g'.*: 12"):
        f.predict(new.assign(g=pd.Categorical([12, 0], categories=list(range(13)))))


# ----------------------------------------------------------------------- dtypes, categories


@prop
@given(seed=st.integers(0, 10_000),
       id_how=st.sampled_from(["int", "float", "int32", "category", "object", "category-extra"]),
       f_how=st.sampled_from(["str", "category", "category-reordered", "category-extra", "object"]))
def test_predict_unchanged_by_newdata_dtypes_and_category_sets(seed, id_how, f_how):
    d = _data(seed % 5)
    fit = _fit("y ~ x + f + (x | g)", d)
    rng = np.random.default_rng(seed)
    new = d.sample(12, random_state=seed).copy()
    new["x"] = rng.normal(size=len(new))
    exp = fit.predict(new)
    g = new["g"]
    new["g"] = {"int": g, "float": g.astype(float), "int32": g.astype(np.int32),
                "category": pd.Categorical(g), "object": g.astype(object),
                "category-extra": pd.Categorical(g, categories=list(range(-3, 40)))}[id_how]
    f = new["f"]
    new["f"] = {"str": f, "object": f.astype(object), "category": pd.Categorical(f),
                "category-reordered": pd.Categorical(f, categories=["c", "a", "b"]),
                "category-extra": pd.Categorical(f, categories=["q", "c", "b", "a", "z"])}[f_how]
    np.testing.assert_allclose(fit.predict(new), exp, rtol=1e-12)
    se = fit.predict(new, se_fit=True)
    np.testing.assert_allclose(se["fit"], exp, rtol=1e-12)


def _snapshot(fit):
    spec = fit.design.fixed_spec
    return (fit.fixef.copy(), repr(getattr(spec, "encoder_state", None)),
            [repr(getattr(t.spec, "encoder_state", None)) for t in fit.design.terms],
            [copy.deepcopy(t.group_values) for t in fit.design.terms])


_BAD = {
    "text in numeric x": lambda n: n.assign(x=["a"] + list(n.x[1:])),
    "unseen factor level": lambda n: n.assign(f=["zz"] + list(n.f[1:])),
    "unseen group": lambda n: n.assign(g=[999] + list(n.g[1:])),
    "missing column": lambda n: n.drop(columns="f"),
    "missing group column": lambda n: n.drop(columns="g"),
}


@prop
@given(seed=st.integers(0, 10_000), bad=st.sampled_from(sorted(_BAD)),
       se=st.booleans())
def test_failed_predict_leaves_the_fit_unchanged(seed, bad, se):
    fit = _fit("y ~ x + f + (1 | g)", _data(seed % 3))
    new = _data(seed % 3).head(6)
    before = _snapshot(fit)
    p0 = fit.predict(new)
    with pytest.raises(ValueError):
        fit.predict(_BAD[bad](new), se_fit=se)
    after = _snapshot(fit)
    pd.testing.assert_series_equal(before[0], after[0])
    assert before[1:3] == after[1:3]
    for a, b in zip(before[3], after[3]):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    pd.testing.assert_series_equal(fit.predict(new), p0)
    pd.testing.assert_series_equal(fit.predict(new.assign(f=new.f.astype(object))), p0)


def test_numeric_column_given_as_text_is_named():
    fit = _fit("y ~ x + f + (1 | g)", _data())
    new = _data().head(3).assign(x=["1.5", "oops", "2"])
    with pytest.raises(ValueError, match=r"newdata column 'x' must be numeric.*'oops'"):
        fit.predict(new)
    # numbers written as text are numbers
    ok = _data().head(3)
    np.testing.assert_allclose(fit.predict(ok.assign(x=ok.x.astype(str))), fit.predict(ok),
                               rtol=1e-12)


def test_missing_factor_value_predicts_nan():
    fit = _fit("y ~ x + f + (1 | g)", _data())
    new = _data().head(3).assign(f=[np.nan, "a", "b"])
    p = fit.predict(new)
    assert np.isnan(p.iloc[0]) and p.iloc[1:].notna().all()
    np.testing.assert_allclose(p.iloc[1:], fit.predict(new.iloc[1:]), rtol=1e-12)
