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

Other evaluators (``evaluation="task"``): the controller without supernets.
Each topology is one trial of the bridge tuner's ``default_task`` (e.g. the
shared ``tabular`` task, :mod:`nni_robust.strategies.tabular`, which answers
it from a tabular benchmark) whose ``default`` is its reward; the supernet,
family and final stages are skipped, and the predictor embeds the space's
cell DAG (``cell_graph``: ``"nb201"``, any
:class:`~.predictor.CellGraph` description, or detected from the space's
labels). Stages 2 (random), 4 (search) and 5 (export) are the algorithm above,
unchanged. The paper's experiments use the default, ``"supernets"``. A cell
graph that knows its isomorphism classes (``"nb201"``) is embedded by class
representatives (:meth:`~.predictor.CellGraph.representatives`), and a space
that small (15,625 cells) is scored whole once per inner search instead of
one child at a time (the same scores).

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
  already picked (else the best-scored such topology scored in this stage;
  else, in a space small enough to score whole, the best-scored such topology
  of the space); a child identical to a population member is not added twice
  (the step counts);
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
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from nni_robust.config import check_choice
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError

from .search import MultiShotSearch

__all__ = ["PredictorSearch", "inner_search"]

logger = logging.getLogger(__name__)

TUNE_ON = ("new", "all")
#: ``evaluation``: multi-shot (or one-shot, per ``mode``) in trained supernets, as the paper; or one trial of
#: the tuner's default task per topology (e.g. the shared ``tabular`` task).
EVALUATIONS = ("supernets", "task")
#: Spaces of at most this many topologies are scored whole once per inner search
#: (:meth:`PredictorSearch._stage_scorer`).
FULL_SCORING_LIMIT = 50_000


def _key(sample: Mapping[str, Any]) -> str:
    return json.dumps(dict(sample), sort_keys=True)


def _derived_seed(seed: int, tag: str, index: int) -> int:
    """A seed for (``tag``, ``index``) that does not depend on what ran before (exact resume)."""
    return random.Random(f"{seed}/{tag}/{index}").randrange(2 ** 31)


