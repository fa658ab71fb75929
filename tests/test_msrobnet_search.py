"""MultiShotSearch (MSRobNet Alg. 1) driven end to end by the bridge tuner, with fake trials.

The trials train nothing: ``FakeTrials`` writes dummy supernet files and, for an
``evaluate`` trial, computes synthetic one-shot rewards from a known log-power
curve ``a / (1 + (x / e^b)^c)`` (MSRobNet App. A) whose parameters are analytic
functions of the sampled topology, over synthetic FLOPs proportional to
``width^2 * (1 + number of conv edges)``. So the right family, every estimate
and the best reward are known in closed form.
"""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.msrobnet import extrapolation
from nni_robust.strategies.bridge import StrategyTuner, run_in_process
from nni_robust.strategies.msrobnet.search import MultiShotSearch
from nni_robust.strategies.trust import read_warnings

LAYOUT = "cellwise-4"
LABELS = Layout.from_name(LAYOUT).labels()
WIDTHS = [4, 6, 8, 10]
UNIT = 1e3            # FLOPs per fitting unit: x = width^2 (1 + convs) >= 16 > 1
TARGET_MFLOPS = 3.0   # x_T = 3000
CONV = ("sep_conv_3x3", "res_sep_conv_3x3")
# Fixed per-edge weights: the curve parameters are weighted fractions of ops, so
# that two random topologies practically never tie (ties would blur Spearman's tau).
_G = np.random.default_rng(123).uniform(0.5, 1.5, size=(3, len(LABELS)))


def _wfrac(sample, row, ops, topologies):
    num = den = 0.0
    for k, label in enumerate(LABELS):
        if label.split("_")[0] in topologies:
            den += _G[row, k]
            num += _G[row, k] * (sample[label] in ops)
    return num / den


def curve(sample):
    """(number of conv edges, a, b, c) of the topology's generating log-power curve."""
    n_conv = sum(op in CONV for op in sample.values())
    a = 0.3 + 0.6 * _wfrac(sample, 0, ("res_sep_conv_3x3",), ("c0", "c1"))
    w_mid = 4 + 6 * _wfrac(sample, 1, ("skip_connect", "none"), ("c1", "c2"))
    c = -(0.8 + 2.5 * _wfrac(sample, 2, CONV, ("c2", "c3")))
    return n_conv, a, math.log(w_mid ** 2 * (1 + n_conv)), c


def log_power(x, a, b, c):
    return a / (1 + (x / math.exp(b)) ** c)


def true_reward(sample):
    """The generating curve at the target capacity: what a perfect extrapolation returns."""
    _, a, b, c = curve(sample)
    return log_power(TARGET_MFLOPS * 1e6 / UNIT, a, b, c)


class FakeTrials:
    """The trial entry point, without training: see the module docstring.

    Args:
        fail: ``fail(sample) -> True`` makes that evaluation trial raise (FAILED).
        no_fit: ``no_fit(sample) -> True`` makes it report failed fits (no
            ``est_*`` keys, ``fit_ok`` 0, ``default`` 0.0), as the real evaluator does.
        fail_widths: supernet widths whose training trial raises.
    """

    def __init__(self, fail=None, no_fit=None, fail_widths=()):
        self.fail, self.no_fit, self.fail_widths = fail, no_fit, set(fail_widths)
        self.calls: list[dict] = []  # parameters, in start order
        self._lock = threading.Lock()

    def tasks(self, name):
        return [p for p in self.calls if p["task"] == name]

    def __call__(self, params):
        with self._lock:
            self.calls.append(params)
        task, args = params["task"], params["args"]
        if task == "supernet":
            if args["width"] in self.fail_widths:
                raise RuntimeError(f"out of memory training supernet c{args['width']}")
            path = f"{args['supernet_dir']}/c{args['width']}/supernet.pt"
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                f.write("trained")
            return {"default": 0.5}
        if task == "final":
            assert set(args) == {"sample", "target_mflops"}
            DenseRobArch.from_sample(args["sample"], Layout.from_name(LAYOUT))
            return {"default": 0.75, "acc_clean": 0.9, "acc_adv_pgd20": 0.6}
        assert task == "evaluate"
        sample = params["sample"]
        DenseRobArch.from_sample(sample, Layout.from_name(LAYOUT))  # a real topology of the layout
        for w in args["widths"]:  # the real trial loads every supernet
            if not Path(f"{args['supernet_dir']}/c{w}/supernet.pt").exists():
                raise FileNotFoundError(f"supernet c{w} missing")
        if self.fail is not None and self.fail(sample):
            raise RuntimeError("evaluation crashed")
        n_conv, a, b, c = curve(sample)
        unit = args["flops_unit"]
        out, flops, rewards = {"target_mflops": args["target_mflops"]}, [], []
        for w in args["widths"]:
            x = w * w * (1 + n_conv)
            r = log_power(x, a, b, c)
            out.update({f"mflops_c{w}": x * unit / 1e6, f"reward_c{w}": r,
                        f"acc_clean_c{w}": min(1.0, r + 0.2), f"acc_adv_c{w}": max(0.0, r - 0.2)})
            flops.append(x * unit)
            rewards.append(r)
        if args["mode"] != "multishot":
            out["default"] = rewards[-1]
            return out
        if self.no_fit is not None and self.no_fit(sample):
            out.update(default=0.0, fit_ok=0.0)
            return out
        for name in extrapolation.FAMILIES:
            try:
                est, _ = extrapolation.extrapolate(name, flops, rewards, args["target_mflops"] * 1e6, unit=unit)
            except ConfigError:
                est = None
            if est is not None:
                out[f"est_{name}"] = est
        out["fit_ok"] = 1.0 if f"est_{args['family']}" in out else 0.0
        out["default"] = out.get(f"est_{args['family']}", 0.0)
        return out


