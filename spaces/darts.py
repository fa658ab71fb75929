"""The DARTS cell search space, generic over cell types, their placement and widths.

A DARTS cell (Liu et al., "DARTS: Differentiable Architecture Search", ICLR
2019, Sec. 2.1) has 2 input nodes (the outputs of the two previous cells,
pre-processed to ``C`` channels) and 4 intermediate nodes; intermediate node
``j`` (2..5) may take an edge from every earlier node ``i < j``, so the cell
has 2 + 3 + 4 + 5 = 14 edges, ordered ``(j=2,i=0), (2,1), (3,0), (3,1),
(3,2), (4,0) ... (5,4)`` (as in :mod:`.dense_rob`, and as DARTS enumerates
them). The cell output concatenates the 4 intermediate nodes (``4 C``
channels). The candidate operations are :data:`PRIMITIVES` in DARTS's order.

* Search (continuous relaxation, DARTS Sec. 2.2): every edge is a mixed
  operation ``sum_k softmax(alpha)_k op_k(x)``; one ``alpha`` of shape
  ``(14, len(primitives))`` per distinct cell type. :class:`DartsSupernet`.
* Derivation (DARTS Sec. 2.4): each intermediate node keeps the 2 incoming
  edges whose strongest non-``none`` op weighs most, each with its argmax
  non-``none`` op. :meth:`DartsSupernet.derive` -> :class:`DartsArch`
  (a DARTS genotype: per cell type 8 ``(op, input)`` pairs).
* Evaluation network (DARTS Sec. 3.2): only the chosen ops, affine BN,
  optional path dropout and auxiliary head. :class:`DartsNetwork`.

DARTS has one "normal" and one "reduce" cell type; DSARA (Zhang et al.,
"Differentiable Search of Accurate and Robust Architectures", Sec. 4.2,
:mod:`.dsara`) has "accurate", "robust" and "reduce" cells in a fixed
placement with non-doubling widths. :class:`DartsLayout` expresses both: a
cell type, a reduction flag and a channel multiplier per cell position.
RNAS (Zhu et al., "Robust Neural Architecture Search", Sec. 4.1) searches
the plain DARTS space (8 cells, a normal and a reduction cell).

Main names: :data:`PRIMITIVES`, :class:`DartsLayout`, :class:`DartsArch`,
:class:`DartsSupernet`, :class:`DartsNetwork`, ``DartsSpace`` (NNI 3.0
``ModelSpace``; defined lazily because importing NNI is slow),
:func:`build_darts_space`, :func:`darts_choices`.
"""

from __future__ import annotations

import ast
import itertools
import logging
import random as _random
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.config import check_keys
from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.models import Normalize

from ._common import (EDGES, NUM_EDGES, NUM_INPUT_NODES, NUM_STEPS, ArchBase, LayoutBase, PathDropout, as_rng,
                      build_from_settings, check_complete, check_labels, check_network_sizes, check_pair,
                      check_primitives, is_int, json_object)
from .nni_space import lazy_module_getattr, lazy_space_class
from .ops import OPS, FactorizedReduce, ReLUConvBN, build_op
from .registry import SpaceKind, register_space

__all__ = [
    "PRIMITIVES",
    "EDGES",
    "NUM_EDGES",
    "NUM_INPUT_NODES",
    "NUM_STEPS",
    "DartsLayout",
    "DartsArch",
    "darts_choices",
    "MixedOp",
    "DartsSearchCell",
    "DartsSupernet",
    "DartsCell",
    "AuxiliaryHead",
    "DartsNetwork",
    "DartsSpace",
    "drop_path",
    "space_layout",
    "build_darts_space",
    "register_layout_family",
    "arch_from_sample",
    "SPACE_KEYS",
]

logger = logging.getLogger(__name__)

#: The DARTS operations in DARTS's order (``genotypes.PRIMITIVES`` of the
#: DARTS code; DARTS Sec. 3.1.1 lists them: zero, 3x3 max / avg pooling,
#: identity, 3x3 and 5x5 separable convs, 3x3 and 5x5 dilated separable convs).
PRIMITIVES: tuple[str, ...] = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                               "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# NUM_INPUT_NODES, NUM_STEPS, EDGES ((j, i) = (to-node, from-node) of the 14 edges, in the canonical
# order) and NUM_EDGES come from ._common: the dense robust cell has the same 14 edges.
_NODES = tuple(range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS))
_NODE_START = {j: sum(range(NUM_INPUT_NODES, j)) for j in _NODES}  # first edge index of node j
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- validation helpers


def _check_cell_type(name: Any, where: str, error: type[Exception] = ConfigError) -> str:
    if not isinstance(name, str) or not _TYPE_RE.match(name):
        raise error(f"{where}: cell type names must match {_TYPE_RE.pattern} (letters, digits, '_'), "
                    f"but got {name!r}.")
    return name


def _check_primitives(primitives: Any, error: type[Exception] = ConfigError) -> tuple[str, ...]:
    return check_primitives(primitives, error, allow_none=True)


