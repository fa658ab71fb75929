"""Wsr-NAS's search procedure (Alg. 1): the units run in order, the estimators learn, a resumed search
is identical, the naive variant (Table 6) updates A through the supernet, the strategy exports and
summarises the final evaluation at every strength.

Networks are real but tiny: the DARTS supernet with 3 cells, 2 channels and 3 candidate operations on
the 8x8 ``digits`` images, PGD-1, two warm-up architectures and two search iterations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nni_robust.data import DATASETS, TensorLoader, load_dataset
from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.spaces.darts import DartsArch, build_darts_space
from nni_robust.strategies.wsrnas.search import UNIT_KINDS, WsrSearch, loss_key
from nni_robust.strategies.wsrnas.strategy import WsrStrategy, strength_attacks_of, wsr_summary
from nni_robust.strategies.wsrnas.tasks import rank_correlation, search_warnings
from nni_robust.strategies.wsrnas.vle import WsrConfig

INFO = DATASETS["digits"]
SPACE = {"name": "darts", "num_cells": 3, "primitives": ["none", "skip_connect", "dil_conv_3x3"]}
TINY = dict(init_channels=2, warmup_population=2, epochs=2, batch_size=8, train_batches=1, val_images=16,
            val_batch_size=16, pgd_steps=1, ane_samples=4, ane_batch_size=8, ane_warmup_steps=1, ane_total_steps=50,
            vle_warmup_epochs=3, vle_batch_size=2, arch_lr=0.05, seed=0)
SETTINGS = {"dataset": "digits", "val_fraction": 0.5, "device": "cpu", "seed": 0, "space": SPACE}
NOT_TIMED = ("time_",)


def _untimed(history):
    return [{k: v for k, v in h.items() if not k.startswith(NOT_TIMED)} for h in history]


def _params(tmp, name, **args):
    return {"task": "wsrnas_search", "settings": SETTINGS, "work_dir": str(tmp), "model_id": name,
            "args": {"method_args": dict(TINY, **args), "search_dir": str(tmp / f"search{name}")}}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole tiny search through the trial task, with its reports."""
    from nni_robust.trial.run import run_task

    tmp = tmp_path_factory.mktemp("wsr")
    reports = []
    final, result = run_task(_params(tmp, 0), reporter=reports.append)
    return {"final": final, "result": result, "reports": reports, "tmp": tmp}


def test_units_run_in_the_order_of_alg1(full):
    history = full["result"]["history"]
    kinds = [UNIT_KINDS[int(h["phase"])] for h in history]
    assert kinds == ["warmup"] * 2 + ["population"] * 2 + ["vle_warmup"] + ["search"] * 2
    assert [h["index"] for h in history] == [1, 2, 1, 2, 1, 1, 2]
    assert full["result"]["units"] == 7.0
    # the weights' cosine schedule runs over the 6 training epochs, from lr 0.1 down
    lrs = [h["w_lr"] for h in history if "w_lr" in h]
    assert lrs[0] == pytest.approx(0.1) and all(b < a for a, b in zip(lrs, lrs[1:]))


def test_intermediate_results_hold_measured_and_estimated_losses_per_strength(full):
    reports = full["reports"]
    eps = WsrConfig(**TINY).search_eps
    assert eps == (0.03, 0.045, 0.06, 0.075, 0.09, 0.105) and len(reports) == 4  # 2 population + 2 search
    for i, r in enumerate(reports):
        measured = [r[loss_key(None)], *(r[loss_key(e)] for e in eps)]
        assert all(math.isfinite(v) and v > 0 for v in measured)
        assert r[loss_key(eps[-1])] > r[loss_key(None)]  # the largest strength costs more than clean inputs
        assert all(0.0 <= r[loss_key(e, "acc")] <= 1.0 for e in (None, *eps)) and 0.0 <= r["default"] <= 1.0
        estimated = [k for k in r if k.startswith("est_loss")]
        assert len(estimated) == (7 if i >= 2 else 0)  # the VLE estimates only once it is trained
    last = reports[-1]
    assert last["objective"] == pytest.approx(0.8 * last[loss_key(None)] + 0.2 * sum(
        w / 28 * last[loss_key(e)] for w, e in zip((1, 2, 3, 5, 7, 10), eps)), rel=1e-5)
    assert full["final"]["default"] == pytest.approx(last["default"])
    assert full["final"]["warnings"] == float(len(full["result"]["warnings"]))


