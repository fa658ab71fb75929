"""``nni-robust leaderboard``: every method's experiment, one after another, side by side.

The command runs the experiments of a leaderboard config (by default every
method's quick experiment, ``benchmarks/leaderboard-quick.yml``) through the
project's launcher (:func:`nni_robust.trial.experiment.run_experiment`, what
``nni-robust run`` uses), one at a time, and gathers for each: the search
cost (wall-clock seconds of the search and of the final training, number of
trials, the trials' CPU-seconds), the final network's parameters and FLOPs,
and its evaluation (clean, FGSM, PGD and AutoAttack accuracy, the metrics of
the shared ``final`` trial). It writes a Markdown table, a CSV, a JSON and a
plot, and can replace a marked section of a README with the table.

Config (YAML; unknown keys are errors)::

    title: Quick leaderboard
    description: one paragraph printed above the table
    experiments_dir: ../experiments     # where `experiment` files are (relative to this file)
    timeout: 3600                       # seconds per experiment (null: none); stopped and reported failed
    common:                             # tuner.classArgs paths set in every experiment (as `--set`)
      settings.final.attacks: {fgsm: {name: fgsm, eps: 0.1}, ...}
    columns: {clean: acc_clean, FGSM: acc_fgsm, PGD-20: acc_pgd20, AutoAttack: acc_autoattack}
    cost_plot: [PGD-20, AutoAttack]     # columns plotted against the search cost
    methods:                            # name (for --methods) -> experiment
      msrobnet-quick: {experiment: msrobnet-quick.yml, label: MSRobNet, set: {...}, note: ...}

Only experiments whose tuner is the bridge tuner (one search ending in one
``final`` trial) can be ranked: an Optuna trade-off experiment
(``tradeoff-*.yml``) trains one final network per trial and ends with a
Pareto front, not one network, so it is refused with a ConfigError.

How the numbers are measured:

* The final trial is the trial whose output folder holds ``final_report.json``
  (written by the shared ``final`` task itself); its metrics are NNI's final
  result of that trial id. Without trial folders on this machine (another
  training service) it is the trial whose parameters name the task ``final``.
* Each trial command is wrapped (in the copy of the YAML that is launched) so
  that bash writes ``leaderboard_times.txt`` into the trial's output folder:
  start and end time and, from the ``times`` builtin, the user + system CPU
  time of the trial's processes. The search's wall-clock is the time from the
  first trial's start to the final trial's start (every search trial and the
  tuner's work between them); the final's is that trial's own. The tuner's own
  computation (e.g. a predictor trained in the tuner) is in the wall-clock, not
  in the CPU-seconds.

Outputs in ``--out``: ``leaderboard.md``, ``leaderboard.csv``,
``leaderboard.json`` (every row, with its effective settings' fingerprint)
and ``leaderboard.png``; they are rewritten after every experiment, so an
interrupted run keeps the finished rows, and ``--resume`` reuses the
finished rows whose effective experiment (YAML after the overrides) has not
changed.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from nni_robust.config import check_keys
from nni_robust.errors import ConfigError
from nni_robust.strategies.trust import read_warnings

from .yaml_files import BRIDGE, load_yaml

__all__ = ["MethodEntry", "LeaderboardConfig", "load_config", "effective_experiment", "fingerprint",
           "gather_row", "failed_row", "markdown", "plot", "write_outputs", "check_readme", "replace_readme_section",
           "run_leaderboard", "MARK_START", "MARK_END", "TIMES_FILE"]

logger = logging.getLogger(__name__)

MARK_START = "<!-- leaderboard:start -->"
MARK_END = "<!-- leaderboard:end -->"
TIMES_FILE = "leaderboard_times.txt"

DEFAULT_COLUMNS = {"clean": "acc_clean", "FGSM": "acc_fgsm", "PGD-20": "acc_pgd20", "AutoAttack": "acc_autoattack"}

_CONFIG_KEYS = ("title", "description", "experiments_dir", "timeout", "common", "columns", "cost_plot", "methods")
_METHOD_KEYS = ("experiment", "label", "set", "note")
_SETTABLE = ("strategy", "space", "strategy_args", "settings")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class MethodEntry:
    """One row of the leaderboard.

    Attributes:
        name: Its key in the config (what ``--methods`` selects).
        experiment: The experiment YAML (resolved path).
        label: The name in the table and the plot.
        sets: Dotted ``tuner.classArgs`` paths set in this experiment (after the config's ``common``).
        note: One line for the report.
    """

    name: str
    experiment: Path
    label: str
    sets: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class LeaderboardConfig:
    """A leaderboard config (see the module docstring)."""

    path: Path
    methods: tuple[MethodEntry, ...]
    title: str = "Leaderboard"
    description: str = ""
    timeout: float | None = None
    common: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    cost_plot: tuple[str, ...] = ("PGD-20", "AutoAttack")

    def select(self, names: Sequence[str] | None) -> tuple[MethodEntry, ...]:
        """The entries named (in the config's order); all of them for ``None``.

        Raises:
            ConfigError: a name the config does not have.
        """
        if names is None:
            return self.methods
        known = [m.name for m in self.methods]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"--methods: {', '.join(repr(n) for n in unknown)} not in {self.path} (methods: "
                              f"{', '.join(known)}).")
        return tuple(m for m in self.methods if m.name in names)


def _check_sets(sets: Any, where: str) -> dict[str, Any]:
    if sets is None:
        return {}
    if not isinstance(sets, Mapping):
        raise ConfigError(f"{where} must map dotted tuner.classArgs paths to values (e.g. "
                          f"'settings.final.train.epochs: 10'), but got {sets!r}.")
    for key in sets:
        parts = str(key).split(".")
        if parts[0] not in _SETTABLE or (len(parts) < 2 and parts[0] in ("strategy_args", "settings")) \
                or any(not p for p in parts):
            raise ConfigError(f"{where}.{key} is not a path into the experiment's tuner.classArgs: it must start "
                              f"with one of {list(_SETTABLE)} (e.g. 'settings.final.train.epochs', "
                              f"'strategy_args.num_random').")
    return {str(k): v for k, v in sets.items()}


def load_config(path: str | os.PathLike) -> LeaderboardConfig:
    """Read and check a leaderboard YAML (every experiment file must exist and use the bridge tuner).

    Raises:
        ConfigError: naming the full key, the bad value and what is valid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Leaderboard config {str(path)!r} does not exist (e.g. benchmarks/leaderboard-quick.yml).")
    data = load_yaml(path)
    if "trialCommand" in data or "tuner" in data:
        raise ConfigError(f"{path} is an experiment YAML, not a leaderboard config: a leaderboard config lists "
                          "experiments under 'methods' (e.g. benchmarks/leaderboard-quick.yml; `nni-robust run` "
                          "runs one experiment).")
    check_keys(data, _CONFIG_KEYS, str(path))
    where = str(path)
    for key in ("title", "description", "experiments_dir"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{where}: {key} must be a string, but got {data[key]!r}.")
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"{where}: timeout must be a positive number of seconds or null, but got {timeout!r}.")
    columns = data.get("columns", DEFAULT_COLUMNS)
    if not isinstance(columns, Mapping) or not columns or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in columns.items()):
        raise ConfigError(f"{where}: columns must map column labels to final-trial metric names (e.g. "
                          f"{{clean: acc_clean, AutoAttack: acc_autoattack}}), but got {columns!r}.")
    cost_plot = data.get("cost_plot", [c for c in ("PGD-20", "AutoAttack") if c in columns])
    if not isinstance(cost_plot, (list, tuple)) or any(c not in columns for c in cost_plot):
        raise ConfigError(f"{where}: cost_plot must list column labels of 'columns' ({list(columns)}), but got "
                          f"{cost_plot!r}.")
    common = _check_sets(data.get("common"), f"{where}: common")
    base = (path.resolve().parent / str(data.get("experiments_dir", "."))).resolve()
    raw = data.get("methods")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: methods must map method names to {{experiment, label, set, note}}, but got "
                          f"{raw!r}.")
    entries = []
    for name, spec in raw.items():
        key = f"{where}: methods.{name}"
        if isinstance(spec, str):
            spec = {"experiment": spec}
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{key} must be a mapping {{experiment, label, set, note}}, but got {spec!r}.")
        check_keys(spec, _METHOD_KEYS, key)
        exp = spec.get("experiment")
        if not isinstance(exp, str) or not exp:
            raise ConfigError(f"{key}.experiment must name an experiment YAML (relative to {base}), but got {exp!r}.")
        exp_path = Path(os.path.expanduser(exp))
        exp_path = exp_path if exp_path.is_absolute() else base / exp_path
        if not exp_path.is_file():
            raise ConfigError(f"{key}.experiment: {str(exp_path)!r} does not exist (experiments_dir is {base}).")
        tuner = load_yaml(exp_path).get("tuner")
        class_name = tuner.get("className") if isinstance(tuner, Mapping) else tuner
        if class_name != BRIDGE:
            raise ConfigError(f"{key}.experiment: {exp_path.name}'s tuner is {class_name!r}, but the leaderboard "
                              f"ranks searches of the bridge tuner ({BRIDGE}), each ending in one final network; "
                              "an Optuna trade-off experiment trains a final network per trial and ends in a Pareto "
                              "front (see its pareto.md), so it has no single row.")
        for text in ("label", "note"):
            if text in spec and not isinstance(spec[text], str):
                raise ConfigError(f"{key}.{text} must be a string, but got {spec[text]!r}.")
        entries.append(MethodEntry(name=str(name), experiment=exp_path, label=str(spec.get("label") or name),
                                   sets=_check_sets(spec.get("set"), f"{key}.set"), note=str(spec.get("note") or "")))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: method labels must differ, but got {labels}.")
    return LeaderboardConfig(path=path, methods=tuple(entries), title=str(data.get("title", "Leaderboard")),
                             description=str(data.get("description") or "").strip(),
                             timeout=float(timeout) if timeout is not None else None, common=common,
                             columns=dict(columns), cost_plot=tuple(cost_plot))


