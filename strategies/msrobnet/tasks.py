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
from pathlib import Path
from typing import Any, Callable

from nni_robust.checkpoint import write_json
from nni_robust.errors import ConfigError
from nni_robust.seeding import seed_everything
from nni_robust.spaces.dense_rob import DenseRobArch, layout_of

from ..registry import TaskContext, numeric
from ..settings import TrialSettings
from ..supernet import train_supernet as shared_train_supernet
from ..supernet import uniform_sampler
from .multishot import MultiShotEvaluator, flatten_result

__all__ = ["train_supernet", "evaluate_architecture", "supernet_task", "evaluate_task"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]


def train_supernet(settings: TrialSettings, width: int, supernet_dir: str | Path, *,
                   tb_dir: str | Path | None = None, reporter: Reporter | None = None,
                   probe_images: int = 1000) -> dict[str, float]:
    """Adversarially train one supernet of init channels ``width`` (Alg. 1, lines 2-9).

    :func:`nni_robust.strategies.supernet.train_supernet` with a uniformly
    random topology (op per edge) before every batch. The checkpoint is
    ``supernet_dir/c<width>/checkpoint.pt``; the finished weights go to
    ``supernet_dir/c<width>/supernet.pt``.

    After every epoch a fixed probe topology (seeded) is BN-calibrated and its
    clean/adversarial accuracy measured on up to ``probe_images`` validation
    images with the search-time attack; its reward is the intermediate result
    (the paper reports none; this is our choice, for watching training in the
    web UI).
    """
    layout = layout_of(settings.space)
    probe_arch = DenseRobArch.random(layout, random.Random(settings.seed * 1000 + 17))
    return shared_train_supernet(settings, width, supernet_dir, sampler=uniform_sampler, probe_archs=[probe_arch],
                                 probe_images=probe_images, tb_dir=tb_dir, reporter=reporter)


# --------------------------------------------------------------------------- evaluation

def evaluate_architecture(settings: TrialSettings, arch: DenseRobArch, *, supernet_dir: str | Path,
                          widths: list[int], target_mflops: float, family: str = "log_power",
                          mode: str = "multishot", flops_unit: float = 1e6,
                          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Multi-shot evaluation of one topology (Alg. 3); returns the full result dict.

    Every generator is seeded with ``settings.seed`` first, so that an attack
    with random starts draws the same starts for every topology."""
    seed_everything(settings.seed)
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
