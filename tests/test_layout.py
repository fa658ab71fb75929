"""The per-method layout: one folder per method, registration instead of dispatch.

A method folder under ``strategies/`` imports no sibling method folder; its
``__init__`` registers names only (cheap to import in NNI's tuner); ``trial/``
names no method; every registered strategy, task and space resolves; a new
folder installs without editing the packaging.
"""

from __future__ import annotations

import ast
import importlib
import runpy
from pathlib import Path

import pytest

from nni_robust.spaces import registry as space_registry
from nni_robust.strategies import registry

ROOT = Path(__file__).resolve().parents[1]
METHOD_DIRS = sorted(p.parent.name for p in (ROOT / "strategies").glob("*/__init__.py"))


def _imports(path: Path, *, module_level_only: bool = False) -> list[tuple[int, str]]:
    """(relative level, absolute-or-relative module name) of every import in ``path``."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or ""))
            if node.module is None:  # from .. import x
                out.extend((node.level, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((0, a.name) for a in node.names)
    return out


def test_there_are_method_folders():
    assert {"msrobnet", "differentiable", "tradeoff"} <= set(METHOD_DIRS)


@pytest.mark.parametrize("method", METHOD_DIRS)
def test_a_method_folder_imports_no_other_method(method):
    others = set(METHOD_DIRS) - {method}
    bad = []
    for path in (ROOT / "strategies" / method).rglob("*.py"):
        for level, name in _imports(path):
            head = name.split(".")[0]
            if level == 0 and name.startswith("nni_robust.strategies."):
                head = name.split(".")[2]
                if head in others:
                    bad.append(f"{path.relative_to(ROOT)}: {name}")
            elif level >= 2 and head in others:  # from ..other import x
                bad.append(f"{path.relative_to(ROOT)}: {'.' * level}{name}")
    assert not bad, bad


@pytest.mark.parametrize("method", METHOD_DIRS)
def test_a_method_init_only_registers(method):
    """Importing a method folder (as registry discovery does in NNI's tuner) imports nothing heavy."""
    imports = _imports(ROOT / "strategies" / method / "__init__.py", module_level_only=True)
    assert all(level >= 1 and name in ("registry", "") or name == "__future__" for level, name in imports), imports


def test_trial_names_no_method_folder():
    bad = []
    for path in (ROOT / "trial").rglob("*.py"):
        for level, name in _imports(path):
            parts = name.split(".")
            if level == 0 and name.startswith("nni_robust.strategies.") and parts[2] in METHOD_DIRS:
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, bad


def test_every_registered_name_resolves():
    assert registry.import_errors() == {}
    assert space_registry.import_errors() == {}
    for name, path in registry.strategy_paths().items():
        module, _, attr = path.rpartition(".")
        if not module.startswith("nni."):
            assert hasattr(importlib.import_module(module), attr), (name, path)
    for task in registry.task_names():
        assert callable(registry.task_function(task))
    for name in space_registry.space_names():
        kind = space_registry.get_space(name)
        module, _, attr = kind.model_space.rpartition(".")
        assert getattr(importlib.import_module(module), attr) is not None


def test_unknown_names_are_errors_listing_the_valid_ones():
    from nni_robust.errors import ConfigError

    with pytest.raises(ConfigError, match="Valid tasks: .*'final'"):
        registry.task_function("finale")
    with pytest.raises(ConfigError, match="dense_rob"):
        space_registry.get_space("dense_robb")


def test_a_task_name_cannot_be_registered_twice():
    from nni_robust.errors import ConfigError

    with pytest.raises(ConfigError, match="already taken"):
        registry.register_method(registry.Method(name="copycat", paper="-", tasks={"final": "x.y"}))
    assert "copycat" not in registry.methods()


def test_packaging_finds_every_folder():
    """setup.py lists every folder with an __init__.py (a new method folder needs no packaging edit)."""
    packages = runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")["packages"]()
    expected = {"nni_robust.strategies." + m for m in METHOD_DIRS}
    assert expected <= set(packages)
    assert {"nni_robust", "nni_robust.spaces", "nni_robust.strategies", "nni_robust.trial"} <= set(packages)