def test_the_estimators_get_trained_and_an_architecture_is_derived(full):
    tmp = full["tmp"]
    ckpt = torch.load(tmp / "search0" / "checkpoint.pt", weights_only=True)
    # Ma: 4 units x 4 images x (N1 + 1) leave-one-out labels; Mv: one entry per measured architecture
    assert ckpt["ane_memory"]["entries"]["x"].shape[0] == 4 * 4 * 4
    assert ckpt["vle_memory"]["entries"]["losses"].shape == (4, 7)
    assert bool(ckpt["vle"]["scaled"]) and ckpt["vle_optimizer"]["state"]
    assert ckpt["estimator"]["gain.weight"].abs().sum() > 0  # A-ANE's correction starts at 0, then learns
    assert ckpt["ane_scheduler"]["_step_count"] > 4
    history = full["result"]["history"]
    search = [h for h in history if h["phase"] == 3.0]
    assert all(h["arch_steps"] == 1.0 for h in search)  # one per training batch
    torch.manual_seed(0)
    a0 = build_darts_space(SPACE, INFO, 2).alphas
    moved = max(float((ckpt["model"][f"alphas.{t}"] - a0[t].detach()).abs().max()) for t in a0)
    assert moved > 0.02  # two Adam steps of lr 0.05 through the VLE
    arch = DartsArch.from_json((tmp / "search0" / "architecture.json").read_text())
    assert set(arch.cell_types) == {"normal", "reduce"}
    assert all(op != "none" for t in arch.cell_types for node in arch.node_pairs(t) for op, _ in node)
    rows = [json.loads(line) for line in (tmp / "search0" / "architectures.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and DartsArch.from_json(rows[-1]["arch"]) == arch
    assert {"vle_rank_corr", "ane_mse_ratio", "arch_entropy_ratio"} <= set(full["result"])


def test_an_interrupted_search_resumes_to_identical_results(full):
    from nni_robust.trial.run import run_task

    tmp = full["tmp"]

    class Stop(Exception):
        pass

    def stop_after_two(metrics, seen=[]):
        seen.append(metrics)
        if len(seen) == 2:  # after the second population unit (its checkpoint is written)
            raise Stop()

    with pytest.raises(Stop):
        run_task(_params(tmp, 1), reporter=stop_after_two)
    assert torch.load(tmp / "search1" / "checkpoint.pt", weights_only=True)["step"] == 4
    reports = []
    _, resumed = run_task(_params(tmp, 1), reporter=reports.append)
    assert len(reports) == 2  # only the search units were left
    assert _untimed(resumed["history"]) == _untimed(full["result"]["history"])
    assert resumed["arch"] == full["result"]["arch"]
    a = torch.load(tmp / "search0" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp / "search1" / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    again, _ = run_task(_params(tmp, 1))  # a finished checkpoint: nothing more runs
    assert again["units"] == 7.0


def test_a_checkpoint_of_other_settings_is_refused(full):
    torch.manual_seed(0)
    model = build_darts_space(SPACE, INFO, 2)
    with pytest.raises(CheckpointError, match="alpha: 0.8 there, 0.6 here"):
        WsrSearch(model, WsrConfig(**dict(TINY, alpha=0.6)), device="cpu",
                  checkpoint_path=full["tmp"] / "search0" / "checkpoint.pt")


def test_naive_search_updates_the_architecture_through_the_supernet(tmp_path):
    """Table 6's "Basic" search: every strength by PGD, A by the gradient of eq. 10 through the supernet."""
    digits = load_dataset("digits", val_fraction=0.5, split="search")
    cfg = WsrConfig(**dict(TINY, pgd_eps=(0.03, 0.06), estimated_eps=(), beta_i=(1.0, 2.0), ewss=False))
    torch.manual_seed(0)
    model = build_darts_space(SPACE, INFO, 2)
    a0 = {t: a.detach().clone() for t, a in model.alphas.items()}
    search = WsrSearch(model, cfg, device="cpu")
    assert search.estimator is None and search.vle is None
    assert [k for k, _ in search.plan] == ["warmup", "warmup", "search", "search"]  # nothing to warm up
    train = TensorLoader(*digits.train, batch_size=8, shuffle=True, augment=True, seed=0, drop_last=True, flip=False)
    ane = TensorLoader(*digits.train, batch_size=4, shuffle=True, seed=1, drop_last=True)
    val = TensorLoader(digits.val[0][:16], digits.val[1][:16], batch_size=8, shuffle=False)
    history = search.fit(train, ane, val)
    last = history[-1]
    assert not any(k.startswith("est_") for k in last) and last["time_search_s"] > 0 and "time_vle_s" not in last
    assert {loss_key(None), loss_key(0.03), loss_key(0.06)} <= set(last)
    moved = max(float((model.alphas[t].detach() - a0[t]).abs().max()) for t in a0)
    assert moved > 0.05  # one Adam step of lr 0.05 per validation batch: 2 batches x 2 iterations


def test_rank_correlation_and_warnings():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
    cfg = WsrConfig()
    good = [{"phase": 3.0, "est_objective": float(i), "objective": float(i) + 0.01, "arch_entropy": 1.0,
             "ane_mse": 1.0, "ane_mse_wa": 2.0} for i in range(6)]
    diag, warnings = search_warnings(good, cfg, num_ops=8)
    assert warnings == [] and diag["vle_rank_corr"] == pytest.approx(1.0) and diag["ane_mse_ratio"] == 0.5
    bad = [dict(h, objective=-h["objective"], ane_mse=3.0, arch_entropy=math.log(8)) for h in good]
    diag, warnings = search_warnings(bad, cfg, num_ops=8)
    assert len(warnings) == 3 and diag["vle_rank_corr"] == pytest.approx(-1.0)
    assert "VLE" in warnings[0] and "WA-ANE" in warnings[1] and "barely moved" in warnings[2]


# --------------------------------------------------------------------------- the strategy

ATTACKS = {f"pgd20@{e:g}": {"name": "pgd", "eps": e, "step": e * 2.5 / 20, "steps": 20} for e in (0.03, 0.1, 0.17, 0.25)}
DARTS_SPACE = {"name": "darts", "num_cells": 3}


class FakeTrials:
    """The trial entry point without training: the search writes a random DARTS architecture."""

    def __init__(self):
        self.calls = []

    def __call__(self, params):
        self.calls.append(params)
        args = params["args"]
        if params["task"] == "wsrnas_search":
            self.arch = DartsArch.random(("normal", "reduce"), 0)
            Path(args["search_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(args["search_dir"]) / "architecture.json").write_text(self.arch.to_json())
            (Path(args["search_dir"]) / "search_result.json").write_text(
                json.dumps({"default": 0.4, "vle_rank_corr": 0.1, "warnings": ["the VLE does not rank"]}))
            return {"default": 0.4, "vle_rank_corr": 0.1, "warnings": 1.0}
        assert params["task"] == "final" and DartsArch.from_json(args["arch"]) == self.arch
        return {"default": 0.5, "acc_clean": 0.9, **{f"acc_{k}": a for k, a in zip(ATTACKS, (0.8, 0.4, 0.2, 0.1))}}


def make_tuner(tmp_path, attacks=ATTACKS, **strategy_args):
    from nni_robust.strategies.bridge import StrategyTuner

    return StrategyTuner(strategy="wsrnas", space=DARTS_SPACE, strategy_args=strategy_args,
                         settings={"dataset": "digits", "val_fraction": 0.5, "space": DARTS_SPACE,
                                   "final": {"attacks": attacks}},
                         work_dir=tmp_path / "work", flush_timeout=2.0)


def test_strategy_search_export_final_and_the_strength_summary(tmp_path):
    from nni_robust.strategies.bridge import run_in_process

    fake = FakeTrials()
    tuner = make_tuner(tmp_path, method_args={"alpha": 0.7, "epochs": 3}, final_init_channels=4)
    finished = run_in_process(tuner, fake, max_trials=10, timeout=60)
    assert tuner.error is None and [t["status"] for t in finished] == ["SUCCEEDED"] * 2
    search, final = fake.calls
    work = tmp_path / "work"
    assert search["task"] == "wsrnas_search" and search["args"]["search_dir"] == str(work / "search")
    sent = search["args"]["method_args"]
    assert sent["alpha"] == 0.7 and sent["beta"] == pytest.approx(0.3) and sent["epochs"] == 3
    assert WsrConfig.from_dict(sent) == WsrConfig(alpha=0.7, epochs=3)  # the trial gets the resolved settings
    assert final["args"]["space"] == {"name": "darts", "num_cells": 20} and final["args"]["init_channels"] == 4
    best = json.loads((work / "best_architecture.json").read_text())
    assert DartsArch.from_json(best["arch"]) == fake.arch and best["method"] == "wsrnas"
    assert best["final_space"] == {"name": "darts", "num_cells": 20} and best["search"]["vle_rank_corr"] == 0.1
    report = json.loads((work / "wsrnas_report.json").read_text())
    assert report["final"]["strengths"] == {"0.03": 0.8, "0.1": 0.4, "0.17": 0.2, "0.25": 0.1}
    assert report["final"]["mean"] == pytest.approx(0.375) and report["final"]["clean"] == 0.9
    assert report["warnings"] == ["the VLE does not rank"]


def test_strategy_presets_and_errors(tmp_path):
    plus = make_tuner(tmp_path / "p", preset="plus").strategy
    assert plus.config.n1 == 3 and plus.config.n2 == 8 and len(plus.method_args["beta_i"]) == 11
    with pytest.raises(ConfigError, match="'alhpa' in method_args"):
        make_tuner(tmp_path / "a", method_args={"alhpa": 0.8})
    with pytest.raises(ConfigError, match=r"method_args.alpha \+ method_args.beta must equal 1"):
        make_tuner(tmp_path / "b", method_args={"alpha": 0.8, "beta": 0.3})
    with pytest.raises(ConfigError, match=r"has none at \[0.17, 0.25\]"):
        make_tuner(tmp_path / "c", attacks={k: v for k, v in ATTACKS.items() if v["eps"] < 0.15})
    with pytest.raises(ConfigError, match="'darts' or 'dsara'"):
        WsrStrategy(settings={"space": {"layout": "cellwise"}}, final=False)
    assert WsrStrategy(settings={"space": DARTS_SPACE}, final=False).final is False  # no attacks needed


def test_summary_of_a_final_result():
    assert strength_attacks_of({**ATTACKS, "fgsm": {"name": "fgsm", "eps": 0.1}}, 0.1) == ["pgd20@0.1"]
    attacks = {**ATTACKS, "pgd7@0.1": {"name": "pgd", "eps": 0.1, "step": 0.01, "steps": 7}}
    final = {"acc_clean": 0.9, "acc_pgd20@0.03": 0.5, "acc_pgd20@0.1": 0.3, "acc_pgd7@0.1": 0.35}
    out = wsr_summary(final, attacks, (0.03, 0.1, 0.17))
    assert out["strengths"] == {"0.03": 0.5, "0.1": 0.3} and "mean" not in out  # PGD-20 beats PGD-7; 0.17 missing
