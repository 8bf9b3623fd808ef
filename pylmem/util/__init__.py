"""Layer 0, support: code that knows nothing of mixed models.

BLAS thread limits for small dense algebra (``threads``), the live progress line
(``progress``), R's number formatting and text layout (``rformat``), R's deparse of
formulas (``deparse``), the matplotlib helpers of every plot (``figures``) and modules
imported on first use (``lazy``: scipy.stats).

May import: the standard library, numpy, matplotlib (lazily), threadpoolctl; nothing of
pylmem.  Every other subpackage may import it.
"""
