"""The evaluation engine shared by every robustness measurement.

One pass over the data runs any number of attacks per batch (white-box,
multi-strength, transfer) and accumulates, per attack, the number of correct
predictions and the summed cross-entropy on device tensors. On top of
:func:`nni_robust.evaluation.evaluate` it adds what a published evaluation
needs:

* **non-finite outputs are an error** (:class:`NonFiniteOutputError`), not an
  accuracy: a NaN logit row has an arbitrary ``argmax``. Checked after the
  first batch (one host-device sync, so a broken model fails at once) and at
  the end;
* **one random stream per attack**: every attack draws its random start from
  its own copy of torch's global generator, seeded with ``seed`` and saved
  between batches (:class:`RngStreams`). An attack's result therefore does
  not depend on which other attacks share the pass, two attacks with the same
  random start (PGD-7 and PGD-20, or a transfer attack and its white-box
  twin) start from the same points, and a pass equals a separate
  :func:`~nni_robust.evaluation.evaluate` of one attack run right after
  ``torch.manual_seed(seed)``. The caller's generator state is restored;
* progress on long evaluations (:func:`progress_bar`, ``tqdm`` on stderr,
  off when stderr is not a terminal).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast_context, resolve_device
from ..errors import ConfigError, NniRobustError, NonFiniteError

__all__ = ["NonFiniteOutputError", "Evaluation", "evaluate_attacks", "RngStreams", "progress_bar",
           "as_loader", "collect_tensors", "resolve_seed", "model_device"]

logger = logging.getLogger(__name__)

#: Default evaluation batch size (images per forward pass).
DEFAULT_BATCH_SIZE = 256

Data = Any
"""Images to evaluate on: ``(images, labels)`` tensors (``uint8`` images are scaled
by 1/255, float ones are taken as ``[0, 1]``) or an iterable of ``(x, y)`` batches
such as :class:`nni_robust.data.TensorLoader`."""


#: The model returned NaN or infinite logits during an evaluation: the core's
#: :class:`nni_robust.errors.NonFiniteError` (one class for every evaluation; this name is kept).
NonFiniteOutputError = NonFiniteError


# --------------------------------------------------------------------------- small helpers


def resolve_seed(seed: int | None, where: str = "seed") -> int:
    """Validate ``seed``; ``None`` draws one (and logs it) so the run can be repeated."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        logger.info("%s: drew seed %d", where, seed)
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where} must be a non-negative int or None, but got {seed!r}.")
    return seed


def check_limit(name: str, value: Any) -> int | None:
    """``None`` or an int >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be None (all) or an integer >= 1, but got {value!r}.")
    return value


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` resolved, or where the model's first parameter/buffer lives (CPU if none)."""
    if device is not None:
        return resolve_device(device)
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put the models in eval mode; restore every submodule's mode afterwards, also on error."""
    modes = {m: m.training for model in models for m in model.modules()}
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _is_tensor_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def as_loader(data: Data, *, batch_size: int = DEFAULT_BATCH_SIZE,
              device: torch.device | str = "cpu") -> Iterable:
    """``data`` as an iterable of batches (tensors become an unshuffled :class:`TensorLoader`)."""
    from ..data import TensorLoader

    if _is_tensor_pair(data):
        check_limit("batch_size", batch_size)
        return TensorLoader(data[0], data[1], batch_size=batch_size, shuffle=False, augment=False,
                            seed=0, device=device)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ConfigError(f"data must be (images, labels) tensors or an iterable of (x, y) batches, "
                          f"but got {type(data).__name__}.")
    return data


def collect_tensors(data: Data, num_images: int | None, *,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_images`` images (all when ``None``) as float ``[0, 1]`` and label tensors.

    Raises:
        ConfigError: ``data`` holds no images.
    """
    check_limit("num_images", num_images)
    if _is_tensor_pair(data):
        x, y = data
        if num_images is not None:
            x, y = x[:num_images], y[:num_images]
        x, y = _to_float(x.to(device)), y.to(device).long()
    else:
        xs, ys, seen = [], [], 0
        for batch in as_loader(data, device=device):
            if num_images is not None and seen >= num_images:
                break
            bx, by = batch[0], batch[1]
            if num_images is not None:
                bx, by = bx[: num_images - seen], by[: num_images - seen]
            xs.append(_to_float(bx.to(device)))
            ys.append(by.to(device).long())
            seen += bx.shape[0]
        if not xs:
            raise ConfigError("data yielded no images.")
        x, y = torch.cat(xs), torch.cat(ys)
    if x.shape[0] == 0:
        raise ConfigError("data holds no images (or num_images cut everything).")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"labels must be 1-D with one entry per image ({x.shape[0]}), but got shape "
                          f"{tuple(y.shape)}.")
    return x.contiguous(), y


def _num_batches(loader: Iterable, num_images: int | None) -> int | None:
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
    batch_size = getattr(loader, "batch_size", None)
    if num_images is not None and isinstance(batch_size, int) and batch_size > 0:
        total = min(total, math.ceil(num_images / batch_size))
    return total


def progress_bar(total: int | None, desc: str, enabled: bool | None) -> Any:
    """A ``tqdm`` bar on stderr (batches done / total, rate, ETA).

    Args:
        total: Number of steps, if known.
        desc: What runs (e.g. ``"PGD-20"``, ``"AutoAttack apgd-t"``).
        enabled: ``True`` / ``False``, or ``None``: only when stderr is a terminal.
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=None if enabled is None else not enabled)


