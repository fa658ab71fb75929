"""Data-parallel training (nni_robust.distributed, TensorLoader sharding, AdversarialTrainer(distributed=True)).

One 2-process gloo run on the CPU (forked from the test process, so nothing is
imported twice; the processes join through :func:`nni_robust.distributed.setup`
as under torchrun) does every multi-process job in turn: one step with
synchronised BatchNorm must equal the step of a plain one-process run with the
same global batch (within float tolerance), per-process BatchNorm statistics
must not, and a stopped and resumed run must end with the weights of an
uninterrupted one, bit for bit, with rank 0 alone writing the checkpoint.
``nni-robust train --nproc 2`` then runs through the real torchrun launcher.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

import nni_robust.training as training
from nni_robust import distributed
from nni_robust.checkpoint import load_checkpoint
from nni_robust.data import TensorLoader, load_dataset
from nni_robust.errors import ConfigError
from nni_robust.training import AdversarialTrainer, TrainConfig

# --------------------------------------------------------------------------- loader sharding


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_shards_concatenate_to_the_single_process_batches():
    x, y = load_dataset("digits", split="final").train
    x, y = x[:100], y[:100]
    kw = dict(batch_size=16, shuffle=True, augment=True, seed=7)
    whole = _batches(TensorLoader(x, y, **kw))
    same = _batches(TensorLoader(x, y, rank=0, world_size=1, **kw))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole, same))
    shards = [_batches(TensorLoader(x, y, rank=r, world_size=4, **kw)) for r in range(4)]
    assert len(TensorLoader(x, y, rank=1, world_size=4, **kw)) == len(whole) == 7
    assert all(len(s) == len(whole) for s in shards)
    for b, (xb, yb) in enumerate(whole):
        parts = [s[b] for s in shards]
        assert len({p[0].shape[0] for p in parts}) == 1  # equal shares: 4 x 4, last batch 4 x 1
        assert torch.equal(torch.cat([p[0] for p in parts]), xb)  # same order, crops and flips
        assert torch.equal(torch.cat([p[1] for p in parts]), yb)


def test_shards_pad_to_equal_sizes_and_cover_every_image():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    y = torch.arange(10)
    shards = [list(TensorLoader(x, y, batch_size=4, seed=1, rank=r, world_size=4)) for r in range(4)]
    sizes = [[b[1].shape[0] for b in s] for s in shards]
    assert sizes == [[1, 1, 1]] * 4  # 10 images padded to 12: 3 global batches of 4
    seen = torch.cat([b[1] for s in shards for b in s])
    assert set(seen.tolist()) == set(range(10)) and len(seen) == 12
    # the epoch counter (the resume state) advances the same way on every rank
    loader = TensorLoader(x, y, batch_size=4, seed=1, rank=2, world_size=4)
    list(loader)
    assert loader.state_dict() == {"epoch": 1, "seed": 1}


def test_shard_arguments_are_checked():
    x, y = torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ConfigError, match="multiple of the number of processes 3"):
        TensorLoader(x, y, batch_size=4, world_size=3)
    with pytest.raises(ConfigError, match="rank must be < world_size=2"):
        TensorLoader(x, y, batch_size=4, rank=2, world_size=2)


def test_one_process_helpers_are_identities(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info, device = distributed.setup("cpu")
    assert info == distributed.DistInfo() and info.is_main and not info.enabled and device.type == "cpu"
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and distributed.gather_objects(5) == [5]
    model = nn.BatchNorm2d(3)
    assert distributed.sync_batchnorm(model, "cpu") is model
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="inconsistent"):
        distributed.env_info()
    cmd = distributed.torchrun_command(2, "nni_robust.trial.cli", ["train", "x"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    with pytest.raises(ConfigError):
        distributed.torchrun_command(0, "m")


def test_final_nproc_is_checked():
    from nni_robust.strategies.settings import TrialSettings

    with pytest.raises(ConfigError, match="final.nproc"):
        TrialSettings.from_dict({"dataset": "digits", "final": {"nproc": 0}})
    gpus = TrialSettings.from_dict({"dataset": "digits", "device": "cuda", "final": {"nproc": 2}})
    with pytest.raises(ConfigError, match="final.nproc is 2 .* trialGpuNumber is 1"):
        gpus.preflight(gpus_per_trial=1, platform="remote")
    cpu = TrialSettings.from_dict({"dataset": "digits", "device": "cpu", "final": {"nproc": 2},
                                   "evaluation": {"calib_images": 64}})
    assert cpu.preflight(gpus_per_trial=0) == []  # gloo processes on the CPU need no GPU


def test_relay_reports_complete_lines_once(tmp_path):
    from nni_robust.strategies.final import _relay

    path, got = tmp_path / "epochs.jsonl", []
    assert _relay(path, 0, got.append) == 0
    path.write_text('{"default": 0.1, "epoch": 1.0}\n{"default": 0.2')  # the second line is being written
    assert _relay(path, 0, got.append) == 1
    path.write_text('{"default": 0.1, "epoch": 1.0}\n{"default": 0.2, "epoch": 2.0}\n')
    assert _relay(path, 1, got.append) == 2
    assert got == [{"default": 0.1, "epoch": 1.0}, {"default": 0.2, "epoch": 2.0}]


# --------------------------------------------------------------------------- a 2-process gloo run


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def _config(step: bool) -> TrainConfig:
    """``step``: one step of 32 images, PGD-2 without random start (deterministic); else 2 epochs of 2 steps
    with a random start (the RNG state matters for the resume)."""
    return TrainConfig(epochs=1 if step else 2, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4,
                       schedule="constant", grad_clip=1.0, label_smoothing=0.1, attack="pgd", eps=0.1, step=0.05,
                       steps=2, random_start=not step, seed=3)


def _train(step: bool, rank: int = 0, world_size: int = 1, **trainer_kw) -> AdversarialTrainer:
    images, labels = load_dataset("digits", split="final").train
    n = 32 if step else 64
    loader = TensorLoader(images[:n], labels[:n], batch_size=32, shuffle=True, augment=True, seed=5,
                          rank=rank, world_size=world_size)
    trainer = AdversarialTrainer(_cnn(), _config(step), device="cpu", **trainer_kw)
    trainer.fit(loader)
    return trainer


def _rank_jobs(info: distributed.DistInfo, out: Path) -> None:
    """Every job of the 2-process run; rank r writes ``<job>.rank<r>.pt`` (weights, history, checkpoint writes)."""
    saves = 0
    original = training.save_checkpoint

    def counting_save(*args, **kwargs):
        nonlocal saves
        saves += 1
        return original(*args, **kwargs)

    training.save_checkpoint = counting_save
    jobs = {"step": dict(step=True), "step_nosync": dict(step=True, sync_bn=False),
            "straight": dict(step=False, checkpoint_path=out / "straight.ckpt"),
            "stop1": dict(step=False, checkpoint_path=out / "resumed.ckpt", on_epoch_end=lambda e, m: e == 1),
            "resume": dict(step=False, checkpoint_path=out / "resumed.ckpt")}  # a new trainer, from the checkpoint
    for job, kw in jobs.items():
        saves = 0
        trainer = _train(rank=info.rank, world_size=info.world_size, distributed=True, **kw)
        torch.save({"state": trainer.model.state_dict(), "history": trainer.history, "saves": saves},
                   out / f"{job}.rank{info.rank}.pt")


def _rank_main(rank: int, world_size: int, port: int, out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        info, device = distributed.setup("cpu")  # as under torchrun: from the environment
        assert (info.rank, info.world_size, device.type) == (rank, world_size, "cpu")
        _rank_jobs(info, out)
        distributed.shutdown()
    except BaseException:
        (out / f"error.rank{rank}.txt").write_text(traceback.format_exc())
        os._exit(1)


@pytest.fixture(scope="module")
def one_process():
    """The reference: one plain process (no process group), the same global batch of 32. Run before the fork,
    so that the children inherit everything it imported."""
    return _train(step=True)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, one_process):
    """The folder of the 2-process run (forked: the children inherit the imports)."""
    from nni_robust.trial.experiment import free_port

    out = tmp_path_factory.mktemp("ddp")
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    errors = "".join(f.read_text() for f in sorted(out.glob("error.rank*.txt")))
    assert [p.exitcode for p in procs] == [0, 0], errors or "a rank was killed or timed out"
    return out


def _load(out: Path, job: str, rank: int = 0) -> dict:
    return torch.load(out / f"{job}.rank{rank}.pt", weights_only=True)


def test_two_processes_take_the_one_process_step(one_process, two_processes):
    ref = one_process
    got = _load(two_processes, "step")
    init = _cnn().state_dict()
    want = ref.model.state_dict()
    assert set(got["state"]) == set(want) == set(init)  # synchronised BatchNorm keeps the state-dict keys
    moved = max((want[k].float() - init[k].float()).abs().max().item() for k in want)
    assert moved > 1e-3  # the step did something
    for key in want:  # weights, and the BatchNorm running statistics (global-batch statistics in both)
        assert torch.allclose(got["state"][key].float(), want[key].float(), rtol=1e-4, atol=1e-6), key
    # the replicas agree, and the epoch's metrics are over the global batch, as in the one-process run
    other = _load(two_processes, "step", rank=1)
    assert all(torch.equal(other["state"][k], got["state"][k]) for k in want)
    assert got["history"][0]["train_loss"] == pytest.approx(ref.history[0]["train_loss"], rel=1e-5)
    assert got["history"][0]["train_acc"] == ref.history[0]["train_acc"]
    # with per-process BatchNorm statistics the step differs: why the trainer synchronises them by default
    nosync = _load(two_processes, "step_nosync")["state"]
    assert max((nosync[k].float() - want[k].float()).abs().max().item() for k in want if "running" not in k) > 1e-4


def test_resume_is_exact_and_rank0_alone_writes(two_processes):
    straight, resumed = _load(two_processes, "straight"), _load(two_processes, "resume")
    assert all(torch.equal(straight["state"][k], resumed["state"][k]) for k in straight["state"])
    counts = {job: [_load(two_processes, job, r)["saves"] for r in range(2)] for job in ("straight", "stop1", "resume")}
    assert counts == {"straight": [2, 0], "stop1": [1, 0], "resume": [1, 0]}
    ckpt = load_checkpoint(two_processes / "resumed.ckpt")
    assert ckpt["epoch"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])  # seed + rank
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][1]["train_loss"] == straight["history"][1]["train_loss"]


# --------------------------------------------------------------------------- the final training under torchrun


def test_nni_robust_train_in_two_processes(tmp_path, capsys, monkeypatch):
    """``nni-robust train --nproc 2`` on the CPU: torchrun with 2 gloo processes; rank 0 alone writes."""
    import yaml

    from nni_robust.spaces.dense_rob import DenseRobArch
    from nni_robust.trial.cli import main as cli_main

    arch = tmp_path / "arch.json"
    arch.write_text(DenseRobArch.random("cellwise-4", 0).to_json())
    settings = tmp_path / "settings.yml"
    settings.write_text(yaml.safe_dump({
        "dataset": "digits", "device": "cpu", "seed": 0, "space": {"layout": "cellwise-4"},
        # the whole digits training split (1,438 images) in one global batch: one step an epoch (clean: the
        # adversarial steps under DDP are checked above)
        "final": {"train": {"epochs": 2, "milestones": [2], "batch_size": 1438, "attack": "none"},
                  "attacks": {"fgsm": {"name": "fgsm", "eps": 0.03}}, "eval_images": 40, "eval_batch_size": 40}}))
    out = tmp_path / "out"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli_main(["train", str(arch), "--config", str(settings), "--init-channels", "2", "--nproc", "2",
                     "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "final_report.json").read_text())
    assert report["processes"] == 2 and printed["accuracy"] == report["accuracy"]
    assert set(report["accuracy"]) == {"clean", "fgsm"}
    # rank 0's epochs, relayed to the launching process's reporter (NNI's, in a final trial)
    relayed = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in relayed] == [1.0, 2.0]
    assert [r["train_loss"] for r in relayed] == pytest.approx([h["train_loss"] for h in report["history"]])
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one writer
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert set(load_checkpoint(out / "model.pt")) >= {"model", "arch", "init_channels"}
    log = (out / "torchrun.log").read_text()
    assert "rank 0 INFO" in log and "rank 1 INFO" in log and "Data-parallel final training: rank 1 of 2" in log
