"""experiments/nb201-tabular.yml under nnictl: a whole search answered from the NAS-Bench-201 robustness table.

Needs the table's real files (``../shared/data/nb201-robustness`` or ``$NNI_ROBUST_NB201``); the
YAML's own default path (``${NNI_ROBUST_NB201:-../../shared/data/nb201-robustness}``, relative to its
folder) is what the tuner resolves, so the test also checks that a relative table path reaches the
trials as the right absolute folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _real_root() -> Path:
    env = os.environ.get("NNI_ROBUST_NB201")
    return Path(env) if env else ROOT.parent / "shared/data/nb201-robustness"


def test_tabular_search_under_nnictl(nnictl):
    root = _real_root()
    if not (root / "data/meta.json").is_file():
        pytest.skip(f"the NAS-Bench-201 robustness data is not at {root} (set NNI_ROBUST_NB201 to its folder)")
    from nni_robust.strategies.tabular import TabularEvaluator, load_table

    run = nnictl.run("nb201-tabular", timeout=300, tuner_args={
        "strategy_args.population_size": 4, "strategy_args.tournament_size": 2, "strategy_args.num_initial": 6,
        "strategy_args.num_steps": 6})
    assert run["status"] == "DONE" and not run["failed_trials"], run.get("errors")
    trials = nnictl.by_task(run, "tabular")
    assert len(trials) == len(run["trials"]) and 6 <= len(trials) <= 12  # 6 random + up to 6 mutants
    table = load_table(root)
    evaluator = TabularEvaluator(table, "pgd@1.0")
    for t in trials:
        assert t["parameters"]["args"] == {"table": str(root.resolve()), "objective": "pgd@1", "dataset": "cifar10"}
        final = t["final"]
        assert {"clean", "pgd@0.5", "pgd@1", "pgd@2", "uid"} <= set(final)
        assert final["pgd@0.5"] >= final["pgd@1"] >= final["pgd@2"]
        row = table.row(table.strings[int(final["uid"])])  # the measured cell the trial answered with
        assert final["default"] == pytest.approx(float(evaluator.values[row]))
    # NNI's local service hands a trial the next queued parameters when it asks, so the REST listing may pair
    # a job with another job's parameters: compare as multisets here, and pair exactly by parameter id in the
    # tuner's own records
    assert sorted(t["final"]["default"] for t in trials) == pytest.approx(
        sorted(evaluator.value(t["parameters"]["sample"]) for t in trials))
    records = [json.loads(line) for line in (Path(run["work_dir"]) / "trials.jsonl").read_text().splitlines()]
    assert len(records) == len(trials) and all(r["status"] == "SUCCEEDED" for r in records)
    for r in records:
        assert r["result"]["default"] == pytest.approx(evaluator.value(r["parameters"]["sample"]))
