"""Benchmark of the differentiable searches: seconds per search epoch of DSARA, RNAS-max, RNAS-uniform.

Measures and prints; it asserts nothing. For each method and each kind of
epoch it runs (DSARA: stage 1 and stage 2; RNAS: weight-only warm-up and
search epochs), one warm-up pass of ``--warmup-iterations`` iterations, then
``--iterations`` timed iterations (one weight step and, where the epoch has
one, one architecture step each) of
:class:`nni_robust.strategies.differentiable.bilevel.DifferentiableSearch`. The
per-epoch evaluation is not timed (it is a setting, ``eval_images``). From
the seconds per iteration it reports the seconds per epoch (iterations per
epoch = training images // batch) and the projected time of the whole search
(DSARA: 20 + 10 epochs; RNAS: 15 warm-up + 35 search epochs at paper
settings) -- to set beside the RNAS paper's 4.3 GPU-days (RNAS-max) and 0.5
GPU-days (RNAS-uniform) on their hardware (Sec. 4.1).

Presets:
    --preset quick   (default) the quick experiments (experiments/dsara-quick.yml,
                     rnas-quick.yml) on the embedded digits data, CPU, one thread
    --preset paper   paper settings (DSARA: 8 cells C = 24, PGD-7; RNAS: DARTS 8 cells
                     C = 16, PGD-10; batch 64; 25,000 training images per epoch) on
                     synthetic CIFAR-format data, bf16 autocast and channels_last, for a GPU

Examples::

    python benchmarks/bench_differentiable.py
    python benchmarks/bench_differentiable.py --preset paper --device cuda
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import yaml

from nni_robust.data import DatasetInfo, TensorLoader, load_dataset
from nni_robust.strategies.differentiable.bilevel import DifferentiableSearch
from nni_robust.strategies.differentiable.methods import search_config
from nni_robust.strategies.networks import build_network

from benchlib import bench_parser, emit, setup

ROOT = Path(__file__).resolve().parents[1]

METHODS = {"dsara": ("dsara", {}), "rnas-max": ("rnas", {"variant": "max"}),
           "rnas-uniform": ("rnas", {"variant": "uniform"})}

#: Epoch kinds: config changes that make both (warm-up and timed) epochs of that kind.
EPOCH_KINDS = {"dsara": {"stage1": {"stage1_epochs": 2, "stage2_epochs": 0},
                         "stage2": {"stage1_epochs": 0, "stage2_epochs": 2}},
               "rnas": {"warmup": {"search_epochs": 2, "warmup_epochs": 2},
                        "search": {"search_epochs": 2, "warmup_epochs": 0}}}

PRESETS = {
    "quick": dict(dataset="digits", threads=1, iterations=None, warmup_iterations=1, autocast=False,
                  channels_last=False),
    "paper": dict(dataset="synthetic", threads=None, iterations=10, warmup_iterations=2, autocast=True,
                  channels_last=True, train_images=25000,
                  spaces={"dsara": {"name": "dsara", "num_cells": 8}, "rnas": {"name": "darts", "num_cells": 8}}),
}


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    info = DatasetInfo(name="synthetic", num_classes=10, channels=3, size=32,
                       mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    return x, y, info


def quick_setup(method: str) -> tuple[dict, dict]:
    """(space, method_args) of the quick experiment of ``method``."""
    args = yaml.safe_load((ROOT / "experiments" / f"{method}-quick.yml").read_text())["tuner"]["classArgs"]
    return dict(args["settings"]["space"]), dict(args["strategy_args"]["method_args"])


def full_search_epochs(method: str, config) -> dict[str, int]:
    if method == "dsara":
        return {"stage1": config.stage1_epochs, "stage2": config.stage2_epochs}
    return {"warmup": config.warmup_epochs, "search": config.search_epochs - config.warmup_epochs}


def bench(name: str, *, preset: dict, device: torch.device, iterations: int | None) -> dict:
    method, extra = METHODS[name]
    if preset["dataset"] == "digits":
        space, base_args = quick_setup(method)
        splits = load_dataset("digits", val_fraction=0.5, split="search")
        (x_tr, y_tr), (x_va, y_va), info = splits.train, splits.val, splits.info
    else:
        space, base_args = dict(preset["spaces"][method]), {}
        x_tr, y_tr, info = synthetic(4096, 0)
        x_va, y_va, _ = synthetic(4096, 1)
    base_args.update(extra, eval_images=0, autocast=preset["autocast"], channels_last=preset["channels_last"])
    config0 = search_config(method, base_args)
    batch = config0.batch_size
    per_epoch = (preset.get("train_images") or min(config0.max_train or len(y_tr), len(y_tr))) // batch
    timed_iters = iterations or per_epoch
    out: dict = {"method": method, "space": space, "init_channels": config0.init_channels, "batch": batch,
                 "iterations_per_epoch": per_epoch, "timed_iterations": timed_iters, "s_per_iteration": {},
                 "s_per_epoch": {}}
    for kind, change in EPOCH_KINDS[method].items():
        config = config0.replace(**change, max_train=None, max_val=None)
        torch.manual_seed(0)
        model = build_network(None, width=config.init_channels, info=info, space=space)
        search = DifferentiableSearch(model, config, device=device)

        def loader(x, y, n, seed):
            return TensorLoader(x, y, batch_size=batch, augment=True, seed=seed, device=device, drop_last=True,
                                flip=info.flip, channels_last=config.channels_last, max_images=n * batch)

        search.fit(loader(x_tr, y_tr, preset["warmup_iterations"], 0),
                   loader(x_va, y_va, preset["warmup_iterations"], 1), max_epochs=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        search.fit(loader(x_tr, y_tr, timed_iters, 2), loader(x_va, y_va, timed_iters, 3), max_epochs=1)
        seconds = time.perf_counter() - t0
        out["s_per_iteration"][kind] = round(seconds / timed_iters, 4)
        out["s_per_epoch"][kind] = round(seconds / timed_iters * per_epoch, 2)
        print(f"{name} {kind}: {seconds / timed_iters:.3f} s/iteration, "
              f"{seconds / timed_iters * per_epoch:.1f} s/epoch", file=sys.stderr, flush=True)
    epochs = full_search_epochs(method, config0)
    total = sum(out["s_per_epoch"][k] * n for k, n in epochs.items())
    out["search_epochs"] = epochs
    out["projected_search_s"] = round(total, 1)
    out["projected_search_days"] = round(total / 86400, 3)
    return out


def main(argv=None) -> int:
    p = bench_parser(__doc__, device=None, threads=None)  # defaults: the preset's
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    p.add_argument("--iterations", type=int, help="timed iterations per epoch kind (default: the preset's)")
    ns = p.parse_args(argv)
    preset = dict(PRESETS[ns.preset])
    ns.threads = ns.threads if ns.threads is not None else preset["threads"]
    device = setup(ns, device="cpu" if ns.preset == "quick" else "auto")
    out = {"preset": ns.preset, "device": str(device), "autocast": preset["autocast"],
           "channels_last": preset["channels_last"], "methods": {}}
    for name in ns.methods:
        out["methods"][name] = bench(name, preset=preset, device=device,
                                     iterations=ns.iterations or preset["iterations"])
    emit(out, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
