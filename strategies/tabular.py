"""The shared ``tabular`` trial task: answer an architecture from a tabular robustness benchmark.

A tabular benchmark has trained and measured every architecture of a space
once, so a search strategy can be scored in seconds instead of GPU-days. The
one this project reads is Jung, Lukasik and Keuper, "Neural Architecture
Design and Robustness: A Dataset" (ICLR 2023): all 6,466 distinct cells of
the NAS-Bench-201 space (:mod:`nni_robust.spaces.nb201`) on CIFAR-10, clean
and under FGSM and PGD (:mod:`nni_robust.tabular` reads its layout from a
folder the user gives).

The task is shared by every discrete strategy (NNI's ``random`` and
``regularized_evolution``, MSRobNet's tournament ``evolution``, the
predictor controller ``msrobnet_predictor`` with ``evaluator: task``, ...):
each runs unchanged, and each architecture it submits is one query answered
from the table instead of a training job. Use it as the bridge tuner's
default task::

    tuner:
      className: nni_robust.strategies.bridge.StrategyTuner
      classArgs:
        strategy: evolution
        space: {name: nb201}
        default_task: tabular
        task_args: {table: /data/nb201-robustness, objective: "pgd@1.0"}

Task arguments (:class:`TabularArgs`):

* ``table``: the folder in the dataset's layout. ``~``, ``$VAR`` and
  ``${VAR:-default}`` are expanded (so ``${NNI_ROBUST_NB201:-../data/nb201}``
  takes ``$NNI_ROBUST_NB201`` when it is set); a relative path is relative to
  the experiment's ``trialCodeDirectory`` under nnictl (the YAML's folder for
  ``trialCodeDirectory: .``), else to the current directory. Absent or null:
  ``$NNI_ROBUST_NB201``.
* ``objective``: ``"clean"``, ``"<attack>@<eps in 1/255>"`` (``"pgd@1.0"``,
  the default) or the project's reward ``"reward(pgd@1.0, lam=0.5)"``
  (:class:`nni_robust.tabular.Objective`).
* ``dataset``: the dataset part of the folder (``"cifar10"``).

The bridge checks them when the tuner starts (:func:`check_args`, through
:func:`nni_robust.strategies.registry.check_task_args`): the table is loaded
once there, so a missing or malformed folder, file or objective is an error
naming the file before any trial runs, and the trials receive the table as an
absolute path.

A trial reports ``default`` (the objective), ``clean`` and the objective's
attack at every measured eps (``"pgd@0.5"``, ``"pgd@1"``, ...) as floats, and
``uid`` (the dataset's id of the measured architecture the cell shares).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nni_robust.config import check_keys
from nni_robust.errors import ArchitectureError, ConfigError
from nni_robust.tabular import NORM, Objective, RobustnessTable

from .registry import TaskContext

__all__ = ["TABLE_ENV", "DEFAULT_OBJECTIVE", "TabularArgs", "TabularEvaluator", "resolve_table_path", "load_table",
           "check_args", "tabular_task"]

logger = logging.getLogger(__name__)

#: The environment variable naming the robustness dataset's folder (the default ``table``).
TABLE_ENV = "NNI_ROBUST_NB201"
#: The objective when ``task_args`` names none: PGD accuracy at eps 1/255 (useful eps for these normally
#: trained networks are 0.5 to 2/255; at 8/255 every one is near 0).
DEFAULT_OBJECTIVE = "pgd@1.0"
_KEYS = ("table", "objective", "dataset")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _expand(text: str, where: str) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (the default when VAR is unset or empty)."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        value = os.environ.get(name)
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise ConfigError(f"{where} {text!r} names the environment variable ${name}, which is not set; set it to "
                          f"the robustness dataset's folder, or give the path (or ${{{name}:-default path}}).")

    return _VAR.sub(sub, text)


def resolve_table_path(value: Any, *, base: str | os.PathLike | None = None, where: str = "table") -> Path:
    """The absolute folder a ``table`` setting names.

    Args:
        value: A path (``~``, ``$VAR``, ``${VAR:-default}`` expanded), or ``None``
            for ``$NNI_ROBUST_NB201``.
        base: Folder a relative path is relative to (default: the current directory).
        where: The setting's name, for messages.

    Raises:
        ConfigError: not a path, an unset variable without default, or no
            path and ``$NNI_ROBUST_NB201`` unset.
    """
    if value is None or value == "":
        env = os.environ.get(TABLE_ENV)
        if not env:
            raise ConfigError(f"{where} is not given and ${TABLE_ENV} is not set: name the folder of the "
                              f"robustness dataset (Jung et al., ICLR 2023; it holds data/meta.json and "
                              f"cifar10/clean_accuracy.json).")
        value = env
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{where} must be a folder path, but got {value!r}.")
    path = Path(os.path.expanduser(_expand(os.fspath(value), where)))
    if not path.is_absolute():
        path = Path(base if base is not None else os.getcwd()) / path
    return path.resolve()


@dataclass(frozen=True)
class TabularArgs:
    """The ``tabular`` task's arguments (see the module docstring).

    Attributes:
        table: The dataset's folder (absolute).
        objective: The objective, in :class:`~nni_robust.tabular.Objective`'s text form.
        dataset: The dataset part (``"cifar10"``).
    """

    table: Path
    objective: str = DEFAULT_OBJECTIVE
    dataset: str = "cifar10"

    @classmethod
    def from_dict(cls, args: Mapping[str, Any] | None, *, base: str | os.PathLike | None = None,
                  where: str = "task_args of task 'tabular'") -> "TabularArgs":
        """Read (and check the form of) the task's arguments; unknown keys are errors.

        Raises:
            ConfigError: an unknown key, a bad path or objective text.
        """
        args = dict(args or {})
        check_keys(args, _KEYS, where)
        objective = Objective.parse(args.get("objective", DEFAULT_OBJECTIVE))
        dataset = args.get("dataset", "cifar10")
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError(f"{where}: dataset must be a folder name like 'cifar10', but got {dataset!r}.")
        return cls(table=resolve_table_path(args.get("table"), base=base, where=f"{where}: table"),
                   objective=str(objective), dataset=dataset)

    def to_dict(self) -> dict[str, str]:
        """JSON-able arguments (the table as an absolute path)."""
        return {"table": str(self.table), "objective": self.objective, "dataset": self.dataset}


def load_table(root: str | os.PathLike, dataset: str = "cifar10") -> RobustnessTable:
    """The NAS-Bench-201 robustness table of ``root`` (loaded once per process and folder).

    Raises:
        DatasetNotFoundError, ConfigError: see :func:`nni_robust.tabular.load_robustness_table`.
    """
    return _load_table(str(Path(root).expanduser().resolve()), dataset)


@functools.lru_cache(maxsize=4)
def _load_table(root: str, dataset: str) -> RobustnessTable:
    from nni_robust.spaces.nb201 import load_nb201_table

    return load_nb201_table(root, dataset)


class TabularEvaluator:
    """Answers NAS-Bench-201 samples from a robustness table, as the ``tabular`` task reports them.

    Args:
        table: The table (:func:`load_table`).
        objective: What ``default`` is (any form :meth:`RobustnessTable.objective` reads).

    Raises:
        ConfigError: an objective the table cannot answer (naming its attacks or eps).
    """

    def __init__(self, table: RobustnessTable, objective: Any = DEFAULT_OBJECTIVE) -> None:
        self.table = table
        self.objective = table.objective(objective)
        self.values = table.values(self.objective)
        obj = self.objective
        self._columns: list[tuple[str, Any]] = []
        if obj.attack is not None:
            key = f"{obj.attack}@{NORM}"
            self._columns = [(f"{obj.attack}@{eps:g}", table.adversarial[key][:, k])
                             for k, eps in enumerate(table.epsilons[key])]

    @classmethod
    def from_args(cls, args: "TabularArgs | Mapping[str, Any]") -> "TabularEvaluator":
        """The evaluator of the task's arguments (the table loaded once per process)."""
        if not isinstance(args, TabularArgs):
            args = TabularArgs.from_dict(args)
        return cls(load_table(args.table, args.dataset), args.objective)

    def row(self, sample: Any) -> int:
        """The table row of a sample (an NNI sample, a NAS-Bench-201 string or an arch).

        Raises:
            ArchitectureError: not a NAS-Bench-201 cell (or not in the table).
        """
        from nni_robust.spaces.nb201 import NB201Arch

        return self.table.row(NB201Arch.parse(sample).to_string())

    def value(self, sample: Any) -> float:
        """The objective of one sample."""
        return float(self.values[self.row(sample)])

    def answer(self, sample: Any) -> tuple[dict[str, float], dict[str, Any]]:
        """``(final, full)`` as the task returns them: the floats NNI gets (``default``,
        ``clean``, the objective's attack at each eps, ``uid``), and those with the
        cell's string, the objective and the table's folder."""
        if sample is None:
            raise ConfigError("task 'tabular' answers architectures: its trial has no sample.")
        r = self.row(sample)
        uid = int(self.table.uids[self.table.rep_rows[r]])
        final = {"default": float(self.values[r]), "clean": float(self.table.clean[r])}
        final.update({name: float(col[r]) for name, col in self._columns})
        final["uid"] = float(uid)
        if not all(math.isfinite(v) for v in final.values()):  # pragma: no cover - the loader rejects these
            raise ArchitectureError(f"The table has no finite value for {self.table.strings[r]!r}.")
        full = dict(final, uid=uid, arch=self.table.strings[r], objective=str(self.objective),
                    table=str(self.table.root), dataset=self.table.dataset)
        return final, full

    def optimum(self) -> tuple[float, int, str]:
        """``(best value, uid, string)`` of the objective over the table."""
        return self.table.optimum(self.objective)

    def top_threshold(self, fraction: float = 0.01) -> float:
        """The value of the top ``fraction`` of the measured architectures."""
        return self.table.top_threshold(self.objective, fraction)


