"""The product path of a dense scalar rest block (rest_block._ProductSchur) against the K map
and against dense brute force.

Crossed scalar designs ``(1 | a) + (1 | b)`` (uniform, heavy-tailed Zipf popularity, tiny,
and a third scalar term): the Schur complement Λ_R'(Z_R'Z_R − A W A')Λ_R + I on the lower
triangle equals the K map's to 1e-10 relative (largest entry), for any split into dense
(popular) and sparse rows and any number of row chunks; the profiled deviance equals the
explicit dense one (1e-10 relative) and does not change when the data's rows are permuted;
the multi-term gradient's pre-sandwich block is the K map's.
"""
import numpy as np
import pandas as pd
import pytest

import pylmem.numerics.rest_block as RB
from pylmem.model.design import build_design
from pylmem.numerics.crossprod import crossproducts
from pylmem.numerics.deviance import ProfiledDeviance


def _crossed(n, na, nb, zipf=0.0, nc=0, seed=1):
    rng = np.random.default_rng(seed)

    def draw(N):
        if zipf:
            p = 1.0 / np.arange(1, N + 1) ** zipf
            return rng.choice(N, size=n, p=p / p.sum())
        return rng.integers(0, N, n)

    a, b = draw(na), draw(nb)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=na)[a] + 0.7 * rng.normal(size=nb)[b] + rng.normal(size=n)
    df = {"y": y, "x": x, "a": np.char.add("a", a.astype(str)), "b": np.char.add("b", b.astype(str))}
    if nc:
        c = draw(nc)
        df["y"] = y + 0.5 * rng.normal(size=nc)[c]
        df["c"] = np.char.add("c", c.astype(str))
    return pd.DataFrame(df)


DESIGNS = {
    "uniform": (lambda: _crossed(3000, 150, 120), "y ~ x + (1 | a) + (1 | b)"),
    "zipf": (lambda: _crossed(4000, 300, 200, zipf=1.1, seed=2), "y ~ x + (1 | a) + (1 | b)"),
    "tiny": (lambda: _crossed(14, 4, 3, seed=3), "y ~ x + (1 | a) + (1 | b)"),
    "three": (lambda: _crossed(3000, 120, 60, nc=40, seed=4), "y ~ x + (1 | a) + (1 | b) + (1 | c)"),
}


def _dev(monkeypatch, df, formula, product, rows=None, chunks=8, reml=False):
    monkeypatch.setattr(RB, "_DENSE_M", 10**9)
    monkeypatch.setattr(RB, "_BLAS", False)
    monkeypatch.setattr(RB, "_PRODUCT", product)
    monkeypatch.setattr(RB, "_PRODUCT_ROWS", rows)
    monkeypatch.setattr(RB, "_PRODUCT_CHUNKS", chunks)
    monkeypatch.setattr(RB, "_PRODUCT_CHUNK_ROWS", 1)
    d = build_design(formula, df)
    cp = crossproducts(d.y, d.X, d.terms)
    dev = ProfiledDeviance(cp, [t.q for t in d.terms], [t.n_levels for t in d.terms], reml=reml)
    assert dev.rest.backend == "dense"
    assert (dev.rest._product is not None) == product
    return d, dev


def _thetas(dev, k=3, seed=5):
    rng = np.random.default_rng(seed)
    return [dev.start_theta() * rng.uniform(0.2, 2.0, len(dev.lower)) for _ in range(k)]


def _schur(dev, th):
    T = dev.split_theta(th)
    q0 = dev.qs[0]
    A00 = np.einsum("ijg,i,j->ijg", dev._G0, T[0][0], T[0][0]) + np.eye(q0)[:, :, None]
    L0s = np.sqrt(A00)
    X, _ = dev.rest.schur_values(T, L0s)
    return np.tril(X)


@pytest.mark.parametrize("name", list(DESIGNS))
@pytest.mark.parametrize("rows,chunks", [(None, 8), (0, 1), (0, 5), (7, 3), (10**6, 2)])
def test_product_schur_equals_k_map(monkeypatch, name, rows, chunks):
    make, formula = DESIGNS[name]
    df = make()
    _, ref = _dev(monkeypatch, df, formula, False)
    _, new = _dev(monkeypatch, df, formula, True, rows=rows, chunks=chunks)
    if rows:
        assert len(new.rest._product.d) == min(rows, new.m)
    for th in _thetas(ref):
        a, b = _schur(ref, th), _schur(new, th)
        assert np.abs(a - b).max() <= 1e-10 * np.abs(a).max()
        assert new(th) == pytest.approx(ref(th), rel=1e-12)


