"""Shared pytest fixtures.

Datasets: tiny copies of CIFAR-10, CIFAR-100 and SVHN written in
torchvision's real on-disk format (no network needed). Every image carries
its index in the dataset in pixel (0, 0, 0) (and its label in pixel
(1, 0, 0)), so tests can check which images ended up where.

Models: ``tiny_cnn`` builds a small CNN (BatchNorm included) for the 8x8,
1-channel ``digits`` dataset or any other input size.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- threads


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests' networks are tiny: on 2 cores, one intra-op thread is several times faster than
    two (OpenMP overhead dominates 8x8 tensors), and far faster when other jobs load the cores.
    nnictl trials get the same through ``OMP_NUM_THREADS=1`` in the quick YAMLs' trialCommand."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- datasets


def _tagged_images(n: int, rng: np.random.Generator, start: int, labels: np.ndarray) -> np.ndarray:
    """(n, 3, 32, 32) uint8 random images with index and label written into them."""
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(start, start + n)
    images[:, 1, 0, 0] = labels
    return images


def _dump(path: Path, obj: dict) -> None:
    # str keys: what torchvision gets after unpickling the original (Python 2) files
    # with encoding="latin1".
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def tiny_cifar10(tmp_path: Path) -> Path:
    """A data root holding ``cifar-10-batches-py/`` with 5 x 10 training and 10 test images.

    Training image ``i`` has index ``i`` (0..49) and label ``i % 10``; test
    image ``j`` has index ``100 + j``.
    """
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for b in range(5):
        labels = (np.arange(b * 10, b * 10 + 10) % 10).astype(np.int64)
        images = _tagged_images(10, rng, b * 10, labels)
        _dump(folder / f"data_batch_{b + 1}",
              {"batch_label": f"training batch {b + 1} of 5", "labels": labels.tolist(),
               "data": images.reshape(10, -1), "filenames": [f"img{b}_{i}.png" for i in range(10)]})
    labels = np.arange(10) % 10
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels.tolist(),
                                  "data": _tagged_images(10, rng, 100, labels).reshape(10, -1),
                                  "filenames": [f"test{i}.png" for i in range(10)]})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                    "num_cases_per_batch": 10, "num_vis": 3072})
    return tmp_path


@pytest.fixture
def tiny_cifar100(tmp_path: Path) -> Path:
    """A data root holding ``cifar-100-python/`` with 40 training and 20 test images.

    Labels (``fine_labels``) are ``(index * 7) % 100``.
    """
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n, start in (("train", 40, 0), ("test", 20, 100)):
        fine = ((np.arange(start, start + n) * 7) % 100).astype(np.int64)
        images = _tagged_images(n, rng, start, fine)
        _dump(folder / name, {"filenames": [f"{name}{i}.png" for i in range(n)],
                              "batch_label": name, "fine_labels": fine.tolist(),
                              "coarse_labels": (fine // 5).tolist(), "data": images.reshape(n, -1)})
    _dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                            "coarse_label_names": [f"c{i}" for i in range(20)]})
    return tmp_path


@pytest.fixture
def tiny_svhn(tmp_path: Path) -> Path:
    """A data root holding ``train_32x32.mat`` (30 images) and ``test_32x32.mat`` (10).

    As in the original files, ``X`` is H x W x C x N uint8 and ``y`` is
    N x 1 with digit 0 stored as 10; image ``n`` has label ``1 + n % 10``.
    """
    import scipy.io as sio

    rng = np.random.default_rng(2)
    for name, n, start in (("train", 30, 0), ("test", 10, 100)):
        y = (1 + np.arange(n) % 10).astype(np.uint8).reshape(n, 1)
        nchw = _tagged_images(n, rng, start, y[:, 0] % 10)
        sio.savemat(tmp_path / f"{name}_32x32.mat", {"X": np.transpose(nchw, (2, 3, 1, 0)), "y": y})
    return tmp_path


# --------------------------------------------------------------------------- models


class TinyCNN(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 (stride 2) -> BN -> ReLU -> global mean -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def tiny_cnn():
    """Factory: ``tiny_cnn(in_channels=1, num_classes=10, width=16, seed=0) -> TinyCNN``."""

    def make(in_channels: int = 1, num_classes: int = 10, width: int = 16, seed: int = 0) -> TinyCNN:
        torch.manual_seed(seed)
        return TinyCNN(in_channels, num_classes, width)

    return make


# --------------------------------------------------------------------------- nnictl (end-to-end tests)


#: The robustness report the e2e runs get instead of their config's (see :meth:`Nnictl.run`).
TINY_ROBUSTNESS = {"suite": "quick", "num_images": 16, "pgd_steps": [2], "curve_eps": [], "large_eps": None,
                   "autoattack": True, "autoattack_attacks": ["apgd-ce"], "autoattack_images": 8}


class Nnictl:
    """The one driver of the end-to-end tests: runs an experiment YAML of ``experiments/`` under
    nnictl (free port, its own temporary experiment directory, stopped by its id), once per
    session and set of arguments, so that several test modules can look at one run."""

    def __init__(self, tmp_path_factory) -> None:
        self._factory = tmp_path_factory
        self._runs: dict[tuple, dict] = {}
        self._dirs: list[Path] = []
        self._files: list[Path] = []

    def run(self, name: str, *, timeout: float = 1500, tuner_args: dict | None = None, **kwargs) -> dict:
        """``run_experiment(experiments/<name>.yml, ...)`` (cached): the result dict, plus ``yaml``
        (the tuner's classArgs as run) and ``config`` (the YAML's path).

        ``tuner_args``: ``{"dotted.path": value}`` set inside ``tuner.classArgs`` (e.g.
        ``{"settings.supernet.epochs": 1}``), on a copy of the YAML written beside the original
        (so that its relative paths still hold), for the smallest budget that exercises every stage."""
        from nni_robust.trial.experiment import run_experiment

        config = ROOT / "experiments" / f"{name}.yml"
        data = yaml.safe_load(config.read_text())
        final = ((((data.get("tuner") or {}).get("classArgs") or {}).get("settings") or {}).get("final") or {})
        if final.get("robustness") and "settings.final.robustness" not in (tuner_args or {}):
            # the robustness report at its smallest (AutoAttack's APGD-CE on 8 images): every stage of it still runs
            tuner_args = {**(tuner_args or {}), "settings.final.robustness": {**TINY_ROBUSTNESS,
                                                                             "eps": final["robustness"].get("eps", 0.1)}}
        key = (name, timeout, json.dumps([tuner_args, kwargs], sort_keys=True, default=str))
        if key not in self._runs:
            exp_dir = self._factory.mktemp(f"nni-{name}")
            self._dirs.append(exp_dir)
            if tuner_args:
                args = data.setdefault("tuner", {}).setdefault("classArgs", {})
                for path, value in tuner_args.items():
                    *parents, leaf = path.split(".")
                    node = args
                    for part in parents:
                        node = node.setdefault(part, {})
                    node[leaf] = value
                copy = config.with_name(f".test-{exp_dir.name}-{config.name}")
                copy.write_text(yaml.safe_dump(data, sort_keys=False))
                self._files.append(copy)
                config = copy
            try:
                result = run_experiment(config, experiment_dir=exp_dir, timeout=timeout, **kwargs)
            finally:
                if tuner_args:
                    config.unlink(missing_ok=True)
            result["yaml"] = ((data.get("tuner") or {}).get("classArgs") or {})
            result["config"] = config
            self._runs[key] = result
        return self._runs[key]

    def resume(self, result: dict, *, timeout: float = 1500) -> dict:
        """``resume_experiment`` of a stopped run, in its experiment directory."""
        from nni_robust.trial.experiment import resume_experiment

        return resume_experiment(result["id"], experiment_dir=Path(result["experiment_dir"]).parent, timeout=timeout)

    @staticmethod
    def by_task(result: dict, task: str) -> list[dict]:
        """The trials of ``result`` whose parameters name ``task``."""
        return [t for t in result["trials"] if (t["parameters"] or {}).get("task") == task]

    @staticmethod
    def trial_dir(result: dict, trial: dict) -> Path:
        """The output folder of ``trial`` (local training service)."""
        return Path(result["experiment_dir"]) / "environments" / "local-env" / "trials" / trial["trialJobId"]

    def cleanup(self) -> None:
        for folder in self._dirs:
            shutil.rmtree(folder, ignore_errors=True)
        for file in self._files:
            file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def nnictl(tmp_path_factory):
    """The session's :class:`Nnictl` driver (experiments removed at the end of the session)."""
    driver = Nnictl(tmp_path_factory)
    yield driver
    driver.cleanup()
