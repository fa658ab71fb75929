"""DSARA and RNAS as one NNI strategy run by the bridge tuner (``dsara.txt``, ``rnas.txt``).

A differentiable search is one long job: the supernet's weights and
architecture parameters are trained together (:mod:`.differentiable`). Under
``nnictl`` it therefore runs as stages of trials sent through
:class:`~nni_robust.strategies.bridge.StrategyTuner`:

1. **search**: one ``differentiable_search`` trial runs the whole method
   (DSARA Alg. 1-3 or RNAS Alg. 1-2) on the search split, reporting every
   epoch to the web UI (validation clean / adversarial accuracy, gamma*,
   mean architecture entropy) and to TensorBoard, checkpointing every epoch
   in ``search_dir`` (a rerun resumes), and deriving the discrete
   architecture (DARTS rule) into ``search_dir/architecture.json``.
2. **export**: the architecture goes to ``work_dir/architecture.json`` (the
   toolkit's ``DartsArch`` JSON, what ``nni-robust train`` and the ``final``
   task read) and, with the search's metrics, to
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

from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.config import check_choice
from nni_robust.errors import ConfigError, NniRobustError

from ..bridge import (StageInterrupted, TrialTask, folder_property, run_jobs, run_stages, task_model,
                      work_dir_property)

__all__ = ["DifferentiableStrategy", "FINAL_DEFAULTS", "export_architecture"]

logger = logging.getLogger(__name__)

STAGES = ("search", "export", "final", "done")

#: The papers' evaluation networks: DSARA Sec. 5.3 (20 cells, C = 64); RNAS
#: Sec. 4.2 (20 cells; C not stated -- 36, DARTS's, gives its 3.4 M parameters).
FINAL_DEFAULTS: dict[str, dict[str, int]] = {"dsara": {"num_cells": 20, "init_channels": 64},
                                             "rnas": {"num_cells": 20, "init_channels": 36}}


class DifferentiableStrategy(Strategy):
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
        work_dir: Where the exports go (default: the bridge engine's).
        settings: The trials' settings (passed by the bridge).
    """

    def __init__(self, *, method: str = "dsara", method_args: Mapping[str, Any] | None = None,
                 search_dir: str | None = None, final: bool = True, final_space: Mapping[str, Any] | None = None,
                 final_init_channels: int | None = None, target_mflops: float | None = None,
                 work_dir: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from .methods import search_config

        check_choice("method", method, ("dsara", "rnas"))
        if method_args is not None and not isinstance(method_args, Mapping):
            raise ConfigError(f"method_args must be a mapping of the method's settings, but got {method_args!r}.")
        self.method = method
        self.method_args = dict(method_args or {})
        self.config = search_config(method, self.method_args)  # fails now on a bad key, not in the trial
        if not isinstance(final, bool):
            raise ConfigError(f"final must be true or false, but got {final!r}.")
        if final_init_channels is not None and target_mflops is not None:
            raise ConfigError(f"Give final_init_channels or target_mflops, not both (got {final_init_channels!r} "
                              f"and {target_mflops!r}).")
        if final_init_channels is not None and (isinstance(final_init_channels, bool)
                                                or not isinstance(final_init_channels, int) or final_init_channels < 1):
            raise ConfigError(f"final_init_channels must be a positive integer, but got {final_init_channels!r}.")
        if target_mflops is not None and (isinstance(target_mflops, bool) or not isinstance(target_mflops, (int, float))
                                          or target_mflops <= 0):
            raise ConfigError(f"target_mflops must be a positive number, but got {target_mflops!r}.")
        self.final = final
        self.target_mflops = float(target_mflops) if target_mflops is not None else None
        self.final_init_channels = final_init_channels
        if target_mflops is None and final_init_channels is None:
            self.final_init_channels = FINAL_DEFAULTS[method]["init_channels"]
        self.search_dir_arg = search_dir
        self.work_dir_arg = work_dir
        self._trial_space = dict((settings or {}).get("space") or {})
        from ..networks import space_name

        if space_name(self._trial_space) not in ("darts", "dsara"):
            raise ConfigError(f"The {method} search needs settings.space with name 'darts' or 'dsara', but got "
                              f"{self._trial_space or None!r}.")
        if final_space is not None and not isinstance(final_space, Mapping):
            raise ConfigError(f"final_space must be a space settings dict, but got {final_space!r}.")
        self.final_space = dict(final_space) if final_space is not None else \
            {**self._trial_space, "num_cells": FINAL_DEFAULTS[method]["num_cells"]}
        from nni_robust.spaces.darts import space_layout

        layout, _ = space_layout(self._trial_space)
        final_layout, _ = space_layout(self.final_space)
        if set(final_layout.cell_types) != set(layout.cell_types):
            raise ConfigError(f"final_space {self.final_space} has the cell types {list(final_layout.cell_types)}, "
                              f"but the search space {self._trial_space} has {list(layout.cell_types)}.")
        self._stage = STAGES[0]
        self._search_result: dict[str, Any] | None = None
        self._final_result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    work_dir = work_dir_property
    search_dir = folder_property("search_dir_arg", "search")

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        from nni_robust.spaces.darts import darts_choices, space_layout

        layout, prims = space_layout(self._trial_space)
        expected = {k: tuple(v) for k, v in darts_choices(layout.cell_types, prims,
                                                          self.config.derive_inputs_per_node).items()}
        found = {label: tuple(m.values) for label, m in model_space.simplify().items()}
        if found != expected:
            raise ConfigError(
                f"The tuner's space and the trials' settings.space {self._trial_space} disagree: the tuner's space "
                f"has the choices {sorted(found)[:4]}..., settings.space the choices {sorted(expected)[:4]}... "
                "(cell types, operations and inputs per node must match).")
        return model_space

    def _run_job(self, job: Any) -> None:
        if not run_jobs(self.engine, [job]):
            raise StageInterrupted()

    # ------------------------------------------------------------------ stages
    def _run(self) -> None:
        run_stages(self, STAGES, label=f"DifferentiableStrategy ({self.method})")

    def _stage_search(self) -> None:
        job = task_model(TrialTask("differentiable_search", {"method": self.method, "method_args": self.method_args,
                                                             "search_dir": str(self.search_dir)}))
        self._run_job(job)
        if job.status != ModelStatus.Trained:
            raise NniRobustError(f"The {self.method} search trial failed; see its log. Its checkpoint in "
                                 f"{self.search_dir} is kept: resuming the experiment continues it.")
        self._search_result = dict(getattr(job, "final_result", None) or {})

    def _stage_export(self) -> None:
        export_architecture(self.work_dir, self.search_dir, method=self.method, method_args=self.method_args,
                            space=self._trial_space, final_space=self.final_space, metrics=self._search_result)

    def _stage_final(self) -> None:
        if not self.final:
            return
        arch = (self.work_dir / "architecture.json").read_text()
        args: dict[str, Any] = {"arch": arch, "space": self.final_space}
        if self.target_mflops is not None:
            args["target_mflops"] = self.target_mflops
        else:
            args["init_channels"] = int(self.final_init_channels)
        job = task_model(TrialTask("final", args))
        self._run_job(job)
        if job.status != ModelStatus.Trained:
            raise NniRobustError("The final training trial failed; the derived architecture is in "
                                 f"{self.work_dir / 'architecture.json'}.")
        self._final_result = dict(getattr(job, "final_result", None) or {})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self._stage, "search_result": self._search_result, "final_result": self._final_result}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        check_choice("stage", state_dict.get("stage"), STAGES)
        self._stage = state_dict["stage"]
        self._search_result = state_dict.get("search_result")
        self._final_result = state_dict.get("final_result")