def _check_inputs_per_node(k: Any, error: type[Exception] = ConfigError) -> int:
    if not is_int(k) or not 1 <= k <= NUM_INPUT_NODES:
        raise error(f"inputs_per_node must be 1 or 2 (DARTS: 2), but got {k!r}.")
    return k


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class DartsLayout(LayoutBase):
    """Which cell type each position uses, which positions reduce, and their widths.

    Args:
        name: A name (``darts`` and ``darts-N`` parse back with :meth:`from_name`).
        cells: Cell type name of every position (``len`` = number of cells).
            Positions sharing a type share its architecture (and, in the
            supernet, its ``alpha``).
        reductions: Positions of the reduction cells (stride 2 on the edges
            leaving the input nodes).
        multipliers: Per position, the cell's channels ``C_cell`` as a
            multiple of the initial channels ``C`` (DARTS doubles them at
            each reduction: 1, 2, 4).

    Raises:
        ConfigError: empty layout, bad type names, reductions out of range,
            multipliers not positive ints or of the wrong length, or a cell
            type used both at a reduction and at a normal position.
    """

    name: str
    cells: tuple[str, ...]
    reductions: tuple[int, ...]
    multipliers: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("cells", "reductions", "multipliers"):
            value = getattr(self, field)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"DartsLayout {self.name!r}: {field} must be a sequence, but got {value!r}.")
            object.__setattr__(self, field, tuple(value))
        if not self.cells:
            raise ConfigError(f"DartsLayout {self.name!r} needs at least one cell, but got none.")
        for t in self.cells:
            _check_cell_type(t, f"DartsLayout {self.name!r}")
        n = len(self.cells)
        red = self.reductions
        if any(not is_int(r) for r in red) or list(red) != sorted(set(red)) or any(not 0 <= r < n for r in red):
            raise ConfigError(f"DartsLayout {self.name!r}: reductions must be increasing distinct positions in "
                              f"[0, {n - 1}], but got {list(red)}.")
        if len(self.multipliers) != n or any(not is_int(m) or m < 1 for m in self.multipliers):
            raise ConfigError(f"DartsLayout {self.name!r}: multipliers must be {n} positive ints (one per "
                              f"cell), but got {list(self.multipliers)}.")
        for t in self.cell_types:
            kinds = {p in red for p, c in enumerate(self.cells) if c == t}
            if len(kinds) > 1:
                raise ConfigError(f"DartsLayout {self.name!r}: cell type {t!r} is used both at reduction and at "
                                  f"normal positions; a cell type is one or the other.")

    # ---- properties (num_cells, is_reduction, to_json_value, str: LayoutBase)
    @property
    def cell_types(self) -> tuple[str, ...]:
        """Distinct cell types in order of first appearance."""
        return tuple(dict.fromkeys(self.cells))

    @property
    def reduces(self) -> tuple[bool, ...]:
        """Per position, whether the cell reduces."""
        return tuple(p in self.reductions for p in range(self.num_cells))

    @property
    def reduction_types(self) -> tuple[str, ...]:
        """The cell types of the reduction positions (distinct, in order)."""
        return tuple(dict.fromkeys(self.cells[p] for p in self.reductions))

    def channels(self, init_channels: int) -> tuple[int, ...]:
        """``C_cell`` of every position for initial channels ``init_channels``."""
        return tuple(init_channels * m for m in self.multipliers)

    def stages(self) -> tuple[tuple[int, ...], ...]:
        """Positions grouped into stages: a new stage starts at every reduction cell."""
        out: list[list[int]] = [[]]
        for p in range(self.num_cells):
            if p in self.reductions and out[-1]:
                out.append([])
            out[-1].append(p)
        return tuple(tuple(s) for s in out)

    def stage_channels(self, init_channels: int) -> tuple[int, ...]:
        """Per stage, the channels of its last cell (all cells of a stage share them in the
        layouts of :meth:`build`): e.g. DARTS ``(C, 2C, 4C)``, DSARA ``(C, 2C, 2C)``."""
        ch = self.channels(init_channels)
        return tuple(ch[s[-1]] for s in self.stages())

    # ---- constructors
    @classmethod
    def build(cls, num_cells: int = 8, placement: Sequence[str] = ("normal", "normal", "normal"),
              filters: Sequence[int] = (1, 2, 4), *, reduce_type: str = "reduce",
              name: str | None = None) -> "DartsLayout":
        """Three stages separated by two reduction cells at ``n // 3`` and ``2 n // 3``.

        The NASNet/DARTS macro structure (DARTS Sec. 3.1.1; DSARA Sec. 4.2):
        stage 0 = the positions before the first reduction, stage 1 = the
        first reduction cell and the positions up to the second, stage 2 =
        the second reduction cell and the rest.

        Args:
            num_cells: Number of cells (>= 3; DARTS search 8, evaluation 20).
            placement: Cell type of the normal cells of each of the 3 stages.
            filters: Channel multiplier of each stage (reduction cells take
                their stage's multiplier): DARTS ``(1, 2, 4)``, DSARA ``(1, 2, 2)``.
            reduce_type: Cell type of the two reduction cells.
            name: Layout name (default derived from the arguments).

        Raises:
            ConfigError: bad arguments.
        """
        if not is_int(num_cells) or num_cells < 3:
            raise ConfigError(f"num_cells must be an int >= 3 (two reductions at n//3 and 2n//3), but got "
                              f"{num_cells!r}.")
        if isinstance(placement, str) or not isinstance(placement, Sequence) or len(placement) != 3:
            raise ConfigError(f"placement must give the cell type of each of the 3 stages, but got {placement!r}.")
        if isinstance(filters, str) or not isinstance(filters, Sequence) or len(filters) != 3 or \
                any(not is_int(f) or f < 1 for f in filters):
            raise ConfigError(f"filters must be 3 positive ints (the channel multiplier of each stage), but got "
                              f"{filters!r}.")
        for t in placement:
            _check_cell_type(t, "placement")
        _check_cell_type(reduce_type, "reduce_type")
        if reduce_type in placement:
            raise ConfigError(f"reduce_type {reduce_type!r} must differ from the normal cell types {list(placement)}.")
        r1, r2 = num_cells // 3, 2 * num_cells // 3
        cells, mults = [], []
        for p in range(num_cells):
            stage = 0 if p < r1 else (1 if p < r2 else 2)
            cells.append(reduce_type if p in (r1, r2) else placement[stage])
            mults.append(int(filters[stage]))
        if name is None:
            if tuple(placement) == ("normal",) * 3 and tuple(filters) == (1, 2, 4) and reduce_type == "reduce":
                name = "darts" if num_cells == 8 else f"darts-{num_cells}"
            else:
                name = (f"{'-'.join(placement)}/{'-'.join(str(f) for f in filters)}"
                        f"/{reduce_type}-{num_cells}")
        return cls(name, tuple(cells), (r1, r2), tuple(mults))

    @classmethod
    def darts(cls, num_cells: int = 8) -> "DartsLayout":
        """DARTS: normal cells, reductions at ``n // 3`` and ``2 n // 3``, filters 1-2-4
        (DARTS Sec. 3.1.1 / 3.2: 8 cells for search, 20 for evaluation)."""
        return cls.build(num_cells)

    @classmethod
    def from_name(cls, name: "str | DartsLayout") -> "DartsLayout":
        """Parse ``darts`` or ``darts-N``.

        Raises:
            ConfigError: an unknown name.
        """
        if isinstance(name, DartsLayout):
            return name
        m = re.fullmatch(r"darts(?:-(\d+))?", str(name).strip().lower())
        if m:
            return cls.darts(int(m.group(1)) if m.group(1) else 8)
        raise ConfigError(f"Unknown DARTS layout name {name!r}; valid names: 'darts', 'darts-N', or pass a "
                          f"layout dict {{'cells', 'reductions', 'multipliers'}}.")

    @classmethod
    def from_json_value(cls, value: "str | Mapping[str, Any] | DartsLayout") -> "DartsLayout":
        """Inverse of :meth:`to_json_value`.

        Raises:
            ConfigError: malformed value.
        """
        if isinstance(value, (str, DartsLayout)):
            return cls.from_name(value)
        if isinstance(value, Mapping):
            check_keys(value, ("name", "cells", "reductions", "multipliers"), "a DARTS layout dict")
            missing = [k for k in ("cells", "reductions", "multipliers") if k not in value]
            if missing:
                raise ConfigError(f"A DARTS layout dict needs keys {missing} too; got {sorted(value)}.")
            return cls(str(value.get("name", "custom")), value["cells"], value["reductions"], value["multipliers"])
        raise ConfigError(f"A DARTS layout must be a DartsLayout, a name or a dict, but got {value!r}.")


# --------------------------------------------------------------------------- architecture


