"""Experiment YAMLs: validation, and running one under nnictl from Python.

:func:`run_experiment` starts ``nnictl create`` on a free port with the
experiment's working directory where the YAML (or the caller) says, waits for
the experiment through NNI's REST API (``/check-status``, ``/trial-jobs``),
and stops exactly that experiment by its id (never every experiment on the
machine). The ``nni-robust run`` command and the end-to-end tests use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.strategies.records import TRIALS_FILE

from .monitor import ENDED, ExperimentProgress, pair_trials, read_markers, read_stage, read_trial_records
from .tradeoff import check_command
from .yaml_files import BRIDGE, load_experiment_settings, load_yaml

__all__ = ["load_yaml", "load_experiment_settings", "check_experiment", "check_shared_paths", "run_experiment",
           "resume_experiment", "stop_experiment", "free_port", "rest_get", "experiment_work_dir"]

logger = logging.getLogger(__name__)

def check_experiment(path: str | Path, *, environment: bool = True) -> dict[str, Any]:
    """Validate an experiment YAML as nnictl and our tuner will see it.

    NNI's own keys are checked by NNI's ``ExperimentConfig`` (an unknown key is an
    error naming it); the bridge tuner's ``classArgs`` are checked by constructing
    the tuner's validator, so a misspelt setting fails here, not in a trial.

    With ``environment`` (the default) it also checks what the settings need
    from this machine (:meth:`TrialSettings.preflight`: the data folder and
    its files, the image counts against the splits, the device, GPUs asked
    for); the problems found are listed under ``environment`` (a config may be
    meant for another machine; :func:`run_experiment` refuses to start with any).

    With a training service other than ``local``, the folders the tuner and the
    trials share must be absolute paths (:func:`check_shared_paths`; a
    :class:`ConfigError` otherwise); they are listed under ``shared_paths`` with
    a reminder under ``warnings`` that they must be the same on every machine.

    Returns:
        a summary: strategy, space, trial concurrency, max trials, environment problems
        (and, for multi-machine configs, shared paths and warnings).
    """
    from nni.experiment.config import ExperimentConfig

    path = Path(path)
    data = load_yaml(path)
    try:
        config = ExperimentConfig(**data)  # accepts the YAML's camelCase keys
        config.validate()
    except (ValueError, AttributeError, TypeError, AssertionError) as exc:
        detail = str(exc).strip() or f"{type(exc).__name__} {exc!r}"
        raise ConfigError(f"{path}: invalid NNI experiment config (checked by NNI's ExperimentConfig): {detail}. "
                          "See NNI 3.0's experiment config reference for the valid keys.") from exc
    tuner = data.get("tuner") or {}
    summary: dict[str, Any] = {"config": str(path), "trialConcurrency": data.get("trialConcurrency"),
                               "maxTrialNumber": data.get("maxTrialNumber")}
    if tuner.get("className") == BRIDGE:
        from nni_robust.strategies.bridge import StrategyTuner

        args = dict(tuner.get("classArgs") or {})
        # Build the tuner as NNI would (space, strategy, settings, their agreement), on a scratch work dir,
        # from the trials' folder (a relative path in the task's arguments is relative to it under nnictl).
        trial_dir = Path(os.path.expanduser(str(data.get("trialCodeDirectory", "."))))
        trial_dir = trial_dir if trial_dir.is_absolute() else path.resolve().parent / trial_dir
        with tempfile.TemporaryDirectory(prefix="nni_robust_check_") as tmp, contextlib.chdir(trial_dir):
            args["work_dir"] = tmp
            args["resume"] = False
            args["lazy_init"] = False
            tuner = StrategyTuner(**args)
        summary.update({"strategy": args.get("strategy"), "space": args.get("space")})
        if _platforms(data) - {"local"}:  # trials on other machines: the folders they share
            summary["shared_paths"], summary["warnings"] = check_shared_paths(data, where=str(path))
        if environment:
            from nni_robust.strategies.settings import TrialSettings

            platform = (data.get("trainingService") or {}).get("platform", "local") \
                if isinstance(data.get("trainingService"), Mapping) else "local"
            summary["environment"] = TrialSettings.from_dict(tuner.settings).preflight(
                gpus_per_trial=int(data.get("trialGpuNumber") or 0), platform=platform)
    command = str(data.get("trialCommand") or "")
    if "nni_robust.trial.tradeoff" in command:  # a trade-off experiment: check the search it runs
        code_dir = Path(os.path.expanduser(str(data.get("trialCodeDirectory", "."))))
        code_dir = code_dir if code_dir.is_absolute() else path.resolve().parent / code_dir
        search = check_command(command, code_dir, data.get("searchSpace"))
        summary.update({"tradeoff_search": search.get("strategy"), "tuner": tuner.get("className")})
    return summary


def _platforms(data: Mapping[str, Any]) -> set[str]:
    """The training services of a config (``trainingService`` is one mapping, or a list of them)."""
    service = data.get("trainingService")
    services = service if isinstance(service, list) else [service] if isinstance(service, Mapping) else []
    return {str(s.get("platform", "local")) for s in services if isinstance(s, Mapping)} or {"local"}


def check_shared_paths(data: Mapping[str, Any], *, where: str = "the config") -> tuple[dict[str, str], list[str]]:
    """The folders that the tuner and the trials of a multi-machine experiment share, checked.

    With a training service other than ``local`` (``remote``, Kubernetes, ...)
    the tuner runs on the NNI manager's machine and each trial on one of the
    others, and they meet in folders: the search's work dir (``tuner.classArgs
    .work_dir``; the default is ``<experimentWorkingDirectory>/<id>/nni_robust``
    on the manager's machine), the supernet folder
    (``strategy_args.supernet_dir``, default ``<work_dir>/supernets``) and the
    dataset root (``settings.data_root``). Each must be an absolute path (not
    ``~``, an environment variable or a relative path, which every machine
    would resolve to a folder of its own) naming one shared folder (e.g. NFS)
    mounted at that same path on every machine. Per-trial output is not shared:
    NNI keeps it on the machine that ran the trial.

    Returns:
        (the shared paths by key, warnings: that they must be the same folder on
        every machine, which cannot be checked from here, and a dataset without
        ``data_root``).

    Raises:
        ConfigError: naming every path that is not absolute.
    """
    args = ((data.get("tuner") or {}).get("classArgs") or {})
    strategy_args = args.get("strategy_args") or {}
    settings = args.get("settings") or {}
    paths: dict[str, str] = {}
    if args.get("work_dir") is not None:
        paths["tuner.classArgs.work_dir"] = str(args["work_dir"])
    else:
        paths["experimentWorkingDirectory (the default work_dir is <it>/<id>/nni_robust)"] = \
            str(data.get("experimentWorkingDirectory", "~/nni-experiments"))
    if isinstance(strategy_args, Mapping) and strategy_args.get("supernet_dir") is not None:
        paths["tuner.classArgs.strategy_args.supernet_dir"] = str(strategy_args["supernet_dir"])
    if isinstance(settings, Mapping) and settings.get("data_root") is not None:
        paths["tuner.classArgs.settings.data_root"] = str(settings["data_root"])
    platforms = ", ".join(sorted(_platforms(data) - {"local"}))
    bad = [f"{key} is {value!r}" for key, value in paths.items()
           if value.startswith("~") or "$" in value or not os.path.isabs(value)]
    if bad:
        raise ConfigError(f"{where}: with trials on other machines (trainingService {platforms}), the folders that the "
                          "tuner and the trials share must be absolute paths, the same on every machine (a shared "
                          "folder such as NFS): " + "; ".join(bad) + ". Every machine would resolve a relative path, "
                          "'~' or '$VAR' to a folder of its own.")
    warnings = [f"trials run on other machines (trainingService {platforms}): these folders must be one shared "
                "folder, mounted at the same path on the NNI manager's machine and on every trial machine: "
                + ", ".join(f"{key} = {value}" for key, value in paths.items())
                + " (per-trial output stays on each machine; it need not be shared)."]
    dataset = settings.get("dataset", "cifar10") if isinstance(settings, Mapping) else "cifar10"
    if dataset != "digits" and "tuner.classArgs.settings.data_root" not in paths:
        warnings.append(f"settings.data_root is not set: each machine reads {dataset} from its own $NNI_ROBUST_DATA "
                        "or ~/.cache/nni_robust/data; put the dataset there on every machine, or set data_root to "
                        "a shared absolute folder.")
    return paths, warnings


def free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rest_get(port: int, route: str, timeout: float = 10.0) -> Any:
    """GET ``http://localhost:<port>/api/v1/nni/<route>`` and decode the JSON."""
    url = f"http://127.0.0.1:{port}/api/v1/nni/{route.lstrip('/')}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (localhost only)
        return json.loads(resp.read().decode())


