"""ABanditNAS as one NNI strategy run by the bridge tuner (ECCV 2020, arXiv 2008.00698, Algorithm 1).

Stages (:func:`~nni_robust.strategies.bridge.run_stages`; resumable):

1. **search** -- the anti-bandit (:class:`.bandit.AntiBandit`: LCB sampling,
   ``lambda`` updates, UCB abandoning every ``K T`` samples) until one
   option per edge remains. Two modes:

   * ``supernet`` (the paper; ``settings.space`` names ``abandit``): the arms
     are the 60 edges x 9 operations of the ABanditNAS cells
     (:func:`nni_robust.spaces.abandit.abandit_choices`, edge form) and every
     sample is trained for one FGSM epoch (random start) on the
     weight-sharing supernet, checkpointed in ``search_dir``
     (:mod:`.search`, :mod:`.tasks`). **Trials**: one ``abandit_search``
     trial per abandon phase (``trial_steps="phase"``: the ``K T`` samples
     between two abandons; 8 trials for 9 operations), each reporting every
     sample as an intermediate result. Why not one trial per sample: the
     samples are strictly sequential (each draw depends on the previous
     reward, and all train the same weights), so trials cannot run in
     parallel; a trial pays the process start, the imports, the data and the
     supernet checkpoint load (~5-10 s), which is ~10-20% of a CIFAR-10
     epoch on a GPU but several times the work of a sample in the quick
     (digits, CPU) configuration. A phase per trial keeps the overhead
     small while the web UI still shows every sample (intermediate results)
     and every abandon (a trial boundary). ``trial_steps: 1`` gives one
     trial per sample (most visible), any ``n`` one trial per ``n`` samples.
   * ``generic`` (any space whose choices are categorical, e.g. the
     NAS-Bench-201 space with a tabular task): the arms are the model
     space's labelled choices, and every sample is an NNI model
     (``model_space.freeze(sample)``) evaluated by the experiment's
     ``default_task``; the reward is ``reward_scale`` times the trial's
     ``default``. No supernet, no training here. ``samples_per_batch``
     samples are drawn from the same probabilities and evaluated in
     parallel, then credited in draw order (1: the paper's sequential loop).

2. **export** -- the kept option per edge. Supernet mode: each node keeps
   its incoming edge of largest running reward ``m``
   (:meth:`~nni_robust.spaces.abandit.ABanditArch.from_edge_ops`; the paper
   does not state the rule), written to ``work_dir/architecture.json`` and,
   with the evaluation network's shape (``final_space``, default the
   paper's CIFAR-10 network: 10 cells, auxiliary head; C = 48), to
   ``work_dir/best_architecture.json``; generic mode: the sample. Both with
   the search-signal checks (:mod:`.diagnostics`) and their warnings, also
   in the report (:mod:`.report`, ``work_dir/abandit_report``).
3. **final** (``final=True``) -- the shared ``final`` task trains and
   evaluates the exported architecture in ``final_space``.

State (:meth:`AntiBanditStrategy.state_dict`, JSON): the stage, the bandit
(arm statistics, abandon history, random generator), every credited
sample, and the samples drawn but not yet credited, so a resumed experiment
draws exactly what an uninterrupted one would. In supernet mode the search
folder's state file (written by the trials after every sample) can only be
ahead of it -- a trial that finished after the last save -- and wins.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from typing import Any, Mapping

from nni.nas.execution import ExecutionEngine
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.config import check_choice
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError

from ..bridge import (StageInterrupted, TrialTask, folder_property, run_jobs, run_stages, task_model,
                      work_dir_property)
from .bandit import AntiBandit
from .diagnostics import search_signal
from .report import REPORT_DIR, log_step, write_report
from .search import STATE_FILE, SearchConfig, SearchState

__all__ = ["AntiBanditStrategy", "MODES", "FINAL_DEFAULTS"]

logger = logging.getLogger(__name__)

STAGES = ("search", "export", "final", "done")
#: ``auto``: ``supernet`` when ``settings.space`` names ``abandit``, else ``generic``.
MODES = ("auto", "supernet", "generic")
#: The paper's CIFAR-10 evaluation network (notes: 10 cells, C = 48, auxiliary head).
FINAL_DEFAULTS: dict[str, Any] = {"num_cells": 10, "auxiliary": True, "init_channels": 48}
_MAX_FAILED_BATCHES = 3


def _metric_of(model: Any) -> Any:
    """A finished model's ``default`` metric: the bridge's ``final_result`` dict, else NNI's ``metric``."""
    result = getattr(model, "final_result", None)
    if isinstance(result, Mapping):
        return result.get("default")
    try:
        return model.metric
    except Exception:  # an engine without metrics: no value (not credited)
        return None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, but got {value!r}.")
    return value


