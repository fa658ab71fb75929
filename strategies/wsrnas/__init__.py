"""Wsr-NAS: neural architecture search for wide-spectrum adversarial robustness.

Paper: Cheng, Li, Wang, Chen, Lu, "Neural Architecture Search for Wide
Spectrum Adversarial Robustness", AAAI 2023 (``wsr-nas.txt``); the authors'
code defaults where the paper is silent are in ``shared/notes/methods.md``.

Read it section by section:

* :mod:`.estimator` -- Sec. "Adversarial Noise Estimator": WA-ANE (eq. 6),
  A-ANE (eq. 7, Fig. 2a-b), E-ANE, the rescaling to the target strength, the
  replay memory ``Ma`` (eq. 4) and the MSE training (eq. 5); Table 5's
  attack-strength report;
* :mod:`.vle` -- Sec. "Efficient Wide Spectrum Searcher": the validation-loss
  estimator (eq. 8-9) and its memory ``Mv``, the robust objective (eq. 10),
  the Gumbel-softmax architecture update through the estimator only; every
  setting of the method (:class:`.vle.WsrConfig`, presets (N1, N2) = (3, 3)
  and (3, 8));
* :mod:`.search` -- Sec. "Search Procedure", Alg. 1 (warm-up population,
  warm-up of the estimators, search loop) and Table 6's naive search;
* :mod:`.tasks` -- the search trial (task ``wsrnas_search``);
* :mod:`.strategy` -- search -> export -> final as NNI trials (``strategy: wsrnas``).

Importing this package only registers names (no torch, no NNI).
"""

from ..registry import Method, register_method

register_method(Method(
    name="wsrnas",
    paper="Cheng et al., Neural Architecture Search for Wide Spectrum Adversarial Robustness, AAAI 2023 "
          "(wsr-nas.txt)",
    strategies={"wsrnas": f"{__name__}.strategy.WsrStrategy"},
    tasks={"wsrnas_search": f"{__name__}.tasks.search_task"},
    spaces=("darts", "dsara"),
))
