"""The ``final`` trial task every method ends with: widen, train adversarially, evaluate.

A search exports an architecture (a ``best_architecture.json``, or the
``arch``/``sample`` of the final job); this task builds it in the settings'
space (any registered space, :mod:`nni_robust.strategies.networks`), widens it
to the target FLOPs (MSRobNet Eq. 2) unless the width is given, trains it
with ``settings.final.train`` (MSRobNet App. B.2 defaults) on the whole
training set and evaluates it with ``settings.final.attacks`` on the test set.
It is shared by every method, so it lives above the method folders.

With ``settings.final.nproc`` (or ``nproc``) above 1 the training runs
data-parallel (:mod:`nni_robust.distributed`): the calling process (the NNI
trial, or ``nni-robust train``) starts ``torchrun`` with that many processes
on its machine (``python -m nni_robust.strategies.final --job JOB``), relays
the per-epoch metrics that rank 0 writes to ``epochs.jsonl`` to its reporter
(so NNI gets them from rank 0 alone), waits, and returns rank 0's
``final_report.json``. Rank 0 alone writes the checkpoint (exact resume:
rerun with the same number of processes), ``model.pt``, the TensorBoard logs
and the report, and evaluates the trained network. Already inside a torchrun
run (``torchrun ... -m nni_robust.trial.cli train``) it trains in place.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from nni_robust import distributed
from nni_robust.attacks import build_attack
from nni_robust.checkpoint import load_checkpoint, save_checkpoint, write_json
from nni_robust.data import DATASETS, TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import CheckpointError, ConfigError, NniRobustError
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_flops, count_params, search_width
from nni_robust.progress import ProgressFactory, track
from nni_robust.seeding import seed_everything
from nni_robust.tb import add_architecture, summary_writer
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
                reporter: Reporter | None = None, tb_dir: str | Path | None = None,
                nproc: int | None = None, progress: ProgressFactory | None = None) -> dict[str, Any] | None:
    """Widen ``arch`` to the target FLOPs, train it adversarially and evaluate it.

    ``arch`` is an architecture of ``settings.space`` (a :class:`DenseRobArch`, or a
    ``DartsArch`` for the ``darts``/``dsara`` spaces).

    The width is ``c(alpha) = argmin_c |FLOPs(Aug(alpha, c)) - C_T|`` (MSRobNet
    Eq. 2) unless ``init_channels`` is given. Training uses ``settings.final.train``
    (App. B.2 defaults) on the full training set; evaluation measures clean,
    FGSM, PGD-7, PGD-20 and PGD-100 accuracy on the test set. Writes
    ``final_report.json``, ``model.pt`` and TensorBoard logs; a rerun resumes from
    ``checkpoint.pt``. Every generator is seeded with ``settings.final.train.seed``
    before the network is built, and with ``settings.seed`` before the test-set
    evaluation (as :func:`evaluate_checkpoint` does: the same attacks' random starts).

    ``nproc`` (default ``settings.final.nproc``) above 1 trains with that many
    processes under torchrun (see the module docstring); inside a torchrun run
    the run's processes train together. Only rank 0 returns the report (the
    others return ``None``).

    ``progress`` (a :mod:`nni_robust.progress` factory, e.g. ``tqdm.tqdm``) shows
    bars for the training and the evaluation (one process only); None shows none.
    """
    if (target_mflops is None) == (init_channels is None):
        raise ConfigError("train_final needs exactly one of target_mflops or init_channels, got "
                          f"target_mflops={target_mflops!r}, init_channels={init_channels!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nproc = settings.final.nproc if nproc is None else nproc
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"the number of processes of the final training must be an integer >= 1, but got {nproc!r}.")
    if nproc > 1 and not distributed.env_info().enabled:
        return _launch(settings, arch, out, nproc=nproc, target_mflops=target_mflops, init_channels=init_channels,
                       reporter=reporter, tb_dir=tb_dir)
    owned = distributed.env_info().enabled and not distributed.current().enabled
    info, device = distributed.setup(settings.device)
    try:
        return _train_final(settings, arch, out, info, device, target_mflops=target_mflops,
                            init_channels=init_channels, reporter=reporter, tb_dir=tb_dir,
                            progress=progress if not distributed.env_info().enabled else None)
    finally:
        if owned:
            distributed.shutdown()


def _train_final(settings: TrialSettings, arch: Any, out: Path, ranks: distributed.DistInfo, device: Any, *,
                 target_mflops: float | None, init_channels: int | None, reporter: Reporter | None,
                 tb_dir: str | Path | None, progress: ProgressFactory | None = None) -> dict[str, Any] | None:
    splits = settings.data("final")
    info = splits.info
    input_size = (info.channels, info.size, info.size)
    if init_channels is None:
        if target_mflops is None or target_mflops <= 0:
            raise ConfigError(f"target_mflops must be positive, but got {target_mflops!r}.")
        init_channels, _ = search_width(
            lambda c: build_network(arch, width=c, info=info, space=settings.space),
            target_mflops * 1e6, input_size=input_size)
    if settings.final.train.seed is not None:  # the initial weights come from the training seed
        seed_everything(settings.final.train.seed)
    model = build_network(arch, width=int(init_channels), info=info, space=settings.space)
    mflops = count_flops(model, input_size) / 1e6
    params_m = count_params(model) / 1e6
    logger.info("Final network: init channels %d, %.1f MFLOPs, %.3f M params", init_channels, mflops, params_m)
    cfg = settings.final.train
    writer = summary_writer(tb_dir) if ranks.is_main else None  # rank 0 logs, checkpoints and reports
    if writer is not None:  # the architecture, drawn (TensorBoard's images tab)
        add_architecture(writer, arch, title=f"final network: {init_channels} initial channels, {mflops:.2f} MFLOPs, "
                         f"{params_m:.3f} M parameters")
    attacks = build_attacks(settings.final.attacks)
    n_test = settings.final.eval_images or int(splits.val[1].shape[0])
    test_loader = TensorLoader(splits.val[0][:n_test], splits.val[1][:n_test],
                               batch_size=settings.final.eval_batch_size, shuffle=False, device=device)

    def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
        if reporter is not None:
            reporter({"default": float(metrics.get("train_adv_acc", metrics.get("train_acc", 0.0))),
                      **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})

    if ranks.enabled:
        logger.info("Data-parallel final training: rank %d of %d on %s, global batch %d", ranks.rank,
                    ranks.world_size, device, cfg.batch_size)
    trainer = AdversarialTrainer(model, cfg, device=device, checkpoint_path=out / "checkpoint.pt",
                                 writer=writer, on_epoch_end=on_epoch_end if ranks.is_main else None,
                                 distributed=ranks.enabled, progress=progress)
    train_loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                                seed=cfg.seed, device=device, rank=ranks.rank, world_size=ranks.world_size)
    start = time.perf_counter()
    history = trainer.fit(train_loader)
    train_seconds = time.perf_counter() - start
    if not ranks.is_main:
        return None
    model = trainer.model  # (with synchronised BatchNorm layers when data-parallel: same state dict)
    save_checkpoint(out / "model.pt", model=model.state_dict(), arch=arch.to_json(),
                    init_channels=int(init_channels), space=dict(settings.space), dataset=info.name)
    seed_everything(settings.seed)  # the attacks' random starts, as evaluate_checkpoint's
    acc = evaluate(model, track(test_loader, progress, desc="evaluation"), attacks, device=device)
    for key, value in acc.items():
        writer.add_scalar(f"final/{key}", value, cfg.epochs)
    robustness = None
    if settings.final.robustness is not None:
        robustness = robustness_summary(run_robustness(model, settings.final.robustness, splits.val[0][:n_test],
                                                       splits.val[1][:n_test], out, seed=settings.seed,
                                                       device=device, batch_size=settings.final.eval_batch_size,
                                                       progress=progress is not None))
        for key, value in robustness["metrics"].items():
            writer.add_scalar(f"final/robustness/{key}", value, cfg.epochs)
    writer.close()
    report = {"arch": arch.to_json(), "init_channels": int(init_channels), "mflops": mflops,
              "params_M": params_m, "target_mflops": target_mflops, "dataset": info.name,
              "test_images": n_test, "accuracy": acc, "train_seconds": train_seconds,
              "epochs": cfg.epochs, "history": history, "processes": ranks.world_size,
              "robustness": robustness, "warnings": near_chance(acc, info.num_classes)}
    write_json(out / "final_report.json", report)
    return report


#: The final network is "near chance" when its clean test accuracy is below this multiple of chance (1 / classes).
NEAR_CHANCE_FACTOR = 2.0


def near_chance(acc: Mapping[str, float], num_classes: int) -> list[str]:
    """A sentence (in a list) when the clean accuracy ``acc["clean"]`` is near chance, else ``[]``."""
    clean, chance = acc.get("clean"), 1.0 / max(int(num_classes), 1)
    if clean is None or clean >= NEAR_CHANCE_FACTOR * chance:
        return []
    return [f"The final network's clean test accuracy {100 * clean:.1f}% is near chance ({100 * chance:.0f}% for "
            f"{num_classes} classes): it did not learn, so its robust accuracies say nothing about the architecture. "
            "Train it longer (settings.final.train.epochs), check the learning rate, or a smaller attack eps."]


def run_robustness(model: Any, spec: Mapping[str, Any], x: Any, y: Any, out_dir: str | Path | None, *,
                   seed: int | None = 0, device: Any = None, batch_size: int = 500, source: Any = None,
                   source_name: str | None = None, where: str = "settings.final.robustness",
                   progress: bool | None = None) -> dict[str, Any]:
    """The robustness report (:func:`nni_robust.robustness.robustness_report`) of a trained network.

    ``spec`` is ``settings.final.robustness`` (suite, eps and suite settings; see
    :func:`nni_robust.robustness.suite_from_spec`); ``x, y`` the test images. Writes
    ``robustness.json``, ``robustness.md`` and (with a strength curve) ``robustness.png`` into
    ``out_dir`` and logs the gradient-masking warnings. Returns the report.
    """
    from nni_robust.robustness import robustness_report, suite_from_spec, write_report

    suite, kwargs = suite_from_spec(spec, where)
    report = robustness_report(model, (x, y), suite=suite, seed=seed, device=device, batch_size=batch_size,
                               source=source, source_name=source_name, progress=progress, **kwargs)
    for warning in report.get("warnings") or []:
        logger.warning("Robustness report: %s", warning)
    if out_dir is not None:
        report["paths"] = {k: str(v) for k, v in write_report(report, out_dir).items()}
    return report


def robustness_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the final report and NNI keep of a robustness report: flat metrics, warnings, paths."""
    from nni_robust.robustness import flat_metrics

    return {"metrics": flat_metrics(report), "warnings": list(report.get("warnings") or []),
            "suite": report.get("suite"), "eps": report.get("eps"), "num_images": report.get("num_images"),
            "paths": dict(report.get("paths") or {})}


