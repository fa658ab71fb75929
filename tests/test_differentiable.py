"""DSARA / RNAS as differentiable searches: gamma* (DSARA eq. 8), the stage switch, RNAS
perturbations, exact resume, the strategy through the bridge, and the trial tasks.

Networks are real but tiny: the DARTS / DSARA supernets of ``nni_robust.spaces.darts``
with 3-4 cells, 2 channels and 3 candidate operations, on the 8x8 ``digits`` images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nni_robust.data import DATASETS, TensorLoader, load_dataset
from nni_robust.errors import ArchitectureError, CheckpointError, ConfigError
from nni_robust.spaces.darts import DartsArch, DartsSupernet, build_darts_space
from nni_robust.strategies.differentiable.bilevel import DifferentiableSearch, arch_entropy
from nni_robust.strategies.differentiable.dsara import DsaraConfig, combine_gradients, gamma_star
from nni_robust.strategies.differentiable.methods import search_config
from nni_robust.strategies.differentiable.rnas import (DIVERGENCES, RnasConfig, divergence, maximize_divergence,
                                                       uniform_perturbation)

INFO = DATASETS["digits"]
PRIMS = ("none", "skip_connect", "dil_conv_3x3")
SPACE = {"name": "darts", "num_cells": 3, "primitives": list(PRIMS)}
DSARA_SPACE = {"name": "dsara", "num_cells": 4, "primitives": ["skip_connect", "dil_conv_3x3"]}
TINY = dict(init_channels=2, batch_size=8, eval_images=16, eval_batch_size=16, steps=1)



@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_fraction=0.5, split="search")


def supernet(space=SPACE, seed=0, channels=2):
    torch.manual_seed(seed)
    return build_darts_space(space, INFO, channels)


def loaders(digits, n=16, batch=8):
    train = TensorLoader(*digits.train, batch_size=batch, augment=True, seed=0, drop_last=True, flip=False,
                         max_images=n)
    val = TensorLoader(*digits.val, batch_size=batch, augment=True, seed=1, drop_last=True, flip=False,
                       max_images=n)
    ev = TensorLoader(*digits.val, batch_size=16, shuffle=False, max_images=16)
    return train, val, ev


class Recorder:
    """A SummaryWriter stand-in that records what it is given."""

    def __init__(self):
        self.scalars, self.images = {}, []

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))

    def add_image(self, tag, img, step, dataformats="CHW"):
        self.images.append((tag, tuple(img.shape), dataformats, float(img.min()), float(img.max())))

    def flush(self):
        pass


# --------------------------------------------------------------------------- gamma* (DSARA eq. 7-8)

def _brute(a, b, n=200001):
    gammas = np.linspace(0.0, 1.0, n)
    vals = ((gammas[:, None] * a[None] + (1 - gammas[:, None]) * b[None]) ** 2).sum(1)
    return gammas[vals.argmin()], vals.min()


@pytest.mark.parametrize("seed", range(12))
def test_gamma_star_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 40))
    a, b = rng.normal(size=d), rng.normal(size=d)
    if seed % 3 == 1:
        b = a + 0.1 * rng.normal(size=d)  # nearly parallel gradients
    g = float(gamma_star(torch.tensor(a), torch.tensor(b)))
    g_bf, v_bf = _brute(a, b)
    v = float(((g * a + (1 - g) * b) ** 2).sum())
    assert 0.0 <= g <= 1.0
    assert v <= v_bf + 1e-9 * max(1.0, v_bf)
    assert g == pytest.approx(g_bf, abs=2e-5)


@pytest.mark.parametrize("case,expected", [("nat_twice_adv", 0.0), ("adv_twice_nat", 1.0),
                                           ("opposite_long_nat", None)])
def test_gamma_star_clipped_cases(case, expected):
    rng = np.random.default_rng(7)
    u = rng.normal(size=10)
    a, b = {"nat_twice_adv": (2 * u, u), "adv_twice_nat": (u, 2 * u), "opposite_long_nat": (-3 * u, u)}[case]
    g = float(gamma_star(torch.tensor(a), torch.tensor(b)))
    g_bf, v_bf = _brute(a, b)
    assert g == pytest.approx(g_bf, abs=2e-5)
    if expected is not None:
        assert g == expected  # clipped exactly to the boundary
    else:  # the minimum-norm point lies inside: gamma = 1/4 makes the combination vanish
        assert g == pytest.approx(0.25, abs=1e-6)


def test_gamma_star_equal_gradients_and_lists():
    u = torch.randn(3, 4)
    assert float(gamma_star(u, u.clone())) == 0.5  # every gamma is optimal: equal weights, no NaN
    assert float(gamma_star(torch.zeros(5), torch.zeros(5))) == 0.5
    parts_a, parts_b = [torch.randn(14, 3), torch.randn(14, 3)], [torch.randn(14, 3), torch.randn(14, 3)]
    flat = gamma_star(torch.cat([p.flatten() for p in parts_a]), torch.cat([p.flatten() for p in parts_b]))
    assert float(gamma_star(parts_a, parts_b)) == pytest.approx(float(flat))
    mixed = combine_gradients(parts_a, parts_b, flat)
    for m, pa, pb in zip(mixed, parts_a, parts_b):
        assert torch.allclose(m, flat * pa + (1 - flat) * pb, atol=1e-6)
    with pytest.raises(ConfigError, match="same number"):
        gamma_star(torch.zeros(3), torch.zeros(4))


# --------------------------------------------------------------------------- configs

def test_configs_paper_defaults_and_errors():
    d = DsaraConfig()
    assert (d.stage1_epochs, d.stage2_epochs, d.epochs, d.steps, d.init_channels) == (20, 10, 30, 7, 24)
    assert d.eps == pytest.approx(2 / 255) and d.step == pytest.approx(1 / 510)
    assert (d.alpha_lr, d.alpha_lr_stage2, d.alpha_betas, d.alpha_weight_decay) == (3e-4, 5e-5, (0.5, 0.999), 1e-3)
    assert (d.w_lr, d.w_momentum, d.w_weight_decay, d.w_min_lr, d.combine) == (0.025, 0.9, 3e-4, 0.0, "mgda")
    r = RnasConfig()
    assert (r.variant, r.epochs, r.warmup_epochs, r.lam, r.f, r.steps, r.batch_size) == ("max", 50, 15, 1.0, "kl", 10,
                                                                                          64)
    assert (r.eps, r.step, r.arch_first) == (0.031, 0.003, True)
    assert search_config({"method": "rnas", "variant": "uniform"}).variant == "uniform"
    roundtrip = search_config(d.to_dict())
    assert roundtrip == d
    with pytest.raises(ConfigError, match="'stage1_epoch'"):
        search_config("dsara", {"stage1_epoch": 3})
    with pytest.raises(ConfigError, match="combine"):
        DsaraConfig(combine="max")
    with pytest.raises(ConfigError, match="variant"):
        RnasConfig(variant="gauss")
    with pytest.raises(ConfigError, match="warmup_epochs"):
        RnasConfig(search_epochs=3, warmup_epochs=4)
    with pytest.raises(ConfigError, match="method"):
        search_config("darts", {})
    with pytest.raises(ConfigError, match="alpha_betas"):
        DsaraConfig(alpha_betas=(0.5,))


# --------------------------------------------------------------------------- RNAS pieces

def test_divergences():
    logits = torch.randn(6, 10)
    for name, f in DIVERGENCES.items():
        assert torch.allclose(f(logits, logits), torch.zeros(6), atol=1e-6), name
        other = f(logits + torch.randn(6, 10), logits)
        assert other.shape == (6,) and bool((other > 0).all()), name
    assert divergence("kl") is DIVERGENCES["kl"]
    # KL(p_nat || p_pert), TRADES' direction
    p, q = torch.softmax(logits, 1), torch.softmax(logits * 2, 1)
    assert torch.allclose(DIVERGENCES["kl"](logits * 2, logits), (p * (p.log() - q.log())).sum(1), atol=1e-5)
    with pytest.raises(ConfigError, match="Unknown divergence"):
        divergence("wasserstein")


def test_uniform_perturbation_is_uniform_on_the_ball_inside_the_box():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    x[:, :, 0] = 0.0  # a row on the box edge
    eps = 0.1
    xp = uniform_perturbation(x, eps)
    assert float((xp - x).abs().max()) <= eps + 1e-6
    assert float(xp.min()) >= 0.0 and float(xp.max()) <= 1.0
    lo, hi = (x - eps).clamp_min(0), (x + eps).clamp_max(1)
    u = (xp - lo) / (hi - lo)
    assert float(u.mean()) == pytest.approx(0.5, abs=0.02)     # uniform on [lo, hi]: mean 1/2
    assert float(u.var()) == pytest.approx(1 / 12, abs=0.01)   # variance 1/12
    assert float((xp[:, :, 0] == 0).float().mean()) < 0.01      # not clipped onto the face


def test_rnas_max_stays_in_the_ball_and_its_regularizer_never_decreases():
    torch.manual_seed(0)
    model = supernet().eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        target = model(x)
    eps = 0.05
    for f in ("kl", "l2"):
        hist: list[torch.Tensor] = []
        xp = maximize_divergence(model, x, target, eps=eps, step=0.01, steps=6, f=f, history=hist)
        assert float((xp - x).abs().max()) <= eps + 1e-6
        assert float(xp.min()) >= 0.0 and float(xp.max()) <= 1.0
        values = [float(h) for h in hist]
        assert len(values) == 7
        assert all(b >= a - 1e-7 for a, b in zip(values, values[1:])), values
        assert values[-1] > values[0]  # the ascent found larger f than its random start
        # ... and larger than random points of the ball (what RNAS-uniform uses)
        with torch.no_grad():
            uniform = DIVERGENCES[f](model(uniform_perturbation(x, eps)), target).mean()
            final = DIVERGENCES[f](model(xp), target).mean()
        assert float(final) > float(uniform)
        assert float(final) == pytest.approx(values[-1], rel=1e-4)
    # parameters' gradients are untouched (gradients w.r.t. the input only)
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- the engine

def test_arch_entropy_bounds():
    n = len(PRIMS)
    assert float(arch_entropy({"a": torch.full((14, n), 1 / n)})) == pytest.approx(math.log(n))
    assert float(arch_entropy({"a": torch.eye(n)[torch.zeros(14, dtype=torch.long)]})) == pytest.approx(0.0)


def test_dsara_stage_switch_at_the_configured_epoch(digits):
    train, val, ev = loaders(digits)
    cfg = DsaraConfig(stage1_epochs=2, stage2_epochs=1, **TINY)
    train, val = loaders(digits, n=8)[:2]  # one iteration per epoch
    writer, reports = Recorder(), []
    search = DifferentiableSearch(supernet(DSARA_SPACE), cfg, device="cpu", writer=writer, reporter=reports.append)
    calls = []
    inner = search.method.arch_gradients

    def spy(model, alphas, x, y, epoch):
        grads, stats = inner(model, alphas, x, y, epoch)
        calls.append((epoch, "gamma" in stats, "arch_loss_nat" in stats))
        return grads, stats

    search.method.arch_gradients = spy
    history = search.fit(train, val, ev)
    assert [h["stage"] for h in history] == [1.0, 1.0, 2.0]
    assert [h["alpha_lr"] for h in history] == [3e-4, 3e-4, 5e-5]
    assert {(e, g, n) for e, g, n in calls} == {(0, False, False), (1, False, False), (2, True, True)}
    assert "gamma" not in history[1] and 0.0 <= history[2]["gamma"] <= 1.0
    w_lrs = [h["w_lr"] for h in history]
    assert w_lrs[0] == pytest.approx(0.025) and w_lrs[0] > w_lrs[1] > w_lrs[2] > 0  # cosine over all 3 epochs
    # what the web UI and TensorBoard get
    assert len(reports) == 3 and {"default", "val_clean_acc", "val_adv_acc", "arch_entropy"} <= set(reports[-1])
    assert 0.0 <= reports[-1]["arch_entropy"] <= math.log(2) + 1e-6
    last = reports[-1]
    assert last["default"] == pytest.approx(0.5 * last["val_clean_acc"] + 0.5 * last["val_adv_acc"])
    assert [s for s, _ in writer.scalars["search/gamma"]] == [3]
    tags = sorted({t for t, *_ in writer.images})
    assert tags == ["arch/accurate", "arch/reduce", "arch/robust"]
    for _, shape, fmt, lo, hi in writer.images:
        assert shape[2] == 3 and shape[1] > shape[0] > 100 and fmt == "HWC" and 0 <= lo < hi <= 255  # heatmap figure
    arch = search.derive()
    assert isinstance(arch, DartsArch) and set(arch.cell_types) == {"accurate", "robust", "reduce"}


def test_sum_ablation_and_steps_touch_only_their_parameters(digits):
    train, _, _ = loaders(digits)
    search = DifferentiableSearch(supernet(), DsaraConfig(stage1_epochs=0, stage2_epochs=1, combine="sum", **TINY),
                                  device="cpu")
    x, y = next(iter(train))
    alphas = [a.detach().clone() for a in search.alphas]
    weights = [w.detach().clone() for w in search.weights]
    stats = search._arch_step(x, y, 0)
    assert float(stats["gamma"]) == 0.5
    assert all(torch.equal(w, w0) for w, w0 in zip(search.weights, weights))
    assert not all(torch.equal(a, a0) for a, a0 in zip(search.alphas, alphas))
    assert all(w.grad is None for w in search.weights)
    alphas = [a.detach().clone() for a in search.alphas]
    search._weight_step(x, y)
    assert all(torch.equal(a, a0) for a, a0 in zip(search.alphas, alphas))
    assert not all(torch.equal(w, w0) for w, w0 in zip(search.weights, weights))


def test_mgda_update_direction(digits):
    """Stage 2 sets alpha.grad to gamma* g_nat + (1 - gamma*) g_adv of the same batch (eq. 9-10)."""
    train, _, _ = loaders(digits)
    cfg = DsaraConfig(stage1_epochs=0, stage2_epochs=1, **TINY)
    search = DifferentiableSearch(supernet(), cfg, device="cpu")
    x, y = next(iter(train))
    torch.manual_seed(3)
    grads, stats = search.method.arch_gradients(search.model, search.alphas, x, y, 0)
    torch.manual_seed(3)
    x_adv = search.method.attack(search.model, x, y)
    ce = nn.functional.cross_entropy
    g_adv = torch.autograd.grad(ce(search.model(x_adv), y), search.alphas)
    g_nat = torch.autograd.grad(ce(search.model(x), y), search.alphas)
    gamma = gamma_star(g_nat, g_adv)
    assert float(stats["gamma"]) == pytest.approx(float(gamma), abs=1e-5)
    for g, gn, ga in zip(grads, g_nat, g_adv):
        assert torch.allclose(g, gamma * gn + (1 - gamma) * ga, atol=1e-6)


def test_rnas_warmup_freezes_alpha_then_updates_it(digits):
    train, val, ev = loaders(digits, n=8)
    for variant in ("max", "uniform"):
        search = DifferentiableSearch(supernet(), RnasConfig(variant=variant, search_epochs=2, warmup_epochs=1,
                                                             **TINY), device="cpu")
        before = [a.detach().clone() for a in search.alphas]
        search.fit(train, val, ev, max_epochs=1)
        assert all(torch.equal(a, b) for a, b in zip(search.alphas, before))  # warm-up: weights only
        history = search.fit(train, val, ev)
        assert not all(torch.equal(a, b) for a, b in zip(search.alphas, before))
        assert [h["arch_updated"] for h in history] == [0.0, 1.0]
        assert "reg" not in history[0] and history[1]["reg"] >= 0.0 and history[0]["train_reg"] >= 0.0


def test_exact_resume(digits, tmp_path):
    cfg = RnasConfig(search_epochs=2, warmup_epochs=0, **TINY)
    ref = DifferentiableSearch(supernet(), cfg, device="cpu")
    ref.fit(*loaders(digits, n=8)[:2])
    ckpt = tmp_path / "ckpt.pt"
    first = DifferentiableSearch(supernet(), cfg, device="cpu", checkpoint_path=ckpt)
    first.fit(*loaders(digits, n=8)[:2], max_epochs=1)
    resumed = DifferentiableSearch(supernet(seed=99), cfg, device="cpu", checkpoint_path=ckpt)
    assert resumed.epoch == 1
    resumed.fit(*loaders(digits, n=8)[:2])  # fresh loaders: their state comes from the checkpoint
    for a, b in zip(resumed.model.state_dict().values(), ref.model.state_dict().values()):
        assert torch.equal(a, b)
    drop = ("time_s", "images_per_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed.history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in ref.history]
    assert resumed.architectures == ref.architectures and len(ref.architectures) == 2
    with pytest.raises(CheckpointError, match="lam"):
        DifferentiableSearch(supernet(), cfg.replace(lam=2.0), device="cpu", checkpoint_path=ckpt)


def test_engine_rejects_a_model_without_architecture_parameters():
    with pytest.raises(ConfigError, match="arch_parameters"):
        DifferentiableSearch(nn.Linear(3, 2), DsaraConfig(), device="cpu")


# --------------------------------------------------------------------------- the strategy (through the bridge)

SEARCH_SPACE = {"name": "dsara", "num_cells": 4}


class FakeTrials:
    """The trial entry point without training: the search writes a random DSARA architecture."""

    def __init__(self, fail_search=False):
        self.calls, self.fail_search = [], fail_search

    def __call__(self, params):
        self.calls.append(params)
        args = params["args"]
        if params["task"] == "differentiable_search":
            if self.fail_search:
                raise RuntimeError("out of memory")
            arch = DartsArch.random(("accurate", "reduce", "robust"), 0,
                                    primitives=("max_pool_3x3", "skip_connect", "sep_conv_3x3"))
            Path(args["search_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(args["search_dir"]) / "architecture.json").write_text(arch.to_json())
            self.arch = arch
            return {"default": 0.4, "val_clean_acc": 0.5, "val_adv_acc": 0.3, "gamma": 0.2, "arch_entropy": 1.2}
        assert params["task"] == "final"
        assert DartsArch.from_json(args["arch"]) == self.arch
        return {"default": 0.25, "acc_clean": 0.6, "acc_pgd20": 0.25}


def make_tuner(tmp_path, space=SEARCH_SPACE, settings_space=SEARCH_SPACE, **strategy_args):
    from nni_robust.strategies.bridge import StrategyTuner

    args = {"method": "dsara", "method_args": {"stage1_epochs": 1, "stage2_epochs": 1}, **strategy_args}
    return StrategyTuner(strategy="differentiable", space=space, strategy_args=args,
                         settings={"dataset": "digits", "val_fraction": 0.5, "space": settings_space},
                         work_dir=tmp_path / "work", flush_timeout=2.0)


def test_strategy_search_export_final(tmp_path):
    from nni_robust.strategies.bridge import run_in_process

    fake = FakeTrials()
    tuner = make_tuner(tmp_path, final_space={"name": "dsara", "num_cells": 7}, final_init_channels=6)
    finished = run_in_process(tuner, fake, max_trials=10, timeout=60)
    assert tuner.error is None and [t["status"] for t in finished] == ["SUCCEEDED"] * 2
    search, final = fake.calls
    work = tmp_path / "work"
    assert search["task"] == "differentiable_search" and search["sample"] is None
    assert search["args"] == {"method": "dsara", "method_args": {"stage1_epochs": 1, "stage2_epochs": 1},
                              "search_dir": str(work / "search")}
    assert final["task"] == "final"
    assert final["args"]["space"] == {"name": "dsara", "num_cells": 7} and final["args"]["init_channels"] == 6
    assert DartsArch.from_json((work / "architecture.json").read_text()) == fake.arch
    best = json.loads((work / "best_architecture.json").read_text())
    assert DartsArch.from_json(best["arch"]) == fake.arch and best["method"] == "dsara"
    assert best["search"]["gamma"] == 0.2 and best["space"] == SEARCH_SPACE
    state = json.loads((work / "strategy_state.json").read_text())["strategy"]
    assert state["stage"] == "done" and state["final_result"]["acc_pgd20"] == 0.25
    # the paper's evaluation network by default: 20 cells, C = 64 (DSARA Sec. 5.3)
    default = make_tuner(tmp_path / "d").strategy
    assert default.final_space == {"name": "dsara", "num_cells": 20} and default.final_init_channels == 64


def test_strategy_errors(tmp_path):
    from nni_robust.strategies.bridge import run_in_process

    with pytest.raises(ConfigError, match="disagree"):  # tuner: DARTS cells; trials: DSARA cells
        make_tuner(tmp_path, space={"name": "darts", "num_cells": 8})
    with pytest.raises(ConfigError, match="'stage_epochs'"):
        make_tuner(tmp_path, method_args={"stage_epochs": 3})
    with pytest.raises(ConfigError, match="darts' or 'dsara'"):
        make_tuner(tmp_path, settings_space={"layout": "cellwise"})
    tuner = make_tuner(tmp_path / "fail")
    with pytest.raises(RuntimeError, match="search trial failed"):
        run_in_process(tuner, FakeTrials(fail_search=True), max_trials=10, timeout=60)


# --------------------------------------------------------------------------- trial side

def test_build_network_and_arch_parsing_dispatch_on_the_space():
    from nni_robust.spaces.dense_rob import DenseRobArch, DenseRobNetwork
    from nni_robust.strategies.networks import arch_from_json, build_network

    dense = DenseRobArch.random("cellwise-4", 0)
    assert isinstance(build_network(dense, width=4, info=INFO, space={"layout": "cellwise-4"}), DenseRobNetwork)
    assert arch_from_json(dense.to_json(), {"layout": "cellwise-4"}) == dense
    assert isinstance(build_network(None, width=2, info=INFO, space=SPACE), DartsSupernet)
    darts = DartsArch.random(("normal", "reduce"), 0)
    assert arch_from_json(darts.to_json(), SPACE) == darts
    with pytest.raises(ArchitectureError):
        arch_from_json(dense.to_json(), SPACE)
    with pytest.raises(ConfigError, match="space.name"):
        build_network(None, width=2, info=INFO, space={"name": "nasbench"})


def test_trial_tasks_search_then_final(tmp_path):
    """run.py's differentiable_search task on a tiny search, then the final task on its export."""
    from nni_robust.trial.run import run_task

    settings = {"dataset": "digits", "val_fraction": 0.5, "device": "cpu", "space": SPACE,
                "final": {"train": {"epochs": 1, "milestones": [1], "batch_size": 64, "steps": 1},
                          "attacks": {"fgsm": {"name": "fgsm", "eps": 0.03}}, "eval_images": 16}}
    reports = []
    method_args = dict(TINY, stage1_epochs=1, stage2_epochs=0, max_train=8, max_val=8)
    params = {"task": "differentiable_search", "settings": settings, "work_dir": str(tmp_path), "model_id": 0,
              "args": {"method": "dsara", "method_args": method_args, "search_dir": str(tmp_path / "s")}}
    final, full = run_task(params, reporter=reports.append)
    assert len(reports) == 1 and final["default"] == reports[0]["default"] and final["epochs"] == 1.0
    assert all(isinstance(v, float) for v in final.values())
    arch = DartsArch.from_json((tmp_path / "s" / "architecture.json").read_text())
    assert arch == DartsArch.from_json(full["arch"]) and set(arch.cell_types) == {"normal", "reduce"}
    (row,) = [json.loads(line) for line in (tmp_path / "s" / "architectures.jsonl").read_text().splitlines()]
    assert row["epoch"] == 1 and DartsArch.from_json(row["arch"]) == arch and "val_adv_acc" in row
    assert list((tmp_path / "trials" / "0" / "tensorboard" / "differentiable_search-0").glob("events.out.tfevents.*"))
    again, _ = run_task(params)  # a rerun finds the finished checkpoint: no more training, same architecture
    assert again["epochs"] == 1.0 and DartsArch.from_json(_["arch"]) == arch
    params = {"task": "final", "settings": settings, "work_dir": str(tmp_path), "model_id": 1,
              "args": {"arch": arch.to_json(), "init_channels": 2, "space": dict(SPACE, num_cells=4)}}
    final, report = run_task(params)
    assert set(report["accuracy"]) == {"clean", "fgsm"} and 0.0 <= final["acc_fgsm"] <= 1.0
    assert final["default"] == final["acc_clean"]  # no pgd20 in these attacks
    from nni_robust.strategies.settings import TrialSettings
    from nni_robust.strategies.final import evaluate_checkpoint

    acc = evaluate_checkpoint(TrialSettings.from_dict(settings), tmp_path / "trials" / "1" / "model.pt")
    assert acc == report["accuracy"]
