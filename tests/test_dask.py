"""Fits of a Dask DataFrame (pylmem.scaleout) equal the in-memory fits.

Rows are shuffled and split into several partitions (a group's rows sit in several
partitions), computed on a 2-process dask.distributed LocalCluster.  Tolerances:
logLik 1e-8 relative, β̂ and standard errors 1e-6, BLUPs 1e-5 (relative to their scale).
"""
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import pylmem  # noqa: E402
from pylmem.datasets import load  # noqa: E402


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0", memory_limit="2GiB",
                               silence_logs=logging.ERROR)
        c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _data(name):
    d = load(name)
    if name == "ratWeight":
        d["week2"] = d["week"] ** 2
    return d


def _shuffled(d, nparts, seed=0):
    sh = d.sample(frac=1.0, random_state=seed)
    return dd.from_pandas(sh, npartitions=nparts, sort=False)


def _compare(m, f):
    assert f.n_obs == m.n_obs
    assert f.n_groups == m.n_groups
    assert abs(f.loglik - m.loglik) <= 1e-8 * abs(m.loglik)
    np.testing.assert_allclose(f.fixef.to_numpy(), m.fixef.to_numpy(), rtol=1e-6,
                               atol=1e-6 * np.abs(m.fixef.to_numpy()).max())
    np.testing.assert_allclose(f.stderr.to_numpy(), m.stderr.to_numpy(), rtol=1e-6)
    assert list(f.fixef.index) == list(m.fixef.index)
    for name, re in m.ranef.items():
        got = f.ranef[name]
        assert list(got.index) == list(re.index) and list(got.columns) == list(re.columns)
        scale = np.abs(re.to_numpy()).max()
        np.testing.assert_allclose(got.to_numpy(), re.to_numpy(), rtol=1e-5, atol=1e-5 * scale)
    for name, C in m.cov_re.items():
        np.testing.assert_allclose(f.cov_re[name].to_numpy(), C.to_numpy(), rtol=1e-5,
                                   atol=1e-5 * np.abs(C.to_numpy()).max())


CASES = [
    # (data, formula, partitions): one factor (vector term), fixed factor, nested, crossed
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", 4),
    ("ratWeight", "weight ~ gender*week + gender*week2 + (week + week2 | id)", 5),
    ("sleepstudy", "Reaction ~ Days + (Days || Subject)", 3),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", 3),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", 4),
    ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", 3),
]


@pytest.mark.parametrize("reml", [False, True], ids=["ML", "REML"])
@pytest.mark.parametrize("name,formula,nparts", CASES, ids=[c[1] for c in CASES])
def test_profiled_matches_in_memory(client, name, formula, nparts, reml):
    d = _data(name)
    m = pylmem.lmer(formula, d, reml=reml)
    f = pylmem.lmer(formula, _shuffled(d, nparts), reml=reml)
    assert type(f).__name__ == "DaskLmerFit"
    _compare(m, f)
    assert f.converged == m.converged
    assert f.reml is reml


