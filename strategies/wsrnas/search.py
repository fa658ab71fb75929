"""Wsr-NAS's search procedure: Alg. 1 of ``wsr-nas.txt`` (Sec. "Search Procedure", Table 6).

:class:`WsrSearch` runs Alg. 1 on a DARTS-cell supernet
(:class:`nni_robust.spaces.darts.DartsSupernet`, whose forward takes the op
weights ``H``; paper: 8 ops, C = 16, 8 cells) with the estimators of
:mod:`.estimator` (AN-Estimator) and :mod:`.vle` (EWSS)::

     1  Dt, Dv = the search split of the settings (paper: halves of CIFAR-10's training set)
     2  P = {H_i = GumbelSoftmax(A, xi_i, tau) | i = 1..N}           warm-up population
   3-5  for each H_i: train the supernet's weights with H_i for 1 epoch   (unit "warmup")
     6  Mv, Ma empty
  7-17  for each H_i: adversarially train with H_i for 1 epoch;        (unit "population")
        Ma += PGD noises of H_i on B samples of Dt, train the AN-Estimator K_a passes;
        on Dv: N1 noises by PGD, N2 by the AN-Estimator, the losses of H_i on
        clean and every strength -> Mv += (H_i, L_i)
    18  train the VLE over Mv K_v epochs                               (unit "vle_warmup")
 19-25  for t = 1..T: H = GumbelSoftmax(A, xi, tau); adversarially      (unit "search")
        train with H 1 epoch; Ma, AN-Estimator and Mv as in 9-16; train
        the VLE over Mv; update A through the VLE only (eq. 10)

Every unit ends with a checkpoint (a rerun resumes after the last finished
unit and gives the same results), a row of :attr:`WsrSearch.history` and,
for the units that measure losses, an intermediate result: the measured
(and, in the search units, the VLE's estimated) loss per strength. The
architecture derived by the DARTS rule from ``softmax(A)`` is the result.

Naive search (Table 6, "Basic"; ``ewss=False`` and no estimated strengths):
every strength by PGD, and A updated by the gradient of eq. 10 through the
supernet on ``Dv`` instead of through the VLE. ``benchmarks/bench_wsrnas.py``
times one search iteration both ways (the paper: 1953 s naive vs 1251 s).
Every unit's metrics hold its phase times, Table 6's split: ``time_train_s``
(adversarial training), ``time_pgd_s`` (PGD noises on ``Dv``), ``time_ane_s``
(``Ma``'s noises and the estimator's training), ``time_ane_infer_s`` (its
noises on ``Dv``), ``time_measure_s`` (the forward passes that measure the
losses), ``time_vle_s`` (VLE training and architecture steps) and
``time_search_s`` (the naive architecture gradient).

Measurement. The losses of an architecture on ``Dv`` are measured by the
core's one-pass evaluation engine (:func:`nni_robust.robustness.evaluate_attacks`:
eval mode, one random stream per attack, mean cross-entropy per attack) with
the attacks ``clean``, PGD at each of ``pgd_eps`` (the core's
:func:`~nni_robust.robustness.pgd_at_strength`, PGD-7, step eps * 2.5 / 7) and
the AN-Estimator's noise at each of ``estimated_eps``, computed once per
batch from that batch's PGD noises.

Choices where the paper is silent (each documented where it is made; see
also :class:`.vle.WsrConfig`):

* The warm-up population are Gumbel-softmax samples of the initial logits
  (with tau = 0.1 nearly one-hot: random architectures); one "epoch" is a
  pass over ``Dt`` (``train_batches`` cuts it for budgets); the weights'
  learning rate follows one cosine schedule over all ``2 N + T`` training
  epochs (N when the estimators need no warm-up).
* Training PGD runs in train mode (as the core trainer), the measurement and
  ``Ma``'s PGD in eval mode (the BN statistics of the architecture just trained).
* One architecture step per training batch (``arch_steps``): with the
  authors' Adam lr 3e-5 a single step per iteration would move the logits by
  at most 3e-5 per iteration.
* The estimated noises are clipped to the l-inf ball of their radius
  (``project``); their targets are per-image L2 norms unless
  ``estimated_norms`` fixes them (authors: 2.3, 3.9, 5.5 on CIFAR-10).
* The default intermediate metric is the eq.-10-weighted *accuracy* of the
  measured architecture, ``alpha acc_nat + beta sum_i beta_i acc_i``.

Randomness comes from torch's global generator (architecture samples, PGD
random starts in training, memory batches), the loaders' own seeded
generators and the engine's per-attack streams (seeded per unit); all are in
the checkpoint, so a resumed search is identical on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import PGD
from nni_robust.checkpoint import (capture_rng_state, check_run_checkpoint, load_checkpoint,
                                   save_checkpoint)
from nni_robust.device import autocast_context, resolve_device
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError
from nni_robust.robustness import evaluate_attacks, pgd_at_strength
from nni_robust.training import TrainConfig, lr_at_epoch

from ..darts_search import arch_entropy, log_arch_weights, resume_or_seed
from .estimator import WAANE, ReplayMemory, build_estimator, leave_one_out, make_optimizer, pgd_noises, \
    target_strengths, train_estimator, warmup_cosine
from .vle import LossMemory, ValidationLossEstimator, WsrConfig, arch_step, gumbel_softmax, make_vle_optimizer, \
    sample_gumbel, stack_arch, train_vle

__all__ = ["WsrSearch", "loss_key", "UNIT_KINDS"]

logger = logging.getLogger(__name__)

_FORMAT = "nni_robust.WsrSearch/1"

UNIT_KINDS = ("warmup", "population", "vle_warmup", "search")
"""The kinds of checkpointed units, in the order Alg. 1 runs them."""

Reporter = Callable[[dict[str, float]], Any]


def loss_key(eps: float | None, prefix: str = "loss") -> str:
    """Metric name of a strength: ``loss_nat`` for clean inputs, ``loss@0.03`` for eps 0.03."""
    return f"{prefix}_nat" if eps is None else f"{prefix}@{eps:g}"


# --------------------------------------------------------------------------- small pieces

class _Fixed(nn.Module):
    """The supernet with fixed op weights ``H``: what training, the attacks and the measurement see."""

    def __init__(self, supernet: nn.Module, weights: Mapping[str, torch.Tensor], autocast: bool = False) -> None:
        super().__init__()
        self.supernet = supernet
        self.arch = {t: w.detach() for t, w in weights.items()}
        self.autocast = autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_context(x.device, self.autocast):
            return self.supernet(x, weights=self.arch).float()


class _Timer:
    """Wall time per phase of a unit (synchronising CUDA so the phases are attributed right)."""

    def __init__(self, device: torch.device) -> None:
        self.sync = device.type == "cuda"
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


class _BatchNoises:
    """What the attacks of one measurement pass share about the current batch.

    The engine runs the attacks of a batch in order on the same ``x``: the
    PGD attacks store their noises here, the first estimated attack turns
    them into the AN-Estimator's noises for every estimated strength, and the
    last attack of the batch calls ``on_batch`` (the naive architecture step).
    """

    def __init__(self, on_batch: Callable[[torch.Tensor, torch.Tensor, dict], None] | None = None) -> None:
        self.x: torch.Tensor | None = None
        self.pgd: dict[float, torch.Tensor] = {}
        self.adv: dict[float, torch.Tensor] = {}
        self.estimates: torch.Tensor | None = None
        self.on_batch = on_batch

    def start(self, x: torch.Tensor) -> None:
        if x is not self.x:
            self.x, self.pgd, self.adv, self.estimates = x, {}, {}, None

    def finish(self, eps: float, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, last: bool) -> None:
        self.adv[eps] = x_adv
        if last and self.on_batch is not None:
            self.on_batch(x, y, self.adv)


class _PgdNoise:
    """A measurement attack: PGD at one of ``pgd_eps``, its noise kept for the AN-Estimator."""

    def __init__(self, eps: float, attack: PGD, store: _BatchNoises, timer: _Timer, last: bool) -> None:
        self.eps, self.attack, self.store, self.timer, self.last = eps, attack, store, timer, last

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.store.start(x)
        with self.timer("pgd"):
            x_adv = self.attack(model, x, y)
        self.store.pgd[self.eps] = x_adv - x
        self.store.finish(self.eps, x, y, x_adv, self.last)
        return x_adv


class _EstimatedNoise:
    """A measurement attack: the AN-Estimator's noise at one of ``estimated_eps`` (eq. 3)."""

    def __init__(self, eps: float, index: int, estimate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 pgd_eps: Sequence[float], store: _BatchNoises, timer: _Timer, last: bool) -> None:
        self.eps, self.index, self.estimate, self.pgd_eps = eps, index, estimate, tuple(pgd_eps)
        self.store, self.timer, self.last = store, timer, last

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.store.start(x)
        if self.store.estimates is None:
            missing = [e for e in self.pgd_eps if e not in self.store.pgd]
            if missing:
                raise NniRobustError(f"estimated noise at {self.eps} needs the PGD noises at {missing} of this batch "
                                     "first (the measurement attacks are out of order).")
            sources = torch.stack([self.store.pgd[e] for e in self.pgd_eps], dim=1)
            with self.timer("ane_infer"):
                self.store.estimates = self.estimate(x, sources)
        x_adv = (x + self.store.estimates[:, self.index]).clamp(0.0, 1.0)
        self.store.finish(self.eps, x, y, x_adv, self.last)
        return x_adv


