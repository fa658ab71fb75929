"""The alternating bilevel loop shared by the differentiable robust searches (DSARA, RNAS).

Both methods relax a cell-based space continuously (DARTS, Liu et al. 2019):
every edge of a cell mixes its candidate operations with the softmax of its
architecture parameters alpha, and the search alternates an update of the
network weights w on a batch of the *training* split with an update of alpha
on a batch of the *validation* split (DSARA Sec. 3 eq. 3, RNAS Sec. 3.1
eq. 3). The supernet is the space's (``nni_robust.spaces.darts``); this module
only holds what the two papers add and the loop that alternates the updates.

First order. Both papers update alpha with the gradient at the current
weights, not through an unrolled step of w: DSARA Alg. 2 line 4 writes
``grad_alpha L_adv_val(w_i, alpha_{i-1})`` with the freshly updated ``w_i``,
and RNAS reports a search cost (RNAS-uniform 0.5 GPU-days) "less than DARTS
(2nd order), a little more than DARTS (1st order)" (Sec. 4.1), i.e. the
first-order approximation. So this engine is first order.

Methods (``dsara.txt``, ``rnas.txt``):

* :class:`.dsara.DsaraMethod` (:mod:`.dsara`) -- DSARA Alg. 1-3 (Sec. 4.3-4.4, 5.3). Weights always
  minimise the adversarial training loss (PGD-7, eps 2/255, step 1/510).
  Stage 1 (the first ``stage1_epochs`` = 20 epochs) updates alpha on the
  adversarial validation loss (eq. 5); stage 2 (the next ``stage2_epochs`` =
  10) on natural and adversarial validation losses at once (eq. 6) by MGDA:
  gamma* of eq. 8 (:func:`gamma_star`) weights the two alpha gradients
  (eq. 9-10). ``combine="sum"`` replaces MGDA by the sum of the two losses
  (the ablation of Table 5, row 6). Alpha: Adam lr 3e-4 in stage 1, 5e-5 in
  stage 2, betas (0.5, 0.999), weight decay 1e-3; weights: SGD 0.025 cosine
  to 0, momentum 0.9, weight decay 3e-4 (Sec. 5.3).
* :class:`.rnas.RnasMethod` (:mod:`.rnas`) -- RNAS Alg. 1 (``variant="max"``) and Alg. 2
  (``"uniform"``), eq. 4-5: both levels minimise
  ``CE(m(x), y) + lambda * f(m(x'), m(x))``; RNAS-max finds x' by PGD
  maximising f inside the eps-ball (:func:`maximize_divergence`),
  RNAS-uniform samples x' uniformly from the ball
  (:func:`uniform_perturbation`). Paper settings (Sec. 4.1): 50 epochs of
  which 15 warm up the weights, batch 64, lambda 1, PGD-10 step 0.003 eps
  0.031, SGD 0.025 (momentum 0.9, wd 3e-4), Adam 3e-4 betas (0.5, 0.999)
  wd 1e-3. f defaults to the KL divergence of the softmax outputs (as
  TRADES; ``methods.md``: the paper does not name f).

Choices where the papers are silent (each is a setting):

* Order inside an iteration: DSARA Alg. 2 updates w, then alpha
  (``arch_first=False``); RNAS Alg. 1-2 update alpha, then w
  (``arch_first=True``).
* The validation loader restarts at every search epoch and is cycled when it
  is shorter than the training loader (DARTS pairs one validation batch with
  each training batch); both loaders augment as DARTS does.
* DSARA keeps one Adam optimizer for alpha across the stage switch (its
  moments carry over; only the learning rate changes). Gradient clipping 5 on
  the weights (DARTS's value; DSARA: "our settings are the same as DARTS").
* RNAS: the weight-only warm-up epochs train w on the full regularised
  objective; the cosine schedule ends at DARTS's 0.001. RNAS-max returns, per
  image, the iterate of largest f (so the regularizer never decreases over
  the PGD steps; ``keep_best``), RNAS-uniform draws one x' per image and step
  (a one-sample estimate of the integral of eq. 5).
* Per-epoch validation accuracies (clean and PGD with the method's eps) on
  the first ``eval_images`` validation images, in eval mode; the intermediate
  result ``default`` is the robust reward ``0.5 * clean + 0.5 * adv``.
  Neither paper reports a per-epoch metric.

Exact resume: the checkpoint written after every epoch holds the supernet
(weights and alpha), both optimizers, the epoch, the history, every global RNG
state (:mod:`nni_robust.checkpoint`) and the loaders' states. Randomness (the
attacks' random starts, the uniform perturbations) is drawn from torch's
global generator, so a resumed search is bit-identical on the CPU.
"""


