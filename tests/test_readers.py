"""pylmem.io.readers.read_table, the one reader of the API and the CLI: separators sniffed,
TSV, compressed files, globs, Parquet/Feather (and the one-line error without pyarrow)."""
import builtins
import io
import sys

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.io.cli import load_data, main
from pylmem.io.readers import read_table


@pytest.fixture(scope="module")
def sleep():
    return pylmem.datasets.load("sleepstudy")


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
@pytest.mark.parametrize("name", ["s.csv", "s.txt", "s.csv.gz", "s.csv.bz2"])
def test_separator_sniffed(tmp_path, sleep, sep, name):
    sleep.to_csv(tmp_path / name, sep=sep, index=False)
    t = read_table(tmp_path / name)
    assert list(t.columns) == list(sleep.columns)
    np.testing.assert_allclose(t["Reaction"], sleep["Reaction"])
    assert (load_data(str(tmp_path / name))["Days"] == sleep["Days"]).all()


def test_text_fields_with_commas_under_semicolons(tmp_path):
    (tmp_path / "d.csv").write_text("y;g;label\n1.5;a;x, y\n2.5;b;z\n3.5;a;w\n")
    t = read_table(tmp_path / "d.csv")
    assert list(t.columns) == ["y", "g", "label"] and t["label"].iloc[0] == "x, y"


def test_single_column_and_explicit_sep(tmp_path):
    (tmp_path / "one.csv").write_text("y\n1\n2\n")
    assert list(read_table(tmp_path / "one.csv").columns) == ["y"]
    (tmp_path / "p.csv").write_text("a:b\n1:2\n")
    assert list(read_table(tmp_path / "p.csv", sep=":").columns) == ["a", "b"]


def test_glob_reads_the_files_in_order(tmp_path, sleep):
    for i, part in enumerate(np.array_split(np.arange(len(sleep)), 3)):
        sleep.iloc[part].to_csv(tmp_path / f"part{i}.csv", index=False)
    t = read_table(str(tmp_path / "part*.csv"))
    assert len(t) == 180
    np.testing.assert_allclose(t["Reaction"], sleep["Reaction"])
    with pytest.raises(ValueError, match="no data file matches"):
        read_table(str(tmp_path / "nothing*.csv"))
    # the CLI reads the same glob
    assert len(load_data(str(tmp_path / "part*.csv"))) == 180


def test_stdin(monkeypatch, sleep):
    monkeypatch.setattr(sys, "stdin", io.StringIO(sleep.to_csv(index=False, sep=";")))
    assert len(read_table("-")) == 180


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="directory"):
        read_table(tmp_path)
    (tmp_path / "bad.csv").write_text('a,b\n1,"2\n')
    with pytest.raises(ValueError, match="cannot read .*bad.csv.* as CSV"):
        read_table(tmp_path / "bad.csv")
    rc = main(["fit", str(tmp_path), "y ~ 1 + (1 | g)"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "directory" in err


def test_parquet_and_feather_without_pyarrow(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *a, **k)

    (tmp_path / "s.parquet").write_bytes(b"PAR1")
    (tmp_path / "s.feather").write_bytes(b"ARROW1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    for name in ("s.parquet", "s.feather"):
        with pytest.raises(ImportError) as e:
            read_table(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and len(msg) < 160 and '".[arrow]"' in msg and name in msg
    rc = main(["fit", str(tmp_path / "s.parquet"), "y ~ 1 + (1 | g)"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pyarrow" in err


def test_parquet_feather_roundtrip(tmp_path, sleep):
    pytest.importorskip("pyarrow")
    sleep.to_parquet(tmp_path / "a.parquet", index=False)
    sleep.to_feather(tmp_path / "a.feather")
    for n in ("a.parquet", "a.feather"):
        pd.testing.assert_frame_equal(read_table(tmp_path / n), sleep)
