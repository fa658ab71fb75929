"""Wsr-NAS as an NNI strategy run by the bridge tuner (``wsr-nas.txt``).

The search of Alg. 1 trains one supernet and its estimators together, so it
is one long job; under ``nnictl`` it runs as the stages of the shared
template :class:`~nni_robust.strategies.darts_strategy.DartsSearchStrategy`:

1. **search**: one ``wsrnas_search`` trial runs Alg. 1 (:mod:`.search`),
   reporting every population and search unit to the web UI (the measured
   loss and accuracy per strength, the VLE's estimated loss per strength,
   the AN-Estimator's held-out error, the phase timings of Table 6) and to
   TensorBoard, checkpointing after every unit in ``search_dir`` (a rerun or
   a resumed experiment continues it), deriving the architecture by the
   DARTS rule, and listing what makes the result untrustworthy (warnings);
2. **export**: ``work_dir/architecture.json`` and ``best_architecture.json``
   (with ``final_space``);
3. **final**: the shared ``final`` task trains the architecture in the
   evaluation network and evaluates it with ``settings.final.attacks``,
   which must include PGD at every evaluation strength (``eval_eps``: the
   paper's 0.03, 0.10, 0.17, 0.25; PGD-20, step eps * 2.5 / 20); the
   strategy then writes ``work_dir/wsrnas_report.json``: clean accuracy,
   accuracy per strength and their mean (the paper's "Avg. Rob. Acc."),
   and the search's diagnostics and warnings.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

from nni_robust.config import check_choice
from nni_robust.errors import ConfigError

from ..bridge import TrialTask
from ..darts_strategy import DartsSearchStrategy
from .vle import WsrConfig

__all__ = ["WsrStrategy", "FINAL_DEFAULTS", "PRESETS", "strength_attacks_of", "wsr_summary"]

logger = logging.getLogger(__name__)

#: The evaluation network: the paper gives WsrNet-Basic's size (4.5 M parameters) but not its cells or
#: width; DARTS's evaluation network (20 cells, C = 36) is the usual one for DARTS cells.
FINAL_DEFAULTS: dict[str, int] = {"num_cells": 20, "init_channels": 36}

PRESETS = {"basic": WsrConfig.basic, "plus": WsrConfig.plus}
"""The paper's search settings: WsrNet-Basic, (N1, N2) = (3, 3); WsrNet-Plus, (3, 8)."""


def strength_attacks_of(attacks: Mapping[str, Mapping[str, Any]], eps: float) -> list[str]:
    """Keys of ``settings.final.attacks`` that are PGD at l-inf radius ``eps``."""
    return [k for k, spec in attacks.items()
            if str(spec.get("name", "")).lower() == "pgd" and math.isclose(float(spec.get("eps", -1)), eps,
                                                                          rel_tol=1e-6, abs_tol=1e-9)]


def wsr_summary(final: Mapping[str, Any], attacks: Mapping[str, Mapping[str, Any]],
                eval_eps: tuple[float, ...]) -> dict[str, Any]:
    """Clean accuracy, accuracy per evaluation strength and their mean from a ``final`` trial's result.

    ``final`` holds ``acc_<attack key>``; per strength the (first) PGD attack at that radius
    with the most steps counts.
    """
    strengths = {}
    for e in eval_eps:
        keys = sorted(strength_attacks_of(attacks, e), key=lambda k: -int(attacks[k].get("steps", 0)))
        values = [final[f"acc_{k}"] for k in keys if f"acc_{k}" in final]
        if values:
            strengths[f"{e:g}"] = float(values[0])
    out: dict[str, Any] = {"clean": final.get("acc_clean"), "strengths": strengths}
    if len(strengths) == len(eval_eps):
        out["mean"] = sum(strengths.values()) / len(strengths)
    return out


