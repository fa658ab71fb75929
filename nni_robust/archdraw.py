"""Pictures of architectures: cells as graphs, architecture weights as heatmaps.

Every space's architecture class describes its cells with
:class:`CellGraph` (``arch.cell_graphs()``: input nodes, intermediate nodes,
edges labelled with their operation, the output node); this module draws
them, so the report page, TensorBoard and the command line show the same
picture for every method without knowing any space.

Drawing (:func:`draw_cells`, :func:`draw_architecture`): one panel per cell,
nodes on one line from left (inputs) to right (output); each operation edge
is an arc above the line whose height grows with the number of nodes it
skips, labelled at its top with the operation's short name (colour per
operation, the same in every panel); the concatenation into the output node
is drawn as grey dashed arcs below the line. Arcs that start at one node
leave it nested (the longer arc outside), so labels of arcs of one length
sit side by side at one height, one node apart, and never overlap
(:func:`label_overlaps` checks it on the drawn figure).

Heatmaps (:func:`arch_weights_figure`): the operation x edge weights of a
differentiable search (softmax of the alphas), diverging around the uniform
weight ``1 / #ops`` so that a search whose weights have not moved looks flat
and says so, with a colour bar, the value in each cell and the strongest
operation of each edge outlined.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas
(no pyplot state: safe in the tuner's threads); :func:`figure_to_image` gives
the ``HxWx3`` uint8 array TensorBoard's ``add_image(..., dataformats="HWC")`` takes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ArchitectureError

__all__ = ["CellGraph", "OP_SHORT_NAMES", "short_op", "op_colour", "cell_graphs_of", "draw_cells",
           "draw_architecture", "arch_weights_figure", "figure_to_image", "save_figure", "label_overlaps",
           "cell_edge_names"]

#: Short display names of the operations the spaces use (unknown names are shown with spaces for ``_``).
OP_SHORT_NAMES: dict[str, str] = {
    "none": "zero", "skip_connect": "skip", "identity": "skip",
    "sep_conv_3x3": "sep 3x3", "sep_conv_5x5": "sep 5x5", "sep_conv_7x7": "sep 7x7",
    "res_sep_conv_3x3": "res-sep 3x3", "dil_conv_3x3": "dil 3x3", "dil_conv_5x5": "dil 5x5",
    "max_pool_3x3": "max pool", "avg_pool_3x3": "avg pool", "conv_7x1_1x7": "conv 7x1-1x7",
    "nor_conv_1x1": "conv 1x1", "nor_conv_3x3": "conv 3x3", "conv_1x1": "conv 1x1", "conv_3x3": "conv 3x3",
    "gabor_3x3": "gabor 3x3", "denoising": "denoise",
}

# One colour per operation, stable across panels and figures (colour-blind friendly first).
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#7F7F7F",
            "#BCBD22", "#17BECF", "#9467BD", "#2CA02C")
_OP_ORDER = ("sep_conv_3x3", "res_sep_conv_3x3", "skip_connect", "none", "sep_conv_5x5", "dil_conv_3x3",
             "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3", "gabor_3x3",
             "denoising")


@dataclasses.dataclass(frozen=True)
class CellGraph:
    """One cell as a graph.

    Args:
        name: The cell's name (cell type or topology, e.g. ``normal``, ``S0``, ``cell``).
        inputs: Names of the input nodes, left to right (e.g. ``("c_{k-2}", "c_{k-1}")``).
        nodes: Names of the intermediate nodes in their order (the last one is the
            output itself when ``output`` is None).
        edges: ``(source, target, operation)``; sources and targets are node names,
            each target an intermediate node after its source. Leave out edges the
            cell does not have (``none`` / zero edges).
        output: Name of the output node that concatenates ``output_from`` (None:
            the last intermediate node is the output).
        output_from: Nodes concatenated into ``output`` (default: every intermediate node).
        note: One line under the name (e.g. ``reduction; positions 2, 5``).

    Raises:
        ArchitectureError: an edge names an unknown node or runs right to left.
    """

    name: str
    inputs: tuple[str, ...]
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]
    output: str | None = "c_{k}"
    output_from: tuple[str, ...] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        order = list(self.inputs) + list(self.nodes)
        if len(set(order)) != len(order) or not self.nodes:
            raise ArchitectureError(f"cell {self.name!r}: node names must be distinct and there must be at least "
                                    f"one intermediate node, got inputs {self.inputs} and nodes {self.nodes}.")
        pos = {n: k for k, n in enumerate(order)}
        for edge in self.edges:
            if len(edge) != 3 or edge[0] not in pos or edge[1] not in self.nodes or pos[edge[0]] >= pos[edge[1]]:
                raise ArchitectureError(f"cell {self.name!r}: edge {edge!r} must be (source, later intermediate "
                                        f"node, operation) over the nodes {order}.")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple(tuple(e) for e in self.edges))
        if self.output_from is not None:
            object.__setattr__(self, "output_from", tuple(self.output_from))

    @property
    def order(self) -> tuple[str, ...]:
        """Every node left to right (inputs, intermediate nodes, then the output if any)."""
        return self.inputs + self.nodes + ((self.output,) if self.output is not None else ())


def short_op(op: str) -> str:
    """The display name of an operation (``sep_conv_3x3`` -> ``sep 3x3``)."""
    return OP_SHORT_NAMES.get(op, str(op).replace("_", " "))


def op_colour(op: str, ops: Sequence[str] = ()) -> str:
    """A colour for ``op``: by its place in the known operations, else in ``ops``, else by its name."""
    if op in _OP_ORDER:
        k = _OP_ORDER.index(op)
    elif op in ops:
        k = len(_OP_ORDER) + list(ops).index(op)
    else:
        k = sum(map(ord, op))
    return _PALETTE[k % len(_PALETTE)]


def cell_graphs_of(arch: Any) -> list[CellGraph]:
    """``arch.cell_graphs()``: the cells of an architecture of any space that describes itself.

    Raises:
        ArchitectureError: the architecture's class has no ``cell_graphs()``.
    """
    fn = getattr(arch, "cell_graphs", None)
    if fn is None:
        raise ArchitectureError(f"{type(arch).__name__} cannot be drawn: its space gives no cell_graphs().")
    return list(fn())


def cell_edge_names(edges: Iterable[tuple[int, int]], *, num_inputs: int = 2, target_first: bool = True,
                    input_names: Sequence[str] | None = None) -> list[str]:
    """Readable names of a cell's edges given as node indices, e.g. ``c_{k-1} -> 0``.

    Args:
        edges: ``(target, source)`` pairs (``target_first``) or ``(source, target)``.
        num_inputs: Nodes ``0 .. num_inputs - 1`` are the cell inputs.
        target_first: Order of the pairs.
        input_names: Names of the inputs (default ``c_{k-2}, c_{k-1}`` for two, ``in`` for one).
    """
    if input_names is None:
        input_names = ("c_{k-2}", "c_{k-1}") if num_inputs == 2 else tuple(
            "in" if num_inputs == 1 else f"in{k}" for k in range(num_inputs))

    def name(k: int) -> str:
        return input_names[k] if k < num_inputs else str(k - num_inputs)

    out = []
    for a, b in edges:
        src, dst = (b, a) if target_first else (a, b)
        out.append(f"{name(src)}→{name(dst)}")
    return out


# --------------------------------------------------------------------------- figures
def _new_figure(width: float, height: float, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _tex(name: str) -> str:
    """Node names with ``_{...}`` are shown as math text (``c_{k-2}`` -> c with subscript k-2)."""
    return f"${name}$" if "_{" in name and not name.startswith("$") else name


_UNIT = 1.1  # inches per node step
_LEVEL = 0.37  # arc height per skipped node (data units; 1 unit = one node step)
_BASE = 0.28  # arc height of the shortest arc above the node tops


def _arc_height(span: int) -> float:
    return _BASE + _LEVEL * (span - 1)


def _panel_height(graph: CellGraph) -> float:
    order = graph.inputs + graph.nodes
    pos = {n: k for k, n in enumerate(order)}
    spans = [pos[b] - pos[a] for a, b, _ in graph.edges] or [1]
    below = 0.9 if graph.output is not None else 0.35
    return _arc_height(max(spans)) + 0.4 + below + 0.45  # arcs + labels + node row + concat arcs + title


def _quad(p0: tuple[float, float], c: tuple[float, float], p2: tuple[float, float]):
    from matplotlib.path import Path as MplPath

    return MplPath([p0, c, p2], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])


def _draw_cell(ax: Any, graph: CellGraph, ops_seen: Sequence[str]) -> list[Any]:
    """Draw one cell into ``ax`` (data units: one node step = 1); returns the edge-label artists."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    order = graph.order
    pos = {n: float(k) for k, n in enumerate(order)}
    half_w, half_h = 0.27, 0.17
    # nodes
    for name, x in pos.items():
        if name in graph.inputs:
            face, edge = "#DCEBFA", "#3A6EA5"
        elif name == graph.output or (graph.output is None and name == graph.nodes[-1]):
            face, edge = "#DFF2E1", "#2E7D32"
        else:
            face, edge = "#F4F4F4", "#555555"
        ax.add_patch(FancyBboxPatch((x - half_w, -half_h), 2 * half_w, 2 * half_h,
                                    boxstyle="round,pad=0.0,rounding_size=0.08", fc=face, ec=edge, lw=1.2,
                                    zorder=3))
        ax.text(x, 0.0, _tex(name), ha="center", va="center", fontsize=10, zorder=4)
    # operation edges: arcs above, nested at their end nodes (longer arcs outside)
    out_edges: dict[str, list[tuple[int, int]]] = {}
    in_edges: dict[str, list[tuple[int, int]]] = {}
    for k, (a, b, _) in enumerate(graph.edges):
        span = int(pos[b] - pos[a])
        out_edges.setdefault(a, []).append((span, k))
        in_edges.setdefault(b, []).append((span, k))
    start_x: dict[int, float] = {}
    end_x: dict[int, float] = {}
    for node, items in out_edges.items():  # outgoing leave from the right half of the top, longest nearest the centre
        items.sort(reverse=True)
        for r, (_, k) in enumerate(items):
            start_x[k] = pos[node] + 0.04 + (half_w - 0.08) * (r + 0.5) / len(items)
    for node, items in in_edges.items():  # incoming land on the left half, longest nearest the centre
        items.sort(reverse=True)
        for r, (_, k) in enumerate(items):
            end_x[k] = pos[node] - 0.04 - (half_w - 0.08) * (r + 0.5) / len(items)
    labels = []
    for k, (a, b, op) in enumerate(graph.edges):
        span = int(pos[b] - pos[a])
        x0, x2 = start_x[k], end_x[k]
        top = half_h + _arc_height(span)
        xm = 0.5 * (x0 + x2)
        ctrl = (xm, 2 * top - half_h)  # a quadratic Bezier peaks halfway to its control point
        colour = op_colour(op, ops_seen)
        ax.add_patch(FancyArrowPatch(path=_quad((x0, half_h), ctrl, (x2, half_h)), arrowstyle="-|>",
                                     mutation_scale=11, lw=1.6, color=colour, zorder=2))
        labels.append(ax.text(xm, top, short_op(op), ha="center", va="center", fontsize=8.5, color="#222222",
                              zorder=5, bbox=dict(boxstyle="round,pad=0.22", fc="white", ec=colour, lw=1.0)))
    # concatenation into the output node: dashed arcs below
    if graph.output is not None:
        sources = graph.output_from if graph.output_from is not None else graph.nodes
        xo = pos[graph.output]
        for n, src in enumerate(sources):
            x0 = pos[src]
            span = xo - x0
            depth = half_h + 0.18 + 0.11 * (span - 1)
            x2 = xo - 0.05 - (half_w - 0.1) * (n + 0.5) / max(1, len(sources))
            ax.add_patch(FancyArrowPatch(path=_quad((x0, -half_h), (0.5 * (x0 + x2), -(2 * depth - half_h)),
                                                    (x2, -half_h)),
                                         arrowstyle="-|>", mutation_scale=8, lw=0.9, color="#9E9E9E",
                                         linestyle=(0, (3, 2)), zorder=1))
    return labels


