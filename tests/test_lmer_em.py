"""lmer(method="em"): the accelerated EM reaches the profiled optimum (lme4's best or higher)."""
import numpy as np
import pytest

import pylmem
from conftest import REFERENCE, reference_data, reference_fit


@pytest.mark.parametrize("name, floor", [("rat_poly_ml", -8691.3502), ("rat_gender_ml", -8480.7455),
                                         ("rat_male_h1_ml", None), ("sleepstudy_ml", None)])
def test_em_fit_reaches_the_maximum(name, floor):
    ref = REFERENCE[name]
    fit = pylmem.lmer(ref["formula"], reference_data(name), reml=False, method="em")
    assert fit.converged and fit.method == "em"
    assert fit.em_result.n_iter < 100           # plain EM needs thousands on the rat models
    assert fit.loglik > ref["loglik"] - 1e-6 * abs(ref["loglik"])
    if floor is not None:
        assert fit.loglik >= floor
    prof = reference_fit(name)
    np.testing.assert_allclose(fit.fixef, prof.fixef, rtol=1e-5)
    np.testing.assert_allclose(fit.cov_re["id" if name.startswith("rat") else "Subject"],
                               list(prof.cov_re.values())[0], rtol=1e-3)


def test_em_rejects_reml_and_several_terms():
    d = pylmem.datasets.load("Penicillin")
    with pytest.raises(ValueError, match="reml=False"):
        pylmem.lmer("diameter ~ 1 + (1 | plate)", d, method="em")
    with pytest.raises(ValueError, match="exactly one random-effects term"):
        pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", d, reml=False, method="em")
    with pytest.raises(ValueError, match="method"):
        pylmem.lmer("diameter ~ 1 + (1 | plate)", d, method="newton")
