"""The differentiable methods by name: ``method: dsara | rnas`` of the YAML's ``strategy_args``."""

from __future__ import annotations

from typing import Any, Mapping

from nni_robust.config import check_choice, from_dict
from nni_robust.errors import ConfigError

from .bilevel import SearchConfig, SearchMethod
from .dsara import DsaraConfig, DsaraMethod
from .rnas import RnasConfig, RnasMethod

__all__ = ["METHODS", "search_config", "build_method"]

METHODS: dict[str, type[SearchConfig]] = {"dsara": DsaraConfig, "rnas": RnasConfig}
"""Method name -> its config class."""


def search_config(method: str | Mapping[str, Any], args: Mapping[str, Any] | None = None) -> SearchConfig:
    """Build a method's config from a name and a dict of its settings (YAML ``method_args``).

    ``search_config({"method": "rnas", "variant": "uniform"})`` works as well.

    Raises:
        ConfigError: unknown method or setting (the message names it and the valid ones).
    """
    if isinstance(method, Mapping):
        if args is not None:
            raise ConfigError("search_config: give the settings inside the dict or as args, not both.")
        args = {k: v for k, v in method.items() if k != "method"}
        method = method.get("method")
    check_choice("method", method, tuple(METHODS))
    return from_dict(METHODS[method], dict(args or {}), f"the settings of method {method!r}")


_METHOD_OF: dict[type[SearchConfig], type[SearchMethod]] = {DsaraConfig: DsaraMethod, RnasConfig: RnasMethod}


def build_method(config: SearchConfig) -> SearchMethod:
    """The :class:`SearchMethod` of a config."""
    cls = _METHOD_OF.get(type(config))
    if cls is None:
        raise ConfigError(f"No search method for config {type(config).__name__}; valid: {sorted(METHODS)}.")
    return cls(config)
