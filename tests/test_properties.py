"""Invariances every fit must satisfy, on random designs (hypothesis property tests).

Designs: one factor ``(1 | g)``, random slope ``(x | g)``, nested ``(1 | a/b)`` and crossed
``(1 | a) + (1 | b)``, drawn from a seed.  Each property refits a transformed data set
and compares: logLik to 1e-8 relative (the stated tolerance); implied covariances to
1e-5 relative.  Derandomized and bounded (a few examples each) so CI stays fast and
reproducible.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylmem

KINDS = ["one", "slope", "nested", "crossed"]
FORMULA = {"one": "y ~ x + (1 | g)", "slope": "y ~ x + (x | g)",
           "nested": "y ~ x + (1 | g/h)", "crossed": "y ~ x + (1 | g) + (1 | h)"}
RTOL = 1e-8

prop = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def design(kind: str, seed: int) -> pd.DataFrame:
    """A random data set of the given kind with clearly non-zero variance components."""
    rng = np.random.default_rng(seed)
    G = int(rng.integers(6, 14))
    m = int(rng.integers(4, 9))
    n = G * m
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=n) * rng.uniform(0.5, 3) + rng.normal() * 2
    y = 1.0 + 0.5 * x + rng.normal(size=n) * rng.uniform(0.5, 2)
    h = rng.integers(0, 3, n) if kind == "nested" else rng.integers(0, 5, n)
    if kind in ("one", "slope"):
        y += rng.normal(size=G)[g] * 2
    if kind == "slope":
        y += rng.normal(size=G)[g] * x
    if kind == "nested":
        y += rng.normal(size=G)[g] * 2 + rng.normal(size=(G, 3))[g, h] * 1.5
    if kind == "crossed":
        y += rng.normal(size=G)[g] * 2 + rng.normal(size=5)[h] * 2
    return pd.DataFrame(dict(y=y, x=x, g=g, h=h))


def fit(kind, d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(FORMULA[kind], d, reml=kw.pop("reml", False), **kw)


seeds = st.integers(0, 2 ** 20)
kinds = st.sampled_from(KINDS)


@prop
@given(kind=kinds, seed=seeds, perm_seed=seeds)
def test_row_permutation(kind, seed, perm_seed):
    d = design(kind, seed)
    p = np.random.default_rng(perm_seed).permutation(len(d))
    f0, f1 = fit(kind, d), fit(kind, d.iloc[p])
    assert f1.loglik == pytest.approx(f0.loglik, rel=RTOL)
    # fitted values follow their rows (to the optimiser's resolution in θ, which can be
    # coarse where d is flat: 1e-3 of sd(y))
    np.testing.assert_allclose(f1.fitted.loc[d.index], f0.fitted.loc[d.index], rtol=0,
                               atol=1e-3 * d.y.std())


@prop
@given(kind=kinds, seed=seeds, how=st.sampled_from(["float", "str", "category", "relabel"]))
def test_relabel_and_retype_ids(kind, seed, how):
    d = design(kind, seed)
    f0 = fit(kind, d)
    e = d.copy()
    for c in ("g", "h"):
        if how == "float":
            e[c] = e[c].astype(float)
        elif how == "str":
            e[c] = "L" + e[c].astype(str)
        elif how == "category":
            e[c] = pd.Categorical(e[c])
        else:   # a random relabelling (a bijection, reverses the level order)
            lab = np.random.default_rng(seed).permutation(1000)[: e[c].max() + 1]
            e[c] = lab[e[c]]
    f1 = fit(kind, e)
    assert f1.loglik == pytest.approx(f0.loglik, rel=RTOL)
    assert f1.n_groups == f0.n_groups


@prop
@given(kind=kinds, seed=seeds, shift=st.sampled_from([-1e3, 7.5, 1e5, 1e6]))
def test_shift_response(kind, seed, shift):
    d = design(kind, seed)
    d = d.assign(y=(d.y + shift) - shift)   # the values y + shift can represent exactly
    f0, f1 = fit(kind, d), fit(kind, d.assign(y=d.y + shift))
    assert f1.loglik == pytest.approx(f0.loglik, rel=RTOL)
    assert f1.fixef["(Intercept)"] - shift == pytest.approx(f0.fixef["(Intercept)"], abs=1e-5 * (1 + abs(shift)) * 1e-3)


@prop
@given(kind=kinds, seed=seeds, c=st.sampled_from([1e-6, 0.01, 3.0, 1e4, 1e8]))
def test_scale_response(kind, seed, c):
    d = design(kind, seed)
    f0, f1 = fit(kind, d), fit(kind, d.assign(y=d.y * c))
    assert f1.loglik == pytest.approx(f0.loglik - len(d) * np.log(c), rel=RTOL, abs=1e-9 * len(d))
    assert f1.sigma2 == pytest.approx(f0.sigma2 * c * c, rel=1e-5)


@prop
@given(kind=kinds, seed=seeds, a=st.sampled_from([-2.0, 1e-3, 0.5, 1e3]),
       c=st.sampled_from([0.0, -50.0, 1e3, 1e4]))
def test_affine_covariate(kind, seed, a, c):
    """x' = a x + c: same logLik; (b0, b1) at x' = M (b0, b1) at x, M = [[1, −c/a], [0, 1/a]],
    so the random slope's covariance becomes M Ω M'."""
    d = design(kind, seed)
    f0, f1 = fit(kind, d), fit(kind, d.assign(x=a * d.x + c))
    assert f1.loglik == pytest.approx(f0.loglik, rel=RTOL)
    assert f1.is_singular == f0.is_singular     # judged in units-free coordinates
    M = np.array([[1.0, -c / a], [0.0, 1.0 / a]])
    np.testing.assert_allclose(f1.fixef.to_numpy(), M @ f0.fixef.to_numpy(), rtol=1e-5,
                               atol=1e-6 * np.abs(M @ f0.fixef.to_numpy()).max())
    if kind == "slope":
        want = M @ f0.cov_re["g"].to_numpy() @ M.T
        np.testing.assert_allclose(f1.cov_re["g"].to_numpy(), want, rtol=1e-4,
                                   atol=1e-6 * np.abs(want).max())


@prop
@given(kind=kinds, seed=seeds, how=st.sampled_from(["float", "float-nan", "object"]))
def test_predictions_ignore_newdata_id_dtype(kind, seed, how):
    d = design(kind, seed)
    f = fit(kind, d)
    nd = d.head(15).copy()
    ref = f.predict(nd)
    e = nd.copy()
    for c in ("g", "h"):
        e[c] = e[c].astype(float) if how != "object" else e[c].astype(object)
    if how == "float-nan":   # an int column with a missing value arrives as float
        e = pd.concat([e, e.head(1).assign(g=np.nan)])
    out = f.predict(e)
    np.testing.assert_allclose(out.iloc[: len(nd)], ref, rtol=1e-12)
