"""The direct model matrices of text factors and interactions (model/fastspec.py) against
formulaic's, on random formulas; and the fits, tests and predictions that read the spec."""
import pickle
import random

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix

import pylmem
import pylmem.model.fastspec as FS
from pylmem.model.fastspec import FactorSpec


def _frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": rng.choice(["x", "y", "z"], n),
        "b": pd.Series(rng.choice(["p", "q"], n), dtype=object),
        "c": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"]),
        "m": rng.choice(["B", "a", "C", "b"], n),            # codepoint order: B C a b
        "u": rng.normal(size=n), "v": rng.integers(0, 5, n), "w": rng.normal(size=n)})


def _random_formulas(k=300, seed=1):
    random.seed(seed)
    names = ["a", "b", "c", "m", "u", "v", "w"]
    for _ in range(k):
        parts = [random.choice(["*", ":"]).join(random.sample(names, random.randint(1, 3)))
                 for _ in range(random.randint(1, 4))]
        if random.random() < 0.2:
            parts.insert(0, random.choice(["1", "0"]))
        yield " + ".join(parts)


def test_matrices_names_and_terms_equal_formulaic_on_random_formulas():
    d = _frame()
    agree = 0
    for e in _random_formulas():
        try:
            mm = model_matrix(e, d, na_action="ignore", output="pandas")
        except Exception:  # noqa: BLE001, S112 - formulaic refuses some random formulas
            continue
        fs = FactorSpec.detect(e, d)
        if fs is None:
            continue
        agree += 1
        assert list(mm.columns) == fs.names, e
        np.testing.assert_array_equal(mm.to_numpy(dtype=float), fs.matrix(d), err_msg=e)
        assert [str(t) for t in mm.model_spec.term_indices] == list(fs.term_index_map()), e
        assert list(mm.model_spec.term_indices.values()) == list(fs.term_index_map().values()), e
        # formulaic's own spec, formed from the rows holding every level, reads new data alike
        pd.testing.assert_frame_equal(fs.get_model_matrix(d.iloc[::-1]),
                                      mm.model_spec.get_model_matrix(d.iloc[::-1]))
    assert agree >= 80


@pytest.mark.parametrize("expr", ["a + u:a", "0 + a", "C(a) + u", "a:b + a", "u + (a + b):u",
                                  "poly(u, 2) + a", "b:a + a:b + a + b"])
def test_formulaic_keeps_what_it_alone_can_do(expr):
    assert FactorSpec.detect(expr, _frame()) is None


def test_booleans_and_numbers_only_go_elsewhere():
    d = _frame().assign(f=lambda x: x.u > 0)
    assert FactorSpec.detect("f + u", d) is None
    assert FactorSpec.detect("u * w", d) is None


def _lmm_data(seed=3, n=400):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 20, n)
    sex = rng.choice(["F", "M"], n)
    dose = rng.choice(["hi", "lo", "mid"], n)
    age = rng.uniform(8, 14, n)
    y = (1 + (sex == "M") * 0.5 + 0.2 * age + (dose == "hi") * 0.3 + rng.normal(size=20)[g]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "sex": sex, "dose": dose, "age": age,
                         "g": [f"g{v:02d}" for v in g]})


def _both(monkeypatch, formula, data, **kw):
    fast = pylmem.lmer(formula, data, **kw)
    assert isinstance(fast.design.fixed_spec, FactorSpec)
    monkeypatch.setattr(FS.FactorSpec, "detect", classmethod(lambda cls, e, d: None))
    slow = pylmem.lmer(formula, data, **kw)
    assert not isinstance(slow.design.fixed_spec, FactorSpec)
    monkeypatch.undo()
    return fast, slow


def test_fit_tests_and_predictions_equal_the_formulaic_path(monkeypatch):
    d = _lmm_data()
    fast, slow = _both(monkeypatch, "y ~ sex * age + dose + (1 | g)", d)
    assert fast.fixef.index.tolist() == slow.fixef.index.tolist()
    np.testing.assert_allclose(fast.fixef, slow.fixef, rtol=1e-12)
    assert fast.loglik == pytest.approx(slow.loglik, rel=1e-13)
    for t in (2, 3):
        pd.testing.assert_frame_equal(fast.anova(type=t), slow.anova(type=t), rtol=1e-9)
    new = d.iloc[:25].sample(frac=1.0, random_state=1)
    np.testing.assert_allclose(fast.predict(new), slow.predict(new), rtol=1e-12)
    pd.testing.assert_frame_equal(fast.ls_means("dose"), slow.ls_means("dose"), rtol=1e-9)
    with pytest.raises(ValueError):
        fast.predict(new.assign(dose="none"))
    again = pickle.loads(pickle.dumps(fast))
    np.testing.assert_allclose(again.predict(new), fast.predict(new), rtol=1e-14)


def test_text_dtypes_are_the_same_factor(monkeypatch):
    """pandas' default text dtype, object text, a Categorical and the "string" dtype (which
    formulaic alone would multiply as numbers) give one fit."""
    d = _lmm_data()
    ref = pylmem.lmer("y ~ sex * age + (1 | g)", d)
    for conv in (lambda s: s.astype(object), lambda s: s.astype("category"),
                 lambda s: s.astype("string"), lambda s: s.astype("string[pyarrow]")):
        f = pylmem.lmer("y ~ sex * age + (1 | g)", d.assign(sex=conv(d["sex"])))
        assert f.fixef.index.tolist() == ref.fixef.index.tolist()
        np.testing.assert_allclose(f.fixef, ref.fixef, rtol=1e-12)
    # the formulaic path with the "string" dtype too (C() keeps it off the direct path)
    f = pylmem.lmer("y ~ C(sex) * age + (1 | g)", d.assign(sex=d["sex"].astype("string")))
    np.testing.assert_allclose(f.loglik, ref.loglik, rtol=1e-12)


def test_row_order_and_level_order():
    d = _lmm_data()
    a = pylmem.lmer("y ~ dose * age + (1 | g)", d)
    b = pylmem.lmer("y ~ dose * age + (1 | g)", d.sample(frac=1.0, random_state=2))
    pd.testing.assert_series_equal(a.fixef, b.fixef, rtol=1e-10)
    c = pylmem.lmer("y ~ dose * age + (1 | g)",
                    d.assign(dose=pd.Categorical(d["dose"], categories=["mid", "lo", "hi"])))
    assert c.fixef.index.tolist()[:3] == ["(Intercept)", "doselo", "dosehi"]
    assert c.loglik == pytest.approx(a.loglik, rel=1e-12)
