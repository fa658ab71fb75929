"""Data-parallel training over several processes (PyTorch DistributedDataParallel).

One training run, several processes: each process (a *rank*) holds a replica of
the model, takes its own share of every global batch
(:class:`nni_robust.data.TensorLoader` with ``rank``/``world_size``), and the
gradients are averaged across processes after every backward pass, so all
replicas take the same optimizer step. Processes are started by ``torchrun``
(``python -m torch.distributed.run``), which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them.
Backend: NCCL on CUDA devices (one GPU per process, ``cuda:LOCAL_RANK``),
gloo on the CPU.

The contract, which :class:`nni_robust.training.AdversarialTrainer` implements
with ``distributed=True``:

* **Same global batch, same step.** ``TrainConfig.batch_size`` stays the
  *global* batch; each of ``W`` processes gets a contiguous ``batch_size / W``
  slice of every global batch of the seeded epoch order. Gradients are
  averaged over processes (equal slice sizes, so the average is the mean over
  the global batch).
* **BatchNorm is synchronised** (:func:`sync_batchnorm`): in training mode,
  batch statistics are computed over the global batch, not per process, so a
  ``W``-process run takes the step a 1-process run with the same global batch
  takes (within float rounding), attack forwards included. On CUDA this is
  PyTorch's :class:`torch.nn.SyncBatchNorm`; PyTorch's supports GPUs only, so
  on the CPU :class:`CpuSyncBatchNorm` does the same with differentiable
  all-reduces (two per layer and forward pass: the mean, then the variance).
* **One writer.** Rank 0 writes checkpoints, TensorBoard logs and reports
  metrics; the checkpoint holds every rank's RNG state (gathered), so a resume
  with the same number of processes is exact.

Nothing here changes single-process behaviour: with ``WORLD_SIZE`` unset (or
1) :func:`setup` initialises nothing and every helper is the identity.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError

__all__ = ["DistInfo", "env_info", "current", "setup", "shutdown", "all_reduce_sum", "gather_objects",
           "broadcast_object", "barrier", "sync_batchnorm", "CpuSyncBatchNorm", "torchrun_command", "run_torchrun"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: global rank (0 writes files and reports metrics).
        world_size: number of processes.
        local_rank: rank on this machine (the CUDA device index it uses).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """This process writes checkpoints and logs and reports metrics."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer (set by torchrun), but is {value!r}.") \
            from exc


def env_info() -> DistInfo:
    """The run's layout from torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``);
    ``DistInfo()`` (one process) when they are not set."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} (torchrun's environment) are inconsistent.")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def current() -> DistInfo:
    """This process's place in the initialised process group (``DistInfo()`` when there is none)."""
    if dist.is_available() and dist.is_initialized():
        info = env_info()
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=info.local_rank)
    return DistInfo()


def setup(device: str | torch.device | None = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes, and pick this process's device.

    With one process (no torchrun, or ``--nproc-per-node 1``) nothing is
    initialised and the device is ``resolve_device(device)``. With several, the
    backend is NCCL when the device is CUDA (each process takes
    ``cuda:LOCAL_RANK``) and gloo on the CPU.

    Returns:
        ``(info, device)``.

    Raises:
        ConfigError: more processes on this machine than CUDA devices.
    """
    from .device import resolve_device

    info = env_info()
    dev = resolve_device(device)
    if not info.enabled:
        return info, dev
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise ConfigError(f"process {info.local_rank} on this machine needs its own CUDA device, but there are "
                              f"{count}: start at most {count} processes per machine (torchrun --nproc-per-node).")
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("Process group joined: rank %d of %d (%s, device %s)", info.rank, info.world_size, backend, dev)
    return current(), dev


def shutdown() -> None:
    """Leave the process group (no-op without one).

    Unreferenced DistributedDataParallel wrappers (a finished trainer's, held only in
    reference cycles) are collected first: one still alive when the gloo group is destroyed
    made the process abort at exit ("terminate called without an active exception", SIGABRT;
    torch 2.14, about one run in six).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes, in place (identity with one process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` with one process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every process (no-op with one)."""
    if _active():
        dist.barrier()


# --------------------------------------------------------------------------- synchronised BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes of ``group``, differentiable: the gradient of a sum over processes is the sum over
    processes of the gradients (one all-reduce forward, one backward)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:  # noqa: D102
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=ctx.group)
        return out, None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on the CPU (gloo).

    PyTorch's :class:`torch.nn.SyncBatchNorm` refuses CPU inputs (and DDP refuses
    it in a CPU model). In training mode with several processes this layer
    computes the batch mean over all processes (one differentiable all-reduce
    of the per-channel sums and counts), then the biased variance around it (a
    second all-reduce), normalises with them and updates the running
    statistics with the unbiased variance, as
    :func:`torch.nn.functional.batch_norm` does on one process. The backward
    pass of the all-reduces sums the gradients of the statistics over
    processes, which is the gradient of BatchNorm over the global batch. In
    eval mode or with one process it is plain BatchNorm. The statistics travel
    on a process group of their own (``process_group``), so they never
    interleave with DDP's gradient buckets. Its parameters, buffers and state
    dict are those of ``nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 (torch's name)
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's name)
        if not (self.training and input.device.type == "cpu" and _active()):
            return super().forward(input)
        self._check_input_dim(input)
        group = self.process_group or dist.group.WORLD
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() / channels], dtype=input.dtype, device=input.device)
        totals = _AllReduceSum.apply(torch.cat([input.sum(dims), count]), group)
        n = totals[-1]
        mean = totals[:channels] / n
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims), group) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n.detach() / (n.detach() - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return out


_CPU_BN_GROUP: Any = None


def sync_batchnorm(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Turn every BatchNorm layer of ``model`` into a synchronised one (when there are several processes).

    CUDA: :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`. CPU:
    :class:`CpuSyncBatchNorm` layers (on a gloo process group of their own).
    The layers keep their parameters and buffers (same objects), so the state
    dict keys are unchanged and an optimizer built before still holds them.
    Every process must call this (creating the process group is collective).

    Returns:
        the converted model (``model`` itself with one process).
    """
    global _CPU_BN_GROUP
    if not _active():
        return model
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if _CPU_BN_GROUP is None:
        _CPU_BN_GROUP = dist.new_group(backend="gloo")
    return _convert_cpu(model, _CPU_BN_GROUP)


def _convert_cpu(module: nn.Module, group: Any) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, process_group=group)
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child, group))
    return out


# --------------------------------------------------------------------------- launching


def torchrun_command(nproc: int, module: str, args: Sequence[str] = ()) -> list[str]:
    """The command that runs ``python -m <module> <args>`` in ``nproc`` processes on this machine:
    ``python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ARGS`` (torchrun
    picks a free rendezvous port, so several runs can share a machine)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"the number of processes must be an integer >= 1, but got {nproc!r}.")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *args]


def run_torchrun(nproc: int, module: str, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 **popen: Any) -> subprocess.Popen:
    """Start :func:`torchrun_command` as a child process (the caller waits for it)."""
    run_env = dict(os.environ if env is None else env)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID"):
        run_env.pop(key, None)  # a fresh run, not a child of an outer one
    return subprocess.Popen(torchrun_command(nproc, module, args), env=run_env, **popen)
