"""DSARA and RNAS as one NNI strategy run by the bridge tuner (``dsara.txt``, ``rnas.txt``).

A differentiable search is one long job: the supernet's weights and
architecture parameters are trained together (:mod:`.bilevel`). Under
``nnictl`` it runs as the stages of the shared template
:class:`~nni_robust.strategies.darts_strategy.DartsSearchStrategy`:

1. **search**: one ``differentiable_search`` trial runs the whole method
   (DSARA Alg. 1-3 or RNAS Alg. 1-2) on the search split, reporting every
   epoch to the web UI (validation clean / adversarial accuracy, gamma*,
   mean architecture entropy) and to TensorBoard, checkpointing every epoch
   in ``search_dir`` (a rerun resumes), and deriving the discrete
   architecture (DARTS rule) into ``search_dir/architecture.json``.
2. **export**: the architecture of the epoch chosen by the ``select`` rule
   (:mod:`.selection`; DSARA Sec. 4.3: "we will choose the neural
   architectures before the performance degradation" -- DSARA's default
   ``before_degradation``, RNAS's ``last``) goes to
   ``work_dir/architecture.json`` (the toolkit's ``DartsArch`` JSON, what
   ``nni-robust train`` and the ``final`` task read) and, with the search's
   metrics and the choice (``selection``: the epoch, the rule, why), to
   ``work_dir/best_architecture.json``.
3. **final** (``final=True``): one ``final`` trial trains the architecture
   in the evaluation network (``final_space``, e.g. 20 cells) adversarially
   and evaluates it -- the same task the multi-shot method ends with.

The NNI model space of the tuner (``space: {name: darts | dsara, ...}``) is
the discrete space of the same cell types; the strategy checks that it
agrees with ``settings.space`` (the space the trials build) and samples
nothing from it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from nni_robust.config import check_choice
from nni_robust.errors import ConfigError

from ..bridge import TrialTask
from ..darts_search import export_architecture
from ..darts_strategy import DartsSearchStrategy
from .selection import SelectRule, read_architectures

__all__ = ["DifferentiableStrategy", "FINAL_DEFAULTS", "export_architecture"]

logger = logging.getLogger(__name__)

#: The papers' evaluation networks: DSARA Sec. 5.3 (20 cells, C = 64); RNAS
#: Sec. 4.2 (20 cells; C not stated -- 36, DARTS's, gives its 3.4 M parameters).
FINAL_DEFAULTS: dict[str, dict[str, int]] = {"dsara": {"num_cells": 20, "init_channels": 64},
                                             "rnas": {"num_cells": 20, "init_channels": 36}}


class DifferentiableStrategy(DartsSearchStrategy):
    """A DSARA or RNAS search, its export and the final training, as trials of the bridge tuner.

    Args:
        method: ``"dsara"`` or ``"rnas"``.
        method_args: The method's settings (keys of
            :class:`~nni_robust.strategies.differentiable.dsara.DsaraConfig` /
            :class:`~nni_robust.strategies.differentiable.rnas.RnasConfig`; paper
            values by default). Validated at once.
        search_dir: Folder of the search's checkpoint and derived architecture
            (default ``<work_dir>/search``).
        final: Train and evaluate the derived architecture at the end.
        final_space: ``settings.space`` of the final network (default: the
            search space with :data:`FINAL_DEFAULTS` ``num_cells``).
        final_init_channels: C of the final network (default
            :data:`FINAL_DEFAULTS`); not with ``target_mflops``.
        target_mflops: Widen the final network to these MFLOPs instead
            (MSRobNet Eq. 2).
        select: Which epoch's architecture to export (:mod:`.selection`): a
            rule name (``"before_degradation"``, ``"best"``, ``"last"``) or
            ``{"rule", "metric", "tolerance"}``; default DSARA's
            ``before_degradation`` (on ``default``, tolerance 0.02) for
            ``dsara``, ``last`` for ``rnas``.
        work_dir: Where the exports go (default: the bridge engine's).
        settings: The trials' settings (passed by the bridge).
    """

    def __init__(self, *, method: str = "dsara", method_args: Mapping[str, Any] | None = None,
                 search_dir: str | None = None, final: bool = True, final_space: Mapping[str, Any] | None = None,
                 final_init_channels: int | None = None, target_mflops: float | None = None,
                 select: str | Mapping[str, Any] | None = None, work_dir: str | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        from .methods import search_config

        check_choice("method", method, ("dsara", "rnas"))
        select_rule = SelectRule.from_arg(select, method=method, key="strategy_args.select")
        if method_args is not None and not isinstance(method_args, Mapping):
            raise ConfigError(f"method_args must be a mapping of the method's settings, but got {method_args!r}.")
        config = search_config(method, dict(method_args or {}))  # fails now on a bad key, not in the trial
        super().__init__(method=method, method_args=dict(method_args or {}), label=method,
                         inputs_per_node=config.derive_inputs_per_node, spaces=("darts", "dsara"),
                         final_defaults=FINAL_DEFAULTS[method], search_dir=search_dir, final=final,
                         final_space=final_space, final_init_channels=final_init_channels,
                         target_mflops=target_mflops, work_dir=work_dir, settings=settings)
        self.config = config
        self.select = select_rule

    def _stage_export(self) -> None:
        """Export the architecture of the epoch the ``select`` rule chooses (DSARA Sec. 4.3)."""
        rows = read_architectures(self.search_dir)
        if not rows:  # (a search of an older version, or a hand-made search_dir)
            fallback = self.select.rule != "last"
            selection = {**self.select.to_dict(), "epoch": None, "fallback": fallback,
                         "reason": (f"{Path(self.search_dir) / 'architectures.jsonl'} is missing: " if fallback
                                    else "rule 'last': ") + "exported the search's last architecture."}
            arch = None
        else:
            selection = self.select.select(rows)
            chosen = rows[selection.pop("index")]
            selection["metrics"] = {k: v for k, v in chosen.items() if k != "arch"}
            arch = json.dumps(chosen["arch"])
        if selection["fallback"]:
            logger.warning("%s export: %s", self.label, selection["reason"])
        else:
            logger.info("%s export: epoch %s of %s. %s", self.label, selection["epoch"], selection["last_epoch"],
                        selection["reason"])
        export_architecture(self.work_dir, self.search_dir, method=self.method, method_args=self.method_args,
                            space=self._trial_space, final_space=self.final_space, metrics=self._search_result,
                            arch=arch, selection=selection)

    def _search_task(self) -> TrialTask:
        return TrialTask("differentiable_search", {"method": self.method, "method_args": self.method_args,
                                                   "search_dir": str(self.search_dir)})