def robustness_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """NNI metric names of a :func:`robustness_summary`: ``acc_autoattack`` (the AutoAttack figure),
    ``robustness_<name>`` for the rest (``robustness_strength_mean``, ``robustness_masking_warnings``, ...)."""
    if not summary:
        return {}
    out: dict[str, float] = {}
    for key, value in summary["metrics"].items():
        out["acc_autoattack" if key == "autoattack" else f"robustness_{key}"] = float(value)
    return out


_JOB = "distributed_job.json"
_EPOCHS = "epochs.jsonl"


def _launch(settings: TrialSettings, arch: Any, out: Path, *, nproc: int, target_mflops: float | None,
            init_channels: int | None, reporter: Reporter | None, tb_dir: str | Path | None) -> dict[str, Any]:
    """Run :func:`train_final` in ``nproc`` torchrun processes; relay rank 0's epochs to ``reporter``."""
    job = {"settings": settings.to_dict(), "arch": arch.to_json(), "out_dir": str(out.resolve()),
           "tb_dir": str(Path(tb_dir).resolve()) if tb_dir is not None else None,
           "target_mflops": target_mflops, "init_channels": init_channels,
           "epochs_file": str((out / _EPOCHS).resolve())}
    write_json(out / _JOB, job)
    epochs_file = out / _EPOCHS
    epochs_file.unlink(missing_ok=True)  # a relay channel of this launch only (a resumed run reports its new epochs)
    log_path = out / "torchrun.log"
    logger.info("Final training in %d processes: torchrun, log %s", nproc, log_path)
    relayed = 0
    with open(log_path, "ab") as log:
        proc = distributed.run_torchrun(nproc, "nni_robust.strategies.final", ["--job", str(out / _JOB)],
                                        stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                code = proc.poll()
                relayed = _relay(epochs_file, relayed, reporter)
                if code is not None:
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:  # interrupted (e.g. NNI stopped the trial): stop the workers too
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise NniRobustError(f"The final training in {nproc} processes (torchrun) failed with exit code {code}; "
                             f"its log is {log_path}. Its end:\n{tail}")
    report_path = out / "final_report.json"
    if not report_path.exists():
        raise NniRobustError(f"The final training in {nproc} processes ended without writing {report_path}; "
                             f"see {log_path}.")
    return json.loads(report_path.read_text())


def _relay(path: Path, done: int, reporter: Reporter | None) -> int:
    """Report the complete lines of ``path`` after the first ``done``; return how many lines are done."""
    if not path.exists():
        return done
    lines = path.read_text().split("\n")[:-1]  # a line is complete once its newline is written
    for line in lines[done:]:
        if reporter is not None:
            reporter(json.loads(line))
    return max(done, len(lines))


def _worker(job_path: str) -> int:
    """One torchrun process of a :func:`_launch`."""
    job = json.loads(Path(job_path).read_text())
    settings = TrialSettings.from_dict(job["settings"])
    arch = arch_from_json(job["arch"], settings.space)
    epochs_file = Path(job["epochs_file"])

    def relay(metrics: Mapping[str, float]) -> None:  # called on rank 0 only
        with open(epochs_file, "a") as f:
            f.write(json.dumps(dict(metrics)) + "\n")

    train_final(settings, arch, job["out_dir"], target_mflops=job["target_mflops"],
                init_channels=job["init_channels"], reporter=relay, tb_dir=job["tb_dir"])
    return 0


def load_final_model(settings: TrialSettings, model_path: str | Path) -> tuple[Any, TrialSettings, dict[str, Any]]:
    """A network saved by :func:`train_final`, on ``settings.device``, in eval mode.

    The model file carries its architecture, width, space and dataset: the returned settings
    are ``settings`` with the file's dataset (a model trained on one dataset only runs on it).

    Returns:
        ``(model, settings, state)``.
    """
    state = load_checkpoint(model_path)
    missing = [k for k in ("model", "arch", "init_channels") if k not in state]
    if missing:
        raise CheckpointError(f"{model_path} is not a model written by the final training (nni-robust train or the "
                              f"final trial): it lacks {missing} (it has {sorted(state)}).")
    if state.get("dataset") and state["dataset"] != settings.dataset:
        logger.info("%s was trained on %r: evaluating on it (settings say %r)", model_path, state["dataset"],
                    settings.dataset)
        settings = settings.replace(dataset=state["dataset"])
    device = resolve_device(settings.device)
    info = DATASETS[settings.dataset]  # (the dataset's shape; its images are not needed to build the network)
    space = state.get("space", settings.space)
    arch = arch_from_json(state["arch"], space)
    model = build_network(arch, width=state["init_channels"], info=info, space=space)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), settings, state


