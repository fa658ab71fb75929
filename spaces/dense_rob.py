"""The dense robust cell search space of RobNet and MSRobNet.

A cell has 2 input nodes (the outputs of the two previous cells, pre-processed
to ``C`` channels) and 4 internal nodes. Internal node ``j`` (2..5) is the sum
of one operation applied to every earlier node ``i < j``, so a cell has
2 + 3 + 4 + 5 = 14 edges, each taking one of :data:`PRIMITIVES`
(``none``, ``skip_connect``, ``sep_conv_3x3``, ``res_sep_conv_3x3``); ``none``
removes the edge, which is how any dense connection pattern arises. The cell
output concatenates the 4 internal nodes (``4 C`` channels). References:
Guo et al., "When NAS Meets Robustness" (RobNet, CVPR 2020), Sec. 3.2 and
Fig. 2; Ning et al., "Multi-shot NAS for Discovering Adversarially Robust
Convolutional Neural Architectures at Targeted Capacities" (MSRobNet),
Sec. 5.3.1 and Fig. 3.

Edges are ordered ``(j=2,i=0), (2,1), (3,0), (3,1), (3,2), (4,0) ... (5,4)``
and labelled ``f"{topology}_e{j}{i}"`` (e.g. ``S0_e20``). A :class:`Layout`
says which topology every cell position uses and where the reduction cells
are; several positions may share one topology (stage-wise layout, RobNet's
cell-based models).

Main names:

* :class:`Layout` -- cell-wise (8 cells, 8 topologies), stage-wise
  (``S0 S0 R S1 S1 R S2 S2``), RobNet (20 cells, shared or per-cell).
* :class:`DenseRobArch` -- one architecture (frozen, hashable) with JSON,
  NNI-sample, aw_nas-genotype and RobNet-code conversions.
* :class:`DenseRobNetwork` -- the network; ``arch=None`` builds the
  weight-sharing supernet whose active path is chosen by ``set_arch``.
* ``DenseRobSpace`` -- the NNI 3.0 ``ModelSpace`` (one labelled
  ``nni.choice`` per edge); defined lazily because importing NNI is slow.
* :func:`dense_rob_flops` -- the analytic FLOPs of a discrete network.
"""

from __future__ import annotations

import logging
import random as _random
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from nni_robust.config import check_choice
from nni_robust.errors import ArchitectureError, ConfigError, did_you_mean
from nni_robust.models import Normalize

from ._common import (EDGES, NUM_EDGES, NUM_INPUT_NODES, NUM_STEPS, ArchBase, LayoutBase, as_rng, check_labels,
                      json_object)
from .nni_space import lazy_module_getattr, lazy_space_class
from .ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, build_op
from .registry import SpaceKind, register_space

__all__ = [
    "PRIMITIVES",
    "EDGES",
    "NUM_EDGES",
    "OP_ALIASES",
    "edge_labels",
    "Layout",
    "DenseRobArch",
    "DenseRobCell",
    "layout_of",
    "build_dense_rob_space",
    "DenseRobNetwork",
    "DenseRobSpace",
    "dense_rob_flops",
]

logger = logging.getLogger(__name__)

# NUM_INPUT_NODES, NUM_STEPS, EDGES ((j, i) = (to-node, from-node) of the 14 edges, in the canonical
# order) and NUM_EDGES come from ._common: the DARTS cell has the same 14 edges.

#: Accepted alternative spellings of the primitives (aw_nas and RobNet names).
OP_ALIASES: dict[str, str] = {
    "ResSepConv": "res_sep_conv_3x3",
    "res_sep_conv": "res_sep_conv_3x3",
    "zero": "none",
    "Zero": "none",
    "identity": "skip_connect",
    "Identity": "skip_connect",
    "sep_conv": "sep_conv_3x3",
}

_AW_NAS_NAME = {"res_sep_conv_3x3": "ResSepConv"}
#: RobNet's two-bit edge codes (gmh14/RobNets ``architecture_code.py``).
ROBNET_CODES: dict[str, str] = {"00": "none", "01": "sep_conv_3x3", "10": "skip_connect",
                                "11": "res_sep_conv_3x3"}
_SHORT = {"none": "0", "skip_connect": "I", "sep_conv_3x3": "S", "res_sep_conv_3x3": "R"}
_FROM_SHORT = {v: k for k, v in _SHORT.items()}
_TOPO_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


def edge_labels(topology: str) -> tuple[str, ...]:
    """The 14 NNI labels of ``topology``'s edges, in edge order (``S0_e20``, ``S0_e21``, ...)."""
    return tuple(f"{topology}_e{j}{i}" for j, i in EDGES)


