"""``nni-robust check`` of multi-machine configs: the folders that the tuner and the trials share
(work dir, supernet folder, dataset root) must be absolute, and are listed with a warning that they
must be the same on every machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nni_robust.errors import ConfigError
from nni_robust.trial.cli import main as cli_main
from nni_robust.trial.experiment import check_experiment, check_shared_paths

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "msrobnet-quick.yml"


def _remote(tmp_path: Path, **class_args) -> Path:
    """msrobnet-quick on a remote machine, with ``class_args`` merged into the tuner's classArgs (None deletes)."""
    data = yaml.safe_load(QUICK.read_text())
    key = tmp_path / "id_ed25519"
    key.write_text("not checked beyond existing\n")  # NNI's config check wants the key file to exist
    data["trialCodeDirectory"] = str(QUICK.parent)
    data["tuner"]["codeDirectory"] = str(QUICK.parent)
    data["trainingService"] = {"platform": "remote", "machineList": [
        {"host": "10.0.0.11", "user": "nas", "sshKeyFile": str(key), "pythonPath": "/opt/venv/bin"}]}
    args = data["tuner"]["classArgs"]
    for dotted, value in class_args.items():
        *parents, leaf = dotted.split("__")
        node = args
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    path = tmp_path / "remote.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SHARED = {"work_dir": "/shared/nas/run1", "strategy_args__supernet_dir": "/shared/nas/supernets",
          "settings__data_root": "/shared/data"}


def test_absolute_shared_paths_pass_with_a_warning(tmp_path):
    summary = check_experiment(_remote(tmp_path, **SHARED), environment=False)
    assert summary["shared_paths"] == {"tuner.classArgs.work_dir": "/shared/nas/run1",
                                       "tuner.classArgs.strategy_args.supernet_dir": "/shared/nas/supernets",
                                       "tuner.classArgs.settings.data_root": "/shared/data"}
    (warning,) = summary["warnings"]  # digits needs no data_root warning
    assert "same path" in warning and "every trial machine" in warning and "/shared/nas/supernets" in warning
    assert "per-trial output" in warning


@pytest.mark.parametrize("key, value, named", [
    ("work_dir", "runs/search1", "tuner.classArgs.work_dir is 'runs/search1'"),
    ("strategy_args__supernet_dir", "~/supernets", "tuner.classArgs.strategy_args.supernet_dir is '~/supernets'"),
    ("settings__data_root", "$HOME/data", "tuner.classArgs.settings.data_root is '$HOME/data'"),
    ("settings__data_root", "./data", "tuner.classArgs.settings.data_root is './data'"),
])
def test_relative_or_home_paths_are_errors(tmp_path, key, value, named):
    with pytest.raises(ConfigError) as err:
        check_experiment(_remote(tmp_path, **{**SHARED, key: value}), environment=False)
    assert named in str(err.value) and "trainingService remote" in str(err.value)


def test_default_work_dir_in_the_default_experiment_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"experimentWorkingDirectory .* is '~/nni-experiments'"):
        check_experiment(_remote(tmp_path, **{**SHARED, "work_dir": None}), environment=False)


def test_every_bad_path_is_named_at_once():
    data = {"trainingService": {"platform": "remote"},
            "tuner": {"classArgs": {"work_dir": "w", "strategy_args": {"supernet_dir": "s"},
                                    "settings": {"dataset": "digits", "data_root": "/ok"}}}}
    with pytest.raises(ConfigError) as err:
        check_shared_paths(data)
    assert "work_dir is 'w'" in str(err.value) and "supernet_dir is 's'" in str(err.value)
    assert "data_root" not in str(err.value)


def test_dataset_without_data_root_is_warned_about():
    data = {"trainingService": [{"platform": "local"}, {"platform": "remote"}],  # a hybrid config counts too
            "tuner": {"classArgs": {"work_dir": "/shared/w", "settings": {"dataset": "cifar10"}}}}
    paths, warnings = check_shared_paths(data)
    assert paths == {"tuner.classArgs.work_dir": "/shared/w"}
    assert len(warnings) == 2 and "settings.data_root is not set" in warnings[1] and "cifar10" in warnings[1]


def test_local_configs_are_not_concerned():
    assert "shared_paths" not in check_experiment(QUICK, environment=False)


def test_cli_check_prints_the_warning(tmp_path, capsys):
    assert cli_main(["check", str(_remote(tmp_path, **SHARED)), "--config-only"]) == 0
    err = capsys.readouterr().err
    assert "nni-robust check: warning: trials run on other machines (trainingService remote)" in err
    assert cli_main(["check", str(_remote(tmp_path, **{**SHARED, "work_dir": "rel"})), "--config-only"]) == 2
    assert "tuner.classArgs.work_dir is 'rel'" in capsys.readouterr().err
