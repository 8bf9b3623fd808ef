"""Prediction standard errors and intervals (pylmem.postfit.intervals): dense brute force and coverage."""
import warnings

import numpy as np
import pandas as pd
import pytest
from diag_refs import newdata, ref_fit

import pylmem


def _dense_M(fit):
    """M = A'A + diag(I, 0), A = √W [ZΛ X] (model order), formed densely."""
    d = fit.design
    s = np.ones(d.n_obs) if d.weights is None else np.sqrt(d.weights)
    ZL = np.hstack([t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T)
                    for t, T in zip(d.terms, fit.factor.T)])
    A = np.hstack([ZL, d.X]) * s[:, None]
    M = A.T @ A
    k = ZL.shape[1]
    M[np.arange(k), np.arange(k)] += 1.0
    return M


def _dense_rows(fit, nd, only=None):
    """a_i = [Λ'z_i; x_i] for newdata rows (known levels), plus the new-level prior term;
    ``only``: the grouping factors included (the others contribute 0)."""
    d = fit.design
    blocks, prior = [], np.zeros(len(nd))
    for t, T in zip(d.terms, fit.factor.T):
        if only is not None and t.group[0] not in only:
            blocks.append(np.zeros((len(nd), t.n_levels * t.q)))
            continue
        col = t.group[0]
        Zn = np.column_stack([np.ones(len(nd))] + [nd[c].to_numpy(float)
                                                   for c in t.coef_names if c != "(Intercept)"])
        codes = pd.Index(t.levels).get_indexer(nd[col].astype(str))
        B = np.zeros((len(nd), t.n_levels * t.q))
        for i, c in enumerate(codes):
            if c >= 0:
                B[i, c * t.q:(c + 1) * t.q] = Zn[i] @ T
            else:
                prior[i] += np.sum((Zn[i] @ T) ** 2)
        blocks.append(B)
    X = np.column_stack([np.ones(len(nd))] + [nd[c].to_numpy(float) for c in d.fixef_names[1:]])
    return np.hstack(blocks + [X]), prior


@pytest.mark.parametrize("key", ["sleep_reml", "sleep_w_ml", "penicillin_reml"])
def test_se_fit_equals_dense_joint_covariance(key):
    fit = ref_fit(key)
    if key.startswith("pen"):
        nd = pd.DataFrame({"plate": ["a", "b", "zz", "x"], "sample": ["A", "F", "B", "new"]})
    else:
        nd = newdata()
    A, prior = _dense_rows(fit, nd)
    Minv = np.linalg.inv(_dense_M(fit))
    var = np.einsum("ni,ij,nj->n", A, Minv, A) + prior
    out = fit.predict(nd, se_fit=True, allow_new_levels=True)
    np.testing.assert_allclose(out["se_fit"], np.sqrt(fit.sigma2 * var), rtol=1e-9)
    np.testing.assert_allclose(out["fit"], fit.predict(nd, allow_new_levels=True), rtol=1e-12)
    # prediction interval: √(se² + σ²), normal quantile
    pi = fit.predict(nd, interval="prediction", level=0.9, allow_new_levels=True)
    half = 1.6448536269514722 * np.sqrt(fit.sigma2 * (var + 1))
    np.testing.assert_allclose(pi["upr"] - pi["fit"], half, rtol=1e-9)
    np.testing.assert_allclose(pi["fit"] - pi["lwr"], half, rtol=1e-9)


def test_partial_re_form_se():
    fit = ref_fit("penicillin_w_ml")
    nd = pd.DataFrame({"plate": ["a", "b", "zz", "x"], "sample": ["A", "F", "B", "new"]})
    A, prior = _dense_rows(fit, nd, only=("plate",))
    var = np.einsum("ni,ij,nj->n", A, np.linalg.inv(_dense_M(fit)), A) + prior
    out = fit.predict(nd, re_form="~(1 | plate)", se_fit=True, allow_new_levels=True)
    np.testing.assert_allclose(out["se_fit"], np.sqrt(fit.sigma2 * var), rtol=1e-9)


def test_population_se_is_vcov_and_fitted_se_is_leverage():
    fit = ref_fit("sleep_reml")
    nd = newdata()
    X = np.c_[np.ones(len(nd)), nd["Days"]]
    se = fit.predict(nd, re_form="~0", se_fit=True)["se_fit"]
    np.testing.assert_allclose(se, np.sqrt(np.einsum("ni,ij,nj->n", X, fit.vcov.to_numpy(), X)),
                               rtol=1e-10)
    # on the fitted rows: var(ŷ_i)/σ² = h_i / w_i
    fw = ref_fit("sleep_w_reml")
    out = fw.predict(se_fit=True, interval="confidence")
    np.testing.assert_allclose(out["se_fit"] ** 2 / fw.sigma2,
                               fw.hatvalues() / fw.weights, rtol=1e-9)
    assert (out["lwr"] < out["fit"]).all() and (out["upr"] > out["fit"]).all()


def test_interval_arguments_checked():
    fit = ref_fit("sleep_reml")
    with pytest.raises(ValueError, match="interval must be"):
        fit.predict(newdata(), interval="credible")
    with pytest.raises(ValueError, match="level must be"):
        fit.predict(newdata(), interval="confidence", level=95)


def _simulate(rng, G=30, m=8):
    g = np.repeat(np.arange(G), m)
    x = rng.uniform(0, 4, G * m)
    b0 = rng.normal(0, 1.0, G)
    b1 = rng.normal(0, 0.3, G)
    y = 1 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(0, 1.0, G * m)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)}), b0, b1


