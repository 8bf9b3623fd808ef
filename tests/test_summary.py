"""pylmem.reports.summary against lme4 1.1-31's printed output (R 4.2.2).

The expected texts below were printed by R (``print(summary(fit))`` and ``print(fit)``)
for the same models and data, fitted with the optimizer that reaches the best optimum
(bobyqa / Nelder_Mead, as in tests/reference/make_refs.R; the ``Control:`` line dropped,
trailing blanks stripped).  The seed's male-rat model H1 is ``h1``.

Checks: every line has the same words and layout as R's line (numbers masked), and every
number agrees with R's printed number to its printed precision (1 unit in the last digit,
or 2e-5 relative for the few components where our optimum differs from lme4's in the
fifth significant digit).  The helpers (R's format, format.pval, zapsmall, abbreviate,
deparse) are checked against outputs R printed.
"""
import re
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.reports.summary import Summary, short_repr
from pylmem.util.deparse import deparse_formula
from pylmem.util.rformat import abbreviate, format_pval, format_real, r_round, zapsmall

R_SUMMARY: dict = {}
R_PRINT: dict = {}

# ------------------------------------------------------------------ lme4's output

R_SUMMARY["sleep_reml"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Reaction ~ Days + (Days | Subject)
   Data: sleepstudy

REML criterion at convergence: 1743.6

Scaled residuals:
    Min      1Q  Median      3Q     Max
-3.9536 -0.4634  0.0231  0.4634  5.1793

Random effects:
 Groups   Name        Variance Std.Dev. Corr
 Subject  (Intercept) 612.09   24.740
          Days         35.07    5.922   0.07
 Residual             654.94   25.592
Number of obs: 180, groups:  Subject, 18

Fixed effects:
            Estimate Std. Error t value
(Intercept)  251.405      6.825  36.838
Days          10.467      1.546   6.771

Correlation of Fixed Effects:
     (Intr)
Days -0.138
"""

R_PRINT["sleep_reml"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Reaction ~ Days + (Days | Subject)
   Data: sleepstudy
REML criterion at convergence: 1743.628
Random effects:
 Groups   Name        Std.Dev. Corr
 Subject  (Intercept) 24.740
          Days         5.922   0.07
 Residual             25.592
Number of obs: 180, groups:  Subject, 18
Fixed Effects:
(Intercept)         Days
     251.41        10.47
"""

R_SUMMARY["sleep_ml"] = """\
Linear mixed model fit by maximum likelihood  ['lmerMod']
Formula: Reaction ~ Days + (Days | Subject)
   Data: sleepstudy

     AIC      BIC   logLik deviance df.resid
  1763.9   1783.1   -876.0   1751.9      174

Scaled residuals:
    Min      1Q  Median      3Q     Max
-3.9416 -0.4656  0.0289  0.4636  5.1793

Random effects:
 Groups   Name        Variance Std.Dev. Corr
 Subject  (Intercept) 565.52   23.781
          Days         32.68    5.717   0.08
 Residual             654.94   25.592
Number of obs: 180, groups:  Subject, 18

Fixed effects:
            Estimate Std. Error t value
(Intercept)  251.405      6.632  37.906
Days          10.467      1.502   6.968

Correlation of Fixed Effects:
     (Intr)
Days -0.138
"""

R_PRINT["sleep_ml"] = """\
Linear mixed model fit by maximum likelihood  ['lmerMod']
Formula: Reaction ~ Days + (Days | Subject)
   Data: sleepstudy
      AIC       BIC    logLik  deviance  df.resid
1763.9393 1783.0971 -875.9697 1751.9393       174
Random effects:
 Groups   Name        Std.Dev. Corr
 Subject  (Intercept) 23.781
          Days         5.717   0.08
 Residual             25.592
Number of obs: 180, groups:  Subject, 18
Fixed Effects:
(Intercept)         Days
     251.41        10.47
"""

R_SUMMARY["sleep_uncorr"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))
   Data: sleepstudy

REML criterion at convergence: 1743.7

Scaled residuals:
    Min      1Q  Median      3Q     Max
-3.9626 -0.4625  0.0204  0.4653  5.1860

Random effects:
 Groups    Name        Variance Std.Dev.
 Subject   (Intercept) 627.57   25.051
 Subject.1 Days         35.86    5.988
 Residual              653.58   25.565
