"""Benchmark of AutoAttack (standard version, l-inf) through ``nni_robust.robustness.run_autoattack``.

Prints one JSON line: AutoAttack's seconds per 1,000 images (wall clock, and CPU time of the
process: on a shared, loaded machine the CPU time is the better estimate of the idle-machine wall
time of a 1-thread run), and per attack its seconds, the images it attacked (the cascade only
attacks the points the previous attacks left) and the robust accuracy after it, with the machine
record (CPU model, threads, torch, load average).

AutoAttack's cost depends on the model: every point an early attack breaks is skipped by the
later, more expensive ones (APGD-T and FAB-T try 9 target classes each, Square makes 5,000
queries). So the network is trained first, as the quick experiments' final trial does
(``--train-epochs`` of PGD-7 adversarial training, MSRobNet App. B.2 settings shortened), and
the JSON also gives ``s_per_1000_if_all_survive``: each attack's seconds per image it attacked,
summed, times 1,000: the cost on a model where nothing breaks early (an estimate: within an
attack, points broken at the first target or restart are cheaper). On small networks the cost of
an attack step hardly grows with the batch (per-operation overhead dominates), so a run on fewer
images than one AutoAttack batch (250) overstates the cost per 1,000 images: use ``--images 250``
or more.

Networks:

* ``quick`` (default): the quick configs' network: a dense robust cell network (``cellwise-4``
  layout, a seeded random architecture) widened to the quick configs' target of 1.5 MFLOPs, on
  the embedded 8x8 digits data (its 359 test images).
* ``paper``: a published architecture (``--preset``, default MSRobNet-1000) at its published
  width on 32x32 CIFAR-10 (``--data-root``; random images when the dataset is not there, in
  which case train it with ``--train-epochs`` for a meaningful figure). For a GPU.

Examples::

    python benchmarks/bench_autoattack.py                         # CPU, 1 thread, quick network
    python benchmarks/bench_autoattack.py --images 100 --train-epochs 1
    python benchmarks/bench_autoattack.py --device cuda --network paper --images 1000
"""

from __future__ import annotations

import logging
import sys
import time

import torch

from nni_robust.data import DATASETS, TensorLoader, load_dataset
from nni_robust.errors import DatasetNotFoundError
from nni_robust.flops import count_flops, count_params, search_width
from nni_robust.robustness import evaluate_attacks, run_autoattack
from nni_robust.attacks import PGD
from nni_robust.spaces.dense_rob import DenseRobArch, DenseRobNetwork, Layout
from nni_robust.training import AdversarialTrainer, TrainConfig

from benchlib import bench_parser, emit, setup

log = logging.getLogger("bench_autoattack")


def quick_network(seed: int, target_mflops: float) -> tuple[torch.nn.Module, int]:
    """The quick configs' final network: cellwise-4, random arch, width for ``target_mflops`` on 8x8."""
    info = DATASETS["digits"]
    layout = Layout.from_name("cellwise-4")
    arch = DenseRobArch.random(layout, seed)

    def build(width: int) -> torch.nn.Module:
        return DenseRobNetwork(arch, layout=layout, init_channels=width, num_classes=10, in_channels=1,
                               input_size=8, mean=info.mean, std=info.std)

    width, _ = search_width(build, target_mflops * 1e6, input_size=(1, 8, 8))
    return build(width), width


