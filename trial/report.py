"""``nni-robust report EXPERIMENT``: one page (Markdown + HTML) that says what an experiment did and found.

EXPERIMENT is an NNI experiment id (looked up in ``--experiment-dir``,
default ``~/nni-experiments``), an NNI experiment folder, or a search's work
dir (the tuner's ``classArgs.work_dir``; its ``trials.jsonl`` names the
experiment). The page is read from what the run left behind, for any method:

* NNI's database (``<experiment>/db/nni.sqlite``: the trials, their
  parameters, times and final metrics) and the bridge tuner's
  ``<work_dir>/trials.jsonl`` (the results as the strategy saw them);
* ``<work_dir>/best_architecture.json`` and the final trial's
  ``final_report.json`` / ``robustness.{md,png}`` (the architecture, drawn
  with :mod:`nni_robust.archdraw`, and its evaluation);
* ``<work_dir>/warnings.jsonl`` (:mod:`nni_robust.strategies.trust`) and the
  ``warnings`` of the reports in the work dir;
* every method's own report files in the work dir and its sub-folders
  (Markdown tables and PNG plots: MSRobNet's family selection, RobNet's
  analyses, ABanditNAS's report, the predictor's quality, an Optuna
  experiment's Pareto front ``pareto.md`` / ``pareto.png``, ...).

Sections: at a glance; warnings; stages and their trials (kind, count,
durations, key metrics; every trial in a folded table); the best
architecture drawn as cell graphs; the final evaluation (clean, FGSM, PGD,
AutoAttack, the robustness suite, the training curve); the method's reports.
It writes ``<work_dir>/experiment_report/{report.md, index.html}`` and the
pictures beside them (``-o`` for another folder); the folder can be moved
(every picture is copied into it).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nni_robust.errors import ConfigError

from nni_robust.strategies.records import read_trials

from .monitor import decode_nni_json, trial_kind

__all__ = ["locate_experiment", "load_experiment", "build_report", "write_report", "REPORT_DIR"]

logger = logging.getLogger(__name__)

#: The report's folder inside the work dir.
REPORT_DIR = "experiment_report"

_FINISHED = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")
_KIND_TEXT = {"search": "the search's objective", "supernet": "supernet training", "final": "final training "
              "and evaluation", "screening": "screening",
              "provisional": "the objective, provisional (measured before the search fixed it)"}
_SKIP_DIRS = {"trials", "supernets", "supernet", REPORT_DIR, "tensorboard", "checkpoints", "fsp", "shared"}


# ---------------------------------------------------------------------------- finding the experiment
def locate_experiment(experiment: str | os.PathLike, *, experiment_dir: str | os.PathLike = "~/nni-experiments"
                      ) -> tuple[Path | None, Path | None]:
    """(NNI experiment folder or None, work dir or None) of an experiment id, experiment folder or work dir.

    Raises:
        ConfigError: nothing of an experiment is found there.
    """
    root = Path(os.path.expanduser(str(experiment_dir)))
    path = Path(os.path.expanduser(str(experiment)))
    if not path.exists() and (root / str(experiment)).is_dir():
        path = root / str(experiment)
    if (path / "db" / "nni.sqlite").is_file() or (path / "log").is_dir() and not (path / "trials.jsonl").exists():
        config = _profile(path)
        work = Path(os.path.expanduser(str(((config.get("tuner") or {}).get("classArgs") or {}).get("work_dir")
                                           or path / "nni_robust")))
        return path, (work if work.is_dir() else None)
    markers = ("trials.jsonl", "best_architecture.json", "strategy_state.json", "pareto.md", "optuna.db")
    if path.is_dir() and any((path / m).exists() for m in markers):
        exp_id = _experiment_id_of(path)
        exp = root / exp_id if exp_id and (root / exp_id).is_dir() else None
        if exp is None and path.name == "nni_robust" and (path.parent / "db").is_dir():
            exp = path.parent
        return exp, path
    raise ConfigError(f"nni-robust report: {experiment!r} is neither an experiment id in {root}, an NNI experiment "
                      f"folder (with db/nni.sqlite) nor a search's work dir (with trials.jsonl or "
                      f"best_architecture.json).")


def _experiment_id_of(work_dir: Path) -> str | None:
    return next((str(r["experiment_id"]) for r in read_trials(work_dir) if r.get("experiment_id")), None)


def _db(exp_dir: Path | None) -> sqlite3.Connection | None:
    path = exp_dir / "db" / "nni.sqlite" if exp_dir is not None else None
    if path is None or not path.is_file():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)


def _profile(exp_dir: Path) -> dict[str, Any]:
    con = _db(exp_dir)
    if con is None:
        return {}
    try:
        row = con.execute("SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    return json.loads(row[0]) if row and row[0] else {}


def _nni_trials(exp_dir: Path | None) -> list[dict[str, Any]]:
    """The trials of NNI's database: id, sequence, status, start/end (s), parameters, final, #intermediate, folder."""
    from nni_robust.strategies.display import restore

    con = _db(exp_dir)
    if con is None:
        return []
    trials: dict[str, dict[str, Any]] = {}
    try:
        for ts, tid, event, data, log_path, seq in con.execute(
                "SELECT timestamp, trialJobId, event, data, logPath, sequenceId FROM TrialJobEvent ORDER BY timestamp"):
            t = trials.setdefault(tid, {"id": tid, "sequence": seq, "status": "WAITING", "start": None, "end": None,
                                        "parameters": None, "final": None, "intermediate": 0, "folder": None})
            if data and t["parameters"] is None:
                try:
                    t["parameters"] = json.loads(data).get("parameters")
                except (ValueError, AttributeError):
                    pass
            if log_path:
                t["folder"] = log_path
            if event == "RUNNING" and t["start"] is None:
                t["start"] = ts / 1000.0
            if event in _FINISHED:
                t["end"] = ts / 1000.0
            if event not in ("WAITING", "ADD_CUSTOMIZED", "ADD_RESUMED"):
                t["status"] = event
            if seq is not None:
                t["sequence"] = seq
        for tid, kind, data in con.execute("SELECT trialJobId, type, data FROM MetricData"):
            if tid not in trials:
                continue
            if kind == "FINAL":
                trials[tid]["final"] = restore(decode_nni_json(data))
            else:
                trials[tid]["intermediate"] += 1
    except sqlite3.Error as exc:
        logger.warning("Could not read NNI's database of %s: %s", exp_dir, exc)
    finally:
        con.close()
    out = sorted(trials.values(), key=lambda t: (t["sequence"] if t["sequence"] is not None else 1e9, t["id"]))
    for t in out:
        folder = Path(t["folder"]) if t["folder"] else None
        if folder is None or not folder.is_dir():
            found = sorted((exp_dir / "environments").glob(f"*/trials/{t['id']}")) if exp_dir else []
            folder = found[0] if found else None
        t["folder"] = folder
    return out


