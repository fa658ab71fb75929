"""What an anti-bandit search shows: TensorBoard scalars per step, and a report (Markdown, CSV, PNG).

TensorBoard (:func:`log_step`, after every credited sample; tags grouped by
section):

* ``abandit/reward`` (the scaled reward), ``abandit/val_clean_acc`` /
  ``abandit/val_adv_acc`` (supernet mode), ``abandit/N``,
  ``abandit/remaining_arms`` (over all edges);
* ``probability/<op>``: the sampling probability ``softmax(-LCB)`` of each
  option, averaged over the edges (0 where abandoned);
* ``remaining/<op>``: on how many edges each option is still an arm (the
  abandon order, op by op);
* ``m/<op>``: the mean running reward ``m`` of each option over the edges
  where it remains;
* text ``abandit/abandoned``: the arms abandoned at that step.

The report (:func:`write_report`, in ``<work_dir>/abandit_report``):
``report.md`` (summary, warnings, the search-signal checks of
:mod:`.diagnostics`, the kept option per edge, the abandon order),
``arms.csv`` (one row per arm: ``m``, ``n``, bounds, probability, plain mean
reward of the samples that used it, when it was abandoned), ``abandons.csv``,
``steps.csv`` and ``search.png`` (rewards per sample with the abandon
points; options remaining per step; the abandon phase of every arm; the
per-edge p-values against chance).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .bandit import AntiBandit

__all__ = ["log_step", "write_report", "plot_search", "REPORT_DIR"]

#: Folder of the report inside the work dir.
REPORT_DIR = "abandit_report"


def _tag(option: Any) -> str:
    return str(option).replace(" ", "_")


def _option_rows(bandit: AntiBandit) -> dict[str, list[tuple[bool, float, float | None]]]:
    """``{option: [(remaining, p, m), ...]}`` over the edges that have the option."""
    rows: dict[str, list[tuple[bool, float, float | None]]] = defaultdict(list)
    for label in bandit.labels:
        probs = dict(zip(bandit.remaining(label), bandit.probabilities(label)))
        for option, s in bandit.stats(label).items():
            rows[_tag(option)].append((bool(s["remaining"]), probs.get(option, 0.0),
                                       s["m"] if s["remaining"] and s["n"] else None))
    return rows


def log_step(writer: Any, bandit: AntiBandit, record: Mapping[str, Any]) -> None:
    """Write one credited sample's scalars (see the module docstring) at step ``record["step"]``."""
    step = int(record["step"])
    writer.add_scalar("abandit/reward", float(record["reward"]), step)
    for key in ("clean", "adv"):
        if f"acc_{key}" in record:
            writer.add_scalar(f"abandit/val_{key}_acc", float(record[f"acc_{key}"]), step)
    writer.add_scalar("abandit/N", bandit.total, step)
    writer.add_scalar("abandit/remaining_arms", sum(len(bandit.remaining(label)) for label in bandit.labels), step)
    for option, rows in _option_rows(bandit).items():
        writer.add_scalar(f"remaining/{option}", sum(r[0] for r in rows), step)
        writer.add_scalar(f"probability/{option}", sum(r[1] for r in rows) / len(rows), step)
        ms = [r[2] for r in rows if r[2] is not None]
        if ms:
            writer.add_scalar(f"m/{option}", sum(ms) / len(ms), step)
    if record.get("abandoned"):
        writer.add_text("abandit/abandoned", ", ".join(f"{label}: {option}" for label, option in record["abandoned"]),
                        step)


# --------------------------------------------------------------------------- tables


def _phases(bandit: AntiBandit) -> dict[tuple[str, int], int]:
    """``{(label, option index): phase}`` of every abandoned arm (phase 1: the first abandon)."""
    steps = sorted({h["step"] for h in bandit.abandon_history})
    phase = {s: q + 1 for q, s in enumerate(steps)}
    return {(h["label"], h["index"]): phase[h["step"]] for h in bandit.abandon_history}


