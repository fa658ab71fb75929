"""The anti-bandit strategy (strategies/abandit/strategy.py), its trial task (tasks.py, search.py), the
search-signal checks (diagnostics.py) and the report (report.py).

The strategy runs under the bridge tuner driven in-process (``run_in_process``): in generic mode on a
toy categorical NNI space whose trials compute an analytic reward; in supernet mode with fake
``abandit_search`` trials that credit synthetic rewards to the search state, as the real task does.
The real task runs on a tiny supernet on the digits data.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nni
import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace

from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.spaces.abandit import ABanditArch, abandit_choices, abandit_layout
from nni_robust.strategies.abandit.bandit import AntiBandit, total_samples
from nni_robust.strategies.abandit.diagnostics import abandon_overlaps, detrend, edge_pvalues, search_signal
from nni_robust.strategies.abandit.search import STATE_FILE, SearchConfig, SearchState
from nni_robust.strategies.abandit.strategy import AntiBanditStrategy
from nni_robust.strategies.bridge import StrategyTuner, run_in_process
from nni_robust.strategies.settings import TrialSettings

# --------------------------------------------------------------------------- generic mode on a toy space


class ToyChoices(ModelSpace):
    """Two categorical choices over 0, 1, 2."""

    def __init__(self):
        super().__init__()
        for label in ("x0", "x1"):
            self.add_mutable(nni.choice(label, [0, 1, 2]))


TOY = f"{__name__}.ToyChoices"


def toy_value(sample):
    """The analytic objective: 0.4, plus 0.15 for each choice at 2 (optimum 0.7 at x0 = x1 = 2)."""
    return 0.4 + 0.15 * (sample["x0"] == 2) + 0.15 * (sample["x1"] == 2)


def toy_tuner(work, **args):
    args = {"seed": 0, "samples_per_arm": 3, "final": False, **args}
    return StrategyTuner(strategy="abandit", space={"name": TOY}, strategy_args=args,
                         settings={"dataset": "digits"}, work_dir=work, flush_timeout=2.0)


def toy_trial(params):
    assert params["task"] == "evaluate" and params["args"] == {}
    return {"default": toy_value(params["sample"])}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generic_mode_reaches_the_optimum_of_an_analytic_reward(tmp_path, seed):
    tuner = toy_tuner(tmp_path, seed=seed)
    finished = run_in_process(tuner, toy_trial, max_trials=100, timeout=120)
    assert tuner.error is None
    strategy = tuner.strategy
    assert strategy.mode == "generic" and strategy.bandit.done
    assert strategy.bandit.result() == {"x0": 2, "x1": 2}
    # one trial per sample, T (2 + 3) samples until one option per edge (replayed repeats count too)
    assert len(strategy.records) == total_samples(strategy.bandit.edges, 3) == 15
    assert len(finished) + tuner.engine.num_replayed == 15
    rewards = [r["reward"] for r in strategy.records]
    assert rewards == pytest.approx([100 * toy_value(strategy.sample_of(r)) for r in strategy.records])
    best = json.loads((tmp_path / "best_architecture.json").read_text())
    assert best["sample"] == {"x0": 2, "x1": 2} and best["mode"] == "generic" and "warnings" in best
    report = tmp_path / "abandit_report"
    assert {p.name for p in report.iterdir()} >= {"report.md", "arms.csv", "abandons.csv", "steps.csv", "search.png"}
    assert len((report / "arms.csv").read_text().splitlines()) == 1 + 6
    assert len((report / "abandons.csv").read_text().splitlines()) == 1 + 4  # 2 edges x (3 - 1) abandons


def test_generic_mode_resumes_mid_search_with_identical_samples(tmp_path):
    whole = toy_tuner(tmp_path / "whole", seed=5)
    run_in_process(whole, toy_trial, max_trials=100, timeout=120)
    expected = whole.strategy.records
    first = toy_tuner(tmp_path / "parts", seed=5)
    run_in_process(first, toy_trial, max_trials=7, timeout=120)  # the budget ends mid-phase (first abandon at 9)
    assert first.strategy._stage == "search" and len(first.strategy.records) == 7
    saved = json.loads((tmp_path / "parts" / "strategy_state.json").read_text())["strategy"]
    assert saved["pending"] is not None and len(saved["records"]) == 7  # drawn, not credited: resubmitted
    second = toy_tuner(tmp_path / "parts", seed=5)
    run_in_process(second, toy_trial, max_trials=100, timeout=120)
    assert second.strategy._stage == "done"
    assert second.strategy.records == expected
    assert second.strategy.bandit.state_dict() == whole.strategy.bandit.state_dict()


def test_strategy_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="mode"):
        AntiBanditStrategy(mode="bandit")
    with pytest.raises(ConfigError, match="supernet' needs settings.space with name 'abandit'"):
        AntiBanditStrategy(mode="supernet", settings={"space": {"name": "nb201"}})
    with pytest.raises(ConfigError, match="reward_scale"):
        AntiBanditStrategy(reward_scale=0, final=False)
    with pytest.raises(ConfigError, match="trial_steps"):
        AntiBanditStrategy(trial_steps="epoch", final=False)
    with pytest.raises(ConfigError, match="'epochs_per_sampel'"):
        AntiBanditStrategy(search={"epochs_per_sampel": 2}, settings={"space": {"name": "abandit"}})
    with pytest.raises(ConfigError, match="final_init_channels or target_mflops"):
        AntiBanditStrategy(settings={"space": {"name": "nb201"}})
    with pytest.raises(ConfigError, match="cell types"):
        AntiBanditStrategy(settings={"space": {"name": "abandit", "num_cells": 3}},
                           final_space={"name": "abandit", "num_cells": 10})
    default = AntiBanditStrategy(settings={"space": {"name": "abandit", "num_cells": 6, "affine": False}})
    assert default.mode == "supernet" and default.final_init_channels == 48  # the paper's CIFAR-10 network
    assert default.final_space == {"name": "abandit", "num_cells": 10, "auxiliary": True}


# --------------------------------------------------------------------------- supernet mode, fake trials

SPACE = {"name": "abandit", "num_cells": 3}          # cell types c0, c2, c4: 30 edges of 9 operations
EDGES = abandit_choices(abandit_layout(3).cell_types, form="edge")
GOOD = {"c0": "sep_conv_3x3", "c2": "max_pool_3x3", "c4": "gabor_3x3"}


def synthetic_reward(sample):
    """Percent: 40 plus 30 times the fraction of edges whose op is its cell type's good op."""
    return 40.0 + 30.0 * sum(op == GOOD[label.split("_")[0]] for label, op in sample.items()) / len(sample)


