"""What nni-robust prints: run's progress lines and closing summary, trials paired by parameter id,
progress bars of train/evaluate, help texts, the presets table, a torch-free trial entry module."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nni_robust.trial import experiment
from nni_robust.trial.cli import build_parser, main
from nni_robust.trial.monitor import ExperimentProgress, arch_lines, closing_summary, pair_trials, read_trial_records


# --------------------------------------------------------------------------- pairing (microsoft/nni#5726)
def _params(task: str, model_id: int) -> dict:
    return {"task": task, "sample": None, "args": {}, "settings": {}, "work_dir": "/w", "model_id": model_id,
            "mutation_summary": {"kind": task}}


def _hp(pid: int, params: dict) -> str:
    return json.dumps({"parameter_id": pid, "parameter_source": "algorithm", "parameters": params})


def _metric(tid: str, pid: int, value, kind: str = "FINAL") -> dict:
    return {"trialJobId": tid, "parameterId": pid, "type": kind, "sequence": 0, "data": json.dumps(json.dumps(value))}


# NNI's trial list pairs trial A with parameter id 1 (final) and B with 0 (supernet); they ran the other way round
SUPERNET, FINAL = _params("supernet", 0), _params("final", 1)
JOBS = [{"trialJobId": "A", "sequenceId": 0, "status": "SUCCEEDED", "hyperParameters": [_hp(1, FINAL)],
         "startTime": 0, "endTime": 5000, "finalMetricData": [_metric("A", 0, {"default": 0.41})]},
        {"trialJobId": "B", "sequenceId": 1, "status": "SUCCEEDED", "hyperParameters": [_hp(0, SUPERNET)],
         "startTime": 0, "endTime": 9000,
         "finalMetricData": [_metric("B", 1, {"default": 0.7, "acc_clean": 0.95, "acc_pgd20": 0.7})]}]


def test_trials_are_paired_with_their_parameters_by_parameter_id():
    by_id = {t["trialJobId"]: t for t in pair_trials(JOBS)}
    assert by_id["A"]["parameters"]["task"] == "supernet" and by_id["A"]["parameter_id"] == 0
    assert by_id["B"]["parameters"]["task"] == "final" and by_id["B"]["final"]["acc_clean"] == 0.95
    assert {t["paired_by"] for t in by_id.values()} == {"metric"}
    # a running trial with no metric yet: the id its entry point wrote (the marker), else NNI's pairing
    running = [dict(j, status="RUNNING", finalMetricData=[]) for j in JOBS]
    assert pair_trials(running, markers={"A": {"parameter_id": 0}})[0]["parameters"]["task"] == "supernet"
    assert pair_trials(running[:1], markers={"A": {"parameter_id": 0, "task": "supernet"}})[0]["parameters"] == {
        "task": "supernet", "model_id": None}  # (parameters of id 0 unknown: the marker's own words)
    assert pair_trials(running)[0]["parameters"]["task"] == "final"  # NNI's (wrong) pairing, the last resort
    assert pair_trials(running)[0]["paired_by"] == "nni"
    # an intermediate metric names the id too; the tuner's records give the parameters
    records = {0: {"parameter_id": 0, "parameters": dict(SUPERNET, args={"epochs": 3}), "experiment_id": "e"}}
    out = pair_trials(running[:1], [_metric("A", 0, 0.1, "PERIODICAL")], records=records)[0]
    assert out["parameters"]["args"] == {"epochs": 3} and out["intermediate"] == [0.1]


def test_read_trial_records_keeps_this_experiments_lines(tmp_path):
    lines = [{"parameter_id": 0, "experiment_id": "old", "parameters": _params("x", 0)},
             {"parameter_id": 0, "experiment_id": "new", "parameters": _params("supernet", 0)},
             {"parameter_id": 1, "parameters": _params("final", 1)}]
    (tmp_path / "trials.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{\"partial")
    records = read_trial_records(tmp_path, "new")
    assert records[0]["parameters"]["task"] == "supernet" and records[1]["parameters"]["task"] == "final"


def test_follow_returns_correct_pairs_and_prints_each_event_once(monkeypatch, tmp_path):
    """run_experiment's polling loop on a fake REST API: the trials it returns carry the parameters they ran;
    progress lines say what started/ended and the strategy's stage, once each."""
    work = tmp_path / "exp1" / "nni_robust"
    work.mkdir(parents=True)
    (work / "trials.jsonl").write_text(json.dumps({"parameter_id": 0, "parameters": SUPERNET}) + "\n")
    running = [dict(j, status="RUNNING", finalMetricData=[], endTime=None) for j in JOBS]
    looks = iter([("RUNNING", running), ("TUNER_NO_MORE_TRIAL", running), ("NO_MORE_TRIAL", [running[0], JOBS[1]]),
                  ("DONE", JOBS)])
    state = {"status": "RUNNING", "jobs": running}

    def rest_get(port, route, timeout=10.0):
        if route == "check-status":
            state["status"], state["jobs"] = next(looks)
            if state["status"] == "NO_MORE_TRIAL":
                (work / "progress.json").write_text(json.dumps({"strategy": "Toy", "stage": "final",
                                                                "stages": ["search", "final", "done"]}))
            return {"status": state["status"]}
        if route == "trial-jobs":
            return state["jobs"]
        if route.startswith("metric-data/"):  # the running trials' first metrics name their parameter ids
            pid = {"A": 0, "B": 1}[route.rsplit("/", 1)[1]]
            return [_metric(route.rsplit("/", 1)[1], pid, 0.1, "PERIODICAL")]
        if route == "metric-data":
            return [m for j in JOBS for m in j["finalMetricData"]]
        raise AssertionError(route)

    monkeypatch.setattr(experiment, "rest_get", rest_get)
    monkeypatch.setattr(experiment, "stop_experiment", lambda exp_id: None)
    lines: list[str] = []
    result = experiment._follow("exp1", 1, {}, tmp_path, timeout=None, keep=False, poll=0.0, stop_after=None,
                                progress=lines.append)
    by_id = {t["trialJobId"]: t for t in result["trials"]}
    assert by_id["A"]["parameters"]["task"] == "supernet" and by_id["B"]["parameters"]["task"] == "final"
    text = "\n".join(lines)
    assert re.search(r"trial 0 \(A\) started: supernet", text) and re.search(r"trial 1 \(B\) started: final", text)
    assert "trial 1 (B) succeeded after 9 s: final, clean 95.0%, PGD-20 70.0%" in text
    assert "trial 0 (A) succeeded after 5 s: supernet, default 0.41" in text
    assert "Toy: stage final (2 of 2)" in text and "sent its last trial" in text
    assert len(lines) == len(set(lines)) == 6  # nothing repeated while nothing changed