def _task_fn(task: str) -> Any:
    """The registered function of ``task`` (it may declare its ``trial_kind``), or None."""
    from nni_robust.strategies.registry import task_function

    try:
        return task_function(task)
    except Exception:  # an unknown or unimportable task: the name decides
        return None


def _best_trial(trials: list[dict[str, Any]], best_json: Mapping[str, Any] | None
                ) -> tuple[dict[str, Any] | None, float | None]:
    """The search's best trial and, when the search's export names it, the export's objective value.

    The export (``best_architecture.json``) ranks every evaluated architecture under the search's final
    definition of the objective (MSRobNet re-reads its random stage's provisional estimates under the
    chosen family), so its ``sample`` picks the trial (the best of those that evaluated it) and its
    ``estimate`` is the value; without an export, or one naming no trial, the objective trial with the
    largest ``default``. Returns ``(None, None)`` when no trial has a numeric objective.
    """
    from nni_robust.strategies.display import OBJECTIVE, PROVISIONAL

    scored = [t for t in trials if t["kind"] in (OBJECTIVE, PROVISIONAL)
              and _num((t["final"] or {}).get("default")) is not None]
    sample = (best_json or {}).get("sample")
    if sample is not None:
        same = [t for t in scored if isinstance(t["parameters"], Mapping) and t["parameters"].get("sample") == sample]
        if same:
            best = max(same, key=lambda t: _num(t["final"]["default"]))
            value = _num(best_json.get("estimate"))
            return best, value if value is not None else _num(best["final"]["default"])
    objective = [t for t in scored if t["kind"] == OBJECTIVE]
    return (max(objective, key=lambda t: _num(t["final"]["default"])), None) if objective else (None, None)


