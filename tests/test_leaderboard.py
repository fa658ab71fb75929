"""``nni-robust leaderboard`` (trial/leaderboard.py) without nnictl: config checks, the trial-command wrapper
(run by bash for real), rows gathered from a finished experiment's folder written here in the layout
run_experiment and NNI leave, the outputs, the README section, failed methods and --resume."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from nni_robust.errors import ConfigError
from nni_robust.trial import leaderboard as lb
from nni_robust.trial.yaml_files import BRIDGE

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {"dataset": "digits", "device": "cpu", "seed": 0,
            "final": {"train": {"epochs": 2, "milestones": [2], "batch_size": 64},
                      "attacks": {"fgsm": {"name": "fgsm", "eps": 0.1},
                                  "pgd20": {"name": "pgd", "eps": 0.1, "step": 0.025, "steps": 20}}}}


def _experiment(folder: Path, name: str, *, tuner: str = BRIDGE, command: str = "python3 -m nni_robust.trial.run"):
    data = {"experimentName": name, "searchSpace": {}, "trialCommand": command, "trialCodeDirectory": ".",
            "trialConcurrency": 1, "maxTrialNumber": 5,
            "tuner": {"className": tuner, "codeDirectory": ".",
                      "classArgs": {"strategy": "differentiable", "space": {"name": "dsara", "num_cells": 4},
                                    "strategy_args": {"widths": [4, 6], "num_random": 3},
                                    "settings": json.loads(json.dumps(SETTINGS))}},
            "trainingService": {"platform": "local"}}
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _config(folder: Path, **changes) -> Path:
    (folder / "exps").mkdir(exist_ok=True)
    _experiment(folder / "exps", "alpha")
    _experiment(folder / "exps", "beta")
    data = {"title": "Test board", "description": "Two fake methods.", "experiments_dir": "exps", "timeout": 60,
            "common": {"settings.final.train.epochs": 3, "settings.final.train.milestones": [3]},
            "methods": {"alpha": {"experiment": "alpha.yml", "label": "Alpha"},
                        "beta": {"experiment": "beta.yml", "label": "Beta",
                                 "set": {"settings.final.train.epochs": 4, "strategy_args.num_random": 7}}}}
    data.update(changes)
    path = folder / "board.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("changes, message", [
    ({"titel": "x"}, "Unknown key 'titel' in"),
    ({"timeout": -5}, "timeout must be a positive number of seconds or null, but got -5"),
    ({"columns": {"clean": 3}}, "columns must map column labels to final-trial metric names"),
    ({"cost_plot": ["PGD-100"]}, "cost_plot must list column labels of 'columns'"),
    ({"common": {"setings.final.train.epochs": 3}}, "common.setings.final.train.epochs is not a path into the "
                                                    "experiment's tuner.classArgs: it must start with one of"),
    ({"methods": {"alpha": {"experiment": "alpha.yml", "lable": "A"}}}, "Unknown key 'lable' in"),
    ({"methods": {"alpha": {"experiment": "gamma.yml"}}}, "methods.alpha.experiment:"),
    ({"methods": {"alpha": {"experiment": "alpha.yml", "set": {"settings": 3}}}},
     "methods.alpha.set.settings is not a path"),
    ({"methods": {"a": {"experiment": "alpha.yml", "label": "X"}, "b": {"experiment": "beta.yml", "label": "X"}}},
     "method labels must differ"),
    ({"methods": []}, "methods must map method names"),
])
def test_config_errors_name_the_key_and_value(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        lb.load_config(_config(tmp_path, **changes))
    assert message in str(err.value)
    if "gamma" in message or "methods.alpha.experiment" in message:
        assert "gamma.yml" in str(err.value) and "does not exist" in str(err.value)


def test_config_refuses_tradeoff_experiments_and_unknown_methods(tmp_path):
    path = _config(tmp_path)
    _experiment(tmp_path / "exps", "alpha", tuner="nni_robust.strategies.tradeoff.optuna_tuner.OptunaTuner")
    with pytest.raises(ConfigError, match=r"methods.alpha.experiment: alpha.yml's tuner is .*OptunaTuner.*Pareto"):
        lb.load_config(path)
    _experiment(tmp_path / "exps", "alpha")
    with pytest.raises(ConfigError, match="alpha.yml is an experiment YAML, not a leaderboard config"):
        lb.load_config(tmp_path / "exps" / "alpha.yml")
    cfg = lb.load_config(path)
    with pytest.raises(ConfigError, match=r"--methods: 'gamma' not in .*board.yml \(methods: alpha, beta\)"):
        cfg.select(["gamma"])
    assert [m.name for m in cfg.select(["beta"])] == ["beta"]


def test_shipped_configs_load():
    quick = lb.load_config(ROOT / "benchmarks" / "leaderboard-quick.yml")
    assert [m.name for m in quick.methods] == ["msrobnet-quick", "msrobnet-predictor-quick", "dsara-quick",
                                               "rnas-quick", "abandit-quick", "robnet-quick", "wsrnas-quick"]
    # one eps for the whole table, that of the embedded default (msrobnet-quick.yml: 1/16, one grey level)
    default = yaml.safe_load((ROOT / "experiments" / "msrobnet-quick.yml").read_text())["tuner"]["classArgs"]
    eps = default["settings"]["final"]["attacks"]["pgd20"]["eps"]
    assert eps == 0.0625 and quick.common["settings.final.train.eps"] == eps
    assert {a["eps"] for a in quick.common["settings.final.attacks"].values()} == {eps}
    assert quick.common["settings.final.robustness"]["eps"] == eps
    paper = lb.load_config(ROOT / "benchmarks" / "leaderboard-paper.yml")
    assert all(not m.experiment.name.endswith("-quick.yml") for m in paper.methods)
    assert {m.name for m in paper.methods} == {m.name.removesuffix("-quick") for m in quick.methods}


def test_effective_experiment_applies_common_then_set(tmp_path):
    cfg = lb.load_config(_config(tmp_path))
    alpha, beta = cfg.methods
    a, b = lb.effective_experiment(cfg, alpha), lb.effective_experiment(cfg, beta)
    assert a["tuner"]["classArgs"]["settings"]["final"]["train"]["epochs"] == 3
    assert b["tuner"]["classArgs"]["settings"]["final"]["train"]["epochs"] == 4  # the method's set wins
    assert b["tuner"]["classArgs"]["strategy_args"] == {"widths": [4, 6], "num_random": 7}
    assert b["tuner"]["classArgs"]["settings"]["final"]["train"]["milestones"] == [3]
    assert a["trialCodeDirectory"] == str((tmp_path / "exps").resolve())  # the copy is launched from elsewhere
    assert a["tuner"]["codeDirectory"] == str((tmp_path / "exps").resolve())
    assert "( python3 -m nni_robust.trial.run )" in a["trialCommand"] and lb.TIMES_FILE in a["trialCommand"]
    assert lb.fingerprint(a) != lb.fingerprint(b)
    assert lb.fingerprint(a) == lb.fingerprint({**a, "experimentWorkingDirectory": "/elsewhere"})
    bad = lb.load_config(_config(tmp_path, methods={"alpha": {"experiment": "alpha.yml",
                                                              "set": {"strategy_args.widths.x": 1}}}))
    with pytest.raises(ConfigError, match=r"methods.alpha.set \(applied to alpha.yml\).*strategy_args.widths is "
                                          r"\[4, 6\], not a mapping"):
        lb.effective_experiment(bad, bad.methods[0])


def test_wrapped_command_records_times_and_keeps_the_exit_code(tmp_path):
    out = tmp_path / "trial"
    out.mkdir()
    wrapped = lb._wrap_command("X=1 python3 -c 'import sys; sum(range(3 * 10**6)); sys.exit(3)'")
    before = time.time()
    proc = subprocess.run(["/bin/bash", "-c", wrapped], env={"NNI_OUTPUT_DIR": str(out), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 3
    times = lb._read_times(out / lb.TIMES_FILE)
    assert times is not None and times["rc"] == 3
    assert before - 1 <= times["start"] <= times["end"] <= time.time() + 1
    assert 0.0 < times["cpu"] < 30  # the python child's user + system time
    assert lb._read_times(out / "missing.txt") is None


# --------------------------------------------------------------------------- a finished experiment
def _trial(exp_dir: Path, tid: str, *, start: float, end: float, cpu: str = "0m1.500s 0m0.250s",
           report: dict | None = None, stderr: str = "") -> None:
    folder = exp_dir / "environments" / "local-env" / "trials" / tid
    folder.mkdir(parents=True)
    (folder / lb.TIMES_FILE).write_text(f"start {start:.6f}\nend {end:.6f}\nrc 0\n0m0.001s 0m0.002s\n{cpu}\n")
    (folder / "trial.stderr").write_text(stderr)
    if report is not None:
        (folder / "final_report.json").write_text(json.dumps(report))


FINAL = {"default": 0.41, "acc_clean": 0.82, "acc_fgsm": 0.55, "acc_pgd20": 0.41, "mflops": 1.48, "params_M": 0.052,
         "init_channels": 10.0, "acc_autoattack": 0.37, "robustness_masking_warnings": 0.0}


def _finished(tmp_path: Path, *, launched: float, final_ok: bool = True, swap: bool = False) -> dict:
    """run_experiment's result and the folders an NNI experiment leaves: 2 search trials and the final one."""
    exp_dir = tmp_path / "nni" / "abc123"
    work_dir = exp_dir / "nni_robust"
    work_dir.mkdir(parents=True)
    (work_dir / "warnings.jsonl").write_text(json.dumps({"time": 1.0, "source": "dsara.entropy",
                                                         "message": "architecture weights near uniform"}) + "\n")
    _trial(exp_dir, "AAAAA", start=launched + 10, end=launched + 70)
    _trial(exp_dir, "BBBBB", start=launched + 70, end=launched + 130, cpu="0m58.000s 0m2.000s")
    report = {"accuracy": {"clean": 0.82}, "robustness": {"warnings": ["PGD-20 weaker than FGSM"]}}
    _trial(exp_dir, "CCCCC", start=launched + 140, end=launched + 200, cpu="1m0.000s 0m0.000s",
           report=report if final_ok else None, stderr="" if final_ok else "Traceback\nRuntimeError: out of memory\n")
    search = {"task": "dsara_search", "args": {}, "settings": SETTINGS, "model_id": 0}
    final = {"task": "final", "args": {"arch": "{}"}, "settings": SETTINGS, "model_id": 2}
    trials = [{"trialJobId": "AAAAA", "status": "SUCCEEDED", "parameters": final if swap else search,
               "final": {"default": 0.3}, "intermediate": []},
              {"trialJobId": "BBBBB", "status": "SUCCEEDED", "parameters": search, "final": {"default": 0.3},
               "intermediate": []},
              {"trialJobId": "CCCCC", "status": "SUCCEEDED" if final_ok else "FAILED",
               "parameters": search if swap else final, "final": dict(FINAL) if final_ok else None,
               "intermediate": [{"default": 0.2}]}]
    return {"id": "abc123", "status": "DONE", "errors": None, "port": 8080, "experiment_dir": str(exp_dir),
            "work_dir": str(work_dir), "trials": trials,
            "failed_trials": [t["trialJobId"] for t in trials if t["status"] != "SUCCEEDED"],
            "best": {"arch": "{}", "estimate": 0.5}, "seconds": 215.0}


