"""Architecture pictures (``nni_robust.archdraw``) and the TensorBoard helpers that log them (``nni_robust.tb``)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nni_robust.archdraw import (CellGraph, arch_weights_figure, cell_edge_names, draw_architecture, draw_cells,
                                 figure_to_image, label_overlaps)
from nni_robust.errors import ArchitectureError
from nni_robust.spaces.abandit import ABanditArch
from nni_robust.spaces.darts import EDGES as DARTS_EDGES
from nni_robust.spaces.darts import DartsArch
from nni_robust.spaces.dense_rob import DenseRobArch
from nni_robust.spaces.nb201 import NB201Arch
from nni_robust.tb import add_arch_weights, add_architecture, run_name


class Recorder:
    def __init__(self):
        self.images = []

    def add_image(self, tag, img, step, dataformats="CHW"):
        self.images.append((tag, img.shape, img.dtype, step, dataformats))


def test_every_space_describes_its_cells():
    dense = DenseRobArch.random("cellwise", random.Random(0))
    graphs = dense.cell_graphs()
    assert [g.name for g in graphs] == [f"c{k}" for k in range(8)]
    assert [len(g.edges) for g in graphs] == [sum(op != "none" for op in dense.cells[g.name]) for g in graphs]
    assert graphs[2].note == "reduction; cell 2" and graphs[0].inputs == ("c_{k-2}", "c_{k-1}")
    darts = DartsArch.random(["normal", "reduce"], random.Random(1))
    assert [len(g.edges) for g in darts.cell_graphs()] == [8, 8]  # two inputs per node
    (cell,) = NB201Arch.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|"
                                    "avg_pool_3x3~2|").cell_graphs()
    assert cell.output is None and cell.edges == (("0", "1", "nor_conv_3x3"), ("1", "2", "nor_conv_1x1"),
                                                  ("0", "3", "skip_connect"), ("2", "3", "avg_pool_3x3"))
    abandit = ABanditArch({"c0": [("gabor_3x3", 0), ("denoising", 1), ("sep_conv_3x3", 0), ("skip_connect", 3)]})
    (g,) = abandit.cell_graphs()
    assert g.inputs == ("B_{0}",) and g.edges[-1] == ("B_{3}", "B_{4}", "skip_connect") and g.output == "out"
    with pytest.raises(ArchitectureError, match="edge"):
        CellGraph("x", ("a",), ("b",), (("b", "a", "op"),))  # right to left


def test_drawn_labels_do_not_overlap():
    full = DenseRobArch({"cell": ["res_sep_conv_3x3"] * 14}, "robnet-shared-4")  # all 14 edges, longest labels
    fig = draw_architecture(full, title="every edge")
    assert len(fig.edge_labels) == 14 and label_overlaps(fig) == []
    darts = draw_cells(DartsArch.random(["normal", "reduce"], random.Random(3)).cell_graphs())
    assert len(darts.edge_labels) == 16 and label_overlaps(darts) == []
    img = figure_to_image(fig)
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] > img.shape[0] > 200


def test_arch_weights_heatmap_and_tensorboard_helpers():
    w = np.full((14, 7), 1 / 7)
    w[3] = [0.05, 0.05, 0.05, 0.65, 0.1, 0.05, 0.05]
    ops = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
           "dil_conv_5x5")
    edges = cell_edge_names(DARTS_EDGES)
    assert edges[:3] == ["c_{k-2}→0", "c_{k-1}→0", "c_{k-2}→1"] and edges[-1] == "2→3"
    fig = arch_weights_figure(w, ops, edges, title="normal")
    (title,) = fig.texts
    assert "mean strongest weight per edge 0.179 (uniform 0.143)" in title.get_text()
    with pytest.raises(ValueError, match="shape"):
        arch_weights_figure(w.T, ops, edges)
    writer = Recorder()
    add_arch_weights(writer, {"normal": w}, ops=ops, edges=edges, step=5)
    assert add_architecture(writer, DartsArch.random(["normal"], random.Random(0)), title="found")
    assert add_architecture(writer, object()) is False  # cannot be drawn: said, not raised
    (heat, heat_shape, dtype, step, fmt), (arch, arch_shape, *_) = writer.images
    assert (heat, step, fmt, dtype) == ("arch/normal", 5, "HWC", np.uint8) and heat_shape[2] == 3
    assert arch == "architecture" and arch_shape[2] == 3
    assert run_name("final", "Ab3xY") == "final-Ab3xY" and run_name("a b/c", 7) == "a_b_c-7"
