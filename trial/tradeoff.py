"""A trade-off trial: one whole (small) search plus the final evaluation of what it found.

``python -m nni_robust.trial.tradeoff --search SEARCH.yml [--map NAME=PATH] [--set PATH=VALUE]``

Every method here weighs clean accuracy against robustness (the multi-shot
reward's lambda, RNAS's lambda, ...). A trade-off experiment tunes such a
weight with the Optuna tuner (:class:`nni_robust.strategies.tradeoff.optuna_tuner.OptunaTuner`)
under nnictl; each of its trials is this command, which

1. reads the search experiment ``SEARCH.yml`` (an nnictl YAML whose tuner is
   the bridge :class:`~nni_robust.strategies.bridge.StrategyTuner`), takes its
   tuner ``classArgs`` (strategy, space, strategy_args, settings), applies
   ``--set`` overrides and then the trial's parameters from Optuna;
2. runs that search *inside this trial* (:func:`~nni_robust.strategies.bridge.run_in_process`
   drives the bridge tuner as NNI would, each of its trials a call of
   :func:`nni_robust.trial.run.run_task`), up to and including the search's
   ``final`` stage (final training and evaluation of the exported architecture);
3. reports the final trial's metrics (``acc_clean``, ``acc_pgd20``, ...,
   ``mflops``) plus the search's best estimated reward, so the Optuna study can
   maximize e.g. clean and PGD-20 accuracy and show their Pareto front.

Parameters are mapped onto the search's ``classArgs`` by dotted path: a
parameter named ``settings.evaluation.lam`` sets that key, and ``--map
lam=settings.evaluation.lam`` lets the search space use the short name
``lam``. A parameter that is neither is a :class:`~nni_robust.errors.ConfigError`
naming it and the valid names, raised before anything runs.

Files (in the trial's output folder, ``$NNI_OUTPUT_DIR``): ``search/`` (the
search's work dir: its records, reports, exported architecture, and each inner
task in ``search/trials/<id>`` with its own TensorBoard logs),
``tradeoff_report.json``, and ``tensorboard/`` (the search's reward per inner
evaluation and the final accuracies, for the web UI's TensorBoard button).

Supernets do not depend on the tuned weights, so by default the trials of one
experiment share them: a strategy that takes ``supernet_dir`` gets
``<experiment folder>/shared/supernets`` (``--supernet-dir`` overrides it; a
``supernet_dir`` in the search's ``strategy_args`` wins). The first trial that
needs a supernet trains it under a file lock; the others wait and reuse it.
A re-run in the same output folder resumes the search from its records.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import inspect
import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.tb import output_dir, summary_writer, tensorboard_dir

from .yaml_files import BRIDGE, load_yaml

__all__ = ["load_search", "parse_assignments", "apply_parameters", "run_tradeoff", "check_command", "main"]

logger = logging.getLogger("nni_robust.trial.tradeoff")

_CLASS_ARGS = ("strategy", "space", "strategy_args", "settings")
"""Top-level keys of the search's classArgs that parameters and ``--set`` may change."""
_OWN_ARGS = ("work_dir", "resume", "finish_experiment", "lazy_init")
"""ClassArgs of the search experiment that a trade-off trial sets itself."""


def load_search(path: str | os.PathLike) -> dict[str, Any]:
    """The bridge tuner's ``classArgs`` of the search experiment YAML ``path``.

    Raises:
        ConfigError: the file is missing, or its tuner is not the bridge tuner.
    """
    data = load_yaml(path)
    tuner = data.get("tuner")
    if not isinstance(tuner, Mapping) or tuner.get("className") != BRIDGE:
        found = tuner.get("className") if isinstance(tuner, Mapping) else tuner
        raise ConfigError(f"--search {str(path)!r} must be a search experiment whose tuner.className is {BRIDGE!r} "
                          f"(e.g. experiments/msrobnet-quick.yml), but its tuner is {found!r}.")
    args = copy.deepcopy(dict(tuner.get("classArgs") or {}))
    for key in ("strategy", "space"):
        if key not in args:
            raise ConfigError(f"{path}: tuner.classArgs lacks {key!r}.")
    return args


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}``; a malformed item is a ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{what} takes NAME=VALUE, but got {item!r}.")
        out[name.strip()] = value.strip()
    return out


