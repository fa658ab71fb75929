"""The bridge tuner's record of finished trials, ``<work_dir>/trials.jsonl``, read in one place.

:class:`~nni_robust.strategies.bridge.BridgeTuner` appends one JSON object a
line per finished trial (``parameter_id``, ``experiment_id``, ``parameters``,
``status``, ``result``); the tuner itself on resume, ``nni-robust run``'s
progress lines, ``nni-robust report`` and ``nni-robust export`` read them back
with :func:`read_trials`. This module imports neither torch nor NNI, so the
command line can read a work dir without them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["TRIALS_FILE", "read_trials"]

logger = logging.getLogger(__name__)

#: The file inside a search's work dir that holds its finished trials, one JSON object a line.
TRIALS_FILE = "trials.jsonl"


def read_trials(work_dir: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The records of ``<work_dir>/trials.jsonl``, oldest first ([] when the file is missing).

    A line that is not a JSON object (one being written, or cut short by a crash) is skipped and logged.
    """
    if work_dir is None:
        return []
    path = Path(work_dir) / TRIALS_FILE
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            logger.info("%s line %d is not JSON (being written?); skipped.", path, number)
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
