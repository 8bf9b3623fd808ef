"""Dask fits agree with in-memory fits on what a level is (values, not text, in every
partition), predict newdata at the group level, take offset() terms, and every accessor of
an in-memory fit works on a Dask fit or raises one NotImplementedError naming it.  Dask's
synchronous scheduler (no cluster: these are about the levels, not the transport)."""
import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

dd = pytest.importorskip("dask.dataframe")
dask = pytest.importorskip("dask")

import pylmem  # noqa: E402
from pylmem.api.lmer import DaskLmerFit, LmerFit  # noqa: E402

prop = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def _data(seed=0, n=200, G=10):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    t = rng.uniform(1, 3, n)
    y = 1 + x + rng.normal(size=G)[g] + 0.3 * rng.normal(size=G)[g] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": g, "t": t})


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, data, **kw)


def _parts(frames):
    """A Dask frame whose partitions are ``frames`` as they are (dtypes may differ)."""
    return dd.from_delayed([dask.delayed(lambda f=f: f)() for f in frames],
                           meta=frames[0].iloc[:0], verify_meta=False)


def _same(m, f, new=None):
    assert f.design.terms[0].n_levels == m.design.terms[0].n_levels
    assert abs(f.loglik - m.loglik) <= 1e-8 * abs(m.loglik)
    np.testing.assert_allclose(f.fixef.to_numpy(), m.fixef.to_numpy(), rtol=1e-6, atol=1e-8)
    if new is not None:
        np.testing.assert_allclose(f.predict(new).to_numpy(), m.predict(new).to_numpy(),
                                   rtol=1e-6)


def test_integer_ids_predict_at_the_group_level():
    d = _data()
    m = _fit("y ~ x + (x | g)", d)
    f = _fit("y ~ x + (x | g)", dd.from_pandas(d, npartitions=3))
    new = d.head(8)
    _same(m, f, new)
    assert not np.allclose(f.predict(new), f.predict(new, re_form="~0"))
    got = f.predict(dd.from_pandas(new, npartitions=2)).compute()
    np.testing.assert_allclose(got.sort_index(), m.predict(new).sort_index(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"grouping factor 'g'.*: 99"):
        f.predict(new.assign(g=99))


def test_signed_zero_in_different_partitions_is_one_level():
    d = _data().assign(g=lambda d: d.g.astype(float))
    d.loc[d.index[:100][d.g[:100] == 0], "g"] = -0.0
    m = _fit("y ~ x + (1 | g)", d)
    f = _fit("y ~ x + (1 | g)", dd.from_pandas(d, npartitions=2, sort=False))
    assert m.design.terms[0].n_levels == 10
    _same(m, f, d.head(5))


def test_int_and_text_ids_are_two_levels_on_dask():
    d = _data().assign(g=lambda d: d.g.astype(object))
    d.loc[d.index[::2], "g"] = d.g[::2].astype(str)
    with dask.config.set({"dataframe.convert-string": False}):
        m = _fit("y ~ x + (1 | g)", d)
        f = _fit("y ~ x + (1 | g)", dd.from_pandas(d, npartitions=2, sort=False))
    assert m.design.terms[0].n_levels == 20
    _same(m, f)
    assert list(f.design.terms[0].levels) == list(m.design.terms[0].levels)


def test_int64_and_float64_partitions_agree():
    d = _data()
    a, b = d.iloc[:120], d.iloc[120:].assign(g=lambda x: x.g.astype(float))
    f = _fit("y ~ x + (1 | g)", _parts([a, b]))
    m = _fit("y ~ x + (1 | g)", d)
    _same(m, f, d.head(6))
    assert list(f.design.terms[0].levels) == list(range(10))      # the declared int64


def test_interaction_and_factors_on_dask():
    d = _data().assign(h=lambda x: (x.g % 3).astype(float))
    form = "y ~ x + (1 | g:h) + (1 | h)"
    m = _fit(form, d, factors=["h"])
    f = _fit(form, dd.from_pandas(d, npartitions=3, sort=False), factors=["h"])
    _same(m, f, d.head(6).assign(h=lambda x: x.h.astype(int)))
    assert list(f.design.terms[-1].levels) == ["0", "1", "2"]


@prop
@given(seed=st.integers(0, 10_000), nparts=st.integers(1, 5),
       how=st.sampled_from(["int", "float", "str", "category", "mixed-int-float"]))
def test_dask_equals_memory_under_partitionings_and_id_dtypes(seed, nparts, how):
    d = _data(seed % 4).sample(frac=1.0, random_state=seed)
    if how == "float":
        d["g"] = d.g.astype(float)
    elif how == "str":
        d["g"] = "s" + d.g.astype(str)
    elif how == "category":
        d["g"] = pd.Categorical(d.g)
    m = _fit("y ~ x + (x | g)", d)
    if how == "mixed-int-float":
        cut = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(d)), nparts - 1,
                                                         replace=False)) if nparts > 1 else []
        edges = [0, *cut, len(d)]
        frames = [d.iloc[a:b] for a, b in zip(edges[:-1], edges[1:])]
        frames = [p.assign(g=p.g.astype(float)) if k % 2 else p for k, p in enumerate(frames)]
        ddf = _parts(frames)
    else:
        ddf = dd.from_pandas(d, npartitions=nparts, sort=False)
    f = _fit("y ~ x + (x | g)", ddf)
    _same(m, f, d.head(7))