def _canonical_op(op: Any, where: str) -> str:
    if isinstance(op, str):
        if op in PRIMITIVES:
            return op
        if op in OP_ALIASES:
            return OP_ALIASES[op]
    hint = did_you_mean(op, list(PRIMITIVES) + list(OP_ALIASES))
    raise ArchitectureError(f"Unknown operation {op!r} at {where}.{hint} Valid operations: {list(PRIMITIVES)}.")


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout(LayoutBase):
    """Which cell topology each cell position uses, and which positions reduce.

    Args:
        name: A name; the standard layouts have names that :meth:`from_name`
            parses back (``cellwise``, ``stagewise``, ``robnet-shared``, ...).
        cells: Topology name of every cell position (``len`` = number of cells).
        reductions: Positions of the reduction cells (stride 2, channels x2).

    Raises:
        ConfigError: empty layout, bad topology names, reductions out of range.
    """

    name: str
    cells: tuple[str, ...]
    reductions: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))
        object.__setattr__(self, "reductions", tuple(int(r) for r in self.reductions))
        if not self.cells:
            raise ConfigError(f"Layout {self.name!r} needs at least one cell, but got none.")
        for topo in self.cells:
            if not isinstance(topo, str) or not _TOPO_RE.match(topo):
                raise ConfigError(f"Layout {self.name!r}: topology names must match {_TOPO_RE.pattern}, "
                                  f"but got {topo!r}.")
        n = len(self.cells)
        if list(self.reductions) != sorted(set(self.reductions)) or \
                any(not 0 <= r < n for r in self.reductions):
            raise ConfigError(f"Layout {self.name!r}: reductions must be increasing distinct positions in "
                              f"[0, {n - 1}], but got {list(self.reductions)}.")

    # ---- properties (num_cells, is_reduction, to_json_value, str: LayoutBase)
    @property
    def topologies(self) -> tuple[str, ...]:
        """Distinct topology names in order of first appearance."""
        return tuple(dict.fromkeys(self.cells))

    def labels(self) -> tuple[str, ...]:
        """All edge labels of the layout (14 per topology, topologies in order)."""
        return tuple(label for topo in self.topologies for label in edge_labels(topo))

    # ---- constructors
    @classmethod
    def cellwise(cls, num_cells: int = 8, reductions: Sequence[int] | None = None) -> "Layout":
        """One topology per cell, ``c0 .. c{n-1}`` (MSRobNet Sec. 5.3.1, "cell-wise").

        Args:
            num_cells: Number of cells (paper: 8).
            reductions: Reduction positions; default ``(n // 3, 2 n // 3)``,
                i.e. ``(2, 5)`` for 8 cells as in the paper.
        """
        _check_num_cells(num_cells)
        default = (num_cells // 3, 2 * num_cells // 3)
        red = tuple(default if reductions is None else reductions)
        if num_cells == 8 and red == default:
            name = "cellwise"
        elif red == default:
            name = f"cellwise-{num_cells}"
        else:
            name = f"cellwise-{num_cells}-r" + ".".join(str(r) for r in red)
        return cls(name, tuple(f"c{k}" for k in range(num_cells)), red)

    @classmethod
    def stagewise(cls, cells_per_stage: int = 2) -> "Layout":
        """``S0 x k, R, S1 x k, R, S2 x k``: one topology per stage, one shared reduction
        topology ``R`` (MSRobNet Sec. 5.3.1 / Fig. 3, "stage-wise", k = 2)."""
        _check_num_cells(cells_per_stage, "cells_per_stage")
        k = cells_per_stage
        cells = ("S0",) * k + ("R",) + ("S1",) * k + ("R",) + ("S2",) * k
        return cls("stagewise" if k == 2 else f"stagewise-{k}", cells, (k, 2 * k + 1))

    @classmethod
    def robnet(cls, num_cells: int = 20, shared: bool = True) -> "Layout":
        """RobNet's layouts: reductions at ``n // 3`` and ``2 n // 3`` (RobNet Sec. 4).

        Args:
            num_cells: Number of cells (RobNet: 20; RobNet-large-v2: 33).
            shared: ``True``: one topology ``cell`` for every cell (cell-based
                RobNets); ``False``: one per cell ``c0 ..`` (RobNet-free).
        """
        _check_num_cells(num_cells)
        red = (num_cells // 3, 2 * num_cells // 3)
        kind = "shared" if shared else "free"
        name = f"robnet-{kind}" if num_cells == 20 else f"robnet-{kind}-{num_cells}"
        cells = ("cell",) * num_cells if shared else tuple(f"c{k}" for k in range(num_cells))
        return cls(name, cells, red)

    @classmethod
    def from_name(cls, name: "str | Layout") -> "Layout":
        """Parse a layout name: ``cellwise``, ``cellwise-N``, ``cellwise-N-rA.B``,
        ``stagewise``, ``stagewise-K``, ``robnet`` (= ``robnet-shared``),
        ``robnet-shared[-N]``, ``robnet-free[-N]``.

        Raises:
            ConfigError: an unknown name.
        """
        if isinstance(name, Layout):
            return name
        text = str(name).strip().lower().replace("_", "-")
        m = re.fullmatch(r"cell-?wise(?:-(\d+))?(?:-r(\d+(?:\.\d+)*))?", text)
        if m:
            n = int(m.group(1)) if m.group(1) else 8
            red = tuple(int(r) for r in m.group(2).split(".")) if m.group(2) else None
            return cls.cellwise(n, red)
        m = re.fullmatch(r"stage-?wise(?:-(\d+))?", text)
        if m:
            return cls.stagewise(int(m.group(1)) if m.group(1) else 2)
        m = re.fullmatch(r"robnet(?:-(shared|free))?(?:-(\d+))?", text)
        if m:
            return cls.robnet(int(m.group(2)) if m.group(2) else 20, shared=m.group(1) != "free")
        valid = ["cellwise", "cellwise-N", "cellwise-N-rA.B", "stagewise", "stagewise-K",
                 "robnet-shared", "robnet-shared-N", "robnet-free", "robnet-free-N"]
        hint = did_you_mean(text, ["cellwise", "stagewise", "robnet-shared", "robnet-free"])
        raise ConfigError(f"Unknown layout {name!r}.{hint} Valid layouts: {', '.join(valid)}.")

    @classmethod
    def from_json_value(cls, value: "str | Mapping[str, Any] | Layout") -> "Layout":
        """Inverse of :meth:`to_json_value`."""
        if isinstance(value, (str, Layout)):
            return cls.from_name(value)
        if isinstance(value, Mapping):
            extra = set(value) - {"name", "cells", "reductions"}
            if extra or "cells" not in value:
                raise ConfigError(f"A layout dict needs keys 'cells', 'reductions' (and 'name'), "
                                  f"but got keys {sorted(value)}.")
            return cls(str(value.get("name", "custom")), tuple(value["cells"]), tuple(value.get("reductions", ())))
        raise ConfigError(f"A layout must be a name or a dict, but got {value!r}.")


def _check_num_cells(n: Any, what: str = "num_cells") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{what} must be a positive int, but got {n!r}.")


def _infer_layout(topologies: Iterable[str]) -> Layout:
    topos = set(topologies)
    candidates = [Layout.cellwise(), Layout.stagewise(), Layout.robnet(20, True), Layout.robnet(20, False)]
    for layout in candidates:
        if set(layout.topologies) == topos:
            return layout
    m = [re.fullmatch(r"c(\d+)", t) for t in topos]
    if all(m) and {int(x.group(1)) for x in m} == set(range(len(topos))):
        return Layout.cellwise(len(topos))
    raise ArchitectureError(f"Cannot infer the layout from the topologies {sorted(topos)}; pass layout= "
                            f"(e.g. Layout.from_name('cellwise')).")


# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True, eq=False, repr=False)
class DenseRobArch(ArchBase):
    """One architecture of the dense robust cell space.

    Args:
        cells: ``{topology: 14 op names}`` in edge order :data:`EDGES`, one entry
            per topology of ``layout``. Op aliases (``ResSepConv``) are accepted
            and canonicalized.
        layout: The layout (or its name); when omitted it is inferred from the
            topology names: ``c0..c7`` -> cell-wise, ``S0 S1 S2 R`` ->
            stage-wise, ``cell`` -> RobNet shared (20 cells), ``c0..c19`` ->
            RobNet-free, other ``c0..c{n-1}`` -> ``cellwise-n``.

    Equality and hashing compare layout and all ops, so archs deduplicate in
    sets and dicts. Treat ``cells`` as read-only.

    Raises:
        ArchitectureError: unknown op, wrong edge count, unknown or missing topology.
    """

    cells: Mapping[str, tuple[str, ...]]
    layout: Layout | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cells, Mapping):
            raise ArchitectureError(f"cells must be a mapping topology -> 14 ops, but got {type(self.cells).__name__}.")
        layout = self.layout
        if layout is None:
            layout = _infer_layout(self.cells)
        elif not isinstance(layout, Layout):
            try:
                layout = Layout.from_json_value(layout)
            except ConfigError as exc:
                raise ArchitectureError(str(exc)) from exc
        object.__setattr__(self, "layout", layout)
        valid = layout.topologies
        for topo in self.cells:
            if topo not in valid:
                raise ArchitectureError(f"Unknown topology {topo!r} for layout {layout.name!r}; "
                                        f"valid topologies: {list(valid)}.")
        cells: dict[str, tuple[str, ...]] = {}
        for topo in valid:
            if topo not in self.cells:
                raise ArchitectureError(f"Missing topology {topo!r} for layout {layout.name!r}; "
                                        f"expected topologies: {list(valid)}.")
            ops = self.cells[topo]
            if isinstance(ops, str) or not isinstance(ops, Sequence):
                raise ArchitectureError(f"Topology {topo!r} must be a sequence of {NUM_EDGES} op names, "
                                        f"but got {ops!r}.")
            if len(ops) != NUM_EDGES:
                raise ArchitectureError(f"Topology {topo!r} has {len(ops)} edges, but a dense robust cell "
                                        f"has {NUM_EDGES} (edge order {_edge_order_text()}).")
            cells[topo] = tuple(_canonical_op(op, f"{topo}_e{j}{i}") for op, (j, i) in zip(ops, EDGES))
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "_key", (layout, tuple(cells[t] for t in valid)))

    # ---- identity (equality, hashing, pickling, repr: ArchBase)
    def __str__(self) -> str:
        parts = []
        for topo, ops in self.cells.items():
            nodes, e = [], 0
            for j in range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS):
                nodes.append("".join(_SHORT[op] for op in ops[e:e + j]))
                e += j
            parts.append(f"{topo}:{'|'.join(nodes)}")
        return f"{self.layout.name}[{' '.join(parts)}]"

    # ---- per-cell access
    def cell_ops(self, position: int) -> tuple[str, ...]:
        """The 14 ops of the cell at layout position ``position``."""
        return self.cells[self.layout.cells[position]]

    def to_indices(self) -> dict[str, tuple[int, ...]]:
        """``{topology: 14 indices into PRIMITIVES}``."""
        return {t: tuple(PRIMITIVES.index(op) for op in ops) for t, ops in self.cells.items()}

    @classmethod
    def from_indices(cls, indices: Mapping[str, Sequence[int]], layout: Layout | str | None = None) -> "DenseRobArch":
        """Inverse of :meth:`to_indices`."""
        cells = {}
        for topo, idx in indices.items():
            ops = []
            for k in idx:
                if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(PRIMITIVES):
                    raise ArchitectureError(f"Op index {k!r} in topology {topo!r} is not in "
                                            f"[0, {len(PRIMITIVES) - 1}] ({list(PRIMITIVES)}).")
                ops.append(PRIMITIVES[k])
            cells[topo] = ops
        return cls(cells, _layout_arg(layout))

    # ---- NNI samples
    def to_sample(self) -> dict[str, str]:
        """``{label: op}`` with labels ``f"{topology}_e{j}{i}"`` (an NNI sample)."""
        return {label: op for topo, ops in self.cells.items() for label, op in zip(edge_labels(topo), ops)}

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any], layout: Layout | str) -> "DenseRobArch":
        """Build from an NNI sample ``{label: op}`` of ``layout``.

        Raises:
            ArchitectureError: a missing or unknown label, or an unknown op.
        """
        layout = _layout_arg(layout)
        if layout is None:
            raise ArchitectureError("from_sample needs the layout, but got None.")
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"A sample must be a mapping label -> op, but got {sample!r}.")
        known = set(layout.labels())
        check_labels([label for label in sample if not str(label).startswith("__")], known,
                     where=f" for layout {layout.name!r}",
                     looks_like=f"{layout.topologies[0]}_e20 .. _e54 for topologies {list(layout.topologies)}")
        cells = {}
        for topo in layout.topologies:
            ops = []
            for label in edge_labels(topo):
                if label not in sample:
                    raise ArchitectureError(f"Missing label {label!r} in the sample for layout {layout.name!r} "
                                            f"({len(known)} labels expected).")
                ops.append(sample[label])
            cells[topo] = ops
        return cls(cells, layout)

    # ---- JSON
    def to_dict(self) -> dict[str, Any]:
        """Readable dict: ``{"space": "dense_rob", "layout": ..., "cells": {topo: {"n2": [op from
        node 0, op from node 1], "n3": [3 ops], "n4": [4], "n5": [5]}}}``."""
        cells = {}
        for topo, ops in self.cells.items():
            nodes, e = {}, 0
            for j in range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS):
                nodes[f"n{j}"] = list(ops[e:e + j])
                e += j
            cells[topo] = nodes
        return {"space": "dense_rob", "layout": self.layout.to_json_value(), "cells": cells}

    def cell_graphs(self) -> list:
        """The topologies as :class:`nni_robust.archdraw.CellGraph` (inputs ``c_{k-2}``, ``c_{k-1}``, nodes
        ``0..3``, ``none`` edges left out, output ``c_{k}`` = concat), noting where each is used."""
        from nni_robust.archdraw import CellGraph

        names = ("c_{k-2}", "c_{k-1}", "0", "1", "2", "3")
        out = []
        for topo, ops in self.cells.items():
            where = [p for p, t in enumerate(self.layout.cells) if t == topo]
            kind = "reduction" if all(self.layout.is_reduction(p) for p in where) else "normal"
            note = f"{kind}; cell{'s' if len(where) > 1 else ''} {', '.join(map(str, where))}"
            edges = tuple((names[i], names[j], op) for op, (j, i) in zip(ops, EDGES) if op != "none")
            out.append(CellGraph(topo, names[:2], names[2:], edges, note=note))
        return out

    @classmethod
    def from_json(cls, data: "str | Mapping[str, Any]") -> "DenseRobArch":
        """Parse :meth:`to_json` output (a string or the dict).

        Each topology may also be given as a flat list of 14 ops.

        Raises:
            ArchitectureError: malformed JSON or architecture.
        """
        data = json_object(data)
        extra = set(data) - {"space", "layout", "cells"}
        if extra:
            raise ArchitectureError(f"Unknown keys {sorted(extra)} in the architecture JSON; valid keys: "
                                    f"['cells', 'layout', 'space'].")
        if data.get("space", "dense_rob") != "dense_rob":
            raise ArchitectureError(f"Architecture JSON is for space {data['space']!r}, not 'dense_rob'.")
        if "cells" not in data or not isinstance(data["cells"], Mapping):
            raise ArchitectureError("Architecture JSON needs a 'cells' object {topology: {n2: [...], ...}}.")
        layout = None
        if "layout" in data:
            try:
                layout = Layout.from_json_value(data["layout"])
            except ConfigError as exc:
                raise ArchitectureError(str(exc)) from exc
        cells = {}
        for topo, nodes in data["cells"].items():
            if isinstance(nodes, Mapping):
                want = [f"n{j}" for j in range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS)]
                if sorted(nodes) != sorted(want):
                    raise ArchitectureError(f"Topology {topo!r} must have nodes {want}, but got {sorted(nodes)}.")
                ops: list[Any] = []
                for j, key in zip(range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS), want):
                    node_ops = nodes[key]
                    if isinstance(node_ops, str) or not isinstance(node_ops, Sequence) or len(node_ops) != j:
                        raise ArchitectureError(f"Node {key} of topology {topo!r} needs {j} ops (one per "
                                                f"earlier node), but got {node_ops!r}.")
                    ops.extend(node_ops)
                cells[topo] = ops
            else:
                cells[topo] = nodes
        return cls(cells, layout)

    @classmethod
    def parse(cls, text: str, layout: Layout | str | None = None) -> "DenseRobArch":
        """Parse any text form: JSON, an aw_nas genotype, or :meth:`__str__`'s compact form."""
        s = text.strip()
        if s.startswith("{"):
            return cls.from_json(s)
        if s.startswith("DenseRobGenotype") or s.startswith("init_node"):
            return cls.from_aw_nas(s, layout)
        m = re.fullmatch(r"([^\[\]\s]+)\[(.*)\]", s, flags=re.S)
        if not m:
            raise ArchitectureError(f"Cannot parse architecture text {text[:80]!r}: expected JSON, an aw_nas "
                                    f"DenseRobGenotype or the compact form 'layout[topo:0R|S0I|... ...]'.")
        lay = _layout_arg(layout) or _layout_arg(m.group(1))
        cells = {}
        for part in m.group(2).split():
            topo, _, body = part.partition(":")
            nodes = body.split("|")
            try:
                cells[topo] = [_FROM_SHORT[c] for node in nodes for c in node]
            except KeyError as exc:
                raise ArchitectureError(f"Unknown op code {exc.args[0]!r} in {part!r}; codes: {_FROM_SHORT}.") from None
        return cls(cells, lay)

    # ---- aw_nas / RobNet formats
    @classmethod
    def from_aw_nas(cls, genotype: "str | Sequence[str]", layout: Layout | str | None = None) -> "DenseRobArch":
        """Parse aw_nas's dense-rob genotype (walkerning/aw_nas, ``DenseRobGenotype``).

        Accepts the full ``DenseRobGenotype(normal_0='init_node~2+|op~0|op~1|+|...', ...)``
        string, a list of cell strings (one per topology of ``layout`` in order),
        or one cell string (layouts with one topology). Group ``g`` of the
        genotype is the layout's ``g``-th topology in order of first appearance
        (aw_nas ``cell_layout``), e.g. stage-wise ``normal_0 reduce_1 normal_2
        normal_3`` = ``S0 R S1 S2``. Without ``layout``, 8 groups with
        ``reduce_2, reduce_5`` mean cell-wise and 4 groups with ``reduce_1``
        stage-wise.

        Raises:
            ArchitectureError: malformed strings, a group/layout mismatch.
        """
        layout = _layout_arg(layout)
        if isinstance(genotype, str) and genotype.strip().startswith("DenseRobGenotype"):
            fields = re.findall(r"(\w+)\s*=\s*'([^']*)'", genotype)
            if not fields:
                raise ArchitectureError(f"No cell fields found in the genotype {genotype[:80]!r}.")
            groups: dict[int, tuple[str, str]] = {}
            for name, cell in fields:
                m = re.fullmatch(r"(normal|reduce)_(\d+)", name)
                if not m:
                    raise ArchitectureError(f"Genotype field {name!r} is not normal_<i> or reduce_<i>.")
                groups[int(m.group(2))] = (m.group(1), cell)
            if sorted(groups) != list(range(len(groups))):
                raise ArchitectureError(f"Genotype groups must be numbered 0..{len(groups) - 1}, but got "
                                        f"{sorted(groups)}.")
            kinds = [groups[g][0] for g in range(len(groups))]
            if layout is None:
                reduce_groups = [g for g, k in enumerate(kinds) if k == "reduce"]
                if len(groups) == 8 and reduce_groups == [2, 5]:
                    layout = Layout.cellwise()
                elif len(groups) == 4 and reduce_groups == [1]:
                    layout = Layout.stagewise()
                else:
                    raise ArchitectureError(f"Cannot infer the layout of a genotype with groups {kinds}; "
                                            f"pass layout=.")
            topos = layout.topologies
            if len(topos) != len(groups):
                raise ArchitectureError(f"The genotype has {len(groups)} cell groups, but layout "
                                        f"{layout.name!r} has {len(topos)} topologies {list(topos)}.")
            for g, topo in enumerate(topos):
                positions = [p for p, t in enumerate(layout.cells) if t == topo]
                is_red = {layout.is_reduction(p) for p in positions}
                if len(is_red) == 1 and (kinds[g] == "reduce") != is_red.pop():
                    raise ArchitectureError(f"Genotype group {kinds[g]}_{g} maps to topology {topo!r} of "
                                            f"layout {layout.name!r}, whose cells are "
                                            f"{'reduction' if kinds[g] != 'reduce' else 'normal'} cells.")
            strings = [groups[g][1] for g in range(len(groups))]
        else:
            strings = [genotype] if isinstance(genotype, str) else list(genotype)
            if layout is None:
                if len(strings) == 1:
                    layout = Layout.robnet(20, shared=True)
                else:
                    raise ArchitectureError("Pass layout= to parse a list of aw_nas cell strings.")
            if len(strings) != len(layout.topologies):
                raise ArchitectureError(f"Got {len(strings)} cell strings, but layout {layout.name!r} has "
                                        f"{len(layout.topologies)} topologies.")
        cells = {topo: _parse_aw_nas_cell(s, topo) for topo, s in zip(layout.topologies, strings)}
        return cls(cells, layout)

    def to_aw_nas(self) -> str:
        """The aw_nas ``DenseRobGenotype(...)`` string (inverse of :meth:`from_aw_nas`)."""
        fields = []
        for g, topo in enumerate(self.layout.topologies):
            positions = [p for p, t in enumerate(self.layout.cells) if t == topo]
            kind = "reduce" if all(self.layout.is_reduction(p) for p in positions) else "normal"
            fields.append(f"{kind}_{g}='{_format_aw_nas_cell(self.cells[topo])}'")
        return f"DenseRobGenotype({', '.join(fields)})"

    @classmethod
    def from_robnet_codes(cls, codes: Sequence[Any], layout: Layout | str | None = None) -> "DenseRobArch":
        """Parse RobNet's two-bit edge codes (gmh14/RobNets ``architecture_code.py``):
        ``00`` none, ``01`` sep conv, ``10`` identity, ``11`` residual sep conv.

        ``codes`` is one list of 14 codes (shared cell) or one list per topology.
        Without ``layout``: RobNet shared (one list) or RobNet-free (20 lists).
        """
        if len(codes) and isinstance(codes[0], str):
            lists = [list(codes)]
        else:
            lists = [list(c) for c in codes]
        layout = _layout_arg(layout)
        if layout is None:
            layout = Layout.robnet(20, shared=len(lists) == 1) if len(lists) in (1, 20) else None
            if layout is None:
                raise ArchitectureError(f"Pass layout= to parse {len(lists)} RobNet code lists.")
        if len(lists) != len(layout.topologies):
            raise ArchitectureError(f"Got {len(lists)} RobNet code lists, but layout {layout.name!r} has "
                                    f"{len(layout.topologies)} topologies.")
        cells = {}
        for topo, lst in zip(layout.topologies, lists):
            ops = []
            for k, c in enumerate(lst):
                if c not in ROBNET_CODES:
                    raise ArchitectureError(f"Unknown RobNet code {c!r} (edge {k} of {topo!r}); valid codes: "
                                            f"{ROBNET_CODES}.")
                ops.append(ROBNET_CODES[c])
            cells[topo] = ops
        return cls(cells, layout)

    # ---- sampling
    @classmethod
    def random(cls, layout: Layout | str, rng: "_random.Random | int | None" = None) -> "DenseRobArch":
        """A uniformly random architecture: every edge's op uniform over :data:`PRIMITIVES`.

        Args:
            layout: The layout (or its name).
            rng: A ``random.Random`` (or anything with ``choice``), a seed, or
                ``None`` for a fresh unseeded generator.
        """
        layout = _layout_arg(layout)
        rng = as_rng(rng, "sample")
        return cls({t: tuple(rng.choice(PRIMITIVES) for _ in range(NUM_EDGES)) for t in layout.topologies},
                   layout)

    def mutate(self, rng: "_random.Random | int | None" = None, num_edges: int = 1) -> "DenseRobArch":
        """A copy with ``num_edges`` distinct edges changed to a different op (uniform).

        Args:
            rng: A ``random.Random``, a seed, or ``None``.
            num_edges: How many edges change (1 .. all edges of the layout).
        """
        total = NUM_EDGES * len(self.cells)
        if isinstance(num_edges, bool) or not isinstance(num_edges, int) or not 1 <= num_edges <= total:
            raise ConfigError(f"num_edges must be an int in [1, {total}], but got {num_edges!r}.")
        rng = as_rng(rng, "sample")
        cells = {t: list(ops) for t, ops in self.cells.items()}
        slots = [(t, e) for t in cells for e in range(NUM_EDGES)]
        for t, e in rng.sample(slots, num_edges):
            cells[t][e] = rng.choice([op for op in PRIMITIVES if op != cells[t][e]])
        return DenseRobArch(cells, self.layout)

    def replace(self, **changes: str) -> "DenseRobArch":
        """A copy with some edges changed, given as ``label=op`` (e.g. ``c0_e20="none"``)."""
        sample = self.to_sample()
        for label, op in changes.items():
            if label not in sample:
                raise ArchitectureError(f"Unknown label {label!r} for layout {self.layout.name!r}.")
            sample[label] = op
        return DenseRobArch.from_sample(sample, self.layout)


