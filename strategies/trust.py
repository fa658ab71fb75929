"""Warnings that a search result should not be trusted, recorded where every reader finds them.

The code that finds a reason to doubt a result -- a strategy in NNI's tuner
process, or a trial task -- calls :func:`record_warning`: the message is
logged (``logger.warning``) and appended as one JSON line to
``<work_dir>/warnings.jsonl``::

    {"time": 1732990000.0, "source": "msrobnet.family", "message": "...", **data}

``source`` names the method and the check (``msrobnet.family``,
``msrobnet.fits``, ``msrobnet.estimates``, ``dsara.entropy``,
``final.chance``, ...); ``data`` holds the numbers behind the message.
:func:`read_warnings` reads them back (the command-line summary of
``nni-robust run`` and the report page of ``nni-robust report`` show every
line). Several processes may append at once (the tuner and the trials share
the work dir): each record is one ``write`` of one line in append mode.

A check whose verdict changes as results come in (the trade-off front's noise
check) names its warning with ``key``: a later record with the same source and
key replaces the earlier one, and :func:`resolve_warning` withdraws it, so a
reader sees the current verdict only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["WARNINGS_FILE", "record_warning", "resolve_warning", "read_warnings"]

logger = logging.getLogger(__name__)

#: The file inside a work dir that holds the warnings, one JSON object a line.
WARNINGS_FILE = "warnings.jsonl"


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` and tuples/sets as lists (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def record_warning(work_dir: str | os.PathLike | None, source: str, message: str, **data: Any) -> dict[str, Any]:
    """Log ``message`` as a warning and append it to ``<work_dir>/warnings.jsonl``.

    Args:
        work_dir: The search's work dir (created when missing); ``None`` only logs.
        source: ``"<method>.<check>"``, e.g. ``"msrobnet.family"``.
        message: A sentence a user understands: what is wrong, the numbers, what to change.
        **data: The numbers behind it (JSON-able; NaN/inf become null). They must not be
            named ``time``, ``source``, ``message`` or ``resolved``. ``key=...`` makes the
            record replace any earlier one of the same ``source`` and ``key``.

    Returns:
        The record written.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string such as 'msrobnet.family', but got {source!r}.")
    clash = sorted({"time", "source", "message", "resolved"} & set(data))
    if clash:
        raise ValueError(f"record_warning data must not use the reserved keys {clash}.")
    record = {"time": time.time(), "source": source, "message": str(message), **_jsonable(data)}
    logger.warning("%s: %s", source, message)
    _append(work_dir, record)
    return record


def resolve_warning(work_dir: str | os.PathLike | None, source: str, key: str) -> None:
    """Withdraw the warning recorded with ``source`` and ``key`` (its check now passes)."""
    logger.info("%s (%s): resolved", source, key)
    _append(work_dir, {"time": time.time(), "source": source, "key": key, "resolved": True})


def _append(work_dir: str | os.PathLike | None, record: dict[str, Any]) -> None:
    if work_dir is not None:
        path = Path(work_dir) / WARNINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=False, allow_nan=False) + "\n"
        with open(path, "a", encoding="utf-8") as fh:  # one write of one line: safe beside other appenders
            fh.write(line)


def read_warnings(work_dir: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The warnings recorded in ``<work_dir>/warnings.jsonl``, oldest first ([] when there are none).

    A record with a ``key`` stands for the latest record of its source and key (in the
    place of the first); a withdrawn one (:func:`resolve_warning`) is left out. A line that
    is not a JSON object (e.g. cut short by a crash) is skipped with a logged note.
    """
    if work_dir is None:
        return []
    path = Path(work_dir) / WARNINGS_FILE
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.info("%s line %d is not JSON; skipped.", path, number)
            continue
        if isinstance(record, dict):
            out.append(record)
    latest: dict[tuple[str, str], int] = {}  # (source, key) -> index of its latest record
    for i, record in enumerate(out):
        if record.get("key") is not None:
            latest[(str(record.get("source")), str(record["key"]))] = i
    kept, placed = [], set()
    for record in out:
        if record.get("key") is None:
            kept.append(record)
            continue
        ident = (str(record.get("source")), str(record["key"]))
        if ident in placed:
            continue
        placed.add(ident)
        last = out[latest[ident]]
        if not last.get("resolved"):
            kept.append(last)
    return kept