class FakeSearchTrials:
    """``abandit_search`` trials that credit synthetic rewards to the search state (no training);
    ``final`` trials that check the architecture they get."""

    def __init__(self):
        self.calls = []

    def __call__(self, params):
        self.calls.append(params)
        args = params["args"]
        if params["task"] == "final":
            ABanditArch.from_json(args["arch"])
            return {"default": 0.3, "acc_clean": 0.8, "acc_pgd20": 0.3}
        assert params["task"] == "abandit_search"
        path = Path(args["search_dir"]) / STATE_FILE
        state = SearchState.load(path)
        bandit = state.bandit
        while state.samples_done < args["until"] and not bandit.done:
            sample = bandit.sample()
            reward = synthetic_reward(sample)
            events = bandit.update(sample, reward)
            state.records.append({"step": state.samples_done, "warmup": False, "reward": reward, "N": bandit.total,
                                  "arms": [bandit.index_of(k, sample[k]) for k in bandit.labels],
                                  "abandoned": [[e["label"], e["option"]] for e in events]})
        state.save(path)
        return {"default": 0.5, "N": float(bandit.total)}


def supernet_tuner(work, **args):
    args = {"seed": 3, "samples_per_arm": 1, "final_space": {"name": "abandit", "num_cells": 3},
            "final_init_channels": 4, "permutations": 200, **args}
    return StrategyTuner(strategy="abandit", space={"name": "abandit", "num_cells": 3, "init_channels": 2},
                         strategy_args=args, settings={"dataset": "digits", "space": SPACE}, work_dir=work,
                         flush_timeout=2.0)


