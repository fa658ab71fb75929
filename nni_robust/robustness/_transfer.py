"""Transfer-based black-box attacks: adversarial examples crafted on a source model.

RobNet (Guo et al., CVPR 2020, Sec. 4.3) crafts FGSM and PGD-100 examples on
an independently trained copy of the victim; MSRobNet (Ning et al., Table 2)
PGD-100 on independently trained substitutes (VGG-16, ResNet-18, ...); DSARA
(Table 2) PGD-20 at 8/255 on the source model. The default here is DSARA's
PGD-20, eps 8/255, step eps/4 (2/255 at 8/255, the step RobNet and MSRobNet
use for white-box PGD); ``steps=100`` gives RobNet's and MSRobNet's setting.

A :class:`TransferAttack` is an attack like the white-box ones (called as
``attack(target, x, y)``) that ignores the target and attacks the source, so
it runs in the same pass as the white-box attacks
(:func:`~nni_robust.robustness.evaluate_attacks`). With the same random
stream, a transfer attack whose source *is* the target equals the white-box
attack exactly (a test checks this).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..attacks import PGD, Attack
from ..errors import ConfigError
from ._engine import eval_mode, model_device

__all__ = ["TransferAttack", "transfer_pgd", "train_transfer_source"]

logger = logging.getLogger(__name__)


class TransferAttack:
    """Craft adversarial examples on ``source`` with ``attack``; evaluate them on any target.

    The source runs in eval mode (its modes are restored afterwards) on its own
    device; the examples come back on the inputs' device.

    Args:
        source: The model the examples are crafted on (inputs in ``[0, 1]``).
        attack: A white-box attack (:class:`nni_robust.attacks.Attack`).
    """

    def __init__(self, source: nn.Module, attack: Attack) -> None:
        if not isinstance(source, nn.Module):
            raise ConfigError(f"source must be a torch.nn.Module, but got {type(source).__name__}.")
        if not isinstance(attack, Attack):
            raise ConfigError(f"attack must be an nni_robust.attacks.Attack, but got {attack!r}.")
        self.source = source
        self.attack = attack

    @property
    def eps(self) -> float:
        """The attack's radius."""
        return self.attack.eps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples for ``(x, y)`` crafted on the source (``model`` is not used)."""
        src_dev = model_device(self.source)
        with eval_mode(self.source):
            x_adv = self.attack(self.source, x.to(src_dev), y.to(src_dev))
        return x_adv.to(x.device)

    def __repr__(self) -> str:
        return f"TransferAttack(source={type(self.source).__name__}, attack={self.attack!r})"


def transfer_pgd(source: nn.Module, *, eps: float = 8 / 255, steps: int = 20, step: float | None = None,
                 random_start: bool = True) -> TransferAttack:
    """PGD crafted on ``source`` (DSARA Table 2: PGD-20 at 8/255).

    Args:
        source: The source model.
        eps: l-inf radius.
        steps: PGD iterations (DSARA 20; RobNet, MSRobNet 100).
        step: Step size; default ``eps / 4``.
        random_start: PGD random start.
    """
    return TransferAttack(source, PGD(eps, step=eps / 4 if step is None else step, steps=steps,
                                      random_start=random_start))


def train_transfer_source(splits: Any, *, attack: str = "none", epochs: int = 30, width: int = 64,
                          device: str | torch.device = "auto", seed: int | None = 0,
                          max_train: int | None = None, **train_overrides: Any) -> nn.Module:
    """Train a substitute CIFAR ResNet-18 to craft transfer attacks on.

    The network is :func:`nni_robust.models.cifar_resnet18` (``width`` 64 is
    the standard one; smaller widths for quick runs) with the dataset's
    normalization, trained by :class:`nni_robust.training.AdversarialTrainer`
    with MSRobNet's final-training settings (:meth:`TrainConfig.final`) except
    ``attack`` (default ``"none"``: standard training, the usual substitute of
    transfer attacks on robust models; ``"pgd"`` for an adversarially trained
    copy as in RobNet), ``epochs`` and the schedule (the papers do not give the
    substitute's schedule; 30 epochs of cosine decay is our choice) and, without
    an attack, no label smoothing.

    Args:
        splits: A :class:`nni_robust.data.DataSplits` (the ``train`` part is used).
        attack: Training attack: ``"none"``, ``"fgsm"`` or ``"pgd"``.
        epochs: Training epochs.
        width: Channels of the first ResNet stage (64 = ResNet-18).
        device: Where to train.
        seed: Seed of the run.
        max_train: Use only the first ``max_train`` training images.
        **train_overrides: Further :class:`nni_robust.training.TrainConfig` fields.

    Returns:
        The trained model, in eval mode, on ``device``.
    """
    from ..data import DataSplits, TensorLoader
    from ..models import CifarResNet
    from ..training import AdversarialTrainer, TrainConfig

    if not isinstance(splits, DataSplits):
        raise ConfigError(f"splits must be a nni_robust.data.DataSplits, but got {type(splits).__name__}.")
    info = splits.info
    overrides = {"epochs": epochs, "attack": attack, "seed": seed, "schedule": "cosine", "milestones": (),
                 **train_overrides}
    if attack == "none":
        overrides.setdefault("label_smoothing", 0.0)
    config = TrainConfig.final(info.name, **overrides)
    model = CifarResNet((2, 2, 2, 2), num_classes=info.num_classes, in_channels=info.channels,
                        width=width, mean=info.mean, std=info.std)
    loader = TensorLoader(*splits.train, batch_size=config.batch_size, shuffle=True, augment=True,
                          seed=config.seed, device=device,
                          flip=info.flip, max_images=max_train)
    trainer = AdversarialTrainer(model, config, device=device, log_every=0)
    history = trainer.fit(loader)
    if history:
        logger.info("transfer source: ResNet-18 (width %d) trained %d epochs, final train acc %.4f",
                    width, len(history), history[-1].get("train_acc", float("nan")))
    return trainer.model.eval()