def strategy_args(tmp_path, **kw):
    args = dict(widths=WIDTHS, target_mflops=TARGET_MFLOPS, num_random=12, population=6, tournament=3,
                steps=10, flops_unit=UNIT, seed=0, supernet_dir=str(tmp_path / "supernets"))
    args.update(kw)
    return args


def make_tuner(tmp_path, layout=LAYOUT, max_trials=None, **kw):
    return StrategyTuner(strategy="msrobnet", space={"name": "dense_rob", "layout": LAYOUT},
                         strategy_args=strategy_args(tmp_path, **kw), max_trials=max_trials,
                         settings={"dataset": "digits", "space": {"layout": layout}},
                         work_dir=tmp_path / "work", flush_timeout=2.0)


def read_rows(work):
    return [json.loads(line) for line in (work / "evaluations.jsonl").read_text().splitlines()]


def key(sample):
    return json.dumps(sample, sort_keys=True)


def precreate(tmp_path, widths):
    for w in widths:
        path = tmp_path / "supernets" / f"c{w}" / "supernet.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("pre-trained")


def test_full_pipeline_stages_family_selection_and_export(tmp_path):
    precreate(tmp_path, [4, 8])
    fake = FakeTrials()
    tuner = make_tuner(tmp_path)
    finished = run_in_process(tuner, fake, concurrency=2, max_trials=200, timeout=60)
    work = tmp_path / "work"
    strategy = tuner.strategy
    assert tuner.error is None and tuner.search_finished and strategy._stage == "done"
    assert all(t["status"] == "SUCCEEDED" for t in finished)

    # 1. Stage order; only the missing supernets are trained; pre-trained ones are untouched.
    tasks = [p["task"] for p in fake.calls]
    assert tasks[:2] == ["supernet", "supernet"] and set(tasks[2:-1]) == {"evaluate"} and tasks[-1] == "final"
    assert sorted(p["args"]["width"] for p in fake.tasks("supernet")) == [6, 10]
    assert all(p["args"]["supernet_dir"] == str(tmp_path / "supernets") and p["sample"] is None
               for p in fake.tasks("supernet"))
    assert [(tmp_path / "supernets" / f"c{w}" / "supernet.pt").read_text() for w in WIDTHS] == \
        ["pre-trained", "trained", "pre-trained", "trained"]
    expected_args = {"widths": WIDTHS, "target_mflops": TARGET_MFLOPS, "family": "log_power",
                     "mode": "multishot", "flops_unit": UNIT, "supernet_dir": str(tmp_path / "supernets")}
    evaluations = fake.tasks("evaluate")
    # the random stage's 12 are provisional (estimated before the family selection), the search's are not
    assert [p["args"] for p in evaluations[:12]] == [{**expected_args, "provisional": True}] * 12
    assert all(p["args"] == expected_args for p in evaluations[12:]) and len(evaluations) > 12
    assert len({key(p["sample"]) for p in evaluations}) == len(evaluations)  # nothing evaluated twice

    # 2. The LOO selection finds the generating family and writes its report.
    report = work / "family_selection"
    assert {p.suffix for p in report.iterdir()} >= {".md", ".csv", ".png", ".json"}
    selection = json.loads((report / "loo_selection.json").read_text())
    assert selection["best"] == "log_power" == strategy.family
    assert selection["n_archs"] == 12 and selection["exclude"] == [0]
    assert selection["mean_tau"]["log_power"] == pytest.approx(1.0, abs=1e-9)
    others = [v for f, v in selection["mean_tau"].items() if f not in ("log_power", "log_power_rep")]
    assert all(v is None or v < 0.999 for v in others)
    assert "log_power" in (report / "loo_selection.md").read_text()

    # 3. Export: the best of all evaluations under the chosen family, at least the best random one.
    rows = read_rows(work)
    assert len(rows) == len(evaluations) > 12
    assert [key(r["sample"]) for r in rows[:12]] == [key(p["sample"]) for p in evaluations[:12]]
    for r in rows:
        assert r["reward"] == r["result"]["est_log_power"]
        assert r["reward"] == pytest.approx(true_reward(r["sample"]), abs=1e-6)  # exact extrapolation
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["estimate"] == max(r["reward"] for r in rows) >= max(r["reward"] for r in rows[:12])
    assert best["estimate"] == pytest.approx(max(true_reward(p["sample"]) for p in evaluations), abs=1e-6)
    assert best["family"] == "log_power" and best["mode"] == "multishot" and best["evaluated"] == len(rows)
    n_conv = curve(best["sample"])[0]
    assert best["one_shot"]["c8"]["mflops"] == pytest.approx(64 * (1 + n_conv) * UNIT / 1e6)
    arch = DenseRobArch.from_sample(best["sample"], Layout.from_name(LAYOUT))
    assert arch.to_sample() == best["sample"]
    final = fake.tasks("final")
    assert len(final) == 1 and final[0]["args"] == {"sample": best["sample"], "target_mflops": TARGET_MFLOPS}
    assert strategy.best()[1] == best["estimate"]

    # 6a. State round trip (JSON): a fresh strategy holds the same search.
    state = json.loads(json.dumps(strategy.state_dict()))
    assert state["stage"] == "done" and state["final_result"]["default"] == 0.75
    assert json.loads((work / "strategy_state.json").read_text())["strategy"] == state
    clone = MultiShotSearch(**strategy_args(tmp_path), work_dir=str(work))
    clone.load_state_dict(state)
    assert clone.state_dict() == state and clone.best() == strategy.best() and clone.family == "log_power"
    assert read_warnings(work) == [] and best["warnings"] == []  # a clean signal: nothing to doubt


