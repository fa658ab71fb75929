"""The ABanditNAS search space (spaces/abandit.py) and its defence operations (spaces/defense_ops.py)."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from nni_robust.data import DatasetInfo
from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.flops import count_flops
from nni_robust.spaces.abandit import (ABANDIT_PRESETS, CELL_TYPES, EDGES, PRIMITIVES, ABanditArch, ABanditCell,
                                       ABanditNetwork, ABanditSupernet, abandit_arch_from_sample, abandit_choices,
                                       abandit_layout, build_abandit_preset, build_abandit_space, edge_label,
                                       get_abandit_preset, layout_from_json, layout_to_json)
from nni_robust.spaces.defense_ops import (DenoisingBlock, GaborBlock, GaborConv2d, dot_product_denoise,
                                           gabor_kernel)
from nni_robust.spaces.ops import OPS

TINY = dict(init_channels=4, num_classes=10, in_channels=1, input_size=8)
INFO = DatasetInfo("digits", 10, 1, 8, (0.5,), (0.25,), flip=False)


def n_params(module: torch.nn.Module, skip_aux: bool = True) -> int:
    return sum(p.numel() for name, p in module.named_parameters()
               if not (skip_aux and name.startswith("auxiliary_head")))


def mixed_arch() -> ABanditArch:
    """Every op and every input position appears at least once."""
    rows = [
        [("sep_conv_3x3", 0), ("gabor_3x3", 1), ("denoising", 0), ("dil_conv_5x5", 3)],
        [("max_pool_3x3", 0), ("avg_pool_3x3", 0), ("skip_connect", 2), ("sep_conv_5x5", 1)],
        [("gabor_3x3", 0), ("skip_connect", 0), ("dil_conv_3x3", 2), ("denoising", 0)],
        [("denoising", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 1), ("gabor_3x3", 2)],
        [("skip_connect", 0), ("denoising", 1), ("gabor_3x3", 0), ("avg_pool_3x3", 3)],
        [("dil_conv_3x3", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 2), ("skip_connect", 0)],
    ]
    return ABanditArch(dict(zip(CELL_TYPES, rows)))


# --------------------------------------------------------------------------- layout and labels


def test_layout_six_types_reductions_at_thirds():
    search = abandit_layout(6)
    assert search.cells == CELL_TYPES and search.reductions == (2, 4)
    assert search.multipliers == (1, 1, 2, 2, 4, 4)
    cifar = abandit_layout(10)
    assert cifar.cells == ("c0", "c0", "c1", "c2", "c3", "c3", "c4", "c5", "c5", "c5")
    assert cifar.reductions == (3, 6) and cifar.cell_types == CELL_TYPES
    assert cifar.reduction_types == ("c2", "c4")
    assert abandit_layout(3).cells == ("c0", "c2", "c4")  # fewer cells: some types unused
    assert layout_from_json(layout_to_json(cifar)) == cifar
    assert layout_from_json("abandit") == search
    with pytest.raises(ConfigError, match="num_cells"):
        abandit_layout(2)


def test_edges_and_choices():
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4))
    assert len(PRIMITIVES) == 9 and all(op in OPS for op in PRIMITIVES)
    node = abandit_choices(form="node")
    assert len(node) == 6 * 7  # 4 op labels + 3 input labels (node 1 always takes B0) per cell type
    assert node["c0_n3_in"] == (0, 1, 2) and node["c5_n1_op"] == PRIMITIVES and "c0_n1_in" not in node
    edge = abandit_choices(form="edge")
    assert len(edge) == 60 and list(edge)[:3] == ["c0_e01", "c0_e02", "c0_e12"] and edge_label("c3", 2, 4) in edge
    with pytest.raises(ConfigError, match="form"):
        abandit_choices(form="cell")


# --------------------------------------------------------------------------- architecture


def test_arch_json_sample_pickle_round_trip():
    arch = mixed_arch()
    assert ABanditArch.from_json(arch.to_json()) == arch
    assert ABanditArch.from_json(json.loads(arch.to_json())) == arch
    assert ABanditArch.from_sample(arch.to_sample()) == arch
    assert pickle.loads(pickle.dumps(arch)) == arch and hash(pickle.loads(pickle.dumps(arch))) == hash(arch)
    assert arch.edge_ops("c0") == ("sep_conv_3x3", None, "gabor_3x3", "denoising", None, None,
                                   None, None, None, "dil_conv_5x5")
    rand = ABanditArch.random(rng=3)
    assert ABanditArch.from_json(rand.to_json()) == rand and rand == ABanditArch.random(rng=3)


@pytest.mark.parametrize("cells, match", [
    ({"c0": [("sep_conv_3x3", 0)] * 3}, r"cells\['c0'\] must list 4"),
    ({"c0": [("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("conv_3x3", 0), ("sep_conv_3x3", 0)]},
     r"cells\['c0'\]\[2\] \(node 3\): unknown operation 'conv_3x3'"),
    ({"c0": [("sep_conv_3x3", 0), ("sep_conv_3x3", 2), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0)]},
     r"cells\['c0'\]\[1\] \(node 2\): input 2 is out of range"),
    ({"c0": [("sep_conv_3x3", 0), "sep_conv_3x3", ("sep_conv_3x3", 0), ("sep_conv_3x3", 0)]},
     r"cells\['c0'\]\[1\] \(node 2\): expected an \(op, input\) pair"),
    ({"0bad": [("sep_conv_3x3", 0)] * 4}, "'0bad'"),
])
def test_malformed_arch_names_the_key(cells, match):
    with pytest.raises(ArchitectureError, match=match):
        ABanditArch(cells)


def test_malformed_json_and_samples_name_the_key():
    with pytest.raises(ArchitectureError, match=r"Unknown keys \['genotype'\]"):
        ABanditArch.from_json({"cells": {"c0": [["sep_conv_3x3", 0]] * 4}, "genotype": 1})
    with pytest.raises(ArchitectureError, match="'space' is 'darts'"):
        ABanditArch.from_json({"space": "darts", "cells": {}})
    sample = mixed_arch().to_sample()
    bad = dict(sample, c1_n3_in=3)
    with pytest.raises(ArchitectureError, match=r"c1_n3_in must be an int in \[0, 2\], but got 3"):
        ABanditArch.from_sample(bad)
    bad = dict(sample, c4_n2_op="gabor")
    with pytest.raises(ArchitectureError, match="c4_n2_op must be one of"):
        ABanditArch.from_sample(bad)
    missing = {k: v for k, v in sample.items() if k != "c2_n4_in"}
    with pytest.raises(ArchitectureError, match="Missing labels.*c2_n4_in"):
        ABanditArch.from_sample(missing)
    with pytest.raises(ArchitectureError, match="Unknown label 'c0_n2_input'.*'c0_n2_in'"):
        ABanditArch.from_sample(dict(sample, c0_n2_input=0))
    with pytest.raises(ArchitectureError, match="c0_n1_in must be 0"):
        ABanditArch.from_sample(dict(sample, c0_n1_in=1))


def test_from_edge_ops_keeps_the_best_scored_edge_per_node():
    ops = {edge_label("c0", i, j): PRIMITIVES[(i + j) % 9] for i, j in EDGES}
    ops["c0_e13"] = None  # absent: never kept, even with the best score
    scores = {label: 0.0 for label in ops}
    scores.update({"c0_e12": 0.9, "c0_e02": 0.1, "c0_e13": 5.0, "c0_e23": 0.5, "c0_e24": 0.3, "c0_e34": 0.3})
    arch = ABanditArch.from_edge_ops(ops, scores)
    # node 1: only (0, 1); node 2: (1, 2) beats (0, 2); node 3: (2, 3) (e13 absent); node 4: tie -> earlier input 2
    assert arch.cells["c0"] == ((PRIMITIVES[1], 0), (PRIMITIVES[3], 1), (PRIMITIVES[5], 2), (PRIMITIVES[6], 2))
    with pytest.raises(ArchitectureError, match=r"scores\['c0_e01'\]"):
        ABanditArch.from_edge_ops(ops, {})
    none_in = dict(ops, c0_e01=None)
    with pytest.raises(ArchitectureError, match="node 1 has no incoming edge"):
        ABanditArch.from_edge_ops(none_in, scores)


# --------------------------------------------------------------------------- defence operations


def test_gabor_kernel_matches_hand_computed_values():
    conv = GaborConv2d(2)
    with torch.no_grad():
        conv.t.fill_(math.log(1 / 3))   # theta = 2 pi sigmoid(t) = 2 pi / 4 = pi / 2
        conv.s.fill_(math.log(3))       # sigma = 0.1 + 0.4 * 0.75 = 0.4
        conv.l.fill_(0.0)               # lambda = 0.001 + 0.999 / 2 = 0.5005
        conv.g.fill_(1.0)               # gamma = 1.5
        conv.psi.fill_(0.1)
    params = conv.gabor_params()
    assert params["theta"][0].item() == pytest.approx(math.pi / 2)
    assert params["sigma"][0].item() == pytest.approx(0.4)
    assert params["lam"][0].item() == pytest.approx(0.5005)
    assert params["gamma"][0].item() == pytest.approx(1.5)
    w = conv.dense_weight().double()
    assert w.shape == (2, 2, 3, 3) and torch.equal(w[:, 0], w[:, 1])  # one kernel per output channel
    # theta = pi/2: x' = y, y' = -x. (x=0, y=1) -> x'=1, y'=0:
    #   exp(-0.5 / 0.16) * cos(2 pi / 0.5005 + 0.1) = exp(-3.125) * cos(12.6538) = 0.043937 * 0.996179
    assert w[0, 0, 2, 1].item() == pytest.approx(0.0437691, rel=1e-4)  # row y+1 = 2, column x+1 = 1
    # (x=1, y=0) -> x'=0, y'=-1: exp(-0.5 * 1 / (0.4/1.5)^2) * cos(0.1) = exp(-7.03125) * 0.995004
    assert w[0, 0, 1, 2].item() == pytest.approx(8.79411e-4, rel=1e-4)
    # (0, 0): cos(psi)
    assert w[0, 0, 1, 1].item() == pytest.approx(math.cos(0.1), rel=1e-6)
    # the functional form agrees with the module
    direct = gabor_kernel(**{k: v.double() for k, v in params.items()})
    assert torch.allclose(direct, conv.kernels().double(), atol=1e-7)


def test_gabor_init_ranges_and_conv():
    torch.manual_seed(0)
    conv = GaborConv2d(64)
    assert torch.all(conv.g == 0) and 0 <= conv.l.min() and conv.l.max() <= 1
    assert conv.psi.std().item() < 0.05
    p = conv.gabor_params()
    assert 0.1 <= p["sigma"].min() and p["sigma"].max() <= 0.5 and 0.001 <= p["lam"].min() <= p["lam"].max() <= 1
    x = torch.randn(2, 64, 5, 5)
    assert torch.allclose(conv(x), F.conv2d(x, conv.dense_weight(), padding=1), atol=1e-5)
    assert sorted(name for name, _ in conv.named_parameters()) == ["g", "l", "psi", "s", "t"]
    # a Conv2d, so the project's FLOPs count (conv + linear hooks) includes it: 2 * 64 * 64 * 9 * 5 * 5
    assert count_flops(conv, (64, 5, 5)) == 2 * 64 * 64 * 9 * 25


@pytest.mark.parametrize("block_cls", [GaborBlock, DenoisingBlock])
def test_defense_blocks_are_the_identity_at_initialisation(block_cls):
    torch.manual_seed(0)
    block = block_cls(6)
    x = torch.randn(3, 6, 5, 5)
    for mode in (True, False):
        block.train(mode)
        assert torch.equal(block(x), x)
    assert torch.all(block.bn.weight == 0) and torch.all(block.bn.bias == 0)
    block.train()
    block(x).sum().backward()
    assert block.bn.weight.grad is not None and block.bn.weight.grad.abs().sum() > 0  # learns away from 0


def test_denoising_matches_a_direct_loop():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    b, c, h, w = x.shape
    expected = torch.zeros_like(x)
    for n in range(b):
        positions = [(r, q) for r in range(h) for q in range(w)]
        for (r, q) in positions:
            xi = x[n, :, r, q]
            acc = torch.zeros(c, dtype=torch.float64)
            for (r2, q2) in positions:
                xj = x[n, :, r2, q2]
                acc += float((xi * xj).sum()) * xj
            expected[n, :, r, q] = acc / (c * h * w)
    assert torch.allclose(dot_product_denoise(x), expected, atol=1e-12)


def test_strided_defense_blocks_downsample_the_sum_bilinearly():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 8, 8)
    block = DenoisingBlock(4, stride=2).eval()
    # identity at init, then bilinear x0.5 (align_corners=False) = 2x2 average
    assert torch.allclose(block(x), F.avg_pool2d(x, 2), atol=1e-6)
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    y = x + block.bn(dot_product_denoise(x))
    assert torch.allclose(block(x), F.interpolate(y, scale_factor=0.5, mode="bilinear", align_corners=False),
                          atol=1e-6)
    odd = torch.randn(1, 4, 7, 7)
    assert GaborBlock(4, stride=2)(odd).shape == (1, 4, 4, 4)  # ceil(7 / 2), like the strided convs
    assert OPS["sep_conv_3x3"](4, 2, True)(odd).shape == (1, 4, 4, 4)


# --------------------------------------------------------------------------- cells, supernet, network


def test_cell_nodes_sum_their_incoming_edges():
    torch.manual_seed(0)
    cell = ABanditCell(3, 2, reduction=False, candidates=[PRIMITIVES] * 10, affine=False).eval()
    x = torch.randn(2, 3, 4, 4)
    b0 = cell.preprocess(x)
    out = cell(x, ["skip_connect"] * 10)  # every edge the identity
    assert torch.allclose(out, torch.cat([b0, 2 * b0, 4 * b0, 8 * b0], dim=1), atol=1e-6)
    chain = [None] * 10
    for e, edge in enumerate(EDGES):
        if edge[1] == edge[0] + 1:
            chain[e] = "skip_connect"
    assert torch.allclose(cell(x, chain), torch.cat([b0] * 4, dim=1))


def test_supernet_runs_edge_samples_and_matches_the_discrete_network():
    torch.manual_seed(0)
    sup = ABanditSupernet(num_cells=6, affine=True, **TINY)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ArchitectureError, match="set_arch"):
        sup(x)
    edge_sample = {label: ops[i % 9] for i, (label, ops) in enumerate(sup.choices("edge").items())}
    sup.set_arch(edge_sample)
    assert sup(x).shape == (2, 10) and sup.arch is None and sup.active["c1"][0] == PRIMITIVES[10 % 9]
    arch = mixed_arch()
    net = ABanditNetwork(arch, num_cells=6, **TINY).eval()
    sup_keys = dict(sup.state_dict())
    assert set(net.state_dict()) <= set(sup_keys)  # the final network's weights are a subset
    net.load_state_dict({k: sup_keys[k] for k in net.state_dict()})
    sup.set_arch(arch)
    sup.eval()
    assert sup.arch == arch and torch.allclose(sup(x), net(x), atol=1e-5)
    sup.set_arch(arch.to_sample())
    assert torch.allclose(sup(x), net(x), atol=1e-5)
    sup.set_arch({t: arch.edge_ops(t) for t in CELL_TYPES})
    assert torch.allclose(sup(x), net(x), atol=1e-5)


def test_supernet_set_arch_errors():
    sup = ABanditSupernet(num_cells=6, **TINY)
    good = {label: "skip_connect" for label in sup.choices("edge")}
    with pytest.raises(ArchitectureError, match="Missing labels.*c5_e34"):
        sup.set_arch({k: v for k, v in good.items() if k != "c5_e34"})
    with pytest.raises(ArchitectureError, match="Label c1_e02 must be one of"):
        sup.set_arch(dict(good, c1_e02="conv"))
    with pytest.raises(ArchitectureError, match="node 2 has no incoming edge"):
        sup.set_arch(dict(good, c3_e02=None, c3_e12=None))
    with pytest.raises(ArchitectureError, match="Unknown label 'c0_e45'"):
        sup.set_arch(dict(good, c0_e45="skip_connect"))
    small = ABanditSupernet(num_cells=6, primitives=("skip_connect", "max_pool_3x3"), **TINY)
    with pytest.raises(ArchitectureError, match="not among this supernet's primitives"):
        small.set_arch(mixed_arch())


def test_network_aux_head_drop_path_and_reduction_shapes():
    torch.manual_seed(0)
    net = ABanditNetwork(mixed_arch(), num_cells=6, auxiliary=True, drop_path_prob=0.2, **TINY)
    x = torch.rand(4, 1, 8, 8)
    net.train()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == aux.shape == (4, 10) and net.aux_position == 4
    net.eval()
    assert net.forward_with_aux(x)[1] is None and torch.allclose(net(x), net.forward_with_aux(x)[0])
    with pytest.raises(ConfigError, match="drop_path_prob"):
        net.drop_path_prob = 1.0
    with pytest.raises(ArchitectureError, match=r"lacks cell types \['c5'\]"):
        ABanditNetwork(ABanditArch({t: mixed_arch().cells[t] for t in CELL_TYPES[:5]}), num_cells=6, **TINY)
    with pytest.raises(ConfigError, match="num_cells"):
        ABanditNetwork(mixed_arch(), **TINY)


def test_build_abandit_space_settings():
    sup = build_abandit_space({"name": "abandit", "num_cells": 6}, INFO, 4)
    assert isinstance(sup, ABanditSupernet) and sup.layout.num_cells == 6
    net = build_abandit_space({"name": "abandit", "num_cells": 6, "auxiliary": True, "affine": False}, INFO, 4,
                              mixed_arch().to_json())
    assert isinstance(net, ABanditNetwork) and net.auxiliary_head is not None
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="Unknown key 'cells'"):
        build_abandit_space({"name": "abandit", "cells": 6}, INFO, 4)
    assert abandit_arch_from_sample(mixed_arch().to_sample(), {"name": "abandit"}) == mixed_arch()


# --------------------------------------------------------------------------- presets


def _hand_count_without_edge_params(num_cells: int, c: int, in_ch: int, classes: int) -> int:
    """Stem conv3x3 + BN, one 1x1 ReLU-conv-BN per cell, linear classifier (no op parameters)."""
    total = in_ch * 3 * c * 9 + 2 * 3 * c
    r1, r2 = num_cells // 3, 2 * num_cells // 3
    c_prev, c_cell = 3 * c, c
    for p in range(num_cells):
        if p in (r1, r2):
            c_cell *= 2
        total += c_prev * c_cell + 2 * c_cell
        c_prev = 4 * c_cell
    return total + c_prev * classes + classes


def _hand_op_params(op: str, c: int, strided: bool) -> int:
    """Parameters of one edge op on ``c`` channels with affine BN (2 per BN channel)."""
    dw_pw_bn = {3: c * 9 + c * c + 2 * c, 5: c * 25 + c * c + 2 * c}  # depthwise + pointwise + BN
    return {"sep_conv_3x3": 2 * dw_pw_bn[3], "sep_conv_5x5": 2 * dw_pw_bn[5], "dil_conv_3x3": dw_pw_bn[3],
            "dil_conv_5x5": dw_pw_bn[5], "gabor_3x3": 5 * c + 2 * c, "denoising": 2 * c,
            "skip_connect": c * c + 2 * c if strided else 0,  # factorized reduce: two 1x1 convs to c/2 + BN
            "max_pool_3x3": 0, "avg_pool_3x3": 0}[op]


def test_presets_build_the_published_network_shapes():
    cifar, mnist = get_abandit_preset("abanditnas-cifar10"), get_abandit_preset("ABanditNAS-MNIST")
    assert (cifar.num_cells, cifar.init_channels, cifar.auxiliary) == (10, 48, True)
    assert (mnist.num_cells, mnist.init_channels, mnist.auxiliary) == (6, 16, False)
    with pytest.raises(ConfigError, match="genotypes are not public"):
        cifar.build()
    pools = ABanditArch({t: [("max_pool_3x3", 0)] * 4 for t in CELL_TYPES})  # parameter-free edges
    net = build_abandit_preset("ABanditNAS-CIFAR10", pools)
    assert len(net.cells) == 10 and net.init_channels == 48 and net.auxiliary_head is not None
    assert net.stem[0].out_channels == 144 and net.classifier.in_features == 4 * 4 * 48
    assert n_params(net) == _hand_count_without_edge_params(10, 48, 3, 10) == 647_866
    seps = ABanditArch({t: [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2), ("sep_conv_3x3", 3)]
                        for t in CELL_TYPES})
    assert n_params(build_abandit_preset("ABanditNAS-CIFAR10", seps)) == 2_209_594  # aux head excluded
    layout, arch = abandit_layout(10), mixed_arch()
    ops_params = sum(_hand_op_params(op, c, layout.is_reduction(p) and i == 0)
                     for p, (t, c) in enumerate(zip(layout.cells, layout.channels(48))) for op, i in arch.cells[t])
    assert n_params(build_abandit_preset("ABanditNAS-CIFAR10", arch)) == 647_866 + ops_params == 1_133_722
    small = build_abandit_preset("ABanditNAS-MNIST", pools)
    assert len(small.cells) == 6 and small.auxiliary_head is None and small.input_shape == (1, 28, 28)
    assert n_params(small) == _hand_count_without_edge_params(6, 16, 1, 10) == 36_058
    assert n_params(build_abandit_preset("ABanditNAS-MNIST", seps)) == 141_786
    small.eval()
    assert small(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    net.train()
    logits, aux = net.forward_with_aux(torch.rand(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    assert set(ABANDIT_PRESETS) == {"ABanditNAS-CIFAR10", "ABanditNAS-MNIST"}


# --------------------------------------------------------------------------- NNI model space


def test_nni_space_sample_builds_the_same_network_as_the_arch():
    from nni_robust.spaces import abandit

    space_cls = abandit.ABanditSpace
    space = space_cls(num_cells=6, **TINY)
    simplified = space.simplify()
    assert set(simplified) == set(abandit_choices(CELL_TYPES, form="node"))
    assert list(simplified["c2_n4_in"].values) == [0, 1, 2, 3]
    arch = mixed_arch()
    frozen = space.freeze(arch.to_sample())
    assert frozen.arch == arch
    direct = ABanditNetwork(arch, num_cells=6, **TINY)
    assert {k: v.shape for k, v in frozen.network.state_dict().items()} == \
        {k: v.shape for k, v in direct.state_dict().items()}
    direct.load_state_dict(frozen.network.state_dict())
    frozen.eval()
    direct.eval()
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(frozen(x), direct(x), atol=1e-6)
