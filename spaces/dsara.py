"""The DSARA search space: accurate, robust and reduction cells (DSARA Sec. 4.2).

Zhang et al., "Differentiable Search of Accurate and Robust Architectures"
(DSARA), Sec. 4.2 replaces DARTS's single normal cell by two cell types,
the *Accurate Cell* and the *Robust Cell*, which share the DARTS cell
structure (7 nodes: 2 inputs, 4 intermediate, 1 output) but have their own
architecture parameters; the *Reduction Cell* is kept. Placement (Sec. 4.2):

* the reduction cells sit at one third and two thirds of the network
  (positions ``n // 3`` and ``2 n // 3``);
* accurate cells before the second reduction cell, robust cells after it
  (placement ``A-A-R``: the type of the normal cells of each of the three
  stages);
* filters: doubled at the first reduction cell, unchanged at the second
  (``1-2-2``), instead of DARTS's ``1-2-4``.

Search (Sec. 5.3): 8 cells, ``C = 24`` -> stage channels 24, 48, 48.
Evaluation: 20 cells, ``C = 64`` -> 64, 128, 128. Table 4 / Sec. 6.4 studies
the placements ``A-A-R``, ``R-A-A``, ``A-R-A``, ``A-A-A`` and the filter
settings ``1-2-2``, ``1-2-3``, ``1-2-4`` (:data:`TABLE4_VARIANTS`); all build
with :func:`dsara_layout`.

Operations (choice documented here because the paper differs from DARTS):
Sec. 4.2 lists the candidate operations as "3x3 and 5x5 separable
convolutions, 3x3 and 5x5 dilated separable convolutions, 3x3 max pooling,
3x3 average pooling, and identity" -- exactly DARTS's list (DARTS Sec.
3.1.1) without "zero". We follow the paper's text: :data:`DSARA_PRIMITIVES`
are DARTS's ops without ``none``, also at search time, so the supernet's
``alpha`` have 7 columns and the DARTS derivation rule (which excludes
``none`` anyway) is unchanged. Pass ``primitives=darts.PRIMITIVES`` to keep
``none`` at search time as DARTS does (it is then excluded at derivation).

Placement codes: ``A`` accurate, ``R`` robust (the paper's), and ``N`` for a
plain DARTS ``normal`` cell (our addition, for comparisons); full names are
accepted too.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from nni_robust.errors import ConfigError

from .darts import (PRIMITIVES, DartsArch, DartsLayout, DartsNetwork, DartsSupernet, _make_space_class,
                    arch_from_sample, build_darts_space, register_layout_family)
from .registry import SpaceKind, register_space

__all__ = [
    "DSARA_PRIMITIVES",
    "CELL_TYPES",
    "PLACEMENT_CODES",
    "TABLE4_VARIANTS",
    "SEARCH_SETTINGS",
    "EVAL_SETTINGS",
    "parse_placement",
    "parse_filters",
    "dsara_layout",
    "dsara_supernet",
    "dsara_network",
    "dsara_space",
]

#: DSARA's candidate operations (Sec. 4.2): DARTS's without ``none``, in DARTS order.
DSARA_PRIMITIVES: tuple[str, ...] = tuple(op for op in PRIMITIVES if op != "none")
#: The three cell types of the DSARA space (Sec. 4.2).
CELL_TYPES: tuple[str, ...] = ("accurate", "robust", "reduce")
#: Placement letters -> cell types (Fig. 6 / Table 4 use A and R).
PLACEMENT_CODES: dict[str, str] = {"A": "accurate", "R": "robust", "N": "normal"}
#: Table 4 (Sec. 6.4): (placement, filter setting) of each row, in row order.
TABLE4_VARIANTS: tuple[tuple[str, str], ...] = (
    ("A-A-R", "1-2-2"), ("R-A-A", "1-2-2"), ("A-R-A", "1-2-2"),
    ("A-A-R", "1-2-3"), ("A-A-R", "1-2-4"), ("A-A-A", "1-2-4"))
#: Sec. 5.3 search network: 8 cells, 24 initial channels.
SEARCH_SETTINGS: dict[str, int] = {"num_cells": 8, "init_channels": 24}
#: Sec. 5.3 evaluation network: 20 cells, 64 initial channels.
EVAL_SETTINGS: dict[str, int] = {"num_cells": 20, "init_channels": 64}


def parse_placement(placement: "str | Sequence[str]") -> tuple[str, str, str]:
    """The cell types of the three stages from ``"A-A-R"`` or ``["accurate", "accurate", "robust"]``.

    Raises:
        ConfigError: not three entries, or an unknown code.
    """
    items = re.split(r"[-\s,]+", placement.strip()) if isinstance(placement, str) else placement
    if isinstance(items, str) or not isinstance(items, Sequence) or len(items) != 3:
        raise ConfigError(f"placement must name the cell type of each of the 3 stages, like 'A-A-R', but got "
                          f"{placement!r}.")
    valid = dict(PLACEMENT_CODES)
    valid.update({v: v for v in PLACEMENT_CODES.values()})
    out = []
    for item in items:
        key = item.upper() if isinstance(item, str) and len(item) == 1 else item
        if key not in valid:
            raise ConfigError(f"Unknown placement entry {item!r} in {placement!r}; valid: {sorted(PLACEMENT_CODES)} "
                              f"(A = accurate, R = robust, N = DARTS normal) or {sorted(PLACEMENT_CODES.values())}.")
        out.append(valid[key])
    return tuple(out)  # type: ignore[return-value]


def parse_filters(filters: "str | Sequence[int]") -> tuple[int, int, int]:
    """The channel multipliers of the three stages from ``"1-2-2"`` or ``(1, 2, 2)``.

    Raises:
        ConfigError: not three positive ints.
    """
    items: Any = filters
    if isinstance(filters, str):
        try:
            items = [int(f) for f in re.split(r"[-\s,]+", filters.strip())]
        except ValueError:
            items = None
    if items is None or isinstance(items, str) or not isinstance(items, Sequence) or len(items) != 3 or \
            any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in items):
        raise ConfigError(f"filters must be 3 positive ints like '1-2-2' (the channel multiplier of each stage), "
                          f"but got {filters!r}.")
    return tuple(items)  # type: ignore[return-value]


def dsara_layout(num_cells: int = 8, placement: "str | Sequence[str]" = "A-A-R",
                 filters: "str | Sequence[int]" = "1-2-2") -> DartsLayout:
    """The DSARA layout (Sec. 4.2): reductions at ``n // 3`` and ``2 n // 3`` (type
    ``reduce``), the normal cells of each stage of the type given by ``placement``,
    stage channel multipliers ``filters``.

    Args:
        num_cells: Number of cells (search 8, evaluation 20).
        placement: Paper default ``"A-A-R"``; Table 4 also ``R-A-A``,
            ``A-R-A``, ``A-A-A``.
        filters: Paper default ``"1-2-2"``; Table 4 also ``1-2-3``, ``1-2-4``.

    Raises:
        ConfigError: bad arguments.
    """
    stages = parse_placement(placement)
    mult = parse_filters(filters)
    codes = {v: k for k, v in PLACEMENT_CODES.items()}
    name = f"dsara-{'-'.join(codes[t] for t in stages)}-{'-'.join(str(m) for m in mult)}"
    if num_cells != 8:
        name += f"-{num_cells}"
    return DartsLayout.build(num_cells, stages, mult, reduce_type="reduce", name=name)


def dsara_supernet(*, num_classes: int, num_cells: int = SEARCH_SETTINGS["num_cells"],
                   init_channels: int = SEARCH_SETTINGS["init_channels"], placement: "str | Sequence[str]" = "A-A-R",
                   filters: "str | Sequence[int]" = "1-2-2", primitives: Sequence[str] = DSARA_PRIMITIVES,
                   **kwargs: Any) -> DartsSupernet:
    """The DSARA search supernet (Sec. 5.3 defaults: 8 cells, ``C = 24``).

    ``kwargs`` go to :class:`.darts.DartsSupernet` (``in_channels``,
    ``input_size``, ``mean``, ``std``, ``stem_multiplier``, ``pool_bn``).
    """
    return DartsSupernet(layout=dsara_layout(num_cells, placement, filters), init_channels=init_channels,
                         num_classes=num_classes, primitives=primitives, **kwargs)


def dsara_network(arch: "DartsArch | Mapping[str, Any] | str", *, num_classes: int,
                  num_cells: int = EVAL_SETTINGS["num_cells"], init_channels: int = EVAL_SETTINGS["init_channels"],
                  placement: "str | Sequence[str]" = "A-A-R", filters: "str | Sequence[int]" = "1-2-2",
                  **kwargs: Any) -> DartsNetwork:
    """The DSARA evaluation network of ``arch`` (Sec. 5.3 defaults: 20 cells, ``C = 64``).

    ``kwargs`` go to :class:`.darts.DartsNetwork`.
    """
    return DartsNetwork(arch, layout=dsara_layout(num_cells, placement, filters), init_channels=init_channels,
                        num_classes=num_classes, **kwargs)


def dsara_space(*, num_cells: int = SEARCH_SETTINGS["num_cells"], placement: "str | Sequence[str]" = "A-A-R",
                filters: "str | Sequence[int]" = "1-2-2", primitives: Sequence[str] = DSARA_PRIMITIVES,
                init_channels: int = 16, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                stem_multiplier: int = 3, drop_path_prob: float = 0.0, auxiliary: bool = False) -> Any:
    """The NNI ``DartsSpace`` over the DSARA layout (labels of :func:`.darts.darts_choices`).

    The network arguments are those of :class:`.darts.DartsNetwork` (named
    here so that settings naming an unknown key are rejected).
    """
    layout = dsara_layout(num_cells, placement, filters)
    return _make_space_class()(layout=layout.to_json_value(), primitives=tuple(primitives),
                               init_channels=init_channels, num_classes=num_classes, in_channels=in_channels,
                               input_size=input_size, mean=mean, std=std, stem_multiplier=stem_multiplier,
                               drop_path_prob=drop_path_prob, auxiliary=auxiliary)


# --------------------------------------------------------------------------- registration

register_layout_family("dsara", lambda space: (
    dsara_layout(space.get("num_cells", 8), space.get("placement", "A-A-R"), space.get("filters", "1-2-2")),
    DSARA_PRIMITIVES))

register_space(SpaceKind(
    name="dsara", build=build_darts_space, parse_arch=DartsArch.from_json, from_sample=arch_from_sample,
    arch_type=DartsArch, model_space=f"{__name__}.dsara_space",
    doc="DSARA's accurate / robust / reduction cells (DARTS cells, 7 ops)"))
