"""Run any NNI 3.0 exploration strategy as the tuner of an ``nnictl`` experiment.

:class:`StrategyTuner` is an NNI :class:`~nni.tuner.Tuner` that runs a model-space
exploration strategy (NNI's :class:`~nni.nas.strategy.Random`,
:class:`~nni.nas.strategy.RegularizedEvolution`, :class:`~nni.nas.strategy.GridSearch`,
our :class:`~nni_robust.strategies.msrobnet.evolution.TournamentEvolution`, or any
:class:`~nni.nas.strategy.base.Strategy` given by dotted path) unmodified, in a
background thread, against a :class:`BridgeEngine` -- an implementation of NNI's
:class:`~nni.nas.execution.ExecutionEngine` whose "workers" are the trial slots
NNI asks the tuner to fill.

Every trial receives (``nni.get_next_parameter()``) one JSON dict::

    {"task": str,             # what the trial must do (default_task, or the model's TrialTask)
     "sample": {label: value} | None,   # the architecture (None for jobs that are not one)
     "args": dict,            # task arguments
     "settings": dict,        # the experiment's settings, the same for every trial
     "work_dir": str,         # folder shared by the tuner and all trials
     "model_id": int,         # unique per submitted model, stable across resumes
     "mutation_summary": {"kind": task, ...}}  # what NNI's web UI shows instead (.display)

and reports a float, or a dict of floats with a ``"default"`` entry, to
``nni.report_final_result``. The strategy sees the float ``default`` as the
model's metric; the whole dict is kept as ``model.final_result``.

Threads and the credit protocol
-------------------------------
Three threads touch the tuner: NNI's dispatcher runs ``generate_*``,
``receive_trial_result`` and ``import_data`` on its *default* command thread
(D) and ``trial_end`` on its *assessor* command thread (A) -- each processes
one command at a time, so none of these calls may wait for a trial; the
strategy runs on its own thread (S). One re-entrant lock guards the engine.

* A *credit* is a parameter id NNI asked for and that has no model yet
  (``generate_multiple_parameters(ids)`` adds ``len(ids)`` credits; NNI asks
  for ``trialConcurrency`` at the start and one more whenever a trial ends,
  until ``maxTrialNumber``). ``idle_worker_available()`` is true while
  credits outnumber the models queued for sending, so a strategy submits
  exactly as many models as NNI can run.
* ``submit_models`` (S) queues models. Pairing a queued model with a credit
  *sends* it: as the return value of ``generate_multiple_parameters`` (for
  that request's ids, in order) or through the ``st_callback`` NNI passed.
* *Settling*: after changing the state (credits added, a result, a trial
  end) a dispatcher thread waits -- at most ``flush_timeout`` seconds -- until
  the strategy has reacted: every credit has a queued model, or S is
  *parked* (blocked in ``idle_worker_available``/``wait_models`` having seen
  the current state), or S has finished. It then pairs and sends. The ids of
  a request being answered are *reserved* for its return value (no other
  thread sends against them), so S's reaction to a request normally goes
  out as the return value and NNI sees a full answer.
* *Late send*: a model submitted when an unreserved credit is free (S took
  longer than ``flush_timeout``, e.g. a predictor being trained, or a result
  let it breed while a slot was open) is sent at once from S through
  ``st_callback``. Without it the experiment would hang whenever S submits
  after every trial has ended (no NNI call would come).
  Sending from a non-dispatcher thread is what NNI itself does (its NAS
  engine sends from the strategy thread; its evolution tuner from the
  assessor thread): the websocket client serialises sends on its event loop.
  ``late_send=False`` disables it (then only dispatcher threads send).
* Waits are bounded and no thread waits while holding the lock, so no cycle
  can deadlock: D and A wait for S (bounded), A waits for D's result (bounded
  by ``result_grace``: NNI queues a trial's final metric on D before its end
  on A, but D may still be settling), S waits for credits and events.
* Events (``FinalMetric`` from D, ``TrainingEnd`` from A) are dispatched under
  the lock on the dispatcher thread, as NNI's own engine does on its
  listener thread; a successful trial's ``TrainingEnd`` waits for its metric
  so strategies see the metric first.

Ending the experiment
---------------------
NNI marks an experiment DONE only when ``maxTrialNumber`` trials have run
(or ``maxExperimentDuration`` passed); a tuner that has nothing to propose
only sets ``TUNER_NO_MORE_TRIAL`` (when ``generate_multiple_parameters``
answers fewer parameters than asked, the dispatcher sends ``NoMoreTrialJobs``)
and the experiment would wait forever. So when the strategy's ``run()``
returns, the tuner (``finish_experiment=True``) waits until NNI has
registered every trial it sent, then sets the experiment's
``maxTrialNumber`` to the number of trials through NNI's REST API
(``PUT /api/v1/nni/experiment?update_type=MAX_TRIAL_NUM``, what ``nnictl
update trialnum`` does), so NNI finishes as DONE once they end. If the
strategy raises, its traceback is logged and reported to NNI (``report_error``
of the dispatcher, status ERROR), and every later tuner call raises.

Persistence
-----------
``work_dir/trials.jsonl`` gets one line per finished trial (parameters,
status, metric, result) at once; ``work_dir/strategy_state.json`` (or
``.pkl`` when the strategy's state is not JSON-able) holds the strategy's
``state_dict`` and the bridge's counters, written whenever S is parked after
a trial ended and when the strategy finishes. With ``resume=True`` a new
tuner on the same ``work_dir`` (``nnictl resume``) loads both: the strategy
continues from its state, and a submitted (task, sample, args) whose result
is recorded (also through ``import_data``) is answered from the record
instead of running again (``replay_known``).

Start-up time
-------------
The dispatcher constructs the tuner *before* it connects to NNI, and NNI
gives it 10 seconds. Importing ``nni.nas`` (PyTorch Lightning) alone can
take longer, so this module imports only the standard library and
:mod:`nni.tuner`; inside an NNI dispatcher the heavy set-up (settings
validation, space, strategy, resume) runs in a background thread started by
the constructor and joined by the first dispatcher call, which raises its
errors. Elsewhere (``lazy_init=False``, the default outside NNI) it runs in
the constructor. Keep ``nni_robust.strategies.__init__`` free of heavy imports.

YAML (checked with nnictl 3.0; ``codeDirectory`` is required whenever
``className`` is given -- any existing folder, relative to the YAML file;
``className`` may be any importable dotted path)::

    searchSpace: {}
    trialCommand: python -m nni_robust.trial.run
    trialConcurrency: 2
    maxTrialNumber: 400
    tuner:
      className: nni_robust.strategies.bridge.StrategyTuner
      codeDirectory: .
      classArgs:
        strategy: evolution
        strategy_args: {population_size: 100, tournament_size: 10, num_steps: 200, num_initial: 200, seed: 0}
        space: {name: dense_rob, layout: cellwise}
        settings: {...}
    trainingService: {platform: local}
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import queue
import re
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import nni
from nni.tuner import Tuner

from nni_robust import jsonstate
from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.tb import search_work_dir

from .records import TRIALS_FILE, read_trials

__all__ = [
    "strategy_names", "space_factories", "PARAMETER_KEYS", "TrialTask", "with_task", "task_model", "StrategyTuner",
    "BridgeEngine", "TaskModel", "resolve", "build_space", "build_strategy", "run_in_process",
    "run_jobs", "run_stages", "StageInterrupted", "strategy_work_dir", "work_dir_property", "folder_property",
]

_logger = logging.getLogger(__name__)

def strategy_names() -> dict[str, str]:
    """Short strategy names -> dotted paths of NNI Strategy classes: NNI's own and every method's
    (each method folder registers its own, :mod:`nni_robust.strategies.registry`)."""
    from .registry import strategy_paths

    return strategy_paths()


def space_factories() -> dict[str, str]:
    """Short space names -> dotted paths of the factories of their NNI model spaces
    (each space module registers its own, :mod:`nni_robust.spaces.registry`)."""
    from nni_robust.spaces.registry import get_space, space_names

    return {name: get_space(name).model_space for name in space_names()}


#: Keys of the parameter dict every trial receives.
PARAMETER_KEYS = ("task", "sample", "args", "settings", "work_dir", "model_id", "mutation_summary")

_SETTINGS_MODULE = "nni_robust.strategies.settings"
_STATE_FORMAT = "nni_robust.bridge/1"
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


# ---------------------------------------------------------------------- trial tasks
@dataclasses.dataclass(frozen=True)
class TrialTask:
    """What a trial must do with a submitted model.

    Attach one to a model (``with_task(model, "train_supernet", {...})`` or a
    :class:`TaskModel`) to override the tuner's ``default_task``/``task_args``.

    Args:
        task: Task name the trial entry point dispatches on.
        args: JSON-able task arguments.
    """

    task: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError(f"TrialTask.task must be a non-empty string, but got {self.task!r}.")
        if not isinstance(self.args, Mapping):
            raise ConfigError(f"TrialTask.args must be a dict, but got {self.args!r}.")
        object.__setattr__(self, "args", dict(self.args))


def with_task(model: Any, task: str, args: Mapping[str, Any] | None = None) -> Any:
    """Attach ``TrialTask(task, args)`` to ``model`` (as ``model.trial_task``) and return it."""
    model.trial_task = TrialTask(task, dict(args or {}))
    return model


def task_model(task: TrialTask | str, args: Mapping[str, Any] | None = None, *,
               sample: Mapping[str, Any] | None = None) -> Any:
    """A :class:`TaskModel` (a submittable job that is not an architecture) for ``task``.

    Args:
        task: A :class:`TrialTask`, or a task name (then ``args`` are its arguments).
        args: Task arguments when ``task`` is a name.
        sample: Optional architecture the job concerns (sent as the trial's ``sample``).
    """
    if isinstance(task, TrialTask):
        if args is not None:
            raise ConfigError("task_model: give args inside the TrialTask or with a task name, not both.")
        task, args = task.task, task.args
    _define_nas_classes()
    return TaskModel(task, args, sample=sample)


# ---------------------------------------------------------------------- resolution helpers
def resolve(name: str, registry: Mapping[str, str], what: str) -> Any:
    """Import the object a short ``name`` (from ``registry``) or a dotted path names.

    Raises:
        ConfigError: The name is neither registered nor an importable dotted path.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} must be a name, one of {sorted(registry)}, or a dotted path "
                          f"'package.module.Name', but got {name!r}.")
    path = registry.get(name, name)
    if not _DOTTED.match(path):
        close = difflib.get_close_matches(name, list(registry), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"Unknown {what} {name!r}.{hint} Valid names: {', '.join(sorted(registry))}; "
                          "or give a dotted path 'package.module.Name'.")
    module_name, attr = path.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"Cannot import {what} {name!r} ({path}): module {exc.name!r} not found. "
                              f"Valid names: {', '.join(sorted(registry))}; or an importable dotted path.") from exc
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"Cannot import {what} {name!r}: module {module_name!r} has no {attr!r}.") from None


