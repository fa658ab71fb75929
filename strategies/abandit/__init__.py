"""Anti-bandit neural architecture search for model defence (ABanditNAS).

Paper: Chen, Zhang, Xue, Gong, Liu, Ji, Doermann, "Anti-Bandit Neural
Architecture Search for Model Defense" (ECCV 2020; arXiv 2008.00698; not in
the papers folder -- ``notes/methods.md`` has the algorithm; its search loop
was never released, this is its first public implementation). The search
space (cells of 4 nodes and 10 edges, 9 operations including the Gabor and
denoising blocks) is :mod:`nni_robust.spaces.abandit`.

Read it section by section:

* :mod:`.bandit` -- Sec. 3 (Eqs. of the LCB, the sampling probabilities,
  the ``lambda`` update, the UCB abandoning every ``K T`` samples);
* :mod:`.search` -- Algorithm 1's loop on the weight-sharing supernet
  (one FGSM epoch with random start per sample, Wong et al.);
* :mod:`.tasks` -- that loop as the trial task ``abandit_search``;
* :mod:`.strategy` -- search -> export -> the shared ``final`` task as NNI
  trials (``strategy: abandit``), in supernet mode or, for any space with
  categorical choices, in generic mode;
* :mod:`.diagnostics` -- whether a run's result can be trusted (not in the paper);
* :mod:`.report` -- TensorBoard scalars, Markdown/CSV/PNG report.

Importing this package only registers names (no torch, no NNI).
"""

from ..registry import Method, register_method

_PAPER = "Chen, Zhang et al., Anti-Bandit Neural Architecture Search for Model Defense (ECCV 2020, arXiv 2008.00698)"
register_method(Method(name="abandit", paper=_PAPER, spaces=("abandit",),
                       strategies={"abandit": f"{__name__}.strategy.AntiBanditStrategy"},
                       tasks={"abandit_search": f"{__name__}.tasks.search_task"}))
