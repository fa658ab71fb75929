"""Pareto fronts of multi-objective searches: the non-dominated set, a table and a plot.

A point ``a`` *dominates* ``b`` when it is at least as good in every objective
and strictly better in at least one ("better" = larger for ``"maximize"``,
smaller for ``"minimize"``). The Pareto front is the set of points that no
other point dominates. Conventions chosen here:

* **Ties and duplicates.** Identical points do not dominate each other, so
  every copy of a non-dominated point is on the front (a table lists each
  trial that reached it).
* **Invalid points.** A point with a NaN or infinite value is never on the
  front and dominates nothing (a trial whose metric is undefined).
* **One objective.** The front is the set of best points (all ties).

:func:`write_pareto` writes ``<stem>.csv`` and ``<stem>.md`` (the front,
best first by the first objective) and ``<stem>.png``: for one objective the
best-so-far curve over trial numbers, for two a scatter plot of all points
with the front highlighted and joined by its staircase (each accuracy with
its test set's standard error when the trials give ``test_images``), for more a grid of
scatter plots of every pair of objectives (the first
:data:`PLOT_MAX_OBJECTIVES`), the front (computed in all dimensions)
highlighted. This module needs only numpy and, for the plot, matplotlib.

:func:`noise_verdict` says when the trials' accuracies differ by no more than
the noise of their test sets, so that the front shows no trade-off that the
evaluations can resolve (the table then carries that sentence, and the Optuna
tuner records it as a warning).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nni_robust.errors import ConfigError

__all__ = ["DIRECTIONS", "PLOT_MAX_OBJECTIVES", "NOISE_SE", "pareto_front", "dominates", "noise_verdict",
           "write_pareto", "format_table"]

_logger = logging.getLogger(__name__)

#: Valid objective directions.
DIRECTIONS = ("maximize", "minimize")

#: A plot of more objectives shows the pairs among the first this many.
PLOT_MAX_OBJECTIVES = 6

#: Two accuracies measured on n1 and n2 test images differ beyond noise when they are more than this many
#: standard errors of their difference apart, sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2) (binomial; about 95 %
#: two-sided). The threshold is this project's choice: no paper of the methods gives one.
NOISE_SE = 2.0

# Rows of the (chunk x n x m) comparison tensor are limited to this many elements.
_CHUNK_ELEMENTS = 1 << 22


def _signs(directions: Sequence[str], m: int) -> np.ndarray:
    """+1 for minimize, -1 for maximize (so that smaller is better after multiplying)."""
    if isinstance(directions, str):
        directions = [directions]
    directions = list(directions)
    if len(directions) != m:
        raise ConfigError(f"Got {len(directions)} directions {directions!r} for {m} objectives; "
                          "give one direction per objective.")
    for d in directions:
        if d not in DIRECTIONS:
            raise ConfigError(f"Objective direction must be one of {list(DIRECTIONS)}, but got {d!r}.")
    return np.array([1.0 if d == "minimize" else -1.0 for d in directions])


def _as_points(points: Any) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ConfigError(f"points must be an (n, m) array of objective values, but got shape {arr.shape}.")
    return arr


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether point ``a`` Pareto-dominates point ``b`` under ``directions``."""
    pa, pb = _as_points([a])[0], _as_points([b])[0]
    if pa.shape != pb.shape:
        raise ConfigError(f"Points {list(a)!r} and {list(b)!r} have different numbers of objectives.")
    if not (np.isfinite(pa).all() and np.isfinite(pb).all()):
        return False
    s = _signs(directions, pa.shape[0])
    pa, pb = pa * s, pb * s
    return bool(np.all(pa <= pb) and np.any(pa < pb))


