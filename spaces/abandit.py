"""The ABanditNAS search space: single-input cells with 4 nodes, 10 edges and 9 operations.

Chen, Zhang et al., "Anti-Bandit Neural Architecture Search for Model
Defense" (ECCV 2020; arXiv 2008.00698), Sec. 3 "Search space" and Sec. 4
(evaluation networks). Facts from the authors' released evaluation code are
taken from the project's method notes (``notes/methods.md``, ABanditNAS).

Cell (paper Fig. 2 (a)): one input node ``B0`` (the previous cell's output
through a 1x1 ReLU-conv-BN to the cell's ``C_cell`` channels) and four
intermediate nodes ``B1..B4``; node ``j`` may take any earlier node, so the
cell has 1 + 2 + 3 + 4 = 10 candidate edges :data:`EDGES` ``(i, j)``,
ordered by ``j`` then ``i``. The cell output concatenates ``B1..B4``
(``4 C_cell`` channels). In a reduction cell the edges leaving ``B0`` have
stride 2.

* **Search** (anti-bandit, see ``nni_robust.strategies.abandit``): every
  edge is a bandit over the 9 :data:`PRIMITIVES` and each sample draws one op
  on *every* edge, so a node sums the outputs of all its incoming edges
  (``B_j = sum_{i<j} o^{(i,j)}(B_i)``, the paper's cell equation). An edge
  may also be absent (``None``). :class:`ABanditSupernet` holds all 9 ops on
  every edge (weight sharing) and runs the active choice set by
  :meth:`ABanditSupernet.set_arch`: an :class:`ABanditArch`, an edge-form
  sample ``{"c0_e01": op | None, ...}`` or a node-form sample.
* **Final network** (notes: "in the final genotype each node keeps one
  incoming edge"): :class:`ABanditArch` holds, per cell type and node, one
  ``(op, input)`` pair; :class:`ABanditNetwork` builds only those ops.
  :meth:`ABanditArch.from_edge_ops` derives it from the one op left per edge
  after the search: each node keeps the incoming edge whose remaining op has
  the highest score (the strategy passes the arms' running rewards ``m``);
  ties go to the earlier input. (The paper does not state this rule; it is
  this project's choice.)

Cell types and layout (*this project's reading*): the paper searches
``v = 6`` distinct cells ("unlike existing approaches that use only normal
and reduction cells, we search for v (v > 2) cells"; ``9^(10 x 6)``
architectures) and reduces at ``layers // 3`` and ``2 layers // 3`` (notes).
The search network has 6 cells, one per type, so the types are ``c0 .. c5``
in depth order: ``c2`` and ``c4`` are the reduction cells, ``c0, c1`` the
normal cells of the first stage, ``c3`` of the second and ``c5`` of the
third (this is also the 6-cell MNIST network). A deeper network
(:func:`abandit_layout`) keeps the reductions at ``n // 3`` and ``2 n // 3``
and gives each stage's normal cells that stage's normal types in equal
consecutive blocks (earlier blocks larger): the 10-cell CIFAR-10 network is
``c0 c0 c1 [c2] c3 c3 [c4] c5 c5 c5``. Channels double at each reduction
(``C, 2C, 4C``); the stem is conv3x3 to ``3 C`` + BN (notes: "stem 3C").
With fewer than 6 cells some types are unused (and carry no labels).

Operations (:data:`PRIMITIVES`, the paper's 9): 3x3 max and average pooling,
identity (``skip_connect``; a factorized reduce when strided, as in DARTS),
3x3 and 5x5 dilated convolutions with rate 2 (DARTS's ``dil_conv``), 3x3 and
5x5 separable convolutions (reused from :mod:`.ops`), and the two defence
operations ``gabor_3x3`` and ``denoising`` (:mod:`.defense_ops`).

NNI labels (:func:`abandit_choices`):

* node form (final architectures, :class:`ABanditArch`, ``ABanditSpace``):
  ``f"{t}_n{j}_op"`` (the 9 ops) for ``j = 1..4`` and ``f"{t}_n{j}_in"``
  (the input index ``0..j-1``) for ``j = 2..4`` (node 1 can only take ``B0``,
  so it has no input label);
* edge form (the anti-bandit's arms): ``f"{t}_e{i}{j}"`` (the 9 ops) for the
  10 edges ``(i, j)``, e.g. ``c0_e01`` .. ``c0_e34``.

Published evaluation networks (:data:`ABANDIT_PRESETS`): CIFAR-10: 10
cells, ``C = 48``, auxiliary head; MNIST: 6 cells, ``C = 16``. Their
genotypes are not public (``reference_architectures.json`` has no
ABanditNAS entry), so the presets build the authors' network shape around a
genotype the user gives.
"""

from __future__ import annotations

import logging
import random as _random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from nni_robust.config import check_keys
from nni_robust.errors import ArchitectureError, ConfigError, did_you_mean

from . import defense_ops  # noqa: F401  (registers gabor_3x3 and denoising)
from ._common import (ArchBase, PathDropout, as_rng, build_from_settings, check_complete, check_labels,
                      check_network_sizes, check_pair, check_primitives, is_int, json_object)
from .darts import AuxiliaryHead, DartsLayout, aux_position, drop_path, init_macro_network
from .nni_space import lazy_module_getattr, lazy_space_class
from .ops import ReLUConvBN, build_op
from .registry import SpaceKind, register_space

__all__ = [
    "PRIMITIVES",
    "EDGES",
    "NUM_EDGES",
    "NUM_NODES",
    "CELL_TYPES",
    "SPACE_NAME",
    "SPACE_KEYS",
    "abandit_layout",
    "layout_from_json",
    "layout_to_json",
    "edge_label",
    "abandit_choices",
    "ABanditArch",
    "ABanditCell",
    "ABanditSupernet",
    "ABanditNetwork",
    "ABanditSpace",
    "build_abandit_space",
    "abandit_arch_from_sample",
    "ABanditPreset",
    "ABANDIT_PRESETS",
    "get_abandit_preset",
    "build_abandit_preset",
]

logger = logging.getLogger(__name__)

#: The paper's 9 operations (ABanditNAS Sec. 3): the 7 of DARTS without ``none``, then the
#: two defence operations.
PRIMITIVES: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "dil_conv_3x3", "dil_conv_5x5",
                               "sep_conv_3x3", "sep_conv_5x5", "gabor_3x3", "denoising")
