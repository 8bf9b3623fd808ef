"""Satterthwaite / Kenward–Roger df, F tests, confint, profiles, ranova, drop1.

Reference values: tests/reference/inference_refs.json, made by
tests/reference/make_inference_refs.R (lmerTest 3.1-3, pbkrtest 0.5.2, lme4 1.1-31).
Tolerances: df, t, p to 1e-3 relative (p only where p > 1e-12: below that the
relative error of a tail probability is the df error times |log p|, compared on log p);
F and DenDF to 1e-3; profile interval ends to 1% of the interval width.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.inference import ddf as I
from pylmem.inference import kenward_roger as KR
from pylmem.datasets import load
from pylmem.inference.ftests import single_anova

REFS = json.loads((Path(__file__).parent / "reference" / "inference_refs.json").read_text())
MODELS = [k for k in REFS if k != "provenance"]
FACTORS = {"cake": ["temperature"]}


def tab(t) -> pd.DataFrame:
    """A table as stored by jsonlite (one-row tables come unboxed)."""
    rows = [t["rows"]] if isinstance(t["rows"], str) else t["rows"]
    vals = t["values"] if isinstance(t["rows"], list) else [[v] for v in t["values"]]
    return pd.DataFrame({c: np.asarray(v, dtype=float) for c, v in zip(t["columns"], vals)},
                        index=rows)


_FITS = {}


def fit_of(name):
    if name not in _FITS:
        r = REFS[name]
        data = pd.DataFrame(r["data_rows"]) if r["data"] == "Dyestuff2" else load(r["data"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[name] = pylmem.lmer(r["formula"], data, reml=r["reml"],
                                      factors=FACTORS.get(r["data"], ()))
    return _FITS[name]


def close(got, ref, rtol, what):
    got, ref = np.asarray(got, float), np.asarray(ref, float)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=0, err_msg=what)


def close_p(got, ref, what):
    got, ref = np.asarray(got, float), np.asarray(ref, float)
    big = ref > 1e-12
    close(got[big], ref[big], 1e-3, what)
    tiny = ~big & (ref > 1e-300)
    np.testing.assert_allclose(np.log(got[tiny]), np.log(ref[tiny]), rtol=1e-2, err_msg=what)
    assert np.all(got[~big & ~tiny] < 1e-290), what


# ------------------------------------------------------------------ Satterthwaite
@pytest.mark.parametrize("name", MODELS)
def test_satterthwaite_coef_table_matches_lmertest(name):
    ref = tab(REFS[name]["coef_satt"])
    got = fit_of(name).coef_table(ddf="Satterthwaite")
    assert list(got.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    assert list(got.index) == list(ref.index)
    close(got["Estimate"], ref["Estimate"], 1e-5, "Estimate")
    close(got["Std. Error"], ref["Std. Error"], 1e-4, "Std. Error")
    close(got["df"], ref["df"], 1e-3, "df")
    close(got["t value"], ref["t value"], 1e-3, "t")
    close_p(got["Pr(>|t|)"], ref["Pr(>|t|)"], "p")


@pytest.mark.parametrize("name", MODELS)
def test_vcov_varpar_matches_lmertest(name):
    """A = 2 H⁻¹, H the Hessian of d(θ, σ): lmerTest's vcov_varpar (numDeriv)."""
    A = np.asarray(REFS[name]["vcov_varpar"], float).reshape(-1, len(fit_of(name).theta) + 1)
    got = I.varpar_info(fit_of(name)).vcov_varpar
    assert np.abs(got - A).max() <= 1e-3 * np.abs(A).max()


def test_ddf_none_is_lme4_table():
    f = fit_of("sleep_reml")
    t = f.coef_table()
    assert list(t.columns) == ["Estimate", "Std. Error", "t value"]
    close(t["t value"], f.tvalues, 1e-12, "t")


def _devfun_vp(fit, phi):
    """d(θ, σ) written out densely: −2 log-likelihood (REML: restricted) at β̂(θ)."""
    d = fit.design
    theta, sigma = phi[:-1], phi[-1]
    Ts = fit.dev.split_theta(theta)
    Z = np.hstack([t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T)
                   for t, T in zip(d.terms, Ts)])
    n, p = d.X.shape
    V = sigma ** 2 * (Z @ Z.T + np.eye(n))
    Vi = np.linalg.inv(V)
    XtViX = d.X.T @ Vi @ d.X
    beta = np.linalg.solve(XtViX, d.X.T @ Vi @ d.y)
    e = d.y - d.X @ beta
    out = np.linalg.slogdet(V)[1] + e @ Vi @ e + n * np.log(2 * np.pi)
    if fit.reml:
        out += np.linalg.slogdet(XtViX)[1] - p * np.log(2 * np.pi)
    return out


