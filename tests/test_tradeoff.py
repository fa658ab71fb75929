"""The trade-off trial (nni_robust.trial.tradeoff): parameters onto a search, the search run in-process."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.trial import run as run_module
from nni_robust.trial import tradeoff
from nni_robust.trial.experiment import check_experiment

ROOT = Path(__file__).resolve().parents[1]
QUICK_SEARCH = ROOT / "experiments" / "msrobnet-quick.yml"


def test_apply_parameters_by_path_and_by_map():
    base = tradeoff.load_search(QUICK_SEARCH)
    before = copy.deepcopy(base)
    out = tradeoff.apply_parameters(base, {"lam": 0.25, "strategy_args.steps": 7},
                                    {"lam": "settings.evaluation.lam"},
                                    {"strategy_args.num_random": 3, "settings.supernet.epochs": 1})
    assert out["settings"]["evaluation"]["lam"] == 0.25
    assert out["strategy_args"]["steps"] == 7 and out["strategy_args"]["num_random"] == 3
    assert out["settings"]["supernet"]["epochs"] == 1
    assert out["settings"]["supernet"]["batch_size"] == base["settings"]["supernet"]["batch_size"]
    # the base is not modified
    assert base == before and base["strategy_args"]["num_random"] != 3 and "lam" not in base["settings"]["evaluation"]


@pytest.mark.parametrize("params, mapping, match", [
    ({"lam": 0.5}, {}, "'lam' is not mapped"),
    ({"lam": 0.5}, {"lam": "evaluation.lam"}, "not a settable path"),
    ({"settings": 0.5}, {}, "not mapped"),
    ({"strategy.x": 1}, {}, "is 'msrobnet', not a mapping"),
])
def test_unmapped_or_bad_parameters_are_named(params, mapping, match):
    with pytest.raises(ConfigError, match=match):
        tradeoff.apply_parameters(tradeoff.load_search(QUICK_SEARCH), params, mapping)


def test_load_search_needs_a_bridge_experiment(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"tuner": {"name": "TPE"}}))
    with pytest.raises(ConfigError, match="tuner.className"):
        tradeoff.load_search(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        tradeoff.load_search(tmp_path / "missing.yml")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        tradeoff.parse_assignments(["lam"], "--map")


@pytest.mark.parametrize("name, lam_path", [
    ("tradeoff-msrobnet-quick.yml", "settings.evaluation.lam"),
    ("tradeoff-msrobnet.yml", "settings.evaluation.lam"),
    ("tradeoff-rnas-quick.yml", "strategy_args.method_args.lam"),
    ("tradeoff-rnas.yml", "strategy_args.method_args.lam"),
])
def test_tradeoff_yamls_are_valid_and_name_a_valid_search(name, lam_path):
    path = ROOT / "experiments" / name
    data = yaml.safe_load(path.read_text())
    command = data["trialCommand"].split()
    search = command[command.index("--search") + 1]
    base = tradeoff.load_search(path.parent / search)
    assert "nni_robust.trial.tradeoff" in data["trialCommand"]
    keys = [o["key"] for o in data["tuner"]["classArgs"]["objectives"]]
    assert keys == ["acc_clean", "acc_pgd20"]
    assert set(data["searchSpace"]) == {"lam"} and f"--map lam={lam_path}" in data["trialCommand"]
    assert base["strategy_args"].get("final", True) is True
    summary = check_experiment(path)
    assert summary["tradeoff_search"] == base["strategy"]


class FakeTasks:
    """Stands in for run_task: records calls, answers like the real tasks (instantly)."""

    def __init__(self, lam):
        self.lam = lam
        self.calls = []

    def __call__(self, params, *, reporter=None, nested=False):
        assert nested, "a trade-off trial runs its tasks nested"
        self.calls.append(params)
        task = params["task"]
        if task == "supernet":
            path = Path(params["args"]["supernet_dir"]) / f"c{params['args']['width']}" / "supernet.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("trained")
            return {"default": 0.1}, {}
        if task == "evaluate":
            widths = params["args"]["widths"]
            n_conv = sum(op != "none" for op in params["sample"].values())
            out = {"default": 0.01 * n_conv, "fit_ok": 1.0}
            for w in widths:
                clean, adv = 0.5 + 0.001 * w * n_conv, 0.2 + 0.001 * w * n_conv
                out.update({f"acc_clean_c{w}": clean, f"acc_adv_c{w}": adv, f"mflops_c{w}": 0.1 * w,
                            f"reward_c{w}": (1 - self.lam) * clean + self.lam * adv})
            return out, out
        assert task == "final"
        return {"default": 0.3, "acc_clean": 0.6, "acc_pgd20": 0.3, "mflops": 1.5}, {}


def _quick_args(lam, **sets):
    base = tradeoff.load_search(QUICK_SEARCH)
    sets = {"strategy_args.num_random": 4, "strategy_args.population": 3, "strategy_args.tournament": 2,
            "strategy_args.steps": 2, "strategy_args.family": "log_power", **sets}
    return tradeoff.apply_parameters(base, {"lam": lam}, {"lam": "settings.evaluation.lam"}, sets)


def test_run_tradeoff_runs_the_whole_search_and_reports_the_final(tmp_path, monkeypatch):
    fake = FakeTasks(0.3)
    monkeypatch.setattr(run_module, "run_task", fake)
    reports = []
    shared = tmp_path / "shared" / "supernets"
    final, report = tradeoff.run_tradeoff(_quick_args(0.3), tmp_path / "t1", reporter=reports.append,
                                          shared_supernet_dir=shared, parameters={"lam": 0.3})
    tasks = [c["task"] for c in fake.calls]
    assert tasks[:4] == ["supernet"] * 4 and tasks[-1] == "final" and set(tasks[4:-1]) == {"evaluate"}
    assert all(c["settings"]["evaluation"]["lam"] == 0.3 for c in fake.calls)
    assert all(c["args"]["supernet_dir"] == str(shared.resolve()) for c in fake.calls if c["task"] != "final")
    assert final["acc_clean"] == 0.6 and final["acc_pgd20"] == 0.3
    assert final["search_evaluated"] == len(tasks) - 5
    best = max(r["default"] for r in reports)
    assert final["search_best_reward"] == pytest.approx(best)
    assert [r["evaluated"] for r in reports] == list(range(1, len(reports) + 1))
    saved = json.loads((tmp_path / "t1" / "tradeoff_report.json").read_text())
    assert saved["parameters"] == {"lam": 0.3} and saved["best_architecture"] is not None
    assert (tmp_path / "t1" / "search" / "best_architecture.json").exists()
    assert list((tmp_path / "t1" / "tensorboard").rglob("events.out.tfevents.*"))

    # A second trial shares the supernets: it trains none.
    fake2 = FakeTasks(0.9)
    monkeypatch.setattr(run_module, "run_task", fake2)
    final2, _ = tradeoff.run_tradeoff(_quick_args(0.9), tmp_path / "t2", shared_supernet_dir=shared)
    assert "supernet" not in [c["task"] for c in fake2.calls]
    assert all(c["settings"]["evaluation"]["lam"] == 0.9 for c in fake2.calls)
    assert math.isfinite(final2["search_best_reward"])


def test_run_tradeoff_refuses_a_search_without_final(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "run_task", FakeTasks(0.5))
    with pytest.raises(ConfigError, match="final is false"):
        tradeoff.run_tradeoff(_quick_args(0.5, **{"strategy_args.final": False}), tmp_path)


def test_failed_search_keeps_its_work_and_says_where(tmp_path, monkeypatch):
    fake = FakeTasks(0.5)

    def failing(params, **kw):
        if params["task"] == "final":
            raise RuntimeError("out of memory")
        return fake(params, **kw)

    monkeypatch.setattr(run_module, "run_task", failing)
    with pytest.raises(NniRobustError, match="trade-off trial failed.*final training trial failed.*kept in"):
        tradeoff.run_tradeoff(_quick_args(0.5), tmp_path / "t", shared_supernet_dir=tmp_path / "s")
    # finished evaluations are kept in the search's records
    records = (tmp_path / "t" / "search" / "trials.jsonl").read_text().splitlines()
    assert sum(json.loads(r)["status"] == "SUCCEEDED" for r in records) >= 4


def test_shared_folder_is_the_experiment_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_EXP_ID", "abc123")
    trial = tmp_path / "abc123" / "environments" / "local-env" / "trials" / "XyZ"
    assert tradeoff._experiment_folder(trial) == (tmp_path / "abc123").resolve()
    monkeypatch.delenv("NNI_EXP_ID")
    assert tradeoff._experiment_folder(tmp_path / "e" / "trials" / "XyZ") == (tmp_path / "e").resolve()


def test_check_experiment_checks_the_search_a_tradeoff_runs(tmp_path):
    summary = check_experiment(ROOT / "experiments" / "tradeoff-msrobnet-quick.yml")
    assert summary["tradeoff_search"] == "msrobnet"
    data = yaml.safe_load((ROOT / "experiments" / "tradeoff-msrobnet-quick.yml").read_text())
    cases = [
        (data["trialCommand"].replace("--map lam=settings.evaluation.lam", ""), "'lam' is not mapped"),
        (data["trialCommand"].replace("settings.evaluation.lam", "settings.evaluation.lamda"), "lamda"),
        (data["trialCommand"].replace("--set strategy_args.num_random=6", "--set strategy_args.num_randm=6"),
         "num_randm"),
        (data["trialCommand"].replace("--search msrobnet-quick.yml", "--search nope.yml"), "does not exist"),
        (data["trialCommand"] + " --bogus", "bad arguments"),
    ]
    for command, match in cases:
        bad = dict(data, trialCommand=command, trialCodeDirectory=str(ROOT / "experiments"))
        path = tmp_path / "bad.yml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=match):
            check_experiment(path)
    # a value out of the setting's range is caught too (lam must lie in [0, 1])
    bad = dict(data, searchSpace={"lam": {"_type": "uniform", "_value": [2.0, 3.0]}},
               trialCodeDirectory=str(ROOT / "experiments"))
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="lam"):
        check_experiment(path)


def test_cli_resume_of_an_unknown_experiment_is_a_clear_error(tmp_path, capsys):
    from nni_robust.trial.cli import main

    assert main(["resume", "nosuchid", "--experiment-dir", str(tmp_path)]) == 2
    assert "No experiment 'nosuchid'" in capsys.readouterr().err