@pytest.mark.slow
def test_coverage_by_simulation():
    """Nominal 95%: confidence intervals for x'β + z'b of every group (and a new one) and
    prediction intervals for a new observation cover 93-97% over replicated data
    (150 replicates of 30 groups × 8 rows: ~10 s)."""
    rng = np.random.default_rng(20261125)
    hits_c, hits_p, hits_new = [], [], []
    for rep in range(150):
        d, b0, b1 = _simulate(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = pylmem.lmer("y ~ x + (x | g)", d)
        G = len(b0)
        xn = rng.uniform(0, 4, G)
        nd = pd.DataFrame({"x": xn, "g": np.arange(G).astype(str)})
        mu = 1 + 0.5 * xn + b0 + b1 * xn
        ci = fit.predict(nd, interval="confidence")
        pi = fit.predict(nd, interval="prediction")
        ynew = mu + rng.normal(0, 1.0, G)
        hits_c.append(((ci["lwr"] <= mu) & (mu <= ci["upr"])).to_numpy())
        hits_p.append(((pi["lwr"] <= ynew) & (ynew <= pi["upr"])).to_numpy())
        # a group not in the fit: its mean has the prior variance of b
        bn0, bn1 = rng.normal(0, 1.0), rng.normal(0, 0.3)
        ndn = pd.DataFrame({"x": [2.0], "g": ["new"]})
        c = fit.predict(ndn, interval="confidence", allow_new_levels=True)
        mun = 1 + 0.5 * 2.0 + bn0 + bn1 * 2.0
        hits_new.append(bool(c["lwr"].iloc[0] <= mun <= c["upr"].iloc[0]))
    cov_c, cov_p = np.mean(hits_c), np.mean(hits_p)
    assert 0.93 <= cov_c <= 0.97, cov_c
    assert 0.93 <= cov_p <= 0.97, cov_p
    assert 0.85 <= np.mean(hits_new) <= 1.0     # 150 draws: a loose check of the prior term


def test_large_rest_block_path_agrees(monkeypatch):
    """Rest blocks too large for the dense (L_R L_R')⁻¹ use per-block solves: same leverages."""
    import pylmem.postfit.intervals as I

    fit = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pylmem.datasets.load("Penicillin"))
    h = fit.hatvalues().to_numpy()
    monkeypatch.setattr(I, "_DENSE_S_MAX", 0)
    fit.__dict__.pop("_intervals_cache", None)
    np.testing.assert_allclose(fit.hatvalues(), h, rtol=1e-12)
    assert h.sum() == pytest.approx(fit.hat_trace, rel=1e-12)


def test_per_level_path_equals_general_and_dense(monkeypatch):
    """Vector first term (q0 = 2) crossed with a scalar term: the per-level operators, the
    sparse-product path and the dense M⁻¹ agree (new levels of either factor included)."""
    import pylmem.postfit.intervals as I

    rng = np.random.default_rng(5)
    g = rng.integers(0, 25, 400)
    h = rng.integers(0, 12, 400)
    x = rng.uniform(0, 5, 400)
    y = (1 + 0.5 * x + rng.normal(0, 1, 25)[g] + rng.normal(0, 0.4, 25)[g] * x
         + rng.normal(0, 1.5, 12)[h] + rng.normal(0, 1, 400))
    d = pd.DataFrame({"Reaction": y, "Days": x, "Subject": g.astype(str), "day": h.astype(str)})
    fit = pylmem.lmer("Reaction ~ Days + (Days | Subject) + (1 | day)", d)
    assert not fit.is_singular and fit.design.terms[0].q == 2
    nd = pd.DataFrame({"Days": [0, 3, 4.5, 4, 2], "Subject": ["3", "7", "999", "12", "998"],
                       "day": ["0", "3", "9", "11", "12"]})
    fast = fit.predict(nd, se_fit=True, allow_new_levels=True)["se_fit"].to_numpy()
    h_fast = fit.hatvalues().to_numpy()
    monkeypatch.setattr(I, "_LEVEL_OPS_MAX", 0)
    fit.__dict__.pop("_intervals_cache", None)
    np.testing.assert_allclose(fit.predict(nd, se_fit=True, allow_new_levels=True)["se_fit"],
                               fast, rtol=1e-10)
    np.testing.assert_allclose(fit.hatvalues(), h_fast, rtol=1e-10, atol=1e-14)
    assert h_fast.sum() == pytest.approx(fit.hat_trace, rel=1e-10)
    # dense: Z columns per term, in the design's term order
    blocks, prior = [], np.zeros(len(nd))
    for t, T in zip(fit.design.terms, fit.factor.T):
        g = t.group[0]
        Zn = np.column_stack([np.ones(len(nd))] + ([nd["Days"].to_numpy(float)] if t.q == 2 else []))
        codes = pd.Index(t.levels).get_indexer(nd[g].astype(str))
        Bk = np.zeros((len(nd), t.n_levels * t.q))
        for i, c in enumerate(codes):
            if c >= 0:
                Bk[i, c * t.q:(c + 1) * t.q] = Zn[i] @ T
            else:
                prior[i] += np.sum((Zn[i] @ T) ** 2)
        blocks.append(Bk)
    A = np.hstack(blocks + [np.c_[np.ones(len(nd)), nd["Days"]]])
    var = np.einsum("ni,ij,nj->n", A, np.linalg.inv(_dense_M(fit)), A) + prior
    np.testing.assert_allclose(fast, np.sqrt(fit.sigma2 * var), rtol=1e-9)