def draw_cells(graphs: Sequence[CellGraph], *, title: str | None = None, columns: int | None = None,
               dpi: int = 100):
    """One panel per cell, laid out in a grid.

    Args:
        graphs: The cells (:class:`CellGraph`).
        title: Figure title (e.g. the architecture's name and where it came from).
        columns: Panels per row (default: 1 for one cell, else 2).
        dpi: Resolution of the figure.

    Returns:
        The figure (Agg canvas attached); ``fig.edge_labels`` lists the label artists
        (:func:`label_overlaps`).
    """
    graphs = list(graphs)
    if not graphs:
        raise ArchitectureError("draw_cells needs at least one cell.")
    n = len(graphs)
    cols = columns or (1 if n == 1 else 2)
    rows = math.ceil(n / cols)
    widest = max(len(g.order) for g in graphs)
    panel_w = max(4.0, (widest - 1) * _UNIT + 1.4)
    heights = [max(_panel_height(g) for g in graphs[r * cols:(r + 1) * cols]) for r in range(rows)]
    head = 0.5 if title else 0.1
    scale = _UNIT  # inches per data unit
    fig = _new_figure(cols * panel_w, sum(h * scale for h in heights) + head, dpi=dpi)
    ops_seen = sorted({op for g in graphs for _, _, op in g.edges})
    labels = []
    total_h = fig.get_figheight()
    y_top = total_h - head
    for r in range(rows):
        h_in = heights[r] * scale
        for c in range(cols):
            i = r * cols + c
            if i >= n:
                break
            g = graphs[i]
            left = c * panel_w / fig.get_figwidth()
            bottom = (y_top - h_in) / total_h
            ax = fig.add_axes((left, bottom, panel_w / fig.get_figwidth(), h_in / total_h))
            ax.set_axis_off()
            x_lo = -0.7
            ax.set_xlim(x_lo, x_lo + panel_w / scale)
            below = 0.9 if g.output is not None else 0.35
            ax.set_ylim(-below - 0.1, heights[r] - below - 0.1)
            labels += _draw_cell(ax, g, ops_seen)
            head_txt = g.name + (f"  ·  {g.note}" if g.note else "")
            ax.text(x_lo + 0.1, heights[r] - below - 0.3, head_txt, ha="left", va="center", fontsize=11,
                    fontweight="bold", color="#222222")
        y_top -= h_in
    if title:
        fig.text(0.01, 1 - 0.3 / total_h, title, ha="left", va="center", fontsize=12, color="#111111")
    fig.edge_labels = labels
    return fig


