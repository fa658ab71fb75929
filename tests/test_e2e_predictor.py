"""End to end under nnictl: the quick MSRobNet-P (predictor-based controller) experiment,
started on a free port in a temporary experiment directory, waited for through NNI's REST
API, and stopped by its id."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from nni_robust.spaces.dense_rob import DenseRobArch, Layout

from conftest import Nnictl

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "msrobnet-predictor-quick.yml"
CFG = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]
ARGS = CFG["strategy_args"]
NUM_RANDOM = 4  # this run's N (the config's is larger): the leave-one-out family selection needs 3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(nnictl):
    # every stage at its smallest budget: 2-epoch supernets (batch 128), NUM_RANDOM random topologies, rewards on
    # half the validation split, a 1-epoch final training
    return nnictl.run("msrobnet-predictor-quick", tuner_args={"settings.supernet.epochs": 2,
                                                              "settings.supernet.batch_size": 128,
                                                              "strategy_args.num_random": NUM_RANDOM,
                                                              "settings.evaluation.eval_images": 144,
                                                              "settings.evaluation.batch_size": 144,
                                                              "settings.final.train.epochs": 1,
                                                              "settings.final.train.milestones": [1]})


_by_task = Nnictl.by_task


def test_every_trial_succeeded_and_every_stage_ran(quick_run):
    assert quick_run["status"] == "DONE", quick_run
    assert quick_run["failed_trials"] == []
    assert len(_by_task(quick_run, "supernet")) == len(ARGS["widths"])
    evaluations = _by_task(quick_run, "evaluate")
    assert len(evaluations) == NUM_RANDOM + ARGS["stages"] * ARGS["picks"]  # N + T_p x N_p
    samples = [json.dumps(t["parameters"]["sample"], sort_keys=True) for t in evaluations]
    assert len(set(samples)) == len(samples)
    assert len(_by_task(quick_run, "final")) == 1
    assert len(quick_run["trials"]) == len(ARGS["widths"]) + len(evaluations) + 1
    work = Path(quick_run["work_dir"])
    assert (work / "family_selection" / "loo_selection.json").exists()  # the family stage ran
    for v in range(ARGS["stages"] + 1):  # initial predictor + one tuning per stage
        assert (work / "predictor" / f"predictor_v{v}.pt").stat().st_size > 0


def test_predictor_quality_recorded(quick_run):
    work = Path(quick_run["work_dir"])
    report = json.loads((work / "predictor" / "quality.json").read_text())
    assert [s["stage"] for s in report["stages"]] == list(range(1, ARGS["stages"] + 1))
    state = json.loads((work / "strategy_state.json").read_text())["strategy"]["predictor"]
    for stage, logged in zip(report["stages"], state["log"]):
        finite = [p for p in logged["picks"] if p["reward"] is not None]
        assert stage["quality"]["n"] == len(finite) and len(logged["picks"]) == ARGS["picks"]
        for name in ("kendall_tau", "spearman", "precision_at_2"):
            value = stage["quality"][name]
            assert value is None or (-1.0 <= value <= 1.0 and math.isfinite(value))
    pooled = report["pooled"]
    assert pooled["n"] >= 3
    assert -1.0 <= pooled["kendall_tau"] <= 1.0 and -1.0 <= pooled["spearman"] <= 1.0
    assert 0.0 <= pooled["precision_at_2"] <= 1.0
    assert report["scored_by_predictor"] == ARGS["stages"] * (ARGS["population"] + ARGS["picks"] * ARGS["pick_every"])
    assert "| pooled |" in (work / "predictor" / "quality.md").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(work / "tensorboard"))
    acc.Reload()
    assert {"predictor/train_loss", "predictor_pooled/kendall_tau", "search/best_reward"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("search/best_reward")] == list(range(1, ARGS["stages"] + 1))


def test_architecture_exported_and_trained(quick_run):
    work = Path(quick_run["work_dir"])
    best = json.loads((work / "best_architecture.json").read_text())
    arch = DenseRobArch.from_sample(best["sample"], Layout.from_name(CFG["space"]["layout"]))
    rewards = [json.loads(line)["reward"] for line in (work / "evaluations.jsonl").read_text().splitlines()]
    assert best["estimate"] == pytest.approx(max(rewards))
    assert best["controller"] == "predictor" and best["predictor"]["stages"] == ARGS["stages"]
    (final_trial,) = _by_task(quick_run, "final")
    assert DenseRobArch.from_sample(final_trial["parameters"]["args"]["sample"], arch.layout) == arch
    final = final_trial["final"]
    assert 0.0 <= final["acc_pgd20"] <= final["acc_clean"] <= 1.0
