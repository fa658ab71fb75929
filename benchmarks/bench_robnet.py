"""Benchmark of RobNet's search: seconds per fine-tuned evaluation, and the FSP filter's cost relative to it.

Measures and prints (medians over ``--archs`` random architectures); it
asserts nothing. One fine-tuned evaluation is the ``robnet_finetune`` trial's
work (:func:`nni_robust.strategies.robnet.tasks.finetune_architecture`):
inherit the weights from the supernet, calibrate BN and measure clean + PGD
accuracy before fine-tuning, fine-tune adversarially for 3 epochs measuring
after each. The FSP cost is the ``robnet_fsp`` trial's work per architecture
(:func:`~nni_robust.strategies.robnet.tasks.fsp_scores`): activate it in the
supernet, calibrate BN, PGD on the FSP images and the two hooked forward
passes; its clean/adversarial accuracy without fine-tuning (Fig. 7's gap) is
timed separately. The supernet's weights are random: only time is measured.

Presets:
    --preset quick   (default) robnet-quick.yml's work on the embedded digits data, CPU: 4 cells,
                     C = 8, 3 epochs of PGD-3 fine-tuning on the 1,150 training images, PGD-7
                     evaluation on 288 images, FSP on 128 images
    --preset paper   robnet.yml's work for a GPU, on synthetic CIFAR-format data: 20 cells, C = 36,
                     3 epochs of PGD-7 fine-tuning (batch 64, bf16) timed on --train-images images
                     and scaled to CIFAR-10's 40,000 search-split training images, PGD-7 evaluation
                     on 5,000 images, FSP on 512 images

Examples::

    python benchmarks/bench_robnet.py                              # CPU, quick config
    python benchmarks/bench_robnet.py --preset paper --device cuda
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time

import torch

from nni_robust.checkpoint import save_checkpoint
from nni_robust.data import DataSplits, DatasetInfo, load_dataset
from nni_robust.spaces.dense_rob import DenseRobArch, layout_of
from nni_robust.strategies.networks import build_network
from nni_robust.strategies.robnet.tasks import finetune_architecture, fsp_scores
from nni_robust.strategies.settings import TrialSettings
from nni_robust.strategies.supernet import supernet_path

from benchlib import bench_parser, emit, setup

PRESETS = {
    "quick": dict(dataset="digits", layout="robnet-shared-4", width=8, epochs=3, train_images=None,
                  full_train_images=1150, supernet={"batch_size": 64, "steps": 3, "step": 0.0261437908496732},
                  evaluation={"attack": "pgd", "steps": 7, "step": 2 / 255, "calib_images": 128, "eval_images": 288,
                              "batch_size": 288},
                  fsp={"images": 128, "batch_size": 64}, archs=3),
    "paper": dict(dataset="synthetic", layout="robnet-shared", width=36, epochs=3, train_images=2560,
                  full_train_images=40000, supernet={"batch_size": 64, "autocast": True, "channels_last": True},
                  evaluation={"attack": "pgd", "steps": 7, "step": 2 / 255, "calib_images": 640, "eval_images": 5000,
                              "batch_size": 500, "autocast": True},
                  fsp={"images": 512, "batch_size": 64}, archs=3),
}


def synthetic(n_train: int, n_val: int) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo(name="synthetic", num_classes=10, channels=3, size=32,
                       mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    make = lambda n: (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),  # noqa: E731
                      torch.randint(0, 10, (n,), generator=g))
    return DataSplits(make(n_train), make(n_val), info)


def main(argv=None) -> int:
    p = bench_parser(__doc__, device="cpu", threads=1)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--archs", type=int, help="architectures timed (median)")
    p.add_argument("--train-images", type=int, help="fine-tuning images per epoch actually run")
    p.add_argument("--eval-images", type=int, help="evaluation images (default: the preset's)")
    p.add_argument("--fsp-images", type=int, help="FSP images (default: the preset's)")
    ns = p.parse_args(argv)
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in PRESETS[ns.preset].items()}
    for key in ("archs", "train_images"):
        if getattr(ns, key) is not None:
            cfg[key] = getattr(ns, key)
    if ns.eval_images is not None:
        cfg["evaluation"].update(eval_images=ns.eval_images, batch_size=min(ns.eval_images,
                                                                             cfg["evaluation"]["batch_size"]))
    if ns.fsp_images is not None:
        cfg["fsp"]["images"] = ns.fsp_images
    device = setup(ns)
    space = {"layout": cfg["layout"], "robnet_style": True}
    settings = TrialSettings.from_dict({"dataset": "cifar10" if cfg["dataset"] == "synthetic" else cfg["dataset"],
                                        "device": str(device), "space": space, "supernet": cfg["supernet"],
                                        "evaluation": cfg["evaluation"]})
    if cfg["dataset"] == "synthetic":
        splits = synthetic(cfg["train_images"] or cfg["full_train_images"], cfg["evaluation"]["eval_images"])
    else:
        splits = load_dataset(cfg["dataset"], split="search")
    info = splits.info
    torch.manual_seed(0)
    supernet = build_network(None, width=cfg["width"], info=info, space=space)
    layout = layout_of(space)
    rng = random.Random(0)
    archs = [DenseRobArch.random(layout, rng) for _ in range(cfg["archs"] + 1)]  # the first: warm-up
    out = {"preset": ns.preset, "device": str(device), **{k: v for k, v in cfg.items()}}
    with tempfile.TemporaryDirectory(prefix="bench_robnet_") as tmp:
        save_checkpoint(supernet_path(tmp, cfg["width"]), model=supernet.state_dict(), width=cfg["width"],
                        space=space, dataset=info.name)
        del supernet
        ft = []
        for k, arch in enumerate(archs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            res = finetune_architecture(settings, arch, supernet_dir=tmp, width=cfg["width"], epochs=cfg["epochs"],
                                        train_images=cfg["train_images"], splits=splits)
            if device.type == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - t
            val = sum(h["val_seconds"] for h in res["history"]) + res.get("before_seconds", 0.0)
            train = res["finetune_seconds"] - sum(h["val_seconds"] for h in res["history"])
            scale = cfg["full_train_images"] / res["train_images"]
            row = {"total_s": total, "train_s": train, "eval_s": val, "full_s": total + train * (scale - 1),
                   "convs": res["convs"]}
            if k:
                ft.append(row)
            print(f"fine-tuned evaluation {k}{' (warm-up)' if not k else ''}: {total:.1f} s measured "
                  f"({train:.1f} s training, {val:.1f} s evaluation), {row['full_s']:.1f} s at "
                  f"{cfg['full_train_images']} training images", file=sys.stderr, flush=True)
        fsp = fsp_scores(settings, archs, supernet_dir=tmp, width=cfg["width"], options=cfg["fsp"], splits=splits)
    rows = fsp["results"][1:]
    fsp_s = statistics.median(r["fsp_seconds"] for r in rows)
    acc_s = statistics.median(r["accuracy_seconds"] for r in rows)
    full_s = statistics.median(r["full_s"] for r in ft)
    out.update({
        "finetune_s_per_arch": round(full_s, 2),
        "finetune_measured_s": [round(r["total_s"], 2) for r in ft],
        "finetune_train_s": [round(r["train_s"], 2) for r in ft],
        "finetune_eval_s": [round(r["eval_s"], 2) for r in ft],
        "fsp_s_per_arch": round(fsp_s, 3),
        "fsp_accuracy_s_per_arch": round(acc_s, 3),
        "fsp_over_finetune": round(fsp_s / full_s, 5),
        "fsp_with_accuracy_over_finetune": round((fsp_s + acc_s) / full_s, 5),
        "fsp_trial_load_s": round(fsp["load_seconds"], 2),
    })
    print(f"seconds per fine-tuned evaluation: {full_s:.1f}; FSP indicator: {fsp_s:.2f} s/arch "
          f"({100 * fsp_s / full_s:.2f} % of a fine-tuning; {100 * (fsp_s + acc_s) / full_s:.2f} % with the "
          f"accuracies without fine-tuning)", file=sys.stderr)
    emit(out, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
