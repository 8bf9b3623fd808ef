"""pylmem: linear mixed-effects models with lme4 formulas, exact ML/REML and the EM algorithm."""
from . import datasets
from .design import ModelDesign, build_design
from .fit import ConvergenceWarning, LmerFit, fit_design, lmer

__version__ = "0.1.0"

__all__ = ["lmer", "fit_design", "LmerFit", "ConvergenceWarning", "build_design", "ModelDesign",
           "datasets", "em", "anova"]


def __getattr__(name):
    # lazily import the modules written on top of the core
    if name == "em":
        from .em import em

        return em
    if name == "anova":
        from .anova import anova

        return anova
    raise AttributeError(name)
