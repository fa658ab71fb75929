"""TournamentEvolution (MSRobNet Alg. 1 lines 11-18) on a toy space with a known optimum."""

from __future__ import annotations

import json

import nni
import pytest
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import SimplifiedModelSpace

from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.strategies.msrobnet.evolution import TournamentEvolution, sample_key

TARGET = 3


class ToySpace(ModelSpace):
    """``num_labels`` labels with values 0..num_values-1; the optimum sets every label to TARGET."""

    def __init__(self, num_labels: int = 6, num_values: int = 4):
        super().__init__()
        for i in range(num_labels):
            self.add_mutable(nni.choice(f"x{i}", list(range(num_values))))


def reward(sample: dict, target: int = TARGET) -> float:
    return float(sum(v == target for v in sample.values()))


def make_space(num_labels=6, num_values=4, fail=None, log=None):
    """Executable toy space (optimum: every label at its largest value).

    ``fail(sample)`` makes an evaluation raise; ``log`` records the evaluated samples.
    """

    def evaluate(_model):
        sample = nni.get_current_parameter().sample
        if log is not None:
            log.append(dict(sample))
        if fail is not None and fail(sample):
            raise RuntimeError("evaluation failed on purpose")
        nni.report_final_result(reward(sample, num_values - 1))

    return SimplifiedModelSpace.from_model(ToySpace(num_labels, num_values), FunctionalEvaluator(evaluate))


SETTINGS = dict(population_size=20, tournament_size=5, num_initial=40, num_steps=150)


def test_reaches_optimum_with_worst_removal():
    snapshots = []
    strategy = TournamentEvolution(**SETTINGS, seed=0)
    log = []
    space = make_space(log=log)
    engine = SequentialExecutionEngine()
    original_submit = engine.submit_models

    def submit(*models):  # the population as each evaluation starts
        snapshots.append(list(strategy.population))
        original_submit(*models)

    engine.submit_models = submit
    strategy(space, engine)

    sample, best = strategy.best()
    assert best == 6.0 and sample == {f"x{i}": TARGET for i in range(6)}
    assert strategy.finished and strategy.steps_done == SETTINGS["num_steps"]
    assert len(strategy.population) == SETTINGS["population_size"]
    # Every evaluation ran once; reused steps did not reach the engine.
    assert len(log) == SETTINGS["num_initial"] + SETTINGS["num_steps"] - strategy.num_reused
    assert len({sample_key(s) for s in log}) == len(log)
    # Worst-removal: in the step phase the population's minimum never decreases
    # and its size stays pi (aging evolution would drop the oldest instead).
    steps = [snap for snap in snapshots if len(snap) == SETTINGS["population_size"]]
    minima = [min(r for _, r in snap) for snap in steps]
    assert len(steps) >= SETTINGS["num_steps"] - strategy.num_reused
    assert all(a <= b for a, b in zip(minima, minima[1:]))
    # The first population is the best pi of the N initial samples.
    initial = sorted((reward(s) for s in log[:SETTINGS["num_initial"]]), reverse=True)
    assert sorted((r for _, r in steps[0]), reverse=True) == initial[:SETTINGS["population_size"]]


def test_exact_resume_from_state_dict():
    full = TournamentEvolution(**SETTINGS, seed=3)
    full(make_space(), SequentialExecutionEngine())

    first = TournamentEvolution(**SETTINGS, seed=3)
    first(make_space(), SequentialExecutionEngine(max_model_count=90))  # stops mid-evolution
    assert not first.finished and 0 < first.steps_done < SETTINGS["num_steps"]
    state = json.loads(json.dumps(first.state_dict()))  # the state is JSON-able

    second = TournamentEvolution(**SETTINGS, seed=3)
    second.initialize(make_space(), SequentialExecutionEngine())
    second.load_state_dict(state)
    second.run()
    assert second.finished
    assert second.history == full.history
    assert second.population == full.population
    assert second.best() == full.best()


