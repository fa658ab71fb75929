"""Seeding in one place: every global generator at once, derived seeds, isolated randomness.

Reproducibility (issue 15): a run with the same settings and seed gives the
same numbers on the same machine. Three things are needed, and each has one
function here that the trainers, the trial tasks and the trial runner share:

* :func:`seed_everything` seeds Python's ``random``, NumPy's legacy global
  generator and torch's generators (CPU and every CUDA device) *before* a
  model is built, so that its initial weights come from the run's seed and
  not from whatever ran before in the process (a fresh process, an NNI
  trial, or the tenth run of a test session all start alike).
* :func:`derive_seed` turns a seed and some keys (e.g. ``("supernet", 24)``)
  into another seed that depends on nothing else, so that parallel parts of
  one run (the K supernets of MSRobNet, one per width) get different but
  reproducible random streams.
* :func:`isolated_rng` runs a block with generators of its own: it saves
  every global generator's state, seeds them, and restores the saved states
  afterwards. Randomness drawn inside (e.g. the random start of a PGD probe
  after each epoch) then neither depends on nor changes the training's
  stream, so that a run resumed from a checkpoint (which saves the global
  generators' states) continues exactly as an uninterrupted one.

No paper prescribes any of this; the derivation (SHA-256 of the keys' text,
31 bits) is our choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from typing import Any, Iterator

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["seed_everything", "derive_seed", "isolated_rng"]

logger = logging.getLogger(__name__)


def _check_seed(seed: Any, where: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"{where} must be an integer, but got {seed!r}.")
    return int(seed)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's (CPU and all CUDA devices).

    As :class:`~nni_robust.training.AdversarialTrainer` seeds a fresh run.

    Args:
        seed: An integer (NumPy gets ``seed % 2**32``, torch ``seed % 2**64``).

    Raises:
        ConfigError: ``seed`` is not an integer.
    """
    seed = _check_seed(seed, "seed")
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed % 2 ** 64)  # seeds every CUDA device too


def derive_seed(seed: int, *keys: Any) -> int:
    """A seed in ``[0, 2**31)`` that depends only on ``seed`` and ``keys`` (their ``repr``).

    ``derive_seed(0, "supernet", 24) != derive_seed(0, "supernet", 30)``, and
    both are the same in every process and on every machine (unlike Python's
    ``hash``, which is salted per process).

    Raises:
        ConfigError: ``seed`` is not an integer.
    """
    seed = _check_seed(seed, "seed")
    text = "/".join([str(seed), *(repr(k) for k in keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block with its own random generators; restore the global ones afterwards.

    Saves the states of Python's ``random``, NumPy's global generator, torch's
    CPU generator and the generators of every visible CUDA device, seeds them
    all with :func:`seed_everything` (``seed``), and restores the saved states
    on exit, also after an exception. The block's draws are thus a function of
    ``seed`` alone, and the code after the block draws what it would have
    drawn without the block.

    Args:
        seed: Seed of the block's generators (an integer).

    Raises:
        ConfigError: ``seed`` is not an integer.
    """
    seed = _check_seed(seed, "seed")
    py_state = random.getstate()
    np_state = np.random.get_state()
    # every device: torch.manual_seed seeds them all
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            seed_everything(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
