"""The two defence operations of ABanditNAS: the Gabor filter block and the denoising block.

Chen, Zhang et al., "Anti-Bandit Neural Architecture Search for Model
Defense" (ECCV 2020), Sec. 3 "Search space" (and Fig. 2 (b), (c)): besides
the seven DARTS operations, the ABanditNAS search space has a 3x3 Gabor
filter and a denoising block. The exact definitions follow the authors'
released evaluation code as recorded in the project's method notes
(``notes/methods.md``, ABanditNAS):

* **Gabor filter** (:class:`GaborConv2d`): learnable per-output-channel
  parameters ``t, s, l, psi, g`` reparameterised as
  ``theta = 2 pi sigmoid(t)``, ``sigma = 0.1 + 0.4 sigmoid(s)``,
  ``lambda = 0.001 + 0.999 sigmoid(l)``, ``gamma = 1 + 0.5 g``, ``psi``;
  initialised ``l ~ U(0, 1)``, ``t ~ N(0, 1)``, ``psi ~ N(0, 0.02^2)``,
  ``s ~ N(0, 1)``, ``g = 0``. On the grid ``x, y in {-1, 0, 1}``, with
  ``x' = x cos theta + y sin theta`` and ``y' = -x sin theta + y cos theta``,
  ``k(x, y) = exp(-(x'^2 / sigma^2 + y'^2 / (sigma / gamma)^2) / 2) *
  cos(2 pi x' / lambda + psi)`` (:func:`gabor_kernel`). The kernel of output
  channel ``o`` is used for every input channel (a dense ``C x C x 3 x 3``
  weight); conv2d, padding 1, no bias. *Convention chosen here* (the
  parameters are learned, so it only fixes a reflection): ``x`` is the
  column offset and ``y`` the row offset, ``weight[o, :, y + 1, x + 1] =
  k_o(x, y)``.
* **Denoising** (:func:`dot_product_denoise`): the non-local dot-product
  filter without embedding or softmax (Xie et al., "Feature Denoising for
  Improving Adversarial Robustness", CVPR 2019): with ``x_i`` the ``C``-vector
  at position ``i`` of an ``H x W`` map,
  ``y_i = sum_j (x_i . x_j) x_j / (C H W)``. Computed as
  ``(X X^T) X / (C H W)`` with ``X`` the ``C x HW`` matrix (the same product
  as ``X (X^T X)``, in ``O(C^2 HW)`` instead of ``O(C (HW)^2)``).
* Both are wrapped as ``out = x + BN(filter(x))`` (:class:`DefenseBlock`),
  the BN's weight and bias initialised to 0, so each block starts as the
  identity. With stride 2 the sum is downsampled bilinearly, to
  ``ceil(H / 2) x ceil(W / 2)`` like the strided convolutions and pools of the
  space (for even sizes this is ``scale_factor = 0.5``, i.e. a 2x2 average).

The wrapper's BN is affine whatever the ``affine`` argument of the op
factory says: its zero-initialised scale and shift are the definition of
the block (a non-affine BN would not start as the identity).

The paper's Fig. 2 (c) and Xie et al. put a 1x1 convolution after the
denoising operation; the authors' code as recorded in the notes does not.
``conv1x1=True`` adds it (default ``False``).

Registered in :data:`nni_robust.spaces.ops.OPS` as ``"gabor_3x3"`` and
``"denoising"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.errors import ConfigError

from .ops import OPS, register_op

__all__ = [
    "gabor_kernel",
    "GaborConv2d",
    "dot_product_denoise",
    "DotProductDenoise",
    "DefenseBlock",
    "GaborBlock",
    "DenoisingBlock",
    "GABOR_OP",
    "DENOISING_OP",
]

#: Registered op names.
GABOR_OP = "gabor_3x3"
DENOISING_OP = "denoising"


def gabor_kernel(theta: torch.Tensor, sigma: torch.Tensor, lam: torch.Tensor, gamma: torch.Tensor,
                 psi: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Gabor kernels on the integer grid ``{-size // 2, ..., size // 2}^2``.

    All arguments are tensors of shape ``(C,)`` (already reparameterised);
    returns ``(C, size, size)`` with ``out[c, y + r, x + r] = k_c(x, y)``
    (``r = size // 2``; ``x`` the column offset, ``y`` the row offset) and
    ``k(x, y) = exp(-(x'^2 / sigma^2 + y'^2 / (sigma / gamma)^2) / 2) *
    cos(2 pi x' / lambda + psi)``, ``x' = x cos theta + y sin theta``,
    ``y' = -x sin theta + y cos theta``.
    """
    r = size // 2
    grid = torch.arange(-r, r + 1, dtype=theta.dtype, device=theta.device)
    y, x = torch.meshgrid(grid, grid, indexing="ij")  # y: row offset, x: column offset
    x, y = x[None], y[None]
    th = theta[:, None, None]
    cos, sin = torch.cos(th), torch.sin(th)
    xr = x * cos + y * sin
    yr = -x * sin + y * cos
    sig = sigma[:, None, None]
    sig_y = sig / gamma[:, None, None]
    envelope = torch.exp(-0.5 * (xr ** 2 / sig ** 2 + yr ** 2 / sig_y ** 2))
    carrier = torch.cos(2.0 * math.pi * xr / lam[:, None, None] + psi[:, None, None])
    return envelope * carrier


