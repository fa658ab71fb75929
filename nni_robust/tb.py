"""Where a run writes its files and TensorBoard logs, inside or outside NNI.

NNI gives each trial an output folder in ``$NNI_OUTPUT_DIR``; its web UI's
TensorBoard button reads ``$NNI_OUTPUT_DIR/tensorboard``. Outside NNI the
caller's default is used, or ``./runs/<timestamp>``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["experiment_dir", "search_work_dir", "output_dir", "tensorboard_dir", "summary_writer", "NNI_OUTPUT_ENV"]

logger = logging.getLogger(__name__)

NNI_OUTPUT_ENV = "NNI_OUTPUT_DIR"
"""Environment variable in which NNI passes a trial its output folder."""

_RUN_STAMP: str | None = None


def _run_stamp() -> str:
    # One timestamp per process, so output_dir() and tensorboard_dir() agree.
    global _RUN_STAMP
    if _RUN_STAMP is None:
        _RUN_STAMP = time.strftime("%Y%m%d-%H%M%S")
    return _RUN_STAMP


def experiment_dir() -> Path | None:
    """The running NNI experiment's folder, as seen from its tuner (dispatcher) process.

    NNI sets ``NNI_LOG_DIRECTORY`` to ``<experiment dir>/log`` for the dispatcher;
    ``None`` outside an NNI experiment.
    """
    log_dir = os.environ.get("NNI_LOG_DIRECTORY")
    return Path(log_dir).parent if log_dir else None


def search_work_dir(work_dir: str | os.PathLike | None) -> tuple[Path, str | None]:
    """A tuner's work dir and the NNI experiment id.

    ``work_dir`` when given, else ``<experiment dir>/nni_robust`` inside an NNI
    experiment.

    Raises:
        ConfigError: no ``work_dir`` outside an NNI experiment.
    """
    exp_dir = experiment_dir()
    if work_dir is None:
        if exp_dir is None:
            raise ConfigError("classArg 'work_dir' is required outside an NNI experiment (the default is "
                              "<experiment dir>/nni_robust, known only inside one).")
        work_dir = exp_dir / "nni_robust"
    return Path(work_dir).expanduser().resolve(), (exp_dir.name if exp_dir is not None else None)


def output_dir(default: str | os.PathLike | None = None) -> Path:
    """Return (and create) the folder for this run's files.

    Args:
        default: Folder to use when not running under NNI.

    Returns:
        ``$NNI_OUTPUT_DIR`` when set, else ``default``, else
        ``./runs/<timestamp>`` (one timestamp per process).
    """
    env = os.environ.get(NNI_OUTPUT_ENV)
    if env:
        path = Path(env)
    elif default is not None:
        path = Path(default)
    else:
        path = Path("runs") / _run_stamp()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tensorboard_dir(default: str | os.PathLike | None = None) -> Path:
    """Return (and create) the folder for TensorBoard event files.

    Args:
        default: Folder to use when not running under NNI.

    Returns:
        ``$NNI_OUTPUT_DIR/tensorboard`` under NNI (where the web UI's
        TensorBoard button looks), else ``default``, else
        ``output_dir()/tensorboard``.
    """
    if os.environ.get(NNI_OUTPUT_ENV):
        path = output_dir() / "tensorboard"
    elif default is not None:
        path = Path(default)
    else:
        path = output_dir() / "tensorboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def summary_writer(logdir: str | os.PathLike | None = None, **kwargs: Any):
    """Create a :class:`torch.utils.tensorboard.SummaryWriter`.

    Args:
        logdir: Event file folder; default :func:`tensorboard_dir`.
        **kwargs: Passed to ``SummaryWriter`` (e.g. ``flush_secs``).

    Returns:
        The writer. Close it (or use it as a context manager) when done.

    Raises:
        ImportError: The ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
        raise ImportError("TensorBoard logging needs the 'tensorboard' package: "
                          "pip install tensorboard") from exc
    path = Path(logdir) if logdir is not None else tensorboard_dir()
    path.mkdir(parents=True, exist_ok=True)
    logger.info("TensorBoard logs in %s", path.resolve())
    return SummaryWriter(log_dir=str(path), **kwargs)
