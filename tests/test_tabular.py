"""The shared ``tabular`` trial task, strategies run against a table, and the tabular benchmark.

A tiny table in the layout of Jung et al.'s robustness dataset is written by the tests: its
``meta.json`` lists all 15,625 NAS-Bench-201 strings, grouped (through ``isomorph``) by the number
``k`` of ``nor_conv_1x1`` edges into 7 measured entries whose PGD accuracy grows with ``k`` -- so
the optimum is the one cell with ``nor_conv_1x1`` on all 6 edges. The real CIFAR-10 files are used
when ``../shared/data/nb201-robustness`` (or ``$NNI_ROBUST_NB201``) exists.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from nni_robust.errors import ArchitectureError, ConfigError, DatasetNotFoundError
from nni_robust.spaces.nb201 import all_strings
from nni_robust.strategies.registry import TaskContext, check_task_args, task_function
from nni_robust.strategies.tabular import (TABLE_ENV, TabularArgs, TabularEvaluator, check_args, load_table,
                                           resolve_table_path, tabular_task)

PGD_EPS = [0.5, 1.0, 2.0]
BEST = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"


def _k(string: str) -> int:
    return string.count("nor_conv_1x1")


def write_tiny_table(root: Path) -> Path:
    """All 15,625 strings; 7 measured entries (one per k); pgd@1 = 0.1 + 0.07 k, clean = 0.5 + 0.05 k."""
    strings = all_strings()
    reps: dict[int, int] = {}
    ids = {}
    for uid, s in enumerate(strings):
        rep = reps.setdefault(_k(s), uid)
        ids[str(uid)] = {"nb201-string": s, "isomorph": str(rep)}
    (root / "data").mkdir(parents=True)
    (root / "cifar10").mkdir()
    (root / "data/meta.json").write_text(json.dumps({"ids": ids, "epsilons": {"pgd@Linf": PGD_EPS}}))
    clean = {str(u): 0.5 + 0.05 * k for k, u in reps.items()}
    pgd = {str(u): [0.2 + 0.07 * k, 0.1 + 0.07 * k, 0.05 + 0.01 * k] for k, u in reps.items()}
    (root / "cifar10/clean_accuracy.json").write_text(json.dumps({"cifar10": {"clean": {"accuracy": clean}}}))
    (root / "cifar10/pgd@Linf_accuracy.json").write_text(json.dumps({"cifar10": {"pgd@Linf": {"accuracy": pgd}}}))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_table(tmp_path_factory.mktemp("tiny-nb201"))


def real_root() -> Path:
    env = os.environ.get(TABLE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/nb201-robustness"


def _ctx(args, sample, tmp_path):
    return TaskContext(task="tabular", settings=None, args=args, sample=sample, work_dir=tmp_path,
                       out_dir=tmp_path, tb_dir=tmp_path)


def _sample(string: str) -> dict:
    from nni_robust.spaces.nb201 import NB201Arch

    return NB201Arch.from_string(string).to_sample()


# --------------------------------------------------------------------------- the task
def test_task_answers_from_the_table(tiny, tmp_path):
    assert task_function("tabular") is tabular_task
    string = "|nor_conv_1x1~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"  # k = 2
    final, full = tabular_task(_ctx({"table": str(tiny)}, _sample(string), tmp_path))
    assert final == pytest.approx({"default": 0.24, "clean": 0.6, "pgd@0.5": 0.34, "pgd@1": 0.24, "pgd@2": 0.07,
                                   "uid": final["uid"]})
    assert all(isinstance(v, float) for v in final.values())
    table = load_table(tiny)
    assert table.strings[int(final["uid"])].count("nor_conv_1x1") == 2  # the measured entry of its class
    assert full["arch"] == string and full["objective"] == "pgd@1" and full["table"] == str(tiny.resolve())
    # other objectives and sample forms (NAS-Bench-201 op names, a bare string)
    final, _ = tabular_task(_ctx({"table": str(tiny), "objective": "reward(pgd@2, lam=0.25)"}, string, tmp_path))
    assert final["default"] == pytest.approx(0.75 * 0.6 + 0.25 * 0.07) and set(final) >= {"pgd@2", "clean"}
    final, _ = tabular_task(_ctx({"table": str(tiny), "objective": "clean"}, BEST, tmp_path))
    assert final == {"default": pytest.approx(0.8), "clean": pytest.approx(0.8), "uid": final["uid"]}
    evaluator = TabularEvaluator(table, "pgd@1")
    assert evaluator.optimum()[0] == pytest.approx(0.52) and evaluator.optimum()[2] == BEST
    assert evaluator.value({f"cell/{e}": "conv_1x1" for e in ("0_1", "0_2", "1_2", "0_3", "1_3", "2_3")}) \
        == pytest.approx(0.52)


def test_task_errors(tiny, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no sample"):
        tabular_task(_ctx({"table": str(tiny)}, None, tmp_path))
    with pytest.raises(ArchitectureError, match="Label 'cell/0_1'.*'sep_conv_3x3'"):
        tabular_task(_ctx({"table": str(tiny)}, dict(_sample(BEST), **{"cell/0_1": "sep_conv_3x3"}), tmp_path))
    with pytest.raises(ConfigError, match="Unknown key 'tabel'.*Did you mean 'table'"):
        tabular_task(_ctx({"tabel": str(tiny)}, BEST, tmp_path))
    with pytest.raises(ConfigError, match=r"not measured at eps 8/255; valid eps .*\['0.5', '1', '2'\]"):
        check_args({"table": str(tiny), "objective": "pgd@8"})
    with pytest.raises(ConfigError, match=r"unknown attack 'fgsm'.*\['pgd'\]"):
        check_args({"table": str(tiny), "objective": "fgsm@1"})
    with pytest.raises(ConfigError, match="valid forms"):
        check_args({"table": str(tiny), "objective": "pgd"})
    with pytest.raises(DatasetNotFoundError, match="nope does not exist"):
        check_args({"table": str(tmp_path / "nope")})
    monkeypatch.delenv(TABLE_ENV, raising=False)
    with pytest.raises(ConfigError, match=rf"\${TABLE_ENV} is not set"):
        check_args({})
    with pytest.raises(ConfigError, match=r"\$NNI_ROBUST_NO_SUCH_VAR, which is not set"):
        check_args({"table": "$NNI_ROBUST_NO_SUCH_VAR/x"})
    # a malformed folder names the file
    bad = tmp_path / "bad"
    write_tiny_table(bad)
    (bad / "cifar10/clean_accuracy.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"clean_accuracy\.json is not valid JSON"):
        check_args({"table": str(bad)})
    (bad / "data/meta.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"data/meta\.json does not exist"):
        check_args({"table": str(bad)})


def test_table_paths_expand_and_resolve(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(TABLE_ENV, str(tiny))
    assert check_args({}) == {"table": str(tiny.resolve()), "objective": "pgd@1", "dataset": "cifar10"}
    assert resolve_table_path("${NNI_ROBUST_NB201:-/elsewhere}") == tiny.resolve()
    monkeypatch.delenv(TABLE_ENV)
    assert resolve_table_path("${NNI_ROBUST_NB201:-sub/t}", base=tmp_path) == (tmp_path / "sub/t").resolve()
    monkeypatch.chdir(tiny.parent)
    assert TabularArgs.from_dict({"table": tiny.name}).table == tiny.resolve()  # relative: to the cwd
    assert resolve_table_path("~/x") == Path.home().resolve() / "x"


def test_the_tuner_checks_and_normalises_task_args_at_start(tiny, tmp_path, monkeypatch):
    from nni_robust.strategies.bridge import StrategyTuner

    with pytest.raises(DatasetNotFoundError, match="missing does not exist"):
        StrategyTuner(strategy="random", space={"name": "nb201"}, work_dir=tmp_path / "w1", default_task="tabular",
                      task_args={"table": str(tmp_path / "missing")})
    assert not (tmp_path / "w1").exists()  # failed before any work
    monkeypatch.chdir(tiny.parent)
    tuner = StrategyTuner(strategy="random", space={"name": "nb201"}, work_dir=tmp_path / "w2",
                          default_task="tabular", task_args={"table": tiny.name, "objective": "pgd@2.0"})
    assert tuner._task_args == {"table": str(tiny.resolve()), "objective": "pgd@2", "dataset": "cifar10"}
    # tasks without a check, and unknown names, keep their arguments
    assert check_task_args("final", {"x": 1}) == {"x": 1} and check_task_args("no_such_task", {"y": 2}) == {"y": 2}


# --------------------------------------------------------------------------- strategies against the table
def test_evolution_through_the_bridge_and_the_task_end_to_end(tiny, tmp_path):
    """TournamentEvolution, unchanged, under the bridge tuner (the nnictl protocol, in-process); each
    trial runs the registered task through the trial entry point."""
    from nni_robust.strategies.bridge import StrategyTuner, run_in_process
    from nni_robust.trial.run import run_task

    tuner = StrategyTuner(strategy="evolution", space={"name": "nb201"}, work_dir=tmp_path / "work",
                          strategy_args={"population_size": 8, "tournament_size": 3, "num_initial": 8,
                                         "num_steps": 1000, "seed": 1},
                          default_task="tabular", task_args={"table": str(tiny)})
    finished = run_in_process(tuner, lambda p: run_task(p, nested=True)[0], concurrency=2, max_trials=60,
                              timeout=120)
    assert tuner.error is None and len(finished) == 60 and all(t["status"] == "SUCCEEDED" for t in finished)
    table = load_table(tiny)
    for t in finished:
        assert t["parameters"]["task"] == "tabular" and t["parameters"]["args"]["table"] == str(tiny.resolve())
        string = t["value"]["uid"]
        k = _k(table.strings[int(string)])
        assert t["value"]["default"] == pytest.approx(0.1 + 0.07 * k)
    ks = [round((t["value"]["default"] - 0.1) / 0.07) for t in finished]
    assert max(ks[30:]) > max(ks[:8])  # the evolution climbs
    # the strategy consumes results on its own thread: the last ones may still be on their way
    deadline = time.monotonic() + 20
    while tuner.strategy.best()[1] != max(t["value"]["default"] for t in finished) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tuner.strategy.best()[1] == max(t["value"]["default"] for t in finished)
    records = [json.loads(line) for line in (tmp_path / "work/trials.jsonl").read_text().splitlines()]
    assert len(records) == 60 and all(r["parameters"]["task"] == "tabular" for r in records)


@pytest.mark.parametrize("strategy, args", [
    ("random", {"dedup": True}),
    ("regularized_evolution", {"population_size": 10, "sample_size": 3, "mutation_prob": 0.3}),
    ("evolution", {"population_size": 10, "tournament_size": 3, "num_initial": 10, "num_steps": 1000}),
])
def test_strategies_run_unchanged_against_the_table_engine(tiny, strategy, args):
    from nni_robust.trial.benchmark import run_tabular_search

    evaluator = TabularEvaluator(load_table(tiny), "pgd@1")
    out = run_tabular_search(strategy, args, evaluator, budget=80, seed=3)
    values = np.array(out["values"])
    assert len(values) == 80 and np.isfinite(values).all()
    assert set(np.round((values - 0.1) / 0.07, 6)) <= set(range(7))
    if strategy != "random":  # the searches climb the count of conv 1x1 edges
        assert values[40:].mean() > values[:10].mean()
    # a run at a smaller budget is exactly the prefix (what the benchmark relies on)
    again = run_tabular_search(strategy, args, evaluator, budget=30, seed=3)
    assert again["values"] == out["values"][:30] and again["samples"] == out["samples"][:30]


def test_predictor_controller_runs_with_the_tabular_task(tiny, tmp_path):
    """MSRobNet-P's controller with evaluation='task': random topologies, the GATES predictor on the
    NAS-Bench-201 cell graph, inner evolution on predictor scores, picks answered from the table."""
    from nni_robust.trial.benchmark import run_tabular_search

    evaluator = TabularEvaluator(load_table(tiny), "pgd@1")
    args = {"evaluation": "task", "final": False, "num_random": 20, "stages": 4, "picks": 5, "pick_every": 10,
            "population": 10, "tournament": 3, "training": {"epochs": 40, "tune_epochs": 20, "batch_size": 10},
            "tune_on": "all", "precision_ks": [2],
            "predictor": {"op_dim": 16, "node_dim": 16, "hidden_dim": 16, "gcn_dims": [16, 16], "mlp_hiddens": [32]}}
    out = run_tabular_search("msrobnet_predictor", args, evaluator, budget=100, seed=0, work_dir=tmp_path)
    values = np.array(out["values"])
    assert len(values) == 40  # 20 random + 4 stages x 5 picks: the strategy ended on its own
    assert values[20:].mean() > values[:20].mean() + 0.05  # the picks beat the random topologies
    best = json.loads((tmp_path / "best_architecture.json").read_text())
    assert best["evaluation"] == "task" and best["cell_graph"] == "nb201" and best["controller"] == "predictor"
    assert best["estimate"] == pytest.approx(values.max())
    assert evaluator.value(best["sample"]) == pytest.approx(values.max())
    quality = json.loads((tmp_path / "predictor/quality.json").read_text())
    assert len(quality["stages"]) == 4 and quality["settings"]["cell_graph"] == "nb201"


def test_predictor_controller_settings_errors():
    from nni_robust.strategies.msrobnet.predictor_search import PredictorSearch

    with pytest.raises(ConfigError, match="final: false"):
        PredictorSearch(evaluation="task")
    with pytest.raises(ConfigError, match="evaluation must be one of"):
        PredictorSearch(evaluation="table", final=False)
    with pytest.raises(ConfigError, match="cell_graph is for evaluation 'task'"):
        PredictorSearch(cell_graph="nb201")
    with pytest.raises(ConfigError, match="num_inputs"):
        PredictorSearch(evaluation="task", final=False, cell_graph={"num_nodes": 2, "num_inputs": 2, "edges": [[0, 1]],
                                                                    "ops": ["a"], "cells": [["x"]]})


def test_a_strategy_that_needs_other_jobs_is_refused_by_the_table_engine(tiny):
    from nni_robust.errors import NniRobustError
    from nni_robust.trial.benchmark import run_tabular_search

    evaluator = TabularEvaluator(load_table(tiny), "pgd@1")
    with pytest.raises(NniRobustError, match="'supernet' job"):
        run_tabular_search("msrobnet_predictor", {"final": False}, evaluator, budget=5, seed=0,
                           space={"name": "dense_rob", "layout": "cellwise"})


# --------------------------------------------------------------------------- the benchmark
def test_benchmark_tables_and_plot(tiny, tmp_path):
    from nni_robust.trial.benchmark import load_config, run_benchmark, summarize, write_outputs

    config_file = tmp_path / "bench.yml"
    config_file.write_text(f"""
