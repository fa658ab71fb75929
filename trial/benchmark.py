"""``nni-robust benchmark tabular``: the search strategies side by side on a tabular robustness benchmark.

Every strategy runs unchanged, in this process, against a
:class:`TabularEngine`: an NNI execution engine that answers each submitted
architecture from the table (:class:`nni_robust.strategies.tabular.TabularEvaluator`,
the same answer the shared ``tabular`` trial task gives under nnictl) and
stops accepting models after ``budget`` queries. One query is one submitted
architecture (a strategy that submits a cell twice, or two isomorphic
cells, pays twice).

For each strategy of the config and each seed, one run at the largest budget
is recorded query by query; the best true objective after ``b`` queries is the
best of its first ``b`` answers. That is exactly a run with budget ``b``: the
strategies decide from the answers so far and never read the budget (the
engine only refuses models beyond it). Reported per budget: the mean best
(and its spread over seeds), the regret to the table's optimum, the fraction
of runs that reached the top ``top_fraction`` (1%) of the measured
architectures, and each strategy's regret as a fraction of the baseline's
(random search; the issue's target is at most one half at 200 queries). As
a reference free of sampling noise, the report also gives the exact expected
best of uniform random search over the table's cells at each budget
(:func:`random_search_expectation`).

Config (YAML; unknown keys are errors)::

    table: ${NNI_ROBUST_NB201:-../../shared/data/nb201-robustness}   # relative to the config file
    dataset: cifar10
    objective: pgd@1.0
    budgets: [50, 100, 200, 500]
    seeds: 20                 # seeds seed_offset .. seed_offset + seeds - 1
    seed_offset: 0
    top_fraction: 0.01
    baseline: random          # the label regrets are compared with
    target_budget: 200
    space: {name: nb201}
    strategies:               # label -> {strategy, args, optional, note}
      random: {strategy: random, args: {dedup: true}}
      evolution: {strategy: evolution, args: {population_size: 20, ...}}
      abandit: {strategy: abandit, args: {...}, optional: true}   # skipped (and said so) when not registered

Outputs in ``--out``: ``summary.md``, ``summary.csv``, ``curves.png`` (best
objective vs queries, mean and inter-quartile band; regret on a log scale) and
``results.json`` (every run's query values, settings, times).
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nni_robust.config import check_keys
from nni_robust.errors import ConfigError, NniRobustError

from .yaml_files import load_yaml

__all__ = ["StrategyEntry", "BenchmarkConfig", "load_config", "TabularEngine", "run_tabular_search",
           "run_benchmark", "random_search_expectation", "summarize", "write_outputs", "main_tabular"]

logger = logging.getLogger(__name__)

_TASK = "tabular"


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class StrategyEntry:
    """One strategy of the benchmark.

    Attributes:
        label: The name in the tables and the plot.
        strategy: A registered strategy name (``random``, ``evolution``, ...) or dotted path.
        args: Its constructor arguments (``seed`` and ``work_dir`` are set per run).
        optional: Skip it (and say so) when the strategy is not registered.
        note: One line for the report (e.g. what was tuned and why).
    """

    label: str
    strategy: str
    args: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False
    note: str = ""


@dataclass(frozen=True)
class BenchmarkConfig:
    """The benchmark's settings (see the module docstring)."""

    table: Path
    strategies: tuple[StrategyEntry, ...]
    dataset: str = "cifar10"
    objective: str = "pgd@1.0"
    budgets: tuple[int, ...] = (50, 100, 200, 500)
    seeds: int = 20
    seed_offset: int = 0
    top_fraction: float = 0.01
    baseline: str | None = "random"
    target_budget: int | None = 200
    space: Mapping[str, Any] = field(default_factory=lambda: {"name": "nb201"})

    def __post_init__(self) -> None:
        budgets = tuple(self.budgets)
        if not budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in budgets):
            raise ConfigError(f"budgets must be positive integers, but got {list(budgets)!r}.")
        object.__setattr__(self, "budgets", tuple(sorted(set(budgets))))
        for name, value, low in (("seeds", self.seeds, 1), ("seed_offset", self.seed_offset, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
        if isinstance(self.top_fraction, bool) or not isinstance(self.top_fraction, (int, float)) \
                or not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must lie in (0, 1], but got {self.top_fraction!r}.")
        labels = [s.label for s in self.strategies]
        if not labels or len(set(labels)) != len(labels):
            raise ConfigError(f"strategies must name at least one strategy, each label once, but got {labels}.")
        if self.baseline is not None and self.baseline not in labels:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the strategies {labels}.")
        if self.target_budget is not None and self.target_budget not in self.budgets:
            raise ConfigError(f"target_budget {self.target_budget!r} is not one of the budgets {list(self.budgets)}.")

    @property
    def max_budget(self) -> int:
        return self.budgets[-1]

    def replace(self, **changes: Any) -> "BenchmarkConfig":
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)


_CONFIG_KEYS = ("table", "dataset", "objective", "budgets", "seeds", "seed_offset", "top_fraction", "baseline",
                "target_budget", "space", "strategies")
_ENTRY_KEYS = ("strategy", "args", "optional", "note")


def load_config(path: str | os.PathLike, *, table: str | os.PathLike | None = None) -> BenchmarkConfig:
    """Read a benchmark YAML (a relative ``table`` is relative to the file; ``table`` overrides it).

    Raises:
        ConfigError: an unknown key or a bad value (naming it).
    """
    from nni_robust.strategies.tabular import resolve_table_path

    path = Path(path)
    data = load_yaml(path)
    check_keys(data, _CONFIG_KEYS, str(path))
    raw = data.get("strategies")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{path}: 'strategies' must map labels to {{strategy, args}}, but got {raw!r}.")
    entries = []
    for label, spec in raw.items():
        if isinstance(spec, str):
            spec = {"strategy": spec}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{path}: strategies.{label} must be a mapping {{strategy, args}}, but got {spec!r}.")
        check_keys(spec, _ENTRY_KEYS, f"{path}: strategies.{label}")
        if not isinstance(spec.get("args") or {}, Mapping):
            raise ConfigError(f"{path}: strategies.{label}.args must be a mapping, but got {spec['args']!r}.")
        entries.append(StrategyEntry(label=str(label), strategy=str(spec.get("strategy", label)),
                                     args=dict(spec.get("args") or {}), optional=bool(spec.get("optional", False)),
                                     note=str(spec.get("note") or "")))
    kwargs = {k: v for k, v in data.items() if k not in ("table", "strategies")}
    for key in ("budgets",):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key]) if isinstance(kwargs[key], (list, tuple)) else kwargs[key]
    root = resolve_table_path(table if table is not None else data.get("table"),
                              base=Path.cwd() if table is not None else path.resolve().parent,
                              where="--table" if table is not None else f"{path}: table")
    return BenchmarkConfig(table=root, strategies=tuple(entries), **kwargs)


