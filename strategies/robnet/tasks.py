"""RobNet's trial tasks: the supernet (Sec. 3.2), fine-tuned evaluation (Sec. 3.2), FSP scores (Sec. 3.5).

Paper: ``robnet.txt`` (Guo et al., "When NAS Meets Robustness", CVPR 2020).

* ``robnet_supernet`` -- one weight-sharing supernet of the dense robust cell
  space, PGD adversarially trained with a path-dropped architecture per batch
  ("Robust Search Algorithm", Sec. 3.2), through the shared
  :func:`nni_robust.strategies.supernet.train_supernet`.
* ``robnet_finetune`` -- "Robustness Evaluation" (Sec. 3.2): the sampled
  architecture is built as a discrete network that *inherits* its weights
  from the supernet ("collect candidate architectures by random sampling
  from the supernet and inheriting weights"; the discrete network's
  parameters are a subset of the supernet's, copied by name), is fine-tuned
  adversarially for a few epochs (3 in Sec. 3.3), and its clean and PGD
  accuracy on the validation split are measured after every epoch (the NNI
  intermediate results) -- and once before fine-tuning, after BN
  calibration (Fig. 3a). Fine-tuning the discrete network rather than the
  supernet with the architecture fixed gives the same function and
  gradients but builds only the chosen ops: less memory and time.
* ``robnet_fsp`` -- Sec. 3.5: for a batch of sampled architectures, each
  activated in the supernet *without* fine-tuning and BN-calibrated, the FSP
  matrix distances between clean and adversarial inputs per cell and the
  robustness indicator (:mod:`.fsp`), plus the clean and adversarial
  accuracy (the gap Fig. 7 plots). One trial scores many candidates: the
  supernet is loaded once and each candidate costs seconds, far less than a
  fine-tuning trial.

Choices where the paper is silent (all are task arguments or settings):
the fine-tuning optimizer (:data:`FINETUNE_DEFAULTS`: ``settings.supernet``'s
PGD-7 SGD with lr 0.01, cosine over the fine-tuning epochs, no warmup);
the training images of one fine-tuning epoch (default all of the search
split's training part); the evaluation attack and images
(``settings.evaluation``: the RobNet experiments use PGD-7, 8/255, 2/255, on
the first half of the validation split).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from nni_robust.bn import calibrate_bn
from nni_robust.checkpoint import load_checkpoint, write_json
from nni_robust.data import DataSplits, DatasetInfo, TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_params
from nni_robust.seeding import seed_everything
from nni_robust.spaces.dense_rob import DenseRobArch, dense_rob_flops, layout_of
from nni_robust.tb import summary_writer
from nni_robust.training import AdversarialTrainer, TrainConfig

from ..networks import build_network
from ..registry import TaskContext, numeric
from ..settings import TrialSettings
from ..supernet import PathDropSampler, search_attack, supernet_path, train_supernet
from .analysis import arch_stats
from .fsp import DEFAULT_DEEP_FRACTION, fsp_distances

__all__ = ["FINETUNE_DEFAULTS", "FSP_DEFAULTS", "finetune_architecture", "finetune_config", "fsp_scores",
           "inherit_weights", "load_supernet", "robnet_finetune_task", "robnet_fsp_task",
           "robnet_supernet_task"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]

#: Fine-tuning = ``settings.supernet`` (PGD-7 adversarial training) with these changes (the paper gives
#: only "a few epochs", 3 in Sec. 3.3; the rest is our choice), then the task's ``finetune`` overrides.
FINETUNE_DEFAULTS: dict[str, Any] = {"lr": 0.01, "schedule": "cosine", "warmup_epochs": 0, "milestones": ()}
#: The FSP computation's defaults (see :func:`fsp_scores`).
FSP_DEFAULTS: dict[str, Any] = {"images": 256, "batch_size": 64, "cells": "all", "deep_cells": DEFAULT_DEEP_FRACTION,
                                "aggregate": "mean", "cell_input": "s1", "normalize": "none", "accuracy": True,
                                "seed": 0}


# --------------------------------------------------------------------------- supernet


def robnet_supernet_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``robnet_supernet``: args ``width``; optional ``supernet_dir`` (default
    ``<work_dir>/supernet``), ``path_drop_prob`` (0.5), ``probe_archs`` (1), ``probe_images`` (1000)."""
    settings, args = ctx.settings, ctx.args
    layout = layout_of(settings.space)
    sampler = PathDropSampler(float(args.get("path_drop_prob", 0.5)))
    rng = random.Random(settings.seed * 1000 + 17)
    n_probe = int(args.get("probe_archs", 1))
    if n_probe < 1:
        raise ConfigError(f"probe_archs must be >= 1, but got {n_probe}.")
    probes = [DenseRobArch.random(layout, rng) for _ in range(n_probe)]
    supernet_dir = Path(args.get("supernet_dir") or ctx.work_dir / "supernet")
    result = train_supernet(settings, int(ctx.require("width")), supernet_dir, sampler=sampler, probe_archs=probes,
                            probe_images=int(args.get("probe_images", 1000)), tb_dir=ctx.tb_dir,
                            reporter=ctx.reporter)
    full = {**result, "path_drop_prob": sampler.drop_prob, "supernet": str(supernet_path(supernet_dir,
                                                                                           int(args["width"])))}
    return numeric(result), full


