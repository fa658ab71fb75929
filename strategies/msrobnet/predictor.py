"""Architecture-performance predictor of MSRobNet's predictor-based controller.

MSRobNet (``msrobnet-multishot-nas.txt``) Sec. 5.3.3 and App. B.1: a GATES-style
graph encoder (Ning et al., "A Generic Graph-based Neural Architecture Encoding
Scheme for Predictor-based NAS", ECCV 2020, the paper's ref. [22]) embeds each
cell topology of a stage-wise architecture (S0, S1, S2, R); the embeddings are
concatenated and an MLP maps them to a score. Only the ranking of scores
matters: the predictor is trained with the hinge pair-wise ranking loss.

Encoder (one per cell topology graph; details from the authors' code, see
``shared/notes/methods.md``):

* a cell is a DAG of 6 nodes (2 inputs, 4 internal) and 14 edges
  (:data:`nni_robust.spaces.dense_rob.EDGES`); each edge carries one op of
  :data:`~nni_robust.spaces.ops.PRIMITIVES`;
* node features: a learned embedding for each input node and one shared
  learned embedding for the internal nodes, projected by a linear layer
  (GATES' ``x_hidden``);
* each graph layer (:class:`GatedOpConv`, a torch-geometric ``MessagePassing``)
  computes ``support = X W`` and ``out_i = sum_{j -> i} g_ji * support_j +
  support_i`` with the element-wise edge gate ``g_ji = sigmoid(Linear(op
  embedding))``; a ``none`` edge is not in the graph at all, so it carries
  nothing (its gate is exactly zero); ReLU between layers;
* readout: mean of the internal nodes' features of the last layer.

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

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nni_robust.config import check_range, from_dict
from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.spaces.dense_rob import EDGES, NUM_EDGES, DenseRobArch, Layout, edge_labels
from nni_robust.spaces.ops import PRIMITIVES

__all__ = [
    "PredictorConfig", "RankTrainConfig", "NUM_NODES", "NONE_INDEX", "encode_archs", "ranking_loss",
    "train_predictor", "predict", "precision_at_k", "ranking_quality", "GatedOpConv", "CellEncoder",
    "ArchPredictor", "build_predictor", "config_dict",
]

logger = logging.getLogger(__name__)

#: Nodes of a dense robust cell graph: 2 inputs + 4 internal nodes.
NUM_NODES = 6
#: Index of ``none`` in :data:`PRIMITIVES` (an absent edge).
NONE_INDEX = PRIMITIVES.index("none")
_SRC = torch.tensor([i for _, i in EDGES], dtype=torch.long)
_DST = torch.tensor([j for j, _ in EDGES], dtype=torch.long)
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


# ---------------------------------------------------------------------- encoding of architectures
def encode_archs(archs: Iterable[DenseRobArch | Mapping[str, Any]], layout: Layout | str) -> torch.Tensor:
    """Op indices of architectures as a ``(B, T, 14)`` int64 tensor.

    Args:
        archs: :class:`DenseRobArch` objects or NNI samples ``{label: op}`` of ``layout``.
        layout: the layout; ``T`` = its number of topologies, in
            ``layout.topologies`` order (stage-wise: S0, R, S1, S2).

    Raises:
        ArchitectureError: a sample lacks a label, has an unknown op, or is of another layout.
    """
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
        """Embeds a batch of cell topologies: ``(C, 14)`` op indices -> ``(C, gcn_dims[-1])``.

        Args:
            config: the predictor's :class:`PredictorConfig`.
            op_embedding: the op embedding table (shared by the cell encoders).
        """

        def __init__(self, config: PredictorConfig, op_embedding: nn.Embedding) -> None:
            super().__init__()
            self.op_embedding = op_embedding
            self.input_nodes = nn.Embedding(2, config.node_dim)
            self.internal_node = nn.Parameter(torch.zeros(1, config.node_dim),
                                              requires_grad=config.internal_nodes == "learned")
            if config.internal_nodes == "learned":
                nn.init.normal_(self.internal_node)
            self.x_hidden = nn.Linear(config.node_dim, config.hidden_dim)
            dims = (config.hidden_dim,) + tuple(config.gcn_dims)
            self.layers = nn.ModuleList(GatedOpConv(a, b, config.op_dim) for a, b in zip(dims[:-1], dims[1:]))
            self.out_dim = dims[-1]

        def graph(self, ops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(edge_index (2, E), op index (E,)) of the batched graph of ``C`` cells; ``none`` edges omitted."""
            cell, edge = (ops != NONE_INDEX).nonzero(as_tuple=True)
            base = cell * NUM_NODES
            src, dst = _SRC.to(ops.device), _DST.to(ops.device)
            edge_index = torch.stack([base + src[edge], base + dst[edge]])
            return edge_index, ops[cell, edge]

        def forward(self, ops: torch.Tensor) -> torch.Tensor:
            num_cells = ops.shape[0]
            edge_index, edge_op = self.graph(ops)
            nodes = self.x_hidden(torch.cat([self.input_nodes.weight,
                                             self.internal_node.expand(NUM_NODES - 2, -1)]))
            x = nodes.repeat(num_cells, 1)
            for k, layer in enumerate(self.layers):
                x = layer(x, edge_index, edge_op, self.op_embedding.weight)
                if k < len(self.layers) - 1:
                    x = torch.relu(x)
            return x.view(num_cells, NUM_NODES, -1)[:, 2:].mean(dim=1)

    class ArchPredictor(nn.Module):
        """Scores architectures of a layout: ``(B, T, 14)`` op indices -> ``(B,)`` scores.

        MSRobNet Sec. 5.3.3 / App. B.1: one embedding per cell topology,
        concatenated (in ``layout.topologies`` order), dropout, then an MLP.

        Args:
            layout: the layout (stage-wise in the paper: 4 topologies).
            config: :class:`PredictorConfig` (default: the paper's).
        """

        def __init__(self, layout: Layout | str, config: PredictorConfig | None = None) -> None:
            super().__init__()
            self.layout = Layout.from_json_value(layout)
            self.config = config or PredictorConfig()
            self.num_topologies = len(self.layout.topologies)
            self.op_embedding = nn.Embedding(len(PRIMITIVES), self.config.op_dim)
            count = 1 if self.config.share_cells else self.num_topologies
            self.cells = nn.ModuleList(CellEncoder(self.config, self.op_embedding) for _ in range(count))
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
            """Architecture embeddings ``(B, T * cell_dim)`` of op indices ``(B, T, 14)``."""
            if ops.dim() != 3 or ops.shape[1:] != (self.num_topologies, NUM_EDGES):
                raise ArchitectureError(f"Op indices must have shape (B, {self.num_topologies}, {NUM_EDGES}) for "
                                        f"layout {self.layout.name!r}, but got {tuple(ops.shape)}.")
            batch = ops.shape[0]
            if self.config.share_cells:
                return self.cells[0](ops.reshape(-1, NUM_EDGES)).view(batch, -1)
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


def build_predictor(layout: Layout | str, config: PredictorConfig | Mapping[str, Any] | None = None, *,
                    seed: int | None = 0, device: str | torch.device = "cpu") -> nn.Module:
    """A freshly initialised :class:`ArchPredictor` (weights seeded by ``seed``) on ``device``."""
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
        ops: ``(N, T, 14)`` op indices (:func:`encode_archs`).
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
    """Scores of ``(N, T, 14)`` op indices (eval mode, no gradients), as a float64 array."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, ops.shape[0], batch_size):
                out.append(model(ops[start:start + batch_size].to(device)).float().cpu())
    finally:
        model.train(was_training)
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
