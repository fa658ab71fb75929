"""Strategy states as JSON, never pickle: a tagged encoding of what search states hold.

A resumable search saves its state in its work dir; a state file that could
run code when loaded (a pickle) would make every shared work dir an attack
surface. States are therefore JSON. Plain JSON lacks tuples, sets, numpy
arrays and the small dataclasses some strategies keep (NNI's
``RegularizedEvolution`` keeps ``Individual`` records and a NumPy
``RandomState`` state tuple), so those are written as tagged objects and
rebuilt exactly; a dataclass is rebuilt only when its class was allowed with
:func:`allow_dataclass` (NNI's ``Individual`` is), never by importing whatever
a file names.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from typing import Any

import numpy as np

from .errors import CheckpointError

__all__ = ["dumps", "loads", "encode", "decode", "allow_dataclass"]

_ALLOWED: dict[str, type | None] = {"nni.nas.strategy.evolution.Individual": None}


def allow_dataclass(cls: type) -> type:
    """Allow instances of dataclass ``cls`` in states (usable as a decorator)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    _ALLOWED[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def encode(obj: Any) -> Any:
    """``obj`` as plain JSON values (tuples, sets, arrays, allowed dataclasses tagged).

    Raises:
        TypeError: an object of another type (named in the message).
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, np.generic):
        return encode(obj.item())
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v) for v in obj]}
    if isinstance(obj, (set, frozenset)):
        items = sorted((encode(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
        return {"__frozenset__" if isinstance(obj, frozenset) else "__set__": items}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v) for k, v in obj.items()}
        return {"__dict__": [[encode(k), encode(v)] for k, v in obj.items()]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        path = _path(type(obj))
        if path not in _ALLOWED:
            raise TypeError(f"dataclass {path} is not allowed in a JSON state (nni_robust.jsonstate.allow_dataclass)")
        return {"__dataclass__": path,
                "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    raise TypeError(f"a {type(obj).__module__}.{type(obj).__qualname__} cannot be saved in a JSON state")


def _dataclass(path: str) -> type:
    if path not in _ALLOWED:
        raise CheckpointError(f"state names dataclass {path!r}, which is not allowed "
                              f"(allowed: {sorted(_ALLOWED)}); it was not loaded.")
    cls = _ALLOWED[path]
    if cls is None:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        _ALLOWED[path] = cls
    return cls


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tuple__" in obj:
        return tuple(decode(v) for v in obj["__tuple__"])
    if "__set__" in obj:
        return {_hashable(decode(v)) for v in obj["__set__"]}
    if "__frozenset__" in obj:
        return frozenset(_hashable(decode(v)) for v in obj["__frozenset__"])
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__dict__" in obj:
        return {_hashable(decode(k)): decode(v) for k, v in obj["__dict__"]}
    if "__dataclass__" in obj:
        return _dataclass(obj["__dataclass__"])(**{k: decode(v) for k, v in obj["fields"].items()})
    return {k: decode(v) for k, v in obj.items()}


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def dumps(obj: Any, **kwargs: Any) -> str:
    """JSON text of ``obj`` (see :func:`encode`)."""
    return json.dumps(encode(obj), **kwargs)


def loads(text: str | bytes) -> Any:
    """The object :func:`dumps` wrote."""
    return decode(json.loads(text))
