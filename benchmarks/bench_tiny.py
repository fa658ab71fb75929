"""Tiny inputs, before and after: supernet PGD-7 training and one multi-shot evaluation on digits (8x8).

Runs the same work with two versions of ``nni_robust`` side by side in one run,
interleaved (repetition ``r`` runs one side then the other, the order
alternating), each in its own worker process with the same settings (1 torch
thread, ``OMP_NUM_THREADS=1``), and prints a table and the JSON record (with
the machine and its load, :func:`benchlib.emit`). These machines are shared
and noisy: only the ratio of one run counts, and the CPU-time columns (the
worker's thread time) are steadier than wall clock under load.

The work is that of ``bench_msrobnet.py --preset quick`` (the quick configs'
networks: cellwise-4 dense_rob supernets on the embedded digits data):

* ``train``: supernet PGD-7 adversarial training (eps 8/255, step 2/255,
  random start, SGD, a random architecture per step), batch 64, init
  channels ``--train-widths``; images per second over ``--train-steps`` steps
  after 2 warm-up steps; the supernet, the data order and the architectures
  are seeded, so both sides train the same network on the same batches;
* ``eval``: one multi-shot evaluation (Alg. 3): K = 4 supernets (4, 6, 8, 10),
  BN calibration on 128 validation images, FGSM reward (clean + adversarial
  accuracy) on 144 others, FLOPs, the log-power fit; seconds per architecture
  (``--archs`` seeded random architectures after one warm-up).

Each side also reports its numbers (final training loss, every supernet's
clean/adversarial accuracy and the estimate) so that the table says whether
the two versions computed the same thing.

The "before" side is a git worktree of an older commit with a
``.wtsite/sitecustomize.py`` redirecting the ``nni_robust`` imports of this
project's virtual environment to it (``git worktree add /work/wt-before
<commit>`` then ``/work/wtsite/make.sh /work/wt-before``)::

    python benchmarks/bench_tiny.py --before /work/wt-before --reps 5
    python benchmarks/bench_tiny.py --before /work/wt-before --skip-eval --train-widths 8
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SPACE = {"layout": "cellwise-4"}
EVAL_WIDTHS = (4, 6, 8, 10)


# ----------------------------------------------------------------------------- worker side
class _Worker:
    """Holds the data and the evaluator between commands (imports only what both versions have)."""

    def __init__(self, channels_last: bool) -> None:
        import torch

        torch.set_num_threads(1)
        from nni_robust.data import load_dataset

        self.torch = torch
        self.splits = load_dataset("digits", split="search")
        self.channels_last = channels_last
        self._ev = None

    def train(self, width: int, steps: int, seed: int) -> dict:
        import random

        from nni_robust.data import TensorLoader
        from nni_robust.spaces.dense_rob import DenseRobArch
        from nni_robust.strategies.networks import build_network, layout_of
        from nni_robust.training import AdversarialTrainer, TrainConfig

        torch = self.torch
        torch.manual_seed(seed)
        info = self.splits.info
        layout = layout_of(SPACE)
        model = build_network(None, width=width, info=info, space=SPACE)
        cfg = TrainConfig(epochs=1, batch_size=64, seed=seed, channels_last=self.channels_last)
        rng = random.Random(seed)
        marks: list[tuple[float, float]] = []

        def before_step(net, step):
            marks.append((time.perf_counter(), time.thread_time()))
            net.set_arch(DenseRobArch.random(layout, rng))

        trainer = AdversarialTrainer(model, cfg, device="cpu", before_step=before_step)
        warm = 2
        n = 64 * (steps + warm)
        images, labels = self.splits.train
        loader = TensorLoader(images[:n], labels[:n], batch_size=64, shuffle=True, augment=True, seed=seed,
                              device="cpu", drop_last=True)
        history = trainer.fit(loader)
        marks.append((time.perf_counter(), time.thread_time()))
        wall = marks[-1][0] - marks[warm][0]
        cpu = marks[-1][1] - marks[warm][1]
        return {"img_per_s": 64 * steps / wall, "cpu_img_per_s": 64 * steps / cpu,
                "train_loss": history[-1]["train_loss"], "train_acc": history[-1]["train_acc"]}

    def _evaluator(self):
        if self._ev is None:
            from nni_robust.strategies.msrobnet.multishot import MultiShotEvaluator
            from nni_robust.strategies.networks import build_network
            from nni_robust.strategies.settings import EvalSettings

            self.torch.manual_seed(0)
            info = self.splits.info
            supernets = {w: build_network(None, width=w, info=info, space=SPACE) for w in EVAL_WIDTHS}
            images, labels = self.splits.val
            settings = EvalSettings(calib_images=128, eval_images=144, eval_offset=128, batch_size=144)
            self._ev = MultiShotEvaluator(supernets, images[:272], labels[:272], info, settings=settings,
                                          target_flops=1.5, family="log_power", all_families=False,
                                          flops_unit=1e3, device="cpu")
        return self._ev

    def eval(self, archs: int, seed: int) -> dict:
        import random

        from nni_robust.spaces.dense_rob import DenseRobArch
        from nni_robust.strategies.networks import layout_of

        ev = self._evaluator()
        rng = random.Random(seed)
        layout = layout_of(SPACE)
        ev.evaluate(DenseRobArch.random(layout, random.Random(seed + 1000)))  # warm-up
        walls, cpus, results = [], [], []
        for _ in range(archs):
            arch = DenseRobArch.random(layout, rng)
            t, c = time.perf_counter(), time.thread_time()
            res = ev.evaluate(arch)
            walls.append(time.perf_counter() - t)
            cpus.append(time.thread_time() - c)
            results.append({"estimate": res["estimate"],
                             "acc": [[p["acc_clean"], p["acc_adv"], p["mflops"]] for p in res["supernets"]]})
        return {"s_per_arch": statistics.median(walls), "cpu_s_per_arch": statistics.median(cpus),
                "results": results}


def worker_main(channels_last: bool) -> int:
    w = _Worker(channels_last)
    import nni_robust

    print(json.dumps({"ready": True, "nni_robust": str(Path(nni_robust.__file__).parent.parent)}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        load = os.getloadavg()[0]
        out = getattr(w, cmd["op"])(**cmd["args"])
        out["load"] = round(load, 2)
        print(json.dumps(out), flush=True)
    return 0


# ----------------------------------------------------------------------------- driver side
class _Side:
    def __init__(self, name: str, root: str | None, channels_last: bool) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if root is not None:  # redirect nni_robust to the worktree (its .wtsite/sitecustomize.py)
            site = Path(root) / ".wtsite"
            if not (site / "sitecustomize.py").exists():
                raise SystemExit(f"{site}/sitecustomize.py is missing: run /work/wtsite/make.sh {root}")
            env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        args = [sys.executable, str(HERE), "--worker"] + (["--channels-last"] if channels_last else [])
        self.name = name
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(HERE.parent))
        hello = json.loads(self.proc.stdout.readline())
        self.source = hello["nni_robust"]

    def run(self, op: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} died (op {op})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE.parent))
    from benchlib import bench_parser, emit

    p = bench_parser(__doc__, device="cpu", threads=1)
    p.add_argument("--worker", action="store_true", help=argparse_hidden())
    p.add_argument("--before", help="worktree of the old version (with .wtsite/); default: no before side")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train-widths", type=int, nargs="+", default=[4, 8])
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--archs", type=int, default=2)
    p.add_argument("--channels-last", action="store_true", help="TrainConfig.channels_last on both sides")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-eval", action="store_true")
    ns = p.parse_args(argv)
    if ns.worker:
        return worker_main(ns.channels_last)
    import torch

    torch.set_num_threads(1)  # the workers' setting, so that the machine record says it

    sides = [_Side("after", None, ns.channels_last)]
    if ns.before:
        sides.insert(0, _Side("before", ns.before, ns.channels_last))
    works = []
    if not ns.skip_train:
        works += [("train", f"train C={w}", dict(width=w, steps=ns.train_steps, seed=0)) for w in ns.train_widths]
    if not ns.skip_eval:
        works.append(("eval", "multi-shot eval K=4", dict(archs=ns.archs, seed=1)))
    raw: dict[str, dict[str, list[dict]]] = {label: {s.name: [] for s in sides} for _, label, _ in works}
    try:
        for r in range(ns.reps):
            order = sides if r % 2 == 0 else sides[::-1]
            for op, label, args in works:
                for side in order:
                    res = side.run(op, **args)
                    raw[label][side.name].append(res)
                    print(f"rep {r} {label:22s} {side.name:6s} " + (
                        f"{res['img_per_s']:7.1f} img/s wall {res['cpu_img_per_s']:7.1f} img/s cpu" if op == "train"
                        else f"{res['s_per_arch']:6.2f} s/arch wall {res['cpu_s_per_arch']:6.2f} s/arch cpu")
                        + f"  load {res['load']}", file=sys.stderr, flush=True)
    finally:
        for s in sides:
            s.close()

    table, summary = [], {}
    for op, label, _ in works:
        row = {"work": label}
        for s in sides:
            rows = raw[label][s.name]
            if op == "train":
                row[s.name] = {"img_per_s": round(_med(rows, "img_per_s"), 2),
                               "cpu_img_per_s": round(_med(rows, "cpu_img_per_s"), 2),
                               "train_loss": rows[-1]["train_loss"]}
            else:
                row[s.name] = {"s_per_arch": round(_med(rows, "s_per_arch"), 3),
                               "cpu_s_per_arch": round(_med(rows, "cpu_s_per_arch"), 3),
                               "results": rows[-1]["results"]}
            row[s.name]["load"] = [r["load"] for r in rows]
        if ns.before:
            b, a = row["before"], row["after"]
            if op == "train":
                row["speedup_wall"] = round(a["img_per_s"] / b["img_per_s"], 2)
                row["speedup_cpu"] = round(a["cpu_img_per_s"] / b["cpu_img_per_s"], 2)
                row["loss_diff"] = abs(a["train_loss"] - b["train_loss"])
            else:
                row["speedup_wall"] = round(b["s_per_arch"] / a["s_per_arch"], 2)
                row["speedup_cpu"] = round(b["cpu_s_per_arch"] / a["cpu_s_per_arch"], 2)
                diffs = [abs(x - y) for rb, ra in zip(b["results"], a["results"])
                         for pb, pa in zip(rb["acc"], ra["acc"]) for x, y in zip(pb, pa)]
                row["max_acc_diff"] = max(diffs) if diffs else 0.0
        table.append(row)
    print(_format(table, [s.name for s in sides]), file=sys.stderr)
    summary = {"work": "tiny inputs (digits 8x8, cellwise-4), 1 thread", "reps": ns.reps,
               "train_steps": ns.train_steps, "archs": ns.archs, "channels_last": ns.channels_last,
               "sources": {s.name: s.source for s in sides}, "table": table}
    emit(summary, ns)
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def _format(table: list[dict], names: list[str]) -> str:
    lines = ["| work | " + " | ".join(f"{n} wall | {n} cpu" for n in names) + (" | speedup wall | speedup cpu |"
                                                                            if len(names) > 1 else " |"),
             "|---" * (1 + 2 * len(names) + (2 if len(names) > 1 else 0)) + "|"]
    for row in table:
        cells = []
        for n in names:
            v = row[n]
            if "img_per_s" in v:
                cells += [f"{v['img_per_s']:.1f} img/s", f"{v['cpu_img_per_s']:.1f} img/s"]
            else:
                cells += [f"{v['s_per_arch']:.2f} s", f"{v['cpu_s_per_arch']:.2f} s"]
        if len(names) > 1:
            cells += [f"{row['speedup_wall']:.2f}x", f"{row['speedup_cpu']:.2f}x"]
        lines.append(f"| {row['work']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
