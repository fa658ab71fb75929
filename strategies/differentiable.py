"""Adversarial differentiable architecture search: DSARA and RNAS (max / uniform).

Both methods relax a cell-based space continuously (DARTS, Liu et al. 2019):
every edge of a cell mixes its candidate operations with the softmax of its
architecture parameters alpha, and the search alternates an update of the
network weights w on a batch of the *training* split with an update of alpha
on a batch of the *validation* split (DSARA Sec. 3 eq. 3, RNAS Sec. 3.1
eq. 3). The supernet is the space's (``nni_robust.spaces.darts``); this module
only holds what the two papers add and the loop that alternates the updates.

First order. Both papers update alpha with the gradient at the current
weights, not through an unrolled step of w: DSARA Alg. 2 line 4 writes
``grad_alpha L_adv_val(w_i, alpha_{i-1})`` with the freshly updated ``w_i``,
and RNAS reports a search cost (RNAS-uniform 0.5 GPU-days) "less than DARTS
(2nd order), a little more than DARTS (1st order)" (Sec. 4.1), i.e. the
first-order approximation. So this engine is first order.

Methods (``dsara.txt``, ``rnas.txt``):

* :class:`DsaraMethod` -- DSARA Alg. 1-3 (Sec. 4.3-4.4, 5.3). Weights always
  minimise the adversarial training loss (PGD-7, eps 2/255, step 1/510).
  Stage 1 (the first ``stage1_epochs`` = 20 epochs) updates alpha on the
  adversarial validation loss (eq. 5); stage 2 (the next ``stage2_epochs`` =
  10) on natural and adversarial validation losses at once (eq. 6) by MGDA:
  gamma* of eq. 8 (:func:`gamma_star`) weights the two alpha gradients
  (eq. 9-10). ``combine="sum"`` replaces MGDA by the sum of the two losses
  (the ablation of Table 5, row 6). Alpha: Adam lr 3e-4 in stage 1, 5e-5 in
  stage 2, betas (0.5, 0.999), weight decay 1e-3; weights: SGD 0.025 cosine
  to 0, momentum 0.9, weight decay 3e-4 (Sec. 5.3).
* :class:`RnasMethod` -- RNAS Alg. 1 (``variant="max"``) and Alg. 2
  (``"uniform"``), eq. 4-5: both levels minimise
  ``CE(m(x), y) + lambda * f(m(x'), m(x))``; RNAS-max finds x' by PGD
  maximising f inside the eps-ball (:func:`maximize_divergence`),
  RNAS-uniform samples x' uniformly from the ball
  (:func:`uniform_perturbation`). Paper settings (Sec. 4.1): 50 epochs of
  which 15 warm up the weights, batch 64, lambda 1, PGD-10 step 0.003 eps
  0.031, SGD 0.025 (momentum 0.9, wd 3e-4), Adam 3e-4 betas (0.5, 0.999)
  wd 1e-3. f defaults to the KL divergence of the softmax outputs (as
  TRADES; ``methods.md``: the paper does not name f).

Choices where the papers are silent (each is a setting):

* Order inside an iteration: DSARA Alg. 2 updates w, then alpha
  (``arch_first=False``); RNAS Alg. 1-2 update alpha, then w
  (``arch_first=True``).
* The validation loader restarts at every search epoch and is cycled when it
  is shorter than the training loader (DARTS pairs one validation batch with
  each training batch); both loaders augment as DARTS does.
* DSARA keeps one Adam optimizer for alpha across the stage switch (its
  moments carry over; only the learning rate changes). Gradient clipping 5 on
  the weights (DARTS's value; DSARA: "our settings are the same as DARTS").
* RNAS: the weight-only warm-up epochs train w on the full regularised
  objective; the cosine schedule ends at DARTS's 0.001. RNAS-max returns, per
  image, the iterate of largest f (so the regularizer never decreases over
  the PGD steps; ``keep_best``), RNAS-uniform draws one x' per image and step
  (a one-sample estimate of the integral of eq. 5).
* Per-epoch validation accuracies (clean and PGD with the method's eps) on
  the first ``eval_images`` validation images, in eval mode; the intermediate
  result ``default`` is the robust reward ``0.5 * clean + 0.5 * adv``.
  Neither paper reports a per-epoch metric.

Exact resume: the checkpoint written after every epoch holds the supernet
(weights and alpha), both optimizers, the epoch, the history, every global RNG
state (:mod:`nni_robust.checkpoint`) and the loaders' states. Randomness (the
attacks' random starts, the uniform perturbations) is drawn from torch's
global generator, so a resumed search is bit-identical on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import Attack, build_attack
from nni_robust.checkpoint import (capture_rng_state, check_run_checkpoint, load_checkpoint, restore_rng_state,
                                   save_checkpoint)
from nni_robust.config import check_choice, check_range, from_dict
from nni_robust.device import autocast_context, resolve_device
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError
from nni_robust.reward import robust_reward
from nni_robust.training import TrainConfig, lr_at_epoch

__all__ = [
    "gamma_star", "combine_gradients", "DIVERGENCES", "divergence", "uniform_perturbation",
    "maximize_divergence", "arch_entropy", "SearchConfig", "DsaraConfig", "RnasConfig", "METHODS",
    "search_config", "SearchMethod", "DsaraMethod", "RnasMethod", "build_method", "DifferentiableSearch",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "nni_robust.DifferentiableSearch/1"


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


# --------------------------------------------------------------------------- RNAS: f and x'

def _kl(logits_p: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
    lp_nat = F.log_softmax(logits_nat.float(), dim=1)
    lp_p = F.log_softmax(logits_p.float(), dim=1)
    return (lp_nat.exp() * (lp_nat - lp_p)).sum(dim=1)


def _sym_kl(logits_p: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
    return _kl(logits_p, logits_nat) + _kl(logits_nat, logits_p)


def _js(logits_p: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
    p, q = F.softmax(logits_p.float(), dim=1), F.softmax(logits_nat.float(), dim=1)
    log_m = (0.5 * (p + q)).clamp_min(1e-12).log()
    lp, lq = F.log_softmax(logits_p.float(), dim=1), F.log_softmax(logits_nat.float(), dim=1)
    return 0.5 * ((p * (lp - log_m)).sum(1) + (q * (lq - log_m)).sum(1))


def _l2(logits_p: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
    p, q = F.softmax(logits_p.float(), dim=1), F.softmax(logits_nat.float(), dim=1)
    return (p - q).pow(2).sum(dim=1)


DIVERGENCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": _kl, "sym_kl": _sym_kl, "js": _js, "l2": _l2,
}
"""RNAS's f by name: ``f(logits of m(x'), logits of m(x)) -> (N,)`` per-image values >= 0.

