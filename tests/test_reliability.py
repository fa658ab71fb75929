"""Reliability: files never run code when loaded, bit rot is detected, broken models are errors.

Each class of failure of the outside review has cases here: crafted checkpoints
and state files (refused, and the payload does not run), a checkpoint that
changed after it was written, a CIFAR batch that asks to run code, and a model
whose outputs are NaN.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_robust import jsonstate
from nni_robust.checkpoint import checksum_path, load_checkpoint, save_checkpoint
from nni_robust.data import TensorLoader, load_dataset
from nni_robust.errors import CheckpointError, DatasetNotFoundError, NonFiniteError
from nni_robust.evaluation import evaluate


class _Payload:
    """Unpickling this runs ``os.system``: what an attacker would put into a shared file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"model": {}, "arch": _Payload(marker)}, path)  # what a crafted model.pt holds
    with pytest.raises(CheckpointError, match="model.pt.*would run code"):
        load_checkpoint(path)
    assert not marker.exists()
    # a plain pickle file renamed .pt: refused too
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"x": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="plain.pt"):
        load_checkpoint(tmp_path / "plain.pt")
    assert not marker.exists()


def test_project_checkpoints_load_with_weights_only(tmp_path):
    from nni_robust.checkpoint import capture_rng_state, restore_rng_state

    path = save_checkpoint(tmp_path / "ck.pt", model={"w": torch.ones(2)}, rng=capture_rng_state(),
                           history=[{"epoch": 0, "loss": 1.5}], config={"lr": 0.1, "milestones": (3, 4)},
                           arch='{"cells": {}}')
    state = load_checkpoint(path)
    restore_rng_state(state["rng"])
    assert state["history"] == [{"epoch": 0, "loss": 1.5}] and state["config"]["milestones"] == (3, 4)


def test_bit_rot_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", weights=torch.arange(1000, dtype=torch.float32))
    assert checksum_path(path).read_text().split()[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)
    checksum_path(path).unlink()  # the user's way out, named in the message
    try:
        load_checkpoint(path)
    except CheckpointError as exc:  # the flipped bit may also break the zip: then it says so
        assert "checksum" not in str(exc)


def test_checkpoint_without_checksum_still_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"epoch": 1}, path)  # written before checksums existed
    assert load_checkpoint(path) == {"epoch": 1}


@dataclasses.dataclass
class _Record:
    x: dict
    y: float


def test_json_state_round_trip_and_refusals():
    rs = np.random.RandomState(3).get_state()
    state = {"population": [(1, "a"), (2, "b")], "random_state": rs, "seen": {("a", 1), ("b", 2)},
             "by_int": {1: "x"}, "nan": float("nan"), "np": np.float32(0.5)}
    back = jsonstate.loads(jsonstate.dumps(state))
    assert back["population"] == [(1, "a"), (2, "b")] and back["seen"] == {("a", 1), ("b", 2)}
    assert back["by_int"] == {1: "x"} and np.isnan(back["nan"]) and back["np"] == 0.5
    assert back["random_state"][0] == rs[0] and np.array_equal(back["random_state"][1], rs[1])
    np.random.RandomState().set_state(back["random_state"])  # usable as is
    with pytest.raises(TypeError, match="_Record"):
        jsonstate.dumps({"r": _Record({}, 1.0)})  # not allowed: refused when saving
    crafted = json.dumps({"r": {"__dataclass__": "os._wrap_close", "fields": {}}})
    with pytest.raises(CheckpointError, match="not allowed"):
        jsonstate.loads(crafted)  # nor rebuilt from a file naming it
    jsonstate.allow_dataclass(_Record)
    assert jsonstate.loads(jsonstate.dumps({"r": _Record({"a": 1}, 2.0)}))["r"] == _Record({"a": 1}, 2.0)


def test_nni_regularized_evolution_state_is_json():
    from nni.nas.strategy.evolution import Individual

    state = {"population": [Individual({"a": 1}, 0.5)], "random_state": np.random.RandomState(0).get_state()}
    back = jsonstate.loads(jsonstate.dumps(state))
    assert back["population"] == [Individual({"a": 1}, 0.5)]


def test_bridge_never_loads_a_pickled_state(tmp_path):
    from nni_robust.errors import ConfigError
    from nni_robust.strategies.bridge import StrategyTuner

    marker = tmp_path / "pwned"
    with open(tmp_path / "strategy_state.pkl", "wb") as f:
        pickle.dump({"format": "x", "p": _Payload(marker)}, f)
    tuner = StrategyTuner(strategy="random", space={"name": "dense_rob", "layout": "cellwise-4"},
                          settings={"dataset": "digits"}, work_dir=tmp_path, lazy_init=True)
    with pytest.raises(ConfigError, match="pickled strategy state.*never loaded"):
        tuner._load_previous()
    assert not marker.exists()
    (tmp_path / "strategy_state.pkl").unlink()
    (tmp_path / "strategy_state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable strategy state"):
        tuner._load_previous()


def test_crafted_cifar_batch_is_refused(tiny_cifar10):
    marker = tiny_cifar10 / "pwned"
    batch = tiny_cifar10 / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f, protocol=2)
    with pytest.raises(DatasetNotFoundError, match="data_batch_1.*not allowed"):
        load_dataset("cifar10", root=tiny_cifar10, split="final")
    assert not marker.exists()