def test_refuses_second_run_and_best_before_run():
    strategy = TournamentEvolution(population_size=2, tournament_size=2, num_initial=4, num_steps=2, seed=0)
    with pytest.raises(RuntimeError):
        strategy.best()
    space = make_space(num_labels=3)
    strategy(space, SequentialExecutionEngine())
    with pytest.raises(RuntimeError):
        strategy.run()
    with pytest.raises(RuntimeError):
        strategy.initialize(space, SequentialExecutionEngine())


@pytest.mark.parametrize("kwargs, words", [
    (dict(population_size=5, tournament_size=10), ["tournament_size=10", "population_size=5"]),
    (dict(population_size=300, num_initial=200), ["population_size=300", "num_initial=200"]),
    (dict(num_steps=-1), ["num_steps", "-1"]),
    (dict(population_size=2.5), ["population_size", "2.5"]),
    (dict(seed="x"), ["seed", "'x'"]),
    (dict(poll_interval=0), ["poll_interval", "0"]),
    (dict(initial_population=[({"x0": 1}, float("nan"))]), ["initial_population[0]", "nan"]),
    (dict(initial_population=[42]), ["initial_population[0]", "42"]),
])
def test_settings_are_validated(kwargs, words):
    with pytest.raises(ConfigError) as info:
        TournamentEvolution(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_initial_population_seeds_the_search():
    space = make_space()
    seeds = [({f"x{i}": (j + i) % 4 for i in range(6)}, 0.0) for j in range(4)]
    seeds = [(s, reward(s)) for s, _ in seeds]
    log = []
    strategy = TournamentEvolution(population_size=4, tournament_size=2, num_initial=4, num_steps=30,
                                   initial_population=seeds, seed=1)
    strategy(make_space(log=log), SequentialExecutionEngine())
    # No random initial evaluations: only the mutants ran.
    assert len(log) == 30 - strategy.num_reused
    assert strategy.best()[1] >= max(r for _, r in seeds)
    with pytest.raises(ArchitectureError):
        bad = TournamentEvolution(population_size=1, tournament_size=1, num_initial=1, num_steps=1,
                                  initial_population=[({"x0": 7}, 1.0)])
        bad.initialize(space, SequentialExecutionEngine())


def test_failed_evaluations_are_skipped_and_counted():
    log = []
    strategy = TournamentEvolution(population_size=8, tournament_size=3, num_initial=16, num_steps=40, seed=2)
    space = make_space(fail=lambda s: s["x0"] == 0, log=log)
    strategy(space, SequentialExecutionEngine(continue_on_failure=True))
    failed = [s for s in log if s["x0"] == 0]
    assert failed and strategy.num_failed == len(failed)
    assert all(s["x0"] != 0 for s, _ in strategy.history)
    assert strategy.steps_done == 40


def test_dedup_reuses_known_rewards():
    def run(dedup):
        log = []
        strategy = TournamentEvolution(population_size=2, tournament_size=2, num_initial=4, num_steps=10,
                                       dedup=dedup, seed=0)
        strategy(make_space(num_labels=2, num_values=2, log=log), SequentialExecutionEngine())
        return strategy, log

    strategy, log = run(True)
    assert len(log) == 4  # the whole 2x2 space: every mutant is known
    assert strategy.num_reused == 10 and strategy.best()[1] == 2.0
    _, log = run(False)
    assert len(log) == 14


def test_rejects_non_categorical_space():
    class Continuous(ModelSpace):
        def __init__(self):
            super().__init__()
            self.add_mutable(nni.uniform("lr", 0.0, 1.0))

    space = SimplifiedModelSpace.from_model(Continuous(), None)
    with pytest.raises(ConfigError, match="'lr'"):
        TournamentEvolution(population_size=1, tournament_size=1, num_initial=1,
                            num_steps=1).initialize(space, SequentialExecutionEngine())
