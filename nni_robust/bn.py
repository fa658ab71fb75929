"""BatchNorm calibration for weight-sharing supernets (MSRobNet Sec. 5.1, App. C.1).

A supernet's BatchNorm running statistics are accumulated over many sampled
architectures, so they are wrong for any single one. Before a sub-network is
evaluated, MSRobNet recalibrates them: reset the running statistics, set
``momentum=None`` (PyTorch's cumulative moving average), forward some
calibration batches in train mode under ``no_grad`` (the authors use 640
validation images), then switch back.
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .device import autocast_context
from .errors import ConfigError

__all__ = ["calibrate_bn"]

logger = logging.getLogger(__name__)


def calibrate_bn(model: nn.Module, batches: Iterable, *, device: torch.device | str | None = None,
                 max_images: int | None = None, autocast: bool = False) -> int:
    """Recompute every BatchNorm layer's running statistics on ``batches``.

    Affects all ``BatchNorm1d/2d/3d`` (and ``SyncBatchNorm``) layers that
    track running statistics, affine or not. Running mean and variance are
    reset and, with ``momentum=None``, become the average over the batches of
    each batch's mean and unbiased variance (the exact mean of the data when
    the batches have equal size). Only the layers that execute in the
    forward pass are changed (a supernet with an active architecture
    calibrates that architecture; other layers keep the reset statistics).
    Each layer's ``momentum`` and every module's train/eval mode are
    restored afterwards, also on error. Parameters are not changed.

    Args:
        model: The network (inputs in ``[0, 1]``).
        batches: Iterable of input tensors or of ``(x, y, ...)`` tuples; labels
            are ignored. uint8 images are scaled by 1/255.
        device: Where to run; default: where the model's parameters are.
        max_images: Use at most this many images (the last batch is truncated).
        autocast: Run the forward passes in bf16 autocast.

    Returns:
        The number of images forwarded.

    Raises:
        ConfigError: bad ``max_images``, or no image was forwarded (the
            statistics are then left reset).
    """
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ConfigError(f"max_images must be None or an integer >= 1, but got {max_images!r}.")
    if device is None:
        param = next(iter(model.parameters()), None)
        dev = param.device if param is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        logger.warning("calibrate_bn: the model has no BatchNorm layer with running statistics.")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad(), autocast_context(dev, autocast):
            for batch in batches:
                if max_images is not None and seen >= max_images:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if max_images is not None and seen + x.shape[0] > max_images:
                    x = x[: max_images - seen]
                x = x.to(dev, non_blocking=True)
                if not x.is_floating_point():
                    x = x.float().div_(255.0)
                model(x)
                seen += x.shape[0]
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    if seen == 0:
        raise ConfigError("calibrate_bn: no calibration image was given (empty batches).")
    logger.debug("calibrate_bn: %d BatchNorm layers on %d images.", len(bns), seen)
    return seen
