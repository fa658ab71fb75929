"""Robustness evaluation the field trusts: AutoAttack, strength curves, transfer, masking checks.

* :func:`robustness_report` runs a suite (``quick`` / ``standard`` /
  ``full``, see :data:`SUITES`) on a model and returns one dict with every
  number, the attack settings, the number of images, parameters and FLOPs,
  and the gradient-masking warnings; :func:`write_report` writes it as JSON,
  Markdown and a PNG of the strength curve; :func:`flat_metrics` flattens it
  for NNI.
* :func:`run_autoattack`: AutoAttack (Croce & Hein, ICML 2020) through the
  authors' ``pyautoattack`` package, standard version or a subset, with the
  cumulative robust accuracy after each attack.
* :func:`strength_curve`: Wsr-NAS's multi-strength robust accuracy (PGD at
  0.03, 0.10, 0.17, 0.25, step eps*2.5/steps, and the mean) in one pass over
  the data, with the losses per strength; optionally AutoAttack per strength.
* :class:`TransferAttack` / :func:`transfer_pgd`: black-box transfer attacks
  crafted on a source model; :func:`train_transfer_source` trains a
  substitute ResNet-18.
* The masking checks (Athalye et al., ICML 2018; AutoAttack):
  :func:`masking_warnings` and the single checks ``check_*``.
* :func:`evaluate_attacks`: the engine under all of them (one pass, any
  attacks, one random stream per attack, NaN/inf logits are a
  :class:`NonFiniteOutputError`, progress bars via ``tqdm`` only when
  stderr is a terminal or ``progress=True``).
"""

from ._autoattack import AUTOATTACK_ATTACKS, STANDARD_ATTACKS, AutoAttackResult, run_autoattack
from ._engine import Evaluation, NonFiniteOutputError, RngStreams, evaluate_attacks
from ._masking import (MaskingThresholds, check_autoattack_gap, check_fgsm_vs_pgd, check_large_eps,
                       check_pgd_steps, check_square, check_strength_curve, check_transfer,
                       masking_warnings)
from ._report import (REPORT_FORMAT, SUITES, SuiteConfig, UniformNoise, flat_metrics, markdown,
                      plot_strength_curve, robustness_report, suite_from_spec, write_json, write_markdown, write_report)
from ._strength import (WSR_STEP_FACTOR, WSR_STRENGTHS, StrengthCurve, add_autoattack_curve,
                        pgd_at_strength, strength_attacks, strength_curve, strength_key)
from ._transfer import TransferAttack, train_transfer_source, transfer_pgd

__all__ = [
    "AUTOATTACK_ATTACKS", "STANDARD_ATTACKS", "AutoAttackResult", "run_autoattack",
    "Evaluation", "NonFiniteOutputError", "RngStreams", "evaluate_attacks",
    "MaskingThresholds", "check_autoattack_gap", "check_fgsm_vs_pgd", "check_large_eps",
    "check_pgd_steps", "check_square", "check_strength_curve", "check_transfer", "masking_warnings",
    "REPORT_FORMAT", "SUITES", "SuiteConfig", "UniformNoise", "flat_metrics", "suite_from_spec", "markdown", "plot_strength_curve",
    "robustness_report", "write_json", "write_markdown", "write_report",
    "WSR_STEP_FACTOR", "WSR_STRENGTHS", "StrengthCurve", "add_autoattack_curve", "pgd_at_strength",
    "strength_attacks", "strength_curve", "strength_key",
    "TransferAttack", "train_transfer_source", "transfer_pgd",
]