# --------------------------------------------------------------------------- the experiments
def _wrap_command(command: str) -> str:
    """The trial command, run in a subshell, followed by bash writing its times into the trial's folder."""
    return (f"__lb_t0=$(date +%s.%N); ( {command.strip()} ); __lb_rc=$?; "
            f'if [ -n "$NNI_OUTPUT_DIR" ]; then {{ echo "start $__lb_t0"; echo "end $(date +%s.%N)"; '
            f'echo "rc $__lb_rc"; times; }} > "$NNI_OUTPUT_DIR/{TIMES_FILE}" 2>/dev/null; fi; exit $__lb_rc')


def effective_experiment(config: LeaderboardConfig, entry: MethodEntry) -> dict[str, Any]:
    """The experiment YAML as the leaderboard launches it: ``common`` then the entry's ``set`` applied to
    ``tuner.classArgs``, the code folders made absolute (the copy lives elsewhere) and the trial command
    wrapped to record its times.

    Raises:
        ConfigError: a path that does not fit the experiment (naming the config key).
    """
    from .tradeoff import apply_parameters

    data = copy.deepcopy(load_yaml(entry.experiment))
    args = data["tuner"].setdefault("classArgs", {}) or {}
    for where, sets in ((f"{config.path}: common", config.common), (f"{config.path}: methods.{entry.name}.set",
                                                                    entry.sets)):
        try:
            args = apply_parameters(args, {}, sets=sets)
        except ConfigError as exc:
            raise ConfigError(f"{where} (applied to {entry.experiment.name}): {exc}") from exc
    data["tuner"]["classArgs"] = args
    folder = entry.experiment.resolve().parent

    def _abs(value: Any) -> str:
        p = Path(os.path.expanduser(str(value)))
        return str(p if p.is_absolute() else (folder / p).resolve())

    data["trialCodeDirectory"] = _abs(data.get("trialCodeDirectory", "."))
    data["tuner"]["codeDirectory"] = _abs(data["tuner"].get("codeDirectory", "."))
    if not isinstance(data.get("trialCommand"), str) or not data["trialCommand"].strip():
        raise ConfigError(f"{entry.experiment}: trialCommand must be a command string, but got "
                          f"{data.get('trialCommand')!r}.")
    data["trialCommand"] = _wrap_command(data["trialCommand"])
    return data