# --------------------------------------------------------------------------- the engine
_ENGINE: dict[str, type] = {}


def _engine_class() -> type:
    """Define :class:`TabularEngine` on first use (importing ``nni.nas`` is slow)."""
    if _ENGINE:
        return _ENGINE["TabularEngine"]
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
    from nni.nas.space import ModelStatus

    class TabularEngine(SequentialExecutionEngine):
        """An NNI execution engine that answers every model from a tabular benchmark, at once.

        The strategy's own thread submits a model and gets its metric and
        ``TrainingEnd`` event before ``submit_models`` returns (as NNI's
        :class:`~nni.nas.execution.SequentialExecutionEngine`, whose budget
        logic it keeps: ``budget_available()`` turns false after
        ``max_model_count`` models). Models may carry no trial task or the
        ``tabular`` one (a strategy that needs another task, e.g. supernet
        training, cannot run here).

        Args:
            evaluator: A :class:`~nni_robust.strategies.tabular.TabularEvaluator`.
            budget: Queries answered (NNI's ``maxTrialNumber``).
            work_dir: Exposed as ``engine.work_dir`` (strategies keep files there).

        Attributes:
            values: The objective of each answered query, in order.
            samples: The samples queried, in order.
        """

        def __init__(self, evaluator: Any, budget: int, *, work_dir: str | os.PathLike | None = None) -> None:
            super().__init__(max_model_count=budget)
            self.evaluator = evaluator
            self.work_dir = Path(work_dir) if work_dir is not None else None
            self.settings: dict[str, Any] = {}
            self.values: list[float] = []
            self.samples: list[dict] = []
            self.next_model_id = 0

        def _run_single_model(self, model: Any) -> None:
            task = getattr(model, "trial_task", None)
            if task is not None and task.task != _TASK:
                raise NniRobustError(f"TabularEngine answers architectures from a table; the strategy submitted "
                                     f"a {task.task!r} job ({task.args}). Use evaluation 'task' (or a strategy "
                                     f"without such jobs).")
            model.model_id = self.next_model_id
            self.next_model_id += 1
            model.status = ModelStatus.Training
            try:
                final, _ = self.evaluator.answer(dict(model.sample))
            except NniRobustError as exc:
                logger.warning("Query %d failed: %s", len(self.values), exc)
                self.values.append(float("nan"))
                self.samples.append(dict(model.sample or {}))
                self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Failed))
                return
            self.values.append(final["default"])
            self.samples.append(dict(model.sample))
            model.final_result = final
            self.dispatch_model_event(FinalMetricEvent(model, final["default"]))
            self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))

        def submit_models(self, *models: Any) -> None:
            for model in models:
                if not self.budget_available():
                    raise NniRobustError(f"TabularEngine: a model was submitted beyond the budget of "
                                         f"{self.max_model_count} queries (the strategy ignored "
                                         f"budget_available()).")
                super().submit_models(model)

    TabularEngine.__module__ = __name__
    _ENGINE["TabularEngine"] = TabularEngine
    return TabularEngine


