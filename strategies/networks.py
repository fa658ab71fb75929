"""Build the networks of a search space for a dataset (supernet or discrete).

A settings ``space`` dict names its space with ``name``: ``"dense_rob"`` (the
default when absent: the dense robust cell of RobNet / MSRobNet, with
``layout``) or ``"darts"`` / ``"dsara"`` (the DARTS cell spaces of
:mod:`nni_robust.spaces.darts`, used by the differentiable searches).
:func:`build_network` and :func:`arch_from_json` dispatch on it, so the
final training and evaluation code serves every space.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from nni_robust.data import DatasetInfo
from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch, DenseRobNetwork, Layout

__all__ = ["build_network", "layout_of", "space_name", "arch_from_json", "SPACE_NAMES"]

#: Space names a settings ``space`` dict may give (``dense_rob`` when it names none).
SPACE_NAMES: tuple[str, ...] = ("dense_rob", "darts", "dsara")


def space_name(space: Mapping[str, Any]) -> str:
    """The space a settings ``space`` dict names (``"dense_rob"`` when it has no ``name``).

    Raises:
        ConfigError: an unknown name.
    """
    name = space.get("name", "dense_rob")
    if name not in SPACE_NAMES:
        raise ConfigError(f"settings.space.name must be one of {list(SPACE_NAMES)}, but got {name!r}.")
    return name


def layout_of(space: Mapping[str, Any]) -> Layout:
    """The dense-robust :class:`Layout` named by ``space["layout"]`` (default ``cellwise``)."""
    if space_name(space) != "dense_rob":
        raise ConfigError(f"layout_of needs a dense_rob space, but settings.space names {space['name']!r}.")
    name = space.get("layout", "cellwise")
    return name if isinstance(name, Layout) else Layout.from_name(name)


def arch_from_json(data: str | bytes | Mapping[str, Any], space: Mapping[str, Any]) -> Any:
    """Parse an exported architecture of ``space``'s kind.

    Returns:
        A :class:`DenseRobArch` (``dense_rob``) or a
        :class:`nni_robust.spaces.darts.DartsArch` (``darts``, ``dsara``).

    Raises:
        ArchitectureError: malformed architecture JSON.
        ConfigError: unknown space name.
    """
    if space_name(space) == "dense_rob":
        return DenseRobArch.from_json(data)
    from nni_robust.spaces.darts import DartsArch

    return DartsArch.from_json(data)


def build_network(arch: Any, *, width: int, info: DatasetInfo, space: Mapping[str, Any]) -> nn.Module:
    """A network of the settings' space with init channels ``width`` for dataset ``info``.

    Args:
        arch: the architecture (:class:`DenseRobArch` or ``DartsArch``), or
            ``None`` for the space's supernet (dense_rob: the weight-sharing
            supernet; darts/dsara: the continuous relaxation).
        width: init channels C.
        info: dataset description (classes, channels, input size, mean/std).
        space: the settings ``space`` dict. ``dense_rob``: extra keyword
            arguments of :class:`DenseRobNetwork`, with ``layout`` given by
            name (``cellwise``, ``stagewise``, ...). ``darts``/``dsara``: the
            keys of :func:`nni_robust.spaces.darts.build_darts_space`.
    """
    if isinstance(width, bool) or int(width) != width or int(width) < 1:
        raise ConfigError(f"width (init channels) must be a positive integer, but got {width!r}.")
    if space_name(space) != "dense_rob":
        from nni_robust.spaces.darts import build_darts_space

        return build_darts_space(space, info, int(width), arch=arch)
    kwargs = {k: v for k, v in space.items() if k != "name"}
    kwargs["layout"] = layout_of(space)
    return DenseRobNetwork(arch, init_channels=int(width), num_classes=info.num_classes,
                           in_channels=info.channels, input_size=info.size,
                           mean=info.mean, std=info.std, **kwargs)