def test_offset_in_the_formula_on_dask():
    d = _data()
    form = "y ~ x + offset(log(t)) + (1 | g)"
    m = _fit(form, d)
    f = _fit(form, dd.from_pandas(d, npartitions=3, sort=False))
    _same(m, f, d.head(6))
    np.testing.assert_allclose(f.fitted.compute().sort_index(), m.fitted.sort_index(), rtol=1e-6)
    assert not np.allclose(m.fixef, _fit("y ~ x + (1 | g)", d).fixef)
    with pytest.raises(ValueError, match=r"offset.*log\(t\).*NaN or infinite in 1 row"):
        _fit(form, dd.from_pandas(d.assign(t=[-1.0] + list(d.t[1:])), npartitions=2))


def _call(fit, name):
    v = getattr(fit, name)
    if not callable(v):
        return v
    args = {"bootstrap": (3,), "simulate": (2,), "data_series": (np.zeros(fit.n_obs), "a")}
    kw = {"refit": {"reml": False}}
    return v(*args.get(name, ()), **kw.get(name, {}))


def test_every_accessor_works_or_names_itself():
    """Each public method and property of LmerFit, called on a small Dask fit: a result, or
    one NotImplementedError that names the accessor (never an internal AttributeError)."""
    d = _data()
    f = _fit("y ~ x + (1 | g)", dd.from_pandas(d, npartitions=2))
    m = _fit("y ~ x + (1 | g)", d)
    assert isinstance(f, DaskLmerFit)
    names = sorted(n for n in dir(LmerFit) if not n.startswith("_"))
    missing = []
    for name in names:
        attr = inspect.getattr_static(LmerFit, name)
        if isinstance(attr, (staticmethod, classmethod)):
            continue
        try:
            v = _call(f, name)
            if hasattr(v, "compute"):
                v.compute()
            str(v)
        except NotImplementedError as e:
            assert name.split("_")[0] in str(e), (name, str(e))
            missing.append(name)
    assert set(missing) <= {"hatvalues", "cooks_distance", "rstudent", "influence", "simulate",
                            "bootstrap", "anova", "fitted_model_order", "data_series",
                            "hat_matrix", "ls_means"}, missing
    # the ones that work agree with the in-memory fit
    np.testing.assert_allclose(f.r2(), m.r2(), rtol=1e-8)
    np.testing.assert_allclose(f.icc(by_group=True), m.icc(by_group=True), rtol=1e-8)
    new = d.head(5)
    pd.testing.assert_frame_equal(f.predict(new, se_fit=True, interval="prediction"),
                                  m.predict(new, se_fit=True, interval="prediction"), rtol=1e-6)
    np.testing.assert_allclose(f.residuals_of("pearson", scaled=True).compute().sort_index(),
                               m.residuals_of("pearson", scaled=True).sort_index(), rtol=1e-5,
                               atol=1e-8)
    with pytest.raises(NotImplementedError, match=r"predict\(se_fit=True\).*pandas newdata"):
        f.predict(se_fit=True)
    with pytest.raises(NotImplementedError, match="bootstrap"):
        pylmem.bootstrap(f, 3)
    with pytest.raises(NotImplementedError, match="refit"):
        f.refit(np.zeros(f.n_obs))
    with pytest.raises(NotImplementedError, match="anova"):
        pylmem.anova(f)
