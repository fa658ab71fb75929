"""Package layout (the rest of the metadata is in pyproject.toml).

``spaces/``, ``strategies/`` and ``trial/`` stay at the top of the repository
but install as sub-packages of ``nni_robust`` (PyPI already has distributions
named ``spaces`` and ``strategies``). Every folder with an ``__init__.py``
below them is a package, so a new method folder under ``strategies/`` needs
no edit here.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = {"nni_robust": "nni_robust", "nni_robust.spaces": "spaces", "nni_robust.strategies": "strategies",
               "nni_robust.trial": "trial"}


def packages() -> list[str]:
    found = []
    for package, folder in PACKAGE_DIR.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in parts:
                found.append(".".join((package, *parts)))
    return found


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import packages()
    setup(package_dir=PACKAGE_DIR, packages=packages())
