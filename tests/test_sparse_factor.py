"""The multi-term factorization (pylmem/sparse_factor.py) against dense brute force.

Simulated nested, crossed, crossed-with-slopes and 3-level designs: the profiled deviance
(ML and REML) at random θ, the fitted model's conditional variances and hat trace, each
computed from the explicit dense matrices of the model, on every backend of the rest
block (dense K map, dense rank-k update, a mix of the two, CHOLMOD).  Tolerance: 1e-9
relative on the deviance (float64 rounding of ~10^3-term sums), 1e-7 on the readers.
"""
import numpy as np
import pandas as pd
import pytest

import pylmem
import pylmem.numerics.rest_block as SF
from pylmem.numerics.crossprod import crossproducts
from pylmem.model.design import build_design
from pylmem.numerics.deviance import ProfiledDeviance

# backend -> (module constants to set); "mixed" sets the heavy threshold per design below
BACKENDS = {
    "dense_K": dict(_DENSE_M=10**9, _GEMM_MAX=0, _PAIR_CHUNK=97, _BLAS=False),   # K in many chunks
    "dense_rank_k": dict(_DENSE_M=10**9, _GEMM_MAX=10**9, _HEAVY_FACTOR=1e12, _BLAS=False),
    "mixed": dict(_DENSE_M=10**9, _GEMM_MAX=10**9, _BLAS=False),
    "blas": {"_DENSE_M": 10**9, "_BLAS": True},                          # dense all the way (dsyrk)
    "cholmod": dict(_DENSE_M=0, _DENSE_FRACTION=2.0),
}

FORMULAS = {
    "crossed": "y ~ x + (1 | a) + (1 | b)",
    "crossed_slope": "y ~ x + (x | a) + (1 | b)",
    "crossed_slope_rest": "y ~ x + (1 | a) + (x | b) + (1 | c)",
    "nested": "y ~ x + (1 | c/a)",
    "nested_slope": "y ~ x + (x | c) + (1 | c:a)",
    "three_level": "y ~ x + (1 | c/e/a)",
    "double_bar": "y ~ x + (x || b) + (1 | a)",
}


def _data(n=400, seed=3):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 30, n)
    b = rng.integers(0, 20, n)
    c = rng.integers(0, 5, n)
    e = rng.integers(0, 3, n)
    x = rng.normal(size=n)
    y = 1 + x + rng.normal(size=30)[a] * 0.8 + rng.normal(size=20)[b] * 0.6 \
        + rng.normal(size=5)[c] * 0.5 + x * rng.normal(size=5)[c] * 0.3 + rng.normal(size=n) \
        + x * rng.normal(size=30)[a] * 0.5 + rng.normal(size=(5, 3))[c, e] * 0.7 + x * rng.normal(size=20)[b] * 0.4
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str),
                         "c": c.astype(str), "e": e.astype(str)})


def _use(monkeypatch, backend, design=None):
    for k, v in BACKENDS[backend].items():
        monkeypatch.setattr(SF, k, v)
    if backend == "mixed":
        # heavy threshold at the median number of A entries per first-term level
        t0 = design.terms[0]
        m = sum(t.n_levels * t.q for t in design.terms[1:])
        cnt = np.array([sum(len(np.unique(t.codes[t0.codes == j])) * t.q for t in design.terms[1:])
                        for j in range(t0.n_levels)]) * t0.q
        monkeypatch.setattr(SF, "_HEAVY_FACTOR", float(m * m * t0.q) / float(np.median(cnt)) ** 2 * 1.01)


def _dense_objective(design, T, reml):
    """log|Λ'Z'ZΛ + I| and the penalised least squares, from explicit dense matrices."""
    ZL = np.hstack([t.sparse().toarray() @ np.kron(np.eye(t.n_levels), Tk)
                    for t, Tk in zip(design.terms, T)])
    X, y = design.X, design.y
    n, p = X.shape
    k = ZL.shape[1]
    ld = np.linalg.slogdet(ZL.T @ ZL + np.eye(k))[1]
    M = np.hstack([ZL, X])
    MM = M.T @ M
    MM[np.arange(k), np.arange(k)] += 1
    sol = np.linalg.solve(MM, M.T @ y)
    r2 = np.sum((y - M @ sol) ** 2) + np.sum(sol[:k] ** 2)
    if reml:
        nu = n - p
        return ld + (np.linalg.slogdet(MM)[1] - ld) + nu * (1 + np.log(2 * np.pi * r2 / nu))
    return ld + n * (1 + np.log(2 * np.pi * r2 / n))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("model", list(FORMULAS))
