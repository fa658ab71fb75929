"""Sampling RobNet architectures from the supernet (Secs. 3.2-3.5).

* :func:`sample_architecture` -- "random sampling from the supernet" (Sec.
  3.2): every element of ``alpha`` (per edge: separable convolution,
  identity) is 0 or 1 with probability 1/2, i.e. every edge's op is uniform
  over ``none``, ``sep_conv_3x3``, ``skip_connect``, ``res_sep_conv_3x3``.
  Cell-based layouts (one topology shared by all cells, Sec. 3.3) draw one
  topology; cell-free layouts (one topology per cell, Sec. 3.5) draw one per
  cell, independently.
* :func:`sample_in_budget` -- the budget study (Sec. 3.4: "for each of the
  budget, we randomly sample 100 architectures"): the number of convolutions
  of every cell uniform within the budget's range, placed on uniformly chosen
  edges (each a separable or residual separable convolution with probability
  1/2), the other edges ``none`` or ``skip_connect`` with probability 1/2.
  Uniform sampling hardly ever reaches the large budget (11+ of 14 edges: 3%
  of cell-based architectures, practically never the mean of 20 cells), hence
  this sampler. For a cell-free architecture every cell lies in the range,
  so the mean per cell does too.

Every function takes a ``random.Random`` (the strategy's, saved in its state).
"""

from __future__ import annotations

import random
from typing import Sequence

from nni_robust.errors import ConfigError
from nni_robust.spaces.dense_rob import NUM_EDGES, DenseRobArch, Layout

from .analysis import BUDGETS, DEFAULT_BUDGET_EDGES, _check_budget_edges

__all__ = ["budget_range", "sample_architecture", "sample_in_budget"]

_CONV = ("sep_conv_3x3", "res_sep_conv_3x3")
_NO_CONV = ("none", "skip_connect")


def sample_architecture(layout: Layout, rng: random.Random) -> DenseRobArch:
    """A uniformly random architecture of ``layout`` (each alpha bit 1 with probability 1/2)."""
    return DenseRobArch.random(layout, rng)


def budget_range(budget: str, budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES) -> tuple[int, int]:
    """The numbers of convolutions per cell of ``budget``, inclusive: small ``0..7``, medium ``8..10``,
    large ``11..14`` with the default edges (7, 10).

    Raises:
        ConfigError: unknown budget, or a budget without an integer count in ``0..14``.
    """
    if budget not in BUDGETS:
        raise ConfigError(f"Unknown budget {budget!r}; valid: {list(BUDGETS)}.")
    lo, hi = _check_budget_edges(budget_edges)
    ranges = {"small": (0, int(lo // 1)), "medium": (int(lo // 1) + 1, int(hi // 1)),
              "large": (int(hi // 1) + 1, NUM_EDGES)}
    a, b = ranges[budget]
    a, b = max(a, 0), min(b, NUM_EDGES)
    if a > b:
        raise ConfigError(f"Budget {budget!r} holds no convolution count in 0..{NUM_EDGES} with "
                          f"budget_edges={list(budget_edges)}.")
    return a, b


def sample_in_budget(layout: Layout, budget: str, rng: random.Random,
                     budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES) -> DenseRobArch:
    """A random architecture whose every cell has a number of convolutions within ``budget``."""
    lo, hi = budget_range(budget, budget_edges)
    cells = {}
    for topo in layout.topologies:
        k = rng.randint(lo, hi)
        conv_edges = set(rng.sample(range(NUM_EDGES), k))
        cells[topo] = [rng.choice(_CONV) if e in conv_edges else rng.choice(_NO_CONV) for e in range(NUM_EDGES)]
    return DenseRobArch(cells, layout)
