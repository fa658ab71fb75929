"""What every space's NNI ``ModelSpace`` class shares, defined on first use (importing NNI takes seconds).

A space module writes only its ``__init__`` (which labelled choices it
registers, which architecture and network it builds from them) inside a
``define(base)`` function, and gets its class with :func:`lazy_space_class`:

.. code-block:: python

    def _define(base):
        class MySpace(base):
            def __init__(self, *, layout="x", **network_kwargs):
                super().__init__()
                chosen = {label: self.choose(label, OPS) for label in labels(layout)}
                self.arch = MyArch.from_sample(chosen)
                self.network = MyNetwork(self.arch, **network_kwargs)
        return MySpace

    _make_space_class = lazy_space_class(__name__, _define)
    __getattr__ = lazy_module_getattr(__name__, MySpace=_make_space_class)

The base gives :meth:`choose` (an ``nni.choice`` registered and frozen to the
current sample), ``forward`` (the network of the current sample) and
``freeze`` (the space rebuilt under ``model_context(sample)``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence

__all__ = ["arch_space_base", "lazy_space_class", "lazy_module_getattr"]

_BASE: type | None = None
_LOCK = threading.Lock()


def arch_space_base() -> type:
    """The shared base class (an NNI ``ModelSpace``), defined on the first call."""
    global _BASE
    with _LOCK:
        if _BASE is not None:
            return _BASE
        import nni
        from nni.mutable import ensure_frozen
        from nni.nas.nn.pytorch import ModelSpace
        from nni.nas.space import model_context

        class ArchModelSpace(ModelSpace, disable_init_wrapper=True):
            """An NNI model space whose ``__init__`` sets ``self.arch`` and ``self.network`` from its choices.

            Building the space registers the choices and builds the discrete
            network of the current sample (inside ``model_context(sample)``) or
            of the default sample (each choice's first value), never a supernet.
            """

            arch: Any
            network: Any

            def choose(self, label: str, values: Sequence[Any]) -> Any:
                """Register ``nni.choice(label, values)`` and return its value in the current sample."""
                return ensure_frozen(self.add_mutable(nni.choice(label, list(values))))

            def forward(self, x: Any) -> Any:
                return self.network(x)

            def freeze(self, sample: Mapping[str, Any]) -> Any:
                """The space rebuilt with the architecture of ``sample`` (fresh weights)."""
                with model_context(dict(sample)):
                    return self.__class__(*self.trace_args, **self.trace_kwargs)

        ArchModelSpace.__module__ = __name__
        ArchModelSpace.__qualname__ = "ArchModelSpace"
        _BASE = ArchModelSpace
        return _BASE


def lazy_space_class(module: str, define: Callable[[type], type]) -> Callable[[], type]:
    """A function returning ``define(arch_space_base())``, defined once, with ``__module__ = module``."""
    cache: list[type] = []
    lock = threading.Lock()

    def make() -> type:
        with lock:
            if not cache:
                cls = define(arch_space_base())
                cls.__module__ = module
                cls.__qualname__ = cls.__name__
                cache.append(cls)
            return cache[0]

    return make


def lazy_module_getattr(module: str, **lazy: Callable[[], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that answers each name of ``lazy`` with its function's result,
    computed on access (e.g. the NNI space class), and raises ``AttributeError`` for any other name."""

    def __getattr__(name: str) -> Any:
        if name in lazy:
            return lazy[name]()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