def _plain_means(bandit: AntiBandit, records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], tuple[float, int]]:
    sums: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in records:
        if r.get("warmup"):
            continue
        for label, k in zip(bandit.labels, r["arms"]):
            sums[(label, k)].append(float(r["reward"]))
    return {key: (sum(v) / len(v), len(v)) for key, v in sums.items()}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _arm_rows(bandit: AntiBandit, records: Sequence[Mapping[str, Any]],
              pvalues: Mapping[str, float]) -> list[dict[str, Any]]:
    phases, means = _phases(bandit), _plain_means(bandit, records)
    rows = []
    for row in bandit.arm_table():
        k = bandit.index_of(row["label"], row["option"])
        mean, count = means.get((row["label"], k), (None, 0))
        rows.append({**row, "kept": row["remaining"] and bandit.done, "abandon_phase": phases.get((row["label"], k)),
                     "mean_reward": mean, "samples_with_it": count, "edge_pvalue": pvalues.get(row["label"])})
    return rows


def _abandon_rows(bandit: AntiBandit, overlaps: Sequence[bool]) -> list[dict[str, Any]]:
    rows = []
    for order, (h, overlap) in enumerate(zip(bandit.abandon_history, overlaps)):
        pos = h["remaining"].index(h["option"])
        rows.append({"order": order, "step": h["step"], "label": h["label"], "option": h["option"],
                     "ucb": h["ucb"][pos], "m": h["m"][pos], "n": h["n"][pos],
                     "remaining_before": len(h["remaining"]), "overlapped_best": overlap})
    return rows


# --------------------------------------------------------------------------- figure


