"""Benchmark of the anti-bandit search (ABanditNAS): seconds per anti-bandit step, samples to the end.

Measures and prints; it asserts nothing. One anti-bandit *step* is what
:class:`nni_robust.strategies.abandit.search.AntiBanditSearch` does per
sample: draw the architecture (LCB probabilities), train it (FGSM with
random start), recalibrate BN when configured, validate, credit the reward
(and abandon every ``K T`` samples). The benchmark runs ``--warmup-steps``
untimed steps, then ``--steps`` timed ones, and splits each step into its
training and its validation (+ BN calibration) time. It also counts the
samples until one operation per edge remains -- ``T (K (K + 1) / 2 - 1)``
for ``K`` operations, checked by running the bandit alone to the end on
random rewards -- and projects the whole search's time from the two (warm-up
samples, when the experiment has them, included).

Presets:
    --preset quick   (default) experiments/abandit-quick.yml's search (its space,
                     ``search`` settings and T) on the embedded digits data, CPU, one thread
    --preset paper   experiments/abandit.yml's search (6 cells, C = 16, batch 64, one
                     epoch of 40,000 images per sample, 10,000 validation images) on
                     synthetic CIFAR-format data, bf16 autocast and channels_last, for a GPU;
                     a step trains ``--paper-batches`` batches and validates
                     ``--paper-val-images`` images, scaled to the paper's sizes

Examples::

    python benchmarks/bench_abandit.py
    python benchmarks/bench_abandit.py --preset paper --device cuda
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from nni_robust.data import DatasetInfo, TensorLoader, load_dataset
from nni_robust.spaces.abandit import abandit_choices, abandit_layout
from nni_robust.strategies.abandit.bandit import AntiBandit, total_samples
from nni_robust.strategies.abandit.search import AntiBanditSearch, SearchConfig, SearchState
from nni_robust.strategies.networks import build_network

from benchlib import bench_parser, emit, setup

ROOT = Path(__file__).resolve().parents[1]
PAPER_TRAIN, PAPER_VAL = 40_000, 10_000  # CIFAR-10's search split at val_fraction 0.2


def experiment(name: str) -> tuple[dict, dict, dict, dict]:
    """(settings, settings space, search settings, strategy args) of ``experiments/<name>.yml``."""
    args = yaml.safe_load((ROOT / "experiments" / f"{name}.yml").read_text())["tuner"]["classArgs"]
    strategy = dict(args["strategy_args"])
    return dict(args["settings"]), dict(args["settings"]["space"]), dict(strategy.get("search") or {}), strategy


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g)


def samples_to_finish(edges: dict, samples_per_arm: int, seed: int = 0) -> int:
    """Run the bandit alone on random rewards until one option per edge remains; the samples it took."""
    bandit = AntiBandit(edges, samples_per_arm=samples_per_arm, seed=seed)
    rng = random.Random(seed)
    while not bandit.done:
        bandit.update(bandit.sample(), 100 * rng.random())
    return bandit.total


def bench(preset: str, *, device: torch.device, steps: int, warmup_steps: int, paper_batches: int,
          paper_val_images: int) -> dict:
    settings, space, search, strategy = experiment("abandit-quick" if preset == "quick" else "abandit")
    T = int(strategy.get("samples_per_arm", 3))
    if preset == "quick":
        splits = load_dataset("digits", split="search", val_fraction=settings.get("val_fraction", 0.2),
                              seed=settings.get("seed", 0))
        (x_tr, y_tr), (x_va, y_va), info = splits.train, splits.val, splits.info
        scale_train = scale_val = 1.0
    else:
        info = DatasetInfo(name="synthetic", num_classes=10, channels=3, size=32,
                           mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
        batch = int(search.get("batch_size", 64))
        x_tr, y_tr = synthetic(paper_batches * batch, 0)
        x_va, y_va = synthetic(paper_val_images, 1)
        search.update(train_images_per_sample=paper_batches * batch, val_images=paper_val_images)
        scale_train, scale_val = (PAPER_TRAIN // batch) / paper_batches, PAPER_VAL / paper_val_images
    search.pop("seed", None)
    warmup = int(search.pop("warmup_samples", 0))
    config = SearchConfig.from_dict(search)
    layout = abandit_layout(space.get("num_cells", 6))
    edges = abandit_choices(layout.cell_types, form="edge")
    state = SearchState(AntiBandit(edges, samples_per_arm=T, seed=0))
    torch.manual_seed(0)
    supernet = build_network(None, width=config.init_channels, info=info, space=space)
    common = dict(device=device, channels_last=config.channels_last)
    train = TensorLoader(x_tr, y_tr, batch_size=config.batch_size, shuffle=True, augment=config.augment, seed=0,
                         drop_last=True, flip=info.flip, **common)
    n_val = min(config.val_images or len(y_va), len(y_va))
    val = TensorLoader(x_va[:n_val], y_va[:n_val], batch_size=config.val_batch_size, shuffle=False, **common)
    n_cal = min(config.bn_calibration_images, len(y_tr))
    calib = TensorLoader(x_tr[:n_cal], y_tr[:n_cal], batch_size=config.val_batch_size, shuffle=False,
                         **common) if n_cal else None
    with tempfile.TemporaryDirectory() as tmp:
        search_loop = AntiBanditSearch(supernet, config, state, train_loader=train, val_loader=val,
                                       calib_loader=calib, reward_scale=100.0, state_path=Path(tmp) / "state.json",
                                       checkpoint_path=Path(tmp) / "checkpoint.pt", device=device, seed=0)
        search_loop.run(warmup_steps)
        t0 = time.perf_counter()
        records = search_loop.run(warmup_steps + steps)
        wall = time.perf_counter() - t0
        history = search_loop.trainer.history[warmup_steps:warmup_steps + steps]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = [h["time_s"] for h in history]
    step_s = [r["seconds"] for r in records]
    val_s = [s - t for s, t in zip(step_s, train_s)]  # BN calibration + validation + the bandit's update
    per_step = statistics.mean(train_s) * scale_train + statistics.mean(val_s) * scale_val
    n_samples = samples_to_finish(edges, T)
    assert n_samples == total_samples(edges, T)
    return {"preset": preset, "space": space, "edges": len(edges), "operations": len(next(iter(edges.values()))),
            "samples_per_arm": T, "search": config.to_dict(), "timed_steps": len(records),
            "s_per_step_measured": round(statistics.mean(step_s), 4),
            "s_train_per_step": round(statistics.mean(train_s), 4),
            "s_validate_per_step": round(statistics.mean(val_s), 4),
            "s_per_step_median": round(statistics.median(step_s), 4), "wall_s": round(wall, 2),
            "s_per_step": round(per_step, 3), "scaled_to_paper_sizes": preset == "paper",
            "samples_until_one_op_per_edge": n_samples, "warmup_samples": warmup,
            "projected_search_s": round(per_step * (n_samples + warmup), 1),
            "projected_search_gpu_days": round(per_step * (n_samples + warmup) / 86400, 4)}


def main(argv=None) -> int:
    p = bench_parser(__doc__, device=None, threads=None)  # defaults: the preset's
    p.add_argument("--preset", choices=("quick", "paper"), default="quick")
    p.add_argument("--steps", type=int, default=10, help="timed anti-bandit steps (default 10)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--paper-batches", type=int, default=40, help="paper preset: training batches per timed step")
    p.add_argument("--paper-val-images", type=int, default=2000, help="paper preset: validation images per step")
    ns = p.parse_args(argv)
    ns.threads = ns.threads if ns.threads is not None else (1 if ns.preset == "quick" else 0)
    device = setup(ns, device="cpu" if ns.preset == "quick" else "auto")
    out = bench(ns.preset, device=device, steps=ns.steps, warmup_steps=ns.warmup_steps,
                paper_batches=ns.paper_batches, paper_val_images=ns.paper_val_images)
    out["device"] = str(device)
    print(f"{ns.preset}: {out['s_per_step']:.2f} s per anti-bandit step, {out['samples_until_one_op_per_edge']} "
          f"samples until one op per edge (+ {out['warmup_samples']} warm-up): search "
          f"{out['projected_search_s'] / 60:.1f} min", file=sys.stderr, flush=True)
    emit(out, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