Number of obs: 180, groups:  Subject, 18

Fixed effects:
            Estimate Std. Error t value
(Intercept)  251.405      6.885  36.513
Days          10.467      1.560   6.712

Correlation of Fixed Effects:
     (Intr)
Days -0.184
"""

R_PRINT["sleep_uncorr"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))
   Data: sleepstudy
REML criterion at convergence: 1743.669
Random effects:
 Groups    Name        Std.Dev.
 Subject   (Intercept) 25.051
 Subject.1 Days         5.988
 Residual              25.565
Number of obs: 180, groups:  Subject, 18
Fixed Effects:
(Intercept)         Days
     251.41        10.47
"""

R_SUMMARY["h1"] = """\
Linear mixed model fit by maximum likelihood  ['lmerMod']
Formula: weight ~ week + week:regime + week2 + week2:regime + (week +
    week2 | id)
   Data: dm

     AIC      BIC   logLik deviance df.resid
  8982.2   9042.4  -4479.1   8958.2     1103

Scaled residuals:
     Min       1Q   Median       3Q      Max
-12.6689  -0.4325   0.0200   0.4659   6.1625

Random effects:
 Groups   Name        Variance Std.Dev. Corr
 id       (Intercept) 154.7321 12.4391
          week         47.5969  6.8991  -0.34
          week2         0.1041  0.3227   0.33 -0.89
 Residual             103.8250 10.1895
Number of obs: 1115, groups:  id, 80

Fixed effects:
                 Estimate Std. Error t value
(Intercept)     195.45583    1.75072 111.643
week             43.90091    1.11973  39.207
week2            -1.55143    0.05600 -27.704
week:regimeGMO   -2.55628    1.48454  -1.722
regimeGMO:week2   0.14291    0.07399   1.931

Correlation of Fixed Effects:
            (Intr) week   week2  wk:GMO
week        -0.348
week2        0.353 -0.888
week:rgmGMO  0.000 -0.663  0.577
regmGMO:wk2 -0.001  0.580 -0.663 -0.873
"""

R_PRINT["h1"] = """\
Linear mixed model fit by maximum likelihood  ['lmerMod']
Formula: weight ~ week + week:regime + week2 + week2:regime + (week +
    week2 | id)
   Data: dm
      AIC       BIC    logLik  deviance  df.resid
 8982.181  9042.380 -4479.090  8958.181      1103
Random effects:
 Groups   Name        Std.Dev. Corr
 id       (Intercept) 12.4391
          week         6.8991  -0.34
          week2        0.3227   0.33 -0.89
 Residual             10.1895
Number of obs: 1115, groups:  id, 80
Fixed Effects:
    (Intercept)             week            week2   week:regimeGMO
       195.4558          43.9009          -1.5514          -2.5563
regimeGMO:week2
         0.1429
"""

