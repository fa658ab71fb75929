"""End to end under nnictl: the quick Wsr-NAS experiment (search trial -> export -> final trial evaluated
at every strength), its budgets shrunk to the smallest that still runs every unit kind of Alg. 1
(warm-up, population, VLE warm-up, search) and the final training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_robust.spaces.darts import DartsArch, space_layout

from conftest import Nnictl

pytestmark = pytest.mark.slow

SHRINK = {
    "strategy_args.method_args.init_channels": 2,
    "strategy_args.method_args.warmup_population": 2,
    "strategy_args.method_args.epochs": 2,
    "strategy_args.method_args.train_batches": 1,
    "strategy_args.method_args.val_images": 32,
    "strategy_args.method_args.pgd_steps": 1,
    "strategy_args.method_args.vle_warmup_epochs": 10,
    "strategy_args.final_init_channels": 2,
    "settings.final.train.epochs": 1,
    "settings.final.train.milestones": [1],
    "settings.final.train.steps": 1,
    "settings.final.eval_images": 32,
}
STRENGTHS = ("0.03", "0.1", "0.17", "0.25")


@pytest.fixture(scope="module")
def run(nnictl):
    return nnictl.run("wsrnas-quick", timeout=900, tuner_args=SHRINK)


_trial_dir = Nnictl.trial_dir


def test_search_export_final_at_every_strength(run):
    assert run["status"] == "DONE", run
    assert run["failed_trials"] == []
    search, final = sorted(run["trials"], key=lambda t: t["parameters"]["model_id"])
    assert search["parameters"]["task"] == "wsrnas_search" and final["parameters"]["task"] == "final"
    args = run["yaml"]["strategy_args"]

    # per-unit results in the web UI: 2 population units (measured), then 2 search iterations (+ estimated)
    steps = search["intermediate"]
    assert [s["phase"] for s in steps] == [1.0, 1.0, 3.0, 3.0]
    eps = ("0.03", "0.045", "0.06", "0.075", "0.09", "0.105")
    for step in steps:
        assert {"default", "loss_nat", "acc_nat", *(f"loss@{e}" for e in eps), *(f"acc@{e}" for e in eps)} <= set(step)
        assert 0.0 <= step["default"] <= 1.0
    assert {"est_loss_nat", "est_objective", "objective", "arch_entropy", *(f"est_loss@{e}" for e in eps)} \
        <= set(steps[-1])
    assert search["final"]["default"] == pytest.approx(steps[-1]["default"])

    # the exported architecture is the space's and is what the final trial trained
    work = Path(run["work_dir"])
    arch = DartsArch.from_json((work / "architecture.json").read_text())
    layout, prims = space_layout(run["yaml"]["settings"]["space"])
    assert set(arch.cell_types) == set(layout.cell_types) and arch.primitives == prims
    best = json.loads((work / "best_architecture.json").read_text())
    assert DartsArch.from_json(best["arch"]) == arch and best["final_space"] == args["final_space"]
    assert DartsArch.from_json(final["parameters"]["args"]["arch"]) == arch
    assert final["parameters"]["args"]["space"] == args["final_space"]

    # the final evaluation covers every strength, and the strategy reports their mean
    report = json.loads((_trial_dir(run, final) / "final_report.json").read_text())
    assert set(report["accuracy"]) == {"clean", *(f"pgd20@{e}" for e in STRENGTHS)}
    accs = [final["final"][f"acc_pgd20@{e}"] for e in STRENGTHS]
    assert all(0.0 <= a <= final["final"]["acc_clean"] for a in accs)
    summary = json.loads((work / "wsrnas_report.json").read_text())
    assert summary["final"]["strengths"] == dict(zip(STRENGTHS, accs))
    assert summary["final"]["mean"] == pytest.approx(sum(accs) / 4)


def test_tensorboard_scalars_and_architecture_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    search = Nnictl.by_task(run, "wsrnas_search")[0]
    (events,) = (_trial_dir(run, search) / "tensorboard" / f"wsrnas_search-{search['trialJobId']}").glob(
        "events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == ["arch/normal", "arch/reduce"]
    assert all(len(acc.Images(tag)) == 2 for tag in acc.Tags()["images"])  # one per search iteration
    scalars = set(acc.Tags()["scalars"])
    assert {"search/loss@0.105", "search/est_loss@0.105", "population/loss_nat", "vle_warmup/vle_loss",
            "search/time_train_s", "search/arch_entropy"} <= scalars