def test_fixed_family_writes_no_report_and_is_used(tmp_path):
    precreate(tmp_path, WIDTHS)
    fake = FakeTrials()
    tuner = make_tuner(tmp_path, family="vapor_pressure", final=False, num_random=8, steps=4)
    run_in_process(tuner, fake, concurrency=2, max_trials=100, timeout=60)
    work = tmp_path / "work"
    assert tuner.error is None and tuner.strategy._stage == "done"
    assert [p["task"] for p in fake.calls] == ["evaluate"] * len(fake.calls)  # no supernet, no final job
    assert all(p["args"]["family"] == "vapor_pressure" for p in fake.calls)
    assert not (work / "family_selection").exists()
    rows = read_rows(work)
    assert all(r["reward"] == r["result"]["est_vapor_pressure"] for r in rows)
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["family"] == "vapor_pressure" and best["estimate"] == max(r["reward"] for r in rows)


def test_failed_evaluations_are_left_out(tmp_path):
    precreate(tmp_path, WIDTHS)
    fake = FakeTrials(fail=lambda s: s["c0_e20"] == "none",
                      no_fit=lambda s: s["c0_e20"] != "none" and s["c0_e21"] == "none")
    tuner = make_tuner(tmp_path, final=False)
    finished = run_in_process(tuner, fake, concurrency=2, max_trials=200, timeout=60)
    work = tmp_path / "work"
    assert tuner.error is None and tuner.strategy._stage == "done"
    failed = [t for t in finished if t["status"] == "FAILED"]
    assert failed and all(t["parameters"]["sample"]["c0_e20"] == "none" for t in failed)
    rows = read_rows(work)
    assert len(rows) == len(finished) - len(failed)
    assert not any(r["sample"]["c0_e20"] == "none" for r in rows)
    no_fit = [r for r in rows if r["sample"]["c0_e21"] == "none"]
    assert no_fit and all(r["reward"] == 0.0 for r in no_fit)  # a failed fit ranks last
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["estimate"] == max(r["reward"] for r in rows) > 0.0
    assert best["sample"]["c0_e20"] != "none" and best["sample"]["c0_e21"] != "none"