def test_deviance_matches_dense_brute_force(monkeypatch, backend, model):
    df = _data()
    design = build_design(FORMULAS[model], df)
    _use(monkeypatch, backend, design)
    cp = crossproducts(design.y, design.X, design.terms)
    rng = np.random.default_rng(7)
    for reml in (False, True):
        dev = ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms],
                               reml=reml)
        want = {"cholmod": "cholmod", "blas": "blas"}.get(backend, "dense")
        assert dev.rest.backend == want
        if backend == "dense_rank_k":
            assert dev.rest.K is None and dev.rest._Ad is not None
        if backend == "dense_K":
            assert dev.rest._Ad is None
        for _ in range(2):
            th = dev.start_theta() * rng.uniform(0.3, 1.5, len(dev.lower))
            off = ~np.isfinite(dev.lower)
            th[off] = rng.normal(size=off.sum()) * 0.3
            got = dev(th)
            assert got == pytest.approx(_dense_objective(design, dev.split_theta(th), reml), rel=1e-9)


def test_mixed_backend_really_mixes(monkeypatch):
    design = build_design(FORMULAS["crossed"], _data())
    _use(monkeypatch, "mixed", design)
    cp = crossproducts(design.y, design.X, design.terms)
    dev = ProfiledDeviance(cp, [1, 1], [t.n_levels for t in design.terms], reml=False)
    assert dev.rest.K is not None and dev.rest._Ad is not None
    assert 0 < len(dev.rest._heavy) < design.terms[0].n_levels


@pytest.mark.parametrize("backend", ["dense_K", "blas", "cholmod"])
@pytest.mark.parametrize("model", ["crossed_slope_rest", "three_level", "nested_slope"])
def test_fit_readers_match_dense(monkeypatch, backend, model):
    """condVar (diagonal blocks of (LL')⁻¹), modes and tr(P) against the dense formulas."""
    df = _data()
    design = build_design(FORMULAS[model], df)
    _use(monkeypatch, backend, design)
    fit = pylmem.lmer(FORMULAS[model], df, reml=False)
    T = fit.factor.T
    ZL = np.hstack([t.sparse().toarray() @ np.kron(np.eye(t.n_levels), Tk)
                    for t, Tk in zip(design.terms, T)])
    X, y = design.X, design.y
    k = ZL.shape[1]
    M = np.hstack([ZL, X])
    MM = M.T @ M
    MM[np.arange(k), np.arange(k)] += 1
    Ainv = np.linalg.inv(ZL.T @ ZL + np.eye(k))
    off = 0
    for t, Tk, D in zip(design.terms, T, fit.inv_diag_blocks):
        n = t.n_levels * t.q
        blk = Ainv[off:off + n, off:off + n].reshape(t.n_levels, t.q, t.n_levels, t.q)
        want = blk[np.arange(t.n_levels), :, np.arange(t.n_levels), :]
        np.testing.assert_allclose(D, want, rtol=1e-7, atol=1e-12)
        off += n
    sol = np.linalg.solve(MM, M.T @ y)
    np.testing.assert_allclose(fit.beta, sol[k:], rtol=1e-7)
    u = np.concatenate([b_.ravel() for b_ in fit.modes])
    b_dense = np.concatenate([(np.kron(np.eye(t.n_levels), Tk) @ sol[o:o + t.n_levels * t.q])
                              for t, Tk, o in zip(design.terms, T,
                                                  np.cumsum([0] + [t.n_levels * t.q for t in design.terms]))])
    np.testing.assert_allclose(u, b_dense, rtol=1e-7, atol=1e-10)
    P = M @ np.linalg.solve(MM, M.T)
    assert fit.hat_trace == pytest.approx(np.trace(P), rel=1e-9)


