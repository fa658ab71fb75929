"""The NAS-Bench-201 cell space: 5 operations on the 6 edges of a 4-node cell.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search" (ICLR 2020), Sec. 2.1 and Fig. 1: a cell is a DAG of 4
nodes; node 0 is the cell input, node 3 the output, and every node ``j``
sums one operation on an edge from every earlier node ``i < j``, so there
are 6 edges and ``5 ** 6 = 15,625`` cells. The operations
(:data:`NB201_OPS`) are ``none`` (zero), ``skip_connect`` (identity),
``nor_conv_1x1`` and ``nor_conv_3x3`` (ReLU -> conv -> BN) and
``avg_pool_3x3``. The network stacks the cell: a 3x3 conv stem with ``C``
channels, 3 stages of ``N = 5`` cells with ``C``, ``2C``, ``4C`` channels,
a residual block (stride 2) between stages, BN -> ReLU, global average
pooling and a linear classifier.

The robustness dataset of Jung, Lukasik and Keuper, "Neural Architecture
Design and Robustness: A Dataset" (ICLR 2023), Sec. 3, measured all 6,466
non-isomorphic cells; its ``meta.json`` maps each of the 15,625 cell
strings to the uid whose measurements it shares (read it with
:func:`nni_robust.tabular.load_robustness_table` or :func:`load_nb201_table`).
:func:`canonical_string` reproduces that grouping exactly (checked on all
15,625 strings: 6,466 classes, no string in a different class); see its
docstring for the rules and their quirks.

Main names: :data:`NB201_OPS`, :data:`EDGES`, :class:`NB201Arch` (the
dataset's string ``|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|...|``, JSON,
NNI samples), :func:`canonical_string`, :func:`all_archs` /
:data:`ALL_STRINGS`, :class:`NB201Cell`, :class:`ResidualBlock`,
:class:`NB201Network`, :func:`build_nb201_space`, ``NB201Space`` (NNI 3.0
``ModelSpace``, defined lazily because importing NNI is slow; its labels
and values are those of NNI's hub ``NasBench201``: ``cell/0_1`` ...
``cell/2_3`` with ``none``, ``skip_connect``, ``conv_1x1``, ``conv_3x3``,
``avg_pool_3x3``), :func:`load_nb201_table`.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import random as _random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from nni_robust.config import check_keys
from nni_robust.errors import ArchitectureError, ConfigError, did_you_mean
from nni_robust.models import Normalize
from nni_robust.tabular import RobustnessTable, load_robustness_table

from ._common import as_rng, is_int, json_object
from .nni_space import lazy_module_getattr, lazy_space_class
from .ops import ReLUConvBN
from .registry import SpaceKind, register_space

__all__ = [
    "NB201_OPS",
    "NNI_OPS",
    "EDGES",
    "NUM_EDGES",
    "NUM_NODES",
    "NUM_ARCHS",
    "NNI_LABEL_SCOPE",
    "edge_labels",
    "NB201Arch",
    "canonical_string",
    "all_archs",
    "all_strings",
    "ALL_STRINGS",
    "NB201Cell",
    "ResidualBlock",
    "NB201Network",
    "NB201Space",
    "build_nb201_space",
    "load_nb201_table",
    "arch_from_sample",
    "SPACE_KEYS",
]

logger = logging.getLogger(__name__)

#: The operations in NAS-Bench-201's order (its ``NAS_BENCH_201`` list), named as in its
#: architecture strings.
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The same operations as NNI 3.0's hub ``NasBench201`` and ``NasBench201Benchmark`` name them
#: (NNI drops the ``nor_`` prefix), position by position.
NNI_OPS: tuple[str, ...] = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")
_TO_NNI = dict(zip(NB201_OPS, NNI_OPS))
_FROM_ANY = {**dict(zip(NNI_OPS, NB201_OPS)), **{op: op for op in NB201_OPS}}
NUM_NODES = 4
#: ``(source, target)`` of the 6 edges in the order of the architecture string (grouped by
#: target node) and of NNI's labels ``f"{source}_{target}"``.
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for j in range(1, NUM_NODES) for i in range(j))
NUM_EDGES = len(EDGES)  # 6
NUM_ARCHS = len(NB201_OPS) ** NUM_EDGES  # 15,625
#: The label scope NNI's hub ``NasBench201`` puts its choices in (its cells use ``label='cell'``).
NNI_LABEL_SCOPE = "cell"
_TOKEN_RE = re.compile(r"^([A-Za-z0-9_]+)~(\d+)$")


def edge_labels(scope: str | None = NNI_LABEL_SCOPE) -> tuple[str, ...]:
    """The NNI labels of the 6 edges in :data:`EDGES` order: ``"cell/0_1"``, ``"cell/0_2"``,
    ``"cell/1_2"``, ``"cell/0_3"``, ``"cell/1_3"``, ``"cell/2_3"`` (``scope=None``: without
    the ``cell/`` prefix, as NNI's ``NasBench201Benchmark`` sees them)."""
    prefix = f"{scope}/" if scope else ""
    return tuple(f"{prefix}{i}_{j}" for i, j in EDGES)


def _unknown_op(op: Any, where: str, names: Sequence[str] = NB201_OPS) -> ArchitectureError:
    return ArchitectureError(f"{where}: unknown operation {op!r}.{did_you_mean(op, names)} Valid operations: "
                             f"{list(names)}.")


# --------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class NB201Arch:
    """One NAS-Bench-201 cell: an operation on each of the 6 edges.

    Args:
        ops: 6 operation names of :data:`NB201_OPS`, in :data:`EDGES` order
            (``0->1, 0->2, 1->2, 0->3, 1->3, 2->3``), the order of the
            architecture string.

    Equality and hashing compare the ops (so two isomorphic cells are
    different archs; compare :meth:`canonical` for the isomorphism).

    Raises:
        ArchitectureError: not 6 ops, or an unknown op.
    """

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) != NUM_EDGES:
            raise ArchitectureError(f"NB201Arch.ops must be {NUM_EDGES} operation names (edges "
                                    f"{', '.join(edge_labels(None))}), but got {ops!r}.")
        for (i, j), op in zip(EDGES, ops):
            if op not in NB201_OPS:
                raise _unknown_op(op, f"NB201Arch edge {i}->{j}")
        object.__setattr__(self, "ops", tuple(ops))

    # ---- the dataset's string
    @classmethod
    def from_string(cls, text: str) -> "NB201Arch":
        """Parse the NAS-Bench-201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

        Strict: exactly 3 ``+``-separated node groups (nodes 1, 2, 3), node
        ``j`` lists ``j`` tokens ``op~i`` with ``i = 0 .. j - 1`` in order;
        only whitespace around the whole string is ignored.

        Raises:
            ArchitectureError: naming the bad part (group, token, op or source).
        """
        if not isinstance(text, str):
            raise ArchitectureError(f"A NAS-Bench-201 string must be text, but got {text!r}.")
        s = text.strip()
        form = "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'"
        if len(s) < 2 or not s.startswith("|") or not s.endswith("|"):
            raise ArchitectureError(f"Cannot parse {text!r}: a NAS-Bench-201 string starts and ends with '|' "
                                    f"({form}).")
        groups = s[1:-1].split("|+|")
        if len(groups) != NUM_NODES - 1:
            raise ArchitectureError(f"Cannot parse {text!r}: expected {NUM_NODES - 1} node groups separated by "
                                    f"'|+|' ({form}), but got {len(groups)}.")
        ops: list[str] = []
        for j, group in enumerate(groups, start=1):
            tokens = group.split("|")
            if len(tokens) != j:
                raise ArchitectureError(f"Cannot parse {text!r}: node {j} group {group!r} must list {j} edge(s) "
                                        f"'op~i' (i = 0..{j - 1}), but has {len(tokens)}.")
            for i, token in enumerate(tokens):
                m = _TOKEN_RE.match(token)
                if not m:
                    raise ArchitectureError(f"Cannot parse {text!r}: node {j} token {token!r} is not 'op~{i}'.")
                op, src = m.group(1), int(m.group(2))
                if src != i:
                    raise ArchitectureError(f"Cannot parse {text!r}: node {j} token {token!r} has source {src}, "
                                            f"expected {i} (node {j}'s edges come from nodes 0..{j - 1} in order).")
                if op not in NB201_OPS:
                    raise _unknown_op(op, f"Cannot parse {text!r}: node {j} token {token!r}")
                ops.append(op)
        return cls(tuple(ops))

    def to_string(self) -> str:
        """The NAS-Bench-201 string, e.g. ``|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|...|``."""
        groups, k = [], 0
        for j in range(1, NUM_NODES):
            groups.append("|".join(f"{self.ops[k + i]}~{i}" for i in range(j)))
            k += j
        return "|" + "|+|".join(groups) + "|"

    def __str__(self) -> str:
        return self.to_string()

    # ---- enumeration
    @property
    def index(self) -> int:
        """Position in :func:`all_archs` (base 5, edge ``0->1`` most significant, ops in
        :data:`NB201_OPS` order)."""
        n = 0
        for op in self.ops:
            n = n * len(NB201_OPS) + NB201_OPS.index(op)
        return n

    @classmethod
    def from_index(cls, index: int) -> "NB201Arch":
        """Inverse of :attr:`index`.

        Raises:
            ArchitectureError: ``index`` not an int in ``[0, 15624]``.
        """
        if not is_int(index) or not 0 <= index < NUM_ARCHS:
            raise ArchitectureError(f"An NB201 index must be an int in [0, {NUM_ARCHS - 1}], but got {index!r}.")
        ops = []
        for _ in range(NUM_EDGES):
            index, r = divmod(index, len(NB201_OPS))
            ops.append(NB201_OPS[r])
        return cls(tuple(reversed(ops)))

    @classmethod
    def random(cls, rng: "_random.Random | int | None" = None) -> "NB201Arch":
        """A uniformly random cell (each edge's op uniform over :data:`NB201_OPS`).

        Args:
            rng: A ``random.Random``, an int seed, or ``None`` (unseeded).
        """
        rng = as_rng(rng)
        return cls(tuple(rng.choice(NB201_OPS) for _ in range(NUM_EDGES)))

    # ---- isomorphism
    def canonical(self) -> str:
        """The key of the dataset's isomorphism class (:func:`canonical_string`)."""
        return canonical_string(self)

    # ---- NNI samples
    def to_sample(self, scope: str | None = NNI_LABEL_SCOPE) -> dict[str, str]:
        """An NNI sample ``{"cell/0_1": "conv_3x3", ...}``: the labels and op names of NNI's
        hub ``NasBench201`` (``scope=None``: labels ``"0_1"`` ..., as NNI's
        ``NasBench201Benchmark`` queries them)."""
        return {label: _TO_NNI[op] for label, op in zip(edge_labels(scope), self.ops)}

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any]) -> "NB201Arch":
        """Build from an NNI sample.

        Labels are ``"{i}_{j}"`` under any label scope (``"cell/0_1"``,
        ``"0_1"``, ``"model/cell/0_1"``); values are NNI's op names
        (``conv_3x3``) or NAS-Bench-201's (``nor_conv_3x3``). Labels starting
        with ``__`` (NNI internals) are ignored.

        Raises:
            ArchitectureError: a missing, repeated or unknown label, or an unknown op.
        """
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"A sample must be a mapping label -> op, but got {sample!r}.")
        wanted = edge_labels(None)
        found: dict[str, tuple[str, Any]] = {}
        for label, value in sample.items():
            if str(label).startswith("__"):
                continue
            edge = str(label).rsplit("/", 1)[-1]
            if edge not in wanted:
                hint = did_you_mean(label, edge_labels())
                raise ArchitectureError(f"Unknown label {label!r} in the NB201 sample.{hint} Labels are "
                                        f"{list(edge_labels())} (any scope prefix, or none).")
            if edge in found:
                raise ArchitectureError(f"Labels {found[edge][0]!r} and {label!r} both name edge {edge}.")
            found[edge] = (str(label), value)
        missing = [e for e in wanted if e not in found]
        if missing:
            raise ArchitectureError(f"Missing edges {missing} in the NB201 sample (6 labels "
                                    f"{list(edge_labels())} expected), got {sorted(map(str, sample))}.")
        ops = []
        for edge in wanted:
            label, value = found[edge]
            if value not in _FROM_ANY:
                raise _unknown_op(value, f"Label {label!r}", tuple(_FROM_ANY))
            ops.append(_FROM_ANY[value])
        return cls(tuple(ops))

    # ---- JSON
    def to_dict(self) -> dict[str, str]:
        """``{"space": "nb201", "arch": "<NAS-Bench-201 string>"}``."""
        return {"space": "nb201", "arch": self.to_string()}

    def cell_graphs(self) -> list:
        """The cell as a :class:`nni_robust.archdraw.CellGraph` (nodes 0..3, node 3 is the output; ``none``
        edges left out)."""
        from nni_robust.archdraw import CellGraph

        edges = tuple((str(i), str(j), op) for (i, j), op in zip(EDGES, self.ops) if op != "none")
        return [CellGraph("cell", ("0",), ("1", "2", "3"), edges, output=None,
                          note="node 3 is the output")]

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: "str | bytes | Mapping[str, Any]") -> "NB201Arch":
        """Parse :meth:`to_json` output (text or the dict).

        Raises:
            ArchitectureError: malformed JSON, another space, unknown keys, a bad string.
        """
        data = json_object(data, "NB201 architecture JSON")
        extra = [k for k in data if k not in ("space", "arch")]
        if extra:
            raise ArchitectureError(f"Unknown keys {extra} in the NB201 architecture JSON; valid keys: "
                                    f"['space', 'arch'].")
        if data.get("space", "nb201") != "nb201":
            raise ArchitectureError(f"Architecture JSON is for space {data['space']!r}, not 'nb201'.")
        if "arch" not in data:
            raise ArchitectureError("NB201 architecture JSON needs an 'arch' key holding the NAS-Bench-201 string.")
        return cls.from_string(data["arch"])

    @classmethod
    def parse(cls, value: "NB201Arch | str | bytes | Mapping[str, Any]") -> "NB201Arch":
        """Any form: an :class:`NB201Arch`, a NAS-Bench-201 string, :meth:`to_json` text or
        dict, or an NNI sample.

        Raises:
            ArchitectureError: none of these forms.
        """
        if isinstance(value, NB201Arch):
            return value
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            return cls.from_string(value) if value.strip().startswith("|") else cls.from_json(value)
        if isinstance(value, Mapping):
            return cls.from_json(value) if "arch" in value or "space" in value else cls.from_sample(value)
        raise ArchitectureError(f"Cannot read an NB201 architecture from {value!r}: give a NAS-Bench-201 string, "
                                f"its JSON, an NNI sample or an NB201Arch.")