def plot_search(bandit: AntiBandit, records: Sequence[Mapping[str, Any]], signal: Mapping[str, Any], *,
                title: str = "Anti-bandit search") -> Any:
    """The report's figure (a matplotlib ``Figure`` with an Agg canvas): see the module docstring."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 9.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    fig.suptitle(title)
    # (a) rewards per sample
    ax = axes[0, 0]
    steps = np.array([r["step"] for r in records])
    rewards = np.array([float(r["reward"]) for r in records])
    warm = np.array([bool(r.get("warmup")) for r in records])
    if len(rewards):
        ax.scatter(steps[~warm], rewards[~warm], s=10, label="sample reward")
        if warm.any():
            ax.scatter(steps[warm], rewards[warm], s=10, color="0.6", label="warm-up (not credited)")
        width = int(signal.get("window") or 9)
        kernel = np.ones(min(width, len(rewards))) / min(width, len(rewards))
        smooth = np.convolve(rewards, kernel, mode="same") / np.convolve(np.ones(len(rewards)), kernel, mode="same")
        ax.plot(steps, smooth, color="C1", label=f"moving mean ({min(width, len(rewards))})")
        first = int(warm.sum())
        for s in sorted({h["step"] for h in bandit.abandon_history}):
            ax.axvline(first + s - 1, color="0.7", ls="--", lw=0.8)
    ax.set_xlabel("sample (dashed: an arm abandoned on every edge)")
    ax.set_ylabel("reward")
    ax.set_title("Rewards of the sampled architectures")
    ax.legend(fontsize=8)
    # (b) options remaining per step
    ax = axes[0, 1]
    options = list(dict.fromkeys(_tag(o) for label in bandit.labels for o in bandit.edges[label]))
    have = {o: sum(_tag(o2) == o for label in bandit.labels for o2 in bandit.edges[label]) for o in options}
    lost: dict[str, list[int]] = defaultdict(list)
    for h in bandit.abandon_history:
        lost[_tag(h["option"])].append(h["step"])
    horizon = max(bandit.total, 1)
    for q, o in enumerate(options):
        xs, ys, count = [0], [have[o]], have[o]
        for s in sorted(lost[o]):
            xs += [s, s]
            ys += [count, count - 1]
            count -= 1
        xs.append(horizon)
        ys.append(count)
        ax.plot(xs, ys, label=o, color=f"C{q % 10}", ls="-" if q < 10 else "--")
    ax.set_xlabel("rewards received N")
    ax.set_ylabel("edges where the option is still an arm")
    ax.set_title("Abandon order, option by option")
    ax.legend(fontsize=7, ncol=2)
    # (c) abandon phase of every arm
    ax = axes[1, 0]
    phases = _phases(bandit)
    n_phases = max(phases.values(), default=0) + 1
    grid = np.full((len(bandit.labels), len(options)), np.nan)
    for e, label in enumerate(bandit.labels):
        for k, o in enumerate(bandit.edges[label]):
            grid[e, options.index(_tag(o))] = phases.get((label, k), n_phases)
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", vmin=1, vmax=max(n_phases, 2))
    ax.set_xticks(range(len(options)), options, rotation=60, ha="right", fontsize=7)
    step = max(1, len(bandit.labels) // 30)
    ax.set_yticks(range(0, len(bandit.labels), step), list(bandit.labels)[::step], fontsize=6)
    fig.colorbar(image, ax=ax, label=f"phase abandoned ({n_phases}: kept / still an arm)")
    ax.set_title("When each arm was abandoned")
    # (d) per-edge p-values against chance
    ax = axes[1, 1]
    pvalues = sorted((signal.get("pvalues") or {}).values())
    if pvalues:
        expected = (np.arange(1, len(pvalues) + 1) - 0.5) / len(pvalues)
        ax.plot(expected, pvalues, "o", ms=3, label="edges")
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, label="no signal (uniform)")
        ax.axhline(signal.get("alpha", 0.05), color="C3", ls=":", lw=0.8, label="alpha")
        ax.legend(fontsize=8)
    verdict = "signal above noise" if signal.get("signal") else "NO signal above noise"
    ax.set_title(f"Per-edge permutation p-values: {signal.get('significant_edges', 0)} of "
                 f"{signal.get('edges', 0)} below alpha ({verdict})", fontsize=9)
    ax.set_xlabel("uniform quantile")
    ax.set_ylabel("p-value (sorted)")
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.09, top=0.92, wspace=0.25, hspace=0.38)
    return fig


# --------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def write_report(out_dir: str | Path, bandit: AntiBandit, records: Sequence[Mapping[str, Any]],
                 signal: Mapping[str, Any], *, title: str = "Anti-bandit search",
                 summary: Mapping[str, Any] | None = None, result_text: str | None = None,
                 writer: Any = None) -> dict[str, Path]:
    """Write the report (see the module docstring) to ``out_dir``; returns ``{name: path}``.

    Args:
        out_dir: The report folder (created).
        bandit: The bandit at the end of the search (or now).
        records: The step records (``step``, ``arms``, ``reward``, ...).
        signal: :func:`.diagnostics.search_signal` output.
        title: First heading.
        summary: Extra ``{key: value}`` rows of the summary table (mode, settings, time, ...).
        result_text: Extra Markdown about the result (e.g. the derived architecture).
        writer: A TensorBoard writer: the figure (``report/search``) and the Markdown
            (``report/markdown``) go there too, at step ``N``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .diagnostics import abandon_overlaps

    overlaps = abandon_overlaps(bandit.abandon_history)
    pvalues = signal.get("pvalues") or {}
    arms = _arm_rows(bandit, records, pvalues)
    _write_csv(out / "arms.csv", arms)
    _write_csv(out / "abandons.csv", _abandon_rows(bandit, overlaps))
    step_keys = ("step", "warmup", "reward", "acc_clean", "acc_adv", "N", "train_loss", "train_acc", "lr", "seconds")
    _write_csv(out / "steps.csv", [{k: r.get(k) for k in step_keys} | {"abandoned": len(r.get("abandoned") or [])}
                                   for r in records])
    fig = plot_search(bandit, records, signal, title=title)
    fig.savefig(out / "search.png", dpi=110)
    lines = [f"# {title}", ""]
    rows = {"edges": len(bandit.labels), "rewards received N": bandit.total,
            "samples per arm T": bandit.samples_per_arm, "lambda": bandit.lam,
            "done (one arm per edge)": bandit.done, **dict(summary or {})}
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_fmt(v, 4)} |" for k, v in rows.items()] + [""]
    lines += ["## Can the result be trusted?", ""]
    if signal.get("warnings"):
        lines += [f"> **Warning.** {w}" for w in signal["warnings"]] + [""]
    else:
        lines += ["No warning: the rewards depend on the arms more than chance on more edges than chance "
                  "alone explains, and the abandons were decided by the rewards.", ""]
    lines += [f"- Per-edge permutation test (rewards detrended over {signal.get('window')} samples): "
              f"{signal.get('significant_edges')} of {signal.get('edges')} edges at p < {signal.get('alpha')}, "
              f"{_fmt(signal.get('expected_by_chance'))} expected by chance (binomial p = "
              f"{_fmt(signal.get('binomial_p'))}).",
              f"- Abandons within the confidence bounds of the best remaining arm: "
              f"{_fmt(100 * signal['overlap_fraction'] if signal.get('overlap_fraction') is not None else None)}% "
              f"of {signal.get('abandons')}.",
              f"- Reward sd {_fmt(signal.get('reward_sd'))} (detrended {_fmt(signal.get('residual_sd'))}), drift "
              f"{_fmt(signal.get('reward_trend'))} (last tenth minus first), exploration bonus at the last abandon "
              f"{_fmt(signal.get('bonus'))}.", ""]
    if result_text:
        lines += ["## Result", "", result_text, ""]
    lines += ["## Kept option per edge", "", "| edge | kept | m | n | mean reward | edge p-value | abandon order |",
              "|---|---|---|---|---|---|---|"]
    for label in bandit.labels:
        kept = [r for r in arms if r["label"] == label and r["remaining"]]
        order = " > ".join(str(o) for o in bandit.abandon_order(label))
        for r in kept:
            lines.append(f"| {label} | {r['option']} | {_fmt(r['m'])} | {r['n']} | {_fmt(r['mean_reward'])} | "
                         f"{_fmt(r['edge_pvalue'])} | {order} |")
    lines += ["", "## Abandon phase per option", "",
              "Edges on which each option was abandoned in each phase (1 = first abandon); `kept` = still an arm.", ""]
    phases = _phases(bandit)
    n_phases = max(phases.values(), default=0)
    options = list(dict.fromkeys(str(o) for label in bandit.labels for o in bandit.edges[label]))
    counts = {o: [0] * (n_phases + 1) for o in options}
    for r in arms:
        k = bandit.index_of(r["label"], r["option"])
        counts[str(r["option"])][phases.get((r["label"], k), n_phases + 1) - 1] += 1
    lines += ["| option | " + " | ".join(str(q + 1) for q in range(n_phases)) + " | kept |",
              "|---|" + "---|" * (n_phases + 1)]
    lines += [f"| {o} | " + " | ".join(str(c) for c in counts[o]) + " |" for o in options]
    lines += ["", "![search](search.png)", "",
              "Files: `arms.csv` (every arm), `abandons.csv` (abandon order), `steps.csv` (every sample).", ""]
    (out / "report.md").write_text("\n".join(lines))
    if writer is not None:
        writer.add_figure("report/search", fig, bandit.total)
        writer.add_text("report/markdown", "\n".join(lines), bandit.total)
        writer.flush()
    return {"report": out / "report.md", "arms": out / "arms.csv", "abandons": out / "abandons.csv",
            "steps": out / "steps.csv", "plot": out / "search.png"}