def _check_kwargs(func: Callable, kwargs: Mapping[str, Any], where: str) -> None:
    """Reject keys that ``func`` does not name (when it names any keyword parameter)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return
    params = list(params)
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return  # takes **kwargs: it (or what it passes them to) checks them
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    if not named:
        return
    from nni_robust.config import check_keys
    check_keys(kwargs, named, where)


def build_space(spec: Mapping[str, Any] | str) -> Any:
    """Build the executable model space a ``space`` spec describes.

    Args:
        spec: ``{"name": short name or dotted path of a factory, **factory kwargs}``
            (a bare string is ``{"name": spec}``). Short names: :func:`space_factories`.

    Returns:
        An :class:`~nni.nas.space.ExecutableModelSpace`: a traceable NNI ``ModelSpace``
        is wrapped in :class:`~nni.nas.space.SimplifiedModelSpace` (which copies
        each sample it freezes), another one in :class:`~nni.nas.space.RawFormatModelSpace`.
    """
    from nni.common.serializer import is_traceable
    from nni.nas.space import BaseModelSpace, ExecutableModelSpace, RawFormatModelSpace, SimplifiedModelSpace

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"space must be a dict with a 'name' (one of {sorted(space_factories())} or a dotted path) "
                          f"and the factory's keyword arguments, but got {spec!r}.")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    factory = resolve(spec["name"], space_factories(), "space")
    _check_kwargs(factory, kwargs, f"space {spec['name']!r}")
    try:
        space = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"Invalid arguments for space {spec['name']!r}: {exc}") from exc
    if isinstance(space, ExecutableModelSpace):
        return space
    if isinstance(space, BaseModelSpace):
        if is_traceable(space):
            return SimplifiedModelSpace.from_model(space, None)
        return RawFormatModelSpace(space, None)
    raise ConfigError(f"space {spec['name']!r} built a {type(space).__name__}, not an NNI model space.")


def build_strategy(name: str, args: Mapping[str, Any] | None = None, *,
                   context: Mapping[str, Any] | None = None) -> Any:
    """Instantiate a strategy from a short name (:func:`strategy_names`) or dotted path.

    Args:
        name: Strategy name or dotted path of a :class:`~nni.nas.strategy.base.Strategy`.
        args: Keyword arguments of its constructor.
        context: Values (``work_dir``, ``settings``, ...) passed to the
            constructor under their own names when it accepts them and
            ``args`` does not set them.
    """
    from nni.nas.strategy.base import Strategy

    cls = resolve(name, strategy_names(), "strategy")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"strategy {name!r} is {cls!r}, not a subclass of nni.nas.strategy.Strategy.")
    args = dict(args or {})
    _check_kwargs(cls.__init__, args, f"strategy_args of {name!r}")
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in (context or {}).items():
        if key in params and key not in args:
            args[key] = value
    try:
        return cls(**args)
    except TypeError as exc:
        raise ConfigError(f"Invalid strategy_args for {name!r}: {exc}") from exc


def _validate_settings(settings: Mapping[str, Any]) -> dict:
    """Apply ``nni_robust.strategies.settings.validate_settings`` when that module exists."""
    try:
        spec = importlib.util.find_spec(_SETTINGS_MODULE)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return dict(settings)
    validate = getattr(importlib.import_module(_SETTINGS_MODULE), "validate_settings", None)
    if validate is None:
        return dict(settings)
    out = validate(dict(settings))
    return dict(out if out is not None else settings)


def _replay_key(task: str, sample: Any, args: Mapping[str, Any]) -> str:
    return json.dumps({"task": task, "sample": sample, "args": args}, sort_keys=True, default=repr)


def _parse_value(value: Any) -> tuple[float | None, dict]:
    """(scalar metric or None, full result dict) of a reported final result."""
    from .display import restore

    value = restore(value)  # (a trial that is not the objective reports its default as a text for NNI's web UI)
    if isinstance(value, Mapping):
        final = dict(value)
        scalar = value.get("default")
    else:
        final = {"default": value}
        scalar = value
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)):
        return None, final
    scalar = float(scalar)
    return (scalar if math.isfinite(scalar) else None), final


# ---------------------------------------------------------------------- NNI REST helpers
def _current_dispatcher() -> Any:
    """NNI's dispatcher that is calling the tuner right now (found on the call stack), or None.

    Set-up errors surface in ``update_search_space``, before NNI has handed the
    tuner any ``st_callback`` (the other way to learn the dispatcher).
    """
    try:
        from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
    except ImportError:  # pragma: no cover
        return None
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, MsgDispatcherBase):
            return candidate
        frame = frame.f_back
    return None


def _rest_base() -> str | None:
    """Base URL of the NNI manager's REST API, from the dispatcher's channel URL."""
    url = os.environ.get("NNI_TUNER_COMMAND_CHANNEL")
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    path = parts.path[:-len("/tuner")] if parts.path.endswith("/tuner") else parts.path
    return f"http://{parts.netloc}{path.rstrip('/')}/api/v1/nni"


def _rest(method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    base = _rest_base()
    if base is None:
        raise RuntimeError("not running inside an NNI dispatcher")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode() or "null"
    return json.loads(text)


# ---------------------------------------------------------------------- lazily defined NNI classes
def __getattr__(name: str) -> Any:  # PEP 562: BridgeEngine and TaskModel need nni.nas (slow to import)
    if name in ("BridgeEngine", "TaskModel"):
        _define_nas_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_nas_classes() -> None:
    global BridgeEngine, TaskModel  # pylint: disable=global-variable-undefined
    if "BridgeEngine" in globals():
        return
    from nni.nas.execution import ExecutionEngine
    from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
    from nni.nas.space import ExecutableModelSpace, ModelStatus

    class _TaskModel(ExecutableModelSpace):
        """A submitted job that is not an architecture (e.g. supernet training).

        Its ``sample`` is ``None`` unless given; it carries ``trial_task``.

        Args:
            task: Task name.
            args: Task arguments.
            sample: Optional architecture the task concerns.
        """

        def __init__(self, task: str, args: Mapping[str, Any] | None = None, *,
                     sample: Mapping[str, Any] | None = None) -> None:
            super().__init__(ModelStatus.Frozen)
            self.trial_task = TrialTask(task, dict(args or {}))
            self.sample = dict(sample) if sample is not None else None
            self.evaluator = None

        def execute(self) -> Any:
            raise RuntimeError("A TaskModel runs only as an NNI trial (through StrategyTuner).")

        def freeze(self, sample: Any) -> Any:
            raise RuntimeError("A TaskModel is already frozen.")

        def check_contains(self, sample: Any) -> None:
            return None

        def leaf_mutables(self, is_leaf: Any) -> Iterable[Any]:
            return iter(())

        def __repr__(self) -> str:
            return f"TaskModel({self.trial_task.task!r}, {self.trial_task.args!r}, status={self.status.value!r})"

    class _BridgeEngine(ExecutionEngine):
        """NNI ``ExecutionEngine`` whose workers are the trial slots NNI offers a tuner.

        See the module docstring for the protocol. The strategy-facing methods
        are NNI's (``submit_models``, ``list_models``, ``idle_worker_available``,
        ``budget_available``, ``wait_models``, ``shutdown``, event callbacks);
        the ``nni_*`` methods are called by :class:`StrategyTuner` on NNI's
        dispatcher threads.
        """

        def __init__(self, *, make_params: Callable[[Any], dict], max_trials: int | None = None,
                     work_dir: str | os.PathLike | None = None, settings: Mapping[str, Any] | None = None,
                     idle_wait: float = 1.0, flush_timeout: float = 2.0, result_grace: float = 15.0,
                     late_send: bool = True, replay_known: bool = True,
                     known_results: Mapping[str, tuple[float | None, dict]] | None = None,
                     on_trial_end: Callable[[dict], None] | None = None,
                     on_park: Callable[[], None] | None = None,
                     trials_sent: int = 0, next_model_id: int = 0) -> None:
            super().__init__()
            self._make_params = make_params
            self.max_trials = max_trials
            #: Folder shared with the trials (strategies may keep files there).
            self.work_dir = Path(work_dir) if work_dir is not None else None
            #: The validated settings every trial receives.
            self.settings = dict(settings or {})
            self.idle_wait = idle_wait
            self.flush_timeout = flush_timeout
            self.result_grace = result_grace
            self.late_send = late_send
            self.replay_known = replay_known
            self._known: dict[str, tuple[float | None, dict]] = dict(known_results or {})
            self._on_trial_end = on_trial_end
            self._on_park = on_park
            self.trials_sent = trials_sent
            self.next_model_id = next_model_id
            self.num_replayed = 0

            self._cond = threading.Condition(threading.RLock())
            self._models: list[Any] = []
            self._model_ids: set[int] = set()
            self._queue: deque[Any] = deque()
            self._credits: deque[int] = deque()
            self._reserved: set[int] = set()  # ids of requests being answered by return value
            self._running: dict[int, tuple[Any, dict]] = {}
            self._results: dict[int, tuple[float | None, dict]] = {}
            self._ended: dict[int, Any] = {}
            self._sent_ids: list[int] = []
            self._sender: Callable[[int, dict], None] | None = None
            self._version = 0
            self._parked = -1
            self._strategy_thread: int | None = None
            self._strategy_done = False
            self._stopped = False

        # ---------------------------------------------------------- strategy side
        def submit_models(self, *models: Any) -> None:
            for model in models:
                if not model.status.frozen() or model.status.completed():
                    raise RuntimeError(f"Model must be frozen and not completed before submitting, but got {model}")
            with self._cond:
                for model in models:
                    if getattr(model, "model_id", None) is None:
                        model.model_id = self.next_model_id
                        self.next_model_id += 1
                    if getattr(model, "sample", None) is not None:
                        # RawFormatModelSpace.freeze keeps the caller's dict, which NNI's grid mutates.
                        model.sample = copy.deepcopy(dict(model.sample))
                    model.final_result = None
                    params = self._make_params(model)
                    try:
                        json.dumps(params)
                    except (TypeError, ValueError) as exc:
                        raise TypeError(f"Trial parameters of {model} are not JSON-serializable: {exc}") from exc
                    if id(model) not in self._model_ids:
                        self._models.append(model)
                        self._model_ids.add(id(model))
                    key = _replay_key(params["task"], params["sample"], params["args"])
                    if self.replay_known and key in self._known:
                        self._replay(model, *self._known[key])
                        continue
                    if not self._budget_ok():
                        _logger.warning("Model submitted beyond the trial budget (%s); it waits for a trial slot "
                                        "that may never come: %s", self.max_trials, model)
                    self._queue.append(model)
                self._cond.notify_all()
                if self.late_send:
                    self._flush()

        def list_models(self, status: Any = None) -> Iterable[Any]:
            with self._cond:
                return [m for m in self._models if status is None or m.status == status]

        def idle_worker_available(self) -> bool:
            with self._cond:
                mine = self._is_strategy_thread()
                if self._available():
                    if mine:
                        self._parked = -1
                    return True
                if not mine or self._stopped or not self._budget_ok() or self.idle_wait <= 0:
                    if mine:
                        self._park()
                    return False
                # Wait for a slot. Other changes (results, ends) re-park S without returning:
                # a strategy waiting for a worker acts on nothing else.
                deadline = time.monotonic() + self.idle_wait
                while True:
                    self._park()
                    remaining = deadline - time.monotonic()
                    if remaining > 0:
                        self._cond.wait(remaining)
                    if self._available():
                        self._parked = -1
                        return True
                    if self._stopped or not self._budget_ok() or time.monotonic() >= deadline:
                        self._park()
                        return False

        def budget_available(self) -> bool:
            with self._cond:
                return self._budget_ok()

        def query_available_resources(self) -> int:
            """Number of trial slots NNI offers that no submitted model fills yet."""
            with self._cond:
                return max(0, len(self._credits) - len(self._queue))

        def wait_models(self, *models: Any) -> None:
            with self._cond:
                mine = self._is_strategy_thread()
                while not self._stopped:
                    targets = models or self._models
                    if all(m.status.completed() for m in targets):
                        break
                    if mine:
                        self._park()
                    self._cond.wait(1.0)
                if mine:
                    self._parked = -1

        def shutdown(self) -> None:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

        def state_dict(self) -> dict:
            with self._cond:
                return {"trials_sent": self.trials_sent, "next_model_id": self.next_model_id}

        def load_state_dict(self, state_dict: dict) -> None:
            with self._cond:
                self.trials_sent = int(state_dict.get("trials_sent", 0))
                self.next_model_id = int(state_dict.get("next_model_id", 0))

        # ---------------------------------------------------------- dispatcher side
        def nni_request(self, parameter_ids: list[int], sender: Callable[[int, dict], None] | None,
                        keep_credits: bool = True) -> list[dict]:
            """Answer a request for ``parameter_ids``: parameters for a prefix of them.

            The rest stay as credits (sent later through ``sender``) unless
            ``keep_credits`` is false.
            """
            with self._cond:
                if sender is not None:
                    self._sender = sender
                self._credits.extend(parameter_ids)
                self._reserved.update(parameter_ids)  # answered by the return value, not flushed
                self._version += 1
                self._cond.notify_all()
            try:
                self._settle()
            finally:
                with self._cond:
                    self._reserved.difference_update(parameter_ids)
                    out = []
                    for pid in parameter_ids:
                        if not self._queue:
                            break
                        self._credits.remove(pid)
                        out.append(self._mark_sent(pid, self._queue.popleft()))
                    if not keep_credits:
                        for pid in parameter_ids[len(out):]:
                            self._credits.remove(pid)
                    self._flush()
            return out

        def nni_result(self, parameter_id: int, value: Any) -> None:
            """A trial's final result arrived (dispatcher default thread)."""
            metric, final = _parse_value(value)
            with self._cond:
                entry = self._running.get(parameter_id)
                if entry is None:
                    late = self._ended.get(parameter_id)
                    if late is not None:
                        late.final_result = final
                        _logger.warning("Final result of trial %d arrived after its end: %r", parameter_id, value)
                    else:
                        _logger.warning("Final result for unknown parameter id %d ignored.", parameter_id)
                    return
                model = entry[0]
                model.final_result = final
                self._results[parameter_id] = (metric, final)
                if metric is None:
                    _logger.warning("Trial %d reported %r: no finite 'default' number; the strategy sees no "
                                    "metric.", parameter_id, value)
                else:
                    self.dispatch_model_event(FinalMetricEvent(model, metric))
                self._version += 1
                self._cond.notify_all()
            self._settle_and_flush()

        def nni_trial_end(self, parameter_id: int, success: bool) -> None:
            """A trial ended (dispatcher assessor thread)."""
            with self._cond:
                if parameter_id not in self._running:
                    _logger.debug("End of unknown parameter id %d ignored.", parameter_id)
                    return
                if success and parameter_id not in self._results:
                    self._cond.wait_for(lambda: parameter_id in self._results or self._stopped,
                                        timeout=self.result_grace)
                model, params = self._running.pop(parameter_id)
                metric, final = self._results.pop(parameter_id, (None, None))
                self._ended[parameter_id] = model
                status = ModelStatus.Trained if success else ModelStatus.Failed
                self.dispatch_model_event(TrainingEndEvent(model, status))
                record = {"parameter_id": parameter_id, "model_id": params["model_id"],
                          "status": "SUCCEEDED" if success else "FAILED", "metric": metric, "result": final,
                          "parameters": params, "time": time.time()}
                if self._on_trial_end is not None:
                    self._on_trial_end(record)
                self._version += 1
                self._cond.notify_all()
            self._settle_and_flush()

        def nni_add_known(self, parameters: Any, value: Any) -> bool:
            """Record a known result (``import_data``); True when it was usable."""
            if not isinstance(parameters, Mapping) or "task" not in parameters:
                return False
            metric, final = _parse_value(value)
            key = _replay_key(parameters["task"], parameters.get("sample"), parameters.get("args") or {})
            with self._cond:
                self._known.setdefault(key, (metric, final))
            return True

        def strategy_started(self) -> None:
            with self._cond:
                self._strategy_thread = threading.get_ident()

        def strategy_finished(self) -> None:
            with self._cond:
                self._strategy_done = True
                self._parked = -1
                self._cond.notify_all()

        @property
        def stopped(self) -> bool:
            """Whether :meth:`shutdown` was called (the dispatcher is exiting)."""
            return self._stopped

        @property
        def sent_parameter_ids(self) -> list[int]:
            with self._cond:
                return list(self._sent_ids)

        @property
        def outstanding(self) -> tuple[int, int, int]:
            """(credits, queued models, running trials)."""
            with self._cond:
                return len(self._credits), len(self._queue), len(self._running)

        # ---------------------------------------------------------- internals (lock held)
        def _is_strategy_thread(self) -> bool:
            return self._strategy_thread is not None and threading.get_ident() == self._strategy_thread

        def _available(self) -> bool:
            return len(self._credits) > len(self._queue) and self._budget_ok()

        def _budget_ok(self) -> bool:
            if self._stopped:
                return False
            return self.max_trials is None or self.trials_sent + len(self._queue) < self.max_trials

        def _park(self) -> None:
            if self._parked != self._version:
                self._parked = self._version
                self._cond.notify_all()
            if self._on_park is not None:
                self._on_park()

        def _settle(self) -> None:
            with self._cond:
                deadline = time.monotonic() + self.flush_timeout
                while not (self._stopped or self._strategy_done or self._strategy_thread is None
                           or len(self._credits) <= len(self._queue) or self._parked >= self._version):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        _logger.debug("Strategy did not settle within %.1f s; continuing.", self.flush_timeout)
                        return
                    self._cond.wait(remaining)

        def _settle_and_flush(self) -> None:
            try:
                self._settle()
            finally:
                with self._cond:
                    self._flush()

        def _flush(self) -> None:
            """Send queued models against credits (oldest first), skipping reserved ids."""
            if self._sender is None:
                return
            i = 0
            while self._queue and i < len(self._credits):
                pid = self._credits[i]
                if pid in self._reserved:
                    i += 1
                    continue
                del self._credits[i]
                params = self._mark_sent(pid, self._queue.popleft())
                self._sender(pid, params)

        def _mark_sent(self, pid: int, model: Any) -> dict:
            params = self._make_params(model)
            model.parameter_id = pid
            model.status = ModelStatus.Training
            self._running[pid] = (model, params)
            self._sent_ids.append(pid)
            self.trials_sent += 1
            return params

        def _replay(self, model: Any, metric: float | None, final: dict) -> None:
            _logger.info("Result of %s is known; replayed instead of run again.", model)
            self.num_replayed += 1
            model.status = ModelStatus.Training
            model.final_result = dict(final) if final is not None else None
            if metric is not None:
                self.dispatch_model_event(FinalMetricEvent(model, metric))
            self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))
            self._version += 1
            self._cond.notify_all()

    _TaskModel.__name__ = _TaskModel.__qualname__ = "TaskModel"
    _BridgeEngine.__name__ = _BridgeEngine.__qualname__ = "BridgeEngine"
    _TaskModel.__module__ = _BridgeEngine.__module__ = __name__
    TaskModel = _TaskModel
    BridgeEngine = _BridgeEngine