class NoiseTrials(FakeTrials):
    """Rewards that contradict each other: every other supernet ranks the topologies in reverse, so a curve
    fitted to the other supernets ranks the left-out one backwards (negative leave-one-out correlation)."""

    def __call__(self, params):
        out = super().__call__(params)
        if params["task"] == "evaluate":
            r = float(np.random.default_rng(zlib.crc32(key(params["sample"]).encode())).uniform(0.1, 0.3))
            for k, w in enumerate(params["args"]["widths"]):
                out[f"reward_c{w}"] = r if k % 2 == 0 else 0.4 - r
            if self.no_fit is None:  # the estimates of every family: out of [0, 1] to trigger that check too
                out.update({k: 1.5 for k in out if k.startswith("est_")}, default=1.5)
        return out


def test_untrustworthy_results_are_recorded_as_warnings(tmp_path):
    precreate(tmp_path, WIDTHS)
    tuner = make_tuner(tmp_path, final=False, num_random=8, steps=0)
    run_in_process(tuner, NoiseTrials(), concurrency=2, max_trials=100, timeout=60)
    work = tmp_path / "work"
    assert tuner.error is None and tuner.strategy._stage == "done"
    selection = json.loads((work / "family_selection" / "loo_selection.json").read_text())
    chosen = selection["mean_tau"][selection["best"]] if selection["best"] else None
    warnings = read_warnings(work)
    assert chosen is None or chosen <= 0, selection["mean_tau"]
    (family,) = [w for w in warnings if w["source"] == "msrobnet.family"]  # logged, recorded, in the report
    assert "not positive" in family["message"] or "No extrapolation family" in family["message"]
    assert "**Warning:**" in (work / "family_selection" / "loo_selection.md").read_text()
    assert selection["warnings"] and selection["warnings"][0] in family["message"]
    (outside,) = [w for w in warnings if "outside [0, 1]" in w["message"]]  # every estimate is 1.5
    assert outside["source"] == "msrobnet.estimates" and outside["outside"] == len(read_rows(work))
    assert any("are equal" in w["message"] for w in warnings)  # ... and all of them tie
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["warnings"] == [w["message"] for w in warnings]


def test_most_fits_failing_is_a_warning(tmp_path):
    precreate(tmp_path, WIDTHS)
    def no_fit(s):  # about 15 of 16 topologies: no estimate at all
        return s["c0_e20"] != "none" or s["c0_e21"] != "none"

    tuner = make_tuner(tmp_path, family="log_power", final=False, num_random=8, steps=0)
    run_in_process(tuner, FakeTrials(no_fit=no_fit), concurrency=2, max_trials=100, timeout=60)
    assert tuner.error is None and tuner.strategy._stage == "done", tuner.error
    (fits,) = [w for w in read_warnings(tmp_path / "work") if w["source"] == "msrobnet.fits"]
    rows = read_rows(tmp_path / "work")
    assert fits["failed"] == sum(map(no_fit, (r["sample"] for r in rows))) > len(rows) / 2
    assert fits["evaluated"] == len(rows) and "log_power fit failed" in fits["message"]


def test_failing_supernet_fails_the_search_naming_the_width(tmp_path):
    fake = FakeTrials(fail_widths=[6])
    tuner = make_tuner(tmp_path)
    with pytest.raises(RuntimeError, match=r"widths \[6\]"):
        run_in_process(tuner, fake, concurrency=2, max_trials=100, timeout=60)
    assert isinstance(tuner.error, NniRobustError) and "[6]" in str(tuner.error)
    assert [p["task"] for p in fake.calls] == ["supernet"] * 4  # nothing evaluated
    assert sorted(p.parent.name for p in (tmp_path / "supernets").glob("c*/supernet.pt")) == ["c10", "c4", "c8"]
    with pytest.raises(RuntimeError, match=r"widths \[6\]"):  # every later tuner call raises too
        tuner.generate_multiple_parameters([999], st_callback=lambda *a: None)


