"""lme4 formula parsing, column naming as lme4, missing values, and input errors."""
import numpy as np
import pytest

import pylmem
from pylmem.model.design import build_design
from pylmem.model.formula import parse_formula


@pytest.fixture(scope="module")
def rats():
    d = pylmem.datasets.load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d


def test_parse_random_bars():
    p = parse_formula("weight ~ gender*week + (week + week2 | id) + (1 | a/b) + (x || g:h)")
    assert p.response == "weight"
    assert p.fixed == "gender*week"
    got = [(r.expr, r.group, r.correlated) for r in p.random]
    assert got == [("week + week2", ("id",), True), ("1", ("a",), True), ("1", ("b", "a"), True),
                   ("x", ("g", "h"), False)]
    assert parse_formula("y ~ (1 | g)").fixed == "1"
    assert parse_formula("y ~ 0 + x + (1 | g)").fixed == "0 + x"
    assert parse_formula("y ~ x - 1 + (1 | g)").fixed == "x - 1"


@pytest.mark.parametrize("formula, names", [
    ("weight ~ gender*week + gender*week2 + (week + week2 | id)",
     ["(Intercept)", "genderMale", "week", "week2", "genderMale:week", "genderMale:week2"]),
    ("weight ~ week + week:regime + week2 + week2:regime + (week + week2 | id)",
     ["(Intercept)", "week", "week2", "week:regimeGMO", "regimeGMO:week2"]),
    ("weight ~ week + I(week^2) + (1 | id)", ["(Intercept)", "week", "I(week^2)"]),
    ("weight ~ 0 + gender + (1 | id)", ["genderFemale", "genderMale"]),
    ("weight ~ week - 1 + (1 | id)", ["week"]),
    ("weight ~ factor(dosage) + (1 | id)", ["(Intercept)", "factor(dosage)33%"]),
])
def test_fixed_effect_names_follow_lme4(rats, formula, names):
    assert build_design(formula, rats).fixef_names == names


def test_i_power_is_a_power(rats):
    m = build_design("weight ~ I(week^2) + (1 | id)", rats)
    np.testing.assert_allclose(np.sort(m.X[:, 1]), np.sort(rats["week"].to_numpy() ** 2.0))


def test_random_term_design_and_sorting(rats):
    m = build_design("weight ~ week + (week + week2 | id)", rats)
    (t,) = m.terms
    assert t.coef_names == ["(Intercept)", "week", "week2"]
    assert t.n_levels == 160 and t.Z.shape == (2235, 3)
    assert np.all(np.diff(t.codes) >= 0)           # sorted once by group
    np.testing.assert_allclose(t.Z[:, 2], m.X[:, 1] ** 2)
    # rows map back to the data
    np.testing.assert_allclose(m.y, rats.loc[m.row_labels, "weight"].to_numpy())


def test_terms_ordered_by_levels_and_named_as_lme4():
    m = build_design("y ~ 1 + service + (1 | dept:service) + (1 | d) + (1 | s)",
                     pylmem.datasets.load("InstEval"))
    assert [t.name for t in m.terms] == ["s", "d", "dept:service"]
    assert [t.n_levels for t in m.terms] == [2972, 1128, 28]


def test_missing_values_dropped_and_counted(rats):
    d = rats.copy()
    d.loc[d.index[:7], "weight"] = np.nan
    d.loc[d.index[10:13], "gender"] = None
    d.loc[d.index[20], "regime"] = None  # unused column: does not drop the row
    fit = pylmem.lmer("weight ~ gender + week + (1 | id)", d, reml=False)
    assert fit.n_dropped == 10
    assert fit.n_obs == len(d) - 10


@pytest.mark.parametrize("formula, match", [
    ("weight ~ week + nosuch + (1 | id)", "nosuch"),
    ("weight ~ week + (1 | nosuchgroup)", "nosuchgroup"),
    ("weight ~ week + (nosuch | id)", "nosuch"),
    ("nosuch ~ week + (1 | id)", "nosuch"),
    ("gender ~ week + (1 | id)", "not numeric"),
    ("weight ~ week + (1 | )", "grouping factor"),
    ("weight ~ week", "no random-effects term"),
    ("weight week", "response"),
    ("weight ~ week + (1 | id", "parenthes"),
])
def test_bad_input_raises_clear_error(rats, formula, match):
    with pytest.raises(ValueError, match=match):
        pylmem.lmer(formula, rats)


def test_rank_deficient_columns_dropped_with_warning(rats):
    d = rats.copy()
    d["week_copy"] = d["week"] * 2.0
    with pytest.warns(UserWarning, match="rank deficient.*week_copy"):
        m = build_design("weight ~ week + week_copy + (1 | id)", d)
    assert m.fixef_names == ["(Intercept)", "week"]


def test_factor_option_makes_numeric_column_categorical():
    d = pylmem.datasets.load("sleepstudy")
    d["Subject"] = d["Subject"].astype(int)
    d["day_f"] = d["Days"]
    m = build_design("Reaction ~ day_f + (1 | Subject)", d, factors=["day_f"])
    assert m.fixef_names[:3] == ["(Intercept)", "day_f1", "day_f2"]
    assert len(m.fixef_names) == 10


@pytest.mark.parametrize("change, match", [
    (lambda d: d.assign(Reaction=d.Reaction.where(d.index != 3, np.inf)), r"response.*'Reaction' \(1 rows\)"),
    (lambda d: d.assign(Days=d.Days.where(d.index > 1, -np.inf)), r"fixed-effects.*'Days' \(2 rows\)"),
    (lambda d: d.assign(Reaction=2.0 + 3.0 * d.Days), "fitted exactly by the fixed effects"),
    (lambda d: d.assign(Subject="a"), "'Subject' has 1 level"),
])
def test_degenerate_input_raises_clear_error(change, match):
    d = change(pylmem.datasets.load("sleepstudy"))
    with pytest.raises(ValueError, match=match):
        pylmem.lmer("Reaction ~ Days + (Days | Subject)", d)