class AntiBanditStrategy(Strategy):
    """The anti-bandit search, its export and the final training (see the module docstring).

    Args:
        mode: ``"auto"``, ``"supernet"`` or ``"generic"`` (:data:`MODES`).
        samples_per_arm: ``T``: a phase with ``k`` arms per edge lasts ``k T``
            samples (paper: not stated; 3).
        lam: ``lambda`` of the running reward (paper: 0.7).
        reward_scale: The bandit's reward is this times the accuracy (or the
            trial's ``default``); 100 = percent (see :mod:`.search`).
        seed: Seed of the bandit's sampling (``None``: drawn and logged).
        search: :class:`.search.SearchConfig` settings (supernet mode).
        trial_steps: Samples per ``abandit_search`` trial: ``"phase"`` (the
            samples until the next abandon) or a positive integer.
        samples_per_batch: Generic mode: samples evaluated in parallel per draw.
        search_dir: Supernet mode: the search's folder (default ``<work_dir>/abandit_search``).
        final: Train and evaluate the exported architecture at the end.
        final_space: ``settings.space`` of the final network (supernet mode
            default: the search space with :data:`FINAL_DEFAULTS` cells and
            auxiliary head; generic: ``settings.space``).
        final_init_channels: C of the final network (supernet default 48); not with ``target_mflops``.
        target_mflops: Widen the final network to these MFLOPs instead (MSRobNet Eq. 2).
        permutations: Shuffles of the per-edge permutation test (:mod:`.diagnostics`).
        report_interval: Seconds between reports of the search in progress
            (written after an abandon; ``None``: only at the end, which always has one).
        work_dir: Where the exports go (default: the bridge engine's).
        settings: The trials' settings (passed by the bridge).
    """

    def __init__(self, *, mode: str = "auto", samples_per_arm: int = 3, lam: float = 0.7,
                 reward_scale: float = 100.0, seed: int | None = None, search: Mapping[str, Any] | None = None,
                 trial_steps: int | str = "phase", samples_per_batch: int = 1, search_dir: str | None = None,
                 final: bool = True, final_space: Mapping[str, Any] | None = None,
                 final_init_channels: int | None = None, target_mflops: float | None = None,
                 permutations: int = 1000, report_interval: float | None = 60.0, work_dir: str | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from ..networks import space_name

        check_choice("mode", mode, MODES)
        self._trial_space = dict((settings or {}).get("space") or {})
        is_abandit = space_name(self._trial_space) == "abandit"
        self.mode = ("supernet" if is_abandit else "generic") if mode == "auto" else mode
        if self.mode == "supernet" and not is_abandit:
            raise ConfigError(f"mode 'supernet' needs settings.space with name 'abandit', but got "
                              f"{self._trial_space or None!r}; use mode 'generic' for another space.")
        if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float)) or not reward_scale > 0 \
                or not math.isfinite(reward_scale):
            raise ConfigError(f"reward_scale must be a positive number (100: accuracies in percent), but got "
                              f"{reward_scale!r}.")
        if trial_steps != "phase":
            _positive_int("trial_steps ('phase' or a positive integer)", trial_steps)
        if not isinstance(final, bool):
            raise ConfigError(f"final must be true or false, but got {final!r}.")
        if final_init_channels is not None and target_mflops is not None:
            raise ConfigError(f"Give final_init_channels or target_mflops, not both (got {final_init_channels!r} "
                              f"and {target_mflops!r}).")
        if final_init_channels is not None:
            _positive_int("final_init_channels", final_init_channels)
        if target_mflops is not None and (isinstance(target_mflops, bool) or not isinstance(target_mflops, (int, float))
                                          or not target_mflops > 0):
            raise ConfigError(f"target_mflops must be a positive number, but got {target_mflops!r}.")
        if final_space is not None and not isinstance(final_space, Mapping):
            raise ConfigError(f"final_space must be a space settings dict, but got {final_space!r}.")
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 31)
            logger.info("AntiBanditStrategy: no seed given, drew seed=%d", seed)
        self.samples_per_arm = _positive_int("samples_per_arm", samples_per_arm)
        self.lam = lam
        AntiBandit({"probe": [0, 1]}, samples_per_arm=samples_per_arm, lam=lam, seed=seed)  # validates lam, seed
        self.seed = int(seed)
        self.reward_scale = float(reward_scale)
        self.search = SearchConfig.from_dict(search)  # fails now on a bad key, not in a trial
        self.trial_steps = trial_steps
        self.samples_per_batch = _positive_int("samples_per_batch", samples_per_batch)
        self.permutations = _positive_int("permutations", permutations)
        if report_interval is not None and (isinstance(report_interval, bool)
                                            or not isinstance(report_interval, (int, float)) or report_interval < 0):
            raise ConfigError(f"report_interval must be a number of seconds >= 0 or null, but got {report_interval!r}.")
        self.report_interval = report_interval
        self._reported_at = time.monotonic()
        self.search_dir_arg = search_dir
        self.work_dir_arg = work_dir
        self.final = final
        self.target_mflops = float(target_mflops) if target_mflops is not None else None
        if self.mode == "supernet":
            extra = {k: v for k, v in FINAL_DEFAULTS.items() if k != "init_channels"}
            self.final_space = dict(final_space) if final_space is not None else \
                {**{k: v for k, v in self._trial_space.items() if k != "affine"}, **extra}
            if final_init_channels is None and target_mflops is None:
                final_init_channels = FINAL_DEFAULTS["init_channels"]
            self._check_final_space()
        else:
            self.final_space = dict(final_space) if final_space is not None else dict(self._trial_space)
            if final and final_init_channels is None and target_mflops is None:
                raise ConfigError("The final training needs final_init_channels or target_mflops (generic mode "
                                  "has no default width); or set final: false.")
        self.final_init_channels = final_init_channels
        self._stage = STAGES[0]
        self._bandit: AntiBandit | None = None
        self._records: list[dict[str, Any]] = []
        self._pending: Any = None
        self._failed_batches = 0
        self._signal: dict[str, Any] | None = None
        self._final_result: dict[str, Any] | None = None
        self._writer: Any = None

    # ------------------------------------------------------------------ helpers
    work_dir = work_dir_property
    search_dir = folder_property("search_dir_arg", "abandit_search")

    @property
    def bandit(self) -> AntiBandit:
        """The anti-bandit (its arms, statistics and abandon history)."""
        if self._bandit is None:
            raise NniRobustError("AntiBanditStrategy is not initialized (no model space yet).")
        return self._bandit

    @property
    def records(self) -> list[dict[str, Any]]:
        """One dict per credited sample (``step``, ``arms``, ``reward``, ``N``, ``abandoned``, ...)."""
        return list(self._records)

    def sample_of(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``{label: option}`` of a record of :attr:`records`."""
        return {label: self.bandit.edges[label][k] for label, k in zip(self.bandit.labels, record["arms"])}

    def _check_final_space(self) -> None:
        from nni_robust.spaces.abandit import abandit_layout

        from ..networks import space_name

        if space_name(self.final_space) != "abandit":
            raise ConfigError(f"final_space must name the 'abandit' space in supernet mode, but got "
                              f"{self.final_space}.")
        types = set(abandit_layout(self._trial_space.get("num_cells", 6)).cell_types)
        final_types = set(abandit_layout(self.final_space.get("num_cells", 6)).cell_types)
        if not final_types <= types:
            raise ConfigError(f"final_space {self.final_space} uses the cell types {sorted(final_types)}, but the "
                              f"search space {self._trial_space} searches only {sorted(types)}.")

    def _edges(self, model_space: ExecutableModelSpace) -> dict[str, list[Any]]:
        found = {label: m for label, m in model_space.simplify().items()}
        if self.mode == "supernet":
            from nni_robust.spaces.abandit import abandit_choices, abandit_layout

            num_cells = self._trial_space.get("num_cells", 6)
            prims = self._trial_space.get("primitives")
            types = abandit_layout(num_cells).cell_types
            kw = {"primitives": prims} if prims is not None else {}
            expected = abandit_choices(types, form="node", **kw)
            if {k: tuple(m.values) for k, m in found.items() if hasattr(m, "values")} != expected:
                raise ConfigError(f"The tuner's space and the trials' settings.space {self._trial_space} disagree "
                                  f"(cell types and operations must match): the tuner's space has the choices "
                                  f"{sorted(found)[:4]}..., settings.space {sorted(expected)[:4]}....")
            return {label: list(opts) for label, opts in abandit_choices(types, form="edge", **kw).items()}
        edges = {}
        for label, mutable in found.items():
            values = getattr(mutable, "values", None)
            if values is None:
                raise ConfigError(f"The anti-bandit's generic mode needs categorical choices, but the space's "
                                  f"{label!r} is a {type(mutable).__name__}.")
            edges[label] = list(values)
        if not edges:
            raise ConfigError("The model space has no choices to search.")
        return edges

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        self._bandit = AntiBandit(self._edges(model_space), samples_per_arm=self.samples_per_arm, lam=self.lam,
                                  seed=self.seed)
        logger.info("AntiBanditStrategy (%s mode): %d edges, up to %d options, %d samples until one per edge",
                    self.mode, len(self._bandit.labels), self._bandit.max_remaining,
                    self._bandit.samples_to_finish)
        return model_space

    def _run_job(self, job: Any) -> None:
        if not run_jobs(self.engine, [job]):
            raise StageInterrupted()

    def _tensorboard(self) -> Any:
        if self._writer is None:
            from nni_robust.tb import summary_writer

            self._writer = summary_writer(self.work_dir / "tensorboard" / "abandit")
        return self._writer

    def _cleanup(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ stages
    def _run(self) -> None:
        run_stages(self, STAGES, label=f"AntiBanditStrategy ({self.mode})")

    def _stage_search(self) -> None:
        if self.mode == "supernet":
            self._search_supernet()
        else:
            self._search_generic()

    def _search_supernet(self) -> None:
        path = self.search_dir / STATE_FILE
        if path.exists():
            state = SearchState.load(path)
            mine = self.bandit.state_dict()
            theirs = state.bandit.state_dict()
            if theirs["edges"] != mine["edges"] or theirs["settings"] != mine["settings"] \
                    or len(state.records) < len(self._records):
                raise ConfigError(f"{path} holds another search (other arms, T, lambda or seed, or fewer samples "
                                  f"than this strategy's state); use another search_dir.")
        else:
            state = SearchState(self.bandit)
            state.save(path)
        self._sync(state)
        while not (state.bandit.done and state.samples_done >= self.search.warmup_samples):
            if self._pending is None:
                warm = max(0, self.search.warmup_samples - state.samples_done)
                steps = state.bandit.samples_until_abandon if self.trial_steps == "phase" else \
                    min(self.trial_steps, state.bandit.samples_to_finish)
                self._pending = {"until": state.samples_done + warm + steps}
            job = task_model(TrialTask("abandit_search", {
                "until": self._pending["until"], "search": self.search.to_dict(), "reward_scale": self.reward_scale,
                "search_dir": str(self.search_dir)}))
            self._run_job(job)
            if job.status != ModelStatus.Trained:
                raise NniRobustError(f"An abandit_search trial failed; see its log. The search state and supernet "
                                     f"checkpoint in {self.search_dir} are kept: resuming the experiment continues.")
            state = SearchState.load(path)
            self._pending = None
            self._sync(state)

    def _sync(self, state: SearchState) -> None:
        """Take the search folder's state (supernet mode) as the strategy's."""
        grew = len(state.bandit.abandon_history) > len(self.bandit.abandon_history)
        self._bandit = state.bandit
        self._records = list(state.records)
        if grew:
            self._maybe_report()

    def _search_generic(self) -> None:
        bandit = self.bandit
        while not bandit.done:
            if self._pending is None:
                self._pending = [bandit.sample() for _ in range(self.samples_per_batch)]
            models = [self.model_space.freeze(dict(s)) for s in self._pending]
            complete = run_jobs(self.engine, models)
            if not complete:
                raise StageInterrupted()
            abandoned, credited = False, 0
            for sample, model in zip(self._pending, models):
                value = _metric_of(model)
                if model.status != ModelStatus.Trained or isinstance(value, bool) \
                        or not isinstance(value, (int, float)) or not math.isfinite(value):
                    logger.warning("Anti-bandit: the evaluation of %s failed or reported no finite 'default' (%r); "
                                   "not credited.", sample, value)
                    continue
                reward = self.reward_scale * float(value)
                events = bandit.update(sample, reward)
                record = {"step": len(self._records), "warmup": False,
                          "arms": [bandit.index_of(label, sample[label]) for label in bandit.labels],
                          "reward": reward, "value": float(value), "N": bandit.total,
                          "abandoned": [[e["label"], e["option"]] for e in events],
                          "model_id": getattr(model, "model_id", None)}
                self._records.append(record)
                log_step(self._tensorboard(), bandit, record)
                abandoned = abandoned or bool(events)
                credited += 1
            self._pending = None
            self._failed_batches = 0 if credited else self._failed_batches + 1
            if self._failed_batches >= _MAX_FAILED_BATCHES:
                raise NniRobustError(f"{_MAX_FAILED_BATCHES} batches of evaluations in a row failed or reported no "
                                     f"'default'; is default_task right for this space? See the trials' logs.")
            if abandoned:
                self._maybe_report()

    # ------------------------------------------------------------------ export and report
    def _signal_now(self) -> dict[str, Any]:
        bandit = self.bandit
        return search_signal(bandit.edges, self._records, bandit.abandon_history, permutations=self.permutations,
                             seed=self.seed)

    def _summary(self) -> dict[str, Any]:
        bandit = self.bandit
        phase = bandit.samples_per_arm * 2  # the last phase: K = 2
        last = [r["reward"] for r in self._records if not r.get("warmup")][-phase:]
        return {"mode": self.mode, "samples": len(self._records), "reward_scale": self.reward_scale,
                "seed": self.seed, "estimate": (sum(last) / len(last) / self.reward_scale) if last else None,
                "search_seconds": sum(float(r.get("seconds", 0.0)) for r in self._records)}

    def _write_report(self, result_text: str | None = None, writer: Any = None) -> dict[str, Any]:
        signal = self._signal_now()
        title = f"Anti-bandit search ({self.mode} mode, {'done' if self.bandit.done else 'in progress'})"
        paths = write_report(self.work_dir / REPORT_DIR, self.bandit, self._records, signal, title=title,
                             summary=self._summary(), result_text=result_text, writer=writer)
        self._signal = {k: v for k, v in signal.items() if k != "pvalues"}
        self._reported_at = time.monotonic()
        return {"signal": signal, "paths": paths}

    def _maybe_report(self) -> None:
        """The report of the search so far, at most every ``report_interval`` seconds (it takes seconds)."""
        if self.report_interval is not None and time.monotonic() - self._reported_at >= self.report_interval:
            self._write_report()

    def _stage_export(self) -> None:
        bandit = self.bandit
        chosen = bandit.result()
        out: dict[str, Any] = {"method": "abandit", "mode": self.mode, "space": self._trial_space,
                               "final_space": self.final_space, "edge_ops": chosen, "scores": bandit.scores(),
                               **{k: v for k, v in self._summary().items() if k != "mode"}}
        if self.mode == "supernet":
            from nni_robust.spaces.abandit import ABanditArch, abandit_layout

            prims = self._trial_space.get("primitives")
            kw = {"primitives": tuple(prims)} if prims is not None else {}
            types = abandit_layout(self._trial_space.get("num_cells", 6)).cell_types
            arch = ABanditArch.from_edge_ops(chosen, bandit.scores(), cell_types=types, **kw)
            (self.work_dir / "architecture.json").write_text(arch.to_json(indent=2))
            out["arch"] = arch.to_dict()
            text = f"Derived architecture (each node keeps its incoming edge of largest m): `{arch}`"
        else:
            out["sample"] = chosen
            arch = self._arch_of_sample(chosen)
            if arch is not None:
                out["arch"] = arch
            text = f"Kept sample: `{json.dumps(chosen)}`"
        report = self._write_report(text, writer=self._tensorboard())
        out["signal"] = self._signal
        out["warnings"] = list(report["signal"]["warnings"])
        out["report"] = str(report["paths"]["report"])
        path = self.work_dir / "best_architecture.json"
        path.write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
        logger.info("Anti-bandit result exported to %s; report in %s", path, report["paths"]["report"])

    def _arch_of_sample(self, sample: Mapping[str, Any]) -> Any:
        """The architecture JSON of a generic-mode sample, when the settings' space can build one."""
        from nni_robust.errors import ArchitectureError

        from ..networks import arch_from_sample

        try:
            arch = arch_from_sample(sample, self._trial_space)
            return json.loads(arch.to_json())
        except (ArchitectureError, ConfigError, AttributeError, TypeError, ValueError):
            return None

    def _stage_final(self) -> None:
        if not self.final:
            return
        if self.mode == "supernet":
            source = {"arch": (self.work_dir / "architecture.json").read_text()}
        else:
            source = {"sample": json.loads((self.work_dir / "best_architecture.json").read_text())["sample"]}
        width = {"init_channels": int(self.final_init_channels)} if self.target_mflops is None else \
            {"target_mflops": self.target_mflops}
        job = task_model(TrialTask("final", {**source, "space": self.final_space, **width}))
        self._run_job(job)
        if job.status != ModelStatus.Trained:
            raise NniRobustError(f"The final training trial failed; the exported architecture is in "
                                 f"{self.work_dir / 'best_architecture.json'}.")
        self._final_result = dict(getattr(job, "final_result", None) or {})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self._stage, "mode": self.mode, "bandit": self.bandit.state_dict(),
                "records": list(self._records), "pending": self._pending, "failed_batches": self._failed_batches,
                "signal": self._signal, "final_result": self._final_result}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        check_choice("stage", state_dict.get("stage"), STAGES)
        if state_dict.get("mode") != self.mode:
            raise CheckpointError(f"The saved anti-bandit state is of mode {state_dict.get('mode')!r}, this strategy "
                                  f"runs mode {self.mode!r}; use another work_dir.")
        bandit = AntiBandit.from_state_dict(state_dict["bandit"])
        if bandit.edges != self.bandit.edges:
            raise CheckpointError("The saved anti-bandit state has other arms than this model space; use another "
                                  "work_dir.")
        self._bandit = bandit
        self._stage = state_dict["stage"]
        self._records = [dict(r) for r in state_dict.get("records") or []]
        pending = state_dict.get("pending")
        self._pending = [dict(s) for s in pending] if isinstance(pending, list) else pending
        self._failed_batches = int(state_dict.get("failed_batches", 0))
        self._signal = state_dict.get("signal")
        self._final_result = state_dict.get("final_result")

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, T={self.samples_per_arm}, lam={self.lam}, seed={self.seed}"
