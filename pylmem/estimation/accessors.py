"""lme4's accessors that read only the design, β̂ and the conditional modes, shared by the
fitted states of linear (:class:`~pylmem.estimation.state.FitState`) and generalized
(:class:`~pylmem.estimation.glmm_state.GlmmState`) mixed models.

A state using :class:`ModelAccessors` provides ``design``, ``beta``, ``modes`` (b_k per
term, (L_k, q_k)), ``vcov`` and ``cov_re``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def varcorr_rows(cov_re: dict) -> list:
    """Rows (grp, var1, var2, vcov, sdcor) of lme4's ``as.data.frame(VarCorr(fit))`` for the
    random-effects terms: variances, then covariances with var1 the earlier coefficient."""
    rows = []
    for name, C in cov_re.items():
        sd = np.sqrt(np.diag(C.to_numpy()))
        names = list(C.index)
        for i, a in enumerate(names):
            rows.append((name, a, None, C.iloc[i, i], sd[i]))
        for j in range(len(names)):
            for i in range(j + 1, len(names)):
                den = sd[i] * sd[j]
                rows.append((name, names[j], names[i], C.iloc[i, j],
                             C.iloc[i, j] / den if den > 0 else np.nan))
    return rows


VARCORR_COLUMNS = ["grp", "var1", "var2", "vcov", "sdcor"]


class ModelAccessors:
    """n_obs, n_dropped, n_groups, fixef, corr_fixef, ranef, coef and data_series."""

    @property
    def n_obs(self) -> int:
        """Number of observations used (lme4's ``nobs``): rows with missing values excluded."""
        return self.design.n_obs

    @property
    def n_dropped(self) -> int:
        """Rows dropped for missing values."""
        return self.design.n_dropped

    @property
    def n_groups(self) -> dict:
        """Number of levels of each grouping factor (lme4's ngrps)."""
        out: dict = {}
        for t in self.design.terms:
            out.setdefault(":".join(t.group), t.n_levels)
        return out

    @property
    def fixef(self) -> pd.Series:
        """The fixed effects β̂, named (lme4's fixef)."""
        return pd.Series(self.beta, index=self.design.fixef_names, name="Estimate")

    @property
    def corr_fixef(self) -> pd.DataFrame:
        """Correlation matrix of β̂ (lme4's "Correlation of Fixed Effects")."""
        V = self.vcov.to_numpy()
        s = np.sqrt(np.diag(V))
        return pd.DataFrame(V / np.outer(s, s), index=self.vcov.index, columns=self.vcov.columns)

    @property
    def ranef(self) -> dict:
        """Conditional modes of the random effects (BLUPs): name -> DataFrame levels × coefs."""
        return {t.name: pd.DataFrame(b, index=pd.Index(t.levels, name=t.name), columns=t.coef_names)
                for t, b in zip(self.design.terms, self.modes)}

    @property
    def coef(self) -> dict:
        """Fixed plus random effects per level (lme4's coef)."""
        out = {}
        fe = self.fixef
        for name, re in self.ranef.items():
            df = pd.DataFrame(np.repeat(fe.to_numpy()[None, :], len(re), axis=0),
                              index=re.index, columns=fe.index)
            for c in re.columns:
                df[c] = df[c] + re[c] if c in df.columns else re[c]
            out[name] = df
        return out

    def data_series(self, a: np.ndarray, name: str) -> pd.Series:
        """A per-row array in model order as a Series in the data's row order.

        Parameters
        ----------
        a : numpy.ndarray
            One value per used row, in model order.
        name : str
            The Series' name.

        Returns
        -------
        pandas.Series
            Indexed by the data's index labels of the rows used.
        """
        d = self.design
        return pd.Series(d.to_data_order(a), index=d.to_data_order(d.row_labels), name=name)
