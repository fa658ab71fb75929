"""The DARTS cell space (spaces/darts.py) and the DSARA space (spaces/dsara.py)."""

from __future__ import annotations

import json
import pickle
import random

import pytest
import torch

from nni_robust.data import DatasetInfo
from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.flops import count_flops
from nni_robust.spaces.darts import (EDGES, PRIMITIVES, DartsArch, DartsLayout, DartsNetwork, DartsSupernet,
                                     build_darts_space, darts_choices, drop_path)
from nni_robust.spaces.dsara import (DSARA_PRIMITIVES, EVAL_SETTINGS, SEARCH_SETTINGS, TABLE4_VARIANTS,
                                     dsara_layout, dsara_network, dsara_supernet)

TINY = dict(init_channels=4, num_classes=10, in_channels=1, input_size=8)
SHAPE = (1, 8, 8)
INFO = DatasetInfo("digits", 10, 1, 8, (0.5,), (0.25,), flip=False)

#: DARTS_V2 as published in the DARTS code (genotypes.py).
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")



# --------------------------------------------------------------------------- layouts


def test_darts_layout():
    lay = DartsLayout.darts()
    assert lay.num_cells == 8 and lay.reductions == (2, 5)
    assert lay.cells == ("normal",) * 2 + ("reduce",) + ("normal",) * 2 + ("reduce",) + ("normal",) * 2
    assert lay.cell_types == ("normal", "reduce") and lay.reduction_types == ("reduce",)
    assert lay.multipliers == (1, 1, 2, 2, 2, 4, 4, 4)
    assert lay.stage_channels(16) == (16, 32, 64)
    assert lay.stages() == ((0, 1), (2, 3, 4), (5, 6, 7))
    lay20 = DartsLayout.darts(20)
    assert lay20.reductions == (6, 13) and lay20.stage_channels(36) == (36, 72, 144)
    for layout in (lay, lay20, dsara_layout()):
        assert DartsLayout.from_json_value(json.loads(json.dumps(layout.to_json_value()))) == layout
    assert lay.to_json_value() == "darts" and lay20.to_json_value() == "darts-20"


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_cells=2), "num_cells"),
    (dict(filters=(1, 2)), "filters"),
    (dict(filters=(1, 0, 2)), "filters"),
    (dict(placement=("a", "b")), "placement"),
    (dict(placement=("normal", "reduce", "normal")), "reduce_type"),
    (dict(placement=("nor-mal", "normal", "normal")), "nor-mal"),
])
def test_layout_build_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DartsLayout.build(**kwargs)


def test_layout_rejects_inconsistent_types():
    with pytest.raises(ConfigError, match="both at reduction"):
        DartsLayout("x", ("a", "a", "b"), (1,), (1, 2, 2))
    with pytest.raises(ConfigError, match="multipliers"):
        DartsLayout("x", ("a", "r", "b"), (1,), (1, 2))
    with pytest.raises(ConfigError, match="reductions"):
        DartsLayout("x", ("a", "r", "b"), (3,), (1, 2, 2))
    with pytest.raises(ConfigError, match="Unknown DARTS layout"):
        DartsLayout.from_json_value("nasnet")
    with pytest.raises(ConfigError, match="bogus"):
        DartsLayout.from_json_value({"cells": ["a"], "reductions": [], "multipliers": [1], "bogus": 1})


def test_dsara_layout_matches_the_paper():
    # Sec. 4.2: reductions at 1/3 and 2/3; accurate cells before the 2nd reduction, robust after;
    # Sec. 5.3: search 8 cells, C = 24 -> 24, 48, 48; evaluation 20 cells, C = 64 -> 64, 128, 128.
    lay = dsara_layout(SEARCH_SETTINGS["num_cells"])
    assert lay.cells == ("accurate", "accurate", "reduce", "accurate", "accurate", "reduce", "robust", "robust")
    assert lay.cell_types == ("accurate", "reduce", "robust")
    assert lay.stage_channels(SEARCH_SETTINGS["init_channels"]) == (24, 48, 48)
    assert lay.channels(24) == (24, 24, 48, 48, 48, 48, 48, 48)
    ev = dsara_layout(EVAL_SETTINGS["num_cells"])
    assert ev.reductions == (6, 13)
    assert ev.stage_channels(EVAL_SETTINGS["init_channels"]) == (64, 128, 128)
    assert all(t == "accurate" for t in ev.cells[:13] if t != "reduce")
    assert set(ev.cells[14:]) == {"robust"}


