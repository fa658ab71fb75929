"""Experiment YAML files: loading, and the trial settings inside them.

Both the experiment control (:mod:`.experiment`) and the trade-off trial
(:mod:`.tradeoff`) read YAMLs through this module, so neither imports the other
for it (the experiment check imports the trade-off trial's command check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from nni_robust.errors import ConfigError

__all__ = ["BRIDGE", "load_yaml", "load_experiment_settings"]

BRIDGE = "nni_robust.strategies.bridge.StrategyTuner"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML file into a dict, with a clear error when it is missing or not a mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Experiment file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, but holds {type(data).__name__}.")
    return data


def load_experiment_settings(path: str | Path) -> dict[str, Any]:
    """The trial ``settings`` of a YAML: ``tuner.classArgs.settings`` of an experiment,
    or the whole file when it is a plain settings file."""
    data = load_yaml(path)
    tuner = data.get("tuner")
    if isinstance(tuner, Mapping):
        return dict((tuner.get("classArgs") or {}).get("settings") or {})
    return data