def _lr_schedule(config: WsrConfig, epochs: int) -> TrainConfig:
    """The weights' cosine schedule (core :func:`~nni_robust.training.lr_at_epoch`) over ``epochs`` epochs."""
    return TrainConfig(epochs=max(epochs, 1), batch_size=config.batch_size, lr=config.lr, min_lr=config.lr_min,
                       schedule="cosine", attack="none")


# --------------------------------------------------------------------------- the search

class WsrSearch:
    """Alg. 1 of Wsr-NAS on a DARTS-cell supernet; resumable unit by unit.

    Args:
        model: A :class:`~nni_robust.spaces.darts.DartsSupernet` (its forward
            takes ``weights``; ``alphas`` are the logits ``A``).
        config: The :class:`.vle.WsrConfig` (or its dict).
        device: Where to search.
        checkpoint_path: Checkpoint written after every unit; when it
            exists, the search resumes from it (its settings must match).
        writer: TensorBoard ``SummaryWriter`` (scalars per unit, the op
            weights of each cell type as images).
        reporter: ``reporter(metrics)`` after every population and search
            unit (NNI's ``report_intermediate_result``); floats with ``default``.

    Attributes:
        step: Finished units (see :attr:`plan`).
        history: One metrics dict per finished unit (``kind``, ``index``, ...).
        architectures: The architecture derived after each search iteration (JSON).
    """

    def __init__(self, model: nn.Module, config: WsrConfig | Mapping[str, Any], *,
                 device: str | torch.device = "auto", checkpoint_path: str | Path | None = None,
                 writer: Any = None, reporter: Reporter | None = None) -> None:
        if isinstance(config, Mapping):
            config = WsrConfig.from_dict(config)
        if not isinstance(config, WsrConfig):
            raise ConfigError(f"config must be a WsrConfig or a dict, but got {type(config).__name__}.")
        missing = [n for n in ("arch_parameters", "weight_parameters", "arch_weights", "derive", "cell_types",
                               "primitives", "alphas") if not hasattr(model, n)]
        if missing:
            raise ConfigError(f"{type(model).__name__} is not a DARTS-cell supernet: it lacks {missing} "
                              "(see nni_robust.spaces.darts.DartsSupernet).")
        if reporter is not None and not callable(reporter):
            raise ConfigError(f"reporter must be callable or None, but got {reporter!r}.")
        if config.ewss is False and config.n2 > 0:
            logger.info("WsrSearch: ewss=False with %d estimated strengths: the AN-Estimator still makes them; "
                        "only the architecture update is the naive one.", config.n2)
        self._seed_drawn = config.seed is None
        if config.seed is None:
            config = WsrConfig.from_dict({**config.to_dict(), "seed": random.SystemRandom().randrange(2 ** 31)})
            logger.info("WsrSearch: drew seed %d", config.seed)
        self.config = config
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.cell_types = tuple(model.cell_types)
        self.alphas = {t: model.alphas[t] for t in self.cell_types}
        self.weights = [p for p in model.weight_parameters() if p.requires_grad]
        self.w_optimizer = torch.optim.SGD(self.weights, lr=config.lr, momentum=config.momentum,
                                           weight_decay=config.weight_decay)
        self.a_optimizer = torch.optim.Adam(list(self.alphas.values()), lr=config.arch_lr, betas=config.arch_betas,
                                            weight_decay=config.arch_weight_decay)
        self.objective = config.objective()
        # AN-Estimator (only when some strengths are estimated)
        in_channels = int(model.input_shape[0]) if hasattr(model, "input_shape") else 3
        self.estimator = None
        self.ane_optimizer = self.ane_scheduler = None
        self.ane_memory: ReplayMemory | None = None
        if config.n2 > 0:
            self.estimator = build_estimator(config.estimator, in_channels=in_channels, norm=config.norm,
                                             weighting=config.weighting).to(self.device)
            if any(p.requires_grad for p in self.estimator.parameters()):
                self.ane_optimizer = make_optimizer(self.estimator, lr=config.ane_lr,
                                                    weight_decay=config.ane_weight_decay)
                self.ane_scheduler = warmup_cosine(self.ane_optimizer, warmup_steps=config.ane_warmup_steps,
                                                   total_steps=config.ane_total_steps)
            self.ane_memory = ReplayMemory(config.ane_memory, device=self.device)
            self._wa = WAANE(norm=config.norm, weighting=config.weighting)
        # EWSS
        self.vle = self.vle_optimizer = None
        self.vle_memory: LossMemory | None = None
        if config.ewss:
            self.vle = ValidationLossEstimator(len(model.primitives), config.num_losses,
                                               hidden=config.vle_hidden).to(self.device)
            self.vle_optimizer = make_vle_optimizer(self.vle, lr=config.vle_lr, weight_decay=config.vle_weight_decay)
            self.vle_memory = LossMemory(config.vle_memory, device=self.device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.writer = writer
        self.reporter = reporter
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.architectures: list[str] = []
        self.population: dict[str, torch.Tensor] | None = None
        self._resume: dict[str, Any] | None = None
        self._started = False
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._load(self.checkpoint_path)

    # ------------------------------------------------------------------ plan
    @property
    def plan(self) -> list[tuple[str, int]]:
        """The units of Alg. 1 in order: ``(kind, index)``; see :data:`UNIT_KINDS`."""
        cfg = self.config
        n = cfg.warmup_population
        units = [("warmup", i) for i in range(n)]
        if self.estimator is not None or self.vle is not None:  # lines 7-17 warm up the estimators
            units += [("population", i) for i in range(n)]
        if self.vle is not None:
            units.append(("vle_warmup", 0))
        units += [("search", t) for t in range(cfg.epochs)]
        return units

    @property
    def training_epochs(self) -> int:
        """Epochs of weight training in the whole search (the length of the cosine schedule)."""
        return sum(1 for kind, _ in self.plan if kind != "vle_warmup")

    @property
    def finished(self) -> bool:
        return self.step >= len(self.plan)

    # ------------------------------------------------------------------ checkpoints
    def _state(self, loaders: Mapping[str, Any]) -> dict[str, Any]:
        return dict(
            format=_FORMAT, config=self.config.to_dict(), model=self.model.state_dict(),
            w_optimizer=self.w_optimizer.state_dict(), a_optimizer=self.a_optimizer.state_dict(),
            estimator=self.estimator.state_dict() if self.estimator is not None else None,
            ane_optimizer=self.ane_optimizer.state_dict() if self.ane_optimizer is not None else None,
            ane_scheduler=self.ane_scheduler.state_dict() if self.ane_scheduler is not None else None,
            ane_memory=self.ane_memory.state_dict() if self.ane_memory is not None else None,
            vle=self.vle.state_dict() if self.vle is not None else None,
            vle_optimizer=self.vle_optimizer.state_dict() if self.vle_optimizer is not None else None,
            vle_memory=self.vle_memory.state_dict() if self.vle_memory is not None else None,
            population=self.population, step=self.step, history=self.history, architectures=self.architectures,
            rng=capture_rng_state(),
            loaders={k: v.state_dict() for k, v in loaders.items() if hasattr(v, "state_dict")})

    def _save(self, loaders: Mapping[str, Any]) -> None:
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, **self._state(loaders))

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        saved = dict(ckpt.get("config") or {})
        if self._seed_drawn and isinstance(saved.get("seed"), int):
            self.config = WsrConfig.from_dict({**self.config.to_dict(), "seed": saved["seed"]})
        check_run_checkpoint(path, ckpt, fmt=_FORMAT, writer="WsrSearch", current=self.config.to_dict(),
                             what="search")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.w_optimizer.load_state_dict(ckpt["w_optimizer"])
            self.a_optimizer.load_state_dict(ckpt["a_optimizer"])
            for name in ("estimator", "ane_optimizer", "ane_scheduler", "ane_memory", "vle", "vle_optimizer",
                         "vle_memory"):
                obj = getattr(self, name)
                if obj is not None:
                    obj.load_state_dict(ckpt[name])
        except (RuntimeError, KeyError, ValueError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"Checkpoint {path.resolve()} does not fit this search: {exc}") from exc
        if self.ane_memory is not None:
            self.ane_memory.device = self.device
        self.population = ckpt["population"]
        self.step = int(ckpt["step"])
        self.history = list(ckpt["history"])
        self.architectures = list(ckpt["architectures"])
        self._resume = {"rng": ckpt["rng"], "loaders": ckpt.get("loaders") or {}}
        logger.info("Resuming the Wsr-NAS search from %s after unit %d/%d", path, self.step, len(self.plan))

    # ------------------------------------------------------------------ running
    def fit(self, train_loader: Iterable, ane_loader: Iterable, val_loader: Iterable,
            max_units: int | None = None) -> list[dict[str, float]]:
        """Run Alg. 1 until every unit is done (or ``max_units`` more have run; resumable).

        Args:
            train_loader: Batches of ``Dt`` (weights); one (possibly cut, see
                ``train_batches``) pass per training epoch.
            ane_loader: Batches of ``B = ane_samples`` images of ``Dt``; the
                first batch of a new pass refreshes ``Ma`` (line 9).
            val_loader: Batches of ``Dv`` (the measurement; same images every time).
            max_units: Stop after this many units of this call.

        Returns:
            :attr:`history`.

        Raises:
            NniRobustError: a loss became non-finite (the last checkpoint is kept).
        """
        cfg = self.config
        loaders = {"train": train_loader, "ane": ane_loader}
        resume_or_seed(self._resume, loaders, cfg.seed, fresh=not self._started and self.step == 0)
        self._resume = None
        self._started = True
        if self.population is None:  # line 2
            with torch.no_grad():
                logits = {t: a.detach().unsqueeze(0).expand(cfg.warmup_population, -1, -1)
                          for t, a in self.alphas.items()}
                self.population = {t: gumbel_softmax(a, cfg.tau, gumbel=sample_gumbel(a)).cpu()
                                   for t, a in logits.items()}
        plan = self.plan
        done = 0
        while self.step < len(plan) and (max_units is None or done < max_units):
            kind, index = plan[self.step]
            timer = _Timer(self.device)
            start = time.perf_counter()
            metrics = getattr(self, f"_unit_{kind}")(index, train_loader, ane_loader, val_loader, timer)
            self._sync()
            metrics.update({f"time_{k}_s": v for k, v in timer.seconds.items()})
            metrics["time_s"] = time.perf_counter() - start
            self.step += 1
            done += 1
            metrics = {"unit": float(self.step), "phase": float(UNIT_KINDS.index(kind)), "index": float(index + 1),
                       **metrics}
            bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
            if bad:
                raise NniRobustError(f"The Wsr-NAS search diverged in unit {self.step} ({kind} {index + 1}): "
                                     f"{bad}; the last checkpoint (unit {self.step - 1}) is kept.")
            if kind == "search":
                self.architectures.append(self.derive().to_json())
            self.history.append(metrics)
            self._save(loaders)
            self._log(kind, metrics)
            if self.reporter is not None and kind in ("population", "search"):
                self.reporter(dict(metrics))
        if self.writer is not None:
            self.writer.flush()
        return list(self.history)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ units
    def _member(self, index: int) -> dict[str, torch.Tensor]:
        return {t: self.population[t][index].to(self.device) for t in self.cell_types}

    def _unit_warmup(self, index, train_loader, ane_loader, val_loader, timer) -> dict[str, float]:
        """Alg. 1 lines 3-5: train the weights with ``H_i`` for one epoch (attack: ``warmup_attack``)."""
        return self._train(self._member(index), train_loader, timer, adversarial=self.config.warmup_attack == "pgd")[0]

    def _unit_population(self, index, train_loader, ane_loader, val_loader, timer) -> dict[str, float]:
        """Alg. 1 lines 7-16 for ``H_i``."""
        arch = self._member(index)
        metrics, _ = self._train(arch, train_loader, timer, adversarial=True)
        metrics.update(self._update_ane(arch, ane_loader, timer))
        metrics.update(self._measure(arch, val_loader, timer, seed_offset=self.step))
        if self.vle_memory is not None:
            self.vle_memory.add_arch(arch, self._loss_vector(metrics))
        return metrics

    def _unit_vle_warmup(self, index, train_loader, ane_loader, val_loader, timer) -> dict[str, float]:
        """Alg. 1 line 18: train the VLE over ``Mv`` for ``K_v`` epochs."""
        with timer("vle"):
            losses = train_vle(self.vle, self.vle_memory, self.vle_optimizer, epochs=self.config.vle_warmup_epochs,
                               batch_size=self.config.vle_batch_size, input_noise=self.config.vle_input_noise)
        return {"vle_loss": losses[-1], "vle_steps": float(len(losses))}

    def _unit_search(self, index, train_loader, ane_loader, val_loader, timer) -> dict[str, float]:
        """Alg. 1 lines 20-24."""
        cfg = self.config
        with torch.no_grad():  # line 20
            arch = {t: gumbel_softmax(a.detach(), cfg.tau, gumbel=sample_gumbel(a)) for t, a in self.alphas.items()}
        metrics: dict[str, float] = {}
        if self.vle is not None:  # the VLE's estimate of this architecture, before it has seen it
            with torch.no_grad():
                est = self.vle(stack_arch(arch)).float().cpu()
            metrics.update(self._named_losses(est, "est_loss"))
            metrics["est_objective"] = float(self.objective(est))
        trained, batches = self._train(arch, train_loader, timer, adversarial=True)  # line 21
        metrics.update(trained)
        metrics.update(self._update_ane(arch, ane_loader, timer))  # line 22 (9-10)
        metrics.update(self._measure(arch, val_loader, timer, seed_offset=self.step,
                                     naive=self.vle is None))  # line 22 (11-15)
        metrics["objective"] = float(self.objective(torch.tensor(self._loss_vector(metrics))))
        if self.vle is not None:
            self.vle_memory.add_arch(arch, self._loss_vector(metrics))  # line 22 (16)
            with timer("vle"):
                losses = train_vle(self.vle, self.vle_memory, self.vle_optimizer, epochs=cfg.vle_epochs,
                                   batch_size=cfg.vle_batch_size, input_noise=cfg.vle_input_noise)  # line 23
                steps = cfg.arch_steps or batches
                objective = []
                for _ in range(steps):  # line 24
                    res = arch_step(self.vle, self.alphas, self.objective, self.a_optimizer, tau=cfg.tau)
                    objective.append(res.objective)
            metrics["vle_loss"] = losses[-1]
            metrics["arch_steps"] = float(steps)
            metrics["arch_objective"] = float(torch.stack(objective).mean())
        weights = self.model.arch_weights()
        metrics["arch_entropy"] = float(arch_entropy(weights))
        metrics["alpha_max_abs"] = float(max(a.detach().abs().max() for a in self.alphas.values()))
        return metrics

    # ------------------------------------------------------------------ pieces
    def _train(self, arch: Mapping[str, torch.Tensor], loader: Iterable, timer: _Timer, *,
               adversarial: bool) -> tuple[dict[str, float], int]:
        """One (possibly cut) epoch of the weights with op weights ``arch``; PGD-7 at ``train_eps`` if adversarial.

        Returns:
            The epoch's metrics and its number of batches.
        """
        cfg = self.config
        epoch = sum(1 for kind, _ in self.plan[:self.step] if kind != "vle_warmup")
        lr = lr_at_epoch(_lr_schedule(cfg, self.training_epochs), epoch)
        for group in self.w_optimizer.param_groups:
            group["lr"] = lr
        fixed = _Fixed(self.model, arch, cfg.autocast)
        attack = pgd_at_strength(cfg.train_eps, steps=cfg.pgd_steps, step_factor=cfg.pgd_step_factor,
                                 autocast=cfg.autocast) if adversarial else None
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = batches = 0
        self.model.train()
        with timer("train"):
            for i, (x, y) in enumerate(loader):
                if cfg.train_batches is not None and i >= cfg.train_batches:
                    break
                x, y = self._prepare(x, y)
                if attack is not None:
                    x = attack(fixed, x, y)
                logits = fixed(x)
                loss = F.cross_entropy(logits, y)
                self.w_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(self.weights, cfg.grad_clip)
                self.w_optimizer.step()
                for a in self.alphas.values():  # the architecture is not trained here
                    a.grad = None
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                batches += 1
        if seen == 0:
            raise ConfigError("the training loader (Dt) yielded no batches.")
        loss, acc = (torch.stack([loss_sum, correct]) / seen).tolist()
        return {"train_loss": loss, "train_acc": acc, "w_lr": float(lr)}, batches

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if not x.is_floating_point():
            x = x.float().div_(255.0)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _update_ane(self, arch: Mapping[str, torch.Tensor], loader: Iterable, timer: _Timer) -> dict[str, float]:
        """Alg. 1 lines 9-10: ``Ma`` += PGD noises of ``arch`` on ``B`` samples of ``Dt``; train ``K_a`` passes.

        Noises at ``pgd_eps`` and at one radius drawn from U(0, ``ane_random_eps_max``)
        (authors' ``form_data``), each in turn the label (:func:`.estimator.leave_one_out`).
        Before they are added, the estimator's MSE on the entries whose label is
        the random radius (sources: the N1 search strengths, the search-time
        situation) is measured against WA-ANE's: a held-out check of the estimator.
        """
        if self.estimator is None:
            return {}
        cfg = self.config
        fixed = _Fixed(self.model, arch, cfg.autocast)
        x, y = self._prepare(*next(iter(loader)))
        eps_r = max(float(torch.rand(())) * cfg.ane_random_eps_max, 1e-3)
        with timer("ane"):
            mode = self.model.training
            try:
                self.model.eval()
                noises = pgd_noises(fixed, x, y, (*cfg.pgd_eps, eps_r), steps=cfg.pgd_steps,
                                    step_factor=cfg.pgd_step_factor)
            finally:
                self.model.train(mode)
            batch = leave_one_out(x, noises, norm=cfg.norm)
            held = slice(cfg.n1 * x.shape[0], (cfg.n1 + 1) * x.shape[0])  # label: the random radius
            with torch.no_grad():
                mse = {}
                for name, est in (("ane_mse", self.estimator), ("ane_mse_wa", self._wa)):
                    mode = est.training
                    est.eval()
                    pred = est(batch.x[held], batch.sources[held], batch.target[held].unsqueeze(1),
                               batch.source_strengths[held])[:, 0]
                    est.train(mode)
                    mse[name] = (pred - batch.target_noise[held]).pow(2).flatten(1).sum(1).mean()
            self.ane_memory.add(**batch.as_dict())
            losses = train_estimator(self.estimator, self.ane_memory, self.ane_optimizer, passes=cfg.ane_passes,
                                     batch_size=cfg.ane_batch_size, scheduler=self.ane_scheduler)
        out = {k: float(v) for k, v in mse.items()}
        out["ane_random_eps"] = eps_r
        if losses:
            out["ane_train_loss"] = float(sum(losses) / len(losses))
            out["ane_lr"] = float(self.ane_optimizer.param_groups[0]["lr"])
        return out

    def _estimate(self, x: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """The AN-Estimator's noises ``(B, N2, C, H, W)`` at ``estimated_eps`` from the PGD ``sources``."""
        cfg = self.config
        if cfg.estimated_norms is not None:
            target = torch.tensor(cfg.estimated_norms, dtype=x.dtype, device=x.device)
        else:
            target = target_strengths(cfg.estimated_eps, sources, cfg.pgd_eps, norm=cfg.norm)
        mode = self.estimator.training
        try:
            self.estimator.eval()
            with torch.no_grad():
                delta = self.estimator(x, sources, target)
        finally:
            self.estimator.train(mode)
        if cfg.project:
            radius = torch.tensor(cfg.estimated_eps, dtype=delta.dtype, device=delta.device).view(1, -1, 1, 1, 1)
            delta = torch.maximum(torch.minimum(delta, radius), -radius)
        return delta

    def _measure(self, arch: Mapping[str, torch.Tensor], loader: Iterable, timer: _Timer, *, seed_offset: int,
                 naive: bool = False) -> dict[str, float]:
        """Alg. 1 lines 11-15: losses and accuracies of ``arch`` on ``Dv``, clean and at every search strength.

        With ``naive``, also the naive architecture update: per batch, one
        Adam step on the gradient of eq. 10 through the supernet (Table 6 "Search").
        """
        cfg = self.config
        store = _BatchNoises(self._naive_step(timer) if naive else None)
        order = [*cfg.pgd_eps, *cfg.estimated_eps]  # PGD first: the estimates need this batch's PGD noises
        attacks: dict[str, Any] = {"clean": None}
        for i, e in enumerate(order):
            last = i == len(order) - 1
            if e in cfg.pgd_eps:
                attacks[loss_key(e, "adv")] = _PgdNoise(
                    e, pgd_at_strength(e, steps=cfg.pgd_steps, step_factor=cfg.pgd_step_factor,
                                       autocast=cfg.autocast), store, timer, last)
            else:
                attacks[loss_key(e, "adv")] = _EstimatedNoise(e, cfg.estimated_eps.index(e), self._estimate,
                                                               cfg.pgd_eps, store, timer, last)
        fixed = _Fixed(self.model, arch, cfg.autocast)
        nested = ("pgd", "ane_infer", "search")  # timed inside the pass: "measure" keeps the rest (the forward passes)
        before = sum(timer.seconds.get(k, 0.0) for k in nested)
        with timer("measure"):
            ev = evaluate_attacks(fixed, loader, attacks, seed=(cfg.seed + 7919 * seed_offset) % 2 ** 31,
                                  num_images=cfg.val_images, device=self.device, desc="Wsr-NAS measurement")
        timer.seconds["measure"] -= sum(timer.seconds.get(k, 0.0) for k in nested) - before
        out = {loss_key(None): ev.loss["clean"], loss_key(None, "acc"): ev.accuracy["clean"]}
        for e in cfg.search_eps:
            out[loss_key(e)] = ev.loss[loss_key(e, "adv")]
            out[loss_key(e, "acc")] = ev.accuracy[loss_key(e, "adv")]
        accs = torch.tensor([out[loss_key(None, "acc")], *(out[loss_key(e, "acc")] for e in cfg.search_eps)])
        out["default"] = float(self.objective(accs))
        out["acc_adv_mean"] = float(accs[1:].mean())
        out["val_images"] = float(ev.num_images)
        return out

    def _naive_step(self, timer: _Timer) -> Callable[[torch.Tensor, torch.Tensor, dict], None]:
        cfg = self.config
        weights = self.objective.weights.tolist()  # alpha, beta * beta_i in search_eps order

        def step(x: torch.Tensor, y: torch.Tensor, adv: Mapping[float, torch.Tensor]) -> None:
            with timer("search"):
                alphas = list(self.alphas.values())
                noise = {t: sample_gumbel(a) for t, a in self.alphas.items()}
                inputs = [x, *(adv[e] for e in cfg.search_eps)]
                grads = [torch.zeros_like(a) for a in alphas]
                for w, inp in zip(weights, inputs):  # one backward per input: memory as one batch
                    h = {t: gumbel_softmax(a, cfg.tau, gumbel=noise[t]) for t, a in self.alphas.items()}
                    with autocast_context(inp.device, cfg.autocast):
                        logits = self.model(inp, weights=h).float()
                    g = torch.autograd.grad(w * F.cross_entropy(logits, y), alphas)
                    grads = [acc + gi for acc, gi in zip(grads, g)]
                for a, g in zip(alphas, grads):
                    a.grad = g
                self.a_optimizer.step()
                self.a_optimizer.zero_grad(set_to_none=True)

        return step

    def _loss_vector(self, metrics: Mapping[str, float]) -> list[float]:
        """``[L_nat, L_eps_1, ..., L_eps_n]`` (search strengths increasing): the VLE's heads' order."""
        return [metrics[loss_key(None)], *(metrics[loss_key(e)] for e in self.config.search_eps)]

    def _named_losses(self, values: torch.Tensor, prefix: str) -> dict[str, float]:
        vals = values.tolist()
        return {loss_key(None, prefix): vals[0],
                **{loss_key(e, prefix): v for e, v in zip(self.config.search_eps, vals[1:])}}

    # ------------------------------------------------------------------ logging and result
    def _log(self, kind: str, metrics: Mapping[str, float]) -> None:
        step = self.step
        logger.info("Wsr-NAS %s %d (unit %d/%d): %s", kind, int(metrics["index"]), step, len(self.plan),
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in ("unit", "phase", "index")))
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key not in ("unit", "index"):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "search":
            log_arch_weights(self.writer, self.model, step)  # labelled operation x edge heatmaps

    def derive(self) -> Any:
        """The discrete architecture by the DARTS rule from ``softmax(A)`` (argmax op, strongest inputs per node)."""
        return self.model.derive(exclude=("none",), inputs_per_node=self.config.derive_inputs_per_node)
