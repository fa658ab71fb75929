"""What the cell spaces share (:mod:`.darts`, :mod:`.dense_rob`, :mod:`.abandit`, :mod:`.nb201`).

* The two-input cell of DARTS and of the dense robust cell: 2 input nodes and
  4 intermediate nodes, node ``j`` (2..5) fed by every earlier node ``i < j``,
  so 14 edges in the order ``(j=2,i=0), (2,1), (3,0), ... (5,4)``
  (:data:`EDGES`, as DARTS enumerates them).
* Argument checks (:func:`is_int`, :func:`check_primitives`,
  :func:`check_network_sizes`), the seeded generator of the ``random``
  constructors (:func:`as_rng`), the checks of an NNI sample's labels
  (:func:`check_labels`, :func:`check_complete`) and of architecture JSON
  (:func:`json_object`).
* :class:`LayoutBase`: what the frozen layout dataclasses share;
  :class:`ArchBase`: equality, hashing, pickling, ``repr`` and ``to_json`` of
  the frozen architecture dataclasses; :func:`check_pair`: one ``(op, input)``
  pair of a node of a final cell; :class:`PathDropout`: the checked
  ``drop_path_prob`` of the evaluation networks; :func:`build_from_settings`:
  the supernet or the network of a settings ``space`` dict.

Not a space (the space registry skips modules starting with ``_``).
"""

from __future__ import annotations

import dataclasses
import json
import random as _random
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from nni_robust.errors import ArchitectureError, ConfigError, did_you_mean

from .ops import OPS

__all__ = ["NUM_INPUT_NODES", "NUM_STEPS", "EDGES", "NUM_EDGES", "is_int", "as_rng", "check_primitives",
           "check_labels", "check_complete", "json_object", "check_network_sizes", "check_pair", "LayoutBase",
           "ArchBase", "PathDropout", "build_from_settings"]

NUM_INPUT_NODES = 2
NUM_STEPS = 4
#: ``(j, i)`` = (to-node, from-node) of the 14 edges, in the canonical order.
EDGES: tuple[tuple[int, int], ...] = tuple(
    (j, i) for j in range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS) for i in range(j))
NUM_EDGES = len(EDGES)  # 14


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_rng(rng: Any, *needs: str) -> Any:
    """The generator of a ``random(rng=...)`` constructor.

    ``None`` gives a fresh unseeded ``random.Random``, an int a ``random.Random``
    seeded with it; any other object is used as it is when it has ``choice``
    and every method named in ``needs`` (e.g. ``"sample"``, ``"randrange"``).

    Raises:
        ConfigError: anything else.
    """
    if rng is None:
        return _random.Random()
    if is_int(rng):
        return _random.Random(rng)
    if all(hasattr(rng, method) for method in ("choice",) + needs):
        return rng
    raise ConfigError(f"rng must be a random.Random, an int seed or None, but got {rng!r}.")


def check_primitives(primitives: Any, error: type[Exception] = ConfigError, *, allow_none: bool) -> tuple[str, ...]:
    """``primitives`` as a tuple of distinct registered op names (:data:`.ops.OPS`).

    Args:
        primitives: The op vocabulary.
        error: The exception class raised.
        allow_none: Whether ``none`` may be one of them (DARTS: yes, with at
            least one other op; ABanditNAS: no).
    """
    if isinstance(primitives, str) or not isinstance(primitives, Sequence) or not primitives:
        raise error(f"primitives must be a non-empty sequence of op names, but got {primitives!r}.")
    prims = tuple(primitives)
    for op in prims:
        if op not in OPS or (op == "none" and not allow_none):
            valid = f"Registered operations: {sorted(OPS)}" if allow_none else \
                f"Valid operations: {sorted(k for k in OPS if k != 'none')}"
            raise error(f"Unknown operation {op!r} in primitives.{did_you_mean(op, OPS)} {valid}.")
    if len(set(prims)) != len(prims):
        raise error(f"primitives must be distinct, but got {list(prims)}.")
    if all(op == "none" for op in prims):
        raise error(f"primitives need at least one operation besides 'none', but got {list(prims)}.")
    return prims