def darts_choices(cell_types: Sequence[str], primitives: Sequence[str] = PRIMITIVES,
                  inputs_per_node: int = 2) -> dict[str, tuple[Any, ...]]:
    """The discrete choices of the space, ``{label: candidate values}``, in a fixed order.

    Per cell type ``t`` and intermediate node ``j`` (2..5): ``f"{t}_n{j}_inputs"``
    chooses the node's set of inputs, encoded ``"i,k"`` (``i < k < j``; one
    input: ``"i"``), and ``f"{t}_n{j}_op{m}"`` (``m < inputs_per_node``) the op
    on its ``m``-th input in increasing order, one of ``primitives`` without
    ``none`` (a derived DARTS cell never holds ``none``). The input choice
    is made before the op choices, so the ops are those on the chosen edges.
    """
    k = _check_inputs_per_node(inputs_per_node)
    prims = _check_primitives(primitives)
    ops = tuple(op for op in prims if op != "none")
    out: dict[str, tuple[Any, ...]] = {}
    for t in cell_types:
        _check_cell_type(t, "darts_choices")
        for j in _NODES:
            out[f"{t}_n{j}_inputs"] = tuple(",".join(str(i) for i in c) for c in itertools.combinations(range(j), k))
            for m in range(k):
                out[f"{t}_n{j}_op{m}"] = ops
    return out


