"""End to end under nnictl: the quick DSARA and RNAS-max experiments (search trial -> export ->
final training trial), each started on a free port in a temporary experiment directory,
waited for through NNI's REST API, and stopped by its id."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from nni_robust.spaces.darts import DartsArch, space_layout

from conftest import Nnictl

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


#: The quick configs shrunk to the smallest budgets that exercise every stage (their own budgets, minutes each,
#: are for the README; their architecture weights moving is tests/test_dsara_entropy.py's check).
_SMALL = {"strategy_args.method_args.batch_size": 16, "strategy_args.method_args.max_train": 32,
          "strategy_args.method_args.max_val": 32, "strategy_args.method_args.eval_images": 32,
          "strategy_args.final_init_channels": 2, "settings.final.train.epochs": 2,
          "settings.final.train.milestones": [2], "settings.final.train.batch_size": 128,
          "settings.final.train.steps": 1}
SHRINK = {"dsara-quick": {**_SMALL, "strategy_args.method_args.stage1_epochs": 1,
                          "strategy_args.method_args.stage2_epochs": 1},
          "rnas-quick": {**_SMALL, "strategy_args.method_args.search_epochs": 2,
                         "strategy_args.method_args.warmup_epochs": 1}}


@pytest.fixture(scope="module", params=["dsara-quick", "rnas-quick"])
def run(request, nnictl):
    return nnictl.run(request.param, timeout=900, tuner_args=SHRINK[request.param])


_trial_dir = Nnictl.trial_dir


def test_search_export_final(run):
    assert run["status"] == "DONE", run
    assert run["failed_trials"] == []
    search, final = sorted(run["trials"], key=lambda t: t["parameters"]["model_id"])
    assert search["parameters"]["task"] == "differentiable_search" and final["parameters"]["task"] == "final"
    args = run["yaml"]["strategy_args"]
    method_args = args["method_args"]
    epochs = method_args.get("search_epochs") or method_args["stage1_epochs"] + method_args["stage2_epochs"]

    # per-epoch results in the web UI: validation accuracies, architecture entropy, gamma* / regularizer
    steps = search["intermediate"]
    assert len(steps) == epochs
    for step in steps:
        assert {"default", "val_clean_acc", "val_adv_acc", "arch_entropy", "train_loss"} <= set(step)
        assert 0.0 <= step["val_adv_acc"] <= 1.0 and step["arch_entropy"] > 0.0
    if args["method"] == "dsara":  # stage 1 for stage1_epochs epochs, then MGDA with gamma*
        stages = [1.0] * method_args["stage1_epochs"] + [2.0] * method_args["stage2_epochs"]
        assert [s["stage"] for s in steps] == stages
        assert "gamma" not in steps[0] and 0.0 <= steps[-1]["gamma"] <= 1.0
    else:  # RNAS: warm-up epochs leave alpha alone
        assert [s["arch_updated"] for s in steps] == [0.0] * method_args["warmup_epochs"] + \
            [1.0] * (epochs - method_args["warmup_epochs"])
        assert steps[-1]["reg"] >= 0.0
    assert search["final"]["default"] == pytest.approx(steps[-1]["default"])

    # the architecture weights moved (entropy below its maximum log(ops) once alpha was updated), and a search
    # that left them nearly uniform says so (warnings.jsonl and best_architecture.json)
    from nni_robust.spaces.darts import space_layout as _layout
    from nni_robust.strategies.darts_search import UNIFORM_ENTROPY_RATIO
    from nni_robust.strategies.trust import read_warnings

    maximum = math.log(len(_layout(run["yaml"]["settings"]["space"])[1]))
    assert steps[-1]["arch_entropy"] < maximum - 1e-4 and steps[-1]["arch_entropy"] <= steps[0]["arch_entropy"]
    uniform = [w for w in read_warnings(run["work_dir"]) if w["source"] == f"{args['method']}.entropy"]
    assert len(uniform) == (steps[-1]["arch_entropy"] / maximum > UNIFORM_ENTROPY_RATIO)
    best = json.loads((Path(run["work_dir"]) / "best_architecture.json").read_text())
    assert best["warnings"] == [w["message"] for w in uniform]

    # the exported architecture is the space's and is what the final trial trained
    work = Path(run["work_dir"])
    arch = DartsArch.from_json((work / "architecture.json").read_text())
    layout, prims = space_layout(run["yaml"]["settings"]["space"])
    assert set(arch.cell_types) == set(layout.cell_types) and arch.primitives == prims
    assert DartsArch.from_json(json.loads((work / "best_architecture.json").read_text())["arch"]) == arch
    assert DartsArch.from_json(final["parameters"]["args"]["arch"]) == arch
    assert final["parameters"]["args"]["space"] == args["final_space"]
    assert final["parameters"]["args"]["init_channels"] == args["final_init_channels"]
    report = json.loads((_trial_dir(run, final) / "final_report.json").read_text())
    assert DartsArch.from_json(report["arch"]) == arch
    assert set(report["accuracy"]) == {"clean", *run["yaml"]["settings"]["final"]["attacks"]}
    assert final["final"]["acc_pgd20"] <= final["final"]["acc_clean"]
    assert len(final["intermediate"]) == run["yaml"]["settings"]["final"]["train"]["epochs"]


def test_tensorboard_scalars_and_architecture_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    search = next(t for t in run["trials"] if t["parameters"]["task"] == "differentiable_search")
    (events,) = (_trial_dir(run, search) / "tensorboard" / f"differentiable_search-{search['trialJobId']}").glob(
        "events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    layout, _ = space_layout(run["yaml"]["settings"]["space"])
    assert sorted(acc.Tags()["images"]) == sorted(f"arch/{t}" for t in layout.cell_types)
    epochs = len(search["intermediate"])
    for tag in acc.Tags()["images"]:
        assert len(acc.Images(tag)) == epochs
    assert {"search/arch_entropy", "search/val_clean_acc", "search/val_adv_acc"} <= set(acc.Tags()["scalars"])
    if run["yaml"]["strategy_args"]["method"] == "dsara":
        assert "search/gamma" in acc.Tags()["scalars"]
    final = next(t for t in run["trials"] if t["parameters"]["task"] == "final")
    (final_events,) = (_trial_dir(run, final) / "tensorboard" / f"final-{final['trialJobId']}").glob(
        "events.out.tfevents.*")
    final_acc = EventAccumulator(str(final_events), size_guidance={"images": 0})
    final_acc.Reload()
    assert final_acc.Tags()["images"] == ["architecture"]  # the trained architecture, drawn
