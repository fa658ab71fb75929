"""Robust accuracy at several attack strengths, in one pass over the data.

Wsr-NAS (Cheng et al., "Neural Architecture Search for Wide Spectrum
Adversarial Robustness", AAAI 2023), Sec. "Main Results": a model's overall
robustness is its accuracy under l-inf PGD at the strengths
``eps in (0.03, 0.10, 0.17, 0.25)`` and their mean (Tables 1-2), with the PGD
step ``eps * 2.5 / steps`` (Sec. "Search Procedure", after Madry et al.);
the evaluation uses PGD-20, the search PGD-7 (authors' code).

:func:`strength_curve` runs every strength on each batch before moving to the
next, so the data is read once (the attacks themselves cannot share passes:
each strength has its own step size). Each strength draws its random start
from its own stream seeded with ``seed`` (see :mod:`._engine`), so the curve
equals separate :func:`nni_robust.evaluation.evaluate` calls, one per eps,
each after ``torch.manual_seed(seed)``. It also returns the mean
cross-entropy per strength: the measured losses Wsr-NAS's validation-loss
estimator is trained on.

The curve is measured, not made monotone: a robust accuracy that *rises* with
eps is a symptom of gradient masking, which
:func:`~nni_robust.robustness.check_strength_curve` reports. Taking the
sample-wise worst case over strengths would hide it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import torch
from torch import nn

from ..attacks import PGD
from ..errors import ConfigError
from ._engine import (DEFAULT_BATCH_SIZE, Data, Evaluation, check_eps_list, evaluate_attacks,
                      resolve_seed)

__all__ = ["WSR_STRENGTHS", "WSR_STEP_FACTOR", "pgd_at_strength", "strength_key", "strength_attacks",
           "StrengthCurve", "strength_curve", "curve_from_evaluation", "add_autoattack_curve"]

#: Wsr-NAS evaluation strengths (Tables 1-2).
WSR_STRENGTHS: tuple[float, ...] = (0.03, 0.10, 0.17, 0.25)
#: PGD step = eps * WSR_STEP_FACTOR / steps (Wsr-NAS, after Madry et al.).
WSR_STEP_FACTOR = 2.5


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, but got {steps!r}.")
    return steps


def pgd_at_strength(eps: float, *, steps: int = 20, step_factor: float = WSR_STEP_FACTOR,
                    random_start: bool = True, autocast: bool = False) -> PGD:
    """The Wsr-NAS PGD at strength ``eps``: ``steps`` steps of ``eps * step_factor / steps``.

    Args:
        eps: l-inf radius.
        steps: PGD iterations (Wsr-NAS evaluation: 20; search: 7).
        step_factor: Total step budget in units of eps (2.5).
        random_start: Uniform start in the eps-ball (Madry et al.).
        autocast: bf16 autocast for the attack's forward passes.
    """
    _check_steps(steps)
    if isinstance(step_factor, bool) or not isinstance(step_factor, (int, float)) \
            or not math.isfinite(step_factor) or step_factor <= 0:
        raise ConfigError(f"step_factor must be a positive number, but got {step_factor!r}.")
    return PGD(eps, step=eps * step_factor / steps, steps=steps, random_start=random_start,
               autocast=autocast)


def strength_key(eps: float, steps: int) -> str:
    """Result key of the PGD at one strength, e.g. ``"pgd20@0.03"``."""
    return f"pgd{steps}@{eps:g}"


@dataclasses.dataclass(frozen=True)
class StrengthCurve:
    """Robust accuracy against attack strength.

    Attributes:
        eps: Strengths, as given.
        pgd: PGD robust accuracy per strength.
        pgd_loss: Mean cross-entropy under PGD per strength.
        clean: Clean accuracy (same images).
        clean_loss: Mean clean cross-entropy.
        num_images: Images of the PGD curve.
        settings: PGD settings (steps, step factor, random start, seed).
        autoattack: AutoAttack robust accuracy per strength, or ``None``.
        autoattack_images: Images of the AutoAttack curve (0 when none).
        seconds: Wall time of the PGD pass (and of the AutoAttack runs).
    """

    eps: tuple[float, ...]
    pgd: tuple[float, ...]
    pgd_loss: tuple[float, ...]
    clean: float
    clean_loss: float
    num_images: int
    settings: dict[str, Any]
    autoattack: tuple[float, ...] | None = None
    autoattack_images: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean PGD robust accuracy over the strengths (Wsr-NAS's overall robustness)."""
        return sum(self.pgd) / len(self.pgd)

    @property
    def autoattack_mean(self) -> float | None:
        """Mean AutoAttack robust accuracy over the strengths, if measured."""
        return None if self.autoattack is None else sum(self.autoattack) / len(self.autoattack)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with the means)."""
        d = dataclasses.asdict(self)
        for key in ("eps", "pgd", "pgd_loss", "autoattack"):
            d[key] = None if d[key] is None else list(d[key])
        d["pgd_mean"] = self.mean
        d["autoattack_mean"] = self.autoattack_mean
        return d


def strength_attacks(eps: Sequence[float] = WSR_STRENGTHS, *, steps: int = 20,
                     step_factor: float = WSR_STEP_FACTOR, random_start: bool = True,
                     autocast: bool = False) -> dict[str, PGD]:
    """``{strength_key(eps, steps): pgd_at_strength(eps, ...)}`` for each strength, in order.

    Raises:
        ConfigError: bad or repeated strengths.
    """
    eps_list = check_eps_list("eps", eps)
    attacks: dict[str, PGD] = {}
    for e in eps_list:
        key = strength_key(e, steps)
        if key in attacks:
            raise ConfigError(f"eps must not repeat a strength, but got {list(eps)!r}.")
        attacks[key] = pgd_at_strength(e, steps=steps, step_factor=step_factor,
                                       random_start=random_start, autocast=autocast)
    return attacks


def curve_from_evaluation(ev: Evaluation, eps: Sequence[float], *, steps: int, step_factor: float,
                          random_start: bool, clean_key: str = "clean") -> StrengthCurve:
    """The :class:`StrengthCurve` of a pass that ran :func:`strength_attacks` (and clean inputs)."""
    eps_list = check_eps_list("eps", eps)
    keys = [strength_key(e, steps) for e in eps_list]
    return StrengthCurve(
        eps=eps_list, pgd=tuple(ev.accuracy[k] for k in keys), pgd_loss=tuple(ev.loss[k] for k in keys),
        clean=ev.accuracy[clean_key], clean_loss=ev.loss[clean_key], num_images=ev.num_images,
        settings={"attack": "pgd", "steps": steps, "step_factor": float(step_factor),
                  "step": [e * step_factor / steps for e in eps_list], "random_start": random_start,
                  "seed": ev.seed, "norm": "Linf"},
        seconds={"pgd": ev.seconds})


def strength_curve(model: nn.Module, data: Data, eps: Sequence[float] = WSR_STRENGTHS, *,
                   steps: int = 20, step_factor: float = WSR_STEP_FACTOR, random_start: bool = True,
                   seed: int | None = 0, num_images: int | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None,
                   autocast: bool = False, autoattack: bool = False,
                   autoattack_images: int | None = None,
                   autoattack_kwargs: dict[str, Any] | None = None,
                   progress: bool | None = None) -> StrengthCurve:
    """Robust accuracy at each strength (Wsr-NAS multi-strength evaluation), one pass over the data.

    Args:
        model: Classifier taking inputs in ``[0, 1]``.
        data: ``(images, labels)`` tensors or an iterable of ``(x, y)`` batches.
        eps: Strengths (l-inf radii); default Wsr-NAS's ``(0.03, 0.10, 0.17, 0.25)``.
        steps: PGD iterations per strength (Wsr-NAS evaluation: 20; search: 7).
        step_factor: PGD step = ``eps * step_factor / steps`` (2.5).
        random_start: PGD random start.
        seed: Seed of every strength's random stream (``None``: drawn).
        num_images: First images to use (``None``: all).
        batch_size: Batch size when ``data`` is tensors.
        device: Where to evaluate (default: the model's device).
        autocast: bf16 autocast for forward passes.
        autoattack: Also run AutoAttack at every strength (one run per eps).
        autoattack_images: Images for AutoAttack (default: ``num_images``).
        autoattack_kwargs: Further :func:`run_autoattack` keywords
            (``attacks``, ``batch_size``, ``n_queries`` ...).
        progress: Progress bars (``None``: only on a terminal).

    Returns:
        A :class:`StrengthCurve` (clean and per-strength accuracy and loss, their mean).
    """
    attacks: dict[str, Any] = {"clean": None, **strength_attacks(
        eps, steps=steps, step_factor=step_factor, random_start=random_start, autocast=autocast)}
    eps_list = check_eps_list("eps", eps)
    seed = resolve_seed(seed, "strength_curve seed")
    ev = evaluate_attacks(model, data, attacks, seed=seed, num_images=num_images,
                          batch_size=batch_size, device=device, autocast=autocast,
                          progress=progress, desc=f"PGD-{steps} at {len(eps_list)} strengths")
    curve = curve_from_evaluation(ev, eps_list, steps=steps, step_factor=step_factor,
                                  random_start=random_start)
    if autoattack:
        curve = add_autoattack_curve(curve, model, data, num_images=autoattack_images or num_images,
                                     seed=seed, device=device, progress=progress,
                                     autoattack_kwargs=autoattack_kwargs)
    return curve


def add_autoattack_curve(curve: StrengthCurve, model: nn.Module, data: Data, *,
                         num_images: int | None, seed: int, device: torch.device | str | None = None,
                         progress: bool | None = None,
                         autoattack_kwargs: dict[str, Any] | None = None) -> StrengthCurve:
    """``curve`` with AutoAttack's robust accuracy at each of its strengths (one run per eps)."""
    from ._autoattack import run_autoattack

    kwargs = dict(autoattack_kwargs or {})
    for bad in ("eps", "num_images", "seed", "progress", "device"):
        if bad in kwargs:
            raise ConfigError(f"autoattack_kwargs must not set {bad!r} (it is set per strength).")
    results = [run_autoattack(model, data, eps=e, num_images=num_images, seed=seed, device=device,
                              progress=progress, **kwargs) for e in curve.eps]
    seconds = dict(curve.seconds)
    for e, res in zip(curve.eps, results):
        seconds[f"autoattack@{e:g}"] = sum(res.seconds.values())
    return dataclasses.replace(curve, autoattack=tuple(r.robust for r in results),
                               autoattack_images=results[0].num_images, seconds=seconds)
