"""RobNet's supernet sampling (Sec. 3.2), weight inheritance and its three trial tasks on digits."""

from __future__ import annotations

import collections
import json
import random

import pytest
import torch

from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch, DenseRobNetwork, Layout
from nni_robust.strategies.robnet.analysis import arch_stats, cell_conv_counts
from nni_robust.strategies.robnet.sampling import budget_range, sample_architecture, sample_in_budget
from nni_robust.strategies.robnet.tasks import finetune_config, inherit_weights
from nni_robust.strategies.settings import TrialSettings
from nni_robust.strategies.supernet import PathDropSampler, supernet_path


# --------------------------------------------------------------------------- sampling


def test_path_drop_sampler_drops_alpha_bits():
    layout = Layout.robnet(3, shared=True)
    rng = random.Random(0)
    assert set(PathDropSampler(0.0)(layout, rng).cells["cell"]) == {"res_sep_conv_3x3"}  # every bit kept
    assert set(PathDropSampler(1.0)(layout, rng).cells["cell"]) == {"none"}
    counts = collections.Counter(op for _ in range(500) for op in PathDropSampler(0.5)(layout, rng).cells["cell"])
    assert all(abs(c / 7000 - 0.25) < 0.02 for c in counts.values()) and len(counts) == 4  # uniform at 0.5
    # p = 0.25: P(res) = 0.75^2, P(none) = 0.25^2, P(sep) = P(skip) = 0.75 * 0.25
    counts = collections.Counter(op for _ in range(500) for op in PathDropSampler(0.25)(layout, rng).cells["cell"])
    assert counts["res_sep_conv_3x3"] / 7000 == pytest.approx(0.5625, abs=0.02)
    assert counts["none"] / 7000 == pytest.approx(0.0625, abs=0.015)
    with pytest.raises(ConfigError, match="1.5"):
        PathDropSampler(1.5)


@pytest.mark.parametrize("sampler", [sample_architecture, PathDropSampler(0.5)])
def test_cell_free_sampling_draws_one_topology_per_cell(sampler):
    free, shared = Layout.robnet(20, shared=False), Layout.robnet(20, shared=True)
    arch = sampler(free, random.Random(1))
    per_cell = [arch.cell_ops(p) for p in range(20)]
    assert len(arch.cells) == 20 and len(set(per_cell)) == 20  # 20 independent topologies
    arch = sampler(shared, random.Random(1))
    assert len(arch.cells) == 1 and len({arch.cell_ops(p) for p in range(20)}) == 1  # one, shared by all cells
    # the supernet runs each position with its own topology
    net = DenseRobNetwork(None, layout=Layout.robnet(5, shared=False), init_channels=2, input_size=8,
                          robnet_style=True)
    arch = sampler(net.layout, random.Random(2))
    net.set_arch(arch)
    assert net._active == [arch.cells[f"c{p}"] for p in range(5)]


@pytest.mark.parametrize("shared", [True, False])
def test_budget_sampling_stays_in_budget(shared):
    layout = Layout.robnet(6, shared=shared)
    assert [budget_range(b) for b in ("small", "medium", "large")] == [(0, 7), (8, 10), (11, 14)]
    rng = random.Random(0)
    for budget in ("small", "medium", "large"):
        for _ in range(20):
            arch = sample_in_budget(layout, budget, rng)
            lo, hi = budget_range(budget)
            assert all(lo <= cell_conv_counts(arch.cell_ops(p))[0] <= hi for p in range(6))
            assert arch_stats(arch).budget == budget


# --------------------------------------------------------------------------- weights


def test_inherited_weights_compute_the_supernet_path():
    layout = Layout.robnet(4, shared=True)
    torch.manual_seed(0)
    supernet = DenseRobNetwork(None, layout=layout, init_channels=4, input_size=8, in_channels=1,
                               robnet_style=True)
    for p in supernet.parameters():  # non-trivial weights everywhere
        torch.nn.init.normal_(p, std=0.3)
    arch = DenseRobArch.random(layout, 3)
    supernet.set_arch(arch)
    x = torch.rand(5, 1, 8, 8)
    supernet.train()
    supernet(x)  # running statistics of this path
    supernet.eval()
    disc = DenseRobNetwork(arch, init_channels=4, input_size=8, in_channels=1, robnet_style=True).eval()
    n = inherit_weights(disc, supernet.state_dict())
    assert n == len(disc.state_dict()) < len(supernet.state_dict())
    torch.testing.assert_close(disc(x), supernet(x))
    wide = DenseRobNetwork(arch, init_channels=6, input_size=8, in_channels=1, robnet_style=True)
    with pytest.raises(CheckpointError, match="shape"):
        inherit_weights(wide, supernet.state_dict())


