"""End to end under nnictl: the quick RobNet experiment (supernet -> FSP scores -> filter ->
fine-tuning trials -> report -> export -> final), with budgets shrunk to the smallest that still
run every stage (4 sampled architectures, 1 epoch each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_robust.spaces.dense_rob import DenseRobArch, Layout

from conftest import Nnictl

pytestmark = pytest.mark.slow

ARGS = {
    "settings.supernet.epochs": 1,
    "settings.supernet.steps": 1,
    "settings.evaluation.steps": 2,
    "settings.evaluation.eval_images": 96,
    "settings.evaluation.batch_size": 96,
    "settings.final.train": {"epochs": 1, "milestones": [1], "batch_size": 128, "steps": 1, "step": 0.03},
    "settings.final.eval_images": 100,
    "strategy_args.num_samples": 4,
    "strategy_args.budget_samples": 0,
    "strategy_args.fsp_audit": 1,
    "strategy_args.finetune_epochs": 2,
    "strategy_args.finetune_images": 128,
    "strategy_args.fsp": {"images": 32, "batch_size": 32},
}


@pytest.fixture(scope="module")
def run(nnictl):
    return nnictl.run("robnet-quick", timeout=900, tuner_args=ARGS)


_trial_dir = Nnictl.trial_dir


def test_supernet_fsp_finetune_report_export_final(run):
    assert run["status"] == "DONE", run
    assert run["failed_trials"] == []
    work = Path(run["work_dir"])
    args = run["yaml"]["strategy_args"]
    layout = Layout.from_name(run["yaml"]["settings"]["space"]["layout"])

    # 1. The supernet, trained with one probe result per epoch.
    (supernet,) = Nnictl.by_task(run, "robnet_supernet")
    assert len(supernet["intermediate"]) == 1 and 0.0 <= supernet["final"]["probe_acc_adv"] <= 1.0
    assert (work / "supernet" / f"c{args['width']}" / "supernet.pt").exists()

    # 2. FSP scores of the 4 candidates in one trial; the filter rejects those above the median.
    (fsp,) = Nnictl.by_task(run, "robnet_fsp")
    assert fsp["final"]["screened"] == 4.0
    summary = json.loads((work / "report" / "summary.json").read_text())
    assert summary["sampled"] == 4 and summary["fsp"]["screened"] == 4
    assert summary["fsp"]["rejected"] == 2 and summary["fsp"]["audited"] == 1 and summary["fsp"]["saved"] == 1

    # 3. Fine-tuning trials: the 2 kept + 1 audited, each with one intermediate result per epoch.
    finetune = Nnictl.by_task(run, "robnet_finetune")
    assert len(finetune) == 3 == summary["fine_tuned"]
    for t in finetune:
        assert len(t["intermediate"]) == args["finetune_epochs"]
        final = t["final"]
        assert final["default"] == final["acc_adv"] == t["intermediate"][-1]["acc_adv"]
        assert 0.0 <= final["acc_adv"] <= 1.0 and 0.0 <= final["acc_clean"] <= 1.0 and "acc_adv_before" in final
        DenseRobArch.from_sample(t["parameters"]["sample"], layout)

    # 4. The density / convolution / budget report and the FSP report, and TensorBoard images.
    report = work / "report"
    for name in ("robnet_report.md", "robnet_archs.csv", "robnet_correlations.csv", "robnet_convs.csv",
                 "robnet_budget.csv", "robnet_density.png", "robnet_convs.png", "robnet_budget.png",
                 "robnet_fsp.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "robnet_report.md").read_text()
    assert "Density" in text and "Budget study" in text and "FSP indicator" in text
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))

    # 5. The best fine-tuned architecture, exported and trained by the final trial.
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["finetune"]["acc_adv"] == max(t["final"]["acc_adv"] for t in finetune)
    (final,) = Nnictl.by_task(run, "final")
    arch = DenseRobArch.from_json(final["parameters"]["args"]["arch"])
    assert arch == DenseRobArch.from_json((work / "architecture.json").read_text())
    assert final["parameters"]["args"]["space"] == args["final_space"]
    final_report = json.loads((_trial_dir(run, final) / "final_report.json").read_text())
    assert DenseRobArch.from_json(final_report["arch"]) == arch
    assert set(final_report["accuracy"]) == {"clean", *run["yaml"]["settings"]["final"]["attacks"]}
    assert final["final"]["acc_pgd20"] <= final["final"]["acc_clean"]
    assert 0.0 <= final["final"]["acc_autoattack"] <= 1.0  # the robustness report's AutoAttack figure
    assert (_trial_dir(run, final) / "robustness.md").stat().st_size > 0
