"""Every shipped experiment YAML is valid as nnictl and our tuners will see it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from nni_robust.trial.experiment import check_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments").glob("*.yml"))


def test_the_issues_experiments_exist():
    names = {p.name for p in CONFIGS}
    assert {"msrobnet.yml", "msrobnet-quick.yml", "msrobnet-predictor.yml", "msrobnet-predictor-2000.yml",
            "msrobnet-predictor-quick.yml", "msrobnet-oneshot-24c-P.yml", "msrobnet-oneshot-44c-P.yml",
            "dsara.yml", "dsara-quick.yml", "rnas.yml", "rnas-quick.yml", "tradeoff-msrobnet.yml",
            "tradeoff-msrobnet-quick.yml", "tradeoff-rnas.yml", "tradeoff-rnas-quick.yml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_experiment_is_valid(config):
    if config.name == "nb201-tabular.yml":  # the tuner checks the table's files: they must be there
        table = os.environ.get("NNI_ROBUST_NB201") or ROOT.parent / "shared/data/nb201-robustness"
        if not (Path(table) / "data/meta.json").is_file():
            pytest.skip(f"the NAS-Bench-201 robustness data is not at {table} (set NNI_ROBUST_NB201 to its folder)")
    summary = check_experiment(config)
    data = yaml.safe_load(config.read_text())
    assert summary["maxTrialNumber"] == data["maxTrialNumber"]
    if config.name.endswith("-quick.yml"):  # runs on CPU, on the embedded data
        assert "cuda" not in config.read_text() and data["trainingService"]["platform"] == "local"