def test_a_model_with_nan_weights_is_an_error_not_an_accuracy(tiny_cnn):
    model = tiny_cnn()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10
    loader = TensorLoader(x, y, batch_size=4, shuffle=False)
    with pytest.raises(NonFiniteError, match="NaN or infinite on 8"):
        evaluate(model, loader)
    model = tiny_cnn()  # a healthy model: no error
    assert 0.0 <= evaluate(model, loader)["clean"] <= 1.0


# --------------------------------------------------------------------------- validation before work starts

ROOT = Path(__file__).resolve().parents[1]


def _quick_yaml(tmp_path, **changes):
    import yaml

    data = yaml.safe_load((ROOT / "experiments" / "msrobnet-quick.yml").read_text())
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    out = tmp_path / "exp.yml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.mark.parametrize("path,value,message", [
    ("tuner.classArgs.settings.final.attacks", {"pgd20": {"name": "pgd", "eps": 8, "step": 0.01, "steps": 20}},
     r"settings\.final\.attacks\.pgd20\.eps must be at most 1"),
    ("tuner.classArgs.settings.final.attacks", {"pgd20": {"name": "pgd", "eps": 0.03, "step": 0.01, "steps": 0}},
     r"settings\.final\.attacks\.pgd20\.steps must be an integer >= 1"),
    ("tuner.classArgs.settings.final.attacks", {"p": {"name": "pgd", "eps": 0.03, "step": 0.01, "stepz": 3}},
     r"Unknown key 'stepz' in settings\.final\.attacks\.p"),
    ("tuner.classArgs.settings.final.train", {"epochs": "5"}, r"settings\.final\.train\.epochs must be an integer"),
    ("tuner.classArgs.settings.supernet.epochs", True, r"settings\.supernet\.epochs must be an integer, but got True"),
    ("tuner.classArgs.settings.evaluation.autocast", "yes", r"settings\.evaluation\.autocast must be true or false"),
    ("tuner.classArgs.settings.evaluation.eps", "8/255", r"settings\.evaluation\.eps must be a finite number"),
    ("tuner.classArgs.settings.final.eval_images", 100000, r"settings\.final\.eval_images is 100000, but the test "),
])
def test_bad_settings_of_any_stage_fail_the_check(tmp_path, path, value, message):
    """A setting read only by the final trial fails `check` (and so `run`), not after the search."""
    from nni_robust.errors import ConfigError
    from nni_robust.trial.experiment import check_experiment

    with pytest.raises(ConfigError, match=message):
        check_experiment(_quick_yaml(tmp_path, **{path: value}))


def test_run_refuses_what_this_machine_cannot_run(tmp_path):
    from nni_robust.errors import ConfigError
    from nni_robust.trial.experiment import check_experiment, run_experiment

    missing = _quick_yaml(tmp_path, **{"tuner.classArgs.settings.dataset": "cifar10",
                                       "tuner.classArgs.settings.data_root": str(tmp_path / "nothing")})
    summary = check_experiment(missing)
    assert any("cifar-10-batches-py/data_batch_1" in p for p in summary["environment"])
    with pytest.raises(ConfigError, match="cannot run on this machine"):
        run_experiment(missing, experiment_dir=tmp_path / "exp")
    assert not (tmp_path / "exp").exists()  # nothing started
    if not torch.cuda.is_available():
        gpu = _quick_yaml(tmp_path, trialGpuNumber=1, **{"trainingService.useActiveGpu": False})
        assert any("trialGpuNumber is 1" in p for p in check_experiment(gpu)["environment"])


def test_cli_check_exit_code_and_config_only(tmp_path, capsys):
    from nni_robust.trial.cli import main

    missing = _quick_yaml(tmp_path, **{"tuner.classArgs.settings.dataset": "svhn",
                                       "tuner.classArgs.settings.data_root": str(tmp_path)})
    assert main(["check", str(missing)]) == 1
    assert "train_32x32.mat" in capsys.readouterr().err
    assert main(["check", "--config-only", str(missing)]) == 0


def test_a_resumed_nan_checkpoint_is_named_not_blamed_on_the_lr(tmp_path, tiny_cnn):
    from nni_robust.training import AdversarialTrainer, TrainConfig

    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    cfg = TrainConfig(epochs=2, batch_size=8, attack="none", seed=0)
    ckpt = tmp_path / "checkpoint.pt"
    model = tiny_cnn()
    AdversarialTrainer(model, cfg, device="cpu", checkpoint_path=ckpt).fit(
        TensorLoader(x, y, batch_size=8, shuffle=True, seed=0))
    state = load_checkpoint(ckpt)
    state["model"]["head.weight"].fill_(float("nan"))
    state["epoch"] = 1
    save_checkpoint(ckpt, **state)
    with pytest.raises(CheckpointError, match="NaN or infinite weights.*head.weight"):
        AdversarialTrainer(tiny_cnn(), cfg, device="cpu", checkpoint_path=ckpt)


def test_cli_inputs_that_used_to_raise_tracebacks(tmp_path, capsys):
    from nni_robust.trial.cli import main

    assert main(["profile", str(tmp_path / "nothere.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["profile", "MSRobNet-1560", "--space", "{bad"]) == 2
    assert "--space must be a JSON object" in capsys.readouterr().err
    (tmp_path / "x.json").write_text('{"arch": "not json"}')
    assert main(["profile", str(tmp_path / "x.json")]) == 2
    assert "'arch' is a string that is not architecture JSON" in capsys.readouterr().err
    save_checkpoint(tmp_path / "m.pt", weights=torch.ones(1))
    assert main(["evaluate", str(tmp_path / "m.pt"), "--dataset", "digits", "--device", "cpu"]) == 2
    assert "lacks ['model', 'arch', 'init_channels']" in capsys.readouterr().err
