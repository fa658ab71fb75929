"""The install layout: spaces/, strategies/, trial/ import as sub-packages of nni_robust only,
and the dependency direction trial -> strategies -> spaces -> core holds."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,folder", [("nni_robust.spaces", "spaces"), ("nni_robust.strategies", "strategies"),
                                         ("nni_robust.trial", "trial")])
def test_subpackages_map_to_the_top_level_folders(name, folder):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve() == ROOT / folder / "__init__.py"


def test_installed_names_outside_the_checkout(tmp_path):
    """In a fresh interpreter away from the checkout (as NNI's trials and users run), the
    installed package gives nni_robust.{spaces,strategies,trial} and no top-level
    `spaces`/`strategies`/`trial` of ours (PyPI has distributions named `spaces` and `strategies`)."""
    code = (
        "import importlib, importlib.util, json\n"
        "out = {}\n"
        "for n in ('spaces', 'strategies', 'trial'):\n"
        "    s = importlib.util.find_spec(n)\n"
        "    out[n] = s.origin if s else None\n"
        "    out['nni_robust.' + n] = importlib.import_module('nni_robust.' + n).__file__\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("spaces", "strategies", "trial"):
        origin = found[name]
        assert origin is None or not Path(origin).resolve().is_relative_to(ROOT), (name, origin)
        assert Path(found["nni_robust." + name]).resolve() == ROOT / name / "__init__.py"


def _imports(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("folder,forbidden", [
    ("nni_robust", ("nni_robust.spaces", "nni_robust.strategies", "nni_robust.trial")),
    ("spaces", ("nni_robust.strategies", "nni_robust.trial")),
    ("strategies", ("nni_robust.trial",)),
])
def test_dependencies_point_one_way(folder, forbidden):
    bad = {m for m in _imports(folder) if m.startswith(forbidden)}
    assert not bad, f"{folder}/ imports {sorted(bad)}"


def test_console_script_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["nni-robust"] == "nni_robust.trial.cli:main"
    from nni_robust.trial.cli import main
    assert callable(main)
