"""GPU benchmark of the multi-shot method: the fast path beside a straightforward fp32 one, in one run.

Prints (and writes as JSON with the machine, :func:`benchlib.emit`):

1. **multi-shot evaluation at paper settings** (MSRobNet Alg. 3): K = 8
   supernets (init channels 12 ... 64, cell-wise dense_rob space, 8 cells,
   32x32 inputs), BN calibration on 640 images, FGSM reward on 5,000 others,
   FLOPs, log-power fit: seconds per architecture, *fast* (bf16 autocast,
   channels_last, evaluation batch 1,000; BatchNorm folded after
   calibration, as always; on a CPU without bf16 the fast side is
   channels_last only) beside *fp32* (fp32, NCHW, batch 500), the same
   supernets and architectures, alternating; issue 16's target: fast <= 3 s
   on an H200 and >= 3x fp32;
2. **supernet PGD-7 training** (batch 64, eps 8/255, step 2/255, random
   architecture per step) at C = 12, 24, 64: images per second, bf16 +
   channels_last beside fp32 NCHW (target >= 3x);
3. **final training of one fixed network** (PGD-7, batch 128, C = 36): images
   per second of fp32 NCHW eager, bf16 + channels_last eager, and bf16 +
   channels_last through ``torch.compile`` (``TrainConfig.compile``; the
   architecture is fixed, so the graph is static), each after its warm-up
   steps, whose time (the compilation, for the compiled one) is printed
   beside;
4. **is bf16 safe**: a fixed network (one architecture, C = 16) trained
   adversarially (FGSM, a few epochs) on learnable synthetic data, then its
   PGD-20 accuracy in fp32 and under bf16 autocast on 2,000 images; safe when
   within 0.5 points.

Data are synthetic (CIFAR format; no download, no scikit-learn): the GPU
machine has torch, scipy and tensorboard but neither NNI nor Optuna, and
nothing here imports them. Without an installed ``nni_robust`` the script
maps the package onto this checkout itself (as the editable install does).

Examples::

    python benchmarks/gpu.py                     # on the GPU machine: < 8 minutes
    python benchmarks/gpu.py --smoke --device cpu  # a minute on a CPU: checks that it runs
    bash benchmarks/gpu.sh                       # the same, JSON to $OUT/gpu.json when $OUT is set
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: The package layout of pyproject.toml / the editable install: package -> folder of this checkout.
_PACKAGES = {"nni_robust": "nni_robust", "nni_robust.spaces": "spaces", "nni_robust.strategies": "strategies",
             "nni_robust.trial": "trial"}


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Import ``nni_robust`` (and its sub-packages kept in other folders) from this checkout."""

    def find_spec(self, fullname, path=None, target=None):
        folder = _PACKAGES.get(fullname)
        if folder is None:
            return None
        init = ROOT / folder / "__init__.py"
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


def _ensure_importable() -> str:
    if importlib.util.find_spec("nni_robust") is None:
        sys.meta_path.insert(0, _CheckoutFinder())
        return "checkout (import shim)"
    return "installed"


SOURCE = _ensure_importable()

import torch  # noqa: E402

from benchlib import bench_parser, emit, setup  # noqa: E402
from nni_robust.attacks import build_attack  # noqa: E402
from nni_robust.data import DatasetInfo, TensorLoader  # noqa: E402
from nni_robust.evaluation import evaluate  # noqa: E402
from nni_robust.spaces.dense_rob import DenseRobArch  # noqa: E402
from nni_robust.strategies.msrobnet.multishot import MultiShotEvaluator  # noqa: E402
from nni_robust.strategies.networks import build_network, layout_of  # noqa: E402
from nni_robust.strategies.settings import EvalSettings  # noqa: E402
from nni_robust.training import AdversarialTrainer, TrainConfig  # noqa: E402

