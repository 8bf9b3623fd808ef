"""Nested designs: the rest block in small dense blocks (pylmem/numerics/rest_blocks.py) and
its analytic gradient.

* the gradient equals central differences of the deviance (ML and REML, the user's and the
  centred coordinates) on nested, nested-with-slope and three-level designs, and the
  BLAS-3 path's gradient on a crossed design with a random slope;
* the dense blocks give the CHOLMOD path's deviance and readers (``_BLOCKS_MAX = 0``);
* the fits reach mixedlm 1.3.0's logLik (literals below, command in the comment) and never
  a lower one than the derivative-free CHOLMOD path; invariant under row permutation.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import pylmem
import pylmem.numerics.multi_gradient as MG
import pylmem.numerics.rest_block as RB
import pylmem.numerics.rest_blocks as RBL
from pylmem.model.design import build_design
from pylmem.numerics.crossprod import crossproducts
from pylmem.numerics.deviance import ProfiledDeviance

FORMULAS = {
    "nested": "y ~ x + (1 | school/class)",
    "nested_slope": "y ~ x + (x | school) + (1 | school:class)",
    "three_level": "y ~ x + (1 | region/school/class)",
    "nested_slope_rest": "y ~ x + (1 | region:school:class) + (x | region:school) + (1 | region)",
}


def _nested(seed=11, n_region=100, per_region=5, unbalanced=False):
    """Classes in schools in regions (class labels reused inside their school); ``unbalanced``:
    1-9 schools per region, 1-11 classes per school and 2-9 rows per class (many distinct
    block sizes)."""
    rng = np.random.default_rng(seed)
    schools = rng.integers(1, 10, n_region) if unbalanced else np.full(n_region, per_region)
    school_region = np.repeat(np.arange(n_region), schools)
    n_school = len(school_region)
    n_class = rng.integers(1, 12, n_school) if unbalanced else np.full(n_school, 3)
    sch = np.repeat(np.arange(n_school), n_class)
    cls_in = np.concatenate([np.arange(k) for k in n_class])
    per = rng.integers(2, 10, len(sch)) if unbalanced else np.full(len(sch), 5)
    row_cls = np.repeat(np.arange(len(sch)), per)
    school, klass = sch[row_cls], cls_in[row_cls]
    region = school_region[school]
    n = len(row_cls)
    x = rng.normal(size=n)
    y = (1.0 + 0.5 * x + rng.normal(0, 0.7, n_region)[region] + rng.normal(0, 0.8, n_school)[school]
         + x * rng.normal(0, 0.4, n_school)[school] + rng.normal(0, 0.5, len(sch))[row_cls]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "region": np.char.add("r", region.astype(str)),
                         "school": np.char.add("s", school.astype(str)),
                         "class": np.char.add("c", klass.astype(str))})


def _crossed_slope(seed=5, n_subj=40, n_item=25, per=12):
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj), per)
    item = rng.integers(0, n_item, len(subj))
    x = rng.normal(size=len(subj))
    y = (1 + 0.3 * x + rng.normal(0, 1, n_subj)[subj] + x * rng.normal(0, 0.5, n_subj)[subj]
         + rng.normal(0, 0.7, n_item)[item] + rng.normal(size=len(subj)))
    return pd.DataFrame({"y": y, "x": x, "subj": subj.astype(str), "item": item.astype(str)})


def _dev(formula, df, reml):
    design = build_design(formula, df)
    cp = crossproducts(design.y, design.X, design.terms)
    return ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms], reml=reml)


def _random_theta(dev, rng):
    th = dev.start_theta() * rng.uniform(0.3, 1.5, len(dev.lower))
    off = ~np.isfinite(dev.lower)
    th[off] = rng.normal(size=off.sum()) * 0.3
    return th


def _check_gradient(dev, rng, n_points=2):
    for _ in range(n_points):
        th = _random_theta(dev, rng)
        for centred in (False, True):
            val, g = dev.value_and_gradient(th, centred=centred)
            assert val == pytest.approx(dev(th, centred=centred), rel=1e-12)
            h = 1e-5 * np.maximum(np.abs(th), 0.1)
            fd = np.array([(dev(th + e, centred=centred) - dev(th - e, centred=centred)) / (2 * e[i])
                           for i, e in enumerate(np.diag(h))])
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize("unbalanced", [False, True])
@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("model", list(FORMULAS))
def test_blocks_gradient_matches_finite_differences(model, reml, unbalanced):
    dev = _dev(FORMULAS[model], _nested(unbalanced=unbalanced), reml)
    assert dev.rest.backend == "cholmod" and dev.rest.blocks is not None
    assert dev.has_gradient
    _check_gradient(dev, np.random.default_rng(3))


@pytest.mark.parametrize("reml", [False, True])
def test_blas_gradient_matches_finite_differences(monkeypatch, reml):
    # the crossed design with a random slope on the first term: BLAS-3 rest block, whose
    # gradient the optimiser is offered once an evaluation is large enough
    monkeypatch.setattr(RB, "_BLAS", True)
    monkeypatch.setattr(RB, "_DENSE_M", 10**9)
    dev = _dev("y ~ x + (x | subj) + (1 | item)", _crossed_slope(), reml)
    assert dev.rest.backend == "blas"
    _check_gradient(dev, np.random.default_rng(4))
    monkeypatch.setattr(MG, "MIN_FLOPS_BLAS", 0.0)
    assert MG.available(dev.rest)
    monkeypatch.setattr(MG, "MIN_FLOPS_BLAS", 1e300)
    assert not MG.available(dev.rest)


@pytest.mark.parametrize("unbalanced", [False, True])
@pytest.mark.parametrize("model", list(FORMULAS))
def test_blocks_deviance_equals_cholmod(monkeypatch, model, unbalanced):
    df = _nested(unbalanced=unbalanced)
    rng = np.random.default_rng(8)
    for reml in (False, True):
        blocks = _dev(FORMULAS[model], df, reml)
        monkeypatch.setattr(RB, "_BLOCKS_MAX", 0)
        chol = _dev(FORMULAS[model], df, reml)
        monkeypatch.undo()
        assert blocks.rest.blocks is not None and chol.rest.blocks is None
        for _ in range(3):
            th = _random_theta(blocks, rng)
            assert blocks(th) == pytest.approx(chol(th), rel=1e-11)
            fb, fc = blocks.factor(th), chol.factor(th)
            sizes = list(zip(blocks.qs[1:], blocks.n_levels[1:]))
            for a, b in zip(fb.LRR.inv_diag_blocks(sizes), fc.LRR.inv_diag_blocks(sizes)):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
            for a, b in zip(fb.spherical_modes(), fc.spherical_modes()):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
            for k in (3, 40):       # few right-hand sides: dense blocks; many: sparse L_R⁻¹
                Bm = rng.normal(size=(blocks.m, k))
                Yb, Yc = fb.LRR.solve_L(Bm), fc.LRR.solve_L(Bm)
                np.testing.assert_allclose(Yb.T @ Yb, Yc.T @ Yc, rtol=1e-9, atol=1e-9)
                np.testing.assert_allclose(fb.LRR.solve_Lt(Yb), fc.LRR.solve_Lt(Yc), rtol=1e-8, atol=1e-10)


def test_unbalanced_blocks_are_padded():
    dev = _dev(FORMULAS["three_level"], _nested(unbalanced=True), False)
    lay = dev.rest.blocks
    # more than six distinct component sizes: padded to the ladder 1, 2, 3, 4, 6, 8, 12, ...
    assert len(lay.stacks) >= 2 and all(st["valid"].sum() <= st["nb"] * st["s"] for st in lay.stacks)
    assert any((~st["valid"]).any() for st in lay.stacks)


def test_one_component_and_large_components_stay_with_cholmod(monkeypatch):
    monkeypatch.setattr(RB, "_DENSE_M", 0)
    monkeypatch.setattr(RB, "_DENSE_FRACTION", 2.0)
    dev = _dev("y ~ x + (x | subj) + (1 | item)", _crossed_slope(), False)
    assert dev.rest.backend == "cholmod" and dev.rest.blocks is None      # one component
    monkeypatch.setattr(RB, "_BLOCKS_MAX", 3)          # components of 6 rows
    dev = _dev(FORMULAS["three_level"], _nested(), False)
    assert dev.rest.blocks is None and not dev.has_gradient


# mixedlm 1.3.0 (import mixedlm): mixedlm.lmer(FORMULAS[model], _nested(unbalanced=u), REML=False).logLik().value
MIXEDLM_LOGLIK = {
    ("nested", False): -12229.352178358677,
    ("nested_slope", False): -12026.318897747902,
    ("three_level", False): -12182.944776528635,
    ("nested_slope_rest", False): -11978.967715433619,
    ("nested", True): -27235.0324905651,
    ("nested_slope", True): -26621.596589141882,
    ("three_level", True): -27164.211684985956,
    ("nested_slope_rest", True): -26549.158860567306,
}


def _fit(formula, df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, df, reml=False)


@pytest.mark.parametrize("unbalanced", [False, True])
@pytest.mark.parametrize("model", list(FORMULAS))
def test_fits_reach_mixedlm_and_the_derivative_free_optimum(monkeypatch, model, unbalanced):
    df = _nested(unbalanced=unbalanced)
    fit = _fit(FORMULAS[model], df)
    assert "L-BFGS-B" in fit.optsum.method
    assert fit.loglik >= MIXEDLM_LOGLIK[(model, unbalanced)] - 1e-9 * abs(MIXEDLM_LOGLIK[(model, unbalanced)])
    monkeypatch.setattr(RB, "_BLOCKS_MAX", 0)          # CHOLMOD, BOBYQA (no gradient)
    old = _fit(FORMULAS[model], df)
    assert "BOBYQA" in old.optsum.method
    assert fit.loglik >= old.loglik - 1e-9 * abs(old.loglik)
    assert fit.n_iter < old.n_iter


@pytest.mark.parametrize("model", ["nested_slope", "three_level"])
def test_row_permutation_invariance(model):
    df = _nested(unbalanced=True)
    a = _fit(FORMULAS[model], df)
    perm = np.random.default_rng(2).permutation(len(df))
    b = _fit(FORMULAS[model], df.iloc[perm].reset_index(drop=True))
    assert b.loglik == pytest.approx(a.loglik, rel=1e-11)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.fixef.to_numpy(), a.fixef.to_numpy(), rtol=1e-7)


def test_gradient_refused_when_the_pairs_are_too_many(monkeypatch):
    monkeypatch.setattr(RBL, "MAX_PAIRS", 0)
    dev = _dev(FORMULAS["three_level"], _nested(), False)
    assert dev.rest.blocks is not None and not dev.has_gradient
    with pytest.raises(NotImplementedError):
        dev.value_and_gradient(dev.start_theta())
