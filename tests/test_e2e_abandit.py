"""End to end under nnictl: the quick ABanditNAS experiment (anti-bandit search trials on the
supernet -> export -> final training trial), shrunk to the smallest budget that still abandons
down to one operation per edge (T = 1: 44 samples of 64 images), in three search trials."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nni_robust.spaces.abandit import ABanditArch, abandit_layout
from nni_robust.strategies.abandit.search import STATE_FILE, SearchState

from conftest import Nnictl

pytestmark = pytest.mark.slow

SMALL = {"strategy_args.samples_per_arm": 1, "strategy_args.trial_steps": 15,
         "strategy_args.permutations": 200,
         "strategy_args.search.init_channels": 2, "strategy_args.search.train_images_per_sample": 64,
         "strategy_args.search.bn_calibration_images": 64, "strategy_args.search.val_images": 64,
         "strategy_args.search.warmup_samples": 2,
         "strategy_args.final_init_channels": 4,
         "settings.final.train.epochs": 1}


@pytest.fixture(scope="module")
def run(nnictl):
    return nnictl.run("abandit-quick", timeout=900, tuner_args=SMALL)


def test_search_abandons_to_one_op_per_edge_exports_and_trains(run):
    assert run["status"] == "DONE", run
    assert run["failed_trials"] == []
    searches = sorted(Nnictl.by_task(run, "abandit_search"), key=lambda t: t["parameters"]["model_id"])
    (final,) = Nnictl.by_task(run, "final")
    args = run["yaml"]["strategy_args"]
    space = run["yaml"]["settings"]["space"]
    edges = 10 * len(abandit_layout(space["num_cells"]).cell_types)
    # 2 warm-up samples + T (2 + ... + 9) = 44 credited ones, 15 per trial
    assert [t["parameters"]["args"]["until"] for t in searches] == [17, 32, 46]
    steps = [step for t in searches for step in t["intermediate"]]
    assert len(steps) == 46 and [s["warmup"] for s in steps[:3]] == [1.0, 1.0, 0.0]
    for step in steps:
        assert 0.0 <= step["default"] <= 1.0 and step["reward"] == pytest.approx(100 * step["default"])
    assert steps[-1]["done"] == 1.0 and steps[-1]["remaining_arms"] == edges
    assert searches[-1]["final"]["done"] == 1.0

    work = Path(run["work_dir"])
    state = SearchState.load(work / "abandit_search" / STATE_FILE)
    assert state.bandit.done and state.bandit.total == 44 and len(state.bandit.abandon_history) == 8 * edges
    arch = ABanditArch.from_json((work / "architecture.json").read_text())
    best = json.loads((work / "best_architecture.json").read_text())
    assert ABanditArch.from_json(best["arch"]) == arch and best["final_space"] == args["final_space"]
    assert best["edge_ops"] == state.bandit.result() and "warnings" in best and "overall_p" in best["signal"]
    # the final trial trained the exported architecture in the final space
    assert ABanditArch.from_json(final["parameters"]["args"]["arch"]) == arch
    assert final["parameters"]["args"]["space"] == args["final_space"]
    report = json.loads((Nnictl.trial_dir(run, final) / "final_report.json").read_text())
    assert ABanditArch.from_json(report["arch"]) == arch
    assert set(report["accuracy"]) == {"clean", *run["yaml"]["settings"]["final"]["attacks"]}
    assert final["final"]["acc_pgd20"] <= final["final"]["acc_clean"]


def test_report_and_tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work = Path(run["work_dir"])
    folder = work / "abandit_report"
    text = (folder / "report.md").read_text()
    assert "Can the result be trusted?" in text and (folder / "search.png").stat().st_size > 10_000
    with (folder / "abandons.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 * 30 and rows[0]["remaining_before"] == "9" and rows[-1]["remaining_before"] == "2"
    search = next(t for t in Nnictl.by_task(run, "abandit_search"))
    (events,) = (Nnictl.trial_dir(run, search) / "tensorboard" / f"abandit_search-{search['trialJobId']}").glob(
        "events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"abandit/reward", "probability/gabor_3x3", "remaining/denoising", "m/sep_conv_3x3"} <= tags
    assert len(acc.Scalars("abandit/reward")) == 17
    (strategy_events,) = (work / "tensorboard" / "abandit").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(strategy_events), size_guidance={"images": 0})
    acc.Reload()
    assert "report/search" in acc.Tags()["images"]
