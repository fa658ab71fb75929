"""The methods by name: each method folder registers its strategies and trial tasks once.

A method lives in its own sub-package of ``nni_robust.strategies`` (one
paper per folder) whose ``__init__`` calls :func:`register_method` with
*dotted paths* only, so that importing it is cheap (NNI gives a tuner ten
seconds to connect). Nothing above the method folders names a method: the
bridge tuner finds strategies here (:func:`strategy_paths`), the trial entry
point finds the function of a trial's ``task`` here (:func:`task_function`),
and the spaces register themselves in :mod:`nni_robust.spaces.registry`.
:func:`discover` imports every sub-package once, on the first look-up.

A trial task is ``fn(ctx: TaskContext) -> (final, full)``: ``final`` is the
dict of floats (with ``default``) reported to NNI, ``full`` the whole result
written to files. Tasks every method shares (``final``: widen, train and
evaluate an exported architecture) are registered here, not by a method.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

from nni_robust.discovery import Discovery
from nni_robust.errors import ConfigError, did_you_mean

__all__ = ["Method", "TaskContext", "register_method", "methods", "strategy_paths", "task_names",
           "task_function", "check_task_args", "numeric", "discover", "import_errors", "COMMON_TASKS",
           "NNI_STRATEGIES"]

#: NNI's own strategies, usable by short name with any space.
NNI_STRATEGIES: dict[str, str] = {
    "random": "nni.nas.strategy.Random",
    "grid": "nni.nas.strategy.GridSearch",
    "regularized_evolution": "nni.nas.strategy.RegularizedEvolution",
}

#: Trial tasks every method shares.
COMMON_TASKS: dict[str, str] = {
    "final": "nni_robust.strategies.final.final_task",
    "tabular": "nni_robust.strategies.tabular.tabular_task",
}


@dataclasses.dataclass(frozen=True)
class Method:
    """One published method, as its folder declares it.

    Args:
        name: Short name (the folder's).
        paper: The paper it implements (authors, title, venue; sections).
        strategies: Short strategy name -> dotted path of its NNI ``Strategy``
            class (the ``strategy`` classArg of the bridge tuner).
        tasks: Trial task name -> dotted path of its ``fn(ctx) -> (final, full)``.
        spaces: Names of the spaces (:mod:`nni_robust.spaces.registry`) it searches.
    """

    name: str
    paper: str
    strategies: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tasks: Mapping[str, str] = dataclasses.field(default_factory=dict)
    spaces: tuple[str, ...] = ()


@dataclasses.dataclass
class TaskContext:
    """What a trial task receives (built by :func:`nni_robust.trial.run.run_task`).

    Attributes:
        task: The task's name.
        settings: The validated :class:`nni_robust.strategies.settings.TrialSettings`.
        args: The task's arguments (the tuner's ``args``).
        sample: The architecture sample the job concerns, if any.
        work_dir: The search's work dir (shared by its trials).
        out_dir: This trial's own output folder.
        tb_dir: This trial's TensorBoard folder.
        reporter: Called with each intermediate result (a dict of floats with ``default``), or None.
    """

    task: str
    settings: Any
    args: dict[str, Any]
    sample: Mapping[str, Any] | None
    work_dir: Path
    out_dir: Path
    tb_dir: Path
    reporter: Callable[[dict[str, float]], Any] | None = None

    def require(self, key: str) -> Any:
        """``args[key]``, or a ConfigError naming the task and the key."""
        if self.args.get(key) in (None, "", [], {}):
            raise ConfigError(f"task {self.task!r} needs args {key!r}, got args {sorted(self.args)}.")
        return self.args[key]


def numeric(d: Mapping[str, Any]) -> dict[str, float]:
    """The int/float entries of ``d`` as floats (what NNI's metrics accept)."""
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Register ``method`` (called by its folder's ``__init__``).

    Raises:
        ConfigError: a strategy or task name that another method (or a common task) already has.
    """
    taken_s = {**NNI_STRATEGIES, **{n: p for m in _METHODS.values() if m.name != method.name
                                    for n, p in m.strategies.items()}}
    taken_t = {**COMMON_TASKS, **{n: p for m in _METHODS.values() if m.name != method.name
                                  for n, p in m.tasks.items()}}
    for kind, names, taken in (("strategy", method.strategies, taken_s), ("task", method.tasks, taken_t)):
        clash = sorted(set(names) & set(taken))
        if clash:
            raise ConfigError(f"Method {method.name!r} registers {kind} names {clash} that are already taken.")
    _METHODS[method.name] = method
    return method


_DISCOVERY = Discovery(__name__.rpartition(".")[0], packages_only=True, what="methods")
#: ``discover()``: import every method folder of ``nni_robust.strategies`` once, so that each registers itself.
discover = _DISCOVERY.run
#: ``import_errors()``: method folders that failed to import during :func:`discover` (module -> error).
import_errors = _DISCOVERY.errors


def methods() -> dict[str, Method]:
    """Every registered method by name."""
    discover()
    return dict(sorted(_METHODS.items()))


def strategy_paths() -> dict[str, str]:
    """Short strategy name -> dotted path: NNI's own and every method's."""
    discover()
    out = dict(NNI_STRATEGIES)
    for method in _METHODS.values():
        out.update(method.strategies)
    return out


def _task_paths() -> dict[str, str]:
    discover()
    out = dict(COMMON_TASKS)
    for method in _METHODS.values():
        out.update(method.tasks)
    return out


def task_names() -> list[str]:
    """Every trial task name, sorted."""
    return sorted(_task_paths())


def task_function(name: str) -> Callable[[TaskContext], tuple[dict[str, float], dict[str, Any]]]:
    """The function of trial task ``name``.

    Raises:
        ConfigError: unknown task (the message lists the valid ones).
    """
    paths = _task_paths()
    if name not in paths:
        raise ConfigError(f"Unknown trial task {name!r}.{did_you_mean(name, paths, n=3)} Valid tasks: "
                          f"{sorted(paths)}.{_DISCOVERY.hint()}")
    module, _, attr = paths[name].rpartition(".")
    return getattr(importlib.import_module(module), attr)


def check_task_args(name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """``args`` of task ``name`` checked and normalised by the task's own ``check_args``.

    The bridge tuner calls this on its ``task_args`` when it starts, so a bad
    argument fails before any trial runs. A task declares a check with a
    ``check_args(args) -> dict`` attribute (e.g. the shared ``tabular`` task);
    tasks without one, and names no method registers, get ``args`` unchanged.
    """
    args = dict(args or {})
    if name not in _task_paths():
        return args
    check = getattr(task_function(name), "check_args", None)
    return args if check is None else dict(check(args))
