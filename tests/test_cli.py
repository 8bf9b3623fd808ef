"""The ``pylmem`` command (pylmem.io.cli) and the rat-weight example script.

The CLI runs in-process (``main([...])`` with capsys) and once as a subprocess
(``python -m pylmem``); JSON output is checked against the lme4 reference fits
(tests/reference/lme4_fits.json) with the tolerances of test_lmer_reference.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pylmem
from conftest import REFERENCE
from pylmem.io.cli import main

ROOT = Path(__file__).resolve().parents[1]
RAT_POLY = "weight ~ week + week2 + (week + week2 | id)"
RAT_GENDER = "weight ~ gender*week + gender*week2 + (week + week2 | id)"
SLEEP = "Reaction ~ Days + (Days | Subject)"


def _strict_json(text: str) -> dict:
    """json.loads that rejects NaN/Infinity (the CLI must print null instead)."""
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _check_against(out: dict, ref: dict, *, rename=None):
    rename = rename or {}
    assert out["n_obs"] == ref["n_obs"]
    assert out["groups"] == ref["groups"]
    assert out["df_resid"] == ref["df_resid"]
    assert out["n_dropped"] == 0
    assert out["reml"] is ref["reml"]
    assert out["converged"] is True and out["warnings"] == []
    assert out["loglik"] >= ref["loglik"] - 1e-6 * abs(ref["loglik"])
    assert out["loglik"] == pytest.approx(ref["loglik"], rel=1e-6)
    assert out["aic"] == pytest.approx(ref["aic"], rel=1e-6)
    assert out["bic"] == pytest.approx(ref["bic"], rel=1e-6)
    if ref["reml"]:
        assert out["deviance"] is None
        assert out["reml_criterion"] == pytest.approx(ref["reml_criterion"], rel=1e-6)
    else:
        assert out["reml_criterion"] is None
        assert out["deviance"] == pytest.approx(ref["deviance"], rel=1e-6)
    want_fixef = {rename.get(k, k): v for k, v in ref["fixef"].items()}
    want_se = {rename.get(k, k): v for k, v in ref["stderr"].items()}
    assert list(out["fixef"]) == list(want_fixef)
    assert list(out["stderr"]) == list(want_se)
    for k in want_fixef:
        assert out["fixef"][k] == pytest.approx(want_fixef[k], rel=1e-4), k
        assert out["stderr"][k] == pytest.approx(want_se[k], rel=1e-4), k
    assert out["sigma2"] == pytest.approx(ref["sigma2"], rel=1e-3)
    assert list(out["cov_re"]) == list(ref["cov_re"])
    for g, c in ref["cov_re"].items():
        names = [rename.get(n, n) for n in (c["names"] if isinstance(c["names"], list)
                                            else [c["names"]])]
        assert out["cov_re"][g]["names"] == names
        want = np.atleast_2d(np.array(c["matrix"], dtype=float))
        np.testing.assert_allclose(np.array(out["cov_re"][g]["matrix"]), want,
                                   atol=1e-3 * np.abs(want).max())
    assert out["fit_seconds"] > 0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rat_csv(tmp_path_factory):
    """The seed's data frame: ratWeight.csv plus d['week2'] <- d['week']^2."""
    d = pylmem.datasets.load("ratWeight")
    d["week2"] = d["week"] ** 2
    p = tmp_path_factory.mktemp("data") / "ratWeight2.csv"
    d.to_csv(p, index=False)
    return str(p)


@pytest.fixture(scope="module")
def singular_csv(tmp_path_factory):
    """Pure noise with a grouping factor: a boundary (singular) fit, hence a warning."""
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"y": rng.normal(size=60), "g": np.repeat(list("abcdef"), 10)})
    p = tmp_path_factory.mktemp("data") / "noise.csv"
    d.to_csv(p, index=False)
    return str(p)


# --------------------------------------------------------------------------- fit --json


def test_fit_json_rat_poly_ml(capsys, rat_csv):
    rc, out, err = _run(capsys, "fit", rat_csv, RAT_POLY, "--ml", "--json")
    assert rc == 0, err
    assert err == ""
    res = _strict_json(out)
    ref = REFERENCE["rat_poly_ml"]
    assert res["formula"] == RAT_POLY
    assert res["method"] == "profiled"
    assert res["loglik"] >= -8691.3502
    _check_against(res, ref)
    assert res["n_params"] == ref["n_params"]


def test_fit_json_rat_gender_ml(capsys, rat_csv):
    rc, out, err = _run(capsys, "fit", rat_csv, RAT_GENDER, "--ml", "--json", "--quiet")
    assert rc == 0, err
    _check_against(_strict_json(out), REFERENCE["rat_gender_ml"])


def test_fit_json_sleepstudy_reml_bundled_name(capsys):
    # DATA names a bundled data set (no such file in the working directory)
    assert not os.path.exists("sleepstudy")
    rc, out, err = _run(capsys, "fit", "sleepstudy", SLEEP, "--factor", "Subject", "--json")
    assert rc == 0, err
    res = _strict_json(out)
    assert res["reml"] is True and res["deviance"] is None
    _check_against(res, REFERENCE["sleepstudy_reml"])


