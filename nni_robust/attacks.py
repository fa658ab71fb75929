"""White-box l-inf attacks: FGSM and PGD, batched and parameter-gradient free.

Inputs are float tensors in ``[0, 1]`` (NCHW); normalization lives inside the
model. Every attack:

* takes the gradient of the cross-entropy loss with respect to the *input
  only* (``torch.autograd.grad``), so the autograd engine skips the weight
  gradients entirely and parameters' ``.grad`` are never touched;
* runs the model in whatever train/eval mode it is in (evaluation code puts
  it in eval mode; adversarial training may generate examples in train mode,
  in which case BatchNorm running statistics are updated by the attack's
  forward passes, as in the papers' code) and restores every submodule's
  mode in ``finally``, also when the model raises;
* returns a detached tensor of the input's dtype, inside the eps-ball around
  the input and inside ``[0, 1]``.

References: FGSM (Goodfellow et al., 2015); FGSM with random start (Wong et
al., "Fast is better than free", 2020), used by DSARA for search-time
adversarial training; PGD with random start (Madry et al., 2018), used by
RobNet/MSRobNet (PGD-7, eps 8/255, step 2/255) for training and evaluation.
The MSRobNet search reward uses FGSM with step = eps = 8/255 and no random
start (authors' code).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast_context
from .errors import ConfigError, NniRobustError

__all__ = ["Attack", "FGSM", "PGD", "build_attack", "ATTACKS"]

logger = logging.getLogger(__name__)


def _check_real(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, but got {value!r}.")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be > 0, but got {value!r}.")
    if not positive and value < 0:
        raise ConfigError(f"{name} must be >= 0, but got {value!r}.")
    return float(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, but got {value!r}.")
    return value


class Attack:
    """Base class of the l-inf attacks.

    Contract for subclasses: implement :meth:`_perturb`, which receives a
    detached float copy of the clean batch and must return an adversarial
    batch; it may call :meth:`_input_grad` for ``d loss / d x`` and
    :meth:`_project` to return to the eps-ball and ``[0, 1]``. It must not
    change the model's parameters, their ``.grad``, or call
    ``model.train()/eval()`` without relying on the base class to restore it.
    :meth:`__call__` handles validation, the mode restoration in ``finally``,
    gradient mode (attacks work inside ``torch.no_grad()`` blocks), the final
    projection and the dtype of the result.

    Args:
        eps: Radius of the l-inf ball (in ``[0, 1]`` pixel units, e.g. 8/255).
        autocast: Run the attack's forward passes in bfloat16 autocast (the
            loss and the input gradient stay float32; only its sign is used).
    """

    def __init__(self, eps: float, *, autocast: bool = False) -> None:
        self.eps = _check_real("eps", eps, positive=False)
        if self.eps > 1.0:
            raise ConfigError(f"eps must be at most 1 (inputs lie in [0, 1]; 8/255 = {8 / 255:.4f} is the usual "
                              f"l-inf budget), but got {eps!r}.")
        self.autocast = _check_bool("autocast", autocast)
        self._checked = False
        self._keep_logits = False
        self._last_logits: torch.Tensor | None = None

    # -- public -----------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial examples for ``(x, y)``.

        Args:
            model: Classifier returning logits ``(N, classes)`` for inputs in ``[0, 1]``.
            x: Clean inputs, float, values in ``[0, 1]``, shape ``(N, ...)``.
            y: Integer labels, shape ``(N,)``.

        Returns:
            Detached adversarial inputs, same shape and dtype as ``x``, with
            ``|x_adv - x| <= eps`` elementwise and ``0 <= x_adv <= 1``.
        """
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ConfigError(f"attack inputs must be a float tensor in [0, 1], but got "
                              f"{type(x).__name__} of dtype {getattr(x, 'dtype', None)}.")
        if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ConfigError(f"labels must be a 1-D tensor with one entry per input "
                              f"({x.shape[0]}), but got shape {tuple(getattr(y, 'shape', ()))}.")
        if torch.is_inference_mode_enabled():
            raise NniRobustError(f"{type(self).__name__} needs input gradients and cannot run "
                                 f"inside torch.inference_mode(); use torch.no_grad() or nothing.")
        x0 = x.detach()
        if x0.is_inference():  # made under inference_mode: a normal copy can take gradients
            x0 = x0.clone()
        if self.eps == 0.0 or x0.shape[0] == 0:
            return x0.clone()
        modes = {m: m.training for m in model.modules()}
        try:
            with torch.enable_grad():
                x_adv = self._perturb(model, x0, y)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return self._project(x_adv.detach(), x0).to(x.dtype)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

    # -- helpers for subclasses ---------------------------------------------------
    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _input_grad(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of the summed cross-entropy w.r.t. ``x`` only (parameters untouched)."""
        x = x.detach().requires_grad_(True)
        with autocast_context(x.device, self.autocast):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        if not self._checked:
            self._checked = True
            self._sanity_check(logits.detach(), grad)
        if self._keep_logits:
            self._last_logits = logits.detach()
        return grad

    def _project(self, x_adv: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Clip ``x_adv`` to the eps-ball around ``x0`` and to ``[0, 1]``."""
        return (x0 + (x_adv - x0).clamp(-self.eps, self.eps)).clamp(0.0, 1.0)

    def _random_start(self, x0: torch.Tensor) -> torch.Tensor:
        """Uniform sample from the eps-ball around ``x0``, clipped to ``[0, 1]``."""
        noise = torch.empty_like(x0).uniform_(-self.eps, self.eps)
        return (x0 + noise).clamp(0.0, 1.0)

    def _sanity_check(self, logits: torch.Tensor, grad: torch.Tensor) -> None:
        """Once per attack object: warn about signs of unreliable evaluation (as AutoAttack).

        Costs one host-device sync on the first call only.
        """
        zero = (grad.flatten(1).abs().amax(dim=1) == 0).sum()
        probs_like = ((logits >= 0).all() & (logits <= 1).all()
                      & torch.allclose(logits.float().sum(1), torch.ones_like(logits[:, 0].float()),
                                       atol=1e-3)) if logits.dim() == 2 else torch.tensor(False)
        n_zero, is_probs = int(zero), bool(probs_like)
        if n_zero:
            warnings.warn(
                f"{type(self).__name__}: {n_zero} of {grad.shape[0]} inputs have an all-zero "
                f"input gradient; gradient-based attacks may be unreliable on this model "
                f"(gradient masking, or saturated softmax).", RuntimeWarning, stacklevel=4)
        if is_probs:
            warnings.warn(
                f"{type(self).__name__}: the model output looks like probabilities (rows in "
                f"[0, 1] summing to 1); attacks expect logits.", RuntimeWarning, stacklevel=4)


class FGSM(Attack):
    """Fast gradient sign method, optionally from a random start (l-inf).

    Without random start (Goodfellow et al.): ``x' = clip(x + step * sign(g(x)))``;
    with ``step = eps`` this is the search-time attack of MSRobNet (Sec. 5.1,
    authors' code). With random start (Wong et al. 2020, used by DSARA):
    ``x_r ~ U(ball(x, eps)) ∩ [0, 1]``, ``x' = clip(x_r + step * sign(g(x_r)))``;
    Wong et al. recommend ``step = 1.25 * eps`` there.

    Args:
        eps: l-inf radius (>= 0).
        step: Step size (> 0); default ``eps``.
        random_start: Start from a uniform point of the eps-ball.
        autocast: bf16 autocast for the forward pass.
    """

    def __init__(self, eps: float, *, step: float | None = None, random_start: bool = False,
                 autocast: bool = False) -> None:
        super().__init__(eps, autocast=autocast)
        if step is None:
            step = self.eps
            if self.eps == 0.0:
                step = 1.0  # irrelevant: eps = 0 returns the input unchanged
        self.step = _check_real("step", step, positive=True)
        self.random_start = _check_bool("random_start", random_start)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        start = self._random_start(x) if self.random_start else x
        grad = self._input_grad(model, start, y)
        return start + self.step * grad.sign()

    def with_clean_logits(self, model: nn.Module, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial examples and the model's logits on the clean ``x``.

        Without random start FGSM's one forward pass *is* the clean forward, so
        an evaluation that wants clean and FGSM accuracy needs two forwards and
        one backward instead of three forwards and one backward.

        Raises:
            ConfigError: with ``random_start`` (the forward is not on clean inputs).
        """
        if self.random_start:
            raise ConfigError("with_clean_logits needs FGSM without random start (its forward is then "
                              "on the clean inputs), but random_start=True.")
        self._keep_logits = True
        try:
            x_adv = self(model, x, y)
            logits = self._last_logits
        finally:
            self._keep_logits = False
            self._last_logits = None
        if logits is None:  # eps == 0 or an empty batch: no forward was needed for the attack
            with torch.no_grad(), autocast_context(x.device, self.autocast):
                logits = model(x)
        return x_adv, logits


class PGD(Attack):
    """Projected gradient descent on the l-inf ball (Madry et al., 2018).

    ``x_{t+1} = clip_{ball(x, eps) ∩ [0,1]}(x_t + step * sign(g(x_t)))`` for
    ``steps`` iterations, from a uniform random point of the ball (clipped to
    ``[0, 1]``) when ``random_start``. RobNet / MSRobNet use PGD-7 with
    eps 8/255 and step 2/255 for training, PGD-20 (step 2/255) for testing.

    Args:
        eps: l-inf radius (>= 0).
        step: Step size (> 0).
        steps: Number of iterations (int >= 1).
        random_start: Start from a uniform point of the eps-ball.
        autocast: bf16 autocast for the forward passes.
    """

    def __init__(self, eps: float, *, step: float, steps: int, random_start: bool = True,
                 autocast: bool = False) -> None:
        super().__init__(eps, autocast=autocast)
        self.step = _check_real("step", step, positive=True)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, but got {steps!r}.")
        self.steps = steps
        self.random_start = _check_bool("random_start", random_start)

    def _perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self._random_start(x) if self.random_start else x
        for _ in range(self.steps):
            grad = self._input_grad(model, x_adv, y)
            x_adv = self._project(x_adv + self.step * grad.sign(), x)
        return x_adv


ATTACKS: dict[str, type[Attack] | None] = {"fgsm": FGSM, "pgd": PGD, "none": None}


def build_attack(name: str | None, *, where: str | None = None, **kwargs: Any) -> Attack | None:
    """Create an attack by name.

    Args:
        name: ``"fgsm"``, ``"pgd"`` or ``"none"`` (case-insensitive; ``None``
            is the same as ``"none"``).
        where: The settings key the attack comes from (e.g. ``settings.final.attacks.pgd20``):
            errors then name it (``settings.final.attacks.pgd20.steps must ...``).
        **kwargs: Keyword arguments of the attack class. Keys whose value is
            ``None`` are dropped (so class defaults apply). For ``"none"`` all
            keywords are ignored; for ``"fgsm"`` a ``steps`` keyword is
            ignored (FGSM is one step), so one settings object such as
            ``TrainConfig`` can describe either attack.

    Returns:
        The attack, or ``None`` for ``"none"``.

    Raises:
        ConfigError: unknown name, unknown keyword or invalid value.
    """
    prefix = f"{where}." if where else ""
    key = "none" if name is None else str(name).strip().lower()
    if key not in ATTACKS:
        raise ConfigError(f"Unknown attack {prefix}name {name!r}. Valid attacks: {', '.join(ATTACKS)}.")
    cls = ATTACKS[key]
    if cls is None:
        return None
    kw = {k: v for k, v in kwargs.items() if v is not None}
    if cls is FGSM and "steps" in kw:
        steps = kw.pop("steps")
        if steps != 1:
            logger.debug("build_attack: FGSM is a single step; ignoring steps=%r.", steps)
    import inspect

    from .config import check_keys

    params = inspect.signature(cls.__init__).parameters
    check_keys(kw, [p for p in params if p != "self"], where or f"the settings of attack {key!r}")
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ConfigError(f"Invalid settings for attack {where or key!r}: {exc}") from exc
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{prefix}{exc}") from exc