def test_supernet_mode_one_trial_per_phase_then_export_and_final(tmp_path):
    fake = FakeSearchTrials()
    tuner = supernet_tuner(tmp_path)
    run_in_process(tuner, fake, max_trials=30, timeout=120)
    assert tuner.error is None
    tasks = [c["task"] for c in fake.calls]
    assert tasks == ["abandit_search"] * 8 + ["final"]  # phases with 9, 8, ..., 2 arms per edge
    untils = [c["args"]["until"] for c in fake.calls[:8]]
    assert untils == [sum(range(k, 10)) for k in range(9, 1, -1)]  # T = 1: K samples per phase
    strategy = tuner.strategy
    assert strategy.bandit.done and len(strategy.records) == 44
    arch = ABanditArch.from_json((tmp_path / "architecture.json").read_text())
    best = json.loads((tmp_path / "best_architecture.json").read_text())
    assert ABanditArch.from_json(best["arch"]) == arch and best["final_space"] == {"name": "abandit", "num_cells": 3}
    # the derived cells use the kept op of the edge (of largest m) that each node keeps
    for t, pairs in arch.cells.items():
        for j, (op, i) in enumerate(pairs, start=1):
            assert best["edge_ops"][f"{t}_e{i}{j}"] == op
    final = fake.calls[-1]["args"]
    assert ABanditArch.from_json(final["arch"]) == arch and final["init_channels"] == 4
    assert final["space"] == {"name": "abandit", "num_cells": 3}
    # with rewards that depend on the arms, the checks find a signal and the good ops mostly survive
    assert best["signal"]["signal"] is True
    kept_good = sum(op == GOOD[label.split("_")[0]] for label, op in best["edge_ops"].items())
    assert kept_good >= 8  # of 30 edges (chance: 30 / 9 = 3.3)


def test_supernet_mode_resumes_from_the_search_folder(tmp_path):
    whole = supernet_tuner(tmp_path / "whole", final=False)
    run_in_process(whole, FakeSearchTrials(), max_trials=30, timeout=120)
    first = supernet_tuner(tmp_path / "parts", final=False)
    run_in_process(first, FakeSearchTrials(), max_trials=3, timeout=120)  # 3 of the 8 phases
    assert len(first.strategy.records) == 9 + 8 + 7
    second = supernet_tuner(tmp_path / "parts", final=False)
    fake = FakeSearchTrials()
    run_in_process(second, fake, max_trials=30, timeout=120)
    assert len(fake.calls) == 5 and second.strategy.records == whole.strategy.records
    assert second.strategy.bandit.state_dict() == whole.strategy.bandit.state_dict()
    # another seed on the same search folder is an error, not a silent mix of two searches
    with pytest.raises(Exception, match="another search"):
        third = supernet_tuner(tmp_path / "other", final=False, seed=4,
                               search_dir=str(tmp_path / "parts" / "abandit_search"))
        run_in_process(third, FakeSearchTrials(), max_trials=30, timeout=60)


# --------------------------------------------------------------------------- the real task, tiny


TINY_SEARCH = {"init_channels": 2, "batch_size": 32, "train_images_per_sample": 64, "val_images": 64,
               "val_batch_size": 64, "lr": 0.05}


