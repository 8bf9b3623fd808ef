"""One BLAS thread for small dense linear algebra (the inference modules)."""
from __future__ import annotations


def one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread: the matrices here are small, and OpenBLAS's thread
    hand-off costs more than the arithmetic (×3-10 on a loaded 2-core machine)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        from .fit import _BLAS_CONTROLLER

        if not _BLAS_CONTROLLER:
            try:
                from threadpoolctl import ThreadpoolController

                _BLAS_CONTROLLER.append(ThreadpoolController())
            except ImportError:  # pragma: no cover - optional speed-up
                _BLAS_CONTROLLER.append(None)
        ctl = _BLAS_CONTROLLER[0]
        if ctl is None:
            return fn(*args, **kw)
        with ctl.limit(limits=1, user_api="blas"):
            return fn(*args, **kw)

    return wrapper
