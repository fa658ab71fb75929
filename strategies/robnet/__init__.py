"""RobNet: one-shot robust architecture search with fine-tuned evaluation and the FSP filter.

Paper: Guo, Yang, Xu, Liu, Lin, "When NAS Meets Robustness: In Search of
Robust Architectures against Adversarial Attacks" (CVPR 2020,
``robnet.txt``). The authors released only their final models; this is an
implementation of the search itself.

Read it section by section:

* :mod:`.tasks` -- Sec. 3.2: the adversarially trained supernet with path
  dropout (task ``robnet_supernet``, through the shared
  :mod:`nni_robust.strategies.supernet`), the evaluation of a sampled
  architecture by inherited weights and a few epochs of adversarial
  fine-tuning (task ``robnet_finetune``), and the FSP scores of Sec. 3.5
  (task ``robnet_fsp``);
* :mod:`.sampling` -- random sampling from the supernet (cell-based /
  cell-free, Secs. 3.3, 3.5) and within a computational budget (Sec. 3.4);
* :mod:`.fsp` -- Sec. 3.5, Eqs. (3)-(4): the FSP matrix, its distance between
  clean and adversarial inputs, the robustness indicator and the filter;
* :mod:`.analysis` -- Secs. 3.3-3.5: density (Eq. 2), convolutions on direct
  and skip edges, the budget study, the FSP correlations, as reports;
* :mod:`.search` -- the whole search as stages of NNI trials
  (``strategy: robnet``), ending with the shared ``final`` task.

Importing this package only registers names (no torch, no NNI).
"""

from ..registry import Method, register_method

register_method(Method(
    name="robnet",
    paper="Guo et al., When NAS Meets Robustness: In Search of Robust Architectures against Adversarial Attacks, "
          "CVPR 2020 (robnet.txt), Secs. 3.2-3.5",
    strategies={"robnet": f"{__name__}.search.RobNetSearch"},
    tasks={
        "robnet_supernet": f"{__name__}.tasks.robnet_supernet_task",
        "robnet_finetune": f"{__name__}.tasks.robnet_finetune_task",
        "robnet_fsp": f"{__name__}.tasks.robnet_fsp_task",
    },
    spaces=("dense_rob",),
))
