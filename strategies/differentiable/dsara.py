"""DSARA's search method on the bilevel loop (``dsara.txt`` Alg. 1-3, Sec. 4.3-4.4, 5.3).

Zhang et al., "Differentiable Search of Accurate and Robust Architectures".
The weights always minimise the adversarial training loss. Stage 1 (the first
``stage1_epochs`` = 20 epochs, Alg. 1-2) updates the architecture on the
adversarial validation loss (eq. 5); stage 2 (the next ``stage2_epochs`` =
10) on the natural and adversarial validation losses at once (eq. 6) by
MGDA: the closed-form gamma* of eq. 8 (:func:`gamma_star`) weights the two
architecture gradients (Alg. 3, eq. 9-10). ``combine="sum"`` is the
ablation of Table 5 (row 6). The loop itself is :mod:`.bilevel`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import Attack, build_attack
from nni_robust.config import check_choice
from nni_robust.errors import ConfigError

from .bilevel import SearchConfig, SearchMethod, Stats, _acc, _grad

__all__ = ["gamma_star", "combine_gradients", "DsaraConfig", "DsaraMethod"]


# --------------------------------------------------------------------------- MGDA (DSARA eq. 7-8)

def _flat(grads: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if torch.is_tensor(grads):
        return grads.reshape(-1)
    grads = list(grads)
    if not grads:
        raise ConfigError("gamma_star needs at least one gradient tensor, but got an empty list.")
    return torch.cat([g.reshape(-1) for g in grads])


def gamma_star(g_nat: torch.Tensor | Sequence[torch.Tensor],
               g_adv: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """MGDA's weight of the natural gradient for two objectives (DSARA eq. 8).

    ``gamma* = argmin_{0 <= gamma <= 1} ||gamma g_nat + (1 - gamma) g_adv||^2
    = clip(((g_adv - g_nat) . g_adv) / ||g_nat - g_adv||^2, 0, 1)``.

    When ``g_nat == g_adv`` every gamma gives the same vector; 0.5 is returned
    (our choice: equal weights). No host-device synchronisation.

    Args:
        g_nat: Gradient of the natural loss (a tensor, or a list of tensors
            taken together as one vector, e.g. one per architecture parameter).
        g_adv: Gradient of the adversarial loss, same structure and shapes.

    Returns:
        A 0-d tensor in ``[0, 1]`` on the gradients' device.

    Raises:
        ConfigError: the two gradients differ in size.
    """
    a, b = _flat(g_nat), _flat(g_adv)
    if a.shape != b.shape:
        raise ConfigError(f"g_nat and g_adv must have the same number of entries, but got {a.numel()} "
                          f"and {b.numel()}.")
    a, b = a.detach().double(), b.detach().double()
    diff = a - b
    denom = diff.dot(diff)
    num = -diff.dot(b)
    tiny = torch.finfo(torch.float64).tiny
    gamma = torch.where(denom > 0, num / denom.clamp_min(tiny), torch.full_like(denom, 0.5))
    return gamma.clamp(0.0, 1.0).to(torch.float32)


def combine_gradients(g_nat: Sequence[torch.Tensor], g_adv: Sequence[torch.Tensor],
                      gamma: torch.Tensor | float) -> list[torch.Tensor]:
    """``gamma * g_nat + (1 - gamma) * g_adv`` per tensor (DSARA eq. 9-10)."""
    if len(g_nat) != len(g_adv):
        raise ConfigError(f"g_nat and g_adv must hold as many tensors, but got {len(g_nat)} and {len(g_adv)}.")
    return [b + gamma * (a - b) for a, b in zip(g_nat, g_adv)]


@dataclasses.dataclass(frozen=True)
class DsaraConfig(SearchConfig):
    """DSARA (``dsara.txt`` Alg. 1-3, Sec. 5.3); defaults are the paper's search settings.

    Attributes:
        init_channels: C of the search supernet (Sec. 5.3: 24, "larger than conventions").
        stage1_epochs: E_so, epochs of the first stage (20).
        stage2_epochs: epochs of the second, multi-objective stage (10).
        combine: stage-2 update of alpha: ``"mgda"`` (Alg. 3, eq. 8-10) or
            ``"sum"`` (natural + adversarial loss, the ablation of Table 5).
        alpha_lr_stage2: Adam learning rate of alpha in stage 2 (5e-5).
        attack: attack of the adversarial losses (``"pgd"`` or ``"fgsm"``).
        eps, step, steps, random_start: its settings (PGD-7, 2/255, 1/510,
            random start as PGD is defined in Sec. 2.1).
        label_smoothing: of the cross-entropy of both losses (0).
    """

    init_channels: int = 24
    stage1_epochs: int = 20
    stage2_epochs: int = 10
    combine: str = "mgda"
    alpha_lr_stage2: float = 5e-5
    attack: str = "pgd"
    eps: float = 2 / 255
    step: float = 1 / 510
    steps: int = 7
    random_start: bool = True
    label_smoothing: float = 0.0

    method = "dsara"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._int("stage1_epochs", 0)
        self._int("stage2_epochs", 0)
        if self.stage1_epochs + self.stage2_epochs < 1:
            raise ConfigError("DsaraConfig needs at least one epoch: stage1_epochs + stage2_epochs >= 1, but "
                              f"got {self.stage1_epochs} + {self.stage2_epochs}.")
        check_choice("DsaraConfig.combine", self.combine, ("mgda", "sum"))
        self._real("alpha_lr_stage2", 0.0, low_open=True)
        check_choice("DsaraConfig.attack", self.attack, ("pgd", "fgsm"))
        self._real("eps", 0.0, 1.0)
        self._real("step", 0.0, 1.0, low_open=True)
        self._int("steps", 1)
        if not isinstance(self.random_start, bool):
            raise ConfigError(f"DsaraConfig.random_start must be true or false, but got {self.random_start!r}.")
        self._real("label_smoothing", 0.0, 1.0)

    @property
    def epochs(self) -> int:
        return self.stage1_epochs + self.stage2_epochs


class DsaraMethod(SearchMethod):
    """DSARA's two-stage search strategy (``dsara.txt`` Alg. 2) with Alg. 3's MGDA update."""

    config: DsaraConfig

    def __init__(self, config: DsaraConfig) -> None:
        super().__init__(config)
        self.attack = build_attack(config.attack, eps=config.eps, step=config.step, steps=config.steps,
                                   random_start=config.random_start, autocast=config.autocast)

    def stage(self, epoch: int) -> int:
        """Alg. 1 line 4: epoch ``i`` (1-based) is in stage 1 while ``i <= E_so``."""
        return 1 if epoch < self.config.stage1_epochs else 2

    def arch_lr(self, epoch: int) -> float:
        return self.config.alpha_lr if self.stage(epoch) == 1 else self.config.alpha_lr_stage2

    def eval_attack(self) -> Attack | None:
        return self.attack

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    def weight_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Alg. 2 lines 3 and 6: the adversarial training loss, in both stages."""
        x_adv = self.attack(model, x, y)
        logits = self._forward(model, x_adv)
        loss = self._ce(logits, y)
        return loss, {"train_loss": loss.detach(), "train_acc": _acc(logits, y)}

    def arch_gradients(self, model: nn.Module, alphas: Sequence[torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], Stats]:
        """Stage 1: grad of L_adv_val (Alg. 2 line 4); stage 2: MGDA over L_std_val, L_adv_val (Alg. 3)."""
        x_adv = self.attack(model, x, y)
        logits_adv = self._forward(model, x_adv)
        loss_adv = self._ce(logits_adv, y)
        stats: Stats = {"arch_loss_adv": loss_adv.detach(), "arch_acc_adv": _acc(logits_adv, y)}
        if self.stage(epoch) == 1:
            return _grad(loss_adv, alphas), stats
        logits_nat = self._forward(model, x)
        loss_nat = self._ce(logits_nat, y)
        stats.update(arch_loss_nat=loss_nat.detach(), arch_acc_nat=_acc(logits_nat, y))
        if self.config.combine == "sum":
            stats["gamma"] = torch.full((), 0.5, device=x.device)
            return _grad(loss_nat + loss_adv, alphas), stats
        g_nat = _grad(loss_nat, alphas)
        g_adv = _grad(loss_adv, alphas)
        gamma = gamma_star(g_nat, g_adv)
        stats["gamma"] = gamma
        return combine_gradients(g_nat, g_adv, gamma.to(g_nat[0].dtype)), stats
