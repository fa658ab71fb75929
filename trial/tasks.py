"""The work one NNI trial does: train a supernet, evaluate a topology, train the final network,
or run a whole differentiable search (DSARA / RNAS).

Each task is a plain function usable without NNI (the ``nni-robust`` CLI calls
them too); a ``reporter`` receives per-epoch intermediate results. The NNI
entry point :mod:`nni_robust.trial.run` dispatches the tuner's parameters to
them and reports their results to NNI.

Papers: MSRobNet (``msrobnet-multishot-nas.txt``) Alg. 1 lines 2-9 (supernet
training), Alg. 3 (multi-shot evaluation), Eq. 2 and App. B.2 (final training);
DSARA (``dsara.txt``) Alg. 1-3 and RNAS (``rnas.txt``) Alg. 1-2 (differentiable search).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nni_robust.attacks import build_attack
from nni_robust.bn import calibrate_bn
from nni_robust.checkpoint import load_checkpoint, save_checkpoint
from nni_robust.data import TensorLoader, load_dataset
from nni_robust.device import resolve_device
from nni_robust.errors import ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_flops, count_params, search_width
from nni_robust.reward import robust_reward
from nni_robust.spaces.dense_rob import DenseRobArch
from nni_robust.strategies.differentiable import DifferentiableSearch, search_config
from nni_robust.strategies.multishot import MultiShotEvaluator, supernet_path
from nni_robust.strategies.networks import arch_from_json, build_network, layout_of, space_name
from nni_robust.strategies.settings import TrialSettings
from nni_robust.tb import summary_writer
from nni_robust.training import AdversarialTrainer

__all__ = ["train_supernet", "evaluate_architecture", "train_final", "evaluate_checkpoint",
           "differentiable_search", "Reporter"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]


def _data(settings: TrialSettings, split: str):
    return load_dataset(settings.dataset, root=settings.data_root, val_fraction=settings.val_fraction,
                        seed=settings.seed, split=split)


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- supernet

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
    splits = _data(settings, "search")
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
    _write_json(out / "result.json", result)
    return result


# --------------------------------------------------------------------------- evaluation

def evaluate_architecture(settings: TrialSettings, arch: DenseRobArch, *, supernet_dir: str | Path,
                          widths: list[int], target_mflops: float, family: str = "log_power",
                          mode: str = "multishot", flops_unit: float = 1e6,
                          out_dir: str | Path | None = None) -> dict[str, Any]:
    """Multi-shot evaluation of one topology (Alg. 3); returns the full result dict."""
    splits = _data(settings, "search")
    evaluator = MultiShotEvaluator.from_dir(
        supernet_dir, widths, splits.val[0], splits.val[1], splits.info, space=settings.space,
        device=settings.device, settings=settings.evaluation, target_flops=target_mflops,
        family=family, mode=mode, flops_unit=flops_unit)
    result = evaluator.evaluate(arch)
    result["arch"] = arch.to_json()
    if out_dir is not None:
        _write_json(Path(out_dir) / "evaluation.json", result)
    return result


# --------------------------------------------------------------------------- final stage

def _attacks(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
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
    splits = _data(settings, "final")
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
    attacks = _attacks(settings.final.attacks)
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
    _write_json(out / "final_report.json", report)
    return report


def evaluate_checkpoint(settings: TrialSettings, model_path: str | Path, *,
                        out_dir: str | Path | None = None) -> dict[str, float]:
    """Evaluate a final model saved by :func:`train_final` with ``settings.final.attacks``."""
    state = load_checkpoint(model_path)
    device = resolve_device(settings.device)
    splits = _data(settings, "final")
    space = state.get("space", settings.space)
    arch = arch_from_json(state["arch"], space)
    model = build_network(arch, width=state["init_channels"], info=splits.info, space=space)
    model.load_state_dict(state["model"])
    n_test = settings.final.eval_images or int(splits.val[1].shape[0])
    loader = TensorLoader(splits.val[0][:n_test], splits.val[1][:n_test],
                          batch_size=settings.final.eval_batch_size, shuffle=False, device=device)
    acc = evaluate(model, loader, _attacks(settings.final.attacks), device=device)
    if out_dir is not None:
        _write_json(Path(out_dir) / "evaluation.json", acc)
    return acc


# --------------------------------------------------------------------------- differentiable search

def differentiable_search(settings: TrialSettings, method: str, method_args: Mapping[str, Any], *,
                          search_dir: str | Path, out_dir: str | Path | None = None,
                          tb_dir: str | Path | None = None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run a whole DSARA or RNAS search (one trial) and derive its architecture.

    The supernet of ``settings.space`` (``darts`` or ``dsara``) with the method's
    ``init_channels`` is searched on the search split of ``settings.dataset``
    (weights on ``train``, architecture on ``val``: set ``settings.val_fraction``
    to 0.5 for DARTS's half-and-half split) by
    :class:`nni_robust.strategies.differentiable.DifferentiableSearch`. Every
    epoch is reported to ``reporter`` and TensorBoard and checkpointed to
    ``search_dir/checkpoint.pt`` (a rerun resumes). At the end the derived
    architecture is written to ``search_dir/architecture.json`` (the format
    the ``final`` task and ``nni-robust train`` read) and the summary to
    ``search_dir/search_result.json`` (and ``out_dir/search_result.json``).

    Returns:
        The last epoch's metrics (``default``: its robust reward of the
        validation accuracies), ``epochs``, ``seconds``, ``arch`` (JSON),
        ``architecture_path``, ``history``, ``config`` and ``space``.
    """
    config = search_config(method, method_args)
    if config.seed is None:
        config = config.replace(seed=settings.seed)
    if space_name(settings.space) not in ("darts", "dsara"):
        raise ConfigError(f"A differentiable search needs settings.space with name 'darts' or 'dsara', but got "
                          f"{dict(settings.space)!r}.")
    device = resolve_device(settings.device)
    splits = _data(settings, "search")
    info = splits.info
    search_dir = Path(search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    seed = config.seed
    torch.manual_seed(seed)  # the supernet's initial weights and alpha
    model = build_network(None, width=config.init_channels, info=info, space=settings.space)
    common = dict(batch_size=config.batch_size, shuffle=True, augment=config.augment, device=device,
                  drop_last=True, flip=info.flip, channels_last=config.channels_last)
    train_loader = TensorLoader(*splits.train, seed=seed, max_images=config.max_train, **common)
    val_loader = TensorLoader(*splits.val, seed=seed + 1, max_images=config.max_val, **common)
    eval_loader = None
    if config.eval_images != 0:
        n_eval = min(config.eval_images or len(splits.val[1]), len(splits.val[1]))
        eval_loader = TensorLoader(splits.val[0][:n_eval], splits.val[1][:n_eval], batch_size=config.eval_batch_size,
                                   shuffle=False, device=device, channels_last=config.channels_last)
    writer = summary_writer(tb_dir)
    try:
        search = DifferentiableSearch(model, config, device=device, checkpoint_path=search_dir / "checkpoint.pt",
                                      writer=writer, reporter=reporter, log_every=50)
        start = time.perf_counter()
        history = search.fit(train_loader, val_loader, eval_loader)
        seconds = time.perf_counter() - start
        arch = search.derive()
        writer.add_text("search/architecture", arch.to_json(indent=2).replace("\n", "  \n"), search.epoch)
    finally:
        writer.close()
    arch_path = search_dir / "architecture.json"
    arch_path.write_text(arch.to_json(indent=2))
    with (search_dir / "architectures.jsonl").open("w") as fh:  # one per epoch (DSARA Sec. 4.3)
        for metrics, arch_json in zip(history, search.architectures):
            row = {k: metrics[k] for k in ("epoch", "stage", "val_clean_acc", "val_adv_acc", "default") if k in metrics}
            fh.write(json.dumps({**row, "arch": json.loads(arch_json)}, sort_keys=True) + "\n")
    last = dict(history[-1]) if history else {}
    last.setdefault("default", float(last.get("arch_acc_adv", last.get("arch_acc_nat", 0.0))))
    result = {**last, "epochs": float(search.epoch), "seconds": seconds, "arch": arch.to_json(),
              "architecture_path": str(arch_path), "history": history, "config": search.config.to_dict(),
              "space": dict(settings.space), "dataset": info.name}
    _write_json(search_dir / "search_result.json", result)
    if out_dir is not None:
        _write_json(Path(out_dir) / "search_result.json", result)
    logger.info("%s search done (%d epochs, %.0f s): %s", method, search.epoch, seconds, arch)
    return result
