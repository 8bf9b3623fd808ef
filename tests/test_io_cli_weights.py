"""io.read_table (CSV, Parquet, Feather) and the CLI's --weights / --offset / Parquet input."""
import json

import numpy as np
import pytest
from diag_refs import REFS, SLEEP, data

import pylmem
from pylmem.io.cli import main
from pylmem.io.readers import read_table
from pylmem.model.tables import as_pandas


def test_read_table_formats(tmp_path):
    pytest.importorskip("pyarrow")
    d = data("sleepstudy")
    d.to_csv(tmp_path / "s.csv", index=False)
    d.to_csv(tmp_path / "s.tsv.gz", sep="\t", index=False)
    d.to_parquet(tmp_path / "s.parquet", index=False)
    d.to_feather(tmp_path / "s.feather")
    for name in ("s.csv", "s.tsv.gz", "s.parquet", "s.feather"):
        t = read_table(tmp_path / name)
        assert list(t.columns) == list(d.columns) and len(t) == 180
        np.testing.assert_allclose(t["w"], d["w"])
    with pytest.raises(ValueError, match="not found"):
        read_table(tmp_path / "nope.parquet")
    assert as_pandas(d) is d


def _fit_json(capsys, *argv):
    rc = main(["fit", *argv, "--json", "--quiet"])
    out, _ = capsys.readouterr()
    assert rc == 0
    return json.loads(out)


def test_cli_weights_and_parquet(capsys, tmp_path):
    pytest.importorskip("pyarrow")
    d = data("sleepstudy")
    d.to_parquet(tmp_path / "s.parquet", index=False)
    out = _fit_json(capsys, str(tmp_path / "s.parquet"), SLEEP, "--weights", "w")
    r = REFS["sleep_w_reml"]
    assert out["weights"] == "w"
    assert out["reml_criterion"] == pytest.approx(r["objective"], abs=1e-6)
    np.testing.assert_allclose(list(out["fixef"].values()), list(r["fixef"].values()), rtol=1e-6)
    d.to_csv(tmp_path / "s.csv", index=False)
    out = _fit_json(capsys, str(tmp_path / "s.csv"), SLEEP, "--offset", "off", "--ml")
    assert out["offset"] == ["off"]
    assert out["deviance"] == pytest.approx(REFS["sleep_off_ml"]["objective"], abs=1e-6)


def test_cli_bad_weights_one_line_error(capsys, tmp_path):
    d = data("sleepstudy")
    d.loc[[1, 2], "w"] = 0
    d.to_csv(tmp_path / "s.csv", index=False)
    rc = main(["fit", str(tmp_path / "s.csv"), SLEEP, "--weights", "w"])
    _, err = capsys.readouterr()
    assert rc != 0
    assert "weights column 'w' has 2 row(s)" in err and len(err.strip().splitlines()) == 1


def test_weights_array_of_pandas_series_and_predict_polars_newdata():
    pl = pytest.importorskip("polars")
    d = data("sleepstudy")
    f = pylmem.lmer(SLEEP, d, weights=d["w"])
    out = f.predict(pl.from_pandas(d.head(3)), interval="confidence")
    assert list(out.columns) == ["fit", "lwr", "upr"]
