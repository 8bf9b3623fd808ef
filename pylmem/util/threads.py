"""One BLAS thread for small dense linear algebra.

Measured here (OpenBLAS, 2 cores): a 200 × 200 block evaluates in 1.5 ms on one thread and
~45 ms on two, and small LAPACK calls run 3–100× slower on a busy machine when OpenBLAS
hands them to its thread pool; InstEval's 1156 × 1156 block gains ~15% from two threads.
The BLAS libraries are looked up once (a scan of the process's maps costs ~3 ms), then
each use only sets the limit.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext

_CONTROLLER: list = []

#: dense blocks at least this large keep every BLAS thread
LARGE_BLOCK = 512


def single_thread():
    """Context manager: one BLAS thread inside (a no-op without threadpoolctl)."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - optional speed-up
            _CONTROLLER.append(None)
    ctl = _CONTROLLER[0]
    return nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")


def threads_for_block(m: int, *, one_term_too: bool = False):
    """One BLAS thread unless the dense rest block (m × m) is large enough to gain from more.

    ``m = 0`` (one term) keeps the default unless ``one_term_too``."""
    if m >= LARGE_BLOCK or (m == 0 and not one_term_too):
        return nullcontext()
    return single_thread()


def one_blas_thread(fn):
    """Decorator: run ``fn`` with one BLAS thread (the inference modules' small matrices)."""

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        with single_thread():
            return fn(*args, **kw)

    return wrapper
