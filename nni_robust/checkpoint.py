"""Checkpoints that survive crashes, and the random state needed to resume exactly.

A checkpoint is a plain ``dict`` written with :func:`torch.save`. Writes are
atomic: the data goes to a temporary file in the same folder, is flushed to
disk, and only then replaces the old file with :func:`os.replace`, so a crash
or a full disk during the write never destroys the previous checkpoint.

:func:`capture_rng_state` / :func:`restore_rng_state` cover every global
generator a training run draws from: Python's :mod:`random`, NumPy's legacy
global generator, torch's CPU generator and the generators of all CUDA
devices. Code that must be reproducible across a resume (attacks' random
starts, a supernet's per-batch architecture sampling) should draw from one of
these.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import CheckpointError

__all__ = ["save_checkpoint", "write_json", "checksum_path", "load_checkpoint", "capture_rng_state", "restore_rng_state",
           "check_run_checkpoint"]

logger = logging.getLogger(__name__)

_RNG_KEYS = ("python", "numpy", "torch")


def capture_rng_state() -> dict[str, Any]:
    """Return the state of every global random generator.

    Returns:
        A dict with keys ``python`` (``random.getstate()``), ``numpy`` (the
        legacy global generator's state, its key array stored as a tensor),
        ``torch`` (CPU generator state) and ``cuda`` (a list with one state
        per CUDA device; empty when CUDA is unavailable). It holds only
        tensors, ints, floats, strings and tuples, so it pickles anywhere.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`capture_rng_state`.

    Args:
        state: The dict :func:`capture_rng_state` returned.

    Raises:
        CheckpointError: ``state`` lacks one of the required keys.
    """
    if not isinstance(state, dict) or any(k not in state for k in _RNG_KEYS):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"RNG state must be a dict with keys {list(_RNG_KEYS)} "
                              f"(and optionally 'cuda'), but got {got}.")
    py = state["python"]
    # Pickling may turn the inner tuple into a list; random.setstate needs tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
            logger.warning("Checkpoint holds RNG states for %d CUDA devices but %d are available; "
                           "CUDA generators are not restored, so a resumed run may differ.",
                           len(cuda), available)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def save_checkpoint(path: str | os.PathLike, **state: Any) -> Path:
    """Atomically write ``state`` (a dict of picklable objects) to ``path``.

    The parent folder is created when needed. The data is written to a
    temporary file next to ``path``, flushed and fsynced, then moved over
    ``path`` with :func:`os.replace`; if anything fails, the temporary file is
    removed and an existing checkpoint at ``path`` is left untouched.

    Args:
        path: Destination file.
        **state: The entries of the checkpoint.

    Returns:
        The path written, as :class:`pathlib.Path`.

    Raises:
        CheckpointError: The write failed (the older checkpoint is intact).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"Cannot write checkpoint {path.resolve()}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _write_checksum(path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, Exception):
            raise CheckpointError(f"Cannot write checkpoint {path.resolve()}: {exc}; "
                                  "the previous checkpoint (if any) is unchanged.") from exc
        raise
    logger.debug("Saved checkpoint %s", path)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(path: str | os.PathLike) -> Path:
    """The file holding the SHA-256 of checkpoint ``path`` (``<path>.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _write_checksum(path: Path) -> None:
    side = checksum_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{_sha256(path)}  {path.name}\n")
    os.replace(tmp, side)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *,
                    weights_only: bool = True) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, safely.

    The file is loaded with ``torch.load(weights_only=True)``: tensors, numbers,
    strings, and lists/tuples/dicts of them, which is all the project stores
    (the RNG states are tensors and tuples of numbers); a file that asks to run
    code (a crafted pickle) is refused with a :class:`CheckpointError` and never
    executed. When ``<path>.sha256`` exists (written by :func:`save_checkpoint`)
    the file's SHA-256 must match it, so bit rot is detected on resume instead of
    being trained on.

    Args:
        path: The checkpoint file.
        map_location: Passed to :func:`torch.load` (default: load on the CPU).
        weights_only: Keep ``True``. ``False`` unpickles arbitrary objects, which
            runs code from the file: only for a file you wrote yourself.

    Returns:
        The dict that was saved.

    Raises:
        CheckpointError: The file is missing, unreadable, corrupt, fails its
            checksum, holds objects other than the allowed types, or does not hold
            a dict. The message names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path.resolve()} does not exist.")
    side = checksum_path(path)
    if side.is_file():
        expected = side.read_text().split()[0] if side.read_text().split() else ""
        actual = _sha256(path)
        if actual != expected:
            raise CheckpointError(
                f"Checkpoint {path.resolve()} fails its checksum ({side.name} says {expected[:16]}..., the file "
                f"hashes to {actual[:16]}...): it changed after it was written (bit rot, a partial copy, or an "
                f"edit). Restore it from a good copy, or delete {side.name} to load it anyway.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"Checkpoint {path.resolve()} holds objects other than tensors, numbers, strings and "
                              f"containers of them, and was not loaded (loading it would run code from the file): "
                              f"{exc}") from exc
    except Exception as exc:  # zip and torch errors all mean "unreadable"
        raise CheckpointError(f"Checkpoint {path.resolve()} is corrupt or unreadable: "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint {path.resolve()} holds a {type(data).__name__}, "
                              "not the dict save_checkpoint writes.")
    return data


def check_run_checkpoint(path: str | os.PathLike, ckpt: Mapping[str, Any], *, fmt: str, writer: str,
                         current: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                         what: str = "run") -> None:
    """Check that a loaded checkpoint is a ``fmt`` one of a run with the settings ``current``.

    Args:
        path: where it was loaded from (for the message).
        ckpt: the loaded checkpoint, with ``format`` and ``config`` (a dict of settings).
        fmt: the expected ``format``.
        writer: who writes that format (for the message), e.g. ``"AdversarialTrainer"``.
        current: this run's settings, as a plain dict.
        defaults: values of settings that a checkpoint older than them lacks.
        what: what a run is called in the message (``run``, ``search``).

    Raises:
        CheckpointError: another format, or settings that differ (each named, with both values).
    """
    path = Path(path)
    if ckpt.get("format") != fmt:
        raise CheckpointError(f"Checkpoint {path.resolve()} was not written by {writer} "
                              f"(format {ckpt.get('format')!r}, expected {fmt!r}).")
    saved = {**dict(defaults or {}), **dict(ckpt.get("config") or {})}
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        raise CheckpointError(
            f"Checkpoint {path.resolve()} belongs to a {what} with other settings: "
            + ", ".join(f"{k}: {saved.get(k)!r} there, {current.get(k)!r} here" for k in diff)
            + ". Delete it or use another checkpoint path to start afresh.")