def test_gather_row_from_a_finished_experiment(tmp_path):
    cfg = lb.load_config(_config(tmp_path))
    launched = time.time() - 300
    result = _finished(tmp_path, launched=launched)
    row = lb.gather_row(cfg.methods[0], result, launched_at=launched,
                        effective=lb.effective_experiment(cfg, cfg.methods[0]))
    assert row["status"] == "ok" and row["final_trial"] == "CCCCC"
    assert row["metrics"]["acc_autoattack"] == 0.37 and row["params_M"] == 0.052 and row["mflops"] == 1.48
    assert row["seconds_search"] == pytest.approx(130, abs=1e-3)  # first trial's start -> the final's start
    assert row["seconds_startup"] == pytest.approx(10, abs=1e-3)  # launch -> the first trial's start
    assert row["seconds_final"] == pytest.approx(60, abs=1e-3)
    assert row["trial_seconds"] == pytest.approx(180, abs=1e-3)
    assert row["trial_cpu_seconds"] == pytest.approx(1.75 + 60 + 60 + 3 * 0.003)  # bash + its children, user + sys
    assert row["cpu_search"] == pytest.approx(1.75 + 60 + 2 * 0.003) and row["cpu_final"] == pytest.approx(60.003)
    assert row["trials"] == 3 and row["trials_by_task"] == {"dsara_search": 2, "final": 1}
    assert row["trust_warnings"] == [{"source": "dsara.entropy", "message": "architecture weights near uniform"}]
    assert row["robustness_warnings"] == ["PGD-20 weaker than FGSM"]
    assert row["final_training"] == "3 epochs, PGD-7 eps 0.0314"  # common set epochs 3; the digits defaults
    assert row["evaluation"].startswith("fgsm eps 0.1, pgd20 eps 0.1 on all test images")