def canonical_string(arch: "NB201Arch | str") -> str:
    """The key of ``arch``'s isomorphism class, as the robustness dataset groups cells.

    The cell output is written as an expression of the cell input ``0``,
    node by node: an edge ``i -> j`` contributes ``#`` (zero) when its op is
    ``none`` or node ``i`` is exactly ``#``, the expression of node ``i``
    when its op is ``skip_connect``, else ``(<node i>)@<op>``; node ``j`` is
    the ``+``-join of its edges' terms sorted as text. The key is node 3.
    This erases the numbering of the intermediate nodes (the isomorphisms
    of the DAG), identity edges and sum order. It is NAS-Bench-201's
    "unique string" with zeros considered (the rule its authors used to
    count its 6,466 unique cells, and the one the dataset's ``meta.json``
    ``isomorph`` field follows: identical classes on all 15,625 strings).

    Its quirks, kept on purpose so the classes equal the dataset's: zero
    terms stay in a node's sum (``conv(x) + 0`` is not ``conv(x)``); only a
    node that is a single ``#`` (node 1 on a ``none`` edge) counts as zero
    downstream; and a ``skip_connect`` from a summing node pastes its text
    into the next sum unsorted, so sums are flattened only where the text
    happens to sort (a fully associative key would merge 422 of the
    dataset's classes further, into 5,755: cells that compute the same
    function family but were trained and measured separately).

    Args:
        arch: An :class:`NB201Arch` or its NAS-Bench-201 string.

    Raises:
        ArchitectureError: a malformed string.
    """
    ops = arch.ops if isinstance(arch, NB201Arch) else _parse_cached(arch).ops
    return _canonical_from_ops(ops)


