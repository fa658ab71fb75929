"""Settings every trial of a search receives, validated once in the tuner.

An nnictl experiment carries these under ``tuner.classArgs.settings``; the
bridge tuner (:mod:`nni_robust.strategies.bridge`) validates them with
:func:`validate_settings` when the experiment starts, so a misspelt key fails
at once with a :class:`~nni_robust.errors.ConfigError` naming it, not hours
later inside a trial. The tuner then passes the (normalised) dict to every
trial unchanged.

Defaults are the MSRobNet paper's (Sec. 6.1.1 and App. B.2 of
``msrobnet-multishot-nas.txt``) and the authors' code (``methods.md``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from nni_robust.attacks import build_attack
from nni_robust.config import check_choice, check_keys, check_range, check_type, from_dict
from nni_robust.data import DATASETS, load_dataset
from nni_robust.errors import ConfigError
from nni_robust.training import TrainConfig

__all__ = ["EvalSettings", "FinalSettings", "TrialSettings", "validate_settings"]

_EPS = 8 / 255


@dataclass(frozen=True)
class EvalSettings:
    """One-shot evaluation of an architecture inside a supernet (MSRobNet Sec. 5.1, 5.3.4).

    Attributes:
        calib_images: images of the validation split used for BN calibration
            (the authors use 640 = the first 10 batches of 64).
        calib_batch_size: batch size of the calibration forwards.
        eval_images: images the reward is measured on. The paper uses the first
            half of the validation split (5,000 of 10,000); ``None`` = that half.
        eval_offset: index of the first reward image in the validation split.
            The paper calibrates on "the first 10 batches" and rewards "the first
            half", so they overlap (offset 0, the default); an offset of
            ``calib_images`` keeps them apart.
        batch_size: evaluation batch size (memory only; no effect on results).
        attack: ``"fgsm"`` (the paper's proxy, step = eps, no random start) or ``"pgd"``.
        eps: l-inf budget. step: attack step (``None`` = eps for FGSM).
        steps: PGD steps (ignored for FGSM).
        lam: reward weight, ``lam * acc_adv + (1 - lam) * acc_clean``.
        autocast: bf16 autocast for the evaluation forwards (GPU).
    """

    calib_images: int = 640
    calib_batch_size: int = 64
    eval_images: int | None = None
    eval_offset: int = 0
    batch_size: int = 500
    attack: str = "fgsm"
    eps: float = _EPS
    step: float | None = None
    steps: int = 7
    lam: float = 0.5
    autocast: bool = False

    def __post_init__(self) -> None:
        check_range("evaluation.calib_images", self.calib_images, 1)
        check_range("evaluation.calib_batch_size", self.calib_batch_size, 1)
        if self.eval_images is not None:
            check_range("evaluation.eval_images", self.eval_images, 1)
        check_range("evaluation.eval_offset", self.eval_offset, 0)
        check_range("evaluation.batch_size", self.batch_size, 1)
        check_choice("evaluation.attack", self.attack, ("fgsm", "pgd"))
        check_range("evaluation.eps", self.eps, 0.0, 1.0)
        if self.step is not None:
            check_range("evaluation.step", self.step, 0.0, 1.0, low_open=True)
        check_range("evaluation.steps", self.steps, 1)
        check_range("evaluation.lam", self.lam, 0.0, 1.0)


@dataclass(frozen=True)
class FinalSettings:
    """Final training and evaluation of the discovered topology (MSRobNet Eq. 2, App. B.2).

    Attributes:
        train: adversarial training settings: overrides of
            :meth:`TrainConfig.final` for the settings' dataset (App. B.2:
            110 epochs on CIFAR, 50 on SVHN); resolved by :class:`TrialSettings`.
        attacks: the evaluation attacks, names mapped to settings; the defaults
            are the paper's table columns (clean is always measured).
        eval_images: test images to evaluate on (``None`` = all).
        eval_batch_size: batch size of the evaluation.
        nproc: processes of the final training (1: the trial trains alone).
            More than 1: the trial runs the training under ``torchrun`` on its
            machine with DistributedDataParallel (one GPU per process with a
            CUDA device, so the trial needs ``trialGpuNumber >= nproc``; gloo
            on the CPU); ``train.batch_size`` stays the global batch.
        robustness: the robustness report of the trained network
            (:func:`nni_robust.robustness.robustness_report`), run after the
            evaluation with ``attacks``, on the same test images unless
            ``num_images`` says otherwise: ``{suite: quick | standard | full,
            eps: ..., <suite settings>}`` (``autoattack: true``,
            ``autoattack_attacks: [apgd-ce, apgd-t]``, ``autoattack_images``,
            ``curve_eps``, ...). Its headline numbers join the trial's NNI
            metrics (``acc_autoattack``, ``robustness_strength_mean``, ...);
            the report goes to ``robustness.{json,md,png}`` beside the model.
            ``None``: no report.
    """

    train: TrainConfig | Mapping[str, Any] | None = None
    attacks: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {
        "fgsm": {"name": "fgsm", "eps": _EPS},
        "pgd7": {"name": "pgd", "eps": _EPS, "step": 2 / 255, "steps": 7},
        "pgd20": {"name": "pgd", "eps": _EPS, "step": 2 / 255, "steps": 20},
        "pgd100": {"name": "pgd", "eps": _EPS, "step": 2 / 255, "steps": 100},
    })
    eval_images: int | None = None
    eval_batch_size: int = 500
    nproc: int = 1
    robustness: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_range("final.nproc", self.nproc, 1)
        if self.robustness is not None:  # checked now: a bad report spec fails before the search, not after it
            from nni_robust.robustness import suite_from_spec
            suite_from_spec(self.robustness, "settings.final.robustness")
        if self.train is not None and not isinstance(self.train, (TrainConfig, Mapping)):
            raise ConfigError(f"final.train must be a mapping of training settings, but got {self.train!r}.")
        for name, spec in self.attacks.items():
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise ConfigError(
                    f"final.attacks.{name} must be a mapping with a 'name' key "
                    f"('fgsm' or 'pgd') and its settings, but got {spec!r}.")
            spec = dict(spec)  # built now, so a bad final attack fails before the search, not after it
            build_attack(spec.pop("name"), where=f"settings.final.attacks.{name}", **spec)
        if self.eval_images is not None:
            check_range("final.eval_images", self.eval_images, 1)
        check_range("final.eval_batch_size", self.eval_batch_size, 1)


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial of a search needs besides its own task.

    Attributes:
        dataset: one of :data:`nni_robust.data.DATASETS`.
        data_root: folder the dataset lives in (``None``: ``$NNI_ROBUST_DATA``
            or ``~/.cache/nni_robust/data``).
        val_fraction: validation share of the search split (paper: 0.2).
        seed: seed of the data split and of training.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_workers: unused by the in-memory loader; kept for symmetry with
            torchvision-style pipelines (must be 0).
        space: keyword arguments of the search space's network other than the
            architecture and width (e.g. ``{"layout": "cellwise"}``).
        supernet: adversarial training of each supernet (paper Sec. 6.1.1:
            400 epochs, batch 64, SGD 0.05 cosine, wd 1e-4, PGD-7 8/255 2/255).
        evaluation: one-shot evaluation settings.
        final: final training and evaluation settings.
    """

    dataset: str = "cifar10"
    data_root: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    space: Mapping[str, Any] = field(default_factory=lambda: {"layout": "cellwise"})
    supernet: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    final: FinalSettings = field(default_factory=FinalSettings)

    def __post_init__(self) -> None:
        check_choice("settings.dataset", self.dataset, tuple(DATASETS))
        check_range("settings.val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if self.num_workers != 0:
            raise ConfigError(f"settings.num_workers must be 0 (data is held in memory), "
                              f"but got {self.num_workers!r}.")
        if not isinstance(self.space, Mapping):
            raise ConfigError(f"settings.space must be a mapping of space arguments, but got {self.space!r}.")
        train = self.final.train
        if not isinstance(train, TrainConfig):  # resolve the dataset's App. B.2 defaults

            overrides = dict(train or {})
            check_keys(overrides, [f.name for f in dataclasses.fields(TrainConfig)], "settings.final.train")
            hints = typing.get_type_hints(TrainConfig)
            for key, value in overrides.items():
                check_type(f"settings.final.train.{key}", value, hints[key])
            resolved = TrainConfig.final(self.dataset if self.dataset != "digits" else "cifar10", **overrides)
            object.__setattr__(self, "final", dataclasses.replace(self.final, train=resolved))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrialSettings":
        """Build from a (YAML) dict; unknown keys anywhere are a :class:`ConfigError`."""
        data = dict(data or {})
        nested = {}
        if "supernet" in data:
            nested["supernet"] = TrainConfig.from_dict(data.pop("supernet") or {}, "settings.supernet")
        if "evaluation" in data:
            nested["evaluation"] = from_dict(EvalSettings, data.pop("evaluation"), "settings.evaluation")
        if "final" in data:
            nested["final"] = from_dict(FinalSettings, data.pop("final"), "settings.final")
        settings = from_dict(cls, data, "settings")
        return dataclasses.replace(settings, **nested)

    def preflight(self, *, gpus_per_trial: int = 0, platform: str = "local") -> list[str]:
        """Check what these settings need from the machine, before any work starts.

        Loads the dataset (so a missing folder or wrong files fail now, naming the
        folder and the files expected), checks that every image count fits its
        split, and that the device exists.

        Args:
            gpus_per_trial: the experiment's ``trialGpuNumber``.
            platform: the NNI training service; for another than ``local`` the
                data and devices are on other machines, so only the counts are
                checked when the data is here.

        Returns:
            Problems of this machine (data folder, device, GPUs) as sentences;
            empty when the experiment can run here.

        Raises:
            ConfigError: an image count larger than its split (the data is here
                and the settings cannot fit it anywhere).
        """
        import torch

        from nni_robust.device import resolve_device
        from nni_robust.errors import DatasetNotFoundError

        problems: list[str] = []
        try:
            resolve_device(self.device)
        except ConfigError as exc:
            problems.append(f"settings.device: {exc}")
        nproc = self.final.nproc
        if nproc > 1 and gpus_per_trial and nproc > gpus_per_trial and str(self.device).strip().lower() != "cpu":
            raise ConfigError(f"settings.final.nproc is {nproc} (one GPU per process), but trialGpuNumber is "
                              f"{gpus_per_trial}: the final trial would see {gpus_per_trial} GPU(s); set "
                              f"trialGpuNumber to at least {nproc} or lower final.nproc.")
        if gpus_per_trial and not torch.cuda.is_available() and platform == "local":
            problems.append(f"trialGpuNumber is {gpus_per_trial}, but this machine has no CUDA device: NNI's local "
                            "training service would stop the experiment at once; set trialGpuNumber: 0 and "
                            "settings.device: cpu to run here.")
        try:
            search, final = self.data("search"), self.data("final")
        except DatasetNotFoundError as exc:
            problems.append(f"settings.dataset {self.dataset!r} (settings.data_root {self.data_root!r}): {exc}")
            return problems
        n_val, n_test = int(search.val[1].shape[0]), int(final.val[1].shape[0])
        ev = self.evaluation
        counts = [("settings.evaluation.calib_images", ev.calib_images, n_val, "validation split"),
                  ("settings.evaluation.eval_offset + eval_images", ev.eval_offset + (ev.eval_images or 0), n_val,
                   "validation split"),
                  ("settings.final.eval_images", self.final.eval_images or 0, n_test, "test split")]
        for key, value, size, split in counts:
            if value > size:
                raise ConfigError(f"{key} is {value}, but the {split} of {self.dataset} (val_fraction "
                                  f"{self.val_fraction}) holds {size} images.")
        return problems

    def data(self, split: str) -> Any:
        """The dataset of these settings (:func:`nni_robust.data.load_dataset`): ``"search"`` or ``"final"`` split."""
        return load_dataset(self.dataset, root=self.data_root, val_fraction=self.val_fraction, seed=self.seed,
                            split=split)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` turns back into an equal object."""
        return _jsonable(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "TrialSettings":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def validate_settings(task_settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate the ``settings`` of a tuner's classArgs and return them normalised.

    Raises:
        ConfigError: naming the first unknown key or bad value.
    """
    return TrialSettings.from_dict(task_settings).to_dict()