def test_dsara_table4_variants():
    expected = {  # (placement, filters) -> (stage types, stage channels at C = 24)
        ("A-A-R", "1-2-2"): (("accurate", "accurate", "robust"), (24, 48, 48)),
        ("R-A-A", "1-2-2"): (("robust", "accurate", "accurate"), (24, 48, 48)),
        ("A-R-A", "1-2-2"): (("accurate", "robust", "accurate"), (24, 48, 48)),
        ("A-A-R", "1-2-3"): (("accurate", "accurate", "robust"), (24, 48, 72)),
        ("A-A-R", "1-2-4"): (("accurate", "accurate", "robust"), (24, 48, 96)),
        ("A-A-A", "1-2-4"): (("accurate", "accurate", "accurate"), (24, 48, 96)),
    }
    assert set(TABLE4_VARIANTS) == set(expected)
    for (placement, filters), (types, channels) in expected.items():
        lay = dsara_layout(8, placement, filters)
        assert lay.stage_channels(24) == channels
        assert tuple(lay.cells[p] for p in (0, 3, 6)) == types
        assert lay.cells[2] == lay.cells[5] == "reduce"
    assert dsara_layout(8, "A-A-A", "1-2-4").cell_types == ("accurate", "reduce")
    assert dsara_layout(8, ["accurate", "robust", "N"], (1, 2, 2)).cell_types == \
        ("accurate", "reduce", "robust", "normal")


@pytest.mark.parametrize("placement,filters,match", [
    ("F-F-R", "1-2-2", "'F'"), ("A-A", "1-2-2", "placement"), ("A-A-R", "1-2", "filters"),
    ("A-A-R", "1-x-2", "filters"), ("A-A-R", (1, 2, -1), "filters")])
def test_dsara_layout_rejects_bad_settings(placement, filters, match):
    with pytest.raises(ConfigError, match=match):
        dsara_layout(8, placement, filters)


def test_dsara_supernet_cells_have_the_layout_widths():
    for placement, filters in (("A-A-R", "1-2-2"), ("R-A-A", "1-2-3"), ("A-A-A", "1-2-4")):
        net = dsara_supernet(num_classes=10, num_cells=4, init_channels=4, in_channels=1, input_size=8,
                             placement=placement, filters=filters)
        lay = dsara_layout(4, placement, filters)
        assert [cell.channels for cell in net.cells] == list(lay.channels(4))
        assert [cell.reduction for cell in net.cells] == list(lay.reduces)
        assert net.primitives == DSARA_PRIMITIVES and "none" not in net.primitives
        assert net.classifier.in_features == 4 * lay.channels(4)[-1]


# --------------------------------------------------------------------------- supernet


def tiny_supernet(layout=None, primitives=PRIMITIVES, seed=0):
    torch.manual_seed(seed)
    return DartsSupernet(layout=layout or DartsLayout.darts(3), primitives=primitives, **TINY)


@pytest.fixture(scope="module")
def darts_net():
    """A 3-cell DARTS supernet (tests that use it set every alpha they rely on)."""
    return tiny_supernet()


@pytest.fixture(scope="module")
def dsara_net():
    """A 5-cell DSARA supernet (accurate, reduce, robust), DSARA primitives."""
    return tiny_supernet(dsara_layout(5), DSARA_PRIMITIVES)