def check_labels(labels: Iterable[Any], known: Collection[str], *, where: str, looks_like: str,
                 allowed: Collection[str] = ()) -> None:
    """Raise on the first of ``labels`` that is neither in ``known`` nor in ``allowed``.

    The message reads ``Unknown label 'x'{where}. Did you mean ...? Labels look like {looks_like}.``

    Raises:
        ArchitectureError: an unknown label.
    """
    for label in labels:
        if label not in known and label not in allowed:
            raise ArchitectureError(f"Unknown label {label!r}{where}.{did_you_mean(label, known)} Labels look like "
                                    f"{looks_like}.")


def check_complete(sample: Mapping[str, Any], known: Iterable[str], *, where: str, expected: str) -> None:
    """Raise when ``sample`` lacks labels of ``known`` (the first four are named).

    The message reads ``Missing labels [...]{where} ({expected}).``

    Raises:
        ArchitectureError: missing labels.
    """
    missing = [label for label in known if label not in sample]
    if missing:
        raise ArchitectureError(f"Missing labels {missing[:4]}{' ...' if len(missing) > 4 else ''}{where} "
                                f"({expected}).")


def json_object(data: "str | bytes | Mapping[str, Any]", what: str = "Architecture JSON") -> Mapping[str, Any]:
    """``data`` parsed when it is text, checked to be a JSON object.

    Raises:
        ArchitectureError: ``{what} does not parse`` or ``{what} must be an object``.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"{what} does not parse: {exc}.") from exc
    if not isinstance(data, Mapping):
        raise ArchitectureError(f"{what} must be an object, but got {data!r}.")
    return data


def check_network_sizes(layout: Any, **sizes: Any) -> None:
    """Every keyword of ``sizes`` an int >= 1, and ``sizes["input_size"]`` large enough for the
    reductions of ``layout`` (a :class:`~.darts.DartsLayout`).

    Raises:
        ConfigError: a bad size (named).
    """
    for name, value in sizes.items():
        if not is_int(value) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1, but got {value!r}.")
    input_size, reductions = sizes["input_size"], len(layout.reductions)
    if input_size < 2 ** reductions:
        raise ConfigError(f"input_size={input_size} is too small for the {reductions} reductions of layout "
                          f"{layout.name!r} (needs >= {2 ** reductions}).")


def check_pair(pair: Any, j: int, ops: Sequence[str], where: str, *, takes: str = "an input",
               none_error: str | None = None) -> tuple[str, int]:
    """One ``(op, input)`` pair of node ``j`` of a final cell, as ``(str, int)``: an op among ``ops``
    and an input in ``[0, j - 1]``.

    Args:
        pair: The pair (a tuple or a JSON list).
        j: The node.
        ops: The valid operations.
        where: What the messages start with (e.g. ``cell 'normal', node 2, pair 0``).
        takes: How the range message names the input (``node 2 takes {takes} in [0, 1]``).
        none_error: When given, the message (after ``where``) for the op ``none``.

    Raises:
        ArchitectureError: not a pair, an unknown op, an input out of range.
    """
    if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ArchitectureError(f"{where}: expected an (op, input) pair, but got {pair!r}.")
    op, src = pair
    if op == "none" and none_error is not None:
        raise ArchitectureError(f"{where}: {none_error}")
    if op not in ops:
        raise ArchitectureError(f"{where}: unknown operation {op!r}.{did_you_mean(op, ops)} Valid operations: "
                                f"{list(ops)}.")
    if not is_int(src) or not 0 <= src < j:
        raise ArchitectureError(f"{where}: input {src!r} is out of range; node {j} takes {takes} in [0, {j - 1}].")
    return str(op), int(src)


class LayoutBase:
    """What the frozen layout dataclasses share: fields ``name`` (first), ``cells`` (a cell type per
    position), ``reductions`` (positions), maybe more (tuples), and a ``from_name`` classmethod."""

    @property
    def num_cells(self) -> int:
        """Number of cells."""
        return len(self.cells)  # type: ignore[attr-defined]

    def is_reduction(self, position: int) -> bool:
        """Whether the cell at ``position`` reduces."""
        return position in self.reductions  # type: ignore[attr-defined]

    def to_json_value(self) -> str | dict[str, Any]:
        """The layout's name when :meth:`from_name` rebuilds it, else an explicit dict."""
        try:
            if type(self).from_name(self.name) == self:  # type: ignore[attr-defined]
                return self.name  # type: ignore[attr-defined]
        except ConfigError:
            pass
        return {f.name: getattr(self, f.name) if f.name == "name" else list(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.name  # type: ignore[attr-defined]


class ArchBase:
    """Identity, pickling and JSON text of a frozen architecture dataclass (``eq=False``).

    The subclass's ``__post_init__`` sets ``_key`` (what equality and hashing
    compare, e.g. the cells regardless of their order) and its first field is
    ``cells`` (a mapping); :meth:`to_json` dumps the subclass's ``to_dict()``.
    """

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key)  # type: ignore[attr-defined]

    def __reduce__(self):
        return (self.__class__, tuple(dict(self.cells) if f.name == "cells" else getattr(self, f.name)  # type: ignore
                                      for f in dataclasses.fields(self)))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self})"

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)  # type: ignore[attr-defined]


