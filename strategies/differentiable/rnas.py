"""RNAS's search method on the bilevel loop (``rnas.txt`` Alg. 1-2, eq. 4-5, Sec. 4.1).

Both levels minimise ``CE(m(x), y) + lambda * f(m(x'), m(x))``. RNAS-max
(Alg. 1) finds x' by PGD maximising f inside the eps-ball
(:func:`maximize_divergence`); RNAS-uniform (Alg. 2) samples x' uniformly
from the ball (:func:`uniform_perturbation`). The paper does not name f
(``methods.md``): the KL divergence of the softmax outputs (as TRADES) is the
default, the others are :data:`DIVERGENCES`. The loop itself is :mod:`.bilevel`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import Attack, build_attack
from nni_robust.config import check_choice
from nni_robust.device import autocast_context
from nni_robust.errors import ConfigError

from .bilevel import SearchConfig, SearchMethod, Stats, _acc, _grad

__all__ = ["DIVERGENCES", "divergence", "uniform_perturbation", "maximize_divergence", "RnasConfig", "RnasMethod"]


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
