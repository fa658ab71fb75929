"""Tests of nni_robust.spaces: ops, the dense robust cell space, presets, the NNI model space."""

from __future__ import annotations

import json
import pickle
import random
from importlib import resources

import pytest
import torch
from torch import nn

from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.flops import count_flops, count_params
from nni_robust.spaces import (EDGES, NUM_EDGES, PRIMITIVES, DenseRobArch, DenseRobNetwork, Layout,
                               build_preset, dense_rob_flops, edge_labels, get_preset, list_presets)
from nni_robust.spaces.ops import FactorizedReduce, ResSepConv, SepConv, build_op
from nni_robust.spaces.presets import UNAVAILABLE

TINY = dict(init_channels=4, in_channels=1, input_size=8)  # the digits dataset: 1 x 8 x 8
TINY_SHAPE = (1, 8, 8)


def tiny_net(arch=None, layout=None, **kw):
    """A tiny network (the supernet of ``layout`` when ``arch`` is None)."""
    torch.manual_seed(0)
    if arch is None and layout is None:
        layout = "cellwise"
    return DenseRobNetwork(arch, layout=layout, **{**TINY, **kw})


# --------------------------------------------------------------------------- ops


def test_primitives_order():
    assert PRIMITIVES == ("none", "skip_connect", "sep_conv_3x3", "res_sep_conv_3x3")
    assert len(EDGES) == NUM_EDGES == 14
    assert EDGES[:5] == ((2, 0), (2, 1), (3, 0), (3, 1), (3, 2)) and EDGES[-1] == (5, 4)


@pytest.mark.parametrize("size", [8, 7])
def test_strided_ops_halve_resolution(size):
    x = torch.randn(2, 6, size, size)
    half = (size + 1) // 2
    for name in ("skip_connect", "sep_conv_3x3", "res_sep_conv_3x3", "none"):
        assert build_op(name, 6, 2)(x).shape == (2, 6, half, half), name
        assert build_op(name, 6, 1)(x).shape == x.shape, name
    assert isinstance(build_op("skip_connect", 6, 2), FactorizedReduce)
    assert torch.equal(build_op("skip_connect", 6, 1)(x), x)


def test_res_sep_conv_is_sep_conv_plus_identity():
    torch.manual_seed(0)
    op = ResSepConv(4, 1, affine=True).eval()
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(op(x), op.op(x) + x)
    assert isinstance(op.op, SepConv)


def test_build_op_errors():
    with pytest.raises(ArchitectureError, match="conv_7x7"):
        build_op("conv_7x7", 4)
    with pytest.raises(ConfigError, match="stride"):
        build_op("sep_conv_3x3", 4, stride=3)


# --------------------------------------------------------------------------- layout


def test_layouts():
    cw = Layout.cellwise()
    assert cw.num_cells == 8 and cw.reductions == (2, 5) and len(cw.topologies) == 8
    sw = Layout.stagewise()
    assert sw.cells == ("S0", "S0", "R", "S1", "S1", "R", "S2", "S2") and sw.reductions == (2, 5)
    assert sw.topologies == ("S0", "R", "S1", "S2")
    rs, rf = Layout.robnet(20, shared=True), Layout.robnet(20, shared=False)
    assert rs.reductions == rf.reductions == (6, 13)
    assert rs.topologies == ("cell",) and len(rf.topologies) == 20
    for layout in (cw, sw, rs, rf, Layout.robnet(33), Layout.cellwise(5), Layout.cellwise(8, (3, 6)),
                   Layout.stagewise(3)):
        assert Layout.from_name(layout.name) == layout
        assert Layout.from_json_value(layout.to_json_value()) == layout
    assert Layout.from_name("robnet") == rs
    with pytest.raises(ConfigError, match="cellwize"):
        Layout.from_name("cellwize")
    with pytest.raises(ConfigError, match="reductions"):
        Layout("x", ("a", "b"), (5,))


# --------------------------------------------------------------------------- architecture encoding


