"""Data files: ``read_table`` reads what the command line and users hand over by path:
CSV/TSV (optionally gzipped), Parquet, Feather/Arrow IPC.  (Tables already in memory enter
through :func:`pylmem.model.tables.as_pandas`.)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_table(path, *, sep: str | None = None) -> pd.DataFrame:
    """Read a data file by its extension: .csv/.tsv/.txt (+.gz), .parquet/.pq, .feather/.arrow."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"data file {str(path)!r} not found")
    suffixes = [s.lower() for s in p.suffixes]
    ext = suffixes[-2] if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zip") and \
        len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if ext in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if ext in (".feather", ".arrow", ".ipc"):
        return pd.read_feather(p)
    if sep is None:
        sep = "\t" if ext in (".tsv", ".tab") else ","
    return pd.read_csv(p, sep=sep)