R_SUMMARY["pen"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: diameter ~ 1 + (1 | plate) + (1 | sample)
   Data: Penicillin

REML criterion at convergence: 330.9

Scaled residuals:
     Min       1Q   Median       3Q      Max
-2.07923 -0.67140  0.06292  0.58377  2.97958

Random effects:
 Groups   Name        Variance Std.Dev.
 plate    (Intercept) 0.7169   0.8467
 sample   (Intercept) 3.7309   1.9316
 Residual             0.3024   0.5499
Number of obs: 144, groups:  plate, 24; sample, 6

Fixed effects:
            Estimate Std. Error t value
(Intercept)  22.9722     0.8086   28.41
"""

R_PRINT["pen"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: diameter ~ 1 + (1 | plate) + (1 | sample)
   Data: Penicillin
REML criterion at convergence: 330.8606
Random effects:
 Groups   Name        Std.Dev.
 plate    (Intercept) 0.8467
 sample   (Intercept) 1.9316
 Residual             0.5499
Number of obs: 144, groups:  plate, 24; sample, 6
Fixed Effects:
(Intercept)
      22.97
"""

R_SUMMARY["pastes"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: strength ~ 1 + (1 | batch/cask)
   Data: Pastes

REML criterion at convergence: 247

Scaled residuals:
    Min      1Q  Median      3Q     Max
-1.4798 -0.5156  0.0095  0.4720  1.3897

Random effects:
 Groups     Name        Variance Std.Dev.
 cask:batch (Intercept) 8.434    2.9041
 batch      (Intercept) 1.657    1.2874
 Residual               0.678    0.8234
Number of obs: 60, groups:  cask:batch, 30; batch, 10

Fixed effects:
            Estimate Std. Error t value
(Intercept)  60.0533     0.6769   88.72
"""

R_PRINT["pastes"] = """\
Linear mixed model fit by REML ['lmerMod']
Formula: strength ~ 1 + (1 | batch/cask)
   Data: Pastes
REML criterion at convergence: 246.9907
Random effects:
 Groups     Name        Std.Dev.
 cask:batch (Intercept) 2.9041
 batch      (Intercept) 1.2874
 Residual               0.8234
Number of obs: 60, groups:  cask:batch, 30; batch, 10
Fixed Effects:
(Intercept)
      60.05
"""

R_SUMMARY["dye"] = """\
Linear mixed model fit by maximum likelihood  ['lmerMod']
Formula: Yield ~ 1 + (1 | Batch)
   Data: Dyestuff

     AIC      BIC   logLik deviance df.resid
   333.3    337.5   -163.7    327.3       27

Scaled residuals:
    Min      1Q  Median      3Q     Max
-1.4315 -0.7972  0.1480  0.7721  1.8037

Random effects:
 Groups   Name        Variance Std.Dev.
 Batch    (Intercept) 1388     37.26
 Residual             2451     49.51
Number of obs: 30, groups:  Batch, 6

Fixed effects:
            Estimate Std. Error t value
(Intercept)  1527.50      17.69   86.33
"""

R_PRINT["dye"] = """\
Linear mixed model fit by maximum likelihood  ['lmerMod']
Formula: Yield ~ 1 + (1 | Batch)
   Data: Dyestuff
      AIC       BIC    logLik  deviance  df.resid
 333.3271  337.5307 -163.6635  327.3271        27
Random effects:
 Groups   Name        Std.Dev.
 Batch    (Intercept) 37.26
 Residual             49.51
Number of obs: 30, groups:  Batch, 6
Fixed Effects:
(Intercept)
       1527
"""


# ------------------------------------------------------------------ fits

def _data(name):
    if name == "dm":
        d = pylmem.datasets.load("ratWeight")
        d["week2"] = d["week"] ** 2
        return d[d["gender"] == "Male"]
    return pylmem.datasets.load(name)


CASES = {
    "sleep_reml": ("Reaction ~ Days + (Days|Subject)", "sleepstudy", True),
    "sleep_ml": ("Reaction ~ Days + (Days|Subject)", "sleepstudy", False),
    "sleep_uncorr": ("Reaction ~ Days + (Days||Subject)", "sleepstudy", True),
    "h1": ("weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)", "dm", False),
    "pen": ("diameter ~ 1 + (1|plate) + (1|sample)", "Penicillin", True),
    "pastes": ("strength ~ 1 + (1|batch/cask)", "Pastes", True),
    "dye": ("Yield ~ 1 + (1|Batch)", "Dyestuff", False),
}


@lru_cache(maxsize=None)
def fit_of(tag):
    formula, data, reml = CASES[tag]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pylmem.lmer(formula, _data(data), reml=reml)


# ------------------------------------------------------------------ comparison helpers

NUM = re.compile(r"(?<![A-Za-z0-9_.(])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![A-Za-z_(])")


def _numbers(line):
    return NUM.findall(line)


def _unit(s):
    """Value of one unit in the last printed digit of the R number string ``s``."""
    m = re.fullmatch(r"[-+]?(\d*)(?:\.(\d*))?(?:e([-+]?\d+))?", s)
    dec = len(m.group(2) or "")
    ex = int(m.group(3) or 0)
    return 10.0 ** (ex - dec)


def _mask(line):
    return NUM.sub("#", line)


def compare_lines(ours: str, theirs: str, rel: float = 2e-5):
    a, b = ours.rstrip("\n").split("\n"), theirs.rstrip("\n").split("\n")
    a = [ln.rstrip() for ln in a]
    b = [ln.rstrip() for ln in b]
    assert len(a) == len(b), "\n".join(["line counts differ", ours, "----", theirs])
    for la, lb in zip(a, b):
        # words identical, number positions identical up to the width of the numbers
        assert " ".join(_mask(la).split()) == " ".join(_mask(lb).split()), (la, lb)
        na, nb = _numbers(la), _numbers(lb)
        assert len(na) == len(nb), (la, lb)
        for x, y in zip(na, nb):
            tol = 1.01 * _unit(y) + rel * abs(float(y))
            assert abs(float(x) - float(y)) <= tol, (la, lb, x, y)


def test_compare_lines_can_fail():
    with pytest.raises(AssertionError):
        compare_lines("Days  10.467  1.546", "Days  10.467  1.548")
    with pytest.raises(AssertionError):
        compare_lines("Days  10.467", "Hours  10.467")
    compare_lines("Days  10.467  1.546", "Days  10.467  1.547")


# ------------------------------------------------------------------ whole outputs

@pytest.mark.parametrize("tag", list(CASES))
def test_summary_matches_lme4(tag):
    s = Summary(fit_of(tag), data_name=_data_name(tag))
    compare_lines(str(s), R_SUMMARY[tag])


@pytest.mark.parametrize("tag", list(CASES))
def test_print_matches_lme4(tag):
    compare_lines(short_repr(fit_of(tag), data_name=_data_name(tag)), R_PRINT[tag])


def _data_name(tag):
    return CASES[tag][1]


def test_sleepstudy_summary_is_lme4s_text():
    """sleepstudy REML: identical, character for character, to lme4's print."""
    fit = fit_of("sleep_reml")
    assert str(Summary(fit, data_name="sleepstudy")) == R_SUMMARY["sleep_reml"].rstrip("\n")
    assert str(fit.summary()) == "\n".join(
        ln for ln in R_SUMMARY["sleep_reml"].rstrip("\n").split("\n") if "Data:" not in ln)
    assert repr(fit) == "\n".join(
        ln for ln in R_PRINT["sleep_reml"].rstrip("\n").split("\n") if "Data:" not in ln)


def test_seed_h1_layout():
    """The seed's summary(lmer.H1): headings, table layout and column alignment."""
    lines = str(Summary(fit_of("h1"), data_name="dm")).split("\n")
    want = R_SUMMARY["h1"].rstrip("\n").split("\n")
    assert lines[0] == "Linear mixed model fit by maximum likelihood  ['lmerMod']"
    assert lines[1:3] == want[1:3]      # the formula broken as R's deparse breaks it
    for head in ["Scaled residuals:", "Random effects:", "Fixed effects:",
                 "Correlation of Fixed Effects:"]:
        assert head in lines
    i = lines.index("Fixed effects:")
    assert lines[i + 1] == want[i + 1]  # header of the coefficient table
    # right edges of the numbers line up under their headers
    hdr = lines[i + 1]
    for row in lines[i + 2:i + 7]:
        assert len(row) == len(hdr)
    j = lines.index("Correlation of Fixed Effects:")
    assert lines[j + 1].split() == ["(Intr)", "week", "week2", "wk:GMO"]
    assert [ln.split()[0] for ln in lines[j + 2:j + 6]] == ["week", "week2", "week:rgmGMO",
                                                           "regmGMO:wk2"]
    r = lines.index("Random effects:")
    assert lines[r + 1].split() == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    assert lines[r + 4].split()[-2:] == ["0.33", "-0.89"]
    assert "Number of obs: 1115, groups:  id, 80" in lines


# ------------------------------------------------------------------ the pieces as DataFrames

def test_summary_frames():
    s = Summary(fit_of("h1"))
    assert list(s.fixed.columns) == ["Estimate", "Std. Error", "t value"]
    np.testing.assert_allclose(s.fixed["Estimate"], [195.45583, 43.90091, -1.55143, -2.55628,
                                                     0.14291], atol=2e-5)
    np.testing.assert_allclose(s.fixed["Std. Error"], [1.75072, 1.11973, 0.05600, 1.48454,
                                                       0.07399], rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(s.fixed["t value"], [111.643, 39.207, -27.704, -1.722, 1.931],
                               atol=2e-3)
    np.testing.assert_allclose(s.resid_quantiles, [-12.6689, -0.4325, 0.0200, 0.4659, 6.1625],
                               atol=1e-4)
    assert list(s.resid_quantiles.index) == ["Min", "1Q", "Median", "3Q", "Max"]
    assert list(s.random.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    var = s.random[s.random["var2"].isna()]
    assert list(var["grp"]) == ["id", "id", "id", "Residual"]
    np.testing.assert_allclose(var["vcov"], [154.7321, 47.5969, 0.1041, 103.8250],
                               rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(var["sdcor"], [12.4391, 6.8991, 0.3227, 10.1895], atol=1e-4)
    cor = s.random[s.random["var2"].notna()]
    np.testing.assert_allclose(cor["sdcor"], [-0.34, 0.33, -0.89], atol=5e-3)
    assert s.criteria["df.resid"] == 1103
    assert s.criteria["AIC"] == pytest.approx(8982.181, abs=1e-3)


def test_summary_frames_reml():
    s = Summary(fit_of("sleep_reml"))
    assert list(s.criteria.index) == ["REML"]
    assert s.criteria["REML"] == pytest.approx(1743.628, abs=1e-3)
    np.testing.assert_allclose(s.resid_quantiles, [-3.9536, -0.4634, 0.0231, 0.4634, 5.1793],
                               atol=1e-4)
    np.testing.assert_allclose(s.corr_fixef.iloc[1, 0], -0.138, atol=5e-4)


# ------------------------------------------------------------------ special cases

DYESTUFF2 = pd.DataFrame({
    "Yield": [7.298, 3.846, 2.434, 9.566, 7.99, 5.22, 6.556, 0.608, 11.788, -0.892, 0.11, 10.386,
              13.434, 5.51, 8.166, 2.212, 4.852, 7.092, 9.288, 4.98, 0.282, 9.014, 4.458, 9.446,
              7.198, 1.722, 4.782, 8.106, 0.758, 3.758],
    "Batch": list("AAAAABBBBBCCCCCDDDDDEEEEEFFFFF")})

R_SUMMARY_DYESTUFF2 = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Yield ~ 1 + (1 | Batch)
   Data: Dyestuff2

REML criterion at convergence: 161.8

Scaled residuals:
    Min      1Q  Median      3Q     Max
-1.7648 -0.7806 -0.0809  0.6689  2.0907

Random effects:
 Groups   Name        Variance Std.Dev.
 Batch    (Intercept)  0.00    0.000
 Residual             13.81    3.716
Number of obs: 30, groups:  Batch, 6

Fixed effects:
            Estimate Std. Error t value
(Intercept)   5.6656     0.6784   8.352
optimizer (nloptwrap) convergence code: 0 (OK)
boundary (singular) fit: see help(pylmem.LmerFit.is_singular)
"""


def test_singular_fit_prints_lme4_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pylmem.lmer("Yield ~ 1 + (1|Batch)", DYESTUFF2)
    assert fit.is_singular
    text = str(Summary(fit, data_name="Dyestuff2"))
    lines = text.split("\n")
    want = R_SUMMARY_DYESTUFF2.rstrip("\n").split("\n")
    compare_lines("\n".join(lines[:-3]), "\n".join(want[:-2]))
    assert lines[-3].startswith("optimizer (")
    assert "convergence code: 0 (OK)" in lines[-3]
    assert lines[-2] == "boundary (singular) fit: see help(pylmem.LmerFit.is_singular)"
    assert "lme4 warnings" in repr(fit).split("\n")[-1]


def test_no_correlation_block_for_one_coefficient():
    text = str(Summary(fit_of("pen")))
    assert "Correlation of Fixed Effects" not in text


def test_large_p_correlation_message():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pylmem.lmer("diameter ~ plate + (1|sample)", pylmem.datasets.load("Penicillin"))
    text = str(fit.summary())
    assert "Correlation matrix not shown by default, as p = 24 > 12." in text
    assert "Correlation of Fixed Effects" not in text


def test_rank_deficient_fit_warning():
    d = pylmem.datasets.load("sleepstudy")
    d["Days2"] = 2 * d["Days"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pylmem.lmer("Reaction ~ Days + Days2 + (1|Subject)", d)
    text = str(fit.summary())
    assert "fit warnings:\nfixed-effect model matrix is rank deficient so dropping 1 column / " \
           "coefficient" in text


# ------------------------------------------------------------------ R's formatting rules
# (expected strings printed by R 4.2.2)

@pytest.mark.parametrize("x,digits,nsmall,want", [
    ([612.0897, 35.07166, 654.941], 4, 0, ["612.09", " 35.07", "654.94"]),
    ([154.7321, 47.5969, 0.1041052, 103.825], 4, 0, ["154.7321", " 47.5969", "  0.1041",
                                                      "103.8250"]),
    ([2.383e+01, 2.366e-14, -6.667e-01], 4, 0, [" 2.383e+01", " 2.366e-14", "-6.667e-01"]),
    ([1e-10, 1], 4, 0, ["1e-10", "1e+00"]),
    ([123456789, 1.5], 4, 0, ["1.235e+08", "1.500e+00"]),
    ([0.000012345, 0.5], 3, 0, ["1.23e-05", "5.00e-01"]),
    ([-0.5, 0.25, 100], 7, 0, [" -0.50", "  0.25", "100.00"]),
    ([9996, 1], 3, 0, ["9996", "   1"]),
    ([1, -0.348, 0.353, 0.0004, -0.0004], 7, 3, [" 1.000", "-0.348", " 0.353", " 0.000",
                                                 " 0.000"]),
])
def test_format_real(x, digits, nsmall, want):
    if nsmall:
        x = r_round(x, 3)
    assert format_real(x, digits, nsmall=nsmall) == want


def test_format_pval_and_zapsmall():
    assert format_pval([0.1614, 1.226e-06, 1e-20, 0.5], 4) == ["0.1614", "1.226e-06",
                                                               "< 2.2e-16", "0.5000"]
    assert format_pval([0.1614, 0.04], 4) == ["0.1614", "0.0400"]
    assert format_pval([1e-20], 4) == ["< 2.2e-16"]
    np.testing.assert_array_equal(zapsmall([-12.66894, -0.43251, 0.019983, 0.465912, 6.162511], 5),
                                  [-12.6689, -0.4325, 0.02, 0.4659, 6.1625])
    np.testing.assert_array_equal(zapsmall([17402.700, 16987.491], 5), [17402.7, 16987.5])


NAMES = ["(Intercept)", "Days", "recipeB", "recipeC", "temperature", "recipeB:temperature",
         "recipeC:temperature", "genderMale", "serviceTRUE", "I(Days^2)", "log(x + 1)"]


def test_abbreviate():
    assert abbreviate(NAMES, 6) == ["(Intr)", "Days", "recipB", "recipC", "tmprtr", "rcpB:t",
                                    "rcpC:t", "gndrMl", "srTRUE", "I(D^2)", "lg(+1)"]
    assert abbreviate(NAMES, 11) == ["(Intercept)", "Days", "recipeB", "recipeC", "temperature",
                                     "rcpB:tmprtr", "rcpC:tmprtr", "genderMale", "serviceTRUE",
                                     "I(Days^2)", "log(x + 1)"]
    assert abbreviate(["week:regimeGMO", "regimeGMO:week2", "genderMale:week",
                       "genderMale:week2"], 6) == ["wk:GMO", "rGMO:2", "gndrM:", "gndM:2"]


def test_deparse_formula():
    assert deparse_formula("y ~ a*b + I(x^2) + poly(x, 2) + (1 + x | g/h) + (0 + z || k) + "
                           "log(w):f", expand_double_verts=False) == [
        "y ~ a * b + I(x^2) + poly(x, 2) + (1 + x | g/h) + (0 + z || k) + ", "    log(w):f"]
    assert deparse_formula("y ~ a + (x + z || g)") == [
        "y ~ a + ((1 | g) + (0 + x | g) + (0 + z | g))"]
    assert deparse_formula("response_variable_long ~ predictor_one + predictor_two * "
                           "predictor_three + (predictor_one + predictor_two | grouping_factor)") == [
        "response_variable_long ~ predictor_one + predictor_two * predictor_three + ",
        "    (predictor_one + predictor_two | grouping_factor)"]


def test_summary_counts_rows_dropped_for_missing_values():
    import numpy as np

    import pylmem

    d = pylmem.datasets.load("sleepstudy")
    d.loc[:4, "Reaction"] = np.nan
    d.loc[7, "Days"] = np.nan
    fit = pylmem.lmer("Reaction ~ Days + (Days | Subject)", d)
    lines = str(fit.summary()).splitlines()
    i = lines.index("Number of obs: 174, groups:  Subject, 18")
    assert lines[i + 1] == "(6 observations deleted due to missingness)"
    assert "(6 observations deleted due to missingness)" in repr(fit)