def fingerprint(data: Mapping[str, Any]) -> str:
    """SHA-256 of an effective experiment (its working directory aside): equal means the same experiment."""
    body = {k: v for k, v in data.items() if k != "experimentWorkingDirectory"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_times(path: Path) -> dict[str, float] | None:
    """``leaderboard_times.txt``: start, end, rc and (from bash ``times``) the children's user and system time."""
    try:
        text = path.read_text()
    except OSError:
        return None
    out: dict[str, float] = {}
    for key in ("start", "end", "rc"):
        m = re.search(rf"^{key} (-?[0-9]+(?:[.,][0-9]+)?)\s*$", text, re.MULTILINE)
        if m:
            out[key] = float(m.group(1).replace(",", "."))
    clocks = re.findall(r"([0-9]+)m([0-9]+(?:[.,][0-9]+)?)s", text)
    if len(clocks) >= 4:  # shell user, shell sys, children user, children sys
        secs = [int(m) * 60 + float(s.replace(",", ".")) for m, s in clocks[:4]]
        out["cpu"] = sum(secs)
    return out if "start" in out and "end" in out else None


def _trial_dirs(experiment_dir: Path) -> dict[str, Path]:
    """Trial id -> its output folder (local training service: ``environments/<env>/trials/<id>``)."""
    return {p.name: p for p in sorted(experiment_dir.glob("environments/*/trials/*")) if p.is_dir()}


def _task(trial: Mapping[str, Any]) -> str:
    params = trial.get("parameters")
    return str(params.get("task", "trial")) if isinstance(params, Mapping) else "trial"


def _tail(path: Path, lines: int = 3, chars: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-lines:])[-chars:]


