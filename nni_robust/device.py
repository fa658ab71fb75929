"""Device selection, batches put on the device, and optional bf16 autocast."""

from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["resolve_device", "model_device", "batch_to_device", "autocast_context"]

logger = logging.getLogger(__name__)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`.

    Args:
        name: ``"auto"`` or ``None`` (CUDA when available, else CPU), a
            device string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a
            :class:`torch.device`.

    Returns:
        The device.

    Raises:
        ConfigError: if the name is not a device, or names a CUDA device that
            this machine does not have.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        device = name
    elif isinstance(name, str):
        try:
            device = torch.device(name.strip())
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', but got {name!r}.") from exc
    else:
        raise ConfigError(
            f"device must be a string or torch.device ('auto', 'cpu', 'cuda', 'cuda:N'), "
            f"but got {name!r}.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asks for CUDA, but no CUDA device is available; "
                              f"use 'cpu' or 'auto'.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s).")
    return device


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` computes: the device of its first parameter (CPU for a model without any)."""
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def batch_to_device(x: torch.Tensor, *others: torch.Tensor, device: torch.device | str, seen: int = 0,
                    max_images: int | None = None) -> tuple[torch.Tensor, ...]:
    """One batch of images ``x`` (and of ``others``, e.g. the labels) ready for a model on ``device``.

    The batch is cut to the ``max_images - seen`` images still wanted (``max_images=None``: all),
    moved to ``device`` (non-blocking), and integer images (uint8) become float in ``[0, 1]``.

    Returns:
        ``(x, *others)``.
    """
    if max_images is not None and seen + x.shape[0] > max_images:
        x, others = x[: max_images - seen], tuple(t[: max_images - seen] for t in others)
    x = x.to(device, non_blocking=True)
    others = tuple(t.to(device, non_blocking=True) for t in others)
    if not x.is_floating_point():
        x = x.float().div_(255.0)
    return (x, *others)


def autocast_context(device: torch.device | str, enabled: bool) -> ContextManager:
    """A context manager running the forward passes in bfloat16 autocast.

    Args:
        device: The device the computation runs on (its ``type`` selects the
            autocast backend; CPU is supported too).
        enabled: When ``False`` a :func:`contextlib.nullcontext` is returned.

    Returns:
        ``torch.autocast(device_type, dtype=torch.bfloat16)`` or a null context.
    """
    if not enabled:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if device_type not in ("cuda", "cpu"):
        logger.warning("bf16 autocast is not supported on %r; running in full precision.",
                       device_type)
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
