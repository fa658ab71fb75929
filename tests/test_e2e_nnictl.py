"""End to end under nnictl: the quick MSRobNet experiment, started on a free port in a
temporary experiment directory, waited for through NNI's REST API, and stopped by its id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.trial.experiment import check_experiment, run_experiment

from conftest import Nnictl

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "msrobnet-quick.yml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(nnictl):
    return nnictl.run("msrobnet-quick")


_by_task = Nnictl.by_task


def test_every_trial_succeeded(quick_run):
    assert quick_run["status"] == "DONE", quick_run
    assert quick_run["failed_trials"] == []
    cfg = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]["strategy_args"]
    assert len(_by_task(quick_run, "supernet")) == len(cfg["widths"])
    n_eval = len(_by_task(quick_run, "evaluate"))
    assert cfg["num_random"] <= n_eval <= cfg["num_random"] + cfg["steps"]
    assert len(_by_task(quick_run, "final")) == 1
    # the tuner ends the experiment: it set maxTrialNumber to the trials it sent
    assert len(quick_run["trials"]) == len(cfg["widths"]) + n_eval + 1


def test_trial_metrics(quick_run):
    widths = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]["strategy_args"]["widths"]
    epochs = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]["settings"]["supernet"]["epochs"]
    for t in _by_task(quick_run, "supernet"):
        assert 0.0 <= t["final"]["default"] <= 1.0
        assert len(t["intermediate"]) == epochs  # one intermediate result per epoch
        assert {"probe_acc_clean", "probe_acc_adv", "train_loss"} <= set(t["intermediate"][-1])
    for t in _by_task(quick_run, "evaluate"):
        final = t["final"]
        assert isinstance(final["default"], float)
        for w in widths:
            assert {f"reward_c{w}", f"acc_clean_c{w}", f"acc_adv_c{w}", f"mflops_c{w}"} <= set(final)
            assert final[f"reward_c{w}"] == pytest.approx(0.5 * final[f"acc_clean_c{w}"]
                                                          + 0.5 * final[f"acc_adv_c{w}"])
        assert final["fit_ok"] in (0.0, 1.0)
        assert [final[f"mflops_c{w}"] for w in widths] == sorted(final[f"mflops_c{w}"] for w in widths)
    (final,) = [t["final"] for t in _by_task(quick_run, "final")]
    for key in ("acc_clean", "acc_fgsm", "acc_pgd7", "acc_pgd20", "acc_pgd100", "mflops", "params_M"):
        assert key in final
    assert final["acc_pgd20"] <= final["acc_clean"]
    # the robustness report of settings.final.robustness (AutoAttack subset) joins the NNI metrics
    assert 0.0 <= final["acc_autoattack"] <= 1.0  # (on AutoAttack's own first images, not comparable to clean's)
    assert "robustness_masking_warnings" in final


def test_the_web_ui_ranks_only_the_search_stage(quick_run):
    """What NNI's database (and so its web UI) holds as each trial's final ``default``: a number only for the
    search stage's evaluations; text for the supernets, the final trial and the random stage's provisional
    estimates (made before the family selection chose how to estimate)."""
    import sqlite3

    from nni_robust.trial.monitor import decode_nni_json

    db = Path(quick_run["experiment_dir"]) / "db" / "nni.sqlite"
    with sqlite3.connect(db) as con:
        shown = {job: decode_nni_json(data) for job, data in
                 con.execute("SELECT trialJobId, data FROM MetricData WHERE type = 'FINAL'")}
    num_random = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]["strategy_args"]["num_random"]
    for t in quick_run["trials"]:
        default = shown[t["trialJobId"]]["default"]
        args = t["parameters"]["args"]
        if t["parameters"]["task"] == "evaluate" and not args.get("provisional"):
            assert isinstance(default, float), (t["trialJobId"], default)
        else:
            assert isinstance(default, str) and shown[t["trialJobId"]]["value"] == t["final"]["default"], default
    provisional = [t for t in _by_task(quick_run, "evaluate") if t["parameters"]["args"].get("provisional")]
    assert len(provisional) == num_random
    assert all(shown[t["trialJobId"]]["default"].endswith("(provisional)") for t in provisional)


def test_architecture_exported_and_reports_written(quick_run):
    work = Path(quick_run["work_dir"])
    best = json.loads((work / "best_architecture.json").read_text())
    layout = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]["settings"]["space"]["layout"]
    arch = DenseRobArch.from_sample(best["sample"], Layout.from_name(layout))
    rewards = [json.loads(line)["reward"] for line in (work / "evaluations.jsonl").read_text().splitlines()]
    assert best["estimate"] == pytest.approx(max(rewards))
    assert (work / "family_selection" / "loo_selection.md").read_text().count("|") > 10
    assert (work / "family_selection" / "loo_selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "trials.jsonl").exists() and (work / "strategy_state.json").exists()
    # the final trial trained that architecture
    (final_trial,) = _by_task(quick_run, "final")
    assert DenseRobArch.from_sample(final_trial["parameters"]["args"]["sample"], arch.layout) == arch


def test_the_quick_run_demonstrates_the_method(quick_run):
    """Issue 10's bars, from the run's own outputs: this is the README's first command, as a new user runs it
    (only its AutoAttack report is shrunk, see conftest.TINY_ROBUSTNESS), so its numbers must mean something."""
    from nni_robust.strategies.trust import read_warnings

    work = Path(quick_run["work_dir"])
    settings = yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"]["settings"]
    # the multi-shot ranking carries signal: the chosen family's mean leave-one-out correlation is positive ...
    selection = json.loads((work / "family_selection" / "loo_selection.json").read_text())
    assert selection["best"] is not None and selection["mean_tau"][selection["best"]] > 0, selection["mean_tau"]
    assert selection["warnings"] == []
    # ... and the random topologies' estimated rewards are not all ties (nor failed fits at 0)
    rows = [json.loads(line) for line in (work / "evaluations.jsonl").read_text().splitlines()]
    random_rewards = [r["reward"] for r in rows[:yaml.safe_load(QUICK.read_text())["tuner"]["classArgs"][
        "strategy_args"]["num_random"]]]
    assert len({round(r, 6) for r in random_rewards}) > 1, random_rewards
    assert all(0.0 < r <= 1.0 for r in random_rewards), random_rewards
    # the final network learned and its robustness is real: >= 90% clean on the whole digits test split, and
    # PGD-100 (the strongest attack) below FGSM at the configs' eps (1/16, one grey level)
    (final,) = [t["final"] for t in _by_task(quick_run, "final")]
    report = json.loads((Nnictl.trial_dir(quick_run, _by_task(quick_run, "final")[0]) / "final_report.json")
                        .read_text())
    assert report["test_images"] == 359 and settings["final"]["attacks"]["pgd100"]["eps"] == 0.0625
    assert final["acc_clean"] >= 0.90, final
    assert final["acc_pgd100"] < final["acc_fgsm"] < final["acc_clean"], final
    assert final["acc_pgd100"] >= 0.6, final  # the found network trained without attack keeps about 51% at 1/16
    # nothing in it is to be doubted
    assert read_warnings(work) == [], read_warnings(work)
    assert report["warnings"] == []


def test_tensorboard_event_files(quick_run):
    trials_dir = Path(quick_run["experiment_dir"]) / "environments" / "local-env" / "trials"
    for t in _by_task(quick_run, "supernet") + _by_task(quick_run, "final"):
        run = f"{t['parameters']['task']}-{t['trialJobId']}"  # TensorBoard runs are named by kind and trial
        assert t["parameters"]["mutation_summary"]["kind"] == t["parameters"]["task"]  # what the web UI shows
        events = list((trials_dir / t["trialJobId"] / "tensorboard" / run).glob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events for trial {t['trialJobId']}"
    (final_trial,) = _by_task(quick_run, "final")
    report = json.loads((trials_dir / final_trial["trialJobId"] / "final_report.json").read_text())
    assert set(report["accuracy"]) == {"clean", "fgsm", "pgd7", "pgd20", "pgd100"}


def test_cli_export(quick_run, tmp_path, capsys):
    from nni_robust.trial.cli import main

    assert main(["export", quick_run["work_dir"], "-o", str(tmp_path / "best.json")]) == 0
    assert json.loads((tmp_path / "best.json").read_text())["sample"]


def test_unknown_yaml_key_is_an_error_before_anything_starts(tmp_path):
    data = yaml.safe_load(QUICK.read_text())
    data["tuner"]["classArgs"]["settings"]["evaluation"]["lamda"] = 0.3
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="'lamda'"):
        run_experiment(bad, experiment_dir=tmp_path / "exp")
    assert not (tmp_path / "exp").exists()  # nothing was started
    data = yaml.safe_load(QUICK.read_text())
    data["trialConcurency"] = 2
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="trialconcurency"):
        check_experiment(bad)
