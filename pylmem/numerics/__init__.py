"""Layer 2, numerics: the profiled deviance and the linear algebra under it.

The model's sufficient statistics formed in one pass (``crossprod``), checks on them
(``checks``), the profiled ML/REML deviance and its blocked Cholesky factor (``deviance``),
the factorization of the rest block as its structure allows (``rest_block``: dense,
block diagonal or CHOLMOD, symbolic work once per model), batched kernels for stacks of
small matrices (``batched``), the analytic gradient for several terms
(``multi_gradient``) and the deviance with a replicate axis (``replicates``).  A penalised
IRLS for generalized models belongs here too.

May import: ``pylmem.util``, ``pylmem.model``; numpy, scipy, cvxopt.
"""
