"""Data files: :func:`read_table` reads what the command line and users hand over by path,
one reader for both: CSV (separator sniffed: comma, semicolon, tab, pipe), TSV, each
optionally compressed (``.gz``, ``.bz2``, ``.xz``, ``.zip``), Parquet, Feather/Arrow IPC, and
globs of such files (concatenated in sorted order).  ``-`` reads CSV from stdin.  (Tables
already in memory enter through :func:`pylmem.model.tables.as_pandas`.)
"""
from __future__ import annotations

import csv
import glob
import io
import os
import sys
from pathlib import Path

import pandas as pd

__all__ = ["ARROW_EXTRA", "read_table"]

#: How to get pyarrow (Parquet and Feather) when it is missing.
ARROW_EXTRA = ('python3 -m pip install ".[arrow]" in a source checkout, or '
               "pip install pyarrow")

_COMPRESSED = (".gz", ".bz2", ".xz", ".zip")
_PARQUET = (".parquet", ".pq", ".parq")
_FEATHER = (".feather", ".arrow", ".ipc")
_SEPARATORS = ",;\t|"


def _kind(path: str) -> str:
    """The file's format suffix, a compression suffix skipped ("" when it has none)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if len(suffixes) > 1 and suffixes[-1] in _COMPRESSED:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _require_pyarrow(path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(f"reading {os.path.basename(str(path))!r} needs pyarrow: "
                          f"{ARROW_EXTRA}") from None


def _sniff(sample: str) -> str:
    """The separator of a CSV sample: the csv module's sniffer among , ; tab |, else ','."""
    lines = [ln for ln in sample.splitlines() if ln.strip()][:20]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=_SEPARATORS).delimiter
    except csv.Error:
        # the most frequent candidate of the header line, when the sniffer cannot tell
        counts = {s: lines[0].count(s) for s in _SEPARATORS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _head(path: str, size: int = 64 * 1024) -> str:
    """The first ``size`` characters of a (possibly compressed) text file."""
    low = path.lower()
    if low.endswith(".gz"):
        import gzip as mod
    elif low.endswith(".bz2"):
        import bz2 as mod
    elif low.endswith(".xz"):
        import lzma as mod
    elif low.endswith(".zip"):
        import zipfile

        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if not names:
                return ""
            with z.open(names[0]) as f:
                return f.read(size).decode("utf-8", errors="replace")
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(size)
    with mod.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read(size)


def _read_text(source, sep, what) -> pd.DataFrame:
    try:
        if sep is None:
            if isinstance(source, str):
                sample = _head(source)
            else:
                sample = source.getvalue()[:64 * 1024]
            sep = _sniff(sample)
        return pd.read_csv(source, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"cannot read {what} as CSV: {msg}") from None


def _read_one(path: str, sep) -> pd.DataFrame:
    kind = _kind(path)
    if kind in _PARQUET:
        _require_pyarrow(path)
        return pd.read_parquet(path)
    if kind in _FEATHER:
        _require_pyarrow(path)
        return pd.read_feather(path)
    if sep is None and kind in (".tsv", ".tab"):
        sep = "\t"
    return _read_text(path, sep, repr(path))


def read_table(path, *, sep: str | None = None) -> pd.DataFrame:
    """Read a data file into a pandas DataFrame.

    Parameters
    ----------
    path : str or os.PathLike
        A file: ``.csv``/``.txt`` (the separator sniffed among comma, semicolon, tab and
        pipe), ``.tsv``/``.tab``, each optionally compressed (``.gz``, ``.bz2``, ``.xz``,
        ``.zip``); ``.parquet``/``.pq``; ``.feather``/``.arrow``. A glob (``"data/*.csv"``)
        reads every matching file, in sorted order, into one frame. ``"-"`` reads CSV from
        standard input.
    sep : str, optional
        The CSV separator, when it should not be sniffed.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        No such file (or no file matches the glob), a directory, or a file that is not
        valid CSV: one line naming the file.
    ImportError
        Parquet or Feather without pyarrow installed: one line naming the extra.
    """
    spec = os.fspath(path)
    if spec == "-":
        return _read_text(io.StringIO(sys.stdin.read()), sep, "stdin")
    if os.path.isdir(spec):
        raise ValueError(f"{spec!r} is a directory, not a data file")
    if os.path.exists(spec):
        return _read_one(spec, sep)
    if glob.has_magic(spec):
        files = sorted(f for f in glob.glob(spec) if os.path.isfile(f))
        if not files:
            raise ValueError(f"no data file matches {spec!r}")
        frames = [_read_one(f, sep) for f in files]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    raise ValueError(f"data file {spec!r} not found")
