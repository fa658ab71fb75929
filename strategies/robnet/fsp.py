"""Feature-flow (FSP) guided search of RobNet: the FSP matrix distance as a robustness indicator.

Guo et al., "When NAS Meets Robustness: In Search of Robust Architectures
against Adversarial Attacks" (RobNet, CVPR 2020), Sec. 3.5, Eqs. (3)-(4),
Fig. 7. The FSP ("flow of solution procedure") matrix is from Yim et al.,
"A Gift from Knowledge Distillation" (CVPR 2017).

* **FSP matrix** of cell ``l`` (Eq. 3): with ``F_in`` (``m`` channels) the
  cell's input and ``F_out`` (``n`` channels) its output, both ``h x w``,
  ``G_l[a, b] = sum_{s,t} F_in[a, s, t] * F_out[b, s, t] / (h * w)``: an
  ``m x n`` channel-by-channel Gram matrix averaged over the positions, one
  per image (:func:`fsp_matrix`).
* **FSP distance** of cell ``l`` (Eq. 4):
  ``L_l = (1 / N) sum_x || G_l(x) - G_l(x') ||_2^2`` with ``x'`` the
  adversarial example of ``x``: the squared Frobenius norm of the difference
  (the sum over all ``m n`` entries, *not* divided by the number of entries)
  averaged over the ``N`` images (:func:`fsp_distance`). ``normalize=
  "elements"`` divides by ``m n`` in addition (not in the paper; it makes
  cells of different width comparable); ``normalize="relative"`` divides each
  image's distance by ``||G_l(x)||_2^2`` (not in the paper: the absolute
  distance grows with the scale of the features, so it also ranks how
  strongly a network's features respond, not only how much they move).
* **Robustness indicator**: the paper observes that the distance of the
  *deeper* cells correlates with the gap between clean and adversarial
  accuracy and "rejects [architectures] with high loss values" before
  fine-tuning, without saying how the deeper cells' distances are combined,
  which cells are "deeper" or where the threshold lies. Our choices (all
  parameters): the indicator is the **mean** over the deeper cells
  (``aggregate="sum"`` available); the deeper cells are the **last third**
  of the network, ``ceil(n / 3)`` cells (``deep_cells=1/3``; for RobNet's 20
  cells positions 13..19, i.e. exactly the last stage, starting with the
  second reduction cell); the threshold is a quantile of the indicators of
  an initial sample (:func:`fsp_threshold`, default the median).

Choices where the paper is silent (documented again at the functions):

* *The cell's input.* A dense robust cell has two inputs (the outputs of the
  two previous cells). We take ``s1``, the output of the previous cell as the
  cell receives it (``cell_input="s1"``); ``cell_input="preprocessed"`` takes
  it after the cell's ReLU-conv1x1-BN pre-processing instead (``C``
  channels). The first cell's input is the stem's output.
* *Different spatial sizes.* A reduction cell halves the resolution, but Eq.
  (3) needs both maps on the same ``h x w`` grid (Yim et al. only pair layers
  of equal size). The larger map is average-pooled to the smaller one's size
  (``adaptive_avg_pool2d``; a 2x2 average pool for the even sizes of
  CIFAR) before the Gram product, so ``h x w`` is the output's size.
* *Which attack.* Not stated; the default is the paper's PGD-7 (eps 8/255,
  step 2/255, random start), any :class:`~nni_robust.attacks.Attack` may be
  passed.
* *Mode.* The network runs in eval mode (BN running statistics), so clean and
  adversarial batches are normalized alike; calibrate a supernet's BN for the
  active architecture first (:func:`nni_robust.bn.calibrate_bn`). The paper
  computes the distances on architectures sampled from the supernet *without*
  fine-tuning (Sec. 3.5), which is what makes the filter cheap.

Cost per batch: the attack, then one forward pass on the clean and one on the
adversarial batch, with forward hooks computing the Gram matrices (one
batched matrix product per cell; no loop over images). The clean matrices of
the hooked cells are held until the adversarial pass consumes them: ``B * m *
n`` floats per cell (RobNet C = 36, batch 64: about 0.8 GB for all 20 cells;
``cells="deep"`` hooks only the deeper cells).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import PGD, Attack
from nni_robust.config import check_choice
from nni_robust.device import batch_to_device, model_device
from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import DenseRobCell, DenseRobNetwork

__all__ = [
    "CELL_INPUTS",
    "DEFAULT_DEEP_FRACTION",
    "DEFAULT_THRESHOLD_QUANTILE",
    "FSPCollector",
    "FSPResult",
    "default_attack",
    "deep_cell_positions",
    "find_network",
    "fsp_distance",
    "fsp_distances",
    "fsp_filter",
    "fsp_matrix",
    "fsp_threshold",
    "robustness_indicator",
]

logger = logging.getLogger(__name__)

#: Where the cell's input feature map is taken: the previous cell's output as
#: the cell receives it, or after the cell's pre-processing (ReLU-conv1x1-BN).
CELL_INPUTS: tuple[str, ...] = ("s1", "preprocessed")
#: "Deeper cells" (Sec. 3.5, Fig. 7): the last third of the network (our choice).
DEFAULT_DEEP_FRACTION = 1.0 / 3.0
#: Threshold = this quantile of an initial sample's indicators (our choice: the median).
DEFAULT_THRESHOLD_QUANTILE = 0.5
_NORMALIZE = ("none", "elements", "relative")
_REDUCTIONS = ("mean", "sum", "none")
_AGGREGATES = ("mean", "sum")

K = TypeVar("K", bound=Hashable)


# --------------------------------------------------------------------------- Eq. (3), Eq. (4)


def fsp_matrix(f_in: torch.Tensor, f_out: torch.Tensor) -> torch.Tensor:
    """The FSP matrices of a batch (RobNet Eq. 3): ``G[b] = F_in[b] F_out[b]^T / (h w)``.

    Args:
        f_in: The cell's input, ``(B, m, H, W)``.
        f_out: The cell's output, ``(B, n, h, w)``. When the two spatial sizes
            differ, the larger map is average-pooled to the smaller one's size
            first (``adaptive_avg_pool2d``; the paper is silent, Eq. 3 needs
            one grid), so ``h x w`` is the smaller size.

    Returns:
        ``(B, m, n)`` float32 matrices (computed in float32 also for
        half-precision inputs).

    Raises:
        ConfigError: not 4-D, different batch sizes, or one map larger in
            height and the other in width.
    """
    if f_in.dim() != 4 or f_out.dim() != 4:
        raise ConfigError(f"fsp_matrix needs (B, C, H, W) feature maps, but got shapes {tuple(f_in.shape)} "
                          f"and {tuple(f_out.shape)}.")
    if f_in.shape[0] != f_out.shape[0]:
        raise ConfigError(f"fsp_matrix: the input and output feature maps have different batch sizes "
                          f"({f_in.shape[0]} and {f_out.shape[0]}).")
    hi, wi = f_in.shape[-2:]
    ho, wo = f_out.shape[-2:]
    if (hi, wi) != (ho, wo):
        if hi >= ho and wi >= wo:
            f_in = F.adaptive_avg_pool2d(f_in.float(), (ho, wo))
        elif ho >= hi and wo >= wi:
            f_out = F.adaptive_avg_pool2d(f_out.float(), (hi, wi))
        else:
            raise ConfigError(f"fsp_matrix: cannot align spatial sizes {(hi, wi)} and {(ho, wo)} "
                              f"(one is larger in height, the other in width).")
    a = f_in.float().flatten(2)   # (B, m, hw)
    b = f_out.float().flatten(2)  # (B, n, hw)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[-1]


def fsp_distance(g_clean: torch.Tensor, g_adv: torch.Tensor, *, reduction: str = "mean",
                 normalize: str = "none") -> torch.Tensor:
    """The FSP distance (RobNet Eq. 4): ``(1/N) sum_x ||G(x) - G(x')||_2^2``.

    The norm is the squared Frobenius norm (sum over all ``m n`` entries,
    not divided by their number, as in Eq. 4 and Yim et al.).

    Args:
        g_clean: ``(B, m, n)`` FSP matrices of the clean images.
        g_adv: ``(B, m, n)`` FSP matrices of their adversarial examples.
        reduction: ``"mean"`` over the batch (Eq. 4), ``"sum"``, or ``"none"``
            (one distance per image).
        normalize: ``"none"`` (paper), ``"elements"`` (divide by ``m n``) or
            ``"relative"`` (divide each image's distance by ``||G(x)||_2^2``
            of its clean matrix: invariant to the scale of the features, which
            the absolute distance grows with; not in the paper).

    Returns:
        A scalar tensor, or ``(B,)`` with ``reduction="none"``.

    Raises:
        ConfigError: shapes differ, unknown ``reduction`` or ``normalize``.
    """
    check_choice("reduction", reduction, _REDUCTIONS)
    check_choice("normalize", normalize, _NORMALIZE)
    if g_clean.shape != g_adv.shape or g_clean.dim() != 3:
        raise ConfigError(f"fsp_distance needs two (B, m, n) tensors of one shape, but got "
                          f"{tuple(g_clean.shape)} and {tuple(g_adv.shape)}.")
    d = (g_clean.float() - g_adv.float()).pow(2).sum(dim=(1, 2))
    if normalize == "elements":
        d = d / (g_clean.shape[1] * g_clean.shape[2])
    elif normalize == "relative":
        d = d / g_clean.float().pow(2).sum(dim=(1, 2)).clamp_min(torch.finfo(torch.float32).tiny)
    if reduction == "mean":
        return d.mean()
    if reduction == "sum":
        return d.sum()
    return d


# --------------------------------------------------------------------------- deeper cells, indicator


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def deep_cell_positions(num_cells: int, deep_cells: float | Sequence[int] = DEFAULT_DEEP_FRACTION) -> tuple[int, ...]:
    """The positions of the "deeper cells" whose FSP distances form the indicator.

    Args:
        num_cells: Cells in the network.
        deep_cells: A fraction in ``(0, 1]``: the last ``ceil(fraction * n)``
            cells (default 1/3: RobNet's 20 cells -> positions 13..19, the last
            stage; the paper only says "cells in a deeper position", Fig. 7),
            or explicit positions in ``[0, n)``.

    Raises:
        ConfigError: bad ``num_cells``, a fraction outside ``(0, 1]``, positions
            out of range, repeated or empty.
    """
    if isinstance(num_cells, bool) or not isinstance(num_cells, int) or num_cells < 1:
        raise ConfigError(f"num_cells must be an int >= 1, but got {num_cells!r}.")
    if _is_fraction(deep_cells):
        frac = float(deep_cells)
        if not 0.0 < frac <= 1.0:
            raise ConfigError(f"deep_cells must be a fraction in (0, 1] or a list of cell positions, "
                              f"but got {deep_cells!r}.")
        k = max(1, math.ceil(frac * num_cells - 1e-9))
        return tuple(range(num_cells - k, num_cells))
    if isinstance(deep_cells, (str, bytes)) or not isinstance(deep_cells, Sequence) or not deep_cells:
        raise ConfigError(f"deep_cells must be a fraction in (0, 1] or a non-empty list of cell positions, "
                          f"but got {deep_cells!r}.")
    positions = []
    for p in deep_cells:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p < num_cells:
            raise ConfigError(f"deep_cells: positions must be ints in [0, {num_cells - 1}], but got {p!r} "
                              f"in {list(deep_cells)!r}.")
        positions.append(int(p))
    if len(set(positions)) != len(positions):
        raise ConfigError(f"deep_cells: repeated positions in {list(deep_cells)!r}.")
    return tuple(sorted(positions))


def robustness_indicator(distances: Mapping[int, float] | Sequence[float], *,
                         deep_cells: float | Sequence[int] = DEFAULT_DEEP_FRACTION,
                         num_cells: int | None = None, aggregate: str = "mean") -> float:
    """Combine per-cell FSP distances into one indicator (lower = more robust).

    Args:
        distances: ``{cell position: L_l}``, or one distance per cell in order.
        deep_cells: Which cells count (see :func:`deep_cell_positions`).
        num_cells: Cells of the network; needed when ``distances`` is a
            mapping and ``deep_cells`` a fraction (default: ``len`` of a
            sequence).
        aggregate: ``"mean"`` (default; the paper does not say) or ``"sum"``
            over the deeper cells.

    Raises:
        ConfigError: a deeper cell without a distance, unknown ``aggregate``,
            ``num_cells`` missing.
    """
    check_choice("aggregate", aggregate, _AGGREGATES)
    if isinstance(distances, Mapping):
        table = {int(k): float(v) for k, v in distances.items()}
        if num_cells is None:
            if _is_fraction(deep_cells):
                raise ConfigError("robustness_indicator needs num_cells= when distances is a mapping and "
                                  "deep_cells a fraction.")
            num_cells = max(max(table, default=0), max(deep_cells, default=0)) + 1  # type: ignore[arg-type]
    else:
        table = {i: float(v) for i, v in enumerate(distances)}
        if num_cells is None:
            num_cells = len(table)
    positions = deep_cell_positions(num_cells, deep_cells)
    missing = [p for p in positions if p not in table]
    if missing:
        raise ConfigError(f"robustness_indicator: no FSP distance for the deeper cells {missing} "
                          f"(have cells {sorted(table)}).")
    values = [table[p] for p in positions]
    return float(np.mean(values) if aggregate == "mean" else np.sum(values))


# --------------------------------------------------------------------------- hooks


def find_network(model: nn.Module) -> DenseRobNetwork:
    """The :class:`DenseRobNetwork` inside ``model`` (``model`` itself, or e.g. a ``DenseRobSpace``).

    Raises:
        ConfigError: no dense robust network in ``model``.
    """
    if isinstance(model, DenseRobNetwork):
        return model
    for m in model.modules():
        if isinstance(m, DenseRobNetwork):
            return m
    raise ConfigError(f"The FSP computation needs a DenseRobNetwork (supernet with an active architecture, "
                      f"or a discrete network), but {type(model).__name__} contains none.")


def _resolve_cells(network: DenseRobNetwork, cells: "Sequence[int] | str | None",
                   deep_cells: float | Sequence[int]) -> tuple[int, ...]:
    n = network.layout.num_cells
    if cells is None or cells == "all":
        return tuple(range(n))
    if cells == "deep":
        return deep_cell_positions(n, deep_cells)
    if isinstance(cells, str):
        raise ConfigError(f"cells must be None, 'all', 'deep' or a list of cell positions, but got {cells!r}.")
    return deep_cell_positions(n, list(cells))  # same validation as explicit positions


class FSPCollector:
    """Forward hooks computing the FSP matrix (Eq. 3) of selected cells of a dense robust network.

    Use as a context manager (the hooks are removed on exit). Each forward
    of the network through :meth:`collect` returns ``{position: (B, m, n)}``;
    :meth:`compare` runs a forward and returns each cell's per-image
    distance (Eq. 4 before the mean) to reference matrices, freeing each
    reference as soon as it is used. Forward passes made outside these two
    methods (e.g. by an attack) are not recorded.

    Args:
        model: A :class:`DenseRobNetwork` or a module containing one (the
            forward is ``model(x)``).
        cells: Positions to hook; ``None``/``"all"`` every cell, ``"deep"``
            the deeper cells of ``deep_cells``.
        cell_input: ``"s1"`` (the previous cell's output as the cell receives
            it; default) or ``"preprocessed"`` (after the cell's
            ReLU-conv1x1-BN).
        deep_cells: Used by ``cells="deep"``.
        normalize: Passed to :func:`fsp_distance` by :meth:`compare`.

    Raises:
        ConfigError: no dense robust network, bad positions or options.
    """

    def __init__(self, model: nn.Module, *, cells: "Sequence[int] | str | None" = None, cell_input: str = "s1",
                 deep_cells: float | Sequence[int] = DEFAULT_DEEP_FRACTION, normalize: str = "none") -> None:
        check_choice("cell_input", cell_input, CELL_INPUTS)
        check_choice("normalize", normalize, _NORMALIZE)
        self.model = model
        self.network = find_network(model)
        self.cells = _resolve_cells(self.network, cells, deep_cells)
        self.cell_input = cell_input
        self.normalize = normalize
        self._handles: list[Any] = []
        self._pre: dict[int, torch.Tensor] = {}
        self._out: dict[int, torch.Tensor] = {}
        self._reference: dict[int, torch.Tensor] | None = None
        self._active = False

    # ---- lifecycle
    def __enter__(self) -> "FSPCollector":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        """Register the hooks (idempotent)."""
        if self._handles:
            return
        for pos in self.cells:
            cell = self.network.cells[pos]
            if not isinstance(cell, DenseRobCell):  # pragma: no cover - DenseRobNetwork builds only these
                raise ConfigError(f"Cell {pos} is a {type(cell).__name__}, not a DenseRobCell.")
            if self.cell_input == "preprocessed":
                self._handles.append(cell.preprocess1.register_forward_hook(self._make_pre_hook(pos)))
            self._handles.append(cell.register_forward_hook(self._make_cell_hook(pos), with_kwargs=True))

    def close(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pre.clear()
        self._out.clear()
        self._reference = None

    # ---- hooks
    def _make_pre_hook(self, pos: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self._active:
                self._pre[pos] = output
        return hook

    def _make_cell_hook(self, pos: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if not self._active:
                return
            if self.cell_input == "preprocessed":
                f_in = self._pre.pop(pos)
            else:
                f_in = args[1] if len(args) > 1 else kwargs["s1"]
            with torch.no_grad():
                g = fsp_matrix(f_in.detach(), output.detach())
                if self._reference is None:
                    self._out[pos] = g
                else:
                    ref = self._reference.pop(pos)
                    self._out[pos] = fsp_distance(ref, g, reduction="none", normalize=self.normalize)
        return hook

    def _forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if not self._handles:
            raise ConfigError("FSPCollector is closed; use it as a context manager or call open() first.")
        self._out = {}
        self._active = True
        try:
            with torch.no_grad():
                self.model(x)
        finally:
            self._active = False
            self._pre.clear()
        out, self._out = self._out, {}
        missing = [p for p in self.cells if p not in out]
        if missing:  # pragma: no cover - every cell runs in a DenseRobNetwork forward
            raise ConfigError(f"FSPCollector: cells {missing} did not run in the forward pass.")
        return out

    # ---- public
    def collect(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """One forward pass (no grad) of ``x``; ``{position: (B, m, n) FSP matrices}``."""
        self._reference = None
        return self._forward(x)

    def compare(self, x: torch.Tensor, reference: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """One forward pass of ``x``; ``{position: (B,) ||G_ref - G(x)||^2}`` per image.

        ``reference`` (e.g. :meth:`collect` of the clean batch) is consumed:
        each matrix is dropped from the given dict once used, to keep memory flat.
        """
        missing = [p for p in self.cells if p not in reference]
        if missing:
            raise ConfigError(f"FSPCollector.compare: no reference FSP matrix for cells {missing}.")
        self._reference = reference if isinstance(reference, dict) else dict(reference)
        try:
            return self._forward(x)
        finally:
            self._reference = None


# --------------------------------------------------------------------------- over a data set


def default_attack() -> PGD:
    """The paper's PGD-7: eps 8/255, step 2/255 (0.01 in Sec. 3.3), random start (Sec. 4.1)."""
    return PGD(8 / 255, step=2 / 255, steps=7, random_start=True)


@dataclass(frozen=True)
class FSPResult:
    """FSP distances of one architecture (RobNet Sec. 3.5).

    Attributes:
        distances: ``{cell position: L_l}`` (Eq. 4) for every hooked cell.
        deep_cells: Positions that form the indicator.
        indicator: Mean (or sum, per ``aggregate``) of the deeper cells'
            distances; lower means more robust.
        aggregate: ``"mean"`` or ``"sum"``.
        num_images: Images the distances average over.
        normalize: ``"none"`` (paper), ``"elements"`` or ``"relative"`` (see :func:`fsp_distance`).
        cell_input: ``"s1"`` or ``"preprocessed"``.
    """

    distances: Mapping[int, float]
    deep_cells: tuple[int, ...]
    indicator: float
    aggregate: str
    num_images: int
    normalize: str = "none"
    cell_input: str = "s1"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (cell positions as string keys)."""
        return {"distances": {str(k): float(v) for k, v in self.distances.items()},
                "deep_cells": list(self.deep_cells), "indicator": float(self.indicator),
                "aggregate": self.aggregate, "num_images": int(self.num_images),
                "normalize": self.normalize, "cell_input": self.cell_input}


def fsp_distances(model: nn.Module, batches: Iterable, *, attack: Attack | None = None,
                  cells: "Sequence[int] | str | None" = None, cell_input: str = "s1",
                  deep_cells: float | Sequence[int] = DEFAULT_DEEP_FRACTION, aggregate: str = "mean",
                  normalize: str = "none", max_images: int | None = None,
                  device: torch.device | str | None = None, seed: int | None = None) -> FSPResult:
    """Per-cell FSP distances between clean and adversarial inputs, and the indicator (Sec. 3.5).

    For each batch: adversarial examples by ``attack`` (white-box, on
    ``model`` itself), one forward pass of the clean batch and one of the
    adversarial batch with the hooks of :class:`FSPCollector`. Distances are
    summed over images and divided by their number (Eq. 4's ``1/N``).

    The model runs in eval mode (restored afterwards, also on error): BN uses
    its running statistics, so calibrate a supernet's BN for the active
    architecture first (:func:`nni_robust.bn.calibrate_bn`). Set the
    supernet's architecture (``set_arch``) before calling.

    Args:
        model: A :class:`DenseRobNetwork` (or a module containing one).
        batches: Iterable of ``(x, y, ...)``: ``x`` float in ``[0, 1]`` or
            uint8 (scaled by 1/255), ``y`` integer labels (for the attack).
        attack: Default :func:`default_attack` (PGD-7, 8/255, 2/255).
        cells: Cells to compute (default all; ``"deep"`` only the deeper ones).
        cell_input: ``"s1"`` or ``"preprocessed"`` (see :class:`FSPCollector`).
        deep_cells: The deeper cells (see :func:`deep_cell_positions`).
        aggregate: ``"mean"`` or ``"sum"`` over the deeper cells.
        normalize: ``"none"`` (paper), ``"elements"`` or ``"relative"`` (see :func:`fsp_distance`).
        max_images: Use at most this many images (the last batch is cut).
        device: Where to run; default where the model's parameters are.
        seed: Seeds the attack's random start (through a forked torch RNG, so
            the global RNG state is untouched); ``None``: the global RNG.

    Returns:
        The :class:`FSPResult`.

    Raises:
        ConfigError: bad options, or no image was given.
    """
    check_choice("aggregate", aggregate, _AGGREGATES)
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ConfigError(f"max_images must be None or an int >= 1, but got {max_images!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be None or an int, but got {seed!r}.")
    attack = default_attack() if attack is None else attack
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack must be an nni_robust.attacks.Attack, but got {type(attack).__name__}.")
    collector = FSPCollector(model, cells=cells, cell_input=cell_input, deep_cells=deep_cells,
                             normalize=normalize)
    network = collector.network
    deep = deep_cell_positions(network.layout.num_cells, deep_cells)
    missing = [p for p in deep if p not in collector.cells]
    if missing:
        raise ConfigError(f"fsp_distances: the deeper cells {missing} are not among cells={cells!r}.")
    dev = model_device(model) if device is None else torch.device(device)

    sums = {p: torch.zeros((), dtype=torch.float64, device=dev) for p in collector.cells}
    seen = 0
    modes = {m: m.training for m in model.modules()}
    rng_devices = [dev] if dev.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=rng_devices, enabled=seed is not None), collector:
            if seed is not None:
                torch.manual_seed(seed)
            for batch in batches:
                if max_images is not None and seen >= max_images:
                    break
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ConfigError("fsp_distances needs batches of (x, y, ...) (labels for the attack).")
                x, y = batch_to_device(batch[0], batch[1], device=dev, seen=seen, max_images=max_images)
                x_adv = attack(model, x, y)
                reference = collector.collect(x)
                per_image = collector.compare(x_adv, reference)
                for p, d in per_image.items():
                    sums[p] += d.double().sum()
                seen += x.shape[0]
    finally:
        for m, mode in modes.items():
            m.training = mode
    if seen == 0:
        raise ConfigError("fsp_distances: no image was given (empty batches).")
    distances = {p: float(s) / seen for p, s in sums.items()}
    indicator = robustness_indicator(distances, deep_cells=deep, num_cells=network.layout.num_cells,
                                     aggregate=aggregate)
    logger.debug("FSP distances on %d images: %s; indicator %.6g", seen, distances, indicator)
    return FSPResult(distances=distances, deep_cells=deep, indicator=indicator, aggregate=aggregate,
                     num_images=seen, normalize=normalize, cell_input=cell_input)


# --------------------------------------------------------------------------- filter


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(threshold)):
        raise ConfigError(f"threshold must be a finite number, but got {threshold!r}.")
    return float(threshold)


def fsp_filter(indicators: "Mapping[K, float] | Sequence[float]",
               threshold: float) -> "tuple[list[K], list[K]] | tuple[list[int], list[int]]":
    """Reject the architectures whose FSP indicator is above ``threshold`` (Sec. 3.5).

    "We first calculate FSP matrix loss for each architecture and reject those
    with high loss values. We then perform finetuning." An indicator equal to
    the threshold is kept; a non-finite one (NaN, inf: a diverged network) is
    rejected.

    Args:
        indicators: ``{key: indicator}`` (e.g. architecture -> indicator), or
            a sequence of indicators.
        threshold: Reject strictly above this value.

    Returns:
        ``(kept, rejected)``: keys (for a mapping) or indices (for a
        sequence), each in the input's order.

    Raises:
        ConfigError: a non-finite threshold, or a non-numeric indicator.
    """
    t = _check_threshold(threshold)
    items = list(indicators.items()) if isinstance(indicators, Mapping) else list(enumerate(indicators))
    kept: list[Any] = []
    rejected: list[Any] = []
    for key, value in items:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"fsp_filter: the indicator of {key!r} is not a number: {value!r}.") from None
        (kept if math.isfinite(v) and v <= t else rejected).append(key)
    logger.debug("fsp_filter(threshold=%.6g): kept %d, rejected %d", t, len(kept), len(rejected))
    return kept, rejected


def fsp_threshold(indicators: "Mapping[Any, float] | Sequence[float]", *,
                  quantile: float = DEFAULT_THRESHOLD_QUANTILE) -> float:
    """A threshold for :func:`fsp_filter`: the ``quantile`` of an initial sample's indicators.

    The paper gives no threshold ("reject those with high loss values");
    taking a quantile of the indicators of an initial set of sampled
    architectures fixes the share rejected: about ``1 - quantile`` of
    architectures like them. Default the median (our choice). Non-finite
    indicators are ignored; linear interpolation between order statistics
    (``numpy.quantile``).

    Raises:
        ConfigError: ``quantile`` outside ``[0, 1]``, or no finite indicator.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"quantile must be a number in [0, 1], but got {quantile!r}.")
    values = np.asarray(list(indicators.values()) if isinstance(indicators, Mapping) else list(indicators),
                        dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ConfigError("fsp_threshold needs at least one finite indicator, but got none.")
    return float(np.quantile(values, quantile))
