"""The ``final`` trial task every method ends with: widen, train adversarially, evaluate.

A search exports an architecture (a ``best_architecture.json``, or the
``arch``/``sample`` of the final job); this task builds it in the settings'
space (any registered space, :mod:`nni_robust.strategies.networks`), widens it
to the target FLOPs (MSRobNet Eq. 2) unless the width is given, trains it
with ``settings.final.train`` (MSRobNet App. B.2 defaults) on the whole
training set and evaluates it with ``settings.final.attacks`` on the test set.
It is shared by every method, so it lives above the method folders.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from nni_robust.attacks import build_attack
from nni_robust.checkpoint import load_checkpoint, save_checkpoint, write_json
from nni_robust.data import TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import CheckpointError, ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_flops, count_params, search_width
from nni_robust.tb import summary_writer
from nni_robust.training import AdversarialTrainer

from .networks import arch_from_json, arch_from_sample, build_network
from .registry import TaskContext
from .settings import TrialSettings

__all__ = ["build_attacks", "train_final", "evaluate_checkpoint", "final_task"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]


def build_attacks(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    attacks: dict[str, Any] = {"clean": None}
    for key, spec in specs.items():
        spec = dict(spec)
        attacks[key] = build_attack(spec.pop("name"), **spec)
    return attacks


def train_final(settings: TrialSettings, arch: Any, out_dir: str | Path, *,
                target_mflops: float | None = None, init_channels: int | None = None,
                reporter: Reporter | None = None, tb_dir: str | Path | None = None) -> dict[str, Any]:
    """Widen ``arch`` to the target FLOPs, train it adversarially and evaluate it.

    ``arch`` is an architecture of ``settings.space`` (a :class:`DenseRobArch`, or a
    ``DartsArch`` for the ``darts``/``dsara`` spaces).

    The width is ``c(alpha) = argmin_c |FLOPs(Aug(alpha, c)) - C_T|`` (MSRobNet
    Eq. 2) unless ``init_channels`` is given. Training uses ``settings.final.train``
    (App. B.2 defaults) on the full training set; evaluation measures clean,
    FGSM, PGD-7, PGD-20 and PGD-100 accuracy on the test set. Writes
    ``final_report.json``, ``model.pt`` and TensorBoard logs; a rerun resumes from
    ``checkpoint.pt``.
    """
    if (target_mflops is None) == (init_channels is None):
        raise ConfigError("train_final needs exactly one of target_mflops or init_channels, got "
                          f"target_mflops={target_mflops!r}, init_channels={init_channels!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(settings.device)
    splits = settings.data("final")
    info = splits.info
    input_size = (info.channels, info.size, info.size)
    if init_channels is None:
        if target_mflops is None or target_mflops <= 0:
            raise ConfigError(f"target_mflops must be positive, but got {target_mflops!r}.")
        init_channels, _ = search_width(
            lambda c: build_network(arch, width=c, info=info, space=settings.space),
            target_mflops * 1e6, input_size=input_size)
    model = build_network(arch, width=int(init_channels), info=info, space=settings.space)
    mflops = count_flops(model, input_size) / 1e6
    params_m = count_params(model) / 1e6
    logger.info("Final network: init channels %d, %.1f MFLOPs, %.3f M params", init_channels, mflops, params_m)
    cfg = settings.final.train
    writer = summary_writer(tb_dir)
    attacks = build_attacks(settings.final.attacks)
    n_test = settings.final.eval_images or int(splits.val[1].shape[0])
    test_loader = TensorLoader(splits.val[0][:n_test], splits.val[1][:n_test],
                               batch_size=settings.final.eval_batch_size, shuffle=False, device=device)

    def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        if reporter is not None:
            reporter({"default": float(metrics.get("train_adv_acc", metrics.get("train_acc", 0.0))),
                      **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})

    trainer = AdversarialTrainer(model, cfg, device=device, checkpoint_path=out / "checkpoint.pt",
                                 writer=writer, on_epoch_end=on_epoch_end)
    train_loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                                seed=cfg.seed, device=device)
    start = time.perf_counter()
    history = trainer.fit(train_loader)
    train_seconds = time.perf_counter() - start
    save_checkpoint(out / "model.pt", model=model.state_dict(), arch=arch.to_json(),
                    init_channels=int(init_channels), space=dict(settings.space), dataset=info.name)
    acc = evaluate(model, test_loader, attacks, device=device)
    for key, value in acc.items():
        writer.add_scalar(f"final/{key}", value, cfg.epochs)
    writer.close()
    report = {"arch": arch.to_json(), "init_channels": int(init_channels), "mflops": mflops,
              "params_M": params_m, "target_mflops": target_mflops, "dataset": info.name,
              "test_images": n_test, "accuracy": acc, "train_seconds": train_seconds,
              "epochs": cfg.epochs, "history": history}
    write_json(out / "final_report.json", report)
    return report


def evaluate_checkpoint(settings: TrialSettings, model_path: str | Path, *,
                        out_dir: str | Path | None = None) -> dict[str, float]:
    """Evaluate a final model saved by :func:`train_final` with ``settings.final.attacks``."""
    state = load_checkpoint(model_path)
    missing = [k for k in ("model", "arch", "init_channels") if k not in state]
    if missing:
        raise CheckpointError(f"{model_path} is not a model written by the final training (nni-robust train or the "
                              f"final trial): it lacks {missing} (it has {sorted(state)}).")
    device = resolve_device(settings.device)
    splits = settings.data("final")
    space = state.get("space", settings.space)
    arch = arch_from_json(state["arch"], space)
    model = build_network(arch, width=state["init_channels"], info=splits.info, space=space)
    model.load_state_dict(state["model"])
    n_test = settings.final.eval_images or int(splits.val[1].shape[0])
    loader = TensorLoader(splits.val[0][:n_test], splits.val[1][:n_test],
                          batch_size=settings.final.eval_batch_size, shuffle=False, device=device)
    acc = evaluate(model, loader, build_attacks(settings.final.attacks), device=device)
    if out_dir is not None:
        write_json(Path(out_dir) / "evaluation.json", acc)
    return acc


def final_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``final``: args ``arch`` (JSON) or ``sample``, and ``target_mflops`` or ``init_channels``;
    optional ``space`` (the settings ``space`` of the final network, e.g. more cells than the search)."""
    settings, args = ctx.settings, ctx.args
    if args.get("space") is not None:
        settings = settings.replace(space=dict(args["space"]))
    if args.get("arch"):
        arch = arch_from_json(args["arch"], settings.space)
    elif args.get("sample"):
        arch = arch_from_sample(args["sample"], settings.space)
    else:
        raise ConfigError("task 'final' needs args 'arch' (architecture JSON) or 'sample', got neither.")
    report = train_final(settings, arch, ctx.out_dir, target_mflops=args.get("target_mflops"),
                         init_channels=args.get("init_channels"), reporter=ctx.reporter, tb_dir=ctx.tb_dir)
    acc = report["accuracy"]
    final = {"default": float(acc.get("pgd20", acc.get("clean", 0.0))),
             **{f"acc_{k}": float(v) for k, v in acc.items()},
             "mflops": report["mflops"], "params_M": report["params_M"],
             "init_channels": float(report["init_channels"])}
    return final, report
