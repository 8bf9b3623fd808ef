"""Layer 8, the user's entry points and hub objects.

``lmer`` and ``fit_design`` (``lmer``), returning :class:`~pylmem.api.lmer.LmerFit`: a thin
hub over :class:`~pylmem.estimation.state.FitState` whose methods delegate to the capability
subpackages; :class:`~pylmem.api.lmer.DaskLmerFit` the same for a Dask fit.  A generalized
model's ``glmer`` and its hub go here as ``glmer``.

May import: every layer below (``util`` … ``scaleout``).
"""