def _tiny_run(folder: Path, until: int, **search):
    from nni_robust.strategies.abandit.tasks import run_search

    settings = TrialSettings.from_dict({"dataset": "digits", "device": "cpu", "space": SPACE})
    if not (folder / STATE_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        SearchState(AntiBandit(EDGES, samples_per_arm=1, seed=7)).save(folder / STATE_FILE)
    return run_search(settings, search={**TINY_SEARCH, **search}, reward_scale=100.0, search_dir=folder, until=until)


def test_the_task_trains_samples_and_updates_the_bandit(tmp_path):
    result = _tiny_run(tmp_path / "a", 2, reward="robust")
    state = SearchState.load(tmp_path / "a" / STATE_FILE)
    assert result["steps"] == 2 and state.samples_done == 2 and state.bandit.total == 2
    first = state.records[0]
    assert first["reward"] == pytest.approx(100 * (0.5 * first["acc_clean"] + 0.5 * first["acc_adv"]))
    assert 0.0 <= first["acc_adv"] <= 1.0 and first["train_loss"] > 0
    sample = state.sample_of(first)
    stats = {label: state.bandit.stats(label)[op] for label, op in sample.items()}
    assert all(s["n"] >= 1 for s in stats.values())
    # an arm used by the first sample only holds that sample's reward (the first reward sets m)
    only_first = [label for label, op in sample.items() if stats[label]["n"] == 1]
    assert only_first and all(stats[label]["m"] == pytest.approx(first["reward"]) for label in only_first)
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    again = _tiny_run(tmp_path / "a", 2, reward="robust")  # nothing left to do: idempotent
    assert again["steps"] == 0 and SearchState.load(tmp_path / "a" / STATE_FILE).samples_done == 2


def test_the_task_resumes_exactly_also_after_a_stop_before_crediting(tmp_path):
    straight = tmp_path / "straight"
    _tiny_run(straight, 3)
    expected = SearchState.load(straight / STATE_FILE)
    parts = tmp_path / "parts"
    _tiny_run(parts, 1)
    shutil.copy(parts / STATE_FILE, tmp_path / "after1.json")
    _tiny_run(parts, 2)
    # as if stopped after training sample 2 but before crediting it: the old state, the new checkpoint
    shutil.copy(tmp_path / "after1.json", parts / STATE_FILE)
    _tiny_run(parts, 3)
    resumed = SearchState.load(parts / STATE_FILE)
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.records] == \
        [{k: v for k, v in r.items() if k not in drop} for r in expected.records]
    assert resumed.bandit.state_dict() == expected.bandit.state_dict()
    a = torch.load(parts / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_task_rejects_a_state_of_another_space_and_a_foreign_checkpoint(tmp_path):
    from nni_robust.strategies.abandit.tasks import run_search

    folder = tmp_path / "s"
    folder.mkdir()
    SearchState(AntiBandit({"e": ["a", "b"]}, seed=0)).save(folder / STATE_FILE)
    settings = TrialSettings.from_dict({"dataset": "digits", "device": "cpu", "space": SPACE})
    with pytest.raises(ConfigError, match="other arms"):
        run_search(settings, search=TINY_SEARCH, reward_scale=100.0, search_dir=folder, until=1)
    _tiny_run(tmp_path / "t", 2)
    SearchState(AntiBandit(EDGES, samples_per_arm=1, seed=7)).save(tmp_path / "t" / STATE_FILE)  # 0 credited
    with pytest.raises(CheckpointError, match="do not belong together"):
        _tiny_run(tmp_path / "t", 3)  # the checkpoint has trained 2 samples
    with pytest.raises(ConfigError, match="reward"):
        SearchConfig.from_dict({"reward": "accuracy"})


# --------------------------------------------------------------------------- diagnostics


def test_permutation_test_finds_a_planted_edge_and_not_noise():
    import numpy as np

    rng = np.random.default_rng(0)
    arms = rng.integers(0, 3, size=(120, 4))
    noise = rng.normal(0, 1.0, size=120)
    planted = noise + 2.0 * (arms[:, 1] == 2)
    p, overall = edge_pvalues(arms, planted, [3] * 4, permutations=500, seed=1)
    assert p[1] < 0.01 and min(p[0], p[2], p[3]) > 0.01 and overall < 0.01
    p, overall = edge_pvalues(arms, noise, [3] * 4, permutations=500, seed=1)
    assert min(p) > 0.01 and overall > 0.05
    assert detrend([1.0, 2.0, 3.0, 4.0, 5.0], 3) == pytest.approx([-0.5, 0.0, 0.0, 0.0, 0.5])


def test_search_signal_warns_when_rewards_do_not_depend_on_the_arms():
    import random

    edges = {f"e{i}": ["a", "b", "c"] for i in range(10)}
    bandit = AntiBandit(edges, samples_per_arm=3, seed=0)
    rng = random.Random(0)
    records = []
    while not bandit.done:
        s = bandit.sample()
        reward = 50 + rng.gauss(0, 3)  # pure noise
        bandit.update(s, reward)
        records.append({"arms": [bandit.index_of(k, s[k]) for k in edges], "reward": reward})
    signal = search_signal(edges, records, bandit.abandon_history, permutations=300)
    assert signal["signal"] is False and any("No search signal" in w for w in signal["warnings"])
    # the same rewards as fractions in [0, 1]: the exploration bonus (~1) swamps their differences
    small = AntiBandit(edges, samples_per_arm=3, seed=0)
    scaled = []
    for r in records:
        s = {k: edges[k][i] for k, i in zip(edges, r["arms"])}
        small.update(s, r["reward"] / 100)
        scaled.append(dict(r, reward=r["reward"] / 100))
    signal = search_signal(edges, scaled, small.abandon_history, permutations=50)
    assert signal["overlap_fraction"] > 0.9 and any("indistinguishable" in w for w in signal["warnings"])
    assert any("Scale the reward" in w for w in signal["warnings"])


def test_abandon_overlap_uses_the_papers_bounds():
    event = {"step": 10, "label": "e", "option": "a", "remaining": ["a", "b"], "m": [40.0, 50.0], "n": [5, 5],
             "ucb": [None, None]}
    bonus = math.sqrt(2 * math.log(10) / 5)  # 1.36: intervals [38.6, 41.4] and [48.6, 51.4] do not overlap
    assert abandon_overlaps([event]) == [False]
    assert abandon_overlaps([dict(event, m=[49.0, 50.0])]) == [49.0 + bonus >= 50.0 - bonus]
