"""Layer 5, post-fit: what a fitted model says about rows, old and new.

New data mapped onto a fit (``newdata``), predictions (``predict``), their standard
errors and intervals and the leverages (``intervals``), the hat matrix and its trace
(``hat``), residual types, Cook's distance and deletion diagnostics (``diagnostics``),
and summary measures (``measures``: R², ICC, rePCA).  Functions take a fit.

May import: ``pylmem.util``, ``model``, ``numerics``, ``estimation``, ``inference``.
"""
