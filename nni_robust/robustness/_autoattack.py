"""AutoAttack (Croce & Hein, ICML 2020) through the authors' ``pyautoattack`` package.

The standard version (Sec. 5 of the paper; RobustBench's evaluation) runs four
attacks in a cascade, each on the points the previous ones did not break:
APGD-CE (untargeted, 100 iterations), APGD-T (targeted DLR loss, 9 target
classes, 100 iterations each), FAB-T (targeted, 9 targets) and Square
(5,000 queries, black-box). A point counts as robust when every attack fails.

How ``pyautoattack`` 0.2.0 differs from the GitHub version: the constructor
is keyword-only with ``attacks=`` (not ``attacks_to_run``) and ``device=``;
``attacks`` may only be given with ``version="custom"`` (whose per-attack
settings are *not* the standard ones); ``run_standard_evaluation(x, y, *,
batch_size)`` returns ``(x_adv, y_adv)`` where ``y_adv`` holds the model's
prediction on ``x_adv`` (the clean prediction for points it did not break); it
reports the per-attack robust accuracy only through its ``auto-attack``
logger (as text) and seeds torch's *global* generator in every attack call.

What this module does with it:

* **Standard settings for a subset**: the object is built with
  ``version="standard"`` (the standard per-attack settings) and its attack
  list is then narrowed to the requested subset, in the standard order.
* **Per-attack robust accuracy**: the cascade is driven attack by attack:
  ``run_standard_evaluation`` runs with a single attack on the points still
  robust, in their original order and with the same ``batch_size``, so every
  attack sees exactly the batches it sees inside one standard call, and the
  robust accuracy after each attack is read from the returned predictions
  (cumulative, as AutoAttack reports it). The tests check that the final
  figure equals one direct ``run_standard_evaluation`` on the same images.
* The caller's global RNG state is restored afterwards (``fork_rng``); the
  model's train/eval modes are restored; non-finite logits raise
  :class:`~nni_robust.robustness.NonFiniteOutputError`; the warnings that
  AutoAttack logs (randomized or dynamic defence, probabilities instead of
  logits, ...) are collected into the result; a progress bar counts the
  batches of each attack.

``seed`` defaults to 0 (``pyautoattack`` otherwise seeds with the time, so two
runs differ): AutoAttack's figure is then a deterministic function of the
model and the images.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError, NniRobustError
from ._engine import (FiniteGuard, collect_tensors, eval_mode, model_device, progress_bar,
                      resolve_seed, Data)

__all__ = ["STANDARD_ATTACKS", "AUTOATTACK_ATTACKS", "AutoAttackResult", "run_autoattack"]

logger = logging.getLogger(__name__)

#: The standard version's attacks, in the order they run (AutoAttack, Sec. 5; RobustBench).
STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
#: Every attack name ``pyautoattack`` accepts.
AUTOATTACK_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
#: Standard batch size of ``run_standard_evaluation``.
AUTOATTACK_BATCH_SIZE = 250

_AA_LOGGER = "auto-attack"


def _import_autoattack() -> Any:
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise NniRobustError("AutoAttack needs the 'pyautoattack' package (by the AutoAttack "
                             "authors): pip install pyautoattack") from exc
    return AutoAttack


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
    """AutoAttack's figures on one set of images.

    Attributes:
        clean: Clean accuracy.
        robust: Robust accuracy after every attack (AutoAttack's figure).
        per_attack: ``{attack: robust accuracy after it and all before it}``,
            in run order (cumulative, as AutoAttack reports it).
        num_images: Images attacked.
        eps: l-inf radius.
        attacks: The attacks, in run order.
        settings: What was run: version, norm, seed, batch size, and per
            attack its iterations / restarts / targets / queries.
        seconds: Wall time per attack.
        warnings: Warnings AutoAttack logged (its own checks), deduplicated.
        robust_mask: Bool tensor (CPU), per image: survived every attack.
    """

    clean: float
    robust: float
    per_attack: dict[str, float]
    num_images: int
    eps: float
    attacks: tuple[str, ...]
    settings: dict[str, Any]
    seconds: dict[str, float]
    warnings: tuple[str, ...] = ()
    robust_mask: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the mask)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "robust_mask"}
        d["attacks"] = list(self.attacks)
        d["warnings"] = list(self.warnings)
        return d


class _CollectWarnings(logging.Handler):
    """Collects the WARNING records of AutoAttack's logger (they still propagate as usual)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


def _check_attacks(attacks: Sequence[str] | None) -> tuple[str, ...]:
    if attacks is None:
        return STANDARD_ATTACKS
    if isinstance(attacks, str) or not isinstance(attacks, Sequence) or len(attacks) == 0:
        raise ConfigError(f"attacks must be None (the standard version) or a non-empty list of "
                          f"{list(AUTOATTACK_ATTACKS)}, but got {attacks!r}.")
    for a in attacks:
        if a not in AUTOATTACK_ATTACKS:
            raise ConfigError(f"attacks: unknown AutoAttack attack {a!r}; valid: {list(AUTOATTACK_ATTACKS)}.")
    if len(set(attacks)) != len(attacks):
        raise ConfigError(f"attacks must not repeat an attack, but got {list(attacks)!r}.")
    return tuple(attacks)


def _check_optional_int(name: str, value: Any, low: int) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ConfigError(f"{name} must be None (the standard setting) or an integer >= {low}, "
                          f"but got {value!r}.")
    return value


def _settings(aa: Any, attacks: tuple[str, ...], seed: int, batch_size: int) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for a in attacks:
        if a in ("apgd-ce", "apgd-dlr"):
            per[a] = {"n_iter": aa.apgd.n_iter, "n_restarts": aa.apgd.n_restarts}
        elif a == "apgd-t":
            per[a] = {"n_iter": aa.apgd_targeted.n_iter, "n_restarts": aa.apgd_targeted.n_restarts,
                      "n_target_classes": aa.apgd_targeted.n_target_classes}
        elif a == "fab":
            per[a] = {"n_iter": aa.fab.n_iter, "n_restarts": aa.fab.n_restarts}
        elif a == "fab-t":
            per[a] = {"n_iter": aa.fab.n_iter, "n_restarts": 1, "n_target_classes": aa.fab.n_target_classes}
        elif a == "square":
            per[a] = {"n_queries": aa.square.n_queries, "p_init": aa.square.p_init}
    version = "standard" if attacks == STANDARD_ATTACKS else "standard-subset"
    return {"package": "pyautoattack", "package_version": _package_version(), "version": version,
            "norm": "Linf", "seed": seed, "batch_size": batch_size, "attacks": per}


def _package_version() -> str:
    try:
        import pyautoattack
        return str(getattr(pyautoattack, "__version__", "unknown"))
    except ImportError:  # pragma: no cover
        return "missing"


class _CountBatches:
    """Wraps the ``perturb`` of AutoAttack's attack objects to advance a progress bar."""

    def __init__(self, aa: Any) -> None:
        self.bar: Any = None
        for obj in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square):
            original = obj.perturb

            def perturb(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                out = _original(*args, **kwargs)
                if self.bar is not None:
                    self.bar.update(1)
                return out

            obj.perturb = perturb


def run_autoattack(model: nn.Module, data: Data, *, eps: float = 8 / 255,
                   attacks: Sequence[str] | None = None, num_images: int | None = None,
                   batch_size: int = AUTOATTACK_BATCH_SIZE, seed: int | None = 0,
                   device: torch.device | str | None = None, n_queries: int | None = None,
                   n_target_classes: int | None = None, n_restarts: int | None = None,
                   progress: bool | None = None) -> AutoAttackResult:
    """AutoAttack (l-inf) on the first ``num_images`` images, with per-attack robust accuracy.

    Args:
        model: Classifier returning logits for inputs in ``[0, 1]`` (normalization inside).
        data: ``(images, labels)`` tensors or an iterable of ``(x, y)`` batches.
        eps: l-inf radius (RobustBench CIFAR: 8/255).
        attacks: ``None`` for the standard version, or a subset / reordering of
            :data:`AUTOATTACK_ATTACKS`, run with the standard version's settings.
        num_images: Attack only the first ``num_images`` images (``None``: all).
        batch_size: Images per attack call (AutoAttack's default 250).
        seed: Seed of every attack (``None``: drawn and logged).
        device: Where to run; default: where the model is.
        n_queries: Square's query budget (standard: 5,000); lower only for
            cheap checks, and say so: the figure is then not AutoAttack's.
        n_target_classes: Target classes of APGD-T and FAB-T (standard: 9;
            at most the number of classes - 1).
        n_restarts: Restarts of APGD-CE / APGD-DLR (standard: 1).
        progress: Progress bar per attack (``None``: only on a terminal).

    Returns:
        An :class:`AutoAttackResult`.

    Raises:
        ConfigError: bad arguments.
        NonFiniteOutputError: the model returned NaN/inf logits.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) \
            or not 0 < eps <= 1:
        raise ConfigError(f"eps must be a number in (0, 1], but got {eps!r}.")
    attacks = _check_attacks(attacks)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, but got {batch_size!r}.")
    _check_optional_int("n_queries", n_queries, 1)
    _check_optional_int("n_target_classes", n_target_classes, 1)
    _check_optional_int("n_restarts", n_restarts, 1)
    seed = resolve_seed(seed, "run_autoattack seed")
    AutoAttack = _import_autoattack()
    dev = model_device(model, device)
    x, y = collect_tensors(data, num_images, device=dev)
    n = x.shape[0]
    guard = FiniteGuard(model)
    aa_logger = logging.getLogger(_AA_LOGGER)
    collector = _CollectWarnings()
    # pyautoattack also seeds the current CUDA generator: save it when CUDA is in use
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    else:
        devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    seconds: dict[str, float] = {}
    per_attack: dict[str, float] = {}
    aa_logger.addHandler(collector)
    try:
        with eval_mode(model), torch.random.fork_rng(devices=devices):
            aa = AutoAttack(guard, norm="Linf", eps=float(eps), version="standard", device=dev, seed=seed)
            aa.attacks_to_run = list(attacks)
            if n_queries is not None:
                aa.square.n_queries = n_queries
            if n_target_classes is not None:
                aa.apgd_targeted.n_target_classes = n_target_classes
                aa.fab.n_target_classes = n_target_classes
            if n_restarts is not None:
                aa.apgd.n_restarts = n_restarts
            counter = _CountBatches(aa)
            clean = _clean_accuracy(guard, x, y, batch_size)
            guard.check("AutoAttack (clean inputs)")
            # The first attack gets every image: its clean pass is then the one of a
            # single standard call; later ones get the points still robust, in order.
            robust: torch.Tensor | None = None
            for name in attacks:
                idx = torch.arange(n, device=dev) if robust is None else robust.nonzero().flatten()
                t0 = time.perf_counter()
                if idx.numel() > 0:
                    aa.attacks_to_run = [name]
                    with progress_bar(math.ceil(idx.numel() / batch_size), f"AutoAttack {name}",
                                      progress) as bar:
                        counter.bar = bar
                        _, y_pred = aa.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
                        counter.bar = None
                    guard.check(f"AutoAttack {name}")
                    survived = y_pred.to(dev) == y[idx]
                    if robust is None:
                        robust = survived
                    else:
                        robust = robust.clone()
                        robust[idx] = survived
                seconds[name] = time.perf_counter() - t0
                per_attack[name] = float(robust.sum().item()) / n if robust is not None else 0.0
                logger.debug("AutoAttack %s: robust accuracy %.4f (%.1f s)", name, per_attack[name],
                             seconds[name])
            guard.check("AutoAttack")
            settings = _settings(aa, attacks, seed, batch_size)
    finally:
        aa_logger.removeHandler(collector)
    assert robust is not None
    return AutoAttackResult(clean=clean, robust=per_attack[attacks[-1]], per_attack=per_attack,
                            num_images=n, eps=float(eps), attacks=attacks, settings=settings,
                            seconds=seconds, warnings=tuple(collector.messages),
                            robust_mask=robust.cpu())


def _clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start:start + batch_size])
            correct += (logits.argmax(dim=1) == y[start:start + batch_size]).sum()
    return correct.item() / x.shape[0]