def __getattr__(name: str) -> Any:  # PEP 562
    if name == "TabularEngine":
        return _engine_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _accepts(cls: type, name: str) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def run_tabular_search(strategy: str, args: Mapping[str, Any] | None, evaluator: Any, *, budget: int,
                       seed: int | None = None, space: Mapping[str, Any] | None = None,
                       work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run one strategy, unchanged and in this process, against a table, for ``budget`` queries.

    Args:
        strategy: A registered strategy name or dotted path.
        args: Its arguments (``seed`` is set from ``seed`` when it takes one).
        evaluator: A :class:`~nni_robust.strategies.tabular.TabularEvaluator`.
        budget: Queries (the strategy may stop earlier on its own).
        seed: The run's seed.
        space: The model space spec (default ``{"name": "nb201"}``).
        work_dir: The strategy's folder (default: a temporary one, removed afterwards).

    Returns:
        ``{"values": [objective of each query], "samples": [...], "seconds": ..., "strategy": repr}``.
    """
    from nni_robust.strategies.bridge import build_space, build_strategy, resolve, strategy_names

    args = dict(args or {})
    cls = resolve(strategy, strategy_names(), "strategy")
    if seed is not None and "seed" not in args and _accepts(cls, "seed"):
        args["seed"] = int(seed)
    own_dir = work_dir is None
    folder = Path(tempfile.mkdtemp(prefix="nni_robust_tabular_")) if own_dir else Path(work_dir)
    start = time.perf_counter()
    try:
        model_space = build_space(dict(space or {"name": "nb201"}))
        instance = build_strategy(strategy, args, context={"work_dir": str(folder), "settings": {}})
        engine = _engine_class()(evaluator, budget, work_dir=folder)
        instance(model_space, engine)
        return {"values": list(engine.values), "samples": list(engine.samples),
                "seconds": time.perf_counter() - start, "strategy": repr(instance)}
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- the benchmark
def _quiet() -> Callable[[], None]:
    """Silence the strategies' per-model logs (NNI's own handlers included) and the expected warnings
    of a budget-limited run ("stops in stage 'search'": the budget is what ends it); returns the undo.
    A failed query is not lost: it is recorded as NaN (and never counts as a best)."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)

    def undo() -> None:
        logging.disable(before)

    return undo


