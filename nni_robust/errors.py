"""Exception hierarchy of nni_robust.

Every error the toolkit raises on bad input derives from :class:`NniRobustError`,
and its message names the bad value and what would have been valid.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

__all__ = [
    "did_you_mean",
    "NniRobustError",
    "ConfigError",
    "DatasetNotFoundError",
    "ArchitectureError",
    "CheckpointError",
]


class NniRobustError(Exception):
    """Root of all nni_robust errors."""


class ConfigError(NniRobustError, ValueError):
    """A setting (YAML key, keyword argument, CLI flag) has a bad name or value."""


class DatasetNotFoundError(NniRobustError, FileNotFoundError):
    """A dataset is not in the local folder it was looked for in."""


class ArchitectureError(NniRobustError, ValueError):
    """An architecture description (genotype, sample, JSON) is malformed."""


class CheckpointError(NniRobustError, RuntimeError):
    """A checkpoint is missing, corrupt or belongs to another run."""


class NonFiniteError(NniRobustError, ArithmeticError):
    """A model produced NaN or infinite outputs (or holds such weights): no accuracy is computed from it."""


def did_you_mean(word: Any, candidates: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """The hint of an error message about an unknown name: ``" Did you mean 'x'?"`` with up to
    ``n`` close matches of ``str(word)`` among ``candidates`` (:func:`difflib.get_close_matches`),
    or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(candidates), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""