table: {tiny}
objective: pgd@1.0
budgets: [10, 40]
seeds: 3
target_budget: 40
strategies:
  random: {{strategy: random}}
  evolution: {{strategy: evolution, args: {{population_size: 6, tournament_size: 2, num_initial: 6,
                                            num_steps: 1000}}, note: tuned for the table}}
  abandit: {{strategy: no_such_strategy_yet, optional: true}}
""")
    config = load_config(config_file)
    result = run_benchmark(config)
    assert set(result["runs"]) == {"random", "evolution"} and "abandit" in result["skipped"]
    rows = summarize(result)
    assert [(r["strategy"], r["budget"]) for r in rows] == [("random", 10), ("random", 40), ("evolution", 10),
                                                            ("evolution", 40)]
    for r in rows:
        runs = result["runs"][r["strategy"]]
        best = [max(run["values"][:r["budget"]]) for run in runs]
        assert r["mean_best"] == pytest.approx(np.mean(best))
        assert r["mean_regret"] == pytest.approx(0.52 - np.mean(best))
        assert r["optimum_reached"] == pytest.approx(np.mean(np.isclose(best, 0.52)))
    assert rows[1]["regret_vs_baseline"] == pytest.approx(1.0)
    paths = write_outputs(result, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| evolution | 40 |" in md and "tuned for the table" in md and "abandit**: skipped" in md
    assert "Target at 40 queries" in md
    assert paths["png"].stat().st_size > 10_000 and paths["csv"].read_text().startswith("strategy,budget")
    with pytest.raises(ConfigError, match="Unknown key 'budget'"):
        bad = tmp_path / "bad.yml"
        bad.write_text(f"table: {tiny}\nbudget: [1]\nstrategies: {{random: random}}\n")
        load_config(bad)
    with pytest.raises(ConfigError, match="no_such_strategy"):
        bad.write_text(f"table: {tiny}\nstrategies: {{x: no_such_strategy}}\nbaseline: null\n")
        run_benchmark(load_config(bad))


def test_benchmark_command_line(tiny, tmp_path, capsys):
    from nni_robust.trial.cli import main

    config_file = tmp_path / "bench.yml"
    config_file.write_text("table: /nowhere\nbudgets: [5, 10]\ntarget_budget: 10\n"
                           "strategies: {random: random, evolution: {strategy: evolution, args: "
                           "{population_size: 4, tournament_size: 2, num_initial: 4, num_steps: 100}}}\n")
    code = main(["benchmark", "tabular", str(config_file), "--table", str(tiny), "--seeds", "2",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| random | 10 |" in out and (tmp_path / "out/curves.png").exists()
    assert main(["benchmark", "tabular", str(config_file), "--out", str(tmp_path / "o2")]) == 2  # /nowhere


# --------------------------------------------------------------------------- the real CIFAR-10 files
def test_random_search_expectation_is_exact():
    from nni_robust.trial.benchmark import random_search_expectation

    values = [0.0, 1.0, 2.0, 3.0, 4.0]
    pairs = [max(a, b) for a in values for b in values if a < b]
    assert random_search_expectation(values, 2) == pytest.approx(np.mean(pairs))  # all 10 pairs
    assert random_search_expectation(values, 1) == pytest.approx(2.0)
    assert random_search_expectation(values, 5) == pytest.approx(4.0)
    assert random_search_expectation([0.3, 0.3, 0.1, 0.3], 2) == pytest.approx(0.3)  # ties: 5 of 6 pairs hold 0.3
    with pytest.raises(ConfigError, match=r"budget must be an integer in \[1, 5\]"):
        random_search_expectation(values, 6)


def test_evolution_and_predictor_beat_random_search_on_the_real_table():
    """The issue's claim with fewer seeds: at its 200 queries (seeds 0-4), the tuned tournament evolution and
    predictor controller of benchmarks/nb201-tabular.yml each find better PGD (eps 1/255) architectures than
    random search on the real files: their regret is at most 0.6 x the exact expected regret of uniform random
    search (0.019), and below NNI's random strategy's on the same seeds.

    (At 100 queries the predictor is still fitting its first surrogates and its result turned on float-level
    differences between CPUs: 3 seeds passed on an AVX2 machine; on an AVX-512 one its regret over 10 seeds was
    0.028 against 0.020 allowed, and 0.003 at 200 queries.)"""
    root = real_root()
    if not (root / "data/meta.json").is_file():
        pytest.skip(f"the NAS-Bench-201 robustness data is not at {root} (set {TABLE_ENV} to its folder)")
    from nni_robust.trial.benchmark import load_config, run_benchmark, summarize

    config = load_config(Path(__file__).resolve().parents[1] / "benchmarks/nb201-tabular.yml", table=root)
    config = config.replace(budgets=(200,), seeds=5, target_budget=200)
    result = run_benchmark(config, labels=["random", "evolution", "predictor"])
    rows = {r["strategy"]: r for r in summarize(result)}
    optimum = result["table"]["optimum"]
    assert optimum == pytest.approx(0.588)
    expected = result["table"]["uniform_random_expected_best"]["200"]
    assert expected == pytest.approx(0.569, abs=1e-3)  # the table's exact figure, not a sample
    assert abs(rows["random"]["mean_best"] - expected) < 0.03  # NNI's random strategy is uniform random search
    for label in ("evolution", "predictor"):
        row = rows[label]
        assert row["mean_regret"] <= 0.6 * (optimum - expected), (label, row, expected)
        assert row["mean_regret"] < rows["random"]["mean_regret"], (label, row, rows["random"])