def test_the_final_trial_is_found_by_its_folder_when_nni_mispairs_parameters(tmp_path, caplog):
    cfg = lb.load_config(_config(tmp_path))
    launched = time.time() - 300
    row = lb.gather_row(cfg.methods[0], _finished(tmp_path, launched=launched, swap=True), launched_at=launched)
    assert row["status"] == "ok" and row["final_trial"] == "CCCCC" and row["metrics"]["acc_pgd20"] == 0.41
    assert "microsoft/nni#5726" in caplog.text


def test_a_failed_final_trial_is_a_failed_row_with_the_reason(tmp_path):
    cfg = lb.load_config(_config(tmp_path))
    launched = time.time() - 300
    row = lb.gather_row(cfg.methods[0], _finished(tmp_path, launched=launched, final_ok=False), launched_at=launched)
    assert row["status"] == "failed"
    assert "trial CCCCC (final) FAILED: Traceback | RuntimeError: out of memory" in row["reason"]
    assert "metrics" not in row and row["trial_cpu_seconds"] == pytest.approx(121.759)


# --------------------------------------------------------------------------- the command
README = ("# Project\n\nIntro.\n\n## Leaderboard\n\n<!-- leaderboard:start -->\nold table\n<!-- leaderboard:end -->\n"
          "\nMore.\n")


