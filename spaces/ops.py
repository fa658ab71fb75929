"""Cell operations shared by the cell-based search spaces.

The primitives follow DARTS (Liu et al., ICLR 2019) and the dense robust cell
of RobNet (Guo et al., CVPR 2020, Sec. 3.2 / Fig. 2) and MSRobNet (Ning et
al., "Multi-shot NAS for Discovering Adversarially Robust Convolutional
Neural Architectures at Targeted Capacities", Sec. 5.3.1).

Every operation factory has the signature ``factory(channels, stride, affine)``
and maps ``channels`` input channels to ``channels`` output channels, halving
the resolution when ``stride == 2``. Factories are registered in :data:`OPS`
by name so other spaces (e.g. the DARTS space) can reuse and extend it with
:func:`register_op`.

Batch-norm affinity is a parameter everywhere because the papers differ: the
MSRobNet construction uses non-affine BN in the edge operations except for the
residual separable convolution (whose BNs are affine), RobNet makes every BN
inside its cells non-affine (see ``reference_architectures.json``, "about").
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.errors import ArchitectureError, ConfigError

__all__ = [
    "PRIMITIVES",
    "OPS",
    "OpFactory",
    "register_op",
    "build_op",
    "Zero",
    "Identity",
    "ReLUConvBN",
    "FactorizedReduce",
    "DilConv",
    "SepConv",
    "ResSepConv",
]

#: The dense robust cell's primitives in their index order (MSRobNet Sec. 5.3.1;
#: aw_nas ``primitives`` order none, skip_connect, sep_conv_3x3, ResSepConv).
PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "sep_conv_3x3", "res_sep_conv_3x3")

OpFactory = Callable[[int, int, bool], nn.Module]

#: Registry ``name -> factory(channels, stride, affine)``.
OPS: dict[str, OpFactory] = {}


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Decorator registering an operation factory in :data:`OPS` under ``name``.

    Raises:
        ConfigError: ``name`` is already registered.
    """

    def deco(factory: OpFactory) -> OpFactory:
        if name in OPS:
            raise ConfigError(f"Operation {name!r} is already registered; registered: {sorted(OPS)}.")
        OPS[name] = factory
        return factory

    return deco


def build_op(name: str, channels: int, stride: int = 1, affine: bool = False) -> nn.Module:
    """Build the registered operation ``name``.

    Args:
        name: A key of :data:`OPS`.
        channels: Input = output channels.
        stride: 1 or 2.
        affine: Whether the BN layers inside learn a scale and shift.

    Raises:
        ArchitectureError: unknown ``name``.
        ConfigError: bad ``stride`` or ``channels``.
    """
    if name not in OPS:
        raise ArchitectureError(f"Unknown operation {name!r}; valid operations: {sorted(OPS)}.")
    if stride not in (1, 2):
        raise ConfigError(f"stride must be 1 or 2, but got {stride!r}.")
    if not isinstance(channels, int) or channels < 1:
        raise ConfigError(f"channels must be a positive int, but got {channels!r}.")
    return OPS[name](channels, stride, affine)


class Zero(nn.Module):
    """The ``none`` operation: outputs zeros (strided: at half resolution).

    Networks in this package skip ``none`` edges instead of running this
    module; it exists for users composing operations by hand.
    """

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return torch.zeros_like(x)
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class Identity(nn.Identity):
    """The unstrided ``skip_connect``."""


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k x k, no bias) -> BN, the DARTS pre-processing block."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convolutions on pixel grids offset by one, concat, BN.

    Halves the resolution (DARTS). For an odd input size the offset branch is
    zero-padded by one pixel at the bottom/right so both branches agree in size
    (the DARTS original fails there; for even sizes nothing changes).

    Args:
        c_in: Input channels.
        c_out: Output channels (even).
        affine: BN affinity.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ConfigError(f"FactorizedReduce needs an even number of output channels, but got {c_out}.")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
        if pad_h or pad_w:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class DilConv(nn.Sequential):
    """ReLU -> depthwise k x k (dilated) -> pointwise 1x1 -> BN (DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """DARTS separable convolution: two [ReLU, depthwise k x k, pointwise 1x1, BN] blocks.

    The stride is applied in the first depthwise convolution only.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, affine: bool = True) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine=affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine=affine),
        )


class ResSepConv(nn.Module):
    """Residual separable convolution: ``SepConv(x) + shortcut(x)``.

    The shortcut is the identity, or a :class:`FactorizedReduce` when strided
    (RobNet Fig. 2 "residual separable conv"; MSRobNet Sec. 5.3.1).

    Args:
        channels: Input = output channels.
        stride: 1 or 2.
        affine: BN affinity of both the separable conv and the shortcut.
    """

    def __init__(self, channels: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__()
        self.op = SepConv(channels, channels, 3, stride, 1, affine=affine)
        self.shortcut = nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x) + self.shortcut(x)


@register_op("none")
def _none(channels: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


@register_op("skip_connect")
def _skip(channels: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(channels, channels, affine=affine)


@register_op("sep_conv_3x3")
def _sep3(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 3, stride, 1, affine=affine)


@register_op("res_sep_conv_3x3")
def _res_sep3(channels: int, stride: int, affine: bool) -> nn.Module:
    return ResSepConv(channels, stride, affine=affine)


@register_op("sep_conv_5x5")
def _sep5(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 5, stride, 2, affine=affine)


@register_op("dil_conv_3x3")
def _dil3(channels: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(channels, channels, 3, stride, 2, 2, affine=affine)


@register_op("dil_conv_5x5")
def _dil5(channels: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(channels, channels, 5, stride, 4, 2, affine=affine)


@register_op("max_pool_3x3")
def _max3(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("avg_pool_3x3")
def _avg3(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
