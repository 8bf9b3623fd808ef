"""Layer 7, scale-out: the same fit on data larger than one machine (Dask).

Split by phase: the reduction over partitions (``reduce``), the levels pass (``plan``),
the per-partition statistics (``statistics``), the fit from the reduced statistics
(``fit``), the lazy row-level results (``results``) and where the data come from
(``sources``).  The fit ends in the same fitted state as an in-memory fit.

May import: every layer below (``util`` … ``reports``); dask, distributed (optional extra).
"""
