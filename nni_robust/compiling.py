"""``torch.compile`` for networks whose architecture is fixed (final training, evaluation).

A final network (one architecture, trained from scratch) has a static graph, so
:func:`compile_network` can hand it to :func:`torch.compile` (TorchInductor by
default): its forward pass, and through AOTAutograd the backward passes that the
attack (input gradient) and the training step (parameter gradients) take, run
as generated, fused kernels. The compile time is paid once per graph: one for
train mode, one for eval mode, one per input shape (a last, smaller batch is a
new shape; ``dynamic=False`` keeps the graphs specialised, which is what CUDA
graphs and the fastest kernels need).

Where it does not pay, and so is not used (measured, ``docs/performance.md``):

* weight-sharing supernets: the sampled path changes at every step, which would
  be a new graph (a recompilation) per step; the supernet trainers stay eager;
* small CPU networks: a single SepConv took 113 s to compile on two cores and
  then ran no faster than eager on 8x8 inputs.

It is therefore off by default (``TrainConfig.compile``) and meant for the GPU,
where ``benchmarks/gpu.py`` measures it beside eager in one run.

The compiled module shares its parameters and buffers with the original, but
its ``state_dict`` keys carry an ``_orig_mod.`` prefix: keep the original
module for checkpoints (:class:`~nni_robust.training.AdversarialTrainer` does).
"""

from __future__ import annotations

import logging

from torch import nn

from .errors import ConfigError

__all__ = ["compile_network", "BACKENDS"]

logger = logging.getLogger(__name__)

#: Backends accepted by :func:`compile_network`: ``inductor`` generates kernels (the
#: one that speeds things up); ``aot_eager`` traces forward and backward but runs
#: them with eager kernels (checks tracing without code generation);
#: ``eager`` only traces the forward.
BACKENDS = ("inductor", "aot_eager", "eager")


def compile_network(model: nn.Module, *, backend: str = "inductor", mode: str | None = None) -> nn.Module:
    """``torch.compile(model)`` for a network with a fixed architecture.

    Args:
        model: The network. Its parameters and buffers are shared with the
            returned module (training one trains the other).
        backend: One of :data:`BACKENDS`.
        mode: Inductor mode (``None``, ``"reduce-overhead"`` for CUDA graphs,
            ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``); only with
            ``backend="inductor"``.

    Returns:
        The compiled module (a ``torch._dynamo.OptimizedModule``), compiled
        lazily at its first call.

    Raises:
        ConfigError: a bad backend or mode, or a Python / platform on which
            ``torch.compile`` does not run.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"compile_network needs an nn.Module, but got {type(model).__name__}.")
    if backend not in BACKENDS:
        raise ConfigError(f"compile backend must be one of {list(BACKENDS)}, but got {backend!r}.")
    modes = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if mode not in modes:
        raise ConfigError(f"compile mode must be one of {list(modes)}, but got {mode!r}.")
    if mode is not None and backend != "inductor":
        raise ConfigError(f"compile mode {mode!r} needs backend 'inductor', but got backend {backend!r}.")
    import torch
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError("torch.compile is not supported on this Python/platform "
                          f"(torch {torch.__version__}); set compile to false.")
    logger.info("compiling %s (backend %s, mode %s)", type(model).__name__, backend, mode)
    return torch.compile(model, backend=backend, mode=mode, dynamic=False)
