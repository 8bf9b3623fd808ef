"""Printed forms of a fit (placeholder: the full lme4 layout lives in Summary)."""


def short_repr(fit) -> str:
    return (f"Linear mixed model fit by {'REML' if fit.reml else 'maximum likelihood'}: "
            f"{fit.formula}  logLik={fit.loglik:.4f}")


class Summary:
    def __init__(self, fit):
        self.fit = fit

    def __str__(self):
        return short_repr(self.fit)
