"""Benchmark of Wsr-NAS's search loop: seconds per search iteration with and without the estimators (Table 6).

Measures and prints; it asserts nothing. Two searches of
:class:`nni_robust.strategies.wsrnas.search.WsrSearch` on the same supernet and data:

* ``wsr`` -- Wsr-NAS, (N1, N2) = (3, 3): PGD noises at 0.03, 0.06, 0.09, the
  A-ANE's at 0.045, 0.075, 0.105, the architecture updated through the
  validation-loss estimator (EWSS);
* ``naive`` -- Table 6's "Basic" search: all six strengths by PGD, the
  architecture updated by the gradient of eq. 10 through the supernet on
  ``Dv`` (one Adam step per validation batch).

Each runs its set-up units untimed (a warm-up population of 2, the
estimators' warm-up), then ``--iterations`` search iterations (Alg. 1 lines
20-24) after ``--warmup-iterations`` untimed ones. Phases, and the columns of
the paper's Table 6 they correspond to:

=================  ===============================  =====================
phase              what                             Table 6
=================  ===============================  =====================
train              adversarial training, one epoch  Adv. Train
pgd                PGD noises on Dv                 A.E. Gen.
search             eq. 10 through the supernet      Search (naive only)
measure + vle      forward passes on Dv (the VLE's  EWSS
                   data), VLE training and the
                   architecture steps
ane + ane_infer    Ma's noises and the estimator's  AN-E Train Test
                   training; its noises on Dv
=================  ===============================  =====================

The naive search measures the losses too (``measure``, for its reports); the
paper's naive search gets them from its search passes, so its total leaves
``measure`` out (printed apart). Paper (CIFAR-10, per iteration): naive
610.6 + 1151.5 + 191.3 = 1953.4 s; Wsr-NAS 610.6 + 576.3 + 37.1 + 27.6 =
1251.6 s (ratio 1.56).

Full epochs: the timed iterations may cut an epoch (``train_batches``) and
the validation set (``val_images``); the per-iteration time of a full epoch
(the paper's: all of Dt and Dv) is projected by scaling ``train`` and ``vle``
with the training batches and ``pgd``, ``ane_infer``, ``measure`` and
``search`` with the validation images (``ane`` is fixed per iteration).

Presets:
    --preset quick   (default) experiments/wsrnas-quick.yml's supernet and budgets on the
                     embedded digits data (Dt, Dv: 719 images each), CPU, one thread
    --preset paper   the paper's supernet (DARTS, 8 cells, C = 16), batch 64, PGD-7, on synthetic
                     CIFAR-format data, bf16 autocast and channels_last, 20 training batches and
                     1,280 validation images timed, projected to 25,000 + 25,000 images; for a GPU

Examples::

    python benchmarks/bench_wsrnas.py
    python benchmarks/bench_wsrnas.py --preset paper --device cuda
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nni_robust.data import DatasetInfo, TensorLoader, load_dataset
from nni_robust.strategies.networks import build_network
from nni_robust.strategies.wsrnas.search import WsrSearch
from nni_robust.strategies.wsrnas.vle import WsrConfig

from benchlib import bench_parser, emit, setup

ROOT = Path(__file__).resolve().parents[1]

PHASES = ("train", "pgd", "search", "measure", "vle", "ane", "ane_infer")
TABLE6 = {"naive": {"train": 610.6, "pgd": 1151.5, "search": 191.3, "total": 1953.4},
          "wsr": {"train": 610.6, "pgd": 576.3, "ewss": 37.1, "ane": 27.6, "total": 1251.6}}
BY_BATCHES = ("train", "vle")
BY_IMAGES = ("pgd", "ane_infer", "measure", "search")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(dataset="digits", threads=1, iterations=3, warmup_iterations=1, device="cpu"),
    "paper": dict(dataset="synthetic", threads=None, iterations=2, warmup_iterations=1, device="auto",
                  space={"name": "darts", "num_cells": 8},
                  method_args=dict(train_batches=20, val_images=1280, val_batch_size=256, autocast=True,
                                   channels_last=True),
                  full_train_images=25000, full_val_images=25000),
}


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    info = DatasetInfo(name="synthetic", num_classes=10, channels=3, size=32,
                       mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    return x, y, info


def quick_setup() -> tuple[dict, dict]:
    """(space, method_args) of experiments/wsrnas-quick.yml."""
    args = yaml.safe_load((ROOT / "experiments" / "wsrnas-quick.yml").read_text())["tuner"]["classArgs"]
    return dict(args["settings"]["space"]), dict(args["strategy_args"]["method_args"])


def naive_of(config: WsrConfig) -> WsrConfig:
    """Table 6's naive search of the same strengths: all by PGD, no VLE."""
    return WsrConfig.from_dict({**config.to_dict(), "pgd_eps": list(config.search_eps), "estimated_eps": [],
                                "ewss": False})


def run_mode(config: WsrConfig, *, space: dict, data: dict, device: torch.device, warmup: int) -> dict[str, Any]:
    """Run the set-up units and the search iterations of ``config``; seconds per timed iteration by phase."""
    torch.manual_seed(0)
    info = data["info"]
    model = build_network(None, width=config.init_channels, info=info, space=space)
    search = WsrSearch(model, config, device=device)
    train = TensorLoader(*data["train"], batch_size=config.batch_size, shuffle=True, augment=True, seed=0,
                         device=device, drop_last=True, flip=info.flip, channels_last=config.channels_last)
    ane = TensorLoader(*data["train"], batch_size=config.ane_samples, shuffle=True, seed=1, device=device,
                       drop_last=True)
    n_val = min(config.val_images or len(data["val"][1]), len(data["val"][1]))
    val = TensorLoader(data["val"][0][:n_val], data["val"][1][:n_val], batch_size=config.val_batch_size,
                       shuffle=False, device=device, channels_last=config.channels_last)
    t0 = time.perf_counter()
    history = search.fit(train, ane, val)
    rows = [h for h in history if h["phase"] == 3.0][warmup:]
    phases = {k: sum(h.get(f"time_{k}_s", 0.0) for h in rows) / len(rows) for k in PHASES}
    train_batches = min(config.train_batches or len(train), len(train))
    return {"phases_s": {k: round(v, 3) for k, v in phases.items() if v > 0},
            "iteration_s": round(sum(h["time_s"] for h in rows) / len(rows), 3),
            "train_batches": train_batches, "val_images": n_val, "timed_iterations": len(rows),
            "run_s": round(time.perf_counter() - t0, 1)}


