"""glmer against lme4 1.1-31 (tests/reference/make_glmer_refs.R: best of three optimisers,
tolPwrss = 1e-12), exact integration for AGQ, invariances and bad input."""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem import glmer
from pylmem.datasets import load

REF = Path(__file__).parent / "reference"
REFS = json.loads((REF / "glmer_refs.json").read_text())
CASES = REFS["cases"]
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"

# standard errors come from finite-difference Hessians (lme4's and ours): agree to ~1e-3
SE_RTOL = {"cbpp_cloglog": 3e-3, "sim_offset_laplace": 5e-3}


def _data(name):
    ds = REFS["datasets"][name]
    d = pd.read_csv(REF / ds["file"], dtype={f: str for f in ds.get("factors", {})})
    for f, lv in ds.get("factors", {}).items():
        d[f] = pd.Categorical(d[f], categories=lv)
    return d


_FITS = {}


def _fit(case):
    if case not in _FITS:
        c = CASES[case]
        kw = {"weights": c["weights"]} if c.get("weights") else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[case] = glmer(c["formula"], _data(c["data"]), family=c["family"], link=c["link"],
                                nagq=c["nagq"], **kw)
    return _FITS[case]


def _full_loglik(c):
    """lme4's logLik with every constant (lme4 omits the saturated model's for nAGQ > 1)."""
    return c["loglik_full"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_fit(case):
    c = CASES[case]
    m = _fit(case)
    # at lme4's best optimum or above it (never below by more than rounding)
    assert m.loglik >= _full_loglik(c) - 2e-8
    assert m.loglik - _full_loglik(c) < 1e-4
    exact = c.get("loglik_laplace_final_weights")
    if exact is not None and c["nagq"] == 1:
        # lme4's Laplace with the weights at its final modes: the same number to rounding
        assert abs(m.loglik - exact) < 1e-7
    fe = pd.Series(c["fixef"])
    np.testing.assert_allclose(m.fixef[fe.index], fe, atol=5e-5 * (1 + np.abs(fe).max()))
    th = np.array(list(c["theta"].values()))
    np.testing.assert_allclose(m.theta, th, atol=2e-4)
    se = pd.Series(c["fixef_se"])
    np.testing.assert_allclose(m.stderr[se.index], se, rtol=SE_RTOL.get(case, 1e-3))
    assert m.n_obs == c["n_obs"]
    assert m.df_resid == c["df_resid"]
    assert m.converged


@pytest.mark.parametrize("case", [k for k in sorted(CASES) if CASES[k]["nagq"] == 1])
def test_reference_rows(case):
    c = CASES[case]
    m = _fit(case)
    tol = 2e-4
    np.testing.assert_allclose(m.fitted.to_numpy()[:10], c["fitted_head10"], atol=tol)
    for kind, vals in c["residuals_head10"].items():
        np.testing.assert_allclose(m.residuals_of(kind).to_numpy()[:10], vals, atol=tol * 10,
                                   err_msg=kind)
    np.testing.assert_allclose(m.predict().to_numpy()[:10], c["predict_link_head10"], atol=tol * 10)
    np.testing.assert_allclose(m.predict(type="response").to_numpy()[:10],
                               c["predict_response_head10"], atol=tol)
    for name, r in c["ranef"].items():
        re = m.ranef[name]
        for col, vals in r["values"].items():
            np.testing.assert_allclose(re.loc[r["levels"], col], vals, atol=5e-4)
        if "condvar" in r:
            cv = m.ranef_condvar()[name]
            idx = [list(re.index).index(lv) for lv in r["levels"]]
            ref = np.asarray(r["condvar"], float).reshape(len(idx), -1)[:, 0]
            np.testing.assert_allclose(cv[idx, 0, 0], ref, rtol=2e-3, atol=1e-10)


def test_agq_matches_exact_integration():
    """AGQ with many points reaches the exact marginal likelihood (R's integrate()); 9
    points equal R's own AGQ rule at the same parameters to 1e-9."""
    m25 = _fit("cbpp_agq25")
    c = CASES["cbpp_agq25"]
    assert abs(m25.loglik - c["exact_loglik"]) < 2e-6
    m9 = _fit("cbpp_agq9")
    assert abs(m9.loglik - CASES["cbpp_agq9"]["integration"]["agq9"]) < 1e-7
    # Laplace < AGQ, and the Laplace deviance is the one-point rule
    lap = _fit("cbpp_laplace")
    assert lap.loglik < m9.loglik
    assert abs(lap.loglik - CASES["cbpp_laplace"]["integration"]["agq1"]) < 1e-8


def test_cbpp_anova_drop1_confint():
    ex = REFS["cbpp_extras"]
    m1 = _fit("cbpp_laplace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m0 = glmer("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", _data("cbpp"))
    assert abs(m0.loglik - ex["m0"]["loglik"]) < 1e-6
    tab = m1.anova(m0)
    ref = ex["anova"]["values"]
    np.testing.assert_allclose(tab["Chisq"].to_numpy()[1], ref["Chisq"][1], rtol=1e-6)
    np.testing.assert_allclose(tab["Pr(>Chisq)"].to_numpy()[1], ref["Pr(>Chisq)"][1], rtol=1e-5)
    d1 = m1.drop1()
    np.testing.assert_allclose(d1.loc["period", "LRT"], ex["drop1"]["values"]["LRT"][1], rtol=1e-6)
    ci = m1.confint("Wald")
    np.testing.assert_allclose(ci.iloc[:, 0], ex["confint_wald"]["lower"][1:], atol=2e-4)
    np.testing.assert_allclose(ci.iloc[:, 1], ex["confint_wald"]["upper"][1:], atol=2e-4)
    q = m1.summary().resid_quantiles.to_numpy()
    np.testing.assert_allclose(q, list(ex["scaled_residual_quantiles"].values()), atol=2e-4)


def test_summary_layout():
    m = _fit("cbpp_laplace")
    s = str(m.summary(data_name="cbpp"))
    assert " Family: binomial  ( logit )" in s
    assert "Laplace" in s and "z value" in s and "Pr(>|z|)" in s
    assert "Residual" not in s
    assert "Number of obs: 56, groups:  herd, 15" in s
    assert "   Data: cbpp" in s
    s9 = str(_fit("cbpp_agq9").summary())
    assert "nAGQ = 9" in s9
    assert "glmerMod" in repr(m)


def test_proportion_and_cbind_agree():
    a, b = _fit("cbpp_laplace"), _fit("cbpp_prop_laplace")
    assert abs(a.loglik - b.loglik) < 1e-9
    np.testing.assert_allclose(a.fixef, b.fixef, atol=1e-7)


# ------------------------------------------------------------------ invariances

def _cbpp():
    return load("cbpp")


def test_row_order_and_id_relabelling():
    d = _cbpp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = glmer(CBPP, d)
        perm = d.sample(frac=1.0, random_state=3)
        perm["herd"] = "h" + perm["herd"].astype(str)
        other = glmer(CBPP, perm)
    assert abs(base.loglik - other.loglik) < 1e-8
    np.testing.assert_allclose(base.fixef, other.fixef, atol=1e-6)
    # fitted values follow the data's rows
    np.testing.assert_allclose(other.fitted.loc[d.index], base.fitted.loc[d.index], atol=1e-6)


def test_covariate_scaling_reparametrises():
    d = _data("sim_binary")
    d2 = d.assign(x=d["x"] * 1000.0 + 50.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = glmer("y ~ x + (1 | g)", d)
        b = glmer("y ~ x + (1 | g)", d2)
    assert abs(a.loglik - b.loglik) < 1e-7
    np.testing.assert_allclose(b.fixef["x"] * 1000.0, a.fixef["x"], rtol=1e-5)
    np.testing.assert_allclose(b.stderr["x"] * 1000.0, a.stderr["x"], rtol=1e-3)


def test_dense_and_sparse_paths_agree():
    """The dense-rest (two-level) and CHOLMOD paths give the same optimum."""
    from pylmem.estimation.glmm import fit_glmm
    from pylmem.numerics.pirls import PirlsProblem, _MultiTerm, _TwoLevel

    m = _fit("sim_nested_laplace")
    d = m.design
    dense = PirlsProblem(d.y, d.weights, d.offset, d.X, d.terms, m.family)
    sparse = PirlsProblem(d.y, d.weights, d.offset, d.X, d.terms, m.family, force_sparse=True)
    assert isinstance(dense.blocks, _TwoLevel) and isinstance(sparse.blocks, _MultiTerm)
    th, b = m.theta + 0.1, m.beta
    r1, r2 = dense.pirls(th, b), sparse.pirls(th, b)
    assert abs(r1.laplace - r2.laplace) < 1e-9
    o = fit_glmm(sparse, nagq=1)
    assert abs(-0.5 * o.deviance - m.loglik) < 1e-7


def test_nagq0_then_laplace_ordering():
    assert _fit("cbpp_nagq0").loglik <= _fit("cbpp_laplace").loglik + 1e-9


def test_poisson_offset_predict_newdata():
    m = _fit("sim_offset_laplace")
    d = _data("sim_offset")
    new = d.iloc[:5].copy()
    p = m.predict(new)
    np.testing.assert_allclose(p.to_numpy(), m.predict().to_numpy()[:5], atol=1e-10)
    new2 = new.assign(t=new["t"] * 2)
    np.testing.assert_allclose(m.predict(new2).to_numpy(), p.to_numpy() + np.log(2), atol=1e-10)
    pop = m.predict(new, re_form="~0", type="response")
    assert (pop > 0).all()
    newlev = new.assign(g="no-such-level")
    with pytest.raises(ValueError, match="not in the fit"):
        m.predict(newlev)
    m.predict(newlev, allow_new_levels=True)


def test_simulate_bootstrap_and_overdispersion():
    m = _fit("cbpp_laplace")
    sims = m.simulate(3, seed=1)
    assert sims.shape == (56, 3) and np.all((sims >= 0) & (sims <= 1))
    bs = m.bootstrap(4, seed=2)
    assert bs.estimates.shape == (4 - bs.n_failed, 5)
    od = m.overdispersion()
    assert od["df"] == 51 and od["chisq"] > 0


def test_binary_factor_and_logical_response():
    d = _data("sim_binary")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = glmer("y ~ x + (1 | g)", d)
        b = glmer("yy ~ x + (1 | g)", d.assign(yy=d["y"].astype(bool)))
        c = glmer("yy ~ x + (1 | g)", d.assign(yy=np.where(d["y"] == 1, "yes", "no")))
    assert abs(a.loglik - b.loglik) < 1e-10 and abs(a.loglik - c.loglik) < 1e-10


def test_polars_input():
    pl = pytest.importorskip("polars")
    d = _cbpp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = glmer(CBPP, d)
        b = glmer(CBPP, pl.from_pandas(d))
    assert abs(a.loglik - b.loglik) < 1e-10


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("mutate, family, match", [
    (lambda d: d.assign(incidence=-d["incidence"]), "binomial", "negative"),
    (lambda d: d.assign(incidence=d["incidence"] + 0.5), "binomial", "non-integer"),
])
def test_bad_cbind(mutate, family, match):
    with pytest.raises(ValueError, match=match):
        glmer(CBPP, mutate(_cbpp()), family=family)


def test_bad_responses():
    d = _data("sim_binary")
    with pytest.raises(ValueError, match="outside"):
        glmer("z ~ x + (1 | g)", d.assign(z=d["y"] * 2.0), family="binomial")
    with pytest.raises(ValueError, match="every one"):
        glmer("z ~ x + (1 | g)", d.assign(z=0.0), family="binomial")
    with pytest.raises(ValueError, match="negative"):
        glmer("z ~ x + (1 | g)", d.assign(z=-1.0), family="poisson")
    with pytest.raises(ValueError, match="non-integer"):
        glmer("z ~ x + (1 | g)", d.assign(z=1.5), family="poisson")
    with pytest.raises(ValueError, match="not supported"):
        glmer("y ~ x + (1 | g)", d, family="gamma-ish")
    with pytest.raises(ValueError, match="link"):
        glmer("y ~ x + (1 | g)", d, family="binomial", link="log")
    with pytest.raises(ValueError, match="pylmem.lmer"):
        glmer("y ~ x + (1 | g)", d, family="gaussian")
    with pytest.raises(ValueError, match="proportion"):
        glmer("z ~ x + (1 | g)", d.assign(z=0.5, w=1.0), weights="w")


def test_bad_nagq():
    d = _data("sim_nested")
    with pytest.raises(ValueError, match="single"):
        glmer("y ~ x + (1 | a/b)", d, nagq=5)
    with pytest.raises(ValueError, match="integer"):
        glmer("y ~ x + (1 | a/b)", d, nagq=1.5)
    with pytest.raises(ValueError, match="integer"):
        glmer("y ~ x + (1 | a/b)", d, nagq=-1)


def test_separation_is_reported():
    d = _data("sim_binary").copy()
    d["f"] = np.where(np.arange(len(d)) % 7 == 0, "b", "a")
    d.loc[d["f"] == "b", "y"] = 1
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = glmer("y ~ x + f + (1 | g)", d)
    assert any("separation" in str(x.message) and "fb" in str(x.message) for x in w)
    assert any("separation" in s for s in m.warnings)


def test_large_linear_predictor_does_not_overflow():
    d = _data("sim_offset")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = glmer("y ~ x + (1 | g)", d.assign(x=d["x"] * 1e-3), family="poisson")
    assert np.isfinite(m.loglik)
    from pylmem.model.families import get_family
    for fam, link in (("binomial", "logit"), ("binomial", "probit"), ("binomial", "cloglog"),
                      ("poisson", "log")):
        f = get_family(fam, link)
        mu = f.linkinv(np.array([-800.0, 0.0, 800.0]))
        assert np.all(np.isfinite(mu)) and np.all(mu > 0)
        assert np.all(np.isfinite(f.mu_eta(np.array([-800.0, 800.0]))))


def test_dask_frame_refused():
    dd = pytest.importorskip("dask.dataframe")
    ddf = dd.from_pandas(_cbpp(), npartitions=2)
    with pytest.raises(NotImplementedError, match="in memory"):
        glmer(CBPP, ddf)


def test_exported():
    assert pylmem.glmer is glmer
    assert "glmer" in pylmem.__all__


def test_cli_family(capsys):
    from pylmem.io.cli import main

    rc = main(["fit", "cbpp", CBPP, "--family", "binomial", "--json", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads(out)
    ref = CASES["cbpp_laplace"]
    assert res["family"] == "binomial" and res["link"] == "logit" and res["nagq"] == 1
    assert res["loglik"] >= ref["loglik"] - 2e-8
    rc = main(["fit", "cbpp", CBPP, "--family", "binomial", "--nagq", "9"])
    out = capsys.readouterr().out
    assert rc == 0 and "nAGQ = 9" in out and "Family: binomial" in out
    rc = main(["fit", "cbpp", CBPP, "--family", "binomial", "--reml"])
    assert rc != 0
    assert "maximum likelihood" in capsys.readouterr().err


def test_vector_agq_matches_brute_force_integration():
    """Quadrature for a vector-valued term (q = 2), beyond lme4: the AGQ log-likelihood
    converges to the integral computed on a fine grid group by group (15 points: 1e-8), and
    a fit with nagq = 3 is a better approximation than Laplace."""
    from scipy.special import logsumexp

    d = _data("sim_slope")
    m = _fit("sim_slope_laplace")
    prob, des = m.prob, m.design
    T = prob.split_theta(m.theta)[0]
    t = des.terms[0]
    fixed = des.X @ m.beta
    h = 0.05
    grid = np.arange(-6, 6 + h / 2, h)
    U = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    logprior = -0.5 * (U ** 2).sum(1) - np.log(2 * np.pi) + 2 * np.log(h)
    exact = 0.0
    for j in range(t.n_levels):
        rows = np.flatnonzero(t.codes == j)
        eta = fixed[rows, None] + (t.Z[rows] @ T) @ U.T
        mu = m.family.linkinv(eta)
        lp = m.family.log_density(des.y[rows, None], mu, prob.wt[rows, None]).sum(0)
        exact += float(logsumexp(lp + logprior))
    r = prob.pirls(m.theta, m.beta, m.opt.res.u)
    err = [abs(-0.5 * (r.laplace if k == 1 else prob.agq_deviance(m.theta, r, k)) - exact)
           for k in (1, 5, 15)]
    assert err[0] > err[1] > err[2] and err[2] < 1e-7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m3 = glmer("y ~ x + (x | g)", d, nagq=3)
    assert m3.converged and m3.nagq == 3 and np.isfinite(m3.stderr).all()
    assert abs(m3.loglik - m.loglik) < 1.0


def test_binned_residual_plot(tmp_path):
    m = _fit("sim_binary_laplace")
    b = m.binned_residuals()
    assert b["n"].sum() == m.n_obs and len(b) == int(np.sqrt(m.n_obs))
    # the bins' residual means are the data's: their weighted sum is Σ (y − μ̂)
    np.testing.assert_allclose((b["residual"] * b["n"]).sum(), m.residuals_of("response").sum(),
                               atol=1e-9)
    fig = m.plot_binned_residuals(path=tmp_path / "binned.png")
    assert (tmp_path / "binned.png").stat().st_size > 1000 and fig.axes
    with pytest.raises(ValueError, match="n_bins"):
        m.binned_residuals(0)


def test_profile_confint_against_lme4():
    """lme4's profile intervals (tests/reference/make_glmer_profile_refs.R) interpolate the
    profile by splines; ours find the roots: they agree to ~2e-4."""
    ref = json.loads((REF / "glmer_profile_refs.json").read_text())
    ci = _fit("cbpp_laplace").confint("profile")
    np.testing.assert_allclose(ci.iloc[:, 0], ref["lower"], atol=5e-4)
    np.testing.assert_allclose(ci.iloc[:, 1], ref["upper"], atol=5e-4)
    assert list(ci.index) == ref["rows"]


def test_batched_bootstrap_equals_single_refits():
    """The lock-step refits of a one-term scalar model reach the optimum each replicate's own
    refit reaches (deviance to 1e-8)."""
    from pylmem.estimation.glmm_batch import fit_replicates
    from pylmem.estimation.glmm_fitting import refit_glmm
    from pylmem.inference.glmm_tests import glmm_simulate

    m = _fit("cbpp_laplace")
    Y = glmm_simulate(m, 12, seed=11)[m.design.order].T
    se = np.sqrt(np.diag(m.vcov_conditional))
    th, be, dev, ok = fit_replicates(m.prob, Y, m.theta, m.beta, se, prob_u0=m.opt.res.u)
    assert ok.sum() >= 10
    for s in np.flatnonzero(ok):
        r = refit_glmm(m, y=Y[s])
        assert dev[s] <= r.deviance + 1e-8
        assert abs(dev[s] - r.deviance) < 1e-6
        np.testing.assert_allclose(be[s], r.beta, atol=1e-4)
    bs = m.bootstrap(30, seed=3)
    assert len(bs.estimates) + bs.n_failed == 30
    ci = bs.confint()
    assert (ci.iloc[:, 0] < ci.iloc[:, 1]).all()


def test_glmerfit_docstrings():
    import inspect

    for name, obj in inspect.getmembers(pylmem.GlmerFit):
        if name.startswith("_") or name == "data_name":
            continue
        f = obj.fget if isinstance(obj, property) else obj
        doc = inspect.getdoc(f) or ""
        assert doc.strip(), name
        if callable(obj) and not isinstance(obj, property):
            if [p for p in inspect.signature(obj).parameters if p != "self"]:
                assert "Parameters\n----------" in doc, name
            assert "Returns\n-------" in doc, name


def test_double_bar_against_lme4():
    ref = json.loads((REF / "glmer_profile_refs.json").read_text())["double_bar"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = glmer("y ~ x + (x || g)", _data("sim_slope"))
    assert m.loglik >= ref["loglik"] - 1e-8 and m.loglik - ref["loglik"] < 1e-5
    np.testing.assert_allclose(m.theta, ref["theta"], atol=1e-4)
    np.testing.assert_allclose(m.fixef, ref["fixef"], atol=1e-5)
    assert list(m.varcorr["grp"]) == ["g", "g.1"]