@dataclass(frozen=True, eq=False, repr=False)
class DartsArch(ArchBase):
    """One discrete DARTS architecture (a genotype): per cell type, ``inputs_per_node``
    ``(op, input)`` pairs per intermediate node.

    Args:
        cells: ``{cell type: pairs}``; ``pairs`` lists ``4 * inputs_per_node``
            ``(op, input)`` pairs, node 2's first, then node 3's, ... (the
            DARTS genotype order). ``input`` indexes the node's earlier nodes
            (0, 1 = the cell inputs, 2.. = intermediate nodes), so for node
            ``j`` it lies in ``[0, j - 1]``; a node's inputs are distinct.
            Pairs are stored sorted by input within each node (the node sums
            them, so the order carries no meaning).
        primitives: The op vocabulary (default :data:`PRIMITIVES`); every op
            must be one of them and not ``none``.
        inputs_per_node: Incoming edges per intermediate node (DARTS: 2).

    Equality and hashing compare all three fields (cell-type order aside).
    Treat ``cells`` as read-only.

    Raises:
        ArchitectureError: unknown or ``none`` op, input index out of range or
            repeated, wrong number of pairs, bad cell type names.
    """

    cells: Mapping[str, tuple[tuple[str, int], ...]]
    primitives: tuple[str, ...] = PRIMITIVES
    inputs_per_node: int = 2

    def __post_init__(self) -> None:
        prims = _check_primitives(self.primitives, ArchitectureError)
        k = _check_inputs_per_node(self.inputs_per_node, ArchitectureError)
        object.__setattr__(self, "primitives", prims)
        if not isinstance(self.cells, Mapping) or not self.cells:
            raise ArchitectureError(f"cells must be a non-empty mapping cell type -> {4 * k} (op, input) pairs, "
                                    f"but got {self.cells!r}.")
        valid_ops = [op for op in prims if op != "none"]
        none_error = (f"'none' cannot be chosen in a discrete DARTS cell (it is excluded at derivation); valid "
                      f"operations: {valid_ops}.")
        cells: dict[str, tuple[tuple[str, int], ...]] = {}
        for t, pairs in self.cells.items():
            _check_cell_type(t, "DartsArch", ArchitectureError)
            if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) != NUM_STEPS * k:
                raise ArchitectureError(f"Cell type {t!r} needs {NUM_STEPS * k} (op, input) pairs ({k} per "
                                        f"intermediate node), but got {pairs!r}.")
            canon: list[tuple[str, int]] = []
            for n, j in enumerate(_NODES):
                node = []
                for m, pair in enumerate(pairs[n * k:(n + 1) * k]):
                    node.append(check_pair(pair, j, valid_ops, f"cell {t!r}, node {j}, pair {m}", takes="inputs",
                                           none_error=none_error))
                srcs = [s for _, s in node]
                if len(set(srcs)) != len(srcs):
                    raise ArchitectureError(f"cell {t!r}, node {j}: the inputs {srcs} repeat; a node's "
                                            f"{k} inputs must be distinct.")
                canon.extend(sorted(node, key=lambda p: p[1]))
            cells[t] = tuple(canon)
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "_key", (frozenset(cells.items()), prims, k))

    # ---- identity (equality, hashing, pickling, repr: ArchBase)
    def __str__(self) -> str:
        return self.to_darts_genotype()

    # ---- access
    @property
    def cell_types(self) -> tuple[str, ...]:
        """The cell types, in the order given."""
        return tuple(self.cells)

    def node_pairs(self, cell_type: str) -> tuple[tuple[tuple[str, int], ...], ...]:
        """Per intermediate node (2..5), its ``(op, input)`` pairs."""
        pairs, k = self.cells[cell_type], self.inputs_per_node
        return tuple(pairs[n * k:(n + 1) * k] for n in range(NUM_STEPS))

    def edge_ops(self, cell_type: str) -> tuple[str, ...]:
        """The cell as 14 edge ops in :data:`EDGES` order, ``none`` on unused edges."""
        ops = ["none"] * NUM_EDGES
        for j, node in zip(_NODES, self.node_pairs(cell_type)):
            for op, i in node:
                ops[_NODE_START[j] + i] = op
        return tuple(ops)

    # ---- NNI samples
    def to_sample(self) -> dict[str, str]:
        """``{label: value}`` with the labels of :func:`darts_choices` (an NNI sample)."""
        out: dict[str, str] = {}
        for t in self.cells:
            for j, node in zip(_NODES, self.node_pairs(t)):
                out[f"{t}_n{j}_inputs"] = ",".join(str(i) for _, i in node)
                for m, (op, _) in enumerate(node):
                    out[f"{t}_n{j}_op{m}"] = op
        return out

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any], cell_types: Sequence[str], *,
                    primitives: Sequence[str] = PRIMITIVES, inputs_per_node: int = 2) -> "DartsArch":
        """Build from an NNI sample (labels of :func:`darts_choices`).

        Labels starting with ``__`` (NNI internals) are ignored.

        Raises:
            ArchitectureError: a missing or unknown label, or a bad value.
        """
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"A sample must be a mapping label -> value, but got {sample!r}.")
        k = _check_inputs_per_node(inputs_per_node, ArchitectureError)
        try:
            known = darts_choices(cell_types, primitives, k)
        except ConfigError as exc:
            raise ArchitectureError(str(exc)) from exc
        check_labels([label for label in sample if not str(label).startswith("__")], known, where="",
                     looks_like=f"'{cell_types[0]}_n2_inputs', '{cell_types[0]}_n2_op0' for cell types "
                                f"{list(cell_types)}")
        check_complete(sample, known, where=" in the sample", expected=f"{len(known)} labels expected")
        cells = {}
        for t in cell_types:
            pairs = []
            for j in _NODES:
                value = sample[f"{t}_n{j}_inputs"]
                srcs = _parse_inputs(value, f"{t}_n{j}_inputs")
                if len(srcs) != k:
                    raise ArchitectureError(f"Label {t}_n{j}_inputs must name {k} inputs, but got {value!r}; "
                                            f"valid values: {list(known[f'{t}_n{j}_inputs'])}.")
                pairs.extend((sample[f"{t}_n{j}_op{m}"], src) for m, src in enumerate(sorted(srcs)))
            cells[t] = pairs
        return cls(cells, tuple(primitives), k)

    # ---- JSON
    def to_dict(self) -> dict[str, Any]:
        """``{"space": "darts", "primitives": [...], "inputs_per_node": 2,
        "cells": {type: [[op, input], ...]}}``."""
        return {"space": "darts", "primitives": list(self.primitives), "inputs_per_node": self.inputs_per_node,
                "cells": {t: [[op, i] for op, i in pairs] for t, pairs in self.cells.items()}}

    def cell_graphs(self) -> list:
        """The cell types as :class:`nni_robust.archdraw.CellGraph` (DARTS's picture: inputs ``c_{k-2}``,
        ``c_{k-1}``, nodes ``0..3``, output ``c_{k}`` = concat)."""
        from nni_robust.archdraw import CellGraph

        names = ("c_{k-2}", "c_{k-1}", "0", "1", "2", "3")
        return [CellGraph(t, names[:2], names[2:],
                          tuple((names[i], names[j], op) for j, node in zip(_NODES, self.node_pairs(t))
                                for op, i in node))
                for t in self.cells]

    @classmethod
    def from_json(cls, data: "str | bytes | Mapping[str, Any]") -> "DartsArch":
        """Parse :meth:`to_json` output (a string or the dict).

        Raises:
            ArchitectureError: malformed JSON or architecture.
        """
        data = json_object(data)
        valid_keys = ("space", "primitives", "inputs_per_node", "cells")
        extra = [key for key in data if key not in valid_keys]
        if extra:
            raise ArchitectureError(f"Unknown keys {extra} in the DARTS architecture JSON; valid keys: "
                                    f"{list(valid_keys)}.")
        if data.get("space", "darts") != "darts":
            raise ArchitectureError(f"Architecture JSON is for space {data['space']!r}, not 'darts'.")
        if "cells" not in data or not isinstance(data["cells"], Mapping):
            raise ArchitectureError("DARTS architecture JSON needs a 'cells' object {cell type: [[op, input], ...]}.")
        prims = data.get("primitives", PRIMITIVES)
        if isinstance(prims, str) or not isinstance(prims, Sequence):
            raise ArchitectureError(f"'primitives' must be a list of op names, but got {prims!r}.")
        return cls(dict(data["cells"]), tuple(prims), data.get("inputs_per_node", 2))

    # ---- DARTS genotype text
    def to_darts_genotype(self) -> str:
        """The DARTS ``Genotype(...)`` text, e.g. ``Genotype(normal=[('sep_conv_3x3', 0), ...],
        normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))``; with other
        cell types, one field per type."""
        parts = []
        for t, pairs in self.cells.items():
            parts.append(f"{t}={[(op, i) for op, i in pairs]!r}")
            parts.append(f"{t}_concat=range({NUM_INPUT_NODES}, {NUM_INPUT_NODES + NUM_STEPS})")
        return f"Genotype({', '.join(parts)})"

    @classmethod
    def from_darts_genotype(cls, text: str, *, primitives: Sequence[str] = PRIMITIVES) -> "DartsArch":
        """Parse :meth:`to_darts_genotype` text or a genotype printed by the DARTS code.

        The number of pairs per node is inferred (8 pairs: 2 per node).

        Raises:
            ArchitectureError: malformed text, or a ``*_concat`` other than
                the 4 intermediate nodes.
        """
        if not isinstance(text, str):
            raise ArchitectureError(f"A genotype must be text, but got {text!r}.")
        s = text.strip()
        m = re.fullmatch(r"Genotype\s*\((.*)\)", s, flags=re.S)
        if not m:
            raise ArchitectureError(f"Cannot parse {text[:80]!r}: expected 'Genotype(normal=[...], ...)'.")
        body = m.group(1)
        cells: dict[str, list] = {}
        for name, value in re.findall(r"(\w+)\s*=\s*(\[[^\]]*\]|range\([^)]*\))", body):
            if name.endswith("_concat"):
                want = list(range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS))
                if value.startswith("range"):
                    args = _literal(value[len("range"):])
                    args = args if isinstance(args, tuple) else (args,)
                    got = list(range(*args)) if all(is_int(a) for a in args) else None
                else:
                    got = _literal(value)
                if got != want:
                    raise ArchitectureError(f"{name}={value} is not supported: the cell output always "
                                            f"concatenates the intermediate nodes {want}.")
                continue
            pairs = _literal(value)
            if not isinstance(pairs, list):
                raise ArchitectureError(f"Genotype field {name}={value!r} is not a list of (op, input) pairs.")
            cells[name] = pairs
        if not cells:
            raise ArchitectureError(f"No cell fields found in the genotype {text[:80]!r}.")
        n = {len(p) for p in cells.values()}
        k = n.pop() // NUM_STEPS if len(n) == 1 else 0
        if k not in (1, 2) or any(len(p) != NUM_STEPS * k for p in cells.values()):
            raise ArchitectureError(f"Genotype cells must all list 4 or 8 (op, input) pairs, but got "
                                    f"{ {t: len(p) for t, p in cells.items()} }.")
        return cls(cells, tuple(primitives), k)

    # ---- sampling
    @classmethod
    def random(cls, cell_types: Sequence[str], rng: "_random.Random | int | None" = None, *,
               primitives: Sequence[str] = PRIMITIVES, inputs_per_node: int = 2) -> "DartsArch":
        """A uniformly random architecture: per node a uniform set of distinct inputs, per
        chosen edge a uniform op among ``primitives`` without ``none``.

        Args:
            cell_types: The cell types (e.g. ``layout.cell_types``).
            rng: A ``random.Random``, a seed, or ``None`` (unseeded).
            primitives: The op vocabulary.
            inputs_per_node: Inputs per intermediate node (DARTS: 2).
        """
        rng = as_rng(rng, "sample")
        k = _check_inputs_per_node(inputs_per_node)
        prims = _check_primitives(primitives)
        ops = [op for op in prims if op != "none"]
        cells = {}
        for t in cell_types:
            pairs = []
            for j in _NODES:
                pairs.extend((rng.choice(ops), i) for i in sorted(rng.sample(range(j), k)))
            cells[t] = pairs
        return cls(cells, prims, k)


