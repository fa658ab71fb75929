"""Benchmark of the multi-shot method: supernet-training throughput and multi-shot evaluation time.

Measures and prints (medians over repeats); it asserts nothing. The work is
that of ``../shared/notes/performance.md`` so the numbers compare with the
peers' (aw_nas) figures:

* supernet PGD-7 adversarial training, cell-wise dense space (8 cells), batch
  64, eps 8/255, step 2/255, random start, a random architecture per step:
  images per second at each ``--train-widths``;
* one multi-shot evaluation of one architecture: K supernets (``--widths``),
  BN calibration on ``--calib-images``, FGSM reward (clean + adversarial
  accuracy) on ``--eval-images`` other images, FLOPs, the log-power fit:
  seconds per architecture (median over ``--archs`` architectures), and the
  process's peak resident memory (issue 16: under 4 GB with ``--skip-train``).
  Its batch (``--eval-batch``, results do not depend on it: eval mode, folded
  BatchNorm) defaults to 64 on a CPU: at 32x32 and C = 36 it is both faster
  and lighter than 512 (41 s and 2.9 GB against 69 s and 16.6 GB for one
  supernet's calibration and reward, 2 threads), and 500 on a GPU.

Data are synthetic, in CIFAR format (32x32x3, 10 classes), held in memory.

Presets:
    --preset cpu     (default) the performance.md CPU work: K = 3 (12, 24, 36), 640 + 512 images
    --preset quick   the quick config on the embedded digits data (K = 4 widths, 4-cell layout)
    --preset paper   paper settings for a GPU: K = 8 (12..64), 640 + 5,000 images, bf16

Examples::

    python benchmarks/bench_msrobnet.py                       # CPU, performance.md work
    python benchmarks/bench_msrobnet.py --preset paper --device cuda
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from nni_robust.data import DatasetInfo, TensorLoader, load_dataset
from nni_robust.spaces.dense_rob import DenseRobArch
from nni_robust.strategies.msrobnet.multishot import MultiShotEvaluator
from nni_robust.strategies.networks import build_network, layout_of
from nni_robust.strategies.settings import EvalSettings
from nni_robust.training import AdversarialTrainer, TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by path (the peer's shim)
from benchlib import bench_parser, emit, peak_rss_gb, setup  # noqa: E402

PRESETS = {
    "cpu": dict(dataset="synthetic", layout="cellwise", target_mflops=1560.0, flops_unit=1e6, widths=[12, 24, 36], train_widths=[12, 24], calib_images=640,
                eval_images=512, batch=64, train_steps=4, archs=3, autocast=False),
    "quick": dict(dataset="digits", layout="cellwise-4", target_mflops=1.5, flops_unit=1e3,
                  widths=[4, 6, 8, 10], train_widths=[4, 8], calib_images=128, eval_images=144, batch=64, train_steps=10, archs=3, autocast=False),
    "paper": dict(dataset="synthetic", layout="cellwise", target_mflops=1560.0, flops_unit=1e6, widths=[12, 24, 30, 36, 40, 44, 54, 64], train_widths=[12, 24, 64],
                  calib_images=640, eval_images=5000, batch=64, train_steps=30, archs=5, autocast=True),
}


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    info = DatasetInfo(name="synthetic", num_classes=10, channels=3, size=32,
                       mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    return x, y, info


def data(name: str, n: int):
    if name == "synthetic":
        return synthetic(n)
    splits = load_dataset(name, split="search")
    return splits.val[0], splits.val[1], splits.info


def bench_train(width: int, *, info, images, labels, batch: int, steps: int, device, autocast: bool,
                channels_last: bool, space) -> float:
    """Images per second of supernet PGD-7 training (median of per-step rates after 2 warm-up steps)."""
    layout = layout_of(space)
    model = build_network(None, width=width, info=info, space=space)
    cfg = TrainConfig(epochs=1, batch_size=batch, autocast=autocast, channels_last=channels_last)
    rng = random.Random(0)
    times: list[float] = []
    last = [time.perf_counter()]

    def before_step(net, step):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if step >= 3:
            times.append(now - last[0])
        last[0] = now
        net.set_arch(DenseRobArch.random(layout, rng))

    trainer = AdversarialTrainer(model, cfg, device=device, before_step=before_step)
    n = batch * (steps + 3)
    loader = TensorLoader(images[:n], labels[:n], batch_size=batch, shuffle=True, augment=True,
                          device=device, drop_last=True)
    trainer.fit(loader)
    return batch / statistics.median(times) if times else float("nan")


def bench_multishot(widths, *, info, images, labels, calib: int, evaln: int, archs: int, device, eval_batch: int,
                    autocast: bool, space, target_mflops: float, flops_unit: float) -> dict:
    layout = layout_of(space)
    supernets = {w: build_network(None, width=w, info=info, space=space) for w in widths}
    n = calib + evaln
    # calibration on the first `calib`, reward on the next `evaln` images
    settings = EvalSettings(calib_images=calib, eval_images=evaln, eval_offset=calib, batch_size=eval_batch,
                            autocast=autocast)
    ev = MultiShotEvaluator(supernets, images[:n], labels[:n], info, settings=settings,
                            target_flops=target_mflops, family="log_power", all_families=False,
                            flops_unit=flops_unit, device=device)
    rng = random.Random(1)
    ev.evaluate(DenseRobArch.random(layout, rng))  # warm-up
    secs = []
    for _ in range(archs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        ev.evaluate(DenseRobArch.random(layout, rng))
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs.append(time.perf_counter() - t)
    return {"median_s": statistics.median(secs), "all_s": secs}


def main(argv=None) -> int:
    p = bench_parser(__doc__, device="auto", threads=None)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--widths", type=int, nargs="+")
    p.add_argument("--train-widths", type=int, nargs="+")
    p.add_argument("--calib-images", type=int)
    p.add_argument("--eval-images", type=int)
    p.add_argument("--train-steps", type=int)
    p.add_argument("--archs", type=int)
    p.add_argument("--layout", help="cell layout (default: the preset's)")
    p.add_argument("--autocast", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--eval-batch", type=int, help="multi-shot evaluation batch (default: 64 on CPU, 500 on GPU)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-eval", action="store_true")
    ns = p.parse_args(argv)
    cfg = dict(PRESETS[ns.preset])
    for key in ("layout", "widths", "train_widths", "calib_images", "eval_images", "train_steps", "archs", "autocast"):
        if getattr(ns, key) is not None:
            cfg[key] = getattr(ns, key)
    device = setup(ns)
    space = {"layout": cfg["layout"]}
    n_needed = max(cfg["calib_images"] + cfg["eval_images"], cfg["batch"] * (cfg["train_steps"] + 3))
    images, labels, info = data(cfg["dataset"], n_needed)
    out = {"preset": ns.preset, "device": str(device), **{k: cfg[k] for k in cfg},
           "eval_batch": ns.eval_batch or (64 if device.type == "cpu" else EvalSettings.batch_size)}
    if not ns.skip_train:
        out["train_img_per_s"] = {}
        for w in cfg["train_widths"]:
            rate = bench_train(w, info=info, images=images, labels=labels, batch=cfg["batch"],
                               steps=cfg["train_steps"], device=device, autocast=cfg["autocast"],
                               channels_last=ns.channels_last, space=space)
            out["train_img_per_s"][w] = round(rate, 2)
            print(f"supernet PGD-7 training, C={w}: {rate:.2f} img/s", file=sys.stderr, flush=True)
    if not ns.skip_eval:
        res = bench_multishot(cfg["widths"], info=info, images=images, labels=labels,
                              calib=cfg["calib_images"], evaln=cfg["eval_images"], archs=cfg["archs"],
                              device=device, autocast=cfg["autocast"], space=space,
                              target_mflops=cfg["target_mflops"], flops_unit=cfg["flops_unit"],
                              eval_batch=out["eval_batch"])
        out["multishot_s_per_arch"] = round(res["median_s"], 3)
        out["multishot_all_s"] = [round(s, 3) for s in res["all_s"]]
        # the JSON's machine block records the same figure (with --skip-train: the evaluation's; target < 4 GB)
        print(f"multi-shot evaluation, K={len(cfg['widths'])}: {res['median_s']:.2f} s/arch, peak resident memory "
              f"{peak_rss_gb()} GB", file=sys.stderr)
    emit(out, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
