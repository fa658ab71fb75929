"""The whole multi-shot search of MSRobNet as one NNI strategy (Alg. 1 of
``msrobnet-multishot-nas.txt``).

Stages, each a batch of NNI trials sent through the bridge tuner
(:mod:`nni_robust.strategies.bridge`):

1. **Supernets** (Alg. 1 lines 2-9): one ``supernet`` trial per width whose
   supernet is not already in ``supernet_dir``.
2. **Random topologies** (Alg. 2 line 1, Alg. 1 line 12): ``num_random``
   topologies drawn uniformly, each a multi-shot ``evaluate`` trial.
3. **Function-family selection** (Alg. 2, App. A): when ``family="auto"``, the
   leave-one-out Spearman correlations of the 7 families over those topologies
   pick the family (the smallest supernet excluded), written as a report
   (table and plot) to ``work_dir/family_selection``; the random topologies'
   estimates are re-read under the chosen family (each trial reports every
   family's estimate).
4. **Search**: tournament evolution (Alg. 1 lines 11-18; population 100,
   tournament 10, 200 steps) seeded with the best of the random topologies.
   The paper's one-shot baselines run the same search with ``mode="oneshot"``
   (reward in the one supernet of ``widths``) or ``"oneshot_per_flops"``.
5. **Export**: the best topology to ``work_dir/best_architecture.json``.
6. **Final** (optional, ``final=True``): one ``final`` trial that widens the
   topology to the target FLOPs (Eq. 2), trains and evaluates it (App. B.2).

The strategy is resumable: :meth:`state_dict` holds the stage, every finished
evaluation and the evolution's own state.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.config import check_choice
from nni_robust.errors import ConfigError, NniRobustError

from . import extrapolation
from ..bridge import (StageInterrupted, TrialTask, folder_property, run_jobs, run_stages, task_model,
                      work_dir_property)
from ..trust import read_warnings, record_warning
from .evolution import TournamentEvolution
from .multishot import MODES, supernet_path

__all__ = ["MultiShotSearch"]

logger = logging.getLogger(__name__)

STAGES = ("supernets", "random", "family", "search", "export", "final", "done")


class _TaskEngine:
    """Engine view that attaches one :class:`TrialTask` to every model submitted through it."""

    def __init__(self, engine: ExecutionEngine, task: TrialTask) -> None:
        self._engine = engine
        self._task = task

    def submit_models(self, *models: ExecutableModelSpace) -> None:
        for m in models:
            m.trial_task = self._task
        self._engine.submit_models(*models)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class MultiShotSearch(Strategy):
    """Multi-shot NAS for adversarial robustness (MSRobNet Alg. 1), evolutionary controller.

    Args:
        widths: supernet init channels (paper: 12, 24, 30, 36, 40, 44, 54, 64).
        target_mflops: targeted capacity C_T in MFLOPs (paper: 1000, 1560, 2000).
        family: extrapolation family name, or ``"auto"`` to select it by
            leave-one-out correlation (Alg. 2) over the random topologies.
        mode: ``multishot`` (Alg. 3), or a one-shot baseline (see :data:`MODES`).
        supernet_dir: folder of trained supernets ``c<width>/supernet.pt``;
            missing ones are trained first (default ``<work_dir>/supernets``).
        num_random: N random topologies (paper: 200).
        population: evolution population pi (100).
        tournament: tournament size mu (10).
        steps: evolution steps T_e (200).
        exclude_smallest: leave the smallest supernet out of the LOO mean (App. A).
        flops_unit: FLOPs per fitting unit of the extrapolation (1e6: MFLOPs, as
            the paper; use e.g. 1e3 for the tiny digits networks).
        final: train and evaluate the best topology at the target FLOPs at the end.
        supernets_only: stop after training the supernets (step 1 alone, e.g.
            to train them once and reuse them in several searches, Sec. 5.3).
        final_init_channels: use this width for the final network instead of Eq. 2.
        seed: seed of the topology sampling (``None``: drawn and logged).
        work_dir: where reports and the exported architecture go (default: the
            bridge engine's ``work_dir``).
        settings: the trials' settings (passed by the bridge); used to check
            that the trials build the same layout as the tuner's space.
    """

    def __init__(self, *, widths: Sequence[int] = (12, 24, 30, 36, 40, 44, 54, 64),
                 target_mflops: float = 1560.0, family: str = "auto", mode: str = "multishot",
                 supernet_dir: str | None = None, num_random: int = 200, population: int = 100,
                 tournament: int = 10, steps: int = 200, exclude_smallest: bool = True,
                 flops_unit: float = 1e6, final: bool = True, supernets_only: bool = False, final_init_channels: int | None = None,
                 seed: int | None = None, work_dir: str | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or any(w < 1 for w in widths) or len(set(widths)) != len(widths):
            raise ConfigError(f"widths must be distinct positive integers, but got {list(widths)!r}.")
        check_choice("mode", mode, MODES)
        if mode == "multishot" and len(widths) < 2:
            raise ConfigError(f"mode 'multishot' needs at least 2 widths, but got {widths}.")
        if mode != "multishot" and len(widths) != 1:
            raise ConfigError(f"mode {mode!r} (one-shot baseline) needs exactly 1 width, but got {widths}.")
        if family != "auto" and family not in extrapolation.FAMILIES:
            raise ConfigError(f"family must be 'auto' or one of {sorted(extrapolation.FAMILIES)}, "
                              f"but got {family!r}.")
        if not (isinstance(target_mflops, (int, float)) and target_mflops > 0):
            raise ConfigError(f"target_mflops must be a positive number, but got {target_mflops!r}.")
        for name, value, low in (("num_random", num_random, 1), ("population", population, 2),
                                 ("tournament", tournament, 1), ("steps", steps, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
        if tournament > population:
            raise ConfigError(f"tournament ({tournament}) must not exceed population ({population}).")
        if family == "auto" and mode == "multishot" and len(widths) < 3:
            raise ConfigError(f"family 'auto' (leave-one-out selection) needs at least 3 widths, got {widths}.")
        if family == "auto" and mode == "multishot" and num_random < 3:
            raise ConfigError(f"num_random must be >= 3 with family 'auto': the leave-one-out family selection "
                              f"(App. A) needs at least 3 evaluated topologies, but got num_random={num_random}.")
        self.widths = sorted(widths)
        self.target_mflops = float(target_mflops)
        self.family_arg = family
        self.mode = mode
        self.supernet_dir = supernet_dir
        self.num_random = num_random
        self.population = population
        self.tournament = tournament
        self.steps = steps
        self.exclude_smallest = exclude_smallest
        if not isinstance(flops_unit, (int, float)) or flops_unit <= 0:
            raise ConfigError(f"flops_unit must be a positive number of FLOPs, but got {flops_unit!r}.")
        self.flops_unit = float(flops_unit)
        self.final = final
        self.supernets_only = bool(supernets_only)
        self.final_init_channels = final_init_channels
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 31)
            logger.info("MultiShotSearch seed drawn: %d", seed)
        self.seed = int(seed)
        self.work_dir_arg = work_dir
        self._trial_space = dict((settings or {}).get("space") or {"layout": "cellwise"})
        self._rng = random.Random(self.seed)
        self._stage = STAGES[0]
        self._family = family if family != "auto" else None
        self._records: list[dict[str, Any]] = []  # finished evaluations: sample + full result
        self._num_seeds: int | None = None  # records[:num_seeds]: the random ones seeding the evolution
        self._evo_state: dict[str, Any] | None = None
        self._final_result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    work_dir = work_dir_property
    supernets = folder_property("supernet_dir", "supernets")

    @property
    def family(self) -> str:
        return self._family or "log_power"

    def _eval_task(self) -> TrialTask:
        """The evaluation trials' task. Before the family selection (``family="auto"``, random stage)
        the estimate each trial reports is under a stand-in family (``log_power``), re-read under the
        chosen one afterwards; those trials say ``provisional: true``, so NNI's web UI does not rank
        their estimates against the search stage's (:mod:`nni_robust.strategies.display`)."""
        args = {"widths": self.widths, "target_mflops": self.target_mflops, "family": self.family,
                "mode": self.mode, "flops_unit": self.flops_unit, "supernet_dir": str(self.supernets)}
        if self.mode == "multishot" and self._family is None:
            args["provisional"] = True
        return TrialTask("evaluate", args)

    def _run_jobs(self, models: list[ExecutableModelSpace]) -> bool:
        """:func:`~.bridge.run_jobs` on this strategy's engine."""
        return run_jobs(self.engine, models)

    def _evaluate(self, samples: list[Mapping[str, Any]]) -> None:
        """Multi-shot evaluations of ``samples`` as trials; the finished ones are recorded.

        Raises:
            StageInterrupted: the engine ran out of budget or shut down first.
        """
        task = self._eval_task()
        models = []
        for s in samples:
            m = self.model_space.freeze(dict(s))
            m.trial_task = task
            models.append(m)
        complete = self._run_jobs(models)
        for s, m in zip(samples, models):
            if m.status.completed():
                self._record(s, m)
        if not complete:
            raise StageInterrupted()

    def _random_sample(self) -> dict[str, Any]:
        return {label: self._rng.choice(list(m.values))
                for label, m in sorted(self.model_space.simplify().items())}

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        from nni_robust.errors import ArchitectureError
        from nni_robust.spaces.dense_rob import DenseRobArch

        from ..networks import layout_of

        layout = layout_of(self._trial_space)
        sample = {label: list(m.values)[0] for label, m in model_space.simplify().items()}
        try:
            DenseRobArch.from_sample(sample, layout)
        except ArchitectureError as exc:
            raise ConfigError(
                f"The tuner's space and the trials' settings.space disagree: a sample of the space "
                f"(labels {sorted(sample)[:4]}...) does not fit layout {layout.name!r} of settings.space "
                f"{self._trial_space}: {exc}") from exc
        return model_space

    # ------------------------------------------------------------------ stages
    def _run(self) -> None:
        run_stages(self, STAGES, label=type(self).__name__, after_stage=self._after_stage)

    def _after_stage(self) -> None:
        if self.supernets_only and self._stage == "random":
            logger.info("MultiShotSearch: supernets_only, stopping after the supernets in %s", self.supernets)
            self._stage = "done"

    def _stage_supernets(self) -> None:
        missing = [w for w in self.widths if not supernet_path(self.supernets, w).exists()]
        if not missing:
            return
        jobs = [task_model(TrialTask("supernet", {"width": w, "supernet_dir": str(self.supernets)}))
                for w in missing]
        if not self._run_jobs(jobs):
            raise StageInterrupted()
        failed = [w for w, m in zip(missing, jobs) if m.status != ModelStatus.Trained]
        if failed:
            raise NniRobustError(f"Supernet training failed for widths {failed}; see those trials' logs. "
                                 f"Finished supernets stay in {self.supernets}.")

    def _stage_random(self) -> None:
        done = {json.dumps(r["sample"], sort_keys=True) for r in self._records}
        samples = []
        while len(samples) + len(self._records) < self.num_random:
            s = self._random_sample()
            key = json.dumps(s, sort_keys=True)
            if key not in done:
                done.add(key)
                samples.append(s)
        self._evaluate(samples)

    def _record(self, sample: Mapping[str, Any], model: ExecutableModelSpace,
                status: ModelStatus | None = None) -> None:
        result = getattr(model, "final_result", None)
        if (status or model.status) != ModelStatus.Trained or not isinstance(result, Mapping):
            logger.warning("Evaluation of %s failed; it is left out.", sample)
            return
        self._records.append({"sample": dict(sample), "result": dict(result)})

    def _stage_family(self) -> None:
        if self.mode != "multishot" or self._family is not None:
            return
        flops, rewards = self._matrix(self._records)
        if flops.shape[0] < 3:
            raise NniRobustError(f"Function-family selection needs >= 3 evaluated topologies, got {flops.shape[0]} "
                                 f"(of {self.num_random} sampled: the others' evaluation trials failed).")
        flops = flops * 1e6  # the extrapolation module takes FLOPs
        selection = extrapolation.loo_selection(flops, rewards, exclude=(0,) if self.exclude_smallest else (),
                                                unit=self.flops_unit, names=[f"c{w}" for w in self.widths])
        report_dir = self.work_dir / "family_selection"
        self._family = selection.best or "log_power"
        doubts = self._family_doubts(selection)
        extrapolation.write_report(selection, report_dir, flops=flops, rewards=rewards, unit=self.flops_unit,
                                   trust_warnings=[text for text, _ in doubts], target=self.target_mflops * 1e6)
        for text, data in doubts:
            record_warning(self.work_dir, "msrobnet.family", f"{text} (report: {report_dir / 'loo_selection.md'})",
                           **data)
        logger.info("Selected extrapolation family: %s", self._family)

    def _family_doubts(self, selection: Any) -> list[tuple[str, dict[str, Any]]]:
        """Why the family selection should not be trusted: (sentence, numbers) pairs (none: trust it)."""
        n = selection.n_archs
        if selection.best is None:
            return [(f"No extrapolation family fitted enough of the {n} random topologies for a leave-one-out "
                     "correlation; the paper's choice, log_power, is used without evidence. Train the supernets "
                     "longer or evaluate more topologies (num_random).", {"family": "log_power", "n_archs": n})]
        i = selection.families.index(selection.best)
        mean_tau = float(selection.mean_tau[i])
        if mean_tau > 0:
            return []
        return [(f"The chosen extrapolation family {selection.best} has a mean leave-one-out correlation of "
                 f"{mean_tau:.2f} (not positive) over {n} topologies: the multi-shot estimates do not rank topologies "
                 "better than chance, so the search follows noise. Train the supernets longer (settings.supernet."
                 "epochs), evaluate on more images or more topologies (num_random).",
                 {"family": selection.best, "mean_tau": mean_tau, "n_archs": n,
                  "tau": [float(t) for t in selection.tau[i]]})]

    def _matrix(self, records: Iterable[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        flops, rewards = [], []
        for r in records:
            res = r["result"]
            flops.append([res[f"mflops_c{w}"] for w in self.widths])
            rewards.append([res[f"reward_c{w}"] for w in self.widths])
        return np.asarray(flops, dtype=float), np.asarray(rewards, dtype=float)

    def _reward(self, result: Mapping[str, Any]) -> float:
        """The record's estimate under the chosen family (0.0 when that fit failed)."""
        if self.mode != "multishot":
            return float(result["default"])
        value = result.get(f"est_{self.family}")
        return float(value) if value is not None and math.isfinite(value) else 0.0

    def _on_evaluation_end(self, event: TrainingEndEvent) -> None:
        """Record each finished evaluation of the evolution at once (engine thread, engine lock held),
        so that a state saved at any time holds the full results of every step done."""
        model = event.model
        task = getattr(model, "trial_task", None)
        if task is None or task.task != "evaluate" or model.sample is None:
            return
        sample = dict(model.sample)
        key = json.dumps(sample, sort_keys=True)
        if all(json.dumps(r["sample"], sort_keys=True) != key for r in self._records):
            self._record(sample, model, event.status)

    def _stage_search(self) -> None:
        if self._num_seeds is None:
            self._num_seeds = len(self._records)
        initial = [(r["sample"], self._reward(r["result"])) for r in self._records[:self._num_seeds]]
        if not initial:
            raise NniRobustError("No random topology was evaluated successfully; cannot seed the evolution.")
        population = min(self.population, len(initial))
        evo = TournamentEvolution(population_size=population,
                                  tournament_size=min(self.tournament, population),
                                  num_steps=self.steps, num_initial=len(initial),
                                  initial_population=initial, seed=self._rng.randrange(2 ** 31))
        if self._evo_state is not None:
            evo.load_state_dict(self._evo_state)
        self._evo = evo
        self.engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_evaluation_end)
        try:
            evo.initialize(self.model_space, _TaskEngine(self.engine, self._eval_task()))
            evo.run()
        finally:
            self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_evaluation_end)
        self._evo_state = evo.state_dict()
        if not evo.finished:  # the engine's budget ran out or it shut down
            raise StageInterrupted()

    def _estimate_doubts(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Why the evaluated estimates should not be trusted: (check, sentence, numbers) triples."""
        if self.mode != "multishot" or not self._records:
            return []
        out: list[tuple[str, str, dict[str, Any]]] = []
        n = len(self._records)
        raw = [r["result"].get(f"est_{self.family}") for r in self._records]
        ok = [float(v) for v in raw if v is not None and math.isfinite(v)]
        failed = n - len(ok)
        if failed > n / 2:
            out.append(("fits", f"The {self.family} fit failed for {failed} of {n} evaluated topologies: their "
                                "estimate fell back to 0, so the search ranks few of them. Check the supernets' "
                                "rewards (family_selection report) or choose another family.",
                        {"family": self.family, "failed": failed, "evaluated": n}))
        outside = [v for v in ok if not 0.0 <= v <= 1.0]
        if outside:
            out.append(("estimates", f"{len(outside)} of {n} estimated rewards lie outside [0, 1] (from "
                                     f"{min(outside):.3g} to {max(outside):.3g}): the {self.family} curve "
                                     f"extrapolates beyond the supernets' FLOPs to {self.target_mflops:g} MFLOPs "
                                     "wildly. Choose a target inside the supernets' range or wider supernets.",
                        {"family": self.family, "outside": len(outside), "evaluated": n,
                         "min": min(outside), "max": max(outside), "target_mflops": self.target_mflops}))
        if len(ok) >= 2 and max(ok) - min(ok) <= 1e-9:
            out.append(("estimates", f"All {len(ok)} successful estimates are equal ({ok[0]:.4f}): the search "
                                     "cannot tell the topologies apart and the exported one is a tie-break.",
                        {"family": self.family, "value": ok[0], "evaluated": n}))
        return out

    def _stage_export(self) -> None:
        best = self.best()
        if best is None:
            raise NniRobustError("No topology was evaluated successfully; nothing to export.")
        record, reward = best
        doubts = self._estimate_doubts()
        for check, text, data in doubts:
            record_warning(self.work_dir, f"msrobnet.{check}", text, **data)
        out = {"sample": record["sample"],
               "estimate": reward, "family": self.family, "mode": self.mode,
               "target_mflops": self.target_mflops, "widths": self.widths,
               "one_shot": {f"c{w}": {k: record["result"].get(f"{k}_c{w}")
                                      for k in ("reward", "acc_clean", "acc_adv", "mflops")}
                            for w in self.widths},
               "evaluated": len(self._records),
               "warnings": [w["message"] for w in read_warnings(self.work_dir)]}  # the search's, this one's too
        path = self._write_export(out)
        logger.info("Best topology (estimate %.4f) exported to %s", reward, path)

    def _write_export(self, best: Mapping[str, Any]) -> Path:
        """Alg. 1 line 26's files: ``best`` as ``best_architecture.json`` and every evaluated topology (sample,
        reward, result) in ``evaluations.jsonl``; returns the former's path."""
        path = self.work_dir / "best_architecture.json"
        path.write_text(json.dumps(best, indent=2, sort_keys=True))
        with (self.work_dir / "evaluations.jsonl").open("w") as fh:
            for r in self._records:
                fh.write(json.dumps({"sample": r["sample"], "reward": self._reward(r["result"]),
                                     "result": r["result"]}, sort_keys=True) + "\n")
        return path

    def _stage_final(self) -> None:
        if not self.final:
            return
        best = json.loads((self.work_dir / "best_architecture.json").read_text())
        args: dict[str, Any] = {"sample": best["sample"]}
        if self.final_init_channels:
            args["init_channels"] = int(self.final_init_channels)
        else:
            args["target_mflops"] = self.target_mflops
        job = task_model(TrialTask("final", args))
        if not self._run_jobs([job]):
            raise StageInterrupted()
        if job.status != ModelStatus.Trained:
            raise NniRobustError("The final training trial failed; the exported architecture is in "
                                 f"{self.work_dir / 'best_architecture.json'}.")
        self._final_result = dict(getattr(job, "final_result", {}) or {})

    # ------------------------------------------------------------------ results / state
    def best(self) -> tuple[dict[str, Any], float] | None:
        """The best evaluated record and its reward under the chosen family."""
        if not self._records:
            return None
        record = max(self._records, key=lambda r: self._reward(r["result"]))
        return record, self._reward(record["result"])

    def state_dict(self) -> dict[str, Any]:
        evo = getattr(self, "_evo", None)
        return {"stage": self._stage, "family": self._family, "records": self._records,
                "num_seeds": self._num_seeds,
                "evolution": evo.state_dict() if evo is not None else self._evo_state,
                "rng": _rng_to_json(self._rng.getstate()), "seed": self.seed,
                "final_result": self._final_result}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._stage = state_dict["stage"]
        self._family = state_dict.get("family")
        self._records = list(state_dict.get("records") or [])
        self._num_seeds = state_dict.get("num_seeds")
        self._evo_state = state_dict.get("evolution")
        self._rng.setstate(_rng_from_json(state_dict["rng"]))
        self._final_result = state_dict.get("final_result")


def _rng_to_json(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _rng_from_json(state: Sequence) -> tuple:
    return (state[0], tuple(state[1]), state[2])