# --------------------------------------------------------------------------- weights


def load_supernet(settings: TrialSettings, supernet_dir: str | Path, width: int, info: DatasetInfo, *,
                  build: bool = True) -> tuple[nn.Module | None, dict[str, Any]]:
    """The trained supernet of ``settings.space`` at ``width`` (and its checkpoint dict).

    Args:
        build: Build the supernet module and load the weights (else only the checkpoint is read).

    Raises:
        CheckpointError: no supernet file, or it was trained for another layout.
    """
    path = supernet_path(supernet_dir, width)
    if not path.exists():
        found = sorted(p.parent.name for p in Path(supernet_dir).glob("c*/supernet.pt"))
        raise CheckpointError(f"No trained supernet of width {width} at {path} (found: {found or 'none'}); "
                              f"the supernet trial must finish first.")
    state = load_checkpoint(path)
    saved = layout_of(dict(state.get("space") or {}))
    if saved != layout_of(settings.space):
        raise CheckpointError(f"The supernet {path} was trained for layout {saved.name!r}, but settings.space "
                              f"has layout {layout_of(settings.space).name!r}.")
    model = None
    if build:
        model = build_network(None, width=int(width), info=info, space=settings.space)
        model.load_state_dict(state["model"])
    return model, state


def inherit_weights(model: nn.Module, supernet_state: Mapping[str, torch.Tensor]) -> int:
    """Copy a discrete network's parameters and buffers from the supernet's state dict, by name.

    A discrete :class:`~nni_robust.spaces.dense_rob.DenseRobNetwork` builds
    only its architecture's ops, so its state-dict keys are a subset of the
    supernet's (same width and layout).

    Returns:
        The number of tensors copied.

    Raises:
        CheckpointError: a tensor missing in the supernet, or of another shape.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in supernet_state]
    wrong = [f"{k} {tuple(supernet_state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in supernet_state and supernet_state[k].shape != v.shape]
    if missing or wrong:
        raise CheckpointError(f"The network cannot inherit the supernet's weights: missing {missing[:5]}, "
                              f"shape mismatch {wrong[:5]} (same width, layout and space settings needed).")
    model.load_state_dict({k: supernet_state[k] for k in own})
    return len(own)


# --------------------------------------------------------------------------- fine-tuning


def finetune_config(settings: TrialSettings, overrides: Mapping[str, Any] | None = None,
                    epochs: int = 3) -> TrainConfig:
    """The fine-tuning :class:`TrainConfig`: ``settings.supernet`` + :data:`FINETUNE_DEFAULTS` +
    ``overrides``, with ``epochs``.

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    data = settings.supernet.to_dict()
    data.update(FINETUNE_DEFAULTS)
    data.update(dict(overrides or {}))
    data["epochs"] = int(epochs)
    return TrainConfig.from_dict(data, "finetune")