from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nni_robust.attacks import Attack
from nni_robust.checkpoint import (capture_rng_state, check_run_checkpoint, load_checkpoint,
                                   save_checkpoint)
from nni_robust.config import check_range
from nni_robust.device import autocast_context, resolve_device
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError
from nni_robust.reward import robust_reward
from nni_robust.training import TrainConfig, lr_at_epoch

from ..darts_search import arch_entropy, log_arch_weights, resume_or_seed

__all__ = ["arch_entropy", "SearchConfig", "SearchMethod", "DifferentiableSearch"]

logger = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "nni_robust.DifferentiableSearch/1"


# --------------------------------------------------------------------------- configs

def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Settings shared by the differentiable searches (DARTS's where the papers defer to it).

    Attributes:
        init_channels: C of the search supernet (DARTS: 16; DSARA: 24).
        batch_size: Images per weight step and per architecture step (64).
        w_lr: Initial SGD learning rate of the weights (0.025), cosine-annealed
            over all epochs to ``w_min_lr``.
        w_min_lr: Final weight learning rate.
        w_momentum: SGD momentum (0.9). w_weight_decay: SGD weight decay (3e-4).
        grad_clip: Max norm of the weight gradient (DARTS: 5); None disables.
        alpha_lr: Adam learning rate of the architecture parameters (3e-4).
        alpha_betas: Adam betas ((0.5, 0.999)).
        alpha_weight_decay: Adam weight decay of alpha (1e-3).
        arch_first: Update alpha before w in each iteration.
        augment: Random crop (+ flip where the dataset allows) on the search
            batches of both splits (DARTS).
        eval_images: Validation images for the per-epoch clean/adversarial
            accuracy (``None``: all; 0: no per-epoch evaluation).
        eval_batch_size: Batch size of that evaluation.
        max_train, max_val: Use only the first images of each split (budget
            knob for quick runs; ``None``: all).
        derive_exclude: Operations never chosen when deriving (``("none",)``).
        derive_inputs_per_node: Strongest inputs kept per node (DARTS: 2).
        autocast: bf16 autocast of every forward pass.
        channels_last: Model and batches in ``channels_last`` memory format.
        seed: Seed of the global RNGs (``None``: drawn and logged).
    """

    init_channels: int = 16
    batch_size: int = 64
    w_lr: float = 0.025
    w_min_lr: float = 0.0
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 1e-3
    arch_first: bool = False
    augment: bool = True
    eval_images: int | None = 1000
    eval_batch_size: int = 256
    max_train: int | None = None
    max_val: int | None = None
    derive_exclude: tuple[str, ...] = ("none",)
    derive_inputs_per_node: int = 2
    autocast: bool = False
    channels_last: bool = False
    seed: int | None = 0

    method = "base"

    def __post_init__(self) -> None:
        where = type(self).__name__
        for name in ("init_channels", "batch_size", "eval_batch_size", "derive_inputs_per_node"):
            self._int(name, 1)
        for name in ("eval_images", "max_train", "max_val"):
            if getattr(self, name) is not None:
                self._int(name, 0 if name == "eval_images" else 1)
        self._real("w_lr", 0.0, low_open=True)
        self._real("w_min_lr", 0.0, float(self.w_lr))
        self._real("w_momentum", 0.0, 1.0)
        self._real("w_weight_decay", 0.0)
        if self.grad_clip is not None:
            self._real("grad_clip", 0.0)
        self._real("alpha_lr", 0.0, low_open=True)
        self._real("alpha_weight_decay", 0.0)
        betas = self.alpha_betas
        if (isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2
                or not all(_is_real(b) and 0.0 <= b < 1.0 for b in betas)):
            raise ConfigError(f"{where}.alpha_betas must be two numbers in [0, 1), but got {betas!r}.")
        object.__setattr__(self, "alpha_betas", (float(betas[0]), float(betas[1])))
        excl = self.derive_exclude
        if isinstance(excl, str) or not isinstance(excl, Sequence) or not all(isinstance(o, str) for o in excl):
            raise ConfigError(f"{where}.derive_exclude must be a list of operation names, but got {excl!r}.")
        object.__setattr__(self, "derive_exclude", tuple(excl))
        for name in ("arch_first", "augment", "autocast", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}.{name} must be true or false, but got {getattr(self, name)!r}.")
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"{where}.seed must be an integer or null, but got {self.seed!r}.")

    def _int(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if not _is_int(value) or value < low:
            raise ConfigError(f"{type(self).__name__}.{name} must be an integer >= {low}, but got {value!r}.")

    def _real(self, name: str, low: float, high: float | None = None, *, low_open: bool = False) -> None:
        value = getattr(self, name)
        if not _is_real(value):
            raise ConfigError(f"{type(self).__name__}.{name} must be a finite number, but got {value!r}.")
        check_range(f"{type(self).__name__}.{name}", float(value), low, high, low_open=low_open)

    @property
    def epochs(self) -> int:
        """Total search epochs."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with ``method``; :func:`search_config` inverts it."""
        d = dataclasses.asdict(self)
        d["alpha_betas"] = list(self.alpha_betas)
        d["derive_exclude"] = list(self.derive_exclude)
        return {"method": self.method, **d}

    def replace(self, **changes: Any) -> "SearchConfig":
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- methods

Stats = dict[str, torch.Tensor]


class SearchMethod:
    """What one differentiable method does in the alternating loop of :class:`DifferentiableSearch`.

    The engine calls, for every pair of (training, validation) batches,
    :meth:`arch_gradients` (when :meth:`updates_arch` is true for the epoch)
    and :meth:`weight_loss`; it owns the optimizers, the schedules, the
    checkpoints and the logging. Contract for subclasses:

    * The model is in train mode; methods must not change modes.
    * :meth:`weight_loss` returns a differentiable loss; the engine takes its
      gradient w.r.t. the weights only.
    * :meth:`arch_gradients` returns one gradient per architecture parameter
      (computed with ``torch.autograd.grad`` w.r.t. ``alphas`` only, so no
      weight gradient is ever computed for the architecture step).
    * Statistics are 0-d detached tensors (no ``.item()``: the engine averages
      them over the epoch with one host-device sync).
    """

    def __init__(self, config: SearchConfig) -> None:
        self.config = config

    def stage(self, epoch: int) -> int:
        """Stage of 0-based ``epoch`` (1 for single-stage methods)."""
        return 1

    def updates_arch(self, epoch: int) -> bool:
        """Whether alpha is updated in 0-based ``epoch``."""
        return True

    def arch_lr(self, epoch: int) -> float:
        """Adam learning rate of alpha in 0-based ``epoch``."""
        return self.config.alpha_lr

    def eval_attack(self) -> Attack | None:
        """The attack of the per-epoch adversarial validation accuracy."""
        raise NotImplementedError

    def weight_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Lower-level loss on a training batch, and statistics."""
        raise NotImplementedError

    def arch_gradients(self, model: nn.Module, alphas: Sequence[torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, epoch: int) -> tuple[list[torch.Tensor], Stats]:
        """Gradients of the upper-level objective w.r.t. ``alphas`` on a validation batch."""
        raise NotImplementedError

    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with autocast_context(x.device, self.config.autocast):
            return model(x).float()


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(dim=1) == y).float().mean()


def _grad(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


# --------------------------------------------------------------------------- engine

def _build_method(config: SearchConfig) -> SearchMethod:
    from .methods import build_method  # the methods import this module

    return build_method(config)


def _check_supernet(model: nn.Module) -> None:
    missing = [name for name in ("arch_parameters", "weight_parameters", "arch_weights", "derive", "cell_types")
               if not hasattr(model, name)]
    if missing:
        raise ConfigError(f"{type(model).__name__} is not a differentiable supernet: it lacks {missing} "
                          "(see nni_robust.spaces.darts.DartsSupernet).")


class DifferentiableSearch:
    """First-order alternating bilevel search (DARTS) running a :class:`SearchMethod`.

    Args:
        model: The supernet (``nni_robust.spaces.darts.DartsSupernet``:
            ``arch_parameters()``, ``weight_parameters()``, ``arch_weights()``,
            ``derive()``, ``cell_types``), inputs in ``[0, 1]``.
        config: A :class:`DsaraConfig` or :class:`RnasConfig` (or a dict for
            :func:`search_config`).
        device: Where to search.
        checkpoint_path: Written after every epoch; when it exists at
            construction the search continues from it exactly.
        writer: TensorBoard ``SummaryWriter``: per-epoch scalars ``search/*``
            and the architecture weights of every cell type as an image
            ``arch/<cell type>`` (rows: edges, columns: operations, scaled so
            that the largest weight is white).
        reporter: ``reporter(metrics)`` after every epoch (NNI's
            ``report_intermediate_result``); ``metrics`` holds floats with
            ``default`` (the robust reward of the validation accuracies).
        log_every: Steps between progress log lines (0: none); each costs a sync.

    Attributes:
        method: The :class:`SearchMethod`.
        epoch: Finished epochs.
        history: One metrics dict per finished epoch.
        architectures: The architecture derived after each finished epoch (JSON),
            so that one from before a degradation can be picked (DSARA Sec. 4.3:
            "we will choose the neural architectures before the performance
            degradation").
    """

    def __init__(self, model: nn.Module, config: SearchConfig | Mapping[str, Any], *,
                 device: str | torch.device = "auto", checkpoint_path: str | Path | None = None,
                 writer: Any = None, reporter: Callable[[dict[str, float]], Any] | None = None,
                 log_every: int = 0) -> None:
        if isinstance(config, Mapping):
            from .methods import search_config

            config = search_config(config)
        if not isinstance(config, SearchConfig):
            raise ConfigError(f"config must be a DsaraConfig, RnasConfig or a dict, but got {type(config).__name__}.")
        _check_supernet(model)
        if not _is_int(log_every) or log_every < 0:
            raise ConfigError(f"log_every must be an integer >= 0, but got {log_every!r}.")
        if reporter is not None and not callable(reporter):
            raise ConfigError(f"reporter must be callable or None, but got {reporter!r}.")
        self._seed_drawn = config.seed is None
        if config.seed is None:
            config = config.replace(seed=random.SystemRandom().randrange(2 ** 31))
            logger.info("DifferentiableSearch: drew seed %d", config.seed)
        self.config = config
        self.method = _build_method(config)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.alphas = list(self.model.arch_parameters())
        self.weights = [p for p in self.model.weight_parameters() if p.requires_grad]
        if not self.alphas or not self.weights:
            raise ConfigError(f"{type(model).__name__} has no architecture parameters or no weights.")
        alpha_ids = {id(a) for a in self.alphas}
        if any(id(p) in alpha_ids for p in self.weights):
            raise ConfigError("weight_parameters() and arch_parameters() of the supernet overlap.")
        # The weights' schedule is the core's cosine schedule (nni_robust.training.lr_at_epoch).
        self._w_schedule = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.w_lr,
                                       min_lr=config.w_min_lr, schedule="cosine", attack="none")
        self.w_optimizer = torch.optim.SGD(self.weights, lr=config.w_lr, momentum=config.w_momentum,
                                           weight_decay=config.w_weight_decay)
        self.a_optimizer = torch.optim.Adam(self.alphas, lr=config.alpha_lr, betas=config.alpha_betas,
                                            weight_decay=config.alpha_weight_decay)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.writer = writer
        self.reporter = reporter
        self.log_every = int(log_every)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.architectures: list[str] = []
        self._resume: dict[str, Any] | None = None
        self._started = False
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._load(self.checkpoint_path)

    # ------------------------------------------------------------------ checkpoints
    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location="cpu")
        saved = dict(ckpt.get("config") or {})
        if self._seed_drawn and _is_int(saved.get("seed")):
            self.config = self.config.replace(seed=int(saved["seed"]))
            self.method = _build_method(self.config)
        check_run_checkpoint(path, ckpt, fmt=_CHECKPOINT_FORMAT, writer="DifferentiableSearch",
                             current=self.config.to_dict(), what="search")
        try:
            self.model.load_state_dict(ckpt["model"])
            with torch.no_grad():
                for a, saved_a in zip(self.alphas, ckpt["alphas"], strict=True):
                    a.copy_(saved_a)
            self.w_optimizer.load_state_dict(ckpt["w_optimizer"])
            self.a_optimizer.load_state_dict(ckpt["a_optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"Checkpoint {path.resolve()} does not fit this supernet: {exc}") from exc
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.history = list(ckpt["history"])
        self.architectures = list(ckpt.get("architectures") or [])
        self._resume = {"rng": ckpt["rng"], "loaders": ckpt.get("loaders") or {}}
        logger.info("Resuming the %s search from %s after epoch %d/%d", self.config.method, path, self.epoch,
                    self.config.epochs)

    def _save(self, loaders: Mapping[str, Any]) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(
            self.checkpoint_path, format=_CHECKPOINT_FORMAT, config=self.config.to_dict(),
            model=self.model.state_dict(), alphas=[a.detach().cpu().clone() for a in self.alphas],
            w_optimizer=self.w_optimizer.state_dict(), a_optimizer=self.a_optimizer.state_dict(),
            epoch=self.epoch, global_step=self.global_step, history=self.history,
            architectures=self.architectures, rng=capture_rng_state(),
            loaders={k: l.state_dict() for k, l in loaders.items() if hasattr(l, "state_dict")})

    # ------------------------------------------------------------------ search
    @property
    def finished(self) -> bool:
        """Whether every epoch is done."""
        return self.epoch >= self.config.epochs

    def fit(self, train_loader: Iterable, val_loader: Iterable, eval_loader: Iterable | None = None,
            max_epochs: int | None = None) -> list[dict[str, float]]:
        """Search until every epoch is done (or ``max_epochs`` more have run).

        Args:
            train_loader: Batches of the training split (weights), one pass per epoch.
            val_loader: Batches of the validation split (architecture); restarted
                every epoch and cycled when shorter than ``train_loader``.
            eval_loader: Validation images for the per-epoch clean / adversarial
                accuracy (``None``: not measured).
            max_epochs: Stop after this many epochs of this call (resumable).

        Returns:
            The history (see :attr:`history`); keys include ``epoch``, ``stage``,
            ``w_lr``, ``alpha_lr``, ``arch_entropy`` (and per cell type), the
            epoch means of the weight steps (``train_*``) and of the
            architecture steps (``arch_*`` on the validation batches;
            ``gamma`` for DSARA's stage 2, ``reg`` for RNAS),
            ``val_clean_acc``/``val_adv_acc``/``default`` with an
            ``eval_loader``, ``time_s`` (search only) and ``eval_time_s``.

        Raises:
            NniRobustError: a loss became non-finite (the last checkpoint is kept).
        """
        from nni_robust.evaluation import evaluate

        cfg = self.config
        loaders = {"train": train_loader, "val": val_loader}
        resume_or_seed(self._resume, loaders, cfg.seed, fresh=not self._started and self.epoch == 0)
        self._resume = None
        self._started = True
        done = 0
        while self.epoch < cfg.epochs and (max_epochs is None or done < max_epochs):
            metrics = self._search_epoch(train_loader, val_loader)
            if eval_loader is not None:
                t0 = time.perf_counter()
                attack = self.method.eval_attack()
                acc = evaluate(self.model, eval_loader, {"clean": None, "adv": attack}, device=self.device,
                               autocast=cfg.autocast)
                metrics.update(val_clean_acc=float(acc["clean"]), val_adv_acc=float(acc["adv"]),
                               default=float(robust_reward(acc["clean"], acc["adv"], 0.5)),
                               eval_time_s=time.perf_counter() - t0)
            self.epoch += 1
            done += 1
            metrics = {"epoch": self.epoch, **metrics}
            self.history.append(metrics)
            self.architectures.append(self.derive().to_json())
            self._save(loaders)
            self._log_epoch(metrics)
            if self.reporter is not None:
                report = dict(metrics)
                report.setdefault("default", float(metrics.get("arch_acc_adv", metrics.get("arch_acc_nat", 0.0))))
                self.reporter(report)
        if self.writer is not None:
            self.writer.flush()
        return list(self.history)

    def _batches(self, loader: Iterable) -> Iterator:
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ConfigError("val_loader yielded no batches.")

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if not x.is_floating_point():
            x = x.float().div_(255.0)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _search_epoch(self, train_loader: Iterable, val_loader: Iterable) -> dict[str, float]:
        cfg, method, model = self.config, self.method, self.model
        epoch = self.epoch
        w_lr = lr_at_epoch(self._w_schedule, epoch)
        a_lr = method.arch_lr(epoch)
        for group in self.w_optimizer.param_groups:
            group["lr"] = w_lr
        for group in self.a_optimizer.param_groups:
            group["lr"] = a_lr
        update_arch = method.updates_arch(epoch)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        seen = 0
        val_batches = self._batches(val_loader) if update_arch else None
        model.train()
        start = time.perf_counter()

        def add(stats: Stats) -> None:
            for k, v in stats.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float()
                counts[k] = counts.get(k, 0) + 1

        for i, (x, y) in enumerate(train_loader):
            x, y = self._prepare(x, y)
            if update_arch and cfg.arch_first:
                add(self._arch_step(*self._prepare(*next(val_batches)), epoch))
            add(self._weight_step(x, y))
            if update_arch and not cfg.arch_first:
                add(self._arch_step(*self._prepare(*next(val_batches)), epoch))
            seen += y.shape[0]
            self.global_step += 1
            if self.log_every and self.global_step % self.log_every == 0:
                loss = float(sums["train_loss"] / counts["train_loss"])
                logger.info("epoch %d step %d: train loss %.4f", epoch + 1, i + 1, loss)
        if seen == 0:
            raise ConfigError("train_loader yielded no batches.")
        keys = sorted(sums)
        values = torch.stack([sums[k] / counts[k] for k in keys]).tolist() if keys else []  # the one sync
        elapsed = time.perf_counter() - start  # after the sync: queued GPU work included
        metrics: dict[str, float] = dict(zip(keys, values))
        if not all(math.isfinite(v) for v in values):
            raise NniRobustError(f"The {cfg.method} search diverged in epoch {epoch + 1}: {metrics} "
                                 f"(w_lr={w_lr}, alpha_lr={a_lr}); the last checkpoint (epoch {epoch}) is kept.")
        weights = model.arch_weights()
        metrics.update(stage=float(method.stage(epoch)), arch_updated=float(update_arch), w_lr=float(w_lr),
                       alpha_lr=float(a_lr), arch_entropy=float(arch_entropy(weights)), time_s=elapsed,
                       images_per_s=seen / max(elapsed, 1e-9))
        for ct, w in weights.items():
            metrics[f"arch_entropy_{ct}"] = float(arch_entropy({ct: w}))
        return metrics

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> Stats:
        loss, stats = self.method.weight_loss(self.model, x, y)
        grads = torch.autograd.grad(loss, self.weights, allow_unused=True)
        for p, g in zip(self.weights, grads):
            p.grad = g
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.weights, self.config.grad_clip)
        self.w_optimizer.step()
        return stats

    def _arch_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> Stats:
        grads, stats = self.method.arch_gradients(self.model, self.alphas, x, y, epoch)
        for a, g in zip(self.alphas, grads, strict=True):
            a.grad = g.detach()
        self.a_optimizer.step()
        return stats

    def _log_epoch(self, metrics: Mapping[str, float]) -> None:
        logger.info("search epoch %d/%d: %s", self.epoch, self.config.epochs,
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch"))
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(f"search/{key}", value, self.epoch)
        log_arch_weights(self.writer, self.model, self.epoch)  # labelled operation x edge heatmaps

    # ------------------------------------------------------------------ result
    def derive(self) -> Any:
        """The discrete architecture (argmax per edge; ``derive_inputs_per_node`` strongest inputs per node)."""
        return self.model.derive(exclude=tuple(self.config.derive_exclude),
                                 inputs_per_node=self.config.derive_inputs_per_node)