INFO = DatasetInfo(name="synthetic", num_classes=10, channels=3, size=32,
                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
FULL = dict(widths=[12, 24, 30, 36, 40, 44, 54, 64], calib=640, evaln=5000, archs=3, train_widths=[12, 24, 64],
            train_steps=8, final_width=36, final_batch=128, final_steps=8, final_warmup=3,
            safe_width=16, safe_epochs=4, safe_train=8000, safe_eval=2000, layout="cellwise")
SMOKE = dict(widths=[4, 6, 8], calib=64, evaln=64, archs=1, train_widths=[4], train_steps=1, final_width=4,
             final_batch=32, final_steps=2, final_warmup=2, safe_width=4, safe_epochs=1, safe_train=128,
             safe_eval=64, layout="cellwise-4")


def synthetic(n: int, seed: int = 0, learnable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 3, 32, 32) and labels; ``learnable``: a smooth template per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    if not learnable:
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), y
    templates = torch.nn.functional.interpolate(torch.rand(10, 3, 4, 4, generator=g), size=32, mode="bilinear")
    x = 0.6 * templates[y] + 0.4 * torch.rand(n, 3, 32, 32, generator=g)
    return (x * 255).round().to(torch.uint8), y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_multishot(cfg: dict, device: torch.device) -> dict:
    bf16 = device.type == "cuda"  # bf16 autocast where the hardware has it (on AVX2 CPUs it is emulated: slow)
    space = {"layout": cfg["layout"]}
    layout = layout_of(space)
    n = cfg["calib"] + cfg["evaln"]
    images, labels = synthetic(n)
    variants = {
        "fp32": dict(channels_last=False, settings=EvalSettings(calib_images=cfg["calib"], eval_images=cfg["evaln"],
                                                                eval_offset=cfg["calib"], batch_size=500)),
        "fast": dict(channels_last=True, settings=EvalSettings(calib_images=cfg["calib"], eval_images=cfg["evaln"],
                                                               eval_offset=cfg["calib"], batch_size=1000,
                                                               autocast=bf16)),
    }
    evaluators = {}
    for name, kw in variants.items():
        torch.manual_seed(0)  # the same supernets on both sides
        supernets = {w: build_network(None, width=w, info=INFO, space=space) for w in cfg["widths"]}
        evaluators[name] = MultiShotEvaluator(supernets, images, labels, INFO, target_flops=1560.0,
                                              family="log_power", all_families=False, device=device, **kw)
    rng = random.Random(1)
    warm = DenseRobArch.random(layout, random.Random(99))
    for ev in evaluators.values():
        ev.evaluate(warm)
    secs: dict[str, list[float]] = {name: [] for name in evaluators}
    results: dict[str, list[dict]] = {name: [] for name in evaluators}
    for r in range(cfg["archs"]):
        arch = DenseRobArch.random(layout, rng)
        for name in (list(evaluators) if r % 2 == 0 else list(evaluators)[::-1]):
            _sync(device)
            t = time.perf_counter()
            res = evaluators[name].evaluate(arch)
            _sync(device)
            secs[name].append(time.perf_counter() - t)
            results[name].append(res)
    out = {name: {"s_per_arch": round(statistics.median(v), 3), "all_s": [round(s, 3) for s in v]}
           for name, v in secs.items()}
    out["speedup"] = round(out["fp32"]["s_per_arch"] / out["fast"]["s_per_arch"], 2)
    diffs = [abs(a["acc_adv"] - b["acc_adv"]) for ra, rb in zip(results["fp32"], results["fast"])
             for a, b in zip(ra["supernets"], rb["supernets"])]
    out["max_acc_adv_diff_points"] = round(100 * max(diffs), 3)
    out["estimate_diff"] = [round(abs(a["estimate"] - b["estimate"]), 5)
                            for a, b in zip(results["fp32"], results["fast"])]
    out["work"] = {"K": len(cfg["widths"]), "widths": cfg["widths"], "calib_images": cfg["calib"],
                   "eval_images": cfg["evaln"], "archs": cfg["archs"], "layout": cfg["layout"]}
    return out