def test_arch_roundtrips_and_identity():
    rng = random.Random(0)
    for layout in (Layout.cellwise(), Layout.stagewise(), Layout.robnet(20, False)):
        arch = DenseRobArch.random(layout, rng)
        assert DenseRobArch.from_json(arch.to_json()) == arch
        assert DenseRobArch.from_json(json.loads(arch.to_json())) == arch
        assert DenseRobArch.from_sample(arch.to_sample(), layout) == arch
        assert DenseRobArch.parse(str(arch)) == arch
        assert DenseRobArch.from_aw_nas(arch.to_aw_nas(), layout) == arch
        assert DenseRobArch.from_indices(arch.to_indices(), layout) == arch
        assert pickle.loads(pickle.dumps(arch)) == arch
        assert sorted(arch.to_sample()) == sorted(layout.labels())
    a = DenseRobArch.random("cellwise", 1)
    b = DenseRobArch.from_json(a.to_json())
    assert len({a, b, DenseRobArch.random("cellwise", 2)}) == 2
    # readable JSON: per node, one op per earlier node
    cell = json.loads(a.to_json())["cells"]["c0"]
    assert [len(cell[f"n{j}"]) for j in (2, 3, 4, 5)] == [2, 3, 4, 5]
    assert cell["n3"][2] == a.cells["c0"][4]  # edge (3, 2)
    # layout is inferred from the topology names; flat lists of 14 ops are accepted
    assert DenseRobArch(dict(a.cells)) == a
    assert DenseRobArch.from_json({"cells": {t: list(ops) for t, ops in a.cells.items()}}) == a
    assert edge_labels("S0")[:3] == ("S0_e20", "S0_e21", "S0_e30")


def test_aw_nas_parse_of_presets():
    p = get_preset("MSRobNet-1000")
    arch = p.arch
    assert arch.layout == Layout.cellwise()
    # normal_0='init_node~2+|none~0|ResSepConv~1|+|sep_conv_3x3~0|none~1|skip_connect~2|+|...
    assert arch.cells["c0"][:5] == ("none", "res_sep_conv_3x3", "sep_conv_3x3", "none", "skip_connect")
    # normal_7 ends with '|skip_connect~0|none~1|sep_conv_3x3~2|none~3|skip_connect~4|'
    assert arch.cells["c7"][9:] == ("skip_connect", "none", "sep_conv_3x3", "none", "skip_connect")
    data = json.loads((resources.files("nni_robust.spaces") / "data/presets.json").read_text())
    assert arch.to_aw_nas() == data["presets"]["MSRobNet-1000"]["genotype"]["aw_nas"]
    p2 = get_preset("MSRobNet-2000-P")
    assert p2.layout == Layout.stagewise()
    # reduce_1='init_node~2+|sep_conv_3x3~0|none~1|+|...' is the shared R topology
    assert p2.arch.cells["R"][:2] == ("sep_conv_3x3", "none")
    assert p2.arch.to_aw_nas() == data["presets"]["MSRobNet-2000-P"]["genotype"]["aw_nas"]
    # RobNet: two-bit codes and aw_nas strings agree
    for name in ("RobNet-large", "RobNet-free"):
        g = data["presets"][name]["genotype"]
        layout = get_preset(name).layout
        assert DenseRobArch.from_robnet_codes(g["robnet_codes"], layout) == \
            DenseRobArch.from_aw_nas(g["aw_nas"], layout) == get_preset(name).arch
    # RobNet-large code "11","11" = residual sep conv on both edges of node 2
    assert get_preset("RobNet-large").arch.cells["cell"][:2] == ("res_sep_conv_3x3",) * 2


