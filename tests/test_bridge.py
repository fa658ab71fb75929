"""StrategyTuner: NNI strategies as nnictl tuners, driven in-process like NNI's dispatcher."""

from __future__ import annotations

import json
import threading
import time

import nni
import pytest
from nni.nas.execution.event import ModelEventType
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.errors import ConfigError
from nni_robust.strategies import bridge
from nni_robust.strategies.bridge import (PARAMETER_KEYS, StrategyTuner, TaskModel, TrialTask,
                                          run_in_process, task_model, with_task)

NUM_LABELS, NUM_VALUES = 6, 4


class ToySpace(ModelSpace):
    """``num_labels`` choices over 0..num_values-1; reward = labels set to the largest value."""

    def __init__(self, num_labels: int = NUM_LABELS, num_values: int = NUM_VALUES):
        super().__init__()
        for i in range(num_labels):
            self.add_mutable(nni.choice(f"x{i}", list(range(num_values))))


TOY = f"{__name__}.ToySpace"  # a space given by dotted path (the bridge accepts any NNI model space)


@pytest.fixture(autouse=True)
def _no_project_settings(monkeypatch, request):
    """Keep these generic tests independent of nni_robust.strategies.settings."""
    if request.node.name != "test_project_settings_fail_fast":
        monkeypatch.setattr(bridge, "_SETTINGS_MODULE", "no_such_settings_module_for_tests")


def reward(params: dict) -> float:
    return float(sum(v == NUM_VALUES - 1 for v in params["sample"].values()))


def make_tuner(tmp_path, strategy, strategy_args=None, **kwargs):
    kwargs.setdefault("space", {"name": TOY})
    kwargs.setdefault("settings", {"dataset": "digits"})
    kwargs.setdefault("flush_timeout", 2.0)
    return StrategyTuner(strategy=strategy, strategy_args=strategy_args or {}, work_dir=tmp_path, **kwargs)


def check_parameters(finished, tmp_path, settings=None):
    ids = set()
    for trial in finished:
        params = trial["parameters"]
        assert set(params) == set(PARAMETER_KEYS)
        assert params["task"] == "evaluate" and params["args"] == {}
        assert params["settings"] == (settings or {"dataset": "digits"})
        assert params["work_dir"] == str(tmp_path.resolve())
        assert set(params["sample"]) == {f"x{i}" for i in range(NUM_LABELS)}
        assert all(v in range(NUM_VALUES) for v in params["sample"].values())
        ids.add(params["model_id"])
    assert len(ids) == len(finished)  # model ids are unique
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(lines) == len(finished)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_nni_random_with_dedup(tmp_path, concurrency):
    tuner = make_tuner(tmp_path, "random", {"seed": 0, "dedup": True}, max_trials=12)
    finished = run_in_process(tuner, reward, concurrency=concurrency, max_trials=12, timeout=60)
    assert len(finished) == 12 and all(t["status"] == "SUCCEEDED" for t in finished)
    samples = {json.dumps(t["parameters"]["sample"], sort_keys=True) for t in finished}
    assert len(samples) == 12  # dedup
    check_parameters(finished, tmp_path)
    trained = list(tuner.engine.list_models(ModelStatus.Trained))
    assert len(trained) == 12 and all(m.metric == reward({"sample": m.sample}) for m in trained)
    # the numpy RNG state (a tuple with an array) is saved as tagged JSON, never as a pickle
    assert not (tmp_path / "strategy_state.pkl").exists()
    from nni_robust import jsonstate

    saved = jsonstate.loads((tmp_path / "strategy_state.json").read_text())["strategy"]["random_state"]
    assert saved[0] == "MT19937" and len(saved[1]) == 624


