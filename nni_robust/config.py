"""Typed settings: frozen dataclasses built from dicts/YAML that reject unknown keys."""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Mapping, TypeVar, Union

from .errors import ConfigError

__all__ = ["from_dict", "check_keys", "check_choice", "check_range", "check_type", "describe_type"]

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
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of settings, but got {data!r} ({type(data).__name__}).")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, list(fields), where)
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = _dataclass_type(ftype, cls)
        if sub is not None and isinstance(value, Mapping):
            value = from_dict(sub, value, f"{where}.{name}")
        elif name in hints:
            check_type(f"{where}.{name}", value, hints[name])
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"Invalid {where}: {exc}") from exc


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be evaluated: no type check for that class
        return {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__module__ == "numpy" and \
        hasattr(value, "dtype") and value.dtype.kind in "iu" and getattr(value, "ndim", 1) == 0


def _type_ok(value: Any, tp: Any) -> bool:
    if tp is Any or tp is object:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        try:
            return (_is_int(value) or isinstance(value, float) or type(value).__module__ == "numpy") \
                and not isinstance(value, bool) and math.isfinite(float(value))
        except (TypeError, ValueError):
            return False
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        return all(_type_ok(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        return not args or all(_type_ok(k, args[0]) and _type_ok(v, args[1]) for k, v in value.items())
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (tp, Mapping))
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # a typing construct we do not check


def describe_type(tp: Any) -> str:
    """A readable name of a type annotation (``an integer``, ``true or false``, ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return " or ".join(describe_type(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
             type(None): "null", Any: "anything"}
    if tp in names:
        return names[tp]
    if origin in (tuple, list, collections.abc.Sequence):
        inner = describe_type(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or tp in (dict, Mapping):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def check_type(name: str, value: Any, tp: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` has type ``tp`` (strictly: no bool for an int, no
    string for a bool or a number; an int is a number; a list stands for a tuple)."""
    if not _type_ok(value, tp):
        raise ConfigError(f"{name} must be {describe_type(tp)}, but got {value!r} ({type(value).__name__}).")


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
