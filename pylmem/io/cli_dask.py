"""``pylmem fit DATA FORMULA --dask [ADDRESS]``: the command line's Dask path (called by
:mod:`pylmem.io.cli`).
"""
from __future__ import annotations

from ..scaleout.fit import lmer_dask
from ..scaleout.sources import open_client, read_dask


def cli_fit(args, *, reml, warnings_block, to_dict, dumps, error):
    """``pylmem fit DATA FORMULA --dask [ADDRESS]`` (called by :mod:`pylmem.io.cli`)."""
    import sys

    if args.plot:
        raise error("--plot draws every row: not available with --dask")
    for flag in ("weights", "offset", "ddf"):
        if getattr(args, flag, None):
            raise error(f"--{flag} is not available with --dask yet")
    verbose = False if args.quiet else (True if args.verbose else None)
    try:
        client, cluster = open_client(args.dask)
    except ImportError as e:
        raise error(str(e)) from None
    try:
        with client:
            ddf = read_dask(args.data)
            with warnings_block(quiet=args.quiet):
                fit = lmer_dask(args.formula, ddf, reml=reml, method=args.method,
                                factors=list(args.factor), verbose=verbose)
            if args.json:
                out = to_dict(fit, data=args.data)
                out["dask"] = {"partitions": ddf.npartitions,
                               "phase_seconds": fit.phase_seconds}
                print(dumps(out))
            else:
                print(str(fit.summary()))
    finally:
        if cluster is not None:
            cluster.close()
    sys.stdout.flush()
    return 0