def test_supernet_forward_and_parameters(dsara_net):
    net = dsara_net
    assert net.cell_types == ("accurate", "reduce", "robust")
    alphas = net.arch_parameters()
    assert len(alphas) == 3 and all(a.shape == (14, 7) for a in alphas)
    assert all(float(a.abs().max()) < 0.01 for a in alphas)  # DARTS init 1e-3 * randn
    weights = net.weight_parameters()
    ids = {id(p) for p in weights}
    assert not ids & {id(a) for a in alphas}
    assert len(weights) + len(alphas) == len(list(net.parameters()))
    aw = net.arch_weights()
    assert list(aw) == list(net.cell_types)
    assert all(torch.allclose(w.sum(dim=1), torch.ones(14)) and not w.requires_grad for w in aw.values())
    x = torch.rand(3, *SHAPE)
    out = net(x)
    assert out.shape == (3, 10)
    out.logsumexp(dim=1).sum().backward()
    assert all(a.grad is not None and float(a.grad.abs().sum()) > 0 for a in alphas)
    # explicit weights equal to softmax(alpha) give the same output; wrong shapes are refused
    net.eval()
    soft = {t: torch.softmax(net.alphas[t], dim=-1) for t in net.cell_types}
    assert torch.allclose(net(x), net(x, soft), atol=1e-6)
    with pytest.raises(ConfigError, match="shape"):
        net(x, {t: torch.ones(14, 8) for t in net.cell_types})


def test_supernet_darts_defaults_and_bad_settings(darts_net):
    net = darts_net
    assert net.primitives == PRIMITIVES and net.cell_types == ("normal", "reduce")
    assert all(a.shape == (14, 8) for a in net.arch_parameters())
    # DARTS search: non-affine BN inside the cells
    bns = [m for m in net.cells.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.affine for m in bns)
    with pytest.raises(ConfigError, match="conv_9x9"):
        DartsSupernet(layout=DartsLayout.darts(3), primitives=("none", "conv_9x9"), **TINY)
    with pytest.raises(ConfigError, match="besides 'none'"):
        DartsSupernet(layout=DartsLayout.darts(3), primitives=("none",), **TINY)
    with pytest.raises(ConfigError, match="input_size"):
        DartsSupernet(layout=DartsLayout.darts(3), init_channels=4, num_classes=10, input_size=2)
    with pytest.raises(ConfigError, match="even"):  # 3 x 3 channels at the second reduction
        DartsSupernet(layout=dsara_layout(5, "A-A-R", "1-2-3"), init_channels=3, num_classes=10, input_size=8)


def _plant(net: DartsSupernet, cells: dict[str, list[tuple[str, int]]], decoy: str = "none") -> None:
    """Set alphas so that the planted (op, input) pairs win: a node's first planted edge gets
    +3 on its op, the second +2.5; on every other edge ``decoy`` gets +10 (ignored when
    excluded) and a third op +1."""
    prims = net.primitives
    with torch.no_grad():
        for t, pairs in cells.items():
            a = torch.zeros(14, len(prims))
            start = 0
            for n, j in enumerate(range(2, 6)):
                node = {i: (op, 3.0 - 0.5 * m) for m, (op, i) in enumerate(pairs[2 * n:2 * n + 2])}
                for i in range(j):
                    if i in node:
                        a[start + i, prims.index(node[i][0])] = node[i][1]
                    else:
                        if decoy in prims:
                            a[start + i, prims.index(decoy)] = 10.0
                        a[start + i, prims.index("avg_pool_3x3")] = 1.0
                start += j
            net.alphas[t].copy_(a)


def test_derive_picks_the_planted_argmax(darts_net):
    net = darts_net
    rng = random.Random(5)
    planted = DartsArch.random(net.cell_types, rng)
    _plant(net, planted.cells)
    assert net.derive() == planted
    # edge strength ignores `none`: the decoys weigh 10 on none but only 1 on avg_pool
    derived = net.derive()
    assert "none" not in {op for pairs in derived.cells.values() for op, _ in pairs}
    # one input per node: the stronger of the two planted
    one = net.derive(inputs_per_node=1)
    assert one.inputs_per_node == 1
    assert one.cells["normal"] == tuple(pairs[0] for pairs in planted.node_pairs("normal"))