def evaluate_checkpoint(settings: TrialSettings, model_path: str | Path, *,
                        out_dir: str | Path | None = None, robustness: Mapping[str, Any] | None = None,
                        source: Any = None, source_name: str | None = None,
                        progress: bool | ProgressFactory | None = None) -> dict[str, Any]:
    """Evaluate a final model saved by :func:`train_final` on its own dataset's test split.

    Without ``robustness``: ``settings.final.attacks`` on ``settings.final.eval_images`` test
    images, written to ``out_dir/evaluation.json``; returns ``{attack: accuracy}``. With
    ``robustness`` (a spec as ``settings.final.robustness``, e.g. ``{"suite": "standard"}``): the
    robustness report (AutoAttack, strength curve, transfer from ``source``, masking checks),
    written to ``out_dir/robustness.{json,md,png}``; returns the report.

    ``progress``: a :mod:`nni_robust.progress` factory (bars; the robustness suite draws its
    own when given one), or for the suite True / False / None (only on a terminal).
    """
    model, settings, _ = load_final_model(settings, model_path)
    device = resolve_device(settings.device)
    splits = settings.data("final")
    n_test = settings.final.eval_images or int(splits.val[1].shape[0])
    if robustness is not None:
        return run_robustness(model, robustness, splits.val[0][:n_test], splits.val[1][:n_test], out_dir,
                              seed=settings.seed, device=device, batch_size=settings.final.eval_batch_size,
                              source=source, source_name=source_name, where="robustness",
                              progress=bool(progress) if callable(progress) else progress)
    loader = TensorLoader(splits.val[0][:n_test], splits.val[1][:n_test],
                          batch_size=settings.final.eval_batch_size, shuffle=False, device=device)
    seed_everything(settings.seed)  # the attacks' random starts, as the final training's evaluation
    bars = progress if callable(progress) else None
    acc = evaluate(model, track(loader, bars, desc="evaluation"), build_attacks(settings.final.attacks), device=device)
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
    for text in report.get("warnings") or []:  # (strategies/trust.py: the CLI summary and the report show them)
        from .trust import record_warning
        record_warning(ctx.work_dir, "final.chance", text, acc_clean=acc.get("clean"),
                       num_classes=DATASETS[report["dataset"]].num_classes)
    final = {"default": float(acc.get("pgd20", acc.get("clean", 0.0))),
             **{f"acc_{k}": float(v) for k, v in acc.items()},
             "mflops": report["mflops"], "params_M": report["params_M"],
             "init_channels": float(report["init_channels"]),
             "test_images": float(report["test_images"]),  # behind the acc_* (their noise: pareto.noise_verdict)
             **robustness_metrics(report.get("robustness"))}
    return final, report


def main(argv: list[str] | None = None) -> int:
    """``python -m nni_robust.strategies.final --job JOB``: a worker process of a data-parallel final training
    (started by torchrun; see :func:`train_final`)."""
    parser = argparse.ArgumentParser(prog="python -m nni_robust.strategies.final", description=main.__doc__)
    parser.add_argument("--job", required=True, help="the job file written by the launching process")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"[%(asctime)s] rank {distributed.env_info().rank} %(levelname)s %(name)s: %(message)s")
    return _worker(ns.job)


if __name__ == "__main__":
    sys.exit(main())