@functools.lru_cache(maxsize=None)
def _canonical_from_ops(ops: tuple[str, ...]) -> str:
    node = ["0"]
    k = 0
    for j in range(1, NUM_NODES):
        terms = []
        for i in range(j):
            op, src = ops[k + i], node[i]
            if op == "none" or src == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(src)
            else:
                terms.append(f"({src})@{op}")
        node.append("+".join(sorted(terms)))
        k += j
    return node[-1]


@functools.lru_cache(maxsize=2 * NUM_ARCHS)
def _parse_cached(text: str) -> NB201Arch:
    return NB201Arch.from_string(text)


@functools.lru_cache(maxsize=1)
def all_archs() -> tuple[NB201Arch, ...]:
    """All 15,625 cells in :attr:`NB201Arch.index` order."""
    return tuple(NB201Arch(ops) for ops in itertools.product(NB201_OPS, repeat=NUM_EDGES))


@functools.lru_cache(maxsize=1)
def all_strings() -> tuple[str, ...]:
    """The NAS-Bench-201 strings of :func:`all_archs` (also the module attribute
    ``ALL_STRINGS``, computed on first access)."""
    return tuple(a.to_string() for a in all_archs())


# --------------------------------------------------------------------------- network


class NB201Cell(nn.Module):
    """One cell of a discrete NAS-Bench-201 network (``channels`` in and out, stride 1).

    Like NAS-Bench-201's ``InferCell``, every non-``none`` edge holds its op
    (also edges whose result never reaches node 3, so parameter and FLOP
    counts match the benchmark's networks); a node whose edges are all
    ``none`` is a zero tensor. BN layers are affine (the benchmark trains
    its networks with affine BN).

    Args:
        arch: The cell.
        channels: Input = output channels.
    """

    def __init__(self, arch: NB201Arch, channels: int) -> None:
        super().__init__()
        self.arch = arch
        self.edges = nn.ModuleDict()
        for (i, j), op in zip(EDGES, arch.ops):
            if op != "none":
                self.edges[f"{i}_{j}"] = _build_op(op, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES):
            terms = [self.edges[f"{i}_{j}"](nodes[i]) for i in range(j) if f"{i}_{j}" in self.edges]
            nodes.append(torch.stack(terms).sum(0) if len(terms) > 1 else terms[0] if terms
                         else torch.zeros_like(x))
        return nodes[-1]