def test_derive_keeps_the_two_strongest_inputs(darts_net):
    net = darts_net
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()
        a = net.alphas["normal"]
        # node 5 (edges 9..13 from nodes 0..4): graded strengths on sep_conv_5x5, strongest from 3 and 1
        for i, s in enumerate([1.0, 4.0, 2.0, 5.0, 3.0]):
            a[9 + i, PRIMITIVES.index("sep_conv_5x5")] = s
        a[9 + 3, PRIMITIVES.index("none")] = 50.0  # none on the strongest edge: strength drops to its best other op
        a[9 + 3, PRIMITIVES.index("dil_conv_3x3")] = 4.5
    arch = net.derive()
    assert arch.node_pairs("normal")[3] == (("sep_conv_5x5", 1), ("sep_conv_5x5", 4))
    # a second-ranked edge whose best non-none op is dil_conv_3x3
    with torch.no_grad():
        net.alphas["normal"][9 + 3, PRIMITIVES.index("none")] = 0.0
        net.alphas["normal"][9 + 3, PRIMITIVES.index("sep_conv_5x5")] = -5.0
    assert net.derive().node_pairs("normal")[3] == (("sep_conv_5x5", 1), ("dil_conv_3x3", 3))


def test_derive_rejects_bad_arguments(darts_net, dsara_net):
    net = darts_net
    with pytest.raises(ConfigError, match="'none'"):
        net.derive(exclude=())
    with pytest.raises(ConfigError, match="conv_9x9"):
        net.derive(exclude=("none", "conv_9x9"))
    with pytest.raises(ConfigError, match="leaves no operation"):
        net.derive(exclude=PRIMITIVES)
    with pytest.raises(ConfigError, match="inputs_per_node"):
        net.derive(inputs_per_node=3)
    # without `none` in the primitives the default exclude is harmless
    arch = dsara_net.derive()
    assert arch.primitives == DSARA_PRIMITIVES and set(arch.cells) == {"accurate", "robust", "reduce"}


# --------------------------------------------------------------------------- architecture


def test_arch_json_and_genotype_round_trip():
    arch = DartsArch.random(("accurate", "reduce", "robust"), 7, primitives=DSARA_PRIMITIVES)
    assert DartsArch.from_json(arch.to_json()) == arch
    assert DartsArch.from_json(json.loads(arch.to_json())) == arch
    assert DartsArch.from_darts_genotype(arch.to_darts_genotype(), primitives=DSARA_PRIMITIVES) == arch
    assert pickle.loads(pickle.dumps(arch)) == arch
    assert DartsArch.from_json(arch.to_json()) != DartsArch(arch.cells)  # other primitives
    assert len({arch, DartsArch.from_json(arch.to_json())}) == 1
    v2 = DartsArch.from_darts_genotype(DARTS_V2)
    assert v2.cell_types == ("normal", "reduce")
    assert v2.node_pairs("normal")[2] == (("skip_connect", 0), ("sep_conv_3x3", 1))  # sorted by input
    assert v2.edge_ops("reduce")[EDGES.index((5, 2))] == "skip_connect"
    assert sum(op != "none" for op in v2.edge_ops("normal")) == 8
    # pair order within a node carries no meaning
    swapped = {t: list(p) for t, p in v2.cells.items()}
    swapped["normal"][0], swapped["normal"][1] = swapped["normal"][1], swapped["normal"][0]
    assert DartsArch(swapped) == v2 and hash(DartsArch(swapped)) == hash(v2)


def test_random_archs_are_valid_and_seeded():
    a = DartsArch.random(("normal", "reduce"), 1)
    assert a == DartsArch.random(("normal", "reduce"), random.Random(1))
    archs = {DartsArch.random(("normal", "reduce"), s) for s in range(20)}
    assert len(archs) == 20
    for arch in archs:
        for t in arch.cells:
            for j, node in zip(range(2, 6), arch.node_pairs(t)):
                assert len({i for _, i in node}) == 2 and all(0 <= i < j and op != "none" for op, i in node)


