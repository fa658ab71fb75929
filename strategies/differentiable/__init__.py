"""Differentiable robust architecture search: DSARA and RNAS over DARTS-cell spaces.

Papers: Zhang et al., "Differentiable Search of Accurate and Robust
Architectures" (DSARA, ``dsara.txt``); Zhu, Li, Liu, Wang, "Robust Neural
Architecture Search" (RNAS, ``rnas.txt``).

* :mod:`.bilevel` -- the alternating first-order bilevel loop (DARTS) both share;
* :mod:`.dsara` -- DSARA Alg. 1-3: two stages, MGDA's closed-form gamma* (eq. 8);
* :mod:`.rnas` -- RNAS Alg. 1-2: the regulariser f and x' by PGD (max) or uniform sampling;
* :mod:`.methods` -- the methods by name (``method: dsara | rnas``);
* :mod:`.tasks` -- the search trial; :mod:`.strategy` -- search -> export -> final as NNI trials
  (``strategy: differentiable``).

Importing this package only registers names (no torch, no NNI).
"""

from ..registry import Method, register_method

register_method(Method(
    name="differentiable",
    paper="DSARA (dsara.txt) and RNAS (rnas.txt): differentiable search of robust architectures",
    strategies={"differentiable": f"{__name__}.strategy.DifferentiableStrategy"},
    tasks={"differentiable_search": f"{__name__}.tasks.search_task"},
    spaces=("darts", "dsara"),
))
