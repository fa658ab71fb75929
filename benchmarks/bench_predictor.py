"""Benchmark of MSRobNet-P's architecture predictor (GATES encoder, torch-geometric).

Measures and prints (it asserts nothing), at the paper's settings (App. B.1)
unless told otherwise:

* scoring throughput: architectures per second, one architecture per call
  (what each step of the inner search does) and in batches of ``--batch``;
* one predictor stage on the device: the inner evolutionary search
  (population 20, tournament 5, N_p x 50 = 2,500 steps, each scoring one
  mutated topology) plus the tuning on the N_p = 50 picks (100 epochs,
  batch 50);
* the initial training on N = 200 architectures (100 epochs, batch 50).

Rewards are synthetic (a weighted count of convolution edges); the timings do
not depend on them.

Examples::

    python benchmarks/bench_predictor.py                  # CPU, paper settings
    python benchmarks/bench_predictor.py --threads 0        # torch's default thread count
    python benchmarks/bench_predictor.py --device cuda
"""

from __future__ import annotations

import random
import statistics
import sys
import time

import numpy as np
import torch

from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.msrobnet import predictor as P
from nni_robust.strategies.msrobnet.predictor_search import inner_search

from benchlib import bench_parser, emit, setup


def _synthetic_reward(ops: torch.Tensor) -> np.ndarray:
    w = torch.linspace(0.5, 1.5, ops.shape[1] * ops.shape[2]).view(ops.shape[1], ops.shape[2])
    return ((ops >= 2) * w).sum(dim=(1, 2)).numpy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, device="cpu", threads=1)  # 1: the strategy's predictor_threads
    parser.add_argument("--layout", default="stagewise")
    parser.add_argument("--num-random", type=int, default=200, help="N: initial training set")
    parser.add_argument("--picks", type=int, default=50, help="N_p")
    parser.add_argument("--pick-every", type=int, default=50, help="inner steps per pick")
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--tournament", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100, help="initial training epochs")
    parser.add_argument("--tune-epochs", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2500, help="batch of the batched scoring")
    parser.add_argument("--single", type=int, default=300, help="single-architecture calls timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-initial", action="store_true", help="do not time the initial training")
    ns = parser.parse_args(argv)
    device = setup(ns)
    layout = Layout.from_name(ns.layout)
    rng = random.Random(0)
    archs = [DenseRobArch.random(layout, rng) for _ in range(max(ns.num_random, ns.batch, ns.single))]
    ops = P.encode_archs(archs, layout)
    rewards = _synthetic_reward(ops)
    model = P.build_predictor(layout, seed=0, device=device)
    train_cfg = P.RankTrainConfig(epochs=ns.epochs, tune_epochs=ns.tune_epochs)
    out: dict[str, float | int | str] = {"device": str(device), "threads": torch.get_num_threads(),
                                         "layout": layout.name,
                                         "params": sum(p.numel() for p in model.parameters())}

    if not ns.skip_initial:
        start = time.perf_counter()
        P.train_predictor(model, ops[:ns.num_random], rewards[:ns.num_random], epochs=ns.epochs, config=train_cfg)
        _sync(device)
        out["initial_training_s"] = time.perf_counter() - start

    # scoring throughput
    model.eval()
    P.predict(model, ops[:8])
    single = []
    for _ in range(ns.repeats):
        start = time.perf_counter()
        for i in range(ns.single):
            P.predict(model, ops[i:i + 1])
        _sync(device)
        single.append(ns.single / (time.perf_counter() - start))
    batched = []
    for _ in range(ns.repeats):
        start = time.perf_counter()
        P.predict(model, ops[:ns.batch], batch_size=ns.batch)
        _sync(device)
        batched.append(ns.batch / (time.perf_counter() - start))
    out["archs_per_s_single"] = statistics.median(single)
    out[f"archs_per_s_batch{ns.batch}"] = statistics.median(batched)

    # one stage: inner search + tuning on the picks
    def score(arrays: np.ndarray) -> np.ndarray:
        return P.predict(model, torch.from_numpy(arrays).view(arrays.shape[0], -1, P.NUM_EDGES))

    initial = [ops[i].flatten().numpy().astype(np.int64) for i in np.argsort(-rewards[:ns.num_random])[:ns.population]]
    exclude = {ops[i].flatten().numpy().astype(np.int64).tobytes() for i in range(ns.num_random)}
    start = time.perf_counter()
    picks, scored = inner_search(score, initial, population=ns.population, tournament=ns.tournament,
                                 num_picks=ns.picks, pick_every=ns.pick_every, exclude=exclude, rng=random.Random(0))
    inner_s = time.perf_counter() - start
    pick_ops = torch.from_numpy(np.stack([a for a, _ in picks])).view(len(picks), -1, P.NUM_EDGES)
    start = time.perf_counter()
    P.train_predictor(model, pick_ops, _synthetic_reward(pick_ops), epochs=ns.tune_epochs, config=train_cfg)
    _sync(device)
    tune_s = time.perf_counter() - start
    out.update({"inner_search_scored": scored, "inner_search_s": inner_s, "tuning_s": tune_s,
                "stage_s": inner_s + tune_s, "inner_archs_per_s": scored / inner_s})

    print(f"predictor ({out['params']:,} parameters) on {out['device']}, {out['threads']} threads, layout "
          f"{layout.name}")
    if "initial_training_s" in out:
        print(f"  initial training: {ns.num_random} archs x {ns.epochs} epochs: {out['initial_training_s']:.1f} s")
    print(f"  scoring, one arch per call:  {out['archs_per_s_single']:.0f} archs/s")
    print(f"  scoring, batches of {ns.batch}:  {out[f'archs_per_s_batch{ns.batch}']:.0f} archs/s")
    print(f"  one stage: inner search {scored} scored in {inner_s:.1f} s ({out['inner_archs_per_s']:.0f}/s), "
          f"tuning on {len(picks)} picks x {ns.tune_epochs} epochs {tune_s:.1f} s; total {out['stage_s']:.1f} s")
    emit(out, ns, sort_keys=True, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