def _dense_objective(design, T):
    """ML deviance from the explicit dense matrices of the model."""
    ZL = np.hstack([t.sparse().toarray() * Tk[0, 0] for t, Tk in zip(design.terms, T)])
    X, y = design.X, design.y
    n, k = len(y), ZL.shape[1]
    ld = np.linalg.slogdet(ZL.T @ ZL + np.eye(k))[1]
    M = np.hstack([ZL, X])
    MM = M.T @ M
    MM[np.arange(k), np.arange(k)] += 1
    sol = np.linalg.solve(MM, M.T @ y)
    r2 = np.sum((y - M @ sol) ** 2) + np.sum(sol[:k] ** 2)
    return ld + n * (1 + np.log(2 * np.pi * r2 / n))


@pytest.mark.parametrize("name", ["zipf", "tiny", "three"])
def test_product_deviance_matches_dense_brute_force(monkeypatch, name):
    make, formula = DESIGNS[name]
    d, dev = _dev(monkeypatch, make(), formula, True, rows=5, chunks=3)
    for th in _thetas(dev):
        assert dev(th) == pytest.approx(_dense_objective(d, dev.split_theta(th)), rel=1e-10)


@pytest.mark.parametrize("name", ["uniform", "zipf", "three"])
def test_product_deviance_row_permutation_invariant(monkeypatch, name):
    make, formula = DESIGNS[name]
    df = make()
    perm = np.random.default_rng(9).permutation(len(df))
    _, a = _dev(monkeypatch, df, formula, True, chunks=4)
    _, b = _dev(monkeypatch, df.iloc[perm].reset_index(drop=True), formula, True, chunks=4)
    for th in _thetas(a):
        assert b(th) == pytest.approx(a(th), rel=1e-10)


def test_product_pre_sandwich_block_for_the_gradient(monkeypatch):
    make, formula = DESIGNS["three"]
    df = make()
    _, ref = _dev(monkeypatch, df, formula, False)
    _, new = _dev(monkeypatch, df, formula, True, rows=9, chunks=3)
    th = _thetas(ref, 1)[0]
    for dev in (ref, new):
        dev.rest.keep_pre = True
    _schur(ref, th), _schur(new, th)
    a, b = ref.rest.last_pre, new.rest.last_pre
    assert np.abs(a - b).max() <= 1e-10 * np.abs(a).max()
    for dev in (ref, new):
        dev.rest.keep_pre = False
    va, ga = ref.value_and_gradient(th)
    vb, gb = new.value_and_gradient(th)
    assert vb == pytest.approx(va, rel=1e-12)
    np.testing.assert_allclose(gb, ga, rtol=1e-8, atol=1e-8 * np.abs(ga).max())


def test_product_chosen_when_the_k_map_outgrows_the_block(monkeypatch):
    """By default the K map is kept while it is no larger than the m × m block (12 bytes an
    entry against 8 m²) or small, else the product path: a dense crossed design with many
    rows per first-term level goes to the product path and keeps no K map."""
    monkeypatch.setattr(RB, "_PRODUCT", None)
    monkeypatch.setattr(RB, "_PRODUCT_MIN_K_BYTES", 0.0)
    df = _crossed(20000, 100, 300, seed=6)                 # ~190 rest levels per first-term level
    d = build_design("y ~ x + (1 | a) + (1 | b)", df)
    cp = crossproducts(d.y, d.X, d.terms)
    dev = ProfiledDeviance(cp, [1, 1], [t.n_levels for t in d.terms], reml=False)
    assert dev.rest._product is not None and dev.rest.K is None and dev.rest.zz is None
    df = _crossed(3000, 150, 120)
    monkeypatch.setattr(RB, "_PRODUCT_MIN_K_BYTES", 32e6)
    d = build_design("y ~ x + (1 | a) + (1 | b)", df)
    cp = crossproducts(d.y, d.X, d.terms)
    dev = ProfiledDeviance(cp, [1, 1], [t.n_levels for t in d.terms], reml=False)
    assert dev.rest._product is None and dev.rest.K is not None


def test_product_structure_pickles(monkeypatch):
    import pickle

    make, formula = DESIGNS["zipf"]
    _, dev = _dev(monkeypatch, make(), formula, True, rows=4, chunks=3)
    th = _thetas(dev, 1)[0]
    dev2 = pickle.loads(pickle.dumps(dev))
    assert dev2.rest._product is not None
    assert dev2(th) == dev(th)


def test_product_without_direct_kernels_agrees(monkeypatch):
    """The same block through scipy's public product (``@``) when the kernels are not called
    directly."""
    make, formula = DESIGNS["zipf"]
    df = make()
    _, a = _dev(monkeypatch, df, formula, True, rows=6, chunks=4)
    assert a.rest._product._nnz is not None
    ths = _thetas(a, 2)
    want = [_schur(a, th) for th in ths]
    monkeypatch.setattr(RB, "_csr_matmat", None)
    _, b = _dev(monkeypatch, df, formula, True, rows=6, chunks=4)
    assert b.rest._product._nnz is None
    for th, x in zip(ths, want):
        y = _schur(b, th)
        assert np.abs(x - y).max() <= 1e-12 * np.abs(x).max()
