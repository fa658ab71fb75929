"""Which epoch's architecture a differentiable search exports (DSARA Sec. 4.3: "we will choose the
neural architectures before the performance degradation").

The rules on hand-checked synthetic histories, their settings' errors, and the strategy (through the
bridge, with fake trials) exporting the chosen epoch's architecture and recording why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nni_robust.errors import ConfigError
from nni_robust.spaces.darts import DartsArch
from nni_robust.strategies.differentiable.selection import SelectRule, read_architectures, select_epoch

# DSARA with stage1_epochs = 3, stage2_epochs = 5. Watched: epoch 3 (end of stage 1) to 8.
# The stage-1 dip of epoch 2 is not watched. Best so far: .45 .47 .48 .48 | epoch 7 (.44) is more
# than 0.02 below .48 -> the degradation; the export is epoch 6 (.475, within 0.02 of .48).
DSARA = [0.30, 0.10, 0.45, 0.47, 0.48, 0.475, 0.44, 0.50]
ROWS = [{"epoch": e + 1, "stage": 1 if e < 3 else 2, "default": v} for e, v in enumerate(DSARA)]


def test_before_degradation_on_a_hand_checked_history():
    out = select_epoch(ROWS, rule="before_degradation", tolerance=0.02)
    assert (out["epoch"], out["degraded_at"], out["value"]) == (6, 7, 0.475)
    assert out["watched"] == [3, 8] and out["last_epoch"] == 8 and not out["fallback"]
    assert (out["best_epoch"], out["best_value"]) == (8, 0.50)
    assert "epoch 7" in out["reason"] and "(6)" in out["reason"] and "0.4800" in out["reason"]
    # a looser tolerance: .44 is within 0.05 of .48 -> no degradation -> the last epoch
    loose = select_epoch(ROWS, rule="before_degradation", tolerance=0.05)
    assert (loose["epoch"], loose["degraded_at"]) == (8, None) and "never fell" in loose["reason"]
    # tolerance 0: the first drop at all (epoch 6, .475 < .48) -> epoch 5
    assert select_epoch(ROWS, rule="before_degradation", tolerance=0.0)["epoch"] == 5
    # a degradation right after the end of stage 1 keeps the first stage's architecture
    early = [dict(r, default=0.2) if r["epoch"] == 4 else r for r in ROWS]
    assert select_epoch(early)["epoch"] == 3


def test_best_last_and_the_watched_epochs():
    assert select_epoch(ROWS, rule="best")["epoch"] == 8
    assert select_epoch(ROWS, rule="last")["epoch"] == 8
    # best is the earliest of equal values, over the watched epochs only (the stage-1 .9 is not watched)
    rows = [dict(r, default=v) for r, v in zip(ROWS, [0.9, 0.1, 0.3, 0.6, 0.2, 0.6, 0.5, 0.4])]
    assert select_epoch(rows, rule="best")["epoch"] == 4
    # val_adv_acc instead of the robust reward
    rows = [dict(r, val_adv_acc=v) for r, v in zip(ROWS, [0.1, 0.1, 0.2, 0.25, 0.3, 0.2, 0.3, 0.3])]
    assert select_epoch(rows, metric="val_adv_acc")["epoch"] == 5
    # RNAS: no stage 2; the warm-up epochs (alpha not updated) are not watched
    rnas = [{"epoch": e, "stage": 1, "arch_updated": float(e > 2), "default": v}
            for e, v in zip(range(1, 6), [0.9, 0.8, 0.3, 0.35, 0.34])]
    best = select_epoch(rnas, rule="best")
    assert best["epoch"] == 4 and best["watched"] == [3, 5]
    assert select_epoch(rnas, rule="before_degradation")["epoch"] == 5  # .34 is within 0.02 of .35
    # a single-stage history without flags: every epoch is watched
    plain = [{"epoch": e, "default": v} for e, v in zip(range(1, 5), [0.2, 0.5, 0.4, 0.6])]
    assert select_epoch(plain)["epoch"] == 2 and select_epoch(plain, rule="best")["epoch"] == 4


def test_non_finite_and_missing_metrics():
    nan = [dict(r, default=math.nan) if r["epoch"] == 5 else r for r in ROWS]
    out = select_epoch(nan)
    assert (out["epoch"], out["degraded_at"]) == (4, 5)  # a NaN epoch is a degradation
    assert select_epoch(nan, rule="best")["epoch"] == 8  # and never the best
    # no per-epoch validation (eval_images: 0): the rule cannot apply -> the last epoch, flagged
    bare = [{"epoch": r["epoch"], "stage": r["stage"]} for r in ROWS]
    out = select_epoch(bare)
    assert out["epoch"] == 8 and out["fallback"] and "eval_images" in out["reason"]
    with pytest.raises(ConfigError, match="at least one epoch"):
        select_epoch([])


@pytest.mark.parametrize("value, match", [
    ("first", r"strategy_args\.select\.rule must be one of \['before_degradation', 'best', 'last'\], but got 'first'"),
    ({"rule": "best", "metric": "val_acc"}, r"strategy_args\.select\.metric must be one of .*'val_acc'"),
    ({"tolerance": -0.1}, r"strategy_args\.select\.tolerance must be a finite number >= 0.*-0\.1"),
    ({"tolerance": True}, r"strategy_args\.select\.tolerance .*True"),
    ({"tolerance": "0.02"}, r"strategy_args\.select\.tolerance .*'0\.02'"),
    ({"rul": "best"}, r"strategy_args\.select has unknown keys \['rul'\]"),
    (3, r"strategy_args\.select must be a rule name"),
])
def test_select_rule_errors_name_the_full_key(value, match):
    with pytest.raises(ConfigError, match=match):
        SelectRule.from_arg(value, method="dsara")


def test_method_defaults():
    assert SelectRule.from_arg(None, method="dsara") == SelectRule("before_degradation", "default", 0.02)
    assert SelectRule.from_arg(None, method="rnas").rule == "last"
    assert SelectRule.from_arg("best", method="rnas") == SelectRule("best", "default", 0.02)
    assert SelectRule.from_arg({"tolerance": 0}, method="dsara").rule == "before_degradation"


# --------------------------------------------------------------------------- the strategy

CELLS = ("accurate", "reduce", "robust")
PRIMS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3")
ARCHS = [DartsArch.random(CELLS, seed, primitives=PRIMS) for seed in range(len(DSARA))]
SPACE = {"name": "dsara", "num_cells": 4}


class FakeTrials:
    """The search trial writes what ``differentiable_search`` writes: ``architecture.json`` (the last
    epoch's) and one row per epoch in ``architectures.jsonl``; the final trial trains nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, params):
        self.calls.append(params)
        args = params["args"]
        if params["task"] == "differentiable_search":
            folder = Path(args["search_dir"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "architecture.json").write_text(ARCHS[-1].to_json())
            with (folder / "architectures.jsonl").open("w") as fh:
                for row, arch in zip(ROWS, ARCHS):
                    fh.write(json.dumps({**row, "val_clean_acc": 0.6, "val_adv_acc": 0.3,
                                         "arch": json.loads(arch.to_json())}) + "\n")
            return {"default": DSARA[-1], "epochs": float(len(DSARA))}
        return {"default": 0.25, "acc_clean": 0.6}


def run_strategy(tmp_path, **strategy_args):
    from nni_robust.strategies.bridge import StrategyTuner, run_in_process

    tuner = StrategyTuner(strategy="differentiable", space=SPACE,
                          strategy_args={"method": "dsara", "method_args": {"stage1_epochs": 3, "stage2_epochs": 5},
                                         "final_space": SPACE, "final_init_channels": 2, **strategy_args},
                          settings={"dataset": "digits", "val_fraction": 0.5, "space": SPACE},
                          work_dir=tmp_path / "work", flush_timeout=2.0)
    fake = FakeTrials()
    run_in_process(tuner, fake, max_trials=10, timeout=60)
    assert tuner.error is None
    return tmp_path / "work", fake


def test_the_strategy_exports_the_architecture_before_the_degradation(tmp_path):
    work, fake = run_strategy(tmp_path)  # DSARA's default rule
    assert DartsArch.from_json((work / "architecture.json").read_text()) == ARCHS[5]  # epoch 6
    best = json.loads((work / "best_architecture.json").read_text())
    assert DartsArch.from_json(best["arch"]) == ARCHS[5]
    sel = best["selection"]
    assert (sel["rule"], sel["epoch"], sel["degraded_at"], sel["last_epoch"]) == ("before_degradation", 6, 7, 8)
    assert sel["metrics"]["default"] == 0.475 and sel["tolerance"] == 0.02 and "fell" in sel["reason"]
    assert best["search"]["default"] == DSARA[-1]  # the search trial's own result: its last epoch
    final = fake.calls[-1]
    assert final["task"] == "final" and DartsArch.from_json(final["args"]["arch"]) == ARCHS[5]
    assert len(read_architectures(work / "search")) == len(DSARA)


@pytest.mark.parametrize("select, epoch", [("last", 8), ({"rule": "best"}, 8),
                                           ({"rule": "before_degradation", "tolerance": 0.0}, 5)])
def test_the_strategy_follows_the_configured_rule(tmp_path, select, epoch):
    work, fake = run_strategy(tmp_path, select=select)
    assert DartsArch.from_json((work / "architecture.json").read_text()) == ARCHS[epoch - 1]
    assert json.loads((work / "best_architecture.json").read_text())["selection"]["epoch"] == epoch
    assert DartsArch.from_json(fake.calls[-1]["args"]["arch"]) == ARCHS[epoch - 1]


def test_a_bad_rule_fails_when_the_strategy_is_built(tmp_path):
    from nni_robust.strategies.bridge import StrategyTuner

    with pytest.raises(ConfigError, match=r"strategy_args\.select\.rule .*'earliest'"):
        StrategyTuner(strategy="differentiable", space=SPACE,
                      strategy_args={"method": "dsara", "select": {"rule": "earliest"}},
                      settings={"dataset": "digits", "space": SPACE}, work_dir=tmp_path / "w")