def available_entries(config: BenchmarkConfig) -> tuple[list[StrategyEntry], dict[str, str]]:
    """The entries whose strategy is registered, and ``{label: why skipped}`` for optional ones that are not.

    Raises:
        ConfigError: a non-optional entry names no registered strategy.
    """
    from nni_robust.strategies.bridge import resolve, strategy_names

    names = strategy_names()
    runnable, skipped = [], {}
    for entry in config.strategies:
        try:
            resolve(entry.strategy, names, "strategy")
        except ConfigError as exc:
            if not entry.optional:
                raise
            skipped[entry.label] = f"strategy {entry.strategy!r} is not registered ({exc})"
            continue
        runnable.append(entry)
    return runnable, skipped


def _one_run(job: tuple) -> dict[str, Any]:
    """One (strategy, seed) run of the benchmark (in this process or a worker)."""
    from nni_robust.strategies.tabular import TabularEvaluator, load_table

    label, strategy, args, seed, budget, space, table, dataset, objective = job
    evaluator = TabularEvaluator(load_table(table, dataset), objective)
    undo = _quiet()
    try:
        out = run_tabular_search(strategy, args, evaluator, budget=budget, seed=seed, space=space)
    finally:
        undo()
    return {"label": label, "seed": seed, "values": out["values"], "seconds": out["seconds"]}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_benchmark(config: BenchmarkConfig, *, labels: Sequence[str] | None = None,
                  progress: Callable[[str], None] | None = None, workers: int = 1) -> dict[str, Any]:
    """Run every strategy of ``config`` for every seed at the largest budget.

    Args:
        config: The benchmark's settings.
        labels: Run only these strategy labels (default: all).
        progress: Called with one line after each run.
        workers: Processes running the (strategy, seed) runs (1: this process). Results do
            not depend on it: every run is seeded and alone in its process.

    Returns:
        ``{"config", "table", "runs": {label: [{"seed", "values", "seconds"}, ...]}, "skipped", "settings"}``.
    """
    from nni_robust.strategies.tabular import TabularEvaluator, load_table

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, but got {workers!r}.")
    entries, skipped = available_entries(config)
    if labels is not None:
        unknown = sorted(set(labels) - {e.label for e in config.strategies})
        if unknown:
            raise ConfigError(f"Unknown strategy labels {unknown}; the config has "
                              f"{[e.label for e in config.strategies]}.")
        entries = [e for e in entries if e.label in labels]
    evaluator = TabularEvaluator(load_table(config.table, config.dataset), config.objective)
    optimum, uid, string = evaluator.optimum()
    threshold = evaluator.top_threshold(config.top_fraction)
    uniform = {b: random_search_expectation(evaluator.values, b) for b in config.budgets
               if b <= len(evaluator.values)}
    jobs = [(e.label, e.strategy, dict(e.args), config.seed_offset + k, config.max_budget, dict(config.space),
             str(config.table), config.dataset, config.objective) for e in entries for k in range(config.seeds)]
    done: dict[tuple[str, int], dict[str, Any]] = {}

    def record(out: dict[str, Any]) -> None:
        done[(out["label"], out["seed"])] = out
        if progress is not None:
            best = max(out["values"], default=float("nan"))
            progress(f"[{len(done)}/{len(jobs)}] {out['label']} seed {out['seed']}: {len(out['values'])} queries, "
                     f"best {best:.4f} ({out['seconds']:.1f} s)")

    if workers == 1:
        for job in jobs:
            record(_one_run(job))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # the parent holds torch's and NNI's threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            for future in as_completed([pool.submit(_one_run, job) for job in jobs]):
                record(future.result())
    runs = {e.label: [{k: v for k, v in done[(e.label, config.seed_offset + k)].items() if k != "label"}
                      for k in range(config.seeds)] for e in entries}
    return {"table": {"root": str(config.table), "dataset": config.dataset, "objective": str(evaluator.objective),
                      "optimum": optimum, "optimum_uid": uid, "optimum_arch": string,
                      "top_fraction": config.top_fraction, "top_threshold": threshold,
                      "cells": len(evaluator.table), "measured": evaluator.table.num_classes,
                      "uniform_random_expected_best": {str(b): v for b, v in uniform.items()}},
            "config": {"budgets": list(config.budgets), "seeds": config.seeds, "seed_offset": config.seed_offset,
                       "baseline": config.baseline, "target_budget": config.target_budget,
                       "space": dict(config.space)},
            "settings": {e.label: {"strategy": e.strategy, "args": dict(e.args), "note": e.note} for e in entries},
            "skipped": skipped, "runs": runs}


