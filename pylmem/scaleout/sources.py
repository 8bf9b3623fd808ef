"""Where Dask data come from: Parquet or CSV files, directories and globs
(:func:`read_dask`), and the ``distributed`` client to fit on (:func:`open_client`).
"""
from __future__ import annotations

from .reduce import DASK_EXTRA, require_dask


def read_dask(spec: str):
    """A dask DataFrame from a Parquet or CSV file, directory or glob."""
    import glob
    import os

    _, dd = require_dask()
    files = sorted(glob.glob(spec)) if not os.path.isdir(spec) else [spec]
    if not files:
        raise ValueError(f"no file matches {spec!r}")
    low = files[0].lower().removesuffix(".gz")
    if os.path.isdir(files[0]) or low.endswith((".parquet", ".pq", ".parq")):
        return dd.read_parquet(spec)
    if low.endswith((".csv", ".tsv", ".tab")):
        return dd.read_csv(spec, sep="\t" if low.endswith((".tsv", ".tab")) else ",")
    raise ValueError(f"{spec!r}: --dask reads Parquet (.parquet) or CSV (.csv) files")


def open_client(address: str):
    """A distributed Client: to ``address``, or to a new LocalCluster for ``"local"``."""
    require_dask()
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover
        raise ImportError(f"--dask needs dask.distributed: {DASK_EXTRA} ({e})") from None
    if address == "local":
        import logging

        cluster = LocalCluster(dashboard_address=":0", silence_logs=logging.ERROR)
        return Client(cluster), cluster
    return Client(address), None