def _build_op(op: str, channels: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, affine=True)
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, affine=True)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ArchitectureError(f"No module for operation {op!r}; valid operations: {list(NB201_OPS[1:])}.")


class ResidualBlock(nn.Module):
    """The reduction block between stages (NAS-Bench-201 Sec. 2.1, a ResNet basic block):
    ``ReLUConvBN(3x3, stride 2) -> ReLUConvBN(3x3)`` plus a shortcut ``AvgPool(2) -> conv1x1``.

    The shortcut's pooling rounds up (``ceil_mode``) so odd input sizes match the strided
    conv; for the even sizes of the benchmark nothing changes (our choice; the original
    fails on odd sizes).

    Args:
        c_in: Input channels.
        c_out: Output channels.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True),
                                        nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 network of one cell (NAS-Bench-201 Sec. 2.1, Fig. 1).

    ``Normalize -> conv3x3(C) -> BN``, then 3 stages of ``cells_per_stage``
    cells with ``C``, ``2C``, ``4C`` channels and a :class:`ResidualBlock`
    (stride 2) before stages 2 and 3, then ``BN -> ReLU``, global average
    pooling and a linear classifier. With the defaults (``C = 16``,
    ``N = 5``) the all-``nor_conv_3x3`` cell has 1,531,546 parameters
    (NAS-Bench-201's largest CIFAR-10 network, 1.53 MB) and the all-``none``
    cell 73,306.

    Args:
        arch: The cell (an :class:`NB201Arch` or any form :meth:`NB201Arch.parse` reads).
        init_channels: ``C`` (16).
        cells_per_stage: ``N`` (5).
        num_classes: Output classes.
        in_channels: Image channels.
        input_size: Image height = width (>= 4: two reductions).
        mean: Per-channel input mean (inputs are in ``[0, 1]``), or ``None``.
        std: Per-channel input std, or ``None``.

    Raises:
        ArchitectureError: a malformed ``arch``.
        ConfigError: bad sizes.
    """

    def __init__(self, arch: "NB201Arch | str | Mapping[str, Any]", *, init_channels: int = 16,
                 cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.arch = NB201Arch.parse(arch)
        for name, value, low in (("init_channels", init_channels, 1), ("cells_per_stage", cells_per_stage, 0),
                                 ("num_classes", num_classes, 1), ("in_channels", in_channels, 1),
                                 ("input_size", input_size, 4)):
            if not is_int(value) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, but got {value!r}.")
        self.init_channels, self.cells_per_stage = init_channels, cells_per_stage
        self.normalize = Normalize(mean, std)
        c = init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        blocks: list[nn.Module] = []
        for stage in range(3):
            if stage:
                blocks.append(ResidualBlock(c, 2 * c))
                c *= 2
            blocks.extend(NB201Cell(self.arch, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (float in ``[0, 1]``, NCHW)."""
        h = self.lastact(self.cells(self.stem(self.normalize(x))))
        return self.classifier(h.mean(dim=(2, 3)))


# --------------------------------------------------------------------------- building from settings

#: Keys of the ``space`` settings dict :func:`build_nb201_space` understands.
SPACE_KEYS: tuple[str, ...] = ("name", "cells_per_stage")


def build_nb201_space(space: Mapping[str, Any], info: Any, init_channels: int = 16,
                      arch: "NB201Arch | Mapping[str, Any] | str | None" = None) -> nn.Module:
    """Build the :class:`NB201Network` of ``arch`` from a space settings dict
    (the signature of :func:`nni_robust.spaces.darts.build_darts_space`).

    Keys: ``name`` (``"nb201"``), ``cells_per_stage`` (5).

    There is no weight-sharing supernet for this space: it is searched over
    the tabular benchmark (:mod:`nni_robust.tabular`) or by training
    discrete cells, so ``arch`` is required.

    Args:
        space: The settings dict.
        info: A :class:`nni_robust.data.DatasetInfo` (classes, channels, size, mean, std).
        init_channels: ``C`` (NAS-Bench-201: 16).
        arch: The cell: an :class:`NB201Arch`, a NAS-Bench-201 string, its JSON, or an NNI sample.

    Raises:
        ConfigError: unknown name or keys, bad values, or ``arch`` missing.
        ArchitectureError: a malformed ``arch``.
    """
    if not isinstance(space, Mapping):
        raise ConfigError(f"space must be a dict like {{'name': 'nb201'}}, but got {space!r}.")
    if space.get("name") != "nb201":
        raise ConfigError(f"space name must be 'nb201' for build_nb201_space, but got {space.get('name')!r}.")
    check_keys(space, SPACE_KEYS, "space 'nb201'")
    if arch is None:
        raise ConfigError("space 'nb201' has no supernet: pass arch= (a NAS-Bench-201 string such as "
                          "'|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                          "nor_conv_3x3~2|', its JSON or an NNI sample), or search it over the tabular benchmark "
                          "(nni_robust.tabular).")
    return NB201Network(arch, init_channels=init_channels, cells_per_stage=space.get("cells_per_stage", 5),
                        num_classes=info.num_classes, in_channels=info.channels, input_size=info.size,
                        mean=info.mean, std=info.std)


def load_nb201_table(root: "str | Path", dataset: str = "cifar10") -> RobustnessTable:
    """:func:`nni_robust.tabular.load_robustness_table` with :func:`canonical_string` as the
    isomorphism, so strings the table does not list are answered by their class."""
    return load_robustness_table(root, dataset, canonicalize=canonical_string)


# --------------------------------------------------------------------------- NNI model space


def _define_space(base: type) -> type:
    from nni.mutable import label_scope

    class NB201Space(base):  # type: ignore[misc, valid-type]
        """NNI 3.0 model space of NAS-Bench-201 cells: one ``nni.choice`` per edge.

        Labels and values are those of NNI's hub ``NasBench201``
        (``cell/0_1`` ... ``cell/2_3``, values :data:`NNI_OPS`), so samples
        move between the two and NNI's ``NasBench201Benchmark``. Building
        the space builds the discrete :class:`NB201Network` of the current
        sample (inside ``nni.nas.space.model_context(sample)``) or of the
        default sample (``none`` everywhere), never a supernet.
        :meth:`freeze` rebuilds the space under ``model_context(sample)``.

        Args:
            **network_kwargs: Keyword arguments of :class:`NB201Network`
                (``init_channels`` 16, ``cells_per_stage`` 5, ``num_classes`` 10, ...).

        Attributes:
            arch: The :class:`NB201Arch` built.
            network: The :class:`NB201Network`.
        """

        def __init__(self, **network_kwargs: Any) -> None:
            super().__init__()
            with label_scope(NNI_LABEL_SCOPE):
                chosen = {f"{i}_{j}": self.choose(f"{i}_{j}", NNI_OPS) for i, j in EDGES}
            self.arch = NB201Arch.from_sample(chosen)
            self.network = NB201Network(self.arch, **network_kwargs)

    return NB201Space


_make_space_class = lazy_space_class(__name__, _define_space)
__getattr__ = lazy_module_getattr(__name__, NB201Space=_make_space_class, ALL_STRINGS=all_strings)


def arch_from_sample(sample: Mapping[str, Any], space: Mapping[str, Any] | None = None) -> NB201Arch:
    """The :class:`NB201Arch` of an NNI sample (``space``, the settings dict, is not needed)."""
    return NB201Arch.from_sample(sample)


register_space(SpaceKind(
    name="nb201", build=build_nb201_space, parse_arch=NB201Arch.parse, from_sample=arch_from_sample,
    arch_type=NB201Arch, model_space=f"{__name__}.NB201Space",
    doc="NAS-Bench-201 cell space (5 ops on 6 edges, 15,625 cells); tabular robustness benchmark"))