# ---------------------------------------------------------------------- the tuner
class StrategyTuner(Tuner):
    """NNI tuner that runs an NNI exploration strategy over a model space.

    All arguments are ``classArgs`` of the experiment's ``tuner`` section.

    Args:
        strategy: Short name (``random``, ``grid``, ``regularized_evolution``,
            ``evolution``, ``msrobnet``; see :func:`strategy_names`) or dotted path
            of a :class:`~nni.nas.strategy.base.Strategy`.
        space: ``{"name": short name (:func:`space_factories`) or dotted path of a
            factory, **its keyword arguments}``.
        strategy_args: Keyword arguments of the strategy (``work_dir`` and
            ``settings`` are passed too when its constructor names them).
        max_trials: Trials the strategy may send (the experiment's
            ``maxTrialNumber`` when None and it can be read; else unlimited).
        settings: Opaque dict sent to every trial (validated by
            ``nni_robust.strategies.settings.validate_settings`` when it exists).
        work_dir: Folder shared with the trials; default
            ``<experiment dir>/nni_robust``.
        default_task: Task of models that carry no :class:`TrialTask`.
        task_args: Arguments of ``default_task`` (checked and normalised at start-up by the
            task's ``check_args`` when it has one: :func:`.registry.check_task_args`).
        resume: Continue from the state and records in ``work_dir``.
        finish_experiment: When the strategy ends, make NNI finish (DONE) by
            setting ``maxTrialNumber`` to the number of trials.
        flush_timeout: Longest wait (s) of a dispatcher call for the strategy.
        idle_wait: Longest wait (s) of ``idle_worker_available`` for a slot.
        result_grace: Longest wait (s) of a trial end for its final result.
        late_send: Send models submitted between dispatcher calls at once.
        replay_known: Answer recorded (task, sample, args) from the records.
        lazy_init: Set up in a background thread (default: inside NNI only).

    Raises:
        ConfigError: An unknown classArg, strategy or space name, or bad settings.
    """

    _ARGS = ("strategy", "space", "strategy_args", "max_trials", "settings", "work_dir", "default_task",
             "task_args", "resume", "finish_experiment", "flush_timeout", "idle_wait", "result_grace",
             "late_send", "replay_known", "lazy_init")

    def __init__(self, *, strategy: str | None = None, space: Mapping[str, Any] | str | None = None,
                 strategy_args: Mapping[str, Any] | None = None, max_trials: int | None = None,
                 settings: Mapping[str, Any] | None = None, work_dir: str | os.PathLike | None = None,
                 default_task: str = "evaluate", task_args: Mapping[str, Any] | None = None,
                 resume: bool = True, finish_experiment: bool = True, flush_timeout: float = 2.0,
                 idle_wait: float = 1.0, result_grace: float = 15.0, late_send: bool = True,
                 replay_known: bool = True, lazy_init: bool | None = None, **unknown: Any) -> None:
        from nni_robust.config import check_keys

        check_keys(unknown, self._ARGS, "the classArgs of StrategyTuner")
        if strategy is None:
            raise ConfigError(f"classArg 'strategy' is required: one of {sorted(strategy_names())} or a dotted path.")
        if strategy not in strategy_names() and not (isinstance(strategy, str) and _DOTTED.match(strategy)):
            resolve(strategy, strategy_names(), "strategy")  # raises the ConfigError listing the names
        if space is None:
            raise ConfigError(f"classArg 'space' is required: {{'name': one of {sorted(space_factories())} or a dotted path, "
                              "...factory arguments}.")
        if isinstance(space, str):
            space = {"name": space}
        if not isinstance(space, Mapping) or not isinstance(space.get("name"), str):
            raise ConfigError(f"classArg 'space' must be a dict with a 'name', but got {space!r}.")
        for name, value in (("strategy_args", strategy_args), ("settings", settings), ("task_args", task_args)):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"classArg {name!r} must be a dict, but got {value!r}.")
        if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int)
                                       or max_trials < 1):
            raise ConfigError(f"classArg 'max_trials' must be a positive integer or null, but got {max_trials!r}.")
        if not isinstance(default_task, str) or not default_task:
            raise ConfigError(f"classArg 'default_task' must be a non-empty string, but got {default_task!r}.")
        for name, value in (("flush_timeout", flush_timeout), ("idle_wait", idle_wait),
                            ("result_grace", result_grace)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"classArg {name!r} must be a number of seconds >= 0, but got {value!r}.")
        for name, value in (("resume", resume), ("finish_experiment", finish_experiment),
                            ("late_send", late_send), ("replay_known", replay_known)):
            if not isinstance(value, bool):
                raise ConfigError(f"classArg {name!r} must be true or false, but got {value!r}.")
        self._strategy_name = strategy
        self._space_spec = dict(space)
        self._strategy_args = dict(strategy_args or {})
        self._max_trials = max_trials
        self._settings = dict(settings or {})
        self._default_task = default_task
        self._task_args = dict(task_args or {})
        self._resume = resume
        self._finish = finish_experiment
        self._timing = dict(flush_timeout=float(flush_timeout), idle_wait=float(idle_wait),
                            result_grace=float(result_grace))
        self._late_send = late_send
        self._replay_known = replay_known
        self.work_dir, self.experiment_id = search_work_dir(work_dir)

        self.strategy: Any = None
        self.engine: Any = None
        self.model_space: Any = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._dirty = False
        self._save_lock = threading.Lock()
        self._state_warned = False
        self._trials_lock = threading.Lock()
        self._dispatcher: Any = None
        self._setup_error: BaseException | None = None
        self._setup_thread: threading.Thread | None = None
        if lazy_init is None:
            lazy_init = os.environ.get("SDK_PROCESS") == "dispatcher"
        if lazy_init:
            self._setup_thread = threading.Thread(target=self._setup_guarded, name="StrategyTuner-setup",
                                                  daemon=True)
            self._setup_thread.start()
        else:
            self._setup()

    # ------------------------------------------------------------------ set-up
    def _setup_guarded(self) -> None:
        try:
            self._setup()
        except BaseException as exc:  # surfaced by _ready()
            _logger.exception("StrategyTuner set-up failed.")
            self._setup_error = exc

    def _setup(self) -> None:
        _define_nas_classes()
        self._settings = _validate_settings(self._settings)
        from .registry import check_task_args  # the default task checks its own arguments (e.g. 'tabular')
        self._task_args = check_task_args(self._default_task, self._task_args)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.model_space = build_space(self._space_spec)
        self.strategy = build_strategy(self._strategy_name, self._strategy_args,
                                       context={"work_dir": str(self.work_dir), "settings": self._settings})
        state, known, max_model_id = self._load_previous() if self._resume else (None, {}, -1)
        max_trials = self._max_trials
        if max_trials is None and _rest_base() is not None:
            try:
                max_trials = _rest("GET", "/experiment")["params"].get("maxTrialNumber")
                _logger.info("Trial budget from the experiment's maxTrialNumber: %s", max_trials)
            except Exception as exc:  # the REST API is a convenience only
                _logger.warning("Could not read maxTrialNumber from NNI (%r); no trial budget.", exc)
        self.engine = BridgeEngine(make_params=self._params_for, max_trials=max_trials,
                                   work_dir=self.work_dir, settings=self._settings,
                                   late_send=self._late_send, replay_known=self._replay_known,
                                   known_results=known, on_trial_end=self._record_trial, on_park=self._on_park,
                                   next_model_id=max_model_id + 1, **self._timing)
        self.strategy.initialize(self.model_space, self.engine)
        if state is not None:
            bridge_state = state.get("bridge", {})
            if bridge_state.get("experiment_id") == self.experiment_id:
                self.engine.load_state_dict(bridge_state)
            self.engine.next_model_id = max(self.engine.next_model_id, max_model_id + 1)
            self.strategy.load_state_dict(state["strategy"])
            _logger.info("Resumed %s from %s (%d trials recorded).", self._strategy_name, self.work_dir,
                         len(known))
        _logger.info("StrategyTuner ready: strategy %r, space %r, work_dir %s, max_trials %s.",
                     self.strategy, self._space_spec, self.work_dir, max_trials)

    def _ready(self) -> None:
        if self._setup_thread is not None:
            self._setup_thread.join()
            self._setup_thread = None
        if self._setup_error is not None:
            if not getattr(self, "_setup_error_reported", False):
                self._setup_error_reported = True
                self._report_error("".join(traceback.format_exception(self._setup_error)))
            raise self._setup_error
        if self.error is not None:
            raise RuntimeError(f"The search strategy {self._strategy_name!r} failed: {self.error!r} "
                               "(traceback in the dispatcher log).") from self.error

    def _ensure_started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_strategy, name="StrategyTuner-strategy", daemon=True)
            self._thread.start()

    def _run_strategy(self) -> None:
        self.engine.strategy_started()
        failed = False
        try:
            self.strategy.run()
            _logger.info("Strategy %r finished.", self._strategy_name)
        except BaseException as exc:
            failed = True
            self.error = exc
            _logger.exception("Strategy %r failed.", self._strategy_name)
            self._report_error(traceback.format_exc())
        finally:
            self.engine.strategy_finished()
            self._save_state(force=True)
            self._done.set()
        if not failed and self._finish and not self.engine.stopped:
            self._finish_experiment()

    def _report_error(self, text: str) -> None:
        if self._dispatcher is None:
            self._dispatcher = _current_dispatcher()
        report = getattr(self._dispatcher, "report_error", None)
        if report is not None:
            try:
                report(f"Search strategy {self._strategy_name!r} failed:\n{text}")
            except Exception:
                _logger.exception("Could not report the error to NNI.")

    def _finish_experiment(self) -> None:
        """Make NNI end as DONE: maxTrialNumber := number of trials, once NNI registered all of ours."""
        if _rest_base() is None:
            return
        try:
            # Models the strategy submitted before returning go out as NNI frees trial slots.
            while self.engine.outstanding[1] > 0:
                if _rest("GET", "/check-status").get("status") not in ("RUNNING", "TUNER_NO_MORE_TRIAL"):
                    return  # NNI is finishing (maxTrialNumber reached) or stopped on its own
                time.sleep(2.0)
            sent = set(self.engine.sent_parameter_ids)
            deadline = time.monotonic() + 120.0
            while True:
                jobs = _rest("GET", "/trial-jobs") or []
                seen = set()
                for job in jobs:
                    for hp in job.get("hyperParameters") or []:
                        try:
                            seen.add(json.loads(hp)["parameter_id"])
                        except (TypeError, ValueError, KeyError):
                            pass
                if sent <= seen or time.monotonic() > deadline:
                    break
                time.sleep(2.0)
            profile = _rest("GET", "/experiment")
            current = profile["params"].get("maxTrialNumber")
            count = len(jobs)
            if current is None or count < current:
                profile["params"]["maxTrialNumber"] = count
                _rest("PUT", "/experiment?update_type=MAX_TRIAL_NUM", profile)
                _logger.info("Search finished: maxTrialNumber set to %d so that NNI finishes the experiment.", count)
        except Exception as exc:
            _logger.warning("Could not update maxTrialNumber through NNI's REST API (%r); the experiment stays "
                            "in TUNER_NO_MORE_TRIAL until stopped.", exc)

    # ------------------------------------------------------------------ parameters and records
    def _params_for(self, model: Any) -> dict:
        task = getattr(model, "trial_task", None)
        if task is None:
            name, args = self._default_task, self._task_args
        else:
            name, args = task.task, task.args
        sample = getattr(model, "sample", None)
        from .display import SUMMARY_KEY, parameter_summary

        return {"task": name, "sample": dict(sample) if sample is not None else None, "args": dict(args),
                "settings": self._settings, "work_dir": str(self.work_dir), "model_id": model.model_id,
                SUMMARY_KEY: parameter_summary(name, args)}

    def _record_trial(self, record: dict) -> None:
        record = dict(record, experiment_id=self.experiment_id)
        line = json.dumps(record, default=repr)
        with self._trials_lock:
            with open(self.work_dir / TRIALS_FILE, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        self._dirty = True
        if self._done.is_set():
            self._save_state(force=True)

    def _on_park(self) -> None:
        if self._dirty:
            self._save_state()

    def _state_paths(self) -> tuple[Path, Path]:
        return self.work_dir / "strategy_state.json", self.work_dir / "strategy_state.pkl"

    def _save_state(self, force: bool = False) -> None:
        if self.strategy is None or self.engine is None or (not self._dirty and not force):
            return
        # Lock order: engine lock, then save lock (trial ends record under the engine lock).
        with self.engine._cond, self._save_lock:
            self._dirty = False
            try:
                strategy_state = self.strategy.state_dict()
            except NotImplementedError:
                if not self._state_warned:
                    _logger.warning("Strategy %r has no state_dict(); only trials.jsonl is saved.", self.strategy)
                    self._state_warned = True
                return
            state = {"format": _STATE_FORMAT, "strategy_name": self._strategy_name,
                     "strategy_class": f"{type(self.strategy).__module__}.{type(self.strategy).__qualname__}",
                     "bridge": dict(self.engine.state_dict(), experiment_id=self.experiment_id),
                     "strategy": strategy_state}
            json_path, _ = self._state_paths()
            try:
                payload = jsonstate.dumps(state).encode()
            except TypeError as exc:
                if not self._state_warned:
                    _logger.warning("The state of strategy %r cannot be saved as JSON (%s); only trials.jsonl is "
                                    "saved, so a resumed run restarts the strategy.", self.strategy, exc)
                    self._state_warned = True
                return
            tmp = json_path.with_suffix(json_path.suffix + ".tmp")
            tmp.write_bytes(payload)
            os.replace(tmp, json_path)

    def _load_previous(self) -> tuple[dict | None, dict, int]:
        """(saved state or None, known results by replay key, largest model id) from ``work_dir``."""
        known: dict[str, tuple[float | None, dict]] = {}
        max_model_id = -1
        trials = self.work_dir / TRIALS_FILE
        if trials.exists():
            for n, record in enumerate(read_trials(self.work_dir), 1):
                params = record.get("parameters")
                if not isinstance(params, dict):
                    _logger.warning("%s record %d has no parameters; skipped.", trials, n)
                    continue
                max_model_id = max(max_model_id, int(params.get("model_id", -1)))
                if record.get("status") == "SUCCEEDED" and record.get("result") is not None:
                    key = _replay_key(params["task"], params.get("sample"), params.get("args") or {})
                    known.setdefault(key, (record.get("metric"), record["result"]))
        json_path, pkl_path = self._state_paths()
        state = None
        if json_path.exists():
            try:
                state = jsonstate.loads(json_path.read_text(encoding="utf-8"))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{json_path} is not a readable strategy state ({type(exc).__name__}: {exc}); "
                                  "delete it to restart the strategy (finished trials in trials.jsonl are kept), "
                                  "or use another work_dir.") from exc
        elif pkl_path.exists():
            raise ConfigError(f"{pkl_path} is a pickled strategy state, which is never loaded (unpickling runs code "
                              "from the file). States are JSON now: delete it to restart the strategy (finished "
                              "trials in trials.jsonl are kept), or use another work_dir.")
        if state is not None:
            if state.get("format") != _STATE_FORMAT:
                raise ConfigError(f"{json_path.parent} holds a state that is not a StrategyTuner state.")
            cls = f"{type(self.strategy).__module__}.{type(self.strategy).__qualname__}"
            if state.get("strategy_class") != cls:
                raise ConfigError(f"Cannot resume: {self.work_dir} holds the state of {state.get('strategy_class')}, "
                                  f"but the strategy is {cls}. Use another work_dir or resume: false.")
            max_model_id = max(max_model_id, int(state.get("bridge", {}).get("next_model_id", 0)) - 1)
        return state, known, max_model_id

    # ------------------------------------------------------------------ NNI Tuner interface
    @property
    def settings(self) -> dict:
        """The settings every trial receives (validated once the tuner is set up)."""
        return self._settings

    @property
    def search_finished(self) -> bool:
        """Whether the strategy's ``run()`` has returned (or raised)."""
        return self._done.is_set()

    def update_search_space(self, search_space: Any) -> None:
        """NNI's search space is not used: the model space comes from classArg ``space``."""
        self._ready()
        if search_space:
            _logger.info("The experiment's searchSpace is ignored; the strategy explores the space %r.",
                         self._space_spec)

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict]:
        """Parameters for a prefix of ``parameter_id_list``; the rest follow through ``st_callback``."""
        self._ready()
        sender = kwargs.get("st_callback")
        if sender is not None:
            self._dispatcher = getattr(sender, "__self__", self._dispatcher)
        self._ensure_started()
        return self.engine.nni_request(list(parameter_id_list), sender)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict:
        """One parameter set, if the strategy produces it promptly (no credit is kept)."""
        self._ready()
        self._ensure_started()
        out = self.engine.nni_request([parameter_id], None, keep_credits=False)
        if not out:
            raise nni.NoMoreTrialError("The strategy has no model to evaluate now.")
        return out[0]

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Set the model's metric (the float ``default``) and ``final_result`` (the dict)."""
        self._ready()
        self.engine.nni_result(parameter_id, value)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """Mark the model trained or failed, record the trial, let the strategy react."""
        self._ready()
        self.engine.nni_trial_end(parameter_id, success)

    def import_data(self, data: list[dict]) -> None:
        """Record previous results so that the same (task, sample, args) is not run again."""
        self._ready()
        used = sum(self.engine.nni_add_known(entry.get("parameter"), entry.get("value")) for entry in data)
        _logger.info("Imported %d of %d previous results.", used, len(data))

    def _on_exit(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                return  # still computing: its last state saved while parked is the consistent one
        self._save_state(force=True)

    def _on_error(self) -> None:
        self._on_exit()


# ---------------------------------------------------------------------- in-process driver
def run_jobs(engine: Any, models: list[Any]) -> bool:
    """Submit ``models`` to a strategy's ``engine`` as workers free up, and wait for those submitted.

    Waiting happens inside the engine (``idle_worker_available`` and
    ``wait_models``), where the bridge sees the strategy as parked and answers
    NNI at once.

    Returns:
        Whether every model was submitted and has finished; False when the
        engine's trial budget ran out or it shut down first (the caller keeps
        what finished and stops, to be resumed later).
    """
    pending = list(models)
    submitted = []
    while pending and engine.budget_available():
        if engine.idle_worker_available():
            submitted.append(pending.pop(0))
            engine.submit_models(submitted[-1])
    engine.wait_models(*submitted)
    return not pending and all(m.status.completed() for m in submitted)


class StageInterrupted(Exception):
    """The engine can run no more trials (budget exhausted or shut down): the stage stops, resumable."""


def run_stages(strategy: Any, stages: Sequence[str], *, label: str,
               after_stage: Callable[[], None] | None = None) -> None:
    """Run a staged strategy: ``strategy._stage_<name>()`` for each stage from ``strategy._stage`` on.

    ``strategy._stage`` names the current stage (saved in its state dict, so a
    resumed run continues there) and advances through ``stages`` until
    ``"done"``. A stage that raises :class:`StageInterrupted` (the engine's trial
    budget ran out, or it shut down) leaves ``_stage`` where it is and returns.
    ``after_stage`` runs after each finished stage (it may set ``_stage``).
    Each stage entered (and ``done``, or ``interrupted``) is written to the
    engine's ``work_dir/progress.json`` (``{"strategy", "stage", "stages",
    "state", "time"}``), which ``nni-robust run`` reports.
    """
    def note(state: str = "") -> None:
        folder = getattr(getattr(strategy, "engine", None), "work_dir", None)
        if folder is None:
            return
        info = {"strategy": label, "stage": strategy._stage, "stages": list(stages), "state": state,
                "time": time.time()}
        try:  # (replaced at once: a reader never sees half a file)
            tmp = Path(folder) / "progress.json.tmp"
            tmp.write_text(json.dumps(info))
            os.replace(tmp, Path(folder) / "progress.json")
        except OSError as exc:
            _logger.debug("Could not write progress.json: %s", exc)

    while strategy._stage != "done":
        _logger.info("%s: stage %s", label, strategy._stage)
        note()
        try:
            getattr(strategy, f"_stage_{strategy._stage}")()
        except StageInterrupted:
            _logger.warning("%s stops in stage %r: the engine has no trial budget left or has shut down. "
                            "Resume (same work_dir) to continue from this stage.", label, strategy._stage)
            note("interrupted")
            return
        strategy._stage = stages[stages.index(strategy._stage) + 1]
        if after_stage is not None:
            after_stage()
    note()


def strategy_work_dir(strategy: Any, work_dir: str | os.PathLike | None) -> Path:
    """A strategy's work dir: its ``work_dir`` argument, else its bridge engine's (created)."""
    base = work_dir or getattr(strategy.engine, "work_dir", None)
    if base is None:
        raise NniRobustError(f"{type(strategy).__name__} needs a work_dir (argument, or the bridge engine's).")
    path = Path(base).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


work_dir_property = property(
    lambda self: strategy_work_dir(self, self.work_dir_arg),
    doc="The strategy's work dir (its ``work_dir_arg``, else its bridge engine's; created). "
        "A staged strategy sets ``work_dir = work_dir_property``.")


def folder_property(arg_attr: str, default_name: str) -> property:
    """A property: the folder named by the strategy's attribute ``arg_attr``, else
    ``<work_dir>/<default_name>`` (e.g. ``supernets = folder_property("supernet_dir", "supernets")``)."""

    def get(self: Any) -> Path:
        given = getattr(self, arg_attr)
        return Path(given).expanduser() if given else self.work_dir / default_name

    return property(get, doc=f"``{arg_attr}``, else ``<work_dir>/{default_name}``.")


def run_in_process(tuner: StrategyTuner, evaluate: Callable[[dict], Any], *, concurrency: int = 1,
                   max_trials: int, timeout: float = 120.0,
                   import_data: list[dict] | None = None) -> list[dict]:
    """Drive ``tuner`` the way NNI's manager and dispatcher do, within this process.

    Mirrors NNI: the tuner's ``generate_multiple_parameters``/``receive_trial_result``
    /``import_data`` run on one command thread and ``trial_end`` on another;
    ``concurrency`` trials are requested at the start and one more per ended
    trial while fewer than ``max_trials`` have been started; parameters go
    through a JSON round trip.

    Args:
        tuner: The tuner to drive.
        evaluate: Runs one trial: ``evaluate(parameters)`` returns a float, a dict
            with ``"default"``, or None (no result); raising makes the trial FAILED.
        concurrency: Trials run at once (NNI's ``trialConcurrency``).
        max_trials: NNI's ``maxTrialNumber``.
        timeout: Seconds before giving up with :class:`TimeoutError`.
        import_data: Entries ``{"parameter": ..., "value": ...}`` for ``import_data``.

    Returns:
        The finished trials in end order: dicts with ``parameter_id``,
        ``parameters``, ``value`` and ``status`` (``SUCCEEDED``/``FAILED``).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, but got {concurrency!r}.")
    default_q: queue.Queue = queue.Queue()
    assessor_q: queue.Queue = queue.Queue()
    waiting: queue.Queue = queue.Queue()
    params_by_id: dict[int, Any] = {}
    errors: list[BaseException] = []
    pending = [0]
    pending_lock = threading.Lock()
    next_id = [0]
    stop = threading.Event()

    def new_trial(pid: int, params: Any) -> None:
        params = json.loads(json.dumps(params))
        params_by_id[pid] = params
        waiting.put((pid, params))

    def handle(command: tuple) -> None:
        kind = command[0]
        if kind == "request":
            ids = list(range(next_id[0], next_id[0] + command[1]))
            next_id[0] += command[1]
            out = tuner.generate_multiple_parameters(ids, st_callback=new_trial)
            for pid, params in zip(ids, out):
                new_trial(pid, params)
        elif kind == "metric":
            tuner.receive_trial_result(command[1], params_by_id[command[1]], command[2])
        elif kind == "end":
            tuner.trial_end(command[1], command[2])
        elif kind == "import":
            tuner.import_data(command[1])

    def worker(q: queue.Queue) -> None:
        while not stop.is_set():
            try:
                command = q.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                if not errors:
                    handle(command)
            except BaseException as exc:  # pylint: disable=broad-except
                errors.append(exc)
            finally:
                with pending_lock:
                    pending[0] -= 1

    def put(q: queue.Queue, command: tuple) -> None:
        with pending_lock:
            pending[0] += 1
        q.put(command)

    def run_trial(pid: int, params: Any) -> tuple[int, Any, bool]:
        try:
            return pid, evaluate(params), True
        except Exception:  # a failing trial
            _logger.info("Trial %d failed:\n%s", pid, traceback.format_exc())
            return pid, None, False

    threads = [threading.Thread(target=worker, args=(q,), daemon=True, name=f"run_in_process-{name}")
               for q, name in ((default_q, "default"), (assessor_q, "assessor"))]
    for t in threads:
        t.start()
    finished: list[dict] = []
    running: dict[Any, int] = {}
    started = 0
    deadline = time.monotonic() + timeout
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        tuner.update_search_space({})
        if import_data:
            put(default_q, ("import", import_data))
        put(default_q, ("request", concurrency))
        while True:
            if errors:
                raise errors[0]
            while len(running) < concurrency and started < max_trials:
                try:
                    pid, params = waiting.get_nowait()
                except queue.Empty:
                    break
                running[pool.submit(run_trial, pid, params)] = pid
                started += 1
            for future in [f for f in running if f.done()]:
                pid, value, ok = future.result()
                del running[future]
                if ok and value is not None:
                    put(default_q, ("metric", pid, value))
                put(assessor_q, ("end", pid, ok))
                finished.append({"parameter_id": pid, "parameters": params_by_id[pid], "value": value,
                                 "status": "SUCCEEDED" if ok else "FAILED"})
                if started < max_trials:
                    put(default_q, ("request", 1))
            with pending_lock:
                idle = pending[0] == 0
            if idle and not running and (started >= max_trials or (waiting.empty() and tuner.search_finished)):
                if tuner.error is not None:
                    raise RuntimeError(f"The strategy failed: {tuner.error!r}") from tuner.error
                return finished
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run_in_process did not finish in {timeout} s: {started} trials started, {len(running)} "
                    f"running, {len(finished)} finished; engine (credits, queued, running) = "
                    f"{getattr(tuner.engine, 'outstanding', None)}; strategy finished: {tuner.search_finished}.")
            time.sleep(0.002)
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for t in threads:
            t.join(timeout=5.0)