def _parse_inputs(value: Any, label: str) -> list[int]:
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",")]
        except ValueError:
            raise ArchitectureError(f"Label {label} must be a value like '0,1', but got {value!r}.") from None
    if is_int(value):
        return [value]
    if isinstance(value, Sequence) and all(is_int(v) for v in value):
        return list(value)
    raise ArchitectureError(f"Label {label} must be a value like '0,1', but got {value!r}.")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ArchitectureError(f"Cannot parse {text[:80]!r} in the genotype: {exc}.") from None


# --------------------------------------------------------------------------- shared network pieces


def _check_network_args(layout: Any, init_channels: Any, num_classes: Any, in_channels: Any, input_size: Any,
                        stem_multiplier: Any) -> DartsLayout:
    layout = DartsLayout.from_json_value(layout)
    check_network_sizes(layout, init_channels=init_channels, num_classes=num_classes, in_channels=in_channels,
                        input_size=input_size, stem_multiplier=stem_multiplier)
    channels = layout.channels(init_channels)
    for p in range(layout.num_cells):
        if (layout.is_reduction(p) or layout.is_reduction(p - 1)) and channels[p] % 2:
            raise ConfigError(f"Cell {p} of layout {layout.name!r} has {channels[p]} channels (init_channels="
                              f"{init_channels} x {layout.multipliers[p]}); cells at or right after a reduction "
                              f"need an even number (factorized reduce).")
    return layout


def init_macro_network(net: nn.Module, layout: DartsLayout, *, init_channels: int, num_classes: int,
                       in_channels: int, input_size: int, mean: Sequence[float] | None, std: Sequence[float] | None,
                       stem_multiplier: int) -> int:
    """Give ``net`` what every network of the DARTS macro structure has: the attributes ``layout``,
    ``cell_types``, ``init_channels``, ``num_classes``, ``input_shape``, then the modules ``normalize``
    and ``stem`` (DARTS: conv3x3 without bias to ``stem_multiplier * init_channels`` + BN, affine also
    in the search network, no ReLU). Returns the stem's channels."""
    net.layout = layout
    net.cell_types = layout.cell_types
    net.init_channels = init_channels
    net.num_classes = num_classes
    net.input_shape = (in_channels, input_size, input_size)
    net.normalize = Normalize(mean, std)
    c_stem = stem_multiplier * init_channels
    net.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
    return c_stem


def _preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    pre0: nn.Module = FactorizedReduce(c_pp, c, affine=affine) if reduction_prev else \
        ReLUConvBN(c_pp, c, 1, 1, 0, affine=affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine=affine)


# --------------------------------------------------------------------------- supernet


class MixedOp(nn.Module):
    """``sum_k w_k op_k(x)`` over the primitives of one edge (DARTS Sec. 2.2, eq. 2).

    ``none`` contributes exactly zero (value and gradient), so it is not run;
    its weight still takes part in the softmax. As in the DARTS search code,
    pooling ops are followed by a non-affine BN (``pool_bn``).

    Args:
        channels: Input = output channels.
        stride: 1 or 2.
        primitives: The candidate ops (their index order is the weight order).
        affine: BN affinity inside the ops (DARTS search: ``False``).
        pool_bn: Append BN to the pooling ops.
    """

    def __init__(self, channels: int, stride: int, primitives: Sequence[str], *, affine: bool = False,
                 pool_bn: bool = True) -> None:
        super().__init__()
        self.ops = nn.ModuleList()
        index = []
        for k, name in enumerate(primitives):
            if name == "none":
                continue
            op = build_op(name, channels, stride, affine)
            if pool_bn and "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops.append(op)
            index.append(k)
        self.index = tuple(index)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: the edge's ``(len(primitives),)`` op weights."""
        w = weights.unbind(0)
        out = None
        for k, op in zip(self.index, self.ops):
            y = w[k] * op(x)
            out = y if out is None else out + y
        return out


class DartsSearchCell(nn.Module):
    """A DARTS search cell: 14 :class:`MixedOp` edges, non-affine BN everywhere (DARTS).

    Args:
        c_prev_prev: Channels of the input from two cells back.
        c_prev: Channels of the previous cell's output.
        channels: ``C_cell`` of every node.
        reduction: Whether the edges leaving the input nodes have stride 2.
        reduction_prev: Whether the previous cell reduced (input 0 is then
            pre-processed by a factorized reduce).
        primitives: Candidate ops of every edge.
        pool_bn: See :class:`MixedOp`.
    """

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, *, reduction: bool, reduction_prev: bool,
                 primitives: Sequence[str], pool_bn: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.channels = channels
        self.preprocess0, self.preprocess1 = _preprocess(c_prev_prev, c_prev, channels, reduction_prev, False)
        self.edges = nn.ModuleList(
            MixedOp(channels, 2 if reduction and i < NUM_INPUT_NODES else 1, primitives, pool_bn=pool_bn)
            for j, i in EDGES)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights``: ``(14, len(primitives))`` op weights of this cell's type."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        rows = weights.unbind(0)
        e = 0
        for j in _NODES:
            acc = None
            for i in range(j):
                y = self.edges[e](states[i], rows[e])
                acc = y if acc is None else acc + y
                e += 1
            states.append(acc)
        return torch.cat(states[NUM_INPUT_NODES:], dim=1)