def random_search_expectation(values: Sequence[float], budget: int) -> float:
    """The exact expected best of uniform random search without repeats: ``budget`` distinct
    entries of ``values`` (e.g. the objective of every cell string) drawn uniformly.

    With ``v_(1) <= ... <= v_(N)`` sorted, ``P(best <= v_(i)) = C(i, b) / C(N, b)``, so
    ``E[best] = sum_i v_(i) (C(i, b) - C(i - 1, b)) / C(N, b)``.

    Raises:
        ConfigError: ``budget`` not in ``[1, N]``.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= n:
        raise ConfigError(f"budget must be an integer in [1, {n}], but got {budget!r}.")
    from scipy.special import gammaln

    i = np.arange(n + 1, dtype=np.float64)
    log_cdf = np.full(n + 1, -np.inf)
    ok = i >= budget  # log C(i, b) - log C(N, b)
    log_cdf[ok] = gammaln(i[ok] + 1) - gammaln(i[ok] - budget + 1) - gammaln(n + 1) + gammaln(n - budget + 1)
    return float(np.dot(v, np.diff(np.exp(log_cdf))))


def best_so_far(values: Sequence[float], budget: int) -> np.ndarray:
    """Best objective after 1..budget queries (a run that stopped early keeps its last best)."""
    arr = np.asarray(values, dtype=np.float64)[:budget]
    arr = np.where(np.isfinite(arr), arr, -np.inf)
    if arr.size == 0:
        return np.full(budget, np.nan)
    curve = np.maximum.accumulate(arr)
    if curve.size < budget:
        curve = np.concatenate([curve, np.full(budget - curve.size, curve[-1])])
    return curve


def summarize(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (strategy, budget): mean/std/quartiles of the best objective, mean regret
    (and its standard error), fraction reaching the top ``top_fraction`` and the optimum, queries
    used, and the regret relative to the baseline's."""
    table = result["table"]
    optimum, threshold = table["optimum"], table["top_threshold"]
    budgets = result["config"]["budgets"]
    rows = []
    for label, runs in result["runs"].items():
        curves = np.stack([best_so_far(r["values"], budgets[-1]) for r in runs])
        used = np.array([min(len(r["values"]), budgets[-1]) for r in runs])
        for b in budgets:
            best = curves[:, b - 1]
            regret = optimum - best
            rows.append({"strategy": label, "budget": b, "runs": len(runs), "mean_best": float(best.mean()),
                         "std_best": float(best.std(ddof=1)) if len(best) > 1 else 0.0,
                         "q25_best": float(np.quantile(best, 0.25)), "median_best": float(np.median(best)),
                         "q75_best": float(np.quantile(best, 0.75)), "min_best": float(best.min()),
                         "mean_regret": float(regret.mean()),
                         "se_regret": float(regret.std(ddof=1) / math.sqrt(len(regret))) if len(regret) > 1 else 0.0,
                         "top_fraction_reached": float(np.mean(best >= threshold - 1e-12)),
                         "optimum_reached": float(np.mean(best >= optimum - 1e-12)),
                         "mean_queries": float(np.minimum(used, b).mean()),
                         "seconds_per_run": float(np.mean([r["seconds"] for r in runs]))})
    baseline = result["config"].get("baseline")
    base = {r["budget"]: r["mean_regret"] for r in rows if r["strategy"] == baseline}
    for r in rows:
        ref = base.get(r["budget"])
        r["regret_vs_baseline"] = (r["mean_regret"] / ref) if ref else None
    return rows


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The report: the table's facts, the summary table, the target check and the settings."""
    t, cfg = result["table"], result["config"]
    baseline, target = cfg.get("baseline"), cfg.get("target_budget")
    lines = [f"# Tabular benchmark: {t['objective']} on {t['dataset']} ({t['cells']} cells, {t['measured']} "
             f"measured)", "",
             f"Table: `{t['root']}`. Optimum {t['optimum']:.4f} (uid {t['optimum_uid']}, `{t['optimum_arch']}`); "
             f"top {t['top_fraction']:.0%} of the measured architectures: >= {t['top_threshold']:.4f}. "
             f"{cfg['seeds']} seeds per strategy (seeds {cfg['seed_offset']}..{cfg['seed_offset'] + cfg['seeds'] - 1});"
             f" one query = one architecture answered from the table.", ""]
    uniform = t.get("uniform_random_expected_best") or {}
    if uniform:
        lines += ["Uniform random search over the cells without repeats, exact expected best: " + ", ".join(
            f"{b} queries {v:.4f} (regret {t['optimum'] - v:.4f})" for b, v in uniform.items()) + ".", ""]
    lines += ["| strategy | queries | mean best | std | median | min | mean regret (± s.e.) | regret / "
              f"{baseline or 'baseline'} | top {t['top_fraction']:.0%} reached | optimum reached | s / run |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['budget']} | {r['mean_best']:.4f} | {r['std_best']:.4f} | "
                     f"{r['median_best']:.4f} | {r['min_best']:.4f} | {r['mean_regret']:.4f} ± "
                     f"{r['se_regret']:.4f} | {_fmt(r['regret_vs_baseline'], 2)} | "
                     f"{r['top_fraction_reached']:.0%} | {r['optimum_reached']:.0%} | {r['seconds_per_run']:.2f} |")
    if target is not None and baseline is not None:
        at = [r for r in rows if r["budget"] == target]
        base = next((r for r in at if r["strategy"] == baseline), None)
        if base is not None:
            goal = t["optimum"] - base["mean_regret"] / 2
            lines += ["", f"Target at {target} queries: at most half of {baseline}'s mean regret "
                          f"({base['mean_regret']:.4f}), i.e. a mean best >= {goal:.4f}.", ""]
            for r in at:
                if r["strategy"] == baseline:
                    continue
                ok = r["mean_regret"] <= base["mean_regret"] / 2
                exact = uniform.get(str(target))
                versus = "" if exact is None or t["optimum"] - exact <= 0 else \
                    f" ({r['mean_regret'] / (t['optimum'] - exact):.2f} x the exact uniform-random regret)"
                lines.append(f"- {r['strategy']}: mean best {r['mean_best']:.4f}, regret "
                             f"{r['mean_regret']:.4f} = {_fmt(r['regret_vs_baseline'], 2)} x {baseline}'s{versus}: "
                             f"{'met' if ok else 'NOT met'}")
    lines += ["", "## Settings", ""]
    for label, s in result["settings"].items():
        note = f" -- {s['note']}" if s.get("note") else ""
        lines.append(f"- **{label}**: `{s['strategy']}` with `{json.dumps(s['args'], sort_keys=True)}`{note}")
    for label, why in (result.get("skipped") or {}).items():
        lines.append(f"- **{label}**: skipped: {why}")
    return "\n".join(lines) + "\n"


