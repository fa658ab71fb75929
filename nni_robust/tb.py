"""Where a run writes its files and TensorBoard logs, inside or outside NNI; pictures for TensorBoard.

NNI gives each trial an output folder in ``$NNI_OUTPUT_DIR``; its web UI's
TensorBoard button reads ``$NNI_OUTPUT_DIR/tensorboard``. Outside NNI the
caller's default is used, or ``./runs/<timestamp>``.

A trial writes its events one level deeper, into a folder named by its kind
and id (:func:`run_name`, e.g. ``tensorboard/final-Ab3xY``), so that TensorBoard
over several trials (the web UI's button, or ``tensorboard --logdir
~/nni-experiments/<id>/environments/local-env/trials``) names each run by what
the trial did. :func:`add_arch_weights` logs architecture weights as labelled
operation x edge heatmaps and :func:`add_architecture` a drawn architecture
(:mod:`nni_robust.archdraw`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["experiment_dir", "search_work_dir", "output_dir", "tensorboard_dir", "summary_writer", "NNI_OUTPUT_ENV",
           "run_name", "add_arch_weights", "add_architecture"]

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


def run_name(kind: str, run_id: Any) -> str:
    """The TensorBoard run (sub-folder) name of one trial: ``<kind>-<id>``, e.g. ``final-Ab3xY``,
    ``supernet-3`` (characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{kind}-{run_id}")


def add_arch_weights(writer: Any, weights: Any, *, ops: Any, edges: Any, step: int, prefix: str = "arch") -> None:
    """Log architecture weights as one labelled operation x edge heatmap per cell type.

    Args:
        writer: A ``SummaryWriter`` (or anything with ``add_image``).
        weights: ``{cell type: (len(edges), len(ops)) weights}`` (e.g. ``DartsSupernet.arch_weights()``).
        ops: The operation names (columns of the weights).
        edges: The edge names (rows), e.g. :func:`nni_robust.archdraw.cell_edge_names`.
        step: The global step (epoch).
        prefix: Tag prefix; the tags are ``<prefix>/<cell type>``.
    """
    from .archdraw import arch_weights_figure, figure_to_image

    for cell_type, w in weights.items():
        fig = arch_weights_figure(w, ops, edges, title=f"{cell_type} cell, step {step}")
        writer.add_image(f"{prefix}/{cell_type}", figure_to_image(fig), step, dataformats="HWC")


def add_architecture(writer: Any, arch: Any, *, step: int = 0, tag: str = "architecture",
                     title: str | None = None) -> bool:
    """Log ``arch`` drawn as cell graphs (:func:`nni_robust.archdraw.draw_architecture`) as an image.

    Returns:
        Whether it was drawn (False, with a logged reason, when the architecture cannot be drawn).
    """
    from .archdraw import draw_architecture, figure_to_image
    from .errors import ArchitectureError

    try:
        image = figure_to_image(draw_architecture(arch, title=title, columns=1))  # (fits TensorBoard's width)
    except ArchitectureError as exc:
        logger.info("No architecture image in TensorBoard: %s", exc)
        return False
    except Exception:  # a picture never fails a training
        logger.warning("Could not draw the architecture for TensorBoard.", exc_info=True)
        return False
    writer.add_image(tag, image, step, dataformats="HWC")
    return True
