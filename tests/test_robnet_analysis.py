"""RobNet's FSP indicator (Sec. 3.5) and architecture analyses (Secs. 3.3-3.4)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from scipy import stats

from nni_robust.attacks import PGD
from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch, DenseRobNetwork, Layout
from nni_robust.strategies.robnet.analysis import (
    DIRECT_EDGES, ArchResult, architecture_density, arch_stats, budget_of, budget_study, cell_conv_counts,
    cell_density, conv_study, correlation, fsp_study, report_images, write_report)
from nni_robust.strategies.robnet.fsp import (
    FSPCollector, deep_cell_positions, fsp_distance, fsp_distances, fsp_filter, fsp_matrix, fsp_threshold,
    robustness_indicator)

# A hand-written cell, edges in the order (j,i) = (2,0) (2,1) (3,0) (3,1) (3,2) (4,0) (4,1) (4,2) (4,3)
# (5,0) (5,1) (5,2) (5,3) (5,4):
#   e20 sep  e21 res  e30 none e31 skip e32 sep  e40 none e41 none e42 res  e43 sep
#   e50 skip e51 none e52 none e53 res  e54 skip
# Eq. 2: alpha bits (conv, identity): sep = 1, skip = 1, res = 2, none = 0
#   sep: e20 e32 e43 -> 3; res: e21 e42 e53 -> 3 x 2 = 6; skip: e31 e50 e54 -> 3; total 12 of 28
#   -> D = 12 / 28 = 3 / 7. Non-none edges: 9 of 14.
# Convolutions (sep or res): e20 e21 e32 e42 e43 e53 = 6 (budget "small": <= 7).
# Direct edges (j = i + 1): e21 e32 e43 e54 -> convolutions on e21 (res), e32, e43 = 3;
# skip edges: e20, e42, e53 = 3; direct share 3 / 6.
HAND_CELL = ("sep_conv_3x3", "res_sep_conv_3x3", "none", "skip_connect", "sep_conv_3x3", "none", "none",
             "res_sep_conv_3x3", "sep_conv_3x3", "skip_connect", "none", "none", "res_sep_conv_3x3",
             "skip_connect")
EMPTY_CELL = ("none",) * 14


def _arch(ops=HAND_CELL) -> DenseRobArch:
    return DenseRobArch({"cell": ops}, Layout.robnet(20, shared=True))


# --------------------------------------------------------------------------- FSP matrix and distance


def test_fsp_matrix_equals_hand_computation():
    # input channels a, b and output channels c, d on a 2x2 grid (one image)
    f_in = torch.tensor([[[[1., 2.], [3., 4.]], [[0., 1.], [1., 0.]]]])
    f_out = torch.tensor([[[[1., 0.], [0., 1.]], [[2., 2.], [2., 2.]]]])
    # G[a,c] = (1*1 + 2*0 + 3*0 + 4*1) / 4 = 5/4    G[a,d] = (2 + 4 + 6 + 8) / 4 = 5
    # G[b,c] = (0 + 0 + 0 + 0) / 4 = 0             G[b,d] = (0 + 2 + 2 + 0) / 4 = 1
    expected = torch.tensor([[[1.25, 5.0], [0.0, 1.0]]])
    torch.testing.assert_close(fsp_matrix(f_in, f_out), expected)
    # a batch of two: rows are independent (second image = first doubled: G scales by 2 * 1)
    g = fsp_matrix(torch.cat([f_in, 2 * f_in]), torch.cat([f_out, f_out]))
    torch.testing.assert_close(g, torch.cat([expected, 2 * expected]))


def test_fsp_matrix_pools_the_larger_map():
    # a 4x4 input whose 2x2 blocks are constant 1, 2, 3, 4 pools to [[1, 2], [3, 4]]
    block = torch.tensor([[1., 2.], [3., 4.]])
    f_in = block.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, None]
    f_out = torch.tensor([[[[1., 0.], [0., 1.]]]])
    torch.testing.assert_close(fsp_matrix(f_in, f_out), torch.tensor([[[1.25]]]))
    with pytest.raises(ConfigError):
        fsp_matrix(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 2, 4))


def test_fsp_distance_zero_on_identical_and_hand_value():
    g = torch.randn(3, 4, 5)
    assert fsp_distance(g, g.clone()).item() == 0.0
    a = torch.zeros(2, 2, 2)
    b = torch.zeros(2, 2, 2)
    b[0] = torch.tensor([[1., 2.], [0., 0.]])  # ||.||^2 = 1 + 4 = 5; the second image: 0
    assert fsp_distance(a, b).item() == pytest.approx(2.5)  # (5 + 0) / 2, no division by m n
    assert fsp_distance(a, b, normalize="elements").item() == pytest.approx(2.5 / 4)
    torch.testing.assert_close(fsp_distance(a, b, reduction="none"), torch.tensor([5.0, 0.0]))


def test_deep_cells_and_indicator():
    assert deep_cell_positions(20) == tuple(range(13, 20))  # RobNet: the last stage, from the 2nd reduction
    assert deep_cell_positions(5) == (3, 4)
    assert deep_cell_positions(5, [4, 0]) == (0, 4)
    with pytest.raises(ConfigError):
        deep_cell_positions(5, 1.5)
    with pytest.raises(ConfigError):
        deep_cell_positions(5, [5])
    d = [1.0, 2.0, 3.0, 4.0, 6.0]
    assert robustness_indicator(d) == pytest.approx(5.0)
    assert robustness_indicator(d, aggregate="sum") == pytest.approx(10.0)
    assert robustness_indicator({0: 1.0, 3: 4.0, 4: 6.0}, num_cells=5) == pytest.approx(5.0)
    with pytest.raises(ConfigError):
        robustness_indicator({0: 1.0, 4: 6.0}, num_cells=5)


def test_fsp_filter_rejects_exactly_above_threshold():
    ind = {"a": 0.1, "b": 0.5, "c": 0.3, "d": float("nan"), "e": 0.29999}
    kept, rejected = fsp_filter(ind, 0.3)
    assert kept == ["a", "c", "e"]          # equal to the threshold: kept
    assert rejected == ["b", "d"]           # above, and non-finite
    kept, rejected = fsp_filter([0.4, 0.2, 0.9], 0.4)
    assert (kept, rejected) == ([0, 1], [2])
    values = np.random.default_rng(0).permutation(np.arange(10.0))
    t = fsp_threshold(values, quantile=0.55)
    assert t == pytest.approx(4.95)
    kept, rejected = fsp_filter(values.tolist(), t)
    assert sorted(values[rejected].tolist()) == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert fsp_threshold([1, 2, 3, 4, 5]) == 3.0
    with pytest.raises(ConfigError):
        fsp_filter([1.0], float("nan"))
    with pytest.raises(ConfigError):
        fsp_threshold([float("nan")])


# --------------------------------------------------------------------------- hooks on a network


def _tiny_net(arch=None, layout=None):
    torch.manual_seed(0)
    return DenseRobNetwork(arch, layout=layout, init_channels=4, input_size=8, num_classes=10, robnet_style=True)


def test_hooks_one_fsp_per_cell_and_pgd_distance():
    layout = Layout.robnet(5, shared=False)  # reductions at 1 and 3
    arch = DenseRobArch.random(layout, 3)
    net = _tiny_net(layout=layout)
    net.set_arch(arch)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)

    # expected shapes: (B, channels of s1, 4 C) with C = 4, 8, 8, 16, 16 and the stem's 12 channels
    net.eval()  # the collector runs the model in its current mode
    with FSPCollector(net) as col:
        grams = col.collect(x)
    assert sorted(grams) == [0, 1, 2, 3, 4]
    assert [tuple(v.shape) for v in grams.values()] == [(6, 12, 16), (6, 16, 32), (6, 32, 32), (6, 32, 64),
                                                        (6, 64, 64)]
    # cell 0's matrix equals Eq. 3 on the stem output and the cell output computed by hand
    with torch.no_grad():
        s = net.stem(net.normalize(x))
        out0 = net.cells[0](s, s, arch.cell_ops(0))
        torch.testing.assert_close(grams[0], fsp_matrix(s, out0))
        # a discrete network with the inherited weights gives the same matrices
        disc = _tiny_net(arch)
        keys = set(disc.state_dict())
        disc.load_state_dict({k: v for k, v in net.state_dict().items() if k in keys})
        disc.eval()
    with FSPCollector(disc) as col:
        for p, v in col.collect(x).items():
            torch.testing.assert_close(v, grams[p])

    net.train()
    attack = PGD(8 / 255, step=2 / 255, steps=2)
    res = fsp_distances(net, [(x[:4], y[:4]), (x[4:], y[4:])], attack=attack, seed=1)
    assert net.training  # the mode is restored
    assert sorted(res.distances) == [0, 1, 2, 3, 4] and res.num_images == 6
    assert all(d > 0 for d in res.distances.values())
    assert res.deep_cells == (3, 4)
    assert res.indicator == pytest.approx((res.distances[3] + res.distances[4]) / 2)
    again = fsp_distances(net, [(x[:4], y[:4]), (x[4:], y[4:])], attack=attack, seed=1)
    assert again.distances == res.distances  # deterministic given the seed
    # no perturbation: clean and "adversarial" matrices coincide
    zero = fsp_distances(net, [(x, y)], attack=PGD(0.0, step=0.01, steps=1), cells="deep")
    assert sorted(zero.distances) == [3, 4] and all(d == 0.0 for d in zero.distances.values())
    # the preprocessed input: C channels instead of the previous cell's 4 C
    with FSPCollector(net, cell_input="preprocessed", cells=[2]) as col:
        assert tuple(col.collect(x)[2].shape) == (6, 8, 32)


# --------------------------------------------------------------------------- density, convolutions, budgets


def test_density_and_conv_counts_of_hand_cell():
    assert DIRECT_EDGES == (1, 4, 8, 13)  # e21, e32, e43, e54
    assert cell_density(HAND_CELL) == pytest.approx(3 / 7)
    assert cell_density(HAND_CELL, definition="edges") == pytest.approx(9 / 14)
    assert cell_conv_counts(HAND_CELL) == (6, 3, 3)
    st = arch_stats(_arch())
    assert (st.density, st.convs, st.direct_convs, st.skip_convs) == pytest.approx((3 / 7, 6, 3, 3))
    assert st.direct_share == pytest.approx(0.5) and st.budget == "small"
    assert cell_density(("res_sep_conv_3x3",) * 14) == 1.0 and cell_density(EMPTY_CELL) == 0.0
    # cell-free: Eq. 2 over all cells = the mean over cell positions
    free = DenseRobArch({"c0": HAND_CELL, "c1": EMPTY_CELL}, Layout.cellwise(2))
    assert architecture_density(free) == pytest.approx(3 / 14)
    assert math.isnan(arch_stats(_arch(EMPTY_CELL)).direct_share)


def test_budgets_and_conv_study():
    assert [budget_of(n) for n in (0, 7, 8, 10, 11, 14)] == ["small", "small", "medium", "medium", "large", "large"]
    # 9 convolutions: HAND_CELL with e30 e40 e41 -> sep; 12: also e51 e52 -> sep and e31 -> res
    nine = list(HAND_CELL)
    for e in (2, 5, 6):
        nine[e] = "sep_conv_3x3"
    twelve = list(nine)
    for e in (10, 11):
        twelve[e] = "sep_conv_3x3"
    twelve[3] = "res_sep_conv_3x3"
    archs = [_arch(HAND_CELL), _arch(tuple(nine)), _arch(tuple(twelve))]
    assert [arch_stats(a).convs for a in archs] == [6, 9, 12]
    results = [ArchResult(a, adv_acc=acc) for a, acc in zip(archs, (0.4, 0.5, 0.6))]
    rows = {r["budget"]: r for r in budget_study(results)}
    assert [rows[b]["n"] for b in ("small", "medium", "large")] == [1, 1, 1]
    assert rows["medium"]["adv_mean"] == pytest.approx(0.5)
    conv = {(r["kind"], r["count"]): r for r in conv_study(results)}
    assert conv[("all", 9)]["adv_mean"] == pytest.approx(0.5)
    assert conv[("direct", 3)]["n"] == 3  # the changed edges are all skip edges


# --------------------------------------------------------------------------- reports


def _results(n=24):
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        arch = DenseRobArch.random(Layout.robnet(20, shared=True), k)
        d = arch_stats(arch).density
        adv = 0.3 + 0.4 * d + rng.normal(0, 0.03)
        out.append(ArchResult(arch, adv_acc=None if k == 0 else adv, clean_acc=None if k == 0 else adv + 0.3,
                              fsp=float(np.exp(-2 * d + rng.normal(0, 0.2))), name=f"trial{k}"))
    return out


def test_correlation_matches_scipy():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 7.0, 5.0])
    c = correlation(x, y)
    assert c["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert c["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert c["kendall"] == pytest.approx(stats.kendalltau(x, y)[0])
    assert c["spearman"] == pytest.approx(1 - 6 * (1 + 1 + 1 + 1 + 1 + 1) / (6 * 35))  # hand: sum d^2 = 6
    assert correlation([1, 2, 3], [3, 2, 1])["kendall"] == pytest.approx(-1.0)
    assert math.isnan(correlation([1, 1, 1], [1, 2, 3])["pearson"])


def test_write_report_files_and_numbers(tmp_path):
    results = _results()
    paths = write_report(results, tmp_path, stem="rn", fsp_threshold=0.3, dpi=60)
    for key in ("archs_csv", "correlations_csv", "convs_csv", "budget_csv", "report_md", "density_png",
                "convs_png", "budget_png", "fsp_png"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    ft = [r for r in results if r.adv_acc is not None]
    dens = [arch_stats(r.arch).density for r in ft]
    adv = [r.adv_acc for r in ft]
    with open(paths["correlations_csv"]) as f:
        rows = {(r["x"], r["y"]): r for r in csv.DictReader(f)}
    row = rows[("density", "adv_acc")]
    assert int(row["n"]) == len(ft)
    assert float(row["pearson"]) == pytest.approx(stats.pearsonr(dens, adv)[0])
    assert float(row["spearman"]) == pytest.approx(stats.spearmanr(dens, adv)[0])
    assert float(row["kendall"]) == pytest.approx(stats.kendalltau(dens, adv)[0])
    fsp = [r.fsp for r in ft]
    assert float(rows[("fsp", "adv_acc")]["kendall"]) == pytest.approx(stats.kendalltau(fsp, adv)[0])
    with open(paths["archs_csv"]) as f:
        archs = list(csv.DictReader(f))
    assert len(archs) == len(results) and archs[-1]["name"] == "trial0"  # not fine-tuned: last
    assert [float(a["adv_acc"]) for a in archs[:-1]] == sorted(adv, reverse=True)
    n_rej = sum(r.fsp > 0.3 for r in results)
    assert sum(a["fsp_rejected"] == "True" for a in archs) == n_rej
    summary = fsp_study(results, threshold=0.3)
    assert summary["rejected"] == n_rej and summary["screened"] == len(results)
    text = paths["report_md"].read_text()
    assert "| density | adv_acc |" in text and "rn_fsp.png" in text

    import matplotlib.image
    assert matplotlib.image.imread(paths["density_png"]).shape[2] in (3, 4)
    imgs = report_images(results[:8], dpi=40)
    assert set(imgs) == {"density", "convs", "budget", "fsp"}
    for img in imgs.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.std() > 0


def test_relative_fsp_distance_is_scale_free():
    g = torch.rand(3, 4, 5) + 0.1
    h = g + 0.05 * torch.randn(3, 4, 5)
    rel = fsp_distance(g, h, normalize="relative", reduction="none")
    torch.testing.assert_close(rel, (g - h).pow(2).sum(dim=(1, 2)) / g.pow(2).sum(dim=(1, 2)))
    torch.testing.assert_close(fsp_distance(10 * g, 10 * h, normalize="relative"), rel.mean())
    assert fsp_distance(10 * g, 10 * h).item() == pytest.approx(100 * fsp_distance(g, h).item(), rel=1e-5)
