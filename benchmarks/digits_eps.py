"""Which l-inf eps means something on the embedded 8x8 ``digits`` data? Measure it.

scikit-learn's digits have 17 grey levels (pixel values 0, 1/16, ..., 1 once
scaled to [0, 1]): one grey level is 1/16 = 0.0625. The CIFAR budget 8/255
(0.031) is half a grey level here. This script trains a small network twice
on the digits training split -- once with standard training, once with PGD-7
adversarial training at each eps -- and measures, on the digits test split
(359 images), the clean accuracy and the accuracy under FGSM, PGD-7 and
PGD-100 (step eps/4, random start) at each eps. An eps "means something"
when PGD clearly lowers the PGD-trained network's accuracy below its clean
accuracy and PGD-100 is stronger than FGSM (a gap between the two shows that
the attack has to search, i.e. that the threat model is not trivially
saturated or trivially empty).

Only the core is used: ``nni_robust.data`` (the digits splits, the loader),
``nni_robust.training`` (standard and PGD adversarial training),
``nni_robust.attacks`` and ``nni_robust.evaluation``.

Networks (``--net``):

* ``cnn`` (default): conv3x3(16)-BN-ReLU, conv3x3(32, stride 2)-BN-ReLU,
  conv3x3(32)-BN-ReLU, global mean, linear (about 14 k parameters);
* ``dense``: a dense robust cell network (the MSRobNet search space, 4-cell
  layout, the random architecture of seed 0) at ``--width`` init channels,
  close to the final network of ``experiments/msrobnet-quick.yml``.

Example (about 10 minutes on one CPU thread; the table is in experiments/msrobnet-quick.yml)::

    python benchmarks/digits_eps.py                       # the table of the quick configs' comments
    python benchmarks/digits_eps.py --net dense --width 12 --eps 0.0625 0.125 0.1875
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nni_robust.attacks import FGSM, PGD  # noqa: E402
from nni_robust.data import TensorLoader, load_dataset  # noqa: E402
from nni_robust.evaluation import evaluate  # noqa: E402
from nni_robust.models import Normalize  # noqa: E402
from nni_robust.seeding import seed_everything  # noqa: E402
from nni_robust.training import AdversarialTrainer, TrainConfig  # noqa: E402

from benchlib import bench_parser, emit, setup  # noqa: E402

#: The eps compared by default: 8/255 (the CIFAR budget, half a grey level), then 1, 2 and 3 grey levels.
DEFAULT_EPS = (8 / 255, 1 / 16, 2 / 16, 3 / 16)


def small_cnn(info: Any) -> nn.Module:
    """The ``cnn`` network (normalization inside)."""
    return nn.Sequential(
        Normalize(info.mean, info.std),
        nn.Conv2d(info.channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, info.num_classes))


def dense_net(info: Any, width: int) -> nn.Module:
    """The ``dense`` network: a random dense robust cell architecture of the 4-cell layout."""
    from nni_robust.spaces.dense_rob import DenseRobArch
    from nni_robust.strategies.networks import build_network, layout_of

    space = {"name": "dense_rob", "layout": "cellwise-4"}
    arch = DenseRobArch.random(layout_of(space), random.Random(0))
    return build_network(arch, width=width, info=info, space=space)


def build(net: str, info: Any, width: int) -> nn.Module:
    return small_cnn(info) if net == "cnn" else dense_net(info, width)


def train(net: str, splits: Any, *, eps: float | None, epochs: int, width: int, device: torch.device,
          seed: int) -> tuple[nn.Module, float]:
    """Train one network: standard training (``eps=None``) or PGD-7 (step eps/4) at ``eps``."""
    seed_everything(seed)
    model = build(net, splits.info, width)
    attack = dict(attack="none") if eps is None else dict(attack="pgd", eps=eps, step=eps / 4, steps=7)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                      grad_clip=5.0, seed=seed, **attack)
    loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True, seed=seed,
                          device=device)
    start = time.perf_counter()
    AdversarialTrainer(model, cfg, device=device, log_every=0).fit(loader)
    return model.eval(), time.perf_counter() - start


def attacks_at(eps: float, pgd_steps: tuple[int, ...]) -> dict[str, Any]:
    """Clean, FGSM (no random start, step eps) and PGD-k (step eps/4, random start) at ``eps``."""
    out: dict[str, Any] = {"clean": None, "fgsm": FGSM(eps)}
    for k in pgd_steps:
        out[f"pgd{k}"] = PGD(eps, step=eps / 4, steps=k)
    return out


def measure(model: nn.Module, loader: TensorLoader, eps: float, pgd_steps: tuple[int, ...], device: torch.device,
            seed: int) -> dict[str, float]:
    seed_everything(seed)  # the same random starts for every network
    return evaluate(model, loader, attacks_at(eps, pgd_steps), device=device)


def table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    lines = ["| network | eps | grey levels | " + " | ".join(keys) + " |",
             "|---|---:|---:|" + "---:|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['network']} | {r['eps']:.4f} | {r['eps'] * 16:.2f} | "
                     + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, device="cpu", threads=1)
    parser.add_argument("--net", choices=("cnn", "dense"), default="cnn", help="the network (default: cnn)")
    parser.add_argument("--width", type=int, default=12, help="init channels of --net dense (default: 12)")
    parser.add_argument("--eps", type=float, nargs="+", default=list(DEFAULT_EPS),
                        help="the l-inf budgets, in [0, 1] pixel units (default: 8/255 and 1 to 4 grey levels)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of each network (default: 20)")
    parser.add_argument("--pgd-steps", type=int, nargs="+", default=[7, 100], help="PGD iterations (default: 7 100)")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    device = setup(ns)
    splits = load_dataset("digits", split="final")
    test = TensorLoader(*splits.val, batch_size=512, shuffle=False, device=device)
    steps = tuple(ns.pgd_steps)
    keys = ["clean", "fgsm", *[f"pgd{k}" for k in steps]]
    rows: list[dict[str, Any]] = []
    standard, seconds = train(ns.net, splits, eps=None, epochs=ns.epochs, width=ns.width, device=device,
                              seed=ns.seed)
    print(f"standard training: {seconds:.0f} s", file=sys.stderr)
    for eps in ns.eps:
        rows.append({"network": "standard", "eps": eps, "train_s": seconds,
                     **measure(standard, test, eps, steps, device, ns.seed)})
    for eps in ns.eps:
        model, seconds = train(ns.net, splits, eps=eps, epochs=ns.epochs, width=ns.width, device=device,
                               seed=ns.seed)
        row = {"network": "PGD-7-trained", "eps": eps, "train_s": seconds,
               **measure(model, test, eps, steps, device, ns.seed)}
        print(f"PGD-7 training at eps {eps:.4f}: {seconds:.0f} s; " + ", ".join(
            f"{k} {100 * row[k]:.1f}" for k in keys), file=sys.stderr)
        rows.append(row)
    print(f"\nnet {ns.net}, {ns.epochs} epochs, digits test split ({splits.val[1].numel()} images); "
          f"accuracy in %, FGSM step eps, PGD step eps/4 with random start:\n")
    print(table(rows, keys) + "\n")
    strongest = f"pgd{max(steps)}"
    good = [r["eps"] for r in rows if r["network"] == "PGD-7-trained"
            and r[strongest] < r["fgsm"] and r["clean"] - r[strongest] >= 0.1]
    print(f"eps where the PGD-trained network loses >= 10 points to PGD-{max(steps)} and PGD-{max(steps)} < FGSM: "
          + (", ".join(f"{e:.4f} ({e * 16:g} grey levels)" for e in good) or "none") + "\n")
    emit({"benchmark": "digits_eps", "net": ns.net, "width": ns.width, "epochs": ns.epochs,
          "rows": rows, "meaningful_eps": good, "grey_level": 1 / 16}, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
