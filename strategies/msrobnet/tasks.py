"""MSRobNet's trial tasks: train one supernet (Alg. 1 lines 2-9), evaluate one topology (Alg. 3).

Papers: ``msrobnet-multishot-nas.txt``, Alg. 1 lines 2-9 (the K supernets of
different widths, adversarially trained with a random topology per batch) and
Alg. 3 (multi-shot evaluation: BN calibration and the FGSM reward in each
supernet, extrapolated to the target FLOPs). Registered as the tasks
``supernet`` and ``evaluate`` (see ``__init__``); each is a plain function
usable without NNI too.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nni_robust.attacks import build_attack
from nni_robust.bn import calibrate_bn
from nni_robust.checkpoint import save_checkpoint, write_json
from nni_robust.data import TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.reward import robust_reward
from nni_robust.spaces.dense_rob import DenseRobArch, layout_of
from nni_robust.tb import summary_writer
from nni_robust.training import AdversarialTrainer

from ..networks import build_network
from ..registry import TaskContext, numeric
from ..settings import TrialSettings
from .multishot import MultiShotEvaluator, flatten_result, supernet_path

__all__ = ["train_supernet", "evaluate_architecture", "supernet_task", "evaluate_task"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]


def train_supernet(settings: TrialSettings, width: int, supernet_dir: str | Path, *,
                   tb_dir: str | Path | None = None, reporter: Reporter | None = None,
                   probe_images: int = 1000) -> dict[str, float]:
    """Adversarially train one supernet of init channels ``width`` (Alg. 1, lines 2-9).

    A random topology (uniform op per edge) is sampled before every batch; the
    sampling draws from Python's ``random`` module, whose state the trainer's
    checkpoints save, so an interrupted run resumes exactly. The checkpoint is
    ``supernet_dir/c<width>/checkpoint.pt``; the finished weights go to
    ``supernet_dir/c<width>/supernet.pt``.

    After every epoch a fixed probe topology (seeded) is BN-calibrated and its
    clean/adversarial accuracy measured on up to ``probe_images`` validation
    images with the search-time attack; its reward is the intermediate result
    (the paper reports none; this is our choice, for watching training in the
    web UI).
    """
    device = resolve_device(settings.device)
    splits = settings.data("search")
    cfg = settings.supernet
    layout = layout_of(settings.space)
    model = build_network(None, width=width, info=splits.info, space=settings.space)
    out = Path(supernet_dir) / f"c{int(width)}"
    out.mkdir(parents=True, exist_ok=True)
    final_path = supernet_path(supernet_dir, width)

    probe_arch = DenseRobArch.random(layout, random.Random(settings.seed * 1000 + 17))
    ev = settings.evaluation
    n_val = int(splits.val[1].shape[0])
    n_calib = min(ev.calib_images, n_val)
    n_probe = min(probe_images, ev.eval_images or n_val // 2, n_val)
    calib = TensorLoader(splits.val[0][:n_calib], splits.val[1][:n_calib], batch_size=ev.calib_batch_size,
                         shuffle=False, device=device)
    probe = TensorLoader(splits.val[0][:n_probe], splits.val[1][:n_probe], batch_size=ev.batch_size,
                         shuffle=False, device=device)
    attack = build_attack(ev.attack, eps=ev.eps, step=ev.step if ev.step is not None else ev.eps,
                          **({"steps": ev.steps} if ev.attack == "pgd" else {}), autocast=ev.autocast)
    writer = summary_writer(tb_dir)
    last: dict[str, float] = {}

    def before_step(net: torch.nn.Module, step: int) -> None:
        net.set_arch(DenseRobArch.random(layout, random))

    def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        model.set_arch(probe_arch)
        calibrate_bn(model, calib, device=device)
        acc = evaluate(model, probe, {"clean": None, "adv": attack}, device=device, autocast=ev.autocast)
        reward = float(robust_reward(acc["clean"], acc["adv"], ev.lam))
        writer.add_scalar("probe/reward", reward, epoch)
        writer.add_scalar("probe/acc_clean", acc["clean"], epoch)
        writer.add_scalar("probe/acc_adv", acc["adv"], epoch)
        last.clear()
        last.update({"default": reward, "probe_acc_clean": acc["clean"], "probe_acc_adv": acc["adv"],
                     **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})
        if reporter is not None:
            reporter(dict(last))

    random.seed(cfg.seed * 7919 + int(width))
    trainer = AdversarialTrainer(model, cfg, device=device, checkpoint_path=out / "checkpoint.pt",
                                 writer=writer, before_step=before_step, on_epoch_end=on_epoch_end)
    train_loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                                seed=cfg.seed, device=device, drop_last=True)
    start = time.perf_counter()
    history = trainer.fit(train_loader)
    seconds = time.perf_counter() - start
    writer.close()
    save_checkpoint(final_path, model=model.state_dict(), width=int(width), space=dict(settings.space),
                    dataset=splits.info.name, epochs=cfg.epochs, history=history)
    if not last:  # resumed after the last epoch: the probe was not re-run
        on_epoch_end(cfg.epochs - 1, history[-1] if history else {})
    result = dict(last)
    result.update({"width": float(width), "seconds": seconds})
    write_json(out / "result.json", result)
    return result


# --------------------------------------------------------------------------- evaluation

def evaluate_architecture(settings: TrialSettings, arch: DenseRobArch, *, supernet_dir: str | Path,
                          widths: list[int], target_mflops: float, family: str = "log_power",
                          mode: str = "multishot", flops_unit: float = 1e6,
                          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Multi-shot evaluation of one topology (Alg. 3); returns the full result dict."""
    splits = settings.data("search")
    evaluator = MultiShotEvaluator.from_dir(
        supernet_dir, widths, splits.val[0], splits.val[1], splits.info, space=settings.space,
        device=settings.device, settings=settings.evaluation, target_flops=target_mflops,
        family=family, mode=mode, flops_unit=flops_unit)
    result = evaluator.evaluate(arch)
    result["arch"] = arch.to_json()
    if out_dir is not None:
        write_json(Path(out_dir) / "evaluation.json", result)
    return result


def _supernet_dir(ctx: TaskContext) -> Path:
    return Path(ctx.args.get("supernet_dir") or ctx.work_dir / "supernets")


def supernet_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``supernet``: args ``width`` (optional ``supernet_dir``, default ``<work_dir>/supernets``)."""
    result = train_supernet(ctx.settings, int(ctx.require("width")), _supernet_dir(ctx), tb_dir=ctx.tb_dir,
                            reporter=ctx.reporter)
    return numeric(result), result


def evaluate_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``evaluate``: the sample is a topology; args ``widths``, ``target_mflops``, optional
    ``family``, ``mode``, ``flops_unit`` and ``supernet_dir``."""
    if not ctx.sample:
        raise ConfigError("task 'evaluate' needs a 'sample' (the topology), got none.")
    arch = DenseRobArch.from_sample(ctx.sample, layout_of(ctx.settings.space))
    args = ctx.args
    full = evaluate_architecture(
        ctx.settings, arch, supernet_dir=_supernet_dir(ctx), widths=[int(w) for w in ctx.require("widths")],
        target_mflops=float(ctx.require("target_mflops")), family=args.get("family", "log_power"),
        mode=args.get("mode", "multishot"), flops_unit=float(args.get("flops_unit", 1e6)), out_dir=ctx.out_dir)
    return flatten_result(full), full
