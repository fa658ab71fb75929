"""The search spaces by name: each space module registers itself; nothing above dispatches on names.

A settings ``space`` dict (``{"name": "dense_rob", "layout": "cellwise"}``,
``{"name": "darts", "num_cells": 8}``, ...) names one registered
:class:`SpaceKind`; the trial code builds its networks and parses its
architectures through :func:`get_space`, so adding a space means adding one
module to ``spaces/`` that calls :func:`register_space` at import time, and
nothing else (as timm registers its models). :func:`discover` imports every
module of this package once, on the first look-up of an unknown name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from nni_robust.discovery import Discovery
from nni_robust.errors import ConfigError, did_you_mean

__all__ = ["SpaceKind", "register_space", "get_space", "space_names", "space_of", "kind_of_arch", "discover",
           "import_errors", "DEFAULT_SPACE"]

#: The space a settings ``space`` dict without ``name`` means.
DEFAULT_SPACE = "dense_rob"


@dataclasses.dataclass(frozen=True)
class SpaceKind:
    """What the project needs of one search space.

    Args:
        name: The ``name`` of a settings ``space`` dict.
        build: ``build(space, info, init_channels, arch)`` -> ``nn.Module``: the
            network of ``arch`` for a :class:`nni_robust.data.DatasetInfo`, or
            the space's supernet when ``arch`` is ``None``. ``space`` is the whole
            settings dict (its keys are the space's own; unknown keys are errors).
        parse_arch: ``parse_arch(data)`` -> architecture, from its JSON (str,
            bytes or dict); raises :class:`~nni_robust.errors.ArchitectureError`.
        from_sample: ``from_sample(sample, space)`` -> architecture, from an NNI
            sample (``{label: value}``) of the space's model space.
        arch_type: The architecture class (``to_json()``; :func:`kind_of_arch`).
        model_space: Dotted path of the NNI model-space factory (imported only
            by the tuner: NNI takes seconds to import).
        doc: One line for listings.
    """

    name: str
    build: Callable[..., Any]
    parse_arch: Callable[[Any], Any]
    from_sample: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    arch_type: type
    model_space: str
    doc: str = ""


_REGISTRY: dict[str, SpaceKind] = {}


def register_space(kind: SpaceKind) -> SpaceKind:
    """Register ``kind`` under its name (called by the space's own module at import).

    Raises:
        ConfigError: another space already has that name.
    """
    old = _REGISTRY.get(kind.name)
    if old is not None and old != kind:
        raise ConfigError(f"Space name {kind.name!r} is registered twice ({old.model_space} and {kind.model_space}).")
    _REGISTRY[kind.name] = kind
    return kind


_DISCOVERY = Discovery(__name__.rpartition(".")[0], packages_only=False, what="spaces")
#: ``discover()``: import every module of ``nni_robust.spaces`` once, so that each registers itself.
discover = _DISCOVERY.run
#: ``import_errors()``: modules that failed to import during :func:`discover` (module -> error).
import_errors = _DISCOVERY.errors


def space_names() -> list[str]:
    """Names of every registered space, sorted."""
    discover()
    return sorted(_REGISTRY)


def get_space(name: str) -> SpaceKind:
    """The registered space ``name``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones and close matches).
    """
    if name not in _REGISTRY:
        discover()
    if name not in _REGISTRY:
        raise ConfigError(f"settings.space.name must be one of {sorted(_REGISTRY)}, but got {name!r}."
                          f"{did_you_mean(name, _REGISTRY, n=3)}{_DISCOVERY.hint()}")
    return _REGISTRY[name]


def space_of(space: Mapping[str, Any]) -> SpaceKind:
    """The :class:`SpaceKind` a settings ``space`` dict names (:data:`DEFAULT_SPACE` without ``name``).

    Raises:
        ConfigError: ``space`` is not a dict, or names an unknown space.
    """
    if not isinstance(space, Mapping):
        raise ConfigError(f"settings.space must be a dict with a 'name' (one of {space_names()}), "
                          f"but got {space!r}.")
    return get_space(space.get("name", DEFAULT_SPACE))


def kind_of_arch(arch: Any) -> SpaceKind:
    """The first registered space (by name) whose architecture class ``arch`` is.

    Raises:
        ConfigError: no registered space has that architecture class.
    """
    discover()
    for name in sorted(_REGISTRY):
        if isinstance(arch, _REGISTRY[name].arch_type):
            return _REGISTRY[name]
    raise ConfigError(f"{type(arch).__name__} is the architecture of no registered space ({space_names()}).")
