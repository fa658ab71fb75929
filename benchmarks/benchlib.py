"""What every benchmark script shares: the common flags, the thread/device set-up, and the record
of the machine beside the numbers (these machines are noisy: only ratios measured side by side in
one run count, so every JSON says where and under what load it was measured).

Use from a script in this folder (run as ``python benchmarks/bench_x.py``)::

    from benchlib import bench_parser, emit, setup

    parser = bench_parser(__doc__, device="cpu", threads=1)
    parser.add_argument(...)            # the benchmark's own flags
    ns = parser.parse_args(argv)
    device = setup(ns)
    ...
    emit(out, ns)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["bench_parser", "setup", "machine_info", "emit"]


def bench_parser(doc: str | None, *, device: str | None = "cpu", threads: int | None = 1) -> argparse.ArgumentParser:
    """An argument parser with ``--device``, ``--threads`` and ``--json-out``, and ``doc`` as its help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=device, help=f"cpu, cuda, auto (default: {device})")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"torch CPU threads; 0: torch's default (default: {threads}; tiny inputs run "
                             "several times faster on 1 thread than on 2)")
    parser.add_argument("--json-out", type=Path, help="also write the result JSON to this file")
    return parser


def setup(ns: argparse.Namespace, *, device: str | None = None) -> torch.device:
    """Apply ``--threads`` and return the torch device of ``--device`` (or ``device`` when it is None)."""
    from nni_robust.device import resolve_device

    if ns.threads:
        torch.set_num_threads(ns.threads)
    return resolve_device(ns.device or device or "auto")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_gb() -> float | None:
    """This process's peak resident memory so far, in GB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib * 1024 / 1e9, 3)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, torch version, GPU, load average, the process's peak resident memory."""
    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__, "python": platform.python_version(),
                            "peak_rss_gb": peak_rss_gb()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def emit(out: dict[str, Any], ns: argparse.Namespace | None = None, **dumps: Any) -> None:
    """Print ``out`` with the machine record as JSON (and write it to ``--json-out``)."""
    record = {**out, "machine": machine_info()}
    text = json.dumps(record, indent=dumps.pop("indent", 2), **dumps)
    print(text)
    if ns is not None and getattr(ns, "json_out", None):
        ns.json_out.parent.mkdir(parents=True, exist_ok=True)
        ns.json_out.write_text(text + "\n")
