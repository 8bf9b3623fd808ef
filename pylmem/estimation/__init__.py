"""Layer 3, estimation: from a design to a fitted state.

Starting values (``start``), the optimiser's coordinates (``coords``), the optimisers
(``optimize``), the convergence check and the optimisation record (``convergence``), the
seed's EM algorithm (``em``), the fitted state with lme4's accessors (``state``:
:class:`~pylmem.estimation.state.FitState`, what every capability reads) and one
estimation step by step (``fitting``).  A generalized model's Laplace/AGQ objective and
state join here.

May import: ``pylmem.util``, ``pylmem.model``, ``pylmem.numerics``; numpy, scipy, nlopt.
"""