@pytest.mark.parametrize("name", ["sleep_reml", "pastes_ml"])
def test_hessian_and_jacobian_against_brute_force(name):
    """The Hessian (analytic in σ, differences in θ through the factor) against central
    differences of a dense n × n likelihood; ∂Cov(β̂)/∂φ against differences of the
    dense GLS covariance."""
    fit = fit_of(name)
    info = I.varpar_info(fit)
    phi = info.varpar
    k = len(phi)
    h = 1e-3 * np.maximum(np.abs(phi), 0.05)
    f = lambda x: _devfun_vp(fit, x)  # noqa: E731
    H = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.zeros(k), np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            H[i, j] = (f(phi + ei + ej) - f(phi + ei - ej) - f(phi - ei + ej)
                       + f(phi - ei - ej)) / (4 * h[i] * h[j])
    assert np.abs(info.hessian - H).max() <= 1e-4 * np.abs(H).max()
    d = fit.design

    def covb(x):
        Ts = fit.dev.split_theta(x[:-1])
        Z = np.hstack([t.sparse().toarray() @ np.kron(np.eye(t.n_levels), T)
                       for t, T in zip(d.terms, Ts)])
        V = x[-1] ** 2 * (Z @ Z.T + np.eye(len(d.y)))
        return np.linalg.inv(d.X.T @ np.linalg.solve(V, d.X))

    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        J = (covb(phi + e) - covb(phi - e)) / (2 * h[i])
        assert np.abs(info.jac[i] - J).max() <= 1e-4 * max(np.abs(J).max(), 1e-12)


# ------------------------------------------------------------------ Kenward–Roger
REML = [m for m in MODELS if REFS[m]["reml"]]


@pytest.mark.parametrize("name", REML)
def test_kenward_roger_matches_pbkrtest(name):
    r = REFS[name]
    fit = fit_of(name)
    kr = KR.vcov_adj(fit)
    V = np.asarray(r["vcov_adj"], float).reshape(kr.PhiA.shape)
    assert np.abs(kr.PhiA - V).max() <= 1e-4 * np.abs(V).max()
    ref = tab(r["coef_kr"])
    got = fit.coef_table(ddf="Kenward-Roger")
    close(got["Std. Error"], ref["Std. Error"], 1e-4, "KR se")
    close(got["df"], ref["df"], 1e-3, "KR df")
    close(got["t value"], ref["t value"], 1e-3, "KR t")
    close_p(got["Pr(>|t|)"], ref["Pr(>|t|)"], "KR p")
    if "krmodcomp_last" in r:
        L = np.zeros((1, len(fit.beta)))
        L[0, -1] = 1
        res = KR.kr_adjust(kr, L, fit.beta)
        ref = r["krmodcomp_last"]
        close([res["F"], res["ddf"], res["scaling"]], [ref["F"], ref["ddf"], ref["scaling"]],
              1e-3, "KRmodcomp")


@pytest.mark.parametrize("name", ["sleep_reml", "pastes_reml", "cake_reml"])
def test_kenward_roger_woodbury_equals_dense(name):
    """P_r, Q_rs, tr(Σ⁻¹G_rΣ⁻¹G_s) from m × m Woodbury identities = pbkrtest's dense
    n × n computation."""
    fit = fit_of(name)
    P, Q, K = KR._kr_parts(fit)
    P2, Q2, K2 = KR._kr_parts_dense(fit)
    for a, b in zip(P, P2):
        assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max()
    for key in Q2:
        assert np.abs(Q[key] - Q2[key]).max() <= 1e-9 * np.abs(Q2[key]).max()
    assert np.abs(K - K2).max() <= 1e-9 * np.abs(K2).max()


def test_kenward_roger_needs_reml():
    with pytest.raises(ValueError, match="only available for REML"):
        fit_of("sleep_ml").coef_table(ddf="Kenward-Roger")


def test_bad_ddf_is_a_clear_error():
    with pytest.raises(ValueError, match="ddf must be"):
        fit_of("sleep_reml").coef_table(ddf="Wald")


# ------------------------------------------------------------------ F tests
ANOVA = [(m, key) for m in MODELS for key in ("anova3_satt", "anova1_satt", "anova3_kr")
         if key in REFS[m]]