NUM_NODES = 4
#: ``(i, j)`` = (from-node, to-node) of the 10 edges, ordered by ``j`` then ``i``; node 0 is the input.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in range(1, NUM_NODES + 1) for i in range(j))
NUM_EDGES = len(EDGES)  # 10
_NODES = tuple(range(1, NUM_NODES + 1))
_NODE_EDGES = {j: tuple(e for e, (_, jj) in enumerate(EDGES) if jj == j) for j in _NODES}
_EDGE_INDEX = {edge: e for e, edge in enumerate(EDGES)}
#: The 6 cell types of the search network, in depth order (``c2``, ``c4``: reduction cells).
CELL_TYPES: tuple[str, ...] = tuple(f"c{k}" for k in range(6))
_STAGE_TYPES = (("c0", "c1"), ("c3",), ("c5",))
_REDUCE_TYPES = ("c2", "c4")
#: The ``name`` of a settings ``space`` dict for this space.
SPACE_NAME = "abandit"
_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NODE_LABEL_RE = re.compile(r"^(?P<t>[A-Za-z][A-Za-z0-9_]*)_n(?P<j>[1-4])_(?P<kind>in|op)$")
_EDGE_LABEL_RE = re.compile(r"^(?P<t>[A-Za-z][A-Za-z0-9_]*)_e(?P<i>[0-3])(?P<j>[1-4])$")


def _check_primitives(primitives: Any, error: type[Exception] = ConfigError) -> tuple[str, ...]:
    return check_primitives(primitives, error, allow_none=False)


def _check_cell_types(cell_types: Any, error: type[Exception] = ConfigError) -> tuple[str, ...]:
    if isinstance(cell_types, str) or not isinstance(cell_types, Sequence) or not cell_types:
        raise error(f"cell_types must be a non-empty sequence of names, but got {cell_types!r}.")
    for t in cell_types:
        if not isinstance(t, str) or not _TYPE_RE.match(t):
            raise error(f"Cell type names must match {_TYPE_RE.pattern}, but got {t!r}.")
    if len(set(cell_types)) != len(cell_types):
        raise error(f"cell_types must be distinct, but got {list(cell_types)}.")
    return tuple(cell_types)


# --------------------------------------------------------------------------- layout


