"""Adversarial training (PGD-AT) with exact resume, shared by every method.

The training loop is Madry et al.'s PGD adversarial training ("Towards Deep
Learning Models Resistant to Adversarial Attacks", ICLR 2018): every batch is
replaced by adversarial examples crafted against the current weights, and the
loss on them alone is minimised. The defaults of :class:`TrainConfig` are the
MSRobNet supernet settings (Sec. 6.1.1 of the paper; authors' code): PGD-7,
eps 8/255, step 2/255, random start, SGD lr 0.05 momentum 0.9 weight decay
1e-4, cosine decay to 0 over 400 epochs, batch 64, gradient clipping 5.
:meth:`TrainConfig.final` gives the paper's Appendix B.2 settings for the
final training of a discovered architecture.

Choices where the papers are silent (all are settings):

* Adversarial examples are crafted with the model in *train* mode
  (``attack_mode="train"``), as in Madry et al.'s and the MSRobNet authors'
  code: BatchNorm uses batch statistics and its running statistics are also
  updated by the attack's forward passes. ``attack_mode="eval"`` crafts them
  in eval mode instead.
* The learning rate changes once per epoch (PyTorch's epoch-wise
  schedulers, as in the authors' code): epoch ``e`` trains with
  :func:`lr_at_epoch` ``(config, e)``; the cosine schedule reaches
  ``min_lr`` (0) at ``e = epochs``, i.e. right after the last epoch. A
  linear warmup trains epoch ``e < warmup_epochs`` with
  ``lr * (e + 1) / warmup_epochs``; the main schedule then runs over the
  remaining epochs.
* Training metrics come from the same forward pass that computes the loss
  (no extra passes): ``train_acc`` is the accuracy on the adversarial
  batches (on clean batches when ``attack="none"``).

Data parallelism (``distributed=True``, under ``torchrun``; see
:mod:`nni_robust.distributed`): the model is wrapped in PyTorch's
DistributedDataParallel for the training forward pass, its BatchNorm layers
are synchronised over processes, the attacks run on the unwrapped model,
epoch metrics are summed over processes, rank 0 alone writes the
checkpoint (with every rank's RNG state), and rank 0's ``on_epoch_end``
decides for every process whether to stop. A ``W``-process run with global batch ``B``
takes the steps of a one-process run with batch ``B`` (within float
rounding); rank ``r`` seeds its generators with ``seed + r``.

Reproducibility: a fresh :meth:`AdversarialTrainer.fit` seeds Python's
``random``, NumPy's global generator and torch's generators with
``config.seed``. The checkpoint written after every epoch holds the model,
optimizer, scheduler, epoch, these RNG states and the loader's state, so a
run that is stopped and resumed produces bit-identical weights (on the CPU;
CUDA kernels may be nondeterministic). Code called during training —
``before_step`` hooks such as a supernet's per-batch architecture sampling,
the attacks' random starts — must therefore draw its randomness from those
global generators (``random``, ``numpy.random``, torch's default generator),
or keep its own generator's state in its own checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attacks import Attack, build_attack
from .checkpoint import (capture_rng_state, check_run_checkpoint, load_checkpoint, restore_rng_state,
                         save_checkpoint)
from .compiling import compile_network
from .config import check_choice, check_range, from_dict
from .data import cutout
from .device import autocast_context, resolve_device
from .distributed import DistInfo, all_reduce_sum, broadcast_object, gather_objects, sync_batchnorm
from .distributed import current as dist_current
from .errors import CheckpointError, ConfigError, NniRobustError
from .progress import open_bar
from .seeding import seed_everything

__all__ = ["TrainConfig", "AdversarialTrainer", "lr_at_epoch", "SCHEDULES", "ATTACK_MODES"]

logger = logging.getLogger(__name__)

SCHEDULES = ("cosine", "multistep", "constant")
ATTACK_MODES = ("train", "eval")
_ATTACKS = ("pgd", "fgsm", "none")
_CHECKPOINT_FORMAT = "nni_robust.AdversarialTrainer/1"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :class:`AdversarialTrainer`; defaults = MSRobNet supernet training.

    Attributes:
        epochs: Training epochs (MSRobNet supernets: 400).
        batch_size: Batch size the loaders should use (64). The trainer
            takes batches as the loader gives them; it warns on a mismatch.
        lr: Initial learning rate (0.05).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay (1e-4).
        nesterov: Nesterov momentum (off).
        schedule: ``"cosine"`` (to ``min_lr`` over the epochs after warmup),
            ``"multistep"`` (times ``gamma`` at each of ``milestones``) or
            ``"constant"``.
        milestones: Epochs (increasing, in [1, epochs]) at which multistep
            decays; epoch ``m`` is the first with the lower rate.
        gamma: Multistep decay factor (0.1).
        warmup_epochs: Epochs of linear warmup (0).
        min_lr: Final learning rate of the cosine schedule (0).
        grad_clip: Max gradient norm (5.0); ``None`` or 0 disables clipping.
        label_smoothing: Cross-entropy label smoothing (0; the paper's final
            training uses 0.2).
        attack: ``"pgd"``, ``"fgsm"`` or ``"none"`` (standard training).
        eps: Attack radius, l-inf (8/255).
        step: Attack step size (2/255).
        steps: PGD iterations (7); ignored by FGSM.
        random_start: Attack from a random point of the eps-ball (True).
        attack_mode: Model mode while crafting the attack, ``"train"``
            (Madry et al., authors' code) or ``"eval"``.
        autocast: bf16 autocast for forward passes (training and attack).
        channels_last: Model and batches in ``channels_last`` memory format.
        compile: Run the network through :func:`torch.compile`
            (:func:`nni_robust.compiling.compile_network`, TorchInductor):
            the training forward, the attack's passes and the validation go
            through the compiled module; checkpoints keep the plain one. Only
            for a fixed architecture (final training): a trainer with a
            ``before_step`` hook (a supernet sampling its path per step)
            rejects it. Path dropout (``drop_path_prob``, set every epoch)
            does not recompile: the networks' compiled pass reads the
            probability from a buffer (``spaces._common.PathDropout``). Off by
            default: compilation costs minutes and pays on a GPU, not on small
            CPU networks (``docs/performance.md``).
        seed: Seed of the run's global RNGs; ``None`` draws one at
            construction of the trainer and logs it.
        cutout: Side (pixels) of the cutout square applied to every training
            batch before the attack (0: none; DARTS-style final training
            uses 16, e.g. RNAS Sec. 4.2). See :func:`nni_robust.data.cutout`.
        auxiliary_weight: Weight of the auxiliary head's loss (0: none;
            DARTS/RNAS final training: 0.4). The model must then have
            ``forward_with_aux(x) -> (logits, aux_logits)``; the attack uses
            the main logits only.
        drop_path_prob: Final path-dropout probability (0: none; RNAS: 0.3).
            As in DARTS, the model's ``drop_path_prob`` attribute is set to
            ``drop_path_prob * epoch / epochs`` at the start of each epoch.
    """

    epochs: int = 400
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    min_lr: float = 0.0
    grad_clip: float | None = 5.0
    label_smoothing: float = 0.0
    attack: str = "pgd"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 7
    random_start: bool = True
    attack_mode: str = "train"
    autocast: bool = False
    channels_last: bool = False
    compile: bool = False
    seed: int | None = 0
    cutout: int = 0
    auxiliary_weight: float = 0.0
    drop_path_prob: float = 0.0

    def __post_init__(self) -> None:
        def need_int(name: str, low: int) -> None:
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= {low}, but got {value!r}.")

        def need_real(name: str, low: float, high: float | None = None, *, low_open: bool = False) -> None:
            value = getattr(self, name)
            if not _is_real(value):
                raise ConfigError(f"TrainConfig.{name} must be a finite number, but got {value!r}.")
            check_range(f"TrainConfig.{name}", float(value), low, high, low_open=low_open)

        def need_bool(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"TrainConfig.{name} must be true or false, but got {value!r}.")

        need_int("epochs", 1)
        need_int("batch_size", 1)
        need_real("lr", 0.0, low_open=True)
        need_real("momentum", 0.0, 1.0)
        need_real("weight_decay", 0.0)
        for name in ("nesterov", "random_start", "autocast", "channels_last", "compile"):
            need_bool(name)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("TrainConfig.nesterov=True needs momentum > 0, but got momentum=0.")
        check_choice("TrainConfig.schedule", self.schedule, SCHEDULES)
        milestones = self.milestones
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
            raise ConfigError(f"TrainConfig.milestones must be a list of epochs, but got {milestones!r}.")
        milestones = tuple(milestones)
        for m in milestones:
            if not _is_int(m) or not 1 <= m <= self.epochs:
                raise ConfigError(f"TrainConfig.milestones must hold integers in [1, epochs="
                                  f"{self.epochs}], but got {m!r} in {list(milestones)}.")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ConfigError(f"TrainConfig.milestones must be strictly increasing, but got "
                              f"{list(milestones)}.")
        object.__setattr__(self, "milestones", tuple(int(m) for m in milestones))
        if self.schedule == "multistep" and not milestones:
            raise ConfigError("TrainConfig.schedule='multistep' needs milestones, but got [].")
        need_real("gamma", 0.0, 1.0, low_open=True)
        need_int("warmup_epochs", 0)
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"TrainConfig.warmup_epochs must be < epochs={self.epochs}, but got "
                              f"{self.warmup_epochs}.")
        need_real("min_lr", 0.0, float(self.lr))
        if self.grad_clip is not None:
            need_real("grad_clip", 0.0)
        need_real("label_smoothing", 0.0, 1.0)
        if self.label_smoothing >= 1.0:
            raise ConfigError(f"TrainConfig.label_smoothing must be < 1, but got {self.label_smoothing!r}.")
        check_choice("TrainConfig.attack", self.attack, _ATTACKS)
        need_real("eps", 0.0, 1.0)
        need_real("step", 0.0, 1.0, low_open=True)
        need_int("steps", 1)
        check_choice("TrainConfig.attack_mode", self.attack_mode, ATTACK_MODES)
        need_int("cutout", 0)
        need_real("auxiliary_weight", 0.0)
        need_real("drop_path_prob", 0.0, 1.0)
        if self.drop_path_prob >= 1.0:
            raise ConfigError(f"TrainConfig.drop_path_prob must be < 1, but got {self.drop_path_prob!r}.")
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"TrainConfig.seed must be an integer or null, but got {self.seed!r}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "TrainConfig") -> "TrainConfig":
        """Build from a dict (e.g. a YAML section); unknown keys are a :class:`ConfigError`."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (``milestones`` as a list), the inverse of :meth:`from_dict`."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def supernet(cls, **overrides: Any) -> "TrainConfig":
        """MSRobNet supernet training (Sec. 6.1.1): the class defaults, plus ``overrides``."""
        return cls(**overrides)

    @classmethod
    def final(cls, dataset: str = "cifar10", **overrides: Any) -> "TrainConfig":
        """Final adversarial training of a discovered network (MSRobNet, Appendix B.2).

        PGD-7 (8/255, 2/255), batch 48, SGD lr 0.05 momentum 0.9, weight
        decay 5e-4, gradient clipping 5, label smoothing 0.2; CIFAR-10/100:
        110 epochs, lr / 10 at epochs 100 and 105; SVHN: 50 epochs, lr / 10 at
        epochs 20, 40 and 45. For ``digits`` (not in the paper) the CIFAR
        settings are used.

        Args:
            dataset: ``cifar10``, ``cifar100``, ``svhn`` or ``digits``.
            **overrides: Fields to change.
        """
        check_choice("dataset", dataset, ("cifar10", "cifar100", "svhn", "digits"))
        base: dict[str, Any] = dict(FINAL_TRAINING)
        if dataset == "svhn":
            base.update(epochs=50, milestones=(20, 40, 45))
        base.update(overrides)
        return cls(**base)


FINAL_TRAINING: Mapping[str, Any] = dict(
    epochs=110, batch_size=48, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="multistep",
    milestones=(100, 105), gamma=0.1, grad_clip=5.0, label_smoothing=0.2, attack="pgd",
    eps=8 / 255, step=2 / 255, steps=7, random_start=True)
"""MSRobNet Appendix B.2 final-training settings on CIFAR (see :meth:`TrainConfig.final`)."""


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based) under ``config``'s schedule.

    ``epoch = config.epochs`` gives the rate after the last epoch (``min_lr``
    for the cosine schedule).
    """
    return config.lr * _lr_factor(config, epoch)