def _code_directory() -> Path | None:
    """The experiment's ``trialCodeDirectory`` when running inside an NNI tuner (REST), else None."""
    from .bridge import _rest, _rest_base

    if _rest_base() is None:
        return None
    try:
        params = _rest("GET", "/experiment")["params"]
        code_dir = params.get("trialCodeDirectory")
        return Path(code_dir) if code_dir else None
    except Exception as exc:  # the REST API is a convenience: fall back to the current directory
        logger.warning("Could not read the experiment's trialCodeDirectory from NNI (%r); a relative table path "
                       "is taken relative to %s.", exc, os.getcwd())
        return None


def check_args(args: Mapping[str, Any] | None) -> dict[str, str]:
    """Check the ``tabular`` task's arguments at tuner start and return them normalised.

    Loads the table (so a missing folder or file, or a malformed one, fails
    here with the file's name) and checks the objective against it.

    Returns:
        ``{"table": absolute folder, "objective": text, "dataset": name}``.

    Raises:
        ConfigError, DatasetNotFoundError: naming the bad key, file or value.
    """
    parsed = TabularArgs.from_dict(args, base=_code_directory())
    evaluator = TabularEvaluator.from_args(parsed)
    best, _, string = evaluator.optimum()
    logger.info("Tabular task: %s in %s (%d cells, %d measured); optimum %.4f (%s).", evaluator.objective,
                parsed.table, len(evaluator.table), evaluator.table.num_classes, best, string)
    return parsed.to_dict()


class _TabularTask:
    """The ``tabular`` trial task: ``task(ctx) -> (final, full)`` answered from the table.

    ``check_args`` is called by the bridge on its ``task_args`` when the tuner starts.
    """

    check_args = staticmethod(check_args)

    def __call__(self, ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
        evaluator = TabularEvaluator.from_args(ctx.args)
        final, full = evaluator.answer(ctx.sample)
        logger.info("%s: %s = %.4f (clean %.4f, uid %d)", full["arch"], full["objective"], final["default"],
                    final["clean"], full["uid"])
        return final, full

    def __repr__(self) -> str:
        return "tabular_task"


#: The task registered as ``tabular`` (:data:`nni_robust.strategies.registry.COMMON_TASKS`).
tabular_task = _TabularTask()