@pytest.mark.parametrize("name,key", ANOVA)
def test_anova_matches_lmertest(name, key):
    ref = tab(REFS[name][key])
    typ = 3 if "anova3" in key else 1
    ddf = "Kenward-Roger" if key.endswith("kr") else "Satterthwaite"
    got = pylmem.anova(fit_of(name), type=typ, ddf=ddf)
    assert list(got.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    assert list(got.index) == list(ref.index)
    close(got["NumDF"], ref["NumDF"], 0, "NumDF")
    close(got["DenDF"], ref["DenDF"], 1e-3, "DenDF")
    close(got["F value"], ref["F value"], 1e-3, "F")
    close(got["Sum Sq"], ref["Sum Sq"], 1e-3, "Sum Sq")
    close_p(got["Pr(>F)"], ref["Pr(>F)"], "Pr(>F)")


def test_anova_print_layout():
    s = str(pylmem.anova(fit_of("cake_reml")))
    lines = s.splitlines()
    assert lines[0] == "Type III Analysis of Variance Table with Satterthwaite's method"
    assert lines[1].split() == ["Sum", "Sq", "Mean", "Sq", "NumDF", "DenDF", "F", "value", "Pr(>F)"]
    assert lines[2].split()[:5] == ["recipe", "10.19", "5.09", "2", "42"]
    assert "20.5199" in lines[3] and "<2e-16" in lines[3]
    assert str(single_anova(fit_of("cake_reml"), type="I")).startswith("Type I Analysis")


def test_anova_of_two_models_stays_lrt():
    res = pylmem.anova(fit_of("sleep_ml"), fit_of("sleep_ml"), names=["a", "b"])
    assert "Chisq" in res.columns


# ------------------------------------------------------------------ ranova / drop1
@pytest.mark.parametrize("name", MODELS)
def test_ranova_matches_lmertest(name):
    ref = tab(REFS[name]["ranova"])
    got = pylmem.ranova(fit_of(name))
    assert list(got.index) == list(ref.index)
    close(got["npar"], ref["npar"], 0, "npar")
    close(got["logLik"], ref["logLik"], 1e-6, "logLik")
    np.testing.assert_allclose(got["LRT"].iloc[1:], ref["LRT"].iloc[1:], rtol=1e-3, atol=1e-6)
    close(got["Pr(>Chisq)"].iloc[1:], ref["Pr(>Chisq)"].iloc[1:], 1e-3, "p")


@pytest.mark.parametrize("name", [m for m in MODELS if "drop1" in REFS[m]])
def test_drop1_matches_lmertest(name):
    ref = tab(REFS[name]["drop1"])
    got = pylmem.drop1(fit_of(name))
    assert list(got.index) == list(ref.index)
    close(got["F value"], ref["F value"], 1e-3, "F")
    close(got["DenDF"], ref["DenDF"], 1e-3, "DenDF")


# ------------------------------------------------------------------ confint / profile
@pytest.mark.parametrize("name", MODELS)
def test_wald_confint(name):
    ref = tab(REFS[name]["confint_wald"])
    got = fit_of(name).confint(method="Wald")
    assert list(got.columns) == ["2.5 %", "97.5 %"]
    assert list(got.index) == list(ref.index)
    assert got.isna().equals(ref.isna())
    ok = ~ref.isna().to_numpy()
    close(got.to_numpy()[ok], ref.to_numpy()[ok], 1e-6, "Wald")


PROFILED = ["dyestuff_ml", "sleep_reml", "pastes_ml"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PROFILED)
def test_profile_confint_matches_lme4(name):
    """Interval ends to 1% of the interval width (a REML fit is profiled as lme4 does,
    on its ML refit)."""
    ref = tab(REFS[name]["confint_profile"])
    got = fit_of(name).confint(method="profile")
    assert list(got.index) == list(ref.index)
    width = (ref.iloc[:, 1] - ref.iloc[:, 0]).to_numpy()
    assert np.all(np.abs(got.to_numpy() - ref.to_numpy()) <= 0.01 * width[:, None])


def test_profile_confint_level_and_parm():
    ref = tab(REFS["dyestuff_ml"]["confint_profile90"])
    got = fit_of("dyestuff_ml").confint(method="profile", level=0.9, parm=[".sig01", ".sigma"])
    assert list(got.columns) == ["5 %", "95 %"]
    ref = ref.loc[[".sig01", ".sigma"]]
    width = (ref.iloc[:, 1] - ref.iloc[:, 0]).to_numpy()
    assert np.all(np.abs(got.to_numpy() - ref.to_numpy()) <= 0.01 * width[:, None])


def test_profile_zeta_matches_lme4():
    """ζ at lme4's own profile points (Dyestuff, ML) to 1e-3 absolute."""
    pr = REFS["dyestuff_ml"]["profile"]
    P = fit_of("dyestuff_ml").profile()
    prof = P.profiler
    for par, v, z in zip(pr["param"], pr["value"], pr["zeta"]):
        if abs(z) > 3:
            continue
        k = prof.names.index(par)
        assert abs(prof.zeta(k, v)[0] - z) < 1e-3, (par, v, z)
    assert set(P.frame[".par"].astype(str)) == {".sig01", ".sigma", "(Intercept)"}
    ci = P.confint()
    ref = tab(REFS["dyestuff_ml"]["confint_profile"])
    width = (ref.iloc[:, 1] - ref.iloc[:, 0]).to_numpy()
    assert np.all(np.abs(ci.loc[ref.index].to_numpy() - ref.to_numpy()) <= 0.02 * width[:, None])


def test_confint_boot_delegates_to_bootstrap():
    pytest.importorskip("pylmem.inference.bootstrap")
    got = fit_of("dyestuff_ml").confint(method="boot", nsim=20, seed=1)
    assert list(got.columns) == ["2.5 %", "97.5 %"]
    assert list(got.index) == [".sig01", ".sigma", "(Intercept)"]


def test_confint_errors():
    f = fit_of("dyestuff_ml")
    with pytest.raises(ValueError, match="method must be"):
        f.confint(method="bca")
    with pytest.raises(ValueError, match="unknown parameter"):
        f.confint(method="Wald", parm="foo")


# ------------------------------------------------------------------ edge cases
def test_boundary_fit_no_traceback():
    """Dyestuff2: the batch variance is estimated as 0. lmerTest and pbkrtest still give
    df = 29 (matched above); the profile interval of .sig01 starts at the boundary 0."""
    f = fit_of("dyestuff2_ml")
    assert f.is_singular
    ci = f.confint(method="profile", parm=".sig01")
    assert ci.iloc[0, 0] == 0.0 and ci.iloc[0, 1] > 0
    assert np.isfinite(f.coef_table("Satterthwaite")["df"]).all()
    assert np.isfinite(fit_of("dyestuff2_reml").coef_table("Kenward-Roger")["df"]).all()


def test_degenerate_hessian_warns():
    """lmerTest's rule: eigenvalues of H below -1e-8 or within 1e-8 of 0 are dropped from
    A = 2 H⁺, with a warning (never an error)."""
    H = np.diag([4.0, 1e-12, 2.0])
    A, msgs = I.hessian_to_vcov(H)
    np.testing.assert_allclose(A, np.diag([0.5, 0.0, 1.0]))
    assert msgs and "close to zero" in msgs[0]
    A, msgs = I.hessian_to_vcov(np.diag([4.0, -1.0]))
    assert "negative" in msgs[0] and A[1, 1] == 0


def test_unidentified_variance_parameters_no_traceback():
    """Two copies of the same term: only θ₁² + θ₂² is identified, the Hessian in (θ, σ) is
    (numerically) singular along the circle; df and F tests still come out finite."""
    d = load("sleepstudy").copy()
    d["g"] = d["Subject"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = pylmem.lmer("Reaction ~ Days + (1|Subject) + (1|g)", d)
        info = I.varpar_info(f)
        ev = np.linalg.eigvalsh(info.hessian)
        assert ev.min() < 1e-4 * ev.max()
        t = f.coef_table("Satterthwaite")
        assert np.all(np.isfinite(t["df"]))
        assert np.isfinite(pylmem.anova(f)["F value"]).all()


def test_df_invariant_to_row_order():
    d = load("sleepstudy")
    f1 = pylmem.lmer("Reaction ~ Days + (Days|Subject)", d)
    f2 = pylmem.lmer("Reaction ~ Days + (Days|Subject)", d.sample(frac=1, random_state=3))
    close(f1.coef_table("Satterthwaite")["df"], f2.coef_table("Satterthwaite")["df"], 1e-4, "df")


def test_summary_ddf_layout():
    s = str(fit_of("sleep_reml").summary(ddf="Satterthwaite"))
    assert s.splitlines()[0] == ("Linear mixed model fit by REML. t-tests use Satterthwaite's "
                                 "method ['lmerModLmerTest']")
    line = [ln for ln in s.splitlines() if ln.startswith("Days ")][0]
    assert line.split()[:4] == ["Days", "10.467", "1.546", "17.000"]   # lmerTest prints 17.000
    assert "3.26e-06" in line and line.rstrip().endswith("***")
    s = str(fit_of("sleep_reml").summary(ddf="Kenward-Roger"))
    assert "Kenward-Roger's method" in s.splitlines()[0]


def test_profile_plot(tmp_path):
    from pylmem.reports import plots

    P = fit_of("dyestuff_ml").profile()
    out = plots.plot_profile(P, tmp_path / "prof.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_cli_ddf_json(capsys):
    from pylmem.io.cli import main

    rc = main(["fit", "sleepstudy", "Reaction ~ Days + (Days|Subject)", "--ddf",
               "satterthwaite", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["ddf_method"] == "Satterthwaite"
    ref = tab(REFS["sleep_reml"]["coef_satt"])
    close(list(out["df"].values()), ref["df"], 1e-3, "df")
    close(list(out["p_values"].values()), ref["Pr(>|t|)"], 1e-3, "p")
    rc = main(["fit", "sleepstudy", "Reaction ~ Days + (Days|Subject)", "--ddf", "kenward-roger"])
    assert rc == 0 and "Kenward-Roger's method" in capsys.readouterr().out
    rc = main(["fit", "sleepstudy", "Reaction ~ Days + (Days|Subject)", "--ml", "--ddf",
               "kenward-roger"])
    assert rc == 2 and "only available for REML" in capsys.readouterr().err


def test_ranova_print_layout():
    lines = str(pylmem.ranova(fit_of("cake_reml"))).splitlines()
    assert lines[0] == "ANOVA-like table for random-effects: Single term deletions"
    assert lines[3] == "angle ~ recipe * temperature + (1 | recipe:replicate)"
    assert lines[5].split() == ["<none>", "20", "-816.62", "1673.2"]
    assert lines[6].split() == ["(1", "|", "recipe:replicate)", "19", "-902.59", "1843.2",
                                "171.93", "1", "<", "2.2e-16", "***"]


def _singular_slope_data():
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(20), 8)
    x = np.tile(np.arange(8.0), 20)
    y = 1 + 0.5 * x + rng.normal(0, 1, 20)[g] + rng.normal(0, 1, 160)
    return pd.DataFrame(dict(y=y, x=x, g=g.astype(str)))


def test_singular_vector_term_no_traceback():
    """A random slope with no variance (θ on the boundary, correlation undetermined):
    df, KR, F tests, ranova and profile intervals all come out; the slope sd interval
    starts at 0 and the correlation interval is its whole range [-1, 1]."""
    d = _singular_slope_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = pylmem.lmer("y ~ x + (x|g)", d, reml=False)
        f2 = pylmem.lmer("y ~ x + (x|g)", d)
    assert f.is_singular
    assert np.isfinite(f.coef_table("Satterthwaite")["df"]).all()
    assert np.isfinite(f2.coef_table("Kenward-Roger")["df"]).all()
    assert np.isfinite(pylmem.anova(f2)["DenDF"]).all()
    assert pylmem.ranova(f2)["LRT"].iloc[1] < 0.1
    ci = f.confint(method="profile", parm=[".sig02", ".sig03"])
    assert ci.loc[".sig03", "2.5 %"] == 0.0 and ci.loc[".sig03", "97.5 %"] > 0
    assert ci.loc[".sig02"].tolist() == [-1.0, 1.0]


def test_df_invariant_to_shifts_and_scales():
    """y shifted, a covariate rescaled: the df of every coefficient are unchanged."""
    d = load("sleepstudy").copy()
    base = fit_of("sleep_reml").coef_table("Satterthwaite")["df"].to_numpy()
    d["Reaction"] = d["Reaction"] + 1000.0
    d["Days"] = d["Days"] * 24.0
    f = pylmem.lmer("Reaction ~ Days + (Days|Subject)", d)
    close(f.coef_table("Satterthwaite")["df"], base, 1e-4, "df")
    close(f.coef_table("Kenward-Roger")["df"], base, 1e-4, "KR df")


def test_type3_with_factor_call_in_formula():
    """``factor(temperature)`` in the formula (formulaic's C()) gives lmerTest's type III
    table of the cake model, rows named as written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = pylmem.lmer("angle ~ recipe*factor(temperature) + (1|recipe:replicate)", load("cake"))
    ref = tab(REFS["cake_reml"]["anova3_satt"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pylmem.anova(f)
    assert list(got.index) == ["recipe", "factor(temperature)", "recipe:factor(temperature)"]
    close(got["F value"], ref["F value"], 1e-3, "F")
    close(got["DenDF"], ref["DenDF"], 1e-3, "DenDF")