def test_malformed_archs():
    good = DenseRobArch.random("cellwise", 0)
    cells = {t: list(ops) for t, ops in good.cells.items()}
    bad = {**cells, "c3": cells["c3"][:13] + ["sep_conv_5x5"]}
    with pytest.raises(ArchitectureError, match="sep_conv_5x5"):
        DenseRobArch(bad, Layout.cellwise())
    with pytest.raises(ArchitectureError, match="13 edges"):
        DenseRobArch({**cells, "c3": cells["c3"][:13]}, Layout.cellwise())
    missing = {t: v for t, v in cells.items() if t != "c5"}
    with pytest.raises(ArchitectureError, match="'c5'"):
        DenseRobArch(missing, Layout.cellwise())
    with pytest.raises(ArchitectureError, match="'S9'"):
        DenseRobArch({**cells, "S9": cells["c0"]}, Layout.cellwise())
    sample = good.to_sample()
    del sample["c2_e41"]
    with pytest.raises(ArchitectureError, match="c2_e41"):
        DenseRobArch.from_sample(sample, "cellwise")
    with pytest.raises(ArchitectureError, match="S0_e20"):
        DenseRobArch.from_sample({**good.to_sample(), "S0_e20": "none"}, "cellwise")
    with pytest.raises(ArchitectureError, match="max_pool_3x3"):
        DenseRobArch.from_sample({**good.to_sample(), "c0_e20": "max_pool_3x3"}, "cellwise")
    with pytest.raises(ArchitectureError, match="n4"):
        d = good.to_dict()
        d["cells"]["c0"]["n4"] = ["none"] * 3
        DenseRobArch.from_json(d)
    with pytest.raises(ArchitectureError, match="'cellz'"):
        DenseRobArch.from_json({**good.to_dict(), "layout": "cellz"})
    with pytest.raises(ArchitectureError, match="init_node"):
        DenseRobArch.from_aw_nas("|none~0|none~1|", "robnet")
    with pytest.raises(ArchitectureError, match="op~1"):
        DenseRobArch.from_aw_nas("init_node~2+|none~0|none~2|+|none~0|none~1|none~2|+|none~0|none~1|none~2|"
                                 "none~3|+|none~0|none~1|none~2|none~3|none~4|", "robnet")
    with pytest.raises(ArchitectureError, match="'22'"):
        DenseRobArch.from_robnet_codes(["22"] + ["00"] * 13)


def test_random_and_mutate():
    rng = random.Random(7)
    layout = Layout.cellwise()
    archs = [DenseRobArch.random(layout, rng) for _ in range(50)]
    assert len(set(archs)) == 50
    ops_seen = {op for a in archs for ops in a.cells.values() for op in ops}
    assert ops_seen == set(PRIMITIVES)
    assert DenseRobArch.random(layout, 3) == DenseRobArch.random(layout, 3)
    for a in archs:
        m = a.mutate(rng)
        diff = [k for k, v in a.to_sample().items() if m.to_sample()[k] != v]
        assert len(diff) == 1
        m3 = a.mutate(rng, num_edges=3)
        assert sum(m3.to_sample()[k] != v for k, v in a.to_sample().items()) == 3
    with pytest.raises(ConfigError, match="num_edges"):
        archs[0].mutate(rng, num_edges=0)


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize("layout", ["cellwise", "stagewise", "robnet-free-6"])
def test_supernet_equals_discrete_network(layout):
    rng = random.Random(0)
    supernet = tiny_net(None, layout)
    with pytest.raises(ArchitectureError, match="set_arch"):
        supernet(torch.rand(1, *TINY_SHAPE))
    for _ in range(3):
        arch = DenseRobArch.random(layout, rng)
        discrete = tiny_net(arch)
        supernet.set_arch(arch)
        flops = count_flops(discrete, TINY_SHAPE)
        assert count_flops(supernet, TINY_SHAPE) == flops == dense_rob_flops(arch, **TINY)
        # the discrete net's weights are a subset of the supernet's, by name: copy them
        sup_state = supernet.state_dict()
        assert set(discrete.state_dict()) <= set(sup_state)
        discrete.load_state_dict({k: sup_state[k] for k in discrete.state_dict()})
        x = torch.rand(3, *TINY_SHAPE)
        supernet.eval(), discrete.eval()
        with torch.no_grad():
            assert torch.allclose(supernet(x), discrete(x), atol=1e-6)
    assert count_params(supernet) > count_params(discrete)


def test_supernet_layout_mismatch_and_sample():
    supernet = tiny_net(None, "stagewise")
    with pytest.raises(ArchitectureError, match="cellwise"):
        supernet.set_arch(DenseRobArch.random("cellwise", 0))
    arch = DenseRobArch.random("stagewise", 0)
    supernet.set_arch(arch.to_sample())
    assert supernet.arch == arch
    with pytest.raises(ArchitectureError, match="layout"):
        DenseRobNetwork(arch, layout="cellwise", init_channels=4)
    skips = DenseRobArch({t: ("skip_connect",) * 14 for t in arch.cells}, arch.layout)
    discrete = tiny_net(skips)
    discrete.set_arch(skips.replace(S0_e20="none"))  # a sub-path of the built ops is fine
    with pytest.raises(ArchitectureError, match="sep_conv_3x3"):
        discrete.set_arch(skips.replace(S1_e31="sep_conv_3x3"))


