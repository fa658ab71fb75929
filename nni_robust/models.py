"""Shared model pieces: input normalization and the CIFAR ResNet-18 reference.

Every network in nni_robust takes inputs in ``[0, 1]`` and normalizes them
itself with :class:`Normalize`, so attacks can clip to ``[0, 1]`` and the
eps-ball without knowing the dataset statistics.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["Normalize", "BasicBlock", "CifarResNet", "cifar_resnet18"]

logger = logging.getLogger(__name__)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer of a network.

    ``mean`` and ``std`` are stored as non-trainable buffers of shape
    ``(1, C, 1, 1)`` (they follow ``.to(device)`` and are saved in the state
    dict). When both are ``None`` the module is the identity.

    Args:
        mean: Per-channel means (a sequence or a 1-D tensor), or ``None``.
        std: Per-channel standard deviations (all ``> 0``), or ``None``.

    Raises:
        ConfigError: if only one of them is given, their lengths differ, or a
            std is not positive / a value is not finite.
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor | None = None,
                 std: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ConfigError(
                f"Normalize needs both mean and std or neither, but got mean={mean!r}, std={std!r}.")
        self.identity = mean is None
        if self.identity:
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
            return
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ConfigError(
                f"Normalize mean and std must have the same non-zero length, but got "
                f"mean={mean_t.tolist()} and std={std_t.tolist()}.")
        if not bool(torch.isfinite(mean_t).all()) or not bool((std_t > 0).all()) \
                or not bool(torch.isfinite(std_t).all()):
            raise ConfigError(
                f"Normalize needs finite means and finite positive stds, but got "
                f"mean={mean_t.tolist()}, std={std_t.tolist()}.")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        if self.identity:
            return "identity"
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers and a (projected) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, CIFAR variant used by Madry et al.).

    3x3 stem convolution with ``width`` channels, no max-pool, four stages of
    :class:`BasicBlock` with ``width * (1, 2, 4, 8)`` channels and strides
    ``(1, 2, 2, 2)``, global average pooling and a linear classifier.

    Args:
        num_blocks: Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: Output classes.
        in_channels: Input image channels.
        width: Channels of the stem and the first stage.
        mean: Per-channel input mean for :class:`Normalize` (or ``None``).
        std: Per-channel input std for :class:`Normalize` (or ``None``).
    """

    def __init__(self, num_blocks: Sequence[int] = (2, 2, 2, 2), *, num_classes: int = 10,
                 in_channels: int = 3, width: int = 64,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        _check_pos_int("num_classes", num_classes)
        _check_pos_int("in_channels", in_channels)
        _check_pos_int("width", width)
        if len(num_blocks) == 0:
            raise ConfigError(f"num_blocks must name at least one stage, but got {num_blocks!r}.")
        for n in num_blocks:
            _check_pos_int("num_blocks entries", n)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_planes = width
        for i, n in enumerate(num_blocks):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = self.pool(x).flatten(1)
        return self.fc(x)


def cifar_resnet18(num_classes: int = 10, in_channels: int = 3,
                   mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> CifarResNet:
    """The standard CIFAR ResNet-18 (about 11.17M parameters, 1110 MFLOPs at 32x32).

    The FLOPs figure uses the papers' convention (2 per multiply-add of
    Conv2d and Linear); MSRobNet (Table 2) lists ResNet-18 at about 1110 MFLOPs.

    Args:
        num_classes: Output classes.
        in_channels: Input image channels.
        mean: Per-channel input mean (inputs are in ``[0, 1]``), or ``None``.
        std: Per-channel input std, or ``None``.
    """
    return CifarResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels,
                       width=64, mean=mean, std=std)


def _check_pos_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, but got {value!r}.")