def pareto_front(points: Any, directions: Sequence[str]) -> np.ndarray:
    """Indices of the non-dominated points, in ascending order.

    Args:
        points: ``(n, m)`` objective values (a 1-D array is ``n`` points of one objective).
        directions: ``m`` entries, each ``"maximize"`` or ``"minimize"``.

    Returns:
        ``int64`` array of the indices of the Pareto-optimal points (every copy of a
        duplicated optimal point; no point with a non-finite value).

    Raises:
        ConfigError: Bad shape or direction.
    """
    arr = _as_points(points)
    n, m = arr.shape
    s = _signs(directions, m)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    valid = np.isfinite(arr).all(axis=1)
    idx = np.flatnonzero(valid)
    p = arr[idx] * s  # minimise everything
    k = p.shape[0]
    dominated = np.zeros(k, dtype=bool)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, k * m))
    for start in range(0, k, chunk):
        block = p[start:start + chunk]  # (c, m): is block[i] dominated by some p[j]?
        le = (p[None, :, :] <= block[:, None, :]).all(axis=2)
        lt = (p[None, :, :] < block[:, None, :]).any(axis=2)
        dominated[start:start + chunk] = (le & lt).any(axis=1)
    return idx[~dominated].astype(np.int64)


# ---------------------------------------------------------------------- tables
def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def _md_cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _short(direction: str) -> str:
    return "max" if direction == "maximize" else "min"


def _check_trials(trials: Sequence[Mapping[str, Any]], m: int) -> tuple[list[int], np.ndarray, list[dict]]:
    numbers, values, params = [], [], []
    for i, t in enumerate(trials):
        if not isinstance(t, Mapping) or "values" not in t:
            raise ConfigError(f"Trial record {i} must be a dict with 'number', 'values' and optionally 'params', "
                              f"but got {t!r}.")
        v = list(t["values"]) if not isinstance(t["values"], (int, float)) else [t["values"]]
        if len(v) != m:
            raise ConfigError(f"Trial record {i} has {len(v)} values {v!r}, but there are {m} objectives.")
        numbers.append(int(t.get("number", i)))
        values.append([float(x) for x in v])
        params.append(dict(t.get("params") or {}))
    return numbers, np.asarray(values, dtype=np.float64).reshape(len(values), m), params