def _no_plot(doc, path):
    Path(path).write_bytes(b"\x89PNG stub")
    return Path(path)


def test_run_writes_every_output_keeps_failed_rows_and_resumes(tmp_path, monkeypatch):
    cfg_path = _config(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    calls: list[str] = []

    def runner(path: Path, **kwargs):
        data = yaml.safe_load(Path(path).read_text())
        calls.append(data["experimentName"])
        assert kwargs["timeout"] == 60 and lb.TIMES_FILE in data["trialCommand"]
        if data["experimentName"] == "beta":
            assert data["tuner"]["classArgs"]["strategy_args"]["num_random"] == 7
            raise RuntimeError("nnictl create failed (exit 1)")
        return _finished(tmp_path / f"{data['experimentName']}{len(calls)}", launched=time.time())

    out = tmp_path / "docs" / "board"
    doc = lb.run_leaderboard(cfg_path, out=out, readme=readme, runner=runner, check=lambda p: {},
                             progress=lambda line: None)
    assert calls == ["alpha", "beta"]
    assert [r["status"] for r in doc["rows"]] == ["ok", "failed"]
    assert doc["rows"][1]["reason"] == "RuntimeError: nnictl create failed (exit 1)"
    md = (out / "leaderboard.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| **Alpha**"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:11] == ["2.2 min", "62 s", "60 s", "3", "0.052", "1.48", "82.0", "55.0", "41.0", "37.0"]
    assert "| **Beta** | failed |" in md and "- **Beta** failed: RuntimeError: nnictl create failed" in md
    assert "Final training: 3 epochs" in md and "![Test board](leaderboard.png)" in md
    with (out / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert float(rows[0]["acc_autoattack"]) == 0.37 and rows[1]["acc_autoattack"] == ""
    assert json.loads((out / "leaderboard.json").read_text())["rows"][0]["metrics"]["acc_clean"] == 0.82
    assert (out / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    text = readme.read_text()
    assert text.startswith("# Project\n\nIntro.\n\n## Leaderboard\n\n<!-- leaderboard:start -->\n")
    assert text.endswith("<!-- leaderboard:end -->\n\nMore.\n") and "old table" not in text
    assert "![Test board](docs/board/leaderboard.png)" in text and "| **Alpha** |" in text

    # --resume: the finished row is reused, the failed one runs again
    monkeypatch.setattr(lb, "plot", _no_plot)  # (the plot was drawn above; matplotlib is slow on a loaded machine)
    calls.clear()
    doc = lb.run_leaderboard(cfg_path, out=out, resume=True, runner=runner, check=lambda p: {})
    assert calls == ["beta"] and doc["rows"][0]["reused"] is True
    md = (out / "leaderboard.md").read_text()
    assert "reused" not in next(x for x in md.splitlines() if x.startswith("| **Alpha**"))  # said once, below
    assert "(1 of 2 rows kept from an earlier run with `--resume`" in md and "the experiments ran on 20" in md
    # ... unless its experiment changed
    calls.clear()
    changed = _config(tmp_path, common={"settings.final.train.epochs": 5, "settings.final.train.milestones": [3]})
    lb.run_leaderboard(changed, out=out, resume=True, runner=runner, check=lambda p: {})
    assert calls == ["alpha", "beta"]


def test_checks_fail_before_any_experiment_starts(tmp_path):
    cfg_path = _config(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# No markers here\n")

    def runner(path, **kwargs):
        raise AssertionError("no experiment may start")

    with pytest.raises(ConfigError, match="leaderboard:start.*leaderboard:end.*found 0 start and 0 end"):
        lb.run_leaderboard(cfg_path, out=tmp_path / "o", readme=readme, runner=runner, check=lambda p: {})
    readme.write_text(README.replace("<!-- leaderboard:end -->", "") + "<!-- leaderboard:end -->\n")
    lb.check_readme(readme)  # one of each, in order
    readme.write_text("<!-- leaderboard:end -->\n<!-- leaderboard:start -->\n")
    with pytest.raises(ConfigError, match="in the wrong order"):
        lb.check_readme(readme)
    with pytest.raises(ConfigError, match="These experiments cannot run on this machine:\n- beta: no GPU"):
        lb.run_leaderboard(cfg_path, out=tmp_path / "o", runner=runner,
                           check=lambda p: {"environment": ["no GPU"] if p.stem == "beta" else []})
    assert not (tmp_path / "o").exists()


def test_an_interrupted_run_keeps_the_finished_rows(tmp_path, monkeypatch):
    cfg_path = _config(tmp_path)
    monkeypatch.setattr(lb, "plot", _no_plot)

    def runner(path, **kwargs):
        name = yaml.safe_load(Path(path).read_text())["experimentName"]
        kwargs["progress"]("trial AAAAA started (task dsara_search)")  # run_experiment's live lines
        if name == "beta":
            raise KeyboardInterrupt
        return _finished(tmp_path / name, launched=time.time() - 140)

    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        lb.run_leaderboard(cfg_path, out=tmp_path / "o", runner=runner, check=lambda p: {},
                           experiment_progress=lines.append)
    assert lines == [f"  {name}: trial AAAAA started (task dsara_search)" for name in ("alpha", "beta")]
    rows = json.loads((tmp_path / "o" / "leaderboard.json").read_text())["rows"]
    assert [(r["method"], r["status"]) for r in rows] == [("alpha", "ok")]


def test_cost_plot_names_methods_in_a_legend_not_in_overlapping_labels():
    """Methods of about the same search cost must stay readable: one colour per method in a legend (no text
    labels beside the points, which overlapped in the first real run), one marker per attack."""
    def row(label, minutes, pgd, aa):
        return {"label": label, "status": "ok", "seconds_search": 60 * minutes,
                "metrics": {"acc_clean": 0.95, "acc_pgd20": pgd, "acc_autoattack": aa}}

    doc = {"title": "t", "columns": {"clean": "acc_clean", "PGD-20": "acc_pgd20", "AutoAttack": "acc_autoattack"},
           "cost_plot": ["PGD-20", "AutoAttack"],
           "rows": [row("A", 2.7, 0.80, 0.71), row("B", 2.75, 0.75, 0.65), row("C", 3.0, 0.78, 0.76),
                    {"label": "D", "status": "failed", "seconds_search": None, "metrics": {}}]}
    fig = lb.figure(doc)
    cost = fig.axes[1]
    assert len(cost.texts) == 0
    assert [t.get_text() for t in cost.get_legend().get_texts()] == ["A", "B", "C", "PGD-20", "AutoAttack"]
    colours = [tuple(c.get_facecolor()[0]) for c in cost.collections]
    assert len(colours) == 6 and len(set(colours)) == 3  # two markers per method, one colour each