class RngStreams:
    """Independent copies of torch's global generator, one per key, all seeded with ``seed``.

    A context manager: on entry the caller's CPU (and, for a CUDA device, that
    device's) generator state is saved; on exit it is restored. Inside,
    ``with streams.use(key):`` installs the key's state in the global
    generator (so unmodified code such as :class:`nni_robust.attacks.PGD`
    draws from it) and saves it back afterwards.

    Args:
        seed: Seed of every stream.
        device: The device whose CUDA generator the attacks use (CPU: none).
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = resolve_seed(seed)
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._stack: contextlib.ExitStack | None = None
        self._base: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._states: dict[Any, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _cuda_index(self) -> int:
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _get(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self._cuda_index()) if self._cuda else None
        return torch.get_rng_state(), cuda

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if self._cuda:
            torch.cuda.set_rng_state(state[1], self._cuda_index())

    def __enter__(self) -> "RngStreams":
        self._stack = contextlib.ExitStack()
        devices = [self._cuda_index()] if self._cuda else []
        self._stack.enter_context(torch.random.fork_rng(devices=devices))
        torch.default_generator.manual_seed(self.seed)
        if self._cuda:
            with torch.cuda.device(self._cuda_index()):
                torch.cuda.manual_seed(self.seed)
        self._base = self._get()
        self._states = {}
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None

    @contextlib.contextmanager
    def use(self, key: Any) -> Iterator[None]:
        """Draw from stream ``key`` inside the block."""
        if self._base is None:
            raise NniRobustError("RngStreams.use() needs the streams entered (`with RngStreams(...)`).")
        self._set(self._states.get(key, self._base))
        try:
            yield
        finally:
            self._states[key] = self._get()


# --------------------------------------------------------------------------- the engine


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate_attacks`.

    Attributes:
        accuracy: ``{name: fraction of images classified correctly}``.
        loss: ``{name: mean cross-entropy}`` (the clean / adversarial
            validation losses Wsr-NAS's estimator is trained on).
        num_images: Images evaluated.
        seed: Seed of the attacks' random streams.
        seconds: Wall time of the pass.
        input_shape: Shape of one input image ``(C, H, W)``.
        correct: With ``keep_masks``: ``{name: bool tensor (CPU), per image,
            classified correctly}``; otherwise ``None``.
    """

    accuracy: dict[str, float]
    loss: dict[str, float]
    num_images: int
    seed: int
    seconds: float
    input_shape: tuple[int, ...] = ()
    correct: dict[str, torch.Tensor] | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the masks)."""
        return {"accuracy": dict(self.accuracy), "loss": dict(self.loss), "num_images": self.num_images,
                "seed": self.seed, "seconds": self.seconds, "input_shape": list(self.input_shape)}


AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate_attacks(model: nn.Module, data: Data, attacks: Mapping[str, AttackFn | None], *,
                     seed: int | None = 0, num_images: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None,
                     autocast: bool = False, progress: bool | None = None,
                     desc: str = "evaluate", keep_masks: bool = False) -> Evaluation:
    """Accuracy and loss under each attack, in one pass over the data.

    The model is put in eval mode (modes restored afterwards). For every
    batch, each attack runs on the clean batch with its own random stream
    (see the module docstring); ``None`` means clean inputs, computed once per
    batch. An attack is any callable ``attack(model, x, y) -> x_adv``
    (:class:`nni_robust.attacks.Attack`, :class:`~nni_robust.robustness.TransferAttack`).

    Args:
        model: Classifier taking inputs in ``[0, 1]`` (normalization inside).
        data: ``(images, labels)`` tensors or an iterable of ``(x, y)`` batches.
        attacks: ``{name: attack or None}``.
        seed: Seed of every attack's random stream (``None``: drawn and logged).
        num_images: Use only the first ``num_images`` images (``None``: all).
        batch_size: Batch size when ``data`` is tensors (a loader keeps its own).
        device: Where to evaluate; default: where the model is.
        autocast: bf16 autocast for the classification forward passes.
        progress: Progress bar (``None``: only on a terminal).
        desc: Label of the progress bar.
        keep_masks: Also return per-image correctness (:attr:`Evaluation.correct`).

    Returns:
        An :class:`Evaluation`.

    Raises:
        ConfigError: bad arguments, or no images.
        NonFiniteOutputError: the model returned NaN/inf logits.
    """
    if not isinstance(attacks, Mapping) or len(attacks) == 0:
        raise ConfigError(f"attacks must be a non-empty dict {{name: attack or None}}, but got {attacks!r}.")
    for name, attack in attacks.items():
        if attack is not None and not callable(attack):
            raise ConfigError(f"attacks[{name!r}] must be callable (model, x, y) -> x_adv or None, "
                              f"but got {attack!r}.")
    check_limit("num_images", num_images)
    seed = resolve_seed(seed)
    dev = model_device(model, device)
    loader = as_loader(data, batch_size=batch_size, device=dev)
    names = list(attacks)
    correct = torch.zeros(len(names), dtype=torch.long, device=dev)
    loss_sum = torch.zeros(len(names), dtype=torch.float32, device=dev)
    finite = torch.ones((), dtype=torch.bool, device=dev)
    masks: list[list[torch.Tensor]] = [[] for _ in names]
    input_shape: tuple[int, ...] = ()
    seen = 0
    t0 = time.perf_counter()
    with eval_mode(model), RngStreams(seed, dev) as streams, \
            progress_bar(_num_batches(loader, num_images), desc, progress) as bar:
        for b, batch in enumerate(loader):
            if num_images is not None and seen >= num_images:
                break
            x, y = batch[0], batch[1]
            if num_images is not None and seen + x.shape[0] > num_images:
                x, y = x[: num_images - seen], y[: num_images - seen]
            x = _to_float(x.to(dev, non_blocking=True))
            y = y.to(dev, non_blocking=True).long()
            seen += x.shape[0]
            input_shape = tuple(x.shape[1:])
            clean_logits = None
            for i, name in enumerate(names):
                attack = attacks[name]
                if attack is None:
                    if clean_logits is None:
                        clean_logits = _logits(model, x, autocast)
                    logits = clean_logits
                else:
                    with streams.use(name):
                        x_adv = attack(model, x, y)
                    logits = _logits(model, x_adv, autocast)
                finite &= torch.isfinite(logits).all()
                hits = logits.argmax(dim=1) == y
                correct[i] += hits.sum()
                if keep_masks:
                    masks[i].append(hits)
                loss_sum[i] += F.cross_entropy(logits, y, reduction="sum")
            if b == 0:
                _raise_if_not_finite(finite, desc)
            bar.update(1)
    if seen == 0:
        raise ConfigError("evaluate_attacks: data yielded no images (or num_images cut everything).")
    _raise_if_not_finite(finite, desc)
    counts, losses = correct.tolist(), loss_sum.tolist()
    result = Evaluation(accuracy={n: counts[i] / seen for i, n in enumerate(names)},
                        loss={n: losses[i] / seen for i, n in enumerate(names)},
                        num_images=seen, seed=seed, seconds=time.perf_counter() - t0,
                        input_shape=input_shape,
                        correct={n: torch.cat(masks[i]).cpu() for i, n in enumerate(names)}
                        if keep_masks else None)
    logger.debug("evaluate_attacks (%s) on %d images: %s", desc, seen, result.accuracy)
    return result


def _logits(model: nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    with torch.no_grad(), autocast_context(x.device, autocast):
        return model(x).float()


def _raise_if_not_finite(finite: torch.Tensor, where: str) -> None:
    if not bool(finite):
        raise NonFiniteOutputError(
            f"{where}: the model returned NaN or infinite logits; accuracy is undefined. Check the "
            f"weights (a diverged training run?) and the inputs (expected float in [0, 1]).")


class FiniteGuard(nn.Module):
    """Wraps a model and records (without a host-device sync) whether any output was non-finite.

    Used where a third-party loop (AutoAttack) calls the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.finite: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        ok = torch.isfinite(out.detach()).all()
        self.finite = ok if self.finite is None else self.finite & ok
        return out

    def check(self, where: str) -> None:
        """Raise :class:`NonFiniteOutputError` if an output so far was non-finite."""
        if self.finite is not None:
            _raise_if_not_finite(self.finite, where)


def check_eps_list(name: str, values: Sequence[float]) -> tuple[float, ...]:
    """A non-empty sequence of finite eps values in ``(0, 1]``, as floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ConfigError(f"{name} must be a non-empty list of eps values in (0, 1], but got {values!r}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not 0 < v <= 1:
            raise ConfigError(f"{name} must hold eps values in (0, 1], but got {v!r} in {list(values)!r}.")
        out.append(float(v))
    return tuple(out)