def test_finetune_config_layers_settings():
    s = TrialSettings.from_dict({"dataset": "digits", "supernet": {"epochs": 50, "lr": 0.1, "steps": 3,
                                                                   "milestones": [10], "schedule": "multistep"}})
    cfg = finetune_config(s, {"lr": 0.02}, epochs=3)
    assert (cfg.epochs, cfg.lr, cfg.steps, cfg.schedule, cfg.milestones) == (3, 0.02, 3, "cosine", ())
    with pytest.raises(ConfigError, match="lrr"):
        finetune_config(s, {"lrr": 0.02})


# --------------------------------------------------------------------------- trial tasks


def test_trial_tasks_supernet_fsp_finetune(tmp_path):
    """The three tasks as the trial entry point runs them, on digits with a tiny network."""
    from nni_robust.trial.run import run_task

    layout = "robnet-shared-3"
    settings = {"dataset": "digits", "device": "cpu", "space": {"layout": layout, "robnet_style": True},
                "supernet": {"epochs": 1, "batch_size": 128, "steps": 1, "step": 0.03},
                "evaluation": {"attack": "pgd", "steps": 2, "step": 0.01, "calib_images": 64, "eval_images": 64,
                               "batch_size": 64}}
    reports = []
    final, full = run_task({"task": "robnet_supernet", "args": {"width": 2, "path_drop_prob": 0.3},
                            "settings": settings, "work_dir": str(tmp_path), "model_id": 0}, reporter=reports.append)
    path = supernet_path(tmp_path / "supernet", 2)
    assert path.exists() and len(reports) == 1 and 0.0 <= final["probe_acc_adv"] <= final["probe_acc_clean"] + 0.2
    assert torch.load(path, weights_only=True)["sampler"] == {"kind": "path_drop", "drop_prob": 0.3}

    archs = [DenseRobArch.random(Layout.from_name(layout), random.Random(k)) for k in range(2)]
    steps = []
    final, full = run_task({"task": "robnet_fsp", "args": {"width": 2, "samples": [a.to_sample() for a in archs],
                                                          "fsp": {"images": 32, "batch_size": 16}},
                            "settings": settings, "work_dir": str(tmp_path), "model_id": 1}, reporter=steps.append)
    rows = json.loads((tmp_path / "trials" / "1" / "fsp.json").read_text())["results"]
    assert [r["sample"] for r in rows] == [a.to_sample() for a in archs] and len(steps) == 2
    for r in rows:
        assert r["indicator"] >= 0 and r["deep_cells"] == [2] and sorted(r["distances"]) == ["0", "1", "2"]
        assert r["indicator"] == pytest.approx(r["distances"]["2"]) and 0 <= r["acc_adv"] <= 1
    assert final["default"] == pytest.approx(sum(r["indicator"] for r in rows) / 2)

    steps = []
    final, full = run_task({"task": "robnet_finetune", "sample": archs[0].to_sample(),
                            "args": {"width": 2, "epochs": 2, "train_images": 256, "finetune": {"lr": 0.02}},
                            "settings": settings, "work_dir": str(tmp_path), "model_id": 2}, reporter=steps.append)
    assert len(steps) == 2 and [s["epoch"] for s in steps] == [1.0, 2.0]
    assert final["default"] == final["acc_adv"] == steps[-1]["acc_adv"]
    assert {"acc_clean", "acc_adv_before", "acc_clean_before", "density", "convs", "params_M", "mflops"} <= set(final)
    assert final["density"] == pytest.approx(arch_stats(archs[0]).density)
    assert full["finetune"]["lr"] == 0.02 and full["train_images"] == 256
    assert json.loads((tmp_path / "trials" / "2" / "finetune.json").read_text())["arch"] == archs[0].to_json()
    with pytest.raises(CheckpointError, match="width 3"):
        run_task({"task": "robnet_finetune", "sample": archs[0].to_sample(), "args": {"width": 3},
                  "settings": settings, "work_dir": str(tmp_path), "model_id": 3})
