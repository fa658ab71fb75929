"""RobNetSearch (RobNet Secs. 3.2-3.5) driven end to end by the bridge tuner, with fake trials.

The trials train nothing: ``FakeTrials`` writes a dummy supernet file, gives
every architecture a known FSP indicator (its share of ``none`` edges plus a
small fixed jitter) and a known fine-tuned adversarial accuracy (rising with
its density), so the filter's decisions, the savings, the correlations and the
exported best are known in closed form.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

import pytest

from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.bridge import StrategyTuner, run_in_process
from nni_robust.strategies.robnet.analysis import arch_stats
from nni_robust.strategies.robnet.search import RobNetSearch

LAYOUT = "robnet-shared-4"


def key(sample):
    return json.dumps(sample, sort_keys=True)


def jitter(sample, scale):
    h = int(hashlib.sha256(key(sample).encode()).hexdigest()[:8], 16)
    return scale * (h / 0xFFFFFFFF - 0.5)


def indicator(sample):
    """Known FSP indicator: the share of `none` edges (sparser = less robust), jittered."""
    ops = list(sample.values())
    return ops.count("none") / len(ops) + jitter(sample, 0.01)


def adv_acc(sample, layout=LAYOUT):
    return 0.2 + 0.5 * arch_stats(DenseRobArch.from_sample(sample, Layout.from_name(layout))).density + \
        jitter(sample, 0.002)


class FakeTrials:
    def __init__(self, layout=LAYOUT):
        self.layout = layout
        self.calls: list[dict] = []

    def tasks(self, name):
        return [p for p in self.calls if p["task"] == name]

    def __call__(self, params):
        self.calls.append(params)
        task, args = params["task"], params["args"]
        if task == "robnet_supernet":
            path = Path(args["supernet_dir"]) / f"c{args['width']}" / "supernet.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("trained")
            return {"default": 0.3, "probe_acc_clean": 0.5, "probe_acc_adv": 0.2}
        if task == "robnet_fsp":
            assert (Path(args["supernet_dir"]) / f"c{args['width']}" / "supernet.pt").exists()
            rows = [{"sample": s, "indicator": indicator(s), "distances": {"3": indicator(s)}, "deep_cells": [3],
                     "acc_clean": 0.5, "acc_adv": 0.5 - indicator(s) / 2} for s in args["samples"]]
            Path(args["out_file"]).parent.mkdir(parents=True, exist_ok=True)
            Path(args["out_file"]).write_text(json.dumps({"results": rows}))
            return {"default": sum(r["indicator"] for r in rows) / len(rows), "screened": float(len(rows))}
        if task == "robnet_finetune":
            DenseRobArch.from_sample(params["sample"], Layout.from_name(self.layout))
            a = adv_acc(params["sample"], self.layout)
            return {"default": a, "acc_adv": a, "acc_clean": a + 0.3, "acc_adv_before": a - 0.1,
                    "acc_clean_before": a + 0.2, "eval_images": 5000.0}
        assert task == "final", task
        DenseRobArch.from_json(args["arch"])
        return {"default": 0.45, "acc_clean": 0.8, "acc_pgd20": 0.45}


def make_tuner(tmp_path, layout=LAYOUT, max_trials=None, trial_layout=None, **kw):
    args = dict(width=8, num_samples=12, seed=0)
    args.update(kw)
    return StrategyTuner(strategy="robnet", space={"name": "dense_rob", "layout": layout}, strategy_args=args,
                         max_trials=max_trials,
                         settings={"dataset": "digits", "space": {"layout": trial_layout or layout,
                                                                  "robnet_style": True}},
                         work_dir=tmp_path / "work", flush_timeout=2.0)


def run(tmp_path, fake=None, max_trials=200, **kw):
    fake = fake or FakeTrials(kw.get("layout", LAYOUT))
    tuner = make_tuner(tmp_path, **kw)
    run_in_process(tuner, fake, concurrency=2, max_trials=max_trials, timeout=90)
    return tuner, fake


def test_search_with_fsp_filter_report_and_export(tmp_path):
    tuner, fake = run(tmp_path, budget_samples=3, fsp_filter=True, fsp_threshold=0.3, fsp_audit=2, fsp_batch=5)
    strategy, work = tuner.strategy, tmp_path / "work"
    assert tuner.error is None and strategy._stage == "done"

    # Stage order: supernet, FSP batches, fine-tunings, final.
    tasks = [p["task"] for p in fake.calls]
    n_fsp = len(fake.tasks("robnet_fsp"))
    assert tasks[0] == "robnet_supernet" and set(tasks[1:1 + n_fsp]) == {"robnet_fsp"} and tasks[-1] == "final"
    assert set(tasks[1 + n_fsp:-1]) == {"robnet_finetune"}

    # The sample: 12 uniform + top-ups until every budget holds >= 3; each scored once, in batches of <= 5.
    candidates = strategy._candidates
    budgets = [arch_stats(DenseRobArch.from_sample(c["sample"], Layout.from_name(LAYOUT))).budget for c in candidates]
    assert sum(c["origin"] == "random" for c in candidates) == 12
    assert all(budgets.count(b) >= 3 for b in ("small", "medium", "large"))
    scored = [s for p in fake.tasks("robnet_fsp") for s in p["args"]["samples"]]
    assert sorted(map(key, scored)) == sorted(key(c["sample"]) for c in candidates)
    assert max(len(p["args"]["samples"]) for p in fake.tasks("robnet_fsp")) <= 5

    # The filter rejects exactly the candidates above the threshold; 2 of them are fine-tuned anyway.
    above = {key(c["sample"]) for c in candidates if indicator(c["sample"]) > 0.3}
    below = {key(c["sample"]) for c in candidates} - above
    assert above and below
    tuned = [key(p["sample"]) for p in fake.tasks("robnet_finetune")]
    assert len(tuned) == len(set(tuned))
    assert {key(candidates[i]["sample"]) for i in strategy._rejected} == above
    audit = {key(candidates[i]["sample"]) for i in strategy._audit}
    assert len(audit) == 2 and audit <= above
    assert set(tuned) == below | audit
    assert all(p["args"] == {"width": 8, "supernet_dir": str(work / "supernet"), "epochs": 3}
               for p in fake.tasks("robnet_finetune"))

    # Report: files, the filter's savings, the correlations, TensorBoard images.
    summary = json.loads((work / "report" / "summary.json").read_text())
    fsp = summary["fsp"]
    assert (fsp["screened"], fsp["rejected"], fsp["audited"], fsp["saved"]) == \
        (len(candidates), len(above), 2, len(above) - 2)
    assert fsp["vs_adv_acc"]["kendall"] < -0.5  # sparse = high indicator = low accuracy, by construction
    assert summary["warnings"] == []
    for name in ("robnet_report.md", "robnet_archs.csv", "robnet_correlations.csv", "robnet_budget.csv",
                 "robnet_density.png", "robnet_convs.png", "robnet_budget.png", "robnet_fsp.png",
                 "evaluations.jsonl"):
        assert (work / "report" / name).stat().st_size > 0, name
    with open(work / "report" / "robnet_correlations.csv") as f:
        rows = {(r["x"], r["y"]): r for r in csv.DictReader(f)}
    assert float(rows[("density", "adv_acc")]["spearman"]) > 0.95  # the fake accuracy rises with density
    assert "fine-tunings saved" in (work / "report" / "robnet_report.md").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (work / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"images": 0})
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == ["robnet/budget", "robnet/convs", "robnet/density", "robnet/fsp"]

    # Export: the highest fine-tuned adversarial accuracy, in RobNet's evaluation network (20 cells, C = 36).
    best = json.loads((work / "best_architecture.json").read_text())
    assert key(best["sample"]) == max(tuned, key=lambda k: adv_acc(json.loads(k)))
    assert best["final_space"] == {"layout": "robnet-shared", "robnet_style": True}
    assert best["final_init_channels"] == 36 and best["evaluated"] == len(tuned)
    arch = DenseRobArch.from_json((work / "architecture.json").read_text())
    assert arch.layout == Layout.robnet(20, shared=True) and arch.cells == \
        DenseRobArch.from_sample(best["sample"], Layout.from_name(LAYOUT)).cells
    (final,) = fake.tasks("final")
    assert final["args"]["space"] == best["final_space"] and final["args"]["init_channels"] == 36
    assert DenseRobArch.from_json(final["args"]["arch"]) == arch

    # State round trip (JSON).
    state = json.loads(json.dumps(strategy.state_dict()))
    assert json.loads((work / "strategy_state.json").read_text())["strategy"] == state
    clone = RobNetSearch(width=8, num_samples=12, seed=0, budget_samples=3, fsp_filter=True, fsp_threshold=0.3,
                         fsp_audit=2, fsp_batch=5, work_dir=str(work),
                         settings={"dataset": "digits", "space": {"layout": LAYOUT, "robnet_style": True}})
    clone.load_state_dict(state)
    assert clone.state_dict() == state and clone.best() == strategy.best()


def test_default_threshold_is_the_quantile_of_the_indicators(tmp_path):
    tuner, fake = run(tmp_path, num_samples=10, fsp_filter=True, fsp_quantile=0.3, final=False)
    strategy = tuner.strategy
    values = sorted(indicator(c["sample"]) for c in strategy._candidates)
    import numpy as np

    assert strategy._threshold == pytest.approx(float(np.quantile(values, 0.3)))
    tuned = {key(p["sample"]) for p in fake.tasks("robnet_finetune")}
    assert tuned == {key(c["sample"]) for c in strategy._candidates if indicator(c["sample"]) <= strategy._threshold}
    assert len(tuned) == 3 and not fake.tasks("final")  # 3 of 10 at or below the 0.3 quantile


def test_cell_free_search_without_filter(tmp_path):
    layout = "robnet-free-5"
    tuner, fake = run(tmp_path, layout=layout, num_samples=4)
    assert tuner.error is None and tuner.strategy.cell_free
    assert not fake.tasks("robnet_fsp") and len(fake.tasks("robnet_finetune")) == 4
    for p in fake.tasks("robnet_finetune"):
        arch = DenseRobArch.from_sample(p["sample"], Layout.from_name(layout))
        assert len(arch.cells) == 5 and len({arch.cell_ops(k) for k in range(5)}) == 5  # one topology per cell
    best = json.loads((tmp_path / "work" / "best_architecture.json").read_text())
    assert best["final_space"] == {"layout": layout, "robnet_style": True}  # cell-free keeps its cells
    summary = json.loads((tmp_path / "work" / "report" / "summary.json").read_text())
    assert summary["fsp"] is None and summary["fine_tuned"] == 4


def test_untrustworthy_results_are_flagged(tmp_path):
    class Flat(FakeTrials):
        def __call__(self, params):
            out = super().__call__(params)
            if params["task"] == "robnet_finetune":  # every architecture equal within noise, no gain
                out.update(acc_adv=0.4 + jitter(params["sample"], 0.004), acc_adv_before=0.45, eval_images=300.0)
            return out

    tuner, _ = run(tmp_path, fake=Flat(), num_samples=6, fsp_filter=True, fsp_audit=3, final=False)
    notes = tuner.strategy.trust_notes()
    assert any("measurement noise" in n for n in notes)
    assert any("did not raise the mean adversarial accuracy" in n for n in notes)
    assert any("FSP indicator did not significantly predict" in n for n in notes)
    text = (tmp_path / "work" / "report" / "robnet_report.md").read_text()
    assert "## Warnings" in text and "measurement noise" in text
    best = json.loads((tmp_path / "work" / "best_architecture.json").read_text())
    assert len(best["warnings"]) == len(notes)


def _wait_finished(tuner, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not tuner.search_finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tuner.search_finished


def test_resume_mid_finetuning_repeats_nothing(tmp_path):
    kw = dict(num_samples=8, fsp_filter=True, fsp_threshold=0.3, fsp_audit=1, fsp_batch=4)
    reference, ref_fake = run(tmp_path / "ref", **kw)

    # Session 1: budget for the supernet, 2 FSP batches and 3 fine-tunings, then NNI stops.
    first_fake = FakeTrials()
    first = make_tuner(tmp_path, max_trials=6, **kw)
    run_in_process(first, first_fake, concurrency=2, max_trials=6, timeout=60)
    _wait_finished(first)
    first._on_exit()
    work = tmp_path / "work"
    state = json.loads((work / "strategy_state.json").read_text())["strategy"]
    assert state["stage"] == "finetune" and len(state["results"]) == 3 and len(state["fsp"]) == 8
    assert not (work / "best_architecture.json").exists()

    # Session 2 (nnictl resume): only the remaining fine-tunings, then report, export and final.
    fake = FakeTrials()
    second = make_tuner(tmp_path, **kw)
    run_in_process(second, fake, concurrency=2, max_trials=200, timeout=60)
    assert second.error is None and second.strategy._stage == "done"
    assert not fake.tasks("robnet_supernet") and not fake.tasks("robnet_fsp")
    before = {key(p["sample"]) for p in first_fake.tasks("robnet_finetune")}
    after = [key(p["sample"]) for p in fake.tasks("robnet_finetune")]
    assert not before & set(after) and len(before) + len(after) == len(ref_fake.tasks("robnet_finetune"))
    # the same search as without the interruption
    assert second.strategy._candidates == reference.strategy._candidates
    assert second.strategy._audit == reference.strategy._audit
    best = json.loads((work / "best_architecture.json").read_text())
    ref_best = json.loads((tmp_path / "ref" / "work" / "best_architecture.json").read_text())
    assert best["sample"] == ref_best["sample"]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_samples": 0}, "nothing to evaluate"),
    ({"path_drop_prob": 2.0}, "path_drop_prob.*2.0"),
    ({"finetune": {"lrr": 0.1}}, "lrr"),
    ({"fsp": {"imgs": 3}}, "imgs"),
    ({"fsp_quantile": 1.5}, "fsp_quantile.*1.5"),
    ({"fsp_threshold": float("nan")}, "fsp_threshold"),
    ({"budget_samples": 2, "budget_edges": [13, 14]}, "large"),
    ({"final_space": {"layout": "robnet-free"}}, "topologies"),
    ({"finetune_epochs": 0}, "finetune_epochs.* 0"),
])
def test_configuration_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RobNetSearch(settings={"dataset": "digits", "space": {"layout": LAYOUT}}, seed=0, **kwargs)


def test_space_layout_must_match_the_trials_settings(tmp_path):
    with pytest.raises(ConfigError, match="robnet-free-4"):
        make_tuner(tmp_path, trial_layout="robnet-free-4")
