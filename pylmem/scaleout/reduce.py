"""Reductions over the partitions of a Dask frame: ``combine`` of ``func(partition, *args)``.

On a ``distributed`` client one chain per worker thread, each link reading a partition,
computing its statistics and adding them to the chain's running total in one task (memory
per worker stays bounded whatever the number of partitions), then the chains' totals
pairwise; otherwise a tree of delayed ``combine`` calls on dask's local scheduler.  Also the
import of dask itself (with the name of the optional extra when it is missing).
"""
from __future__ import annotations

import time

from ..util.progress import Progress

# from a source checkout the extra is installed from the checkout, not from an index
DASK_EXTRA = ('python3 -m pip install ".[dask]" in a source checkout '
              "(pip install pylmem[dask] from a package index)")


def require_dask():
    """Import dask.dataframe, or fail with the name of the optional extra."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as e:  # pragma: no cover - exercised only without dask
        raise ImportError(f"fitting a Dask DataFrame needs dask: {DASK_EXTRA} ({e})") from None
    return dask, dd


def is_dask_frame(obj) -> bool:
    """True for a dask DataFrame, without importing dask when it is not loaded."""
    import sys

    if "dask.dataframe" not in sys.modules:
        return False
    import dask.dataframe as dd

    return isinstance(obj, dd.DataFrame)


def active_client():
    """The active distributed client, unless dask is configured for a local scheduler."""
    import dask

    sched = dask.config.get("scheduler", None)
    if isinstance(sched, str) and sched not in ("distributed", "dask.distributed"):
        return None
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


class _PassProgress:
    """``pass over the data: k/N partitions`` on stderr (see :mod:`pylmem.util.progress`)."""

    def __init__(self, label, total, verbose):
        self.p = Progress(verbose=verbose, label=label)
        self.total = total

    def update(self, k):
        p = self.p
        if not p.enabled:
            return
        now = time.perf_counter() - p.t0
        if now < p.delay or (now - p._last < 0.2 and p.shown and k < self.total):
            return
        p._last, p.shown = now, True
        p.stream.write(f"\r{p.label}: {k}/{self.total} partitions ({now:.1f} s)")
        p.stream.flush()

    def close(self):
        self.p.close()


def share(obj):
    """``obj`` as a task argument sent once per worker: a scattered future on a
    ``distributed`` client (else the object itself, for dask's local schedulers)."""
    client = active_client()
    return obj if client is None else client.scatter(obj, broadcast=True, hash=False)


STEP_SECONDS: dict = {}   # seconds spent in each func / combine by _step in this process


def _step(combine, prev, func, *args):
    """One link of a reduction chain: combine(prev, func(*args)) in one task, so a worker
    never holds more than its chain's running total, one partition and their sum."""
    t0 = time.perf_counter()
    r = func(*args)
    t1 = time.perf_counter()
    out = r if prev is None else combine(prev, r)
    for k, v in ((func.__name__, t1 - t0), (combine.__name__, time.perf_counter() - t1)):
        STEP_SECONDS[k] = STEP_SECONDS.get(k, 0.0) + v
    return out


def reduce_partitions(parts, func, args, combine, *, label, verbose=None, chains=None):
    """combine over the partitions of func(part, *args).

    On a ``distributed`` client: one chain per worker thread; each link reads a partition,
    computes its statistics and adds them to the chain's running total in one task (a link
    is submitted when the one two places before it completes, so memory per worker stays
    bounded whatever the number of partitions); the chains' totals are then combined
    pairwise.  Otherwise a tree of delayed ``combine`` calls on dask's local scheduler.
    """
    import dask

    n = len(parts)
    client = active_client()
    prog = _PassProgress(label, n, verbose)
    if client is None:
        level = [dask.delayed(func)(p, *args) for p in parts]
        while len(level) > 1:
            nxt = [dask.delayed(combine)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            level = nxt + ([level[-1]] if len(level) % 2 else [])
        out = dask.compute(level[0])[0]
        prog.update(n)
        prog.close()
        return out
    from distributed import as_completed

    if chains is None:
        chains = max(1, sum(w.get("nthreads", 1) for w in
                            client.scheduler_info(n_workers=-1)["workers"].values()))
    chains = min(chains, n)
    it = iter(parts)
    ac = as_completed()
    head = [None] * chains                 # the latest submitted link of each chain
    chain_of = {}
    remaining = n

    def extend(j):
        nonlocal remaining
        p = next(it, None)
        if p is None:
            return
        fut = client.compute(dask.delayed(_step)(combine, head[j], func, p, *args))
        head[j] = fut
        chain_of[fut.key] = j
        remaining -= 1
        ac.add(fut)

    for _ in range(2):                     # two links queued per chain hide the round trip
        for j in range(chains):
            extend(j)
    done = 0
    for fut in ac:
        if fut.status == "error":
            fut.result()                       # raises the worker's error here
        j = chain_of.pop(fut.key)
        done += 1
        prog.update(done)
        if remaining:
            extend(j)
    prog.close()
    # pair the chains' totals that sit on the same worker first (fewer transfers)
    where = client.who_has(list(head))
    totals = sorted(head, key=lambda f: (where.get(f.key) or [""])[0])
    while len(totals) > 1:
        nxt = [client.submit(combine, totals[i], totals[i + 1], pure=False)
               for i in range(0, len(totals) - 1, 2)]
        totals = nxt + ([totals[-1]] if len(totals) % 2 else [])
    return totals[0].result()
