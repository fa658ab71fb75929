"""Export the best architecture of a search, whatever the method (``nni-robust export``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

from nni_robust.errors import ConfigError

from .records import TRIALS_FILE, read_trials

__all__ = ["export_best"]


def export_best(work_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the best topology of a finished (or interrupted) search to ``output``.

    Reads ``work_dir/best_architecture.json`` when the search got that far (every
    method's strategy writes it), else picks the best of the finished trials in
    ``work_dir/trials.jsonl`` that evaluated an architecture (a ``sample``, any
    task but ``final``), by their reported ``default``.
    """
    work_dir = Path(work_dir)
    src = work_dir / "best_architecture.json"
    if src.exists():
        data = json.loads(src.read_text())
    else:
        trials = work_dir / TRIALS_FILE
        if not trials.exists():
            raise ConfigError(f"{work_dir} holds neither best_architecture.json nor trials.jsonl; "
                              "is it the work_dir of a search?")
        best = None
        for rec in read_trials(work_dir):
            params, result = rec.get("parameters") or {}, rec.get("result")
            if params.get("task") == "final" or not params.get("sample") or not isinstance(result, Mapping):
                continue
            if best is None or result.get("default", -math.inf) > best[1].get("default", -math.inf):
                best = (params, result)
        if best is None:
            raise ConfigError(f"No finished trial that evaluated an architecture in {trials}.")
        data = {"sample": best[0]["sample"], "estimate": best[1]["default"], "result": best[1]}
    out = Path(output) if output else src
    out.parent.mkdir(parents=True, exist_ok=True)
    if out != src or not src.exists():
        out.write_text(json.dumps(data, indent=2, sort_keys=True))
    return out