@pytest.mark.parametrize("name,formula", [("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                                          ("ratWeight", "weight ~ week + week2 + (week + week2 | id)"),
                                          ("Dyestuff", "Yield ~ 1 + (1 | Batch)")])
def test_em_matches_in_memory(client, name, formula):
    d = _data(name)
    m = pylmem.lmer(formula, d, reml=False, method="em")
    f = pylmem.lmer(formula, _shuffled(d, 3, seed=2), reml=False, method="em")
    _compare(m, f)
    assert f.em_result is not None and f.em_result.converged
    # the EM's own estimates (before the Newton polish) agree too
    np.testing.assert_allclose(f.em_result.beta, m.em_result.beta, rtol=1e-6)
    np.testing.assert_allclose(f.em_result.loglik, m.em_result.loglik, rtol=1e-10)


def test_row_level_results_are_lazy_and_match(client):
    d = _data("sleepstudy")
    d.index = pd.RangeIndex(1000, 1000 + len(d))
    m = pylmem.lmer("Reaction ~ Days + (Days | Subject)", d)
    f = pylmem.lmer("Reaction ~ Days + (Days | Subject)", _shuffled(d, 4))
    fitted, resid = f.fitted, f.residuals
    assert isinstance(fitted, dd.Series) and isinstance(resid, dd.Series)
    pd.testing.assert_series_equal(fitted.compute().sort_index(), m.fitted.sort_index(),
                                   rtol=1e-8, check_names=False)
    pd.testing.assert_series_equal(resid.compute().sort_index(), m.residuals.sort_index(),
                                   rtol=1e-6, atol=1e-8, check_names=False)
    new = d.iloc[::7].copy()
    new.loc[new.index[0], "Subject"] = "new-subject"
    exp = m.predict(new, allow_new_levels=True)
    got = f.predict(dd.from_pandas(new, npartitions=2), allow_new_levels=True).compute()
    np.testing.assert_allclose(got.sort_index().to_numpy(), exp.sort_index().to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(f.predict(new, re_form="~0").to_numpy(),
                               m.predict(new, re_form="~0").to_numpy(), rtol=1e-8)
    # summary: quartiles from the histogram (within one bin, 1e-4), extremes exact
    s = f.summary()
    exact = m.summary().resid_quantiles
    np.testing.assert_allclose(s.resid_quantiles[["Min", "Max"]], exact[["Min", "Max"]], rtol=1e-8)
    np.testing.assert_allclose(s.resid_quantiles.to_numpy(), exact.to_numpy(), rtol=0, atol=1e-4)
    text = str(s)
    assert "histogram" in text and "Number of obs: 180" in text


def test_missing_values_integer_ids_and_refit(client):
    rng = np.random.default_rng(3)
    G, n = 40, 800
    g = rng.integers(0, G, n) * 7 + 3            # integer ids: levels sorted as strings
    x = rng.normal(size=n)
    b = rng.normal(size=G)
    y = 1 + 0.5 * x + b[(g - 3) // 7] + rng.normal(size=n)
    d = pd.DataFrame({"y": y, "x": x, "g": g, "f": rng.choice(["lo", "mid", "hi"], n)})
    d.loc[rng.choice(n, 25, replace=False), "x"] = np.nan
    # a group whose rows all miss x: its level must not exist in the fit
    d = pd.concat([d, pd.DataFrame({"y": [1.0, 2.0, 3.0], "x": np.nan, "g": 999_999,
                                    "f": "lo"})], ignore_index=True)
    formula = "y ~ x + f + (1 | g)"
    m = pylmem.lmer(formula, d, reml=False)
    f = pylmem.lmer(formula, _shuffled(d, 6), reml=False)
    assert f.n_dropped == m.n_dropped == 28
    _compare(m, f)
    # without a fixed-effects factor: the emptied level alone triggers the complete-rows pass
    m2 = pylmem.lmer("y ~ x + (1 | g)", d, reml=False)
    _compare(m2, pylmem.lmer("y ~ x + (1 | g)", _shuffled(d, 4), reml=False))
    r = f.refit(reml=True)
    _compare(m.refit(reml=True), r)


def test_local_scheduler_without_client():
    """Without a distributed client the tree reduction runs on dask's local scheduler."""
    import dask

    d = _data("Penicillin")
    m = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", d)
    with dask.config.set(scheduler="sync"):
        from pylmem.scaleout.reduce import active_client

        assert active_client() is None
        f = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", _shuffled(d, 5))
    _compare(m, f)


def test_errors_name_the_problem(client):
    d = _data("sleepstudy")
    ddf = _shuffled(d, 2)
    with pytest.raises(ValueError, match="'Dayz' not in the data"):
        pylmem.lmer("Reaction ~ Dayz + (1 | Subject)", ddf)
    with pytest.raises(ValueError, match="method='em' fits by maximum likelihood"):
        pylmem.lmer("Reaction ~ Days + (1 | Subject)", ddf, method="em")
    with pytest.raises(ValueError, match="exactly one random-effects term"):
        pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)",
                    _shuffled(_data("Penicillin"), 2), reml=False, method="em")


def test_cli_parquet_glob(client, tmp_path, capsys):
    import json

    from pylmem.io.cli import main

    d = _data("sleepstudy").sample(frac=1.0, random_state=5)
    for i in range(3):
        d.iloc[i::3].to_parquet(tmp_path / f"part{i}.parquet")
    formula = "Reaction ~ Days + (Days | Subject)"
    rc = main(["fit", str(tmp_path / "*.parquet"), formula, "--ml", "--json", "--quiet",
               "--dask", client.scheduler.address])
    out = capsys.readouterr().out
    assert rc == 0, out
    got = json.loads(out)
    m = pylmem.lmer(formula, d, reml=False)
    assert got["n_obs"] == 180 and got["dask"]["partitions"] == 3
    assert abs(got["loglik"] - m.loglik) <= 1e-8 * abs(m.loglik)
    np.testing.assert_allclose(list(got["fixef"].values()), m.fixef.to_numpy(), rtol=1e-6)
    assert set(got["dask"]["phase_seconds"]) == {"levels", "statistics", "optimise"}
    rc = main(["fit", str(tmp_path / "nothing*.parquet"), formula, "--dask",
               client.scheduler.address])
    assert rc == 2 and "no file matches" in capsys.readouterr().err


def test_missing_dask_names_the_extra(monkeypatch):
    import sys

    from pylmem.scaleout.reduce import require_dask

    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(ImportError, match=r"pip install pylmem\[dask\]"):
        require_dask()


def test_levels_sort_as_in_memory_labels():
    """Integer ids (dense and sparse) sorted by value, and strings sorted as strings: the
    codes of build_design (pd.factorize(values, sort=True))."""
    from pylmem.scaleout.plan import Levels

    rng = np.random.default_rng(1)
    for ids in (rng.integers(0, 50, 300), rng.integers(0, 50, 300) * 10 ** 9 - 7,
                rng.choice(["b", "a10", "a2", "c"], 300)):
        part = pd.DataFrame({"g": ids})
        lv = Levels(pd.DataFrame({"g": pd.unique(ids)}), ("g",))
        codes, labels = pd.factorize(pd.Series(ids), sort=True)
        assert list(lv.labels) == list(labels)
        np.testing.assert_array_equal(lv.codes(part, ("g",)), codes)
        unseen = pd.DataFrame({"g": [ids.max() + 1 if ids.dtype.kind != "U" else "zz"]})
        with pytest.raises(ValueError, match="not seen in the levels pass"):
            lv.codes(unseen, ("g",))


def test_anova_of_dask_fits(client):
    d = _data("ratWeight")
    f0, f1 = ("weight ~ week + week2 + (week + week2 | id)",
              "weight ~ gender*week + gender*week2 + (week + week2 | id)")
    ddf = _shuffled(d, 4, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = pylmem.anova(pylmem.lmer(f0, d), pylmem.lmer(f1, d))   # REML: refitted by ML
        got = pylmem.anova(pylmem.lmer(f0, ddf), pylmem.lmer(f1, ddf))
    np.testing.assert_allclose(got["Chisq"].to_numpy()[1:], exp["Chisq"].to_numpy()[1:], rtol=1e-6)
    np.testing.assert_allclose(got["logLik"].to_numpy(), exp["logLik"].to_numpy(), rtol=1e-8)
    assert "(2235 observations)" in str(got)
    other = _shuffled(d.assign(weight=d["weight"] + 1.0), 3)
    with pytest.raises(ValueError, match="response values"):
        pylmem.anova(pylmem.lmer(f0, ddf, reml=False), pylmem.lmer(f1, other, reml=False))


def test_single_partition_and_worker_errors(client):
    d = _data("Dyestuff")
    m = pylmem.lmer("Yield ~ 1 + (1 | Batch)", d)
    _compare(m, pylmem.lmer("Yield ~ 1 + (1 | Batch)", _shuffled(d, 1)))   # fewer partitions than chains
    bad = _data("sleepstudy")
    bad["Days"] = bad["Days"].astype(float)
    bad.loc[bad.index[17], "Days"] = np.inf
    with pytest.raises(ValueError, match=r"non-finite values \(inf\) in the fixed-effects column\(s\) 'Days'"):
        pylmem.lmer("Reaction ~ Days + (1 | Subject)", _shuffled(bad, 3))