def _set_path(args: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    if keys[0] not in _CLASS_ARGS or len(keys) < 2 and keys[0] in ("strategy_args", "settings"):
        raise ConfigError(f"{path!r} is not a settable path of the search: it must start with one of "
                          f"{list(_CLASS_ARGS)} (e.g. 'settings.evaluation.lam', 'strategy_args.num_random').")
    node = args
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{path!r}: {'.'.join(keys[:i + 1])} is {child!r}, not a mapping.")
        node = child
    node[keys[-1]] = value


def apply_parameters(class_args: Mapping[str, Any], parameters: Mapping[str, Any],
                     mapping: Mapping[str, str] | None = None,
                     sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``class_args`` with ``sets`` and then the trial's ``parameters`` applied.

    Args:
        class_args: the search's tuner classArgs.
        parameters: the trial's parameters (NNI/Optuna); a name containing a dot
            is a path into ``class_args``, any other must be a key of ``mapping``.
        mapping: short parameter name -> dotted path.
        sets: dotted path -> value, applied first.

    Raises:
        ConfigError: a parameter that is not a path and not mapped, or a bad path.
    """
    mapping = dict(mapping or {})
    out = copy.deepcopy(dict(class_args))
    for path, value in (sets or {}).items():
        _set_path(out, path, value)
    for name, value in parameters.items():
        path = mapping.get(name, name if "." in name else None)
        if path is None:
            raise ConfigError(f"Trial parameter {name!r} is not mapped onto the search: name it by its dotted path "
                              f"(e.g. 'settings.evaluation.lam') or add --map {name}=PATH; mapped names: "
                              f"{sorted(mapping) or 'none'}.")
        _set_path(out, path, value)
    return out


def _strategy_takes(strategy: str, arg: str) -> bool:
    from nni_robust.strategies.bridge import resolve, strategy_names

    try:
        cls = resolve(strategy, strategy_names(), "strategy")
        return arg in inspect.signature(cls).parameters
    except (ConfigError, TypeError, ValueError):
        return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reward_of(result: Mapping[str, Any]) -> float | None:
    value = result.get("default")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_tradeoff(class_args: Mapping[str, Any], out_dir: str | os.PathLike, *,
                 reporter: Callable[[dict], None] | None = None, concurrency: int = 1,
                 shared_supernet_dir: str | os.PathLike | None = None,
                 parameters: Mapping[str, Any] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the search of ``class_args`` to its end (final stage included) inside this process.

    Args:
        class_args: the bridge tuner's classArgs, parameters already applied.
        out_dir: this trial's folder; the search's work dir is ``out_dir/search``.
        reporter: gets ``{"default": best search reward so far, ...}`` after each evaluation.
        concurrency: inner trials run at once (threads of this process).
        shared_supernet_dir: supernet folder shared between trade-off trials
            (used when the strategy takes ``supernet_dir`` and none is set).
        parameters: the tuned parameters (recorded in the report and TensorBoard's hparams).

    Returns:
        (the final result for NNI, the full report).

    Raises:
        ConfigError: bad classArgs (checked before anything runs), or a search
            whose strategy has no final stage.
        NniRobustError: the search failed or ended without a final evaluation.
    """
    from nni_robust.strategies.bridge import StrategyTuner, run_in_process

    from .run import run_task

    out = Path(out_dir)
    work_dir = out / "search"
    args = copy.deepcopy(dict(class_args))
    for key in _OWN_ARGS:  # the search runs in this trial's folder, to its end, in this process
        if key in args:
            logger.info("Ignoring the search's classArg %s=%r in a trade-off trial.", key, args.pop(key))
    strategy_args = dict(args.get("strategy_args") or {})
    if strategy_args.get("final") is False:
        raise ConfigError("The search's strategy_args.final is false, but a trade-off trial reports the final "
                          "evaluation of what the search found: set it to true.")
    if (shared_supernet_dir is not None and not strategy_args.get("supernet_dir")
            and _strategy_takes(str(args["strategy"]), "supernet_dir")):
        strategy_args["supernet_dir"] = str(Path(shared_supernet_dir).resolve())
    args["strategy_args"] = strategy_args
    tuner = StrategyTuner(**args, work_dir=str(work_dir), resume=True, finish_experiment=False, lazy_init=False)

    writer = summary_writer(tensorboard_dir(out / "tensorboard"))
    lock = threading.Lock()
    progress = {"evaluated": 0, "best": -math.inf}

    def evaluate(params: dict) -> dict[str, float]:
        task = params.get("task")
        if task == "supernet" and params.get("args", {}).get("supernet_dir"):
            width = params["args"]["width"]
            with _file_lock(Path(params["args"]["supernet_dir"]) / f".c{width}.lock"):
                final, _ = run_task(params, nested=True)
        else:
            final, _ = run_task(params, nested=True)
        if task == "evaluate":
            reward = _reward_of(final)
            with lock:
                progress["evaluated"] += 1
                if reward is not None:
                    progress["best"] = max(progress["best"], reward)
                step, best = progress["evaluated"], progress["best"]
                if reward is not None:
                    writer.add_scalar("search/reward", reward, step)
                    writer.add_scalar("search/best_reward", best, step)
            if reporter is not None and math.isfinite(best):
                reporter({"default": best, "reward": reward if reward is not None else float("nan"),
                          "evaluated": float(step)})
        return final

    try:
        finished = run_in_process(tuner, evaluate, concurrency=concurrency, max_trials=10 ** 9,
                                  timeout=float("inf"))
    except Exception as exc:
        raise NniRobustError(f"The search of this trade-off trial failed: {exc}. Its finished work is kept in "
                             f"{work_dir} (a re-run in the same folder resumes it).") from exc
    finals = [t for t in finished if (t["parameters"] or {}).get("task") == "final"]
    done = [t for t in finals if t["status"] == "SUCCEEDED" and isinstance(t["value"], Mapping)]
    if not done:
        writer.close()
        raise NniRobustError(
            f"The search ended without a successful final evaluation ({len(finals)} final trial(s) ran; "
            f"{len(finished)} trials in all). See the trial logs in {work_dir / 'trials'}; strategy "
            f"{args['strategy']!r} must have a final stage (strategy_args.final: true).")
    final = {k: float(v) for k, v in done[-1]["value"].items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if math.isfinite(progress["best"]):
        final["search_best_reward"] = float(progress["best"])
    final["search_evaluated"] = float(progress["evaluated"])
    for key, value in final.items():
        writer.add_scalar(f"final/{key}", value, 0)
    params = {k: v for k, v in (parameters or {}).items() if isinstance(v, (int, float, str, bool))}
    if params:
        writer.add_hparams(params, {f"hparam/{k}": v for k, v in final.items()}, run_name="hparams")
    writer.close()
    best_arch = work_dir / "best_architecture.json"
    report = {"parameters": dict(parameters or {}), "class_args": args, "final": final,
              "trials": [{"task": (t["parameters"] or {}).get("task"), "status": t["status"],
                          "value": t["value"]} for t in finished],
              "best_architecture": json.loads(best_arch.read_text()) if best_arch.exists() else None}
    (out / "tradeoff_report.json").write_text(json.dumps(report, indent=2, default=str))
    return final, report


def _experiment_folder(trial_dir: Path) -> Path:
    """The NNI experiment's folder, from a trial's output folder.

    NNI 3.0 puts trials in ``<experiment folder>/environments/<env>/trials/<id>``
    (older versions: ``<experiment folder>/trials/<id>``); the folder is the
    ancestor named ``$NNI_EXP_ID``, else the trials folder's parent.
    """
    trial_dir = trial_dir.resolve()
    exp_id = os.environ.get("NNI_EXP_ID")
    for parent in trial_dir.parents:
        if exp_id and parent.name == exp_id:
            return parent
    return trial_dir.parent.parent


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set value {text!r} is not valid YAML: {exc}") from exc


def check_command(command: str, code_dir: str | os.PathLike,
                  search_space: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a trade-off ``trialCommand`` before an experiment starts.

    Loads the search YAML (relative to ``code_dir``, the trials' working
    folder), applies ``--set`` and, for every parameter of ``search_space``, a
    value of its range, and builds the bridge tuner's validator on the result.

    Returns:
        the search's classArgs with the ``--set`` overrides applied.

    Raises:
        ConfigError: a bad flag, search file, path, parameter name or setting.
    """
    import shlex
    import tempfile

    words = shlex.split(command)
    try:
        start = words.index("nni_robust.trial.tradeoff") + 1
    except ValueError:
        raise ConfigError(f"trialCommand {command!r} does not run nni_robust.trial.tradeoff.") from None
    try:
        ns = _parser().parse_args(words[start:])
    except SystemExit:
        raise ConfigError(f"trialCommand {command!r}: bad arguments for nni_robust.trial.tradeoff "
                          f"(see python -m nni_robust.trial.tradeoff --help).") from None
    search = Path(ns.search)
    class_args = load_search(search if search.is_absolute() else Path(code_dir) / search)
    mapping = parse_assignments(ns.map, "--map")
    sets = {k: _parse_value(v) for k, v in parse_assignments(ns.set, "--set").items()}
    sample = {name: _some_value(name, spec) for name, spec in (search_space or {}).items()}
    args = apply_parameters(class_args, sample, mapping, sets)
    from nni_robust.strategies.bridge import StrategyTuner

    for key in _OWN_ARGS:
        args.pop(key, None)
    with tempfile.TemporaryDirectory(prefix="nni_robust_check_") as tmp:
        StrategyTuner(**args, work_dir=tmp, resume=False, lazy_init=False, finish_experiment=False)
    return apply_parameters(class_args, {}, mapping, sets)


def _some_value(name: str, spec: Any) -> Any:
    """A value inside the range of an NNI search-space entry (for checking a command)."""
    if not isinstance(spec, Mapping) or "_value" not in spec:
        raise ConfigError(f"search space entry {name!r} must be {{_type, _value}}, but got {spec!r}.")
    values = spec["_value"]
    if spec.get("_type", "choice") in ("choice", "randint", "normal", "qnormal", "lognormal", "qlognormal"):
        return values[0]  # a choice, the lower bound, the mean
    return (values[0] + values[1]) / 2  # the middle of a range


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nni_robust.trial.tradeoff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", required=True, help="the search experiment YAML (bridge tuner)")
    parser.add_argument("--map", action="append", default=[], metavar="NAME=PATH",
                        help="map a short parameter name onto a dotted path of the search's classArgs")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a dotted path of the search's classArgs (VALUE is YAML)")
    parser.add_argument("--concurrency", type=int, default=1, help="inner trials at once (default 1)")
    parser.add_argument("--supernet-dir", help="supernets shared by the trials (default: "
                        "<experiment folder>/shared/supernets under NNI)")
    parser.add_argument("--params", help="JSON file of the tuned parameters (default: ask NNI)")
    parser.add_argument("--out", help="output folder outside NNI (default ./runs/<timestamp>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of a trade-off trial (or, with ``--params FILE``, of a manual run)."""
    ns = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if ns.concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, but got {ns.concurrency}.")
    class_args = load_search(ns.search)
    mapping = parse_assignments(ns.map, "--map")
    sets = {k: _parse_value(v) for k, v in parse_assignments(ns.set, "--set").items()}

    nni = None
    if ns.params:
        parameters = json.loads(Path(ns.params).read_text())
    else:
        import nni

        parameters = nni.get_next_parameter()
        if parameters is None:
            raise SystemExit("No trial parameters: run this under NNI, or pass --params FILE.")
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"The trial parameters must be a mapping of names to values, but got {parameters!r}.")
    args = apply_parameters(class_args, parameters, mapping, sets)
    out = output_dir(ns.out)
    supernets = ns.supernet_dir
    if supernets is None and os.environ.get("NNI_OUTPUT_DIR"):
        supernets = _experiment_folder(Path(os.environ["NNI_OUTPUT_DIR"])) / "shared" / "supernets"
    logger.info("Trade-off trial: parameters %s; search %s (%s)", parameters, ns.search, args.get("strategy"))
    final, _ = run_tradeoff(args, out, reporter=nni.report_intermediate_result if nni else None,
                            concurrency=ns.concurrency, shared_supernet_dir=supernets, parameters=parameters)
    if nni is not None:
        nni.report_final_result(final)
    else:
        print(json.dumps(final, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
