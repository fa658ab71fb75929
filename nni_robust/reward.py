"""The search reward that trades clean accuracy against robustness."""

from __future__ import annotations

import math
import numbers
from typing import TypeVar

from .errors import ConfigError

__all__ = ["robust_reward"]

T = TypeVar("T")


def robust_reward(acc_clean: T, acc_adv: T, lam: float = 0.5) -> T:
    """``lam * acc_adv + (1 - lam) * acc_clean`` (MSRobNet Sec. 5.1; authors' code: lam = 0.5).

    ``lam = 0`` ranks by clean accuracy, ``lam = 1`` by adversarial accuracy.

    Args:
        acc_clean: Clean accuracy: a float, or a tensor / array (elementwise).
        acc_adv: Adversarial accuracy, same kind and shape (broadcasting applies).
        lam: Weight of the adversarial accuracy, in ``[0, 1]``.

    Returns:
        The reward, of the inputs' type.

    Raises:
        ConfigError: if ``lam`` is not a number in ``[0, 1]``.
    """
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or math.isnan(lam) \
            or not 0.0 <= lam <= 1.0:
        raise ConfigError(f"lam must be a number in [0, 1], but got {lam!r}.")
    lam = float(lam)
    return lam * acc_adv + (1.0 - lam) * acc_clean