class GaborConv2d(nn.Conv2d):
    """The learnable 3x3 Gabor convolution of ABanditNAS (no bias, padding ``size // 2``).

    A :class:`torch.nn.Conv2d` (so FLOPs counters that hook convolutions
    count it) whose dense weight is not a parameter but is computed from the
    Gabor parameters at every call (:meth:`dense_weight`); it has no
    ``weight`` attribute.

    Args:
        channels: Input = output channels.
        size: Odd kernel size (ABanditNAS: 3).

    Attributes:
        t, s, l, psi, g: The raw per-output-channel parameters (shape ``(C,)``).
    """

    def __init__(self, channels: int, size: int = 3) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"channels must be a positive int, but got {channels!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ConfigError(f"size must be a positive odd int (ABanditNAS: 3), but got {size!r}.")
        super().__init__(channels, channels, size, padding=size // 2, bias=False)
        del self.weight  # computed from the Gabor parameters
        self.channels = channels
        self.size = size
        self.t = nn.Parameter(torch.empty(channels))
        self.s = nn.Parameter(torch.empty(channels))
        self.l = nn.Parameter(torch.empty(channels))  # noqa: E741 (the authors' name)
        self.psi = nn.Parameter(torch.empty(channels))
        self.g = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation: ``l ~ U(0, 1)``, ``t, s ~ N(0, 1)``, ``psi ~ N(0, 0.02^2)``, ``g = 0``."""
        if "t" not in self._parameters:  # called by nn.Conv2d.__init__ before the Gabor parameters exist
            super().reset_parameters()
            return
        with torch.no_grad():
            self.l.uniform_(0.0, 1.0)
            self.t.normal_(0.0, 1.0)
            self.psi.normal_(0.0, 0.02)
            self.s.normal_(0.0, 1.0)
            self.g.zero_()

    def gabor_params(self) -> dict[str, torch.Tensor]:
        """``theta, sigma, lambda, gamma, psi`` after the reparameterisation (each ``(C,)``)."""
        return {
            "theta": 2.0 * math.pi * torch.sigmoid(self.t),
            "sigma": 0.1 + 0.4 * torch.sigmoid(self.s),
            "lam": 0.001 + 0.999 * torch.sigmoid(self.l),
            "gamma": 1.0 + 0.5 * self.g,
            "psi": self.psi,
        }

    def kernels(self) -> torch.Tensor:
        """``(C, size, size)``: one kernel per output channel."""
        return gabor_kernel(size=self.size, **self.gabor_params())

    def dense_weight(self) -> torch.Tensor:
        """The dense ``(C, C, size, size)`` convolution weight (each kernel repeated over the inputs)."""
        k = self.kernels()
        return k[:, None].expand(self.channels, self.channels, self.size, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.dense_weight().to(x.dtype), None)


def dot_product_denoise(x: torch.Tensor) -> torch.Tensor:
    """``y_i = sum_j (x_i . x_j) x_j / (C H W)`` over the positions of each sample (NCHW)."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    # (B, C, C) = X X^T / (C H W), scaled before the second product so half precision does not overflow
    gram = torch.bmm(flat, flat.transpose(1, 2) / (h * w)) / c
    return torch.bmm(gram, flat).reshape(b, c, h, w)


class DotProductDenoise(nn.Module):
    """:func:`dot_product_denoise` as a module (optionally followed by a 1x1 convolution)."""

    def __init__(self, channels: int, conv1x1: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False) if conv1x1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = dot_product_denoise(x)
        return self.conv(y) if self.conv is not None else y


class DefenseBlock(nn.Module):
    """``x + BN(filter(x))`` with the BN's weight and bias at 0 (the identity at initialisation);
    with stride 2 the sum is downsampled bilinearly to ``ceil(H / 2) x ceil(W / 2)``.

    Args:
        filter_module: Maps ``(N, C, H, W)`` to the same shape.
        channels: ``C``.
        stride: 1 or 2.
    """

    def __init__(self, filter_module: nn.Module, channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"stride must be 1 or 2, but got {stride!r}.")
        self.stride = stride
        self.filter = filter_module
        self.bn = nn.BatchNorm2d(channels, affine=True)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.bn(self.filter(x))
        if self.stride == 1:
            return out
        h, w = out.shape[-2:]
        return F.interpolate(out, size=(-(-h // 2), -(-w // 2)), mode="bilinear", align_corners=False)


class GaborBlock(DefenseBlock):
    """The Gabor filter block: ``x + BN(GaborConv2d(x))`` (see the module docstring)."""

    def __init__(self, channels: int, stride: int = 1, size: int = 3) -> None:
        super().__init__(GaborConv2d(channels, size), channels, stride)


class DenoisingBlock(DefenseBlock):
    """The denoising block: ``x + BN(dot_product_denoise(x))`` (see the module docstring).

    Args:
        channels: ``C``.
        stride: 1 or 2.
        conv1x1: Follow the filter with a 1x1 convolution (Xie et al.; the
            paper's figure); the authors' code as recorded has none (default).
    """

    def __init__(self, channels: int, stride: int = 1, conv1x1: bool = False) -> None:
        super().__init__(DotProductDenoise(channels, conv1x1), channels, stride)


def _gabor_op(channels: int, stride: int, affine: bool) -> nn.Module:
    return GaborBlock(channels, stride)  # the block's BN is always affine (see the module docstring)


def _denoising_op(channels: int, stride: int, affine: bool) -> nn.Module:
    return DenoisingBlock(channels, stride)


# Idempotent: the module may be imported under two names (tests, discovery).
for _name, _factory in ((GABOR_OP, _gabor_op), (DENOISING_OP, _denoising_op)):
    if _name not in OPS:
        register_op(_name)(_factory)
