"""Multi-shot NAS for robust architectures (MSRobNet), and its GNN-predictor controller (MSRobNet-P).

Paper: Ning, Zhao, Li, Zhou, Yang, Wang, "Multi-shot NAS for Discovering
Adversarially Robust Convolutional Neural Architectures at Targeted
Capacities" (``msrobnet-multishot-nas.txt``).

Read it section by section:

* :mod:`.tasks` -- Alg. 1 lines 2-9 (the K adversarially trained supernets)
  and the trial of Alg. 3 (one topology's multi-shot evaluation);
* :mod:`.multishot` -- Alg. 3 and Sec. 5.1 (BN calibration, FGSM reward per supernet);
* :mod:`.extrapolation` -- App. A (the 7 function families) and Alg. 2
  (leave-one-out family selection);
* :mod:`.evolution` -- Alg. 1 lines 11-18 (tournament evolution);
* :mod:`.search` -- Alg. 1 as stages of NNI trials (``strategy: msrobnet``);
* :mod:`.predictor`, :mod:`.predictor_search` -- Sec. 5.3.3 and Alg. 1
  lines 19-26 (GATES-style predictor, ``strategy: msrobnet_predictor``).

Importing this package only registers names (no torch, no NNI).
"""

from ..registry import Method, register_method

register_method(Method(
    name="msrobnet",
    paper="Ning et al., Multi-shot NAS for Discovering Adversarially Robust Convolutional Neural Architectures "
          "at Targeted Capacities (msrobnet-multishot-nas.txt)",
    strategies={
        "msrobnet": f"{__name__}.search.MultiShotSearch",
        "msrobnet_predictor": f"{__name__}.predictor_search.PredictorSearch",
        "evolution": f"{__name__}.evolution.TournamentEvolution",
    },
    tasks={
        "supernet": f"{__name__}.tasks.supernet_task",
        "evaluate": f"{__name__}.tasks.evaluate_task",
    },
    spaces=("dense_rob",),
))
