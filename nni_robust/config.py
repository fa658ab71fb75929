"""Typed settings: frozen dataclasses built from dicts/YAML that reject unknown keys."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, TypeVar

from .errors import ConfigError

__all__ = ["from_dict", "check_keys", "check_choice", "check_range"]

T = TypeVar("T")


def check_keys(given: Mapping[str, Any], allowed: list[str] | tuple[str, ...] | set[str], where: str) -> None:
    """Raise :class:`ConfigError` naming the first key of ``given`` not in ``allowed``."""
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"Unknown key {key!r} in {where}.{hint} Valid keys: {', '.join(sorted(allowed))}."
            )


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are a :class:`ConfigError`.

    Nested dataclass fields are built recursively from nested mappings.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    where = where or cls.__name__
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, list(fields), where)
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = _dataclass_type(ftype, cls)
        if sub is not None and isinstance(value, Mapping):
            value = from_dict(sub, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"Invalid {where}: {exc}") from exc


def _dataclass_type(ftype: Any, owner: type) -> type | None:
    if isinstance(ftype, str):
        import sys

        module = sys.modules.get(owner.__module__)
        ftype = getattr(module, ftype, None) if module else None
    return ftype if dataclasses.is_dataclass(ftype) else None


def check_choice(name: str, value: Any, valid: list | tuple) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{name} must be one of {list(valid)}, but got {value!r}.")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (or strict where *_open)."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(
            f"{name} must lie in {lo}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}{hi}, but got {value!r}."
        )