def _val_loaders(settings: TrialSettings, val: tuple[torch.Tensor, torch.Tensor], device: torch.device,
                 images: int | None = None, batch_size: int | None = None) -> tuple[TensorLoader, TensorLoader, int]:
    """(calibration loader, evaluation loader, evaluation images) on the validation split."""
    ev = settings.evaluation
    n_val = int(val[1].shape[0])
    n_calib = min(ev.calib_images, n_val)
    start = min(ev.eval_offset, n_val - 1)
    n_eval = min(images or ev.eval_images or n_val // 2, n_val - start)
    calib = TensorLoader(val[0][:n_calib], val[1][:n_calib], batch_size=ev.calib_batch_size, shuffle=False,
                         device=device)
    data = TensorLoader(val[0][start:start + n_eval], val[1][start:start + n_eval],
                        batch_size=batch_size or ev.batch_size, shuffle=False, device=device)
    return calib, data, n_eval


def finetune_architecture(settings: TrialSettings, arch: DenseRobArch, *, supernet_dir: str | Path, width: int,
                          epochs: int = 3, finetune: Mapping[str, Any] | None = None,
                          train_images: int | None = None, measure_before: bool = True,
                          reporter: Reporter | None = None, tb_dir: str | Path | None = None,
                          out_dir: str | Path | None = None, splits: DataSplits | None = None) -> dict[str, Any]:
    """Inherit ``arch``'s weights from the supernet, fine-tune adversarially, measure clean and PGD accuracy.

    RobNet Sec. 3.2 ("Robustness Evaluation"). Validation: clean and
    ``settings.evaluation`` attack accuracy on the evaluation images of the
    validation split, after every epoch (``reporter``: ``default`` = the
    adversarial accuracy, the paper's robustness indicator) and, with
    ``measure_before``, with the inherited weights (Fig. 3a). Every
    measurement first calibrates BN on the calibration images (the inherited
    running statistics are the supernet's; after a few epochs the running
    averages still lag the weights -- the paper does not say how it
    evaluates). Nothing is checkpointed (three epochs; thousands of trials).

    Args:
        settings: The trial settings (``space``: the supernet's).
        arch: The architecture.
        supernet_dir: Folder of ``c<width>/supernet.pt``.
        width: Init channels (the supernet's).
        epochs: Fine-tuning epochs (paper: 3).
        finetune: :class:`TrainConfig` overrides (see :func:`finetune_config`).
        train_images: Training images per epoch (default: the whole training part of the search split).
        measure_before: Also measure the accuracies before fine-tuning.
        reporter: Called after every epoch.
        tb_dir: TensorBoard folder.
        out_dir: Where ``finetune.json`` goes.
        splits: The data (default ``settings.data("search")``).

    Returns:
        ``default``/``acc_adv``, ``acc_clean``, ``gap`` (clean - adversarial),
        ``acc_clean_before``/``acc_adv_before``, the architecture's density and
        convolution counts, ``params_M``, ``mflops``, timings, ``history``, ``arch``.
    """
    t_start = time.perf_counter()
    device = resolve_device(settings.device)
    splits = splits if splits is not None else settings.data("search")
    info = splits.info
    cfg = finetune_config(settings, finetune, epochs)
    if cfg.seed is not None:  # the measurement before fine-tuning draws random starts too
        seed_everything(cfg.seed)
    _, state = load_supernet(settings, supernet_dir, width, info, build=False)
    model = build_network(arch, width=int(width), info=info, space=settings.space)
    inherit_weights(model, state["model"])
    del state
    model.to(device)
    calib, data, n_eval = _val_loaders(settings, splits.val, device)
    attack = search_attack(settings.evaluation)
    attacks = {"clean": None, "adv": attack}
    writer = summary_writer(tb_dir)
    result: dict[str, Any] = {}
    if measure_before:
        t0 = time.perf_counter()
        calibrate_bn(model, calib, device=device)
        before = evaluate(model, data, attacks, device=device, autocast=settings.evaluation.autocast)
        result.update(acc_clean_before=before["clean"], acc_adv_before=before["adv"],
                      before_seconds=time.perf_counter() - t0)
        writer.add_scalar("finetune/acc_clean", before["clean"], 0)
        writer.add_scalar("finetune/acc_adv", before["adv"], 0)

    history: list[dict[str, float]] = []

    def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        t0 = time.perf_counter()
        calibrate_bn(model, calib, device=device)
        acc = evaluate(model, data, attacks, device=device, autocast=settings.evaluation.autocast)
        step = {"default": float(acc["adv"]), "acc_clean": float(acc["clean"]), "acc_adv": float(acc["adv"]),
                "epoch": float(epoch), "train_loss": float(metrics["train_loss"]),
                "train_acc": float(metrics["train_acc"]), "val_seconds": time.perf_counter() - t0}
        history.append({**{k: float(v) for k, v in metrics.items()}, **step})
        writer.add_scalar("finetune/acc_clean", step["acc_clean"], epoch)
        writer.add_scalar("finetune/acc_adv", step["acc_adv"], epoch)
        if reporter is not None:
            reporter(step)

    trainer = AdversarialTrainer(model, cfg, device=device, writer=writer, on_epoch_end=on_epoch_end)
    train_loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                                seed=cfg.seed, device=device, drop_last=True, flip=info.flip,
                                channels_last=cfg.channels_last, max_images=train_images)
    t0 = time.perf_counter()
    trainer.fit(train_loader)
    finetune_seconds = time.perf_counter() - t0
    writer.close()
    last = history[-1]
    stats = arch_stats(arch)
    result.update({
        "default": last["acc_adv"], "acc_adv": last["acc_adv"], "acc_clean": last["acc_clean"],
        "gap": last["acc_clean"] - last["acc_adv"], "eval_images": n_eval, "epochs": cfg.epochs,
        "train_images": train_loader.num_images, "density": stats.density, "edge_density": stats.edge_density,
        "convs": stats.convs, "direct_convs": stats.direct_convs, "skip_convs": stats.skip_convs,
        "params_M": count_params(model) / 1e6,
        "mflops": dense_rob_flops(arch, init_channels=int(width), num_classes=info.num_classes,
                                  in_channels=info.channels, input_size=info.size) / 1e6,
        "finetune_seconds": finetune_seconds, "seconds": time.perf_counter() - t_start})
    full = {**result, "arch": arch.to_json(), "budget": stats.budget, "direct_share": stats.direct_share,
            "history": history, "finetune": cfg.to_dict()}
    if out_dir is not None:
        write_json(Path(out_dir) / "finetune.json", full)
    logger.info("Fine-tuned %s: clean %.4f, adversarial %.4f (before: %s) in %.1f s", arch, result["acc_clean"],
                result["acc_adv"], result.get("acc_adv_before"), result["seconds"])
    return full