_REGRET_FLOOR = 1e-3


def plot(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``curves.png``: best objective vs queries (mean, inter-quartile band) and mean regret (log)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = result["table"]
    budgets = result["config"]["budgets"]
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2)
    x = np.arange(1, budgets[-1] + 1)
    for label, runs in result["runs"].items():
        curves = np.stack([best_so_far(r["values"], budgets[-1]) for r in runs])
        mean = curves.mean(axis=0)
        line, = ax.plot(x, mean, label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(x, np.quantile(curves, 0.25, axis=0), np.quantile(curves, 0.75, axis=0),
                        color=line.get_color(), alpha=0.15, linewidth=0)
        ax2.plot(x, np.maximum(t["optimum"] - mean, _REGRET_FLOOR), color=line.get_color(), label=label)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("queries (architectures answered from the table)")
        for b in budgets:
            a.axvline(b, color="0.85", linewidth=0.8, zorder=0)
        a.grid(True, which="major", alpha=0.3)
    uniform = {int(b): v for b, v in (t.get("uniform_random_expected_best") or {}).items()}
    if uniform:
        bs = sorted(uniform)
        ax.plot(bs, [uniform[b] for b in bs], "kx", markersize=7, label="uniform random (exact mean)")
        ax2.plot(bs, [max(t["optimum"] - uniform[b], _REGRET_FLOOR) for b in bs], "kx", markersize=7,
                 label="uniform random (exact)")
    ax.axhline(t["optimum"], color="k", linestyle="--", linewidth=1, label=f"optimum {t['optimum']:.3f}")
    ax.axhline(t["top_threshold"], color="0.4", linestyle=":", linewidth=1,
               label=f"top {t['top_fraction']:.0%} ({t['top_threshold']:.3f})")
    low = min(t["top_threshold"] - 0.08, min(np.mean([best_so_far(r["values"], budgets[-1])[budgets[0] - 1]
                                                     for r in runs]) for runs in result["runs"].values()) - 0.02)
    ax.set_ylim(low, t["optimum"] + 0.01)
    ax.set_ylabel(f"best {t['objective']} found (mean; band: quartiles)")
    ax.set_title(f"Best true objective vs queries ({t['dataset']}, {t['objective']})")
    ax2.set_yscale("log")
    ax2.set_ylabel("mean regret to the optimum")
    ax2.set_title(f"Mean regret (log scale; below {_REGRET_FLOOR:g}, e.g. 0, drawn at {_REGRET_FLOOR:g})")
    # one legend for both panels (same colours), below them: it covers no curve
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_outputs(result: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.json``, ``summary.csv``, ``summary.md`` and ``curves.png`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(result)
    paths = {"json": out / "results.json", "csv": out / "summary.csv", "md": out / "summary.md",
             "png": out / "curves.png"}
    paths["json"].write_text(json.dumps(dict(result, summary=rows), indent=1, sort_keys=True))
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["md"].write_text(markdown(result, rows))
    plot(result, paths["png"])
    return paths


def main_tabular(config_path: str | os.PathLike, *, table: str | None = None, seeds: int | None = None,
                 budgets: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                 out: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
                 workers: int = 1, seed_offset: int | None = None) -> dict[str, Any]:
    """What ``nni-robust benchmark tabular`` does: load, run, write; returns the result with its paths."""
    config = load_config(config_path, table=table)
    changes: dict[str, Any] = {}
    if seeds is not None:
        changes["seeds"] = seeds
    if seed_offset is not None:
        changes["seed_offset"] = seed_offset
    if budgets is not None:
        changes["budgets"] = tuple(budgets)
        if config.target_budget not in budgets:
            changes["target_budget"] = None
    if changes:
        config = config.replace(**changes)
    start = time.perf_counter()
    result = run_benchmark(config, labels=labels, progress=progress, workers=workers)
    result["seconds"] = time.perf_counter() - start
    folder = Path(out) if out is not None else Path("benchmark-tabular")
    paths = write_outputs(result, folder)
    result["paths"] = {k: str(v) for k, v in paths.items()}
    return result