GOOD = [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["dil_conv_3x3", 2],
        ["max_pool_3x3", 1], ["sep_conv_5x5", 3], ["avg_pool_3x3", 0], ["dil_conv_5x5", 4]]


def _with(index, pair):
    pairs = [list(p) for p in GOOD]
    pairs[index] = pair
    return {"cells": {"normal": pairs}}


@pytest.mark.parametrize("data,match", [
    (_with(3, ["conv_7x7", 2]), r"'conv_7x7'.*Valid operations"),
    (_with(0, ["none", 0]), "'none' cannot be chosen"),
    (_with(1, ["sep_conv_3x3", 2]), r"input 2 is out of range; node 2 takes inputs in \[0, 1\]"),
    (_with(7, ["sep_conv_3x3", 5]), r"input 5 is out of range; node 5"),
    (_with(3, ["sep_conv_3x3", 0]), "repeat"),
    (_with(3, ["sep_conv_3x3", True]), "out of range"),
    (_with(3, "sep_conv_3x3"), "pair"),
    ({"cells": {"normal": GOOD[:7]}}, "needs 8"),
    ({"cells": {"normal": GOOD}, "genotype": 1}, "genotype"),
    ({"cells": {"normal": GOOD}, "space": "dense_rob"}, "dense_rob"),
    ({"cells": {"normal": GOOD}, "primitives": ["none", "warp_op"]}, "warp_op"),
    ({"cells": {"nor mal": GOOD}}, "nor mal"),
    ({"cells": {}}, "non-empty"),
    ({"cells": {"normal": GOOD}, "inputs_per_node": 3}, "inputs_per_node"),
    ("{not json", "does not parse"),
])
def test_arch_errors_name_the_value(data, match):
    with pytest.raises(ArchitectureError, match=match):
        DartsArch.from_json(data if isinstance(data, str) else json.dumps(data))


