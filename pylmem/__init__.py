"""pylmem: linear mixed-effects models with lme4 formulas, exact ML/REML and the EM algorithm.

The package face: the public names, imported from the subpackages that own them.  The
subpackages follow the flow of a fit, each importing only from those before it:

``util`` → ``model`` → ``numerics`` → ``estimation`` → ``inference`` → ``postfit`` →
``reports`` → ``scaleout`` → ``api`` → ``io``  (and ``datasets``, bundled data).

See ``docs/architecture.md``.
"""
from . import datasets
from ._version import __version__  # noqa: F401  (pylmem.__version__)
from .api.glmer import GlmerFit, glmer
from .api.lmer import LmerFit, fit_design, lmer
from .estimation.convergence import ConvergenceWarning
from .estimation.em import em
from .inference.bootstrap import bootstrap, pb_anova, simulate
from .inference.ddf import coef_table
from .inference.lrt import anova
from .inference.lsmeans import ls_means
from .inference.profile import confint
from .inference.ranova import drop1, ranova
from .io.readers import read_table
from .model.design import ModelDesign, build_design

__all__ = ["lmer", "glmer", "GlmerFit", "fit_design", "LmerFit", "ConvergenceWarning", "build_design", "ModelDesign",
           "datasets", "em", "anova", "bootstrap", "pb_anova", "simulate", "ranova", "drop1",
           "coef_table", "confint", "read_table", "ls_means"]
