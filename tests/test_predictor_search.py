"""PredictorSearch (MSRobNet-P, Alg. 1 lines 19-26) driven by the bridge tuner with fake trials.

The trials train nothing: ``FakeTrials`` writes dummy supernet files and, for an
``evaluate`` trial, reports one-shot rewards drawn from a log-power curve
``a / (1 + (x / e^b)^c)`` (MSRobNet App. A) whose asymptote ``a`` grows with a
weighted count of convolution edges of the stage-wise topology, over synthetic
FLOPs ``width^2 (1 + number of conv edges)``. The log-power extrapolation
recovers the curve exactly, so every estimate is known in closed form.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import EDGES, DenseRobArch, Layout
from nni_robust.strategies.msrobnet import extrapolation
from nni_robust.strategies.bridge import StrategyTuner, build_strategy, run_in_process, strategy_names
from nni_robust.strategies.msrobnet.predictor_search import PredictorSearch, inner_search

LAYOUT = "stagewise"
LABELS = Layout.from_name(LAYOUT).labels()
WIDTHS = [4, 6, 8, 10]
UNIT = 1e3
TARGET_MFLOPS = 3.0
CONV = ("sep_conv_3x3", "res_sep_conv_3x3")
# weight of a conv edge: larger in later topologies and on edges from the cell inputs
_W = {label: (2.0 if EDGES[k % 14][1] < 2 else 1.0) * (1 + 0.25 * (k // 14)) for k, label in enumerate(LABELS)}
SMALL_PREDICTOR = {"op_dim": 16, "node_dim": 16, "hidden_dim": 16, "gcn_dims": [16, 16, 16, 16],
                   "mlp_hiddens": [32, 32]}
SMALL_TRAINING = {"epochs": 30, "tune_epochs": 10, "batch_size": 16}


def curve(sample):
    n_conv = sum(sample[label] in CONV for label in LABELS)
    q = sum(w for label, w in _W.items() if sample[label] in CONV) / sum(_W.values())
    return n_conv, 0.3 + 0.6 * q, math.log(36.0 * (1 + n_conv)), -1.5


def log_power(x, a, b, c):
    return a / (1 + (x / math.exp(b)) ** c)


def true_estimate(sample):
    _, a, b, c = curve(sample)
    return log_power(TARGET_MFLOPS * 1e6 / UNIT, a, b, c)


class FakeTrials:
    """The trial entry point without training (see the module docstring)."""

    def __init__(self, fail=None):
        self.fail = fail
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def tasks(self, name):
        return [p for p in self.calls if p["task"] == name]

    def __call__(self, params):
        with self._lock:
            self.calls.append(params)
        task, args = params["task"], params["args"]
        if task == "supernet":
            path = Path(args["supernet_dir"]) / f"c{args['width']}" / "supernet.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("trained")
            return {"default": 0.5}
        if task == "final":
            DenseRobArch.from_sample(args["sample"], Layout.from_name(LAYOUT))
            return {"default": 0.7, "acc_clean": 0.8}
        assert task == "evaluate"
        sample = params["sample"]
        DenseRobArch.from_sample(sample, Layout.from_name(LAYOUT))
        if self.fail is not None and self.fail(sample):
            raise RuntimeError("evaluation crashed")
        n_conv, a, b, c = curve(sample)
        out, flops, rewards = {}, [], []
        for w in args["widths"]:
            x = w * w * (1 + n_conv)
            r = log_power(x, a, b, c)
            out.update({f"mflops_c{w}": x * args["flops_unit"] / 1e6, f"reward_c{w}": r,
                        f"acc_clean_c{w}": r, f"acc_adv_c{w}": r})
            flops.append(x * args["flops_unit"])
            rewards.append(r)
        if args["mode"] != "multishot":
            out["default"] = rewards[-1]
            return out
        est, _ = extrapolation.extrapolate(args["family"], flops, rewards, args["target_mflops"] * 1e6,
                                           unit=args["flops_unit"])
        out[f"est_{args['family']}"] = est
        out["fit_ok"] = 1.0
        out["default"] = est
        return out


def strategy_args(tmp_path, **kw):
    args = dict(widths=WIDTHS, target_mflops=TARGET_MFLOPS, family="log_power", num_random=16, stages=3, picks=4,
                pick_every=10, population=8, tournament=3, predictor=SMALL_PREDICTOR, training=SMALL_TRAINING,
                precision_ks=[2, 5], flops_unit=UNIT, seed=0, supernet_dir=str(tmp_path / "supernets"))
    args.update(kw)
    return args


def make_tuner(tmp_path, work="work", max_trials=None, **kw):
    return StrategyTuner(strategy="msrobnet_predictor", space={"name": "dense_rob", "layout": LAYOUT},
                         strategy_args=strategy_args(tmp_path, **kw), max_trials=max_trials,
                         settings={"dataset": "digits", "space": {"layout": LAYOUT}},
                         work_dir=tmp_path / work, flush_timeout=2.0)


def key(sample):
    return json.dumps(sample, sort_keys=True)


def read_rows(work):
    return [json.loads(line) for line in (work / "evaluations.jsonl").read_text().splitlines()]


def _wait_finished(tuner, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not tuner.search_finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tuner.search_finished


# ---------------------------------------------------------------------- inner search
def test_inner_search_reaches_the_known_optimum_and_never_picks_excluded():
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 1.5, size=56)

    def score(arrays):  # best: op 3 on every edge
        return ((arrays == 3) * weights).sum(axis=1)

    optimum = np.full(56, 3)
    initial = [rng.integers(0, 4, size=56) for _ in range(20)]
    exclude = {optimum.tobytes(), initial[0].tobytes()}
    picks, scored = inner_search(score, initial, population=20, tournament=5, num_picks=50, pick_every=50,
                                 exclude=exclude, rng=random.Random(0))
    assert scored == 20 + 50 * 50  # the initial population and one child per step
    assert len(picks) == 50
    keys = [arr.tobytes() for arr, _ in picks]
    assert len(set(keys)) == 50 and not set(keys) & exclude
    for arr, predicted in picks:
        assert predicted == pytest.approx(score(arr[None])[0])
    # the excluded optimum is not picked, but its neighbours (one edge off) are found
    assert max(s for _, s in picks) >= weights.sum() - weights.max() - 1e-9
    assert max(s for _, s in picks) < weights.sum()
    # reproducible from the seed
    again, _ = inner_search(score, initial, population=20, tournament=5, num_picks=50, pick_every=50,
                            exclude=exclude, rng=random.Random(0))
    assert [a.tobytes() for a, _ in again] == keys


# ---------------------------------------------------------------------- the whole strategy
def _run_reference(tmp_path):
    import torch

    threads = torch.get_num_threads()
    fake = FakeTrials()
    tuner = make_tuner(tmp_path, work="ref")
    finished = run_in_process(tuner, fake, concurrency=2, max_trials=200, timeout=120)
    assert torch.get_num_threads() == threads  # predictor_threads is restored after the search stage
    return tuner, fake, finished


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("predictor_search")
    tuner, fake, finished = _run_reference(tmp_path)
    return tmp_path, tuner, fake, finished


def test_stages_trials_and_export(reference):
    tmp_path, tuner, fake, finished = reference
    strategy, work = tuner.strategy, tmp_path / "ref"
    assert tuner.error is None and strategy._stage == "done" and all(t["status"] == "SUCCEEDED" for t in finished)
    tasks = [p["task"] for p in fake.calls]
    assert tasks[:4] == ["supernet"] * 4 and set(tasks[4:-1]) == {"evaluate"} and tasks[-1] == "final"
    evaluations = fake.tasks("evaluate")
    assert len(evaluations) == 16 + 3 * 4  # N + T_p x N_p
    assert len({key(p["sample"]) for p in evaluations}) == len(evaluations)  # nothing evaluated twice
    assert all(p["args"]["family"] == "log_power" and p["args"]["mode"] == "multishot" for p in evaluations)
    rows = read_rows(work)
    for r in rows:
        assert r["reward"] == pytest.approx(true_estimate(r["sample"]), abs=1e-6)
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["estimate"] == max(r["reward"] for r in rows)  # Alg. 1 line 26
    assert best["controller"] == "predictor" and best["predictor"]["stages"] == 3
    assert fake.tasks("final")[0]["args"]["sample"] == best["sample"]
    # the paper's budget ratio: evaluated / (random + scored by the predictor)
    assert best["predictor"]["evaluated_fraction"] == pytest.approx(28 / (16 + 3 * (8 + 40)))


def test_predictor_quality_is_measured_on_picks_scored_before_tuning(reference):
    from nni_robust.checkpoint import load_checkpoint
    from nni_robust.strategies.msrobnet import predictor as P

    tmp_path, tuner, fake, _ = reference
    work = tmp_path / "ref"
    report = json.loads((work / "predictor" / "quality.json").read_text())
    assert [s["stage"] for s in report["stages"]] == [1, 2, 3]
    log = tuner.strategy._stage_log
    evaluated = [key(p["sample"]) for p in fake.tasks("evaluate")]
    for t, entry in enumerate(log, start=1):
        q = entry["quality"]
        assert q["n"] == 4 and -1.0 <= q["kendall_tau"] <= 1.0 and -1.0 <= q["spearman"] <= 1.0
        assert 0.0 <= q["precision_at_2"] <= 1.0 and q["precision_at_5"] is None  # K >= n: undefined
        assert entry["predictor_version"] == t - 1
        picks = [key(p["sample"]) for p in entry["picks"]]
        assert picks == evaluated[16 + 4 * (t - 1):16 + 4 * t]  # evaluated in pick order, after the random ones
        # the logged predictions are those of the predictor before it was tuned on these picks
        model = P.build_predictor(LAYOUT, P.PredictorConfig.from_dict(SMALL_PREDICTOR))
        model.load_state_dict(load_checkpoint(work / "predictor" / f"predictor_v{t - 1}.pt")["model"])
        again = P.predict(model, P.encode_archs([p["sample"] for p in entry["picks"]], LAYOUT))
        np.testing.assert_allclose(again, [p["predicted"] for p in entry["picks"]], rtol=1e-5, atol=1e-6)
        assert [p["reward"] for p in entry["picks"]] == pytest.approx([true_estimate(p["sample"])
                                                                        for p in entry["picks"]], abs=1e-6)
        expected = P.ranking_quality([p["predicted"] for p in entry["picks"]], [p["reward"] for p in entry["picks"]],
                                     [2, 5])
        assert q == pytest.approx(expected)
    assert report["pooled"]["n"] == 12 and report["pooled"]["precision_at_5"] is not None
    assert (work / "predictor" / "predictor_v3.pt").exists()
    md = (work / "predictor" / "quality.md").read_text()
    assert md.count("\n| ") == 4 + 1 and "pooled" in md  # header + 3 stages + pooled
    # TensorBoard: one point per stage for each quality measure
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(work / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"predictor/kendall_tau", "predictor/spearman", "predictor/precision_at_2",
            "predictor_pooled/precision_at_5", "search/best_reward", "predictor/train_loss"} <= set(tags)
    assert [e.step for e in acc.Scalars("predictor/kendall_tau")] == [1, 2, 3]
    assert [e.value for e in acc.Scalars("predictor/kendall_tau")] == pytest.approx(
        [e["quality"]["kendall_tau"] for e in log], abs=1e-6)


def test_resume_mid_stage_matches_the_uninterrupted_search(reference, tmp_path):
    ref_tmp, ref_tuner, ref_fake, _ = reference
    work = tmp_path / "work"
    (tmp_path / "supernets").mkdir()
    # Session 1: 4 supernets + 16 random + stage 1 (4) + 2 picks of stage 2, then NNI stops.
    first_fake = FakeTrials()
    first = make_tuner(tmp_path, max_trials=26)
    run_in_process(first, first_fake, concurrency=2, max_trials=26, timeout=120)
    _wait_finished(first)
    first._on_exit()
    state = json.loads((work / "strategy_state.json").read_text())["strategy"]
    assert state["stage"] == "search"
    assert state["predictor"]["stage"] == 1 and state["predictor"]["version"] == 1
    assert len(state["predictor"]["picks"]) == 4 and len(state["records"]) == 22
    assert not (work / "best_architecture.json").exists()
    # a lost predictor checkpoint is rebuilt from the logged training sets
    (work / "predictor" / "predictor_v1.pt").unlink()

    # Session 2 (nnictl resume): nothing runs twice; the search ends as the uninterrupted one.
    fake = FakeTrials()
    second = make_tuner(tmp_path)
    run_in_process(second, fake, concurrency=2, max_trials=200, timeout=120)
    assert second.error is None and second.strategy._stage == "done"
    assert not fake.tasks("supernet")
    before = [key(p["sample"]) for p in first_fake.tasks("evaluate")]
    after = [key(p["sample"]) for p in fake.tasks("evaluate")]
    assert not set(before) & set(after) and len(before) + len(after) == 16 + 3 * 4
    ref_log, log = ref_tuner.strategy._stage_log, second.strategy._stage_log
    assert [[key(p["sample"]) for p in e["picks"]] for e in log] == \
        [[key(p["sample"]) for p in e["picks"]] for e in ref_log]
    for a, b in zip(log, ref_log):
        assert [p["predicted"] for p in a["picks"]] == pytest.approx([p["predicted"] for p in b["picks"]],
                                                                     rel=1e-5, abs=1e-6)
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["sample"] == json.loads((ref_tmp / "ref" / "best_architecture.json").read_text())["sample"]


def test_oneshot_baseline_with_predictor(tmp_path):
    fake = FakeTrials(fail=lambda s: s["S0_e20"] == "none" and s["S0_e21"] == "none")
    tuner = make_tuner(tmp_path, widths=[8], mode="oneshot", num_random=12, stages=2, picks=3, final=False,
                       tune_on="all")
    finished = run_in_process(tuner, fake, concurrency=2, max_trials=100, timeout=120)
    work = tmp_path / "work"
    assert tuner.error is None and tuner.strategy._stage == "done"
    assert [p["task"] for p in fake.calls].count("supernet") == 1
    assert all(p["args"]["mode"] == "oneshot" and p["args"]["widths"] == [8] for p in fake.tasks("evaluate"))
    failed = [t for t in finished if t["status"] == "FAILED"]
    rows = read_rows(work)
    assert len(rows) == len(fake.tasks("evaluate")) - len(failed)
    assert all(r["reward"] == r["result"]["reward_c8"] for r in rows)
    best = json.loads((work / "best_architecture.json").read_text())
    assert best["estimate"] == max(r["reward"] for r in rows) and best["mode"] == "oneshot"
    for entry in tuner.strategy._stage_log:  # failed picks have no reward and are left out of the quality
        assert entry["quality"]["n"] == sum(p["reward"] is not None for p in entry["picks"])


# ---------------------------------------------------------------------- configuration
@pytest.mark.parametrize("kwargs, match", [
    ({"stages": 0}, "stages.* 0"),
    ({"picks": -1}, "picks.* -1"),
    ({"pick_every": 2.5}, "pick_every.* 2.5"),
    ({"tune_on": "old"}, "'old'"),
    ({"precision_ks": [0, 5]}, r"\[0, 5\]"),
    ({"population": 4, "tournament": 5}, r"tournament \(5\).*population \(4\)"),
    ({"predictor": {"gcn_dim": [8]}}, "'gcn_dim'"),
    ({"predictor": {"dropout": 1.0}}, "dropout"),
    ({"predictor": {"internal_nodes": "random"}}, "'random'"),
    ({"training": {"batch_size": 1}}, "batch_size.* 1"),
    ({"training": {"lr": 0}}, "lr"),
    ({"mode": "twoshot"}, "twoshot"),
    ({"predictor_threads": 0}, "predictor_threads.* 0"),
])
def test_configuration_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PredictorSearch(**strategy_args(tmp_path, **kwargs))


def test_registered_in_the_bridge(tmp_path):
    assert strategy_names()["msrobnet_predictor"] == "nni_robust.strategies.msrobnet.predictor_search.PredictorSearch"
    strategy = build_strategy("msrobnet_predictor", strategy_args(tmp_path),
                              context={"work_dir": str(tmp_path), "settings": {"space": {"layout": LAYOUT}}})
    assert isinstance(strategy, PredictorSearch) and strategy.steps == 40 and strategy.stages == 3
    with pytest.raises(ConfigError, match="'stage'"):
        build_strategy("msrobnet_predictor", dict(strategy_args(tmp_path), stage=3))


def _top_level_imports(path):
    import ast

    names = set()
    for node in ast.parse(path.read_text()).body:  # module level only, not inside functions
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_strategy_modules_import_torch_geometric_lazily():
    # the tuner must connect to NNI within 10 s; importing torch_geometric alone takes longer here
    root = Path(__file__).resolve().parents[1] / "strategies" / "msrobnet"
    assert not {"torch", "torch_geometric", "scipy"} & _top_level_imports(root / "predictor_search.py")
    assert "torch_geometric" not in _top_level_imports(root / "predictor.py")
    from nni_robust.strategies.msrobnet import predictor as P

    assert P.ArchPredictor.__module__ == "nni_robust.strategies.msrobnet.predictor"  # defined on first use
    with pytest.raises(AttributeError):
        P.NoSuchThing
