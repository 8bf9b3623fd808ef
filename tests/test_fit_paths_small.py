"""The fast paths of a fit's set-up and the optimiser's restarts, against the paths they
replace: the model frame formed on first use, missing rows found column by column, text
levels factorized as objects; and a 20-θ kb07-shaped fit where BOBYQA stalls."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.model.design import _missing_rows, build_design
from pylmem.model.levels import distinct_levels, group_codes


def _frame(seed=1, n=120):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, n)
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n),
        "k": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "g": pd.array([f"g{v:02d}" for v in g], dtype="string"),
        "c": pd.Categorical([f"c{v}" for v in rng.integers(0, 3, n)]),
        "o": np.array([f"o{v}" for v in g], dtype=object),
    })


def test_missing_rows_equal_pandas_any_isna():
    df = _frame()
    df.loc[[3, 50], "y"] = np.nan
    df.loc[[7], "k"] = pd.NA
    df.loc[[9, 50], "g"] = pd.NA
    df.loc[[11], "c"] = np.nan
    df.loc[[13], "o"] = None
    cols = list(df.columns)
    want = df[cols].isna().any(axis=1).to_numpy()
    np.testing.assert_array_equal(_missing_rows(df, cols), want)
    assert want.sum() == 6
    d = build_design("y ~ x + k + (1 | g)", df)
    assert d.n_dropped == int(df[["y", "x", "k", "g"]].isna().any(axis=1).sum()) == 4


def test_text_levels_factorized_as_objects_are_the_same_levels():
    df = _frame()
    df.loc[[2], "g"] = pd.NA
    codes_o, lev_o, *_ = group_codes(df.assign(g=df["g"].astype(object)), ("g",))
    codes_s, lev_s, *_ = group_codes(df, ("g",))
    np.testing.assert_array_equal(codes_o, codes_s)
    assert list(lev_o) == list(lev_s) == list(distinct_levels(df["g"])[1])
    assert codes_s[2] == -1


def test_model_frame_formed_on_first_use():
    df = _frame()
    d = build_design("y ~ x + c + (1 | g)", df)
    assert d.frame_source is not None
    want = df[["y", "x", "g", "c"]].iloc[d.order]
    # (pandas' "string" dtype is read as its default text dtype: same values)
    pd.testing.assert_frame_equal(d.frame[sorted(d.frame.columns)], want[sorted(want.columns)],
                                  check_dtype=False)
    assert d.frame_source is None and d.frame is d.frame     # formed once
    d2 = dataclasses.replace(d, y=d.y + 1.0)                # replace() carries it
    pd.testing.assert_frame_equal(d2.frame, d.frame)
    d.frame = None
    assert d.frame is None
    # the user's frame is not modified by the design's column work (copy-on-write)
    before = df.copy()
    build_design("y ~ x + (1 | o)", df, factors=["k"])
    pd.testing.assert_frame_equal(df, before)


def test_type3_reads_the_lazy_frame():
    df = _frame(seed=3, n=240)
    fit = pylmem.lmer("y ~ x * c + (1 | g)", df)
    tab = fit.anova(type=3)
    assert list(tab.index) == ["x", "c", "x:c"] and np.all(np.isfinite(tab.iloc[:, -1]))


def _kb07_shaped(seed=20241017, n_subj=56, n_item=32):
    """Shaped like MixedModels.jl's kb07 (the generator of benchmarks/cases.py)."""
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
                         "subj": [f"S{v:03d}" for v in subj], "item": [f"I{v:03d}" for v in item]})


