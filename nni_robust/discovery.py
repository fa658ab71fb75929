"""Registration by import: find the modules of a package that register themselves (spaces, methods).

The spaces (``nni_robust.spaces``) and the methods (``nni_robust.strategies``)
each keep a small registry that their own modules fill at import time, so
nothing above them dispatches on names. :class:`Discovery` imports those
modules once, on the first look-up; a module that fails to import (e.g. a
missing optional dependency) is recorded and reported, and does not hide the
others. A registry exposes the bound methods as its own functions
(``discover = _DISCOVERY.run``, ``import_errors = _DISCOVERY.errors``).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading

__all__ = ["Discovery"]

logger = logging.getLogger(__name__)


class Discovery:
    """Imports every module (or every sub-package) of ``package`` once.

    Args:
        package: Dotted name of the package.
        packages_only: Import only sub-packages (method folders), not plain modules.
        what: What the modules register, for messages (``"spaces"``, ``"methods"``).
    """

    def __init__(self, package: str, *, packages_only: bool, what: str) -> None:
        self.package = package
        self.packages_only = packages_only
        self.what = what
        self._done = False
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}

    def run(self) -> None:
        """Import every module (or sub-package) of the package once, so that each registers itself
        (only the first call does anything)."""
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if info.name.startswith("_") or (self.packages_only and not info.ispkg):
                    continue
                name = f"{self.package}.{info.name}"
                try:
                    importlib.import_module(name)
                except Exception as exc:  # one broken module does not hide the others
                    self._errors[name] = f"{type(exc).__name__}: {exc}"
                    logger.warning("Cannot import %s, so its %s are not registered: %s", name, self.what, exc)
            self._done = True

    def errors(self) -> dict[str, str]:
        """Modules that failed to import (name -> error), after :meth:`run`; empty when all registered."""
        self.run()
        return dict(self._errors)

    def hint(self) -> str:
        """A sentence fragment naming the modules that failed to import (empty when none did)."""
        return f" (not registered, failed to import: {self._errors})" if self._errors else ""
