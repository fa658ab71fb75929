"""Tests of nni_robust.strategies.msrobnet.extrapolation (MSRobNet Sec. 5.1-5.2, App. A, Alg. 2)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from nni_robust.errors import ConfigError
from nni_robust.strategies.msrobnet import extrapolation as ex

# The paper's supernet widths (init channels); FLOPs grow about with width^2,
# from ~70 MFLOPs (12 channels) to 2,000 MFLOPs (64 channels).
WIDTHS = np.array([12, 24, 30, 36, 40, 44, 54, 64], dtype=float)
FLOPS = 2000e6 * (WIDTHS / 64) ** 2

# Realistic parameters (rewards ~0.2-0.6 over the FLOPs range, in MFLOPs).
TRUE_PARAMS = {
    "janoschek": (0.62, 0.10, 0.06, 0.5),
    "vapor_pressure": (-0.96, -40.0, 0.05),
    "log_log_linear": (0.114, 0.864),
    "ilog2": (2.41, 0.867),
    "log_power": (0.6, 4.5, -1.2),
    "mmf": (0.62, 0.1, 1.1, 1 / 200),
    "log_power_rep": (math.log(0.6 / 0.4), 4.5, -1.2),
}


def truth(name: str, flops, params=None):
    return ex.FAMILIES[name](np.asarray(flops) / 1e6, *(params or TRUE_PARAMS[name]))


# ---------------------------------------------------------------- registry
def test_registry_has_the_seven_families_of_appendix_a_in_order():
    assert ex.FAMILY_NAMES == ("janoschek", "vapor_pressure", "log_log_linear", "ilog2", "log_power", "mmf",
                               "log_power_rep")
    assert {n: ex.FAMILIES[n].n_params for n in ex.FAMILY_NAMES} == {
        "janoschek": 4, "vapor_pressure": 3, "log_log_linear": 2, "ilog2": 2, "log_power": 3, "mmf": 4,
        "log_power_rep": 3}
    # The bounded families make increasing curves: log power's exponent is <= 0.
    assert ex.FAMILIES["log_power"].bounds == ((0.0, -math.inf, -math.inf), (math.inf, math.inf, 0.0))
    assert ex.FAMILIES["ilog2"].needs_log_x and not ex.FAMILIES["log_power"].needs_log_x


def test_families_match_their_formulas():
    x = np.array([50.0, 700.0, 3000.0])
    a, b, c, d = 0.6, 0.1, 0.05, 0.7
    np.testing.assert_allclose(ex.FAMILIES["janoschek"](x, a, b, c, d), a - (a - b) * np.exp(-c * x**d))
    np.testing.assert_allclose(ex.FAMILIES["vapor_pressure"](x, -1, -30, 0.05), np.exp(-1 - 30 / x + 0.05 * np.log(x)))
    np.testing.assert_allclose(ex.FAMILIES["log_log_linear"](x, 0.1, 0.9), np.log(0.1 * np.log(x) + 0.9))
    np.testing.assert_allclose(ex.FAMILIES["ilog2"](x, 2.0, 0.8), 0.8 - 2.0 / np.log(x))
    np.testing.assert_allclose(ex.FAMILIES["log_power"](x, 0.6, 4.5, -1.2), 0.6 / (1 + (x / np.exp(4.5)) ** -1.2))
    np.testing.assert_allclose(ex.FAMILIES["mmf"](x, a, b, 1.1, 0.005), a - (a - b) / (1 + (0.005 * x) ** 1.1))
    np.testing.assert_allclose(ex.FAMILIES["log_power_rep"](x, 0.3, 4.5, -1.2),
                               1 / ((1 + np.exp(-0.3)) * (1 + (x * np.exp(-4.5)) ** -1.2)))


def test_unknown_family_is_a_config_error_with_suggestion():
    with pytest.raises(ConfigError, match="log_power"):
        ex.get_family("log_powr")
    with pytest.raises(ConfigError, match="Valid families"):
        ex.fit("weibull", FLOPS, truth("log_power", FLOPS))


# ------------------------------------------------------------------ fitting
@pytest.mark.parametrize("name", ex.FAMILY_NAMES)
@pytest.mark.parametrize("solver", ["curve_fit", "batched"])
def test_each_family_recovers_its_own_noiseless_curve(name, solver):
    y = truth(name, FLOPS)
    res = ex.fit(name, FLOPS, y, solver=solver)
    assert res.ok, res.message
    assert res.rmse < 1e-8
    # Values at held-out capacities, inside and beyond the fitted range.
    grid = np.geomspace(50e6, 4000e6, 40)
    np.testing.assert_allclose(res.predict(grid), truth(name, grid), atol=1e-6)
    # With 8 noiseless points over a 28x FLOPs range all parameters are identifiable.
    np.testing.assert_allclose(res.params, TRUE_PARAMS[name], rtol=1e-4, atol=1e-7)


def test_extrapolation_beyond_the_fitted_range_matches_log_power():
    small = FLOPS[FLOPS <= 1000e6]  # 100..945 MFLOPs: the paper's K-1 smaller supernets
    for target in (1500e6, 2000e6, 4000e6):
        est, res = ex.extrapolate("log_power", small, truth("log_power", small), target)
        assert res.ok and est is not None
        assert est == pytest.approx(float(truth("log_power", target)), abs=1e-7)


def test_log_power_estimate_does_not_depend_on_the_flops_unit():
    y = truth("log_power", FLOPS) + np.random.default_rng(0).normal(0, 0.003, FLOPS.size)
    est_m, _ = ex.extrapolate("log_power", FLOPS, y, 3000e6)
    est_1, _ = ex.extrapolate("log_power", FLOPS, y, 3000e6, unit=1.0)
    assert est_m == pytest.approx(est_1, abs=1e-6)


def test_log_power_rep_equals_log_power_below_one_and_cannot_exceed_one():
    y = truth("log_power", FLOPS)
    lp, rep = ex.fit("log_power", FLOPS, y), ex.fit("log_power_rep", FLOPS, y)
    grid = np.geomspace(50e6, 4000e6, 20)
    np.testing.assert_allclose(lp.predict(grid), rep.predict(grid), atol=1e-6)
    pct = 100 * y  # rewards in percent: the sigmoid asymptote cannot reach them
    rep_pct = ex.fit("log_power_rep", FLOPS, pct)
    assert not rep_pct.ok or np.all(rep_pct.predict(grid) <= 1.0)
    assert ex.fit("log_power", FLOPS, pct).predict(2000e6) == pytest.approx(100 * float(truth("log_power", 2000e6)))


def test_batched_solver_agrees_with_curve_fit_on_noisy_data():
    rng = np.random.default_rng(1)
    n = 30
    flops = FLOPS[None, 1:] * rng.uniform(0.7, 1.3, (n, 1))
    y = (ex.FAMILIES["log_power"](flops / 1e6, rng.uniform(0.5, 0.65, (n, 1)), rng.uniform(4, 5.5, (n, 1)),
                                  rng.uniform(-1.5, -0.8, (n, 1))) + rng.normal(0, 0.005, flops.shape))
    for name in ex.FAMILY_NAMES:
        a = ex.fit_many(name, flops, y, solver="curve_fit")
        b = ex.fit_many(name, flops, y, solver="batched")
        ok_a, ok_b = np.array([r.ok for r in a]), np.array([r.ok for r in b])
        assert np.mean(ok_a == ok_b) >= 0.9, name
        both = np.flatnonzero(ok_a & ok_b)
        pa = np.array([a[i].predict(2000e6) for i in both])
        pb = np.array([b[i].predict(2000e6) for i in both])
        np.testing.assert_allclose(pa, pb, atol=1e-3, err_msg=name)
        assert all(b[i].rmse <= a[i].rmse + 1e-6 for i in both)


# ----------------------------------------------------------------- failures
@pytest.mark.parametrize("solver", ["curve_fit", "batched"])
def test_garbage_gives_a_failed_fit_not_an_exception(solver):
    y = truth("log_power", FLOPS)
    nan = ex.fit("log_power", FLOPS, np.where(np.arange(8) == 3, np.nan, y), solver=solver)
    assert not nan.ok and "non-finite" in nan.message
    assert math.isnan(nan.predict(1e9)) and np.isnan(nan.predict(FLOPS)).all()
    two = ex.fit("janoschek", FLOPS[:2], y[:2], solver=solver)
    assert not two.ok and "underdetermined" in two.message
    same = ex.fit("mmf", np.full(8, 5e8), y, solver=solver)
    assert not same.ok and "distinct" in same.message
    # A flat curve puts log power's exponent on its bound c = 0 where b has no effect.
    flat = ex.fit("log_power", FLOPS, np.full(8, 0.5), solver=solver)
    assert not flat.ok
    # K = 3 supernets: the 4-parameter families cannot be fitted, the others can.
    k3 = [ex.fit(n, FLOPS[[2, 5, 7]], y[[2, 5, 7]], solver=solver).ok for n in ex.FAMILY_NAMES]
    assert k3 == [False, True, True, True, True, False, True]
    est, res = ex.extrapolate("log_power", FLOPS, np.full(8, np.nan), 2000e6, solver=solver)
    assert est is None and not res.ok


def test_bad_input_is_a_config_error_naming_the_value():
    y = truth("log_power", FLOPS)
    with pytest.raises(ConfigError, match=r"\(8,\) and \(7,\)"):
        ex.fit("log_power", FLOPS, y[:7])
    with pytest.raises(ConfigError, match="-5"):
        ex.fit("log_power", np.r_[FLOPS[:-1], -5.0], y)
    with pytest.raises(ConfigError, match="finite"):
        ex.fit("log_power", np.r_[FLOPS[:-1], np.nan], y)
    # MFLOPs passed where FLOPs are expected: log x < 0 for ilog2.
    with pytest.raises(ConfigError, match="unit"):
        ex.fit("ilog2", FLOPS / 1e6, y)
    with pytest.raises(ConfigError, match="target_flops"):
        ex.extrapolate("log_power", FLOPS, y, 0.0)
    with pytest.raises(ConfigError, match="solver"):
        ex.fit("log_power", FLOPS, y, solver="adam")
    with pytest.raises(ConfigError, match="maxfev"):
        ex.fit("log_power", FLOPS, y, maxfev=0)
    with pytest.raises(ConfigError, match="unit"):
        ex.fit("log_power", FLOPS, y, unit=-1)


# ------------------------------------------------------------ LOO selection
def _population(name: str, seed: int, n: int = 40):
    """N architectures whose rewards follow ``name`` with per-architecture parameters.

    Each architecture has its own FLOPs (x0.7-1.3) in every supernet, its own
    curve, and N(0, sigma) noise. The ranges are chosen so that curves cross
    (the ranking depends on the capacity) and the families are distinguishable:
    log power is generated in percent, which the sigmoid asymptote of
    log_power_rep cannot reach (on [0, 1] rewards the two are the same
    family); MMF contains log power (b = 0), so only its extra parameter's
    variance under noise separates them, hence the larger noise there.
    """
    rng = np.random.default_rng(seed)
    flops = FLOPS[None, :] * rng.uniform(0.7, 1.3, (n, 1))
    x = flops / 1e6

    def u(lo, hi):
        return rng.uniform(lo, hi, (n, 1))

    if name == "log_power":
        params, sigma = (u(55, 70), u(3.5, 5.5), u(-1.8, -0.8)), 0.5
    elif name == "vapor_pressure":
        params, sigma = (u(-1.1, -0.7), u(-120, -20), u(-0.04, 0.06)), 1e-3
    elif name == "ilog2":
        a = u(1, 4)
        params, sigma = (a, u(0.35, 0.45) + a / np.log(800)), 1e-3
    elif name == "log_log_linear":
        a = u(0.05, 0.2)
        params, sigma = (a, np.exp(u(0.35, 0.45)) - a * np.log(800)), 1e-3
    else:
        raise ValueError(name)
    rewards = ex.FAMILIES[name](x, *params) + rng.normal(0, sigma, x.shape)
    return flops, rewards


@pytest.mark.parametrize("name", ["log_power", "vapor_pressure", "ilog2", "log_log_linear"])
def test_loo_selection_picks_the_generating_family(name):
    flops, rewards = _population(name, seed=0)
    res = ex.loo_selection(flops, rewards, maxfev=200)
    assert res.best == name, dict(zip(res.families, np.round(res.mean_tau, 4)))
    i = res.families.index(name)
    assert res.mean_tau[i] > 0.98
    assert res.failures[i].sum() == 0


def test_loo_selection_structure_and_paper_protocol():
    rng = np.random.default_rng(3)
    n = 25
    flops = FLOPS[None, :] * rng.uniform(0.8, 1.2, (n, 1))
    rewards = ex.FAMILIES["log_power"](flops / 1e6, rng.uniform(0.5, 0.65, (n, 1)), rng.uniform(4, 5.5, (n, 1)),
                                       rng.uniform(-1.5, -0.8, (n, 1)))
    rewards[7, 4] = np.nan  # one failed evaluation
    fams = ["log_power", "ilog2", "mmf"]
    res = ex.loo_selection(flops, rewards, families=fams, names=[f"c{w:g}" for w in WIDTHS])
    assert res.families == tuple(fams) and res.tau.shape == (3, 8) and res.predictions.shape == (3, 8, n)
    assert res.exclude == (0,)
    np.testing.assert_allclose(res.mean_tau, np.nanmean(res.tau[:, 1:], axis=1))
    # The NaN reward breaks the fits that use it (every j but 4) and the correlation of j = 4 drops arch 7.
    assert (res.failures[0] == np.r_[[1] * 4, 0, [1] * 3]).all()
    # Noiseless log power data: the leave-j-out predictions are exact.
    ok = np.isfinite(res.predictions[0, 2])
    np.testing.assert_allclose(res.predictions[0, 2, ok], rewards[ok, 2], atol=1e-6)
    assert res.tau[0, 1:] == pytest.approx(np.ones(7))
    assert res.best == "log_power"
    # exclude counts from the end too; excluding every column is an error.
    assert ex.loo_selection(flops, rewards, families=["ilog2"], exclude=(-1,)).exclude == (7,)
    with pytest.raises(ConfigError, match="exclude"):
        ex.loo_selection(flops, rewards, exclude=(8,))
    with pytest.raises(ConfigError, match="no supernet"):
        ex.loo_selection(flops[:, :2], rewards[:, :2], exclude=(0, 1))
    with pytest.raises(ConfigError, match=r"\(N architectures, K supernets\)"):
        ex.loo_selection(flops[0], rewards[0])


def test_loo_selection_with_three_supernets_drops_the_four_parameter_families():
    rng = np.random.default_rng(4)
    n = 20
    flops = FLOPS[None, [1, 4, 7]] * rng.uniform(0.8, 1.2, (n, 1))
    rewards = ex.FAMILIES["ilog2"](flops / 1e6, rng.uniform(1, 4, (n, 1)), rng.uniform(0.7, 0.9, (n, 1)))
    res = ex.loo_selection(flops, rewards, maxfev=100)
    for name in ("janoschek", "mmf"):
        i = res.families.index(name)
        assert np.isnan(res.mean_tau[i]) and (res.failures[i] == n).all()
    assert res.best is not None and res.best not in ("janoschek", "mmf")


def test_loo_selection_skips_families_outside_their_domain_instead_of_raising():
    flops, rewards = _population("log_power", seed=2, n=15)
    tiny = flops / 1e4  # networks of 7-260 kFLOPs: log(flops / 1e6) < 0
    res = ex.loo_selection(tiny, rewards, maxfev=100)
    for name in ("ilog2", "log_log_linear"):
        i = res.families.index(name)
        assert np.isnan(res.mean_tau[i]) and (res.failures[i] == 15).all()
    assert res.best == ex.loo_selection(flops, rewards, maxfev=100).best  # the unit-free families are unaffected
    assert res.best not in ("ilog2", "log_log_linear")


# ------------------------------------------------------------------ reports
def test_write_report_writes_all_files(tmp_path):
    flops, rewards = _population("ilog2", seed=1, n=15)
    res = ex.loo_selection(flops, rewards, maxfev=100)
    paths = ex.write_report(res, tmp_path / "out", flops=flops, rewards=rewards)
    assert set(paths) == {"markdown", "csv", "json", "plot", "curves"}
    for p in paths.values():
        assert p.exists() and p.stat().st_size > 0
    for key in ("plot", "curves"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert data["best"] == res.best and set(data["mean_tau"]) == set(ex.FAMILY_NAMES)
    rows = list(csv.reader(paths["csv"].open()))
    assert len(rows) == 1 + 7 and rows[1][0] == res.best  # sorted by mean tau
    md = paths["markdown"].read_text()
    assert f"**{res.best}**" in md and "| family | mean tau |" in md
    with pytest.raises(ConfigError, match="both"):
        ex.write_report(res, tmp_path, flops=flops)
    # the target FLOPs beyond the supernets (the search's C_T) is marked in the example plot, the warnings listed
    marked = ex.write_report(res, tmp_path / "target", flops=flops, rewards=rewards, target=3 * float(flops.max()),
                             trust_warnings=["the chosen family is doubtful"])
    assert marked["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "> **Warning:** the chosen family is doubtful" in marked["markdown"].read_text()
    assert json.loads(marked["json"].read_text())["warnings"] == ["the chosen family is doubtful"]
