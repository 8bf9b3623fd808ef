"""anova / pb_anova refuse models not fitted to the same data (y compared row by row, not
as sorted values) and flag models that are not nested (anova warns, pb_anova refuses)."""
import warnings

import numpy as np
import pandas as pd
import pytest

import pylmem


def _data(seed=0, n=160, G=10):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, G, n)
    x, t = rng.normal(size=n), rng.normal(size=n)
    y = 1 + x + 0.5 * t + rng.normal(size=G)[g] + 0.5 * rng.normal(size=G)[g] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "t": t, "g": g})


def _fit(formula, d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, d, reml=False, **kw)


def _anova(*fits):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = pylmem.anova(*fits)
    return out, [str(x.message) for x in w]


def test_same_y_values_on_other_rows_are_refused():
    d = _data()
    m0 = _fit("y ~ x + (1 | g)", d)
    shuffled = d.assign(y=np.random.default_rng(1).permutation(d.y.to_numpy()))
    m1 = _fit("y ~ x + t + (1 | g)", shuffled)
    assert np.array_equal(np.sort(m0.design.y), np.sort(m1.design.y))     # same sorted y
    with pytest.raises(ValueError, match="same data: the response values of 'y' differ row by row"):
        pylmem.anova(m0, m1)
    with pytest.raises(ValueError, match="pb_anova: all models must be fitted to the same data"):
        pylmem.pb_anova(m0, m1, nsim=5, seed=1)
    # the same rows in another order are the same data
    m2 = _fit("y ~ x + t + (1 | g)", d.sample(frac=1.0, random_state=3))
    out, msgs = _anova(m0, m2)
    assert not any("not nested" in s for s in msgs)
    assert out["Df"].iloc[1] == 1


def test_not_nested_fixed_effects_warn_and_pb_anova_refuses():
    d = _data()
    a, b = _fit("y ~ x + (1 | g)", d), _fit("y ~ t + (1 | g)", d)
    _, msgs = _anova(a, b)
    assert any("models m0 and m1 are not nested (the fixed effects" in s for s in msgs), msgs
    small, big = _fit("y ~ t + (1 | g)", d), _fit("y ~ x + (x | g)", d)
    with pytest.raises(ValueError, match="pb_anova: m0 is not nested in m1"):
        pylmem.pb_anova(small, big, nsim=5, seed=1)
    # a reparametrised fixed part (2x instead of x) is the same column space: nested
    d2 = d.assign(x2=2 * d.x)
    _, msgs = _anova(_fit("y ~ x2 + (1 | g)", d2), _fit("y ~ x + t + (1 | g)", d2))
    assert not any("not nested" in s for s in msgs), msgs


def test_not_nested_random_terms_warn():
    d = _data()
    _, msgs = _anova(_fit("y ~ x + (1 | g)", d), _fit("y ~ x + (0 + x | g)", d))
    assert any("random-effects term" in s and "not nested" in s for s in msgs), msgs
    # the uncorrelated pair sits inside the correlated term: nested
    _, msgs = _anova(_fit("y ~ x + (x || g)", d), _fit("y ~ x + (x | g)", d))
    assert not any("not nested" in s for s in msgs), msgs


def test_anova_arguments_must_be_fits():
    f = _fit("y ~ x + (1 | g)", _data())
    with pytest.raises(TypeError, match="argument 2 is a str, not a fitted model"):
        pylmem.anova(f, "a string")
    with pytest.raises(TypeError, match="argument 1 is a int"):
        pylmem.anova(3)


def test_dask_fits_compare_rows_by_fingerprint():
    dd = pytest.importorskip("dask.dataframe")
    import dask

    d = _data()
    with dask.config.set(scheduler="synchronous"):
        f0 = _fit("y ~ x + (1 | g)", dd.from_pandas(d, npartitions=3))
        f1 = _fit("y ~ x + t + (x | g)", dd.from_pandas(d.sample(frac=1.0, random_state=2),
                                                         npartitions=2))
        out, msgs = _anova(f0, f1)
        assert not any("not nested" in s for s in msgs), msgs
        m1 = _fit("y ~ x + t + (x | g)", d)                     # in memory, same rows
        np.testing.assert_allclose(_anova(f0, m1)[0]["Chisq"].iloc[1], out["Chisq"].iloc[1],
                                   rtol=1e-6)
        shuffled = d.assign(y=np.random.default_rng(1).permutation(d.y.to_numpy()))
        with pytest.raises(ValueError, match="differ row by row"):
            pylmem.anova(f0, _fit("y ~ x + t + (1 | g)", dd.from_pandas(shuffled, npartitions=2)))
        with pytest.raises(ValueError, match="differ row by row"):
            pylmem.anova(f0, _fit("y ~ x + t + (1 | g)", shuffled))
        _, msgs = _anova(_fit("y ~ t + (0 + t | g)", dd.from_pandas(d, npartitions=2)), f1)
        assert any("not nested" in s for s in msgs), msgs
