"""Adversarial training of one weight-sharing supernet of the dense robust cell space.

Shared by the methods that train such a supernet with a random architecture
per batch:

* MSRobNet (``msrobnet-multishot-nas.txt``, Alg. 1 lines 2-9): K supernets of
  different widths, a uniformly random topology (op per edge) per batch;
* RobNet (``robnet.txt``, Sec. 3.2, "Robust Search Algorithm"): one supernet,
  "for each batch of training data, we randomly sample a candidate
  architecture from the supernet (by arbitrary setting some of the elements
  in alpha to 0)" -- path dropout (:class:`PathDropSampler`).

Both train with PGD adversarial examples crafted against the sampled
sub-network (``settings.supernet``, a :class:`~nni_robust.training.TrainConfig`:
PGD-7, 8/255, 2/255 by default). After every epoch a probe
(:class:`SupernetProbe`: fixed architectures, BN calibrated for each, clean
and adversarial accuracy with the search-time attack) gives the intermediate
result -- neither paper reports one; it is for watching training in the web UI.

Reproducibility (our choices; the papers are silent): the supernet of init
channels ``C`` trains with the seed ``derive_seed(settings.supernet.seed,
"supernet", C)`` (:func:`nni_robust.seeding.derive_seed`), which also seeds
every generator before the supernet is built, so that the K supernets of
MSRobNet see different, reproducible architecture sequences, data orders and
initial weights. The probe draws its randomness (e.g. a PGD random start)
from generators of its own (:func:`nni_robust.seeding.isolated_rng`) and
restores the supernet's BatchNorm statistics after measuring: it runs after
the epoch's checkpoint is written, so it must change nothing the next epoch
uses, or a resumed run would differ from an uninterrupted one.

Files: ``<supernet_dir>/c<width>/checkpoint.pt`` (every epoch; a rerun
resumes exactly), ``supernet.pt`` (the finished weights, with ``width``,
``space``, ``dataset``, ``epochs``, ``sampler``) and ``result.json``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from nni_robust.attacks import build_attack
from nni_robust.bn import calibrate_bn, fold_bn
from nni_robust.checkpoint import save_checkpoint, write_json
from nni_robust.data import TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.reward import robust_reward
from nni_robust.seeding import derive_seed, isolated_rng, seed_everything
from nni_robust.spaces.dense_rob import NUM_EDGES, ROBNET_CODES, DenseRobArch, Layout, layout_of
from nni_robust.tb import summary_writer
from nni_robust.training import AdversarialTrainer

from .networks import build_network
from .settings import EvalSettings, TrialSettings

__all__ = ["ArchSampler", "PathDropSampler", "SupernetProbe", "supernet_path", "train_supernet",
           "uniform_sampler", "search_attack"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]
#: ``sampler(layout, rng) -> DenseRobArch``: the architecture of one batch. ``rng`` is Python's
#: ``random`` module (whose state the trainer's checkpoints save, so a resumed run samples on exactly).
ArchSampler = Callable[[Layout, Any], DenseRobArch]


def supernet_path(supernet_dir: str | Path, width: int) -> Path:
    """Where the supernet of init channels ``width`` is stored inside ``supernet_dir``."""
    return Path(supernet_dir) / f"c{int(width)}" / "supernet.pt"


def uniform_sampler(layout: Layout, rng: Any) -> DenseRobArch:
    """A uniformly random architecture: every edge's op uniform over the 4 primitives (MSRobNet)."""
    return DenseRobArch.random(layout, rng)


@dataclass(frozen=True)
class PathDropSampler:
    """RobNet's path dropout (Sec. 3.2): drop each element of ``alpha`` with probability ``drop_prob``.

    An edge's op is RobNet's two-bit code ``alpha^(i,j) = (separable conv,
    identity)``: ``00`` none, conv only ``sep_conv_3x3``, identity only
    ``skip_connect``, both ``res_sep_conv_3x3`` (``ROBNET_CODES``). The
    supernet has every bit set; each batch keeps each of the 28 bits of every
    topology independently with probability ``1 - drop_prob``. The paper does
    not give the probability (nor a schedule; Bender et al.'s path dropout,
    which it cites, ramps the rate up during training): it is a parameter,
    constant over training. ``drop_prob = 0.5`` draws every op uniformly, the
    distribution the evaluation samples from (and MSRobNet's sampler); a
    smaller value trains denser paths more often.

    Cell-based layouts (one topology) get one topology per batch, shared by
    every cell; cell-free layouts (one topology per cell) one per cell.
    """

    drop_prob: float = 0.5

    def __post_init__(self) -> None:
        p = self.drop_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0 \
                or not math.isfinite(float(p)):
            raise ConfigError(f"path_drop_prob must be a probability in [0, 1], but got {p!r}.")

    def __call__(self, layout: Layout, rng: Any) -> DenseRobArch:
        keep = 1.0 - float(self.drop_prob)
        cells = {}
        for topo in layout.topologies:
            ops = []
            for _ in range(NUM_EDGES):
                conv = rng.random() < keep
                ident = rng.random() < keep
                ops.append(ROBNET_CODES[f"{int(ident)}{int(conv)}"])
            cells[topo] = ops
        return DenseRobArch(cells, layout)

    def describe(self) -> dict[str, Any]:
        return {"kind": "path_drop", "drop_prob": float(self.drop_prob)}


