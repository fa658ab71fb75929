"""The anti-bandit search on the weight-sharing supernet (ABanditNAS Sec. 3, Algorithm 1).

Chen, Zhang et al., "Anti-Bandit Neural Architecture Search for Model
Defense" (ECCV 2020; arXiv 2008.00698). One anti-bandit *step*:

1. sample one operation per edge from ``p_k = softmax(-LCB_k)``
   (:meth:`~.bandit.AntiBandit.sample`) and make it the supernet's active
   architecture (every edge active with its sampled op:
   :class:`nni_robust.spaces.abandit.ABanditSupernet`);
2. train it adversarially for ``epochs_per_sample`` epochs (the paper: one)
   with FGSM from a random start (Wong et al., "Fast is better than free",
   ICLR 2020: ``x_r ~ U(ball(x, eps))``, ``x' = clip(x_r + step sign(grad))``),
   the core :class:`nni_robust.training.AdversarialTrainer` with
   ``attack="fgsm", random_start=True``;
3. measure its validation accuracy ``a`` and credit ``reward_scale * a`` to
   the arms it used (``m_k <- (1 - lambda) m_k + lambda a``); every ``K T``
   rewards the arm with the smallest UCB is abandoned on every edge
   (:meth:`~.bandit.AntiBandit.update`).

The supernet's weights are shared by all samples and trained across the
whole search: the learning rate follows one cosine schedule over all the
search's epochs (``warmup_samples + T (K (K + 1) / 2 - 1)`` samples times
``epochs_per_sample``).

Where the paper is silent (each is a :class:`SearchConfig` field; the
defaults follow DARTS's search settings, which ABanditNAS builds on):

* ``eps`` (8/255, the evaluation budget; Wong et al.'s setting) and the
  FGSM step (``1.25 eps``, Wong et al.'s recommendation); T (in the
  bandit: 3 by default) and the search epochs (``epochs_per_sample``,
  ``warmup_samples``).
* The reward: the paper says "the accuracy a on the validation data" of the
  sampled architecture; ``reward="clean"`` (default) reads it literally,
  ``"adv"`` uses the accuracy under FGSM (no random start, step = eps) and
  ``"robust"`` their mix ``(1 - reward_lam) clean + reward_lam adv``. The
  accuracy is multiplied by ``reward_scale`` (strategy argument, default
  100: percent) before the bandit sees it, because the exploration bonus
  ``sqrt(2 ln N / n)`` has no unit: with accuracies in [0, 1] it swamps the
  differences between arms. The paper does not say which scale it used (the
  authors' released evaluation code computes fractions); see :mod:`.bandit`.
* Validation is deterministic (clean accuracy, FGSM without random start),
  so a step validated again after a restart gives the same reward.
* SGD lr 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4, gradient
  clipping 5, batch 64, C = 16 (DARTS's search network); BN of the cells
  non-affine (:class:`~nni_robust.spaces.abandit.ABanditSupernet`'s default;
  the settings' ``space: {affine: true}`` changes it).
* ``train_images_per_sample``: a budget knob for quick runs: a sample trains
  on that many images (consecutive batches of the shuffled training split,
  continuing where the previous sample stopped) instead of a whole epoch.

Exact resume: the trainer's checkpoint (weights, optimizer, schedule,
global RNG, loader position) is written after every epoch, the search state
(:class:`SearchState`: the bandit, with its own random generator, and the
step records) after every credited sample; a restart validates and credits
the one sample whose training finished before a stop, then continues, and
draws the same samples as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from nni_robust.attacks import FGSM
from nni_robust.bn import calibrate_bn
from nni_robust.checkpoint import write_json
from nni_robust.config import check_choice, check_range, from_dict
from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.reward import robust_reward
from nni_robust.training import AdversarialTrainer, TrainConfig

from .bandit import AntiBandit

__all__ = ["SearchConfig", "SearchState", "AntiBanditSearch", "REWARDS", "STATE_FILE", "CHECKPOINT_FILE"]

logger = logging.getLogger(__name__)

#: What the reward of a sample is (see the module docstring).
REWARDS = ("clean", "adv", "robust")
#: The search state (bandit and step records) in the search folder.
STATE_FILE = "search_state.json"
#: The supernet trainer's checkpoint in the search folder.
CHECKPOINT_FILE = "checkpoint.pt"
_STATE_FORMAT = "nni_robust.abandit.search/1"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Training and validation of the sampled architectures (supernet mode).

    Attributes:
        init_channels: C of the search supernet (paper: not stated; DARTS 16).
        batch_size: Training batch (DARTS: 64).
        lr: Initial SGD learning rate (DARTS: 0.025); cosine over the whole
            search to ``min_lr`` (DARTS: 0.001).
        min_lr: Final learning rate.
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay (DARTS: 3e-4).
        grad_clip: Gradient-norm clip (DARTS: 5); ``None`` disables.
        eps: l-inf budget of the search's FGSM (paper: not stated; 8/255).
        step: FGSM step from the random start (``None``: ``1.25 eps``, Wong et al.).
        epochs_per_sample: Training epochs per sampled architecture (paper: 1).
        warmup_samples: Uniformly random architectures trained before the
            anti-bandit starts (not credited to the arms; paper: none, 0).
        train_images_per_sample: Images a sample trains on per epoch
            (``None``: the whole training split, as the paper).
        reward: ``"clean"``, ``"adv"`` or ``"robust"`` (see the module docstring).
        reward_lam: Weight of the adversarial accuracy in ``"robust"``.
        val_images: Validation images per sample (``None``: the whole split).
        bn_calibration_images: Before validating, recompute the BN running
            statistics of the sampled architecture on this many training
            images (:func:`nni_robust.bn.calibrate_bn`; 0: no, as the paper,
            whose one-epoch training leaves statistics of that architecture).
            Needed when a sample trains on a few batches only
            (``train_images_per_sample``): the running statistics are then
            mostly those of earlier architectures.
        val_batch_size: Validation batch (memory only).
        augment: Random crop (+ flip where the dataset allows) of training batches.
        autocast: bf16 autocast (GPU).
        channels_last: ``channels_last`` memory format.
        seed: Seed of the weights' initialisation and training (``None``: the
            settings' seed).
    """

    init_channels: int = 16                 # the search network's C (DARTS)
    batch_size: int = 64
    lr: float = 0.025                       # SGD, cosine to min_lr over the whole search (DARTS)
    min_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0
    eps: float = 8 / 255                    # FGSM with random start (Wong et al.)
    step: float | None = None               # None: 1.25 eps
    epochs_per_sample: int = 1              # the paper: one epoch per sample
    warmup_samples: int = 0
    train_images_per_sample: int | None = None
    reward: str = "clean"                   # what the validation measures (REWARDS)
    reward_lam: float = 0.5
    val_images: int | None = None
    val_batch_size: int = 500
    bn_calibration_images: int = 0
    augment: bool = True
    autocast: bool = False                  # bf16 (GPU)
    channels_last: bool = False
    seed: int | None = None                 # None: the settings' seed

    def __post_init__(self) -> None:
        positive = ("init_channels", "batch_size", "epochs_per_sample", "val_batch_size")
        optional = ("train_images_per_sample", "val_images", "seed")
        for name in positive + optional + ("warmup_samples", "bn_calibration_images"):
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            low = 1 if name in positive or name in optional[:2] else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"search.{name} must be an integer >= {low}, but got {value!r}.")
        check_range("search.lr", self.lr, 0.0, low_open=True)
        check_range("search.min_lr", self.min_lr, 0.0, self.lr)
        check_range("search.momentum", self.momentum, 0.0, 1.0)
        check_range("search.weight_decay", self.weight_decay, 0.0)
        if self.grad_clip is not None:
            check_range("search.grad_clip", self.grad_clip, 0.0, low_open=True)
        check_range("search.eps", self.eps, 0.0, 1.0)
        if self.step is not None:
            check_range("search.step", self.step, 0.0, 1.0, low_open=True)
        check_choice("search.reward", self.reward, REWARDS)
        check_range("search.reward_lam", self.reward_lam, 0.0, 1.0)
        for name in ("augment", "autocast", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"search.{name} must be true or false, but got {getattr(self, name)!r}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SearchConfig":
        """Build from a (YAML) dict; an unknown key is a :class:`ConfigError` naming it."""
        return from_dict(cls, data, "strategy_args.search")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict :meth:`from_dict` reads back."""
        return dataclasses.asdict(self)

    @property
    def fgsm_step(self) -> float:
        """The training FGSM's step: ``step``, else ``1.25 eps`` (Wong et al.)."""
        return self.step if self.step is not None else 1.25 * self.eps

    def train_config(self, epochs: int, seed: int) -> TrainConfig:
        """The :class:`TrainConfig` of the whole search (``epochs`` epochs in all)."""
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, min_lr=self.min_lr,
                           momentum=self.momentum, weight_decay=self.weight_decay, schedule="cosine",
                           grad_clip=self.grad_clip, attack="fgsm", eps=self.eps, step=self.fgsm_step,
                           random_start=True, autocast=self.autocast, channels_last=self.channels_last,
                           seed=seed)


