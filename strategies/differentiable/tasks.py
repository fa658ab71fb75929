"""The differentiable methods' trial task: a whole DSARA or RNAS search in one trial.

Registered as the task ``differentiable_search`` (see ``__init__``): the
search of :mod:`.bilevel` with the method of :mod:`.dsara` (DSARA Alg. 1-3)
or :mod:`.rnas` (RNAS Alg. 1-2), then the DARTS derivation of the
architecture. A plain function usable without NNI too.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from nni_robust.checkpoint import write_json
from nni_robust.data import TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import ConfigError
from nni_robust.seeding import seed_everything
from nni_robust.tb import summary_writer

from ..networks import build_network, space_name
from ..registry import TaskContext, numeric
from ..settings import TrialSettings
from .bilevel import DifferentiableSearch
from .methods import search_config

__all__ = ["differentiable_search", "search_task"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]


def differentiable_search(settings: TrialSettings, method: str, method_args: Mapping[str, Any], *,
                          search_dir: str | Path, out_dir: str | Path | None = None,
                          tb_dir: str | Path | None = None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run a whole DSARA or RNAS search (one trial) and derive its architecture.

    The supernet of ``settings.space`` (``darts`` or ``dsara``) with the method's
    ``init_channels`` is searched on the search split of ``settings.dataset``
    (weights on ``train``, architecture on ``val``: set ``settings.val_fraction``
    to 0.5 for DARTS's half-and-half split) by
    :class:`nni_robust.strategies.differentiable.bilevel.DifferentiableSearch`. Every
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
    splits = settings.data("search")
    info = splits.info
    search_dir = Path(search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    seed = config.seed
    seed_everything(seed)  # the supernet's initial weights and alpha
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
            row = {k: metrics[k] for k in ("epoch", "stage", "arch_updated", "val_clean_acc", "val_adv_acc", "default")
                   if k in metrics}
            fh.write(json.dumps({**row, "arch": json.loads(arch_json)}, sort_keys=True) + "\n")
    last = dict(history[-1]) if history else {}
    last.setdefault("default", float(last.get("arch_acc_adv", last.get("arch_acc_nat", 0.0))))
    result = {**last, "epochs": float(search.epoch), "seconds": seconds, "arch": arch.to_json(),
              "architecture_path": str(arch_path), "history": history, "config": search.config.to_dict(),
              "space": dict(settings.space), "dataset": info.name}
    write_json(search_dir / "search_result.json", result)
    if out_dir is not None:
        write_json(Path(out_dir) / "search_result.json", result)
    logger.info("%s search done (%d epochs, %.0f s): %s", method, search.epoch, seconds, arch)
    return result


def search_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``differentiable_search``: args ``method`` (``dsara`` or ``rnas``), optional
    ``method_args`` (the method's settings) and ``search_dir`` (checkpoint and the derived
    architecture; default ``<work_dir>/search``)."""
    method = ctx.require("method")
    full = differentiable_search(ctx.settings, method, ctx.args.get("method_args") or {},
                                 search_dir=Path(ctx.args.get("search_dir") or ctx.work_dir / "search"),
                                 out_dir=ctx.out_dir, tb_dir=ctx.tb_dir, reporter=ctx.reporter)
    return numeric(full), full
