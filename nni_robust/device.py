"""Device selection and optional bf16 autocast."""

from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "autocast_context"]

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
