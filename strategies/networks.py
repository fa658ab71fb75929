"""Build the networks of a search space for a dataset (supernet or discrete)."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from nni_robust.data import DatasetInfo
from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch, DenseRobNetwork, Layout

__all__ = ["build_network", "layout_of"]


def layout_of(space: Mapping[str, Any]) -> Layout:
    """The :class:`Layout` named by ``space["layout"]`` (default ``cellwise``)."""
    name = space.get("layout", "cellwise")
    return name if isinstance(name, Layout) else Layout.from_name(name)


def build_network(arch: DenseRobArch | None, *, width: int, info: DatasetInfo,
                  space: Mapping[str, Any]) -> nn.Module:
    """A dense-robust-cell network of init channels ``width`` for dataset ``info``.

    Args:
        arch: the topology, or ``None`` for the weight-sharing supernet.
        width: init channels C.
        info: dataset description (classes, channels, input size, mean/std).
        space: extra keyword arguments of :class:`DenseRobNetwork`, with
            ``layout`` given by name (``cellwise``, ``stagewise``, ...).
    """
    if int(width) < 1:
        raise ConfigError(f"width (init channels) must be a positive integer, but got {width!r}.")
    kwargs = dict(space)
    kwargs["layout"] = layout_of(space)
    return DenseRobNetwork(arch, init_channels=int(width), num_classes=info.num_classes,
                           in_channels=info.channels, input_size=info.size,
                           mean=info.mean, std=info.std, **kwargs)
