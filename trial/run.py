"""The command NNI runs per trial: ``python -m nni_robust.trial.run``.

The bridge tuner (:mod:`nni_robust.strategies.bridge`) sends each trial a JSON
parameter dict ``{"task", "sample", "args", "settings", "work_dir", "model_id"}``.
This entry point validates the settings, runs the task of
:mod:`nni_robust.trial.tasks`, reports per-epoch intermediate results and one
final result (a dict of floats with ``default``) to NNI, and writes
TensorBoard logs to ``$NNI_OUTPUT_DIR/tensorboard`` (the web UI's TensorBoard
button reads them).

Tasks:
    ``supernet``: args ``{"width"}`` (optional ``supernet_dir``).
    ``evaluate``: the sample is a topology; args ``{"widths", "target_mflops",
    "family", "mode", "supernet_dir"}``.
    ``final``: args ``{"arch"}`` (JSON) or ``{"sample"}``, and ``target_mflops`` or ``init_channels``;
    optional ``space`` (the settings ``space`` of the final network, e.g. more cells than the search).
    ``differentiable_search``: args ``{"method"}`` (``dsara`` or ``rnas``), optional
    ``method_args`` (the method's settings) and ``search_dir`` (checkpoint and the derived
    architecture; default ``<work_dir>/search``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobArch
from nni_robust.strategies.multishot import flatten_result
from nni_robust.strategies.networks import arch_from_json, layout_of
from nni_robust.strategies.settings import TrialSettings
from nni_robust.tb import output_dir, tensorboard_dir

from . import tasks

__all__ = ["TASKS", "run_task", "main"]

logger = logging.getLogger("nni_robust.trial")

TASKS = ("supernet", "evaluate", "final", "differentiable_search")


def _numeric(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_task(params: Mapping[str, Any], *, reporter=None,
             nested: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the task described by the tuner's ``params``.

    Args:
        params: the trial parameters sent by the bridge tuner.
        reporter: called with each intermediate result (e.g. ``nni.report_intermediate_result``).
        nested: the task is one of many run inside a single NNI trial (e.g. a
            trade-off trial running a whole search, :mod:`nni_robust.trial.tradeoff`):
            its files and TensorBoard logs go to ``<work_dir>/trials/<model_id>``
            even under NNI, instead of the NNI trial's own output folder.

    Returns:
        (final result for NNI: floats with ``default``, full result for files).
    """
    for key in ("task", "settings"):
        if key not in params:
            raise ConfigError(f"trial parameters lack {key!r}; got keys {sorted(params)}. "
                              "They are produced by nni_robust.strategies.bridge.StrategyTuner.")
    task = params["task"]
    if task not in TASKS:
        raise ConfigError(f"Unknown trial task {task!r}; valid tasks: {list(TASKS)}.")
    settings = TrialSettings.from_dict(params["settings"])
    args = dict(params.get("args") or {})
    work_dir = Path(params.get("work_dir") or output_dir())
    own = work_dir / "trials" / str(params.get("model_id", "manual"))
    if nested:
        out, tb = own, own / "tensorboard"
        tb.mkdir(parents=True, exist_ok=True)
    else:
        out = output_dir(own)
        tb = tensorboard_dir(out / "tensorboard")
    supernet_dir = Path(args.get("supernet_dir") or work_dir / "supernets")

    if task == "supernet":
        result = tasks.train_supernet(settings, int(args["width"]), supernet_dir, tb_dir=tb,
                                      reporter=reporter)
        return _numeric(result), result
    if task == "evaluate":
        sample = params.get("sample")
        if not sample:
            raise ConfigError("task 'evaluate' needs a 'sample' (the topology), got none.")
        arch = DenseRobArch.from_sample(sample, layout_of(settings.space))
        full = tasks.evaluate_architecture(
            settings, arch, supernet_dir=supernet_dir, widths=[int(w) for w in args["widths"]],
            target_mflops=float(args["target_mflops"]), family=args.get("family", "log_power"),
            mode=args.get("mode", "multishot"), flops_unit=float(args.get("flops_unit", 1e6)), out_dir=out)
        return flatten_result(full), full
    if task == "differentiable_search":
        if not args.get("method"):
            raise ConfigError("task 'differentiable_search' needs args 'method' ('dsara' or 'rnas'), got none.")
        full = tasks.differentiable_search(
            settings, args["method"], args.get("method_args") or {},
            search_dir=Path(args.get("search_dir") or work_dir / "search"), out_dir=out, tb_dir=tb,
            reporter=reporter)
        return _numeric(full), full
    # final
    if args.get("space") is not None:
        settings = settings.replace(space=dict(args["space"]))
    if args.get("arch"):
        arch = arch_from_json(args["arch"], settings.space)
    elif args.get("sample"):
        arch = DenseRobArch.from_sample(args["sample"], layout_of(settings.space))
    else:
        raise ConfigError("task 'final' needs args 'arch' (architecture JSON) or 'sample', got neither.")
    report = tasks.train_final(settings, arch, out, target_mflops=args.get("target_mflops"),
                               init_channels=args.get("init_channels"), reporter=reporter, tb_dir=tb)
    acc = report["accuracy"]
    final = {"default": float(acc.get("pgd20", acc.get("clean", 0.0))),
             **{f"acc_{k}": float(v) for k, v in acc.items()},
             "mflops": report["mflops"], "params_M": report["params_M"],
             "init_channels": float(report["init_channels"])}
    return final, report


def main(argv: list[str] | None = None) -> int:
    """Entry point of an NNI trial (or, with ``--params FILE``, of a manual run)."""
    parser = argparse.ArgumentParser(prog="python -m nni_robust.trial.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="JSON file of trial parameters (default: ask NNI)")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if ns.params:
        params = json.loads(Path(ns.params).read_text())
        final, full = run_task(params)
        print(json.dumps(final, indent=2))
        return 0

    import nni

    params = nni.get_next_parameter()
    if params is None:
        raise SystemExit("No trial parameters: run this under NNI, or pass --params FILE.")
    logger.info("Trial %s (%s): task %s", nni.get_trial_id(), os.environ.get("NNI_EXP_ID"), params.get("task"))
    final, _ = run_task(params, reporter=nni.report_intermediate_result)
    nni.report_final_result(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
