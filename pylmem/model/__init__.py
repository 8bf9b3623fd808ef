"""Layer 1, model specification: from an lme4 formula and a table to the model.

The formula parser (``formula``), the design of y, X and the random-effects terms
(``design``, with the model matrices of ``matrices`` and the level identity of ``levels``),
prior weights and offsets (``weights``), the covariance parameters θ and their map to Λ
(``covariance``: where a covariance structure goes), and tables at the door
(``tables``: pandas, polars, pyarrow).  Nothing here fits anything.

May import: ``pylmem.util``; numpy, pandas, formulaic.
"""