def draw_architecture(arch: Any, *, title: str | None = None, **kwargs: Any):
    """:func:`draw_cells` of ``arch.cell_graphs()`` (any space whose architecture class describes its cells)."""
    return draw_cells(cell_graphs_of(arch), title=title, **kwargs)


def label_overlaps(fig: Any) -> list[tuple[str, str]]:
    """Pairs of edge labels of a :func:`draw_cells` figure whose boxes overlap (empty when readable),
    and labels that stick out of the figure (paired with ``"<outside>"``)."""
    fig.canvas.draw()  # (label boxes are laid out when drawn)
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_bbox_patch().get_window_extent(renderer)) for t in fig.edge_labels]
    full = fig.bbox
    out = []
    for k, (name, box) in enumerate(boxes):
        if box.x0 < full.x0 - 1 or box.x1 > full.x1 + 1 or box.y0 < full.y0 - 1 or box.y1 > full.y1 + 1:
            out.append((name, "<outside>"))
        for other, obox in boxes[k + 1:]:
            if box.overlaps(obox):
                out.append((name, other))
    return out


_SUBSCRIPT = str.maketrans("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ")


def _sub_label(text: str) -> str:
    """``c_{k-2}→0`` as ``cₖ₋₂→0`` (Unicode subscripts: math text would be parsed anew in every figure)."""
    import re

    return re.sub(r"_\{([^}]*)\}", lambda m: m.group(1).translate(_SUBSCRIPT), text)


