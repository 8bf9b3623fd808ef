"""Benchmark cases for ``compare.py``: the model formulas and the data they are fitted to.

Each :class:`Case` names a formula in lme4 syntax, whether it is fitted by REML or ML,
the columns that are grouping factors (categorical), and a ``load()`` returning the
pandas DataFrame.  The simulated cases are deterministic (fixed seeds), so every
process that calls ``load()`` -- the benchmark workers for each library -- fits the
very same numbers; R reads the same frame written to CSV (``write_csv``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd


@dataclass
class Case:
    name: str
    formula: str                   # lme4 syntax, used for pylmem, lme4 and mixedlm
    reml: bool
    factors: tuple                 # categorical columns (strings in the frame, factors in R)
    load: Callable[[], pd.DataFrame]
    description: str = ""
    large: bool = False            # dropped by --quick
    # statsmodels MixedLM translation: dict(formula=, groups=, re_formula=, vc_formula=)
    # or None when statsmodels cannot express the model
    statsmodels: dict | None = field(default=None)


# ----------------------------------------------------------------------------- real data
def _rat() -> pd.DataFrame:
    from pylmem.datasets import load

    d = load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d


def _dataset(name: str) -> Callable[[], pd.DataFrame]:
    def f() -> pd.DataFrame:
        from pylmem.datasets import load

        return load(name)

    f.__name__ = f"load_{name}"
    return f


def _insteval() -> pd.DataFrame:
    from pylmem.datasets import load

    d = load("InstEval")
    # statsmodels has no ':' for a grouping factor: a ready-made interaction column
    d["dept_service"] = d["dept"] + "_" + d["service"]
    return d


# ----------------------------------------------------------------------------- simulators
# Ω for (intercept, x, x2): SDs 2.0, 0.5, 0.3 with correlations -0.3, 0.2, 0.1; σ² = 1.
SIM_SD = np.array([2.0, 0.5, 0.3])
SIM_CORR = np.array([[1.0, -0.3, 0.2],
                     [-0.3, 1.0, 0.1],
                     [0.2, 0.1, 1.0]])
SIM_OMEGA = SIM_CORR * np.outer(SIM_SD, SIM_SD)
SIM_BETA = np.array([10.0, 1.5, -0.5])
SIM_SIGMA = 1.0


def simulate_single(n_obs: int, per_group: int = 10, seed: int = 20240601) -> pd.DataFrame:
    """``y ~ x + x2 + (x + x2 | g)``: one grouping factor, ``per_group`` rows per level.

    x is a standardised "time" (0..per_group-1, centred and scaled, plus jitter) and
    x2 = x**2, like the rat growth curves; random effects are drawn from N(0, SIM_OMEGA).
    """
    rng = np.random.default_rng(seed)
    n_groups = n_obs // per_group
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    t = np.tile(np.arange(per_group, dtype=float), n_groups)
    x = (t - (per_group - 1) / 2) / (per_group / 3.5) + rng.normal(0.0, 0.1, n)
    x2 = x ** 2
    b = rng.multivariate_normal(np.zeros(3), SIM_OMEGA, size=n_groups)
    y = (SIM_BETA[0] + b[g, 0]) + (SIM_BETA[1] + b[g, 1]) * x + (SIM_BETA[2] + b[g, 2]) * x2 \
        + rng.normal(0.0, SIM_SIGMA, n)
    return pd.DataFrame({"y": y, "x": x, "x2": x2, "g": np.char.add("g", g.astype(str))})


def simulate_crossed(n_obs: int = 100_000, n_a: int = 1000, n_b: int = 200,
                     seed: int = 20240602) -> pd.DataFrame:
    """``y ~ x + (1 | a) + (1 | b)``: two crossed factors, each row a random (a, b) cell."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_a, n_obs)
    b = rng.integers(0, n_b, n_obs)
    # make sure every level is present
    a[:n_a] = np.arange(n_a)
    b[:n_b] = np.arange(n_b)
    x = rng.normal(0.0, 1.0, n_obs)
    ua = rng.normal(0.0, 1.0, n_a)      # SD 1.0
    ub = rng.normal(0.0, 0.5, n_b)      # SD 0.5
    y = 5.0 + 0.8 * x + ua[a] + ub[b] + rng.normal(0.0, 1.0, n_obs)
    return pd.DataFrame({"y": y, "x": x,
                         "a": np.char.add("a", a.astype(str)),
                         "b": np.char.add("b", b.astype(str))})


