"""pylmem: linear mixed-effects models with lme4 formulas, exact ML/REML and the EM algorithm."""
from . import datasets
from .design import ModelDesign, build_design
from .fit import ConvergenceWarning, LmerFit, fit_design, lmer
from .em import em  # noqa: E402  (the function shadows the submodule name on purpose)
from .anova import anova  # noqa: E402
from .bootstrap import bootstrap, pb_anova, simulate  # noqa: E402
from .ranova import drop1, ranova  # noqa: E402
from .inference import coef_table  # noqa: E402
from .profile import confint  # noqa: E402  (pylmem.profile stays the module)

__version__ = "0.1.0"

__all__ = ["lmer", "fit_design", "LmerFit", "ConvergenceWarning", "build_design", "ModelDesign",
           "datasets", "em", "anova", "bootstrap", "pb_anova", "simulate", "ranova", "drop1",
           "coef_table", "confint"]

from .io import read_table  # noqa: E402  (issue 13)

__all__ += ["read_table"]