def search_attack(ev: EvalSettings) -> Any:
    """The search-time attack of the evaluation settings (FGSM: step = eps unless given; PGD: ``steps``)."""
    return build_attack(ev.attack, eps=ev.eps, step=ev.step if ev.step is not None else ev.eps,
                        **({"steps": ev.steps} if ev.attack == "pgd" else {}), autocast=ev.autocast)


class SupernetProbe:
    """Clean and adversarial accuracy of fixed architectures inside a supernet.

    For each architecture: activate it, calibrate BN on the calibration
    batches (:func:`nni_robust.bn.calibrate_bn`), measure clean and
    adversarial accuracy; the result is the mean over the architectures:
    ``{"default": reward, "probe_acc_clean", "probe_acc_adv"}`` with
    ``reward = (1 - lam) acc_clean + lam acc_adv``.

    A measurement has no side effects on the run: it draws from generators of
    its own seeded with ``seed`` (the same random starts at every call; the
    global generators are restored afterwards) and restores the model's
    buffers (BatchNorm running statistics) that the calibration changed.

    Args:
        archs: The probe architectures (at least one).
        calib: Calibration batches (e.g. a :class:`~nni_robust.data.TensorLoader`).
        data: Evaluation batches.
        attack: The adversarial attack.
        lam: Reward weight of the adversarial accuracy.
        device: Where to run.
        autocast: bf16 autocast of the evaluation forwards.
        seed: Seed of the measurement's own random generators.
    """

    def __init__(self, archs: Sequence[DenseRobArch], calib: Any, data: Any, attack: Any, *, lam: float = 0.5,
                 device: torch.device | str = "cpu", autocast: bool = False, seed: int = 0) -> None:
        self.archs = list(archs)
        if not self.archs:
            raise ConfigError("SupernetProbe needs at least one architecture.")
        self.calib, self.data, self.attack = calib, data, attack
        self.lam = float(lam)
        self.device = device
        self.autocast = autocast
        self.seed = int(seed)

    @classmethod
    def from_settings(cls, settings: TrialSettings, val: tuple[torch.Tensor, torch.Tensor],
                      archs: Sequence[DenseRobArch], *, images: int = 1000,
                      device: torch.device | str = "cpu") -> "SupernetProbe":
        """A probe on the validation split with ``settings.evaluation``: BN calibrated on its first
        ``calib_images`` images, accuracies on its first ``min(images, eval_images)`` (default half);
        its generators are seeded from ``settings.seed``."""
        ev = settings.evaluation
        n_val = int(val[1].shape[0])
        n_calib = min(ev.calib_images, n_val)
        n_probe = min(images, ev.eval_images or n_val // 2, n_val)
        calib = TensorLoader(val[0][:n_calib], val[1][:n_calib], batch_size=ev.calib_batch_size,
                             shuffle=False, device=device)
        data = TensorLoader(val[0][:n_probe], val[1][:n_probe], batch_size=ev.batch_size, shuffle=False,
                            device=device)
        return cls(archs, calib, data, search_attack(ev), lam=ev.lam, device=device, autocast=ev.autocast,
                   seed=derive_seed(settings.seed, "probe"))

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        clean, adv = [], []
        saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
        try:
            with isolated_rng(self.seed):
                for arch in self.archs:
                    model.set_arch(arch)
                    calibrate_bn(model, self.calib, device=self.device)
                    with fold_bn(model):  # calibrated: the measurement needs no BN statistics any more
                        acc = evaluate(model, self.data, {"clean": None, "adv": self.attack}, device=self.device,
                                       autocast=self.autocast)
                    clean.append(acc["clean"])
                    adv.append(acc["adv"])
        finally:
            with torch.no_grad():
                for name, buf in model.named_buffers():
                    if name in saved:
                        buf.copy_(saved[name])
        acc_clean, acc_adv = sum(clean) / len(clean), sum(adv) / len(adv)
        return {"default": float(robust_reward(acc_clean, acc_adv, self.lam)), "probe_acc_clean": acc_clean,
                "probe_acc_adv": acc_adv}


def train_supernet(settings: TrialSettings, width: int, supernet_dir: str | Path, *,
                   sampler: ArchSampler = uniform_sampler, probe_archs: Sequence[DenseRobArch] | None = None,
                   probe_images: int = 1000, tb_dir: str | Path | None = None, reporter: Reporter | None = None,
                   flip: bool | None = None) -> dict[str, float]:
    """Adversarially train the supernet of ``settings.space`` at init channels ``width``.

    ``settings.supernet`` sets the training (epochs, optimizer, attack); its
    seed is made the width's own, ``derive_seed(settings.supernet.seed,
    "supernet", width)``, which seeds every generator before the supernet is
    built. Before every batch ``sampler(layout, random)`` chooses the active
    architecture, drawing from Python's ``random`` module, which the trainer
    seeds with that seed and checkpoints, so an interrupted run resumes
    exactly and each width sees its own architecture sequence.
    After every epoch the probe (``probe_archs``, default one random
    architecture seeded by ``settings.seed``) is measured on up to
    ``probe_images`` validation images with ``settings.evaluation``'s attack;
    its reward is the intermediate result (``reporter``) and goes to
    TensorBoard (``probe/*``).

    Args:
        settings: The trial settings.
        width: Init channels C of the supernet.
        supernet_dir: Folder of the supernets: writes ``c<width>/checkpoint.pt``,
            ``c<width>/supernet.pt`` and ``c<width>/result.json``.
        sampler: The architecture of each batch (:func:`uniform_sampler`,
            :class:`PathDropSampler`, ...).
        probe_archs: The probe architectures.
        probe_images: Validation images of the probe (at most).
        tb_dir: TensorBoard folder.
        reporter: Called with each epoch's result (``default``: the probe reward).
        flip: Random horizontal flips in the augmentation (default: the dataset's
            :attr:`~nni_robust.data.DatasetInfo.flip`, off for digits and SVHN).

    Returns:
        The last epoch's probe result and training metrics, ``width`` and ``seconds``.
    """
    device = resolve_device(settings.device)
    splits = settings.data("search")
    cfg = settings.supernet
    if cfg.seed is not None:  # each width its own stream (null: the trainer draws one per width)
        cfg = cfg.replace(seed=derive_seed(cfg.seed, "supernet", int(width)))
        seed_everything(cfg.seed)  # the initial weights too
    layout = layout_of(settings.space)
    model = build_network(None, width=width, info=splits.info, space=settings.space)
    out = Path(supernet_dir) / f"c{int(width)}"
    out.mkdir(parents=True, exist_ok=True)
    final_path = supernet_path(supernet_dir, width)
    if probe_archs is None:
        probe_archs = [DenseRobArch.random(layout, random.Random(settings.seed * 1000 + 17))]
    probe = SupernetProbe.from_settings(settings, splits.val, probe_archs, images=probe_images, device=device)
    writer = summary_writer(tb_dir)
    last: dict[str, float] = {}

    def before_step(net: torch.nn.Module, step: int) -> None:
        net.set_arch(sampler(layout, random))

    def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        result = probe(model)
        writer.add_scalar("probe/reward", result["default"], epoch)
        writer.add_scalar("probe/acc_clean", result["probe_acc_clean"], epoch)
        writer.add_scalar("probe/acc_adv", result["probe_acc_adv"], epoch)
        last.clear()
        last.update({**result, **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})
        if reporter is not None:
            reporter(dict(last))

    trainer = AdversarialTrainer(model, cfg, device=device, checkpoint_path=out / "checkpoint.pt",
                                 writer=writer, before_step=before_step, on_epoch_end=on_epoch_end)
    train_loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                                seed=cfg.seed, device=device, drop_last=True,
                                flip=splits.info.flip if flip is None else bool(flip))
    start = time.perf_counter()
    history = trainer.fit(train_loader)
    seconds = time.perf_counter() - start
    writer.close()
    describe = getattr(sampler, "describe", None)
    save_checkpoint(final_path, model=model.state_dict(), width=int(width), space=dict(settings.space),
                    dataset=splits.info.name, epochs=cfg.epochs, history=history,
                    sampler=describe() if callable(describe) else getattr(sampler, "__name__", repr(sampler)))
    if not last:  # resumed after the last epoch: the probe was not re-run
        on_epoch_end(cfg.epochs - 1, history[-1] if history else {})
    result = dict(last)
    result.update({"width": float(width), "seconds": seconds})
    write_json(out / "result.json", result)
    return result