class WsrStrategy(DartsSearchStrategy):
    """The Wsr-NAS search (Alg. 1), its export and the final training, as trials of the bridge tuner.

    Args:
        preset: ``basic`` (WsrNet-Basic, (N1, N2) = (3, 3), the default) or
            ``plus`` (WsrNet-Plus, (3, 8)); ``method_args`` override it.
        method_args: :class:`.vle.WsrConfig` settings (paper / authors'
            values by default). Validated at once; errors name
            ``method_args.<key>``.
        search_dir: Folder of the search's checkpoint and derived architecture
            (default ``<work_dir>/search``).
        final: Train and evaluate the derived architecture at the end
            (``settings.final.attacks`` must then hold PGD at every ``eval_eps``).
        final_space: ``settings.space`` of the final network (default: the
            search space with 20 cells).
        final_init_channels: C of the final network (default 36); not with ``target_mflops``.
        target_mflops: Widen the final network to these MFLOPs instead.
        work_dir: Where the exports go (default: the bridge engine's).
        settings: The trials' settings (passed by the bridge).
    """

    def __init__(self, *, preset: str = "basic", method_args: Mapping[str, Any] | None = None,
                 search_dir: str | None = None, final: bool = True, final_space: Mapping[str, Any] | None = None,
                 final_init_channels: int | None = None, target_mflops: float | None = None,
                 work_dir: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
        check_choice("preset", preset, tuple(PRESETS))
        if method_args is not None and not isinstance(method_args, Mapping):
            raise ConfigError(f"method_args must be a mapping of Wsr-NAS settings, but got {method_args!r}.")
        base = {k: v for k, v in PRESETS[preset]().to_dict().items() if k != "beta"}  # beta: 1 - alpha unless given
        config = WsrConfig.from_dict({**base, **dict(method_args or {})})  # fails now, not in the trial
        super().__init__(method="wsrnas", method_args=config.to_dict(), label="wsrnas",
                         inputs_per_node=config.derive_inputs_per_node, spaces=("darts", "dsara"),
                         final_defaults=FINAL_DEFAULTS, search_dir=search_dir, final=final,
                         final_space=final_space, final_init_channels=final_init_channels,
                         target_mflops=target_mflops, work_dir=work_dir, settings=settings)
        self.preset = preset
        self.config = config
        self._final_attacks = dict(((settings or {}).get("final") or {}).get("attacks") or {})
        if final and settings is not None:
            missing = [e for e in config.eval_eps if not strength_attacks_of(self._final_attacks, e)]
            if missing:
                raise ConfigError(
                    f"The Wsr-NAS final evaluation measures PGD at every strength of method_args.eval_eps "
                    f"{list(config.eval_eps)}, but settings.final.attacks has none at {missing} (its attacks: "
                    f"{sorted(self._final_attacks) or 'the defaults'}). Add e.g. 'pgd20@{missing[0]:g}: "
                    f"{{name: pgd, eps: {missing[0]:g}, step: {missing[0] * config.pgd_step_factor / 20:g}, "
                    f"steps: 20}}' (see experiments/wsrnas.yml), or change eval_eps.")
            for e in config.eval_eps:
                for key in strength_attacks_of(self._final_attacks, e):
                    spec = self._final_attacks[key]
                    want = e * config.pgd_step_factor / int(spec.get("steps", 10))
                    if spec.get("step") is not None and not math.isclose(float(spec["step"]), want, rel_tol=1e-3):
                        logger.warning("settings.final.attacks.%s: step %s differs from the paper's eps * %g / steps "
                                       "= %g.", key, spec["step"], config.pgd_step_factor, want)

    def _search_task(self) -> TrialTask:
        return TrialTask("wsrnas_search", {"method_args": self.method_args, "search_dir": str(self.search_dir)})

    def _after_final(self, result: dict[str, Any]) -> None:
        summary = wsr_summary(result, self._final_attacks, self.config.eval_eps)
        search_file = Path(self.search_dir) / "search_result.json"
        search = json.loads(search_file.read_text()) if search_file.exists() else {}
        report = {"final": summary, "final_result": result, "preset": self.preset,
                  "search": {k: search.get(k) for k in ("default", "vle_rank_corr", "vle_rel_error", "ane_mse_ratio",
                                                        "arch_entropy_ratio", "units", "seconds") if k in search},
                  "warnings": list(search.get("warnings") or [])}
        (Path(self.work_dir) / "wsrnas_report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
        parts = [f"{e}: {100 * a:.1f}%" for e, a in summary["strengths"].items()]
        mean = summary.get("mean")
        logger.info("Wsr-NAS final network: clean %s, PGD %s; mean robust accuracy %s",
                    f"{100 * summary['clean']:.1f}%" if summary.get("clean") is not None else "?", ", ".join(parts),
                    f"{100 * mean:.1f}%" if mean is not None else "? (not every strength was evaluated)")
        for text in report["warnings"]:
            logger.warning("Wsr-NAS search: %s", text)
