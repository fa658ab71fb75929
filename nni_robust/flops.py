"""Capacity measures: FLOPs and parameter counts, and the width that meets a FLOPs budget.

Convention (the papers', e.g. MSRobNet Table 2 lists a CIFAR ResNet-18 at about
1110 MFLOPs): 2 FLOPs per multiply-add of :class:`torch.nn.Conv2d` and
:class:`torch.nn.Linear`, per image; biases, BatchNorm, activations, pooling
and additions count nothing.

FLOPs are measured with forward hooks during one real forward pass, so only
the modules that actually execute are counted: a weight-sharing supernet with
an active architecture counts that architecture only, and a module called
twice counts twice.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["count_flops", "count_params", "profile", "search_width"]

logger = logging.getLogger(__name__)


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in input_size)
    except TypeError as exc:
        raise ConfigError(f"input_size must be a sequence of positive ints such as (3, 32, 32), "
                          f"but got {input_size!r}.") from exc
    if len(size) == 0 or any(s < 1 for s in size) or any(
            int(s) != s for s in input_size):
        raise ConfigError(f"input_size must be a sequence of positive ints such as (3, 32, 32), "
                          f"but got {input_size!r}.")
    return size


def count_flops(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), *,
                device: torch.device | str | None = None) -> int:
    """FLOPs of one forward pass of one image (2 per multiply-add, Conv2d + Linear only).

    Runs the model once on a single all-zero image of shape ``(1, *input_size)``
    in eval mode under ``torch.no_grad``, with forward hooks on every
    ``nn.Conv2d`` (``2 * Cin/groups * Cout * kh * kw * Hout * Wout``) and
    ``nn.Linear`` (``2 * in_features * out_features`` per output row). The
    ``training`` flag of every submodule is restored afterwards.

    Args:
        model: The network (inputs in ``[0, 1]``, normalization inside).
        input_size: Shape of one input without the batch dimension.
        device: Where to run the pass; default: the device of the model's
            first floating-point parameter or buffer (CPU if it has none).

    Returns:
        FLOPs per image.
    """
    size = _check_input_size(input_size)
    param_device, dtype = _model_device_dtype(model)
    device = torch.device(device) if device is not None else param_device
    total = [0]

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        total[0] += 2 * per_output * output.numel()

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        total[0] += 2 * module.in_features * output.numel()

    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for m in modes:
            m.training = False  # model.eval() without another walk of the module tree
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(conv_hook))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(linear_hook))
        with torch.no_grad():
            model(torch.zeros((1, *size), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return int(total[0])


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``), shared tensors counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def profile(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), *,
            device: torch.device | str | None = None) -> dict[str, float]:
    """Parameters and FLOPs of ``model`` in one dict.

    Returns:
        ``{"params": int, "flops": int, "params_M": float, "flops_M": float}``
        (``*_M`` in millions).
    """
    params = count_params(model)
    flops = count_flops(model, input_size, device=device)
    return {"params": params, "flops": flops, "params_M": params / 1e6, "flops_M": flops / 1e6}


def search_width(build: Callable[[int], nn.Module], target_flops: float, *,
                 input_size: Sequence[int] = (3, 32, 32), low: int = 1, high: int | None = None,
                 measure: Callable[[nn.Module], float] | None = None,
                 max_width: int = 2048) -> tuple[int, float]:
    """The width whose capacity is closest to a target (MSRobNet Eq. 2, ``c(alpha)``).

    Finds ``c = argmin_{c in Z+, low <= c <= high} |C(build(c)) - target|``
    by bisection, assuming the capacity grows monotonically with the width
    (true for channel scaling of conv networks). Only ``O(log(high))``
    networks are built. Ties go to the smaller (cheaper) width.

    Args:
        build: Builds the network for an integer width (e.g. init channels).
        target_flops: The target capacity ``C_T`` (> 0), in the units of ``measure``.
        input_size: Input shape for :func:`count_flops`.
        low: Smallest width considered (>= 1).
        high: Largest width considered; ``None`` doubles from ``low`` until the
            capacity reaches the target (at most ``max_width``).
        measure: Capacity of a built network; default :func:`count_flops` at
            ``input_size`` (the paper uses FLOPs; other measures such as
            :func:`count_params` work as long as they are monotone in width).
        max_width: Upper limit of the doubling search when ``high`` is None. A
            target that even ``max_width`` cannot reach (predicted from the
            quadratic growth of conv FLOPs in the width, before building anything
            that large) is a :class:`ConfigError`, not a network that fills memory.

    Returns:
        ``(width, capacity)`` of the best width.

    Raises:
        ConfigError: on a non-positive or non-finite target or bad bounds.
    """
    if isinstance(target_flops, bool) or not isinstance(target_flops, (int, float)) \
            or not math.isfinite(target_flops) or target_flops <= 0:
        raise ConfigError(f"target_flops must be a finite number > 0, but got {target_flops!r}.")
    for name, value in (("low", low), ("max_width", max_width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, but got {value!r}.")
    if high is not None and (isinstance(high, bool) or not isinstance(high, int) or high < low):
        raise ConfigError(f"high must be an integer >= low={low}, but got {high!r}.")
    size = _check_input_size(input_size)
    if measure is None:
        def measure(net: nn.Module) -> float:
            return count_flops(net, size)

    cache: dict[int, float] = {}

    def cap(width: int) -> float:
        if width not in cache:
            cache[width] = float(measure(build(width)))
            logger.debug("search_width: width %d -> capacity %.6g", width, cache[width])
        return cache[width]

    if cap(low) >= target_flops:
        if cap(low) > 2 * target_flops:
            logger.warning("search_width: the target %.6g is below half the capacity %.6g of the smallest width "
                           "%d; using width %d.", target_flops, cap(low), low, low)
        return low, cap(low)
    if high is None:
        hi = low
        while cap(hi) < target_flops:
            # conv FLOPs grow at most quadratically in the width: refuse a target out of reach
            # before building networks that large
            if cap(hi) * (max_width / hi) ** 2 < target_flops:
                raise ConfigError(
                    f"target_flops {target_flops:.6g} is out of reach: width {hi} gives {cap(hi):.6g}, so even "
                    f"max_width={max_width} gives at most about {cap(hi) * (max_width / hi) ** 2:.6g}. "
                    "Lower the target (check its unit: the project counts MFLOPs, 2 per multiply-add).")
            hi = min(hi * 2, max_width)
    else:
        hi = high
        if cap(hi) < target_flops:
            logger.warning("search_width: capacity at high=%d is %.6g, below the target %.6g.",
                           hi, cap(hi), target_flops)
            return hi, cap(hi)
    lo = low  # invariant: cap(lo) < target <= cap(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cap(mid) < target_flops:
            lo = mid
        else:
            hi = mid
    if abs(cap(lo) - target_flops) <= abs(cap(hi) - target_flops):
        return lo, cap(lo)
    return hi, cap(hi)
