"""RobNet's architecture analyses as reports: density, convolutions on direct/skip edges, budgets, FSP.

Guo et al., "When NAS Meets Robustness: In Search of Robust Architectures
against Adversarial Attacks" (RobNet, CVPR 2020):

* **Density** (Sec. 3.3, Eq. 2, Fig. 5): an architecture is the binary
  parameter ``alpha^{(i,j)}_k`` (edge ``(i, j)``, non-zero operation ``k``);
  the paper's pool has two non-zero operations, 3x3 separable convolution and
  identity, and an edge may hold both ("we do not restrict the maximal number
  of operations between two intermediate nodes to be one"), so
  ``alpha in {0, 1}^{2 x 14}`` and ``D = |E_connected| / |E| = sum_{i,j,k}
  alpha^{(i,j)}_k / |E|``. In the dense robust cell space an edge's op is the
  pair of bits (RobNet's two-bit codes): ``none`` = 00, ``sep_conv_3x3`` =
  conv only, ``skip_connect`` = identity only, ``res_sep_conv_3x3`` = conv +
  identity (both). So per cell ``D = (#sep + #skip + 2 #res) / 28``
  (``definition="paper"``, in ``[0, 1]``: ``|E|`` counts the 28 possible
  (edge, operation) pairs, the only reading that keeps ``D <= 1``).
  ``definition="edges"`` is the coarser "connected edges over all edges":
  the share of the 14 edges whose op is not ``none``.
* **Cell-free architectures**: Eq. 2 sums ``alpha`` over the whole
  architecture, so with one topology per cell ``D`` is the mean over the
  cell *positions* of the network of the per-cell densities (all cells have
  28 pairs). Counts of convolutions are likewise means per cell (for a
  cell-based architecture: the cell's counts).
* **Direct and skip edges** (Sec. 3.2): "direct edges [are] those
  ``E^{(i,j)}`` with ``j = i + 1``", skip edges those with ``j > i + 1``.
  With the cell's nodes numbered 0, 1 (the two inputs: two cells back, the
  previous cell) and 2..5 (internal), the direct edges are ``(1 -> 2)``,
  ``(2 -> 3)``, ``(3 -> 4)``, ``(4 -> 5)`` (4 edges) and the other 10 are skip
  edges, including ``(0 -> 2)``. A convolution is an edge whose op is
  ``sep_conv_3x3`` or ``res_sep_conv_3x3`` (at most 14 per cell, as in Sec.
  3.4). The **direct-convolution share** is (convolutions on direct edges) /
  (all convolutions), NaN for an architecture without convolutions.
* **Budgets** (Sec. 3.4, Fig. 6b): by the number of convolutions per cell,
  "smaller than 7 [small], between 8 and 10 [medium] and larger than 11
  [large]". Read literally, 7 and 11 belong to no budget; we take the bins
  as ``<= 7``, ``8..10``, ``>= 11`` (``budget_edges=(7, 10)``: small
  ``<= 7``, medium ``<= 10``, large above; for per-cell means of cell-free
  architectures the same edges apply to the real number).
* **FSP indicator vs fine-tuned accuracy** (Sec. 3.5, Fig. 7): the paper
  plots the deeper cells' FSP distance against the gap between clean and
  adversarial accuracy; we report Pearson, Spearman and Kendall correlations
  of the indicator with the fine-tuned adversarial accuracy and, where clean
  accuracies are given, with that gap, and how many fine-tunings a threshold
  saved.

Outputs: CSV tables, one Markdown report, PNG plots (matplotlib's Agg canvas,
no pyplot, safe from any thread) and the same plots as HWC ``uint8`` arrays
for TensorBoard (``writer.add_image(tag, img, step, dataformats="HWC")``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nni_robust.config import check_choice
from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import EDGES, NUM_EDGES, DenseRobArch

__all__ = [
    "ALPHA",
    "BUDGETS",
    "CONV_OPS",
    "DEFAULT_BUDGET_EDGES",
    "DENSITY_DEFINITIONS",
    "DIRECT_EDGES",
    "SKIP_EDGES",
    "ArchResult",
    "ArchStats",
    "architecture_density",
    "arch_stats",
    "budget_of",
    "budget_study",
    "cell_conv_counts",
    "cell_density",
    "conv_counts",
    "conv_study",
    "correlation",
    "correlation_table",
    "figure_to_image",
    "fsp_study",
    "report_figures",
    "report_images",
    "write_report",
]

logger = logging.getLogger(__name__)

#: ``alpha`` bits of each op: (3x3 separable convolution, identity) -- RobNet's
#: two-bit codes 01 / 10 / 11 (Sec. 3.2, gmh14/RobNets ``architecture_code.py``).
ALPHA: dict[str, tuple[int, int]] = {"none": (0, 0), "sep_conv_3x3": (1, 0), "skip_connect": (0, 1),
                                     "res_sep_conv_3x3": (1, 1)}
#: Ops that hold a convolution.
CONV_OPS: frozenset[str] = frozenset(op for op, (conv, _) in ALPHA.items() if conv)
#: Edge indices (into :data:`~nni_robust.spaces.dense_rob.EDGES`) with ``j = i + 1`` (Sec. 3.2).
DIRECT_EDGES: tuple[int, ...] = tuple(e for e, (j, i) in enumerate(EDGES) if j == i + 1)
#: Edge indices with ``j > i + 1``.
SKIP_EDGES: tuple[int, ...] = tuple(e for e, (j, i) in enumerate(EDGES) if j > i + 1)
#: Density definitions: Eq. 2 over (edge, op) pairs, or the share of non-``none`` edges.
DENSITY_DEFINITIONS: tuple[str, ...] = ("paper", "edges")
#: Budget names in order.
BUDGETS: tuple[str, ...] = ("small", "medium", "large")
#: Sec. 3.4: small <= 7 convolutions per cell, medium 8..10, large >= 11.
DEFAULT_BUDGET_EDGES: tuple[float, float] = (7, 10)
#: The paper's top 300 / last 300 of 1,000 architectures (Sec. 3.3).
DEFAULT_EXTREME_FRACTION = 0.3

_NUM_ALPHA = len(ALPHA["none"]) * NUM_EDGES  # 28 (edge, op) pairs


# --------------------------------------------------------------------------- per-cell / per-arch measures


def _check_ops(ops: Sequence[str]) -> Sequence[str]:
    if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) != NUM_EDGES:
        raise ConfigError(f"A cell needs {NUM_EDGES} op names in edge order, but got {ops!r}.")
    for op in ops:
        if op not in ALPHA:
            raise ConfigError(f"Unknown op {op!r} in a cell; valid ops: {list(ALPHA)} (canonical names; build "
                              f"a DenseRobArch to canonicalize aliases).")
    return ops


def cell_density(ops: Sequence[str], *, definition: str = "paper") -> float:
    """The density of one cell (RobNet Eq. 2).

    Args:
        ops: The cell's 14 op names in edge order.
        definition: ``"paper"``: ``sum alpha / 28`` (a residual separable
            convolution counts 2); ``"edges"``: non-``none`` edges / 14.

    Raises:
        ConfigError: malformed ``ops`` or unknown ``definition``.
    """
    check_choice("definition", definition, DENSITY_DEFINITIONS)
    ops = _check_ops(ops)
    if definition == "paper":
        return sum(sum(ALPHA[op]) for op in ops) / _NUM_ALPHA
    return sum(op != "none" for op in ops) / NUM_EDGES


def _positions_ops(arch: DenseRobArch) -> list[tuple[str, ...]]:
    if not isinstance(arch, DenseRobArch):
        raise ConfigError(f"Expected a DenseRobArch, but got {type(arch).__name__}.")
    return [arch.cell_ops(p) for p in range(arch.layout.num_cells)]


def architecture_density(arch: DenseRobArch, *, definition: str = "paper") -> float:
    """The density of an architecture: Eq. 2 over all its cells = the mean over cell positions.

    For a cell-based architecture this is its cell's density.
    """
    return float(np.mean([cell_density(ops, definition=definition) for ops in _positions_ops(arch)]))


def cell_conv_counts(ops: Sequence[str]) -> tuple[int, int, int]:
    """``(all, on direct edges, on skip edges)`` convolutions of one cell (Sec. 3.2, 3.4)."""
    ops = _check_ops(ops)
    direct = sum(ops[e] in CONV_OPS for e in DIRECT_EDGES)
    skip = sum(ops[e] in CONV_OPS for e in SKIP_EDGES)
    return direct + skip, direct, skip


def conv_counts(arch: DenseRobArch) -> tuple[float, float, float]:
    """Mean per cell position of :func:`cell_conv_counts` (the cell's counts when cell-based)."""
    counts = np.asarray([cell_conv_counts(ops) for ops in _positions_ops(arch)], dtype=np.float64)
    total, direct, skip = counts.mean(axis=0)
    return float(total), float(direct), float(skip)


def _check_budget_edges(edges: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(e) for e in edges)
    except (TypeError, ValueError):
        raise ConfigError(f"budget_edges must be two numbers (small <= a < medium <= b < large), but got "
                          f"{edges!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"budget_edges must be two finite increasing numbers, but got {edges!r}.")
    return lo, hi


def budget_of(num_convs: float, budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES) -> str:
    """The computational budget (Sec. 3.4) of an architecture with ``num_convs`` convolutions per cell.

    ``small`` when ``num_convs <= budget_edges[0]``, ``medium`` when ``<=
    budget_edges[1]``, else ``large`` (default ``(7, 10)``: 0-7, 8-10, 11-14).
    """
    lo, hi = _check_budget_edges(budget_edges)
    if num_convs <= lo:
        return "small"
    return "medium" if num_convs <= hi else "large"


@dataclass(frozen=True)
class ArchStats:
    """The structural measures of one architecture (per cell; means over positions when cell-free).

    Attributes:
        density: Eq. 2 (``definition="paper"``).
        edge_density: Share of non-``none`` edges.
        convs: Convolutions per cell.
        direct_convs: Convolutions on direct edges per cell.
        skip_convs: Convolutions on skip edges per cell.
        direct_share: ``direct_convs / convs`` (NaN without convolutions).
        budget: ``"small"``, ``"medium"`` or ``"large"``.
    """

    density: float
    edge_density: float
    convs: float
    direct_convs: float
    skip_convs: float
    direct_share: float
    budget: str


def arch_stats(arch: DenseRobArch, *, budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES) -> ArchStats:
    """All structural measures of ``arch`` (see :class:`ArchStats`)."""
    total, direct, skip = conv_counts(arch)
    return ArchStats(density=architecture_density(arch), edge_density=architecture_density(arch, definition="edges"),
                     convs=total, direct_convs=direct, skip_convs=skip,
                     direct_share=direct / total if total > 0 else float("nan"),
                     budget=budget_of(total, budget_edges))


# --------------------------------------------------------------------------- results, statistics


def _opt_float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"ArchResult.{name} must be a number or None, but got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class ArchResult:
    """What the search measured for one sampled architecture.

    Attributes:
        arch: The architecture.
        adv_acc: Adversarial accuracy after fine-tuning (``None``: not
            fine-tuned, e.g. rejected by the FSP filter).
        clean_acc: Clean accuracy after fine-tuning.
        fsp: FSP robustness indicator (Sec. 3.5), if computed.
        adv_acc_before: Adversarial accuracy with the inherited weights,
            before fine-tuning (Fig. 3a).
        name: A label for the tables (e.g. the trial id); default its index.
        clean_acc_before: Clean accuracy before fine-tuning (with
            ``adv_acc_before``: the gap of Fig. 7, measured "without finetuning").
    """

    arch: DenseRobArch
    adv_acc: float | None = None
    clean_acc: float | None = None
    fsp: float | None = None
    adv_acc_before: float | None = None
    name: str | None = None
    clean_acc_before: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arch, DenseRobArch):
            raise ConfigError(f"ArchResult.arch must be a DenseRobArch, but got {type(self.arch).__name__}.")
        for f in ("adv_acc", "clean_acc", "fsp", "adv_acc_before", "clean_acc_before"):
            object.__setattr__(self, f, _opt_float(f, getattr(self, f)))


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson, Spearman and Kendall (tau-b) correlations of the finite pairs, with p-values (scipy).

    Returns:
        ``{"n", "pearson", "pearson_p", "spearman", "spearman_p", "kendall",
        "kendall_p"}``; coefficients are NaN with fewer than 3 pairs or a
        constant variable.
    """
    from scipy import stats

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ConfigError(f"correlation needs two 1-D sequences of one length, but got shapes {xa.shape} "
                          f"and {ya.shape}.")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    out = {"n": int(xa.size)}
    nan = float("nan")
    if xa.size < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        out.update(pearson=nan, pearson_p=nan, spearman=nan, spearman_p=nan, kendall=nan, kendall_p=nan)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stats.pearsonr(xa, ya)
        s = stats.spearmanr(xa, ya)
        k = stats.kendalltau(xa, ya)
    out.update(pearson=float(p[0]), pearson_p=float(p[1]), spearman=float(s[0]), spearman_p=float(s[1]),
               kendall=float(k[0]), kendall_p=float(k[1]))
    return out


def _check_results(results: Iterable[ArchResult]) -> list[ArchResult]:
    out = list(results)
    for k, r in enumerate(out):
        if not isinstance(r, ArchResult):
            raise ConfigError(f"results[{k}] must be an ArchResult, but got {type(r).__name__}.")
    return out


def _column(results: Sequence[ArchResult], field: str) -> np.ndarray:
    return np.asarray([np.nan if getattr(r, field) is None else getattr(r, field) for r in results],
                      dtype=np.float64)


class _Table:
    """Per-architecture columns of a list of results."""

    def __init__(self, results: Sequence[ArchResult], budget_edges: Sequence[float]) -> None:
        self.results = results
        self.stats = [arch_stats(r.arch, budget_edges=budget_edges) for r in results]
        self.names = [r.name if r.name is not None else str(k) for k, r in enumerate(results)]
        self.adv = _column(results, "adv_acc")
        self.clean = _column(results, "clean_acc")
        self.fsp = _column(results, "fsp")
        self.before = _column(results, "adv_acc_before")
        self.clean_before = _column(results, "clean_acc_before")
        for f in ("density", "edge_density", "convs", "direct_convs", "skip_convs", "direct_share"):
            setattr(self, f, np.asarray([getattr(s, f) for s in self.stats], dtype=np.float64))
        self.budget = np.asarray([s.budget for s in self.stats], dtype=object)

    @property
    def gap(self) -> np.ndarray:
        return self.clean - self.adv

    @property
    def gap_before(self) -> np.ndarray:
        return self.clean_before - self.before


def correlation_table(results: Iterable[ArchResult], *,
                      budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES) -> list[dict[str, Any]]:
    """Correlations of the structural measures and the FSP indicator with the accuracies.

    Rows (only those with data): density, edge density, convolutions (all,
    direct, skip) and direct share vs adversarial accuracy (Figs. 5, 6a);
    FSP indicator vs adversarial accuracy and vs the clean-adversarial gap,
    after fine-tuning and before it (Fig. 7: "without finetuning");
    adversarial accuracy before vs after fine-tuning (Fig. 3a).
    Each row: ``{"x", "y", **correlation(x, y)}``.
    """
    t = _Table(_check_results(results), budget_edges)
    pairs = [("density", t.density, "adv_acc", t.adv), ("edge_density", t.edge_density, "adv_acc", t.adv),
             ("convs", t.convs, "adv_acc", t.adv), ("direct_convs", t.direct_convs, "adv_acc", t.adv),
             ("skip_convs", t.skip_convs, "adv_acc", t.adv), ("direct_share", t.direct_share, "adv_acc", t.adv),
             ("fsp", t.fsp, "adv_acc", t.adv), ("fsp", t.fsp, "clean_minus_adv", t.gap),
             ("fsp", t.fsp, "adv_acc_before", t.before),
             ("fsp", t.fsp, "clean_minus_adv_before", t.gap_before),
             ("adv_acc_before", t.before, "adv_acc", t.adv)]
    rows = []
    for xn, x, yn, y in pairs:
        c = correlation(x, y)
        if c["n"]:
            rows.append({"x": xn, "y": yn, **c})
    return rows


def conv_study(results: Iterable[ArchResult]) -> list[dict[str, Any]]:
    """Adversarial accuracy by number of convolutions: all, on direct edges, on skip edges (Fig. 6a).

    Counts per cell are rounded to the nearest integer for grouping (they
    are integers for cell-based architectures).

    Returns:
        Rows ``{"kind": "all"|"direct"|"skip", "count", "n", "adv_mean", "adv_std"}``.
    """
    t = _Table(_check_results(results), DEFAULT_BUDGET_EDGES)
    ok = np.isfinite(t.adv)
    rows = []
    for kind, counts in (("all", t.convs), ("direct", t.direct_convs), ("skip", t.skip_convs)):
        c = np.rint(counts[ok]).astype(int)
        a = t.adv[ok]
        for value in np.unique(c):
            sel = a[c == value]
            rows.append({"kind": kind, "count": int(value), "n": int(sel.size), "adv_mean": float(sel.mean()),
                         "adv_std": float(sel.std(ddof=1)) if sel.size > 1 else float("nan")})
    return rows


def budget_study(results: Iterable[ArchResult], *,
                 budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES) -> list[dict[str, Any]]:
    """Adversarial accuracy per computational budget and its correlation with the direct share (Fig. 6b).

    Returns:
        One row per budget (also empty ones): ``{"budget", "convs" (range
        text), "n", "adv_mean", "adv_std", "adv_min", "adv_max",
        "direct_share_mean", "pearson", "spearman", "kendall"}`` where the
        correlations are of the direct-convolution share with the adversarial
        accuracy within the budget.
    """
    lo, hi = _check_budget_edges(budget_edges)
    t = _Table(_check_results(results), (lo, hi))
    ok = np.isfinite(t.adv)
    ranges = {"small": f"<= {lo:g}", "medium": f"({lo:g}, {hi:g}]", "large": f"> {hi:g}"}
    rows = []
    nan = float("nan")
    for b in BUDGETS:
        sel = ok & (t.budget == b)
        a = t.adv[sel]
        c = correlation(t.direct_share[sel], a)
        share = t.direct_share[sel]
        share = share[np.isfinite(share)]
        rows.append({"budget": b, "convs": ranges[b], "n": int(a.size),
                     "adv_mean": float(a.mean()) if a.size else nan,
                     "adv_std": float(a.std(ddof=1)) if a.size > 1 else nan,
                     "adv_min": float(a.min()) if a.size else nan, "adv_max": float(a.max()) if a.size else nan,
                     "direct_share_mean": float(share.mean()) if share.size else nan,
                     "pearson": c["pearson"], "spearman": c["spearman"], "kendall": c["kendall"]})
    return rows


def fsp_study(results: Iterable[ArchResult], *, threshold: float | None = None) -> dict[str, Any]:
    """The FSP indicator against the fine-tuned accuracies, and the filter's savings (Sec. 3.5, Fig. 7).

    Args:
        results: Architectures; those with ``fsp`` count as screened, those
            also with ``adv_acc`` as fine-tuned.
        threshold: The filter threshold, if one was used: architectures with
            ``fsp > threshold`` (or non-finite) count as rejected; those of them
            without ``adv_acc`` as fine-tunings saved, those with it as audited
            (fine-tuned anyway, to check the filter over the whole range).

    Returns:
        ``{"screened", "fine_tuned", "rejected", "audited", "saved",
        "saved_fraction" (saved / screened), "threshold", "vs_adv_acc",
        "vs_gap", "vs_gap_before": correlation(...)}``.
    """
    t = _Table(_check_results(results), DEFAULT_BUDGET_EDGES)
    has_fsp = np.asarray([r.fsp is not None for r in t.results], dtype=bool)
    screened = int(has_fsp.sum())
    rejected = audited = 0
    if threshold is not None:
        from .fsp import fsp_filter
        idx = np.flatnonzero(has_fsp)
        _, rej = fsp_filter(t.fsp[idx].tolist(), threshold)
        rejected = len(rej)
        audited = int(np.isfinite(t.adv[idx[rej]]).sum()) if rej else 0
    saved = rejected - audited
    return {"screened": screened, "fine_tuned": int((has_fsp & np.isfinite(t.adv)).sum()),
            "rejected": rejected, "audited": audited, "saved": saved,
            "saved_fraction": saved / screened if screened else float("nan"),
            "threshold": None if threshold is None else float(threshold),
            "vs_adv_acc": correlation(t.fsp, t.adv), "vs_gap": correlation(t.fsp, t.gap),
            "vs_gap_before": correlation(t.fsp, t.gap_before)}


# --------------------------------------------------------------------------- plots

_BUDGET_COLORS = {"small": "tab:blue", "medium": "tab:orange", "large": "tab:green"}


def _new_figure(cols: int, width: float = 6.0, height: float = 4.6):
    # Figure + FigureCanvasAgg render off-screen without pyplot, whatever the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, cols, k + 1) for k in range(cols)]


def _no_data(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _fmt(v: float, digits: int = 2) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _fit_line(ax: Any, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> None:
    if x.size >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 2)
        ax.plot(xs, a * xs + b, **kwargs)


def _density_figure(t: _Table):
    fig, (ax,) = _new_figure(1, 6.4, 4.8)
    ok = np.isfinite(t.adv)
    if not ok.any():
        _no_data(ax, "no fine-tuned architecture")
    for b in BUDGETS:
        sel = ok & (t.budget == b)
        if sel.any():
            ax.scatter(t.density[sel], t.adv[sel], s=16, alpha=0.75, color=_BUDGET_COLORS[b],
                       label=f"{b} budget (n={int(sel.sum())})")
    _fit_line(ax, t.density[ok], t.adv[ok], color="k", lw=1, ls="--", label="least squares")
    c = correlation(t.density, t.adv)
    ax.set_xlabel("architecture density D (Eq. 2)")
    ax.set_ylabel("adversarial accuracy")
    ax.set_title(f"Density vs adversarial accuracy (Fig. 5)\nPearson r = {_fmt(c['pearson'])}, "
                 f"Spearman = {_fmt(c['spearman'])}, Kendall = {_fmt(c['kendall'])}, n = {c['n']}", fontsize=10)
    if ok.any():
        ax.legend(loc="best", fontsize=8, framealpha=0.7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _convs_figure(t: _Table, extreme_fraction: float):
    fig, (ax1, ax2) = _new_figure(2, 6.0, 4.8)
    ok = np.isfinite(t.adv)
    if not ok.any():
        _no_data(ax1, "no fine-tuned architecture")
        _no_data(ax2, "no fine-tuned architecture")
    else:
        styles = (("all convolutions", t.convs, "k", -0.15), ("on direct edges", t.direct_convs, "tab:red", 0.0),
                  ("on skip edges", t.skip_convs, "tab:blue", 0.15))
        for label, counts, color, dx in styles:
            c = np.rint(counts[ok]).astype(int)
            a = t.adv[ok]
            xs = np.unique(c)
            means = np.asarray([a[c == v].mean() for v in xs])
            stds = np.asarray([a[c == v].std(ddof=1) if (c == v).sum() > 1 else 0.0 for v in xs])
            ax1.errorbar(xs + dx, means, yerr=stds, marker="o", ms=4, capsize=2, color=color, lw=1.2, label=label)
        ax1.set_xlabel("number of convolutions per cell")
        ax1.set_ylabel("adversarial accuracy (mean ± std)")
        ax1.set_title("Adversarial accuracy vs convolutions (Fig. 6a)", fontsize=10)
        ax1.legend(loc="best", fontsize=8, framealpha=0.7)
        ax1.grid(alpha=0.3)

        idx = np.flatnonzero(ok)
        order = idx[np.argsort(-t.adv[idx], kind="stable")]
        k = max(1, int(round(extreme_fraction * order.size)))
        groups = (("robust (top)", order[:k]), ("all", order), ("non-robust (bottom)", order[-k:]))
        n_direct, n_skip = len(DIRECT_EDGES), len(SKIP_EDGES)
        measures = (("direct edges with a conv", lambda s: t.direct_convs[s] / n_direct),
                    ("skip edges with a conv", lambda s: t.skip_convs[s] / n_skip),
                    ("convs on direct edges (share)", lambda s: t.direct_share[s]))
        width = 0.26
        colors = ("tab:green", "0.6", "tab:purple")
        for g, (gname, sel) in enumerate(groups):
            vals = [float(np.nanmean(f(sel))) if np.isfinite(f(sel)).any() else 0.0 for _, f in measures]
            xs = np.arange(len(measures)) + (g - 1) * width
            bars = ax2.bar(xs, vals, width=width, color=colors[g], label=f"{gname}, n={sel.size}")
            for bar, v in zip(bars, vals):
                ax2.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                             fontsize=7, xytext=(0, 1), textcoords="offset points")
        ax2.set_xticks(np.arange(len(measures)))
        ax2.set_xticklabels([m for m, _ in measures], fontsize=8)
        ax2.set_ylim(0, 1.15)
        ax2.set_ylabel("mean share")
        ax2.set_title(f"Convolutions on direct vs skip edges (top / bottom {extreme_fraction:.0%})", fontsize=10)
        ax2.legend(loc="upper right", fontsize=8, framealpha=0.8)
        ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _budget_figure(t: _Table, budget_edges: tuple[float, float]):
    fig, (ax1, ax2) = _new_figure(2, 6.0, 4.8)
    ok = np.isfinite(t.adv)
    if not ok.any():
        _no_data(ax1, "no fine-tuned architecture")
        _no_data(ax2, "no fine-tuned architecture")
    else:
        data, labels = [], []
        for b in BUDGETS:
            sel = ok & (t.budget == b) & np.isfinite(t.direct_share)
            x, y = t.direct_share[sel], t.adv[sel]
            c = correlation(x, y)
            if sel.any():
                ax1.scatter(x, y, s=16, alpha=0.75, color=_BUDGET_COLORS[b],
                            label=f"{b}: n={c['n']}, r={_fmt(c['pearson'])}")
                _fit_line(ax1, x, y, color=_BUDGET_COLORS[b], lw=1.2)
            a = t.adv[ok & (t.budget == b)]
            data.append(a)
            labels.append(f"{b}\n(n={a.size})")
        ax1.set_xlabel("share of convolutions on direct edges")
        ax1.set_ylabel("adversarial accuracy")
        ax1.set_title("Direct-convolution share per budget (Fig. 6b)", fontsize=10)
        ax1.legend(loc="best", fontsize=8, framealpha=0.7)
        ax1.grid(alpha=0.3)
        nonempty = [k for k, a in enumerate(data) if a.size]
        ax2.boxplot([data[k] for k in nonempty], positions=[k + 1 for k in nonempty], widths=0.5,
                    showfliers=False, medianprops={"color": "k"})
        for k in nonempty:
            jitter = np.linspace(-0.12, 0.12, data[k].size) if data[k].size > 1 else np.zeros(1)
            ax2.scatter(k + 1 + jitter, data[k], s=8, alpha=0.5, color=_BUDGET_COLORS[BUDGETS[k]])
        ax2.set_xticks([1, 2, 3])
        ax2.set_xticklabels(labels)
        ax2.set_xlim(0.4, 3.6)
        lo, hi = budget_edges
        ax2.set_xlabel(f"budget (convolutions per cell: <= {lo:g}, <= {hi:g}, > {hi:g})")
        ax2.set_ylabel("adversarial accuracy")
        ax2.set_title("Adversarial accuracy per budget", fontsize=10)
        ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _fsp_figure(t: _Table, threshold: float | None):
    has_before = bool((np.isfinite(t.gap_before) & np.isfinite(t.fsp)).any())
    has_clean = has_before or bool(np.isfinite(t.gap).any())
    fig, axes = _new_figure(2 if has_clean else 1, 6.0, 4.8)
    ok_fsp = np.isfinite(t.fsp)
    screened = int(ok_fsp.sum())
    panels = [(axes[0], t.adv, "adversarial accuracy (fine-tuned)", "FSP indicator vs adversarial accuracy")]
    if has_before:
        panels.append((axes[1], t.gap_before, "clean - adversarial accuracy, before fine-tuning",
                       "FSP indicator vs accuracy gap, no fine-tuning (Fig. 7)"))
    elif has_clean:
        panels.append((axes[1], t.gap, "clean - adversarial accuracy (fine-tuned)",
                       "FSP indicator vs accuracy gap (fine-tuned)"))
    for ax, y, ylabel, title in panels:
        sel = ok_fsp & np.isfinite(y)
        c = correlation(t.fsp, y)
        if sel.any():
            kept = sel if threshold is None else sel & (t.fsp <= threshold)  # NaN fsp: not in sel
            ax.scatter(t.fsp[kept], y[kept], s=16, alpha=0.75, color="tab:blue",
                       label="fine-tuned" if threshold is None else "below threshold")
            if threshold is not None and (sel & ~kept).any():
                ax.scatter(t.fsp[sel & ~kept], y[sel & ~kept], s=16, alpha=0.75, color="tab:red",
                           label="above threshold")
            x = t.fsp[sel]
            if x.min() > 0 and x.max() / x.min() > 100:
                ax.set_xscale("log")
        else:
            _no_data(ax, "no architecture with FSP indicator and accuracy")
        if threshold is not None:
            ax.axvline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:.3g}")
        ax.set_xlabel("FSP indicator (deeper cells, Eq. 4)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}\nPearson = {_fmt(c['pearson'])}, Spearman = {_fmt(c['spearman'])}, "
                     f"Kendall = {_fmt(c['kendall'])}, n = {c['n']} of {screened} screened", fontsize=10)
        if sel.any() or threshold is not None:
            ax.legend(loc="best", fontsize=8, framealpha=0.7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def report_figures(results: Iterable[ArchResult], *, budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES,
                   fsp_threshold: float | None = None,
                   extreme_fraction: float = DEFAULT_EXTREME_FRACTION) -> dict[str, Any]:
    """The report's matplotlib figures: ``density``, ``convs``, ``budget`` and (with FSP values) ``fsp``.

    Args:
        results: The architectures and their accuracies.
        budget_edges: Budget bins (see :func:`budget_of`).
        fsp_threshold: Marked on the FSP plot when given.
        extreme_fraction: The robust / non-robust groups of the convolution
            plot: the top and bottom fraction by adversarial accuracy (paper:
            300 of 1,000).

    Returns:
        ``{name: matplotlib.figure.Figure}`` (Agg canvas attached).
    """
    if isinstance(extreme_fraction, bool) or not isinstance(extreme_fraction, (int, float)) \
            or not 0 < extreme_fraction <= 0.5:
        raise ConfigError(f"extreme_fraction must lie in (0, 0.5], but got {extreme_fraction!r}.")
    edges = _check_budget_edges(budget_edges)
    t = _Table(_check_results(results), edges)
    figs = {"density": _density_figure(t), "convs": _convs_figure(t, float(extreme_fraction)),
            "budget": _budget_figure(t, edges)}
    if np.isfinite(t.fsp).any():
        figs["fsp"] = _fsp_figure(t, None if fsp_threshold is None else float(fsp_threshold))
    return figs


def figure_to_image(fig: Any, *, dpi: int = 100) -> np.ndarray:
    """Render a figure to an ``(H, W, 3)`` ``uint8`` RGB array (TensorBoard ``dataformats="HWC"``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    old = fig.get_dpi()
    fig.set_dpi(dpi)
    try:
        canvas.draw()
        img = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        fig.set_dpi(old)
    return img


def report_images(results: Iterable[ArchResult], *, dpi: int = 100, **kwargs: Any) -> dict[str, np.ndarray]:
    """:func:`report_figures` rendered as ``(H, W, 3)`` ``uint8`` arrays, e.g. for
    ``SummaryWriter.add_image(f"robnet/{name}", img, step, dataformats="HWC")``."""
    return {name: figure_to_image(fig, dpi=dpi) for name, fig in report_figures(results, **kwargs).items()}


# --------------------------------------------------------------------------- files


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for row in rows:
        w.writerow([_csv_value(v) for v in row])
    _write_text(path, buf.getvalue())


def write_report(results: Iterable[ArchResult], out_dir: str | os.PathLike, *, stem: str = "robnet",
                 budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES, fsp_threshold: float | None = None,
                 extreme_fraction: float = DEFAULT_EXTREME_FRACTION, plots: bool = True, dpi: int = 110,
                 md_archs: int = 20, title: str | None = None, notes: Sequence[str] = (),
                 summary: Sequence[str] = ()) -> dict[str, Path]:
    """Write RobNet's analyses of ``results`` (Secs. 3.3-3.5) into ``out_dir``.

    ``notes`` (e.g. why a result should not be trusted) open the report
    under "Warnings"; ``summary`` lines follow the introduction.

    Files (``<stem>`` prefix):

    * ``_archs.csv``: one row per architecture (name, compact arch text,
      density, edge density, convolutions all/direct/skip, direct share,
      budget, accuracies, FSP indicator, whether the threshold rejected it);
    * ``_correlations.csv``: :func:`correlation_table`;
    * ``_convs.csv``: :func:`conv_study`; ``_budget.csv``: :func:`budget_study`;
    * ``_report.md``: all tables, the FSP filter summary, the best and worst
      ``md_archs`` architectures, and links to the plots;
    * ``_density.png``, ``_convs.png``, ``_budget.png``, ``_fsp.png`` (the last
      only with FSP values) when ``plots``.

    Returns:
        ``{key: path}`` with keys ``archs_csv``, ``correlations_csv``,
        ``convs_csv``, ``budget_csv``, ``report_md`` and ``<plot>_png``.

    Raises:
        ConfigError: malformed results or options.
    """
    results = _check_results(results)
    edges = _check_budget_edges(budget_edges)
    if fsp_threshold is not None:
        from .fsp import _check_threshold
        fsp_threshold = _check_threshold(fsp_threshold)
    if not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem:
        raise ConfigError(f"stem must be a non-empty file name stem, but got {stem!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = _Table(results, edges)
    paths: dict[str, Path] = {}

    # per architecture
    rejected = np.zeros(len(results), dtype=bool)
    if fsp_threshold is not None:
        rejected = np.asarray([r.fsp is not None and not (math.isfinite(r.fsp) and r.fsp <= fsp_threshold)
                               for r in results], dtype=bool)
    arch_header = ["name", "arch", "density", "edge_density", "convs", "direct_convs", "skip_convs",
                   "direct_share", "budget", "clean_acc", "adv_acc", "adv_acc_before", "fsp", "fsp_rejected",
                   "clean_acc_before"]
    arch_rows = [[t.names[k], str(r.arch), t.density[k], t.edge_density[k], t.convs[k], t.direct_convs[k],
                  t.skip_convs[k], t.direct_share[k], t.budget[k], r.clean_acc, r.adv_acc, r.adv_acc_before,
                  r.fsp, bool(rejected[k]) if r.fsp is not None and fsp_threshold is not None else None,
                  r.clean_acc_before]
                 for k, r in enumerate(results)]
    order = sorted(range(len(results)), key=lambda k: (not math.isfinite(t.adv[k]), -np.nan_to_num(t.adv[k])))
    paths["archs_csv"] = out / f"{stem}_archs.csv"
    _write_csv(paths["archs_csv"], arch_header, [arch_rows[k] for k in order])

    corr = correlation_table(results, budget_edges=edges)
    corr_header = ["x", "y", "n", "pearson", "pearson_p", "spearman", "spearman_p", "kendall", "kendall_p"]
    paths["correlations_csv"] = out / f"{stem}_correlations.csv"
    _write_csv(paths["correlations_csv"], corr_header, [[row[h] for h in corr_header] for row in corr])

    convs = conv_study(results)
    conv_header = ["kind", "count", "n", "adv_mean", "adv_std"]
    paths["convs_csv"] = out / f"{stem}_convs.csv"
    _write_csv(paths["convs_csv"], conv_header, [[row[h] for h in conv_header] for row in convs])

    budgets = budget_study(results, budget_edges=edges)
    budget_header = ["budget", "convs", "n", "adv_mean", "adv_std", "adv_min", "adv_max", "direct_share_mean",
                     "pearson", "spearman", "kendall"]
    paths["budget_csv"] = out / f"{stem}_budget.csv"
    _write_csv(paths["budget_csv"], budget_header, [[row[h] for h in budget_header] for row in budgets])

    fsp = fsp_study(results, threshold=fsp_threshold)

    # plots
    png: dict[str, str] = {}
    if plots:
        for name, fig in report_figures(results, budget_edges=edges, fsp_threshold=fsp_threshold,
                                        extreme_fraction=extreme_fraction).items():
            p = out / f"{stem}_{name}.png"
            tmp = p.with_name(f".{p.name}.tmp.png")
            fig.savefig(tmp, dpi=dpi)
            os.replace(tmp, p)
            paths[f"{name}_png"] = p
            png[name] = p.name

    # markdown
    n_ft = int(np.isfinite(t.adv).sum())
    md = [f"# {title or 'RobNet architecture analysis'}", "",
          f"{len(results)} architectures, {n_ft} fine-tuned, {fsp['screened']} with an FSP indicator. "
          f"Density: RobNet Eq. 2 (sum of alpha over 28 (edge, op) pairs per cell); direct edges j = i + 1; "
          f"budgets by convolutions per cell: small <= {edges[0]:g}, medium <= {edges[1]:g}, large above.", ""]
    if notes:
        md += ["## Warnings", ""] + [f"- **{n}**" for n in notes] + [""]
    if summary:
        md += [f"- {line}" for line in summary] + [""]
    md += ["## Correlations", "", _markdown(["x", "y", "n", "Pearson", "Spearman", "Kendall"],
                                           [[r["x"], r["y"], r["n"], r["pearson"], r["spearman"], r["kendall"]]
                                            for r in corr])]
    if "density" in png:
        md += [f"![density]({png['density']})", ""]
    md += ["## Convolutions on direct and skip edges (Fig. 6a)", "",
           _markdown(conv_header, [[row[h] for h in conv_header] for row in convs])]
    if "convs" in png:
        md += [f"![convolutions]({png['convs']})", ""]
    md += ["## Budget study (Fig. 6b)", "",
           "Correlations: direct-convolution share vs adversarial accuracy within the budget.", "",
           _markdown(budget_header, [[row[h] for h in budget_header] for row in budgets])]
    if "budget" in png:
        md += [f"![budget]({png['budget']})", ""]
    if fsp["screened"]:
        va, vg, vb = fsp["vs_adv_acc"], fsp["vs_gap"], fsp["vs_gap_before"]
        md += ["## FSP indicator (Sec. 3.5, Fig. 7)", "",
               _markdown(["screened", "fine-tuned", "threshold", "rejected", "rejected but fine-tuned (audit)",
                          "fine-tunings saved", "saved share"],
                         [[fsp["screened"], fsp["fine_tuned"], fsp["threshold"], fsp["rejected"], fsp["audited"],
                           fsp["saved"], fsp["saved_fraction"]]]),
               "Correlations of the FSP indicator (lower = more robust, per the paper) with:", "",
               _markdown(["vs", "n", "Pearson", "Spearman", "Kendall", "Kendall p"],
                         [["adversarial accuracy (fine-tuned)", va["n"], va["pearson"], va["spearman"], va["kendall"],
                           va["kendall_p"]],
                          ["clean - adversarial accuracy (fine-tuned)", vg["n"], vg["pearson"], vg["spearman"],
                           vg["kendall"], vg["kendall_p"]],
                          ["clean - adversarial accuracy, no fine-tuning (Fig. 7)", vb["n"], vb["pearson"],
                           vb["spearman"], vb["kendall"], vb["kendall_p"]]])]
        if "fsp" in png:
            md += [f"![fsp]({png['fsp']})", ""]
    show = [arch_header[i] for i in (0, 1, 2, 4, 5, 6, 8, 9, 10, 12)]
    idx = [arch_header.index(h) for h in show]
    finite = [k for k in order if math.isfinite(t.adv[k])]
    if finite:
        m = max(1, int(md_archs))
        md += [f"## Most robust {min(m, len(finite))} architectures", "",
               _markdown(show, [[arch_rows[k][i] for i in idx] for k in finite[:m]])]
        if len(finite) > m:
            md += [f"## Least robust {min(m, len(finite) - m)} architectures", "",
                   _markdown(show, [[arch_rows[k][i] for i in idx] for k in finite[-min(m, len(finite) - m):]])]
    paths["report_md"] = out / f"{stem}_report.md"
    _write_text(paths["report_md"], "\n".join(md))
    logger.info("RobNet analysis of %d architectures written to %s", len(results), out)
    return paths