def test_none_edges_remove_computation():
    layout = Layout.cellwise()
    empty = DenseRobArch({t: ("none",) * 14 for t in layout.topologies}, layout)
    net = tiny_net(empty)
    assert not any(len(edge) for cell in net.cells for edge in cell.edges)
    # only stem, pre-processing and classifier remain
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 8 * 2 + 2  # stem, 2 per cell, +1 for each factorized reduce
    # every node is zero, so the logits are the classifier bias
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, *TINY_SHAPE))
    assert torch.allclose(out, net.classifier.bias.expand(2, -1))
    # one sep conv on edge (2,0) of a normal cell adds exactly its cost
    one = empty.replace(c0_e20="sep_conv_3x3")
    c, h = TINY["init_channels"], TINY["input_size"]
    sep_cost = 4 * (9 * c + c * c) * h * h
    assert count_flops(tiny_net(one), TINY_SHAPE) - count_flops(net, TINY_SHAPE) == sep_cost
    # supernet: a `none` edge runs nothing
    supernet = tiny_net(None)
    supernet.set_arch(empty)
    assert count_flops(supernet, TINY_SHAPE) == count_flops(net, TINY_SHAPE)


def test_stagewise_shares_reduction_topology():
    layout = Layout.stagewise()
    arch = DenseRobArch.random(layout, 5)
    net = tiny_net(arch)
    red = [net.cells[p] for p in layout.reductions]
    assert [cell.reduction for cell in red] == [True, True]
    keys = [[sorted(edge.keys()) for edge in cell.edges] for cell in red]
    assert keys[0] == keys[1] == [[op] if op != "none" else [] for op in arch.cells["R"]]
    # one label controls both reduction cells
    flipped = arch.replace(R_e20="sep_conv_3x3" if arch.cells["R"][0] != "sep_conv_3x3" else "skip_connect")
    assert [flipped.cell_ops(p)[0] for p in layout.reductions] == [flipped.cells["R"][0]] * 2
    assert len(layout.labels()) == 4 * 14


def test_tiny_network_trains_and_channels_last():
    torch.manual_seed(0)
    net = tiny_net(None, "cellwise", mean=[0.5], std=[0.25])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    rng = random.Random(0)
    x, y = torch.rand(4, *TINY_SHAPE), torch.randint(0, 10, (4,))
    for _ in range(2):  # a random architecture per batch, as in supernet training
        net.set_arch(DenseRobArch.random("cellwise", rng))
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    arch = DenseRobArch.random("cellwise", 1)
    net.set_arch(arch)
    net.eval()
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (4, 10)
    assert torch.allclose(ref, out, atol=1e-5)


def test_odd_input_size_and_analytic_flops():
    arch = DenseRobArch.random("cellwise", 11)
    for size, channels in ((7, 1), (11, 3)):
        net = DenseRobNetwork(arch, init_channels=4, in_channels=channels, input_size=size, num_classes=3)
        assert net(torch.rand(2, channels, size, size)).shape == (2, 3)
        assert count_flops(net, (channels, size, size)) == dense_rob_flops(
            arch, init_channels=4, in_channels=channels, input_size=size, num_classes=3)


