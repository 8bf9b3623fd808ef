"""`pylmem anova DATA FORMULA`: lmerTest's F table of one model from the command line,
against lmerTest 3.1.3 / pbkrtest 0.5.2 (tests/reference/inference_refs.json, cake);
the summary's Data: line, and the --help examples of every subcommand."""
import json
from pathlib import Path

import pytest

from pylmem.io.cli import build_parser, main

REF = json.loads((Path(__file__).parent / "reference" / "inference_refs.json").read_text())
CAKE = "angle ~ recipe*temperature + (1|recipe:replicate)"


def _ref_table(key):
    t = REF["cake_reml"][key]
    return {row: dict(zip(t["columns"], [t["values"][j][i] for j in range(len(t["columns"]))]))
            for i, row in enumerate(t["rows"])}


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("ddf,key", [("satterthwaite", "anova3_satt"),
                                     ("kenward-roger", "anova3_kr")])
def test_f_table_json_matches_lmertest(capsys, ddf, key):
    rc, out, err = _run(capsys, "anova", "cake", CAKE, "--factor", "temperature",
                        "--type", "3", "--ddf", ddf, "--json", "--quiet")
    assert rc == 0, err
    res = json.loads(out)
    assert res["reml"] is True and res["type"] == 3
    ref = _ref_table(key)
    assert [r["term"] for r in res["table"]] == list(ref)
    for row in res["table"]:
        r = ref[row["term"]]
        for col in ("Sum Sq", "NumDF", "DenDF", "F value"):
            assert row[col] == pytest.approx(r[col], rel=1e-5), (row["term"], col)
        assert row["Pr(>F)"] == pytest.approx(r["Pr(>F)"], rel=1e-4)


def test_f_table_printed_type1(capsys):
    rc, out, err = _run(capsys, "anova", "cake", CAKE, "--factor", "temperature", "--type", "1")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "Type I Analysis of Variance Table with Satterthwaite's method"
    assert lines[1].split() == ["Sum", "Sq", "Mean", "Sq", "NumDF", "DenDF", "F", "value",
                                "Pr(>F)"]
    ref = _ref_table("anova1_satt")
    row = lines[3].split()
    assert row[0] == "temperature"
    assert float(row[5]) == pytest.approx(ref["temperature"]["F value"], abs=1e-4)


def test_default_is_type3_satterthwaite(capsys):
    rc, out, _ = _run(capsys, "anova", "cake", CAKE, "--factor", "temperature")
    assert rc == 0
    assert out.startswith("Type III Analysis of Variance Table with Satterthwaite's method")
    assert "20.5199" in out


def test_lrt_still_compares_two_formulas(capsys):
    rc, out, err = _run(capsys, "anova", "sleepstudy", "Reaction ~ 1 + (Days | Subject)",
                        "Reaction ~ Days + (Days | Subject)", "--reml")
    assert rc == 0
    assert "Data: sleepstudy" in out and "23.537" in out
    assert err.count("refitting model(s) with ML (instead of REML)") == 1   # one note
    assert "refitting" not in out


def test_summary_names_the_data(capsys):
    rc, out, _ = _run(capsys, "fit", "sleepstudy", "Reaction ~ Days + (Days | Subject)")
    assert rc == 0
    assert out.splitlines()[2] == "   Data: sleepstudy"


def test_help_has_examples_for_every_subcommand():
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    assert set(sub.choices) == {"fit", "anova"}
    for name, sp in sub.choices.items():
        text = sp.format_help()
        assert "examples:" in text, name
        ex = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(f"pylmem {name} ")]
        assert len(ex) >= 2, (name, ex)
    assert "examples:" in p.format_help()


def test_help_examples_run(capsys):
    """The bundled-data examples of `pylmem anova --help` run as printed."""
    import shlex

    text = build_parser()._subparsers._group_actions[0].choices["anova"].format_help()
    ex = [ln.strip() for ln in text.splitlines()
          if ln.strip().startswith("pylmem anova ") and "data.csv" not in ln]
    assert ex
    for line in ex:
        rc, out, err = _run(capsys, *shlex.split(line)[1:], "--quiet")
        assert rc == 0, (line, err)
        assert "Analysis of Variance Table" in out or "Chisq" in out


def test_type_and_ddf_with_two_formulas_is_an_error(capsys):
    rc, out, err = _run(capsys, "anova", "sleepstudy", "Reaction ~ 1 + (1|Subject)",
                        "Reaction ~ Days + (1|Subject)", "--ddf", "satterthwaite")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "one FORMULA" in err
