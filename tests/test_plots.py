"""pylmem.reports.plots: every function writes a real PNG and returns its path."""
import struct
import warnings

import numpy as np
import pandas as pd
import pytest

import pylmem
from pylmem.reports import plots
from pylmem.estimation.em import em

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RAT_POLY = "weight ~ week + week2 + (week + week2 | id)"


def _rat():
    d = pylmem.datasets.load("ratWeight")
    d["week2"] = d["week"] ** 2
    return d


@pytest.fixture(scope="module")
def rat_fit():
    return pylmem.lmer(RAT_POLY, _rat(), reml=False)


@pytest.fixture(scope="module")
def rat_em_fit():
    return pylmem.lmer(RAT_POLY, _rat(), reml=False, method="em")


@pytest.fixture(scope="module")
def rat_emresult():
    d = _rat()
    X = pd.DataFrame({"1": 1.0, "week": d["week"], "week2": d["week2"]})
    return em(d["weight"], d["id"], X, X, n_iter=50)


@pytest.fixture(scope="module")
def sleep_fit():
    return pylmem.lmer("Reaction ~ Days + (Days | Subject)", pylmem.datasets.load("sleepstudy"))


def _check_png(path, min_kb=10, min_px=400):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_kb * 1024, (path, len(data))
    # IHDR: width and height of a readable figure
    w, h = struct.unpack(">II", data[16:24])
    assert w >= min_px and h >= min_px * 0.6, (w, h)


def test_plot_em_trace_from_fit(rat_em_fit, tmp_path):
    p = plots.plot_em_trace(rat_em_fit, tmp_path / "trace.png")
    assert p == tmp_path / "trace.png"
    _check_png(p)


def test_plot_em_trace_from_emresult(rat_emresult, tmp_path):
    assert len(rat_emresult.trace) == 50
    p = plots.plot_em_trace(rat_emresult, tmp_path / "sub" / "trace.png")   # creates sub/
    _check_png(p)


def test_plot_em_trace_rejects_profiled_fit(rat_fit, tmp_path):
    with pytest.raises(ValueError, match="EM"):
        plots.plot_em_trace(rat_fit, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_caterpillar(rat_fit, sleep_fit, tmp_path):
    _check_png(plots.plot_caterpillar(rat_fit, tmp_path / "cat_rat.png"))          # 160 levels
    _check_png(plots.plot_caterpillar(sleep_fit, tmp_path / "cat_sleep.png", term="Subject"))
    with pytest.raises(ValueError, match="nosuch"):
        plots.plot_caterpillar(sleep_fit, tmp_path / "bad.png", term="nosuch")


def test_plot_resid_fitted(rat_fit, sleep_fit, tmp_path):
    _check_png(plots.plot_resid_fitted(rat_fit, tmp_path / "rf.png"))
    _check_png(plots.plot_resid_fitted(sleep_fit, tmp_path / "rf_sleep.png"))


def test_plot_qq(rat_fit, tmp_path):
    _check_png(plots.plot_qq(rat_fit, tmp_path / "qq.png"))


def test_plot_all_em_fit(rat_em_fit, tmp_path):
    paths = plots.plot_all(rat_em_fit, tmp_path / "all")
    assert len(paths) >= 4
    names = {p.name for p in paths}
    assert {"em_trace.png", "resid_fitted.png", "qq.png", "caterpillar_id.png"} <= names
    for p in paths:
        _check_png(p)
    assert sorted(paths) == sorted((tmp_path / "all").glob("*.png"))


def test_plot_all_profiled_fit_has_no_em_trace(sleep_fit, tmp_path):
    paths = plots.plot_all(sleep_fit, tmp_path)
    assert "em_trace.png" not in {p.name for p in paths}
    assert len(paths) == 3


def test_plot_all_one_caterpillar_per_term(tmp_path):
    fit = pylmem.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)",
                      pylmem.datasets.load("Penicillin"))
    paths = plots.plot_all(fit, tmp_path)
    names = {p.name for p in paths}
    assert {"caterpillar_plate.png", "caterpillar_sample.png"} <= names
    for p in paths:
        _check_png(p)


def test_plots_leave_pyplot_alone(rat_fit, tmp_path):
    """No figure is left open in pyplot's registry, no backend is switched."""
    import matplotlib

    backend = matplotlib.get_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # e.g. "FigureCanvasAgg is non-interactive"
        plots.plot_qq(rat_fit, tmp_path / "qq.png")
    assert matplotlib.get_backend() == backend
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_caterpillar_intervals_use_condvar(sleep_fit):
    """The half-widths drawn are 1.96·sqrt(diag condvar) (checked on the data, not pixels)."""
    cv = sleep_fit.ranef_condvar()["Subject"]
    sd = np.sqrt(np.diagonal(cv, axis1=1, axis2=2))
    assert sd.shape == (18, 2) and np.all(sd > 0)


def test_plot_leverage(tmp_path):
    """Studentized residuals vs leverage, a real PNG."""
    fit = pylmem.lmer("Reaction ~ Days + (Days | Subject)", pylmem.datasets.load("sleepstudy"))
    p = plots.plot_leverage(fit, tmp_path / "lev.png")
    assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def test_caterpillar_one_level_order_across_panels(sleep_fit):
    """lme4's dotplot(ranef(fit)): every panel in the order of the first coefficient."""
    modes = sleep_fit.ranef["Subject"]
    order = plots.caterpillar_order(modes)
    assert np.all(np.diff(modes.iloc[order, 0].to_numpy()) >= 0)
    # the slope panel uses the same rows, not its own sort
    assert not np.all(np.diff(modes.iloc[order, 1].to_numpy()) >= 0)


def test_bootstrap_density_of_a_correlation_stays_in_range(sleep_fit, tmp_path):
    from pylmem.inference.plots import _reflected_kde

    rng = np.random.default_rng(3)
    v = np.clip(1 - np.abs(rng.normal(0, 0.05, 500)), -1, 1)    # piled up against +1
    grid = np.linspace(-1, 1, 4001)
    dens = _reflected_kde(v, -1.0, 1.0, grid)
    from scipy.integrate import trapezoid

    assert trapezoid(dens, grid) == pytest.approx(1.0, abs=2e-3)
    from scipy.stats import gaussian_kde

    assert trapezoid(gaussian_kde(v)(grid), grid) < 0.95    # unreflected: mass past +1
    res = sleep_fit.bootstrap(60, seed=2)
    _check_png(plots.plot_bootstrap(res, tmp_path / "boot.png"))