def inner_search(score: Callable[[np.ndarray], np.ndarray], initial: Sequence[np.ndarray], *,
                 population: int = 20, tournament: int = 5, num_picks: int = 50, pick_every: int = 50,
                 num_choices: int = 4, exclude: set[Hashable] | frozenset[Hashable] = frozenset(),
                 rng: random.Random | None = None,
                 key: Callable[[np.ndarray], Hashable] | None = None,
                 space: np.ndarray | None = None) -> tuple[list[tuple[np.ndarray, float]], int]:
    """The inner evolutionary search on predictor scores (MSRobNet Alg. 1 line 23, App. B.1).

    Tournament evolution (Real et al.) for ``num_picks x pick_every`` steps:
    ``tournament`` members drawn at random, the best-scored one mutated (one
    edge to another op, uniform), the child scored and added, the lowest-scored
    member removed. Every ``pick_every`` steps the best-scored member that is
    neither in ``exclude`` nor picked is picked (else the best such topology
    scored so far in this search). When every topology seen so far is
    excluded or picked and ``space`` is given (a small space, e.g.
    NAS-Bench-201's, whose neighbourhood of the evaluated best runs out after a
    few hundred queries: the population's children are all evaluated), the
    pick is the best-scored free topology of the whole space; without
    ``space`` (the paper's space never runs out) the pick is skipped.

    Args:
        score: scores of ``(B, L)`` int arrays of op indices (higher is better).
        initial: the starting population (op index arrays of length L); at most
            ``population`` of them are used (the first ones).
        population: population size (paper: 20).
        tournament: tournament size (paper: 5).
        num_picks: N_p, topologies to pick (paper: 50).
        pick_every: steps between picks (paper: 50, so T_pe = 2,500).
        num_choices: ops per edge.
        exclude: keys of topologies that must not be picked (evaluated): ``arr.tobytes()``, or
            ``key(arr)`` when ``key`` is given.
        rng: the random generator.
        key: what makes two topologies the same pick (default: the same op indices); e.g. an
            isomorphism class, so that no pick computes the same function as an evaluated or an
            already picked topology.
        space: every topology of the space (``(N, L)``), when it is small enough to score whole.

    Returns:
        (picks as (op array, predicted score), number of topologies scored).
    """
    if not initial:
        raise NniRobustError("inner_search needs at least one initial topology.")
    rng = rng or random.Random()
    same = key if key is not None else (lambda a: a.tobytes())
    pop_arrays = [np.asarray(a, dtype=np.int64).copy() for a in list(initial)[:population]]
    length = pop_arrays[0].shape[0]
    scores = score(np.stack(pop_arrays))
    cache: dict[bytes, float] = {}
    pop: list[tuple[bytes, np.ndarray, float]] = []
    for arr, s in zip(pop_arrays, scores):
        cache[arr.tobytes()] = float(s)
        pop.append((arr.tobytes(), arr, float(s)))
    num_scored = len(pop)
    picked: set[Hashable] = set()
    picks: list[tuple[np.ndarray, float]] = []
    members = {k for k, _, _ in pop}
    space_scores: np.ndarray | None = None  # (scored on the first pick that needs them)
    space_order = np.zeros(0, dtype=np.int64)
    for step in range(1, num_picks * pick_every + 1):
        contenders = rng.sample(range(len(pop)), min(tournament, len(pop)))
        parent = pop[max(contenders, key=lambda i: pop[i][2])][1]  # first drawn on ties
        child = parent.copy()
        pos = rng.randrange(length)
        child[pos] = rng.choice([v for v in range(num_choices) if v != parent[pos]])
        child_key = child.tobytes()
        value = cache.get(child_key)
        if value is None:
            value = float(score(child[None])[0])
            cache[child_key] = value
        num_scored += 1
        if child_key not in members:
            pop.append((child_key, child, value))
            members.add(child_key)
            worst = min(range(len(pop)), key=lambda i: pop[i][2])  # oldest on ties
            members.discard(pop.pop(worst)[0])
        if step % pick_every == 0 and len(picks) < num_picks:
            free = [m for m in pop if _free(m[0] if key is None else same(m[1]), exclude, picked)]
            if free:
                _, best_arr, best_score = max(free, key=lambda m: m[2])
            else:
                scored = ((np.frombuffer(b, dtype=np.int64), v) for b, v in cache.items())
                rest = [(a, v) for a, v in scored if _free(same(a), exclude, picked)]
                if rest:
                    best_arr, best_score = max(rest, key=lambda kv: kv[1])
                elif space is not None:  # exhausted around the population: the best free one anywhere
                    if space_scores is None:
                        space_scores = np.asarray(score(space), dtype=np.float64)
                        space_order = np.argsort(-space_scores, kind="stable")
                    best = next((i for i in space_order if _free(same(space[i]), exclude, picked)), None)
                    if best is None:
                        logger.warning("Inner search: no unevaluated topology left in the space at step %d.", step)
                        continue
                    best_arr, best_score = space[best], float(space_scores[best])
                else:
                    logger.warning("Inner search: no unevaluated topology left to pick at step %d.", step)
                    continue
            picked.add(same(best_arr))
            picks.append((best_arr.copy(), best_score))
    return picks, num_scored


