"""The GATES encoder of MSRobNet-P on any cell DAG (:class:`CellGraph`): NAS-Bench-201's cell, a custom one,
and the isomorphism-aware picks of the inner search."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.spaces.dense_rob import Layout
from nni_robust.spaces.nb201 import EDGES, NNI_OPS, NB201Arch, all_archs, canonical_string, edge_labels
from nni_robust.strategies.msrobnet import predictor as P
from nni_robust.strategies.msrobnet.predictor_search import inner_search

SMALL = {"op_dim": 8, "node_dim": 8, "hidden_dim": 8, "gcn_dims": [8, 8, 6], "mlp_hiddens": [16]}
#: Isomorphic for the robustness dataset: node 1's output reaches no other node, so its op does not matter.
ISO = ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
       "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")


def test_nb201_cell_graph():
    g = P.cell_graph("nb201")
    assert (g.num_nodes, g.num_inputs, g.num_edges, len(g.cells)) == (4, 1, 6, 1)
    assert g.edges == EDGES and g.ops == NNI_OPS and g.labels == edge_labels() and g.none_index == 0
    arch = NB201Arch.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|")
    arr = g.to_array(arch.to_sample())
    assert arr.tolist() == [3, 0, 2, 1, 4, 0] and NB201Arch.from_sample(g.to_sample(arr)) == arch
    assert g.encode([arch.to_sample()] * 3).shape == (3, 1, 6)
    assert g.isomorphism_key(g.to_array(NB201Arch.from_string(ISO[0]).to_sample())) \
        == g.isomorphism_key(g.to_array(NB201Arch.from_string(ISO[1]).to_sample())) == canonical_string(ISO[0])
    with pytest.raises(ArchitectureError, match=r"lacks labels \['cell/2_3'\]"):
        g.to_array({k: v for k, v in arch.to_sample().items() if k != "cell/2_3"})
    with pytest.raises(ArchitectureError, match="'cell/0_1' has op 'nor_conv_3x3'"):
        g.to_array(dict(arch.to_sample(), **{"cell/0_1": "nor_conv_3x3"}))  # the dataset's name, not NNI's
    g.check_labels({label: list(NNI_OPS) for label in edge_labels()})
    with pytest.raises(ConfigError, match="labels only in the graph"):
        g.check_labels({label: list(NNI_OPS) for label in edge_labels()[:5]})
    with pytest.raises(ConfigError, match="chooses \\['sep_conv'\\]"):
        g.check_labels({label: list(NNI_OPS) + ["sep_conv"] for label in edge_labels()})
    # a dense robust layout's graph is MSRobNet's cell, unchanged
    d = P.cell_graph("stagewise")
    assert (d.num_nodes, d.num_inputs, d.num_edges, len(d.cells)) == (6, 2, 14, 4)
    assert d.labels == Layout.from_name("stagewise").labels() and d.canonical is None
    with pytest.raises(ConfigError, match="knows no isomorphism"):
        d.isomorphism_key(np.zeros(56, dtype=np.int64))


def test_nb201_cells_are_encoded_by_their_isomorphism_class():
    """The predictor sees one representative per class of the robustness dataset: the smallest op array."""
    g = P.cell_graph("nb201")
    every = np.array([g.to_array(a.to_sample()) for a in all_archs()])
    reps = g.representatives(every)
    keys = [g.isomorphism_key(a) for a in every]
    assert len({r.tobytes() for r in reps}) == len(set(keys)) == 6466
    for a, r, k in zip(every[::97], reps[::97], keys[::97]):  # same class, no smaller member, idempotent
        assert g.isomorphism_key(r) == k and tuple(r) <= tuple(a) and (g.representatives(r) == r).all()
    # node 1 reaches nothing: its op is dead, so both cells encode as 'none' on edge 0->1
    ops = g.encode([NB201Arch.from_string(s).to_sample() for s in ISO])
    assert torch.equal(ops[0], ops[1]) and ops[0, 0].tolist() == [0, 0, 0, 1, 0, 0]
    raw = g.encode([NB201Arch.from_string(s).to_sample() for s in ISO], canonical=False)
    assert raw[:, 0, 0].tolist() == [3, 4]
    # a graph without classes (MSRobNet's dense robust cell) is encoded as it is
    d = P.cell_graph("stagewise")
    arr = np.arange(56) % 8
    assert (d.representatives(arr) == arr).all()


@pytest.mark.parametrize("data, match", [
    ({"num_nodes": 3, "num_inputs": 1, "edges": [[0, 1], [1, 0]], "ops": ["a"], "cells": [["x", "y"]]},
     r"edge \(1, 0\)"),
    ({"num_nodes": 3, "num_inputs": 1, "edges": [[0, 1]], "ops": ["a", "a"], "cells": [["x"]]}, "distinct"),
    ({"num_nodes": 3, "num_inputs": 1, "edges": [[0, 1]], "ops": ["a"], "cells": [["x", "y"]], "none_op": None},
     "names 2 labels"),
    ({"num_nodes": 3, "num_inputs": 1, "edges": [[0, 1]], "ops": ["a"], "cells": [["x"]], "none_op": "z"},
     "none_op 'z'"),
    ({"num_nodes": 3, "num_inputs": 1, "edges": [[0, 1]], "ops": ["a"], "cells": [["x"]], "canonical": "f"},
     "cannot name a 'canonical'"),
    ({"num_nodes": 3, "num_inputs": 1, "edge": [[0, 1]], "ops": ["a"], "cells": [["x"]]}, "'edge'"),
])
def test_cell_graph_descriptions_are_checked(data, match):
    with pytest.raises(ConfigError, match=match):
        P.CellGraph.from_dict(data)


def _dense_scores(model, ops, graph):
    """GATES in dense form on any graph (eval mode), written independently of torch-geometric."""
    out = []
    for arch in ops:
        cells = []
        for t, cell_ops in enumerate(arch):
            enc = model.cells[0 if model.config.share_cells else t]
            x = enc.x_hidden(torch.cat([enc.input_nodes.weight,
                                        enc.internal_node.expand(graph.num_nodes - graph.num_inputs, -1)]))
            for k, layer in enumerate(enc.layers):
                support = layer.weight(x)
                gates = torch.sigmoid(layer.gate(model.op_embedding.weight))
                new = support.clone()
                for (i, j), op in zip(graph.edges, cell_ops.tolist()):
                    if op != graph.none_index:
                        new[j] = new[j] + gates[op] * support[i]
                x = torch.relu(new) if k < len(enc.layers) - 1 else new
            cells.append(x[graph.num_inputs:].mean(dim=0))
        out.append(model.mlp(torch.cat(cells)))
    return torch.cat(out)


def test_the_encoder_computes_gates_on_the_nb201_cell_and_on_a_custom_dag():
    g = P.cell_graph("nb201")
    model = P.build_predictor(g, SMALL, seed=1).eval()
    archs = random.Random(0).sample(all_archs(), 12)
    ops = g.encode([a.to_sample() for a in archs])
    assert torch.equal(P.encode_archs([a.to_sample() for a in archs], "nb201"), ops)
    with torch.no_grad():
        np.testing.assert_allclose(model(ops).numpy(), _dense_scores(model, ops, g).numpy(), rtol=1e-5, atol=1e-6)
        # 'none' carries nothing: whatever its embedding, the scores stay
        before = model(ops).clone()
        model.op_embedding.weight[g.none_index] += 100.0
        assert torch.equal(model(ops), before)
    assert model.embedding_dim == 6 and model.layout is None and model.cell_graph is g
    with pytest.raises(ArchitectureError, match=r"\(B, 1, 6\) for 'nb201'"):
        model(torch.zeros(2, 1, 14, dtype=torch.long))
    # a DAG with 2 cells, 2 inputs, no 'none' op, one cell encoder per cell
    custom = P.CellGraph.from_dict({"name": "toy", "num_nodes": 4, "num_inputs": 2,
                                    "edges": [[0, 2], [1, 2], [2, 3], [0, 3]], "ops": ["p", "q", "r"],
                                    "cells": [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"]], "none_op": None})
    model = P.build_predictor(custom, dict(SMALL, share_cells=False), seed=2).eval()
    samples = [{label: custom.ops[(n + k) % 3] for k, label in enumerate(custom.labels)} for n in range(5)]
    ops = custom.encode(samples)
    with torch.no_grad():
        np.testing.assert_allclose(model(ops).numpy(), _dense_scores(model, ops, custom).numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_predictor_learns_the_nb201_cell():
    """A reward that depends on the op of each NAS-Bench-201 edge is ranked on held-out cells."""
    g = P.cell_graph("nb201")
    archs = random.Random(1).sample(all_archs(), 400)
    ops = g.encode([a.to_sample() for a in archs])
    w = torch.tensor([[0.0, 0.5, 1.0, 2.0, 0.8]] * 6) * torch.tensor([1.0, 0.5, 0.7, 1.5, 1.2, 2.0])[:, None]
    reward = w[torch.arange(6), ops[:, 0]].sum(dim=1).numpy()
    model = P.build_predictor(g, {"gcn_dims": [32, 32, 32], "hidden_dim": 32, "mlp_hiddens": [64]}, seed=0)
    P.train_predictor(model, ops[:250], reward[:250], epochs=40, config=P.RankTrainConfig(batch_size=50), seed=0)
    quality = P.ranking_quality(P.predict(model, ops[250:]), reward[250:])
    assert quality["kendall_tau"] >= 0.7


def test_inner_search_never_picks_an_isomorphic_topology():
    g = P.cell_graph("nb201")
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 1.5, size=(6, 5))

    def score(arrays):
        return weights[np.arange(6), arrays].sum(axis=1)

    initial = [rng.integers(0, 5, size=6) for _ in range(10)]
    exclude = {g.isomorphism_key(a) for a in initial}
    picks, _ = inner_search(score, initial, population=10, tournament=3, num_picks=30, pick_every=10,
                            num_choices=5, exclude=exclude, rng=random.Random(0), key=g.isomorphism_key)
    keys = [g.isomorphism_key(a) for a, _ in picks]
    assert len(picks) == 30 and len(set(keys)) == 30 and not set(keys) & exclude
    plain, _ = inner_search(score, initial, population=10, tournament=3, num_picks=30, pick_every=10,
                            num_choices=5, exclude={a.tobytes() for a in initial}, rng=random.Random(0))
    plain_keys = [g.isomorphism_key(a) for a, _ in plain]
    assert len(set(plain_keys)) < 30 or set(plain_keys) & exclude  # without the key, isomorphic picks happen


def test_inner_search_in_an_exhausted_small_space_picks_the_best_free_topology_anywhere(caplog):
    """27 topologies (3 edges, 3 ops), all but two excluded, both 3 mutations from the population: no
    child of the 3 steps is free, so with the whole space the picks are the best-scored free ones; without
    it the picks are skipped, as in the paper's (never exhausted) space."""
    import itertools

    every = np.array(list(itertools.product(range(3), repeat=3)), dtype=np.int64)
    free = [(2, 2, 1), (2, 2, 2)]
    exclude = {a.tobytes() for a in every if tuple(a) not in free}

    def score(arrays):  # best: (0, 0, 0), where the population sits; (2, 2, 1) beats (2, 2, 2)
        arrays = np.asarray(arrays)
        return -(arrays != 0).sum(axis=1) + 0.5 * (arrays[:, 2] == 1)

    args = dict(population=1, tournament=1, num_picks=3, pick_every=1, num_choices=3, exclude=exclude)
    picks, scored = inner_search(score, [np.zeros(3, dtype=np.int64)], rng=random.Random(0), space=every, **args)
    assert [tuple(int(v) for v in a) for a, _ in picks] == free and scored == 1 + 3
    assert [s for _, s in picks] == [-2.5, -3.0] and "no unevaluated topology left in the space" in caplog.text
    picks, _ = inner_search(score, [np.zeros(3, dtype=np.int64)], rng=random.Random(0), **args)
    assert picks == [] and "left to pick" in caplog.text