def _edge_order_text() -> str:
    return ",".join(f"({j},{i})" for j, i in EDGES)


def _layout_arg(layout: Any) -> Layout | None:
    if layout is None or isinstance(layout, Layout):
        return layout
    try:
        return Layout.from_json_value(layout)
    except ConfigError as exc:
        raise ArchitectureError(str(exc)) from exc


def _parse_aw_nas_cell(text: str, topo: str) -> list[str]:
    tokens = text.strip().split("+")
    if not tokens or tokens[0].strip() != f"init_node~{NUM_INPUT_NODES}":
        raise ArchitectureError(f"aw_nas cell string of {topo!r} must start with 'init_node~2+', but got "
                                f"{text[:40]!r}.")
    nodes = [t for t in tokens[1:]]
    if len(nodes) != NUM_STEPS:
        raise ArchitectureError(f"aw_nas cell string of {topo!r} has {len(nodes)} internal nodes, expected "
                                f"{NUM_STEPS}: {text!r}.")
    ops = []
    for j, node in zip(range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS), nodes):
        items = [x for x in node.split("|") if x.strip()]
        if len(items) != j:
            raise ArchitectureError(f"Node {j} of {topo!r} needs {j} inputs, but the aw_nas string lists "
                                    f"{len(items)}: {node!r}.")
        for i, item in enumerate(items):
            op, sep, src = item.strip().partition("~")
            if not sep or src != str(i):
                raise ArchitectureError(f"Expected 'op~{i}' for edge ({j},{i}) of {topo!r}, but got {item!r}.")
            ops.append(op)
    return ops