def test_fit_json_sleepstudy_csv_with_factor(capsys):
    # the CSV itself has a numeric Subject column: --factor makes it categorical
    path = str(pylmem.datasets.path("sleepstudy"))
    assert pd.api.types.is_numeric_dtype(pd.read_csv(path)["Subject"])
    rc, out, err = _run(capsys, "fit", path, SLEEP, "--reml", "--factor", "Subject", "--json")
    assert rc == 0, err
    _check_against(_strict_json(out), REFERENCE["sleepstudy_reml"])
    rc, out, err = _run(capsys, "fit", path, SLEEP, "--ml", "--factor", "Subject", "--json")
    assert rc == 0, err
    _check_against(_strict_json(out), REFERENCE["sleepstudy_ml"])


def test_fit_json_method_em_defaults_to_ml(capsys, rat_csv):
    rc, out, err = _run(capsys, "fit", rat_csv, RAT_POLY, "--method", "em", "--json")
    assert rc == 0, err
    res = _strict_json(out)
    assert res["method"] == "em" and res["reml"] is False
    assert res["loglik"] >= -8691.3502
    np.testing.assert_allclose(list(res["fixef"].values()),
                               list(REFERENCE["rat_poly_ml"]["fixef"].values()), rtol=1e-4)


def test_fit_stdin(capsys, monkeypatch):
    import io

    text = Path(pylmem.datasets.path("Dyestuff")).read_text()
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    rc, out, err = _run(capsys, "fit", "-", "Yield ~ 1 + (1 | Batch)", "--json")
    assert rc == 0, err
    res = _strict_json(out)
    assert res["loglik"] == pytest.approx(REFERENCE["dyestuff_reml"]["loglik"], rel=1e-6)


def test_fit_plain_output_is_the_summary(capsys, rat_csv):
    rc, out, err = _run(capsys, "fit", rat_csv, RAT_POLY, "--ml")
    assert rc == 0, err
    fit = pylmem.lmer(RAT_POLY, pd.read_csv(rat_csv), reml=False, data_name=rat_csv)
    assert out.rstrip("\n") == str(fit.summary()).rstrip("\n")
    assert f"   Data: {rat_csv}" in out.splitlines()[:3]
    assert "Random effects:" in out
    assert "Fixed effects:" in out


def test_fit_warning_is_one_line_and_in_json(capsys, singular_csv):
    rc, out, err = _run(capsys, "fit", singular_csv, "y ~ 1 + (1 | g)", "--json")
    assert rc == 0
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("pylmem: warning: ") for line in lines)
    assert any("singular" in line for line in lines)
    assert "ConvergenceWarning" not in err and "warnings.warn" not in err
    res = _strict_json(out)
    assert res["singular"] is True
    assert any("singular" in w for w in res["warnings"])
    # --quiet keeps stderr clean, the JSON still carries the warning
    rc, out, err = _run(capsys, "fit", singular_csv, "y ~ 1 + (1 | g)", "--json", "--quiet")
    assert rc == 0 and err == ""
    assert _strict_json(out)["warnings"]


def test_fit_plot_dir(capsys, rat_csv, tmp_path):
    d = tmp_path / "plots"
    rc, out, err = _run(capsys, "fit", rat_csv, RAT_POLY, "--method", "em", "--json",
                        "--plot", str(d))
    assert rc == 0, err
    res = _strict_json(out)
    assert len(res["plots"]) >= 4
    for p in res["plots"]:
        assert Path(p).is_file() and Path(p).parent == d
    assert {Path(p).name for p in res["plots"]} >= {"em_trace.png", "qq.png",
                                                    "resid_fitted.png", "caterpillar_id.png"}


def test_fit_verbose_progress_goes_to_stderr(capsys, rat_csv):
    rc, out, err = _run(capsys, "fit", rat_csv, RAT_POLY, "--ml", "--json", "--verbose")
    assert rc == 0
    _strict_json(out)           # stdout stays pure JSON
    assert "objective" in err


# --------------------------------------------------------------------------- errors


def _assert_error(rc, out, err, *needles):
    assert rc == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pylmem: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_error_missing_file(capsys, tmp_path):
    missing = str(tmp_path / "nope.csv")
    _assert_error(*_run(capsys, "fit", missing, RAT_POLY), "no such file", "nope.csv")


def test_error_unknown_column(capsys, rat_csv):
    _assert_error(*_run(capsys, "fit", rat_csv, "weight ~ week + foo + (1 | id)"), "foo")


def test_error_unknown_grouping_column(capsys, rat_csv):
    _assert_error(*_run(capsys, "fit", rat_csv, "weight ~ week + (1 | rat)"), "rat")


def test_error_non_numeric_response(capsys, rat_csv):
    _assert_error(*_run(capsys, "fit", rat_csv, "gender ~ week + (1 | id)"), "gender",
                  "not numeric")


