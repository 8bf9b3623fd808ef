"""Tables in and out of pylmem: pandas at the door, whatever the caller holds.

``as_pandas`` accepts a pandas DataFrame (returned as is), a polars DataFrame/LazyFrame,
a pyarrow Table/RecordBatch, or anything narwhals understands; ``read_table`` reads the
CLI's files: CSV/TSV (optionally gzipped), Parquet, Feather/Arrow IPC.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def as_pandas(data, what: str = "data") -> pd.DataFrame:
    """A pandas DataFrame of ``data`` (pandas, polars, pyarrow, or narwhals-compatible)."""
    if isinstance(data, pd.DataFrame):
        return data
    mod = type(data).__module__.split(".")[0]
    if mod == "polars":
        if hasattr(data, "collect") and not hasattr(data, "to_pandas"):   # LazyFrame
            data = data.collect()
        return data.to_pandas()
    if mod == "pyarrow":
        return data.to_pandas()
    try:
        import narwhals as nw

        return nw.from_native(data, eager_only=True).to_pandas()
    except Exception:
        pass
    raise ValueError(f"{what} must be a pandas, polars or pyarrow table, got {type(data).__name__}")


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
