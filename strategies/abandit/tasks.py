"""ABanditNAS's trial task: anti-bandit steps on the weight-sharing supernet (ECCV 2020, Algorithm 1).

Registered as the task ``abandit_search`` (see ``__init__``). One trial runs
the steps of :class:`.search.AntiBanditSearch` -- sample, one epoch of FGSM
adversarial training (random start), validation, credit -- from the search
state in ``search_dir`` (``search_state.json``, written first by the
strategy) until ``until`` samples are credited, checkpointing the supernet
and the state after every sample, so that the trial can be sent again after
any stop and continues exactly. Every sample is an intermediate result
(web UI) and TensorBoard step (:func:`.report.log_step`). A plain function,
usable without NNI too.
"""

from __future__ import annotations

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
from .report import log_step
from .search import CHECKPOINT_FILE, STATE_FILE, AntiBanditSearch, SearchConfig, SearchState

__all__ = ["run_search", "search_task", "progress"]

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float]], Any]


def progress(state: SearchState) -> dict[str, float]:
    """Numbers that say how far the search is: ``samples``, ``N``, ``remaining_arms``, ``max_remaining``, ``done``."""
    bandit = state.bandit
    return {"samples": float(state.samples_done), "N": float(bandit.total),
            "remaining_arms": float(sum(len(bandit.remaining(label)) for label in bandit.labels)),
            "max_remaining": float(bandit.max_remaining), "done": float(bandit.done)}


def run_search(settings: TrialSettings, *, search: Mapping[str, Any] | SearchConfig, reward_scale: float,
               search_dir: str | Path, until: int, tb_dir: str | Path | None = None,
               out_dir: str | Path | None = None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Anti-bandit steps on the supernet of ``settings.space`` until ``until`` samples are credited.

    Args:
        settings: The trials' settings; ``space`` must name ``abandit`` (the
            supernet's cells); the search split of ``dataset`` is used
            (weights trained on ``train``, rewards measured on ``val``).
        search: The :class:`.search.SearchConfig` (or its dict).
        reward_scale: Multiplies the validation accuracy into the reward.
        search_dir: Holds ``search_state.json`` (the bandit and the records;
            it must exist: the strategy writes the first one) and the
            supernet's ``checkpoint.pt``.
        until: Credited samples (warm-up included) to reach.
        tb_dir: TensorBoard folder (per-epoch training scalars, :func:`.report.log_step`).
        out_dir: Where ``search_result.json`` goes too.
        reporter: Called with one intermediate result per credited sample.

    Returns:
        ``default`` (mean validation accuracy, unscaled, of this call's samples),
        ``mean_reward``, ``steps`` (samples credited by this call), the
        :func:`progress` numbers, ``seconds``, ``records`` (this call's).
    """
    config = search if isinstance(search, SearchConfig) else SearchConfig.from_dict(search)
    if space_name(settings.space) != "abandit":
        raise ConfigError(f"The anti-bandit supernet search needs settings.space with name 'abandit', but got "
                          f"{dict(settings.space)!r}; for another space use the strategy's generic mode.")
    search_dir = Path(search_dir)
    state_path = search_dir / STATE_FILE
    if not state_path.exists():
        raise ConfigError(f"{state_path} does not exist: the abandit strategy writes the initial search state "
                          "(SearchState(AntiBandit(edges, ...)).save(path) does it by hand).")
    state = SearchState.load(state_path)
    seed = config.seed if config.seed is not None else settings.seed
    device = resolve_device(settings.device)
    splits = settings.data("search")
    info = splits.info
    seed_everything(seed)  # the supernet's initial weights (the checkpoint replaces them on a restart)
    supernet = build_network(None, width=config.init_channels, info=info, space=settings.space)
    arms = {label: tuple(opts) for label, opts in supernet.choices("edge").items()}
    if arms != state.bandit.edges:
        raise ConfigError(f"The search state in {state_path} has other arms than the supernet of settings.space "
                          f"{dict(settings.space)} ({len(state.bandit.edges)} vs {len(arms)} edges); use a fresh "
                          "search_dir for another space.")
    train = TensorLoader(*splits.train, batch_size=config.batch_size, shuffle=True, augment=config.augment,
                         seed=seed, device=device, drop_last=True, flip=info.flip,
                         channels_last=config.channels_last)
    n_val = min(config.val_images or len(splits.val[1]), len(splits.val[1]))
    val = TensorLoader(splits.val[0][:n_val], splits.val[1][:n_val], batch_size=config.val_batch_size,
                       shuffle=False, device=device, channels_last=config.channels_last)
    n_calib = min(config.bn_calibration_images, len(splits.train[1]))
    calib = TensorLoader(splits.train[0][:n_calib], splits.train[1][:n_calib], batch_size=config.val_batch_size,
                         shuffle=False, device=device, channels_last=config.channels_last) if n_calib else None
    writer = summary_writer(tb_dir) if tb_dir is not None else None

    def on_step(record: dict[str, Any], current: SearchState) -> None:
        if writer is not None:
            log_step(writer, current.bandit, record)
        if reporter is not None:
            accs = {k: record[k] for k in ("acc_clean", "acc_adv") if k in record}
            reporter({"default": float(record["reward"]) / reward_scale, "reward": float(record["reward"]),
                      "warmup": float(record["warmup"]), **accs, **progress(current),
                      **{k: record[k] for k in ("train_loss", "train_acc") if k in record}})

    start = time.perf_counter()
    try:
        search_loop = AntiBanditSearch(supernet, config, state, train_loader=train, val_loader=val,
                                       calib_loader=calib, reward_scale=reward_scale, state_path=state_path,
                                       checkpoint_path=search_dir / CHECKPOINT_FILE, device=device, seed=seed,
                                       writer=writer, on_step=on_step)
        records = search_loop.run(until)
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - start
    rewards = [float(r["reward"]) for r in records]
    mean = sum(rewards) / len(rewards) if rewards else float("nan")
    result = {"default": mean / reward_scale if rewards else 0.0, "mean_reward": mean if rewards else 0.0,
              "steps": float(len(records)), **progress(state), "seconds": seconds,
              "seconds_per_step": seconds / len(records) if records else 0.0,
              "records": records, "state": str(state_path)}
    if out_dir is not None:
        write_json(Path(out_dir) / "search_result.json", result)
    logger.info("Anti-bandit: %d steps in %.0f s; %d samples credited, N = %d, %d arms left%s", len(records),
                seconds, state.samples_done, state.bandit.total, int(result["remaining_arms"]),
                " (one per edge: done)" if state.bandit.done else "")
    return result


def search_task(ctx: TaskContext) -> tuple[dict[str, float], dict[str, Any]]:
    """Trial task ``abandit_search``: args ``until`` (credited samples to reach), ``search`` (the
    :class:`.search.SearchConfig` dict), ``reward_scale`` (default 100) and ``search_dir``
    (default ``<work_dir>/abandit_search``)."""
    full = run_search(ctx.settings, search=ctx.args.get("search") or {},
                      reward_scale=float(ctx.args.get("reward_scale", 100.0)),
                      search_dir=Path(ctx.args.get("search_dir") or ctx.work_dir / "abandit_search"),
                      until=int(ctx.require("until")), tb_dir=ctx.tb_dir, out_dir=ctx.out_dir,
                      reporter=ctx.reporter)
    return numeric(full), full