def test_progress_lines_stay_quiet_without_change():
    now = [0.0]
    lines: list[str] = []
    p = ExperimentProgress(lines.append, clock=lambda: now[0])
    trial = {"trialJobId": "X", "sequence": 3, "status": "RUNNING", "parameters": _params("evaluate", 7),
             "paired_by": "trial"}
    now[0] = 7.0
    for _ in range(5):
        p.update(trials=[trial], stage={"strategy": "S", "stage": "a", "stages": ["a", "b", "done"]}, status="RUNNING")
    assert lines == ["[00:07] S: stage a (1 of 2)", "[00:07] trial 3 (X) started: evaluate (model 7)"]
    now[0] = 42.0
    p.update(trials=[dict(trial, status="FAILED")], stage={"strategy": "S", "stage": "done"}, status="RUNNING")
    assert lines[2:] == ["[00:42] trial 3 (X) failed: evaluate, see its trial.log", "[00:42] S: search finished"]
    # a trial whose own parameter id is not known yet (NNI's pairing may be another trial's): wait, then say it
    p = ExperimentProgress(lines.append, clock=lambda: now[0], patience=2)
    unsure = dict(trial, trialJobId="Y", paired_by="nni")
    for _ in range(2):
        p.update(trials=[unsure])
    assert lines[-1].endswith("search finished")
    p.update(trials=[unsure])
    assert lines[-1] == "[00:00] trial 3 (Y) started: evaluate (model 7)"
    # MSRobNet's random stage: its estimate is provisional (made before the family selection)
    params = dict(_params("evaluate", 8), args={"provisional": True})
    p.update(trials=[dict(trial, trialJobId="Z", status="SUCCEEDED", parameters=params, final={"default": 0.358})])
    assert lines[-1].endswith("succeeded: evaluate (model 8), default 0.358 (provisional: before the family selection)")


