"""An NNI tuner backed by an Optuna study (ask-and-tell), for any ``nnictl`` experiment.

:class:`OptunaTuner` is an NNI :class:`~nni.tuner.Tuner`: each parameter set NNI
asks for is an Optuna trial (``study.ask``), and each trial's final result is
told back (``study.tell``). Studies may have one objective or several (for
example maximize clean and robust accuracy, or maximize the reward and
minimize MFLOPs); the objectives are read by key from the dict each trial
reports with ``nni.report_final_result`` (a bare number is ``{"default":
number}``). The sampler is NSGA-II by default, or any other by name.

YAML (checked with nnictl 3.0; ``codeDirectory`` is required whenever
``className`` is given -- any existing folder, relative to the YAML file)::

    searchSpace:
      lr: {_type: loguniform, _value: [0.001, 0.1]}
      width: {_type: choice, _value: [16, 32, 64]}
    trialCommand: python trial.py      # reports {"default": acc_clean, "acc_adv": ..., "mflops": ...}
    trialConcurrency: 2
    maxTrialNumber: 100
    tuner:
      className: nni_robust.strategies.tradeoff.optuna_tuner.OptunaTuner
      codeDirectory: .
      classArgs:
        objectives:
          - {key: default, direction: maximize}
          - {key: mflops, direction: minimize}
        sampler: nsga2                 # tpe, random, nsga3, qmc, gp, cmaes, or a dotted path
        sampler_args: {population_size: 20}
        seed: 0
    trainingService: {platform: local}

Search space
------------
NNI's search-space types map onto Optuna distributions (:func:`map_search_space`).
Optuna stores the *internal* value of each parameter; the trial receives the
NNI value, which is also stored in the trial's user attribute
``nni_parameters`` and used in every output.

==============  ==========================================  =====================================
NNI ``_type``   Optuna distribution (internal value ``x``)   value sent to the trial
==============  ==========================================  =====================================
choice          ``CategoricalDistribution(values)``          ``x`` (choices that Optuna cannot
                                                             store -- lists, dicts -- by index)
randint [l, u)  ``IntDistribution(l, u - 1)``                ``x``
uniform         ``FloatDistribution(l, h)``                  ``x``
quniform        ``FloatDistribution(l, h, step=q)`` when     ``clip(round(x / q) * q, l, h)``
                ``l`` and ``h`` are multiples of ``q``,      (NNI's definition)
                else ``FloatDistribution(l, h)``
loguniform      ``FloatDistribution(l, h, log=True)``        ``x``
qloguniform     ``FloatDistribution(l, h, log=True)``        ``clip(round(x / q) * q, l, h)``
normal          quantile ``u``: ``FloatDistribution(Φ(-6),   ``mu + sigma * Φ⁻¹(u)``
                Φ(6))``
qnormal         as normal                                    ``round(normal / q) * q``
lognormal       as normal                                    ``exp(mu + sigma * Φ⁻¹(u))``
qlognormal      as normal                                    ``round(lognormal / q) * q``
==============  ==========================================  =====================================

*Our choices* (NNI's specification defines only the distributions):

* **Normal types.** Optuna has no unbounded distribution. We search the
  normal's quantile ``u`` (the probability integral transform), truncated at
  six standard deviations (:data:`NORMAL_TRUNCATION`; the mass cut off is
  2e-9): a uniform draw of ``u`` -- what random sampling and the initial
  population of NSGA-II do -- gives exactly NNI's normal prior, and the
  model-based samplers search a bounded box. The study's ``params`` of such a
  parameter are quantiles in (0, 1); ``nni_parameters`` hold the values.
* **quniform / qloguniform.** NNI rounds to multiples of ``q`` counted from
  zero and clips to ``[l, h]``. When ``l`` and ``h`` are multiples of ``q``
  that grid is Optuna's ``step`` grid (exact); otherwise Optuna searches the
  continuous range and the value is rounded as NNI does. Optuna has no
  stepped log distribution, so ``qloguniform`` is always searched
  continuously (log scale) and rounded.
* **Nested (conditional) choices** (``{"_name": ...}`` dicts) are not
  supported: a :class:`~nni_robust.errors.ConfigError` names the parameter.
  So is any unknown ``_type``, or malformed ``_value``.

Results, failures, resume
-------------------------
* ``receive_trial_result`` tells the trial's values. A result that lacks an
  objective key, or whose value is not a finite number, is told as FAIL
  (the reason is logged and kept as user attribute ``nni_fail_reason``).
* ``trial_end`` of a trial without a result (failed, cancelled, early
  stopped, or succeeded without reporting) tells FAIL after ``fail_grace``
  seconds if no result came meanwhile: NNI delivers a trial's end and its
  final metric on different dispatcher threads, so the end may come first.
  The wait happens on the tuner's own worker thread: no tuner method waits.
* The study lives in a persistent storage, by default the SQLite file
  ``<work_dir>/optuna.db``, under the name ``study_name`` (default: the NNI
  experiment id). ``nnictl resume`` therefore continues the same study:
  trial numbers continue, completed trials keep informing the sampler, and
  the results NNI re-sends (``import_data``: finished trials, and trials that
  were running when the experiment stopped and that NNI re-runs) are matched
  to the stored trials (by NNI trial job id, else by parameters and values)
  and never told twice; a re-run trial's result completes its still-running
  Optuna trial. Records that match no stored trial (e.g. ``nnictl experiment
  import``) are added as completed trials. To continue a study from another
  experiment give the same ``storage`` (a file outside the experiment
  folder) and ``study_name``. The sampler's seed is derived from ``seed``
  and the number of trials already stored, so a resumed sampler does not
  replay the first one's random draws. A re-run trial that fails after a
  resume stays RUNNING in the study (NNI does not tell the tuner the ends of
  re-run trials).
* Each trial's user attributes: ``nni_parameter_id``, ``nni_parameters``,
  ``nni_experiment_id``, ``nni_session`` (the tuner process that asked it;
  one per process), and after its result ``nni_trial_job_id``, ``nni_result``
  (the reported dict) and ``nni_told_session`` (the process that told it: a
  trial asked before ``nnictl stop`` and re-run after the resume is told by
  the resumed process).

Outputs (in ``work_dir``, rewritten after results, at most every
``report_interval`` seconds, on the worker thread): ``pareto.md``,
``pareto.csv`` and ``pareto.png`` (:func:`nni_robust.strategies.tradeoff.pareto.write_pareto`;
for one objective the "front" is the best trial and the plot its best-so-far
curve), ``trials.csv`` (every trial: state, parameters, objectives, reported
metrics), and ``tensorboard/trial_<number>/`` -- one TensorBoard run per
completed trial with its parameters and objectives, for TensorBoard's HPARAMS
view (``tensorboard --logdir <work_dir>/tensorboard``).
When every objective is an accuracy and the trials report ``test_images``
(the final trials do), the front is checked against test-set noise
(:func:`~nni_robust.strategies.tradeoff.pareto.noise_verdict`): within noise,
``pareto.md`` says so under its table and the warning ``tradeoff.noise`` is
recorded in ``work_dir/warnings.jsonl`` (replaced as results come in, withdrawn
when later trials resolve a trade-off; ``nni-robust run`` and the report page
show it).

Start-up time: NNI gives the tuner process 10 s to connect after it
constructs the tuner, so the constructor only validates the classArgs (and
imports Optuna); the storage is opened by the first dispatcher call, and
matplotlib and TensorBoard are imported by the worker thread.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import importlib.util
import inspect
import json
import logging
import math
import os
import secrets
import threading
import time
import uuid
from pathlib import Path
from statistics import NormalDist
from typing import Any, Mapping, Sequence

from nni.tuner import Tuner

from nni_robust.config import check_keys
from nni_robust.errors import ConfigError
from nni_robust.tb import search_work_dir

from ..bridge import resolve

from ..trust import read_warnings, record_warning, resolve_warning
from .pareto import DIRECTIONS, noise_verdict, pareto_front, write_pareto

_UNCHECKED = object()  # (no noise verdict recorded yet by this process)

__all__ = [
    "SAMPLERS", "SEARCH_SPACE_TYPES", "NORMAL_TRUNCATION", "Objective", "MappedParameter", "map_search_space",
    "parse_objectives", "extract_objectives", "build_sampler", "OptunaTuner",
]

_logger = logging.getLogger(__name__)

#: Sampler names -> dotted paths of Optuna samplers.
SAMPLERS: dict[str, str] = {
    "nsga2": "optuna.samplers.NSGAIISampler",
    "nsga3": "optuna.samplers.NSGAIIISampler",
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "qmc": "optuna.samplers.QMCSampler",
    "gp": "optuna.samplers.GPSampler",
    "cmaes": "optuna.samplers.CmaEsSampler",
}
_SINGLE_OBJECTIVE_ONLY = {"cmaes"}
_SAMPLER_NEEDS = {"cmaes": "cmaes", "qmc": "scipy", "gp": "torch"}

#: NNI search-space types this tuner maps (all of NNI's, except nested choices).
SEARCH_SPACE_TYPES = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform",
                      "normal", "qnormal", "lognormal", "qlognormal")

#: Normal-type parameters are searched over quantiles within this many standard deviations.
NORMAL_TRUNCATION = 6.0

_STD_NORMAL = NormalDist()
_CATEGORICAL_TYPES = (type(None), bool, int, float, str)


# ---------------------------------------------------------------------- objectives
@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: the final-result key it is read from and its direction."""

    key: str
    direction: str = "maximize"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ConfigError(f"An objective's 'key' must be a non-empty string, but got {self.key!r}.")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"Objective {self.key!r}: 'direction' must be one of {list(DIRECTIONS)}, "
                              f"but got {self.direction!r}.")


