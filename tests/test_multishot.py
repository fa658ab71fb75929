"""Multi-shot evaluation (MSRobNet Alg. 3) and the trial tasks on the embedded digits data."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from nni_robust.data import DATASETS, load_dataset
from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.flops import count_flops
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.msrobnet import extrapolation
from nni_robust.strategies.msrobnet.multishot import MultiShotEvaluator, flatten_result, supernet_path
from nni_robust.strategies.networks import build_network
from nni_robust.strategies.settings import EvalSettings, TrialSettings, validate_settings

LAYOUT = "cellwise-3"
SPACE = {"layout": LAYOUT}
WIDTHS = (4, 6, 8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="search")


@pytest.fixture(scope="module")
def supernets():
    torch.manual_seed(0)
    info = DATASETS["digits"]
    return {w: build_network(None, width=w, info=info, space=SPACE) for w in WIDTHS}


def _evaluator(supernets, digits, **kw):
    settings = kw.pop("settings", EvalSettings(calib_images=64, eval_images=64, batch_size=64))
    return MultiShotEvaluator(supernets, digits.val[0], digits.val[1], digits.info, settings=settings,
                              target_flops=kw.pop("target_flops", 0.6), device="cpu",
                              flops_unit=kw.pop("flops_unit", 1e3), **kw)


def test_one_shot_measures_match_the_discrete_networks(supernets, digits):
    arch = DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(3))
    ev = _evaluator(supernets, digits)
    per = ev.one_shot(arch)
    assert [p["width"] for p in per] == list(WIDTHS)
    for p in per:
        discrete = build_network(arch, width=p["width"], info=digits.info, space=SPACE)
        assert p["mflops"] == pytest.approx(count_flops(discrete, (1, 8, 8)) / 1e6)
        assert 0.0 <= p["acc_adv"] <= 1.0 and 0.0 <= p["acc_clean"] <= 1.0
        assert p["reward"] == pytest.approx(0.5 * p["acc_clean"] + 0.5 * p["acc_adv"])
    # wider supernets cost more FLOPs
    assert per[0]["mflops"] < per[1]["mflops"] < per[2]["mflops"]


def test_estimate_is_the_fitted_family_at_the_target(supernets, digits):
    arch = DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(4))
    ev = _evaluator(supernets, digits, family="ilog2")
    res = ev.evaluate(arch)
    flops = [p["mflops"] * 1e6 for p in res["supernets"]]
    rewards = [p["reward"] for p in res["supernets"]]
    est, fit = extrapolation.extrapolate("ilog2", flops, rewards, 0.6e6, unit=1e3)
    if fit.ok:
        assert res["fit"]["ok"] and res["estimate"] == pytest.approx(est)
    else:
        assert not res["fit"]["ok"] and res["estimate"] == 0.0
    flat = flatten_result(res)
    assert flat["default"] == res["estimate"]
    for w in WIDTHS:
        assert {f"reward_c{w}", f"acc_clean_c{w}", f"acc_adv_c{w}", f"mflops_c{w}"} <= set(flat)
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())
    json.dumps(flat)  # NNI needs JSON floats


def test_failed_fit_is_reported_not_raised(supernets, digits):
    # 4-parameter Janoschek cannot be fitted to K = 3 points: a failed fit, never an exception
    ev = _evaluator(supernets, digits, family="janoschek", fallback_reward=0.0)
    res = ev.evaluate(DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(5)))
    assert res["fit"]["ok"] is False and res["fit"]["message"]
    assert res["estimate"] == 0.0
    assert flatten_result(res)["fit_ok"] == 0.0
    # the log-x families with a unit that puts x below 1 fail the same way
    ev = _evaluator(supernets, digits, family="log_log_linear", flops_unit=1e7)
    res = ev.evaluate(DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(5)))
    assert res["fit"]["ok"] is False and res["estimates"]["ilog2"] is None


def test_one_shot_baselines(supernets, digits):
    arch = DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(6))
    one = _evaluator({8: supernets[8]}, digits, mode="oneshot").evaluate(arch)
    assert one["estimate"] == pytest.approx(one["supernets"][0]["reward"])
    per = _evaluator({8: supernets[8]}, digits, mode="oneshot_per_flops").evaluate(arch)
    assert per["estimate"] == pytest.approx(per["supernets"][0]["reward"] / per["supernets"][0]["mflops"])


def test_evaluator_rejects_bad_settings(supernets, digits):
    with pytest.raises(ConfigError, match="mode"):
        _evaluator(supernets, digits, mode="twoshot")
    with pytest.raises(ConfigError, match="family"):
        _evaluator(supernets, digits, family="power_law")
    with pytest.raises(ConfigError, match="K >= 2"):
        _evaluator({4: supernets[4]}, digits)
    with pytest.raises(ConfigError, match="288"):
        _evaluator(supernets, digits, settings=EvalSettings(calib_images=64, eval_images=10_000))


def test_from_dir_names_missing_supernets(tmp_path, digits):
    with pytest.raises(CheckpointError, match="width 12"):
        MultiShotEvaluator.from_dir(tmp_path, [12], digits.val[0], digits.val[1], digits.info, space=SPACE,
                                    settings=EvalSettings(), target_flops=1.0)


def test_settings_validation_names_the_key():
    with pytest.raises(ConfigError, match="'lamda'.*Did you mean 'lam'"):
        validate_settings({"evaluation": {"lamda": 0.3}})
    with pytest.raises(ConfigError, match="dataset"):
        validate_settings({"dataset": "imagenet"})
    with pytest.raises(ConfigError, match="epochz"):
        validate_settings({"final": {"train": {"epochz": 3}}})
    s = TrialSettings.from_dict({"dataset": "svhn"})
    assert s.final.train.epochs == 50 and s.final.train.milestones == (20, 40, 45)  # App. B.2, SVHN
    s = TrialSettings.from_dict({"dataset": "cifar10", "final": {"train": {"epochs": 3, "milestones": [2]}}})
    assert s.final.train.label_smoothing == 0.2 and s.final.train.epochs == 3
    assert TrialSettings.from_dict(validate_settings(s.to_dict())) == s


def test_trial_tasks_supernet_evaluate_final(tmp_path):
    """The three trial tasks on digits, each as the trial entry point runs it."""
    from nni_robust.trial.run import run_task

    settings = {"dataset": "digits", "device": "cpu", "space": SPACE,
                "supernet": {"epochs": 1, "batch_size": 128},
                "evaluation": {"calib_images": 64, "eval_images": 64},
                "final": {"train": {"epochs": 1, "milestones": [1], "batch_size": 128}, "eval_images": 32,
                          "attacks": {"fgsm": {"name": "fgsm", "eps": 0.03},
                                      "pgd7": {"name": "pgd", "eps": 0.03, "step": 0.01, "steps": 7}}}}
    reports = []
    for w in (4, 6, 8):
        final, full = run_task({"task": "supernet", "args": {"width": w}, "settings": settings,
                                "work_dir": str(tmp_path), "model_id": w}, reporter=reports.append)
        assert supernet_path(tmp_path / "supernets", w).exists()
        assert 0.0 <= final["default"] <= 1.0
    assert len(reports) == 3 and all("default" in r for r in reports)  # one intermediate per epoch
    assert list((tmp_path / "trials" / "4" / "tensorboard" / "supernet-4").glob("events.out.tfevents.*"))
    sample = DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(7)).to_sample()
    final, full = run_task({"task": "evaluate", "sample": sample, "settings": settings, "work_dir": str(tmp_path),
                            "args": {"widths": [4, 6, 8], "target_mflops": 0.6, "family": "ilog2",
                                     "flops_unit": 1e3}, "model_id": 10})
    assert set(full["estimates"]) == set(extrapolation.FAMILIES)
    assert json.loads((tmp_path / "trials" / "10" / "evaluation.json").read_text())["arch"]
    robustness = {"suite": "quick", "eps": 0.1, "pgd_steps": [2], "noise": False, "curve_eps": [0.05, 0.2],
                  "curve_steps": 2, "large_eps": None, "num_images": 16, "autoattack": True,
                  "autoattack_attacks": ["apgd-ce"], "autoattack_images": 8}
    final_settings = {**settings, "final": {**settings["final"], "robustness": robustness}}
    final, report = run_task({"task": "final", "args": {"sample": sample, "target_mflops": 0.6},
                              "settings": final_settings, "work_dir": str(tmp_path), "model_id": 11})
    assert set(report["accuracy"]) == {"clean", "fgsm", "pgd7"}
    # The robustness report: AutoAttack (APGD-CE on 8 images) among the trial's NNI metrics.
    rob = json.loads((tmp_path / "trials" / "11" / "robustness.json").read_text())
    assert rob["autoattack"]["num_images"] == 8 and list(rob["autoattack"]["per_attack"]) == ["apgd-ce"]
    assert final["acc_autoattack"] == pytest.approx(rob["autoattack"]["robust"])
    assert 0.0 <= final["acc_autoattack"] <= rob["autoattack"]["clean"] <= 1.0  # on the same 8 images
    assert final["robustness_strength@0.05"] >= final["robustness_strength@0.2"]
    assert report["robustness"]["metrics"]["autoattack"] == final["acc_autoattack"]
    with pytest.raises(ConfigError, match=r"settings\.final\.robustness\.autoattack_imagez: unknown key"):
        TrialSettings.from_dict({**settings, "final": {"robustness": {"autoattack_imagez": 8}}})
    with pytest.raises(ConfigError, match=r"settings\.final\.robustness\.suite must be one of"):
        TrialSettings.from_dict({**settings, "final": {"robustness": {"suite": "fast"}}})
    assert report["mflops"] == pytest.approx(0.6, rel=0.35)  # the width closest to the target (Eq. 2)
    assert (tmp_path / "trials" / "11" / "final_report.json").exists()
    assert (tmp_path / "trials" / "11" / "model.pt").exists()
    with pytest.raises(ConfigError, match="Unknown trial task 'train'"):
        run_task({"task": "train", "settings": settings})