def test_bn_affine_conventions():
    arch = DenseRobArch({t: ("res_sep_conv_3x3", "sep_conv_3x3") + ("skip_connect",) * 12
                         for t in Layout.cellwise().topologies})
    ms = tiny_net(arch)
    rb = tiny_net(arch, robnet_style=True)
    red = ms.cells[2]  # reduction cell: the skip connects from inputs are factorized reduces
    assert all(bn.affine for bn in red.edges[0]["res_sep_conv_3x3"].modules() if isinstance(bn, nn.BatchNorm2d))
    assert not any(bn.affine for bn in red.edges[1]["sep_conv_3x3"].modules() if isinstance(bn, nn.BatchNorm2d))
    assert not red.edges[2]["skip_connect"].bn.affine
    assert red.preprocess1[2].affine and ms.stem[1].affine
    cell_bns = [m for c in rb.cells for m in c.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bns and not any(bn.affine for bn in cell_bns) and rb.stem[1].affine
    assert count_params(ms) > count_params(rb)
    with pytest.raises(ConfigError, match="conv_9x9"):
        tiny_net(arch, bn_affine_ops={"conv_9x9": True})


def test_network_config_errors():
    with pytest.raises(ConfigError, match="layout"):
        DenseRobNetwork(None, init_channels=4)
    with pytest.raises(ConfigError, match="init_channels"):
        DenseRobNetwork(None, layout="cellwise", init_channels=0)
    with pytest.raises(ConfigError, match="input_size"):
        DenseRobNetwork(None, layout="cellwise", init_channels=4, input_size=2)
    with pytest.raises(ConfigError, match="stem"):
        DenseRobNetwork(None, layout="cellwise", init_channels=4, stem="conv_7x7")


# --------------------------------------------------------------------------- presets


def _params(preset, **kw):
    return count_params(preset.build(**kw))


@pytest.mark.parametrize("name", ["MSRobNet-1000", "MSRobNet-1560", "MSRobNet-2000-P"])
def test_msrobnet_presets_have_published_sizes(name):
    p = get_preset(name)
    assert abs(_params(p) / 1e6 / p.params_M - 1) < 0.005
    assert abs(dense_rob_flops(p.arch, init_channels=p.init_channels) / 1e6 / p.flops_M - 1) < 0.005


def test_msrobnet_1000_measured_flops():
    p = get_preset("MSRobNet-1000")
    net = build_preset("MSRobNet-1000")
    flops = count_flops(net, (3, 32, 32))
    assert flops == dense_rob_flops(p.arch, init_channels=p.init_channels)
    assert abs(flops / 1e6 - 1018) / 1018 < 0.005  # published 1018 MFLOPs
    assert abs(count_params(net) / 1e6 - 3.16) / 3.16 < 0.005


@pytest.mark.parametrize("name", ["RobNet-large", "RobNet-free", "RobNet-large-v2"])
def test_robnet_presets_within_one_percent(name):
    p = get_preset(name)
    assert p.network_kwargs["robnet_style"] is True
    assert abs(_params(p) / 1e6 / p.params_M - 1) <= p.size_tolerance == 0.01


def test_preset_registry():
    names = list_presets()
    assert {"MSRobNet-1000", "MSRobNet-1560", "MSRobNet-2000-P", "RobNet-large", "RobNet-free"} <= set(names)
    assert get_preset("msrobnet-1000") is get_preset("MSRobNet-1000")
    with pytest.raises(ConfigError, match="MSRobNet-1000"):
        get_preset("MSRobNet-100")
    for name in ("MSRobNet-2000", "MSRobNet-1560-P", "RobNet-small", "RobNet-medium"):
        assert name in UNAVAILABLE and name not in names
        with pytest.raises(ConfigError, match="not available"):
            get_preset(name)
    p = get_preset("RobNet-large")
    assert p.space_kwargs()["layout"] == "robnet-shared" and p.published == {"params_M": 6.89}
    net = build_preset("MSRobNet-2000-P", num_classes=100, init_channels=4, in_channels=1, input_size=8)
    assert net.classifier.out_features == 100
    assert net(torch.rand(2, *TINY_SHAPE)).shape == (2, 100)


# --------------------------------------------------------------------------- NNI model space


def test_nni_space_simplify_and_freeze():
    from nni.mutable import Categorical
    from nni.nas.space import model_context

    from nni_robust.spaces import DenseRobSpace

    for layout in (Layout.cellwise(), Layout.stagewise()):
        space = DenseRobSpace(layout=layout.name, **TINY)
        mutables = space.simplify()
        assert list(mutables) == list(layout.labels())
        assert all(isinstance(m, Categorical) and list(m.values) == list(PRIMITIVES)
                   for m in mutables.values())
        rng = random.Random(3)
        sample = {label: rng.choice(m.values) for label, m in mutables.items()}
        arch = DenseRobArch.from_sample(sample, layout)
        frozen = space.freeze(sample)
        discrete = tiny_net(arch)
        assert frozen.arch == arch
        assert count_flops(frozen, TINY_SHAPE) == count_flops(discrete, TINY_SHAPE)
        assert count_params(frozen) == count_params(discrete)
        with model_context(sample):
            rebuilt = DenseRobSpace(layout=layout.name, **TINY)
        assert rebuilt.arch == arch
        assert rebuilt(torch.rand(2, *TINY_SHAPE)).shape == (2, 10)