def table6_row(mode: str, phases: dict[str, float]) -> dict[str, float]:
    """Seconds per iteration in Table 6's columns (and the total as the paper sums it)."""
    get = phases.get
    if mode == "naive":
        row = {"train": get("train", 0.0), "pgd": get("pgd", 0.0), "search": get("search", 0.0)}
    else:
        row = {"train": get("train", 0.0), "pgd": get("pgd", 0.0),
               "ewss": get("measure", 0.0) + get("vle", 0.0), "ane": get("ane", 0.0) + get("ane_infer", 0.0)}
    row["total"] = sum(row.values())
    return {k: round(v, 3) for k, v in row.items()}


def project(phases: dict[str, float], *, batches: tuple[int, int], images: tuple[int, int]) -> dict[str, float]:
    """Phases scaled from (timed batches, timed images) to (full batches, full images)."""
    out = {}
    for k, v in phases.items():
        scale = batches[1] / batches[0] if k in BY_BATCHES else images[1] / images[0] if k in BY_IMAGES else 1.0
        out[k] = v * scale
    return out


def main(argv=None) -> int:
    p = bench_parser(__doc__, device=None, threads=None)  # defaults: the preset's
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--iterations", type=int, help="timed search iterations per mode (default: the preset's)")
    p.add_argument("--warmup-iterations", type=int, help="untimed search iterations first (default: the preset's)")
    p.add_argument("--modes", nargs="+", choices=("wsr", "naive"), default=["wsr", "naive"])
    p.add_argument("--train-batches", type=int, help="training batches per timed epoch (default: the preset's)")
    p.add_argument("--val-images", type=int, help="validation images per timed iteration (default: the preset's)")
    ns = p.parse_args(argv)
    preset = dict(PRESETS[ns.preset])
    ns.threads = ns.threads if ns.threads is not None else preset["threads"]
    device = setup(ns, device=preset["device"])
    iterations = ns.iterations or preset["iterations"]
    warmup = ns.warmup_iterations if ns.warmup_iterations is not None else preset["warmup_iterations"]
    if preset["dataset"] == "digits":
        space, args = quick_setup()
        splits = load_dataset("digits", val_fraction=0.5, split="search")
        data = {"train": splits.train, "val": splits.val, "info": splits.info}
        full_batches = len(splits.train[1]) // args.get("batch_size", 64)
        full_images = len(splits.val[1])
    else:
        space, args = dict(preset["space"]), dict(preset["method_args"])
        n_train = max((ns.train_batches or args["train_batches"]) * 64 * 2, 4096)
        x_tr, y_tr, info = synthetic(n_train, 0)
        x_va, y_va, _ = synthetic(ns.val_images or args["val_images"], 1)
        data = {"train": (x_tr, y_tr), "val": (x_va, y_va), "info": info}
        full_batches = preset["full_train_images"] // 64
        full_images = preset["full_val_images"]
    args.update(warmup_population=2, epochs=warmup + iterations, vle_warmup_epochs=10, seed=0)
    if ns.train_batches:
        args["train_batches"] = ns.train_batches
    if ns.val_images:
        args["val_images"] = ns.val_images
    base = WsrConfig.from_dict(args)
    out: dict[str, Any] = {"preset": ns.preset, "device": str(device), "space": space,
                           "init_channels": base.init_channels, "batch_size": base.batch_size,
                           "pgd_steps": base.pgd_steps, "search_eps": list(base.search_eps), "modes": {},
                           "paper_table6_s": TABLE6}
    for mode in ns.modes:
        config = base if mode == "wsr" else naive_of(base)
        res = run_mode(config, space=space, data=data, device=device, warmup=warmup)
        res["table6_s"] = table6_row(mode, res["phases_s"])
        full = project(res["phases_s"], batches=(res["train_batches"], full_batches),
                       images=(res["val_images"], full_images))
        res["full_epoch_phases_s"] = {k: round(v, 2) for k, v in full.items()}
        res["full_epoch_table6_s"] = table6_row(mode, full)
        if mode == "naive":
            res["measure_not_in_total_s"] = res["phases_s"].get("measure", 0.0)
        out["modes"][mode] = res
        print(f"{mode}: {res['table6_s']['total']:.2f} s per search iteration ({res['table6_s']}); a full epoch: "
              f"{res['full_epoch_table6_s']['total']:.1f} s", file=sys.stderr, flush=True)
    if {"wsr", "naive"} <= set(out["modes"]):
        w, n = out["modes"]["wsr"], out["modes"]["naive"]
        out["naive_over_wsr"] = round(n["table6_s"]["total"] / w["table6_s"]["total"], 3)
        out["naive_over_wsr_full_epoch"] = round(n["full_epoch_table6_s"]["total"]
                                                 / w["full_epoch_table6_s"]["total"], 3)
        out["paper_naive_over_wsr"] = round(TABLE6["naive"]["total"] / TABLE6["wsr"]["total"], 3)
    emit(out, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
