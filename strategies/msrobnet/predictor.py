"""Architecture-performance predictor of MSRobNet's predictor-based controller.

MSRobNet (``msrobnet-multishot-nas.txt``) Sec. 5.3.3 and App. B.1: a GATES-style
graph encoder (Ning et al., "A Generic Graph-based Neural Architecture Encoding
Scheme for Predictor-based NAS", ECCV 2020, the paper's ref. [22]) embeds each
cell topology of a stage-wise architecture (S0, S1, S2, R); the embeddings are
concatenated and an MLP maps them to a score. Only the ranking of scores
matters: the predictor is trained with the hinge pair-wise ranking loss.

Encoder (one per cell topology graph; details from the authors' code, see
``shared/notes/methods.md``):

* a cell is a DAG described by a :class:`CellGraph` (nodes, input nodes,
  edges, the ops an edge may carry, and the NNI labels of each cell's edges).
  MSRobNet's dense robust cell has 6 nodes (2 inputs, 4 internal) and 14 edges
  (:data:`nni_robust.spaces.dense_rob.EDGES`), each carrying one op of
  :data:`~nni_robust.spaces.ops.PRIMITIVES` (:meth:`CellGraph.from_layout`:
  one cell per topology of a layout); NAS-Bench-201's cell
  (:meth:`CellGraph.nb201`) has 4 nodes (1 input) and 6 edges of 5 ops; any
  other cell DAG is a :meth:`CellGraph.from_dict` away;
* node features: a learned embedding for each input node and one shared
  learned embedding for the other nodes, projected by a linear layer
  (GATES' ``x_hidden``);
* each graph layer (:class:`GatedOpConv`, a torch-geometric ``MessagePassing``)
  computes ``support = X W`` and ``out_i = sum_{j -> i} g_ji * support_j +
  support_i`` with the element-wise edge gate ``g_ji = sigmoid(Linear(op
  embedding))``; a ``none`` edge is not in the graph at all, so it carries
  nothing (its gate is exactly zero); ReLU between layers;
* readout: mean of the non-input nodes' features of the last layer;
* a graph that knows its isomorphism classes (NAS-Bench-201's, as the
  robustness dataset groups cells) encodes each cell as its class's
  representative (:meth:`CellGraph.representatives`; not in the paper, whose
  dense robust cell has none): cells that compute the same function embed
  identically, and ops on edges that reach no output are ``none``. On the
  robustness table this raises the Kendall tau of a predictor trained on 40
  to 200 random cells from 0.24-0.39 to 0.33-0.53 (PGD at 1/255) and from
  0.55-0.67 to 0.69-0.76 (clean accuracy).

Defaults: op, node and hidden dimension 48, 4 graph layers whose last has
output dimension 32 (so a stage-wise architecture is a 4 x 32 = 128-d vector),
dropout 0.1 before a 3-hidden-layer MLP of 256 units; Adam 1e-3, 100 epochs,
batch 50, margin 0.1 (App. B.1).

Also here: :func:`ranking_loss`, :func:`train_predictor` (initial training and
incremental tuning), :func:`predict`, and the quality measures of the paper's
App. D.1 (:func:`ranking_quality`: Kendall tau, Spearman, P@K).

torch-geometric takes many seconds to import, so the graph classes
(:class:`GatedOpConv`, :class:`CellEncoder`, :class:`ArchPredictor`) are
defined on first use (``predictor.ArchPredictor`` works as usual).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nni_robust.config import check_range, from_dict
from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.spaces.dense_rob import EDGES, NUM_EDGES, DenseRobArch, Layout, edge_labels
from nni_robust.spaces.ops import PRIMITIVES

__all__ = [
    "PredictorConfig", "RankTrainConfig", "CellGraph", "cell_graph", "NUM_NODES", "NONE_INDEX", "encode_archs",
    "ranking_loss",
    "train_predictor", "predict", "precision_at_k", "ranking_quality", "GatedOpConv", "CellEncoder",
    "ArchPredictor", "build_predictor", "config_dict",
]

logger = logging.getLogger(__name__)

#: Nodes of a dense robust cell graph: 2 inputs + 4 internal nodes.
NUM_NODES = 6
#: Index of ``none`` in :data:`PRIMITIVES` (an absent edge).
NONE_INDEX = PRIMITIVES.index("none")
_OP_INDEX = {op: k for k, op in enumerate(PRIMITIVES)}


# ---------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PredictorConfig:
    """Architecture of the predictor (MSRobNet App. B.1, GATES).

    Attributes:
        op_dim: operation embedding dimension (paper: 48).
        node_dim: node embedding dimension (paper: 48).
        hidden_dim: dimension the node embeddings are projected to (a linear
            layer, GATES' ``x_hidden``) before the graph layers (paper: 48).
        internal_nodes: initial feature of the 4 internal nodes: ``"learned"``
            (one learned embedding shared by them; GATES' default, the paper is
            silent) or ``"zero"`` (GATES' ``other_node_zero``). The 2 input nodes
            always have their own learned embeddings.
        gcn_dims: output dimension of each graph layer (paper: hidden 48, cell
            output 32; 4 layers as in the authors' code).
        mlp_hiddens: hidden units of the score MLP (paper: 3 layers of 256).
        dropout: dropout on the architecture embedding, before the MLP (0.1).
        share_cells: one graph encoder for every cell topology (True) or one per
            topology. The paper is silent; sharing is GATES' choice for a cell
            type and keeps the parameter count small for 200 training
            architectures. The topologies stay distinct by their position in
            the concatenation.
    """

    op_dim: int = 48
    node_dim: int = 48
    hidden_dim: int = 48
    internal_nodes: str = "learned"
    gcn_dims: tuple[int, ...] = (48, 48, 48, 32)
    mlp_hiddens: tuple[int, ...] = (256, 256, 256)
    dropout: float = 0.1
    share_cells: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "gcn_dims", tuple(self.gcn_dims))
        object.__setattr__(self, "mlp_hiddens", tuple(self.mlp_hiddens))
        for name in ("op_dim", "node_dim", "hidden_dim"):
            _check_pos_int(f"predictor.{name}", getattr(self, name))
        if not self.gcn_dims:
            raise ConfigError("predictor.gcn_dims must list at least one graph layer, but got [].")
        for d in self.gcn_dims:
            _check_pos_int("predictor.gcn_dims entries", d)
        for d in self.mlp_hiddens:
            _check_pos_int("predictor.mlp_hiddens entries", d)
        if self.internal_nodes not in ("learned", "zero"):
            raise ConfigError(f"predictor.internal_nodes must be 'learned' or 'zero', but got {self.internal_nodes!r}.")
        check_range("predictor.dropout", self.dropout, 0.0, 1.0, high_open=True)
        if not isinstance(self.share_cells, bool):
            raise ConfigError(f"predictor.share_cells must be true or false, but got {self.share_cells!r}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PredictorConfig":
        """Build from a (YAML) dict; unknown keys are a :class:`ConfigError`."""
        return from_dict(cls, data, "predictor")


@dataclass(frozen=True)
class RankTrainConfig:
    """Training of the predictor (MSRobNet App. B.1).

    Attributes:
        epochs: epochs of the initial training (paper: 100).
        tune_epochs: epochs of each incremental tuning (paper: "in each predictor
            training process ... 100 epochs").
        batch_size: architectures per batch; every pair inside a batch is a
            ranking pair (paper: 50).
        lr: Adam learning rate (1e-3). A fresh Adam is used for every training
            or tuning (the paper is silent).
        weight_decay: Adam weight decay (paper silent: 0).
        margin: hinge margin m of the pair-wise ranking loss (0.1).
        compare_threshold: pairs whose rewards differ by no more than this are
            not ranking pairs (GATES' option; 0 keeps every pair of distinct rewards).
    """

    epochs: int = 100
    tune_epochs: int = 100
    batch_size: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    margin: float = 0.1
    compare_threshold: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "tune_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"training.{name} must be an integer >= 0, but got {value!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError(f"training.batch_size must be an integer >= 2 (pairs are formed inside a "
                              f"batch), but got {self.batch_size!r}.")
        check_range("training.lr", self.lr, 0.0, low_open=True)
        check_range("training.weight_decay", self.weight_decay, 0.0)
        check_range("training.margin", self.margin, 0.0)
        check_range("training.compare_threshold", self.compare_threshold, 0.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "RankTrainConfig":
        """Build from a (YAML) dict; unknown keys are a :class:`ConfigError`."""
        return from_dict(cls, data, "training")


def _check_pos_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, but got {value!r}.")


# ---------------------------------------------------------------------- cell graphs
@dataclass(frozen=True)
class CellGraph:
    """A cell DAG the GATES encoder embeds, and how an NNI sample fills its edges.

    An architecture is ``len(cells)`` cells of this DAG (one per cell
    topology); each edge carries one op of ``ops`` (an edge carrying
    ``none_op`` is left out of the graph); the architecture's embedding is
    the concatenation of its cells' embeddings, in ``cells`` order.

    Attributes:
        name: Name for messages and checkpoints (a dense robust layout's name, ``"nb201"``).
        num_nodes: Nodes of the DAG; nodes ``0 .. num_inputs - 1`` are the cell's inputs (each
            with its own learned embedding), the readout averages the others.
        num_inputs: Input nodes.
        edges: ``(source, target)`` of each edge, ``source < target``, ``target >= num_inputs``.
        ops: The op names an edge may carry (the values of the NNI samples).
        cells: Per cell topology, the NNI sample label of each edge (in ``edges`` order).
        none_op: The op meaning "no edge", or ``None`` when every op is an edge.
        canonical: Optional key of a sample's isomorphism class (samples with equal keys compute the
            same function; NAS-Bench-201's is the robustness dataset's grouping), or None.

    Raises:
        ConfigError: an inconsistent description (naming the bad part).
    """

    name: str
    num_nodes: int
    num_inputs: int
    edges: tuple[tuple[int, int], ...]
    ops: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    none_op: str | None = "none"
    canonical: Callable[[Mapping[str, Any]], Hashable] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple((int(a), int(b)) for a, b in self.edges))
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "cells", tuple(tuple(c) for c in self.cells))
        where = f"cell graph {self.name!r}"
        _check_pos_int(f"{where}: num_nodes", self.num_nodes)
        _check_pos_int(f"{where}: num_inputs", self.num_inputs)
        if self.num_inputs >= self.num_nodes:
            raise ConfigError(f"{where}: num_inputs ({self.num_inputs}) must be smaller than num_nodes "
                              f"({self.num_nodes}): the readout averages the non-input nodes.")
        if not self.edges:
            raise ConfigError(f"{where} has no edge.")
        for a, b in self.edges:
            if not (0 <= a < b < self.num_nodes) or b < self.num_inputs:
                raise ConfigError(f"{where}: edge ({a}, {b}) must go from a node to a later non-input node "
                                  f"(0 <= source < target < {self.num_nodes}, target >= {self.num_inputs}).")
        if len(set(self.edges)) != len(self.edges):
            raise ConfigError(f"{where} lists an edge twice: {list(self.edges)}.")
        if not self.ops or len(set(self.ops)) != len(self.ops) or not all(isinstance(o, str) for o in self.ops):
            raise ConfigError(f"{where}: ops must be distinct names, but got {list(self.ops)}.")
        if self.none_op is not None and self.none_op not in self.ops:
            raise ConfigError(f"{where}: none_op {self.none_op!r} is not one of the ops {list(self.ops)}.")
        if not self.cells:
            raise ConfigError(f"{where} needs at least one cell (the NNI labels of its edges).")
        for t, cell in enumerate(self.cells):
            if len(cell) != len(self.edges):
                raise ConfigError(f"{where}: cell {t} names {len(cell)} labels, but the DAG has "
                                  f"{len(self.edges)} edges.")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"{where}: a label is used twice: {list(self.labels)}.")

    # ---- constructors
    @classmethod
    def from_layout(cls, layout: Layout | str | Mapping[str, Any]) -> "CellGraph":
        """MSRobNet's dense robust cell (2 inputs, 4 internal nodes, 14 edges), one cell per
        topology of ``layout`` (in ``layout.topologies`` order)."""
        layout = Layout.from_json_value(layout)
        return cls(name=layout.name, num_nodes=NUM_NODES, num_inputs=2, edges=tuple((i, j) for j, i in EDGES),
                   ops=tuple(PRIMITIVES), cells=tuple(edge_labels(t) for t in layout.topologies), none_op="none")

    @classmethod
    def nb201(cls) -> "CellGraph":
        """NAS-Bench-201's cell (:mod:`nni_robust.spaces.nb201`): 4 nodes (node 0 the input),
        6 edges, the 5 ops under NNI's names, labels ``cell/0_1`` ... ``cell/2_3``."""
        from nni_robust.spaces import nb201

        return cls(name="nb201", num_nodes=nb201.NUM_NODES, num_inputs=1, edges=nb201.EDGES, ops=nb201.NNI_OPS,
                   cells=(nb201.edge_labels(),), none_op="none", canonical=_nb201_canonical)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CellGraph":
        """Any cell DAG: ``{"name", "num_nodes", "num_inputs", "edges": [[src, dst], ...],
        "ops": [...], "cells": [[label per edge], ...], "none_op"}`` (unknown keys are errors)."""
        data = dict(data)
        data.setdefault("name", "custom")
        if "canonical" in data:
            raise ConfigError("A cell_graph description cannot name a 'canonical' function; only built-in graphs "
                              f"({sorted(NAMED_GRAPHS)}) know their isomorphism.")
        return from_dict(cls, data, "cell_graph")

    # ---- views
    @property
    def num_edges(self) -> int:
        """Edges per cell."""
        return len(self.edges)

    @property
    def none_index(self) -> int | None:
        """Index of ``none_op`` in ``ops`` (None: no such op)."""
        return None if self.none_op is None else self.ops.index(self.none_op)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every edge label, cell by cell (the order of :meth:`to_array`)."""
        return tuple(label for cell in self.cells for label in cell)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (:meth:`from_dict` reads it)."""
        return {"name": self.name, "num_nodes": self.num_nodes, "num_inputs": self.num_inputs,
                "edges": [list(e) for e in self.edges], "ops": list(self.ops),
                "cells": [list(c) for c in self.cells], "none_op": self.none_op}

    def to_array(self, sample: Mapping[str, Any]) -> np.ndarray:
        """Op indices of a sample, ``int64 (len(cells) * num_edges,)``.

        Raises:
            ArchitectureError: a missing label or an unknown op.
        """
        index = self._op_index
        try:
            return np.fromiter((index[sample[label]] for label in self.labels), dtype=np.int64,
                               count=len(self.labels))
        except (KeyError, TypeError):
            pass
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"A sample of {self.name!r} must be a dict label -> op, but got {sample!r}.")
        missing = [label for label in self.labels if label not in sample]
        if missing:
            raise ArchitectureError(f"The sample lacks labels {missing[:6]} of cell graph {self.name!r}.")
        bad = next(label for label in self.labels if sample[label] not in index)
        raise ArchitectureError(f"Label {bad!r} has op {sample[bad]!r}, not one of {list(self.ops)} "
                                f"(cell graph {self.name!r}).")

    def to_sample(self, array: Sequence[int] | np.ndarray) -> dict[str, str]:
        """Inverse of :meth:`to_array`."""
        return {label: self.ops[int(v)] for label, v in zip(self.labels, array)}

    def isomorphism_key(self, array: np.ndarray) -> Hashable:
        """The key of the isomorphism class of an op-index array (:attr:`canonical`).

        Raises:
            ConfigError: the graph knows no isomorphism.
        """
        if self.canonical is None:
            raise ConfigError(f"Cell graph {self.name!r} knows no isomorphism classes.")
        return self.canonical(self.to_sample(array))

    def representatives(self, arrays: np.ndarray) -> np.ndarray:
        """Each op-index array (``(L,)`` or ``(B, L)``) replaced by its isomorphism class's
        representative: the smallest array of the class in lexicographic order.

        Cells that compute the same function then look the same to the predictor:
        an op on an edge that reaches no output becomes ``none``, and the
        numbering of interchangeable nodes is fixed. Arrays are returned
        unchanged when the graph knows no isomorphism classes (:attr:`canonical`
        is None, e.g. MSRobNet's dense robust cell) or its space is too large to
        enumerate (more than :data:`REPRESENTATIVE_LIMIT` architectures).
        """
        arrays = np.asarray(arrays, dtype=np.int64)
        table = _representative_table(self, self.canonical)
        if table is None:
            return arrays
        place = len(self.ops) ** np.arange(len(self.labels) - 1, -1, -1, dtype=np.int64)
        return table[arrays @ place]

    def encode(self, samples: Iterable[Mapping[str, Any]], *, canonical: bool = True) -> torch.Tensor:
        """Op indices of samples, ``int64 (B, len(cells), num_edges)``: with ``canonical`` (the
        predictor's input), each sample's class representative (:meth:`representatives`)."""
        rows = [self.to_array(s) for s in samples]
        shape = (len(rows), len(self.cells), self.num_edges)
        if not rows:
            return torch.zeros(shape, dtype=torch.long)
        stacked = np.stack(rows)
        if canonical:
            stacked = self.representatives(stacked)
        return torch.from_numpy(np.ascontiguousarray(stacked)).view(shape)

    def check_labels(self, values: Mapping[str, Sequence[Any]], where: str = "the model space") -> None:
        """Check that ``values`` (``{label: its choices}``, e.g. a simplified NNI space) are exactly
        this graph's labels, each choosing among ``ops``.

        Raises:
            ConfigError: naming the labels or values that differ.
        """
        mine, theirs = set(self.labels), set(values)
        if mine != theirs:
            raise ConfigError(f"Cell graph {self.name!r} does not fit {where}: labels only in the graph "
                              f"{sorted(mine - theirs)[:6]}, only in {where} {sorted(theirs - mine)[:6]}.")
        for label, choices in values.items():
            extra = [v for v in choices if v not in self._op_index]
            if extra:
                raise ConfigError(f"Label {label!r} of {where} chooses {extra}, which cell graph {self.name!r} "
                                  f"does not know (its ops: {list(self.ops)}).")

    @property
    def _op_index(self) -> dict[str, int]:
        return {op: k for k, op in enumerate(self.ops)}


#: Graphs with isomorphism classes whose space has at most this many architectures are encoded by class
#: representatives (:meth:`CellGraph.representatives`; NAS-Bench-201: 15,625).
REPRESENTATIVE_LIMIT = 100_000


@functools.lru_cache(maxsize=8)
def _representative_table(graph: CellGraph, canonical: Any) -> np.ndarray | None:
    """``table[i]``: the representative of the ``i``-th array in lexicographic order (None: none known)."""
    num_ops, length = len(graph.ops), len(graph.labels)
    if canonical is None or num_ops ** length > REPRESENTATIVE_LIMIT:
        return None
    place = num_ops ** np.arange(length - 1, -1, -1, dtype=np.int64)
    every = (np.arange(num_ops ** length, dtype=np.int64)[:, None] // place) % num_ops
    first: dict[Hashable, int] = {}
    rep = np.fromiter((first.setdefault(graph.isomorphism_key(a), i) for i, a in enumerate(every)),
                      dtype=np.int64, count=len(every))  # the first in lexicographic order is the smallest
    logger.debug("Cell graph %r: %d architectures in %d isomorphism classes.", graph.name, len(every), len(first))
    return every[rep]


def _nb201_canonical(sample: Mapping[str, Any]) -> str:
    from nni_robust.spaces.nb201 import NB201Arch, canonical_string

    return canonical_string(NB201Arch.from_sample(sample))


#: Cell graphs known by name (``cell_graph("nb201")``); other names are dense robust layouts.
NAMED_GRAPHS: dict[str, Callable[[], CellGraph]] = {"nb201": CellGraph.nb201}


def _is_graph_spec(spec: Any) -> bool:
    """Whether ``spec`` names a :class:`CellGraph` rather than a dense robust layout."""
    return isinstance(spec, CellGraph) or (isinstance(spec, str) and spec in NAMED_GRAPHS) \
        or (isinstance(spec, Mapping) and "edges" in spec)


def cell_graph(spec: "CellGraph | Layout | str | Mapping[str, Any]") -> CellGraph:
    """A :class:`CellGraph` from itself, a name of :data:`NAMED_GRAPHS` (``"nb201"``), a dense
    robust :class:`Layout` (or its name or dict), or a :meth:`CellGraph.from_dict` description.

    Raises:
        ConfigError: none of these.
    """
    if isinstance(spec, CellGraph):
        return spec
    if isinstance(spec, str) and spec in NAMED_GRAPHS:
        return NAMED_GRAPHS[spec]()
    if isinstance(spec, Mapping) and "edges" in spec:
        return CellGraph.from_dict(spec)
    return CellGraph.from_layout(spec)


# ---------------------------------------------------------------------- encoding of architectures
def encode_archs(archs: Iterable[DenseRobArch | Mapping[str, Any]],
                 layout: "Layout | str | CellGraph | Mapping[str, Any]") -> torch.Tensor:
    """Op indices of architectures as a ``(B, T, 14)`` int64 tensor.

    With a :class:`CellGraph` (or ``"nb201"``, or a graph description) instead
    of a layout: NNI samples of that graph, ``(B, len(cells), num_edges)``
    (:meth:`CellGraph.encode`).

    Args:
        archs: :class:`DenseRobArch` objects or NNI samples ``{label: op}`` of ``layout``.
        layout: the layout; ``T`` = its number of topologies, in
            ``layout.topologies`` order (stage-wise: S0, R, S1, S2).

    Raises:
        ArchitectureError: a sample lacks a label, has an unknown op, or is of another layout.
    """
    if _is_graph_spec(layout):
        return cell_graph(layout).encode(archs)
    layout = Layout.from_json_value(layout)
    labels = [edge_labels(t) for t in layout.topologies]
    rows = []
    for n, arch in enumerate(archs):
        if isinstance(arch, DenseRobArch):
            if arch.layout != layout:
                raise ArchitectureError(f"Architecture {n} has layout {arch.layout.name!r}, expected {layout.name!r}.")
            idx = arch.to_indices()
            rows.append([idx[t] for t in layout.topologies])
            continue
        try:
            rows.append([[_OP_INDEX[arch[label]] for label in cell] for cell in labels])
        except (KeyError, TypeError):
            DenseRobArch.from_sample(arch, layout)  # raises the descriptive error
            raise ArchitectureError(f"Architecture {n} is not a sample of layout {layout.name!r}: {arch!r}") from None
    if not rows:
        return torch.zeros((0, len(labels), NUM_EDGES), dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long)


# ---------------------------------------------------------------------- graph modules (torch-geometric)
_GNN: dict[str, type] = {}


def _define_gnn() -> dict[str, type]:
    """Define the torch-geometric modules on first use (importing torch_geometric is slow)."""
    if _GNN:
        return _GNN
    try:
        from torch_geometric.nn import MessagePassing
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ImportError("The architecture predictor needs torch-geometric: pip install torch-geometric") from exc

    class GatedOpConv(MessagePassing):
        """One GATES graph layer: ``out_i = sum_{j -> i} sigmoid(Linear(op_ji)) * (X W)_j + (X W)_i``.

        The gate depends on the edge's op only, so it is computed once per op
        (``sigmoid(Linear(op_table))``) and gathered per edge.

        Args:
            in_dim: input node feature dimension.
            out_dim: output node feature dimension.
            op_dim: operation embedding dimension.
        """

        def __init__(self, in_dim: int, out_dim: int, op_dim: int) -> None:
            super().__init__(aggr="add", flow="source_to_target")
            self.weight = nn.Linear(in_dim, out_dim, bias=False)
            self.gate = nn.Linear(op_dim, out_dim)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_op: torch.Tensor,
                    op_table: torch.Tensor) -> torch.Tensor:
            """``x``: (N, in_dim); ``edge_index``: (2, E) source -> target; ``edge_op``: (E,) op
            index of each edge; ``op_table``: (num ops, op_dim) op embeddings."""
            support = self.weight(x)
            gate = torch.sigmoid(self.gate(op_table))
            return self.propagate(edge_index, x=support, gate=gate[edge_op]) + support

        def message(self, x_j: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # noqa: D102
            return gate * x_j

    class CellEncoder(nn.Module):
        """Embeds a batch of cells: ``(C, E)`` op indices -> ``(C, gcn_dims[-1])``.

        Args:
            config: the predictor's :class:`PredictorConfig`.
            op_embedding: the op embedding table (shared by the cell encoders).
            graph: the cell DAG (default: MSRobNet's dense robust cell, 14 edges).
        """

        def __init__(self, config: PredictorConfig, op_embedding: nn.Embedding,
                     graph: CellGraph | None = None) -> None:
            super().__init__()
            graph = graph or CellGraph.from_layout("cellwise")
            self.cell_graph = graph
            self.num_nodes, self.num_inputs, self.num_edges = graph.num_nodes, graph.num_inputs, graph.num_edges
            self.none_index = graph.none_index
            self.register_buffer("edge_src", torch.tensor([a for a, _ in graph.edges], dtype=torch.long),
                                 persistent=False)
            self.register_buffer("edge_dst", torch.tensor([b for _, b in graph.edges], dtype=torch.long),
                                 persistent=False)
            self.op_embedding = op_embedding
            self.input_nodes = nn.Embedding(graph.num_inputs, config.node_dim)
            self.internal_node = nn.Parameter(torch.zeros(1, config.node_dim),
                                              requires_grad=config.internal_nodes == "learned")
            if config.internal_nodes == "learned":
                nn.init.normal_(self.internal_node)
            self.x_hidden = nn.Linear(config.node_dim, config.hidden_dim)
            dims = (config.hidden_dim,) + tuple(config.gcn_dims)
            self.layers = nn.ModuleList(GatedOpConv(a, b, config.op_dim) for a, b in zip(dims[:-1], dims[1:]))
            self.out_dim = dims[-1]

        def graph(self, ops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(edge_index (2, E'), op index (E',)) of the batched graph of ``C`` cells; ``none`` edges omitted."""
            present = ops != self.none_index if self.none_index is not None else torch.ones_like(ops, dtype=torch.bool)
            cell, edge = present.nonzero(as_tuple=True)
            base = cell * self.num_nodes
            edge_index = torch.stack([base + self.edge_src[edge], base + self.edge_dst[edge]])
            return edge_index, ops[cell, edge]

        def forward(self, ops: torch.Tensor) -> torch.Tensor:
            num_cells = ops.shape[0]
            edge_index, edge_op = self.graph(ops)
            nodes = self.x_hidden(torch.cat([self.input_nodes.weight,
                                             self.internal_node.expand(self.num_nodes - self.num_inputs, -1)]))
            x = nodes.repeat(num_cells, 1)
            for k, layer in enumerate(self.layers):
                x = layer(x, edge_index, edge_op, self.op_embedding.weight)
                if k < len(self.layers) - 1:
                    x = torch.relu(x)
            return x.view(num_cells, self.num_nodes, -1)[:, self.num_inputs:].mean(dim=1)

    class ArchPredictor(nn.Module):
        """Scores architectures: ``(B, T, E)`` op indices -> ``(B,)`` scores.

        MSRobNet Sec. 5.3.3 / App. B.1: one embedding per cell topology,
        concatenated (in ``layout.topologies`` order), dropout, then an MLP.

        Args:
            layout: the dense robust layout (stage-wise in the paper: 4 topologies,
                ``E = 14``), or any :class:`CellGraph` (or what :func:`cell_graph` reads).
            config: :class:`PredictorConfig` (default: the paper's).

        Attributes:
            cell_graph: the :class:`CellGraph`.
            layout: the dense robust :class:`Layout`, or None for another graph.
        """

        def __init__(self, layout: "Layout | str | CellGraph | Mapping[str, Any]",
                     config: PredictorConfig | None = None) -> None:
            super().__init__()
            graph = cell_graph(layout)
            self.cell_graph = graph
            self.layout = None if _is_graph_spec(layout) else Layout.from_json_value(layout)
            self.config = config or PredictorConfig()
            self.num_topologies = len(graph.cells)
            self.num_edges = graph.num_edges
            self.op_embedding = nn.Embedding(len(graph.ops), self.config.op_dim)
            count = 1 if self.config.share_cells else self.num_topologies
            self.cells = nn.ModuleList(CellEncoder(self.config, self.op_embedding, graph) for _ in range(count))
            dims = (self.num_topologies * self.cells[0].out_dim,) + self.config.mlp_hiddens
            layers: list[nn.Module] = [nn.Dropout(self.config.dropout)]
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            layers.append(nn.Linear(dims[-1], 1))
            self.mlp = nn.Sequential(*layers)

        @property
        def embedding_dim(self) -> int:
            """Dimension of the architecture embedding (T x cell output dimension)."""
            return self.num_topologies * self.cells[0].out_dim

        def embed(self, ops: torch.Tensor) -> torch.Tensor:
            """Architecture embeddings ``(B, T * cell_dim)`` of op indices ``(B, T, E)``."""
            if ops.dim() != 3 or ops.shape[1:] != (self.num_topologies, self.num_edges):
                raise ArchitectureError(f"Op indices must have shape (B, {self.num_topologies}, {self.num_edges}) "
                                        f"for {self.cell_graph.name!r}, but got {tuple(ops.shape)}.")
            batch = ops.shape[0]
            if self.config.share_cells:
                return self.cells[0](ops.reshape(-1, self.num_edges)).view(batch, -1)
            return torch.cat([enc(ops[:, t]) for t, enc in enumerate(self.cells)], dim=1)

        def forward(self, ops: torch.Tensor) -> torch.Tensor:
            return self.mlp(self.embed(ops)).squeeze(-1)

    for cls in (GatedOpConv, CellEncoder, ArchPredictor):
        cls.__module__ = __name__
        _GNN[cls.__name__] = cls
    return _GNN


def __getattr__(name: str) -> Any:  # PEP 562
    if name in ("GatedOpConv", "CellEncoder", "ArchPredictor"):
        return _define_gnn()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_predictor(layout: "Layout | str | CellGraph | Mapping[str, Any]",
                    config: PredictorConfig | Mapping[str, Any] | None = None, *,
                    seed: int | None = 0, device: str | torch.device = "cpu") -> nn.Module:
    """A freshly initialised :class:`ArchPredictor` of a layout or :class:`CellGraph` (weights
    seeded by ``seed``) on ``device``."""
    if not isinstance(config, PredictorConfig):
        config = PredictorConfig.from_dict(config)
    cls = _define_gnn()["ArchPredictor"]
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        model = cls(layout, config)
    return model.to(device)


# ---------------------------------------------------------------------- loss and training
def ranking_loss(scores: torch.Tensor, rewards: torch.Tensor, *, margin: float = 0.1,
                 threshold: float = 0.0) -> torch.Tensor:
    """Hinge pair-wise ranking loss over every pair of the batch (GATES; MSRobNet App. B.1).

    ``mean over pairs (a, b) with |r_a - r_b| > threshold of max(0, m - y (s_a - s_b))``,
    ``y = sign(r_a - r_b)``. Zero (with a gradient graph) when there is no pair.
    """
    n = scores.shape[0]
    a, b = torch.triu_indices(n, n, offset=1, device=scores.device)
    diff = rewards[a] - rewards[b]
    keep = diff.abs() > threshold
    y = torch.sign(diff)
    losses = torch.relu(margin - y * (scores[a] - scores[b])) * keep
    return losses.sum() / keep.sum().clamp(min=1)


def train_predictor(model: nn.Module, ops: torch.Tensor, rewards: Sequence[float] | torch.Tensor, *,
                    epochs: int, config: RankTrainConfig | None = None, seed: int = 0,
                    on_epoch_end: Callable[[int, float], None] | None = None) -> list[float]:
    """Train (or tune, from its current weights) ``model`` with the ranking loss.

    A fresh Adam optimizer; each epoch shuffles the architectures (seeded) into
    batches of ``config.batch_size`` and takes one step per batch that holds a
    ranking pair. Dropout and shuffling are seeded by ``seed`` without touching
    the global RNG.

    Args:
        model: an :class:`ArchPredictor`.
        ops: ``(N, T, E)`` op indices (:func:`encode_archs`).
        rewards: ``N`` measured rewards (higher is better).
        epochs: epochs to run (``config.epochs`` for the initial training,
            ``config.tune_epochs`` for a tuning).
        config: batch size, lr, margin, ... (default: the paper's).
        seed: seed of the shuffling and dropout.
        on_epoch_end: ``f(epoch, mean loss)`` after every epoch.

    Returns:
        The mean loss of every epoch.
    """
    config = config or RankTrainConfig()
    device = next(model.parameters()).device
    ops = ops.to(device)
    rewards = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=device)
    if ops.shape[0] != rewards.shape[0]:
        raise ConfigError(f"train_predictor: {ops.shape[0]} architectures but {rewards.shape[0]} rewards.")
    if not torch.isfinite(rewards).all():
        raise ConfigError("train_predictor: rewards must be finite numbers.")
    history: list[float] = []
    n = ops.shape[0]
    if n < 2 or epochs <= 0:
        return history
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(int(seed))
    devices = [device] if device.type == "cuda" else []
    model.train()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            total = torch.zeros((), device=device)
            steps = 0
            for start in range(0, n, config.batch_size):
                idx = order[start:start + config.batch_size]
                if idx.numel() < 2:
                    continue
                loss = ranking_loss(model(ops[idx]), rewards[idx], margin=config.margin,
                                    threshold=config.compare_threshold)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total = total + loss.detach()
                steps += 1
            mean = float(total) / max(steps, 1)  # one sync per epoch
            history.append(mean)
            if on_epoch_end is not None:
                on_epoch_end(epoch, mean)
    model.eval()
    return history


def predict(model: nn.Module, ops: torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
    """Scores of ``(N, T, E)`` op indices (eval mode, no gradients), as a float64 array."""
    device = next(model.parameters()).device
    was_training = model.training
    if was_training:  # switching modes walks every module: not on each of the inner search's one-arch calls
        model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, ops.shape[0], batch_size):
                out.append(model(ops[start:start + batch_size].to(device)).float().cpu())
    finally:
        if was_training:
            model.train()
    if not out:
        return np.zeros(0)
    return torch.cat(out).numpy().astype(np.float64)


# ---------------------------------------------------------------------- quality of a ranking
def precision_at_k(predicted: Sequence[float], measured: Sequence[float], k: int) -> float:
    """P@K (GATES; MSRobNet App. D.1): the fraction of the K best by ``measured`` that
    are among the K best by ``predicted`` (ties broken by position).

    Raises:
        ConfigError: ``k`` not in ``[1, n]``.
    """
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    n = len(predicted)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ConfigError(f"precision_at_k: k must be an integer in [1, {n}], but got {k!r}.")
    top_pred = np.argsort(-predicted, kind="stable")[:k]
    top_true = np.argsort(-measured, kind="stable")[:k]
    return len(np.intersect1d(top_pred, top_true)) / k


def ranking_quality(predicted: Sequence[float], measured: Sequence[float],
                    ks: Sequence[int] = (5, 10, 20, 50)) -> dict[str, float | int | None]:
    """Kendall tau (tau-b), Spearman rho and P@K of ``predicted`` against ``measured``.

    Returns:
        ``{"n", "kendall_tau", "spearman", "precision_at_<K>" for K in ks}``; a
        correlation is None with fewer than 2 points or a constant input; P@K is
        None when ``K >= n`` (it would be 1 by definition).
    """
    from scipy import stats

    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    if predicted.shape != measured.shape or predicted.ndim != 1:
        raise ConfigError(f"ranking_quality: predicted {predicted.shape} and measured {measured.shape} must be "
                          "1-d of the same length.")
    n = len(predicted)
    out: dict[str, float | int | None] = {"n": n, "kendall_tau": None, "spearman": None}
    if n >= 2 and np.ptp(predicted) > 0 and np.ptp(measured) > 0:
        out["kendall_tau"] = _finite(stats.kendalltau(predicted, measured).statistic)
        out["spearman"] = _finite(stats.spearmanr(predicted, measured).statistic)
    for k in ks:
        out[f"precision_at_{k}"] = precision_at_k(predicted, measured, int(k)) if k < n else None
    return out


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def config_dict(config: PredictorConfig | RankTrainConfig) -> dict[str, Any]:
    """JSON-able dict of a config (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