def test_oneshot_baseline(tmp_path):
    fake = FakeTrials()
    tuner = make_tuner(tmp_path, widths=[8], mode="oneshot", num_random=8, steps=6, final=False)
    run_in_process(tuner, fake, concurrency=2, max_trials=100, timeout=60)
    work = tmp_path / "work"
    assert tuner.error is None and tuner.strategy._stage == "done"
    assert [p["task"] for p in fake.calls][0] == "supernet" and len(fake.tasks("supernet")) == 1
    assert all(p["args"]["mode"] == "oneshot" and p["args"]["widths"] == [8] for p in fake.tasks("evaluate"))
    assert not (work / "family_selection").exists()
    rows = read_rows(work)
    assert all(r["reward"] == r["result"]["reward_c8"] for r in rows)
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["estimate"] == max(r["result"]["reward_c8"] for r in rows)
    assert best["one_shot"] == {"c8": {k: next(r["result"][f"{k}_c8"] for r in rows if r["sample"] == best["sample"])
                                       for k in ("reward", "acc_clean", "acc_adv", "mflops")}}


def _wait_finished(tuner, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not tuner.search_finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tuner.search_finished


def test_resume_mid_search_reuses_finished_evaluations(tmp_path):
    # Session 1: budget for 4 supernets + 12 random + 4 evolution steps, then NNI stops.
    first_fake = FakeTrials()
    first = make_tuner(tmp_path, max_trials=20)
    done = run_in_process(first, first_fake, concurrency=2, max_trials=20, timeout=60)
    _wait_finished(first)
    first._on_exit()
    work = tmp_path / "work"
    assert len(done) == 20 and first.error is None
    state = json.loads((work / "strategy_state.json").read_text())["strategy"]
    assert state["stage"] == "search" and state["num_seeds"] == 12 and len(state["records"]) == 16
    assert state["evolution"]["steps_done"] == 4
    assert not (work / "best_architecture.json").exists()  # the search did not finish: nothing exported

    # Session 2 (nnictl resume): continues the evolution; no supernet or evaluation runs again.
    fake = FakeTrials()
    second = make_tuner(tmp_path)
    run_in_process(second, fake, concurrency=2, max_trials=200, timeout=60)
    strategy = second.strategy
    assert second.error is None and strategy._stage == "done"
    assert not fake.tasks("supernet") and [p["task"] for p in fake.calls][-1] == "final"
    before = {key(p["sample"]) for p in first_fake.tasks("evaluate")}
    after = [key(p["sample"]) for p in fake.tasks("evaluate")]
    assert not before & set(after) and len(set(after)) == len(after)
    evo = strategy._evo_state
    assert evo["steps_done"] == 10 and evo["num_failed"] == 0
    assert len(before) + len(after) == 12 + 10 - evo["num_reused"]
    rows = read_rows(work)
    assert {key(r["sample"]) for r in rows} == before | set(after)  # session 1's results are kept
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["estimate"] == max(r["reward"] for r in rows)


@pytest.mark.parametrize("kwargs, match", [
    ({"widths": [8, 8, 12]}, r"\[8, 8, 12\]"),
    ({"widths": [8]}, r"at least 2 widths.*\[8\]"),
    ({"widths": [8, 12], "family": "auto"}, r"at least 3 widths.*\[8, 12\]"),
    ({"widths": [8, 12], "mode": "oneshot"}, r"exactly 1 width.*\[8, 12\]"),
    ({"widths": [0, 8, 12]}, r"\[0, 8, 12\]"),
    ({"mode": "twoshot"}, "twoshot"),
    ({"population": 6, "tournament": 7}, r"tournament \(7\).*population \(6\)"),
    ({"family": "log_powr"}, "'log_powr'"),
    ({"target_mflops": 0}, "target_mflops.* 0"),
    ({"target_mflops": -5.0}, "-5.0"),
    ({"flops_unit": 0}, "flops_unit.* 0"),
    ({"num_random": 0}, "num_random.* 0"),
    ({"num_random": 2, "family": "auto"}, r"num_random must be >= 3 with family 'auto'.*num_random=2"),
])
def test_configuration_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MultiShotSearch(**strategy_args(tmp_path, **kwargs))


def test_space_layout_must_match_the_trials_settings(tmp_path):
    with pytest.raises(ConfigError, match="stagewise"):
        make_tuner(tmp_path, layout="stagewise")