def test_nni_regularized_evolution(tmp_path):
    args = {"population_size": 6, "sample_size": 3, "mutation_prob": 0.3, "seed": 1}
    tuner = make_tuner(tmp_path, "regularized_evolution", args, max_trials=20)
    finished = run_in_process(tuner, reward, concurrency=2, max_trials=20, timeout=60)
    assert len(finished) == 20
    check_parameters(finished, tmp_path)
    population = tuner.strategy._population
    assert len(population) == 6  # every result reached the strategy as a float metric
    assert all(isinstance(ind.y, float) for ind in population)
    assert tuner.search_finished and tuner.error is None
    from nni_robust import jsonstate  # its Individuals and RNG state round-trip through the JSON state

    saved = jsonstate.loads((tmp_path / "strategy_state.json").read_text())["strategy"]
    assert [(i.x, i.y) for i in saved["population"]] == [(i.x, i.y) for i in population]


def test_tournament_evolution_completes_its_budget(tmp_path):
    args = {"population_size": 6, "tournament_size": 3, "num_initial": 10, "num_steps": 30, "seed": 0}
    tuner = make_tuner(tmp_path, "evolution", args, max_trials=40, task_args={})
    finished = run_in_process(tuner, reward, concurrency=2, max_trials=40, timeout=60)
    strategy = tuner.strategy
    assert tuner.search_finished and strategy.finished and strategy.steps_done == 30
    assert len(finished) == 10 + 30 - strategy.num_reused
    check_parameters(finished, tmp_path)
    best_sample, best_reward = strategy.best()
    assert best_reward == max(t["value"] for t in finished) == reward({"sample": best_sample})
    state = json.loads((tmp_path / "strategy_state.json").read_text())
    assert state["strategy"]["steps_done"] == 30 and state["bridge"]["trials_sent"] == len(finished)


def test_failed_trials_reach_the_strategy_as_failed(tmp_path):
    args = {"population_size": 4, "tournament_size": 2, "num_initial": 8, "num_steps": 12, "seed": 4}
    tuner = make_tuner(tmp_path, "evolution", args)
    ended = []
    tuner.engine.register_model_event_callback(ModelEventType.TrainingEnd, lambda e: ended.append(e.status))

    def evaluate(params):
        if params["sample"]["x0"] == 0:
            raise RuntimeError("trial crashed")
        return {"default": reward(params), "clean": 0.5}

    finished = run_in_process(tuner, evaluate, concurrency=2, max_trials=100, timeout=60)
    failed = [t for t in finished if t["status"] == "FAILED"]
    assert failed and tuner.strategy.num_failed == len(failed)
    assert ended.count(ModelStatus.Failed) == len(failed)
    assert len(list(tuner.engine.list_models(ModelStatus.Failed))) == len(failed)
    for model in tuner.engine.list_models(ModelStatus.Trained):
        assert model.final_result == {"default": model.metric, "clean": 0.5}
    records = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "FAILED" for r in records) == len(failed)


