"""BatchNorm calibration for weight-sharing supernets (MSRobNet Sec. 5.1, App. C.1).

A supernet's BatchNorm running statistics are accumulated over many sampled
architectures, so they are wrong for any single one. Before a sub-network is
evaluated, MSRobNet recalibrates them: reset the running statistics, set
``momentum=None`` (PyTorch's cumulative moving average), forward some
calibration batches in train mode under ``no_grad`` (the authors use 640
validation images), then switch back.

After calibration an evaluation needs no BatchNorm statistics any more:
:func:`fold_bn` folds each BatchNorm that directly follows a convolution into
that convolution (``W' = W * s``, ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``), so the evaluation's forward and backward
passes skip the BatchNorm layers; the fold is undone afterwards (a supernet's
shared weights are left exactly as they were).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .device import autocast_context, batch_to_device, model_device
from .errors import ConfigError

__all__ = ["calibrate_bn", "fold_bn", "BNFold"]

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
    dev = model_device(model) if device is None else torch.device(device)
    mods = list(model.modules())  # one walk (a supernet has thousands of modules)
    bns = [m for m in mods if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        logger.warning("calibrate_bn: the model has no BatchNorm layer with running statistics.")
    modes = {m: m.training for m in mods}
    momenta = {m: m.momentum for m in bns}
    seen = 0
    try:
        _reset_running_stats(bns)
        for m in bns:
            m.momentum = None
        for m in mods:
            m.training = True
        with torch.no_grad(), autocast_context(dev, autocast):
            for batch in batches:
                if max_images is not None and seen >= max_images:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                x, = batch_to_device(x, device=dev, seen=seen, max_images=max_images)
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


def _reset_running_stats(bns: list[_BatchNorm]) -> None:
    """``m.reset_running_stats()`` for every layer, in two foreach calls instead of three calls per layer."""
    try:
        with torch.no_grad():
            torch._foreach_zero_([m.running_mean for m in bns] + [m.running_var for m in bns]
                                 + [m.num_batches_tracked for m in bns])
            torch._foreach_add_([m.running_var for m in bns], 1.0)
    except (AttributeError, RuntimeError, TypeError):  # e.g. an uninitialized lazy layer: one by one
        for m in bns:
            m.reset_running_stats()


#: Modules whose eval-mode output is a per-channel affine map of their input (foldable).
_FOLDABLE_BN = (nn.BatchNorm2d, nn.SyncBatchNorm)


class BNFold:
    """BatchNorm layers folded into their convolutions by :func:`fold_bn`; ``undo()`` puts them back.

    Also a context manager: ``with fold_bn(model): ...`` undoes the fold on exit
    (also on error), and restores every module's train/eval mode.

    Attributes:
        pairs: Number of (convolution, BatchNorm) pairs folded.
    """

    def __init__(self) -> None:
        self._undo: list[tuple[nn.Module, str, Any]] = []  # (owner, key in _parameters/_modules, old)
        self._modes: list[tuple[nn.Module, bool]] = []
        self.pairs = 0

    def undo(self) -> None:
        """Restore the original convolutions, BatchNorm layers and module modes (idempotent)."""
        for owner, key, old in reversed(self._undo):
            kind, name = key.split(":", 1)
            getattr(owner, kind)[name] = old
        self._undo.clear()
        for m, mode in self._modes:
            m.training = mode
        self._modes.clear()

    def __enter__(self) -> "BNFold":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.undo()


def _seq_pairs(mods: Iterable[nn.Module]) -> Iterator[tuple[nn.Sequential, str, nn.Conv2d, str, nn.Module]]:
    """(parent, conv name, conv, next name, next module) for consecutive children of every Sequential."""
    for parent in mods:
        if isinstance(parent, nn.Sequential):
            items = [(k, v) for k, v in parent._modules.items() if v is not None]
            for (a, conv), (b, nxt) in zip(items, items[1:]):
                if type(conv) is nn.Conv2d:
                    yield parent, a, conv, b, nxt


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None))


def fold_bn(model: nn.Module, *, only_run: bool = True) -> BNFold:
    """Fold every BatchNorm that directly follows a convolution into it, for evaluation.

    A pair is folded when, inside an ``nn.Sequential``, an ``nn.Conv2d`` is
    immediately followed by an ``nn.BatchNorm2d`` (or ``SyncBatchNorm``) with
    running statistics and as many features as the convolution has output
    channels (affine or not; nothing else in between; no hooks on either).
    In eval mode such a BatchNorm is the per-channel affine map
    ``y = (z - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, so the
    convolution with weight ``W * s`` and bias ``(b - mean) * s + beta``
    computes the pair exactly (up to float rounding); the BatchNorm is then
    replaced by an identity. Other BatchNorm layers (e.g. after a
    concatenation) are left as they are. The model is put in eval mode: the
    folded network computes the *eval-mode* network only.

    The parameters of the model are not changed: the folded convolutions get
    new (non-trainable) weight tensors, and :meth:`BNFold.undo` (or leaving
    the ``with`` block) restores the originals, the BatchNorm layers and
    every module's train/eval mode.

    Args:
        model: The network (e.g. a supernet right after :func:`calibrate_bn`).
        only_run: Fold only BatchNorm layers that have seen a batch since their
            statistics were last reset (``num_batches_tracked > 0``): after a
            calibration, the active path of a supernet. The others are left
            as they are (still correct, just not faster).

    Returns:
        The :class:`BNFold` (``pairs``: how many were folded), to ``undo()`` or use in ``with``.
    """
    fold = BNFold()
    mods = list(model.modules())
    fold._modes = [(m, m.training) for m in mods]
    try:
        for m in mods:
            m.training = False
        cands = [(parent, conv, b, bn) for parent, _, conv, b, bn in _seq_pairs(mods)
                 if isinstance(bn, _FOLDABLE_BN) and bn.track_running_stats and bn.running_mean is not None
                 and bn.num_features == conv.out_channels and not _hooked(conv) and not _hooked(bn)]
        if only_run and cands:
            ran = torch.stack([bn.num_batches_tracked for *_, bn in cands]).tolist()  # one sync
            cands = [c for c, n in zip(cands, ran) if n > 0]
        if cands:
            with torch.no_grad():
                _fold_into(fold, cands)
    except BaseException:
        fold.undo()
        raise
    logger.debug("fold_bn: %d BatchNorm layers folded into their convolutions.", fold.pairs)
    return fold


def _fold_into(fold: BNFold, cands: list) -> None:
    convs = [c for _, c, _, _ in cands]
    bns = [bn for *_, bn in cands]
    # s = gamma / sqrt(var + eps) and shift = beta - mean * s, for every pair at once
    scale = list(torch._foreach_rsqrt(torch._foreach_add([bn.running_var for bn in bns], [bn.eps for bn in bns])))
    affine = [i for i, bn in enumerate(bns) if bn.weight is not None]
    if affine:
        scaled = torch._foreach_mul([scale[i] for i in affine], [bns[i].weight for i in affine])
        for i, t in zip(affine, scaled):
            scale[i] = t
    shift = list(torch._foreach_mul([bn.running_mean for bn in bns], scale))
    torch._foreach_neg_(shift)
    with_bias = [i for i, c in enumerate(convs) if c.bias is not None]
    if with_bias:  # (b - mean) * s = b * s - mean * s
        torch._foreach_add_([shift[i] for i in with_bias],
                            torch._foreach_mul([convs[i].bias for i in with_bias], [scale[i] for i in with_bias]))
    beta = [i for i, bn in enumerate(bns) if bn.bias is not None]
    if beta:
        torch._foreach_add_([shift[i] for i in beta], [bns[i].bias for i in beta])
    weights = torch._foreach_mul([c.weight for c in convs], [s.view(-1, 1, 1, 1) for s in scale])
    identity = nn.Identity().eval()  # stateless: one instance stands in for every folded layer
    for (parent, conv, bn_name, bn), w, b in zip(cands, weights, shift):
        fold._undo.append((conv, "_parameters:weight", conv._parameters["weight"]))
        fold._undo.append((conv, "_parameters:bias", conv._parameters["bias"]))
        fold._undo.append((parent, f"_modules:{bn_name}", bn))
        # plain tensors (no autograd leaf): the folded weights are constants of the evaluation
        conv._parameters["weight"] = w.to(dtype=conv.weight.dtype)
        conv._parameters["bias"] = b.to(dtype=conv.weight.dtype)
        parent._modules[bn_name] = identity
        fold.pairs += 1