@dataclasses.dataclass
class SearchState:
    """What the search has done: the bandit and one record per credited sample.

    Attributes:
        bandit: The :class:`~.bandit.AntiBandit` (its state holds its random generator).
        records: One JSON-able dict per sample (warm-up ones included), in
            order: ``step`` (0-based), ``warmup``, ``arms`` (the option index
            per edge, in the bandit's label order), ``reward`` (scaled),
            ``acc_clean`` / ``acc_adv``, ``N`` (rewards received after it),
            ``abandoned`` (``[label, option]`` pairs it caused), ``train_loss``,
            ``train_acc``, ``lr``, ``seconds``.
    """

    bandit: AntiBandit
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def samples_done(self) -> int:
        """Samples trained and credited (warm-up included)."""
        return len(self.records)

    def sample_of(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``{label: option}`` of a record."""
        return {label: self.bandit.edges[label][k] for label, k in zip(self.bandit.labels, record["arms"])}

    def to_dict(self) -> dict[str, Any]:
        return {"format": _STATE_FORMAT, "bandit": self.bandit.state_dict(), "records": list(self.records)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchState":
        """Rebuild :meth:`to_dict` output.

        Raises:
            CheckpointError: another format or a malformed state.
        """
        if not isinstance(data, Mapping) or data.get("format") != _STATE_FORMAT:
            raise CheckpointError(f"Not an anti-bandit search state (format {_STATE_FORMAT!r}).")
        return cls(AntiBandit.from_state_dict(data["bandit"]), [dict(r) for r in data.get("records") or []])

    def save(self, path: str | Path) -> Path:
        """Write the state atomically to ``path`` (JSON)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "SearchState":
        """Read a state :meth:`save` wrote.

        Raises:
            CheckpointError: a missing, unreadable or malformed file (named).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"Cannot read the anti-bandit search state {path}: {exc}") from exc
        return cls.from_dict(data)


class _Chunks:
    """``batches`` consecutive batches of ``inner`` per pass, continuing across its epochs (resumable)."""

    def __init__(self, inner: Any, batches: int) -> None:
        self.inner = inner
        self.batches = batches
        self.batch_size = inner.batch_size
        self._epoch, self._offset = inner.epoch, 0
        self._it: Iterator | None = None

    def __len__(self) -> int:
        return self.batches

    def _restart(self) -> None:
        self.inner.set_epoch(self._epoch)
        self._it = iter(self.inner)

    def __iter__(self) -> Iterator:
        for _ in range(self.batches):
            if self._it is None:
                self._restart()
                for _ in range(self._offset):
                    next(self._it)
            batch = next(self._it, None)
            if batch is None:  # the inner epoch is over: the next one
                self._epoch, self._offset = self._epoch + 1, 0
                self._restart()
                batch = next(self._it)
            self._offset += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "offset": self._offset}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._epoch, self._offset, self._it = int(state["epoch"]), int(state["offset"]), None


class AntiBanditSearch:
    """The anti-bandit loop on a supernet: sample, train, validate, credit (see the module docstring).

    Args:
        supernet: An :class:`~nni_robust.spaces.abandit.ABanditSupernet` (any
            model with ``set_arch(edge sample)`` works) whose edge labels are the bandit's.
        config: The :class:`SearchConfig`.
        state: The :class:`SearchState` to continue (a fresh one: an empty record list).
        train_loader: Training batches (a :class:`~nni_robust.data.TensorLoader`).
        val_loader: Validation batches (deterministic order).
        calib_loader: Batches for the BN calibration (deterministic; ``None``: none).
        reward_scale: Multiplies the accuracy into the reward.
        state_path: Where the state is saved after every credited sample.
        checkpoint_path: The trainer's checkpoint (a restart continues from it).
        device: Torch device.
        seed: Seed of training and of the warm-up samples.
        writer: TensorBoard writer (the trainer's per-epoch scalars and ``on_step``'s).
        on_step: ``on_step(record, state)`` after every credited sample (reporting).
    """

    def __init__(self, supernet: Any, config: SearchConfig, state: SearchState, *, train_loader: Any,
                 val_loader: Any, calib_loader: Any = None, reward_scale: float, state_path: str | Path,
                 checkpoint_path: str | Path, device: Any, seed: int, writer: Any = None,
                 on_step: Callable[[dict[str, Any], SearchState], Any] | None = None) -> None:
        self.model = supernet
        self.config = config
        self.state = state
        self.reward_scale = float(reward_scale)
        self.state_path = Path(state_path)
        self.seed = int(seed)
        self.on_step = on_step
        self.val_loader = val_loader
        self.calib_loader = calib_loader
        bandit = state.bandit
        #: Samples of the whole search (warm-up included): fixes the length of the lr schedule.
        self.total_samples = config.warmup_samples + bandit.total + bandit.samples_to_finish
        if config.train_images_per_sample is not None:
            train_loader = _Chunks(train_loader, max(1, config.train_images_per_sample // config.batch_size))
        self.train_loader = train_loader
        epochs = self.total_samples * config.epochs_per_sample
        self.trainer = AdversarialTrainer(supernet, config.train_config(epochs, self.seed), device=device,
                                          checkpoint_path=checkpoint_path, writer=writer,
                                          before_step=self._before_step, on_epoch_end=self._on_epoch_end,
                                          log_every=0)
        self.val_attack = FGSM(config.eps, random_start=False, autocast=config.autocast) \
            if config.reward != "clean" else None
        self._current: dict[str, Any] | None = None
        self._warmup = False
        self._until = 0
        self._started = 0.0
        self._new: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ one step's pieces
    def _next_sample(self) -> tuple[dict[str, Any], bool]:
        step = self.state.samples_done
        if step < self.config.warmup_samples:  # uniform, from a generator of its own (no state to keep)
            rng = random.Random(self.seed * 1_000_003 + step)
            return {label: rng.choice(opts) for label, opts in self.state.bandit.edges.items()}, True
        return self.state.bandit.sample(), False

    def _before_step(self, model: Any, step: int) -> None:
        if self._current is None:
            self._current, self._warmup = self._next_sample()
            model.set_arch(self._current)
            self._started = time.perf_counter()

    def validate(self) -> dict[str, float]:
        """Validation accuracies of the active architecture (``clean``, and ``adv`` when the reward needs it),
        after the BN calibration when configured."""
        if self.calib_loader is not None:
            calibrate_bn(self.model, self.calib_loader, device=self.trainer.device, autocast=self.config.autocast)
        attacks = {"clean": None}
        if self.val_attack is not None:
            attacks["adv"] = self.val_attack
        return evaluate(self.model, self.val_loader, attacks, device=self.trainer.device,
                        autocast=self.config.autocast)

    def _reward(self, acc: Mapping[str, float]) -> float:
        if self.config.reward == "clean":
            value = acc["clean"]
        elif self.config.reward == "adv":
            value = acc["adv"]
        else:
            value = robust_reward(acc["clean"], acc["adv"], self.config.reward_lam)
        return self.reward_scale * float(value)

    def _credit(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        acc = self.validate()
        reward = self._reward(acc)
        bandit = self.state.bandit
        events = [] if self._warmup else bandit.update(self._current, reward)
        record = {"step": self.state.samples_done, "warmup": self._warmup,
                  "arms": [bandit.index_of(label, self._current[label]) for label in bandit.labels],
                  "reward": reward, "N": bandit.total, "abandoned": [[e["label"], e["option"]] for e in events],
                  **{f"acc_{k}": float(v) for k, v in acc.items()},
                  **{k: float(metrics[k]) for k in ("train_loss", "train_acc", "lr") if k in metrics},
                  "seconds": time.perf_counter() - self._started if self._started else 0.0}
        self.state.records.append(record)
        self.state.save(self.state_path)
        self._current = None
        self._new.append(record)
        if self.on_step is not None:
            self.on_step(record, self.state)
        return record

    def _on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        if epoch % self.config.epochs_per_sample:
            return False
        self._credit(metrics)
        return self.state.samples_done >= self._until or self.finished

    # ------------------------------------------------------------------ driving
    @property
    def finished(self) -> bool:
        """Whether one arm per edge remains (the warm-up, if any, done)."""
        return self.state.bandit.done and self.state.samples_done >= self.config.warmup_samples

    def run(self, until: int) -> list[dict[str, Any]]:
        """Run steps until ``until`` samples are credited (warm-up included) or the search is done.

        Returns:
            The records of the samples credited by this call (empty when there was nothing to do).

        Raises:
            CheckpointError: the trainer's checkpoint and the state disagree
                (e.g. one of them was replaced by a file of another run).
        """
        self._new = []
        self._until = int(until)
        per = self.config.epochs_per_sample
        done, trained = self.state.samples_done, self.trainer.epoch
        if not done * per <= trained <= (done + 1) * per:
            raise CheckpointError(
                f"The supernet checkpoint has {trained} epochs but the search state {self.state_path} credited "
                f"{done} samples of {per} epoch(s) each: they do not belong together. Remove both to restart the "
                "search.")
        if trained == (done + 1) * per:  # stopped after training a sample, before crediting it
            logger.info("Crediting sample %d, trained before the restart.", done)
            self._current, self._warmup = self._next_sample()
            self.model.set_arch(self._current)
            self._started = 0.0
            last = self.trainer.history[-1] if self.trainer.history else {}
            self._credit(last)
        if self.state.samples_done >= self._until or self.finished:
            return list(self._new)
        self.trainer.fit(self.train_loader)
        return list(self._new)