def _settings_summary(data: Mapping[str, Any]) -> dict[str, str]:
    """What the final network was trained and evaluated with, as short text (from the effective settings)."""
    from nni_robust.strategies.settings import TrialSettings

    settings = TrialSettings.from_dict(((data.get("tuner") or {}).get("classArgs") or {}).get("settings") or {})
    t = settings.final.train
    attack = "standard" if t.attack == "none" else (f"FGSM eps {t.eps:.3g}" if t.attack == "fgsm"
                                                    else f"PGD-{t.steps} eps {t.eps:.3g}")
    train = f"{t.epochs} epochs, {attack}"
    attacks = ", ".join(f"{name} eps {float(spec.get('eps', 0)):.3g}" for name, spec in settings.final.attacks.items())
    images = settings.final.eval_images
    evaluation = f"{attacks} on {'all' if images is None else images} test images"
    rob = settings.final.robustness
    if rob and rob.get("autoattack", rob.get("suite") in ("standard", "full")):
        which = "+".join(rob.get("autoattack_attacks") or ["standard"])
        n = rob.get("autoattack_images")
        eps = rob.get("eps", 8 / 255)
        where = f"{n} images" if n else "the report's images"
        evaluation += f"; AutoAttack ({which}) eps {float(eps):.3g} on {where}"
    return {"dataset": settings.dataset, "final_training": train, "evaluation": evaluation}