def test_cholmod_and_dense_fits_agree(monkeypatch):
    df = _data(seed=5)
    f = "y ~ x + (x | a) + (1 | b)"
    _use(monkeypatch, "cholmod")
    a = pylmem.lmer(f, df, reml=True)
    _use(monkeypatch, "dense_K")
    b = pylmem.lmer(f, df, reml=True)
    assert a.dev.rest.backend == "cholmod" and b.dev.rest.backend == "dense"
    assert a.reml_criterion == pytest.approx(b.reml_criterion, rel=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-5, atol=1e-7)


def test_backend_follows_the_structure():
    """Nested designs (block-diagonal rest) and sparse crossed designs go to CHOLMOD with
    O(nnz) storage, a small or dense rest to LAPACK."""
    rng = np.random.default_rng(0)
    n = 6000
    school = rng.integers(0, 600, n)
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                       "s": school.astype(str), "c": rng.integers(0, 8, n).astype(str),
                       "a": rng.integers(0, 4000, n).astype(str), "b": rng.integers(0, 3000, n).astype(str)})
    for f, backend in [("y ~ x + (x | s) + (1 | s:c)", "cholmod"),
                       ("y ~ x + (1 | a) + (1 | b)", "cholmod"),
                       ("y ~ x + (1 | s) + (1 | c)", "dense")]:
        d = build_design(f, df)
        cp = crossproducts(d.y, d.X, d.terms)
        dev = ProfiledDeviance(cp, [t.q for t in d.terms], [t.n_levels for t in d.terms], reml=False)
        assert dev.rest.backend == backend, f
        if backend == "cholmod":
            assert dev.rest.nnz < 20 * dev.m       # no m × m storage


@pytest.mark.parametrize("backend", ["dense_K", "blas"])
@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("model", list(FORMULAS))
def test_multi_term_gradient_matches_finite_differences(monkeypatch, model, reml, backend):
    """Analytic ∂d/∂θ for several terms (pylmem/multi_gradient.py) against central
    differences (h = 1e-6): 1e-6 relative to the largest component, on the K map and on
    the BLAS-3 rest block."""
    _use(monkeypatch, backend)
    design = build_design(FORMULAS[model], _data())
    cp = crossproducts(design.y, design.X, design.terms)
    dev = ProfiledDeviance(cp, [t.q for t in design.terms], [t.n_levels for t in design.terms], reml=reml)
    rng = np.random.default_rng(11)
    th = dev.start_theta() * rng.uniform(0.3, 1.5, len(dev.lower))
    off = ~np.isfinite(dev.lower)
    th[off] = rng.normal(size=off.sum()) * 0.3
    val, g = dev.value_and_gradient(th)
    assert val == pytest.approx(dev(th), rel=1e-13)
    h = 1e-6
    fd = np.array([(dev(th + h * e) - dev(th - h * e)) / (2 * h) for e in np.eye(len(th))])
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


def test_multi_term_gradient_on_the_small_dense_path(monkeypatch):
    """The small dense rest block offers the gradient (L-BFGS-B); turned off, BOBYQA
    reaches the same optimum."""
    import pylmem.numerics.multi_gradient as MG

    monkeypatch.setattr(MG, "MIN_THETA_DENSE", 2)   # two θ: offered from 3 by default
    design = build_design(FORMULAS["crossed"], _data())
    cp = crossproducts(design.y, design.X, design.terms)
    dev = ProfiledDeviance(cp, [1, 1], [t.n_levels for t in design.terms], reml=False)
    assert dev.rest.backend == "dense" and dev.has_gradient
    fit_g = pylmem.fit_design(design, reml=False)
    assert fit_g.optsum.method.startswith("L-BFGS-B")
    monkeypatch.setattr(MG, "MIN_THETA_DENSE", 10 ** 9)
    assert not dev.has_gradient
    fit_b = pylmem.fit_design(design, reml=False)
    assert fit_b.optsum.method.startswith("BOBYQA")
    assert fit_g.objective <= fit_b.objective + 1e-10 * abs(fit_b.objective)
    assert fit_g.objective == pytest.approx(fit_b.objective, rel=1e-10)