def experiment_work_dir(data: Mapping[str, Any], exp_dir: Path, exp_id: str) -> Path:
    """The search's work dir: ``tuner.classArgs.work_dir``, else the bridge's default
    (``<experimentWorkingDirectory>/<id>/nni_robust``)."""
    args = ((data.get("tuner") or {}).get("classArgs") or {})
    if args.get("work_dir"):
        return Path(os.path.expanduser(str(args["work_dir"])))
    return exp_dir / exp_id / "nni_robust"


def _nnictl() -> str:
    exe = Path(sys.executable).with_name("nnictl")
    if exe.exists():
        return str(exe)
    found = shutil.which("nnictl")
    if not found:
        raise NniRobustError("nnictl not found next to this Python or on PATH; install nni.")
    return found


def run_experiment(config: str | Path, *, port: int = 0, timeout: float | None = None,
                   keep: bool = False, experiment_dir: str | Path | None = None,
                   poll: float = 2.0, overrides: Mapping[str, Any] | None = None,
                   stop_after: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run an experiment YAML under nnictl, wait until it ends, and summarise it.

    Args:
        config: the experiment YAML.
        port: web UI/REST port (0 picks a free one).
        timeout: seconds to wait before giving up (the experiment is stopped).
        keep: leave the experiment running after it finished (for the web UI).
        experiment_dir: overrides ``experimentWorkingDirectory``.
        poll: seconds between REST polls.
        overrides: top-level YAML keys to replace (e.g. ``{"maxTrialNumber": 3}``).
        stop_after: stop the experiment (status ``STOPPED``) as soon as this
            many trials have ended, e.g. to :func:`resume_experiment` it later.
        progress: called with one line per event while it runs (a trial
            started or ended, the strategy's stage changed: :class:`.monitor.ExperimentProgress`).

    An experiment whose tuner did not connect within NNI's 10 seconds (status
    ``ERROR`` before any trial: a loaded machine) is stopped and started again,
    up to 3 times.

    Returns:
        ``{"id", "status", "port", "work_dir", "experiment_dir", "trials": [...], "failed_trials", "best",
        "seconds", "tuner_args"}``; each trial with the parameters it really ran, paired by
        parameter id (:func:`.monitor.pair_trials`), not by NNI's trial list.
    """
    config = Path(config).resolve()
    summary = check_experiment(config)  # a bad key fails here, before anything starts
    if summary.get("environment"):
        raise ConfigError(f"{config} cannot run on this machine:\n- " + "\n- ".join(summary["environment"]))
    for warning in summary.get("warnings") or []:
        logger.warning("%s: %s", config, warning)
    data = load_yaml(config)
    data.update(overrides or {})
    if experiment_dir is not None:
        data["experimentWorkingDirectory"] = str(Path(experiment_dir).resolve())
    exp_dir = Path(os.path.expanduser(str(data.get("experimentWorkingDirectory", "~/nni-experiments"))))
    # relative paths in the YAML are relative to its folder: the copy nnictl reads lives elsewhere
    def _abs(value: Any) -> str:
        path = Path(os.path.expanduser(str(value)))
        return str(path if path.is_absolute() else (config.parent / path).resolve())

    data["trialCodeDirectory"] = _abs(data.get("trialCodeDirectory", "."))
    for key in ("tuner", "assessor", "advisor"):
        algo = data.get(key)
        if isinstance(algo, dict) and "className" in algo:
            algo["codeDirectory"] = _abs(algo.get("codeDirectory", "."))
    attempts = 3
    for attempt in range(1, attempts + 1):
        run_port = port or free_port()
        with tempfile.TemporaryDirectory(prefix="nni_robust_cfg_") as tmp:
            tmp_cfg = Path(tmp) / config.name
            tmp_cfg.write_text(yaml.safe_dump(data, sort_keys=False))
            exp_id = _nnictl_start(["create", "--config", str(tmp_cfg), "--port", str(run_port)])
        logger.info("Experiment %s started: web UI at http://127.0.0.1:%d", exp_id, run_port)
        result = _follow(exp_id, run_port, data, exp_dir, timeout=timeout, keep=keep, poll=poll,
                         stop_after=stop_after, progress=progress)
        # NNI gives the tuner process 10 s to connect; on a loaded machine its imports alone can take
        # longer, and the experiment ends in ERROR before any trial. That failure (only) is retried.
        late_tuner = result["status"] == "ERROR" and not result["trials"] and any(
            "did not connect" in str(e) for e in result.get("errors") or [])
        if not late_tuner or attempt == attempts:
            return result
        stop_experiment(exp_id)
        logger.warning("Experiment %s: NNI's tuner did not connect within NNI's 10 s (a loaded machine); starting "
                       "the experiment again (attempt %d of %d).", exp_id, attempt + 1, attempts)
    raise AssertionError("unreachable")


def resume_experiment(exp_id: str, *, experiment_dir: str | Path, port: int = 0, timeout: float | None = None,
                      keep: bool = False, poll: float = 2.0, stop_after: int | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``nnictl resume`` a stopped experiment, wait until it ends, and summarise it.

    Args:
        exp_id: the experiment's id.
        experiment_dir: its ``experimentWorkingDirectory``.
        (others): as :func:`run_experiment`; ``stop_after`` counts all the
            experiment's ended trials, those before the resume included.

    Returns:
        the summary of :func:`run_experiment`, over all the experiment's trials.
    """
    exp_dir = Path(os.path.expanduser(str(experiment_dir))).resolve()
    saved = exp_dir / exp_id / "db"
    if not saved.exists():
        raise ConfigError(f"No experiment {exp_id!r} in {str(exp_dir)!r} (expected its folder {exp_dir / exp_id}).")
    port = port or free_port()
    exp_id = _nnictl_start(["resume", exp_id, "--port", str(port), "--experiment_dir", str(exp_dir)])
    logger.info("Experiment %s resumed: web UI at http://127.0.0.1:%d", exp_id, port)
    profile = rest_get(port, "experiment")
    data = dict(profile.get("params") or {})
    return _follow(exp_id, port, data, exp_dir, timeout=timeout, keep=keep, poll=poll, stop_after=stop_after,
                   progress=progress)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _nnictl_start(command: list[str], *, attempts: int = 4) -> str:
    """Run ``nnictl create|resume`` and return the experiment id.

    NNI's launcher gives its web server about three seconds to answer
    ``/check-status`` and otherwise kills it ("Create experiment failed ...
    check-status"); on a loaded machine Node can take longer to start. That
    failure (and only that one) is retried, up to ``attempts`` times.
    """
    for attempt in range(1, attempts + 1):
        proc = subprocess.run([_nnictl(), *command], capture_output=True, text=True, env=_env(), timeout=300)
        out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # drop ANSI colours
        match = re.search(r"[Ee]xperiment ID(?: is)?[:\s]+([A-Za-z0-9]+)", out, re.IGNORECASE)
        if proc.returncode == 0 and match:
            return match.group(1)
        slow_start = "check-status" in out and ("Create experiment failed" in out or "Timeout, retry" in out)
        if not slow_start or attempt == attempts:
            raise NniRobustError(f"nnictl {command[0]} failed (exit {proc.returncode}):\n{out}")
        logger.warning("nnictl %s: NNI's web server did not answer in time (attempt %d of %d); retrying.",
                       command[0], attempt, attempts)
        time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def stop_experiment(exp_id: str) -> None:
    """``nnictl stop <id>``: stop exactly this experiment."""
    subprocess.run([_nnictl(), "stop", exp_id], capture_output=True, text=True, env=_env(), timeout=120)


def _follow(exp_id: str, port: int, data: Mapping[str, Any], exp_dir: Path, *, timeout: float | None,
            keep: bool, poll: float, stop_after: int | None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    start = time.monotonic()
    status: dict[str, Any] = {}
    work_dir = experiment_work_dir(data, exp_dir, exp_id)
    watch = _Watch(exp_id, port, exp_dir / exp_id, work_dir, progress) if progress is not None else None
    jobs: list = []
    try:
        while True:
            try:
                status = rest_get(port, "check-status")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                status = {"status": "UNREACHABLE"}
            st = status.get("status")
            if watch is not None:
                watch.look(st)
            if st in ("DONE", "ERROR", "STOPPED", "VIEWED"):
                break
            if st == "NO_MORE_TRIAL" or stop_after is not None:
                try:
                    jobs = rest_get(port, "trial-jobs")
                except (urllib.error.URLError, OSError):
                    jobs = []
                if stop_after is not None and sum(j.get("status") in ENDED for j in jobs) >= stop_after:
                    status = {**status, "status": "STOPPED"}
                    break
                if st == "NO_MORE_TRIAL" and jobs and all(
                        j.get("status") not in ("RUNNING", "WAITING", "UNKNOWN") for j in jobs):
                    break
            if timeout is not None and time.monotonic() - start > timeout:
                status = {**status, "status": "TIMEOUT"}
                break
            time.sleep(poll)
        try:
            jobs = rest_get(port, "trial-jobs")
            metrics = rest_get(port, "metric-data")
        except (urllib.error.URLError, OSError):
            jobs, metrics = [], []
    finally:
        if not keep or status.get("status") in ("TIMEOUT", "STOPPED"):  # (stopping a stopped one is a no-op)
            stop_experiment(exp_id)
    # each trial with the parameters it ran: by the parameter id its metrics carry (microsoft/nni#5726)
    trials = pair_trials(jobs, metrics, records=read_trial_records(work_dir, exp_id),
                         markers=read_markers(exp_dir / exp_id))
    if watch is not None:
        watch.progress.update(trials=trials, stage=read_stage(work_dir))
    best_path = work_dir / "best_architecture.json"
    return {"id": exp_id, "status": status.get("status"), "errors": status.get("errors"), "port": port,
            "experiment_dir": str(exp_dir / exp_id), "work_dir": str(work_dir), "trials": trials,
            "failed_trials": [t["trialJobId"] for t in trials if t["status"] != "SUCCEEDED"],
            "best": json.loads(best_path.read_text()) if best_path.exists() else None,
            "seconds": time.monotonic() - start,
            "tuner_args": dict(((data.get("tuner") or {}).get("classArgs") or {}))}


class _Watch:
    """The progress lines of :func:`_follow`: one look at the experiment per poll."""

    def __init__(self, exp_id: str, port: int, exp_path: Path, work_dir: Path, emit: Callable[[str], None]) -> None:
        self.exp_id, self.port, self.exp_path, self.work_dir = exp_id, port, exp_path, work_dir
        self.progress = ExperimentProgress(emit)
        self._metrics: dict[str, list] = {}  # trial id -> a metric of it that names its parameter id
        self._records: tuple[Any, dict] = (None, {})

    def _trial_records(self) -> dict:
        path = self.work_dir / TRIALS_FILE
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return {}
        if key != self._records[0]:
            self._records = (key, read_trial_records(self.work_dir, self.exp_id))
        return self._records[1]

    def look(self, status: str | None) -> None:
        try:
            jobs = rest_get(self.port, "trial-jobs")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return
        markers = read_markers(self.exp_path)
        for job in jobs:  # a running trial's parameter id, from its first metric, when it left no marker
            tid = job.get("trialJobId")
            if job.get("status") == "RUNNING" and tid not in markers and tid not in self._metrics:
                try:
                    found = [m for m in rest_get(self.port, f"metric-data/{tid}") if m.get("parameterId") is not None]
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                    found = []
                if found:
                    self._metrics[tid] = found[:1]
        metrics = [m for ms in self._metrics.values() for m in ms]
        trials = pair_trials(jobs, metrics, records=self._trial_records(), markers=markers)
        self.progress.update(trials=trials, stage=read_stage(self.work_dir), status=status)