def paper_network(preset: str) -> tuple[torch.nn.Module, int]:
    from nni_robust.spaces.presets import get_preset

    p = get_preset(preset)
    info = DATASETS["cifar10"]
    return p.build(10, mean=info.mean, std=info.std), p.init_channels


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, device="cpu", threads=1)
    parser.add_argument("--network", choices=("quick", "paper"), default="quick")
    parser.add_argument("--preset", default="MSRobNet-1000", help="architecture of --network paper")
    parser.add_argument("--data-root", default=None, help="CIFAR-10 folder for --network paper")
    parser.add_argument("--target-mflops", type=float, default=1.5, help="quick network capacity")
    parser.add_argument("--images", type=int, default=None, help="test images attacked (default: all "
                                                                   "359 digits / 1000 CIFAR)")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="PGD-7 adversarial training epochs first (default: 2 quick, 0 paper)")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--batch-size", type=int, default=250, help="AutoAttack batch (its default 250)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    ns = parser.parse_args(argv)
    device = setup(ns)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    torch.manual_seed(ns.seed)  # the weights' initialisation
    if ns.network == "quick":
        net, width = quick_network(ns.seed, ns.target_mflops)
        splits = load_dataset("digits", split="final")
        input_size, epochs = (1, 8, 8), 2 if ns.train_epochs is None else ns.train_epochs
        images = ns.images or len(splits.val[1])
        data_name = "digits"
    else:
        net, width = paper_network(ns.preset)
        input_size, epochs = (3, 32, 32), ns.train_epochs or 0
        images = ns.images or 1000
        try:
            splits = load_dataset("cifar10", root=ns.data_root, split="final")
            data_name = "cifar10"
        except DatasetNotFoundError:
            g = torch.Generator().manual_seed(ns.seed)
            n = max(images, 256)
            fake = (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=g))
            from nni_robust.data import DataSplits
            splits = DataSplits(train=fake, val=fake, info=DATASETS["cifar10"])
            data_name = "random (CIFAR-10 not found)"
    net = net.to(device)
    out: dict = {"benchmark": "autoattack", "network": ns.network, "data": data_name, "width": width,
                 "params": count_params(net), "flops": count_flops(net, input_size), "eps": ns.eps,
                 "device": str(device), "threads": torch.get_num_threads(), "train_epochs": epochs}

    log.info("network %s: width %d, %d params, %d FLOPs", ns.network, width, out["params"], out["flops"])
    if epochs:
        cfg = TrainConfig.final(splits.info.name, epochs=epochs, milestones=(epochs,), batch_size=128,
                                seed=ns.seed)
        loader = TensorLoader(*splits.train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                              seed=ns.seed, device=device, flip=splits.info.flip)
        t0 = time.perf_counter()
        AdversarialTrainer(net, cfg, device=device, log_every=0).fit(loader)
        out["train_s"] = round(time.perf_counter() - t0, 2)
        log.info("trained %d epochs in %.1f s", epochs, out["train_s"])
    net.eval()

    x, y = splits.val[0][:images], splits.val[1][:images]
    pgd = evaluate_attacks(net, (x, y), {"clean": None,
                                         "pgd20": PGD(ns.eps, step=ns.eps / 4, steps=20)},
                           device=device, progress=ns.progress or None)
    log.info("PGD-20 on %d images: %.4f (clean %.4f); AutoAttack starts", len(y), pgd.accuracy["pgd20"],
             pgd.accuracy["clean"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_autoattack(net, (x, y), eps=ns.eps, batch_size=ns.batch_size, seed=ns.seed, device=device,
                         progress=ns.progress or None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = res.num_images
    per_attack, before, all_survive = {}, res.clean, 0.0
    for name in res.attacks:
        attacked = round(before * n)
        per_attack[name] = {"s": round(res.seconds[name], 2), "images": attacked,
                            "robust_after": round(res.per_attack[name], 4)}
        if attacked:
            all_survive += res.seconds[name] / attacked
        before = res.per_attack[name]
    out.update({"images": n, "clean": round(res.clean, 4), "pgd20": round(pgd.accuracy["pgd20"], 4),
                "autoattack": round(res.robust, 4), "autoattack_s": round(total, 2),
                "batches_of_first_attack": -(-round(res.clean * n) // ns.batch_size),
                "s_per_1000_images": round(1000 * total / n, 1),
                "autoattack_cpu_s": round(cpu, 2), "cpu_s_per_1000_images": round(1000 * cpu / n, 1),
                "s_per_1000_if_all_survive": round(1000 * all_survive, 1), "per_attack": per_attack,
                "warnings": list(res.warnings)})
    emit(out, ns, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