def test_genotype_errors():
    with pytest.raises(ArchitectureError, match="expected 'Genotype"):
        DartsArch.from_darts_genotype("normal=[]")
    with pytest.raises(ArchitectureError, match="concat"):
        DartsArch.from_darts_genotype(DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"))


def test_sample_round_trip_and_choices():
    types = ("accurate", "reduce", "robust")
    choices = darts_choices(types, DSARA_PRIMITIVES)
    assert len(choices) == 3 * 4 * 3
    assert choices["accurate_n2_inputs"] == ("0,1",)
    assert choices["robust_n5_inputs"] == ("0,1", "0,2", "0,3", "0,4", "1,2", "1,3", "1,4", "2,3", "2,4", "3,4")
    assert choices["reduce_n3_op1"] == DSARA_PRIMITIVES
    assert "none" not in darts_choices(("normal",))["normal_n2_op0"]
    arch = DartsArch.random(types, 3, primitives=DSARA_PRIMITIVES)
    sample = arch.to_sample()
    assert set(sample) == set(choices) and all(sample[k] in choices[k] for k in sample)
    assert DartsArch.from_sample(sample, types, primitives=DSARA_PRIMITIVES) == arch
    with pytest.raises(ArchitectureError, match="Missing labels"):
        DartsArch.from_sample({k: v for k, v in sample.items() if k != "robust_n4_op1"}, types,
                              primitives=DSARA_PRIMITIVES)
    with pytest.raises(ArchitectureError, match="Unknown label 'accurate_n6_op0'"):
        DartsArch.from_sample({**sample, "accurate_n6_op0": "max_pool_3x3"}, types, primitives=DSARA_PRIMITIVES)
    with pytest.raises(ArchitectureError, match="must name 2 inputs"):
        DartsArch.from_sample({**sample, "accurate_n4_inputs": "3"}, types, primitives=DSARA_PRIMITIVES)


# --------------------------------------------------------------------------- discrete network


def _conv_only_flops(layout: DartsLayout, arch: DartsArch, C: int, num_classes: int = 10, in_ch: int = 1,
                     size: int = 8, stem_multiplier: int = 3) -> int:
    """FLOPs of a network whose ops are pools / identities: stem, pre-processing, strided
    skips (factorized reduce) and the classifier (2 per multiply-add)."""
    c_stem = stem_multiplier * C
    total = 2 * in_ch * c_stem * 9 * size * size
    c_pp, c_p, h_pp, h_p = c_stem, c_stem, size, size
    for p, c in enumerate(layout.channels(C)):
        red, red_prev = layout.is_reduction(p), layout.is_reduction(p - 1)
        total += 2 * c_pp * c * h_p * h_p  # 1x1 conv at h_p, or factorized reduce from h_pp to h_p
        total += 2 * c_p * c * h_p * h_p
        h_out = -(-h_p // 2) if red else h_p
        for op, i in arch.cells[layout.cells[p]]:
            if op == "skip_connect" and red and i < 2:
                total += 2 * c * c * h_out * h_out
        c_pp, c_p, h_pp, h_p = c_p, 4 * c, h_p, h_out
    return total + 2 * c_p * num_classes


def test_discrete_network_runs_and_counts_flops(dsara_net):
    lay = dsara_layout(5)
    cheap = DartsArch({t: [("max_pool_3x3" if t != "reduce" else "skip_connect", i) for j in range(2, 6)
                           for i in (0, 1)] for t in lay.cell_types})
    torch.manual_seed(0)
    net = DartsNetwork(cheap, layout=lay, **TINY)
    assert net(torch.rand(2, *SHAPE)).shape == (2, 10)
    assert count_flops(net, SHAPE) == _conv_only_flops(lay, cheap, 4)
    heavy = DartsArch({t: [("sep_conv_5x5", i) for j in range(2, 6) for i in (0, 1)] for t in lay.cell_types})
    heavy_net = DartsNetwork(heavy, layout=lay, **TINY)
    assert count_flops(net, SHAPE) < count_flops(heavy_net, SHAPE) < count_flops(dsara_net, SHAPE)
    # affine BN in the evaluation network
    assert all(m.affine for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # from JSON, and through the DSARA helper
    assert count_flops(DartsNetwork(json.loads(cheap.to_json()), layout=lay, **TINY), SHAPE) == \
        count_flops(net, SHAPE)
    assert dsara_network(cheap, num_classes=10, num_cells=5, init_channels=4, in_channels=1,
                         input_size=8).layout == lay


def test_discrete_network_drop_path_and_auxiliary():
    lay = DartsLayout.darts(5)
    arch = DartsArch.random(lay.cell_types, 2)
    torch.manual_seed(0)
    net = DartsNetwork(arch, layout=lay, drop_path_prob=0.5, auxiliary=True, **TINY)
    x = torch.rand(6, *SHAPE)
    net.train()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == aux.shape == (6, 10)
    assert isinstance(net(x), torch.Tensor)
    net.eval()
    assert net.forward_with_aux(x)[1] is None
    assert torch.equal(net(x), net(x))  # no path dropout in eval mode
    plain = DartsNetwork(arch, layout=lay, **TINY)
    assert count_flops(net, SHAPE) == count_flops(plain, SHAPE)  # the auxiliary head is not counted
    # DARTS's auxiliary head on CIFAR sizes: after the 2nd reduction of a 20-cell net the map is 8x8
    big = DartsNetwork(arch, layout=DartsLayout.darts(8), init_channels=4, num_classes=10, auxiliary=True)
    assert big.aux_position == 5
    big.train()
    assert big.forward_with_aux(torch.rand(2, 3, 32, 32))[1].shape == (2, 10)
    with pytest.raises(ConfigError, match="drop_path_prob"):
        net.drop_path_prob = 1.0
    with pytest.raises(ArchitectureError, match="missing"):
        DartsNetwork(arch, layout=dsara_layout(5), **TINY)


def test_drop_path_zeroes_whole_samples():
    torch.manual_seed(0)
    out = drop_path(torch.ones(400, 2, 3, 3), 0.5)
    per_sample = out.flatten(1)
    assert torch.all((per_sample == 0).all(dim=1) | (per_sample == 2).all(dim=1))
    assert 0.35 < float((per_sample[:, 0] == 0).float().mean()) < 0.65


# --------------------------------------------------------------------------- settings and NNI space


def test_build_darts_space_from_settings():
    net = build_darts_space({"name": "darts", "num_cells": 3}, INFO, 4)
    assert isinstance(net, DartsSupernet) and net.primitives == PRIMITIVES
    assert net.cell_types == ("normal", "reduce") and net(torch.rand(2, *SHAPE)).shape == (2, 10)
    ds = build_darts_space({"name": "dsara", "num_cells": 4, "filters": "1-2-4", "drop_path_prob": 0.2}, INFO, 4)
    assert ds.primitives == DSARA_PRIMITIVES and ds.layout.stage_channels(4) == (4, 8, 16)
    arch = ds.derive()
    final = build_darts_space({"name": "dsara", "num_cells": 4, "filters": "1-2-4", "drop_path_prob": 0.2,
                               "auxiliary": True}, INFO, 4, arch=arch.to_json())
    assert isinstance(final, DartsNetwork) and final.arch == arch and final.drop_path_prob == 0.2
    assert final.auxiliary_head is not None
    with pytest.raises(ConfigError, match="'num_cels'"):
        build_darts_space({"name": "darts", "num_cels": 8}, INFO, 4)
    with pytest.raises(ConfigError, match="'nasnet'"):
        build_darts_space({"name": "nasnet"}, INFO, 4)
    with pytest.raises(ConfigError, match="'Q'"):
        build_darts_space({"name": "dsara", "placement": "A-Q-R"}, INFO, 4)


def test_nni_space_samples_and_freezes():
    from nni.mutable import Categorical
    from nni.nas.space import model_context

    from nni_robust.spaces import DartsSpace
    from nni_robust.spaces.dsara import dsara_space

    lay = dsara_layout(5)
    space = dsara_space(num_cells=5, **TINY)
    mutables = space.simplify()
    choices = darts_choices(lay.cell_types, DSARA_PRIMITIVES)
    assert list(mutables) == list(choices)
    assert all(isinstance(m, Categorical) and tuple(m.values) == choices[k] for k, m in mutables.items())
    rng = random.Random(4)
    sample = {label: rng.choice(m.values) for label, m in mutables.items()}
    arch = DartsArch.from_sample(sample, lay.cell_types, primitives=DSARA_PRIMITIVES)
    frozen = space.freeze(sample)
    assert frozen.arch == arch
    assert frozen(torch.rand(2, *SHAPE)).shape == (2, 10)
    assert count_flops(frozen, SHAPE) == count_flops(DartsNetwork(arch, layout=lay, **TINY), SHAPE)
    darts = DartsSpace(num_cells=3, **TINY)
    assert set(darts.simplify()) == set(darts_choices(("normal", "reduce")))
    d_sample = DartsArch.random(("normal", "reduce"), 9).to_sample()
    with model_context(d_sample):
        rebuilt = DartsSpace(num_cells=3, **TINY)
    assert rebuilt.arch == DartsArch.random(("normal", "reduce"), 9)
    with pytest.raises(ConfigError, match="not both"):
        DartsSpace(layout="darts", num_cells=3, **TINY)
    custom = DartsSpace(num_cells=3, placement="first-x-x", filters=[1, 2, 2], **TINY)
    assert custom.network.layout.cell_types == ("first", "reduce")
    assert custom.network.layout.stage_channels(4) == (4, 8, 8)


def test_darts_v2_has_its_published_size():
    """DARTS Table 1: DARTS (2nd order) evaluated with 20 cells, C = 36 has 3.3M parameters
    (counted without the auxiliary head, as the DARTS code does)."""
    torch.manual_seed(0)
    net = DartsNetwork(DartsArch.from_darts_genotype(DARTS_V2), layout=DartsLayout.darts(20), init_channels=36,
                       num_classes=10, auxiliary=True)
    params = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("auxiliary_head"))
    assert round(params / 1e6, 1) == 3.3
