"""Tables at the door: whatever table the caller holds becomes a pandas DataFrame.

``as_pandas`` accepts a pandas DataFrame (returned as is), a polars DataFrame/LazyFrame,
a pyarrow Table/RecordBatch, or anything narwhals understands.
"""
from __future__ import annotations

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