def _lr_factor(config: TrainConfig, epoch: int) -> float:
    w = config.warmup_epochs
    if config.schedule == "cosine":
        if epoch < w:
            main = 1.0
        else:
            progress = min(1.0, (epoch - w) / (config.epochs - w))
            ratio = config.min_lr / config.lr
            main = ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif config.schedule == "multistep":
        main = config.gamma ** sum(1 for m in config.milestones if epoch >= m)
    else:
        main = 1.0
    warm = (epoch + 1) / w if epoch < w else 1.0
    return warm * main


class _AuxForward(nn.Module):
    """``forward`` = the model's ``forward_with_aux``, so that DDP can wrap a model with an auxiliary head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_with_aux(x)


def _tb_tag(key: str) -> str:
    if key == "lr":
        return "train/lr"
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return f"epoch/{key}"


class AdversarialTrainer:
    """PGD adversarial training with per-epoch checkpoints and exact resume.

    Args:
        model: The network (inputs in [0, 1], normalization inside). Moved to
            ``device`` (and to ``channels_last`` when configured).
        config: The :class:`TrainConfig`.
        device: Where to train (see :func:`nni_robust.device.resolve_device`).
        checkpoint_path: File written after every epoch. When it exists at
            construction, the model, optimizer and scheduler are restored
            from it at once, and the RNG and loader states when :meth:`fit`
            starts, so training continues exactly where it stopped.
        writer: A TensorBoard ``SummaryWriter`` (see
            :func:`nni_robust.tb.summary_writer`): per-epoch scalars
            (``train/*``, ``val/*``, ``epoch/*``) and, every ``log_every``
            steps, ``step/loss`` and ``step/acc`` (running epoch means).
        before_step: ``before_step(model, step)`` is called before every
            batch, ``step`` counting batches from 0 over the whole run (e.g. a
            supernet samples its architecture here). It must draw randomness
            from the global generators (see the module docstring).
        on_epoch_end: ``on_epoch_end(epoch, metrics)`` after each epoch's
            checkpoint is written (e.g. ``nni.report_intermediate_result``);
            ``epoch`` counts finished epochs from 1. Returning ``True``
            stops training after this epoch (it resumes later from the
            checkpoint).
        log_every: Steps between running-loss logs (TensorBoard and
            ``logging``); each costs one host-device sync. 0 disables.
        distributed: Train data-parallel over the initialised process group
            (:func:`nni_robust.distributed.setup`); the train loader must give
            this rank's share of every global batch
            (``TensorLoader(rank=..., world_size=...)``). Only rank 0 should
            get a ``writer``; every rank must run :meth:`fit`. With one
            process it changes nothing.
        sync_bn: With ``distributed``, synchronise BatchNorm statistics over
            processes (:func:`nni_robust.distributed.sync_batchnorm`), so that
            the run takes the one-process steps; ``False`` keeps per-process
            statistics (faster, but then the step depends on the number of
            processes).
        progress: A progress factory (:mod:`nni_robust.progress`, e.g.
            ``tqdm.tqdm``): one bar over every batch of the run, with the
            epoch's loss and accuracy after each epoch. None (the default)
            shows nothing.

    Attributes:
        epoch: Number of finished epochs.
        history: One metrics dict per finished epoch.
        optimizer: The SGD optimizer.
        scheduler: The epoch-wise ``LambdaLR`` scheduler.
        attack: The training attack (``None`` for ``attack="none"``).
    """

    def __init__(self, model: nn.Module, config: TrainConfig, *, device: str | torch.device = "auto",
                 checkpoint_path: str | Path | None = None, writer: Any = None,
                 before_step: Callable[[nn.Module, int], Any] | None = None,
                 on_epoch_end: Callable[[int, dict[str, float]], Any] | None = None,
                 log_every: int = 100, distributed: bool = False, sync_bn: bool = True,
                 progress: Callable[..., Any] | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, but got {type(config).__name__}; "
                              "use TrainConfig.from_dict for dicts.")
        if not _is_int(log_every) or log_every < 0:
            raise ConfigError(f"log_every must be an integer >= 0, but got {log_every!r}.")
        for name, fn in (("before_step", before_step), ("on_epoch_end", on_epoch_end)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be callable or None, but got {fn!r}.")
        self._seed_drawn = config.seed is None
        if config.seed is None:
            config = config.replace(seed=random.SystemRandom().randrange(2**31))
            logger.info("AdversarialTrainer: drew seed %d", config.seed)
        self.config = config
        self.device = resolve_device(device)
        self.dist = dist_current() if distributed else DistInfo()
        self.model = model.to(self.device)
        if self.dist.enabled and sync_bn:
            self.model = sync_batchnorm(self.model, self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.writer = writer
        self.before_step = before_step
        self.on_epoch_end = on_epoch_end
        self.log_every = int(log_every)
        self.progress, self._bar = progress, None
        self.attack: Attack | None = build_attack(
            config.attack, eps=config.eps, step=config.step, steps=config.steps,
            random_start=config.random_start, autocast=config.autocast)
        if config.auxiliary_weight > 0 and not callable(getattr(self.model, "forward_with_aux", None)):
            raise ConfigError(f"TrainConfig.auxiliary_weight={config.auxiliary_weight} needs a model with an "
                              f"auxiliary head (forward_with_aux), but {type(self.model).__name__} has none; "
                              "build it with auxiliary=True or set auxiliary_weight to 0.")
        if config.drop_path_prob > 0 and not hasattr(self.model, "drop_path_prob"):
            raise ConfigError(f"TrainConfig.drop_path_prob={config.drop_path_prob} needs a model with a "
                              f"drop_path_prob attribute, but {type(self.model).__name__} has none; set it to 0.")
        if config.compile and before_step is not None:
            raise ConfigError("TrainConfig.compile=True needs a network with a fixed architecture, but this trainer has "
                              "a before_step hook (e.g. a supernet sampling its path per step, which would recompile "
                              "at every step); set compile to false.")
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("AdversarialTrainer: the model has no trainable parameters.")
        self._params = params
        self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, nesterov=config.nesterov)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: _lr_factor(self.config, e))
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self._resume_state: dict[str, Any] | None = None
        self._started = False
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._load(self.checkpoint_path)
        # the network the attack and the validation run (compiled when configured; it shares the weights)
        self._net = compile_network(self.model) if config.compile else self.model
        # the training forward pass: through DDP (gradient averaging) with several processes
        self._forward: Callable[[torch.Tensor], Any] = \
            self.model.forward_with_aux if config.auxiliary_weight > 0 else self._net
        if self.dist.enabled or (config.compile and config.auxiliary_weight > 0):
            inner = _AuxForward(self.model) if config.auxiliary_weight > 0 else self.model
            if self.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel

                inner = DistributedDataParallel(
                    inner, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=True)  # e.g. an auxiliary head the loss does not use
            self._forward = compile_network(inner) if config.compile else inner

    # -- checkpoints ------------------------------------------------------------
    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        saved = dict(ckpt.get("config") or {})
        if self._seed_drawn and isinstance(saved.get("seed"), int):
            self.config = self.config.replace(seed=saved["seed"])  # continue the saved run's seed
        # a checkpoint older than a setting has the setting's default
        check_run_checkpoint(path, ckpt, fmt=_CHECKPOINT_FORMAT, writer="AdversarialTrainer",
                             current=self.config.to_dict(),
                             defaults={f.name: f.default for f in dataclasses.fields(TrainConfig)})
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"Checkpoint {path.resolve()} does not fit this model/optimizer: "
                                  f"{exc}") from exc
        bad = [name for name, t in ckpt["model"].items()
               if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise CheckpointError(f"Checkpoint {path.resolve()} holds NaN or infinite weights ({bad[:3]}"
                                  f"{' ...' if len(bad) > 3 else ''}): it was written after the run had already "
                                  "broken (or the file is damaged), so resuming from it cannot work. Delete it to "
                                  "restart this run.")
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.history = list(ckpt["history"])
        rng = ckpt["rng"]
        if self.dist.enabled:
            ranks = ckpt.get("rng_ranks") or []
            if len(ranks) == self.dist.world_size:
                rng = ranks[self.dist.rank]
            else:
                rng = None  # reseeded in fit()
                logger.warning("Checkpoint %s was written by %d process(es), this run has %d: the data order and "
                               "weights continue exactly, the attacks' random draws do not.", path,
                               max(1, len(ranks)), self.dist.world_size)
        elif ckpt.get("rng_ranks") and len(ckpt["rng_ranks"]) > 1:
            logger.warning("Checkpoint %s was written by %d processes, this run has 1: the data order and weights "
                           "continue exactly, the attacks' random draws do not.", path, len(ckpt["rng_ranks"]))
        self._resume_state = {"rng": rng, "loader": ckpt.get("loader")}
        logger.info("Resuming from %s after epoch %d/%d", path, self.epoch, self.config.epochs)

    def _save(self, loader: Any) -> None:
        if self.checkpoint_path is None:
            return
        extra: dict[str, Any] = {}
        rng = capture_rng_state()
        if self.dist.enabled:  # every rank's generators, written by rank 0 alone
            extra["rng_ranks"] = gather_objects(rng)
            if not self.dist.is_main:
                return
        save_checkpoint(
            self.checkpoint_path, format=_CHECKPOINT_FORMAT, config=self.config.to_dict(),
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), epoch=self.epoch, global_step=self.global_step,
            history=self.history, rng=rng,
            loader=loader.state_dict() if hasattr(loader, "state_dict") else None, **extra)

    # -- training -----------------------------------------------------------------
    def fit(self, train_loader: Iterable, val_loader: Iterable | None = None,
            val_attacks: Mapping[str, Attack | None] | None = None) -> list[dict[str, float]]:
        """Train until ``config.epochs`` epochs are done (or ``on_epoch_end`` says stop).

        Args:
            train_loader: Iterable of ``(x, y)`` batches, one pass per epoch
                (e.g. :class:`nni_robust.data.TensorLoader`; its
                ``state_dict`` is checkpointed when it has one).
            val_loader: Optional loader evaluated after every epoch.
            val_attacks: ``{name: attack or None}`` for
                :func:`nni_robust.evaluation.evaluate`; default
                ``{"clean": None}``. Results appear as ``val_<name>``.

        Returns:
            The history: one dict per finished epoch (including epochs
            restored from the checkpoint) with ``epoch`` (finished epochs),
            ``lr``, ``train_loss``, ``train_acc``, ``time_s``,
            ``images_per_s`` and the ``val_*`` accuracies.

        Raises:
            NniRobustError: The loss became non-finite (the last checkpoint
                is kept).
        """
        from .evaluation import evaluate

        cfg = self.config
        if self._resume_state is not None:
            if self._resume_state["rng"] is not None:
                restore_rng_state(self._resume_state["rng"])
            else:
                self._seed(cfg.seed + 1000003 * self.epoch)
            loader_state = self._resume_state["loader"]
            if loader_state is not None and hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(loader_state)
            self._resume_state = None
        elif not self._started and self.epoch == 0:
            self._seed(cfg.seed)
        self._started = True
        loader_bs = getattr(train_loader, "batch_size", None)
        if loader_bs is not None and loader_bs != cfg.batch_size:
            logger.warning("train_loader.batch_size=%s differs from TrainConfig.batch_size=%d",
                           loader_bs, cfg.batch_size)
        if self.epoch >= cfg.epochs:
            logger.info("Training already finished (%d/%d epochs).", self.epoch, cfg.epochs)
        attacks = dict(val_attacks) if val_attacks is not None else {"clean": None}

        while self.epoch < cfg.epochs:
            metrics = self._train_epoch(train_loader)
            if val_loader is not None:
                t0 = time.perf_counter()
                result = evaluate(self._net, val_loader, attacks, device=self.device,
                                  autocast=cfg.autocast)
                metrics.update({f"val_{k}": float(v) for k, v in result.items()})
                metrics["val_time_s"] = time.perf_counter() - t0
            self.scheduler.step()
            self.epoch += 1
            metrics = {"epoch": self.epoch, **metrics}
            self.history.append(metrics)
            if self._bar is not None:
                self._bar.set_postfix_str(f"epoch {self.epoch}/{cfg.epochs}, loss {metrics['train_loss']:.3f}, "
                                          f"acc {metrics['train_acc']:.1%}")
            self._save(train_loader)
            self._log_epoch(metrics)
            stop = self.on_epoch_end is not None and self.on_epoch_end(self.epoch, dict(metrics)) is True
            if self.dist.enabled:
                stop = bool(broadcast_object(stop))  # rank 0 decides for every process
            if stop:
                logger.info("on_epoch_end asked to stop after epoch %d", self.epoch)
                break
        if self.writer is not None:
            self.writer.flush()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return list(self.history)

    def _seed(self, seed: int) -> None:
        seed_everything(seed + self.dist.rank)  # rank 0 (and a one-process run) seeds with the seed itself

    def _train_epoch(self, loader: Iterable) -> dict[str, float]:
        cfg = self.config
        model, device = self.model, self.device
        lr = self.optimizer.param_groups[0]["lr"]
        clip = cfg.grad_clip if cfg.grad_clip else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        if cfg.drop_path_prob > 0:
            model.drop_path_prob = cfg.drop_path_prob * self.epoch / cfg.epochs
        aux_weight = float(cfg.auxiliary_weight)
        model.train()
        if self.progress is not None and self._bar is None:  # one bar over the run's batches
            n = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
            self._bar = open_bar(self.progress, total=n * cfg.epochs if n else None, desc="training",
                                 initial=n * self.epoch if n else 0)
        start = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if not x.is_floating_point():
                x = x.float().div_(255.0)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if cfg.cutout:
                x = cutout(x, cfg.cutout)
            if self.before_step is not None:
                self.before_step(model, self.global_step)
            if self.attack is not None:
                if cfg.attack_mode == "eval":
                    model.eval()
                x = self.attack(self._net, x, y)
                model.train()
            with autocast_context(device, cfg.autocast):
                if aux_weight > 0:
                    logits, aux = self._forward(x)
                else:
                    logits, aux = self._forward(x), None
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if aux is not None:
                loss = loss + aux_weight * F.cross_entropy(aux.float(), y, label_smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(self._params, clip)
            self.optimizer.step()
            n = y.shape[0]
            loss_sum += loss.detach() * n
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += n
            self.global_step += 1
            if self._bar is not None:
                self._bar.update(1)
            if self.log_every and self.global_step % self.log_every == 0:
                run_loss, run_correct = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
                logger.info("epoch %d step %d: loss %.4f acc %.4f", self.epoch + 1, i + 1,
                            run_loss / seen, run_correct / seen)
                if self.writer is not None:
                    self.writer.add_scalar("step/loss", run_loss / seen, self.global_step)
                    self.writer.add_scalar("step/acc", run_correct / seen, self.global_step)
        if seen == 0:
            raise ConfigError("train_loader yielded no batches.")
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype)])
        if self.dist.enabled:  # the epoch's metrics over the global batches
            totals = all_reduce_sum(torch.cat([totals.double(), totals.new_tensor([seen]).double()]))
            seen = int(totals[2].item())
            totals = totals[:2]
        total_loss, total_correct = totals.tolist()
        elapsed = time.perf_counter() - start
        if not math.isfinite(total_loss):
            raise NniRobustError(
                f"Training diverged: the mean loss of epoch {self.epoch + 1} is {total_loss / seen} "
                f"(lr={lr}). Lower TrainConfig.lr or enable grad_clip; the last checkpoint "
                f"(epoch {self.epoch}) is kept.")
        return {"lr": float(lr), "train_loss": total_loss / seen, "train_acc": total_correct / seen,
                "time_s": elapsed, "images_per_s": seen / max(elapsed, 1e-9)}

    def _log_epoch(self, metrics: Mapping[str, float]) -> None:
        logger.info("epoch %d/%d: %s", self.epoch, self.config.epochs,
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"))
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "epoch":
                    self.writer.add_scalar(_tb_tag(key), value, self.epoch)
