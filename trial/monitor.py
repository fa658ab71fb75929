"""What ``nni-robust run`` says about a running experiment, and how its trials are paired with their parameters.

Pairing (:func:`pair_trials`). NNI 3.0's local training service hands each
trial process the next queued parameters when the process asks for them, so
with concurrent trials NNI's trial list (REST ``/trial-jobs``, the web UI) can
show a trial with the parameters of another (microsoft/nni#5726). What a
trial really ran is known from the trial itself: every metric it reports
carries the parameter id it received (REST ``/metric-data``, ``parameterId``),
and the trial entry point writes that id into its output folder when it starts
(:data:`TRIAL_MARKER`, local trials). Parameters are looked up by that id, in
the bridge tuner's own records (``<work_dir>/trials.jsonl``, paired by
parameter id) and in the parameter sets NNI stores (each set carries its own
id). NNI's pairing is the last resort (a trial on another machine that failed
before reporting anything).

Progress (:class:`ExperimentProgress`): fed successive looks at the
experiment, it emits one line per event: a trial started (its kind, i.e. the
trial task, its NNI id and what it evaluates), a trial ended (status, key
metric, duration), the search strategy entered a stage (``<work_dir>/progress.json``,
written by :func:`nni_robust.strategies.bridge.run_stages`), the search sent
its last trial. Nothing while nothing changes.

Summary (:func:`closing_summary`): what was searched, the architecture found
(cells as operation lists), its accuracy under attack, the warnings the
search recorded, and where the report, TensorBoard logs and the model are.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from nni_robust.strategies.records import read_trials
from nni_robust.strategies.trust import read_warnings

__all__ = ["TRIAL_MARKER", "PROGRESS_FILE", "ENDED", "read_trial_records", "read_markers", "read_stage",
           "pair_trials", "trial_kind", "metric_text", "ExperimentProgress", "closing_summary", "arch_lines"]

logger = logging.getLogger(__name__)

#: Written by ``python -m nni_robust.trial.run`` into ``$NNI_OUTPUT_DIR`` when a trial starts:
#: ``{"trial_id", "parameter_id", "task", "model_id"}`` (the parameters it really received).
TRIAL_MARKER = "nni_robust_trial.json"
#: Written into the work dir by a staged strategy (:func:`nni_robust.strategies.bridge.run_stages`).
PROGRESS_FILE = "progress.json"
#: NNI's statuses of an ended trial.
ENDED = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")

# metric keys shown for a trial that reports accuracies (the final training), in this order
_ACCURACIES = (("acc_clean", "clean"), ("acc_fgsm", "FGSM"), ("acc_pgd7", "PGD-7"), ("acc_pgd20", "PGD-20"),
               ("acc_pgd100", "PGD-100"), ("acc_autoattack", "AutoAttack"))


# --------------------------------------------------------------------------- reading
def decode_nni_json(value: Any) -> Any:
    """A metric or parameter value as NNI stores it (JSON inside a JSON string, up to three deep), decoded."""
    for _ in range(3):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def read_trial_records(work_dir: str | Path | None, experiment_id: str | None = None) -> dict[int, dict]:
    """The bridge tuner's records (``trials.jsonl``) by parameter id.

    Records of another experiment (a work dir shared by several) are skipped
    when both ids are known; of two records of one id the later wins.
    """
    out: dict[int, dict] = {}
    for record in read_trials(work_dir):
        pid = _int(record.get("parameter_id"))
        if pid is None:
            continue
        exp = record.get("experiment_id")
        if experiment_id and exp and exp != experiment_id:
            continue
        out[pid] = record
    return out


def read_markers(experiment_path: str | Path | None) -> dict[str, dict]:
    """Trial id -> the :data:`TRIAL_MARKER` its entry point wrote (local trials: ``environments/*/trials/<id>``)."""
    out: dict[str, dict] = {}
    if experiment_path is None:
        return out
    for path in Path(experiment_path).glob(f"environments/*/trials/*/{TRIAL_MARKER}"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[path.parent.name] = data
    return out


def read_stage(work_dir: str | Path | None) -> dict | None:
    """The strategy's stage (:data:`PROGRESS_FILE` of the work dir), or None."""
    if work_dir is None:
        return None
    try:
        data = json.loads((Path(work_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("stage"), str) else None


# --------------------------------------------------------------------------- pairing
def _parameter_sets(job: Mapping[str, Any]) -> list[dict]:
    out = []
    for hp in job.get("hyperParameters") or []:
        value = decode_nni_json(hp)
        if isinstance(value, dict):
            out.append(value)
    return out


def pair_trials(jobs: Sequence[Mapping[str, Any]], metrics: Iterable[Mapping[str, Any]] = (), *,
                records: Mapping[int, Mapping[str, Any]] | None = None,
                markers: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """NNI's trial jobs, each with the parameters it really ran.

    Args:
        jobs: REST ``/trial-jobs``.
        metrics: REST ``/metric-data`` (all of it, or any part: a trial's
            parameter id is read from any of its metrics).
        records: :func:`read_trial_records` (the tuner's parameters by id).
        markers: :func:`read_markers` (the id each trial process received).

    Returns:
        One dict per job: ``trialJobId``, ``sequence`` (NNI's trial number),
        ``status``, ``parameter_id``, ``paired_by`` (``metric``, ``trial`` or
        ``nni``: where the id came from), ``nni_parameter_id`` (the id NNI's
        trial list pairs it with), ``parameters``, ``final`` (its final
        metric, ``default`` a number), ``intermediate`` (its per-epoch metrics),
        ``start`` and ``end`` (NNI's times in ms, or None).
    """
    from nni_robust.strategies.display import restore

    records = records or {}
    markers = markers or {}
    by_pid: dict[int, Any] = {}
    for job in jobs:  # each stored parameter set carries its own id (NNI mixes up only which job ran it)
        for ps in _parameter_sets(job):
            pid = _int(ps.get("parameter_id"))
            if pid is not None:
                by_pid[pid] = ps.get("parameters", ps)
    for pid, record in records.items():  # the tuner's own, authoritative
        if isinstance(record.get("parameters"), Mapping):
            by_pid[pid] = record["parameters"]
    metric_pid: dict[str, int] = {}
    intermediate: dict[str, list] = {}
    for m in metrics:
        tid = m.get("trialJobId")
        pid = _int(m.get("parameterId"))
        if pid is not None and tid is not None:
            metric_pid.setdefault(tid, pid)
        if m.get("type") == "PERIODICAL":
            intermediate.setdefault(tid, []).append(decode_nni_json(m.get("data")))
    out = []
    for job in jobs:
        tid = job.get("trialJobId")
        finals = job.get("finalMetricData") or []
        final = restore(decode_nni_json(finals[-1].get("data"))) if finals else None
        pid, how = None, None
        for m in finals:
            pid = _int(m.get("parameterId"))
            if pid is not None:
                how = "metric"
                break
        if pid is None and tid in metric_pid:
            pid, how = metric_pid[tid], "metric"
        if pid is None and _int((markers.get(tid) or {}).get("parameter_id")) is not None:
            pid, how = _int(markers[tid]["parameter_id"]), "trial"
        sets = _parameter_sets(job)
        nni_pid = _int(sets[-1].get("parameter_id")) if sets else None
        if pid is None:
            pid, how = nni_pid, "nni" if nni_pid is not None else None
        elif nni_pid is not None and nni_pid != pid:
            logger.debug("Trial %s ran parameter id %d; NNI's trial list pairs it with %d (microsoft/nni#5726).",
                         tid, pid, nni_pid)
        params = by_pid.get(pid) if pid is not None else None
        if params is None and how == "trial":  # what the trial's marker says of itself
            params = {k: markers[tid].get(k) for k in ("task", "model_id")}
        elif params is None and sets and (how == "nni" or nni_pid == pid):
            params = sets[-1].get("parameters", sets[-1])
        out.append({"trialJobId": tid, "sequence": job.get("sequenceId"), "status": job.get("status"),
                    "parameter_id": pid, "paired_by": how, "nni_parameter_id": nni_pid, "parameters": params,
                    "final": final,
                    "intermediate": intermediate.get(tid, []), "start": job.get("startTime"),
                    "end": job.get("endTime")})
    return out


# --------------------------------------------------------------------------- describing trials
def trial_kind(parameters: Any) -> str:
    """The trial task (``supernet``, ``evaluate``, ``final``, ...), or ``trial`` for parameters of another tuner."""
    if isinstance(parameters, Mapping) and isinstance(parameters.get("task"), str):
        return parameters["task"]
    return "trial"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def _what(parameters: Any) -> str:
    """A few words on what a trial evaluates: the scalar arguments NNI's web UI shows too."""
    if not isinstance(parameters, Mapping):
        return ""
    if "task" in parameters:
        items = {k: v for k, v in (parameters.get("mutation_summary") or {}).items() if k != "kind"}
        if parameters.get("model_id") is not None:
            items = {"model": parameters["model_id"], **items}
    else:  # another tuner's hyper-parameters (e.g. a trade-off trial)
        items = {k: v for k, v in parameters.items() if isinstance(v, (int, float, str, bool))}
    return ", ".join(f"{k} {_short(v)}" for k, v in list(items.items())[:4])


def _provisional(parameters: Any) -> bool:
    """Whether a trial's objective was measured provisionally (:data:`~nni_robust.strategies.display.PROVISIONAL`)."""
    from nni_robust.strategies.display import PROVISIONAL, task_kind

    if not isinstance(parameters, Mapping) or "task" not in parameters:
        return False
    return task_kind(str(parameters["task"]), None, parameters.get("args")) == PROVISIONAL


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%"


def metric_text(final: Any) -> str:
    """The key metric of a trial's final result, e.g. ``default 0.412`` or ``clean 95.3%, PGD-20 71.2%``."""
    if isinstance(final, (int, float)) and not isinstance(final, bool):
        return f"default {final:.4g}"
    if not isinstance(final, Mapping):
        return "no final metric"
    accs = [f"{label} {_pct(final[key])}" for key, label in _ACCURACIES
            if isinstance(final.get(key), (int, float)) and math.isfinite(final[key])]
    if accs:
        return ", ".join(accs)
    value = final.get("default")
    return f"default {value:.4g}" if isinstance(value, (int, float)) else "no final metric"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _duration(start: Any, end: Any) -> str:
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)) or end < start:
        return ""
    seconds = (end - start) / 1000.0
    return f"{seconds:.0f} s" if seconds < 120 else _clock(seconds)


class ExperimentProgress:
    """One line per event of a running experiment, from successive looks at it (:meth:`update`).

    A trial's start is reported once its parameter id is known from the trial itself
    (its marker or a metric, :func:`pair_trials`), so that the line names what it
    really runs; after ``patience`` looks without (a trial on another machine) NNI's
    pairing is reported instead.

    Args:
        emit: Called with each line (``nni-robust run``: printed to stderr).
        clock: Seconds (the lines start with the time since construction).
        patience: Looks to wait for a running trial's own parameter id.
    """

    def __init__(self, emit: Callable[[str], None], *, clock: Callable[[], float] = time.monotonic,
                 patience: int = 15) -> None:
        self._emit = emit
        self._clock = clock
        self._patience = patience
        self._unpaired: dict[str, int] = {}
        self._start = clock()
        self._started: set[str] = set()
        self._ended: set[str] = set()
        self._stage: tuple | None = None
        self._status: str | None = None

    def _line(self, text: str) -> None:
        self._emit(f"[{_clock(self._clock() - self._start)}] {text}")

    def update(self, *, trials: Sequence[Mapping[str, Any]] = (), stage: Mapping[str, Any] | None = None,
               status: str | None = None) -> None:
        """Emit what changed since the last look.

        Args:
            trials: :func:`pair_trials` of the trials so far.
            stage: :func:`read_stage` (the strategy's stage), or None.
            status: NNI's experiment status (``RUNNING``, ``TUNER_NO_MORE_TRIAL``, ...).
        """
        ordered = sorted(trials, key=lambda t: (t.get("sequence") is None, t.get("sequence") or 0))
        self._trial_lines(ordered, ended=True)  # what ended, then the stage the search went on to, then what started
        if stage is not None:
            key = (stage.get("strategy"), stage.get("stage"))
            if key != self._stage:
                self._stage = key
                self._line(_stage_text(stage))
        self._trial_lines(ordered, ended=False)
        if status != self._status:
            previous, self._status = self._status, status
            # (NNI's TUNER_NO_MORE_TRIAL only means "nothing to send right now": an evolution waiting for its
            # population says it between generations; NO_MORE_TRIAL is the end: the search set the trial count)
            if status == "NO_MORE_TRIAL":
                running = sum(1 for t in trials if t.get("status") in ("RUNNING", "WAITING"))
                self._line(f"the search has sent its last trial; waiting for {running} running")
            elif status == "ERROR" and previous is not None:
                self._line("the experiment stopped with an error (see the summary)")

    def _trial_lines(self, trials: Sequence[Mapping[str, Any]], *, ended: bool) -> None:
        for t in trials:
            tid = str(t.get("trialJobId"))
            st = t.get("status")
            name = f"trial {t['sequence']} ({tid})" if t.get("sequence") is not None else f"trial {tid}"
            what = _what(t.get("parameters"))
            kind = trial_kind(t.get("parameters"))
            if not ended and st == "RUNNING" and tid not in self._started and tid not in self._ended:
                if t.get("paired_by") not in ("metric", "trial"):
                    self._unpaired[tid] = self._unpaired.get(tid, 0) + 1
                    if self._unpaired[tid] <= self._patience:
                        continue  # (its marker is written within seconds of its start)
                self._started.add(tid)
                self._line(f"{name} started: {kind}" + (f" ({what})" if what else ""))
            elif ended and st in ENDED and tid not in self._ended:
                self._ended.add(tid)
                took = _duration(t.get("start"), t.get("end"))
                result = metric_text(t.get("final")) if st == "SUCCEEDED" else "see its trial.log"
                if st == "SUCCEEDED" and _provisional(t.get("parameters")):
                    result += " (provisional: before the family selection)"
                head = f"{name} {st.lower()}" + (f" after {took}" if took else "")
                if tid not in self._started:  # ended between two looks
                    self._started.add(tid)
                    head += f": {kind}" + (f" ({what})" if what else "")
                else:
                    head += f": {kind}"
                self._line(f"{head}, {result}")


def _stage_text(stage: Mapping[str, Any]) -> str:
    name = stage.get("stage")
    label = stage.get("strategy") or "search"
    stages = [s for s in stage.get("stages") or [] if s != "done"]
    if name == "done":
        return f"{label}: search finished"
    where = f" ({stages.index(name) + 1} of {len(stages)})" if name in stages else ""
    state = f", {stage['state']}" if stage.get("state") else ""
    return f"{label}: stage {name}{where}{state}"


# --------------------------------------------------------------------------- the closing summary
def _plain(node: str) -> str:
    """A node name without TeX: ``c_{k-1}`` -> ``c[k-1]``, ``B_{0}`` -> ``B0``, ``3`` -> ``n3``."""
    if str(node).isdigit():
        return f"n{node}"
    return re.sub(r"_\{([^}]*)\}", lambda m: m.group(1) if m.group(1).isdigit() else f"[{m.group(1)}]", str(node))


def arch_lines(arch: Any) -> list[str]:
    """An architecture as text: per cell, each node as the operations on its incoming edges.

    e.g. ``normal cell (cells 0, 1, 2, 3): node 0 = sep 3x3(c[k-2]) + skip(c[k-1]); ...``;
    identical cells are listed once. Spaces that cannot describe their cells give their JSON.
    """
    try:
        from nni_robust.archdraw import cell_graphs_of, short_op

        graphs = cell_graphs_of(arch)
    except Exception:  # no drawing module, or a space without cell graphs
        text = arch.to_json() if hasattr(arch, "to_json") else json.dumps(arch, default=str)
        return [text if len(text) <= 400 else text[:397] + "..."]
    lines: list[str] = []
    seen: dict[tuple, int] = {}
    for g in graphs:
        key = (g.inputs, g.nodes, g.edges, g.output_from)
        head = f"{g.name}" + (f" ({g.note})" if g.note else "")
        if key in seen:
            lines.append(f"{head}: as {graphs[seen[key]].name}")
            continue
        seen[key] = graphs.index(g)
        nodes = []
        for node in g.nodes:
            ops = [f"{short_op(op)}({_plain(src)})" for src, dst, op in g.edges if dst == node]
            nodes.append(f"{_plain(node)} = {' + '.join(ops) if ops else 'zero'}")
        if g.output is not None and g.output_from is not None and tuple(g.output_from) != tuple(g.nodes):
            nodes.append(f"{_plain(g.output)} = concat({', '.join(_plain(n) for n in g.output_from)})")
        lines.append(f"{head}: " + "; ".join(nodes))
    return lines


def _arch_of(data: Mapping[str, Any], space: Mapping[str, Any]) -> Any:
    from nni_robust.strategies.networks import arch_from_json, arch_from_sample

    if data.get("arch"):
        return arch_from_json(data["arch"], data.get("final_space") or data.get("space") or space)
    if data.get("sample"):
        return arch_from_sample(data["sample"], data.get("space") or space)
    return None


def _warnings(work_dir: Path, best: Mapping[str, Any] | None, report: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []
    for r in read_warnings(work_dir):
        if isinstance(r, Mapping) and r.get("message"):
            out.append(f"{r.get('source', 'search')}: {r['message']}")
    for w in (best or {}).get("warnings") or []:
        out.append(f"search: {w}" if isinstance(w, str) else f"search: {json.dumps(w, default=str)}")
    for w in ((report or {}).get("robustness") or {}).get("warnings") or []:
        out.append(f"final evaluation: {w}")
    seen, unique = set(), []
    for w in out:  # (a strategy may record a warning and also keep it in its export: once)
        message = w.split(": ", 1)[-1]
        if message not in seen:
            seen.add(message)
            unique.append(w)
    return unique


def _eps_text(settings: Any) -> str:
    train = settings.final.train
    evals = sorted({float(spec.get("eps", 0)) for spec in settings.final.attacks.values() if spec.get("eps")})
    parts = []
    if train.attack != "none":
        parts.append(f"final training {train.attack.upper()}-{train.steps} at eps {train.eps:.4g}"
                     if train.attack == "pgd" else f"final training {train.attack.upper()} at eps {train.eps:.4g}")
    else:
        parts.append("final training without attack")
    if evals:
        parts.append("attacks at eps " + ", ".join(f"{e:.4g}" for e in evals) + " (l-inf, images in [0, 1])")
    return "; ".join(parts)


def closing_summary(result: Mapping[str, Any], *, keep: bool = False, report: str | None = None) -> str:
    """What a new user needs to read at the end of ``nni-robust run``: the search, its result, where things are.

    Args:
        result: :func:`nni_robust.trial.experiment.run_experiment`'s result.
        keep: The experiment (and its web UI) was left running.
        report: The experiment's report page (``nni-robust report``), when it was written.
    """
    from nni_robust.strategies.settings import TrialSettings

    page = report
    work_dir = Path(str(result.get("work_dir") or "."))
    exp_path = Path(str(result.get("experiment_dir") or "."))
    tuner = dict(result.get("tuner_args") or {})
    lines = [f"=== nni-robust run: experiment {result.get('id')} {result.get('status')} "
             f"after {_clock(float(result.get('seconds') or 0))} ==="]
    settings = None
    try:
        settings = TrialSettings.from_dict(tuner.get("settings") or {})
    except Exception as exc:  # (a trade-off experiment's YAML has no bridge settings)
        logger.debug("No settings for the summary: %s", exc)
    if tuner.get("strategy"):
        space = dict(tuner.get("space") or {})
        space_text = space.pop("name", "?") + (f" {json.dumps(space)}" if space else "")
        task_args = tuner.get("task_args") or {}
        if tuner.get("default_task") == "tabular":  # nothing is trained: a table answers every architecture
            table = f"{task_args.get('table', '')} ({task_args.get('dataset', 'cifar10')})"
            lines.append(f"Searched: {tuner['strategy']} over the {space_text} space, each architecture answered "
                         f"from the robustness table {table}; objective {task_args.get('objective', 'default')}")
        else:
            method = (tuner.get("strategy_args") or {}).get("method")
            lines.append(f"Searched: {tuner['strategy']}" + (f" (method {method})" if isinstance(method, str) else "")
                         + f" over the {space_text} space"
                         + (f" on {settings.dataset}" if settings is not None else ""))
            if settings is not None:
                lines.append(f"  robustness: {_eps_text(settings)}")
    counts: dict[str, dict[str, int]] = {}
    for t in result.get("trials") or []:
        c = counts.setdefault(trial_kind(t.get("parameters")), {})
        c[t.get("status")] = c.get(t.get("status"), 0) + 1
    if counts:
        lines.append("Trials: " + "; ".join(
            f"{kind} " + ", ".join(f"{n} {st.lower()}" for st, n in sorted(c.items())) for kind, c in counts.items()))
    mixed = [t for t in result.get("trials") or [] if t.get("paired_by") in ("metric", "trial")
             and t.get("nni_parameter_id") is not None and t.get("nni_parameter_id") != t.get("parameter_id")]
    if mixed:
        lines.append(f"  {len(mixed)} of them ran other parameters than NNI's trial list (and web UI) pairs them with "
                     "(microsoft/nni#5726): the lines above and the JSON use each trial's own; in the web UI, trust "
                     "a trial's metrics, not its parameters.")
    # the final trial: the one whose folder holds final_report.json, else the one whose parameters say final
    folders = {p.name: p for p in exp_path.glob("environments/*/trials/*") if p.is_dir()}
    finals = [t for t in result.get("trials") or []
              if (t.get("trialJobId") in folders and (folders[t["trialJobId"]] / "final_report.json").is_file())
              or (not folders and trial_kind(t.get("parameters")) == "final")]
    final = next((t for t in reversed(finals) if t.get("status") == "SUCCEEDED"), finals[-1] if finals else None)
    final_dir = folders.get(final["trialJobId"]) if final is not None else None
    report = None
    if final_dir is not None and (final_dir / "final_report.json").is_file():
        try:
            report = json.loads((final_dir / "final_report.json").read_text())
        except ValueError:
            report = None
    best = result.get("best") if isinstance(result.get("best"), Mapping) else None
    best_trial = None
    if best is None:  # a search that exports nothing (e.g. an evolution): its best trial by the objective
        scored = [t for t in result.get("trials") or [] if t.get("status") == "SUCCEEDED"
                  and trial_kind(t.get("parameters")) != "final" and (t.get("parameters") or {}).get("sample")
                  and isinstance((t.get("final") or {}).get("default"), (int, float))]
        best_trial = max(scored, key=lambda t: t["final"]["default"], default=None)
        if best_trial is not None:
            best = {"sample": best_trial["parameters"]["sample"], "space": dict(tuner.get("space") or {}),
                    "estimate": best_trial["final"]["default"]}
    arch = None
    space = dict(settings.space) if settings is not None else {}
    for data in ((report or {}), (best or {})):  # what the final network is, else what the search exported
        try:
            arch = _arch_of(data, space)
        except Exception as exc:
            logger.debug("Architecture not readable for the summary: %s", exc)
        if arch is not None:
            break
    if arch is not None:
        lines.append("Architecture found:" if best_trial is None else
                     f"Architecture found (the best trial, {best_trial['trialJobId']}: "
                     f"{metric_text(best_trial['final'])}):")
        lines += [f"  {line}" for line in arch_lines(arch)]
        if best and best_trial is None and isinstance(best.get("estimate"), (int, float)):
            lines.append(f"  estimated reward during the search: {best['estimate']:.4g}")
    elif tuner.get("strategy"):
        lines.append("Architecture found: none exported (the search did not finish?)")
    if final is not None:
        if final.get("status") == "SUCCEEDED" and isinstance(final.get("final"), Mapping):
            size = ""
            if report:
                size = (f" ({report.get('params_M', 0):.3f} M parameters, {report.get('mflops', 0):.1f} MFLOPs, "
                        f"{report.get('epochs')} epochs, {report.get('test_images')} test images)")
            lines.append(f"Final network{size}:")
            lines.append(f"  accuracy: {metric_text(final['final'])}")
        else:
            lines.append(f"Final network: trial {final.get('trialJobId')} {str(final.get('status')).lower()}")
    warnings = _warnings(work_dir, best, report)
    lines.append(f"Warnings ({len(warnings)}):" if warnings else "Warnings: none recorded")
    lines += [f"  ! {w}" for w in warnings]
    lines.append("Where things are:")
    lines.append(f"  report page: {page}" if page else
                 f"  report page: nni-robust report {result.get('id')} --experiment-dir {exp_path.parent}")
    lines.append(f"  search work dir: {work_dir}")
    for name in ("best_architecture.json", "report", "pareto.md"):
        if (work_dir / name).exists():
            lines.append(f"  {'report' if name != 'best_architecture.json' else 'architecture'}: {work_dir / name}")
    for path in sorted(work_dir.glob("*_report*")):
        if path.name != "experiment_report":  # (the report page's folder)
            lines.append(f"  report: {path}")
    if final_dir is not None:
        for name, label in (("model.pt", "final model"), ("final_report.json", "final report"),
                            ("robustness.md", "robustness report")):
            if (final_dir / name).exists():
                lines.append(f"  {label}: {final_dir / name}")
    specs = []
    trials_dir = next(iter(sorted(exp_path.glob("environments/*/trials"))), None)
    if trials_dir is not None:
        specs.append(f"trials:{trials_dir}")
    if (work_dir / "tensorboard").is_dir():
        specs.append(f"search:{work_dir / 'tensorboard'}")
    if specs:
        lines.append("  TensorBoard: tensorboard --logdir_spec " + ",".join(specs))
    lines.append(f"  web UI: http://127.0.0.1:{result.get('port')}" if keep else
                 f"  web UI (stopped): nnictl view {result.get('id')} --experiment_dir {exp_path.parent}")
    return "\n".join(lines)
