"""The NNI strategy template of the searches over a DARTS-cell supernet (DSARA, RNAS, Wsr-NAS).

Such a search is one long job: the supernet's weights and architecture
parameters are trained together inside one trial. Under ``nnictl`` it runs as
stages of trials sent through the bridge tuner
(:class:`~nni_robust.strategies.bridge.StrategyTuner`):

1. **search**: one trial runs the method's whole search (the subclass's
   :meth:`DartsSearchStrategy._search_task`), reporting per epoch / iteration
   and checkpointing in ``search_dir`` (a rerun resumes), and derives the
   discrete architecture into ``search_dir/architecture.json``;
2. **export**: :func:`~nni_robust.strategies.darts_search.export_architecture`
   to ``work_dir/architecture.json`` and ``work_dir/best_architecture.json``;
3. **final** (``final=True``): the shared ``final`` task trains the
   architecture in the evaluation network (``final_space``) and evaluates it
   with ``settings.final.attacks``;

then ``done``. The tuner's NNI model space must be the discrete space of the
same cells as ``settings.space`` (checked; nothing is sampled from it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.config import check_choice
from nni_robust.errors import ConfigError, NniRobustError

from .bridge import StageInterrupted, TrialTask, folder_property, run_jobs, run_stages, task_model, work_dir_property
from .darts_search import check_tuner_space, export_architecture, final_network

__all__ = ["DartsSearchStrategy"]

logger = logging.getLogger(__name__)


class DartsSearchStrategy(Strategy):
    """Search trial -> export -> final trial, for a search over a DARTS-cell supernet.

    Contract for subclasses: validate the method's own settings, call
    ``super().__init__`` and implement :meth:`_search_task` (the
    :class:`~nni_robust.strategies.bridge.TrialTask` of the search trial; its
    ``args`` must carry ``search_dir``). :meth:`_after_final` may post-process
    the final trial's result (it runs in the tuner: keep it light).

    Args:
        method: The method's name (recorded in ``best_architecture.json``).
        method_args: Its settings, already validated by the subclass.
        label: The search's name in messages and logs.
        inputs_per_node: Inputs kept per node by the derivation (the NNI space's choices).
        spaces: Names of ``settings.space`` the search accepts.
        final_defaults: ``{"num_cells", "init_channels"}`` of the paper's evaluation network.
        search_dir: Folder of the search's checkpoint and derived architecture
            (default ``<work_dir>/search``).
        final: Train and evaluate the derived architecture at the end.
        final_space: ``settings.space`` of the final network (default: the
            search space with ``final_defaults["num_cells"]`` cells).
        final_init_channels: C of the final network (default
            ``final_defaults["init_channels"]``); not with ``target_mflops``.
        target_mflops: Widen the final network to these MFLOPs instead
            (MSRobNet Eq. 2).
        work_dir: Where the exports go (default: the bridge engine's).
        settings: The trials' settings (passed by the bridge).
    """

    STAGES = ("search", "export", "final", "done")

    def __init__(self, *, method: str, method_args: Mapping[str, Any], label: str, inputs_per_node: int,
                 spaces: Sequence[str], final_defaults: Mapping[str, int], search_dir: str | None = None,
                 final: bool = True, final_space: Mapping[str, Any] | None = None,
                 final_init_channels: int | None = None, target_mflops: float | None = None,
                 work_dir: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(final, bool):
            raise ConfigError(f"final must be true or false, but got {final!r}.")
        self.method = method
        self.method_args = dict(method_args)
        self.label = label
        self.inputs_per_node = int(inputs_per_node)
        self.final = final
        self._trial_space, self.final_space, self.final_init_channels, self.target_mflops = final_network(
            label, (settings or {}).get("space"), spaces=tuple(spaces), final_space=final_space,
            final_init_channels=final_init_channels, target_mflops=target_mflops,
            default_cells=int(final_defaults["num_cells"]), default_channels=int(final_defaults["init_channels"]))
        self.search_dir_arg = search_dir
        self.work_dir_arg = work_dir
        self._stage = self.STAGES[0]
        self._search_result: dict[str, Any] | None = None
        self._final_result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    work_dir = work_dir_property
    search_dir = folder_property("search_dir_arg", "search")

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        check_tuner_space(model_space, self._trial_space, self.inputs_per_node)
        return model_space

    def _run_job(self, job: Any) -> None:
        if not run_jobs(self.engine, [job]):
            raise StageInterrupted()

    def _search_task(self) -> TrialTask:
        """The search trial's task (its ``args`` hold ``search_dir``)."""
        raise NotImplementedError

    def _after_final(self, result: dict[str, Any]) -> None:
        """Called with the final trial's result (a dict of floats); default: nothing."""

    # ------------------------------------------------------------------ stages
    def _run(self) -> None:
        run_stages(self, self.STAGES, label=f"{type(self).__name__} ({self.label})")

    def _stage_search(self) -> None:
        job = task_model(self._search_task())
        self._run_job(job)
        if job.status != ModelStatus.Trained:
            raise NniRobustError(f"The {self.label} search trial failed; see its log. Its checkpoint in "
                                 f"{self.search_dir} is kept: resuming the experiment continues it.")
        self._search_result = dict(getattr(job, "final_result", None) or {})

    def _stage_export(self) -> None:
        export_architecture(self.work_dir, self.search_dir, method=self.method, method_args=self.method_args,
                            space=self._trial_space, final_space=self.final_space, metrics=self._search_result)

    def _stage_final(self) -> None:
        if not self.final:
            return
        arch = (Path(self.work_dir) / "architecture.json").read_text()
        args: dict[str, Any] = {"arch": arch, "space": self.final_space}
        if self.target_mflops is not None:
            args["target_mflops"] = self.target_mflops
        else:
            args["init_channels"] = int(self.final_init_channels)
        job = task_model(TrialTask("final", args))
        self._run_job(job)
        if job.status != ModelStatus.Trained:
            raise NniRobustError("The final training trial failed; the derived architecture is in "
                                 f"{Path(self.work_dir) / 'architecture.json'}.")
        self._final_result = dict(getattr(job, "final_result", None) or {})
        self._after_final(self._final_result)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self._stage, "search_result": self._search_result, "final_result": self._final_result}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        check_choice("stage", state_dict.get("stage"), self.STAGES)
        self._stage = state_dict["stage"]
        self._search_result = state_dict.get("search_result")
        self._final_result = state_dict.get("final_result")