def _labels(prefix: str, codes: np.ndarray) -> np.ndarray:
    return np.char.add(prefix, codes.astype(str))


def simulate_nested_slope(n_school: int = 500, n_class: int = 10, per_class: int = 20,
                          seed: int = 20241001) -> pd.DataFrame:
    """``y ~ x + (x | school) + (1 | school:class)``: classes nested in schools, a random
    slope per school (SDs 1.0 and 0.4, correlation 0.3), class SD 0.5, σ = 1."""
    rng = np.random.default_rng(seed)
    n = n_school * n_class * per_class
    school = np.repeat(np.arange(n_school), n_class * per_class)
    klass = np.repeat(np.arange(n_school * n_class), per_class)
    x = rng.normal(0.0, 1.0, n)
    Om = np.array([[1.0, 0.12], [0.12, 0.16]])
    bs = rng.multivariate_normal(np.zeros(2), Om, size=n_school)
    bc = rng.normal(0.0, 0.5, n_school * n_class)
    y = 2.0 + 0.5 * x + bs[school, 0] + bs[school, 1] * x + bc[klass] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "school": _labels("s", school),
                         "class": _labels("c", klass % n_class)})


def simulate_crossed_slope(n_subj: int = 2000, n_item: int = 200, per_subj: int = 50,
                           seed: int = 20241002) -> pd.DataFrame:
    """``y ~ x + (x | subj) + (1 | item)``: each subject sees ``per_subj`` random items."""
    rng = np.random.default_rng(seed)
    n = n_subj * per_subj
    subj = np.repeat(np.arange(n_subj), per_subj)
    item = rng.integers(0, n_item, n)
    item[:n_item] = np.arange(n_item)
    x = rng.normal(0.0, 1.0, n)
    Om = np.array([[1.0, -0.1], [-0.1, 0.25]])
    bs = rng.multivariate_normal(np.zeros(2), Om, size=n_subj)
    bi = rng.normal(0.0, 0.7, n_item)
    y = 1.0 + 0.3 * x + bs[subj, 0] + bs[subj, 1] * x + bi[item] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "subj": _labels("s", subj), "item": _labels("i", item)})


def simulate_crossed_scalar(n_obs: int, n_a: int, n_b: int, *, zipf: float = 0.0,
                            seed: int = 20241003) -> pd.DataFrame:
    """``y ~ x + (1 | a) + (1 | b)`` with levels drawn uniformly (``zipf=0``) or with
    popularity ∝ rank^-zipf (a few very popular levels, a long tail).  Only the levels
    drawn are present (uniform draws of n rows from N levels leave N(1 − e^{-n/N}))."""
    rng = np.random.default_rng(seed)

    def draw(N):
        if zipf:
            p = 1.0 / np.arange(1, N + 1) ** zipf
            return rng.choice(N, size=n_obs, p=p / p.sum())
        return rng.integers(0, N, n_obs)

    a, b = draw(n_a), draw(n_b)
    x = rng.normal(0.0, 1.0, n_obs)
    ua = rng.normal(0.0, 0.8, n_a)
    ub = rng.normal(0.0, 0.6, n_b)
    y = 3.0 + 0.5 * x + ua[a] + ub[b] + rng.normal(0.0, 1.0, n_obs)
    return pd.DataFrame({"y": y, "x": x, "a": _labels("a", a), "b": _labels("b", b)})


def simulate_crossed_slopes(n_subj: int = 1000, n_item: int = 500, per_subj: int = 100,
                            seed: int = 20241005) -> pd.DataFrame:
    """``y ~ x + (x | subj) + (x | item)``: a random slope on both crossed factors; each
    subject sees ``per_subj`` random items (so the rest block, items, is dense)."""
    rng = np.random.default_rng(seed)
    n = n_subj * per_subj
    subj = np.repeat(np.arange(n_subj), per_subj)
    item = rng.integers(0, n_item, n)
    item[:n_item] = np.arange(n_item)
    x = rng.normal(0.0, 1.0, n)
    bs = rng.multivariate_normal(np.zeros(2), [[1.0, -0.1], [-0.1, 0.25]], size=n_subj)
    bi = rng.multivariate_normal(np.zeros(2), [[0.5, 0.05], [0.05, 0.09]], size=n_item)
    y = (1.0 + 0.3 * x + bs[subj, 0] + bs[subj, 1] * x + bi[item, 0] + bi[item, 1] * x
         + rng.normal(0.0, 1.0, n))
    return pd.DataFrame({"y": y, "x": x, "subj": _labels("s", subj), "item": _labels("i", item)})