def _supernet_dir(ctx: TaskContext) -> Path:
    return Path(ctx.args.get("supernet_dir") or ctx.work_dir / "supernet")


def robnet_finetune_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``robnet_finetune``: the sample is the architecture; args ``width``; optional
    ``supernet_dir``, ``epochs`` (3), ``finetune`` (TrainConfig overrides), ``train_images``,
    ``measure_before`` (true)."""
    if not ctx.sample:
        raise ConfigError("task 'robnet_finetune' needs a 'sample' (the architecture), got none.")
    arch = DenseRobArch.from_sample(ctx.sample, layout_of(ctx.settings.space))
    args = ctx.args
    full = finetune_architecture(
        ctx.settings, arch, supernet_dir=_supernet_dir(ctx), width=int(ctx.require("width")),
        epochs=int(args.get("epochs", 3)), finetune=args.get("finetune"), train_images=args.get("train_images"),
        measure_before=bool(args.get("measure_before", True)), reporter=ctx.reporter, tb_dir=ctx.tb_dir,
        out_dir=ctx.out_dir)
    return numeric({k: v for k, v in full.items() if k != "history"}), full


# --------------------------------------------------------------------------- FSP


def fsp_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`FSP_DEFAULTS` updated by ``options``.

    Raises:
        ConfigError: an unknown key.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(FSP_DEFAULTS))
    if unknown:
        raise ConfigError(f"Unknown FSP options {unknown}; valid: {sorted(FSP_DEFAULTS)}.")
    return {**FSP_DEFAULTS, **options}


def fsp_scores(settings: TrialSettings, archs: Sequence[DenseRobArch], *, supernet_dir: str | Path, width: int,
               options: Mapping[str, Any] | None = None, out_file: str | Path | None = None,
               reporter: Reporter | None = None, splits: DataSplits | None = None) -> dict[str, Any]:
    """The FSP robustness indicator (Sec. 3.5) of each architecture, inside the supernet, without fine-tuning.

    For each architecture: activate it in the supernet, calibrate BN on the
    validation split's calibration images, compute the FSP distances of its
    cells between clean and adversarial (``settings.evaluation`` attack)
    versions of ``images`` evaluation images and the indicator
    (:func:`.fsp.fsp_distances`), and, with ``accuracy``, its clean and
    adversarial accuracy on the evaluation images (the gap of Fig. 7).

    Args:
        options: :data:`FSP_DEFAULTS` overrides: ``images``, ``batch_size``
            (memory: the clean FSP matrices of a batch are held per cell),
            ``cells`` (``"all"`` or ``"deep"``), ``deep_cells``,
            ``aggregate``, ``cell_input``, ``normalize``, ``accuracy``, ``seed``.
        out_file: Where the JSON of all results goes.
        reporter: Called after every architecture with the running mean indicator.
        splits: The data (default ``settings.data("search")``).

    Returns:
        ``{"results": [{"sample", "indicator", "distances", "deep_cells",
        "acc_clean", "acc_adv", "fsp_seconds", "accuracy_seconds"}, ...],
        "options", "fsp_seconds_per_arch", "seconds", "load_seconds"}``.
    """
    t_start = time.perf_counter()
    opts = fsp_options(options)
    seed_everything(int(opts["seed"]))  # the accuracies' random starts (the FSP distances fork their own)
    device = resolve_device(settings.device)
    splits = splits if splits is not None else settings.data("search")
    model, _ = load_supernet(settings, supernet_dir, width, splits.info)
    model.to(device)
    calib, data, n_eval = _val_loaders(settings, splits.val, device)
    _, fsp_data, n_fsp = _val_loaders(settings, splits.val, device, images=int(opts["images"]),
                                      batch_size=int(opts["batch_size"]))
    attack = search_attack(settings.evaluation)
    load_seconds = time.perf_counter() - t_start
    results = []
    for k, arch in enumerate(archs):
        model.set_arch(arch)
        t0 = time.perf_counter()
        calibrate_bn(model, calib, device=device)
        fsp = fsp_distances(model, fsp_data, attack=attack, cells=opts["cells"], cell_input=opts["cell_input"],
                            deep_cells=opts["deep_cells"], aggregate=opts["aggregate"], normalize=opts["normalize"],
                            device=device, seed=int(opts["seed"]))
        fsp_seconds = time.perf_counter() - t0
        row = {"sample": arch.to_sample(), "indicator": fsp.indicator, **fsp.to_dict(), "fsp_seconds": fsp_seconds}
        if opts["accuracy"]:
            t0 = time.perf_counter()
            acc = evaluate(model, data, {"clean": None, "adv": attack}, device=device,
                           autocast=settings.evaluation.autocast)
            row.update(acc_clean=acc["clean"], acc_adv=acc["adv"], accuracy_seconds=time.perf_counter() - t0)
        results.append(row)
        if reporter is not None:
            reporter({"default": sum(r["indicator"] for r in results) / len(results), "screened": float(k + 1)})
    out = {"results": results, "options": opts, "fsp_images": n_fsp, "eval_images": n_eval,
           "fsp_seconds_per_arch": sum(r["fsp_seconds"] for r in results) / max(1, len(results)),
           "load_seconds": load_seconds, "seconds": time.perf_counter() - t_start}
    if out_file is not None:
        write_json(out_file, out)
    return out


def robnet_fsp_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``robnet_fsp``: args ``samples`` (architectures), ``width``; optional ``supernet_dir``,
    ``fsp`` (options, see :func:`fsp_scores`), ``out_file`` (default ``<out_dir>/fsp.json``)."""
    layout = layout_of(ctx.settings.space)
    samples = ctx.require("samples")
    archs = [DenseRobArch.from_sample(s, layout) for s in samples]
    out_file = ctx.args.get("out_file") or ctx.out_dir / "fsp.json"
    full = fsp_scores(ctx.settings, archs, supernet_dir=_supernet_dir(ctx), width=int(ctx.require("width")),
                      options=ctx.args.get("fsp"), out_file=out_file, reporter=ctx.reporter)
    indicators = [r["indicator"] for r in full["results"]]
    final = {"default": sum(indicators) / len(indicators), "screened": float(len(indicators)),
             "fsp_seconds_per_arch": full["fsp_seconds_per_arch"], "seconds": full["seconds"]}
    return final, full


robnet_fsp_task.trial_kind = "screening"  # its default (an FSP distance) is not the search's objective