def _param_names(params: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for p in params:
        for key in p:
            names.setdefault(str(key), None)
    return list(names)


def _front_order(values: np.ndarray, front: np.ndarray, numbers: Sequence[int], signs: np.ndarray) -> list[int]:
    """Front indices sorted best first by the first objective, then the next ones, then trial number."""
    keys = [(tuple(values[i] * signs), numbers[i]) for i in front]
    return [i for _, i in sorted(zip(keys, front), key=lambda kv: kv[0])]


def noise_verdict(trials: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> str | None:
    """A sentence when every objective's spread over ``trials`` is within test-set noise, else ``None``.

    Judged only where it can be: at least two trials, every objective an accuracy
    (named ``acc_*``, values in [0, 1]) and every trial carrying ``test_images``, the
    number of images behind its accuracies. An objective is within noise when its best and
    worst trial are at most :data:`NOISE_SE` standard errors of their difference apart.
    """
    objectives = [str(o) for o in objectives]
    if len(trials) < 2 or not objectives:
        return None
    _, values, _ = _check_trials(trials, len(objectives))
    errors = _standard_errors(trials, objectives, values)  # NaN where an accuracy's test set is not known
    if not np.isfinite(errors).all():
        return None
    parts = []
    for j, name in enumerate(objectives):
        hi, lo = int(np.argmax(values[:, j])), int(np.argmin(values[:, j]))
        se = math.hypot(errors[hi, j], errors[lo, j])  # of the difference of two independent accuracies
        if values[hi, j] - values[lo, j] > NOISE_SE * se:
            return None
        parts.append(f"{name} spans {100 * values[lo, j]:.1f}-{100 * values[hi, j]:.1f}% ({NOISE_SE:g} standard "
                     f"errors of the difference: {100 * NOISE_SE * se:.1f} points)")
    sizes = [t["test_images"] for t in trials]
    lo_n, hi_n = int(min(sizes)), int(max(sizes))
    images = f"{lo_n}" if lo_n == hi_n else f"{lo_n}-{hi_n}"
    return (f"The {len(trials)} trials' objectives differ by no more than the noise of their {images} test images "
            f"({'; '.join(parts)}): the Pareto front shows no trade-off these evaluations can resolve. Evaluate on "
            "more test images (settings.final.eval_images), train the final networks longer, or run more trials "
            "over a wider range of the tuned weight.")


def format_table(trials: Sequence[Mapping[str, Any]], objectives: Sequence[str], directions: Sequence[str],
                 *, title: str | None = None, note: str | None = None) -> str:
    """Markdown table of the Pareto front of ``trials`` (see :func:`write_pareto`)."""
    m = len(objectives)
    signs = _signs(directions, m)
    numbers, values, params = _check_trials(trials, m)
    front = pareto_front(values, directions) if len(numbers) else np.zeros(0, dtype=np.int64)
    order = _front_order(values, front, numbers, signs)
    pnames = _param_names([params[i] for i in order])
    header = ["trial"] + [f"{o} ({_short(d)})" for o, d in zip(objectives, directions)] + pnames
    lines = []
    if title:
        lines += [f"# {title}", ""]
    lines.append(f"Pareto front: {len(front)} of {len(numbers)} trials "
                 f"({', '.join(f'{_short(d)} {o}' for o, d in zip(objectives, directions))}).")
    lines.append("")
    lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for i in order:
        row = [numbers[i]] + list(values[i]) + [params[i].get(p, "") for p in pnames]
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if note:
        lines += ["", f"**Warning:** {note}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- plot
def _standard_errors(trials: Sequence[Mapping[str, Any]], objectives: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Binomial standard error sqrt(p (1 - p) / n) of each accuracy objective (``acc_*`` in [0, 1]) of each
    trial with ``test_images``; NaN where it is not known."""
    out = np.full(values.shape, np.nan)
    for r, trial in enumerate(trials):
        n = trial.get("test_images")
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not n >= 1:
            continue
        for c, name in enumerate(objectives):
            p = values[r, c]
            if str(name).startswith("acc_") and 0.0 <= p <= 1.0:
                out[r, c] = math.sqrt(p * (1 - p) / n)
    return out


def _plot(path: Path, numbers: list[int], values: np.ndarray, front: np.ndarray, objectives: Sequence[str],
          directions: Sequence[str], title: str | None, errors: np.ndarray | None = None) -> None:
    # Figure + FigureCanvasAgg render off-screen without pyplot, whatever the global backend
    # and from any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = values.shape[1]
    on_front = np.zeros(len(numbers), dtype=bool)
    on_front[front] = True
    labels = [f"{o} ({_short(d)})" for o, d in zip(objectives, directions)]
    nums = np.asarray(numbers)
    if m == 1:
        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        order = np.argsort(nums, kind="stable")
        x, y = nums[order], values[order, 0]
        ok = np.isfinite(y)
        ax.scatter(x[ok], y[ok], s=14, color="0.6", label="trials")
        if ok.any():
            yy = np.where(ok, y, np.inf if directions[0] == "minimize" else -np.inf)
            best = np.minimum.accumulate(yy) if directions[0] == "minimize" else np.maximum.accumulate(yy)
            seen = np.isfinite(best)
            ax.step(x[seen], best[seen], where="post", color="tab:blue", label="best so far")
        ax.scatter(nums[on_front], values[on_front, 0], s=40, color="tab:red", zorder=3, label="best")
        ax.set_xlabel("trial number")
        ax.set_ylabel(labels[0])
        ax.legend(loc="best", fontsize=8)
    else:
        shown = min(m, PLOT_MAX_OBJECTIVES)
        pairs = [(i, j) for i in range(shown) for j in range(i + 1, shown)]
        cols = min(3, len(pairs))
        rows = math.ceil(len(pairs) / cols)
        fig = Figure(figsize=(6.5 * cols if cols > 1 else 7, 4.8 * rows))
        FigureCanvasAgg(fig)
        signs = _signs(directions, m)
        for k, (i, j) in enumerate(pairs):
            ax = fig.add_subplot(rows, cols, k + 1)
            ok = np.isfinite(values[:, [i, j]]).all(axis=1)
            bars = ok if errors is None else ok & np.isfinite(errors[:, [i, j]]).all(axis=1)
            if errors is not None and bars.any():  # the test-set noise of each point (see noise_verdict)
                ax.errorbar(values[bars, i], values[bars, j], xerr=errors[bars, i], yerr=errors[bars, j],
                            fmt="none", ecolor="0.7", elinewidth=0.8, capsize=2, zorder=1,
                            label="\u00b11 standard error (test set)")
            ax.scatter(values[ok & ~on_front, i], values[ok & ~on_front, j], s=14, color="0.6", label="trials")
            fx, fy = values[on_front, i], values[on_front, j]
            ax.scatter(fx, fy, s=40, color="tab:red", zorder=3, label="Pareto front")
            if m == 2 and len(fx) > 1:
                # the front's staircase: sorted best-first by the first objective
                o = np.lexsort((fy * signs[1], fx * signs[0]))
                ax.step(fx[o], fy[o], where="post", color="tab:red", alpha=0.6)
            if on_front.sum() <= 30:
                at: dict[tuple[float, float], list[str]] = {}  # coincident points share one label
                for n, a, b in zip(nums[on_front], fx, fy):
                    at.setdefault((float(a), float(b)), []).append(str(n))
                for (a, b), ns in at.items():
                    ax.annotate(",".join(ns), (a, b), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xlabel(labels[i])
            ax.set_ylabel(labels[j])
            if k == 0:
                ax.legend(loc="best", fontsize=8)
    fig.suptitle(title or f"Pareto front: {len(front)} of {len(numbers)} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------- files
def write_pareto(trials: Sequence[Mapping[str, Any]], objectives: Sequence[str], directions: Sequence[str],
                 out_dir: str | os.PathLike, *, stem: str = "pareto", title: str | None = None,
                 plot: bool = True, note: str | None = None) -> dict[str, Path]:
    """Write the Pareto front of ``trials`` as ``<stem>.csv``, ``<stem>.md`` and ``<stem>.png``.

    Args:
        trials: One dict per finished trial: ``{"number": int, "values": [one float per
            objective], "params": {name: value}}`` (``params`` optional).
        objectives: Objective names (column headers, axis labels).
        directions: ``"maximize"`` or ``"minimize"`` per objective.
        out_dir: Folder (created).
        stem: File name stem.
        title: Title of the table and the plot.
        plot: Write the PNG (needs matplotlib).
        note: A warning printed under the table (e.g. :func:`noise_verdict`'s sentence).

    Returns:
        ``{"csv": path, "md": path, "png": path}`` (``png`` only when plotted).

    Raises:
        ConfigError: Malformed records, or objectives and directions that do not match.
    """
    objectives = [str(o) for o in objectives]
    m = len(objectives)
    if m == 0:
        raise ConfigError("write_pareto needs at least one objective.")
    signs = _signs(directions, m)
    numbers, values, params = _check_trials(trials, m)
    front = pareto_front(values, directions) if numbers else np.zeros(0, dtype=np.int64)
    order = _front_order(values, front, numbers, signs)
    pnames = _param_names([params[i] for i in order])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    tmp = out / f".{stem}.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial"] + objectives + pnames)
        for i in order:
            w.writerow([numbers[i]] + [repr(float(v)) for v in values[i]]
                       + [params[i].get(p, "") for p in pnames])
    os.replace(tmp, out / f"{stem}.csv")
    paths["csv"] = out / f"{stem}.csv"

    tmp = out / f".{stem}.md.tmp"
    tmp.write_text(format_table(trials, objectives, directions, title=title, note=note), encoding="utf-8")
    os.replace(tmp, out / f"{stem}.md")
    paths["md"] = out / f"{stem}.md"

    if plot:
        tmp = out / f".{stem}.tmp.png"
        _plot(tmp, numbers, values, front, objectives, list(directions), title,
              errors=_standard_errors(trials, objectives, values))
        os.replace(tmp, out / f"{stem}.png")
        paths["png"] = out / f"{stem}.png"
    _logger.debug("Pareto front (%d of %d trials) written to %s.", len(front), len(numbers), out)
    return paths
