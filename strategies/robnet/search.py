"""RobNet's robust architecture search as one NNI strategy (``robnet.txt``, Secs. 3.2-3.5).

Stages, each a batch of NNI trials sent through the bridge tuner
(:mod:`nni_robust.strategies.bridge`):

1. **supernet** (Sec. 3.2): one ``robnet_supernet`` trial trains the
   weight-sharing supernet of ``settings.space`` (cell-based: one topology
   shared by all cells; cell-free: one per cell) with PGD-7 adversarial
   training and a path-dropped architecture per batch -- unless
   ``supernet_dir`` already holds it.
2. **sample**: ``num_samples`` architectures drawn uniformly (Sec. 3.3: 1,000)
   plus, for the budget study (Sec. 3.4: 100 per budget), architectures drawn
   within each budget until ``budget_samples`` of each are in the sample.
3. **fsp** (Sec. 3.5, ``fsp_filter``): ``robnet_fsp`` trials score the
   candidates (``fsp_batch`` per trial) by the FSP distance of their deeper
   cells inside the supernet, without fine-tuning; those above the threshold
   (``fsp_threshold``, or the ``fsp_quantile`` of all indicators) are
   rejected -- except ``fsp_audit`` of them, chosen at random and fine-tuned
   anyway so that the report can check the filter over the whole range.
4. **finetune** (Sec. 3.2): one ``robnet_finetune`` trial per remaining
   candidate: weights inherited from the supernet, ``finetune_epochs`` (3)
   epochs of adversarial fine-tuning, clean and PGD accuracy per epoch.
5. **report** (Secs. 3.3-3.5): density vs adversarial accuracy, convolutions
   on direct and skip edges, the budget study, the FSP indicator's
   correlations and the fine-tunings the filter saved, as Markdown, CSV and
   PNG in ``work_dir/report`` and as images in ``work_dir/tensorboard``
   (:mod:`.analysis`); warnings when a result should not be trusted.
6. **export**: the most robust fine-tuned architecture (highest adversarial
   accuracy, the paper's robustness indicator) to
   ``work_dir/best_architecture.json`` (with ``final_space``: RobNet's
   evaluation network, 20 cells, C = 36) and ``work_dir/architecture.json``.
7. **final** (``final=True``): the shared ``final`` trial trains it from
   scratch in ``final_space`` and evaluates it.

The strategy is resumable: :meth:`state_dict` (JSON) holds the stage, the
candidates, every FSP score and fine-tuning result, the filter's decisions
and the sampling RNG.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from nni_robust.config import check_choice
from nni_robust.errors import ArchitectureError, ConfigError, NniRobustError
from nni_robust.spaces.dense_rob import DenseRobArch, Layout, layout_of

from ..bridge import StageInterrupted, TrialTask, folder_property, run_jobs, run_stages, task_model, work_dir_property
from ..supernet import supernet_path
from .analysis import BUDGETS, DEFAULT_BUDGET_EDGES, ArchResult, arch_stats, fsp_study
from .fsp import fsp_filter, fsp_threshold
from .sampling import budget_range, sample_architecture, sample_in_budget

__all__ = ["RobNetSearch", "STAGES"]

logger = logging.getLogger(__name__)

STAGES = ("supernet", "sample", "fsp", "finetune", "report", "export", "final", "done")
#: RobNet's evaluation network (the released RobNet models): 20 cells, C = 36.
ROBNET_CELLS = 20
ROBNET_CHANNELS = 36


def _key(sample: Mapping[str, Any]) -> str:
    return json.dumps(dict(sample), sort_keys=True)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
    return int(value)


class RobNetSearch(Strategy):
    """RobNet's one-shot robust architecture search with fine-tuned evaluation and the FSP filter.

    Args:
        width: Init channels C of the supernet and the fine-tuned networks
            (not in the paper; default the RobNet models' 36).
        supernet_dir: Folder of ``c<width>/supernet.pt``; trained first when
            missing (default ``<work_dir>/supernet``).
        path_drop_prob: Probability of dropping each element of alpha per
            supernet batch (the paper does not give it; 0.5 = every op uniform).
        probe_archs: Fixed architectures whose accuracy in the supernet is the
            supernet trial's per-epoch result.
        num_samples: Architectures sampled uniformly (paper: 1,000).
        budget_samples: Architectures per budget for the budget study (Sec.
            3.4; paper: 100); drawn within each budget until the sample holds
            that many (0: none).
        budget_edges: Budget bins of convolutions per cell (small <= 7,
            medium <= 10, large above).
        finetune_epochs: Fine-tuning epochs per architecture (paper: 3).
        finetune: :class:`~nni_robust.training.TrainConfig` overrides of the
            fine-tuning (see :func:`.tasks.finetune_config`).
        finetune_images: Training images per fine-tuning epoch (default all).
        fsp_filter: Screen the candidates by the FSP indicator and fine-tune
            only those at or below the threshold (Sec. 3.5).
        fsp_threshold: The threshold (default: the ``fsp_quantile`` of the
            screened candidates' indicators; the paper gives none).
        fsp_quantile: See ``fsp_threshold`` (default the median).
        fsp_audit: Rejected candidates fine-tuned anyway (at random), so that
            the FSP report covers the whole range (0: the paper's filter).
        fsp_batch: Candidates scored per ``robnet_fsp`` trial.
        fsp: Options of the FSP computation (:data:`.tasks.FSP_DEFAULTS`).
        final: Train and evaluate the best architecture at the end.
        final_space: ``settings.space`` of the final network (default: the
            search space's layout kind with 20 cells -- cell-free architectures
            keep their number of cells).
        final_init_channels: C of the final network (RobNet: 36).
        seed: Seed of the sampling (``None``: drawn and logged).
        work_dir: Where the reports and exports go (default: the bridge engine's).
        settings: The trials' settings (passed by the bridge).
    """

    def __init__(self, *, width: int = ROBNET_CHANNELS, supernet_dir: str | None = None,
                 path_drop_prob: float = 0.5, probe_archs: int = 1, num_samples: int = 1000,
                 budget_samples: int = 0, budget_edges: Sequence[float] = DEFAULT_BUDGET_EDGES,
                 finetune_epochs: int = 3, finetune: Mapping[str, Any] | None = None,
                 finetune_images: int | None = None, fsp_filter: bool = False, fsp_threshold: float | None = None,
                 fsp_quantile: float = 0.5, fsp_audit: int = 0, fsp_batch: int = 50,
                 fsp: Mapping[str, Any] | None = None, final: bool = True, final_space: Mapping[str, Any] | None = None,
                 final_init_channels: int = ROBNET_CHANNELS, seed: int | None = None, work_dir: str | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from ..settings import TrialSettings
        from ..supernet import PathDropSampler
        from .tasks import finetune_config, fsp_options

        self.width = _check_int("width", width, 1)
        self.supernet_dir = supernet_dir
        self.path_drop_prob = PathDropSampler(path_drop_prob).drop_prob
        self.probe_archs = _check_int("probe_archs", probe_archs, 1)
        self.num_samples = _check_int("num_samples", num_samples, 0)
        self.budget_samples = _check_int("budget_samples", budget_samples, 0)
        if self.num_samples + self.budget_samples == 0:
            raise ConfigError("num_samples and budget_samples are both 0: nothing to evaluate.")
        self.budget_edges = tuple(float(e) for e in budget_edges)
        if self.budget_samples:
            for b in BUDGETS:
                budget_range(b, self.budget_edges)  # every budget must hold a convolution count
        self.finetune_epochs = _check_int("finetune_epochs", finetune_epochs, 1)
        if finetune is not None and not isinstance(finetune, Mapping):
            raise ConfigError(f"finetune must be a mapping of training settings, but got {finetune!r}.")
        self.finetune = dict(finetune or {})
        if finetune_images is not None:
            _check_int("finetune_images", finetune_images, 1)
        self.finetune_images = finetune_images
        if not isinstance(fsp_filter, bool):
            raise ConfigError(f"fsp_filter must be true or false, but got {fsp_filter!r}.")
        self.use_fsp = fsp_filter
        if fsp_threshold is not None and (isinstance(fsp_threshold, bool) or not isinstance(fsp_threshold, (int, float))
                                          or not math.isfinite(fsp_threshold)):
            raise ConfigError(f"fsp_threshold must be a finite number or null, but got {fsp_threshold!r}.")
        self.fsp_threshold_arg = None if fsp_threshold is None else float(fsp_threshold)
        if isinstance(fsp_quantile, bool) or not isinstance(fsp_quantile, (int, float)) or not 0 <= fsp_quantile <= 1:
            raise ConfigError(f"fsp_quantile must be a number in [0, 1], but got {fsp_quantile!r}.")
        self.fsp_quantile = float(fsp_quantile)
        self.fsp_audit = _check_int("fsp_audit", fsp_audit, 0)
        self.fsp_batch = _check_int("fsp_batch", fsp_batch, 1)
        self.fsp = fsp_options(fsp)
        if not isinstance(final, bool):
            raise ConfigError(f"final must be true or false, but got {final!r}.")
        self.final = final
        self.final_init_channels = _check_int("final_init_channels", final_init_channels, 1)
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 31)
            logger.info("RobNetSearch seed drawn: %d", seed)
        self.seed = _check_int("seed", seed, 0)
        self.work_dir_arg = work_dir

        trial_settings = TrialSettings.from_dict(dict(settings or {}))
        self._trial_space = dict(trial_settings.space)
        if self._trial_space.get("name", "dense_rob") != "dense_rob":
            raise ConfigError(f"The RobNet search needs settings.space of the dense_rob space, but got "
                              f"{self._trial_space}.")
        self.layout = layout_of(self._trial_space)
        finetune_config(trial_settings, self.finetune, self.finetune_epochs)  # a bad key fails now
        if final_space is not None and not isinstance(final_space, Mapping):
            raise ConfigError(f"final_space must be a space settings dict, but got {final_space!r}.")
        self.final_space = dict(final_space) if final_space is not None else self._default_final_space()
        self.final_layout = layout_of(self.final_space)
        if set(self.final_layout.topologies) != set(self.layout.topologies):
            raise ConfigError(f"final_space {self.final_space} has the topologies {list(self.final_layout.topologies)}"
                              f", but the search layout {self.layout.name!r} has {list(self.layout.topologies)}.")

        self._rng = random.Random(self.seed)
        self._stage = STAGES[0]
        self._supernet_result: dict[str, Any] | None = None
        self._candidates: list[dict[str, Any]] = []      # {"sample", "origin"}
        self._fsp: dict[str, dict[str, Any]] = {}        # sample key -> FSP row
        self._threshold: float | None = None
        self._rejected: list[int] = []
        self._audit: list[int] = []
        self._results: dict[str, dict[str, Any]] = {}    # sample key -> fine-tuning result
        self._failed: list[str] = []
        self._report: dict[str, Any] | None = None
        self._final_result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    work_dir = work_dir_property
    supernets = folder_property("supernet_dir", "supernet")

    @property
    def cell_free(self) -> bool:
        """Whether every cell has its own topology (Sec. 3.5)."""
        return len(self.layout.topologies) == self.layout.num_cells > 1

    def _default_final_space(self) -> dict[str, Any]:
        if self.cell_free:  # one topology per cell: the network keeps its cells
            return dict(self._trial_space)
        layout = Layout.robnet(ROBNET_CELLS, shared=True)
        if set(layout.topologies) != set(self.layout.topologies):
            return dict(self._trial_space)
        return {**self._trial_space, "layout": layout.name}

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        sample = {label: list(m.values)[0] for label, m in model_space.simplify().items()}
        try:
            DenseRobArch.from_sample(sample, self.layout)
        except ArchitectureError as exc:
            raise ConfigError(
                f"The tuner's space and the trials' settings.space disagree: a sample of the space "
                f"(labels {sorted(sample)[:4]}...) does not fit layout {self.layout.name!r} of settings.space "
                f"{self._trial_space}: {exc}") from exc
        return model_space

    def _supernet_args(self) -> dict[str, Any]:
        return {"width": self.width, "supernet_dir": str(self.supernets)}

    def _finetune_task(self) -> TrialTask:
        args: dict[str, Any] = {**self._supernet_args(), "epochs": self.finetune_epochs}
        if self.finetune:
            args["finetune"] = self.finetune
        if self.finetune_images is not None:
            args["train_images"] = self.finetune_images
        return TrialTask("robnet_finetune", args)

    def _arch(self, sample: Mapping[str, Any]) -> DenseRobArch:
        return DenseRobArch.from_sample(sample, self.layout)

    # ------------------------------------------------------------------ stages
    def _run(self) -> None:
        run_stages(self, STAGES, label=type(self).__name__)

    def _stage_supernet(self) -> None:
        if supernet_path(self.supernets, self.width).exists():
            logger.info("Using the trained supernet in %s", supernet_path(self.supernets, self.width))
            return
        job = task_model(TrialTask("robnet_supernet", {**self._supernet_args(), "path_drop_prob": self.path_drop_prob,
                                                       "probe_archs": self.probe_archs}))
        if not run_jobs(self.engine, [job]):
            raise StageInterrupted()
        if job.status != ModelStatus.Trained:
            raise NniRobustError(f"The supernet training trial failed; see its log. Its checkpoint in "
                                 f"{self.supernets} is kept: resuming the experiment continues it.")
        self._supernet_result = dict(getattr(job, "final_result", None) or {})

    def _stage_sample(self) -> None:
        seen = {_key(c["sample"]) for c in self._candidates}
        space = 4 ** (14 * len(self.layout.topologies))

        def add(arch: DenseRobArch, origin: str) -> bool:
            sample = arch.to_sample()
            k = _key(sample)
            if k in seen:
                return False
            seen.add(k)
            self._candidates.append({"sample": sample, "origin": origin})
            return True

        target = min(self.num_samples, space)
        while sum(c["origin"] == "random" for c in self._candidates) < target:
            add(sample_architecture(self.layout, self._rng), "random")
        if self.budget_samples:
            for b in BUDGETS:
                have = sum(arch_stats(self._arch(c["sample"]), budget_edges=self.budget_edges).budget == b
                           for c in self._candidates)
                tries = 0
                while have < self.budget_samples and tries < 100 * self.budget_samples:
                    tries += 1
                    have += add(sample_in_budget(self.layout, b, self._rng, self.budget_edges), f"budget-{b}")
        counts = {b: 0 for b in BUDGETS}
        for c in self._candidates:
            counts[arch_stats(self._arch(c["sample"]), budget_edges=self.budget_edges).budget] += 1
        logger.info("Sampled %d architectures (%s layout %s); per budget: %s", len(self._candidates),
                    "cell-free" if self.cell_free else "cell-based", self.layout.name, counts)

    def _fsp_file(self, batch: int) -> Path:
        return self.work_dir / "fsp" / f"batch_{batch:04d}.json"

    def _stage_fsp(self) -> None:
        if not self.use_fsp:
            return
        batches = [list(range(s, min(s + self.fsp_batch, len(self._candidates))))
                   for s in range(0, len(self._candidates), self.fsp_batch)]
        todo = [(b, idx) for b, idx in enumerate(batches)
                if any(_key(self._candidates[i]["sample"]) not in self._fsp for i in idx)]
        jobs = []
        for b, idx in todo:
            args = {**self._supernet_args(), "samples": [self._candidates[i]["sample"] for i in idx],
                    "fsp": self.fsp, "out_file": str(self._fsp_file(b))}
            jobs.append(task_model(TrialTask("robnet_fsp", args)))
        complete = run_jobs(self.engine, jobs) if jobs else True
        for (b, _), job in zip(todo, jobs):
            if job.status == ModelStatus.Trained and self._fsp_file(b).exists():
                for row in json.loads(self._fsp_file(b).read_text())["results"]:
                    self._fsp[_key(row["sample"])] = {k: v for k, v in row.items() if k != "sample"}
        if not complete:
            raise StageInterrupted()
        missing = [i for i, c in enumerate(self._candidates) if _key(c["sample"]) not in self._fsp]
        if missing:
            raise NniRobustError(f"FSP scoring failed for {len(missing)} candidates (e.g. #{missing[0]}); see the "
                                 f"robnet_fsp trials' logs. Resuming the experiment retries them.")
        indicators = {i: self._fsp[_key(c["sample"])]["indicator"] for i, c in enumerate(self._candidates)}
        self._threshold = self.fsp_threshold_arg if self.fsp_threshold_arg is not None else \
            fsp_threshold(indicators, quantile=self.fsp_quantile)
        kept, rejected = fsp_filter(indicators, self._threshold)
        self._rejected = list(rejected)
        self._audit = sorted(self._rng.sample(self._rejected, min(self.fsp_audit, len(self._rejected))))
        logger.info("FSP filter (threshold %.6g): %d kept, %d rejected, %d of them fine-tuned anyway (audit).",
                    self._threshold, len(kept), len(rejected), len(self._audit))

    def _to_finetune(self) -> list[int]:
        rejected = set(self._rejected) - set(self._audit)
        return [i for i in range(len(self._candidates)) if i not in rejected]

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        """Record each finished fine-tuning at once (engine thread), so that a state saved at any time
        holds every finished result."""
        model = event.model
        task = getattr(model, "trial_task", None)
        if task is None or task.task != "robnet_finetune" or model.sample is None:
            return
        result = getattr(model, "final_result", None)
        if event.status == ModelStatus.Trained and isinstance(result, Mapping):
            self._results[_key(model.sample)] = dict(result)

    def _stage_finetune(self) -> None:
        task = self._finetune_task()
        pending = [i for i in self._to_finetune() if _key(self._candidates[i]["sample"]) not in self._results]
        jobs = [task_model(task, sample=self._candidates[i]["sample"]) for i in pending]
        self.engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        try:
            complete = run_jobs(self.engine, jobs) if jobs else True
        finally:
            self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        for i, job in zip(pending, jobs):
            result = getattr(job, "final_result", None)
            k = _key(self._candidates[i]["sample"])
            if job.status == ModelStatus.Trained and isinstance(result, Mapping):
                self._results[k] = dict(result)
            elif job.status.completed() and k not in self._failed:
                self._failed.append(k)
                logger.warning("Fine-tuning of candidate #%d failed; it is left out.", i)
        if not complete:
            raise StageInterrupted()
        if not self._results:
            raise NniRobustError("No architecture was fine-tuned successfully; see the robnet_finetune trials' logs.")

    # ------------------------------------------------------------------ analysis
    def arch_results(self) -> list[ArchResult]:
        """Every candidate as an :class:`~.analysis.ArchResult` (fine-tuned and/or FSP-scored)."""
        out = []
        for i, c in enumerate(self._candidates):
            k = _key(c["sample"])
            res, fsp = self._results.get(k, {}), self._fsp.get(k, {})
            if not res and not fsp:
                continue
            before_adv = res.get("acc_adv_before", fsp.get("acc_adv"))
            before_clean = res.get("acc_clean_before", fsp.get("acc_clean"))
            out.append(ArchResult(self._arch(c["sample"]), adv_acc=res.get("acc_adv"), clean_acc=res.get("acc_clean"),
                                  fsp=fsp.get("indicator"), adv_acc_before=before_adv,
                                  clean_acc_before=before_clean, name=f"#{i} {c['origin']}"))
        return out

    def trust_notes(self) -> list[str]:
        """Reasons not to trust this search's results (empty when none was found)."""
        notes = []
        adv = np.asarray([r["acc_adv"] for r in self._results.values()], dtype=float)
        n_eval = max([int(r.get("eval_images", 0)) for r in self._results.values()] + [0])
        if adv.size < 3:
            notes.append(f"Only {adv.size} architecture(s) fine-tuned: no correlation can be estimated.")
        if adv.size >= 2 and n_eval:
            best = float(adv.max())
            se = math.sqrt(max(best * (1 - best), 1e-12) / n_eval)
            margin = 2 * math.sqrt(2) * se
            if best - float(np.median(adv)) < margin:
                notes.append(f"The fine-tuned adversarial accuracies spread less than measurement noise: the best "
                             f"({best:.4f}) is within {margin:.4f} (2 standard errors of a difference on {n_eval} "
                             f"images) of the median ({float(np.median(adv)):.4f}). The ranking, and the exported "
                             f"architecture, are not meaningful; use more evaluation images or fine-tuning epochs.")
        before = np.asarray([r["acc_adv_before"] for r in self._results.values() if "acc_adv_before" in r], dtype=float)
        after = np.asarray([r["acc_adv"] for r in self._results.values() if "acc_adv_before" in r], dtype=float)
        if before.size and float(np.mean(after - before)) <= 0:
            notes.append(f"Fine-tuning did not raise the mean adversarial accuracy ({np.mean(before):.4f} before, "
                         f"{np.mean(after):.4f} after; the paper's Fig. 3a shows a clear gain): check the "
                         f"fine-tuning settings.")
        probe = (self._supernet_result or {}).get("probe_acc_adv")
        if probe is not None and adv.size and probe <= 0.0:
            notes.append("The supernet's probe architecture has zero adversarial accuracy: the supernet did not "
                         "become robust; inherited weights may not rank architectures.")
        if self.use_fsp and self._threshold is not None:
            study = fsp_study(self.arch_results(), threshold=self._threshold)
            c = study["vs_adv_acc"]
            significant = c["n"] >= 3 and math.isfinite(c["kendall"]) and c["kendall_p"] < 0.05
            if significant and c["kendall"] > 0:
                notes.append(f"The FSP indicator correlated *positively* with the fine-tuned adversarial accuracy "
                             f"(Kendall tau = {c['kendall']:.3f}, p = {c['kendall_p']:.3g}, n = {c['n']}), the "
                             f"opposite of the paper's observation: the filter rejected the more robust "
                             f"architectures; its {study['saved']} saved fine-tunings are not worth having here "
                             f"(try fsp.normalize: relative, or no filter).")
            elif not (significant and c["kendall"] < 0):
                notes.append(f"The FSP indicator did not significantly predict the fine-tuned adversarial accuracy "
                             f"(Kendall tau = {c['kendall']:.3f}, p = {c['kendall_p']:.3g}, n = {c['n']}; the paper "
                             f"expects a negative correlation): the {study['saved']} fine-tunings the filter saved "
                             f"may have discarded robust architectures.")
        return notes

    def _stage_report(self) -> None:
        from .analysis import report_images, write_report

        results = self.arch_results()
        notes = self.trust_notes()
        for n in notes:
            logger.warning("RobNet search: %s", n)
        fsp = fsp_study(results, threshold=self._threshold) if self.use_fsp else None
        summary = [f"Layout {self.layout.name} ({'cell-free' if self.cell_free else 'cell-based'}), supernet width "
                   f"{self.width}, path-drop probability {self.path_drop_prob:g}; {len(self._candidates)} sampled "
                   f"architectures, {len(self._results)} fine-tuned for {self.finetune_epochs} epochs "
                   f"({len(self._failed)} failed)."]
        if fsp is not None:
            summary.append(f"FSP filter: threshold {self._threshold:.6g} "
                           f"({'given' if self.fsp_threshold_arg is not None else f'quantile {self.fsp_quantile:g}'}); "
                           f"{fsp['rejected']} of {fsp['screened']} rejected, {fsp['audited']} of those fine-tuned "
                           f"anyway (audit): {fsp['saved']} fine-tuning trials saved "
                           f"({fsp['saved_fraction']:.0%}).")
        out = self.work_dir / "report"
        paths = write_report(results, out, stem="robnet", budget_edges=self.budget_edges,
                             fsp_threshold=self._threshold if self.use_fsp else None, notes=notes, summary=summary,
                             title="RobNet search: architecture analysis")
        try:
            from nni_robust.tb import summary_writer

            writer = summary_writer(self.work_dir / "tensorboard")
            try:
                for name, img in report_images(results, budget_edges=self.budget_edges,
                                               fsp_threshold=self._threshold if self.use_fsp else None).items():
                    writer.add_image(f"robnet/{name}", img, len(self._results), dataformats="HWC")
                writer.add_text("robnet/warnings", "\n\n".join(notes) or "none", len(self._results))
            finally:
                writer.close()
        except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
            logger.warning("No TensorBoard images: %s", exc)
        with (out / "evaluations.jsonl").open("w") as fh:
            for i, c in enumerate(self._candidates):
                k = _key(c["sample"])
                fh.write(json.dumps({"index": i, "origin": c["origin"], "sample": c["sample"],
                                     "arch": str(self._arch(c["sample"])), "fsp": self._fsp.get(k),
                                     "rejected": i in self._rejected, "audit": i in self._audit,
                                     "finetune": self._results.get(k)}, sort_keys=True) + "\n")
        self._report = {"paths": {k: str(v) for k, v in paths.items()}, "warnings": notes, "fsp": fsp,
                        "sampled": len(self._candidates), "fine_tuned": len(self._results)}
        (out / "summary.json").write_text(json.dumps(self._report, indent=2, sort_keys=True, default=float))
        logger.info("RobNet report written to %s", paths["report_md"])

    # ------------------------------------------------------------------ export, final
    def best(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The candidate with the highest fine-tuned adversarial accuracy (ties: clean accuracy) and its result."""
        best = None
        for c in self._candidates:
            res = self._results.get(_key(c["sample"]))
            if res is None:
                continue
            score = (res["acc_adv"], res.get("acc_clean", 0.0))
            if best is None or score > best[0]:
                best = (score, c, res)
        return None if best is None else (best[1], best[2])

    def _stage_export(self) -> None:
        best = self.best()
        if best is None:
            raise NniRobustError("No architecture was fine-tuned successfully; nothing to export.")
        candidate, result = best
        arch = self._arch(candidate["sample"])
        final_arch = DenseRobArch(dict(arch.cells), self.final_layout)
        k = _key(candidate["sample"])
        stats = arch_stats(arch, budget_edges=self.budget_edges)
        out = {"arch": final_arch.to_dict(), "search_arch": arch.to_dict(), "sample": candidate["sample"],
               "compact": str(final_arch), "origin": candidate["origin"], "space": self._trial_space,
               "final_space": self.final_space, "final_init_channels": self.final_init_channels,
               "finetune": result, "fsp": self._fsp.get(k), "density": stats.density, "convs": stats.convs,
               "direct_convs": stats.direct_convs, "budget": stats.budget, "evaluated": len(self._results),
               "sampled": len(self._candidates), "warnings": (self._report or {}).get("warnings", [])}
        path = self.work_dir / "best_architecture.json"
        path.write_text(json.dumps(out, indent=2, sort_keys=True))
        (self.work_dir / "architecture.json").write_text(final_arch.to_json(indent=2))
        logger.info("Best architecture (fine-tuned adversarial accuracy %.4f, clean %.4f) exported to %s: %s",
                    result["acc_adv"], result.get("acc_clean", float("nan")), path, final_arch)

    def _stage_final(self) -> None:
        if not self.final:
            return
        arch = (self.work_dir / "architecture.json").read_text()
        job = task_model(TrialTask("final", {"arch": arch, "space": self.final_space,
                                             "init_channels": self.final_init_channels}))
        if not run_jobs(self.engine, [job]):
            raise StageInterrupted()
        if job.status != ModelStatus.Trained:
            raise NniRobustError("The final training trial failed; the exported architecture is in "
                                 f"{self.work_dir / 'best_architecture.json'}.")
        self._final_result = dict(getattr(job, "final_result", None) or {})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = self._rng.getstate()
        return {"stage": self._stage, "seed": self.seed, "rng": [state[0], list(state[1]), state[2]],
                "supernet_result": self._supernet_result, "candidates": self._candidates,
                "fsp": [{"sample": c["sample"], **self._fsp[_key(c["sample"])]} for c in self._candidates
                        if _key(c["sample"]) in self._fsp],
                "threshold": self._threshold, "rejected": self._rejected, "audit": self._audit,
                "results": [{"sample": c["sample"], "result": self._results[_key(c["sample"])]}
                            for c in self._candidates if _key(c["sample"]) in self._results],
                "failed": self._failed, "report": self._report, "final_result": self._final_result}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        check_choice("stage", state_dict.get("stage"), STAGES)
        self._stage = state_dict["stage"]
        rng = state_dict["rng"]
        self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))
        self._supernet_result = state_dict.get("supernet_result")
        self._candidates = [dict(c) for c in state_dict.get("candidates") or []]
        self._fsp = {_key(r["sample"]): {k: v for k, v in r.items() if k != "sample"}
                     for r in state_dict.get("fsp") or []}
        self._threshold = state_dict.get("threshold")
        self._rejected = list(state_dict.get("rejected") or [])
        self._audit = list(state_dict.get("audit") or [])
        self._results = {_key(r["sample"]): dict(r["result"]) for r in state_dict.get("results") or []}
        self._failed = list(state_dict.get("failed") or [])
        self._report = state_dict.get("report")
        self._final_result = state_dict.get("final_result")
