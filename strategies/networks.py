"""Build the networks of a search space for a dataset (supernet or discrete), whatever the space.

A settings ``space`` dict names its space with ``name`` (``"dense_rob"``,
the dense robust cell of RobNet / MSRobNet, when absent); every space module
registers itself (:mod:`nni_robust.spaces.registry`), so the final training,
the evaluation and every method's trial code serve every space through
:func:`build_network`, :func:`arch_from_json` and :func:`arch_from_sample`.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from nni_robust.data import DatasetInfo
from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import layout_of
from nni_robust.spaces.registry import space_names, space_of

__all__ = ["build_network", "layout_of", "space_name", "arch_from_json", "arch_from_sample", "space_names"]


def space_name(space: Mapping[str, Any]) -> str:
    """The registered space a settings ``space`` dict names (``"dense_rob"`` when it has no ``name``).

    Raises:
        ConfigError: an unknown name.
    """
    return space_of(space).name


def arch_from_json(data: str | bytes | Mapping[str, Any], space: Mapping[str, Any]) -> Any:
    """Parse an exported architecture of the kind of ``space``.

    Raises:
        ArchitectureError: malformed architecture JSON.
        ConfigError: unknown space name.
    """
    return space_of(space).parse_arch(data)


def arch_from_sample(sample: Mapping[str, Any], space: Mapping[str, Any]) -> Any:
    """The architecture of an NNI sample (``{label: value}``) of the space ``space`` names."""
    return space_of(space).from_sample(sample, space)


def build_network(arch: Any, *, width: int, info: DatasetInfo, space: Mapping[str, Any]) -> nn.Module:
    """A network of the settings' space with init channels ``width`` for dataset ``info``.

    Args:
        arch: An architecture of the space, or ``None`` for its supernet
            (dense_rob: the weight-sharing supernet; darts/dsara: the
            continuous relaxation).
        width: init channels C.
        info: dataset description (classes, channels, input size, mean/std).
        space: the settings ``space`` dict; its keys are the space's own
            (see each space's ``build`` function).
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or int(width) != width or int(width) < 1:
        raise ConfigError(f"width (init channels) must be a positive integer, but got {width!r}.")
    return space_of(space).build(space, info, int(width), arch)