def simulate_movielens(n_user: int = 6040, n_movie: int = 3706, n_obs: int = 1_000_000,
                       seed: int = 20241006) -> pd.DataFrame:
    """``y ~ 1 + (1 | user) + (1 | movie)`` shaped like MovieLens-1M: heavy-tailed activity
    of users (log-normal) and popularity of movies (Zipf-like), each (user, movie) pair at
    most about once; ratings a clipped sum of effects."""
    rng = np.random.default_rng(seed)
    wu = rng.lognormal(0.0, 1.0, n_user)
    wm = 1.0 / np.arange(1, n_movie + 1) ** 0.8
    user = rng.choice(n_user, size=n_obs, p=wu / wu.sum())
    movie = rng.choice(n_movie, size=n_obs, p=wm / wm.sum())
    user[:n_user] = np.arange(n_user)
    movie[:n_movie] = np.arange(n_movie)
    uu = rng.normal(0.0, 0.45, n_user)
    um = rng.normal(0.0, 0.5, n_movie)
    y = np.clip(np.round(3.6 + uu[user] + um[movie] + rng.normal(0.0, 0.9, n_obs)), 1, 5)
    return pd.DataFrame({"y": y, "user": _labels("u", user), "movie": _labels("m", movie)})


def simulate_three_level(n_region: int = 50, n_school: int = 40, n_class: int = 8,
                         per_class: int = 12, seed: int = 20241007) -> pd.DataFrame:
    """``y ~ x + (1 | region/school/class)``: classes in schools in regions (labels reused
    inside their parent, so the nesting is by the formula's ``/``)."""
    rng = np.random.default_rng(seed)
    n_s = n_region * n_school
    n_c = n_s * n_class
    n = n_c * per_class
    cls = np.repeat(np.arange(n_c), per_class)
    sch = cls // n_class
    reg = sch // n_school
    x = rng.normal(0.0, 1.0, n)
    y = (1.0 + 0.4 * x + rng.normal(0, 0.8, n_region)[reg] + rng.normal(0, 0.6, n_s)[sch]
         + rng.normal(0, 0.4, n_c)[cls] + rng.normal(0.0, 1.0, n))
    return pd.DataFrame({"y": y, "x": x, "region": _labels("r", reg),
                         "school": _labels("s", sch % n_school), "class": _labels("c", cls % n_class)})


def simulate_growth_sex(n_subj: int = 27, seed: int = 20241012) -> pd.DataFrame:
    """``distance ~ sex * age + (age | subject)``, shaped like nlme's Orthodont: 27 subjects
    (16 M, 11 F) measured at ages 8, 10, 12, 14 (108 rows)."""
    rng = np.random.default_rng(seed)
    age = np.tile([8.0, 10.0, 12.0, 14.0], n_subj)
    subj = np.repeat(np.arange(n_subj), 4)
    male = (np.arange(n_subj) < 16 * n_subj // 27).astype(float)[subj]
    b = rng.multivariate_normal([0, 0], [[4.0, -0.2], [-0.2, 0.05]], size=n_subj)
    y = 17.0 + 0.5 * age - 1.0 * male + 0.3 * male * age + b[subj, 0] + b[subj, 1] * age \
        + rng.normal(0.0, 1.3, len(age))
    return pd.DataFrame({"distance": y, "age": age, "sex": np.where(male > 0, "Male", "Female"),
                         "subject": _labels("S", subj)})


def simulate_many_covariates(n_obs: int = 50_000, n_groups: int = 1_000, p: int = 60,
                             seed: int = 20241013) -> pd.DataFrame:
    """``y ~ x1 + ... + x60 + (1 | g)``: a wide fixed-effects design, one intercept term."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n_obs)
    g[:n_groups] = np.arange(n_groups)
    X = rng.normal(0.0, 1.0, (n_obs, p))
    beta = rng.normal(0.0, 0.3, p)
    y = 1.0 + X @ beta + rng.normal(0.0, 0.7, n_groups)[g] + rng.normal(0.0, 1.0, n_obs)
    out = {"y": y, "g": _labels("g", g)}
    out.update({f"x{j + 1}": X[:, j] for j in range(p)})
    return pd.DataFrame(out)


def simulate_pairs(n_groups: int = 500_000, seed: int = 20241014) -> pd.DataFrame:
    """``y ~ x + (1 | g)`` with two rows per group (twins, pre/post pairs)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), 2)
    x = rng.normal(0.0, 1.0, 2 * n_groups)
    y = 2.0 + 0.5 * x + rng.normal(0.0, 0.8, n_groups)[g] + rng.normal(0.0, 1.0, 2 * n_groups)
    return pd.DataFrame({"y": y, "x": x, "g": _labels("g", g)})