def _format_aw_nas_cell(ops: Sequence[str]) -> str:
    out, e = [f"init_node~{NUM_INPUT_NODES}"], 0
    for j in range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS):
        out.append("|" + "".join(f"{_AW_NAS_NAME.get(op, op)}~{i}|" for i, op in enumerate(ops[e:e + j])))
        e += j
    return "+".join(out)


# --------------------------------------------------------------------------- network

#: MSRobNet construction: edge-op BN non-affine, residual sep conv BN affine
#: (aw_nas registers ResSepConv ignoring the affine flag), see
#: reference_architectures.json "about".
MSROBNET_OP_AFFINE: dict[str, bool] = {"none": False, "skip_connect": False, "sep_conv_3x3": False,
                                       "res_sep_conv_3x3": True}


class DenseRobCell(nn.Module):
    """One dense robust cell (2 inputs, 4 internal nodes, 14 edges).

    Edge ``e`` holds an ``nn.ModuleDict`` op-name -> module with the candidate
    ops (all non-``none`` ops in a supernet, the chosen one in a discrete
    network), so a discrete network's state-dict keys are a subset of the
    supernet's and weights transfer by name.

    Args:
        c_prev_prev: Channels of the input from two cells back.
        c_prev: Channels of the previous cell's output.
        channels: ``C``, channels of every node of this cell.
        reduction: Whether edges leaving the input nodes have stride 2.
        reduction_prev: Whether the previous cell reduced (so input 0 is at
            twice the resolution and is pre-processed by a factorized reduce).
        candidates: Per edge, the op names to build (``none`` is never built).
        op_affine: Per op name, the BN affinity of the edge ops.
        preprocess_affine: BN affinity of the two pre-processing blocks.
    """

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, *, reduction: bool, reduction_prev: bool,
                 candidates: Sequence[Sequence[str]], op_affine: Mapping[str, bool],
                 preprocess_affine: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.channels = channels
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=preprocess_affine)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=preprocess_affine)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=preprocess_affine)
        self.edges = nn.ModuleList()
        for (j, i), ops in zip(EDGES, candidates):
            stride = 2 if reduction and i < NUM_INPUT_NODES else 1
            self.edges.append(nn.ModuleDict({op: build_op(op, channels, stride, op_affine[op])
                                             for op in ops if op != "none"}))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
        """Run the cell with the active op of every edge (``ops``: 14 names)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for j in range(NUM_INPUT_NODES, NUM_INPUT_NODES + NUM_STEPS):
            acc = None
            for i in range(j):
                op = ops[e]
                if op != "none":
                    y = self.edges[e][op](states[i])
                    acc = y if acc is None else acc + y
                e += 1
            if acc is None:  # every input is `none`: the node is zero
                ref = states[1][:, :, ::2, ::2] if self.reduction else states[1]
                acc = torch.zeros_like(ref)
            states.append(acc)
        return torch.cat(states[NUM_INPUT_NODES:], dim=1)


class DenseRobNetwork(nn.Module):
    """A network of dense robust cells; with ``arch=None`` the weight-sharing supernet.

    Construction (MSRobNet, reproducing its published sizes; see
    ``reference_architectures.json``): ``Normalize`` -> stem conv3x3
    (``in_channels -> stem_multiplier * C``) + BN (affine), no ReLU -> cells
    (``C`` channels per node, doubled at every reduction cell, cell output =
    concat of the 4 internal nodes, ``4 C``) -> global average pool ->
    dropout -> linear. Each cell pre-processes its two inputs with
    ReLU-conv1x1-BN, or a factorized reduce when the input is at twice the
    resolution. ``robnet_style=True`` makes every BN inside the cells
    non-affine (RobNet's released code).

    Supernet (``arch=None``): every edge holds all non-``none`` primitives;
    :meth:`set_arch` picks the active op per edge (cheap: no module is
    created), and :meth:`forward` executes only the active ops, so FLOPs
    counted by hooks equal those of the discrete network. ``none`` edges are
    skipped; a node all of whose inputs are ``none`` is zero.

    Args:
        arch: The architecture (discrete network: only its ops are built), or
            ``None`` for the supernet.
        layout: The layout (or its name); defaults to ``arch.layout``. Must
            equal ``arch.layout`` when both are given.
        init_channels: ``C`` of the first cells.
        num_classes: Output classes.
        in_channels: Input image channels.
        input_size: Input height = width (validated: must survive the
            reductions; kept as ``self.input_shape`` for FLOPs counting).
        mean: Per-channel normalization mean (``None``: no normalization).
        std: Per-channel normalization std.
        stem_multiplier: Stem width multiplier (paper: 3).
        stem: Stem type; only ``"conv_bn_3x3"`` (aw_nas ``use_stem``).
        stem_stride: Stride of the stem conv (aw_nas ``stem_stride``, 1 for CIFAR).
        stem_affine: BN affinity of the stem.
        bn_affine_ops: BN affinity of edge ops: a bool for all ops or a mapping
            op name -> bool; default MSRobNet's (only ``res_sep_conv_3x3``
            affine), or all non-affine with ``robnet_style``.
        bn_affine_preprocess: BN affinity of the pre-processing blocks;
            default ``True`` (MSRobNet), ``False`` with ``robnet_style``.
        robnet_style: Use RobNet's BN conventions for the defaults above.
        dropout_rate: Dropout before the classifier (aw_nas ``dropout_rate``, 0).

    Raises:
        ConfigError: bad sizes or options.
        ArchitectureError: ``arch`` and ``layout`` disagree.
    """

    def __init__(self, arch: DenseRobArch | None = None, *, layout: Layout | str | None = None,
                 init_channels: int, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 stem_multiplier: int = 3, stem: str = "conv_bn_3x3", stem_stride: int = 1,
                 stem_affine: bool = True, bn_affine_ops: bool | Mapping[str, bool] | None = None,
                 bn_affine_preprocess: bool | None = None, robnet_style: bool = False,
                 dropout_rate: float = 0.0) -> None:
        super().__init__()
        if arch is not None and not isinstance(arch, DenseRobArch):
            raise ArchitectureError(f"arch must be a DenseRobArch or None, but got {type(arch).__name__}.")
        layout = Layout.from_json_value(layout) if layout is not None else None
        if layout is None:
            if arch is None:
                raise ConfigError("DenseRobNetwork needs layout= when arch is None (the supernet).")
            layout = arch.layout
        elif arch is not None and arch.layout != layout:
            raise ArchitectureError(f"The architecture's layout {arch.layout.name!r} differs from the "
                                    f"network's layout {layout.name!r}.")
        for name, value, low in (("init_channels", init_channels, 1), ("num_classes", num_classes, 1),
                                 ("in_channels", in_channels, 1), ("input_size", input_size, 1),
                                 ("stem_multiplier", stem_multiplier, 1), ("stem_stride", stem_stride, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, but got {value!r}.")
        check_choice("stem", stem, ("conv_bn_3x3",))
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ConfigError(f"dropout_rate must lie in [0, 1), but got {dropout_rate!r}.")
        if input_size // stem_stride < 2 ** len(layout.reductions):
            raise ConfigError(f"input_size={input_size} is too small for stem_stride={stem_stride} and "
                              f"{len(layout.reductions)} reductions.")

        self.layout = layout
        self.init_channels = init_channels
        self.num_classes = num_classes
        self.input_shape = (in_channels, input_size, input_size)
        self.op_affine = _resolve_op_affine(bn_affine_ops, robnet_style)
        preprocess_affine = (not robnet_style) if bn_affine_preprocess is None else bool(bn_affine_preprocess)
        self.is_supernet = arch is None

        self.normalize = Normalize(mean, std)
        c_stem = stem_multiplier * init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(c_stem, affine=stem_affine),
        )
        c_pp, c_p, c = c_stem, c_stem, init_channels
        reduction_prev = False
        self.cells = nn.ModuleList()
        all_ops = [PRIMITIVES] * NUM_EDGES
        for pos in range(layout.num_cells):
            reduction = layout.is_reduction(pos)
            if reduction:
                c *= 2
            candidates = all_ops if arch is None else [(op,) for op in arch.cell_ops(pos)]
            self.cells.append(DenseRobCell(c_pp, c_p, c, reduction=reduction, reduction_prev=reduction_prev,
                                           candidates=candidates, op_affine=self.op_affine,
                                           preprocess_affine=preprocess_affine))
            c_pp, c_p = c_p, NUM_STEPS * c
            reduction_prev = reduction
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.classifier = nn.Linear(c_p, num_classes)

        self._arch: DenseRobArch | None = None
        self._active: list[tuple[str, ...]] | None = None
        if arch is not None:
            self._set_active(arch)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("DenseRobNetwork(%s, layout=%s, C=%d): %d parameters", "supernet" if arch is None else arch,
                         layout.name, init_channels, sum(p.numel() for p in self.parameters()))

    # ---- architecture selection
    @property
    def arch(self) -> DenseRobArch | None:
        """The active architecture (``None`` for a supernet with none set)."""
        return self._arch

    def _set_active(self, arch: DenseRobArch) -> None:
        self._arch = arch
        self._active = [arch.cells[t] for t in self.layout.cells]

    def set_arch(self, arch: "DenseRobArch | Mapping[str, str]") -> None:
        """Choose the active op of every edge (supernet); cheap, no module is created.

        Args:
            arch: A :class:`DenseRobArch` of this network's layout, or an NNI
                sample ``{label: op}``.

        Raises:
            ArchitectureError: another layout, or (discrete network) an op
                that was not built.
        """
        if not isinstance(arch, DenseRobArch):
            if isinstance(arch, Mapping):
                arch = DenseRobArch.from_sample(arch, self.layout)
            else:
                raise ArchitectureError(f"set_arch needs a DenseRobArch or a sample dict, but got {arch!r}.")
        if arch.layout != self.layout:
            raise ArchitectureError(f"The architecture's layout {arch.layout.name!r} differs from the "
                                    f"network's layout {self.layout.name!r}.")
        if not self.is_supernet and arch != self._arch:
            for pos, cell in enumerate(self.cells):
                for e, op in enumerate(arch.cell_ops(pos)):
                    if op != "none" and op not in cell.edges[e]:
                        raise ArchitectureError(f"This discrete network has no {op!r} on edge "
                                                f"{edge_labels(self.layout.cells[pos])[e]}; build a supernet "
                                                f"(arch=None) to switch architectures.")
        self._set_active(arch)

    # ---- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self._active
        if active is None:
            raise ArchitectureError("This DenseRobNetwork is a supernet with no active architecture; call "
                                    "set_arch(arch) before forward.")
        s0 = s1 = self.stem(self.normalize(x))
        for cell, ops in zip(self.cells, active):
            s0, s1 = s1, cell(s0, s1, ops)
        out = s1.mean(dim=(2, 3))
        return self.classifier(self.dropout(out))


def _resolve_op_affine(bn_affine_ops: bool | Mapping[str, bool] | None, robnet_style: bool) -> dict[str, bool]:
    base = {op: False for op in PRIMITIVES} if robnet_style else dict(MSROBNET_OP_AFFINE)
    if bn_affine_ops is None:
        return base
    if isinstance(bn_affine_ops, bool):
        return {op: bn_affine_ops for op in PRIMITIVES}
    if isinstance(bn_affine_ops, Mapping):
        for op, flag in bn_affine_ops.items():
            if op not in PRIMITIVES:
                raise ConfigError(f"bn_affine_ops names unknown op {op!r}; valid ops: {list(PRIMITIVES)}.")
            base[op] = bool(flag)
        return base
    raise ConfigError(f"bn_affine_ops must be None, a bool or a mapping op -> bool, but got {bn_affine_ops!r}.")


# --------------------------------------------------------------------------- analytic FLOPs


def dense_rob_flops(arch: DenseRobArch, *, init_channels: int, num_classes: int = 10, in_channels: int = 3,
                    input_size: int = 32, stem_multiplier: int = 3, stem_stride: int = 1) -> int:
    """FLOPs of ``DenseRobNetwork(arch, ...)`` per image, computed analytically.

    Same convention as :func:`nni_robust.flops.count_flops` (2 per multiply-add
    of convolutions and the linear layer; nothing else), equal to it exactly,
    but microseconds instead of a forward pass -- handy for FLOPs-constrained
    search over many architectures.
    """
    def out(h: int, stride: int) -> int:
        return -(-h // stride)

    h = out(input_size, stem_stride)
    c_stem = stem_multiplier * init_channels
    total = 2 * in_channels * c_stem * 9 * h * h
    c_pp, c_p, c = c_stem, c_stem, init_channels
    h_p = h
    layout = arch.layout
    for pos in range(layout.num_cells):
        reduction = layout.is_reduction(pos)
        if reduction:
            c *= 2
        # pre-processing at the cell's input resolution h_p
        total += 2 * c_pp * c * h_p * h_p  # 1x1 conv, or factorized reduce (two halves at h_p)
        total += 2 * c_p * c * h_p * h_p
        h_in = h_p
        h_out = out(h_in, 2) if reduction else h_in
        sep = 4 * (9 * c + c * c) * h_out * h_out
        fr = 2 * c * c * h_out * h_out
        for op, (j, i) in zip(arch.cell_ops(pos), EDGES):
            strided = reduction and i < NUM_INPUT_NODES
            if op == "sep_conv_3x3":
                total += sep
            elif op == "res_sep_conv_3x3":
                total += sep + (fr if strided else 0)
            elif op == "skip_connect" and strided:
                total += fr
        c_pp, c_p = c_p, NUM_STEPS * c
        h_p = h_out
    total += 2 * c_p * num_classes
    return int(total)


# --------------------------------------------------------------------------- NNI model space

def _define_space(base: type) -> type:
    class DenseRobSpace(base):
        """NNI 3.0 model space of the dense robust cell: one ``nni.choice`` per edge.

        Labels are ``f"{topology}_e{j}{i}"`` with candidates :data:`PRIMITIVES`;
        positions that share a topology (stage-wise ``R``, RobNet's shared
        cell) share its labels. Building the space registers the 14 x
        (number of topologies) choices and builds the discrete
        :class:`DenseRobNetwork` of the current sample (inside
        ``nni.nas.space.model_context(sample)``) or of the default sample
        (every edge ``none``: cheap), never a supernet. ``freeze(sample)``
        rebuilds the space under ``model_context(sample)``.

        Args:
            layout: The layout or its name (default ``cellwise``).
            **network_kwargs: Keyword arguments of :class:`DenseRobNetwork`
                (``init_channels`` defaults to 16: the space's choices do not
                depend on the width, which the trials set themselves).

        Attributes:
            arch: The :class:`DenseRobArch` built.
            network: The :class:`DenseRobNetwork`.
        """

        def __init__(self, *, layout: Layout | str = "cellwise", **network_kwargs: Any) -> None:
            super().__init__()
            layout_obj = Layout.from_json_value(layout)
            network_kwargs.setdefault("init_channels", 16)
            chosen = {label: self.choose(label, PRIMITIVES) for label in layout_obj.labels()}
            self.arch = DenseRobArch.from_sample(chosen, layout_obj)
            self.network = DenseRobNetwork(self.arch, layout=layout_obj, **network_kwargs)

    return DenseRobSpace


_make_space_class = lazy_space_class(__name__, _define_space)
__getattr__ = lazy_module_getattr(__name__, DenseRobSpace=_make_space_class)


# --------------------------------------------------------------------------- settings dicts


def layout_of(space: Mapping[str, Any]) -> Layout:
    """The :class:`Layout` a settings ``space`` dict names by ``layout`` (default ``cellwise``).

    Raises:
        ConfigError: the dict names another space, or an unknown layout.
    """
    if space.get("name", "dense_rob") != "dense_rob":
        raise ConfigError(f"layout_of needs a dense_rob space, but settings.space names {space['name']!r}.")
    name = space.get("layout", "cellwise")
    return name if isinstance(name, Layout) else Layout.from_name(name)


def build_dense_rob_space(space: Mapping[str, Any], info: Any, init_channels: int,
                          arch: DenseRobArch | None = None) -> nn.Module:
    """The network of ``arch`` (``None``: the weight-sharing supernet) from a settings ``space`` dict.

    ``space`` keys other than ``name`` and ``layout`` (by name) are keyword
    arguments of :class:`DenseRobNetwork`; ``info`` is a
    :class:`nni_robust.data.DatasetInfo`.
    """
    kwargs = {k: v for k, v in space.items() if k != "name"}
    kwargs["layout"] = layout_of(space)
    return DenseRobNetwork(arch, init_channels=int(init_channels), num_classes=info.num_classes,
                           in_channels=info.channels, input_size=info.size, mean=info.mean, std=info.std,
                           **kwargs)


register_space(SpaceKind(
    name="dense_rob", build=build_dense_rob_space, parse_arch=DenseRobArch.from_json,
    from_sample=lambda sample, space: DenseRobArch.from_sample(sample, layout_of(space)),
    arch_type=DenseRobArch, model_space=f"{__name__}.DenseRobSpace",
    doc="dense robust cell of RobNet / MSRobNet (14 edges, 4 ops)"))