def test_multi_term_gradient_refuses_sparse_rest(monkeypatch):
    _use(monkeypatch, "cholmod")
    design = build_design(FORMULAS["crossed"], _data())
    cp = crossproducts(design.y, design.X, design.terms)
    dev = ProfiledDeviance(cp, [1, 1], [t.n_levels for t in design.terms], reml=False)
    with pytest.raises(NotImplementedError, match="dense rest block"):
        dev.value_and_gradient(dev.start_theta())


@pytest.mark.slow
def test_large_nested_design_reaches_the_optimum():
    """The benchmarks' nested design (100k rows): BOBYQA stops ~0.002 deviance units short and
    one finite-difference Newton step leaves most of it (lme4 1.1-31: logLik −148252.103927);
    the fit must be within 1e-10 relative of a tightly converged Nelder-Mead polish."""
    import sys
    from pathlib import Path

    from scipy.optimize import minimize

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cases import simulate_nested_slope

    fit = pylmem.lmer("y ~ x + (x | school) + (1 | school:class)", simulate_nested_slope(), reml=False)
    assert fit.dev.rest.backend == "cholmod"
    ref = minimize(fit.dev, fit.theta, method="Nelder-Mead",
                   options=dict(xatol=1e-10, fatol=1e-12, maxiter=3000))
    assert fit.objective <= ref.fun + 1e-10 * abs(ref.fun)
    assert fit.loglik == pytest.approx(-148252.103927, abs=2e-5)


def test_cholmod_fit_keeps_its_factor_and_pickles(monkeypatch):
    """The CHOLMOD factor is refactorised in place at every evaluation: a fitted model's
    readers must not see a later evaluation (e.g. by profiling); and fits pickle."""
    import pickle

    _use(monkeypatch, "cholmod")
    df = _data(seed=9)
    f = "y ~ x + (x | a) + (1 | b)"
    ref = pylmem.lmer(f, df, reml=False)
    want = (ref.ranef_condvar()["b"].copy(), ref.ranef["b"].to_numpy().copy(), ref.hat_trace)
    fit = pylmem.lmer(f, df, reml=False)
    assert fit.dev.rest.backend == "cholmod"
    fit.dev(fit.theta * 1.9)                       # moves the shared numeric factor
    np.testing.assert_allclose(fit.ranef_condvar()["b"], want[0], rtol=1e-10)
    np.testing.assert_allclose(fit.ranef["b"].to_numpy(), want[1], rtol=1e-10)
    assert fit.hat_trace == pytest.approx(want[2], rel=1e-10)
    back = pickle.loads(pickle.dumps(fit))
    np.testing.assert_allclose(back.ranef_condvar()["b"], want[0], rtol=1e-10)
    assert back.dev(back.theta) == pytest.approx(fit.objective, rel=1e-12)


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("model", ["crossed", "crossed_slope", "crossed_slope_rest", "nested_slope",
                                   "three_level", "double_bar"])