def load_experiment(experiment: str | os.PathLike, *, experiment_dir: str | os.PathLike = "~/nni-experiments"
                    ) -> dict[str, Any]:
    """Everything the page needs, read from the experiment's folders (see the module docstring)."""
    from nni_robust.strategies.display import task_kind

    exp_dir, work_dir = locate_experiment(experiment, experiment_dir=experiment_dir)
    config = _profile(exp_dir) if exp_dir is not None else {}
    trials = _nni_trials(exp_dir)
    records = read_trials(work_dir)
    if not trials:  # no NNI database (e.g. a search run in-process): the bridge's records
        for n, r in enumerate(records):
            trials.append({"id": f"#{r.get('parameter_id', n)}", "sequence": r.get("parameter_id", n),
                           "status": r.get("status"), "start": None, "end": r.get("time"),
                           "parameters": r.get("parameters"), "final": r.get("result"), "intermediate": 0,
                           "folder": None})
    by_pid = {r.get("parameter_id"): r for r in records}
    for t in trials:
        params = t["parameters"] if isinstance(t["parameters"], Mapping) else {}
        t["task"] = trial_kind(params) if params else "trial"
        t["kind"] = (task_kind(t["task"], _task_fn(t["task"]), params.get("args")) if params and "task" in params
                     else "search")
        rec = by_pid.get(t["sequence"]) if t["final"] is None else None
        if rec is not None and rec.get("result") is not None:
            t["final"] = rec["result"]
        t["duration"] = (t["end"] - t["start"]) if t["start"] and t["end"] else None
    exp_id = exp_dir.name if exp_dir is not None else _experiment_id_of(work_dir) if work_dir else None
    return {"id": exp_id, "experiment_dir": exp_dir, "work_dir": work_dir, "config": config, "trials": trials}


# ---------------------------------------------------------------------------- helpers
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(value: Any) -> str:
    v = _num(value)
    return "–" if v is None else f"{100 * v:.1f}%"


def _fmt(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "–" if value is None else html.escape(str(value))
    if v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.4g}" if abs(v) >= 1 or v == 0 else f"{v:.3f}"


def _duration(seconds: Any) -> str:
    s = _num(seconds)
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _when(ts: Any) -> str:
    v = _num(ts)
    return _dt.datetime.fromtimestamp(v).strftime("%Y-%m-%d %H:%M") if v else "–"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _demote(markdown: str, levels: int = 2) -> str:
    """Headings of an embedded Markdown report ``levels`` deeper (``#`` -> ``###``)."""
    return re.sub(r"^(#{1,6})(\s)", lambda m: "#" * min(6, len(m.group(1)) + levels) + m.group(2), markdown,
                  flags=re.M)


def _copy(src: Path, out: Path, name: str) -> str:
    dst = out / "figures" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return f"figures/{name}"


# ---------------------------------------------------------------------------- sections
_KEY_METRICS = ("acc_clean", "acc_adv", "acc_fgsm", "acc_pgd20", "acc_autoattack", "probe_acc_clean",
                "probe_acc_adv", "val_clean_acc", "val_adv_acc", "arch_entropy", "mflops", "fit_ok", "screened")