class DartsSupernet(nn.Module):
    """The DARTS continuous relaxation over a :class:`DartsLayout` (DARTS Sec. 2.2).

    ``Normalize`` -> stem conv3x3 (``in_channels -> stem_multiplier * C``) + BN
    -> cells (each a :class:`DartsSearchCell` of ``C * multiplier`` channels;
    output ``4 C_cell``) -> global average pool -> linear. Every edge mixes
    all ``primitives`` with ``softmax(alpha[cell type][edge])``; positions of
    one cell type share its ``alpha``. BN inside the cells is non-affine
    (DARTS search). The ``alpha`` are registered parameters (they follow
    ``.to()`` and are saved in the state dict under ``alphas.<type>``); train
    them apart from the weights with :meth:`arch_parameters` and
    :meth:`weight_parameters`.

    Args:
        layout: The :class:`DartsLayout` (or its JSON value).
        init_channels: ``C`` (DARTS search: 16; DSARA search: 24).
        num_classes: Output classes.
        in_channels: Input image channels.
        input_size: Input height = width (validated against the reductions).
        mean: Per-channel normalization mean (``None``: none).
        std: Per-channel normalization std.
        primitives: The candidate ops (default DARTS's 8, ``none`` included).
        stem_multiplier: Stem width multiplier (DARTS: 3).
        pool_bn: BN after pooling ops in the mixed ops (DARTS search code).

    Attributes:
        cell_types: The layout's cell types in order of first appearance.
        primitives: The candidate ops (the column order of every ``alpha``).
        alphas: ``nn.ParameterDict`` cell type -> ``(14, len(primitives))``.

    Raises:
        ConfigError: bad sizes, layout or primitives.
    """

    def __init__(self, *, layout: "DartsLayout | str | Mapping[str, Any]", init_channels: int, num_classes: int,
                 in_channels: int = 3, input_size: int = 32, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, primitives: Sequence[str] = PRIMITIVES,
                 stem_multiplier: int = 3, pool_bn: bool = True) -> None:
        super().__init__()
        layout = _check_network_args(layout, init_channels, num_classes, in_channels, input_size, stem_multiplier)
        self.primitives = _check_primitives(primitives)
        c_stem = init_macro_network(self, layout, init_channels=init_channels, num_classes=num_classes,
                                    in_channels=in_channels, input_size=input_size, mean=mean, std=std,
                                    stem_multiplier=stem_multiplier)
        c_pp, c_p = c_stem, c_stem
        self.cells = nn.ModuleList()
        for p, c in enumerate(layout.channels(init_channels)):
            reduction, reduction_prev = layout.is_reduction(p), layout.is_reduction(p - 1)
            self.cells.append(DartsSearchCell(c_pp, c_p, c, reduction=reduction, reduction_prev=reduction_prev,
                                              primitives=self.primitives, pool_bn=pool_bn))
            c_pp, c_p = c_p, NUM_STEPS * c
        self.classifier = nn.Linear(c_p, num_classes)
        self.alphas = nn.ParameterDict({
            t: nn.Parameter(1e-3 * torch.randn(NUM_EDGES, len(self.primitives))) for t in self.cell_types})
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("DartsSupernet(layout=%s, C=%d, %d ops): %d weights", layout.name, init_channels,
                         len(self.primitives), sum(p.numel() for p in self.weight_parameters()))

    # ---- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """The ``alpha`` of every cell type, in :attr:`cell_types` order."""
        return [self.alphas[t] for t in self.cell_types]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the ``alpha``."""
        arch = {id(p) for p in self.alphas.values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """``{cell type: softmax(alpha) over the ops}``, detached, shape ``(14, len(primitives))``."""
        return {t: F.softmax(self.alphas[t].detach(), dim=-1) for t in self.cell_types}

    # ---- forward
    def forward(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of ``x`` (float in [0, 1], NCHW).

        Args:
            x: The input batch.
            weights: Optional op weights ``{cell type: (14, len(primitives))}``
                replacing ``softmax(alpha)`` (e.g. Gumbel-softmax samples).
        """
        if weights is None:
            weights = {t: F.softmax(self.alphas[t], dim=-1) for t in self.cell_types}
        else:
            shape = (NUM_EDGES, len(self.primitives))
            for t in self.cell_types:
                if t not in weights or tuple(weights[t].shape) != shape:
                    raise ConfigError(f"weights must map every cell type {list(self.cell_types)} to a tensor of "
                                      f"shape {shape}; got {({k: tuple(v.shape) for k, v in weights.items()})}.")
        s0 = s1 = self.stem(self.normalize(x))
        for cell, t in zip(self.cells, self.layout.cells):
            s0, s1 = s1, cell(s0, s1, weights[t])
        return self.classifier(s1.mean(dim=(2, 3)))

    # ---- derivation
    def derive(self, *, exclude: Sequence[str] = ("none",), inputs_per_node: int = 2) -> DartsArch:
        """The discrete architecture by the DARTS rule (DARTS Sec. 2.4).

        Per intermediate node, the ``inputs_per_node`` incoming edges with the
        largest strength (the largest weight of a non-excluded op on the edge)
        are kept, each with its argmax non-excluded op. Ties go to the lower
        index (edge and op), as in the DARTS code.

        Args:
            exclude: Ops never chosen (DARTS: ``none``); names not among
                :attr:`primitives` are ignored, but must be registered ops.
            inputs_per_node: Edges kept per node (DARTS: 2).

        Raises:
            ConfigError: a bad ``exclude`` (unknown op, excludes everything,
                or leaves ``none`` choosable) or ``inputs_per_node``.
        """
        k = _check_inputs_per_node(inputs_per_node)
        if isinstance(exclude, str) or not isinstance(exclude, Sequence):
            raise ConfigError(f"exclude must be a sequence of op names, but got {exclude!r}.")
        for op in exclude:
            if op not in OPS:
                raise ConfigError(f"exclude names unknown operation {op!r}; registered operations: {sorted(OPS)}.")
        if "none" in self.primitives and "none" not in exclude:
            raise ConfigError(f"exclude must contain 'none' (a derived cell cannot hold it), but got {list(exclude)}.")
        keep = [idx for idx, op in enumerate(self.primitives) if op not in exclude]
        if not keep:
            raise ConfigError(f"exclude={list(exclude)} leaves no operation of {list(self.primitives)}.")
        cells = {}
        for t, w in self.arch_weights().items():
            sub = w[:, keep].float().cpu()
            strength = sub.max(dim=1).values.tolist()
            best = sub.argmax(dim=1).tolist()
            pairs = []
            for j in _NODES:
                e0 = _NODE_START[j]
                chosen = sorted(range(j), key=lambda i: -strength[e0 + i])[:k]
                pairs.extend((self.primitives[keep[best[e0 + i]]], i) for i in sorted(chosen))
            cells[t] = pairs
        return DartsArch(cells, self.primitives, k)


# --------------------------------------------------------------------------- discrete network


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (DARTS /
    NASNet path dropout); one Bernoulli draw per sample, no Python loop. ``drop_prob``: a
    float, or a 0-dim tensor (the compiled pass, :class:`~._common.PathDropout`)."""
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class DartsCell(nn.Module):
    """A discrete DARTS cell: per intermediate node the chosen ops on the chosen inputs.

    Args:
        c_prev_prev: Channels of the input from two cells back.
        c_prev: Channels of the previous cell's output.
        channels: ``C_cell``.
        reduction: Whether edges leaving the input nodes have stride 2.
        reduction_prev: Whether the previous cell reduced.
        arch: The architecture.
        cell_type: This cell's type in ``arch``.
        affine: BN affinity (DARTS evaluation: ``True``).
    """

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, *, reduction: bool, reduction_prev: bool,
                 arch: DartsArch, cell_type: str, affine: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.channels = channels
        self.k = arch.inputs_per_node
        self.preprocess0, self.preprocess1 = _preprocess(c_prev_prev, c_prev, channels, reduction_prev, affine)
        self.ops = nn.ModuleList()
        inputs = []
        for op, i in arch.cells[cell_type]:
            self.ops.append(build_op(op, channels, 2 if reduction and i < NUM_INPUT_NODES else 1, affine))
            inputs.append(i)
        self.inputs = tuple(inputs)
        self._droppable = tuple(not isinstance(op, nn.Identity) for op in self.ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float | torch.Tensor = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        # a tensor: the compiled pass's probability (PathDropout._drop_prob_arg), positive
        drop = self.training and (isinstance(drop_prob, torch.Tensor) or drop_prob > 0)
        idx = 0
        for _ in range(NUM_STEPS):
            acc = None
            for _ in range(self.k):
                h = self.ops[idx](states[self.inputs[idx]])
                if drop and self._droppable[idx]:
                    h = drop_path(h, drop_prob)
                acc = h if acc is None else acc + h
                idx += 1
            states.append(acc)
        return torch.cat(states[NUM_INPUT_NODES:], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head (``AuxiliaryHeadCIFAR``): ReLU, 5x5 average pool
    stride 3, conv1x1 -> 128 + BN + ReLU, conv2x2 -> 768 + BN + ReLU, linear.

    On DARTS's 8x8 feature maps this is exactly DARTS's head. For other sizes
    (small inputs) the pool is skipped below 5 pixels, the second conv shrinks
    to the available size, and the result is averaged over the remaining
    positions (DARTS flattens a 1x1 map: the same there).

    Args:
        channels: Input channels.
        num_classes: Output classes.
        size: Input height = width.
    """

    def __init__(self, channels: int, num_classes: int, size: int) -> None:
        super().__init__()
        pool = size >= 5
        after = (size - 5) // 3 + 1 if pool else size
        k2 = min(2, after)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False) if pool else nn.Identity(),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, k2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def aux_position(layout: DartsLayout, auxiliary: bool) -> int | None:
    """The position after which an evaluation network with ``auxiliary`` has its auxiliary head:
    the last reduction cell (DARTS: ``2 n // 3``), ``None`` without the head."""
    if not auxiliary:
        return None
    return layout.reductions[-1] if layout.reductions else 2 * layout.num_cells // 3