class PathDropout:
    """The ``drop_path_prob`` attribute of an evaluation network: checked, a float in ``[0, 1)``.

    The trainer changes it every epoch (``drop_path_prob * epoch / epochs``). Under
    ``torch.compile`` (``TrainConfig.compile``) a float attribute that the forward pass reads
    becomes a constant of the compiled graph, guarded by its value: each epoch's new value
    recompiled the network, and after ``torch._dynamo.config.recompile_limit`` (8) recompilations
    it fell back to eager without saying so. The compiled forward pass therefore reads the
    probability from a 0-dim buffer (``_drop_path_rate``, not saved in the state dict, updated
    in place) and guards only on whether it is positive (:meth:`_drop_prob_arg`); the eager pass
    reads the float, as before.
    """

    @property
    def drop_path_prob(self) -> float:
        """Path-dropout probability (training mode only)."""
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ConfigError(f"drop_path_prob must lie in [0, 1), but got {value!r}.")
        import torch

        self._drop_path_prob = float(value)
        self._drop_path_on = value > 0
        rate = getattr(self, "_drop_path_rate", None)
        if rate is None:
            self.register_buffer("_drop_path_rate", torch.tensor(float(value)), persistent=False)
        else:
            with torch.no_grad():
                rate.fill_(float(value))

    def _drop_prob_arg(self) -> Any:
        """The probability the cells get: the float eagerly; under ``torch.compile`` the buffer
        (or ``0.0`` when path dropout is off), so that the graph does not depend on its value."""
        import torch

        if torch.compiler.is_compiling():
            return self._drop_path_rate if self._drop_path_on else 0.0
        return self._drop_path_prob


def build_from_settings(space: Mapping[str, Any], info: Any, init_channels: int, arch: Any, *, layout: Any,
                        primitives: Sequence[str], supernet: Callable[..., Any], supernet_keys: Sequence[str],
                        network: Callable[..., Any], network_keys: Sequence[str],
                        parse_arch: Callable[[Any], Any]) -> Any:
    """``supernet(...)`` when ``arch`` is ``None``, else ``network(arch, ...)`` (``arch`` given as
    JSON text or dict is parsed with ``parse_arch``), on ``layout`` for the dataset ``info``, with
    the keys of ``space`` that each accepts (``supernet_keys``, ``network_keys``; others are ignored,
    so one settings dict serves the search and the final training)."""
    common = dict(layout=layout, init_channels=init_channels, num_classes=info.num_classes,
                  in_channels=info.channels, input_size=info.size, mean=info.mean, std=info.std)
    if arch is None:
        extra = {k: space[k] for k in supernet_keys if k in space}
        return supernet(primitives=primitives, **common, **extra)
    extra = {k: space[k] for k in network_keys if k in space}
    if isinstance(arch, (Mapping, str, bytes)):
        arch = parse_arch(arch)
    return network(arch, **common, **extra)