# --------------------------------------------------------------------------- the closing summary
def test_closing_summary_says_what_was_found_and_where(tmp_path):
    from nni_robust.spaces.darts import DartsArch

    sys.path.insert(0, str(Path(__file__).parent))
    from test_darts_spaces import DARTS_V2

    exp = tmp_path / "exp1"
    work = exp / "nni_robust"
    trial_dir = exp / "environments" / "local-env" / "trials" / "B"
    trial_dir.mkdir(parents=True)
    work.mkdir()
    (work / "tensorboard").mkdir()
    arch = json.loads(DartsArch.from_darts_genotype(DARTS_V2).to_json())
    (trial_dir / "final_report.json").write_text(json.dumps(
        {"arch": arch, "params_M": 0.1, "mflops": 2.5, "epochs": 8, "test_images": 360,
         "robustness": {"warnings": ["FGSM beats PGD"]}}))
    (trial_dir / "model.pt").write_bytes(b"")
    (work / "best_architecture.json").write_text(json.dumps({"arch": arch, "estimate": 0.61,
                                                               "warnings": ["weights uniform"],
                                                               "final_space": {"name": "darts", "num_cells": 3}}))
    (work / "warnings.jsonl").write_text(json.dumps({"source": "dsara.entropy", "message": "weights uniform"}) + "\n")
    trials = pair_trials(JOBS)
    best = json.loads((work / "best_architecture.json").read_text())
    result = {"id": "exp1", "status": "DONE", "seconds": 75, "port": 8080, "experiment_dir": str(exp),
              "work_dir": str(work), "trials": trials, "best": best,
              "tuner_args": {"strategy": "differentiable", "strategy_args": {"method": "dsara"},
                             "space": {"name": "darts", "num_cells": 3},
                             "settings": {"dataset": "digits", "device": "cpu",
                                          "final": {"attacks": {"pgd20": {"name": "pgd", "eps": 0.1, "step": 0.025,
                                                                          "steps": 20}}}}}}
    text = closing_summary(result, report=str(work / "experiment_report" / "index.html"))
    assert "Searched: differentiable (method dsara) over the darts {\"num_cells\": 3} space on digits" in text
    assert "attacks at eps 0.1" in text
    assert "normal: n0 = sep 3x3(c[k-2]) + sep 3x3(c[k-1])" in text and "\\" not in text  # cells, no escaped JSON
    assert "accuracy: clean 95.0%, PGD-20 70.0%" in text and "estimated reward during the search: 0.61" in text
    assert "! dsara.entropy: weights uniform" in text and "! final evaluation: FGSM beats PGD" in text
    assert text.count("weights uniform") == 1  # (recorded and exported: said once)
    assert f"final model: {trial_dir / 'model.pt'}" in text
    assert f"tensorboard --logdir_spec trials:{trial_dir.parent},search:{work / 'tensorboard'}" in text
    assert "experiment_report/index.html" in text and "nnictl view exp1" in text


def test_arch_lines_list_each_cell_once():
    from nni_robust.spaces.presets import get_preset

    lines = arch_lines(get_preset("RobNet-free").arch)
    assert len(lines) >= 2 and all(" = " in line or ": as " in line for line in lines)


