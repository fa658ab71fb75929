"""Tournament-based evolutionary search with worst-removal (MSRobNet's evolutionary controller).

MSRobNet (Ning et al., "Multi-shot NAS for discovering adversarially robust
convolutional neural architectures", Sec. 5.3.2, App. B.1 and Alg. 1 lines
11-18) explores the space with the tournament evolution of Real et al. [29]:

1. ``pop`` <- the ``population_size`` (pi = 100) topologies with the highest
   rewards among ``num_initial`` (N = 200) randomly sampled, evaluated ones.
2. For ``num_steps`` (T_e = 200) steps: draw a tournament of
   ``tournament_size`` (mu = 10) random members of ``pop``; the best one is
   the parent; its mutation (one edge changed) is evaluated and added to
   ``pop``; the **worst** member of ``pop`` is removed (App. B.1: "In each
   step, the worst topology is removed from the population" -- unlike
   Real et al.'s aging evolution, which removes the oldest).
3. The result is the topology with the highest reward in ``pop``
   (Alg. 1 line 26).

Where the paper is silent, this implementation chooses (and every choice is a
parameter or documented here):

* Random samples pick each label's value uniformly (the supernet training of
  the paper samples "a random architecture": a uniform op per edge); the
  ``weights`` of a :class:`~nni.mutable.Categorical` are ignored.
* MUTATION: one label chosen uniformly among those with more than one value
  gets a different value, chosen uniformly (in the dense robust cell, one
  edge changes its primitive).
* Ties: the tournament winner is the first best member in draw order; the
  member removed is the oldest among the worst.
* ``dedup=True``: a sample whose reward is already known is not evaluated
  again; the step reuses the known reward (counted in ``num_reused``). A
  random or mutated sample that equals one still being evaluated is redrawn
  (up to ``max_retries`` times).
* Parallel evaluation: up to ``engine.idle_worker_available()`` mutants are in
  flight at once (asynchronous steady state); each is bred from the
  population as it stands when the mutant is drawn, and each completed
  evaluation is one step.
* A failed evaluation (status other than trained, or no usable metric) is
  skipped and counted in ``num_failed``; a failed mutant still uses its
  step (so a search always terminates), a failed initial sample is simply
  missing from the pool.
* The reward is the model's final metric: a number, or a dict whose
  ``"default"`` entry is a number (NNI's convention).

The strategy works on any NNI model space whose simplified mutables are
:class:`~nni.mutable.Categorical` (annotations such as constraints are left to
``model_space.freeze``, which rejects invalid samples; those are redrawn).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from collections import deque
from typing import Any, Iterable, Mapping

from nni.mutable import Categorical, MutableAnnotation, SampleValidationError
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.errors import ArchitectureError, ConfigError

__all__ = ["TournamentEvolution", "sample_key", "reward_of"]

_logger = logging.getLogger(__name__)

_STATE_FORMAT = "nni_robust.TournamentEvolution/1"


def sample_key(sample: Mapping[str, Any]) -> str:
    """Canonical, hashable text of a sample (JSON with sorted keys; ``repr`` for odd values)."""
    return json.dumps(dict(sample), sort_keys=True, default=repr)


def reward_of(model: ExecutableModelSpace) -> float | None:
    """The scalar reward of a finished model, or ``None`` when it has none.

    A model counts as evaluated when its status is ``Trained`` and its final
    metric is a finite number, or a dict whose ``"default"`` is one.
    """
    if model.status != ModelStatus.Trained:
        return None
    metric = model.metric
    if isinstance(metric, Mapping):
        metric = metric.get("default")
    if isinstance(metric, bool) or not isinstance(metric, (int, float)):
        return None
    metric = float(metric)
    return metric if math.isfinite(metric) else None


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
    if value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
    return value


class TournamentEvolution(Strategy):
    """Tournament evolution with worst-removal (MSRobNet Alg. 1 lines 11-18, App. B.1).

    Args:
        population_size: pi, members kept in the population (paper: 100).
        tournament_size: mu, members drawn per tournament (paper: 10).
        num_steps: T_e, number of mutants bred and evaluated (paper: 200).
        num_initial: N, size of the initial pool from which the best
            ``population_size`` form the first population (paper: 200).
            Pairs passed in ``initial_population`` count towards it; the rest
            are random samples evaluated by the engine.
        initial_population: Already evaluated ``(sample, reward)`` pairs that
            seed the pool (e.g. the N random topologies MSRobNet evaluates for
            its function-family selection), so they are not evaluated again.
        dedup: Never evaluate a sample twice: reuse its known reward.
        seed: Seed of the strategy's random number generator; ``None`` draws
            one (logged, and kept in :meth:`state_dict`).
        max_retries: Redraws allowed when a sample is invalid for the space or
            (with ``dedup``) already being evaluated.
        poll_interval: Seconds to wait between checks for a free worker when
            the engine has none and no evaluation has finished.

    Raises:
        ConfigError: A setting is out of range (e.g. ``tournament_size`` larger
            than ``population_size``).

    Example::

        strategy = TournamentEvolution(population_size=100, tournament_size=10,
                                       num_steps=200, num_initial=200, seed=0)
        strategy(model_space, engine)      # NNI's Strategy protocol
        sample, reward = strategy.best()
    """

    def __init__(self, *, population_size: int = 100, tournament_size: int = 10, num_steps: int = 200,
                 num_initial: int = 200,
                 initial_population: Iterable[tuple[Mapping[str, Any], float]] | None = None,
                 dedup: bool = True, seed: int | None = None, max_retries: int = 100,
                 poll_interval: float = 0.5) -> None:
        super().__init__()
        self.population_size = _check_int("population_size", population_size, 1)
        self.tournament_size = _check_int("tournament_size", tournament_size, 1)
        self.num_steps = _check_int("num_steps", num_steps, 0)
        self.num_initial = _check_int("num_initial", num_initial, 1)
        self.max_retries = _check_int("max_retries", max_retries, 1)
        if self.tournament_size > self.population_size:
            raise ConfigError(
                f"tournament_size must be <= population_size, but got tournament_size={tournament_size} "
                f"> population_size={population_size}.")
        if self.population_size > self.num_initial:
            raise ConfigError(
                f"population_size must be <= num_initial (the population is the best population_size of "
                f"num_initial samples), but got population_size={population_size} > num_initial={num_initial}.")
        if not isinstance(dedup, bool):
            raise ConfigError(f"dedup must be a bool, but got {dedup!r}.")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise ConfigError(f"poll_interval must be a positive number of seconds, but got {poll_interval!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer or None, but got {seed!r}.")
        self.dedup = dedup
        self.poll_interval = float(poll_interval)
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 32)
            _logger.info("TournamentEvolution drew seed %d.", seed)
        self.seed = seed
        self._rng = random.Random(seed)

        self._initial_pairs: list[tuple[dict, float]] = []
        for i, pair in enumerate(initial_population or []):
            try:
                sample, reward = pair
            except (TypeError, ValueError):
                raise ConfigError(f"initial_population[{i}] must be a (sample, reward) pair, but got {pair!r}.") from None
            if not isinstance(sample, Mapping):
                raise ConfigError(f"initial_population[{i}] sample must be a dict, but got {sample!r}.")
            if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
                raise ConfigError(f"initial_population[{i}] reward must be a finite number, but got {reward!r}.")
            self._initial_pairs.append((dict(sample), float(reward)))

        # Search state (all mutated on the strategy thread only; see _on_training_end).
        self._phase = "initial"                   # initial -> steps -> done
        self._pool: list[tuple[dict, float]] = []  # evaluated initial samples, in evaluation order
        self._population: list[tuple[dict, float, int]] = []  # (sample, reward, birth)
        self._history: dict[str, tuple[dict, float]] = {}     # key -> (sample, reward), evaluation order
        self._births = 0
        self._initial_submitted = 0
        self._steps_started = 0
        self._steps_done = 0
        self._num_failed = 0
        self._num_reused = 0
        self._seeded = False
        # In flight: id(model) -> (model, sample, kind); kinds 'initial' | 'step'.
        self._inflight: dict[int, tuple[ExecutableModelSpace, dict, str]] = {}
        self._resubmit: list[tuple[dict, str]] = []   # in-flight samples of a loaded state
        self._completed: deque[ExecutableModelSpace] = deque()
        self._completed_cond = threading.Condition()
        self._labels: list[tuple[str, list]] = []

    def extra_repr(self) -> str:
        return (f"population_size={self.population_size}, tournament_size={self.tournament_size}, "
                f"num_steps={self.num_steps}, num_initial={self.num_initial}, dedup={self.dedup}, seed={self.seed}")

    # ------------------------------------------------------------------ public views
    @property
    def population(self) -> list[tuple[dict, float]]:
        """Current population as ``(sample, reward)`` pairs, oldest first."""
        return [(dict(s), r) for s, r, _ in self._population]

    @property
    def history(self) -> list[tuple[dict, float]]:
        """Every successfully evaluated sample with its reward, in evaluation order."""
        return [(dict(s), r) for s, r in self._history.values()]

    @property
    def steps_done(self) -> int:
        """Evolution steps completed so far (T_e counts these)."""
        return self._steps_done

    @property
    def num_failed(self) -> int:
        """Evaluations that failed and were skipped."""
        return self._num_failed

    @property
    def num_reused(self) -> int:
        """Steps whose mutant's reward was already known (``dedup``)."""
        return self._num_reused

    @property
    def finished(self) -> bool:
        """Whether the search has completed all its steps."""
        return self._phase == "done"

    def best(self) -> tuple[dict, float]:
        """The best ``(sample, reward)`` evaluated so far (Alg. 1 line 26).

        Raises:
            RuntimeError: Nothing has been evaluated yet.
        """
        candidates = [(s, r) for s, r, _ in self._population] or list(self._history.values())
        if not candidates:
            raise RuntimeError("TournamentEvolution has not evaluated any sample yet.")
        sample, reward = max(candidates, key=lambda sr: sr[1])  # first of the best on ties
        return dict(sample), reward

    # ------------------------------------------------------------------ NNI Strategy hooks
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        labels = []
        for label, mutable in model_space.simplify().items():
            if isinstance(mutable, MutableAnnotation):
                continue  # constraints etc.: enforced by model_space.freeze
            if not isinstance(mutable, Categorical):
                raise ConfigError(
                    f"TournamentEvolution supports Categorical mutables (nni.choice) only, but label {label!r} "
                    f"is a {type(mutable).__name__}.")
            labels.append((label, list(mutable.values)))
        if not labels:
            raise ConfigError("TournamentEvolution needs a model space with at least one nni.choice, but it has none.")
        if not any(len(values) > 1 for _, values in labels):
            raise ConfigError("TournamentEvolution cannot mutate a space in which every choice has a single value.")
        self._labels = labels
        for i, (sample, _) in enumerate(self._initial_pairs):
            self._check_sample(sample, f"initial_population[{i}]")
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        return model_space

    def _cleanup(self) -> None:
        try:
            self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        except ValueError:
            pass

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        # May run on any thread (the engine's): only hand the model over to the strategy thread.
        with self._completed_cond:
            if id(event.model) in self._inflight:
                self._completed.append(event.model)
                self._completed_cond.notify_all()

    def _run(self) -> None:
        if not self._seeded:
            for sample, reward in self._initial_pairs:
                self._record_initial(sample, reward)
            self._seeded = True
        # Re-submit what was in flight when the state was saved (exact resume).
        resubmit, self._resubmit = self._resubmit, []
        for sample, kind in resubmit:
            self._submit(sample, kind, count=False)

        while True:
            self._drain()
            if self._phase == "initial" and not self._needs_more() and not self._inflight:
                self._start_steps()
                continue
            if self._phase == "steps" and self._steps_done >= self.num_steps and not self._inflight:
                self._phase = "done"
            if self._phase == "done":
                best, reward = self.best()
                _logger.info("TournamentEvolution finished %d steps (%d failed, %d reused); best reward %.6g: %s",
                             self._steps_done, self._num_failed, self._num_reused, reward, best)
                return
            if self._needs_more():
                if not self.engine.budget_available():
                    if self._inflight and self._wait_inflight():
                        continue
                    _logger.info("TournamentEvolution stops: the engine's budget is exhausted (phase %s, %d/%d "
                                 "steps, %d in flight). The state can be resumed.",
                                 self._phase, self._steps_done, self.num_steps, len(self._inflight))
                    return
                if self.engine.idle_worker_available():
                    if self._has_completed():
                        continue  # breed from the freshest population
                    self._submit_next()
                    continue
                self._wait_for_completion(self.poll_interval)
            elif not self._wait_inflight():
                # Everything needed is in flight (Alg. 1 needs all N initial rewards before line 12),
                # but the engine stopped waiting without finishing them: it has shut down.
                _logger.warning("The engine stopped with %d evaluations in flight; TournamentEvolution stops "
                                "(they are kept in its state and re-submitted on resume).", len(self._inflight))
                return

    # ------------------------------------------------------------------ search steps
    def _needs_more(self) -> bool:
        if self._phase == "initial":
            return self._initial_submitted < self._num_random()
        if self._phase == "steps":
            return self._steps_started < self.num_steps
        return False

    def _num_random(self) -> int:
        return max(0, self.num_initial - len(self._initial_pairs))

    def _has_completed(self) -> bool:
        with self._completed_cond:
            return bool(self._completed)

    def _wait_inflight(self) -> bool:
        """Wait for every evaluation in flight; False when the engine returned with none finished."""
        if not self._inflight:
            return False
        self.engine.wait_models(*[m for m, _, _ in list(self._inflight.values())])
        return self._has_completed()

    def _wait_for_completion(self, timeout: float) -> None:
        with self._completed_cond:
            if not self._completed:
                self._completed_cond.wait(timeout)

    def _drain(self) -> None:
        while True:
            with self._completed_cond:
                if not self._completed:
                    return
                model = self._completed.popleft()
                _, sample, kind = self._inflight.pop(id(model))
            reward = reward_of(model)
            if reward is None:
                self._num_failed += 1
                _logger.warning("Evaluation failed (status %s, metric %r); skipped: %s",
                                model.status.value, model.metric, sample)
                if kind == "step":
                    self._steps_done += 1
                continue
            if kind == "initial":
                self._record_initial(sample, reward)
            else:
                self._add_step(sample, reward)

    def _record_initial(self, sample: dict, reward: float) -> None:
        self._pool.append((sample, reward))
        self._history.setdefault(sample_key(sample), (sample, reward))

    def _start_steps(self) -> None:
        if not self._pool:
            raise RuntimeError(f"All {self.num_initial} initial evaluations of TournamentEvolution failed.")
        ranked = sorted(range(len(self._pool)), key=lambda i: -self._pool[i][1])  # stable: earlier first on ties
        keep = sorted(ranked[:self.population_size])
        self._population = []
        for i in keep:
            sample, reward = self._pool[i]
            self._population.append((sample, reward, self._births))
            self._births += 1
        if len(self._population) < self.population_size:
            _logger.warning("Only %d initial samples succeeded; the population starts with %d < %d members.",
                            len(self._pool), len(self._population), self.population_size)
        self._phase = "steps"
        _logger.info("Initial population: %d members, best reward %.6g.", len(self._population),
                     max(r for _, r, _ in self._population))

    def _add_step(self, sample: dict, reward: float) -> None:
        self._history.setdefault(sample_key(sample), (sample, reward))
        self._population.append((sample, reward, self._births))
        self._births += 1
        worst = min(range(len(self._population)), key=lambda i: self._population[i][1])  # oldest on ties
        removed = self._population.pop(worst)
        self._steps_done += 1
        _logger.info("[step %d/%d] reward %.6g added, worst %.6g removed.", self._steps_done, self.num_steps,
                     reward, removed[1])

    def _submit_next(self) -> None:
        """Breed (or draw) one sample and submit it; with ``dedup`` a known mutant is a free step."""
        kind = "initial" if self._phase == "initial" else "step"
        sample = self._draw(kind)
        if kind == "step" and self.dedup:
            known = self._history.get(sample_key(sample))
            if known is not None:
                self._steps_started += 1
                self._num_reused += 1
                self._add_step(sample, known[1])
                return
        self._submit(sample, kind, count=True)

    def _submit(self, sample: dict, kind: str, *, count: bool) -> None:
        model = self.model_space.freeze(dict(sample))
        with self._completed_cond:
            self._inflight[id(model)] = (model, sample, kind)
        if count:
            if kind == "initial":
                self._initial_submitted += 1
            else:
                self._steps_started += 1
        self.engine.submit_models(model)

    def _draw(self, kind: str) -> dict:
        """A valid new sample: uniform random for the initial pool, else a tournament winner's mutant.

        With ``dedup``, samples being evaluated (and, for the initial pool, samples
        already evaluated) are redrawn up to ``max_retries`` times; after that a
        mutant may repeat one in flight, while the initial pool raises.
        """
        busy = {sample_key(s) for _, s, _ in self._inflight.values()}
        fallback = None
        for _ in range(self.max_retries):
            if kind == "initial":
                sample = {label: self._rng.choice(values) for label, values in self._labels}
            else:
                sample = self._mutate(self._tournament())
            if not self._valid(sample):
                continue
            key = sample_key(sample)
            if self.dedup and (key in busy or (kind == "initial" and key in self._history)):
                fallback = fallback or sample
                continue
            return sample
        if kind == "step" and fallback is not None:
            return fallback
        raise RuntimeError(f"TournamentEvolution could not draw a new valid {kind} sample in {self.max_retries} "
                           "tries; the space is too small or too constrained for these settings.")

    def _tournament(self) -> dict:
        size = min(self.tournament_size, len(self._population))
        picked = self._rng.sample(range(len(self._population)), size)
        winner = max(picked, key=lambda i: self._population[i][1])  # first in draw order on ties
        return self._population[winner][0]

    def _mutate(self, parent: Mapping[str, Any]) -> dict:
        """One label (uniform among those with >1 value) gets a different value (uniform)."""
        mutable_labels = [(label, values) for label, values in self._labels if len(values) > 1]
        label, values = mutable_labels[self._rng.randrange(len(mutable_labels))]
        others = [v for v in values if v != parent[label]]
        child = dict(parent)
        child[label] = others[self._rng.randrange(len(others))]
        return child

    def _valid(self, sample: dict) -> bool:
        try:
            self.model_space.validate(dict(sample))
        except SampleValidationError as exc:
            _logger.debug("Invalid sample redrawn (%s): %s", exc, sample)
            return False
        return True

    def _check_sample(self, sample: Mapping[str, Any], where: str) -> None:
        missing = [label for label, _ in self._labels if label not in sample]
        if missing:
            raise ArchitectureError(f"{where} lacks labels {missing}; the space's labels are "
                                    f"{[label for label, _ in self._labels]}.")
        try:
            self.model_space.validate(dict(sample))
        except SampleValidationError as exc:
            raise ArchitectureError(f"{where} is not in the model space: {exc} (sample {dict(sample)!r}).") from None

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """JSON-able state; with :meth:`load_state_dict` the search resumes exactly.

        Samples in flight are stored and re-submitted first on resume.
        """
        version, internal, gauss = self._rng.getstate()
        return {
            "format": _STATE_FORMAT,
            "seed": self.seed,
            "rng_state": [version, list(internal), gauss],
            "phase": self._phase,
            "seeded": self._seeded,
            "pool": [[dict(s), r] for s, r in self._pool],
            "population": [[dict(s), r, b] for s, r, b in self._population],
            "history": [[dict(s), r] for s, r in self._history.values()],
            "births": self._births,
            "initial_submitted": self._initial_submitted,
            "steps_started": self._steps_started,
            "steps_done": self._steps_done,
            "num_failed": self._num_failed,
            "num_reused": self._num_reused,
            "in_flight": [[dict(s), kind] for _, s, kind in self._inflight.values()]
                         + [[dict(s), kind] for s, kind in self._resubmit],
            "settings": self._settings(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a state from :meth:`state_dict` (call after ``initialize``, before ``run``).

        Raises:
            ConfigError: The state is not from a TournamentEvolution, or from one
                with different settings.
        """
        if not isinstance(state_dict, Mapping) or state_dict.get("format") != _STATE_FORMAT:
            raise ConfigError(f"Not a TournamentEvolution state (format {_STATE_FORMAT!r} expected).")
        if self._inflight or self._phase != "initial" or self._pool:
            raise RuntimeError("load_state_dict must be called before run().")
        saved = state_dict.get("settings", {})
        mine = self._settings()
        diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diff:
            raise ConfigError("The saved TournamentEvolution state has different settings "
                              + ", ".join(f"{k}: saved {a!r} vs {b!r}" for k, (a, b) in diff.items()) + ".")
        version, internal, gauss = state_dict["rng_state"]
        self.seed = state_dict["seed"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._phase = state_dict["phase"]
        self._seeded = state_dict["seeded"]
        self._pool = [(dict(s), float(r)) for s, r in state_dict["pool"]]
        self._population = [(dict(s), float(r), int(b)) for s, r, b in state_dict["population"]]
        self._history = {sample_key(s): (dict(s), float(r)) for s, r in state_dict["history"]}
        self._births = state_dict["births"]
        self._initial_submitted = state_dict["initial_submitted"]
        self._steps_started = state_dict["steps_started"]
        self._steps_done = state_dict["steps_done"]
        self._num_failed = state_dict["num_failed"]
        self._num_reused = state_dict["num_reused"]
        self._resubmit = [(dict(s), kind) for s, kind in state_dict["in_flight"]]

    def _settings(self) -> dict:
        return {
            "population_size": self.population_size,
            "tournament_size": self.tournament_size,
            "num_steps": self.num_steps,
            "num_initial": self.num_initial,
            "num_seeded": len(self._initial_pairs),
            "dedup": self.dedup,
        }
