"""Layer 4, inference: tests and intervals from a fitted state.

Satterthwaite df and lmerTest's coefficient table (``ddf``), Kenward–Roger
(``kenward_roger``), type I/III F tests (``ftests``), likelihood-ratio tests between
models (``lrt``: ``anova``), ``ranova``/``drop1`` (``ranova``), likelihood profiles and
confidence intervals (``profile``), simulation, refits and the parametric bootstrap
(``bootstrap``), and the pictures of these results (``plots``).  Functions take a fit
(any :class:`~pylmem.estimation.state.FitState`); refits go through
:func:`pylmem.estimation.fitting.estimate` with the fit's own class.

May import: ``pylmem.util``, ``model``, ``numerics``, ``estimation``; scipy, nlopt.
"""