def wait_finished(tuner, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not tuner.search_finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tuner.search_finished


def test_resume_continues_the_search(tmp_path):
    args = {"population_size": 5, "tournament_size": 2, "num_initial": 8, "num_steps": 20, "seed": 7}
    first = make_tuner(tmp_path, "evolution", args, max_trials=15)
    done = run_in_process(first, reward, concurrency=2, max_trials=15, timeout=60)
    wait_finished(first)
    first._on_exit()
    assert len(done) == 15 and not first.strategy.finished
    before = first.strategy.history
    state = json.loads((tmp_path / "strategy_state.json").read_text())
    assert state["strategy"]["history"] and state["bridge"]["trials_sent"] == 15

    second = make_tuner(tmp_path, "evolution", args)  # resume=True by default
    assert second.strategy.history == before and second.engine.trials_sent == 15
    rest = run_in_process(second, reward, concurrency=2, max_trials=100, timeout=60)
    strategy = second.strategy
    assert strategy.finished and strategy.steps_done == 20
    assert strategy.history[:len(before)] == before
    assert len(done) + len(rest) == 8 + 20 - strategy.num_reused  # no evaluation lost or repeated
    ids = [json.loads(line)["model_id"] for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert len(ids) == len(done) + len(rest) == len(set(ids))  # model ids continue across the resume


def test_import_data_is_replayed_not_rerun(tmp_path):
    grid = [{"x0": a, "x1": b} for a in range(2) for b in range(2)]
    known = [{"parameter": {"task": "evaluate", "sample": s, "args": {}}, "value": {"default": 9.0 + i}}
             for i, s in enumerate(grid[:2])]
    tuner = make_tuner(tmp_path, "grid", {"shuffle": False},
                       space={"name": TOY, "num_labels": 2, "num_values": 2})
    finished = run_in_process(tuner, lambda p: 1.0, concurrency=2, max_trials=10, timeout=60,
                              import_data=known)
    assert sorted(json.dumps(t["parameters"]["sample"], sort_keys=True) for t in finished) == \
        sorted(json.dumps(s, sort_keys=True) for s in grid[2:])
    models = list(tuner.engine.list_models(ModelStatus.Trained))
    assert len(models) == 4 and sorted(m.metric for m in models) == [1.0, 1.0, 9.0, 10.0]
    assert tuner.engine.num_replayed == 2


class TaskThenSearch(Strategy):
    """Submits a non-architecture job first, then two architectures once it has ended."""

    def __init__(self, *, work_dir=None, settings=None):
        super().__init__()
        self.work_dir, self.settings = work_dir, settings
        self.results = []

    def _run(self):
        job = task_model(TrialTask("train_supernet", {"channels": 12}))
        assert isinstance(job, TaskModel) and job.sample is None
        self.wait_for_resource()
        self.engine.submit_models(job)
        self.engine.wait_models(job)
        self.results.append(job.final_result)
        models = [with_task(self.model_space.freeze({f"x{i}": 3 for i in range(NUM_LABELS)}), "evaluate",
                            {"capacity": 1000}),
                  self.model_space.freeze({f"x{i}": 0 for i in range(NUM_LABELS)})]
        for model in models:
            if not self.wait_for_resource():
                return
            self.engine.submit_models(model)
        self.engine.wait_models(*models)
        self.results.extend(m.metric for m in models)

    def state_dict(self):
        return {"results": self.results}

    def load_state_dict(self, state_dict):
        self.results = state_dict["results"]


def test_task_models_and_context_injection(tmp_path):
    def evaluate(params):
        if params["task"] == "train_supernet":
            assert params["sample"] is None and params["args"] == {"channels": 12}
            return {"default": 0.0, "checkpoint": "s12.pt"}
        return reward(params)

    tuner = make_tuner(tmp_path, f"{__name__}.TaskThenSearch", task_args={"attack": "fgsm"},
                       settings={"dataset": "digits", "seed": 1})
    finished = run_in_process(tuner, evaluate, concurrency=2, max_trials=10, timeout=60)
    assert [t["parameters"]["task"] for t in finished] == ["train_supernet", "evaluate", "evaluate"]
    args = sorted(json.dumps(t["parameters"]["args"], sort_keys=True) for t in finished[1:])
    assert args == ['{"attack": "fgsm"}', '{"capacity": 1000}']  # a TrialTask overrides task_args
    assert tuner.strategy.results == [{"default": 0.0, "checkpoint": "s12.pt"}, 6.0, 0.0]
    assert tuner.strategy.work_dir == str(tmp_path.resolve()) == str(tuner.engine.work_dir)
    assert tuner.strategy.settings == {"dataset": "digits", "seed": 1}
    assert TrialTask("a", {"b": 1}).args == {"b": 1}
    with pytest.raises(ConfigError):
        TrialTask("")


class Failing(Strategy):
    def _run(self):
        self.wait_for_resource()
        raise ValueError("strategy bug")


def test_strategy_exception_is_surfaced(tmp_path):
    tuner = make_tuner(tmp_path, f"{__name__}.Failing")
    with pytest.raises(RuntimeError, match="strategy bug"):
        run_in_process(tuner, reward, concurrency=2, max_trials=5, timeout=30)
    with pytest.raises(RuntimeError, match="strategy bug"):
        tuner.generate_multiple_parameters([99], st_callback=lambda *a: None)


class SlowThinker(Strategy):
    """Computes for longer than flush_timeout between results and submissions (never parks)."""

    def _run(self):
        for _ in range(3):
            while not self.engine.idle_worker_available():
                time.sleep(0.05)
            model = self.model_space.random()
            self.engine.submit_models(model)
            while not model.status.completed():
                time.sleep(0.05)
            time.sleep(0.5)  # "train a predictor"


def test_late_submissions_are_sent_without_a_dispatcher_call(tmp_path):
    tuner = make_tuner(tmp_path, f"{__name__}.SlowThinker", flush_timeout=0.1, idle_wait=0.0)
    finished = run_in_process(tuner, reward, concurrency=1, max_trials=10, timeout=30)
    assert len(finished) == 3 and tuner.search_finished


def test_dispatcher_calls_never_block_long(tmp_path):
    """A request the strategy cannot answer returns within flush_timeout, keeping the credit."""
    tuner = make_tuner(tmp_path, "evolution", {"population_size": 2, "tournament_size": 1, "num_initial": 2,
                                               "num_steps": 2, "seed": 0}, flush_timeout=0.5)
    sent = []
    lock = threading.Lock()

    def st_callback(pid, params):
        with lock:
            sent.append((pid, params))

    out = tuner.generate_multiple_parameters([0, 1, 2], st_callback=st_callback)
    assert len(out) == 2  # num_initial: the third request is kept as a credit
    assert tuner.engine.outstanding == (1, 0, 2)
    start = time.monotonic()
    tuner.receive_trial_result(0, out[0], 1.0)
    tuner.trial_end(0, True)
    tuner.receive_trial_result(1, out[1], 2.0)
    tuner.trial_end(1, True)
    assert time.monotonic() - start < 3.0
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:  # the first mutant goes out through the credit
        time.sleep(0.01)
    assert sent and sent[0][0] == 2 and set(sent[0][1]) == set(PARAMETER_KEYS)
    tuner._on_exit()


def test_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="'evolutoin'.*evolution"):
        StrategyTuner(strategy="evolutoin", space={"name": TOY}, work_dir=tmp_path)
    with pytest.raises(ConfigError, match="'flush_timout'.*Valid keys"):
        StrategyTuner(strategy="random", space={"name": TOY}, work_dir=tmp_path, flush_timout=1)
    with pytest.raises(ConfigError, match="'space'"):
        StrategyTuner(strategy="random", work_dir=tmp_path)
    with pytest.raises(ConfigError, match="'popsize'"):
        make_tuner(tmp_path, "evolution", {"popsize": 3})
    with pytest.raises(ConfigError, match="tournament_size=5"):
        make_tuner(tmp_path, "evolution", {"population_size": 2, "tournament_size": 5, "num_initial": 4})
    with pytest.raises(ConfigError, match="'nosuch'"):
        make_tuner(tmp_path, "random", space={"name": "nosuch"})
    with pytest.raises(ConfigError, match="'width'"):
        make_tuner(tmp_path, "random", space={"name": TOY, "width": 3})
    with pytest.raises(ConfigError, match="not a subclass"):
        make_tuner(tmp_path, "json.dumps")
    with pytest.raises(ConfigError, match="work_dir"):
        StrategyTuner(strategy="random", space={"name": TOY})


def test_settings_are_validated_at_construction(tmp_path, monkeypatch):
    module = tmp_path / "fake_settings_for_bridge.py"
    module.write_text(
        "from nni_robust.errors import ConfigError\n"
        "def validate_settings(settings):\n"
        "    for key in settings:\n"
        "        if key not in ('dataset', 'seed'):\n"
        "            raise ConfigError(f'unknown setting {key!r}')\n"
        "    return dict(settings, validated=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(bridge, "_SETTINGS_MODULE", "fake_settings_for_bridge")
    with pytest.raises(ConfigError, match="'epochz'"):
        make_tuner(tmp_path / "a", "random", settings={"epochz": 3})
    tuner = make_tuner(tmp_path / "b", "random", {"seed": 0}, settings={"dataset": "digits"})
    finished = run_in_process(tuner, reward, concurrency=1, max_trials=2, timeout=30)
    assert finished[0]["parameters"]["settings"] == {"dataset": "digits", "validated": True}


def test_project_settings_fail_fast(tmp_path):
    pytest.importorskip("nni_robust.strategies.settings")
    with pytest.raises(ConfigError, match="no_such_setting"):
        make_tuner(tmp_path, "random", settings={"no_such_setting": 1})