_BOOKKEEPING = re.compile(r"^(default|value|seconds|.*_seconds|time_s|.*_s|images_per_s|epochs?|lr|width|unit|index|"
                          r"phase|target_mflops|init_channels|steps|samples|N)$")


def _key_metrics(final: Mapping[str, Any] | None, limit: int = 4) -> list[tuple[str, Any]]:
    if not isinstance(final, Mapping):
        return []
    keys = [k for k in _KEY_METRICS if k in final]
    if len(keys) < 3:
        keys += [k for k in final if k not in keys and not _BOOKKEEPING.match(k) and _num(final[k]) is not None]
    return [(k, final[k]) for k in keys[:limit]]


def _attack_order(item: tuple[str, Any]) -> tuple:
    """clean, fgsm, pgd7, pgd20, pgd100, then the rest (by name)."""
    name = item[0]
    m = re.match(r"^pgd(\d+)(.*)$", name)
    if name == "clean":
        return (0, 0, "")
    if name == "fgsm":
        return (1, 0, "")
    if m:
        return (2, int(m.group(1)), m.group(2))
    return (3, 0, name)


def _stages(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    for t in trials:
        s = stages.setdefault((t["task"], t["kind"]), {"task": t["task"], "kind": t["kind"], "trials": []})
        s["trials"].append(t)
    return list(stages.values())


def _stage_rows(stages: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for n, s in enumerate(stages, 1):
        ts = s["trials"]
        ok = sum(t["status"] == "SUCCEEDED" for t in ts)
        durations = [t["duration"] for t in ts if t["duration"] is not None]
        values = [v for v in (_num((t["final"] or {}).get("default")) for t in ts) if v is not None]
        if values:
            value = (f"{_fmt(min(values))} – {_fmt(statistics.median(values))} – {_fmt(max(values))}"
                     if len(values) > 1 else _fmt(values[0]))
        else:
            value = "–"
        others = ", ".join(sorted({t["status"] for t in ts} - {"SUCCEEDED"}))
        status = f"{ok} of {len(ts)} succeeded" + (f" ({others})" if others else "")
        rows.append([n, f"`{s['task']}`", _KIND_TEXT.get(s["kind"], s["kind"]), status,
                     _duration(sum(durations)) if durations else "–",
                     _duration(statistics.median(durations)) if durations else "–", value])
    return rows


def _trial_rows(trials: Sequence[Mapping[str, Any]], best_id: Any) -> list[list[Any]]:
    rows = []
    for t in trials:
        final = t["final"] if isinstance(t["final"], Mapping) else {}
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in _key_metrics(final))
        star = " ★" if t["id"] == best_id else ""
        seq = t["sequence"] if t["sequence"] is not None else "–"
        rows.append([seq, f"`{t['id']}`{star}", t["task"], t["status"], _duration(t["duration"]),
                     _fmt(final.get("default")), metrics or "–"])
    return rows


def _arch_from(data: Mapping[str, Any], settings_space: Mapping[str, Any] | None) -> Any:
    """The architecture of a best_architecture.json / final_report.json dict (``arch`` JSON, else ``sample``)."""
    from nni_robust.strategies.networks import arch_from_json, arch_from_sample

    if data.get("arch") is not None:
        arch = data["arch"]
        arch = json.loads(arch) if isinstance(arch, str) else arch
        kind = arch.get("space", "dense_rob") if isinstance(arch, Mapping) else "dense_rob"
        return arch_from_json(arch, {"name": kind} if kind != "dense_rob" else {"name": "dense_rob"})
    if data.get("sample") is not None and settings_space is not None:
        return arch_from_sample(data["sample"], settings_space)
    return None


def _warnings(work_dir: Path | None, final_report: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(source, message) of every warning the run raised."""
    out: list[tuple[str, str]] = []
    if work_dir is not None:
        from nni_robust.strategies.trust import read_warnings

        out += [(str(w.get("source", "")), str(w.get("message", ""))) for w in read_warnings(work_dir)]
        for path in sorted(work_dir.glob("*.json")) + sorted(work_dir.glob("*/*.json")):
            if path.parent.name in _SKIP_DIRS or path.stat().st_size > 5_000_000:
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
            found = data.get("warnings") if isinstance(data, Mapping) else None
            if isinstance(found, list):
                out += [(path.relative_to(work_dir).as_posix(), str(w)) for w in found if isinstance(w, str)]
    robustness = (final_report or {}).get("robustness") or {}
    out += [("final.robustness", str(w)) for w in robustness.get("warnings") or []]
    seen, unique = set(), []
    for source, message in out:
        if message and message not in seen:
            seen.add(message)
            unique.append((source, message))
    return unique


def _method_reports(work_dir: Path | None, out: Path) -> list[str]:
    """The method's own reports in the work dir (Markdown embedded, PNGs copied beside the page)."""
    if work_dir is None:
        return []
    folders = [work_dir] + sorted(p for p in work_dir.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS
                                  and not p.name.startswith("."))
    lines: list[str] = []
    for folder in folders:
        pngs = sorted(folder.glob("*.png"))
        mds = sorted(folder.glob("*.md"))
        if folder == work_dir:  # (the Pareto front has its own section)
            pngs = [p for p in pngs if p.name not in ("architecture.png", "pareto.png")]
            mds = [p for p in mds if p.name != "pareto.md"]
        if not pngs and not mds:
            continue
        rel = "." if folder == work_dir else folder.relative_to(work_dir).as_posix()
        lines += [f"### `{rel}/`", ""]
        prefix = "" if folder == work_dir else f"{folder.name}_"
        copied = {p.name: _copy(p, out, prefix + p.name) for p in pngs}
        for md in mds:
            text = md.read_text(encoding="utf-8", errors="replace")
            for name, link in copied.items():  # the report's own picture links, to the copies
                text = text.replace(f"]({name})", f"]({link})")
            lines += [f"<details markdown=\"1\"><summary>{html.escape(md.name)}</summary>", "",
                      _demote(text, 3).strip(), "", "</details>", ""]
        for png in pngs:
            lines += [f"![{png.name}]({copied[png.name]})", "", f"*{rel}/{png.name}*", ""]
    return lines


def _training_curve(history: Sequence[Mapping[str, Any]], path: Path) -> bool:
    epochs = [h.get("epoch", n + 1) for n, h in enumerate(history)]
    series = {k: [_num(h.get(k)) for h in history] for k in ("train_acc", "train_adv_acc", "val_acc", "lr")
              if any(_num(h.get(k)) is not None for h in history)}
    loss = [_num(h.get("train_loss")) for h in history]
    if len(history) < 2 or not series:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    for key in ("train_acc", "train_adv_acc", "val_acc"):
        if key in series:
            ax.plot(epochs, series[key], marker="o", ms=3, label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(epochs, loss, marker="o", ms=3, color="#D55E00")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True


# ---------------------------------------------------------------------------- the page
def build_report(data: Mapping[str, Any], out: Path) -> str:
    """The Markdown of the page (pictures written into ``out``)."""
    from nni_robust.archdraw import draw_architecture, save_figure

    config, trials = data["config"], data["trials"]
    work_dir, exp_dir = data["work_dir"], data["experiment_dir"]
    args = ((config.get("tuner") or {}).get("classArgs") or {})
    settings = args.get("settings") or {}
    name = config.get("experimentName") or (exp_dir.name if exp_dir else work_dir.name if work_dir else "experiment")
    strategy = args.get("strategy") or (config.get("tuner") or {}).get("className") or "?"
    method = (args.get("strategy_args") or {}).get("method")
    stages = _stages(trials)
    finals = [t for t in trials if t["task"] == "final" and t["status"] == "SUCCEEDED"]
    final_trial = finals[-1] if finals else None
    final_report = None
    if final_trial is not None and final_trial["folder"] is not None:
        path = Path(final_trial["folder"]) / "final_report.json"
        final_report = json.loads(path.read_text()) if path.is_file() else None
    best_json = None
    if work_dir is not None and (work_dir / "best_architecture.json").is_file():
        best_json = json.loads((work_dir / "best_architecture.json").read_text())
    best, best_value = _best_trial(trials, best_json)
    starts = [t["start"] for t in trials if t["start"]]
    ends = [t["end"] for t in trials if t["end"]]

    lines = [f"# {name}", ""]
    facts = [("experiment", f"`{data['id']}`" if data["id"] else "–"),
             ("strategy", f"`{strategy}`" + (f" (method `{method}`)" if method else "")),
             ("space", f"`{json.dumps(args.get('space'))}`" if args.get("space") else "–"),
             ("dataset", f"`{settings.get('dataset', '–')}`"),
             ("trials", f"{len(trials)} ({sum(t['status'] == 'SUCCEEDED' for t in trials)} succeeded)"),
             ("ran", f"{_when(min(starts) if starts else None)} to {_when(max(ends) if ends else None)}, "
                     f"{_duration(max(ends) - min(starts)) if starts and ends else '–'}"),
             ("work dir", f"`{work_dir}`" if work_dir else "–"),
             ("experiment folder", f"`{exp_dir}`" if exp_dir else "–")]
    lines += _table(["", ""], facts)

    # ---- at a glance
    arch, arch_png = None, None
    arch_source = final_report if final_report and final_report.get("arch") else best_json
    if arch_source:
        try:
            arch = _arch_from(arch_source, settings.get("space"))
        except Exception as exc:  # the page reports what it cannot read, it does not fail on it
            logger.warning("Could not read the architecture: %s", exc)
    if arch is not None:
        try:
            fig = draw_architecture(arch, title=f"{name}: the {'final' if arch_source is final_report else 'best'} "
                                                f"architecture")
            arch_png = save_figure(fig, out / "figures" / "architecture.png")
        except Exception as exc:
            logger.warning("Could not draw the architecture: %s", exc)
    warnings = _warnings(work_dir, final_report)
    glance = []
    if best is not None:
        source = ("the search's export, `best_architecture.json`" if best_value is not None
                  else "the largest `default`")
        glance.append(f"Best search result: trial `{best['id']}` ({best['task']}), objective "
                      f"**{_fmt(best_value if best_value is not None else best['final']['default'])}** ({source}).")
    if arch is not None:
        text = str(arch)
        glance.append(f"Architecture: `{text if len(text) <= 200 else text[:180] + ' …'}` (drawn below).")
    if final_report:
        acc = final_report.get("accuracy") or {}
        rob = ((final_report.get("robustness") or {}).get("metrics") or {})
        parts = [f"{k} {_pct(v)}" for k, v in sorted(acc.items(), key=_attack_order)]
        if "autoattack" in rob:
            parts.append(f"AutoAttack {_pct(rob['autoattack'])}")
        epochs = final_report.get("epochs", "?")
        glance.append(f"Final network ({_fmt(final_report.get('mflops'))} MFLOPs, {_fmt(final_report.get('params_M'))}"
                      f" M parameters, {epochs} epoch{'' if epochs == 1 else 's'}) on the "
                      f"{final_report.get('test_images', '?')} test images: **{', '.join(parts)}**.")
    elif finals == [] and any(t["task"] == "final" for t in trials):
        glance.append("The final trial did not succeed.")
    if not trials:
        glance.append("No trial ran" + (f": see NNI's logs in `{exp_dir / 'log'}` (the dispatcher log has the "
                                        "tuner's errors)." if exp_dir is not None else "."))
    glance.append(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''} (below)." if warnings
                  else "No warning was raised.")
    lines += ["## At a glance", ""] + [f"- {g}" for g in glance] + [""]

    # ---- warnings
    if warnings:
        lines += ["## Warnings", "", "Results that should not be trusted as they are, as the run reported them:", ""]
        lines += [f"- **{html.escape(src, False)}**: {html.escape(msg, False)}" if src
                  else f"- {html.escape(msg, False)}" for src, msg in warnings] + [""]

    # ---- stages and trials
    if trials:
        lines += ["## Stages and trials", "",
                  "One row per kind of trial, in the order they started. `default` is what the trial reported to "
                  "NNI: for the search's own trials the objective the strategy ranks, for the others their main "
                  "number (NNI's web UI shows those as text, so that its overview ranks the objective only). "
                  "Values: min – median – max.", ""]
        lines += _table(["stage", "task", "what it is", "trials", "time (sum)", "time (median)", "default"],
                        _stage_rows(stages))
        lines += ["<details markdown=\"1\"><summary>Every trial (★ the best by the objective)</summary>", ""]
        lines += _table(["no.", "trial", "task", "status", "duration", "default", "key metrics"],
                        _trial_rows(trials, best["id"] if best else None))
        lines += ["</details>", ""]

    # ---- architecture
    if arch is not None or best_json:
        lines += ["## The architecture", ""]
        if arch_png is not None:
            src = "the final trial's `final_report.json`" if arch_source is final_report else "`best_architecture.json`"
            lines += [f"![architecture]({arch_png.relative_to(out).as_posix()})", "",
                      f"*Drawn from {src}: each panel is one cell type; nodes left to right, each arc an operation "
                      "(label at its top), dashed: concatenation into the cell's output.*", ""]
        if best_json:
            scalars = [(k, _fmt(v)) for k, v in sorted(best_json.items()) if _num(v) is not None
                       or isinstance(v, str) and len(v) < 80 and k not in ("arch",)]
            if scalars:
                lines += ["`best_architecture.json`:", ""] + _table(["field", "value"], scalars)

    # ---- final evaluation
    if final_report:
        lines += ["## Final evaluation", ""]
        acc = final_report.get("accuracy") or {}
        lines += _table(["attack", "test accuracy"], [(k, _pct(v)) for k, v in sorted(acc.items(), key=_attack_order)])
        lines += _table(["", ""], [("initial channels", final_report.get("init_channels")),
                                   ("MFLOPs / params (M)", f"{_fmt(final_report.get('mflops'))} / "
                                                            f"{_fmt(final_report.get('params_M'))}"),
                                   ("epochs, training time", f"{final_report.get('epochs')}, "
                                                             f"{_duration(final_report.get('train_seconds'))}"),
                                   ("trial folder", f"`{final_trial['folder']}`")])
        history = final_report.get("history") or []
        if history and _training_curve(history, out / "figures" / "training.png"):
            lines += ["![training](figures/training.png)", "", "*The final training, per epoch.*", ""]
        rob = final_report.get("robustness") or {}
        folder = Path(final_trial["folder"])
        if (folder / "robustness.md").is_file():
            lines += ["<details open markdown=\"1\"><summary>Robustness suite "
                      f"({html.escape(str(rob.get('suite', '')))})</summary>", "",
                      _demote((folder / "robustness.md").read_text(encoding="utf-8"), 2).strip(), "", "</details>", ""]
        if (folder / "robustness.png").is_file():
            lines += [f"![robustness]({_copy(folder / 'robustness.png', out, 'robustness.png')})", ""]

    # ---- an Optuna experiment's Pareto front (each point with its parameters)
    if work_dir is not None and (work_dir / "pareto.md").is_file():
        lines += ["## Pareto front", "", "The trials no other trial beats in every objective, with their parameters "
                  f"(`{work_dir / 'pareto.csv'}`; the study: `{work_dir / 'optuna.db'}`).", ""]
        lines += [_demote((work_dir / "pareto.md").read_text(encoding="utf-8"), 2).strip(), ""]
        if (work_dir / "pareto.png").is_file():
            lines += [f"![Pareto front]({_copy(work_dir / 'pareto.png', out, 'pareto.png')})", ""]

    # ---- the method's own reports
    method_lines = _method_reports(work_dir, out)
    if method_lines:
        lines += ["## The method's reports", "", "Files the search wrote into its work dir (tables folded).", ""]
        lines += method_lines

    lines += ["## Where to look next", "",
              f"- Web UI: `nnictl view {data['id']}` (or `nni-robust resume {data['id']}`)" if data["id"] else "",
              f"- TensorBoard: `tensorboard --logdir {exp_dir}/environments` (runs are named `<task>-<trial id>`)"
              if exp_dir else "",
              f"- Work dir: `{work_dir}`" if work_dir else "", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 48px; background: white; min-height: 100vh; }
h1 { font-size: 1.9em; border-bottom: 2px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 1.4em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
h4, h5, h6 { font-size: 1em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f3f6; }
tr:nth-child(even) td { background: #fafbfc; }
code { background: #eff1f3; padding: 1px 4px; border-radius: 4px; font-size: 0.9em; word-break: break-all; }
img { max-width: 100%; height: auto; border: 1px solid #e5e7ea; border-radius: 4px; margin: 6px 0 2px; }
details { margin: 8px 0 14px; padding: 4px 12px; border: 1px solid #d0d7de; border-radius: 6px; }
summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
em { color: #57606a; }
thead:has(th:empty) { display: none; }
#at-a-glance + ul { background: #eef6ff; border: 1px solid #b6d4fe; border-radius: 6px; padding: 10px 30px; }
#warnings + p + ul { background: #fff8e6; border: 1px solid #f0c36d; border-radius: 6px; padding: 10px 30px; }
"""


def to_html(markdown_text: str, title: str) -> str:
    """The page as HTML (Python-Markdown with tables and folded sections; ``<pre>`` when it is missing)."""
    try:
        import markdown
    except ImportError:  # pragma: no cover - markdown comes with tensorboard
        body = f"<pre>{html.escape(markdown_text)}</pre>"
    else:
        body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html", "toc"])
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n</main></body>"
            f"</html>\n")


def write_report(experiment: str | os.PathLike, *, out: str | os.PathLike | None = None,
                 experiment_dir: str | os.PathLike = "~/nni-experiments") -> dict[str, Path]:
    """Write the page of ``experiment`` (an id, an experiment folder or a work dir).

    Returns:
        ``{"md": report.md, "html": index.html, "folder": the folder}``.
    """
    data = load_experiment(experiment, experiment_dir=experiment_dir)
    base = data["work_dir"] or data["experiment_dir"]
    folder = Path(out) if out is not None else base / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    text = build_report(data, folder)
    (folder / "report.md").write_text(text, encoding="utf-8")
    title = text.splitlines()[0].lstrip("# ").strip()
    (folder / "index.html").write_text(to_html(text, title), encoding="utf-8")
    return {"md": folder / "report.md", "html": folder / "index.html", "folder": folder}


# ---------------------------------------------------------------------------- command line
def add_parser(sub: Any) -> Any:
    """Add ``nni-robust report`` to the CLI's sub-parsers."""
    p = sub.add_parser("report", help="write an experiment's report page (Markdown + HTML): stages and trials, the "
                       "architecture drawn, the final evaluation, warnings, the method's plots")
    p.add_argument("experiment", help="an experiment id, an NNI experiment folder, or a search's work dir")
    p.add_argument("-o", "--output", help=f"folder of the page (default: WORK_DIR/{REPORT_DIR})")
    p.add_argument("--experiment-dir", default="~/nni-experiments",
                   help="NNI's experimentWorkingDirectory, where ids are looked up (default ~/nni-experiments)")
    p.set_defaults(func=command)
    return p


def command(ns: Any) -> int:
    """``nni-robust report``: write the page, print where it is."""
    paths = write_report(ns.experiment, out=ns.output, experiment_dir=ns.experiment_dir)
    print(json.dumps({"html": str(paths["html"]), "markdown": str(paths["md"])}, indent=2))
    return 0