def bench_train(width: int, cfg: dict, device: torch.device, *, fast: bool) -> float:
    space = {"layout": cfg["layout"]}
    layout = layout_of(space)
    steps = cfg["train_steps"]
    images, labels = synthetic(64 * (steps + 3), seed=2)
    torch.manual_seed(0)
    model = build_network(None, width=width, info=INFO, space=space)
    config = TrainConfig(epochs=1, batch_size=64, autocast=fast and device.type == "cuda", channels_last=fast, seed=0)
    rng = random.Random(0)
    marks: list[float] = []

    def before_step(net, step):
        _sync(device)  # the timing's sync, one per step
        marks.append(time.perf_counter())
        net.set_arch(DenseRobArch.random(layout, rng))

    trainer = AdversarialTrainer(model, config, device=device, before_step=before_step)
    loader = TensorLoader(images, labels, batch_size=64, shuffle=True, augment=True, seed=0, device=device,
                          drop_last=True, channels_last=fast)
    trainer.fit(loader)
    _sync(device)
    marks.append(time.perf_counter())
    per_step = [b - a for a, b in zip(marks[3:], marks[4:])] or [marks[-1] - marks[0]]
    return 64 / statistics.median(per_step)


class _TimedBatches:
    """A loader whose every batch is preceded by a device sync and a time mark."""

    def __init__(self, loader, device: torch.device) -> None:
        self.loader, self.device, self.marks = loader, device, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            _sync(self.device)
            self.marks.append(time.perf_counter())
            yield batch


def bench_final(cfg: dict, device: torch.device, variant: str) -> dict:
    """PGD-7 training of one fixed architecture: ``fp32`` (NCHW), ``fast`` (bf16 + channels_last), ``compiled``."""
    space = {"layout": cfg["layout"]}
    arch = DenseRobArch.random(layout_of(space), random.Random(7))
    batch, steps, warm = cfg["final_batch"], cfg["final_steps"], cfg["final_warmup"]
    fast = variant != "fp32"
    torch.manual_seed(0)
    model = build_network(arch, width=cfg["final_width"], info=INFO, space=space)
    config = TrainConfig(epochs=1, batch_size=batch, autocast=fast and device.type == "cuda", channels_last=fast,
                         compile=variant == "compiled", seed=0)
    trainer = AdversarialTrainer(model, config, device=device, log_every=0)
    images, labels = synthetic(batch * (steps + warm), seed=4)
    loader = _TimedBatches(TensorLoader(images, labels, batch_size=batch, shuffle=True, augment=True, seed=0,
                                        device=device, drop_last=True, channels_last=fast), device)
    trainer.fit(loader)
    _sync(device)
    marks = loader.marks + [time.perf_counter()]
    per_step = [b - a for a, b in zip(marks[warm:], marks[warm + 1:])]
    return {"img_per_s": round(batch / statistics.median(per_step), 1),
            "warmup_s": round(marks[warm] - marks[0], 2), "warmup_steps": warm,
            "final_loss": round(trainer.history[-1]["train_loss"], 4)}


def bf16_safety(cfg: dict, device: torch.device) -> dict:
    space = {"layout": cfg["layout"]}
    x, y = synthetic(cfg["safe_train"] + cfg["safe_eval"], seed=3, learnable=True)
    n = cfg["safe_train"]
    torch.manual_seed(0)
    arch = DenseRobArch.random(layout_of(space), random.Random(5))
    model = build_network(arch, width=cfg["safe_width"], info=INFO, space=space)
    config = TrainConfig(epochs=cfg["safe_epochs"], batch_size=128, lr=0.05, attack="fgsm", eps=8 / 255,
                         step=10 / 255, seed=0, schedule="cosine", channels_last=True)
    trainer = AdversarialTrainer(model, config, device=device)
    t = time.perf_counter()
    trainer.fit(TensorLoader(x[:n], y[:n], batch_size=128, shuffle=True, augment=True, seed=0, device=device,
                             drop_last=True, channels_last=True))
    train_s = time.perf_counter() - t
    loader = TensorLoader(x[n:], y[n:], batch_size=500, shuffle=False, device=device, channels_last=True)
    acc = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(1)  # the same PGD random starts
        pgd = build_attack("pgd", eps=8 / 255, step=2 / 255, steps=20, random_start=True, autocast=bf16)
        acc[name] = evaluate(model, loader, {"clean": None, "pgd20": pgd}, device=device, autocast=bf16)
    diff = 100 * abs(acc["fp32"]["pgd20"] - acc["bf16"]["pgd20"])
    return {"fp32": acc["fp32"], "bf16": acc["bf16"], "pgd20_diff_points": round(diff, 3),
            "safe": diff <= 0.5, "train_s": round(train_s, 1)}