def parse_objectives(spec: Any) -> list[Objective]:
    """Objectives from the ``objectives`` classArg.

    Args:
        spec: A list of ``{"key": str, "direction": "maximize" | "minimize"}`` (direction
            defaults to maximize), or None for ``[{"key": "default", "direction": "maximize"}]``.

    Raises:
        ConfigError: Not a non-empty list of such dicts, an unknown field, or a key twice.
    """
    if spec is None:
        return [Objective("default", "maximize")]
    example = "[{key: default, direction: maximize}, {key: mflops, direction: minimize}]"
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence) or not spec:
        raise ConfigError(f"classArg 'objectives' must be a non-empty list like {example}, but got {spec!r}.")
    out: list[Objective] = []
    for i, item in enumerate(spec):
        if not isinstance(item, Mapping):
            raise ConfigError(f"objectives[{i}] must be a dict with 'key' and 'direction', but got {item!r}.")
        check_keys(item, ("key", "direction"), f"objectives[{i}]")
        if "key" not in item:
            raise ConfigError(f"objectives[{i}] needs a 'key' (a key of the trials' final result), got {item!r}.")
        out.append(Objective(item["key"], item.get("direction", "maximize")))
    keys = [o.key for o in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"classArg 'objectives' names the key(s) {dup} more than once.")
    return out