def gather_row(entry: MethodEntry, result: Mapping[str, Any], *, launched_at: float,
               effective: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One leaderboard row from :func:`run_experiment`'s result and the files the experiment left.

    Args:
        entry: The method.
        result: ``run_experiment``'s summary (``id``, ``status``, ``trials``, ``experiment_dir``, ``work_dir``, ...).
        launched_at: ``time.time()`` just before the launch (for ``seconds_startup``).
        effective: The effective experiment (for the settings summary).

    Returns:
        a row with ``status`` ``ok`` or ``failed`` (and ``reason``).
    """
    exp_dir = Path(result.get("experiment_dir") or ".")
    work_dir = Path(result.get("work_dir") or ".")
    trials = list(result.get("trials") or [])
    folders = _trial_dirs(exp_dir)
    times = {tid: _read_times(folder / TIMES_FILE) for tid, folder in folders.items()}
    by_task: dict[str, int] = {}
    for t in trials:
        by_task[_task(t)] = by_task.get(_task(t), 0) + 1
    # the final trial: its folder holds final_report.json (written by the final task itself)
    finals = [t for t in trials if t.get("trialJobId") in folders
              and (folders[t["trialJobId"]] / "final_report.json").is_file()]
    how = "final_report.json"
    if not folders:  # trials on other machines: by the parameters' task
        finals, how = [t for t in trials if _task(t) == "final"], "parameters"
    for t in finals:
        if how == "final_report.json" and _task(t) != "final":
            logger.warning("%s: trial %s wrote final_report.json, but NNI's trial list pairs it with task %r "
                           "(microsoft/nni#5726: concurrent trials' parameters mixed up); the folder is trusted.",
                           entry.name, t.get("trialJobId"), _task(t))
    ok_finals = [t for t in finals if t.get("status") == "SUCCEEDED" and isinstance(t.get("final"), Mapping)]
    row: dict[str, Any] = {
        "method": entry.name, "label": entry.label, "experiment": entry.experiment.name, "note": entry.note,
        "experiment_id": result.get("id"), "experiment_status": result.get("status"),
        "experiment_dir": str(exp_dir), "work_dir": str(work_dir),
        "seconds_total": float(result.get("seconds") or 0.0),
        "trials": len(trials), "trials_failed": len(result.get("failed_trials") or []), "trials_by_task": by_task,
    }
    measured = {tid: v for tid, v in times.items() if v is not None}
    row["trial_seconds"] = sum(v["end"] - v["start"] for v in measured.values()) if measured else None
    cpu = [v["cpu"] for v in measured.values() if "cpu" in v]
    row["trial_cpu_seconds"] = sum(cpu) if cpu else None
    row["trials_timed"] = len(measured)
    if len(ok_finals) > 1:
        logger.warning("%s: %d succeeded final trials; the last one is reported.", entry.name, len(ok_finals))
    final = ok_finals[-1] if ok_finals else None
    if final is not None:
        metrics = {k: float(v) for k, v in final["final"].items() if isinstance(v, (int, float))}
        row.update({"final_trial": final.get("trialJobId"), "final_found_by": how, "metrics": metrics,
                    "params_M": metrics.get("params_M"), "mflops": metrics.get("mflops"),
                    "init_channels": metrics.get("init_channels")})
        ft = times.get(final.get("trialJobId"))
        row["seconds_final"] = ft["end"] - ft["start"] if ft else None
        first = min(v["start"] for v in measured.values()) if ft else None
        row["seconds_search"] = ft["start"] - first if ft else None  # first trial's start -> the final's start
        row["seconds_startup"] = first - launched_at if ft else None  # the launcher's check, NNI's start-up
        row["cpu_final"] = ft.get("cpu") if ft else None
        search_cpu = [v["cpu"] for tid, v in measured.items() if tid != final.get("trialJobId") and "cpu" in v]
        row["cpu_search"] = sum(search_cpu) if search_cpu else None
        report_path = folders.get(final.get("trialJobId"), Path("/nonexistent")) / "final_report.json"
        if report_path.is_file():
            report = json.loads(report_path.read_text())
            row["final_report"] = str(report_path)
            row["robustness_warnings"] = list((report.get("robustness") or {}).get("warnings") or [])
    row["trust_warnings"] = [{"source": w.get("source"), "message": w.get("message")} for w in read_warnings(work_dir)]
    best = result.get("best") or {}
    row["estimate"] = best.get("estimate") if isinstance(best, Mapping) else None
    if effective is not None:
        row.update(_settings_summary(effective))
    status = result.get("status")
    if final is None:
        row["status"] = "failed"
        why = [f"experiment ended {status}"]
        if result.get("errors"):
            why.append(f"errors: {result['errors']}")
        failed = [t for t in trials if t.get("status") != "SUCCEEDED"]
        for t in failed[:2]:
            folder = folders.get(t.get("trialJobId"))
            tail = _tail(folder / "trial.stderr") if folder else ""
            why.append(f"trial {t.get('trialJobId')} ({_task(t)}) {t.get('status')}" + (f": {tail}" if tail else ""))
        for t in finals:
            if t not in failed:
                why.append(f"final trial {t.get('trialJobId')} {t.get('status')} without a final metric")
        if not failed and not finals:
            why.append("no final trial (task 'final') finished")
        row["reason"] = "; ".join(why)
    elif status != "DONE":
        row["status"] = "failed"
        row["reason"] = f"experiment ended {status} (the final trial finished)"
    else:
        row["status"] = "ok"
    return row


def failed_row(entry: MethodEntry, reason: str, **extra: Any) -> dict[str, Any]:
    """A row for a method whose experiment could not run or be read."""
    return {"method": entry.name, "label": entry.label, "experiment": entry.experiment.name, "note": entry.note,
            "status": "failed", "reason": reason, **extra}


# --------------------------------------------------------------------------- outputs
def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _num(value: Any, digits: int) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _shared(rows: Sequence[Mapping[str, Any]], key: str) -> str | None:
    values = {r.get(key) for r in rows if r.get(key)}
    return values.pop() if len(values) == 1 else None


def markdown(doc: Mapping[str, Any], *, plot_link: str | None = None, heading: bool = True) -> str:
    """The table (and its notes) of a leaderboard document (:func:`run_leaderboard`'s result)."""
    rows, columns = doc["rows"], doc["columns"]
    shown = [r for r in rows if r.get("status") == "ok"]
    per_row = [k for k in ("dataset", "final_training", "evaluation") if _shared(shown, k) is None
               and any(r.get(k) for r in shown)]
    lines = [f"## {doc['title']}", ""] if heading else []
    if doc.get("description"):
        lines += [doc["description"], ""]
    head = ["method", "search (wall)", "search trials (CPU)", "final training (wall)", "trials", "params (M)",
            "MFLOPs",
            *[f"{c} (%)" for c in columns], *per_row, "notes"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2 - len(per_row))
              + "---|" * len(per_row) + "---|"]
    notes: list[str] = []
    for r in rows:
        if r.get("status") != "ok":
            cells = [f"**{r['label']}**", "failed", *["-"] * (len(head) - 3)]
            cells.append("see below")
            notes.append(f"- **{r['label']}** failed: {r.get('reason', 'unknown reason')}")
            lines.append("| " + " | ".join(cells) + " |")
            continue
        metrics = r.get("metrics") or {}
        warn = len(r.get("trust_warnings") or []) + len(r.get("robustness_warnings") or [])
        bad = r.get("trials_failed") or 0
        note = ", ".join(x for x in (f"{warn} warning{'s' if warn != 1 else ''}" if warn else "",
                                     f"{bad} failed trial{'s' if bad != 1 else ''}" if bad else "") if x)
        cells = [f"**{r['label']}**", _duration(r.get("seconds_search")), _duration(r.get("cpu_search")),
                 _duration(r.get("seconds_final")), str(r.get("trials", "-")), _num(r.get("params_M"), 3),
                 _num(r.get("mflops"), 2),
                 *[_pct(metrics.get(m)) for m in columns.values()], *[str(r.get(k) or "-") for k in per_row],
                 note or "-"]
        lines.append("| " + " | ".join(cells) + " |")
        for w in r.get("trust_warnings") or []:
            notes.append(f"- **{r['label']}** search warning ({w.get('source')}): {w.get('message')}")
        for w in r.get("robustness_warnings") or []:
            notes.append(f"- **{r['label']}** robustness report: {w}")
        if r.get("note"):
            notes.append(f"- **{r['label']}**: {r['note']}")
    lines.append("")
    facts = []
    for key, what in (("dataset", "Data"), ("final_training", "Final training"), ("evaluation", "Evaluation")):
        value = _shared(shown, key)
        if value and key not in per_row:
            facts.append(f"{what}: {value}.")
    metric_names = ", ".join(f"{c} = `{m}`" for c, m in columns.items())
    facts.append("Search: wall-clock from the first trial's start to the final trial's start (every search trial "
                 "and the tuner's work between them; NNI's start-up is not in it); final training: the final trial "
                 "(training, evaluation, robustness report); trials: "
                 "all of the experiment's NNI trials, the final one included; search trials (CPU): user + system CPU "
                 "time of the search trials' processes (bash `times` around each trial command; the tuner's own "
                 f"work is not in it). Accuracies are the final trial's NNI metrics ({metric_names}).")
    lines += [" ".join(facts), ""]
    if notes:
        lines += notes + [""]
    if plot_link:
        lines += [f"![{doc['title']}]({plot_link})", ""]
    dates = sorted({r["date"] for r in rows if r.get("date")})
    ran = f"; the experiments ran on {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "") if dates else ""
    reused = [r["label"] for r in rows if r.get("reused")]
    if reused:
        ran += f" ({len(reused)} of {len(rows)} rows kept from an earlier run with `--resume`: " \
               f"their experiments are unchanged)"
    lines.append(f"_Generated by `{doc.get('command', 'nni-robust leaderboard')}` on {doc.get('date', '?')}{ran}._")
    return "\n".join(lines) + "\n"


_CSV_FIELDS = ("method", "label", "status", "reason", "experiment", "experiment_id", "seconds_search",
               "seconds_final", "seconds_total", "trials", "trials_failed", "trial_seconds", "trial_cpu_seconds",
               "cpu_search", "cpu_final",
               "params_M", "mflops", "init_channels")


def write_csv(doc: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """One line per row: the costs, the size and every column's accuracy (fractions)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*_CSV_FIELDS, *doc["columns"].values(), "final_training", "evaluation"])
        for r in doc["rows"]:
            metrics = r.get("metrics") or {}
            writer.writerow([_csv(r.get(k)) for k in _CSV_FIELDS] + [_csv(metrics.get(m))
                                                                      for m in doc["columns"].values()]
                            + [r.get("final_training", ""), r.get("evaluation", "")])
    return path


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def plot(doc: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``leaderboard.png``: the accuracies per method (grouped bars), and robust accuracy vs search wall-clock."""
    path = Path(path)
    figure(doc).savefig(path, dpi=110)
    return path


def figure(doc: Mapping[str, Any]) -> Any:
    """The leaderboard's matplotlib figure (see :func:`plot`)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, columns = doc["rows"], dict(doc["columns"])
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.25, 1])
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(columns))
    colors = {c: f"C{i}" for i, c in enumerate(columns)}
    for i, (col, metric) in enumerate(columns.items()):
        values = [100 * (r.get("metrics") or {}).get(metric, float("nan")) if r.get("status") == "ok"
                  else float("nan") for r in rows]
        bars = ax.bar(x + (i - (len(columns) - 1) / 2) * width, values, width, label=col, color=colors[col])
        ax.bar_label(bars, labels=[f"{v:.0f}" if math.isfinite(v) else "" for v in values], fontsize=7, padding=1)
    for j, r in enumerate(rows):
        if r.get("status") != "ok":
            ax.text(j, 2, "failed", ha="center", va="bottom", rotation=90, color="0.3", fontsize=9)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("accuracy on the test split (%)")
    ax.set_ylim(0, 118)
    ax.set_title("Final network of each method")
    ax.legend(loc="upper center", ncols=len(columns), fontsize=8, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)

    # one colour per method (a legend, not text labels: methods of about the same cost would overlap), one
    # marker per attack; a method's markers are joined by a grey line
    from matplotlib.lines import Line2D

    markers = ["o", "s", "^", "D", "v"]
    attacks = list(doc.get("cost_plot") or [])
    ok = [r for r in rows if r.get("status") == "ok" and r.get("seconds_search") is not None]
    method_colors = _method_colors(len(ok))
    handles = []
    for n, r in enumerate(ok):
        xs = r["seconds_search"] / 60
        ys = [100 * (r.get("metrics") or {}).get(columns[c], float("nan")) for c in attacks]
        for k, y in enumerate(ys):
            if math.isfinite(y):
                ax2.scatter([xs], [y], marker=markers[k % len(markers)], s=max(30, 90 - 30 * k),
                            color=method_colors[n], edgecolors="white", linewidths=0.5, zorder=3 + k)
        finite = [y for y in ys if math.isfinite(y)]
        if len(finite) > 1:
            ax2.plot([xs] * 2, [min(finite), max(finite)], color="0.75", linewidth=1, zorder=2)
        handles.append(Line2D([], [], marker="o", linestyle="", color=method_colors[n], label=r["label"]))
    handles += [Line2D([], [], marker=markers[k % len(markers)], linestyle="", color="0.4", label=c)
                for k, c in enumerate(attacks)]
    ax2.set_xlabel("search cost: wall-clock from the first trial to the final trial (minutes)")
    ax2.set_ylabel("robust accuracy of the final network (%)")
    ax2.set_title("Robust accuracy vs search cost")
    ax2.grid(True, alpha=0.3)
    if ok:
        ax2.set_xlim(left=0, right=max(r["seconds_search"] for r in ok) / 60 * 1.25 + 0.5)
        ax2.set_ylim(0, 100)
    else:
        ax2.text(0.5, 0.5, "no finished method", ha="center", va="center", transform=ax2.transAxes)
    ax2.legend(handles=handles, loc="lower right", fontsize=8, ncols=2, title="method (colour), attack (marker)",
               title_fontsize=8)
    fig.suptitle(doc["title"])
    return fig


def _method_colors(n: int) -> list[Any]:
    """``n`` distinct colours, none of the bar chart's first columns' (``C0``..``C3``)."""
    from matplotlib import colormaps

    cmap = colormaps["Dark2"] if n <= 8 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def write_outputs(doc: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``leaderboard.{json,csv,md,png}`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "leaderboard.json", "csv": out / "leaderboard.csv", "md": out / "leaderboard.md",
             "png": out / "leaderboard.png"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(paths["json"])  # a crash while writing keeps the previous file whole
    write_csv(doc, paths["csv"])
    plot(doc, paths["png"])
    paths["md"].write_text(markdown(doc, plot_link=paths["png"].name))
    return paths


# --------------------------------------------------------------------------- README
def check_readme(readme: str | os.PathLike) -> str:
    """The README's text, checked to hold the markers once each, in order.

    Raises:
        ConfigError: the file or a marker is missing (naming both markers).
    """
    path = Path(readme)
    if not path.is_file():
        raise ConfigError(f"--readme {str(path)!r} does not exist.")
    text = path.read_text()
    starts, ends = text.count(MARK_START), text.count(MARK_END)
    if starts != 1 or ends != 1 or text.index(MARK_START) > text.index(MARK_END):
        raise ConfigError(f"--readme {path}: the leaderboard section must be marked by one line {MARK_START!r} "
                          f"followed by one line {MARK_END!r}; found {starts} start and {ends} end marker(s)"
                          + (" in the wrong order" if starts == ends == 1 else "")
                          + ". Add the two markers where the table belongs.")
    return text


def replace_readme_section(readme: str | os.PathLike, block: str) -> Path:
    """Replace what lies between the markers of ``readme`` with ``block`` (the markers stay)."""
    path = Path(readme)
    text = check_readme(path)
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n{block.strip()}\n{MARK_END}{tail}")
    return path


# --------------------------------------------------------------------------- the command
Runner = Callable[..., Mapping[str, Any]]


def _default_check(path: Path) -> dict[str, Any]:
    from .experiment import check_experiment

    return check_experiment(path)


def _default_runner(path: Path, **kwargs: Any) -> Mapping[str, Any]:
    from .experiment import run_experiment

    return run_experiment(path, **kwargs)


def run_leaderboard(config: LeaderboardConfig | str | os.PathLike, *, out: str | os.PathLike,
                    methods: Sequence[str] | None = None, readme: str | os.PathLike | None = None,
                    resume: bool = False, timeout: float | None = None,
                    experiment_dir: str | os.PathLike | None = None,
                    progress: Callable[[str], None] | None = None,
                    experiment_progress: Callable[[str], None] | None = None, runner: Runner | None = None,
                    check: Callable[[Path], Mapping[str, Any]] | None = None,
                    command: str = "nni-robust leaderboard") -> dict[str, Any]:
    """Run the selected methods' experiments one after another and write the leaderboard.

    Everything that can be checked is checked before the first experiment starts: the config, ``--methods``,
    the README's markers, and every effective experiment YAML (:func:`check_experiment`: NNI's keys, the
    tuner's arguments, what this machine lacks).

    Args:
        config: A :class:`LeaderboardConfig` or its YAML.
        out: Output folder (``leaderboard.{md,csv,json,png}``, rewritten after each experiment).
        methods: The names to run (default: all of the config).
        readme: A README whose marked section gets the table and the plot link at the end.
        resume: Reuse the rows of ``out/leaderboard.json`` that finished with the same effective experiment.
        timeout: Seconds per experiment (default: the config's).
        experiment_dir: NNI's experiment folder (default: each YAML's ``experimentWorkingDirectory``).
        progress: Called with one line per step.
        experiment_progress: Passed (prefixed with the method's name) as ``run_experiment``'s ``progress``: one line
            per trial started or ended and per stage of the strategy.
        runner, check: :func:`run_experiment` and :func:`check_experiment` (tests pass fakes).
        command: The command line, for the report.

    Returns:
        the leaderboard document (title, columns, rows, paths).
    """
    cfg = config if isinstance(config, LeaderboardConfig) else load_config(config)
    entries = cfg.select(methods)
    if readme is not None:
        check_readme(readme)
    if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
        raise ConfigError(f"--timeout must be a positive number of seconds, but got {timeout!r}.")
    timeout = timeout if timeout is not None else cfg.timeout
    runner = runner or _default_runner
    check = check or _default_check
    say = progress or (lambda line: logger.info("%s", line))
    out_dir = Path(out)
    previous: dict[str, dict[str, Any]] = {}
    if resume and (out_dir / "leaderboard.json").is_file():
        try:
            old_doc = json.loads((out_dir / "leaderboard.json").read_text())
            previous = {r["method"]: {"date": old_doc.get("date"), **r} for r in old_doc.get("rows", [])
                        if r.get("status") == "ok" and r.get("fingerprint")}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--resume: {out_dir / 'leaderboard.json'} is not a leaderboard file ({exc}).") from exc
    tmp = tempfile.TemporaryDirectory(prefix="nni_robust_leaderboard_")
    try:
        prepared = []
        problems = []
        for entry in entries:
            data = effective_experiment(cfg, entry)
            path = Path(tmp.name) / f"{entry.name}.yml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            summary = check(path)
            problems += [f"{entry.name}: {p}" for p in (summary or {}).get("environment") or []]
            prepared.append((entry, data, path, fingerprint(data)))
        if problems:
            raise ConfigError("These experiments cannot run on this machine:\n- " + "\n- ".join(problems))
        doc: dict[str, Any] = {"title": cfg.title, "description": cfg.description, "config": str(cfg.path),
                               "columns": dict(cfg.columns), "cost_plot": list(cfg.cost_plot),
                               "command": command, "date": time.strftime("%Y-%m-%d"), "timeout": timeout,
                               "rows": []}
        paths: dict[str, Path] = {}
        for i, (entry, data, path, fp) in enumerate(prepared, 1):
            old = previous.get(entry.name)
            if old is not None and old.get("fingerprint") == fp:
                row = dict(old, reused=True)
                say(f"[{i}/{len(prepared)}] {entry.name}: reused (finished earlier with the same experiment)")
            else:
                say(f"[{i}/{len(prepared)}] {entry.name}: running {entry.experiment} ...")
                launched = time.time()
                try:
                    extra = {} if experiment_progress is None else {
                        "progress": lambda line, name=entry.name: experiment_progress(f"  {name}: {line}")}
                    result = runner(path, timeout=timeout, experiment_dir=experiment_dir, **extra)
                    row = gather_row(entry, result, launched_at=launched, effective=data)
                    row["seconds_total"] = time.time() - launched  # (the launcher's restarts included)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 (one method's failure must not lose the other rows)
                    logger.exception("%s: the experiment failed", entry.name)
                    row = failed_row(entry, f"{type(exc).__name__}: {exc}", seconds_total=time.time() - launched)
                row["fingerprint"] = fp
                row["date"] = time.strftime("%Y-%m-%d")
                metrics = row.get("metrics") or {}
                said = ", ".join(f"{c} {_pct(metrics.get(m))}" for c, m in cfg.columns.items())
                say(f"[{i}/{len(prepared)}] {entry.name}: {row['status']} in {_duration(row.get('seconds_total'))}"
                    + (f": {said}" if row["status"] == "ok" else f": {row.get('reason')}"))
            doc["rows"].append(row)
            paths = write_outputs(doc, out_dir)
        if not prepared:
            paths = write_outputs(doc, out_dir)
        if readme is not None:
            link = os.path.relpath(paths["png"].resolve(), Path(readme).resolve().parent)
            replace_readme_section(readme, markdown(doc, plot_link=Path(link).as_posix(), heading=False))
            paths["readme"] = Path(readme)
        doc["paths"] = {k: str(v) for k, v in paths.items()}
        return doc
    finally:
        tmp.cleanup()
