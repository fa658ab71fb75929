"""Gradient-masking checks: warning signs that white-box attacks overstate robustness.

From Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of
Security" (ICML 2018), Sec. 3.1 ("Identifying obfuscated & masked
gradients"): single-step attacks performing better than iterative ones,
black-box attacks better than white-box ones, unbounded attacks not reaching
100% success, and more iterations not increasing success; and from Croce &
Hein's AutoAttack (ICML 2020, Sec. 5 and the ``flags_doc`` of its code):
AutoAttack far below PGD, and the black-box Square Attack breaking points
that the white-box attacks before it did not.

Each check takes measured accuracies (fractions in ``[0, 1]``) and returns a
list of warning strings (empty when nothing looks wrong); the thresholds are
parameters (:class:`MaskingThresholds` gathers the defaults, our choice where
the papers give none). A warning is a reason to look closer (e.g. with an
adaptive attack), not a verdict; a silent check is no proof of soundness.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from ..config import from_dict
from ..errors import ConfigError

__all__ = ["MaskingThresholds", "check_fgsm_vs_pgd", "check_pgd_steps", "check_transfer",
           "check_large_eps", "check_autoattack_gap", "check_square", "check_strength_curve",
           "masking_warnings"]


def _frac(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be an accuracy in [0, 1], but got {value!r}.")
    return float(value)


@dataclasses.dataclass(frozen=True)
class MaskingThresholds:
    """Thresholds of the masking checks (accuracy differences are fractions, 0.01 = 1 point).

    Attributes:
        fgsm_tolerance: Warn when FGSM accuracy < PGD accuracy - this.
        steps_tolerance: Warn when more PGD steps give accuracy > fewer steps + this.
        steps_floor: Check PGD's progress over its random start only when the
            accuracy on that start is above this (at ~0 there is nothing to lower).
        transfer_tolerance: Warn when transfer accuracy < white-box accuracy - this.
        large_eps_max_accuracy: Warn when accuracy at the large eps is above this.
        autoattack_gap: Warn when AutoAttack accuracy < PGD accuracy - this
            (4-6 points are common on sound models; masking shows 10 and more).
        square_tolerance: Warn when Square lowers the accuracy left by the
            white-box attacks by more than this (AutoAttack's flag: 0.002).
        curve_tolerance: Warn when accuracy rises by more than this from one
            strength to a larger one.
    """

    fgsm_tolerance: float = 0.01
    steps_tolerance: float = 0.01
    steps_floor: float = 0.05
    transfer_tolerance: float = 0.01
    large_eps_max_accuracy: float = 0.05
    autoattack_gap: float = 0.10
    square_tolerance: float = 0.002
    curve_tolerance: float = 0.01

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _frac(f"MaskingThresholds.{f.name}", getattr(self, f.name))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "MaskingThresholds":
        """Build from a dict; unknown keys are a :class:`ConfigError`."""
        return from_dict(cls, data, "MaskingThresholds")


def check_fgsm_vs_pgd(fgsm: float, pgd: float, *, tolerance: float = 0.01,
                      pgd_name: str = "PGD") -> list[str]:
    """Single-step FGSM stronger than iterative PGD (Athalye et al. Sec. 3.1)."""
    fgsm, pgd = _frac("fgsm", fgsm), _frac("pgd", pgd)
    if fgsm < pgd - tolerance:
        return [f"FGSM ({fgsm:.2%}) is stronger than {pgd_name} ({pgd:.2%}): a single step beats the "
                f"iterative attack, a sign of gradient masking (Athalye et al. 2018, Sec. 3.1)."]
    return []


def check_pgd_steps(accuracy_by_steps: Mapping[int, float], *, noise: float | None = None,
                    tolerance: float = 0.01, floor: float = 0.05) -> list[str]:
    """More PGD steps not lowering accuracy (Athalye et al. Sec. 3.1).

    Warns when (a) some larger number of steps gives a higher accuracy than a
    smaller one by more than ``tolerance`` (more iterations made the attack
    weaker), or (b) the iterations make no progress from PGD's own starting
    point: the most-steps accuracy is within ``tolerance`` of the accuracy on
    the random start alone (``noise``: a uniform point of the eps-ball, drawn
    from the same stream as PGD's start), while that is above ``floor``. A
    converged attack (PGD-20 = PGD-100) is no warning; an attack whose steps
    do nothing is.

    Args:
        accuracy_by_steps: ``{steps: PGD accuracy}`` (same eps, step size and random start).
        noise: Accuracy on PGD's random start alone ("0 steps"), if measured.
        tolerance: Accuracy difference regarded as no difference.
        floor: Skip (b) when the noise accuracy is at most this.
    """
    acc = {int(k): _frac(f"accuracy_by_steps[{k}]", v) for k, v in accuracy_by_steps.items()}
    out = []
    steps = sorted(acc)
    for i, lo in enumerate(steps):
        for hi in steps[i + 1:]:
            if acc[hi] > acc[lo] + tolerance:
                out.append(f"PGD-{hi} ({acc[hi]:.2%}) is weaker than PGD-{lo} ({acc[lo]:.2%}): more "
                           f"iterations should never help the model (gradient masking or noisy "
                           f"gradients; Athalye et al. 2018, Sec. 3.1).")
    if noise is not None and steps:
        noise = _frac("noise", noise)
        last = steps[-1]
        if noise > floor and acc[last] > noise - tolerance:
            out.append(f"PGD-{last} ({acc[last]:.2%}) does no better than its own random start (uniform "
                       f"noise in the eps-ball: {noise:.2%}): the gradient steps make no progress, a sign "
                       f"of masked or zero gradients (Athalye et al. 2018, Sec. 3.1).")
    return out


def check_transfer(transfer: float, whitebox: float, *, tolerance: float = 0.01,
                   whitebox_name: str = "white-box PGD") -> list[str]:
    """Black-box (transfer) attack stronger than the white-box attack (Athalye et al. Sec. 3.1)."""
    transfer, whitebox = _frac("transfer", transfer), _frac("whitebox", whitebox)
    if transfer < whitebox - tolerance:
        return [f"The transfer (black-box) attack ({transfer:.2%}) is stronger than {whitebox_name} "
                f"({whitebox:.2%}): the model's own gradients are less useful than a substitute's, "
                f"a sign of gradient masking (Athalye et al. 2018, Sec. 3.1)."]
    return []


def check_large_eps(accuracy: float, eps: float, *, max_accuracy: float = 0.05) -> list[str]:
    """Accuracy not reaching ~zero at a large eps (Athalye et al. Sec. 3.1: unbounded attacks must succeed)."""
    accuracy = _frac("accuracy", accuracy)
    if accuracy > max_accuracy:
        return [f"At eps={eps:g} the attack still leaves {accuracy:.2%} accuracy (expected <= "
                f"{max_accuracy:.0%}): a large enough perturbation should fool any classifier, so the "
                f"attack is not following useful gradients (Athalye et al. 2018, Sec. 3.1)."]
    return []


def check_autoattack_gap(autoattack: float, pgd: float, *, gap: float = 0.10,
                         pgd_name: str = "PGD") -> list[str]:
    """AutoAttack far below PGD (Croce & Hein 2020: PGD overestimates robustness under masking)."""
    autoattack, pgd = _frac("autoattack", autoattack), _frac("pgd", pgd)
    if autoattack < pgd - gap:
        return [f"AutoAttack ({autoattack:.2%}) is {pgd - autoattack:.2%} below {pgd_name} ({pgd:.2%}): "
                f"PGD overstates this model's robustness; report AutoAttack and suspect gradient "
                f"masking (Croce & Hein 2020)."]
    return []


def check_square(per_attack: Mapping[str, float], *, tolerance: float = 0.002) -> list[str]:
    """Square (black-box) breaking points the white-box attacks before it left (AutoAttack's flag).

    Args:
        per_attack: AutoAttack's cumulative robust accuracy per attack, in run order.
    """
    names = list(per_attack)
    if "square" not in names or names.index("square") == 0:
        return []
    i = names.index("square")
    before = min(_frac(f"per_attack[{n!r}]", per_attack[n]) for n in names[:i])
    after = _frac("per_attack['square']", per_attack["square"])
    if after < before - tolerance:
        return [f"Square Attack (black-box) lowered the robust accuracy left by the white-box attacks "
                f"by {before - after:.2%} ({before:.2%} -> {after:.2%}): gradient-based attacks are "
                f"unreliable on this model (AutoAttack's check; Croce & Hein 2020)."]
    return []


def check_strength_curve(eps: Sequence[float], accuracy: Sequence[float], *,
                         tolerance: float = 0.01, attack: str = "PGD") -> list[str]:
    """Robust accuracy rising with the attack strength (a larger ball contains the smaller one)."""
    if len(eps) != len(accuracy):
        raise ConfigError(f"eps and accuracy must have the same length, but got {len(eps)} and "
                          f"{len(accuracy)}.")
    pts = sorted(zip(eps, (_frac("accuracy", a) for a in accuracy)))
    out = []
    for (e0, a0), (e1, a1) in zip(pts, pts[1:]):
        if a1 > a0 + tolerance:
            out.append(f"{attack} accuracy rises with the strength: {a0:.2%} at eps={e0:g} but {a1:.2%} at "
                       f"eps={e1:g}; the eps={e1:g} ball contains the eps={e0:g} one, so the attack is "
                       f"failing to follow the gradient (masking; Athalye et al. 2018).")
    return out


def masking_warnings(report: Mapping[str, Any], thresholds: MaskingThresholds | None = None) -> list[str]:
    """Every check that the numbers of a :func:`robustness_report` allow.

    Args:
        report: A report dict (keys ``accuracy``, ``strength_curve``,
            ``large_eps``, ``autoattack``, ``transfer``; missing parts skip
            their checks).
        thresholds: The thresholds (defaults: :class:`MaskingThresholds`).

    Returns:
        The warnings, in a fixed order.
    """
    t = thresholds or MaskingThresholds()
    acc: Mapping[str, float] = report.get("accuracy") or {}
    pgd_by_steps = {int(k[3:]): v for k, v in acc.items() if k.startswith("pgd") and k[3:].isdigit()}
    out: list[str] = []
    strongest = min(pgd_by_steps.items(), key=lambda kv: (kv[1], -kv[0])) if pgd_by_steps else None
    if "fgsm" in acc and pgd_by_steps:
        steps = max(pgd_by_steps)
        out += check_fgsm_vs_pgd(acc["fgsm"], pgd_by_steps[steps], tolerance=t.fgsm_tolerance,
                                 pgd_name=f"PGD-{steps}")
    out += check_pgd_steps(pgd_by_steps, noise=acc.get("noise"), tolerance=t.steps_tolerance,
                           floor=t.steps_floor)
    transfer = report.get("transfer")
    if transfer and strongest is not None:
        out += check_transfer(transfer["accuracy"], strongest[1], tolerance=t.transfer_tolerance,
                              whitebox_name=f"white-box PGD-{strongest[0]}")
    large = report.get("large_eps")
    if large:
        out += check_large_eps(large["accuracy"], large["eps"], max_accuracy=t.large_eps_max_accuracy)
    curve = report.get("strength_curve")
    if curve:
        out += check_strength_curve(curve["eps"], curve["pgd"], tolerance=t.curve_tolerance)
        if curve.get("autoattack"):
            out += check_strength_curve(curve["eps"], curve["autoattack"], tolerance=t.curve_tolerance,
                                        attack="AutoAttack")
    aa = report.get("autoattack")
    if aa:
        pgd_same = report.get("autoattack_pgd")  # PGD on AutoAttack's own images
        if pgd_same is not None:
            out += check_autoattack_gap(aa["robust"], pgd_same["accuracy"], gap=t.autoattack_gap,
                                        pgd_name=f"{pgd_same['attack']} on the same images")
        elif strongest is not None:
            out += check_autoattack_gap(aa["robust"], strongest[1], gap=t.autoattack_gap,
                                        pgd_name=f"PGD-{strongest[0]}")
        out += check_square(aa["per_attack"], tolerance=t.square_tolerance)
    return out