def _free(key: Hashable, exclude: Any, picked: set[Hashable]) -> bool:
    return key not in exclude and key not in picked


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
        evaluation: ``"supernets"`` (the paper: supernets, multi-shot
            evaluation trials per ``mode``, family selection, final training)
            or ``"task"`` (each topology is one trial of the tuner's
            ``default_task``, whose ``default`` is the reward, e.g. the shared
            ``tabular`` task; no supernets, family or final stage, so
            ``final`` must be false; ``widths``, ``target_mflops``, ``family``,
            ``mode`` and ``supernet_dir`` are unused).
        cell_graph: the cell DAG the predictor embeds with ``evaluation="task"``:
            ``"nb201"``, a :class:`~.predictor.CellGraph` description, or None
            (detected from the space's labels: NAS-Bench-201's). With
            ``"supernets"`` it is the dense robust layout of ``settings.space``.
        dedup_isomorphic: never pick a topology isomorphic to an evaluated or
            already picked one (the cell graph must know its isomorphism
            classes, e.g. ``"nb201"``: the robustness dataset measured one
            network per class, so a pick in the class of an evaluated one
            would spend a query on a known answer). Default False: as the
            paper, only identical topologies are excluded.
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
                 evaluation: str = "supernets", cell_graph: str | Mapping[str, Any] | None = None,
                 dedup_isomorphic: bool = False, seed: int | None = None, work_dir: str | None = None,
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
        check_choice("evaluation", evaluation, EVALUATIONS)
        self.evaluation = evaluation
        if evaluation == "task":
            if final or supernets_only:
                raise ConfigError("evaluation 'task' has no supernets and no final training (the default task "
                                  "answers each topology): set final: false (and supernets_only: false).")
            if cell_graph is not None:
                P.cell_graph(cell_graph)  # checks the description now
        elif cell_graph is not None:
            raise ConfigError("cell_graph is for evaluation 'task'; with 'supernets' the predictor embeds the dense "
                              "robust layout of settings.space.")
        self.cell_graph_arg = cell_graph
        if not isinstance(dedup_isomorphic, bool):
            raise ConfigError(f"dedup_isomorphic must be true or false, but got {dedup_isomorphic!r}.")
        self.dedup_isomorphic = dedup_isomorphic
        self._graph: Any = None
        self._pversion = -1           # trainings done - 1 (-1: no predictor yet, 0: initial)
        self._pstage = 0              # predictor stages finished
        self._picks: list[dict[str, Any]] | None = None  # the current stage's picks (sample, predicted)
        self._stage_log: list[dict[str, Any]] = []
        self._initial_keys: list[str] | None = None  # samples of the initial training set
        self._num_scored = 0
        self._model: Any = None

    # ------------------------------------------------------------------ helpers
    @property
    def task_evaluation(self) -> bool:
        """Whether each topology is a trial of the tuner's default task (``evaluation="task"``)."""
        return self.evaluation == "task"

    def _initialize(self, model_space: Any, engine: Any) -> Any:
        from . import predictor as P

        if self.task_evaluation:
            from nni.mutable import Categorical

            space = model_space.simplify()
            values = {label: list(m.values) for label, m in space.items() if isinstance(m, Categorical)}
            if len(values) != len(space):
                raise ConfigError(f"PredictorSearch needs a space of nni.choice labels only, but "
                                  f"{sorted(set(space) - set(values))} are not.")
            spec = self.cell_graph_arg
            if spec is None:
                spec = next((name for name, make in P.NAMED_GRAPHS.items() if set(make().labels) == set(values)),
                            None)
                if spec is None:
                    raise ConfigError(f"No known cell graph has the space's labels {sorted(values)[:6]}...: give "
                                      f"cell_graph (one of {sorted(P.NAMED_GRAPHS)} or a CellGraph description).")
            self._graph = P.cell_graph(spec)
            self._graph.check_labels(values)
        else:
            model_space = super()._initialize(model_space, engine)
        if self.dedup_isomorphic and self.graph.canonical is None:
            raise ConfigError(f"dedup_isomorphic needs a cell graph that knows its isomorphism classes "
                              f"({sorted(P.NAMED_GRAPHS)}); {self.graph.name!r} does not.")
        # torch-geometric takes seconds to import: import it while the first trials run.
        threading.Thread(target=_prefetch_gnn, name="PredictorSearch-import", daemon=True).start()
        return model_space

    @property
    def layout(self) -> Any:
        from ..networks import layout_of

        return layout_of(self._trial_space)

    @property
    def graph(self) -> Any:
        """The :class:`~.predictor.CellGraph` the predictor embeds (the dense robust layout's cell
        with ``evaluation="supernets"``)."""
        if self._graph is None:
            from . import predictor as P

            if self.task_evaluation:
                raise NniRobustError("PredictorSearch: the cell graph is known once the strategy is initialised.")
            self._graph = P.CellGraph.from_layout(self.layout)
        return self._graph

    @property
    def predictor_dir(self) -> Path:
        return self.work_dir / "predictor"

    def _checkpoint(self, version: int) -> Path:
        return self.predictor_dir / f"predictor_v{version}.pt"

    def _valid_reward(self, result: Mapping[str, Any]) -> float | None:
        """The record's reward for the predictor, None when the extrapolation failed."""
        multishot = self.mode == "multishot" and not self.task_evaluation
        value = result.get(f"est_{self.family}") if multishot else result.get("default")
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

    def _to_array(self, sample: Mapping[str, Any]) -> np.ndarray:
        return self.graph.to_array(sample)

    def _to_sample(self, arr: np.ndarray) -> dict[str, str]:
        return self.graph.to_sample(arr)

    def _scores(self, arrays: np.ndarray) -> np.ndarray:
        import torch

        from . import predictor as P

        arrays = self.graph.representatives(arrays)  # as the predictor was trained (CellGraph.encode)
        ops = torch.from_numpy(np.ascontiguousarray(arrays)).view(arrays.shape[0], -1, self.graph.num_edges)
        return P.predict(self._model, ops)

    def _stage_scorer(self) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray | None]:
        """The inner search's scoring function for the current predictor, and every topology of
        the space when it is scored whole (else None).

        A space of at most :data:`FULL_SCORING_LIMIT` topologies (NAS-Bench-201's
        15,625) is scored once, in batches, and looked up: the scores of one
        call per child up to float rounding (the predictor does not change
        during an inner search), without thousands of one-topology calls.
        """
        num_ops, length = len(self.graph.ops), len(self.graph.labels)
        if num_ops ** length > FULL_SCORING_LIMIT:
            return self._scores, None
        place = num_ops ** np.arange(length - 1, -1, -1, dtype=np.int64)
        every = (np.arange(num_ops ** length, dtype=np.int64)[:, None] // place) % num_ops
        # the predictor sees class representatives: score each distinct one once (NAS-Bench-201: 6,466)
        unique, inverse = np.unique(self.graph.representatives(every), axis=0, return_inverse=True)
        table = self._scores(unique)[inverse.reshape(-1)]
        return (lambda arrays: table[np.asarray(arrays, dtype=np.int64) @ place]), every

    # ------------------------------------------------------------------ evaluation="task"
    def _reward(self, result: Mapping[str, Any]) -> float:
        if not self.task_evaluation:
            return super()._reward(result)
        value = self._valid_reward(result)
        return 0.0 if value is None else value

    def _eval_task(self) -> Any:
        # evaluation="task": no TrialTask, so the bridge sends its default task (e.g. 'tabular')
        return None if self.task_evaluation else super()._eval_task()

    def _stage_supernets(self) -> None:
        if not self.task_evaluation:
            super()._stage_supernets()

    def _stage_family(self) -> None:
        if not self.task_evaluation:
            super()._stage_family()

    # ------------------------------------------------------------------ predictor versions
    def _train(self, version: int, keys: Sequence[str], writer: Any = None) -> float | None:
        """Train (version 0) or tune (version k) the predictor on the records ``keys``; save it."""
        from nni_robust.checkpoint import save_checkpoint

        from . import predictor as P

        samples, rewards = self._training_set(keys)
        if version == 0:
            self._model = P.build_predictor(self.graph, self.predictor_config,
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
            history = P.train_predictor(self._model, self.graph.encode(samples), rewards, epochs=epochs,
                                        config=self.training_config,
                                        seed=_derived_seed(self.seed, "train", version),
                                        on_epoch_end=on_epoch_end)
        save_checkpoint(self._checkpoint(version), model=self._model.state_dict(), version=version,
                        layout=self.graph.name, predictor=P.config_dict(self.predictor_config),
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
        self._model = P.build_predictor(self.graph, self.predictor_config, seed=0, device=self._device())
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
        key = self.graph.isomorphism_key if self.dedup_isomorphic else None
        exclude = {(key or np.ndarray.tobytes)(self._to_array(r["sample"])) for r in self._records}
        rng = random.Random(_derived_seed(self.seed, "inner", stage))
        scorer, space = self._stage_scorer()
        picks, scored_count = inner_search(scorer, initial, population=self.population,
                                           tournament=self.tournament, num_picks=self.picks,
                                           pick_every=self.pick_every, num_choices=len(self.graph.ops),
                                           exclude=exclude, rng=rng, key=key, space=space)
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
                         "evaluation": self.evaluation, "cell_graph": self.graph.name,
                         "dedup_isomorphic": self.dedup_isomorphic,
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
        if self.task_evaluation:
            self._export_task_evaluation()
        else:
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

    def _export_task_evaluation(self) -> None:
        """Alg. 1 line 26 with ``evaluation="task"``: the best topology and its trial's result."""
        best = self.best()
        if best is None:
            raise NniRobustError("No topology was evaluated successfully; nothing to export.")
        record, reward = best
        out = {"sample": record["sample"], "estimate": reward, "result": record["result"], "evaluation": "task",
               "cell_graph": self.graph.name, "evaluated": len(self._records)}
        path = self._write_export(out)
        logger.info("Best topology (reward %.4f of %d evaluated) exported to %s", reward, len(self._records), path)

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
