"""The command NNI runs per trial: ``python -m nni_robust.trial.run``.

The bridge tuner (:mod:`nni_robust.strategies.bridge`) sends each trial a JSON
parameter dict ``{"task", "sample", "args", "settings", "work_dir", "model_id"}``.
This entry point validates the settings, runs the function registered for the
task (:mod:`nni_robust.strategies.registry`: ``final`` is shared, every method
folder registers its own, e.g. MSRobNet's ``supernet`` and ``evaluate``),
reports per-epoch intermediate results and one final result (a dict of floats
with ``default``) to NNI, and writes TensorBoard logs to
``$NNI_OUTPUT_DIR/tensorboard/<task>-<trial id>`` (the web UI's TensorBoard
button reads ``$NNI_OUTPUT_DIR/tensorboard``; the run's name says what the trial
did, :func:`nni_robust.tb.run_name`). A trial whose ``default`` is not the
search's objective (a supernet, the final training) reports it to NNI as a
short text and its number as ``value`` (:mod:`nni_robust.strategies.display`),
so that NNI's overview ranks the objective alone.
``nni-robust tasks`` lists the tasks and their arguments.

Before the task runs, every random generator (Python, NumPy, torch) is seeded
with ``settings.seed`` (:func:`nni_robust.seeding.seed_everything`), so that a
trial's numbers do not depend on what ran before it in the process; the tasks
then seed their own parts (models, training) from their settings' seeds.
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
from nni_robust.tb import NNI_OUTPUT_ENV, output_dir, run_name, tensorboard_dir

# (the settings, the task registry and the seeding are imported when a task runs: this module's
# import stays free of torch; the tasks import what they need)

__all__ = ["run_task", "main"]

logger = logging.getLogger("nni_robust.trial")


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
    from nni_robust.seeding import seed_everything
    from nni_robust.strategies.registry import TaskContext, task_function
    from nni_robust.strategies.settings import TrialSettings

    for key in ("task", "settings"):
        if key not in params:
            raise ConfigError(f"trial parameters lack {key!r}; got keys {sorted(params)}. "
                              "They are produced by nni_robust.strategies.bridge.StrategyTuner.")
    fn = task_function(params["task"])
    settings = TrialSettings.from_dict(params["settings"])
    args = params.get("args") or {}
    if not isinstance(args, Mapping):
        raise ConfigError(f"trial parameter 'args' must be a dict, but got {args!r}.")
    work_dir = Path(params.get("work_dir") or output_dir())
    own = work_dir / "trials" / str(params.get("model_id", "manual"))
    trial_id = os.environ.get("NNI_TRIAL_JOB_ID") if not nested else None
    run = run_name(params["task"], trial_id or params.get("model_id", "manual"))  # e.g. final-Ab3xY
    if nested:
        out, tb = own, own / "tensorboard" / run
        tb.mkdir(parents=True, exist_ok=True)
    else:
        out = output_dir(own)
        tb = tensorboard_dir(out / "tensorboard") / run
        tb.mkdir(parents=True, exist_ok=True)
    ctx = TaskContext(task=params["task"], settings=settings, args=dict(args), sample=params.get("sample"),
                      work_dir=work_dir, out_dir=out, tb_dir=tb, reporter=reporter)
    seed_everything(settings.seed)
    return fn(ctx)


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
    _write_marker(nni.get_trial_id(), params)
    final, _ = run_task(params, reporter=nni.report_intermediate_result)
    from nni_robust.strategies.display import for_nni, task_kind
    from nni_robust.strategies.registry import task_function

    kind = task_kind(params["task"], task_function(params["task"]), params.get("args"))
    nni.report_final_result(for_nni(final, task=params["task"], kind=kind))
    return 0


def _write_marker(trial_id: str, params: Any) -> None:
    """``$NNI_OUTPUT_DIR/nni_robust_trial.json``: the parameter id this trial process received.

    NNI 3.0's local service hands a trial the next queued parameters when it asks,
    so NNI's trial list may pair it with another trial's (microsoft/nni#5726);
    ``nni-robust run`` reads this file to name what a running trial really does
    (:func:`nni_robust.trial.monitor.pair_trials`).
    """
    import nni.trial

    from .monitor import TRIAL_MARKER

    folder = os.environ.get(NNI_OUTPUT_ENV)
    record = getattr(nni.trial, "_params", None)  # (NNI 3.0 keeps the received parameter record there)
    if not folder or not isinstance(record, Mapping) or not isinstance(params, Mapping):
        return
    marker = {"trial_id": trial_id, "parameter_id": record.get("parameter_id"), "task": params.get("task"),
              "model_id": params.get("model_id")}
    try:
        Path(folder, TRIAL_MARKER).write_text(json.dumps(marker))
    except OSError as exc:  # a convenience for the command line only
        logger.debug("Could not write %s: %s", TRIAL_MARKER, exc)


if __name__ == "__main__":
    sys.exit(main())