def _is_numeric(value: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    mod = type(value).__module__
    return mod == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf" and value.ndim == 0


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    if not _is_numeric(value):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def extract_objectives(value: Any, objectives: Sequence[Objective]) -> tuple[list[float] | None, str | None]:
    """The objective values of a final result, or why there are none.

    Args:
        value: What the trial passed to ``nni.report_final_result``: a number (taken as
            ``{"default": number}``) or a dict (a JSON string of one is parsed).
        objectives: The objectives, read by key.

    Returns:
        ``(values, None)``, or ``(None, reason)`` when a key is missing or a value is not a
        finite number.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, f"the final result {value!r} is neither a number nor a dict"
    if not isinstance(value, Mapping):
        if not _is_numeric(value):
            return None, f"the final result {value!r} is neither a number nor a dict"
        value = {"default": value}
    values = []
    for obj in objectives:
        if obj.key not in value:
            return None, (f"objective key {obj.key!r} is missing from the final result "
                          f"(its keys: {sorted(map(str, value))})")
        x = _number(value[obj.key])
        if x is None:
            return None, f"objective {obj.key!r} is {value[obj.key]!r}, not a finite number"
        values.append(x)
    return values, None


# ---------------------------------------------------------------------- search space
@dataclasses.dataclass(frozen=True)
class MappedParameter:
    """One NNI search-space parameter as an Optuna distribution plus the value mapping.

    Attributes:
        name: Parameter name (the search-space key, also Optuna's parameter name).
        nni_type: NNI ``_type``.
        values: NNI ``_value``.
        distribution: The Optuna distribution searched (the *internal* value).
        by_index: A ``choice`` whose internal value is the index of the choice.
    """

    name: str
    nni_type: str
    values: tuple
    distribution: Any
    by_index: bool = False

    # -- helpers
    def _q(self) -> float:
        return float(self.values[2])

    def _quantize(self, x: float) -> float:
        q = self._q()
        x = float(f"{round(x / q) * q:.15g}")  # NNI's formula, without float noise (0.95, not 0.9500000000000001)
        if self.nni_type in ("quniform", "qloguniform"):
            x = min(max(x, float(self.values[0])), float(self.values[1]))
        return float(x)

    def to_nni(self, x: Any) -> Any:
        """The value the trial receives for internal value ``x``."""
        t = self.nni_type
        if t == "choice":
            return self.values[int(x)] if self.by_index else x
        if t == "randint":
            return int(x)
        if t in ("uniform", "loguniform"):
            return float(x)
        if t in ("quniform", "qloguniform"):
            return self._quantize(float(x))
        # normal family: x is the quantile
        mu, sigma = float(self.values[0]), float(self.values[1])
        z = mu + sigma * _STD_NORMAL.inv_cdf(float(x))
        if "log" in t:
            z = math.exp(z)
        return self._quantize(z) if t.startswith("q") else float(z)

    def from_nni(self, value: Any) -> Any:
        """The internal value of NNI value ``value`` (to store a result NNI re-sends).

        Raises:
            ValueError: ``value`` is not a value of this parameter.
        """
        t = self.nni_type
        dist = self.distribution
        if t == "choice":
            for i, v in enumerate(self.values):
                if v == value and isinstance(v, bool) == isinstance(value, bool):
                    return i if self.by_index else v
            raise ValueError(f"{value!r} is not one of the choices {list(self.values)}")
        x = _number(value)
        if x is None:
            raise ValueError(f"{value!r} is not a finite number")
        if t == "randint":
            if x != int(x):
                raise ValueError(f"{value!r} is not an integer")
            x = int(x)
        elif t in ("normal", "qnormal", "lognormal", "qlognormal"):
            if "log" in t:
                if x <= 0:
                    raise ValueError(f"{value!r} is not positive")
                x = math.log(x)
            mu, sigma = float(self.values[0]), float(self.values[1])
            u = _STD_NORMAL.cdf((x - mu) / sigma)
            return min(max(u, dist.low), dist.high)
        if not dist.low - 1e-12 * max(1.0, abs(dist.low)) <= x <= dist.high + 1e-12 * max(1.0, abs(dist.high)):
            raise ValueError(f"{value!r} is outside [{dist.low}, {dist.high}]")
        x = min(max(x, dist.low), dist.high)
        step = getattr(dist, "step", None)
        if step is not None and t != "randint":
            k = round((x - dist.low) / step)
            if abs((x - dist.low) / step - k) > 1e-6:
                raise ValueError(f"{value!r} is not on the grid {dist.low} + k * {step}")
            x = min(dist.low + k * step, dist.high)
        return x


def _is_multiple(x: float, q: float) -> bool:
    k = x / q
    return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))


def _map_parameter(name: str, spec: Any) -> MappedParameter:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    valid = ", ".join(SEARCH_SPACE_TYPES)
    if not isinstance(spec, Mapping) or "_type" not in spec or "_value" not in spec:
        raise ConfigError(f"Search-space parameter {name!r} must be a dict with '_type' (one of {valid}) and "
                          f"'_value', but got {spec!r}.")
    t, values = spec["_type"], spec["_value"]
    if t not in SEARCH_SPACE_TYPES:
        close = difflib.get_close_matches(str(t), SEARCH_SPACE_TYPES, n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"Search-space parameter {name!r} has type {t!r}, which OptunaTuner does not "
                          f"support.{hint} Supported types: {valid}.")
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"Search-space parameter {name!r} ({t}): '_value' must be a non-empty list, "
                          f"but got {values!r}.")
    values = tuple(values)

    def bad(what: str) -> ConfigError:
        return ConfigError(f"Search-space parameter {name!r} ({t}, _value {list(values)!r}): {what}.")

    if t == "choice":
        if any(isinstance(v, Mapping) and "_name" in v for v in values):
            raise bad("nested (conditional) choices are not supported by OptunaTuner; flatten the search "
                      "space into independent parameters")
        if all(type(v) in _CATEGORICAL_TYPES for v in values):
            return MappedParameter(name, t, values, CategoricalDistribution(list(values)))
        try:
            json.dumps(list(values))
        except (TypeError, ValueError):
            raise bad("choices must be JSON values") from None
        return MappedParameter(name, t, values, CategoricalDistribution(list(range(len(values)))), by_index=True)

    shape = "[mu, sigma]" if "normal" in t else "[low, high]"
    if t.startswith("q"):
        shape = shape[:-1] + ", q]"
    if len(values) != shape.count(",") + 1:
        raise bad(f"expected {shape.count(',') + 1} numbers {shape}")
    if any(_number(v) is None for v in values):
        raise bad("all values must be finite numbers")
    nums = [float(v) for v in values]
    if t.startswith("q") and nums[2] <= 0:
        raise bad("q must be > 0")
    if "normal" in t:
        if nums[1] <= 0:
            raise bad("sigma must be > 0")
        p = _STD_NORMAL.cdf(-NORMAL_TRUNCATION)
        return MappedParameter(name, t, values, FloatDistribution(p, 1.0 - p))
    low, high = nums[0], nums[1]
    if t == "randint":
        if any(x != int(x) for x in (low, high)):
            raise bad("randint bounds must be integers [lower, upper)")
        if int(high) - int(low) < 1:
            raise bad("randint needs lower < upper (upper is exclusive)")
        return MappedParameter(name, t, values, IntDistribution(int(low), int(high) - 1))
    if low >= high:
        raise bad("low must be < high")
    if "log" in t and low <= 0:
        raise bad("low must be > 0 for a log-scale type")
    if t == "uniform":
        return MappedParameter(name, t, values, FloatDistribution(low, high))
    if t == "loguniform":
        return MappedParameter(name, t, values, FloatDistribution(low, high, log=True))
    if t == "qloguniform":
        return MappedParameter(name, t, values, FloatDistribution(low, high, log=True))
    q = nums[2]  # quniform
    if _is_multiple(low, q) and _is_multiple(high, q):
        return MappedParameter(name, t, values, FloatDistribution(low, high, step=q))
    return MappedParameter(name, t, values, FloatDistribution(low, high))


def map_search_space(search_space: Mapping[str, Any]) -> dict[str, MappedParameter]:
    """Map an NNI search space (``{name: {"_type": ..., "_value": [...]}}``) onto Optuna.

    Returns:
        ``{name: MappedParameter}`` in the search space's order (see the module docstring
        for the mapping of each type).

    Raises:
        ConfigError: An unsupported type or a malformed parameter, naming the parameter.
    """
    if not isinstance(search_space, Mapping):
        raise ConfigError(f"The search space must be a dict {{name: {{'_type': ..., '_value': [...]}}}}, "
                          f"but got {search_space!r}.")
    return {str(name): _map_parameter(str(name), spec) for name, spec in search_space.items()}


# ---------------------------------------------------------------------- samplers
def _resolve_sampler(name: str) -> type:
    cls = resolve(name, SAMPLERS, "sampler")
    from optuna.samplers import BaseSampler

    if not (isinstance(cls, type) and issubclass(cls, BaseSampler)):
        raise ConfigError(f"sampler {name!r} is {cls!r}, not a subclass of optuna.samplers.BaseSampler.")
    return cls


def build_sampler(name: str, args: Mapping[str, Any] | None = None, *, seed: int | None = None,
                  n_objectives: int = 1) -> Any:
    """Instantiate an Optuna sampler by name (:data:`SAMPLERS`) or dotted path.

    Args:
        name: Sampler name or dotted path of a :class:`optuna.samplers.BaseSampler`.
        args: Keyword arguments of its constructor (checked against its signature).
        seed: Passed as ``seed`` when the constructor takes one and ``args`` does not set it.
        n_objectives: Number of objectives (some samplers handle one only).

    Raises:
        ConfigError: Unknown name or argument, a missing optional package, or a
            single-objective sampler for several objectives.
    """
    cls = _resolve_sampler(name)
    args = dict(args or {})
    if name in _SINGLE_OBJECTIVE_ONLY and n_objectives > 1:
        raise ConfigError(f"sampler {name!r} handles a single objective only, but {n_objectives} objectives are "
                          f"given; use one of {sorted(set(SAMPLERS) - _SINGLE_OBJECTIVE_ONLY)}.")
    needs = _SAMPLER_NEEDS.get(name)
    if needs is not None and importlib.util.find_spec(needs) is None:
        raise ConfigError(f"sampler {name!r} needs the Python package {needs!r}, which is not installed "
                          f"(pip install {needs}).")
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover
        params = {}
    named = [p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name != "self"]
    if named and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        check_keys(args, named, f"sampler_args of sampler {name!r}")
    if seed is not None and "seed" in params and "seed" not in args:
        args["seed"] = seed
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid sampler_args for sampler {name!r}: {exc}") from exc


def _derived_seed(seed: int, n_existing: int) -> int:
    """The sampler seed for a study that already holds ``n_existing`` trials."""
    if n_existing == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, n_existing]).generate_state(1)[0] & 0x7FFFFFFF)


def _json_key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=repr)


def _values_key(values: Sequence[float]) -> tuple:
    return tuple(float(f"{float(v):.12g}") for v in values)


@dataclasses.dataclass
class _Live:
    """A trial asked in this process whose result NNI has not delivered yet."""

    trial: Any  # optuna.trial.Trial
    params: dict
    ended_at: float | None = None  # when NNI said it ended (without a result yet)
    success: bool = True


# ---------------------------------------------------------------------- tuner
class OptunaTuner(Tuner):
    """NNI tuner that proposes parameters from an Optuna study (ask-and-tell).

    All arguments are ``classArgs`` of the experiment's ``tuner`` section.

    Args:
        objectives: List of ``{"key": final-result key, "direction": "maximize" |
            "minimize"}``; default ``[{"key": "default", "direction": "maximize"}]``.
        sampler: ``nsga2`` (default), ``nsga3``, ``tpe``, ``random``, ``qmc``, ``gp``,
            ``cmaes`` (single objective; needs ``cmaes``), or a dotted path of an
            :class:`optuna.samplers.BaseSampler`.
        sampler_args: Keyword arguments of the sampler's constructor.
        study_name: Study name; default the NNI experiment id (``nnictl resume``
            continues it), outside NNI ``"nni_robust"``.
        storage: Optuna storage URL, or the path of an SQLite file; default
            ``sqlite:///<work_dir>/optuna.db``.
        work_dir: Folder of the storage and the outputs; default
            ``<experiment dir>/nni_robust`` (required outside NNI).
        seed: Sampler seed; None draws one (logged and kept in the study's user
            attributes; a resumed study reuses it).
        fail_grace: Seconds a trial that ended without a result may still receive
            one before it is told as FAIL (0: at once).
        report_interval: Least seconds between two rewrites of the outputs.
        tensorboard: Write the TensorBoard hparams runs.
        plot: Write ``pareto.png``.

    Raises:
        ConfigError: An unknown classArg, sampler or sampler argument, or a bad value.
    """

    _ARGS = ("objectives", "sampler", "sampler_args", "study_name", "storage", "work_dir", "seed",
             "fail_grace", "report_interval", "tensorboard", "plot")

    def __init__(self, *, objectives: Sequence[Mapping[str, Any]] | None = None, sampler: str = "nsga2",
                 sampler_args: Mapping[str, Any] | None = None, study_name: str | None = None,
                 storage: str | None = None, work_dir: str | os.PathLike | None = None, seed: int | None = None,
                 fail_grace: float = 10.0, report_interval: float = 2.0, tensorboard: bool = True,
                 plot: bool = True, **unknown: Any) -> None:
        super().__init__()
        check_keys(unknown, self._ARGS, "the classArgs of OptunaTuner")
        self.objectives = parse_objectives(objectives)
        if sampler_args is not None and not isinstance(sampler_args, Mapping):
            raise ConfigError(f"classArg 'sampler_args' must be a dict, but got {sampler_args!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"classArg 'seed' must be a non-negative integer or null, but got {seed!r}.")
        if seed is not None and sampler_args and "seed" in sampler_args:
            raise ConfigError("Give the seed once: as classArg 'seed' or in 'sampler_args', not both.")
        for key, value in (("fail_grace", fail_grace), ("report_interval", report_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"classArg {key!r} must be a number of seconds >= 0, but got {value!r}.")
        for key, value in (("tensorboard", tensorboard), ("plot", plot)):
            if not isinstance(value, bool):
                raise ConfigError(f"classArg {key!r} must be true or false, but got {value!r}.")
        self.work_dir, self.experiment_id = search_work_dir(work_dir)
        if study_name is None:
            study_name = self.experiment_id or "nni_robust"
        if not isinstance(study_name, str) or not study_name:
            raise ConfigError(f"classArg 'study_name' must be a non-empty string, but got {study_name!r}.")
        self.study_name = study_name
        if storage is None:
            storage = f"sqlite:///{self.work_dir / 'optuna.db'}"
        elif not isinstance(storage, str) or not storage:
            raise ConfigError(f"classArg 'storage' must be an Optuna storage URL or an SQLite file path, "
                              f"but got {storage!r}.")
        elif "://" not in storage:
            storage = f"sqlite:///{Path(storage).expanduser().resolve()}"
        self.storage_url = storage
        self.sampler_name = sampler
        self.sampler_args = dict(sampler_args or {})
        # validate the sampler and its arguments now (the real one is built with the study)
        build_sampler(sampler, self.sampler_args, seed=seed, n_objectives=len(self.objectives))
        self.seed = seed
        self.fail_grace = float(fail_grace)
        self.report_interval = float(report_interval)
        self.write_tensorboard = tensorboard
        self.write_plot = plot
        self.session = uuid.uuid4().hex[:12]

        self.study: Any = None
        self.search_space: dict[str, MappedParameter] = {}
        self._distributions: dict[str, Any] = {}
        self._live: dict[int, _Live] = {}
        self._generated: set[int] = set()  # parameter ids answered in this session
        self._lock = threading.RLock()  # guards the study (storage) and the bookkeeping
        self._report_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._dirty = False
        self._last_report = 0.0
        self._stop = False
        self._worker: threading.Thread | None = None
        self._tb_written: set[int] = set()
        self._tb_failed = False
        self._plot_failed = False
        self._noise: str | None | object = _UNCHECKED  # the noise verdict last recorded

    # ------------------------------------------------------------------ study
    def _ensure_study(self) -> Any:
        with self._lock:
            if self.study is None:
                self.study = self._open_study()
                self._worker = threading.Thread(target=self._work, name="OptunaTuner-worker", daemon=True)
                self._worker.start()
            return self.study

    def _open_study(self) -> Any:
        import optuna

        self.work_dir.mkdir(parents=True, exist_ok=True)
        storage: Any = self.storage_url
        if storage.startswith("sqlite:"):
            # wait for other readers (e.g. an analysis) instead of failing with "database is locked"
            storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
        directions = [o.direction for o in self.objectives]
        study = optuna.create_study(storage=storage, study_name=self.study_name, directions=directions,
                                    load_if_exists=True, sampler=optuna.samplers.RandomSampler())
        given = [d.name.lower() for d in study.directions]
        attrs = study.user_attrs
        stored = attrs.get("nni_objectives")
        mine = [dataclasses.asdict(o) for o in self.objectives]
        if given != directions or (stored is not None and stored != mine):
            raise ConfigError(
                f"Study {self.study_name!r} in {self.storage_url} has objectives "
                f"{stored if stored is not None else given}, but the classArg 'objectives' is {mine}. Use the "
                "same objectives to continue it, or another study_name/storage for a new study.")
        n_existing = len(study.get_trials(deepcopy=False))
        seed = self.seed
        if seed is None:
            seed = attrs.get("nni_seed")
            if seed is None:
                seed = secrets.randbits(31)
                _logger.info("No seed given: drew seed %d.", seed)
        if stored is None:
            study.set_user_attr("nni_objectives", mine)
        if attrs.get("nni_seed") is None:
            study.set_user_attr("nni_seed", seed)
        self.seed = seed
        study.sampler = build_sampler(self.sampler_name, self.sampler_args,
                                      seed=_derived_seed(seed, n_existing), n_objectives=len(self.objectives))
        if n_existing:
            _logger.info("Continuing study %r in %s: %d trials stored.", self.study_name, self.storage_url,
                         n_existing)
        else:
            _logger.info("Created study %r in %s (objectives %s, sampler %s, seed %d).", self.study_name,
                         self.storage_url, mine, self.sampler_name, seed)
        return study

    # ------------------------------------------------------------------ NNI API
    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        """Map NNI's search space onto Optuna distributions (see :func:`map_search_space`)."""
        mapped = map_search_space(search_space)
        with self._lock:
            self._ensure_study()
            self.search_space = mapped
            self._distributions = {name: p.distribution for name, p in mapped.items()}
        if not mapped:
            _logger.warning("The search space is empty: every trial gets {}.")
        _logger.info("Search space: %s", {n: p.distribution for n, p in mapped.items()})

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        """Ask the study for a trial and return its parameters in NNI's format.

        Raises:
            nni.NoMoreTrialError: the experiment already has ``maxTrialNumber``
                trials. After ``nnictl resume``, NNI 3.0 asks for one trial more
                when a re-run trial ends, and then drops it; asking the study
                then would leave a trial RUNNING forever that never ran.
        """
        if self._nni_budget_spent():
            import nni

            raise nni.NoMoreTrialError(f"the experiment has run maxTrialNumber trials (parameter id {parameter_id})")
        with self._lock:
            study = self._ensure_study()
            trial = study.ask(dict(self._distributions))
            params = {name: p.to_nni(trial.params[name]) for name, p in self.search_space.items()}
            trial.set_user_attr("nni_parameter_id", parameter_id)
            trial.set_user_attr("nni_parameters", params)
            trial.set_user_attr("nni_session", self.session)
            if self.experiment_id is not None:
                trial.set_user_attr("nni_experiment_id", self.experiment_id)
            self._live[parameter_id] = _Live(trial, params)
            self._generated.add(int(parameter_id))
        _logger.debug("Parameter id %s -> trial %d: %s", parameter_id, trial.number, params)
        return params

    def _nni_budget_spent(self) -> bool:
        """Whether the running NNI experiment has its ``maxTrialNumber`` trials already (REST).

        Counts NNI's trial jobs plus the parameters this tuner answered that are
        not a job yet (NNI queues them until a slot frees). False outside NNI,
        without a ``maxTrialNumber``, or when NNI cannot be asked.
        """
        from ..bridge import _rest, _rest_base

        if _rest_base() is None:
            return False
        try:
            limit = (_rest("GET", "/experiment").get("params") or {}).get("maxTrialNumber")
            if limit is None:
                return False
            jobs = _rest("GET", "/trial-jobs") or []
        except Exception as exc:  # pylint: disable=broad-except
            _logger.debug("Could not read the trial budget from NNI: %r", exc)
            return False
        seen: set[int] = set()
        for job in jobs:
            for hp in job.get("hyperParameters") or []:
                try:
                    seen.add(int((json.loads(hp) if isinstance(hp, str) else hp)["parameter_id"]))
                except (TypeError, ValueError, KeyError):
                    continue
        with self._lock:
            queued = len(self._generated - seen)
        return len(jobs) + queued >= int(limit)

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Tell the trial of ``parameter_id`` its objective values (or FAIL when they are missing)."""
        job = kwargs.get("trial_job_id")
        with self._lock:
            self._ensure_study()
            live = self._live.pop(parameter_id, None)
            if live is None:
                number = self._find_running(parameter_id, parameters)
                if number is None:
                    _logger.info("Result for parameter id %s, which this tuner did not ask for: importing it.",
                                 parameter_id)
                    self._import_records([{"parameter": parameters, "value": value, "trialJobId": job}])
                    return
                trial: Any = number
            else:
                trial = live.trial
            self._tell(trial, value, job)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A trial ended: one that has no result is told FAIL (after ``fail_grace`` seconds)."""
        with self._lock:
            live = self._live.get(parameter_id)
            if live is None:
                return  # result already told (or not ours)
            live.ended_at = time.monotonic()
            live.success = bool(success)
            if self.fail_grace <= 0:
                self._fail_overdue(force=True)
            else:
                self._wake.notify_all()

    def import_data(self, data: Sequence[Mapping[str, Any]]) -> None:
        """Results of earlier trials (``nnictl resume``, ``nnictl experiment import``).

        Records already in the study are skipped; a record of a trial that is still
        RUNNING in the study (NNI re-ran it) completes it; any other record whose
        parameters fit the search space is added as a completed trial.
        """
        with self._lock:
            self._ensure_study()
            self._import_records(list(data))

    def _on_exit(self) -> None:
        self.close()

    # ------------------------------------------------------------------ public helpers
    def flush(self) -> None:
        """Tell FAIL to ended trials whose grace has passed and write the outputs now."""
        with self._lock:
            if self.study is None:
                return
            self._fail_overdue()
        self._write_reports()

    def close(self) -> None:
        """Stop the worker, tell FAIL to every ended trial without a result, write the outputs."""
        with self._lock:
            self._stop = True
            self._wake.notify_all()
            if self.study is None:
                return
            self._fail_overdue(force=True)
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30)
        self._write_reports()

    # ------------------------------------------------------------------ telling
    def _tell(self, trial: Any, value: Any, job: str | None) -> None:
        """Tell ``trial`` (a Trial or a trial number) the result ``value``. Caller holds the lock."""
        import optuna

        study = self.study
        if not isinstance(trial, optuna.trial.Trial):
            trial = optuna.trial.Trial(study, self._frozen(trial)._trial_id)
        values, reason = extract_objectives(value, self.objectives)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        trial.set_user_attr("nni_result", value if isinstance(value, Mapping) else {"default": value})
        trial.set_user_attr("nni_told_session", self.session)
        if job is not None:
            trial.set_user_attr("nni_trial_job_id", job)
        if reason is not None:
            _logger.warning("Trial %d is told FAIL: %s.", trial.number, reason)
            trial.set_user_attr("nni_fail_reason", reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, values)
        self._mark_dirty()

    def _frozen(self, number: int) -> Any:
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise KeyError(number)

    def _find_running(self, parameter_id: int, parameters: Any) -> int | None:
        """A RUNNING trial of an earlier session with this parameter id and parameters."""
        from optuna.trial import TrialState

        key = _json_key(parameters)
        found = None
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ua = t.user_attrs
            if (ua.get("nni_session") != self.session and ua.get("nni_parameter_id") == parameter_id
                    and _json_key(ua.get("nni_parameters")) == key):
                found = t.number
        return found

    def _fail_overdue(self, force: bool = False) -> None:
        """Tell FAIL to ended trials without a result whose grace passed. Caller holds the lock."""
        import optuna

        now = time.monotonic()
        for pid, live in list(self._live.items()):
            if live.ended_at is None or (not force and now - live.ended_at < self.fail_grace):
                continue
            del self._live[pid]
            reason = ("the trial failed or was stopped without a final result" if not live.success
                      else "the trial succeeded without reporting a final result")
            _logger.info("Trial %d (parameter id %s) is told FAIL: %s.", live.trial.number, pid, reason)
            live.trial.set_user_attr("nni_fail_reason", reason)
            self.study.tell(live.trial, state=optuna.trial.TrialState.FAIL)
            self._mark_dirty()

    def _import_records(self, data: list[Mapping[str, Any]]) -> None:
        """Match NNI result records to stored trials; tell or add the rest. Caller holds the lock."""
        import optuna
        from optuna.trial import TrialState

        study = self.study
        trials = study.get_trials(deepcopy=False)
        jobs = {t.user_attrs.get("nni_trial_job_id") for t in trials} - {None}
        done: dict[tuple, int] = {}
        running: dict[str, list] = {}
        live_numbers = {live.trial.number for live in self._live.values()}
        for t in trials:
            params = t.user_attrs.get("nni_parameters", t.params)
            if t.state == TrialState.COMPLETE:
                k = (_json_key(params), _values_key(t.values))
                done[k] = done.get(k, 0) + 1
            elif t.state == TrialState.RUNNING and t.number not in live_numbers:
                running.setdefault(_json_key(params), []).append(t)
        skipped = told = added = 0
        for rec in data:
            params, value = rec.get("parameter"), rec.get("value")
            if isinstance(params, str):
                try:
                    params = json.loads(params)
                except ValueError:
                    pass
            job = rec.get("trialJobId")
            if job is not None and job in jobs:
                skipped += 1
                continue
            values, reason = extract_objectives(value, self.objectives)
            pkey = _json_key(params)
            if values is not None:
                k = (pkey, _values_key(values))
                if done.get(k, 0) > 0:
                    done[k] -= 1
                    skipped += 1
                    continue
            if running.get(pkey):
                frozen = running[pkey].pop(0)
                self._tell(optuna.trial.Trial(study, frozen._trial_id), value, job)
                told += 1
                continue
            if values is None:
                _logger.warning("Imported record %r skipped: %s.", rec, reason)
                continue
            try:
                if not isinstance(params, Mapping) or set(params) != set(self.search_space):
                    raise ValueError(f"its parameters {sorted(params) if isinstance(params, Mapping) else params!r} "
                                     f"are not those of the search space {sorted(self.search_space)}")
                internal = {n: p.from_nni(params[n]) for n, p in self.search_space.items()}
            except ValueError as exc:
                _logger.warning("Imported record %r skipped: %s.", rec, exc)
                continue
            user_attrs = {"nni_parameters": dict(params), "nni_imported": True,
                          "nni_result": value if isinstance(value, Mapping) else {"default": value}}
            if job is not None:
                user_attrs["nni_trial_job_id"] = job
            study.add_trial(optuna.trial.create_trial(params=internal, distributions=dict(self._distributions),
                                                      values=values, user_attrs=user_attrs))
            added += 1
        if told or added:
            self._mark_dirty()
        _logger.info("import_data: %d records already in the study, %d running trials completed, %d added.",
                     skipped, told, added)

    # ------------------------------------------------------------------ outputs
    def _mark_dirty(self) -> None:
        self._dirty = True
        self._wake.notify_all()

    def _work(self) -> None:
        """Worker thread: overdue failures and throttled report writing."""
        while True:
            with self._lock:
                if self._stop:
                    return
                timeout = 1.0
                now = time.monotonic()
                for live in self._live.values():
                    if live.ended_at is not None:
                        timeout = min(timeout, max(0.0, self.fail_grace - (now - live.ended_at)))
                if self._dirty:
                    timeout = min(timeout, max(0.0, self.report_interval - (now - self._last_report)))
                self._wake.wait(timeout=timeout + 0.01)
                if self._stop:
                    return
                try:
                    self._fail_overdue()
                except Exception:  # keep the worker alive; the dispatcher is not affected
                    _logger.exception("Telling overdue failures failed.")
                due = self._dirty and time.monotonic() - self._last_report >= self.report_interval
            if due:
                try:
                    self._write_reports()
                except Exception:
                    _logger.exception("Writing the Optuna reports failed.")

    def _snapshot(self) -> list[Any]:
        with self._lock:
            self._dirty = False
            self._last_report = time.monotonic()
            return list(self.study.get_trials(deepcopy=True))

    def _nni_params(self, t: Any) -> dict:
        params = t.user_attrs.get("nni_parameters")
        if isinstance(params, Mapping):
            return dict(params)
        out = {}
        for name, x in t.params.items():
            p = self.search_space.get(name)
            out[name] = p.to_nni(x) if p is not None else x
        return out

    def _write_reports(self) -> None:
        from optuna.trial import TrialState

        with self._report_lock:
            if self.study is None:
                return
            trials = self._snapshot()
            names = [o.key for o in self.objectives]
            directions = [o.direction for o in self.objectives]
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            records = [{"number": t.number, "values": list(t.values), "params": self._nni_params(t),
                        "test_images": (t.user_attrs.get("nni_result") or {}).get("test_images")}
                       for t in complete]
            title = f"Optuna study {self.study_name!r} ({self.sampler_name})"
            plot = self.write_plot and not self._plot_failed
            noise = noise_verdict(records, names)
            try:
                write_pareto(records, names, directions, self.work_dir, title=title, plot=plot, note=noise)
            except ImportError as exc:
                self._plot_failed = True
                _logger.warning("Cannot plot the Pareto front (%s); writing the tables only.", exc)
                write_pareto(records, names, directions, self.work_dir, title=title, plot=False, note=noise)
            self._record_noise(noise, len(records))
            front = set()
            if records:
                front = {records[i]["number"] for i in pareto_front([r["values"] for r in records], directions)}
            self._write_trials_csv(trials, names, front)
            if self.write_tensorboard and not self._tb_failed:
                self._write_hparams(complete, names)

    def _record_noise(self, verdict: str | None, trials: int) -> None:
        """Record the noise verdict as the warning ``tradeoff.noise`` when it changed (withdraw it when
        it no longer holds); on the first report of this process, against what an earlier one recorded."""
        if verdict == self._noise:
            return
        if verdict is not None:
            record_warning(self.work_dir, "tradeoff.noise", verdict, key="front", trials=trials)
        elif self._noise is not _UNCHECKED or any(w.get("source") == "tradeoff.noise"
                                                  for w in read_warnings(self.work_dir)):
            resolve_warning(self.work_dir, "tradeoff.noise", "front")
        self._noise = verdict

    def _write_trials_csv(self, trials: Sequence[Any], names: list[str], front: set[int]) -> None:
        params = [self._nni_params(t) for t in trials]
        pnames = list(dict.fromkeys(k for p in params for k in p))
        rnames = list(dict.fromkeys(
            k for t in trials for k, v in (t.user_attrs.get("nni_result") or {}).items()
            if k not in names and _number(v) is not None))
        tmp = self.work_dir / ".trials.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["trial", "state", "pareto", "nni_parameter_id", "nni_trial_job_id"] + names + pnames
                       + [f"result.{r}" for r in rnames] + ["fail_reason"])
            for t, p in zip(trials, params):
                ua = t.user_attrs
                values = list(t.values) if t.values is not None else [""] * len(names)
                result = ua.get("nni_result") or {}
                w.writerow([t.number, t.state.name, int(t.number in front), ua.get("nni_parameter_id", ""),
                            ua.get("nni_trial_job_id", "")] + values + [p.get(k, "") for k in pnames]
                           + [result.get(r, "") for r in rnames] + [ua.get("nni_fail_reason", "")])
        os.replace(tmp, self.work_dir / "trials.csv")

    def _write_hparams(self, complete: Sequence[Any], names: list[str]) -> None:
        """One TensorBoard run per completed trial (``tensorboard/trial_<number>``), for the HPARAMS view."""
        todo = [t for t in complete if t.number not in self._tb_written]
        if not todo:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as exc:
            self._tb_failed = True
            _logger.warning("TensorBoard hparams are not written (%s).", exc)
            return
        root = self.work_dir / "tensorboard"
        for t in todo:
            run = root / f"trial_{t.number:05d}"
            self._tb_written.add(t.number)
            if run.exists() and any(run.glob("events.out.tfevents.*")):
                continue  # written by an earlier tuner process
            hp: dict[str, Any] = {}
            domains: dict[str, list] = {}
            for name, v in self._nni_params(t).items():
                v = v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                hp[name] = v
                p = self.search_space.get(name)
                if (p is not None and p.nni_type == "choice" and type(v) in (int, float, str)
                        and all(type(c) is type(v) for c in p.values)):
                    domains[name] = list(p.values)
            metrics = {f"objective/{k}": float(v) for k, v in zip(names, t.values)}
            exp, ssi, sei = hparams(hp, metrics, domains)
            with SummaryWriter(log_dir=str(run)) as w:
                for summary in (exp, ssi, sei):
                    w.file_writer.add_summary(summary)
                for k, v in metrics.items():
                    w.add_scalar(k, v, t.number)