``kl``: ``KL(softmax(m(x)) || softmax(m(x')))`` (TRADES' direction, the
default); ``sym_kl``: both directions summed; ``js``: Jensen-Shannon
divergence; ``l2``: squared Euclidean distance of the softmax vectors.
"""


def divergence(f: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The f of :data:`DIVERGENCES` named ``f`` (a callable is returned as is).

    Raises:
        ConfigError: unknown name.
    """
    if callable(f):
        return f
    if f not in DIVERGENCES:
        raise ConfigError(f"Unknown divergence f {f!r}; valid: {sorted(DIVERGENCES)} or a callable "
                          "f(logits_perturbed, logits_natural) -> per-image values.")
    return DIVERGENCES[f]


def _ball(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return (x - eps).clamp_min(0.0), (x + eps).clamp_max(1.0)


def uniform_perturbation(x: torch.Tensor, eps: float, *, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
    """x' drawn uniformly from the l-inf eps-ball around ``x`` intersected with ``[0, 1]``.

    RNAS-uniform (Alg. 2, eq. 5): "sample a perturbation example uniformly
    from the perturbation set". Each pixel is uniform on
    ``[max(0, x - eps), min(1, x + eps)]``, so the sample is exactly uniform on
    the (box-shaped) intersection, not clipped onto its faces.
    """
    lo, hi = _ball(x.detach(), float(eps))
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) if generator is not None \
        else torch.rand_like(x)
    return lo + (hi - lo) * u


def maximize_divergence(model: nn.Module, x: torch.Tensor, target_logits: torch.Tensor, *, eps: float,
                        step: float, steps: int, f: str | Callable = "kl", random_start: bool = True,
                        keep_best: bool = True, autocast: bool = False,
                        history: list[torch.Tensor] | None = None) -> torch.Tensor:
    """RNAS-max's inner problem: PGD maximising ``f(m(x'), m(x))`` over the eps-ball (Alg. 1).

    ``x'_{t+1} = clip_{ball(x, eps) ∩ [0,1]}(x'_t + step * sign(grad_x' f))``
    from a uniform point of the ball (``random_start``; at ``x' = x`` the
    gradient of a divergence vanishes). Gradients are taken w.r.t. the input
    only (``torch.autograd.grad``): parameters' ``.grad`` are never touched.
    The model runs in whatever mode it is in (search: train mode).

    Args:
        model: The supernet.
        x: Natural inputs in ``[0, 1]``.
        target_logits: ``m(x)`` (detached inside).
        eps: l-inf radius (RNAS: 0.031). step: PGD step (0.003). steps: K (10).
        f: Divergence (name in :data:`DIVERGENCES` or callable).
        random_start: Start from a uniform point of the ball.
        keep_best: Return, per image, the iterate with the largest f (one more
            forward pass for the last iterate); else the last iterate.
        autocast: bf16 autocast for the forward passes.
        history: When a list, the mean f over the batch of the returned
            points so far is appended after every step (``steps + 1`` 0-d
            tensors, the first at the start point).

    Returns:
        Detached x' within the eps-ball around ``x`` and ``[0, 1]``.
    """
    fn = divergence(f)
    x0 = x.detach()
    if eps == 0 or x0.shape[0] == 0:
        return x0.clone()
    target = target_logits.detach().float()
    lo, hi = _ball(x0, float(eps))
    x_adv = uniform_perturbation(x0, eps) if random_start else x0.clone()
    best, best_val = x_adv, None
    with torch.enable_grad():
        for _ in range(int(steps)):
            xa = x_adv.detach().requires_grad_(True)
            with autocast_context(x0.device, autocast):
                logits = model(xa)
            vals = fn(logits.float(), target)
            (grad,) = torch.autograd.grad(vals.sum(), xa)
            vals = vals.detach()
            if keep_best:
                best, best_val = _keep(best, best_val, xa.detach(), vals)
            if history is not None:
                history.append((best_val if keep_best else vals).mean())
            x_adv = torch.minimum(torch.maximum(xa.detach() + step * grad.sign(), lo), hi)
    if keep_best:
        with torch.no_grad(), autocast_context(x0.device, autocast):
            vals = fn(model(x_adv).float(), target)
        best, best_val = _keep(best, best_val, x_adv, vals)
        if history is not None:
            history.append(best_val.mean())
        return best
    if history is not None:
        with torch.no_grad(), autocast_context(x0.device, autocast):
            history.append(fn(model(x_adv).float(), target).mean())
    return x_adv


def _keep(best: torch.Tensor, best_val: torch.Tensor | None, x: torch.Tensor,
          vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if best_val is None:
        return x, vals
    better = vals > best_val
    mask = better.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x, best), torch.where(better, vals, best_val)


def arch_entropy(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean entropy (nats) of the per-edge operation distributions over all cell types.

    Args:
        weights: ``{cell type: (edges, ops) softmax weights}`` (rows sum to 1).

    Returns:
        A 0-d tensor in ``[0, log(ops)]``: ``log(ops)`` at initialisation
        (uniform), 0 when every edge has chosen one operation.
    """
    if not weights:
        raise ConfigError("arch_entropy needs the weights of at least one cell type.")
    rows = torch.cat([w.detach().float().reshape(-1, w.shape[-1]) for w in weights.values()])
    return -(rows * rows.clamp_min(1e-30).log()).sum(dim=1).mean()


# --------------------------------------------------------------------------- configs

def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings shared by the differentiable searches (DARTS's where the papers defer to it).

    Attributes:
        init_channels: C of the search supernet (DARTS: 16; DSARA: 24).
        batch_size: Images per weight step and per architecture step (64).
        w_lr: Initial SGD learning rate of the weights (0.025), cosine-annealed
            over all epochs to ``w_min_lr``.
        w_min_lr: Final weight learning rate.
        w_momentum: SGD momentum (0.9). w_weight_decay: SGD weight decay (3e-4).
        grad_clip: Max norm of the weight gradient (DARTS: 5); None disables.
        alpha_lr: Adam learning rate of the architecture parameters (3e-4).
        alpha_betas: Adam betas ((0.5, 0.999)).
        alpha_weight_decay: Adam weight decay of alpha (1e-3).
        arch_first: Update alpha before w in each iteration.
        augment: Random crop (+ flip where the dataset allows) on the search
            batches of both splits (DARTS).
        eval_images: Validation images for the per-epoch clean/adversarial
            accuracy (``None``: all; 0: no per-epoch evaluation).
        eval_batch_size: Batch size of that evaluation.
        max_train, max_val: Use only the first images of each split (budget
            knob for quick runs; ``None``: all).
        derive_exclude: Operations never chosen when deriving (``("none",)``).
        derive_inputs_per_node: Strongest inputs kept per node (DARTS: 2).
        autocast: bf16 autocast of every forward pass.
        channels_last: Model and batches in ``channels_last`` memory format.
        seed: Seed of the global RNGs (``None``: drawn and logged).
    """

    init_channels: int = 16
    batch_size: int = 64
    w_lr: float = 0.025
    w_min_lr: float = 0.0
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 1e-3
    arch_first: bool = False
    augment: bool = True
    eval_images: int | None = 1000
    eval_batch_size: int = 256
    max_train: int | None = None
    max_val: int | None = None
    derive_exclude: tuple[str, ...] = ("none",)
    derive_inputs_per_node: int = 2
    autocast: bool = False
    channels_last: bool = False
    seed: int | None = 0

    method = "base"

    def __post_init__(self) -> None:
        where = type(self).__name__
        for name in ("init_channels", "batch_size", "eval_batch_size", "derive_inputs_per_node"):
            self._int(name, 1)
        for name in ("eval_images", "max_train", "max_val"):
            if getattr(self, name) is not None:
                self._int(name, 0 if name == "eval_images" else 1)
        self._real("w_lr", 0.0, low_open=True)
        self._real("w_min_lr", 0.0, float(self.w_lr))
        self._real("w_momentum", 0.0, 1.0)
        self._real("w_weight_decay", 0.0)
        if self.grad_clip is not None:
            self._real("grad_clip", 0.0)
        self._real("alpha_lr", 0.0, low_open=True)
        self._real("alpha_weight_decay", 0.0)
        betas = self.alpha_betas
        if (isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2
                or not all(_is_real(b) and 0.0 <= b < 1.0 for b in betas)):
            raise ConfigError(f"{where}.alpha_betas must be two numbers in [0, 1), but got {betas!r}.")
        object.__setattr__(self, "alpha_betas", (float(betas[0]), float(betas[1])))
        excl = self.derive_exclude
        if isinstance(excl, str) or not isinstance(excl, Sequence) or not all(isinstance(o, str) for o in excl):
            raise ConfigError(f"{where}.derive_exclude must be a list of operation names, but got {excl!r}.")
        object.__setattr__(self, "derive_exclude", tuple(excl))
        for name in ("arch_first", "augment", "autocast", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}.{name} must be true or false, but got {getattr(self, name)!r}.")
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"{where}.seed must be an integer or null, but got {self.seed!r}.")

    def _int(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if not _is_int(value) or value < low:
            raise ConfigError(f"{type(self).__name__}.{name} must be an integer >= {low}, but got {value!r}.")

    def _real(self, name: str, low: float, high: float | None = None, *, low_open: bool = False) -> None:
        value = getattr(self, name)
        if not _is_real(value):
            raise ConfigError(f"{type(self).__name__}.{name} must be a finite number, but got {value!r}.")
        check_range(f"{type(self).__name__}.{name}", float(value), low, high, low_open=low_open)

    @property
    def epochs(self) -> int:
        """Total search epochs."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with ``method``; :func:`search_config` inverts it."""
        d = dataclasses.asdict(self)
        d["alpha_betas"] = list(self.alpha_betas)
        d["derive_exclude"] = list(self.derive_exclude)
        return {"method": self.method, **d}

    def replace(self, **changes: Any) -> "SearchConfig":
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)


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


@dataclasses.dataclass(frozen=True)
class RnasConfig(SearchConfig):
    """RNAS (``rnas.txt`` Alg. 1-2, Sec. 4.1); defaults are the paper's search settings.

    Attributes:
        variant: ``"max"`` (RNAS-max, PGD on f) or ``"uniform"`` (RNAS-uniform).
        search_epochs: T, all epochs including warm-up (50).
        warmup_epochs: W, first epochs that update only the weights (15).
        lam: lambda, weight of the regularizer (1.0).
        f: the divergence of :data:`DIVERGENCES` (``"kl"``).
        eps: radius of the perturbation set S (0.031).
        step, steps: PGD step and K for RNAS-max (0.003, 10); also the
            settings of the per-epoch adversarial evaluation.
        random_start: RNAS-max starts from a uniform point of S.
        keep_best: RNAS-max returns the iterate with the largest f per image.
    """

    variant: str = "max"
    search_epochs: int = 50
    warmup_epochs: int = 15
    lam: float = 1.0
    f: str = "kl"
    eps: float = 0.031
    step: float = 0.003
    steps: int = 10
    random_start: bool = True
    keep_best: bool = True
    w_min_lr: float = 0.001
    arch_first: bool = True

    method = "rnas"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("RnasConfig.variant", self.variant, ("max", "uniform"))
        self._int("search_epochs", 1)
        self._int("warmup_epochs", 0)
        if self.warmup_epochs > self.search_epochs:
            raise ConfigError(f"RnasConfig.warmup_epochs ({self.warmup_epochs}) must not exceed search_epochs "
                              f"({self.search_epochs}).")
        self._real("lam", 0.0)
        check_choice("RnasConfig.f", self.f, tuple(DIVERGENCES))
        self._real("eps", 0.0, 1.0)
        self._real("step", 0.0, 1.0, low_open=True)
        self._int("steps", 1)
        for name in ("random_start", "keep_best"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"RnasConfig.{name} must be true or false, but got {getattr(self, name)!r}.")

    @property
    def epochs(self) -> int:
        return self.search_epochs


METHODS: dict[str, type[SearchConfig]] = {"dsara": DsaraConfig, "rnas": RnasConfig}
"""Method name -> its config class."""


def search_config(method: str | Mapping[str, Any], args: Mapping[str, Any] | None = None) -> SearchConfig:
    """Build a method's config from a name and a dict of its settings (YAML ``method_args``).

    ``search_config({"method": "rnas", "variant": "uniform"})`` works as well.

    Raises:
        ConfigError: unknown method or setting (the message names it and the valid ones).
    """
    if isinstance(method, Mapping):
        if args is not None:
            raise ConfigError("search_config: give the settings inside the dict or as args, not both.")
        args = {k: v for k, v in method.items() if k != "method"}
        method = method.get("method")
    check_choice("method", method, tuple(METHODS))
    return from_dict(METHODS[method], dict(args or {}), f"the settings of method {method!r}")


# --------------------------------------------------------------------------- methods

Stats = dict[str, torch.Tensor]


class SearchMethod:
    """What one differentiable method does in the alternating loop of :class:`DifferentiableSearch`.

    The engine calls, for every pair of (training, validation) batches,
    :meth:`arch_gradients` (when :meth:`updates_arch` is true for the epoch)
    and :meth:`weight_loss`; it owns the optimizers, the schedules, the
    checkpoints and the logging. Contract for subclasses:

    * The model is in train mode; methods must not change modes.
    * :meth:`weight_loss` returns a differentiable loss; the engine takes its
      gradient w.r.t. the weights only.
    * :meth:`arch_gradients` returns one gradient per architecture parameter
      (computed with ``torch.autograd.grad`` w.r.t. ``alphas`` only, so no
      weight gradient is ever computed for the architecture step).
    * Statistics are 0-d detached tensors (no ``.item()``: the engine averages
      them over the epoch with one host-device sync).
    """

    def __init__(self, config: SearchConfig) -> None:
        self.config = config

    def stage(self, epoch: int) -> int:
        """Stage of 0-based ``epoch`` (1 for single-stage methods)."""
        return 1

    def updates_arch(self, epoch: int) -> bool:
        """Whether alpha is updated in 0-based ``epoch``."""
        return True

    def arch_lr(self, epoch: int) -> float:
        """Adam learning rate of alpha in 0-based ``epoch``."""
        return self.config.alpha_lr

    def eval_attack(self) -> Attack | None:
        """The attack of the per-epoch adversarial validation accuracy."""
        raise NotImplementedError

    def weight_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Lower-level loss on a training batch, and statistics."""
        raise NotImplementedError

    def arch_gradients(self, model: nn.Module, alphas: Sequence[torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], Stats]:
        """Gradients of the upper-level objective w.r.t. ``alphas`` on a validation batch."""
        raise NotImplementedError

    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with autocast_context(x.device, self.config.autocast):
            return model(x).float()


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(dim=1) == y).float().mean()


def _grad(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


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


class RnasMethod(SearchMethod):
    """RNAS-max / RNAS-uniform (``rnas.txt`` Alg. 1 / Alg. 2): regularised natural loss on both levels."""

    config: RnasConfig

    def __init__(self, config: RnasConfig) -> None:
        super().__init__(config)
        self.f = divergence(config.f)
        self._eval_attack = build_attack("pgd", eps=config.eps, step=config.step, steps=config.steps,
                                         random_start=True, autocast=config.autocast)

    def updates_arch(self, epoch: int) -> bool:
        """Sec. 4.1: the first W epochs warm up the network (alpha frozen)."""
        return epoch >= self.config.warmup_epochs

    def stage(self, epoch: int) -> int:
        return 1 if epoch < self.config.warmup_epochs else 2

    def eval_attack(self) -> Attack | None:
        return self._eval_attack

    def perturb(self, model: nn.Module, x: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
        """x' of the regularizer: PGD on f (max) or a uniform sample of S (uniform)."""
        cfg = self.config
        if cfg.variant == "uniform":
            return uniform_perturbation(x, cfg.eps)
        return maximize_divergence(model, x, logits_nat, eps=cfg.eps, step=cfg.step, steps=cfg.steps, f=self.f,
                                   random_start=cfg.random_start, keep_best=cfg.keep_best,
                                   autocast=cfg.autocast)

    def objective(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``CE(m(x), y) + lambda * f(m(x'), m(x))`` (eq. 4-5): (total, CE, f, natural logits)."""
        logits_nat = self._forward(model, x)
        x_p = self.perturb(model, x, logits_nat)
        logits_p = self._forward(model, x_p)
        ce = F.cross_entropy(logits_nat, y)
        reg = self.f(logits_p, logits_nat).mean()
        return ce + self.config.lam * reg, ce, reg, logits_nat

    def weight_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Alg. 1/2 line 4: the regularised training loss."""
        loss, ce, reg, logits = self.objective(model, x, y)
        return loss, {"train_loss": loss.detach(), "train_loss_nat": ce.detach(), "train_reg": reg.detach(),
                      "train_acc": _acc(logits, y)}

    def arch_gradients(self, model: nn.Module, alphas: Sequence[torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], Stats]:
        """Alg. 1/2 line 2: the regularised validation loss."""
        loss, ce, reg, logits = self.objective(model, x, y)
        return _grad(loss, alphas), {"arch_loss": loss.detach(), "arch_loss_nat": ce.detach(),
                                     "reg": reg.detach(), "arch_acc_nat": _acc(logits, y)}


def build_method(config: SearchConfig) -> SearchMethod:
    """The :class:`SearchMethod` of a config."""
    if isinstance(config, DsaraConfig):
        return DsaraMethod(config)
    if isinstance(config, RnasConfig):
        return RnasMethod(config)
    raise ConfigError(f"No search method for config {type(config).__name__}; valid: {sorted(METHODS)}.")


# --------------------------------------------------------------------------- engine

def _check_supernet(model: nn.Module) -> None:
    missing = [name for name in ("arch_parameters", "weight_parameters", "arch_weights", "derive", "cell_types")
               if not hasattr(model, name)]
    if missing:
        raise ConfigError(f"{type(model).__name__} is not a differentiable supernet: it lacks {missing} "
                          "(see nni_robust.spaces.darts.DartsSupernet).")


class DifferentiableSearch:
    """First-order alternating bilevel search (DARTS) running a :class:`SearchMethod`.

    Args:
        model: The supernet (``nni_robust.spaces.darts.DartsSupernet``:
            ``arch_parameters()``, ``weight_parameters()``, ``arch_weights()``,
            ``derive()``, ``cell_types``), inputs in ``[0, 1]``.
        config: A :class:`DsaraConfig` or :class:`RnasConfig` (or a dict for
            :func:`search_config`).
        device: Where to search.
        checkpoint_path: Written after every epoch; when it exists at
            construction the search continues from it exactly.
        writer: TensorBoard ``SummaryWriter``: per-epoch scalars ``search/*``
            and the architecture weights of every cell type as an image
            ``arch/<cell type>`` (rows: edges, columns: operations, scaled so
            that the largest weight is white).
        reporter: ``reporter(metrics)`` after every epoch (NNI's
            ``report_intermediate_result``); ``metrics`` holds floats with
            ``default`` (the robust reward of the validation accuracies).
        log_every: Steps between progress log lines (0: none); each costs a sync.

    Attributes:
        method: The :class:`SearchMethod`.
        epoch: Finished epochs.
        history: One metrics dict per finished epoch.
        architectures: The architecture derived after each finished epoch (JSON),
            so that one from before a degradation can be picked (DSARA Sec. 4.3:
            "we will choose the neural architectures before the performance
            degradation").
    """

    def __init__(self, model: nn.Module, config: SearchConfig | Mapping[str, Any], *,
                 device: str | torch.device = "auto", checkpoint_path: str | Path | None = None,
                 writer: Any = None, reporter: Callable[[dict[str, float]], Any] | None = None,
                 log_every: int = 0) -> None:
        if isinstance(config, Mapping):
            config = search_config(config)
        if not isinstance(config, SearchConfig):
            raise ConfigError(f"config must be a DsaraConfig, RnasConfig or a dict, but got {type(config).__name__}.")
        _check_supernet(model)
        if not _is_int(log_every) or log_every < 0:
            raise ConfigError(f"log_every must be an integer >= 0, but got {log_every!r}.")
        if reporter is not None and not callable(reporter):
            raise ConfigError(f"reporter must be callable or None, but got {reporter!r}.")
        self._seed_drawn = config.seed is None
        if config.seed is None:
            config = config.replace(seed=random.SystemRandom().randrange(2 ** 31))
            logger.info("DifferentiableSearch: drew seed %d", config.seed)
        self.config = config
        self.method = build_method(config)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.alphas = list(self.model.arch_parameters())
        self.weights = [p for p in self.model.weight_parameters() if p.requires_grad]
        if not self.alphas or not self.weights:
            raise ConfigError(f"{type(model).__name__} has no architecture parameters or no weights.")
        alpha_ids = {id(a) for a in self.alphas}
        if any(id(p) in alpha_ids for p in self.weights):
            raise ConfigError("weight_parameters() and arch_parameters() of the supernet overlap.")
        # The weights' schedule is the core's cosine schedule (nni_robust.training.lr_at_epoch).
        self._w_schedule = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.w_lr,
                                       min_lr=config.w_min_lr, schedule="cosine", attack="none")
        self.w_optimizer = torch.optim.SGD(self.weights, lr=config.w_lr, momentum=config.w_momentum,
                                           weight_decay=config.w_weight_decay)
        self.a_optimizer = torch.optim.Adam(self.alphas, lr=config.alpha_lr, betas=config.alpha_betas,
                                            weight_decay=config.alpha_weight_decay)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.writer = writer
        self.reporter = reporter
        self.log_every = int(log_every)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.architectures: list[str] = []
        self._resume: dict[str, Any] | None = None
        self._started = False
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._load(self.checkpoint_path)

    # ------------------------------------------------------------------ checkpoints
    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        saved = dict(ckpt.get("config") or {})
        if self._seed_drawn and _is_int(saved.get("seed")):
            self.config = self.config.replace(seed=int(saved["seed"]))
            self.method = build_method(self.config)
        check_run_checkpoint(path, ckpt, fmt=_CHECKPOINT_FORMAT, writer="DifferentiableSearch",
                             current=self.config.to_dict(), what="search")
        try:
            self.model.load_state_dict(ckpt["model"])
            with torch.no_grad():
                for a, saved_a in zip(self.alphas, ckpt["alphas"], strict=True):
                    a.copy_(saved_a)
            self.w_optimizer.load_state_dict(ckpt["w_optimizer"])
            self.a_optimizer.load_state_dict(ckpt["a_optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"Checkpoint {path.resolve()} does not fit this supernet: {exc}") from exc
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.history = list(ckpt["history"])
        self.architectures = list(ckpt.get("architectures") or [])
        self._resume = {"rng": ckpt["rng"], "loaders": ckpt.get("loaders") or {}}
        logger.info("Resuming the %s search from %s after epoch %d/%d", self.config.method, path, self.epoch,
                    self.config.epochs)

    def _save(self, loaders: Mapping[str, Any]) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(
            self.checkpoint_path, format=_CHECKPOINT_FORMAT, config=self.config.to_dict(),
            model=self.model.state_dict(), alphas=[a.detach().cpu().clone() for a in self.alphas],
            w_optimizer=self.w_optimizer.state_dict(), a_optimizer=self.a_optimizer.state_dict(),
            epoch=self.epoch, global_step=self.global_step, history=self.history,
            architectures=self.architectures, rng=capture_rng_state(),
            loaders={k: l.state_dict() for k, l in loaders.items() if hasattr(l, "state_dict")})

    # ------------------------------------------------------------------ search
    @property
    def finished(self) -> bool:
        """Whether every epoch is done."""
        return self.epoch >= self.config.epochs

    def fit(self, train_loader: Iterable, val_loader: Iterable, eval_loader: Iterable | None = None,
            max_epochs: int | None = None) -> list[dict[str, float]]:
        """Search until every epoch is done (or ``max_epochs`` more have run).

        Args:
            train_loader: Batches of the training split (weights), one pass per epoch.
            val_loader: Batches of the validation split (architecture); restarted
                every epoch and cycled when shorter than ``train_loader``.
            eval_loader: Validation images for the per-epoch clean / adversarial
                accuracy (``None``: not measured).
            max_epochs: Stop after this many epochs of this call (resumable).

        Returns:
            The history (see :attr:`history`); keys include ``epoch``, ``stage``,
            ``w_lr``, ``alpha_lr``, ``arch_entropy`` (and per cell type), the
            epoch means of the weight steps (``train_*``) and of the
            architecture steps (``arch_*`` on the validation batches;
            ``gamma`` for DSARA's stage 2, ``reg`` for RNAS),
            ``val_clean_acc``/``val_adv_acc``/``default`` with an
            ``eval_loader``, ``time_s`` (search only) and ``eval_time_s``.

        Raises:
            NniRobustError: a loss became non-finite (the last checkpoint is kept).
        """
        from nni_robust.evaluation import evaluate

        cfg = self.config
        loaders = {"train": train_loader, "val": val_loader}
        if self._resume is not None:
            restore_rng_state(self._resume["rng"])
            for key, state in self._resume["loaders"].items():
                if key in loaders and hasattr(loaders[key], "load_state_dict"):
                    loaders[key].load_state_dict(state)
            self._resume = None
        elif not self._started and self.epoch == 0:
            random.seed(cfg.seed)
            np.random.seed(cfg.seed % 2 ** 32)
            torch.manual_seed(cfg.seed)
        self._started = True
        done = 0
        while self.epoch < cfg.epochs and (max_epochs is None or done < max_epochs):
            metrics = self._search_epoch(train_loader, val_loader)
            if eval_loader is not None:
                t0 = time.perf_counter()
                attack = self.method.eval_attack()
                acc = evaluate(self.model, eval_loader, {"clean": None, "adv": attack}, device=self.device,
                               autocast=cfg.autocast)
                metrics.update(val_clean_acc=float(acc["clean"]), val_adv_acc=float(acc["adv"]),
                               default=float(robust_reward(acc["clean"], acc["adv"], 0.5)),
                               eval_time_s=time.perf_counter() - t0)
            self.epoch += 1
            done += 1
            metrics = {"epoch": self.epoch, **metrics}
            self.history.append(metrics)
            self.architectures.append(self.derive().to_json())
            self._save(loaders)
            self._log_epoch(metrics)
            if self.reporter is not None:
                report = dict(metrics)
                report.setdefault("default", float(metrics.get("arch_acc_adv", metrics.get("arch_acc_nat", 0.0))))
                self.reporter(report)
        if self.writer is not None:
            self.writer.flush()
        return list(self.history)

    def _batches(self, loader: Iterable) -> Iterator:
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ConfigError("val_loader yielded no batches.")

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if not x.is_floating_point():
            x = x.float().div_(255.0)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _search_epoch(self, train_loader: Iterable, val_loader: Iterable) -> dict[str, float]:
        cfg, method, model = self.config, self.method, self.model
        epoch = self.epoch
        w_lr = lr_at_epoch(self._w_schedule, epoch)
        a_lr = method.arch_lr(epoch)
        for group in self.w_optimizer.param_groups:
            group["lr"] = w_lr
        for group in self.a_optimizer.param_groups:
            group["lr"] = a_lr
        update_arch = method.updates_arch(epoch)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        seen = 0
        val_batches = self._batches(val_loader) if update_arch else None
        model.train()
        start = time.perf_counter()

        def add(stats: Stats) -> None:
            for k, v in stats.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float()
                counts[k] = counts.get(k, 0) + 1

        for i, (x, y) in enumerate(train_loader):
            x, y = self._prepare(x, y)
            if update_arch and cfg.arch_first:
                add(self._arch_step(*self._prepare(*next(val_batches)), epoch))
            add(self._weight_step(x, y))
            if update_arch and not cfg.arch_first:
                add(self._arch_step(*self._prepare(*next(val_batches)), epoch))
            seen += y.shape[0]
            self.global_step += 1
            if self.log_every and self.global_step % self.log_every == 0:
                loss = float(sums["train_loss"] / counts["train_loss"])
                logger.info("epoch %d step %d: train loss %.4f", epoch + 1, i + 1, loss)
        if seen == 0:
            raise ConfigError("train_loader yielded no batches.")
        keys = sorted(sums)
        values = torch.stack([sums[k] / counts[k] for k in keys]).tolist() if keys else []  # the one sync
        elapsed = time.perf_counter() - start  # after the sync: queued GPU work included
        metrics: dict[str, float] = dict(zip(keys, values))
        if not all(math.isfinite(v) for v in values):
            raise NniRobustError(f"The {cfg.method} search diverged in epoch {epoch + 1}: {metrics} "
                                 f"(w_lr={w_lr}, alpha_lr={a_lr}); the last checkpoint (epoch {epoch}) is kept.")
        weights = model.arch_weights()
        metrics.update(stage=float(method.stage(epoch)), arch_updated=float(update_arch), w_lr=float(w_lr),
                       alpha_lr=float(a_lr), arch_entropy=float(arch_entropy(weights)), time_s=elapsed,
                       images_per_s=seen / max(elapsed, 1e-9))
        for ct, w in weights.items():
            metrics[f"arch_entropy_{ct}"] = float(arch_entropy({ct: w}))
        return metrics

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> Stats:
        loss, stats = self.method.weight_loss(self.model, x, y)
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
        for p, g in zip(self.weights, grads):
            p.grad = g
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.weights, self.config.grad_clip)
        self.w_optimizer.step()
        return stats

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Stats:
        grads, stats = self.method.arch_gradients(self.model, self.alphas, x, y, epoch)
        for a, g in zip(self.alphas, grads, strict=True):
            a.grad = g.detach()
        self.a_optimizer.step()
        return stats

    def _log_epoch(self, metrics: Mapping[str, float]) -> None:
        logger.info("search epoch %d/%d: %s", self.epoch, self.config.epochs,
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"))
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(f"search/{key}", value, self.epoch)
        for ct, w in self.model.arch_weights().items():
            img = w.detach().float().cpu()
            img = img / img.max().clamp_min(1e-12)
            img = img.repeat_interleave(8, dim=0).repeat_interleave(8, dim=1)
            self.writer.add_image(f"arch/{ct}", img, self.epoch, dataformats="HW")

    # ------------------------------------------------------------------ result
    def derive(self) -> Any:
        """The discrete architecture (argmax per edge; ``derive_inputs_per_node`` strongest inputs per node)."""
        return self.model.derive(exclude=tuple(self.config.derive_exclude),
                                 inputs_per_node=self.config.derive_inputs_per_node)
