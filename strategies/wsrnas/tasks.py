"""Wsr-NAS's trial task: the whole search of Alg. 1 in one trial (``wsr-nas.txt``).

Registered as the task ``wsrnas_search`` (see ``__init__``): builds the
supernet of ``settings.space`` (a DARTS-cell space), runs
:class:`.search.WsrSearch` on the search split of ``settings.dataset``,
derives the architecture and says when the result should not be trusted. A
plain function usable without NNI too.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nni_robust.checkpoint import write_json
from nni_robust.data import TensorLoader
from nni_robust.device import resolve_device
from nni_robust.errors import ConfigError
from nni_robust.seeding import seed_everything
from nni_robust.tb import summary_writer

from ..networks import build_network, space_name
from ..registry import TaskContext, numeric
from ..settings import TrialSettings
from .search import WsrSearch
from .vle import WsrConfig

__all__ = ["wsrnas_search", "search_task", "search_warnings", "rank_correlation"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], None]

#: Below this Spearman correlation between the VLE's estimate of a new architecture and its measured
#: objective, the EWSS updates follow noise (checked with at least MIN_ITERATIONS search iterations).
MIN_RANK_CORRELATION = 0.3
MIN_ITERATIONS = 5


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties ranked by their mean; NaN when one is
    constant)."""
    import warnings

    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        raise ConfigError(f"rank_correlation needs two sequences of one length >= 2, got {len(a)} and {len(b)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: NaN, said by the value
        return float(stats.spearmanr(list(a), list(b))[0])


def search_warnings(history: Sequence[Mapping[str, float]], config: WsrConfig, num_ops: int) -> tuple[dict, list]:
    """Diagnostics of a finished search and the warnings it deserves.

    Returns:
        ``(diagnostics, warnings)``: ``vle_rank_corr`` (Spearman, the VLE's
        estimated vs the measured objective of each newly sampled
        architecture, before the VLE saw it), ``vle_rel_error``,
        ``ane_mse_ratio`` (the AN-Estimator's held-out MSE over WA-ANE's),
        ``arch_entropy_ratio`` (final entropy of softmax(A) over its maximum
        log K) and the warnings as sentences.
    """
    search = [h for h in history if h.get("phase") == 3.0]
    diag: dict[str, float] = {}
    warnings: list[str] = []
    est = [h["est_objective"] for h in search if "est_objective" in h]
    meas = [h["objective"] for h in search if "est_objective" in h]
    if len(est) >= 2:
        diag["vle_rank_corr"] = rank_correlation(est, meas)
        diag["vle_rel_error"] = sum(abs(e - m) / max(abs(m), 1e-12) for e, m in zip(est, meas)) / len(est)
        corr = diag["vle_rank_corr"]
        if len(est) >= MIN_ITERATIONS and not corr >= MIN_RANK_CORRELATION:
            warnings.append(
                f"The VLE does not rank new architectures by their measured objective (Spearman {corr:.2f} over "
                f"{len(est)} search iterations; mean relative error {diag['vle_rel_error']:.2f}): the EWSS "
                "architecture updates follow the estimator more than the measured losses. More iterations, a "
                "larger warm-up population or more validation images make its data less noisy.")
    ane = [h for h in history if "ane_mse" in h and "ane_mse_wa" in h]
    if ane and config.estimator != "wa_ane":
        last = ane[-max(1, len(ane) // 4):]  # the last quarter: after the estimator's own training
        ratio = sum(h["ane_mse"] for h in last) / max(sum(h["ane_mse_wa"] for h in last), 1e-30)
        diag["ane_mse_ratio"] = ratio
        if ratio > 1.0:
            warnings.append(
                f"The {config.estimator} AN-Estimator predicts held-out PGD noises worse than its own WA-ANE "
                f"branch (MSE ratio {ratio:.2f} over the last {len(last)} updates): its estimated strengths are "
                "poorer attacks than eq. 6 would give (see the Table-5 report of the estimators).")
    if search:
        ratio = search[-1]["arch_entropy"] / math.log(num_ops)
        diag["arch_entropy_ratio"] = ratio
        if ratio > 0.99:
            warnings.append(
                f"The architecture parameters barely moved (entropy of softmax(A) at {100 * ratio:.1f}% of its "
                f"maximum after {len(search)} iterations): the derived architecture is close to the argmax of their "
                "random initialisation. Raise arch_lr, arch_steps or epochs.")
    elif config.epochs == 0:
        warnings.append("epochs is 0: no search iteration ran; the derived architecture is that of the random "
                        "initialisation of A.")
    return diag, warnings


def wsrnas_search(settings: TrialSettings, method_args: Mapping[str, Any], *, search_dir: str | Path,
                  out_dir: str | Path | None = None, tb_dir: str | Path | None = None,
                  reporter: Reporter | None = None) -> dict[str, Any]:
    """Run a whole Wsr-NAS search (Alg. 1, one trial) and derive its architecture.

    The supernet of ``settings.space`` with ``init_channels`` is searched on
    the search split of ``settings.dataset`` (``Dt`` = ``train``, ``Dv`` =
    ``val``: ``settings.val_fraction: 0.5`` gives the paper's halves). Every
    population and search unit is reported to ``reporter`` (measured and
    estimated losses per strength) and TensorBoard, and checkpointed in
    ``search_dir/checkpoint.pt`` (a rerun resumes). At the end the derived
    architecture is written to ``search_dir/architecture.json``, one line per
    search iteration to ``search_dir/architectures.jsonl`` and the summary
    (history, diagnostics, warnings) to ``search_dir/search_result.json`` (and
    ``out_dir/search_result.json``).

    Returns:
        The last unit's metrics, ``units``, ``seconds``, ``arch`` (JSON),
        ``architecture_path``, the diagnostics of :func:`search_warnings`,
        ``warnings``, ``history``, ``config``, ``space``, ``dataset``.
    """
    config = WsrConfig.from_dict(method_args)
    if config.seed is None:
        config = WsrConfig.from_dict({**config.to_dict(), "seed": settings.seed})
    if space_name(settings.space) not in ("darts", "dsara"):
        raise ConfigError(f"Wsr-NAS searches a DARTS-cell supernet: settings.space needs name 'darts' (the paper's) "
                          f"or 'dsara', but got {dict(settings.space)!r}.")
    device = resolve_device(settings.device)
    splits = settings.data("search")
    info = splits.info
    search_dir = Path(search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    seed = config.seed
    seed_everything(seed)  # the supernet's initial weights and logits
    model = build_network(None, width=config.init_channels, info=info, space=settings.space)
    n_val = min(config.val_images or len(splits.val[1]), len(splits.val[1]))
    train_loader = TensorLoader(*splits.train, batch_size=config.batch_size, shuffle=True, augment=config.augment,
                                seed=seed, device=device, drop_last=True, flip=info.flip,
                                channels_last=config.channels_last)
    ane_loader = TensorLoader(*splits.train, batch_size=config.ane_samples, shuffle=True, seed=seed + 1,
                              device=device, drop_last=True)
    val_loader = TensorLoader(splits.val[0][:n_val], splits.val[1][:n_val], batch_size=config.val_batch_size,
                              shuffle=False, device=device, channels_last=config.channels_last)
    writer = summary_writer(tb_dir)
    try:
        search = WsrSearch(model, config, device=device, checkpoint_path=search_dir / "checkpoint.pt",
                           writer=writer, reporter=reporter)
        start = time.perf_counter()
        history = search.fit(train_loader, ane_loader, val_loader)
        seconds = time.perf_counter() - start
        arch = search.derive()
        diag, warnings = search_warnings(history, search.config, len(model.primitives))
        for text in warnings:
            logger.warning("Wsr-NAS: %s", text)
        writer.add_text("search/architecture", arch.to_json(indent=2).replace("\n", "  \n"), search.step)
        if warnings:
            writer.add_text("search/warnings", "  \n".join(warnings), search.step)
    finally:
        writer.close()
    arch_path = search_dir / "architecture.json"
    arch_path.write_text(arch.to_json(indent=2))
    rows = [h for h in history if h.get("phase") == 3.0]
    with (search_dir / "architectures.jsonl").open("w") as fh:
        for metrics, arch_json in zip(rows, search.architectures):
            keep = {k: v for k, v in metrics.items() if k in ("index", "default", "objective", "est_objective")}
            fh.write(json.dumps({**keep, "arch": json.loads(arch_json)}, sort_keys=True) + "\n")
    last = dict(history[-1]) if history else {}
    if "default" not in last:
        measured = [h for h in history if "default" in h]
        last["default"] = measured[-1]["default"] if measured else 0.0
    result = {**last, **diag, "units": float(search.step), "seconds": seconds, "arch": arch.to_json(),
              "architecture_path": str(arch_path), "warnings": warnings, "history": history,
              "config": search.config.to_dict(), "space": dict(settings.space), "dataset": info.name}
    write_json(search_dir / "search_result.json", result)
    if out_dir is not None:
        write_json(Path(out_dir) / "search_result.json", result)
    logger.info("Wsr-NAS search done (%d units, %.0f s): %s", search.step, seconds, arch)
    return result


def search_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``wsrnas_search``: args ``method_args`` (:class:`.vle.WsrConfig` keys) and
    ``search_dir`` (checkpoint and derived architecture; default ``<work_dir>/search``)."""
    full = wsrnas_search(ctx.settings, ctx.args.get("method_args") or {},
                         search_dir=Path(ctx.args.get("search_dir") or ctx.work_dir / "search"),
                         out_dir=ctx.out_dir, tb_dir=ctx.tb_dir, reporter=ctx.reporter)
    final = numeric(full)
    final["warnings"] = float(len(full["warnings"]))
    return final, full