def abandit_layout(num_cells: int = 6) -> DartsLayout:
    """The ABanditNAS network of ``num_cells`` cells (see the module docstring).

    Reductions at ``n // 3`` and ``2 n // 3`` (cell types ``c2``, ``c4``);
    the normal cells of stage 0 take ``c0`` then ``c1`` (first half, rounded
    up, ``c0``), those of stage 1 ``c3``, those of stage 2 ``c5``; channel
    multipliers 1, 2, 4. ``num_cells = 6`` is the search network (one cell
    per type), 10 the CIFAR-10 evaluation network.

    Raises:
        ConfigError: ``num_cells`` not an int >= 3.
    """
    if not is_int(num_cells) or num_cells < 3:
        raise ConfigError(f"num_cells must be an int >= 3 (reductions at n//3 and 2n//3), but got {num_cells!r}.")
    r1, r2 = num_cells // 3, 2 * num_cells // 3
    stages = (list(range(0, r1)), list(range(r1 + 1, r2)), list(range(r2 + 1, num_cells)))
    cells: list[str] = [""] * num_cells
    mults = [1] * num_cells
    cells[r1], cells[r2] = _REDUCE_TYPES
    mults[r1], mults[r2] = 2, 4
    for stage, (positions, types) in enumerate(zip(stages, _STAGE_TYPES)):
        for q, p in enumerate(positions):
            cells[p] = types[q * len(types) // len(positions)]
            mults[p] = 2 ** stage
    return DartsLayout(f"abandit-{num_cells}", tuple(cells), (r1, r2), tuple(mults))


def layout_from_json(value: "str | Mapping[str, Any] | DartsLayout | int") -> DartsLayout:
    """A layout from ``"abandit"`` (6 cells), ``"abandit-N"``, a number of cells, a
    :class:`~.darts.DartsLayout` or its explicit dict.

    Raises:
        ConfigError: an unknown name or a malformed dict.
    """
    if isinstance(value, DartsLayout):
        return value
    if is_int(value):
        return abandit_layout(value)
    if isinstance(value, str):
        m = re.fullmatch(r"abandit(?:-(\d+))?", value.strip().lower())
        if not m:
            raise ConfigError(f"Unknown ABanditNAS layout name {value!r}; valid: 'abandit' (6 cells), 'abandit-N', "
                              f"or a dict {{'cells', 'reductions', 'multipliers'}}.")
        return abandit_layout(int(m.group(1)) if m.group(1) else 6)
    return DartsLayout.from_json_value(value)


def layout_to_json(layout: DartsLayout) -> str | dict[str, Any]:
    """``"abandit-N"`` when :func:`abandit_layout` rebuilds ``layout``, else its explicit dict."""
    try:
        if abandit_layout(layout.num_cells) == layout:
            return f"abandit-{layout.num_cells}"
    except ConfigError:
        pass
    return {"name": layout.name, "cells": list(layout.cells), "reductions": list(layout.reductions),
            "multipliers": list(layout.multipliers)}


# --------------------------------------------------------------------------- labels


def edge_label(cell_type: str, i: int, j: int) -> str:
    """The edge-form label of edge ``(i, j)`` of ``cell_type``: ``f"{cell_type}_e{i}{j}"``."""
    return f"{cell_type}_e{i}{j}"


def abandit_choices(cell_types: Sequence[str] = CELL_TYPES, primitives: Sequence[str] = PRIMITIVES, *,
                    form: str = "node") -> dict[str, tuple[Any, ...]]:
    """The discrete choices ``{label: candidate values}`` in a fixed order.

    Args:
        cell_types: The cell types (e.g. ``layout.cell_types``).
        primitives: The op vocabulary.
        form: ``"node"``: per cell type ``t`` and node ``j``, ``f"{t}_n{j}_in"``
            (``j >= 2``; values ``0..j-1``) and ``f"{t}_n{j}_op"`` (the ops),
            the labels of :class:`ABanditArch` and ``ABanditSpace``.
            ``"edge"``: ``f"{t}_e{i}{j}"`` (the ops) for the 10 edges, the
            anti-bandit's arms (a sample then picks one op on every edge).

    Raises:
        ConfigError: bad arguments.
    """
    types = _check_cell_types(cell_types)
    prims = _check_primitives(primitives)
    out: dict[str, tuple[Any, ...]] = {}
    if form == "node":
        for t in types:
            for j in _NODES:
                if j >= 2:
                    out[f"{t}_n{j}_in"] = tuple(range(j))
                out[f"{t}_n{j}_op"] = prims
    elif form == "edge":
        for t in types:
            for i, j in EDGES:
                out[edge_label(t, i, j)] = prims
    else:
        raise ConfigError(f"form must be 'node' or 'edge', but got {form!r}.")
    return out


# --------------------------------------------------------------------------- architecture


def _checked_labels(sample: Mapping[str, Any], cell_types: Sequence[str] | None, primitives: Sequence[str],
                    form: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The cell types (default: those the labels name) and primitives of a node- or edge-form
    sample whose labels were checked: none unknown, none missing."""
    labels = [str(k) for k in sample if not str(k).startswith("__")]
    if cell_types is None:
        pattern, example = (_NODE_LABEL_RE, "c0_n1_op") if form == "node" else (_EDGE_LABEL_RE, "c0_e01")
        found: list[str] = []
        for label in labels:
            m = pattern.match(label)
            if m and m.group("t") not in found:
                found.append(m.group("t"))
        if not found:
            raise ArchitectureError(f"The sample has no {form}-form labels like {example!r}; got {labels[:6]}.")
        cell_types = found
    types = _check_cell_types(cell_types, ArchitectureError)
    prims = _check_primitives(primitives, ArchitectureError)
    known = abandit_choices(types, prims, form=form)
    if form == "node":
        check_labels(labels, known, where=" in the sample", allowed={f"{t}_n1_in" for t in types},
                     looks_like=f"'{types[0]}_n2_in', '{types[0]}_n2_op' for cell types {list(types)}")
        check_complete(sample, known, where=" in the sample", expected=f"{len(known)} labels expected")
    else:
        check_labels(labels, known, where=" in the edge-form sample",
                     looks_like=f"'{types[0]}_e01' .. '{types[0]}_e34' for cell types {list(types)}")
        check_complete(sample, known, where=" in the edge-form sample",
                       expected=f"{len(known)} expected; give None for an absent edge")
    return types, prims


@dataclass(frozen=True, eq=False, repr=False)
class ABanditArch(ArchBase):
    """One final ABanditNAS architecture: per cell type, one ``(op, input)`` pair per node.

    Args:
        cells: ``{cell type: 4 pairs}``, node ``B1``'s first; ``input`` of
            node ``j`` lies in ``[0, j - 1]`` (0 = the cell input ``B0``).
            Pairs may be tuples or lists (JSON).
        primitives: The op vocabulary (default :data:`PRIMITIVES`).

    Equality and hashing compare the cells (cell-type order aside) and the
    primitives. Treat ``cells`` as read-only.

    Raises:
        ArchitectureError: a bad cell type, pair, op or input; the message
            names the offending key (``cells['c0'][2]`` is node 3's pair).
    """

    cells: Mapping[str, tuple[tuple[str, int], ...]]
    primitives: tuple[str, ...] = PRIMITIVES

    def __post_init__(self) -> None:
        prims = _check_primitives(self.primitives, ArchitectureError)
        object.__setattr__(self, "primitives", prims)
        if not isinstance(self.cells, Mapping) or not self.cells:
            raise ArchitectureError(f"cells must be a non-empty mapping cell type -> {NUM_NODES} (op, input) "
                                    f"pairs, but got {self.cells!r}.")
        cells: dict[str, tuple[tuple[str, int], ...]] = {}
        for t, pairs in self.cells.items():
            if not isinstance(t, str) or not _TYPE_RE.match(t):
                raise ArchitectureError(f"cells: cell type names must match {_TYPE_RE.pattern}, but got {t!r}.")
            if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) != NUM_NODES:
                raise ArchitectureError(f"cells[{t!r}] must list {NUM_NODES} (op, input) pairs (one per node "
                                        f"B1..B4), but got {pairs!r}.")
            cells[t] = tuple(check_pair(pair, j, prims, f"cells[{t!r}][{n}] (node {j})")
                             for n, (j, pair) in enumerate(zip(_NODES, pairs)))
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "_key", (frozenset(cells.items()), prims))

    # ---- identity (equality, hashing, pickling, repr: ArchBase)
    def __str__(self) -> str:
        return "Genotype(" + ", ".join(f"{t}={[tuple(p) for p in pairs]!r}" for t, pairs in self.cells.items()) + ")"

    # ---- access
    @property
    def cell_types(self) -> tuple[str, ...]:
        """The cell types, in the order given."""
        return tuple(self.cells)

    def edge_ops(self, cell_type: str) -> tuple[str | None, ...]:
        """The cell as 10 edge ops in :data:`EDGES` order, ``None`` on the edges not kept."""
        if cell_type not in self.cells:
            raise ArchitectureError(f"The architecture has no cell type {cell_type!r}; it has {list(self.cells)}.")
        ops: list[str | None] = [None] * NUM_EDGES
        for j, (op, i) in zip(_NODES, self.cells[cell_type]):
            ops[_EDGE_INDEX[(i, j)]] = op
        return tuple(ops)

    # ---- NNI samples (node form)
    def to_sample(self) -> dict[str, Any]:
        """``{label: value}`` with the node-form labels of :func:`abandit_choices`."""
        out: dict[str, Any] = {}
        for t, pairs in self.cells.items():
            for j, (op, i) in zip(_NODES, pairs):
                if j >= 2:
                    out[f"{t}_n{j}_in"] = i
                out[f"{t}_n{j}_op"] = op
        return out

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any], cell_types: Sequence[str] | None = None, *,
                    primitives: Sequence[str] = PRIMITIVES) -> "ABanditArch":
        """Build from a node-form NNI sample.

        Args:
            sample: ``{label: value}``; labels starting with ``__`` (NNI
                internals) are ignored; ``f"{t}_n1_in"`` may be given (it must be 0).
            cell_types: The expected cell types; default: those the labels name,
                in order of first appearance.
            primitives: The op vocabulary.

        Raises:
            ArchitectureError: a missing or unknown label, or a bad value (named).
        """
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"A sample must be a mapping label -> value, but got {sample!r}.")
        types, prims = _checked_labels(sample, cell_types, primitives, "node")
        cells = {}
        for t in types:
            first = sample.get(f"{t}_n1_in", 0)
            if first != 0 or isinstance(first, bool):
                raise ArchitectureError(f"Label {t}_n1_in must be 0 (node 1 can only take the cell input), but got "
                                        f"{first!r}.")
            pairs = []
            for j in _NODES:
                src = 0 if j == 1 else sample[f"{t}_n{j}_in"]
                if not is_int(src) or not 0 <= src < j:
                    raise ArchitectureError(f"Label {t}_n{j}_in must be an int in [0, {j - 1}], but got {src!r}.")
                op = sample[f"{t}_n{j}_op"]
                if op not in prims:
                    raise ArchitectureError(f"Label {t}_n{j}_op must be one of {list(prims)}, but got {op!r}.")
                pairs.append((op, src))
            cells[t] = pairs
        return cls(cells, prims)

    # ---- derivation from the search
    @classmethod
    def from_edge_ops(cls, edge_ops: Mapping[str, Any], scores: Mapping[str, float], *,
                      cell_types: Sequence[str] | None = None,
                      primitives: Sequence[str] = PRIMITIVES) -> "ABanditArch":
        """The final architecture from one op per edge (the anti-bandit's result).

        Each node keeps the incoming edge with the highest ``scores[label]``
        (the strategy passes the remaining arm's running reward ``m``), with
        its op; ties go to the earlier input. Edges whose op is ``None`` are
        absent and never kept. (The paper does not state this rule.)

        Args:
            edge_ops: ``{f"{t}_e{i}{j}": op | None}`` for all 10 edges of each cell type.
            scores: ``{label: score}`` for the edges present.
            cell_types: Expected cell types (default: those the labels name).
            primitives: The op vocabulary.

        Raises:
            ArchitectureError: missing/unknown labels or ops, a node with no edge.
        """
        active = _edge_sample_to_active(edge_ops, cell_types, primitives)
        if not isinstance(scores, Mapping):
            raise ArchitectureError(f"scores must be a mapping edge label -> number, but got {scores!r}.")
        cells = {}
        for t, ops in active.items():
            pairs = []
            for j in _NODES:
                best = None
                for e in _NODE_EDGES[j]:
                    if ops[e] is None:
                        continue
                    label = edge_label(t, *EDGES[e])
                    score = scores.get(label)
                    if isinstance(score, bool) or not isinstance(score, (int, float)):
                        raise ArchitectureError(f"scores[{label!r}] must be a number, but got {score!r}.")
                    if best is None or score > best[0]:
                        best = (score, ops[e], EDGES[e][0])
                pairs.append((best[1], best[2]))  # type: ignore[index]  (_edge_sample_to_active checked)
            cells[t] = pairs
        return cls(cells, tuple(primitives))

    # ---- JSON
    def to_dict(self) -> dict[str, Any]:
        """``{"space": "abandit", "primitives": [...], "cells": {type: [[op, input], ...]}}``."""
        return {"space": SPACE_NAME, "primitives": list(self.primitives),
                "cells": {t: [[op, i] for op, i in pairs] for t, pairs in self.cells.items()}}

    def cell_graphs(self) -> list:
        """The cell types as :class:`nni_robust.archdraw.CellGraph` (input ``B_{0}``, nodes ``B_{1}..B_{4}``
        with one kept edge each, output = concat of ``B_{1}..B_{4}``)."""
        from nni_robust.archdraw import CellGraph

        names = tuple(f"B_{{{j}}}" for j in range(NUM_NODES + 1))
        note = {t: "reduction" for t in _REDUCE_TYPES}
        return [CellGraph(t, names[:1], names[1:], tuple((names[i], names[j], op)
                                                         for j, (op, i) in zip(_NODES, pairs)),
                          output="out", note=note.get(t, ""))
                for t, pairs in self.cells.items()]

    @classmethod
    def from_json(cls, data: "str | bytes | Mapping[str, Any]") -> "ABanditArch":
        """Parse :meth:`to_json` output (a string or the dict).

        Raises:
            ArchitectureError: malformed JSON or architecture (the key is named).
        """
        data = json_object(data)
        valid = ("space", "primitives", "cells")
        extra = [key for key in data if key not in valid]
        if extra:
            raise ArchitectureError(f"Unknown keys {extra} in the ABanditNAS architecture JSON; valid keys: "
                                    f"{list(valid)}.")
        if data.get("space", SPACE_NAME) != SPACE_NAME:
            raise ArchitectureError(f"Architecture JSON key 'space' is {data['space']!r}, not {SPACE_NAME!r}.")
        if "cells" not in data or not isinstance(data["cells"], Mapping):
            raise ArchitectureError("ABanditNAS architecture JSON needs a 'cells' object "
                                    "{cell type: [[op, input], ...]}.")
        prims = data.get("primitives", PRIMITIVES)
        if isinstance(prims, str) or not isinstance(prims, Sequence):
            raise ArchitectureError(f"Architecture JSON key 'primitives' must be a list of op names, but got "
                                    f"{prims!r}.")
        return cls(dict(data["cells"]), tuple(prims))

    # ---- sampling
    @classmethod
    def random(cls, cell_types: Sequence[str] = CELL_TYPES, rng: "_random.Random | int | None" = None, *,
               primitives: Sequence[str] = PRIMITIVES) -> "ABanditArch":
        """A uniformly random architecture (per node a uniform input and a uniform op)."""
        rng = as_rng(rng, "randrange")
        prims = _check_primitives(primitives)
        types = _check_cell_types(cell_types)
        return cls({t: [(rng.choice(prims), rng.randrange(j)) for j in _NODES] for t in types}, prims)


def _edge_sample_to_active(sample: Mapping[str, Any], cell_types: Sequence[str] | None,
                           primitives: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
    """``{t: 10 ops or None}`` from an edge-form sample; checks labels, ops and that every node has an edge."""
    if not isinstance(sample, Mapping):
        raise ArchitectureError(f"An edge-form sample must be a mapping label -> op, but got {sample!r}.")
    types, prims = _checked_labels(sample, cell_types, primitives, "edge")
    active = {}
    for t in types:
        ops: list[str | None] = []
        for i, j in EDGES:
            label = edge_label(t, i, j)
            op = sample[label]
            if op is not None and op not in prims:
                raise ArchitectureError(f"Label {label} must be one of {list(prims)} or None (absent), but got "
                                        f"{op!r}.")
            ops.append(op)
        for j in _NODES:
            if all(ops[e] is None for e in _NODE_EDGES[j]):
                raise ArchitectureError(f"Cell type {t!r}: node {j} has no incoming edge (labels "
                                        f"{[edge_label(t, *EDGES[e]) for e in _NODE_EDGES[j]]} are all None).")
        active[t] = tuple(ops)
    return active


# --------------------------------------------------------------------------- networks


class ABanditCell(nn.Module):
    """One ABanditNAS cell: 1x1 ReLU-conv-BN input, 4 nodes, 10 edges, output ``concat(B1..B4)``.

    Edge ``e`` holds an ``nn.ModuleDict`` op name -> module with its
    candidate ops (all primitives in the supernet, the kept one in a final
    network, none for an edge not kept), so a final network's state-dict
    keys are a subset of the supernet's.

    Args:
        c_prev: Channels of the previous cell's output.
        channels: ``C_cell``.
        reduction: Whether the edges leaving ``B0`` have stride 2.
        candidates: Per edge (in :data:`EDGES` order), the op names to build.
        affine: BN affinity of the pre-processing and of the ops (the
            defence blocks' BN is always affine).
    """

    def __init__(self, c_prev: int, channels: int, *, reduction: bool, candidates: Sequence[Sequence[str]],
                 affine: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.channels = channels
        self.preprocess = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=affine)
        self.edges = nn.ModuleList()
        for (i, _), ops in zip(EDGES, candidates):
            stride = 2 if reduction and i == 0 else 1
            self.edges.append(nn.ModuleDict({op: build_op(op, channels, stride, affine) for op in ops}))
        self._identity = [{op: isinstance(m, nn.Identity) for op, m in edge.items()} for edge in self.edges]

    def forward(self, x: torch.Tensor, ops: Sequence[str | None],
                drop_prob: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Run the cell with the active op of every edge (``ops``: 10 names or ``None``)."""
        states = [self.preprocess(x)]
        # a tensor: the compiled pass's probability (PathDropout._drop_prob_arg), positive
        drop = self.training and (isinstance(drop_prob, torch.Tensor) or drop_prob > 0)
        for j in _NODES:
            acc = None
            for e in _NODE_EDGES[j]:
                op = ops[e]
                if op is None:
                    continue
                h = self.edges[e][op](states[EDGES[e][0]])
                if drop and not self._identity[e][op]:
                    h = drop_path(h, drop_prob)
                acc = h if acc is None else acc + h
            states.append(acc)
        return torch.cat(states[1:], dim=1)


def _resolve_layout(num_cells: Any, layout: Any) -> DartsLayout:
    if layout is not None and num_cells is not None:
        lay = layout_from_json(layout)
        if lay.num_cells != num_cells:
            raise ConfigError(f"num_cells={num_cells!r} contradicts layout {lay.name!r} with {lay.num_cells} cells; "
                              f"give one of them.")
        return lay
    if layout is not None:
        return layout_from_json(layout)
    if num_cells is None:
        raise ConfigError("Give num_cells= (ABanditNAS: 6 for the search, 10 on CIFAR-10, 6 on MNIST) or layout=.")
    return abandit_layout(num_cells)


class _ABanditBase(nn.Module):
    """``Normalize`` -> stem conv3x3 (``in_channels -> stem_multiplier * C``) + BN -> cells ->
    global average pool -> linear (DARTS macro structure; ABanditNAS stem 3C)."""

    def _build(self, layout: DartsLayout, *, init_channels: int, num_classes: int, in_channels: int,
               input_size: int, mean: Sequence[float] | None, std: Sequence[float] | None, stem_multiplier: int,
               candidates: Mapping[str, Sequence[Sequence[str]]], affine: bool, auxiliary: bool) -> None:
        check_network_sizes(layout, init_channels=init_channels, num_classes=num_classes, in_channels=in_channels,
                            input_size=input_size, stem_multiplier=stem_multiplier)
        if not isinstance(auxiliary, bool):
            raise ConfigError(f"auxiliary must be a bool, but got {auxiliary!r}.")
        c_stem = init_macro_network(self, layout, init_channels=init_channels, num_classes=num_classes,
                                    in_channels=in_channels, input_size=input_size, mean=mean, std=std,
                                    stem_multiplier=stem_multiplier)
        c_prev, size = c_stem, input_size
        self.aux_position = aux_position(layout, auxiliary)
        self.auxiliary_head: nn.Module | None = None
        self.cells = nn.ModuleList()
        for p, c in enumerate(layout.channels(init_channels)):
            reduction = layout.is_reduction(p)
            self.cells.append(ABanditCell(c_prev, c, reduction=reduction, candidates=candidates[layout.cells[p]],
                                          affine=affine))
            c_prev = NUM_NODES * c
            if reduction:
                size = -(-size // 2)
            if p == self.aux_position:
                self.auxiliary_head = AuxiliaryHead(c_prev, num_classes, size)
        self.classifier = nn.Linear(c_prev, num_classes)

    def _run(self, x: torch.Tensor, active: Mapping[str, Sequence[str | None]], drop_prob: float | torch.Tensor,
             with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux = None
        s = self.stem(self.normalize(x))
        for p, (cell, t) in enumerate(zip(self.cells, self.layout.cells)):
            s = cell(s, active[t], drop_prob)
            if with_aux and p == self.aux_position and self.training:
                aux = self.auxiliary_head(s)
        return self.classifier(s.mean(dim=(2, 3))), aux


class ABanditSupernet(_ABanditBase):
    """The weight-sharing supernet of the ABanditNAS space: all primitives on all 10 edges.

    :meth:`set_arch` chooses the active op of every edge (cheap: no module is
    created); :meth:`forward` runs only the active ops, a node summing its
    active incoming edges. During the anti-bandit search every edge is active
    with its sampled op (an edge-form sample); a final :class:`ABanditArch`
    activates one edge per node.

    Args:
        num_cells: Cells of :func:`abandit_layout` (search: 6); or give ``layout``.
        layout: A :class:`~.darts.DartsLayout` or its JSON value (``"abandit-N"``).
        init_channels: ``C``.
        num_classes: Output classes.
        in_channels: Input image channels.
        input_size: Input height = width.
        mean: Per-channel normalization mean (``None``: none).
        std: Per-channel normalization std.
        primitives: The candidate ops (default the paper's 9).
        stem_multiplier: Stem width multiplier (ABanditNAS: 3).
        affine: BN affinity in the cells (default ``False``, as in the DARTS
            search network; the paper does not say). The stem's BN and the
            defence blocks' BN are affine in any case.

    Raises:
        ConfigError: bad sizes, layout or primitives.
    """

    def __init__(self, *, num_cells: int | None = None, layout: Any = None, init_channels: int, num_classes: int,
                 in_channels: int = 3, input_size: int = 32, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, primitives: Sequence[str] = PRIMITIVES,
                 stem_multiplier: int = 3, affine: bool = False) -> None:
        super().__init__()
        lay = _resolve_layout(num_cells, layout)
        self.primitives = _check_primitives(primitives)
        candidates = {t: [self.primitives] * NUM_EDGES for t in lay.cell_types}
        self._build(lay, init_channels=init_channels, num_classes=num_classes, in_channels=in_channels,
                    input_size=input_size, mean=mean, std=std, stem_multiplier=stem_multiplier,
                    candidates=candidates, affine=bool(affine), auxiliary=False)
        self._active: dict[str, tuple[str | None, ...]] | None = None
        self._arch: ABanditArch | None = None

    def choices(self, form: str = "edge") -> dict[str, tuple[Any, ...]]:
        """The labelled choices of this supernet (:func:`abandit_choices` of its cell types):
        ``form="edge"`` gives the anti-bandit's arms."""
        return abandit_choices(self.cell_types, self.primitives, form=form)

    @property
    def arch(self) -> ABanditArch | None:
        """The active final architecture (``None`` when none, or an edge-form sample, is set)."""
        return self._arch

    @property
    def active(self) -> dict[str, tuple[str | None, ...]] | None:
        """``{cell type: 10 active ops or None}``, or ``None`` before :meth:`set_arch`."""
        return None if self._active is None else dict(self._active)

    def set_arch(self, arch: "ABanditArch | Mapping[str, Any]") -> None:
        """Choose the active op of every edge.

        Args:
            arch: An :class:`ABanditArch`; an edge-form sample
                ``{f"{t}_e{i}{j}": op | None}`` (all 10 edges of every cell type,
                ``None`` = absent/abandoned); a node-form sample
                (``f"{t}_n{j}_op"``, ``f"{t}_n{j}_in"``); or ``{cell type: 10 ops
                or None}``. It must cover every cell type of the layout (extra
                cell types are ignored).

        Raises:
            ArchitectureError: a malformed or incomplete choice, an op outside
                :attr:`primitives`, a node without an incoming edge.
        """
        arch_obj: ABanditArch | None = None
        if isinstance(arch, ABanditArch):
            arch_obj = arch
        elif isinstance(arch, Mapping):
            keys = [str(k) for k in arch if not str(k).startswith("__")]
            if keys and all(k in self.cell_types for k in keys):
                active = self._active_from_table(arch)
            elif any(_NODE_LABEL_RE.match(k) for k in keys):
                arch_obj = ABanditArch.from_sample(arch, self.cell_types, primitives=self.primitives)
            else:
                active = _edge_sample_to_active(arch, self.cell_types, self.primitives)
        else:
            raise ArchitectureError(f"set_arch needs an ABanditArch or a sample dict, but got {arch!r}.")
        if arch_obj is not None:
            missing = [t for t in self.cell_types if t not in arch_obj.cells]
            if missing:
                raise ArchitectureError(f"The architecture lacks cell types {missing} of layout "
                                        f"{self.layout.name!r} (it has {list(arch_obj.cells)}).")
            bad = sorted({op for t in self.cell_types for op, _ in arch_obj.cells[t] if op not in self.primitives})
            if bad:
                raise ArchitectureError(f"Operations {bad} are not among this supernet's primitives "
                                        f"{list(self.primitives)}.")
            active = {t: arch_obj.edge_ops(t) for t in self.cell_types}
        self._active = active
        self._arch = arch_obj

    def _active_from_table(self, table: Mapping[str, Any]) -> dict[str, tuple[str | None, ...]]:
        sample = {}
        for t, ops in table.items():
            if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) != NUM_EDGES:
                raise ArchitectureError(f"set_arch[{t!r}] must list {NUM_EDGES} ops (or None) in EDGES order, but "
                                        f"got {ops!r}.")
            sample.update({edge_label(t, i, j): op for (i, j), op in zip(EDGES, ops)})
        return _edge_sample_to_active(sample, self.cell_types, self.primitives)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (float in [0, 1], NCHW) with the active ops.

        Raises:
            ArchitectureError: no active architecture was set.
        """
        if self._active is None:
            raise ArchitectureError("This ABanditSupernet has no active architecture; call set_arch(...) first.")
        return self._run(x, self._active, 0.0, with_aux=False)[0]


class ABanditNetwork(PathDropout, _ABanditBase):
    """The final ABanditNAS network of an :class:`ABanditArch` (only the kept ops are built).

    Affine BN throughout; optional DARTS path dropout on every non-identity
    op and DARTS's auxiliary head after the last reduction cell (the
    CIFAR-10 evaluation network has one). :meth:`forward` returns the logits;
    :meth:`forward_with_aux` also the auxiliary logits, so the project's
    trainer (``auxiliary_weight``, ``drop_path_prob``) drives it like
    :class:`~.darts.DartsNetwork`.

    Args:
        arch: The architecture (or its JSON); must hold every cell type of the
            layout (extra types are ignored).
        init_channels: ``C`` (CIFAR-10: 48; MNIST: 16).
        num_cells: Cells of :func:`abandit_layout` (CIFAR-10: 10; MNIST: 6);
            or give ``layout``.
        num_classes: Output classes.
        in_channels: Input image channels.
        input_size: Input height = width.
        mean: Per-channel normalization mean (``None``: none).
        std: Per-channel normalization std.
        auxiliary: Build the auxiliary head.
        layout: A :class:`~.darts.DartsLayout` or its JSON value, instead of ``num_cells``.
        stem_multiplier: Stem width multiplier (ABanditNAS: 3).
        drop_path_prob: Path-dropout probability in training mode (assign
            :attr:`drop_path_prob` to change it; the trainer raises it linearly).

    Raises:
        ConfigError: bad sizes or options.
        ArchitectureError: ``arch`` malformed or lacking a cell type.
    """

    def __init__(self, arch: "ABanditArch | Mapping[str, Any] | str", *, init_channels: int,
                 num_cells: int | None = None, num_classes: int, in_channels: int = 3, input_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, auxiliary: bool = False,
                 layout: Any = None, stem_multiplier: int = 3, drop_path_prob: float = 0.0) -> None:
        super().__init__()
        if isinstance(arch, (Mapping, str, bytes)):
            arch = ABanditArch.from_json(arch)
        if not isinstance(arch, ABanditArch):
            raise ArchitectureError(f"arch must be an ABanditArch (or its JSON), but got {type(arch).__name__}.")
        lay = _resolve_layout(num_cells, layout)
        missing = [t for t in lay.cell_types if t not in arch.cells]
        if missing:
            raise ArchitectureError(f"The architecture lacks cell types {missing} of layout {lay.name!r} (it has "
                                    f"{list(arch.cells)}).")
        extra = [t for t in arch.cells if t not in lay.cell_types]
        if extra:
            logger.debug("ABanditNetwork: cell types %s of the architecture are not used by layout %s", extra,
                         lay.name)
        self.arch = arch
        self._active = {t: arch.edge_ops(t) for t in lay.cell_types}
        candidates = {t: [(op,) if op is not None else () for op in ops] for t, ops in self._active.items()}
        self._build(lay, init_channels=init_channels, num_classes=num_classes, in_channels=in_channels,
                    input_size=input_size, mean=mean, std=std, stem_multiplier=stem_multiplier,
                    candidates=candidates, affine=True, auxiliary=auxiliary)
        self.drop_path_prob = drop_path_prob

    # drop_path_prob: the checked property of PathDropout

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, auxiliary logits)``; the latter is ``None`` without an auxiliary head or in eval mode."""
        return self._run(x, self._active, self._drop_prob_arg(), with_aux=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (float in [0, 1], NCHW); the auxiliary head is not run."""
        return self._run(x, self._active, self._drop_prob_arg(), with_aux=False)[0]


# --------------------------------------------------------------------------- building from settings

_SUPERNET_KEYS = ("stem_multiplier", "affine")
_NETWORK_KEYS = ("stem_multiplier", "drop_path_prob", "auxiliary")
#: Keys of a settings ``space`` dict for this space.
SPACE_KEYS: tuple[str, ...] = tuple(dict.fromkeys(("name", "num_cells", "primitives") + _SUPERNET_KEYS
                                                  + _NETWORK_KEYS))


def _space_layout(space: Mapping[str, Any]) -> tuple[DartsLayout, tuple[str, ...]]:
    if not isinstance(space, Mapping):
        raise ConfigError(f"space must be a dict like {{'name': 'abandit', 'num_cells': 6}}, but got {space!r}.")
    if space.get("name", SPACE_NAME) != SPACE_NAME:
        raise ConfigError(f"space name must be {SPACE_NAME!r} here, but got {space.get('name')!r}.")
    check_keys(space, SPACE_KEYS, f"space {SPACE_NAME!r}")
    return abandit_layout(space.get("num_cells", 6)), _check_primitives(space.get("primitives", PRIMITIVES))


def build_abandit_space(space: Mapping[str, Any], info: Any, init_channels: int,
                        arch: "ABanditArch | Mapping[str, Any] | str | None" = None) -> nn.Module:
    """Build the supernet (``arch is None``) or a final network from a space settings dict.

    Keys: ``name`` (``"abandit"``), ``num_cells`` (6: the search network;
    CIFAR-10 evaluation 10), ``primitives`` (the paper's 9),
    ``stem_multiplier`` (3); for the supernet ``affine``; for the final
    network ``drop_path_prob`` and ``auxiliary``. Keys of the other kind are
    ignored, so one dict serves the search and the final training. Same
    signature as :func:`nni_robust.spaces.darts.build_darts_space`.

    Args:
        space: The settings dict.
        info: A :class:`nni_robust.data.DatasetInfo` (classes, channels, size, mean, std).
        init_channels: ``C``.
        arch: ``None`` for the :class:`ABanditSupernet`, else the
            architecture (or its JSON) of the :class:`ABanditNetwork`.

    Raises:
        ConfigError: unknown keys (named), bad values.
        ArchitectureError: a malformed ``arch``.
    """
    layout, prims = _space_layout(space)
    if isinstance(arch, (Mapping, str, bytes)):
        arch = ABanditArch.from_json(arch)
    if isinstance(arch, ABanditArch):
        bad = sorted({op for pairs in arch.cells.values() for op, _ in pairs if op not in prims})
        if bad:
            raise ArchitectureError(f"The architecture uses operations {bad} outside the space's primitives "
                                    f"{list(prims)}.")
    return build_from_settings(space, info, init_channels, arch, layout=layout, primitives=prims,
                               supernet=ABanditSupernet, supernet_keys=_SUPERNET_KEYS, network=ABanditNetwork,
                               network_keys=_NETWORK_KEYS, parse_arch=ABanditArch.from_json)


def abandit_arch_from_sample(sample: Mapping[str, Any], space: Mapping[str, Any]) -> ABanditArch:
    """The :class:`ABanditArch` of a node-form NNI sample of the space a settings dict describes.

    Raises:
        ConfigError: a bad settings dict.
        ArchitectureError: a bad sample.
    """
    layout, prims = _space_layout(space)
    return ABanditArch.from_sample(sample, layout.cell_types, primitives=prims)


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class ABanditPreset:
    """A published ABanditNAS evaluation network: its shape and its reported results.

    The genotypes are not public (no ABanditNAS entry in
    ``reference_architectures.json``), so :meth:`build` needs the
    architecture from the user (e.g. the result of a search).

    Attributes:
        name: Registry name.
        dataset: The dataset of the paper's experiment.
        num_cells: Cells (:func:`abandit_layout`).
        init_channels: ``C``.
        auxiliary: Whether the network has the auxiliary head.
        num_classes, in_channels, input_size: The dataset's shape.
        attack: The paper's evaluation threat model (``eps``, ``step``, attacks).
        reported: The paper's reported accuracies (percent).
    """

    name: str
    dataset: str
    num_cells: int
    init_channels: int
    auxiliary: bool
    num_classes: int
    in_channels: int
    input_size: int
    attack: Mapping[str, Any] = field(default_factory=dict)
    reported: Mapping[str, float] = field(default_factory=dict)
    paper: str = "Chen, Zhang et al., ECCV 2020 (ABanditNAS), Sec. 4"

    @property
    def layout(self) -> DartsLayout:
        """The network's layout."""
        return abandit_layout(self.num_cells)

    def build(self, arch: "ABanditArch | Mapping[str, Any] | str | None" = None, **overrides: Any) -> ABanditNetwork:
        """The evaluation network around ``arch`` (fresh weights).

        Args:
            arch: The genotype (required: the published ones are not public).
            **overrides: Further :class:`ABanditNetwork` keyword arguments
                (``num_classes``, ``mean``, ``std``, ``drop_path_prob``, ...).

        Raises:
            ConfigError: no ``arch`` given.
        """
        if arch is None:
            raise ConfigError(f"Preset {self.name!r}: the authors' genotypes are not public (no ABanditNAS entry in "
                              f"reference_architectures.json); pass arch= (an ABanditArch with cell types "
                              f"{list(self.layout.cell_types)}), e.g. the result of an anti-bandit search.")
        kwargs = dict(init_channels=self.init_channels, num_cells=self.num_cells, num_classes=self.num_classes,
                      in_channels=self.in_channels, input_size=self.input_size, auxiliary=self.auxiliary)
        kwargs.update(overrides)
        if "layout" in overrides:
            kwargs.pop("num_cells")
        return ABanditNetwork(arch, **kwargs)


#: The paper's evaluation networks by name (notes: CIFAR-10 10 cells, C = 48, auxiliary head;
#: MNIST 6 cells, C = 16).
ABANDIT_PRESETS: dict[str, ABanditPreset] = {
    "ABanditNAS-CIFAR10": ABanditPreset(
        name="ABanditNAS-CIFAR10", dataset="cifar10", num_cells=10, init_channels=48, auxiliary=True,
        num_classes=10, in_channels=3, input_size=32,
        attack={"eps": 0.031, "step": 0.0078, "attacks": ["fgsm", "pgd-7", "pgd-20"]},
        reported={"pgd7": 58.74, "pgd20": 50.51}),
    "ABanditNAS-MNIST": ABanditPreset(
        name="ABanditNAS-MNIST", dataset="mnist", num_cells=6, init_channels=16, auxiliary=False,
        num_classes=10, in_channels=1, input_size=28,
        attack={"eps": 0.3, "step": 0.01, "attacks": ["fgsm", "pgd-40", "pgd-100"]},
        reported={"clean": 99.52, "fgsm": 98.94, "pgd40": 97.01, "pgd100": 95.70}),
}


def get_abandit_preset(name: str) -> ABanditPreset:
    """The preset called ``name`` (case-insensitive).

    Raises:
        ConfigError: unknown name (the valid ones are listed).
    """
    lowered = {k.lower(): k for k in ABANDIT_PRESETS}
    key = lowered.get(str(name).lower())
    if key is None:
        hint = did_you_mean(name, ABANDIT_PRESETS, n=2, cutoff=0.5)
        raise ConfigError(f"Unknown ABanditNAS preset {name!r}.{hint} Available: {list(ABANDIT_PRESETS)}.")
    return ABANDIT_PRESETS[key]


def build_abandit_preset(name: str, arch: "ABanditArch | Mapping[str, Any] | str | None" = None,
                         **overrides: Any) -> ABanditNetwork:
    """Build the preset ``name`` around ``arch``; see :meth:`ABanditPreset.build`."""
    return get_abandit_preset(name).build(arch, **overrides)


# --------------------------------------------------------------------------- NNI model space


def _define_space(base: type) -> type:
    class ABanditSpace(base):  # type: ignore[misc, valid-type]
        """NNI 3.0 model space of final ABanditNAS architectures (node-form labels).

        Per cell type ``t`` of the layout and node ``j``: ``nni.choice``
        ``f"{t}_n{j}_in"`` (``j >= 2``; the input ``0..j-1``) and
        ``f"{t}_n{j}_op"`` (the primitives), see :func:`abandit_choices`.
        Building the space registers the choices and builds the
        :class:`ABanditNetwork` of the current sample (inside
        ``nni.nas.space.model_context(sample)``) or of the default sample
        (every node on the input with the first op), never a supernet.
        (The anti-bandit samples the edge form instead; see
        :class:`ABanditSupernet` and ``nni_robust.strategies.abandit``.)

        Args:
            num_cells: Cells of :func:`abandit_layout` (default 6); or ``layout``.
            layout: A layout or its JSON value.
            primitives: The op vocabulary.
            **network_kwargs: :class:`ABanditNetwork` keyword arguments
                (``init_channels`` defaults to 16, ``num_classes`` to 10).

        Attributes:
            arch: The :class:`ABanditArch` built.
            network: The :class:`ABanditNetwork`.
        """

        def __init__(self, *, num_cells: int | None = None, layout: Any = None,
                     primitives: Sequence[str] = PRIMITIVES, **network_kwargs: Any) -> None:
            super().__init__()
            lay = _resolve_layout(6 if num_cells is None and layout is None else num_cells, layout)
            prims = _check_primitives(primitives)
            network_kwargs.setdefault("init_channels", 16)
            network_kwargs.setdefault("num_classes", 10)
            chosen = {label: self.choose(label, values)
                      for label, values in abandit_choices(lay.cell_types, prims, form="node").items()}
            self.arch = ABanditArch.from_sample(chosen, lay.cell_types, primitives=prims)
            self.network = ABanditNetwork(self.arch, layout=lay, **network_kwargs)

    return ABanditSpace


_make_space_class = lazy_space_class(__name__, _define_space)
__getattr__ = lazy_module_getattr(__name__, ABanditSpace=_make_space_class)


register_space(SpaceKind(
    name=SPACE_NAME, build=build_abandit_space, parse_arch=ABanditArch.from_json, from_sample=abandit_arch_from_sample,
    arch_type=ABanditArch, model_space=f"{__name__}.ABanditSpace",
    doc="ABanditNAS cells (1 input, 4 nodes, 10 edges, 9 ops incl. Gabor and denoising blocks); anti-bandit search"))