# --------------------------------------------------------------------------- progress bars
class _Bar:
    made: list["_Bar"] = []

    def __init__(self, *, total, desc, initial=0, unit="batch"):
        self.total, self.desc, self.n, self.postfix, self.closed = total, desc, initial, "", False
        _Bar.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, text):
        self.postfix = text

    def close(self):
        self.closed = True


def test_training_and_evaluation_report_progress_to_a_given_bar(tiny_cnn):
    import torch

    from nni_robust.data import TensorLoader
    from nni_robust.evaluation import evaluate
    from nni_robust.progress import track
    from nni_robust.training import AdversarialTrainer, TrainConfig

    _Bar.made = []
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    loader = TensorLoader(x, y, batch_size=16, shuffle=True, seed=0)
    trainer = AdversarialTrainer(tiny_cnn(), TrainConfig(epochs=2, batch_size=16, attack="none", seed=0),
                                 device="cpu", log_every=0, progress=_Bar)
    trainer.fit(loader)
    bar = _Bar.made[0]
    assert bar.desc == "training" and bar.total == 2 * len(loader) == bar.n == 6 and bar.closed
    assert bar.postfix.startswith("epoch 2/2, loss")
    acc = evaluate(trainer.model, track(TensorLoader(x, y, batch_size=16), _Bar, desc="evaluation"))
    assert 0 <= acc["clean"] <= 1 and _Bar.made[1].n == _Bar.made[1].total == 3 and _Bar.made[1].closed


# --------------------------------------------------------------------------- help, presets, lazy torch
_MARKUP = re.compile(r"``|:(class|func|mod|meth|data|attr|doc|ref):`|`[^`\s][^`]*`")


def _helps(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("nni-robust",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _helps(child, path + (name,))


def test_every_help_is_plain_text_and_every_command_is_listed():
    parser = build_parser()
    top = parser.format_help()
    helps = list(_helps(parser))
    assert len(helps) > 10
    for path, p in helps:
        text = p.format_help()
        assert not _MARKUP.search(text), f"{' '.join(path)} --help has markup: {_MARKUP.search(text).group(0)!r}"
        if len(path) == 2:  # every command in the top-level list, with a line saying what it does
            assert re.search(rf"^\s+{path[1]}\s+\S", top, re.M), path[1]
            assert p.description, f"{path[1]} --help says nothing about what it does"
    assert {"resume", "run", "presets", "train", "evaluate"} <= {p[1] for p, _ in helps if len(p) == 2}


def test_presets_is_a_table_with_darts_and_the_unpublished(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["name", "paper", "space"] and "MFLOPs" in header
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip() and not line.startswith(" ")}
    assert "3.16" in rows["MSRobNet-1000"] and "1018" in rows["MSRobNet-1000"] and "cellwise" in rows["MSRobNet-1000"]
    assert "darts, 20 cells" in rows["DARTS_V2"] and "3.35*" in rows["DARTS_V2"]
    assert rows["DSARA"].rstrip().endswith("no") and "4.50" in rows["DSARA"]
    assert rows["RNAS-max"].rstrip().endswith("no") and "3.40" in rows["RNAS-max"]
    assert main(["profile", "DARTS_V2"]) == 0
    assert json.loads(capsys.readouterr().out)["params_M"] == pytest.approx(3.349, abs=0.01)
    assert main(["profile", "DSARA"]) == 2 and "figure" in capsys.readouterr().err


def test_the_trial_entry_module_imports_no_torch():
    code = "import sys, nni_robust.trial.run; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_staged_strategies_write_their_stage(tmp_path):
    from nni_robust.strategies.bridge import run_stages

    seen = []

    class Toy:
        engine = type("E", (), {"work_dir": tmp_path})()
        _stage = "one"

        def _stage_one(self):
            seen.append(json.loads((tmp_path / "progress.json").read_text())["stage"])

        _stage_two = _stage_one

    run_stages(Toy(), ["one", "two", "done"], label="Toy")
    assert seen == ["one", "two"] and json.loads((tmp_path / "progress.json").read_text())["stage"] == "done"
