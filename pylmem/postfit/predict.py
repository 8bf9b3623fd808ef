"""Predictions from a fit, as lme4's ``predict.merMod``.

``predict(fit)`` gives the conditional fitted values Xβ̂ + Zb̂ (``re_form=None``) or the
population-level Xβ̂ (``re_form="~0"``, ``"NA"``, ``False``), in the data's row order.
With ``newdata`` the fixed-effects model matrix and each random-effects term's design are
rebuilt from the stored formulaic specs, after newdata is mapped onto the fit's levels and
categories by value (:mod:`pylmem.postfit.newdata`: its dtypes and category sets change
nothing).  As in lme4, a level of a grouping factor not seen in the fit (an id typo, int
``308`` against str ``"308"``, a Categorical category without rows at fit time) is an error
naming the factor, the number of such levels and rows; ``allow_new_levels=True`` predicts
those rows at population level (random effects 0).  An unseen level of a fixed-effect
factor always raises.  A failed call leaves the fit unchanged.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..model.tables import as_pandas
from .intervals import predict_with_se
from .newdata import combine_rows, fitted_prediction, newdata_rows, selected_terms
from .reform import partial_terms


def predict(fit, newdata: pd.DataFrame | None = None, *, re_form=None,
            allow_new_levels: bool = False, se_fit: bool = False, interval=None,
            level: float = 0.95):
    """Predictions from ``fit`` (lme4's ``predict``).

    ``se_fit`` / ``interval`` ("confidence" or "prediction", at ``level``): a DataFrame with
    columns fit, se_fit, lwr, upr instead (see :mod:`pylmem.postfit.intervals`).

    ``re_form``: None (all random effects), "~0" / "NA" / False (population level Xβ̂),
    or a one-sided formula naming some of the model's random-effects terms, or part of
    one (``"~(1|Subject)"`` on ``(Days|Subject)``: only the named columns' modes, as lme4).
    ``allow_new_levels``: False (lme4's default): a level of a grouping factor absent from
    the fit is a ValueError naming the factor and levels; True: such rows get random
    effects 0 (the population-level prediction for that term).
    Returns a Series indexed like the data (``newdata`` or the fitted data).
    """
    if not isinstance(allow_new_levels, (bool, np.bool_)):
        raise ValueError(f"allow_new_levels must be True or False, got {allow_new_levels!r}")
    if newdata is not None:
        newdata = as_pandas(newdata, "newdata")
    part = partial_terms(fit, re_form)   # re_form naming part of a term (pylmem.postfit.reform)
    if part is not None and (se_fit or interval is not None):
        raise ValueError("se_fit/interval with a re_form naming part of a random-effects term "
                         "is not supported: name whole terms")
    if se_fit or interval is not None:
        return predict_with_se(fit, newdata, re_form=re_form, allow_new_levels=allow_new_levels,
                               se_fit=se_fit, interval=interval, level=level)
    fit, sel = part if part is not None else (fit, selected_terms(fit, re_form))
    if newdata is None:
        return fitted_prediction(fit, sel)
    if not isinstance(newdata, pd.DataFrame):
        raise ValueError("newdata must be a pandas DataFrame")
    X, offset, Zs, codes = newdata_rows(fit, newdata, sel, allow_new_levels)
    return pd.Series(combine_rows(fit, X, offset, Zs, codes, sel), index=newdata.index,
                     name="predicted")