class DartsNetwork(PathDropout, nn.Module):
    """The discrete network of a :class:`DartsArch` on a :class:`DartsLayout` (DARTS Sec. 3.2).

    ``Normalize`` -> stem conv3x3 + BN -> :class:`DartsCell` per position
    (affine BN; ops only on the chosen edges) -> global average pool ->
    linear. FLOPs are countable with :func:`nni_robust.flops.count_flops`
    (the auxiliary head runs only in training mode, so it is not counted).

    Args:
        arch: The architecture (or its JSON); must hold exactly the layout's
            cell types.
        layout: The :class:`DartsLayout` (or its JSON value).
        init_channels: ``C`` (DARTS evaluation 36; DSARA evaluation 64).
        num_classes: Output classes.
        in_channels: Input image channels.
        input_size: Input height = width.
        mean: Per-channel normalization mean (``None``: none).
        std: Per-channel normalization std.
        stem_multiplier: Stem width multiplier (DARTS: 3).
        drop_path_prob: Path-dropout probability of every non-identity op in
            training mode (DARTS and RNAS evaluation: 0.2 / 0.3, usually raised
            linearly over the epochs by the training loop; assign
            :attr:`drop_path_prob` to change it).
        auxiliary: Build DARTS's auxiliary head after the last reduction
            cell (DARTS: ``2 n // 3``). :meth:`forward` returns the logits
            only; :meth:`forward_with_aux` also the auxiliary logits (DARTS
            and RNAS train with ``loss + 0.4 * aux_loss``).

    Raises:
        ConfigError: bad sizes or options.
        ArchitectureError: ``arch`` malformed or not matching the layout's cell types.
    """

    def __init__(self, arch: "DartsArch | Mapping[str, Any] | str", *,
                 layout: "DartsLayout | str | Mapping[str, Any]", init_channels: int, num_classes: int,
                 in_channels: int = 3, input_size: int = 32, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, stem_multiplier: int = 3, drop_path_prob: float = 0.0,
                 auxiliary: bool = False) -> None:
        super().__init__()
        if isinstance(arch, (Mapping, str, bytes)):
            arch = DartsArch.from_json(arch)
        if not isinstance(arch, DartsArch):
            raise ArchitectureError(f"arch must be a DartsArch (or its JSON), but got {type(arch).__name__}.")
        layout = _check_network_args(layout, init_channels, num_classes, in_channels, input_size, stem_multiplier)
        missing = [t for t in layout.cell_types if t not in arch.cells]
        extra = [t for t in arch.cells if t not in layout.cell_types]
        if missing or extra:
            raise ArchitectureError(f"The architecture's cell types {list(arch.cells)} do not match layout "
                                    f"{layout.name!r}'s cell types {list(layout.cell_types)} (missing {missing}, "
                                    f"extra {extra}).")
        if not isinstance(auxiliary, bool):
            raise ConfigError(f"auxiliary must be a bool, but got {auxiliary!r}.")
        self.arch = arch
        self.drop_path_prob = drop_path_prob
        c_stem = init_macro_network(self, layout, init_channels=init_channels, num_classes=num_classes,
                                    in_channels=in_channels, input_size=input_size, mean=mean, std=std,
                                    stem_multiplier=stem_multiplier)
        c_pp, c_p = c_stem, c_stem
        size = input_size
        self.aux_position = aux_position(layout, auxiliary)
        self.auxiliary_head: nn.Module | None = None
        self.cells = nn.ModuleList()
        for p, c in enumerate(layout.channels(init_channels)):
            reduction = layout.is_reduction(p)
            self.cells.append(DartsCell(c_pp, c_p, c, reduction=reduction, reduction_prev=layout.is_reduction(p - 1),
                                        arch=arch, cell_type=layout.cells[p]))
            c_pp, c_p = c_p, NUM_STEPS * c
            if reduction:
                size = -(-size // 2)
            if p == self.aux_position:
                self.auxiliary_head = AuxiliaryHead(c_p, num_classes, size)
        self.classifier = nn.Linear(c_p, num_classes)

    # drop_path_prob: the checked property of PathDropout

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, auxiliary logits)``; the latter is ``None`` without an auxiliary
        head or in eval mode."""
        aux = None
        s0 = s1 = self.stem(self.normalize(x))
        for p, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self._drop_prob_arg())
            if p == self.aux_position and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(s1.mean(dim=(2, 3))), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (float in [0, 1], NCHW); the auxiliary head is not run."""
        s0 = s1 = self.stem(self.normalize(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self._drop_prob_arg())
        return self.classifier(s1.mean(dim=(2, 3)))


# --------------------------------------------------------------------------- building from settings

_LAYOUT_KEYS = ("name", "num_cells", "placement", "filters", "primitives")
_SUPERNET_KEYS = ("stem_multiplier", "pool_bn")
_NETWORK_KEYS = ("stem_multiplier", "drop_path_prob", "auxiliary")
SPACE_KEYS: tuple[str, ...] = tuple(dict.fromkeys(_LAYOUT_KEYS + _SUPERNET_KEYS + _NETWORK_KEYS))

LayoutFamily = Callable[[Mapping[str, Any]], "tuple[DartsLayout, Sequence[str]]"]
_FAMILIES: dict[str, LayoutFamily] = {}


def register_layout_family(name: str, family: LayoutFamily) -> None:
    """Let settings ``space`` dicts named ``name`` build DARTS-cell networks.

    ``family(space)`` returns the :class:`DartsLayout` and the default
    primitives of a settings dict (its keys are :data:`SPACE_KEYS`). The
    DARTS space registers ``darts``; :mod:`.dsara` registers ``dsara`` the same way.
    """
    _FAMILIES[name] = family


def _darts_family(space: Mapping[str, Any]) -> tuple[DartsLayout, Sequence[str]]:
    placement = space.get("placement", ("normal",) * 3)
    filters = space.get("filters", (1, 2, 4))
    if isinstance(placement, str):
        placement = tuple(placement.split("-"))
    if isinstance(filters, str):
        try:
            filters = tuple(int(f) for f in filters.split("-"))
        except ValueError:
            raise ConfigError(f"filters must look like '1-2-4', but got {filters!r}.") from None
    return DartsLayout.build(space.get("num_cells", 8), tuple(placement), tuple(filters)), PRIMITIVES


register_layout_family("darts", _darts_family)


def space_layout(space: Mapping[str, Any]) -> tuple[DartsLayout, tuple[str, ...]]:
    """The layout and primitives of a space settings dict (see :func:`build_darts_space`).

    Raises:
        ConfigError: unknown name or keys, bad values.
    """
    if not isinstance(space, Mapping):
        raise ConfigError(f"space must be a dict like {{'name': 'darts', 'num_cells': 8}}, but got {space!r}.")
    name = space.get("name")
    if name not in _FAMILIES:
        from .registry import discover

        discover()  # the other DARTS-cell spaces register their families on import
    if name not in _FAMILIES:
        raise ConfigError(f"space name must be one of {sorted(_FAMILIES)}, but got {name!r}.")
    check_keys(space, SPACE_KEYS, f"space {name!r}")
    layout, default_prims = _FAMILIES[name](space)
    return layout, _check_primitives(space.get("primitives", default_prims))


def build_darts_space(space: Mapping[str, Any], info: Any, init_channels: int,
                      arch: "DartsArch | Mapping[str, Any] | str | None" = None) -> nn.Module:
    """Build the supernet (``arch is None``) or a discrete network from a space settings dict.

    Keys: ``name`` (``"darts"``, or another registered family such as ``"dsara"``), ``num_cells`` (8),
    ``placement`` (DARTS: 3 cell type names, default ``normal`` x 3; DSARA:
    ``"A-A-R"``, see :func:`.dsara.dsara_layout`), ``filters`` (DARTS
    ``1-2-4``, DSARA ``1-2-2``), ``primitives`` (DARTS's 8; DSARA's 7, see
    :mod:`.dsara`), ``stem_multiplier`` (3); for the supernet ``pool_bn``;
    for the discrete network ``drop_path_prob`` and ``auxiliary``. Keys of
    the other kind are ignored, so one dict serves the search and the final
    training.

    Args:
        space: The settings dict.
        info: A :class:`nni_robust.data.DatasetInfo` (classes, channels,
            size, mean, std).
        init_channels: ``C``.
        arch: ``None`` for the :class:`DartsSupernet`, else the architecture
            of the :class:`DartsNetwork`.

    Raises:
        ConfigError: unknown name or keys (named), bad values.
        ArchitectureError: a malformed ``arch``.
    """
    layout, prims = space_layout(space)
    return build_from_settings(space, info, init_channels, arch, layout=layout, primitives=prims,
                               supernet=DartsSupernet, supernet_keys=_SUPERNET_KEYS, network=DartsNetwork,
                               network_keys=_NETWORK_KEYS, parse_arch=DartsArch.from_json)


# --------------------------------------------------------------------------- NNI model space

def _define_space(base: type) -> type:
    class DartsSpace(base):
        """NNI 3.0 model space of DARTS cells: the labelled choices of :func:`darts_choices`.

        Per cell type and intermediate node one ``nni.choice`` of the input
        set (``"0,1"``, ...) and one per chosen input of its op (``none``
        excluded). Building the space registers the choices and builds the
        discrete :class:`DartsNetwork` of the current sample (inside
        ``nni.nas.space.model_context(sample)``) or of the default sample
        (the first value of every choice), never a supernet. ``freeze(sample)``
        rebuilds the space under ``model_context(sample)``.

        Args:
            layout: The :class:`DartsLayout` or its JSON value (default
                ``DartsLayout.build(num_cells, placement, filters)``).
            num_cells: Cells of the default layout (8); not with ``layout``.
            placement: Cell types of the 3 stages (default ``normal`` x 3,
                a list or ``"a-b-c"``); not with ``layout``.
            filters: Channel multipliers of the 3 stages (default ``1-2-4``);
                not with ``layout``.
            primitives: The op vocabulary.
            inputs_per_node: Inputs per intermediate node (DARTS: 2).
            **network_kwargs: Keyword arguments of :class:`DartsNetwork`
                (``init_channels`` defaults to 16, ``num_classes`` to 10).

        Attributes:
            arch: The :class:`DartsArch` built.
            network: The :class:`DartsNetwork`.
        """

        def __init__(self, *, layout: "DartsLayout | str | Mapping[str, Any] | None" = None,
                     num_cells: int | None = None, placement: "Sequence[str] | str | None" = None,
                     filters: "Sequence[int] | str | None" = None, primitives: Sequence[str] = PRIMITIVES,
                     inputs_per_node: int = 2, **network_kwargs: Any) -> None:
            super().__init__()
            given = {k: v for k, v in (("num_cells", num_cells), ("placement", placement), ("filters", filters))
                     if v is not None}
            if layout is not None and given:
                raise ConfigError(f"Give layout= or num_cells/placement/filters, not both (got layout={layout!r}, "
                                  f"{given}).")
            layout_obj = DartsLayout.from_json_value(layout) if layout is not None else \
                space_layout({"name": "darts", **given})[0]
            prims = _check_primitives(primitives)
            network_kwargs.setdefault("init_channels", 16)
            network_kwargs.setdefault("num_classes", 10)
            chosen = {label: self.choose(label, values)
                      for label, values in darts_choices(layout_obj.cell_types, prims, inputs_per_node).items()}
            self.arch = DartsArch.from_sample(chosen, layout_obj.cell_types, primitives=prims,
                                              inputs_per_node=inputs_per_node)
            self.network = DartsNetwork(self.arch, layout=layout_obj, **network_kwargs)

    return DartsSpace


_make_space_class = lazy_space_class(__name__, _define_space)
__getattr__ = lazy_module_getattr(__name__, DartsSpace=_make_space_class)


def arch_from_sample(sample: Mapping[str, Any], space: Mapping[str, Any]) -> DartsArch:
    """The :class:`DartsArch` of an NNI sample of the space a settings ``space`` dict names."""
    layout, prims = space_layout(space)
    return DartsArch.from_sample(sample, layout.cell_types, primitives=prims)


register_space(SpaceKind(
    name="darts", build=build_darts_space, parse_arch=DartsArch.from_json, from_sample=arch_from_sample,
    arch_type=DartsArch, model_space=f"{__name__}.DartsSpace",
    doc="DARTS cell space (8 ops, 2 inputs per node); RNAS searches it"))
