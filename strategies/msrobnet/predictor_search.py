"""MSRobNet-P: the predictor-based controller of MSRobNet as one NNI strategy.

MSRobNet (``msrobnet-multishot-nas.txt``) Sec. 5.3.3, Alg. 1 lines 19-26 and
App. B.1. :class:`PredictorSearch` is :class:`~.msrobnet_search.MultiShotSearch`
with its evolutionary *search* stage replaced; the stages are

1. **supernets**, 2. **random** (N = 200 random topologies, multi-shot
   evaluated), 3. **family** (leave-one-out selection, Alg. 2): as in
   :class:`~.msrobnet_search.MultiShotSearch`;
4. **search** (Alg. 1 lines 20-25): the architecture predictor
   (:mod:`.predictor`) is trained on the evaluated topologies (line 21); then
   for ``T_p = 8`` stages: an inner tournament evolution on predictor scores
   (population 20, tournament 5, ``T_pe = N_p x 50 = 2,500`` steps, each step
   scores one mutated topology; every 50 steps the best-scored topology of the
   population is picked) yields ``N_p = 50`` topologies (line 23), which get
   real multi-shot evaluations as NNI trials (line 24) and then tune the
   predictor (line 25). 200 + 8 x 2,500 = 20,200 topologies are scored by the
   predictor, 600 (3 %) are evaluated (Sec. 5.3.3);
5. **export** (line 26: the best evaluated topology), 6. **final**: as in
   :class:`~.msrobnet_search.MultiShotSearch`.

Predictor quality: each stage's picks are scored by the predictor *before* it
is tuned on them, so they are architectures it was not trained on. Per stage,
Kendall tau, Spearman rho and P@K (GATES; MSRobNet App. D.1) of the predicted
against the measured multi-shot rewards go to TensorBoard
(``work_dir/tensorboard``) and to ``work_dir/predictor/quality.{json,md}``,
with the same measures pooled over every stage so far.

Choices where the paper is silent (all parameters):

* the inner search starts from the ``population`` best *evaluated* topologies
  (by measured reward), scored by the predictor; its fitness is always the
  predictor score;
* a pick is the best-scored population member that is neither evaluated nor
  already picked (else the best-scored such topology scored in this stage); a
  child identical to a population member is not added twice (the step counts);
* tuning (line 25) trains on the stage's newly evaluated topologies only
  (``tune_on="new"``; ``"all"``: on every evaluated topology), with a fresh
  Adam, for ``training.tune_epochs`` epochs;
* topologies whose extrapolation failed (no finite estimate) are left out of
  the predictor's training and quality measures (they stay in the search's
  records with reward 0, as in :class:`~.msrobnet_search.MultiShotSearch`).

Resumable: :meth:`state_dict` holds the base search's state plus the predictor
stage, the current picks and every finished stage's log; the predictor's
weights of every version are in ``work_dir/predictor/predictor_v<k>.pt`` (and
rebuilt from the logged training sets when a file is missing). torch and
torch-geometric are imported only when the search stage starts.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nni_robust.config import check_choice
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError

from .search import MultiShotSearch

__all__ = ["PredictorSearch", "inner_search"]

logger = logging.getLogger(__name__)

TUNE_ON = ("new", "all")


def _key(sample: Mapping[str, Any]) -> str:
    return json.dumps(dict(sample), sort_keys=True)


def _derived_seed(seed: int, tag: str, index: int) -> int:
    """A seed for (``tag``, ``index``) that does not depend on what ran before (exact resume)."""
    return random.Random(f"{seed}/{tag}/{index}").randrange(2 ** 31)


def inner_search(score: Callable[[np.ndarray], np.ndarray], initial: Sequence[np.ndarray], *,
                 population: int = 20, tournament: int = 5, num_picks: int = 50, pick_every: int = 50,
                 num_choices: int = 4, exclude: set[bytes] | frozenset[bytes] = frozenset(),
                 rng: random.Random | None = None) -> tuple[list[tuple[np.ndarray, float]], int]:
    """The inner evolutionary search on predictor scores (MSRobNet Alg. 1 line 23, App. B.1).

    Tournament evolution (Real et al.) for ``num_picks x pick_every`` steps:
    ``tournament`` members drawn at random, the best-scored one mutated (one
    edge to another op, uniform), the child scored and added, the lowest-scored
    member removed. Every ``pick_every`` steps the best-scored member that is
    neither in ``exclude`` nor picked is picked (else the best such topology
    scored so far in this search).

    Args:
        score: scores of ``(B, L)`` int arrays of op indices (higher is better).
        initial: the starting population (op index arrays of length L); at most
            ``population`` of them are used (the first ones).
        population: population size (paper: 20).
        tournament: tournament size (paper: 5).
        num_picks: N_p, topologies to pick (paper: 50).
        pick_every: steps between picks (paper: 50, so T_pe = 2,500).
        num_choices: ops per edge.
        exclude: ``arr.tobytes()`` of topologies that must not be picked (evaluated).
        rng: the random generator.

    Returns:
        (picks as (op array, predicted score), number of topologies scored).
    """
    if not initial:
        raise NniRobustError("inner_search needs at least one initial topology.")
    rng = rng or random.Random()
    pop_arrays = [np.asarray(a, dtype=np.int64).copy() for a in list(initial)[:population]]
    length = pop_arrays[0].shape[0]
    scores = score(np.stack(pop_arrays))
    cache: dict[bytes, float] = {}
    pop: list[tuple[bytes, np.ndarray, float]] = []
    for arr, s in zip(pop_arrays, scores):
        cache[arr.tobytes()] = float(s)
        pop.append((arr.tobytes(), arr, float(s)))
    num_scored = len(pop)
    picked: set[bytes] = set()
    picks: list[tuple[np.ndarray, float]] = []
    members = {k for k, _, _ in pop}
    for step in range(1, num_picks * pick_every + 1):
        contenders = rng.sample(range(len(pop)), min(tournament, len(pop)))
        parent = pop[max(contenders, key=lambda i: pop[i][2])][1]  # first drawn on ties
        child = parent.copy()
        pos = rng.randrange(length)
        child[pos] = rng.choice([v for v in range(num_choices) if v != parent[pos]])
        key = child.tobytes()
        value = cache.get(key)
        if value is None:
            value = float(score(child[None])[0])
            cache[key] = value
        num_scored += 1
        if key not in members:
            pop.append((key, child, value))
            members.add(key)
            worst = min(range(len(pop)), key=lambda i: pop[i][2])  # oldest on ties
            members.discard(pop.pop(worst)[0])
        if step % pick_every == 0 and len(picks) < num_picks:
            free = [m for m in pop if m[0] not in exclude and m[0] not in picked]
            if free:
                best_key, best_arr, best_score = max(free, key=lambda m: m[2])
            else:
                rest = [(k, s) for k, s in cache.items() if k not in exclude and k not in picked]
                if not rest:
                    logger.warning("Inner search: no unevaluated topology left to pick at step %d.", step)
                    continue
                best_key, best_score = max(rest, key=lambda kv: kv[1])
                best_arr = np.frombuffer(best_key, dtype=np.int64).copy()
            picked.add(best_key)
            picks.append((best_arr.copy(), best_score))
    return picks, num_scored


class PredictorSearch(MultiShotSearch):
    """Multi-shot NAS with the predictor-based controller (MSRobNet-P; Alg. 1 lines 19-26).

    Args:
        widths: supernet init channels (paper: 12, 24, 30, 36, 40, 44, 54, 64).
        target_mflops: targeted capacity C_T in MFLOPs (paper: 1560, 2000).
        family: extrapolation family, or ``"auto"`` (Alg. 2).
        mode: ``multishot``, or a one-shot baseline (``oneshot``: the reward in
            the single supernet of ``widths``; the paper's one-shot-rA-24c-P, -44c-P).
        supernet_dir: folder of trained supernets (default ``<work_dir>/supernets``).
        num_random: N random topologies that train the initial predictor (200).
        stages: T_p, predictor stages (8).
        picks: N_p, topologies evaluated per stage (50).
        pick_every: inner-search steps per pick (50; T_pe = picks x pick_every).
        population: inner-search population (20).
        tournament: inner-search tournament size (5).
        predictor: :class:`~.predictor.PredictorConfig` keys (default: the paper's).
        training: :class:`~.predictor.RankTrainConfig` keys (default: the paper's).
        tune_on: ``"new"`` (tune on the stage's new evaluations; Alg. 1 line 25)
            or ``"all"`` (on every evaluation so far).
        precision_ks: the K of the P@K quality measure.
        predictor_device: where the predictor runs (``cpu``, ``cuda``, ``auto``).
        predictor_threads: torch CPU threads of the tuner process while the
            predictor trains and scores (None: leave torch's setting). Default
            1: the graphs are tiny, and on a machine whose cores also run
            trials more threads make each scoring call many times slower.
        exclude_smallest, flops_unit, final, supernets_only, final_init_channels:
            as in :class:`~.msrobnet_search.MultiShotSearch`.
        seed: seed of sampling, inner searches and predictor training (``None``: drawn).
        work_dir: reports, predictor checkpoints, TensorBoard (default: the bridge's).
        settings: the trials' settings (passed by the bridge).
    """

    def __init__(self, *, widths: Sequence[int] = (12, 24, 30, 36, 40, 44, 54, 64),
                 target_mflops: float = 1560.0, family: str = "auto", mode: str = "multishot",
                 supernet_dir: str | None = None, num_random: int = 200, stages: int = 8, picks: int = 50,
                 pick_every: int = 50, population: int = 20, tournament: int = 5,
                 predictor: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None,
                 tune_on: str = "new", precision_ks: Sequence[int] = (5, 10, 20, 50),
                 predictor_device: str = "cpu", predictor_threads: int | None = 1, exclude_smallest: bool = True, flops_unit: float = 1e6,
                 final: bool = True, supernets_only: bool = False, final_init_channels: int | None = None,
                 seed: int | None = None, work_dir: str | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        for name, value in (("stages", stages), ("picks", picks), ("pick_every", pick_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, but got {value!r}.")
        super().__init__(widths=widths, target_mflops=target_mflops, family=family, mode=mode,
                         supernet_dir=supernet_dir, num_random=num_random, population=population,
                         tournament=tournament, steps=picks * pick_every, exclude_smallest=exclude_smallest,
                         flops_unit=flops_unit, final=final, supernets_only=supernets_only,
                         final_init_channels=final_init_channels, seed=seed, work_dir=work_dir,
                         settings=settings)
        check_choice("tune_on", tune_on, TUNE_ON)
        ks = list(precision_ks) if isinstance(precision_ks, (list, tuple)) else None
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ConfigError(f"precision_ks must be a non-empty list of positive integers, but got {precision_ks!r}.")
        from . import predictor as P  # torch, not torch-geometric

        self.predictor_config = P.PredictorConfig.from_dict(predictor)
        self.training_config = P.RankTrainConfig.from_dict(training)
        self.stages = stages
        self.picks = picks
        self.pick_every = pick_every
        self.tune_on = tune_on
        self.precision_ks = sorted(set(ks))
        self.predictor_device = str(predictor_device)
        if predictor_threads is not None and (isinstance(predictor_threads, bool)
                                              or not isinstance(predictor_threads, int) or predictor_threads < 1):
            raise ConfigError(f"predictor_threads must be a positive integer or null, but got {predictor_threads!r}.")
        self.predictor_threads = predictor_threads
        self._pversion = -1           # trainings done - 1 (-1: no predictor yet, 0: initial)
        self._pstage = 0              # predictor stages finished
        self._picks: list[dict[str, Any]] | None = None  # the current stage's picks (sample, predicted)
        self._stage_log: list[dict[str, Any]] = []
        self._initial_keys: list[str] | None = None  # samples of the initial training set
        self._num_scored = 0
        self._model: Any = None

    # ------------------------------------------------------------------ helpers
    def _initialize(self, model_space: Any, engine: Any) -> Any:
        model_space = super()._initialize(model_space, engine)
        # torch-geometric takes seconds to import: import it while the first trials run.
        threading.Thread(target=_prefetch_gnn, name="PredictorSearch-import", daemon=True).start()
        return model_space

    @property
    def layout(self) -> Any:
        from ..networks import layout_of

        return layout_of(self._trial_space)

    @property
    def predictor_dir(self) -> Path:
        return self.work_dir / "predictor"

    def _checkpoint(self, version: int) -> Path:
        return self.predictor_dir / f"predictor_v{version}.pt"

    def _valid_reward(self, result: Mapping[str, Any]) -> float | None:
        """The record's reward for the predictor, None when the extrapolation failed."""
        value = result.get("default") if self.mode != "multishot" else result.get(f"est_{self.family}")
        if value is None or isinstance(value, bool):
            return None
        value = float(value)
        return value if math.isfinite(value) else None

    def _training_set(self, keys: Sequence[str]) -> tuple[list[dict], list[float]]:
        by_key = {_key(r["sample"]): r for r in self._records}
        samples, rewards = [], []
        for k in keys:
            record = by_key.get(k)
            reward = self._valid_reward(record["result"]) if record is not None else None
            if reward is not None:
                samples.append(record["sample"])
                rewards.append(reward)
        return samples, rewards

    def _labels(self) -> tuple[str, ...]:
        return self.layout.labels()

    def _to_array(self, sample: Mapping[str, Any]) -> np.ndarray:
        from nni_robust.spaces.ops import PRIMITIVES

        return np.array([PRIMITIVES.index(sample[label]) for label in self._labels()], dtype=np.int64)

    def _to_sample(self, arr: np.ndarray) -> dict[str, str]:
        from nni_robust.spaces.ops import PRIMITIVES

        return {label: PRIMITIVES[int(v)] for label, v in zip(self._labels(), arr)}

    def _scores(self, arrays: np.ndarray) -> np.ndarray:
        import torch

        from . import predictor as P

        ops = torch.from_numpy(np.ascontiguousarray(arrays)).view(arrays.shape[0], -1, P.NUM_EDGES)
        return P.predict(self._model, ops)

    # ------------------------------------------------------------------ predictor versions
    def _train(self, version: int, keys: Sequence[str], writer: Any = None) -> float | None:
        """Train (version 0) or tune (version k) the predictor on the records ``keys``; save it."""
        from nni_robust.checkpoint import save_checkpoint

        from . import predictor as P

        samples, rewards = self._training_set(keys)
        if version == 0:
            self._model = P.build_predictor(self.layout, self.predictor_config,
                                            seed=_derived_seed(self.seed, "init", 0),
                                            device=self._device())
        epochs = self.training_config.epochs if version == 0 else self.training_config.tune_epochs
        offset = self.training_config.epochs + (version - 1) * self.training_config.tune_epochs if version else 0

        def on_epoch_end(epoch: int, loss: float) -> None:
            if writer is not None:
                writer.add_scalar("predictor/train_loss", loss, offset + epoch)

        if len(samples) < 2:
            logger.warning("Predictor v%d: only %d topologies with a finite reward; not trained.", version,
                           len(samples))
            history: list[float] = []
        else:
            history = P.train_predictor(self._model, P.encode_archs(samples, self.layout), rewards, epochs=epochs,
                                        config=self.training_config,
                                        seed=_derived_seed(self.seed, "train", version),
                                        on_epoch_end=on_epoch_end)
        save_checkpoint(self._checkpoint(version), model=self._model.state_dict(), version=version,
                        layout=self.layout.name, predictor=P.config_dict(self.predictor_config),
                        training=P.config_dict(self.training_config), num_train=len(samples),
                        history=history)
        self._pversion = version
        logger.info("Predictor v%d trained on %d topologies (%d epochs, final loss %s).", version, len(samples),
                    epochs, f"{history[-1]:.4f}" if history else "n/a")
        return history[-1] if history else None

    def _tune_keys(self, stage: int) -> list[str]:
        """Records that tune the predictor after ``stage`` (1-based)."""
        if self.tune_on == "all":
            keys = list(self._initial_keys or [])
            for entry in self._stage_log[:stage]:
                keys += [_key(p["sample"]) for p in entry["picks"]]
            return keys
        return [_key(p["sample"]) for p in self._stage_log[stage - 1]["picks"]]

    def _device(self) -> Any:
        from nni_robust.device import resolve_device

        return resolve_device(self.predictor_device)

    def _restore_predictor(self) -> None:
        """Load predictor version ``_pversion``, or rebuild it from the logged training sets."""
        from nni_robust.checkpoint import load_checkpoint

        from . import predictor as P

        path = self._checkpoint(self._pversion)
        self._model = P.build_predictor(self.layout, self.predictor_config, seed=0, device=self._device())
        try:
            state = load_checkpoint(path)
            self._model.load_state_dict(state["model"])
            logger.info("Predictor v%d loaded from %s.", self._pversion, path)
            return
        except (CheckpointError, KeyError, RuntimeError) as exc:
            logger.warning("Predictor v%d cannot be loaded (%s); rebuilding it from the logged training sets.",
                           self._pversion, exc)
        target = self._pversion
        self._train(0, self._initial_keys or [])
        for version in range(1, target + 1):
            self._train(version, self._tune_keys(version))

    # ------------------------------------------------------------------ the search stage
    def _stage_search(self) -> None:
        import torch

        from nni_robust.tb import summary_writer

        if self._pstage >= self.stages and self._picks is None:
            return
        threads = torch.get_num_threads()
        if self.predictor_threads is not None:
            torch.set_num_threads(self.predictor_threads)
        writer = summary_writer(self.work_dir / "tensorboard")
        try:
            if self._pversion < 0:
                if self._initial_keys is None:
                    self._initial_keys = [_key(r["sample"]) for r in self._records]
                if not self._training_set(self._initial_keys)[0]:
                    raise NniRobustError("No random topology was evaluated successfully; cannot train the predictor.")
                self._train(0, self._initial_keys, writer)  # Alg. 1 line 21
            elif self._model is None:
                self._restore_predictor()
            while self._pstage < self.stages:
                stage = self._pstage + 1
                if self._picks is None:
                    self._picks = self._pick(stage)  # line 23
                self._evaluate_picks()  # line 24
                self._finish_stage(stage, writer)  # line 25
        finally:
            writer.close()
            torch.set_num_threads(threads)

    def _pick(self, stage: int) -> list[dict[str, Any]]:
        """Alg. 1 line 23: N_p topologies from the inner search on predictor scores."""
        scored = [(r, self._valid_reward(r["result"])) for r in self._records]
        ranked = sorted((x for x in scored if x[1] is not None), key=lambda x: -x[1])
        initial = [self._to_array(r["sample"]) for r, _ in ranked[:self.population]]
        if not initial:
            raise NniRobustError("No evaluated topology has a finite reward; the inner search has no population.")
        exclude = {self._to_array(r["sample"]).tobytes() for r in self._records}
        rng = random.Random(_derived_seed(self.seed, "inner", stage))
        picks, scored_count = inner_search(self._scores, initial, population=self.population,
                                           tournament=self.tournament, num_picks=self.picks,
                                           pick_every=self.pick_every, exclude=exclude, rng=rng)
        self._num_scored += scored_count
        logger.info("Predictor stage %d/%d: %d topologies scored, %d picked (best predicted %.4f).", stage,
                    self.stages, scored_count, len(picks), max((s for _, s in picks), default=float("nan")))
        return [{"sample": self._to_sample(arr), "predicted": score} for arr, score in picks]

    def _evaluate_picks(self) -> None:
        """Alg. 1 line 24: multi-shot evaluation trials of the picks not evaluated yet."""
        done = {_key(r["sample"]) for r in self._records}
        samples = [p["sample"] for p in self._picks or [] if _key(p["sample"]) not in done]
        if samples:
            self._evaluate(samples)

    def _finish_stage(self, stage: int, writer: Any) -> None:
        """Quality of the untuned predictor on the picks, then Alg. 1 line 25 (tuning)."""
        from . import predictor as P

        by_key = {_key(r["sample"]): r for r in self._records}
        picks = []
        for p in self._picks or []:
            record = by_key.get(_key(p["sample"]))
            reward = self._valid_reward(record["result"]) if record is not None else None
            picks.append({"sample": p["sample"], "predicted": p["predicted"], "reward": reward})
        pairs = [(p["predicted"], p["reward"]) for p in picks if p["reward"] is not None]
        quality = P.ranking_quality([a for a, _ in pairs], [b for _, b in pairs], self.precision_ks)
        best = self.best()
        entry = {"stage": stage, "predictor_version": self._pversion, "picks": picks, "quality": quality,
                 "stage_best_reward": max((b for _, b in pairs), default=None),
                 "best_reward": best[1] if best else None, "evaluated": len(self._records),
                 "scored": self._num_scored}
        self._stage_log.append(entry)
        entry["pooled_quality"] = self._pooled_quality()
        entry["tune_loss"] = self._train(stage, self._tune_keys(stage), writer)
        self._write_stage_scalars(entry, writer)
        self._picks = None
        self._pstage = stage
        self.write_report()
        logger.info("Predictor stage %d/%d: Kendall tau %s, Spearman %s on %d picks; best reward so far %s.",
                    stage, self.stages, _fmt(quality["kendall_tau"]), _fmt(quality["spearman"]), quality["n"],
                    _fmt(entry["best_reward"]))

    def _pooled_quality(self) -> dict[str, Any]:
        from . import predictor as P

        pairs = [(p["predicted"], p["reward"]) for e in self._stage_log for p in e["picks"]
                 if p["reward"] is not None]
        return P.ranking_quality([a for a, _ in pairs], [b for _, b in pairs], self.precision_ks)

    def _write_stage_scalars(self, entry: Mapping[str, Any], writer: Any) -> None:
        stage = entry["stage"]
        for prefix, quality in (("predictor", entry["quality"]), ("predictor_pooled", entry["pooled_quality"])):
            for name, value in quality.items():
                if name != "n" and value is not None:
                    writer.add_scalar(f"{prefix}/{name}", value, stage)
        for name in ("stage_best_reward", "best_reward", "evaluated", "scored"):
            if entry[name] is not None:
                writer.add_scalar(f"search/{name}", entry[name], stage)
        writer.flush()

    # ------------------------------------------------------------------ reports
    def quality_report(self) -> dict[str, Any]:
        """Per-stage and pooled predictor quality, with the search's counts (JSON-able)."""
        from . import predictor as P

        evaluated = len(self._records)
        num_random = len(self._initial_keys or [])
        return {
            "stages": [{k: v for k, v in e.items() if k != "picks"} for e in self._stage_log],
            "pooled": self._pooled_quality() if self._stage_log else None,
            "precision_ks": self.precision_ks,
            "evaluated": evaluated,
            "scored_by_predictor": self._num_scored,
            "evaluated_fraction": evaluated / (num_random + self._num_scored) if self._num_scored else None,
            "settings": {"stages": self.stages, "picks": self.picks, "pick_every": self.pick_every,
                         "population": self.population, "tournament": self.tournament, "tune_on": self.tune_on,
                         "predictor": P.config_dict(self.predictor_config),
                         "training": P.config_dict(self.training_config)},
        }

    def write_report(self) -> Path:
        """Write ``work_dir/predictor/quality.json`` and ``quality.md``; returns the JSON path."""
        report = self.quality_report()
        folder = self.predictor_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "quality.json"
        path.write_text(json.dumps(report, indent=2, sort_keys=True))
        ks = self.precision_ks
        head = ["stage", "n", "Kendall tau", "Spearman"] + [f"P@{k}" for k in ks] + ["best in stage", "best so far"]
        lines = ["# Predictor quality on each stage's picks (scored before tuning)", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows = [(str(e["stage"]), e["quality"], e["stage_best_reward"], e["best_reward"]) for e in report["stages"]]
        if report["pooled"] is not None:
            rows.append(("pooled", report["pooled"], None, None))
        for name, q, stage_best, best in rows:
            cells = [name, str(q["n"]), _fmt(q["kendall_tau"]), _fmt(q["spearman"])]
            cells += [_fmt(q[f"precision_at_{k}"]) for k in ks] + [_fmt(stage_best), _fmt(best)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Evaluated (multi-shot): {report['evaluated']}; scored by the predictor: "
                      f"{report['scored_by_predictor']}."]
        (folder / "quality.md").write_text("\n".join(lines) + "\n")
        return path

    def _stage_export(self) -> None:
        super()._stage_export()
        path = self.work_dir / "best_architecture.json"
        data = json.loads(path.read_text())
        report = self.quality_report()
        data["controller"] = "predictor"
        data["predictor"] = {"stages": len(self._stage_log), "pooled_quality": report["pooled"],
                             "scored_by_predictor": report["scored_by_predictor"],
                             "evaluated_fraction": report["evaluated_fraction"],
                             "report": str(self.write_report())}
        path.write_text(json.dumps(data, indent=2, sort_keys=True))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["predictor"] = {"version": self._pversion, "stage": self._pstage, "picks": self._picks,
                              "log": self._stage_log, "initial": self._initial_keys, "scored": self._num_scored}
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        saved_seed = state_dict.get("seed")  # (written by MultiShotSearch.state_dict)
        if isinstance(saved_seed, int) and not isinstance(saved_seed, bool) and saved_seed != self.seed:
            # the predictor's trainings and inner searches derive their seeds from it: a resumed search
            # (with seed: null, a drawn one) must continue with the seed it started with
            logger.info("PredictorSearch: resuming with the saved seed %d (not %d)", saved_seed, self.seed)
            self.seed = saved_seed
        p = state_dict.get("predictor") or {}
        self._pversion = int(p.get("version", -1))
        self._pstage = int(p.get("stage", 0))
        self._picks = p.get("picks")
        self._stage_log = list(p.get("log") or [])
        self._initial_keys = p.get("initial")
        self._num_scored = int(p.get("scored", 0))
        self._model = None


def _prefetch_gnn() -> None:
    try:
        from . import predictor as P

        P._define_gnn()
    except Exception:  # reported again, with its traceback, when the search stage needs it
        logger.debug("Background import of torch-geometric failed.", exc_info=True)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