def simulate_growth_curves(n_groups: int = 10_000, per_group: int = 50,
                           seed: int = 20241015) -> pd.DataFrame:
    """``y ~ t + t2 + (t + t2 | g)``, ``t2 = t^2``: quadratic growth, ``per_group`` occasions each
    (the square is a column because mixedlm's parser has no ``I()``)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    t = np.tile(np.linspace(0.0, 4.9, per_group), n_groups)
    b = rng.multivariate_normal(np.zeros(3), [[1.0, 0.1, -0.02], [0.1, 0.2, -0.01],
                                              [-0.02, -0.01, 0.01]], size=n_groups)
    y = (5.0 + 1.2 * t - 0.1 * t ** 2 + b[g, 0] + b[g, 1] * t + b[g, 2] * t ** 2
         + rng.normal(0.0, 1.0, len(g)))
    return pd.DataFrame({"y": y, "t": t, "t2": t ** 2, "g": _labels("g", g)})


def simulate_q5(n_groups: int = 5_000, per_group: int = 20, seed: int = 20241016) -> pd.DataFrame:
    """``y ~ z1 + z2 + z3 + z4 + (z1 + z2 + z3 + z4 | g)``: q = 5 correlated effects."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    Z = rng.normal(0.0, 1.0, (n, 4))
    A = rng.normal(0.0, 0.4, (5, 5))
    b = rng.normal(0.0, 1.0, (n_groups, 5)) @ (A + 0.5 * np.eye(5))
    y = (1.0 + Z @ np.array([0.5, -0.3, 0.2, 0.1]) + b[g, 0] + np.einsum("ij,ij->i", Z, b[g, 1:])
         + rng.normal(0.0, 1.0, n))
    out = {"y": y, "g": _labels("g", g)}
    out.update({f"z{j + 1}": Z[:, j] for j in range(4)})
    return pd.DataFrame(out)


