"""The architecture predictor of MSRobNet-P (GATES encoder, ranking loss, training, quality)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.spaces.dense_rob import EDGES, DenseRobArch, Layout
from nni_robust.spaces.ops import PRIMITIVES
from nni_robust.strategies.msrobnet import predictor as P

LAYOUT = Layout.from_name("stagewise")
SMALL = {"op_dim": 16, "node_dim": 16, "hidden_dim": 16, "gcn_dims": [16, 16, 16, 8], "mlp_hiddens": [32, 32]}


def random_archs(n, seed=0, layout=LAYOUT):
    rng = random.Random(seed)
    return [DenseRobArch.random(layout, rng) for _ in range(n)]


# ---------------------------------------------------------------------- encoding
def test_encode_archs_from_archs_and_samples():
    archs = random_archs(5)
    ops = P.encode_archs(archs, LAYOUT)
    assert ops.shape == (5, 4, 14) and ops.dtype == torch.long
    assert torch.equal(ops, P.encode_archs([a.to_sample() for a in archs], "stagewise"))
    for b, arch in enumerate(archs):
        for t, topo in enumerate(LAYOUT.topologies):  # S0, R, S1, S2
            assert [PRIMITIVES[k] for k in ops[b, t].tolist()] == list(arch.cells[topo])
    assert P.encode_archs([], LAYOUT).shape == (0, 4, 14)


def test_encode_archs_rejects_bad_input():
    sample = random_archs(1)[0].to_sample()
    with pytest.raises(ArchitectureError, match="S0_e20"):
        P.encode_archs([{k: v for k, v in sample.items() if k != "S0_e20"}], LAYOUT)
    with pytest.raises(ArchitectureError, match="conv_5x5"):
        P.encode_archs([dict(sample, S1_e43="conv_5x5")], LAYOUT)
    with pytest.raises(ArchitectureError, match="cellwise"):
        P.encode_archs(random_archs(1, layout=Layout.from_name("cellwise")), LAYOUT)
    model = P.build_predictor(LAYOUT, SMALL)
    with pytest.raises(ArchitectureError, match=r"\(B, 4, 14\)"):
        model(torch.zeros(2, 8, 14, dtype=torch.long))


# ---------------------------------------------------------------------- the encoder
def _reference_scores(model, ops):
    """GATES in dense form, written independently of torch-geometric (eval mode)."""
    out = []
    for arch in ops:
        cells = []
        for t, cell_ops in enumerate(arch):
            enc = model.cells[0 if model.config.share_cells else t]
            x = enc.x_hidden(torch.cat([enc.input_nodes.weight, enc.internal_node.expand(4, -1)]))
            for k, layer in enumerate(enc.layers):
                support = layer.weight(x)
                gates = torch.sigmoid(layer.gate(model.op_embedding.weight))
                new = support.clone()
                for (j, i), op in zip(EDGES, cell_ops.tolist()):
                    if PRIMITIVES[op] != "none":
                        new[j] = new[j] + gates[op] * support[i]
                x = torch.relu(new) if k < len(enc.layers) - 1 else new
            cells.append(x[2:].mean(dim=0))
        out.append(model.mlp(torch.cat(cells)))
    return torch.cat(out)


@pytest.mark.parametrize("share_cells", [True, False])
def test_message_passing_matches_the_dense_gates_formula(share_cells):
    model = P.build_predictor(LAYOUT, dict(SMALL, share_cells=share_cells), seed=3).eval()
    ops = P.encode_archs(random_archs(6, seed=1), LAYOUT)
    ops[0, 1] = 0  # a reduction cell with no edge at all
    with torch.no_grad():
        np.testing.assert_allclose(model(ops).numpy(), _reference_scores(model, ops).numpy(), rtol=1e-5, atol=1e-6)
    assert model.embedding_dim == 4 * 8


def test_none_edges_do_not_influence_the_encoding():
    model = P.build_predictor(LAYOUT, SMALL, seed=0).eval()
    ops = P.encode_archs(random_archs(20, seed=2), LAYOUT)
    assert (ops == P.NONE_INDEX).any()
    enc = model.cells[0]
    edge_index, edge_op = enc.graph(ops.reshape(-1, 14))
    assert edge_index.shape[1] == int((ops != P.NONE_INDEX).sum()) and (edge_op != P.NONE_INDEX).all()
    with torch.no_grad():
        before = model.embed(ops).clone()
        model.op_embedding.weight[P.NONE_INDEX] = torch.randn(16) * 100  # whatever 'none' would carry
        assert torch.equal(model.embed(ops), before)
        model.op_embedding.weight[PRIMITIVES.index("skip_connect")] += 1.0  # an op that is present does count
        assert not torch.allclose(model.embed(ops), before)


def test_an_edge_changes_the_encoding_only_when_it_carries_an_op():
    model = P.build_predictor(LAYOUT, SMALL, seed=0).eval()
    arch = random_archs(1, seed=4)[0]
    variants = [arch.replace(S1_e31=op) for op in PRIMITIVES]
    with torch.no_grad():
        emb = model.embed(P.encode_archs(variants, LAYOUT))
    # S1 is the third topology of the stage-wise layout; the others' embeddings do not move
    other = torch.cat([emb[:, :16], emb[:, 24:]], dim=1)
    assert torch.allclose(other, other[:1].expand_as(other))
    cell = emb[:, 16:24]
    assert all(not torch.allclose(cell[a], cell[b]) for a in range(4) for b in range(a + 1, 4))


# ---------------------------------------------------------------------- loss, training, quality
def test_ranking_loss_values_and_gradient():
    scores = torch.tensor([0.3, 0.0, 0.25], requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 0.5])
    # pairs (0,1): 0.1-0.3 -> 0; (0,2): 0.1-0.05 = 0.05; (1,2): y=-1, 0.1-(0.25) -> 0
    loss = P.ranking_loss(scores, rewards, margin=0.1)
    assert loss.item() == pytest.approx(0.05 / 3)
    loss.backward()
    assert scores.grad[0] < 0 < scores.grad[2] and scores.grad[1] == 0  # push 0 up, 2 down
    assert P.ranking_loss(scores, torch.ones(3)).item() == 0.0  # no pair with distinct rewards
    # a threshold drops the close pairs
    assert P.ranking_loss(scores.detach(), rewards, margin=1.0, threshold=0.6).item() == pytest.approx(1.0 - 0.3)


def test_predictor_learns_a_synthetic_reward_on_held_out_architectures():
    """A weighted count of convolution edges by position (stage, and whether the edge leaves a
    cell input) is learned from 300 architectures: Kendall tau >= 0.8 on 200 others."""
    archs = random_archs(500, seed=0)
    ops = P.encode_archs(archs, LAYOUT)
    w = torch.tensor([[(2.0 if i < 2 else 1.0) * (1 + 0.25 * t) for _, i in EDGES] for t in range(4)])
    reward = ((ops >= PRIMITIVES.index("sep_conv_3x3")) * w).sum(dim=(1, 2)).numpy()
    config = {"gcn_dims": [32, 32, 32, 32], "hidden_dim": 32, "mlp_hiddens": [128, 128]}
    model = P.build_predictor(LAYOUT, config, seed=0)
    untrained = P.ranking_quality(P.predict(model, ops[300:]), reward[300:])
    history = P.train_predictor(model, ops[:300], reward[:300], epochs=30, config=P.RankTrainConfig(), seed=0)
    assert len(history) == 30 and history[-1] < history[0]
    quality = P.ranking_quality(P.predict(model, ops[300:]), reward[300:])
    assert quality["kendall_tau"] >= 0.8 and quality["spearman"] >= 0.9
    assert quality["precision_at_20"] >= 0.5 and abs(untrained["kendall_tau"]) < 0.5


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    ops = P.encode_archs(random_archs(30), LAYOUT)
    reward = np.random.default_rng(0).uniform(size=30)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    weights = []
    for _ in range(2):
        model = P.build_predictor(LAYOUT, SMALL, seed=7)
        P.train_predictor(model, ops, reward, epochs=3, config=P.RankTrainConfig(batch_size=10), seed=5)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert torch.equal(torch.rand(3), expected_next)
    assert not model.training  # left in eval mode
    with pytest.raises(ConfigError, match="30 architectures but 29 rewards"):
        P.train_predictor(model, ops, reward[:29], epochs=1)
    with pytest.raises(ConfigError, match="finite"):
        P.train_predictor(model, ops, np.full(30, np.nan), epochs=1)


def test_incremental_tuning_moves_the_ranking_towards_new_data():
    ops = P.encode_archs(random_archs(200, seed=5), LAYOUT)
    w = torch.linspace(0.5, 1.5, 56).view(4, 14)
    reward = ((ops >= 2) * w).sum(dim=(1, 2)).numpy()
    model = P.build_predictor(LAYOUT, SMALL, seed=0)
    P.train_predictor(model, ops[:80], reward[:80], epochs=30, config=P.RankTrainConfig(batch_size=20))
    assert P.ranking_quality(P.predict(model, ops[160:]), reward[160:])["kendall_tau"] > 0.5
    # tuned on other (new) architectures whose reward is reversed, the held-out ranking follows
    P.train_predictor(model, ops[80:160], -reward[80:160], epochs=30, config=P.RankTrainConfig(batch_size=20))
    assert P.ranking_quality(P.predict(model, ops[160:]), -reward[160:])["kendall_tau"] > 0.5


def test_ranking_quality_known_values():
    measured = np.arange(10.0)
    q = P.ranking_quality(measured * 2 + 1, measured, ks=(2, 5, 10))
    assert q == {"n": 10, "kendall_tau": pytest.approx(1.0), "spearman": pytest.approx(1.0),
                 "precision_at_2": 1.0, "precision_at_5": 1.0, "precision_at_10": None}
    q = P.ranking_quality(-measured, measured, ks=(5,))
    assert q["kendall_tau"] == pytest.approx(-1.0) and q["precision_at_5"] == 0.0
    # top-4 by prediction {9, 8, 0, 1} vs true top-4 {9, 8, 7, 6}: P@4 = 0.5
    pred = np.array([7.5, 7.0, 0, 0, 0, 0, 1, 2, 8, 9], dtype=float)
    assert P.precision_at_k(pred, measured, 4) == 0.5
    q = P.ranking_quality(np.ones(5), np.arange(5.0), ks=(2,))
    assert q["kendall_tau"] is None and q["spearman"] is None
    assert P.ranking_quality([1.0], [2.0])["kendall_tau"] is None
    with pytest.raises(ConfigError, match="k must be"):
        P.precision_at_k(pred, measured, 11)
    with pytest.raises(ConfigError, match="same length"):
        P.ranking_quality([1.0, 2.0], [1.0])


@pytest.mark.parametrize("cls, data, match", [
    (P.PredictorConfig, {"gcn_dim": [8]}, "'gcn_dim'.*gcn_dims"),
    (P.PredictorConfig, {"gcn_dims": []}, "gcn_dims"),
    (P.PredictorConfig, {"op_dim": 0}, "op_dim.* 0"),
    (P.PredictorConfig, {"dropout": 1.5}, "dropout"),
    (P.PredictorConfig, {"share_cells": "yes"}, "share_cells"),
    (P.RankTrainConfig, {"margin": -0.1}, "margin"),
    (P.RankTrainConfig, {"epochs": 1.5}, "epochs"),
    (P.RankTrainConfig, {"batch_sizes": 5}, "'batch_sizes'"),
])
def test_config_errors_name_the_bad_value(cls, data, match):
    with pytest.raises(ConfigError, match=match):
        cls.from_dict(data)


def test_paper_default_sizes():
    config = P.PredictorConfig()
    assert (config.op_dim, config.node_dim, config.hidden_dim) == (48, 48, 48)
    assert config.gcn_dims == (48, 48, 48, 32) and config.mlp_hiddens == (256, 256, 256) and config.dropout == 0.1
    train = P.RankTrainConfig()
    assert (train.epochs, train.batch_size, train.lr, train.margin) == (100, 50, 1e-3, 0.1)
    model = P.build_predictor(LAYOUT)
    assert model.embedding_dim == 128  # 4 topologies x 32 (App. B.1)
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [256, 256, 256, 1]
    assert isinstance(model.mlp[0], torch.nn.Dropout) and model.mlp[0].p == 0.1