def main(argv=None) -> int:
    p = bench_parser(__doc__, device="auto", threads=0)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs (any device)")
    p.add_argument("--archs", type=int, help="architectures timed per side (default 3; smoke 1)")
    p.add_argument("--skip", nargs="*", default=[], choices=["multishot", "train", "final", "bf16"])
    ns = p.parse_args(argv)
    device = setup(ns)
    cfg = dict(SMOKE if ns.smoke else FULL)
    if ns.archs:
        cfg["archs"] = ns.archs
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    out: dict = {"device": str(device), "smoke": ns.smoke, "nni_robust": SOURCE,
                 "nni_loaded": "nni" in sys.modules, "optuna_loaded": "optuna" in sys.modules}
    if "multishot" not in ns.skip:
        out["multishot"] = ms = bench_multishot(cfg, device)
        print(f"multi-shot evaluation, K={len(cfg['widths'])}, {cfg['evaln']} images: fast "
              f"{ms['fast']['s_per_arch']:.2f} s/arch, fp32 {ms['fp32']['s_per_arch']:.2f} s/arch "
              f"({ms['speedup']:.2f}x; target <= 3 s and >= 3x); max |acc_adv diff| "
              f"{ms['max_acc_adv_diff_points']:.2f} points", file=sys.stderr, flush=True)
    if "train" not in ns.skip:
        out["train_img_per_s"] = {}
        for w in cfg["train_widths"]:
            # fp32 first, then fast, twice, alternating; the medians
            rates = {"fp32": [], "fast": []}
            for order in (("fp32", "fast"), ("fast", "fp32"))[:1 if ns.smoke else 2]:
                for name in order:
                    rates[name].append(bench_train(w, cfg, device, fast=name == "fast"))
            row = {k: round(statistics.median(v), 1) for k, v in rates.items()}
            row["speedup"] = round(row["fast"] / row["fp32"], 2)
            out["train_img_per_s"][w] = row
            print(f"supernet PGD-7 training, C={w}: fast {row['fast']:.1f} img/s, fp32 {row['fp32']:.1f} img/s "
                  f"({row['speedup']:.2f}x; target >= 3x)", file=sys.stderr, flush=True)
    if "final" not in ns.skip:
        out["final_train"] = fin = {v: bench_final(cfg, device, v) for v in ("fp32", "fast", "compiled")}
        for v in ("fast", "compiled"):
            fin[v]["speedup"] = round(fin[v]["img_per_s"] / fin["fp32"]["img_per_s"], 2)
        print(f"final training (fixed network, C={cfg['final_width']}, PGD-7, batch {cfg['final_batch']}): "
              f"fp32 {fin['fp32']['img_per_s']:.1f} img/s, bf16+channels_last {fin['fast']['img_per_s']:.1f} "
              f"({fin['fast']['speedup']:.2f}x), compiled {fin['compiled']['img_per_s']:.1f} "
              f"({fin['compiled']['speedup']:.2f}x; compile + {fin['compiled']['warmup_steps']} warm-up steps "
              f"{fin['compiled']['warmup_s']:.1f} s, eager {fin['fast']['warmup_s']:.1f} s)",
              file=sys.stderr, flush=True)
    if "bf16" not in ns.skip:
        out["bf16_check"] = chk = bf16_safety(cfg, device)
        print(f"bf16 PGD-20 accuracy {chk['bf16']['pgd20']:.4f} vs fp32 {chk['fp32']['pgd20']:.4f} "
              f"(clean {chk['fp32']['clean']:.4f}): {chk['pgd20_diff_points']:.2f} points, "
              f"{'safe' if chk['safe'] else 'NOT safe'} (<= 0.5)", file=sys.stderr, flush=True)
    out["total_s"] = round(time.perf_counter() - start, 1)
    out["nni_loaded"] = "nni" in sys.modules
    emit(out, ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