def test_error_bad_formula(capsys, rat_csv):
    _assert_error(*_run(capsys, "fit", rat_csv, "weight ~ week + (1 | id"))
    _assert_error(*_run(capsys, "fit", rat_csv, "weight ~ week"), "random")


def test_error_unknown_factor_column(capsys, rat_csv):
    _assert_error(*_run(capsys, "fit", rat_csv, RAT_POLY, "--factor", "nosuch"), "nosuch")


def test_error_usage(capsys, rat_csv):
    _assert_error(*_run(capsys, "fit", rat_csv), "FORMULA")
    _assert_error(*_run(capsys, "fit", rat_csv, RAT_POLY, "--method", "newton"), "newton")
    _assert_error(*_run(capsys, "fit", rat_csv, RAT_POLY, "--ml", "--reml"))
    _assert_error(*_run(capsys, "fit", rat_csv, RAT_POLY, "--method", "em", "--reml"),
                  "maximum likelihood")
    _assert_error(*_run(capsys, "frobnicate"))
    _assert_error(*_run(capsys, "anova", rat_csv, RAT_POLY, RAT_POLY, "--type", "3"), "one FORMULA")


def test_help_and_version(capsys):
    assert main(["--version"]) == 0
    assert pylmem.__version__ in capsys.readouterr().out
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--factor" in out and "ratWeight" in out
    assert main([]) == 2


# --------------------------------------------------------------------------- anova


def test_anova_gender_effect(capsys, rat_csv):
    rc, out, err = _run(capsys, "anova", rat_csv, RAT_POLY, RAT_GENDER)
    assert rc == 0, err
    assert "421.2" in out
    assert "Chisq" in out


def test_anova_json(capsys, rat_csv):
    rc, out, err = _run(capsys, "anova", rat_csv, RAT_POLY, RAT_GENDER, "--json", "--quiet")
    assert rc == 0, err
    res = _strict_json(out)
    assert [m["formula"] for m in res["models"]] == [RAT_POLY, RAT_GENDER]
    rows = res["table"]
    assert len(rows) == 2
    assert rows[1]["Chisq"] == pytest.approx(421.2094, abs=2e-3)
    assert rows[1]["Df"] == 3
    assert rows[1]["Pr(>Chisq)"] < 1e-16
    assert rows[0]["Chisq"] is None          # NaN -> null
    assert rows[0]["logLik"] == pytest.approx(REFERENCE["rat_poly_ml"]["loglik"], rel=1e-6)


def test_anova_gmo_among_males(capsys, rat_csv, tmp_path):
    d = pd.read_csv(rat_csv)
    p = tmp_path / "males.csv"
    d[d["gender"] == "Male"].to_csv(p, index=False)
    h1 = "weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)"
    rc, out, err = _run(capsys, "anova", str(p), RAT_POLY, h1, "--json")
    assert rc == 0, err
    row = _strict_json(out)["table"][1]
    assert row["Chisq"] == pytest.approx(3.6479, abs=2e-3)
    assert row["Df"] == 2
    assert row["Pr(>Chisq)"] == pytest.approx(0.1614, abs=1e-3)


# --------------------------------------------------------------------------- subprocess


def test_python_dash_m_pylmem_subprocess():
    """`python -m pylmem` on the bundled data set, with I(week^2) in the formula."""
    formula = "weight ~ week + I(week^2) + (week + I(week^2) | id)"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pylmem", "fit", "ratWeight", formula, "--ml",
                        "--json"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    res = _strict_json(r.stdout)
    _check_against(res, REFERENCE["rat_poly_ml"], rename={"week2": "I(week^2)"})
    # and an error through the real process: exit status 2, one line, no traceback
    r = subprocess.run([sys.executable, "-m", "pylmem", "fit", "no_such_file.csv", formula],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pylmem: error: ")


# --------------------------------------------------------------------------- example


def test_example_rat_weight(tmp_path):
    """examples/rat_weight.py reproduces section 3 of the seed, in a few seconds."""
    plot_dir = tmp_path / "plots"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "rat_weight.py"), str(plot_dir)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    # em.lmem (50 iterations): the seed's beta, sigma2 and LL/AIC/BIC
    for s in ["169.0301", "31.24151", "-1.102003", "823.2915", "66.24102", "-8691.351",
              "17402.7", "17459.82"]:
        assert s in out, s
    # em2.lmem
    assert "66.241" in out and "169.0302" in out
    # lmer (ML) and the gender model
    for s in ["-8691.35", "169.0878", "31.26897", "-1.102911", "142.7061", "52.76421",
              "-8480.745", "-8480.746"]:
        assert s in out, s
    # the two LRTs and their conclusions
    assert "421.2" in out
    assert "gender effect is highly significant" in out
    assert "Chisq = 3.65 on 2 df" in out and "p = 0.16" in out
    assert "not significant" in out
    # EM among males (seed: -4480.915, -4479.098)
    assert "-4480.915" in out and "-4479.098" in out
    pngs = sorted(plot_dir.glob("*.png"))
    assert len(pngs) >= 5
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "em_trace.png" in {p.name for p in pngs}