def export_architecture(work_dir: str | Path, search_dir: str | Path, *, method: str,
                        method_args: Mapping[str, Any] | None = None, space: Mapping[str, Any] | None = None,
                        final_space: Mapping[str, Any] | None = None,
                        metrics: Mapping[str, Any] | None = None) -> Path:
    """Copy the derived architecture of a finished search to ``work_dir`` (and check it parses).

    Writes ``work_dir/architecture.json`` (the architecture alone) and
    ``work_dir/best_architecture.json`` (``{"arch", "method", "method_args",
    "space", "final_space", "search"}``).

    Returns:
        The path of ``architecture.json``.

    Raises:
        NniRobustError: the search wrote no architecture.
        ArchitectureError: it does not parse.
    """
    from nni_robust.spaces.darts import DartsArch

    src = Path(search_dir) / "architecture.json"
    if not src.exists():
        raise NniRobustError(f"{src} does not exist: the search did not finish.")
    arch = DartsArch.from_json(src.read_text())
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "architecture.json"
    out.write_text(arch.to_json(indent=2))
    numeric = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    best = {"arch": arch.to_dict(), "genotype": arch.to_darts_genotype(), "method": method,
            "method_args": dict(method_args or {}), "space": dict(space or {}),
            "final_space": dict(final_space or {}), "search": numeric}
    (work_dir / "best_architecture.json").write_text(json.dumps(best, indent=2, sort_keys=True))
    logger.info("Derived architecture exported to %s: %s", out, arch)
    return out