def arch_weights_figure(weights: Any, ops: Sequence[str], edges: Sequence[str], *, title: str = "",
                        dpi: int = 90):
    """Operation x edge heatmap of architecture weights (rows: operations, columns: edges).

    Args:
        weights: ``(len(edges), len(ops))`` array-like of weights (e.g. softmax of the alphas).
        ops: Operation names (the columns of ``weights``).
        edges: Edge names (the rows of ``weights``), e.g. from :func:`cell_edge_names`.
        title: Heading (e.g. ``normal cell, epoch 12``).
        dpi: Resolution.

    The colours diverge around the uniform weight ``1 / len(ops)`` (white), so an edge
    whose weights have not moved is white; the strongest operation of each edge is
    outlined and its weight written.
    """
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    w = np.asarray(weights.detach().float().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if w.shape != (len(edges), len(ops)):
        raise ValueError(f"weights have shape {w.shape}, expected (edges, ops) = ({len(edges)}, {len(ops)}).")
    uniform = 1.0 / len(ops)
    hi = max(float(w.max()), uniform * 1.02)
    lo = min(float(w.min()), uniform * 0.98)
    norm = TwoSlopeNorm(vcenter=uniform, vmin=lo, vmax=hi)
    width, height = 1.6 + 0.6 * len(edges), 1.25 + 0.3 * len(ops)
    fig = _new_figure(width, height, dpi=dpi)
    left, right, bottom, top = 1.0 / width, 1 - 0.95 / width, 0.72 / height, 1 - 0.4 / height
    ax = fig.add_axes((left, bottom, right - left, top - bottom))
    cax = fig.add_axes((right + 0.12 / width, bottom, 0.12 / width, top - bottom))
    im = ax.imshow(w.T, cmap="RdBu_r", norm=norm, aspect="auto")
    ax.set_xticks(range(len(edges)))
    ax.set_xticklabels([_sub_label(e) for e in edges], rotation=35, ha="right", fontsize=9.5)
    ax.set_yticks(range(len(ops)))
    ax.set_yticklabels([short_op(o) for o in ops], fontsize=8.5)
    for e in range(len(edges)):  # (only the strongest value is written: text is what makes a figure slow)
        best = int(w[e].argmax())
        ax.add_patch(Rectangle((e - 0.5, best - 0.5), 1, 1, fill=False, ec="black", lw=1.5))
        shade = float(norm(w[e, best]))
        ax.text(e, best, f"{w[e, best]:.3f}", ha="center", va="center", fontsize=6.5,
                color="white" if shade > 0.8 else "#222222")
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=7)
    cb.set_label(f"weight (white: uniform {uniform:.3f})", fontsize=7.5)
    strongest = float(w.max(axis=1).mean())
    head = f"{title}  ·  " if title else ""
    fig.text(left, 1 - 0.2 / height, f"{head}mean strongest weight per edge {strongest:.3f} (uniform {uniform:.3f}); "
             "boxed: each edge's strongest operation and its weight", fontsize=9, ha="left", va="center")
    return fig


def figure_to_image(fig: Any) -> Any:
    """The figure as an ``H x W x 3`` uint8 numpy array (``add_image(tag, img, step, dataformats="HWC")``)."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` (PNG/SVG/PDF by the suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path