def test_blas_and_k_map_fits_agree(monkeypatch, model, reml):
    """The BLAS-3 rest block (one dsyrk per θ) fits the same optimum as the K map, on
    crossed, nested, slope and unbalanced designs (these data: unbalanced random cells),
    both with the analytic gradient (on these small blocks BOBYQA can stop at a boundary
    local optimum: nested_slope REML 1476.876 against 1476.201, mixedlm's too)."""
    import pylmem.numerics.multi_gradient as MG

    df = _data(seed=5)
    f = FORMULAS[model]
    _use(monkeypatch, "dense_K")
    monkeypatch.setattr(MG, "MIN_THETA_DENSE", 2)
    a = pylmem.lmer(f, df, reml=reml)
    _use(monkeypatch, "blas")
    monkeypatch.setattr(MG, "MIN_M_BLAS", 0)
    b = pylmem.lmer(f, df, reml=reml)
    assert a.optsum.method.startswith("L-BFGS-B") and b.optsum.method.startswith("L-BFGS-B")
    assert a.dev.rest.backend == "dense" and b.dev.rest.backend == "blas"
    assert b.objective <= a.objective + 1e-9 * abs(a.objective)
    assert b.objective == pytest.approx(a.objective, rel=1e-9)
    # a boundary fit leaves θ weakly identified along the flat direction: its d is compared
    tol = 1e-2 if a.is_singular else 1e-5
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-4, atol=tol)
    if not a.is_singular:
        ca, cb = a.ranef_condvar(), b.ranef_condvar()
        for k in ca:
            np.testing.assert_allclose(cb[k], ca[k], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("reml", [False, True])
def test_blas_gradient_in_the_optimiser(monkeypatch, reml):
    """With the BLAS-3 rest block above MIN_M_BLAS rows the optimiser is L-BFGS-B with the
    analytic gradient; forced here on small data, it reaches BOBYQA's optimum (K map)."""
    import pylmem.numerics.multi_gradient as MG

    df = _data(seed=8)
    f = "y ~ x + (x | a) + (x | b)"
    _use(monkeypatch, "dense_K")
    c = pylmem.lmer(f, df, reml=reml)    # 6 θ on the small dense path: the gradient
    assert c.optsum.method.startswith("L-BFGS-B")
    monkeypatch.setattr(MG, "MIN_THETA_DENSE", 10 ** 9)
    a = pylmem.lmer(f, df, reml=reml)
    assert a.optsum.method.startswith("BOBYQA")
    assert c.objective <= a.objective + 1e-9 * abs(a.objective)
    np.testing.assert_allclose(c.theta, a.theta, rtol=1e-4, atol=1e-5)
    _use(monkeypatch, "blas")
    monkeypatch.setattr(MG, "MIN_M_BLAS", 0)
    b = pylmem.lmer(f, df, reml=reml)
    assert b.dev.rest.backend == "blas" and b.optsum.method.startswith("L-BFGS-B")
    assert b.objective <= a.objective + 1e-9 * abs(a.objective)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-4, atol=1e-5)


def test_blas_fit_keeps_its_factor_and_pickles(monkeypatch):
    """The BLAS-3 path reuses one buffer across θ: the factor a fit keeps must not move."""
    import pickle

    _use(monkeypatch, "blas")
    df = _data(seed=9)
    f = "y ~ x + (x | a) + (x | b)"
    fit = pylmem.lmer(f, df, reml=False)
    assert fit.dev.rest.backend == "blas"
    want = (fit.ranef_condvar()["b"].copy(), fit.ranef["b"].to_numpy().copy(), fit.hat_trace)
    fit.dev(fit.theta * 1.9)
    fit.dev.value_and_gradient(fit.theta * 0.7)
    np.testing.assert_allclose(fit.ranef_condvar()["b"], want[0], rtol=1e-12)
    np.testing.assert_allclose(fit.ranef["b"].to_numpy(), want[1], rtol=1e-12)
    back = pickle.loads(pickle.dumps(fit))
    assert back.dev(back.theta) == pytest.approx(fit.objective, rel=1e-12)
    np.testing.assert_allclose(back.ranef_condvar()["b"], want[0], rtol=1e-10)


def test_cost_model_picks_blas_for_dense_fill():
    """Crossed slopes on both factors (every subject meets a fifth of the items): the K map
    would hold ~(items per subject)² entries per subject; the cost model picks the BLAS-3
    path, whose set-up stores only the dense A (m × L0 q0); sparse crossed stays CHOLMOD."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cases import simulate_crossed_slopes

    d = build_design("y ~ x + (x | subj) + (x | item)", simulate_crossed_slopes(300, 150, 40))
    cp = crossproducts(d.y, d.X, d.terms)
    dev = ProfiledDeviance(cp, [2, 2], [t.n_levels for t in d.terms], reml=False)
    assert dev.rest.backend == "blas" and dev.rest.K is None
    k_path, blas = SF.blas_costs(np.full(300, 80 * 2), 300, 300, 2)
    assert blas < k_path