@pytest.mark.filterwarnings("ignore::pylmem.ConvergenceWarning")
def test_kb07_shaped_twenty_theta_reaches_the_optimum():
    """20 θ, a singular fit: BOBYQA stopped 0.09 short of the optimum and L-BFGS-B (ftol
    1e-10) 4.8e-5 short; continued at a rounding-level tolerance it reaches it.
    References (same data): mixedlm 1.3.0 ``lmer(..., REML=False)`` logLik
    −14222.985329511; lme4 1.1-31 nloptwrap −14222.985486196, bobyqa −14223.027196978,
    Nelder_Mead −14226.025 (not converged)."""
    df = _kb07_shaped()
    f = pylmem.lmer("rt ~ spkr * prec * load + (1 + spkr + prec + load | subj)"
                    " + (1 + spkr + prec + load | item)", df, reml=False)
    assert f.loglik >= -14222.985329511 - 2e-7
    assert f.converged and f.is_singular
    assert f.optsum.method.startswith("L-BFGS-B")


def test_scipy_stats_is_imported_on_first_use_only():
    """``import pylmem`` and a fit leave scipy.stats (~25 MiB, most of the import time)
    unloaded; the first p-value loads it through the lazy stand-in."""
    import subprocess
    import sys

    code = ("import sys, pylmem\n"
            "f = pylmem.lmer('Reaction ~ Days + (Days | Subject)', pylmem.datasets.load('sleepstudy'))\n"
            "print('scipy.stats' in sys.modules)\n"
            "from pylmem.util.lazy import stats\n"
            "print(round(float(stats.norm.ppf(0.975)), 6), 'scipy.stats' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1.959964", "True"]


def test_nested_slope_reml_small_dense_path_reaches_the_optimum():
    """``(x | c) + (1 | c:a)`` on 400 unbalanced rows: BOBYQA stopped at a boundary local
    optimum (REML criterion 1476.876, reported converged); with the gradient the optimum
    1476.2011987825 (mixedlm 1.3.0: 1476.2011987825454; ML 1471.476287914623 both)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sparse_factor import FORMULAS, _data
    df = _data(seed=5)
    f = pylmem.lmer(FORMULAS["nested_slope"], df, reml=True)
    assert f.objective <= 1476.2011987825454 * (1 + 1e-11)
    assert not f.is_singular
    g = pylmem.lmer(FORMULAS["nested_slope"], df, reml=False)
    assert g.objective <= 1471.476287914623 * (1 + 1e-11)


def test_crossed_huge_variance_ratio_on_the_gradient_path(monkeypatch):
    """σ_a = 10⁵ σ with L-BFGS-B (the small dense path): its first steps leave for a flat
    region (θ_b ~ 10⁴); the restarts' own escape points, taken derivative free, reach lme4's
    optimum (see test_hostile.py for the data and reference)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_hostile import LME4, data

    import pylmem.numerics.multi_gradient as MG
    monkeypatch.setattr(MG, "MIN_THETA_DENSE", 2)   # two θ: BOBYQA by default
    f = pylmem.lmer("y ~ 1 + (1 | a) + (1 | b)", data("crossed_1e5.csv"), reml=False)
    assert f.dev.has_gradient and f.optsum.method.startswith("L-BFGS-B")
    assert f.loglik >= LME4["crossed_1e5"]["loglik"] - 1e-6 and f.converged


@pytest.mark.parametrize("n", [300, 12_000])
def test_interaction_levels_equal_the_joined_labels(n):
    """group_codes of a:b:c (text, numbers, a Categorical; short and long columns, which are
    factorized by different routes) against the labels joined one level at a time."""
    rng = np.random.default_rng(n)
    df = pd.DataFrame({"a": rng.choice(["r1", "r2", "R3"], n), "b": rng.integers(0, 7, n),
                       "c": pd.Categorical(rng.choice(["z", "y"], n), categories=["z", "y"])})
    cache: dict = {}
    for group in [("a",), ("a", "b"), ("a", "b", "c"), ("c", "a")]:
        codes, levels, values, lcodes = group_codes(df, group, cache)
        want = [":".join(str(df[g].iloc[i]) for g in group) for i in range(n)]
        assert [levels[k] for k in codes] == want
        if len(group) > 1:
            assert list(levels) == sorted(set(want))
        again = group_codes(df.sample(frac=1.0, random_state=1), group)
        assert sorted(again[1]) == sorted(levels)