def simulate_kb07(n_subj: int = 56, n_item: int = 32, seed: int = 20241017) -> pd.DataFrame:
    """Shaped like MixedModels.jl's kb07: 56 subjects x 32 items (1,789 of the 1,792 cells),
    three two-level conditions coded -0.5/+0.5, ``(1 + spkr + prec + load | subj)`` and the
    same on items."""
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    keep = np.ones(len(subj), bool)
    keep[rng.choice(len(subj), 3, replace=False)] = False
    subj, item = subj[keep], item[keep]
    n = len(subj)
    spkr = np.where((item + subj) % 2 == 0, -0.5, 0.5)
    prec = np.where((item // 2 + subj) % 2 == 0, -0.5, 0.5)
    load = np.where((item // 4 + subj) % 2 == 0, -0.5, 0.5)
    Xr = np.column_stack([np.ones(n), spkr, prec, load])
    bs = rng.multivariate_normal(np.zeros(4), np.diag([300.0, 60.0, 80.0, 40.0]) ** 2 / 100, n_subj)
    bi = rng.multivariate_normal(np.zeros(4), np.diag([350.0, 40.0, 200.0, 30.0]) ** 2 / 100, n_item)
    y = (2180 + 68 * spkr - 330 * prec + 78 * load + 20 * spkr * prec * load
         + np.einsum("ij,ij->i", Xr, bs[subj]) + np.einsum("ij,ij->i", Xr, bi[item])
         + rng.normal(0.0, 670.0, n))
    return pd.DataFrame({"rt": y, "spkr": spkr, "prec": prec, "load": load,
                         "subj": _labels("S", subj), "item": _labels("I", item)})


def _vc2(a="a", b="b"):
    return dict(formula="y ~ x", groups=None, re_formula="0",
                vc_formula={a: f"0 + C({a})", b: f"0 + C({b})"})


# ----------------------------------------------------------------------------- the cases
def _single(n):
    return dict(formula="y ~ x + x2", groups="g", re_formula="~x + x2")


CASES: dict[str, Case] = {c.name: c for c in [
    Case("rat_poly_ML", "weight ~ week + week2 + (week + week2 | id)", False, ("id",), _rat,
         "ratWeight, quadratic growth curve, q=3, ML",
         statsmodels=dict(formula="weight ~ week + week2", groups="id", re_formula="~week + week2")),
    Case("rat_gender_ML", "weight ~ gender*week + gender*week2 + (week + week2 | id)", False,
         ("id", "gender"), _rat, "ratWeight, gender x polynomial, q=3, ML",
         statsmodels=dict(formula="weight ~ gender*week + gender*week2", groups="id",
                          re_formula="~week + week2")),
    Case("sleepstudy_REML", "Reaction ~ Days + (Days | Subject)", True, ("Subject",),
         _dataset("sleepstudy"), "sleepstudy, random slope, REML",
         statsmodels=dict(formula="Reaction ~ Days", groups="Subject", re_formula="~Days")),
    Case("Penicillin_REML", "diameter ~ 1 + (1 | plate) + (1 | sample)", True, ("plate", "sample"),
         _dataset("Penicillin"), "Penicillin, two crossed intercepts, REML",
         statsmodels=dict(formula="diameter ~ 1", groups=None, re_formula="0",
                          vc_formula={"plate": "0 + C(plate)", "sample": "0 + C(sample)"})),
    Case("InstEval_ML", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", False,
         ("s", "d", "dept", "service", "dept_service"), _insteval,
         "InstEval, 73k obs, three crossed/nested intercepts, ML",
         statsmodels=dict(formula="y ~ 1 + service", groups=None, re_formula="0",
                          vc_formula={"s": "0 + C(s)", "d": "0 + C(d)",
                                      "dept_service": "0 + C(dept_service)"})),
    Case("sim_1e4_ML", "y ~ x + x2 + (x + x2 | g)", False, ("g",),
         lambda: simulate_single(10_000), "simulated, 1,000 groups x 10, q=3, ML",
         statsmodels=_single(10_000)),
    Case("sim_1e5_ML", "y ~ x + x2 + (x + x2 | g)", False, ("g",),
         lambda: simulate_single(100_000), "simulated, 10,000 groups x 10, q=3, ML",
         statsmodels=_single(100_000)),
    Case("sim_1e6_ML", "y ~ x + x2 + (x + x2 | g)", False, ("g",),
         lambda: simulate_single(1_000_000), "simulated, 100,000 groups x 10, q=3, ML", large=True,
         statsmodels=_single(1_000_000)),
    Case("crossed_1e5_ML", "y ~ x + (1 | a) + (1 | b)", False, ("a", "b"),
         lambda: simulate_crossed(100_000), "simulated, 1000 x 200 crossed intercepts, 1e5 obs, ML",
         statsmodels=dict(formula="y ~ x", groups=None, re_formula="0",
                          vc_formula={"a": "0 + C(a)", "b": "0 + C(b)"})),
    # ---- several random-effects terms at scale
    Case("nested_slope_ML", "y ~ x + (x | school) + (1 | school:class)", False, ("school", "class"),
         simulate_nested_slope, "simulated, 500 schools x 10 classes x 20, slope per school, ML"),
    Case("crossed_slope_ML", "y ~ x + (x | subj) + (1 | item)", False, ("subj", "item"),
         simulate_crossed_slope, "simulated, 2,000 subjects x 200 items, 1e5 obs, slope per subject, ML"),
    Case("crossed_zipf_ML", "y ~ x + (1 | a) + (1 | b)", False, ("a", "b"),
         lambda: simulate_crossed_scalar(300_000, 3000, 3000, zipf=1.0),
         "simulated, 3,000 x 3,000 crossed intercepts, Zipf popularity, 3e5 obs, ML", large=True,
         statsmodels=_vc2()),
    Case("crossed_sparse_2e4_ML", "y ~ x + (1 | a) + (1 | b)", False, ("a", "b"),
         lambda: simulate_crossed_scalar(20_000, 12_000, 8_000),
         "simulated, ~9,700 x 7,300 crossed intercepts present, 2e4 obs, ML", statsmodels=_vc2()),
    Case("crossed_sparse_1e5_ML", "y ~ x + (1 | a) + (1 | b)", False, ("a", "b"),
         lambda: simulate_crossed_scalar(100_000, 60_000, 40_000),
         "simulated, ~49,000 x 37,000 crossed intercepts present, 1e5 obs, ML", large=True,
         statsmodels=_vc2()),
    Case("crossed_slopes_both_ML", "y ~ x + (x | subj) + (x | item)", False, ("subj", "item"),
         simulate_crossed_slopes,
         "simulated, 1,000 subjects x 500 items, 1e5 obs, a slope on both factors, ML"),
    Case("movielens_ML", "y ~ 1 + (1 | user) + (1 | movie)", False, ("user", "movie"),
         simulate_movielens, "simulated, MovieLens-1M-shaped, 6,040 users x 3,706 movies, 1e6 obs, ML",
         large=True, statsmodels=_vc2("user", "movie")),
    Case("three_level_ML", "y ~ x + (1 | region/school/class)", False, ("region", "school", "class"),
         simulate_three_level, "simulated, 50 regions / 40 schools / 8 classes x 12, 192k obs, ML"),
    Case("growth_sex_ML", "distance ~ sex * age + (age | subject)", False, ("subject", "sex"),
         simulate_growth_sex, "simulated, Orthodont-shaped, 27 subjects x 4 ages, ML",
         statsmodels=dict(formula="distance ~ sex * age", groups="subject", re_formula="~age")),
    Case("many_covariates_ML", "y ~ " + " + ".join(f"x{j}" for j in range(1, 61)) + " + (1 | g)",
         False, ("g",), simulate_many_covariates, "simulated, 60 covariates, 1,000 groups, 5e4 obs, ML",
         statsmodels=dict(formula="y ~ " + " + ".join(f"x{j}" for j in range(1, 61)), groups="g",
                          re_formula="1")),
    Case("pairs_ML", "y ~ x + (1 | g)", False, ("g",), simulate_pairs,
         "simulated, 5e5 groups of 2 rows, 1e6 obs, ML", large=True,
         statsmodels=dict(formula="y ~ x", groups="g", re_formula="1")),
    Case("growth_curves_ML", "y ~ t + t2 + (t + t2 | g)", False, ("g",), simulate_growth_curves,
         "simulated, 1e4 groups x 50 occasions, quadratic growth, q=3, 5e5 obs, ML", large=True,
         statsmodels=dict(formula="y ~ t + t2", groups="g", re_formula="~t + t2")),
    Case("q5_ML", "y ~ z1 + z2 + z3 + z4 + (z1 + z2 + z3 + z4 | g)", False, ("g",), simulate_q5,
         "simulated, q=5, 5,000 groups x 20, 1e5 obs, ML"),
    Case("kb07_ML", "rt ~ spkr * prec * load + (1 + spkr + prec + load | subj)"
         " + (1 + spkr + prec + load | item)", False, ("subj", "item"), simulate_kb07,
         "simulated, kb07-shaped, 56 x 32, q=4 on subjects and on items, 1,789 obs, ML"),
]}


# ---- the scaling curve of crossed scalar terms (benchmarks/scaling_crossed.py):
# L levels drawn uniformly for each of a and b, 2 L rows (so ~0.86 L of each present)
SCALING_LEVELS = (1_000, 3_000, 10_000, 30_000, 100_000)
SCALING: dict[str, Case] = {
    f"scale_{L}": Case(f"scale_{L}", "y ~ x + (1 | a) + (1 | b)", False, ("a", "b"),
                       (lambda L=L: simulate_crossed_scalar(2 * L, L, L, seed=20241004)),
                       f"simulated, {L} x {L} crossed intercepts, {2 * L} obs, ML", large=True,
                       statsmodels=_vc2())
    for L in SCALING_LEVELS}


def write_csv(case: Case, path) -> None:
    """The case's data as CSV for R (floats written with round-trip precision)."""
    case.load().to_csv(path, index=False)
