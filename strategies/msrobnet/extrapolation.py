"""Reward extrapolation over model capacity: the multi-shot fitting families.

Implements the reward-extrapolation part of multi-shot NAS (MSRobNet, Ning et
al., "Multi-shot NAS for Discovering Adversarially Robust Convolutional Neural
Architectures at Targeted Capacities"):

* Sec. 5.1 / Alg. 3 (lines 4-5): an architecture's one-shot rewards
  ``r_1..r_K``, measured in K supernets of different widths at capacities
  (FLOPs) ``C_1..C_K``, are fitted by nonlinear least squares with a
  saturating family ``r = f(C; beta)``; the fitted curve is evaluated at the
  targeted capacity ``C_T`` (:func:`fit`, :func:`extrapolate`).
* Sec. 5.2 / Alg. 2: the family is chosen by the average leave-one-out (LOO)
  Spearman correlation over N sampled architectures (:func:`loo_selection`,
  :func:`write_report`); App. A leaves the smallest supernet out of the
  average.
* App. A: the seven candidate families (:data:`FAMILIES`).

Choices where the paper is silent (each is a parameter where it can be):

* **FLOPs units.** All public functions take capacities in FLOPs (what
  :func:`nni_robust.flops.count_flops` returns) and fit on
  ``x = flops / unit``, ``unit = 1e6`` (MFLOPs, the unit the paper reports
  capacities in). ``log_power``, ``log_power_rep``, ``mmf``, ``janoschek``
  and ``vapor_pressure`` are defined for any ``x > 0`` and their fitted curves
  do not depend on the unit (it is absorbed by ``b``, ``d`` or ``c``), but
  ``ilog2`` (``c - a / log x``) and ``log_log_linear`` (``log(a log x + b)``)
  need ``log x > 0``, i.e. ``x > 1``, and their shape depends on the unit.
  The paper's supernets span roughly 100-2,000 MFLOPs, so ``log x`` lies in
  about [4.6, 7.6]. For tiny networks (e.g. the 8x8 ``digits`` data) pass a
  smaller ``unit``; ``x <= 1`` for those two families is a
  :class:`~nni_robust.errors.ConfigError` in :func:`fit` and
  :func:`extrapolate`, and counts as failed fits in :func:`loo_selection`.
* **log power rep.** The formula in App. A is garbled by text extraction
  (``1/((1+e^-a)(1+ ... c x e^-b))``). We read it as
  ``sigmoid(a) / (1 + (x e^{-b})^c)``: log power with its asymptote ``a``
  reparametrised through a sigmoid so that it lies in (0, 1), like a reward.
  Its curves are the log-power curves with an asymptote below 1, so on
  rewards in [0, 1] the two families give numerically the same fits (and the
  same LOO correlations); they differ when the data call for an asymptote
  >= 1 (e.g. rewards in percent).
* **Bounds.** The authors' code bounds its 3-parameter fits (its log power
  has a non-negative scale and a non-positive exponent: an increasing
  curve). We bound each parameter that has a natural sign for an increasing,
  saturating curve: ``log_power`` ``a >= 0, c <= 0``; ``log_power_rep``
  ``c <= 0``; ``janoschek`` ``c >= 0, d >= 0``; ``mmf`` ``c >= 0, d >= 0``.
  ``vapor_pressure``, ``log_log_linear`` and ``ilog2`` are linear models
  after a transform and are unbounded. Half-line bounds are enforced by a
  smooth reparametrisation (``p = +-exp(theta)``) and the problem is solved
  by Levenberg-Marquardt (``curve_fit(method="lm")``, MINPACK): this is many
  times faster than the trust-region-reflective bounded solver and, since
  such a bound is approached only asymptotically, an optimum *on* a bound
  shows up as a fit that does not converge (a failure). A :class:`Family`
  with any other box falls back to ``curve_fit(method="trf", bounds=...)``.
* **Solvers.** :func:`fit` and :func:`extrapolate` use scipy's
  ``curve_fit`` (as the authors). :func:`fit_many` and :func:`loo_selection`
  default to a vectorised Levenberg-Marquardt over all architectures at once
  (per-fit damping, MINPACK's stopping tests and tolerances, same
  reparametrisation and same start), which makes the 11,200 fits of the
  paper's selection (7 families x K = 8 x N = 200) take seconds instead of
  minutes; ``solver="curve_fit"`` selects the scipy path there too.
* **Initial guesses** are data driven and vectorised: each family is
  linearised (a regression on ``log y``, ``exp y``, ``1 / log x``, or a
  logit/log-log transform in ``log x``), which gives the exact parameters of
  the linear families and a close start for the others. Analytic Jacobians
  are supplied.
* **Failures.** A fit needs at least as many points, and as many distinct
  capacities, as the family has parameters (so with K = 3 supernets the
  4-parameter ``janoschek`` and ``mmf`` always fail). Non-finite rewards, no
  convergence within ``maxfev``, non-finite parameters or fitted values, or
  an ill-conditioned solution (condition number of the column-normalised
  Jacobian above ``cond_max``: parameters the data do not determine) give
  ``FitResult.ok = False`` with the reason. Numerical failure never raises;
  malformed input (mismatched shapes, non-positive or non-finite FLOPs, an
  unknown family, bad options) raises :class:`~nni_robust.errors.ConfigError`.
* **LOO with failed fits.** An architecture whose leave-j-out fit failed is
  left out of the correlation for supernet j and counted in
  ``SelectionResult.failures``; ``tau_j`` is NaN when fewer than 3
  architectures remain or more than ``max_failure_fraction`` (default 0.5)
  of the fits failed. The mean over the kept supernets is NaN when any of
  them is NaN, and a family with a NaN mean cannot be selected.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

from nni_robust.config import check_range
from nni_robust.errors import ConfigError

__all__ = [
    "DEFAULT_UNIT",
    "Family",
    "FAMILIES",
    "FAMILY_NAMES",
    "get_family",
    "FitResult",
    "fit",
    "fit_many",
    "extrapolate",
    "SelectionResult",
    "loo_selection",
    "write_report",
]

logger = logging.getLogger(__name__)

#: FLOPs per fitting unit: the fits run on MFLOPs.
DEFAULT_UNIT = 1e6

_SOLVERS = ("curve_fit", "batched")
_INF = math.inf


# --------------------------------------------------------------------------
# families
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A parametric saturating family ``y = f(x; params)`` (MSRobNet App. A).

    ``x`` is in fitting units (FLOPs / unit), not in FLOPs.

    Attributes:
        name: registry name.
        formula: human-readable formula.
        param_names: parameter names in call order.
        func: ``func(x, *params) -> y``, numpy-broadcasting over ``x`` and the
            parameters (a batch: ``x`` of shape ``(B, m)``, each parameter
            ``(B, 1)``).
        jac: ``jac(x, *params) -> (..., m, n_params)`` analytic Jacobian.
        initial_guess: ``initial_guess(x, y) -> (B, n_params)`` for
            ``x, y`` of shape ``(B, m)``: a data-driven start for each row.
        bounds: ``(lower, upper)`` per parameter, or None when unbounded.
            Half-lines at 0 are enforced by reparametrisation (see the module
            docstring); any other box makes the fit use scipy's bounded
            trust-region-reflective solver.
        needs_log_x: the family needs ``log x > 0``, i.e. ``x > 1``.
    """

    name: str
    formula: str
    param_names: tuple[str, ...]
    func: Callable[..., np.ndarray] = field(repr=False)
    jac: Callable[..., np.ndarray] = field(repr=False)
    initial_guess: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    needs_log_x: bool = False

    def __post_init__(self) -> None:
        if self.bounds is not None:
            lo, hi = self.bounds
            if len(lo) != self.n_params or len(hi) != self.n_params or any(l >= h for l, h in zip(lo, hi)):
                raise ConfigError(
                    f"Family {self.name!r}: bounds must give lower < upper for each of "
                    f"{self.param_names}, but got {self.bounds!r}."
                )

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return len(self.param_names)

    @property
    def transforms(self) -> tuple[str, ...] | None:
        """Per parameter ``"free"``, ``"pos"`` (``>= 0``) or ``"neg"`` (``<= 0``).

        None when some bound is not a half-line at 0 (then the fit is a
        bounded trust-region-reflective one).
        """
        if self.bounds is None:
            return ("free",) * self.n_params
        kinds = []
        for lo, hi in zip(*self.bounds):
            if lo == -_INF and hi == _INF:
                kinds.append("free")
            elif lo == 0.0 and hi == _INF:
                kinds.append("pos")
            elif lo == -_INF and hi == 0.0:
                kinds.append("neg")
            else:
                return None
        return tuple(kinds)

    def __call__(self, x, *params) -> np.ndarray:
        """Evaluate the family at ``x`` (fitting units) with ``params``."""
        if len(params) != self.n_params:
            raise ConfigError(
                f"Family {self.name!r} takes {self.n_params} parameters "
                f"{self.param_names}, but got {len(params)}: {params!r}."
            )
        with np.errstate(all="ignore"):
            return self.func(np.asarray(x, dtype=float), *params)


# ---- vectorised helpers for the initial guesses (rows are fits) ------------
def _stack(cols: Sequence) -> np.ndarray:
    """Jacobian columns -> ``(..., m, n_params)``, broadcasting scalars and batches."""
    return np.stack(np.broadcast_arrays(*cols), axis=-1)


def _linreg(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row least squares ``v ~ slope * u + intercept`` over finite pairs (NaN when degenerate)."""
    w = np.isfinite(u) & np.isfinite(v)
    cnt = w.sum(axis=1)
    u0, v0 = np.where(w, u, 0.0), np.where(w, v, 0.0)
    um = u0.sum(axis=1) / np.maximum(cnt, 1)
    vm = v0.sum(axis=1) / np.maximum(cnt, 1)
    du = np.where(w, u0 - um[:, None], 0.0)
    dv = np.where(w, v0 - vm[:, None], 0.0)
    suu = np.sum(du * du, axis=1)
    slope = np.where((cnt >= 2) & (suu > 0), np.sum(du * dv, axis=1) / np.where(suu > 0, suu, 1.0), np.nan)
    return slope, vm - slope * um


def _lstsq(cols: Sequence[np.ndarray], v: np.ndarray) -> np.ndarray:
    """Per row linear least squares ``v ~ sum_k theta_k cols_k``; NaN rows where not finite."""
    a = np.stack(np.broadcast_arrays(*cols), axis=-1)  # (B, m, p)
    ok = np.all(np.isfinite(a), axis=(1, 2)) & np.all(np.isfinite(v), axis=1)
    sol = np.full((a.shape[0], a.shape[2]), np.nan)
    if ok.any():
        sol[ok] = np.einsum("bpm,bm->bp", np.linalg.pinv(a[ok]), v[ok])
    return sol


def _margin(y: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(0.25 * np.ptp(y, axis=1), 0.02 * np.max(np.abs(y), axis=1)), 1e-3)


def _rows_ok(sol: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(sol), axis=1)


# ---- 1. Janoschek: a - (a - b) exp(-c x^d) --------------------------------
def _janoschek(x, a, b, c, d):
    return a - (a - b) * np.exp(-c * x**d)


def _janoschek_jac(x, a, b, c, d):
    xd = x**d
    e = np.exp(-c * xd)
    return _stack([1.0 - e, e, (a - b) * xd * e, (a - b) * e * c * xd * np.log(x)])


def _janoschek_init(x, y):
    m = _margin(y)
    a = np.max(y, axis=1) + m
    b = np.min(y, axis=1) - np.maximum(np.ptp(y, axis=1), m)
    w = (a[:, None] - y) / (a - b)[:, None]  # = exp(-c x^d), in (0, 1)
    d, lc = _linreg(np.log(x), np.log(-np.log(w)))
    bad = ~(np.isfinite(d) & (d > 0) & np.isfinite(lc))
    d = np.clip(np.where(bad, 1.0, d), 1e-3, 9.0)
    lc = np.where(bad, np.log(np.log(2.0) / np.median(x, axis=1)), lc)
    return np.stack([a, b, np.exp(lc), d], axis=1)


# ---- 2. vapor pressure: exp(a + b / x + c log x) --------------------------
def _vapor(x, a, b, c):
    return np.exp(a + b / x + c * np.log(x))


def _vapor_jac(x, a, b, c):
    f = _vapor(x, a, b, c)
    return _stack([f, f / x, f * np.log(x)])


def _vapor_init(x, y):
    sol = _lstsq([np.ones_like(x), 1.0 / x, np.log(x)], np.log(np.where(y > 0, y, np.nan)))
    fallback = np.stack([np.log(np.maximum(np.mean(np.abs(y), axis=1), 1e-3)), 0 * y[:, 0], 0 * y[:, 0]], axis=1)
    return np.where(_rows_ok(sol)[:, None], sol, fallback)


# ---- 3. log log linear: log(a log x + b) -----------------------------------
def _loglog(x, a, b):
    return np.log(a * np.log(x) + b)


def _loglog_jac(x, a, b):
    lx = np.log(x)
    g = a * lx + b
    return _stack([lx / g, 1.0 / g])


def _loglog_init(x, y):
    lx = np.log(x)
    sol = _lstsq([lx, np.ones_like(x)], np.exp(np.minimum(y, 700.0)))
    ok = _rows_ok(sol) & np.all(sol[:, :1] * lx + sol[:, 1:] > 0, axis=1)
    fallback = np.stack([0 * y[:, 0], np.exp(np.clip(np.mean(y, axis=1), -700, 700))], axis=1)
    return np.where(ok[:, None], sol, fallback)


# ---- 4. ilog2: c - a / log x -----------------------------------------------
def _ilog2(x, a, c):
    return c - a / np.log(x)


def _ilog2_jac(x, a, c):
    return _stack([-1.0 / np.log(x), np.ones_like(x)])


def _ilog2_init(x, y):
    sol = _lstsq([-1.0 / np.log(x), np.ones_like(x)], y)
    fallback = np.stack([0 * y[:, 0], np.mean(y, axis=1)], axis=1)
    return np.where(_rows_ok(sol)[:, None], sol, fallback)


# ---- 5. log power: a / (1 + (x / e^b)^c) ----------------------------------
# (x / e^b)^c = exp(c (log x - b)): a logistic curve in log x, computed
# through expit for stability.
def _log_power(x, a, b, c):
    return a * expit(-c * (np.log(x) - b))


def _log_power_jac_core(x, scale, b, c):
    lx = np.log(x)
    z = c * (lx - b)
    p = expit(-z)  # 1 / (1 + s)
    q = p * expit(z)  # s / (1 + s)^2
    return p, scale * q * c, -scale * q * (lx - b)


def _log_power_jac(x, a, b, c):
    p, db, dc = _log_power_jac_core(x, a, b, c)
    return _stack([p, db, dc])


def _log_power_init(x, y):
    lx = np.log(x)
    a = np.max(y, axis=1) + _margin(y)
    c, icpt = _linreg(lx, np.log(a[:, None] / np.where(y > 0, y, np.nan) - 1.0))
    ok = np.all(y > 0, axis=1) & np.isfinite(c) & (c < 0) & np.isfinite(icpt)
    c = np.where(ok, np.minimum(c, -1e-3), -1.0)
    b = np.where(ok, -icpt / c, np.mean(lx, axis=1))
    return np.stack([np.maximum(a, 1e-3), b, c], axis=1)


# ---- 6. MMF: a - (a - b) / (1 + (d x)^c) ---------------------------------
def _mmf(x, a, b, c, d):
    return a - (a - b) * expit(-c * np.log(d * x))


def _mmf_jac(x, a, b, c, d):
    ldx = np.log(d * x)
    z = c * ldx
    p = expit(-z)  # 1 / (1 + t)
    q = p * expit(z)  # t / (1 + t)^2
    return _stack([1.0 - p, p, (a - b) * q * ldx, (a - b) * q * c / d])


def _mmf_init(x, y):
    m = _margin(y)
    a = np.max(y, axis=1) + m
    b = np.min(y, axis=1) - np.maximum(np.ptp(y, axis=1), m)
    c, icpt = _linreg(np.log(x), np.log((y - b[:, None]) / (a[:, None] - y)))
    bad = ~(np.isfinite(c) & (c > 0) & np.isfinite(icpt))
    c = np.clip(np.where(bad, 1.0, c), 1e-3, 9.0)
    icpt = np.where(bad, -np.log(np.median(x, axis=1)), icpt)
    return np.stack([a, b, c, np.exp(icpt / c)], axis=1)


# ---- 7. log power rep: sigmoid(a) / (1 + (x e^{-b})^c) --------------------
def _log_power_rep(x, a, b, c):
    return expit(a) * expit(-c * (np.log(x) - b))


def _log_power_rep_jac(x, a, b, c):
    sa = expit(a)
    p, db, dc = _log_power_jac_core(x, sa, b, c)
    return _stack([sa * (1.0 - sa) * p, db, dc])


def _log_power_rep_init(x, y):
    p0 = _log_power_init(x, y)
    scale = np.clip(p0[:, 0], 1e-3, 1.0 - 1e-3)
    return np.stack([np.log(scale / (1.0 - scale)), p0[:, 1], p0[:, 2]], axis=1)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("janoschek", "a - (a - b) exp(-c x^d)", ("a", "b", "c", "d"),
               _janoschek, _janoschek_jac, _janoschek_init,
               bounds=((-_INF, -_INF, 0.0, 0.0), (_INF, _INF, _INF, _INF))),
        Family("vapor_pressure", "exp(a + b / x + c log x)", ("a", "b", "c"),
               _vapor, _vapor_jac, _vapor_init),
        Family("log_log_linear", "log(a log x + b)", ("a", "b"),
               _loglog, _loglog_jac, _loglog_init, needs_log_x=True),
        Family("ilog2", "c - a / log x", ("a", "c"),
               _ilog2, _ilog2_jac, _ilog2_init, needs_log_x=True),
        Family("log_power", "a / (1 + (x / e^b)^c)", ("a", "b", "c"),
               _log_power, _log_power_jac, _log_power_init,
               bounds=((0.0, -_INF, -_INF), (_INF, _INF, 0.0))),
        Family("mmf", "a - (a - b) / (1 + (d x)^c)", ("a", "b", "c", "d"),
               _mmf, _mmf_jac, _mmf_init,
               bounds=((-_INF, -_INF, 0.0, 0.0), (_INF, _INF, _INF, _INF))),
        Family("log_power_rep", "sigmoid(a) / (1 + (x e^-b)^c)", ("a", "b", "c"),
               _log_power_rep, _log_power_rep_jac, _log_power_rep_init,
               bounds=((-_INF, -_INF, -_INF), (_INF, _INF, 0.0))),
    )
}
"""The 7 candidate families of MSRobNet App. A, in the paper's order."""

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def get_family(family: str | Family) -> Family:
    """Return the registered :class:`Family` named ``family`` (or ``family`` itself).

    Raises:
        ConfigError: unknown name (the message lists close and all names).
    """
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(family), FAMILY_NAMES, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"Unknown extrapolation family {family!r}.{hint} Valid families: {', '.join(FAMILY_NAMES)}."
        ) from None


# --------------------------------------------------------------------------
# fit results and input checks
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """Outcome of one least-squares fit (MSRobNet Alg. 3, line 4).

    Attributes:
        family: family name.
        params: fitted parameters in :attr:`Family.param_names` order (empty
            when no solution was reached).
        ok: whether the fit succeeded and its curve can be used.
        message: ``"ok"`` or the reason for the failure.
        rmse: root-mean-square residual on the fitted points (NaN on failure).
        unit: FLOPs per fitting unit (``x = flops / unit``).
        cond: condition number of the column-normalised Jacobian at the
            solution (NaN when not computed).
    """

    family: str
    params: tuple[float, ...]
    ok: bool
    message: str
    rmse: float = math.nan
    unit: float = DEFAULT_UNIT
    cond: float = math.nan

    def predict(self, flops) -> np.ndarray | float:
        """Evaluate the fitted curve at ``flops`` (in FLOPs, like the fitted points).

        Returns NaN (of ``flops``' shape) for a failed fit; a scalar input
        gives a float.
        """
        arr = np.asarray(flops, dtype=float)
        fam = get_family(self.family)
        if not self.ok or len(self.params) != fam.n_params:
            out = np.full(arr.shape, math.nan)
        else:
            out = fam(arr / self.unit, *self.params)
        return float(out) if out.ndim == 0 else out


def _check_unit(unit: float) -> float:
    try:
        u = float(unit)
    except (TypeError, ValueError):
        u = math.nan
    if not (math.isfinite(u) and u > 0):
        raise ConfigError(f"unit must be a finite number > 0 (FLOPs per fitting unit), but got {unit!r}.")
    return u


def _check_flops(flops, name: str = "flops") -> np.ndarray:
    try:
        arr = np.asarray(flops, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numeric, but got {flops!r}.") from exc
    bad = ~(np.isfinite(arr) & (arr > 0))
    if np.any(bad):
        raise ConfigError(
            f"{name} must be finite and > 0, but got {arr[bad].ravel()[:5].tolist()} "
            f"(at flat index {np.flatnonzero(bad)[:5].tolist()})."
        )
    return arr


def _check_rewards(rewards) -> np.ndarray:
    try:
        return np.asarray(rewards, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"rewards must be numeric, but got {rewards!r}.") from exc


def _check_log_x(fam: Family, x: np.ndarray, unit: float, name: str = "flops") -> None:
    if fam.needs_log_x and np.any(x <= 1.0):
        raise ConfigError(
            f"Family {fam.name!r} ({fam.formula}) needs {name} / unit > 1, but {name} / {unit:g} "
            f"has minimum {float(np.min(x)):.4g}. Pass capacities in FLOPs (not MFLOPs) or choose a "
            f"smaller unit."
        )


def _check_fit_options(maxfev, cond_max, solver) -> None:
    if maxfev is not None and (isinstance(maxfev, bool) or not isinstance(maxfev, (int, np.integer)) or maxfev < 1):
        raise ConfigError(f"maxfev must be a positive int or None, but got {maxfev!r}.")
    if isinstance(cond_max, bool) or not isinstance(cond_max, (int, float)) or not cond_max > 1:
        raise ConfigError(f"cond_max must be a number > 1, but got {cond_max!r}.")
    if solver not in _SOLVERS:
        raise ConfigError(f"solver must be one of {list(_SOLVERS)}, but got {solver!r}.")


def _fail(fam: Family, message: str, unit: float, params=(), cond=math.nan) -> FitResult:
    return FitResult(fam.name, tuple(float(p) for p in params), False, message, math.nan, unit, float(cond))


# --------------------------------------------------------------------------
# solvers
# --------------------------------------------------------------------------
_SIGN = {"free": 0.0, "pos": 1.0, "neg": -1.0}


def _signs(fam: Family) -> np.ndarray | None:
    kinds = fam.transforms
    return None if kinds is None else np.array([_SIGN[k] for k in kinds])


def _to_theta(p: np.ndarray, sign: np.ndarray) -> np.ndarray:
    return np.where(sign == 0, p, np.log(np.maximum(np.abs(p), 1e-12)))


def _to_params(theta: np.ndarray, sign: np.ndarray) -> np.ndarray:
    return np.where(sign == 0, theta, sign * np.exp(np.minimum(theta, 700.0)))


def _interior(p0: np.ndarray, bounds) -> np.ndarray:
    """Clip starts strictly inside ``bounds`` (every solver needs a strictly feasible start)."""
    if bounds is None:
        return p0
    lo, hi = (np.asarray(b, dtype=float) for b in bounds)
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    eps = 1e-6 * np.maximum(span, 1e-3)
    return np.clip(p0, np.where(np.isfinite(lo), lo + eps, lo), np.where(np.isfinite(hi), hi - eps, hi))


def _solve_curve_fit(fam: Family, x: np.ndarray, y: np.ndarray, p0: np.ndarray, maxfev: int) -> np.ndarray:
    """Least-squares parameters of one fit by scipy's ``curve_fit``; raises on optimizer failure."""
    sign = _signs(fam)
    if sign is None:  # a general box: bounded trust-region-reflective
        popt, _ = curve_fit(fam.func, x, y, p0=p0, jac=fam.jac, bounds=fam.bounds, method="trf",
                            x_scale="jac", check_finite=False, maxfev=maxfev)
        return popt
    free = sign == 0

    def f_theta(xx, *theta):
        return fam.func(xx, *_to_params(np.asarray(theta), sign))

    def j_theta(xx, *theta):
        p = _to_params(np.asarray(theta), sign)
        return fam.jac(xx, *p) * np.where(free, 1.0, p)  # d p / d theta = 1 or p

    theta, _ = curve_fit(f_theta, x, y, p0=_to_theta(p0, sign), jac=j_theta, method="lm",
                         check_finite=False, maxfev=maxfev)
    return _to_params(theta, sign)


def _solve_batched(fam: Family, x: np.ndarray, y: np.ndarray, p0: np.ndarray, maxfev: int,
                   ftol: float = 1.49012e-8, xtol: float = 1.49012e-8) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on B independent fits at once (``x, y``: ``(B, m)``; ``p0``: ``(B, p)``).

    The problem of :func:`_solve_curve_fit` (same reparametrisation, same
    start), vectorised over the batch: each fit keeps its own damping and
    Marquardt scaling and stops when both the actual and the predicted
    relative reductions of its sum of squares are at most ``ftol``, or its
    scaled step is at most ``xtol`` times the scaled parameters (MINPACK's
    tests and default tolerances). Only the fits still running are computed.

    Returns:
        ``(params (B, p), converged (B,))``; a fit still running after
        ``maxfev`` iterations (one function and one Jacobian evaluation each)
        has not converged.
    """
    sign = _signs(fam)
    free = sign == 0
    n_p = p0.shape[1]

    def residual(xx, yy, th):
        params = _to_params(th, sign)
        return fam.func(xx, *(params[:, k:k + 1] for k in range(n_p))) - yy

    def jacobian(xx, th):
        params = _to_params(th, sign)
        jac = fam.jac(xx, *(params[:, k:k + 1] for k in range(n_p)))
        return jac * np.where(free, 1.0, params)[:, None, :]

    theta = _to_theta(p0, sign)
    res = residual(x, y, theta)
    cost = np.sum(res**2, axis=1)
    floor = 1e-30 * np.sum(y**2, axis=1)  # an exact fit
    lam = np.full(len(theta), 1e-3)
    scale = np.zeros_like(theta)
    converged = np.zeros(len(theta), dtype=bool)
    idx = np.flatnonzero(np.isfinite(cost))
    eye = np.eye(n_p)
    for _ in range(maxfev):
        if idx.size == 0:
            break
        xa, th, ra, ca = x[idx], theta[idx], res[idx], cost[idx]
        jac = jacobian(xa, th)
        ok_j = np.all(np.isfinite(jac), axis=(1, 2))
        jac[~ok_j] = 0.0
        jtj = np.einsum("bmi,bmj->bij", jac, jac)
        grad = np.einsum("bmi,bm->bi", jac, ra)
        sc = np.maximum(scale[idx], np.sqrt(np.einsum("bii->bi", jtj)))  # Marquardt: running max column norm
        scale[idx] = sc
        lhs = jtj + (lam[idx, None] * np.maximum(sc, 1e-12) ** 2)[:, :, None] * eye
        try:
            step = -np.linalg.solve(lhs, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # a singular system: least squares one by one
            step = np.stack([-np.linalg.lstsq(mat, g, rcond=None)[0] for mat, g in zip(lhs, grad)])
        step[~(ok_j & np.all(np.isfinite(step), axis=1))] = 0.0
        new_th = th + step
        new_res = residual(xa, y[idx], new_th)
        new_cost = np.sum(new_res**2, axis=1)
        pred_red = ca - np.sum((ra + np.einsum("bmi,bi->bm", jac, step)) ** 2, axis=1)
        act_red = ca - new_cost
        better = ok_j & np.isfinite(new_cost) & (new_cost < ca)
        up = idx[better]
        theta[up], res[up], cost[up] = new_th[better], new_res[better], new_cost[better]
        lam[idx] = np.where(better, np.maximum(lam[idx] / 3.0, 1e-12), lam[idx] * 4.0)
        f_conv = better & (act_red <= ftol * ca) & (np.abs(pred_red) <= ftol * ca)
        x_conv = ok_j & (np.linalg.norm(step * sc, axis=1) <= xtol * (np.linalg.norm(theta[idx] * sc, axis=1) + xtol))
        conv = f_conv | x_conv | (cost[idx] <= floor[idx])
        converged[idx[conv]] = True
        idx = idx[~conv & ok_j & (lam[idx] < 1e30)]
    return _to_params(theta, sign), converged


def _fit_rows(fam: Family, x: np.ndarray, y: np.ndarray, unit: float, maxfev: int | None, cond_max: float,
              solver: str) -> list[FitResult]:
    """Fit every row of ``x, y`` (``(B, m)``, validated, fitting units); never raises for numerics."""
    n_rows, n_pts = y.shape
    n_p = fam.n_params
    maxfev = int(maxfev) if maxfev is not None else 100 * (n_p + 1)  # MINPACK's default with a Jacobian
    results: list[FitResult | None] = [None] * n_rows
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)

        # --- reasons not to try, and starts (vectorised) ---
        finite = np.all(np.isfinite(y), axis=1)
        distinct = 1 + np.sum(np.diff(np.sort(x, axis=1), axis=1) > 0, axis=1)
        for b in np.flatnonzero(~finite):
            results[b] = _fail(fam, f"non-finite rewards {y[b].tolist()}", unit)
        if n_pts < n_p:
            for b in np.flatnonzero(finite):
                results[b] = _fail(fam, f"underdetermined: {n_pts} points for {n_p} parameters", unit)
            return results  # type: ignore[return-value]
        for b in np.flatnonzero(finite & (distinct < n_p)):
            results[b] = _fail(fam, f"underdetermined: {distinct[b]} distinct FLOPs for {n_p} parameters", unit)
        rows = np.flatnonzero(finite & (distinct >= n_p))
        p0 = _interior(np.asarray(fam.initial_guess(x[rows], y[rows]), dtype=float).reshape(len(rows), n_p),
                       fam.bounds)
        good = _rows_ok(p0)
        for b in rows[~good]:
            results[b] = _fail(fam, "no finite initial guess", unit)
        rows, p0 = rows[good], p0[good]

        # --- solve ---
        popt = np.full((len(rows), n_p), np.nan)
        solved = np.zeros(len(rows), dtype=bool)
        if len(rows) and solver == "batched" and fam.transforms is not None:
            popt, solved = _solve_batched(fam, x[rows], y[rows], p0, maxfev)
            for b in rows[~solved]:
                results[b] = _fail(fam, f"optimizer failed: no convergence within maxfev={maxfev}", unit)
        else:
            for k, b in enumerate(rows):
                try:
                    popt[k] = _solve_curve_fit(fam, x[b], y[b], p0[k], maxfev)
                    solved[k] = True
                except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError, ZeroDivisionError,
                        OverflowError) as exc:
                    results[b] = _fail(fam, f"optimizer failed: {exc}", unit)
        rows, popt = rows[solved], popt[solved]

        # --- checks at the solution (vectorised) ---
        if len(rows):
            xs, ys = x[rows], y[rows]
            cols = [popt[:, k:k + 1] for k in range(n_p)]
            pred = fam.func(xs, *cols)
            jac = fam.jac(xs, *cols)
            fin_p = _rows_ok(popt)
            fin_f = np.all(np.isfinite(pred), axis=1)
            fin_j = np.all(np.isfinite(jac), axis=(1, 2))
            norms = np.linalg.norm(np.where(fin_j[:, None, None], jac, 0.0), axis=1)  # (S, p)
            dead = np.any(norms <= 1e-12 * np.maximum(norms.max(axis=1, keepdims=True), 1.0), axis=1)
            cond = np.full(len(rows), math.inf)
            live = fin_p & fin_f & fin_j & ~dead
            if live.any():
                sv = np.linalg.svd(jac[live] / norms[live][:, None, :], compute_uv=False)
                cond[live] = np.where(sv[:, -1] > 0, sv[:, 0] / np.where(sv[:, -1] > 0, sv[:, -1], 1.0), math.inf)
            rmse = np.sqrt(np.mean((pred - ys) ** 2, axis=1))
            for k, b in enumerate(rows):
                if not fin_p[k]:
                    results[b] = _fail(fam, f"non-finite parameters {popt[k].tolist()}", unit, popt[k])
                elif not fin_f[k]:
                    results[b] = _fail(fam, "non-finite fitted values", unit, popt[k])
                elif not fin_j[k]:
                    results[b] = _fail(fam, "non-finite Jacobian at the solution", unit, popt[k])
                elif dead[k]:
                    results[b] = _fail(fam, "ill-conditioned: a parameter has no effect on the fit", unit,
                                       popt[k], math.inf)
                elif not cond[k] <= cond_max:
                    results[b] = _fail(fam, f"ill-conditioned: condition number {cond[k]:.3g} > {cond_max:.3g}",
                                       unit, popt[k], cond[k])
                else:
                    results[b] = FitResult(fam.name, tuple(float(v) for v in popt[k]), True, "ok",
                                           float(rmse[k]), unit, float(cond[k]))
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------
# public fitting API
# --------------------------------------------------------------------------
def fit(family: str | Family, flops, rewards, *, unit: float = DEFAULT_UNIT, maxfev: int | None = None,
        cond_max: float = 1e12, solver: str = "curve_fit") -> FitResult:
    """Fit ``family`` to (FLOPs, reward) points by nonlinear least squares.

    MSRobNet Sec. 5.1, Alg. 3 line 4: ``beta = Fit(f, {r_i}, {C_i})``, with
    scipy's ``curve_fit``, bounded where the family defines bounds (see the
    module docstring for how the bounds are enforced).

    Args:
        family: a name in :data:`FAMILIES` or a :class:`Family`.
        flops: capacities ``C_i``, 1-D, finite and > 0, in FLOPs.
        rewards: rewards ``r_i``, same length. Non-finite rewards give a
            failed fit (``ok=False``), not an error.
        unit: FLOPs per fitting unit; the fit runs on ``flops / unit``
            (default MFLOPs, see the module docstring).
        maxfev: the optimizer's limit on function evaluations (for
            ``solver="batched"``: on iterations); None: MINPACK's default
            ``100 * (n_params + 1)``. A fit that does not converge within it
            fails.
        cond_max: fits whose column-normalised Jacobian has a larger condition
            number are reported as ill-conditioned (``ok=False``).
        solver: ``"curve_fit"`` (scipy, as the authors) or ``"batched"`` (this
            module's vectorised Levenberg-Marquardt; see :func:`fit_many`).

    Returns:
        A :class:`FitResult`; on numerical failure ``ok=False`` with the
        reason (never raises for it).

    Raises:
        ConfigError: unknown family, mismatched or non-1-D inputs, FLOPs that
            are not finite and positive, ``flops / unit <= 1`` for a family
            that needs ``log x > 0``, or a bad ``unit``/``maxfev``/
            ``cond_max``/``solver``.
    """
    fam = get_family(family)
    unit = _check_unit(unit)
    f = _check_flops(flops)
    y = _check_rewards(rewards)
    if f.ndim != 1 or y.ndim != 1 or f.shape != y.shape or f.size == 0:
        raise ConfigError(
            f"flops and rewards must be non-empty 1-D arrays of the same length, "
            f"but got shapes {f.shape} and {y.shape}."
        )
    _check_fit_options(maxfev, cond_max, solver)
    x = f / unit
    _check_log_x(fam, x, unit)
    return _fit_rows(fam, x[None], y[None], unit, maxfev, float(cond_max), solver)[0]


def fit_many(family: str | Family, flops, rewards, *, unit: float = DEFAULT_UNIT, maxfev: int | None = None,
             cond_max: float = 1e12, solver: str = "batched") -> list[FitResult]:
    """Fit ``family`` to each row of ``(B, m)`` FLOPs and rewards (B architectures).

    With ``solver="batched"`` (default) all rows are solved at once by a
    vectorised Levenberg-Marquardt that solves the problem of :func:`fit`
    (same reparametrisation, same start, MINPACK's stopping tests) one to two
    orders of magnitude faster than B calls of ``curve_fit``;
    ``solver="curve_fit"`` fits row by row with scipy. Families with general
    box bounds always use ``curve_fit``.

    Args:
        family, unit, maxfev, cond_max, solver: as in :func:`fit`.
        flops: ``(B, m)`` capacities in FLOPs.
        rewards: ``(B, m)`` rewards.

    Returns:
        One :class:`FitResult` per row.

    Raises:
        ConfigError: as :func:`fit` (inputs must be 2-D of equal shape).
    """
    fam = get_family(family)
    unit = _check_unit(unit)
    f = _check_flops(flops)
    y = _check_rewards(rewards)
    if f.ndim != 2 or f.shape != y.shape or f.shape[1] == 0:
        raise ConfigError(
            f"flops and rewards must be 2-D arrays (architectures, supernets) of the same shape, "
            f"but got shapes {f.shape} and {y.shape}."
        )
    _check_fit_options(maxfev, cond_max, solver)
    x = f / unit
    _check_log_x(fam, x, unit)
    return _fit_rows(fam, x, y, unit, maxfev, float(cond_max), solver)


def extrapolate(family: str | Family, flops, rewards, target_flops: float, *, unit: float = DEFAULT_UNIT,
                maxfev: int | None = None, cond_max: float = 1e12, solver: str = "curve_fit",
                bounds: tuple[float, float] | None = (0.0, 1.0)) -> tuple[float | None, FitResult]:
    """Multi-shot estimate of the reward at the targeted capacity (MSRobNet Eq. 3).

    Fits ``family`` to the points (:func:`fit`) and evaluates it at
    ``target_flops`` (Alg. 3, lines 4-5).

    Args:
        family, flops, rewards, unit, maxfev, cond_max, solver: as in :func:`fit`.
        target_flops: the targeted capacity ``C_T``, in the units of ``flops``.
        bounds: the range a reward can take (the reward is a mix of two
            accuracies, so ``[0, 1]``); an estimate outside it is a failed fit,
            never a number that reaches a decision (a curve that shoots to 70
            at the target would otherwise win every tournament). ``None``: no check.

    Returns:
        ``(estimate, fit_result)``; ``estimate`` is None when the fit failed
        or its value at ``target_flops`` is not finite or outside ``bounds`` (then
        ``fit_result.ok`` is False and its message says why).

    Raises:
        ConfigError: as :func:`fit`, or a non-positive, non-finite or
            non-scalar ``target_flops`` (or ``target_flops / unit <= 1`` for
            a family that needs ``log x > 0``).
    """
    fam = get_family(family)
    unit = _check_unit(unit)
    t = _check_flops(target_flops, "target_flops")
    if t.ndim != 0:
        raise ConfigError(f"target_flops must be a scalar, but got shape {t.shape}.")
    _check_log_x(fam, t / unit, unit, "target_flops")
    res = fit(fam, flops, rewards, unit=unit, maxfev=maxfev, cond_max=cond_max, solver=solver)
    if not res.ok:
        logger.debug("extrapolation with %s failed: %s", fam.name, res.message)
        return None, res
    est = float(res.predict(float(t)))
    if not math.isfinite(est):
        return None, dataclasses.replace(res, ok=False, message=f"non-finite estimate at target {float(t):g}")
    if bounds is not None and not bounds[0] <= est <= bounds[1]:
        return None, dataclasses.replace(res, ok=False, message=f"estimate {est:.4g} at target {float(t):g} is "
                                                              f"outside the reward range {list(bounds)}")
    return est, res


# --------------------------------------------------------------------------
# leave-one-out family selection
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SelectionResult:
    """Leave-one-out family selection (MSRobNet Sec. 5.2, Alg. 2, App. A).

    Attributes:
        families: family names, the row order of the arrays.
        tau: ``(F, K)`` Spearman correlations ``tau_j^(i)`` between the
            leave-j-out predictions and the actual rewards in supernet j
            (NaN where fewer than 3 architectures had a usable fit, too many
            fits failed, or a side was constant).
        mean_tau: ``(F,)`` mean of ``tau`` over the supernets not in
            ``exclude`` (NaN when any of them is NaN).
        best: the family with the highest ``mean_tau`` (the first in
            ``families`` on a tie; None when no mean is finite).
        failures: ``(F, K)`` number of architectures whose leave-j-out fit
            failed (they are left out of ``tau[i, j]``).
        exclude: supernet (column) indices left out of the mean.
        n_archs: N, the number of architectures.
        predictions: ``(F, K, N)`` leave-j-out predicted rewards (NaN where
            the fit failed).
        names: a label per supernet (column).
    """

    families: tuple[str, ...]
    tau: np.ndarray
    mean_tau: np.ndarray
    best: str | None
    failures: np.ndarray
    exclude: tuple[int, ...]
    n_archs: int
    predictions: np.ndarray = field(repr=False)
    names: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """A JSON-ready summary (without the per-architecture predictions)."""
        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "families": list(self.families),
            "supernets": list(self.names),
            "exclude": list(self.exclude),
            "n_archs": self.n_archs,
            "best": self.best,
            "mean_tau": {f: clean(m) for f, m in zip(self.families, self.mean_tau)},
            "tau": {f: [clean(t) for t in row] for f, row in zip(self.families, self.tau)},
            "failures": {f: [int(c) for c in row] for f, row in zip(self.families, self.failures)},
        }


def _loo_predict(fam: Family, x: np.ndarray, r: np.ndarray, j: int, unit: float, maxfev: int | None,
                 cond_max: float, solver: str) -> np.ndarray:
    """Leave-j-out predictions of ``fam`` for every architecture (NaN where the fit failed)."""
    keep = np.arange(x.shape[1]) != j
    results = _fit_rows(fam, x[:, keep], r[:, keep], unit, maxfev, cond_max, solver)
    ok = np.array([res.ok for res in results])
    params = np.full((x.shape[0], fam.n_params), math.nan)
    if ok.any():
        params[ok] = [results[a].params for a in np.flatnonzero(ok)]
    with np.errstate(all="ignore"):
        pred = fam.func(x[:, j], *params.T)
    return np.where(ok & np.isfinite(pred), pred, math.nan)


def _spearman(pred: np.ndarray, actual: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(pred) & np.isfinite(actual)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0 or np.ptp(actual[ok]) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(pred[ok], actual[ok]).statistic)


def _check_exclude(exclude: Sequence[int], k: int) -> list[int]:
    """Normalise column indices (negative ones count from the end)."""
    try:
        items = list(exclude)
    except TypeError:
        items = [exclude]
    out = set()
    for e in items:
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or not -k <= e < k:
            raise ConfigError(
                f"exclude must hold supernet column indices in [-{k}, {k - 1}], but got {e!r} in {exclude!r}."
            )
        out.add(int(e) % k)
    return sorted(out)


def loo_selection(flops, rewards, *, families: Iterable[str] | None = None, exclude: Sequence[int] = (0,),
                  unit: float = DEFAULT_UNIT, names: Sequence[str] | None = None, maxfev: int | None = None,
                  max_failure_fraction: float = 0.5, cond_max: float = 1e12,
                  solver: str = "batched") -> SelectionResult:
    """Choose the extrapolation family by leave-one-out Spearman correlation.

    MSRobNet Sec. 5.2 and Alg. 2: for every family ``f^(i)`` and supernet
    ``j``, each architecture's curve is fitted to its rewards in the other
    ``K - 1`` supernets and evaluated at its capacity in supernet ``j``;
    ``tau_j^(i)`` is the Spearman correlation between these predictions and
    the actual rewards in supernet ``j`` over the N architectures. The family
    with the highest mean ``tau`` over the supernets not in ``exclude`` wins
    (App. A leaves out the smallest supernet; the paper uses K = 8, N = 200).

    Args:
        flops: ``(N, K)`` capacity of each architecture in each supernet (FLOPs).
        rewards: ``(N, K)`` one-shot rewards (non-finite entries make the
            fits that use them fail).
        families: names to compare (default: all 7, in registry order).
        exclude: column indices left out of the mean (default ``(0,)``, the
            first column: order the columns by supernet width, so that it is
            the smallest supernet as in App. A).
        unit: FLOPs per fitting unit (see :func:`fit`). Unlike :func:`fit`,
            a family that needs ``flops / unit > 1`` on data outside that
            domain does not raise: all its fits count as failed (with a
            logged warning), so the other families are still compared.
        names: a label per supernet for reports (default ``C1..CK``).
        maxfev, cond_max: as in :func:`fit`.
        max_failure_fraction: ``tau_j`` of a family is NaN (so the family
            cannot be selected) when more than this fraction of its N
            leave-j-out fits failed: a family that cannot fit most
            architectures is of no use to the search, and its correlation
            over the few it fits is not comparable with the others'.
        solver: ``"batched"`` (default; vectorised over the N architectures)
            or ``"curve_fit"`` (scipy, one fit at a time, the path of
            :func:`fit`; about 100x slower). Both solve the same problem
            from the same start.

    Returns:
        A :class:`SelectionResult`.

    Raises:
        ConfigError: inputs of the wrong shape, FLOPs not finite and
            positive, unknown or repeated families, bad ``exclude``/
            ``names``/``max_failure_fraction`` or fit options.
    """
    unit = _check_unit(unit)
    f = _check_flops(flops)
    r = _check_rewards(rewards)
    if f.ndim != 2 or f.shape != r.shape:
        raise ConfigError(
            f"flops and rewards must both have shape (N architectures, K supernets), "
            f"but got {f.shape} and {r.shape}."
        )
    n, k = f.shape
    if n < 1 or k < 2:
        raise ConfigError(f"loo_selection needs N >= 1 architectures and K >= 2 supernets, but got N={n}, K={k}.")
    fams = [get_family(name) for name in (FAMILY_NAMES if families is None else list(families))]
    if not fams:
        raise ConfigError("families must name at least one family, but got an empty collection.")
    if len({fm.name for fm in fams}) != len(fams):
        raise ConfigError(f"families must not repeat, but got {[fm.name for fm in fams]}.")
    excl = _check_exclude(exclude, k)
    if len(excl) >= k:
        raise ConfigError(f"exclude {exclude!r} leaves no supernet to average over (K={k}).")
    if names is None:
        labels = tuple(f"C{j + 1}" for j in range(k))
    else:
        labels = tuple(str(s) for s in names)
        if len(labels) != k:
            raise ConfigError(f"names must give one label per supernet (K={k}), but got {len(labels)}: {names!r}.")
    if isinstance(max_failure_fraction, bool) or not isinstance(max_failure_fraction, (int, float)):
        raise ConfigError(f"max_failure_fraction must be a number in [0, 1], but got {max_failure_fraction!r}.")
    check_range("max_failure_fraction", max_failure_fraction, 0.0, 1.0)
    _check_fit_options(maxfev, cond_max, solver)
    x = f / unit
    preds = np.full((len(fams), k, n), math.nan)
    for i, fm in enumerate(fams):
        if fm.needs_log_x and np.any(x <= 1.0):
            logger.warning("Family %s needs flops / unit > 1 but the smallest is %.4g (unit=%g): all its fits "
                           "count as failed; pass a smaller unit to compare it.", fm.name, float(x.min()), unit)
            continue
        for j in range(k):
            preds[i, j] = _loo_predict(fm, x, r, j, unit, maxfev, float(cond_max), solver)
    failures = np.sum(~np.isfinite(preds), axis=2)
    tau = np.array([[_spearman(preds[i, j], r[:, j]) if failures[i, j] <= max_failure_fraction * n else math.nan
                     for j in range(k)] for i in range(len(fams))])
    kept = [j for j in range(k) if j not in excl]
    mean_tau = tau[:, kept].mean(axis=1)
    finite = np.isfinite(mean_tau)
    best = fams[int(np.argmax(np.where(finite, mean_tau, -np.inf)))].name if finite.any() else None
    logger.info("LOO family selection (N=%d, K=%d, exclude=%s): best=%s, mean tau=%s", n, k, excl, best,
                {fm.name: round(float(m), 4) for fm, m in zip(fams, mean_tau)})
    return SelectionResult(tuple(fm.name for fm in fams), tau, mean_tau, best, failures, tuple(excl), n, preds,
                           labels)


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "nan"


def write_report(result: SelectionResult, out_dir, *, flops=None, rewards=None, unit: float = DEFAULT_UNIT,
                 n_examples: int = 2, stem: str = "loo_selection",
                 trust_warnings: Sequence[str] = (), target: float | None = None) -> dict[str, Path]:
    """Write a LOO selection as Markdown, CSV, JSON and PNG plots.

    The plot shows ``tau_j`` per left-out supernet for each family, with the
    mean in the legend (like MSRobNet Fig. A1). When ``flops`` and
    ``rewards`` (``(N, K)``, as given to :func:`loo_selection`) are passed, a
    second PNG shows the selected family fitted to all K points of
    ``n_examples`` architectures (like Fig. A2).

    Args:
        result: from :func:`loo_selection`.
        out_dir: folder (created when missing).
        flops, rewards: optional data for the example curves.
        unit: FLOPs per fitting unit for the example fits.
        n_examples: number of architectures in the example plot (>= 1).
        stem: file name stem.
        trust_warnings: sentences saying why the selection should not be trusted (e.g. the
            chosen family's mean correlation is not positive); listed at the top of the
            Markdown report and in the JSON (``warnings``).
        target: the target FLOPs ``C_T`` (same unit as ``flops``): marked in the example plot,
            with each example's extrapolated reward there (the estimate the search ranks by).

    Returns:
        Paths by kind: ``markdown``, ``csv``, ``json``, ``plot`` and, with
        data and a selected family, ``curves``.

    Raises:
        ConfigError: ``flops`` without ``rewards`` (or the reverse), data of
            a shape that does not match ``result``, or ``n_examples < 1``.
    """
    # Figure + FigureCanvasAgg render off-screen without pyplot, whatever the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = result.tau.shape[1]
    if (flops is None) != (rewards is None):
        raise ConfigError("write_report needs both flops and rewards for the example curves, or neither.")
    if isinstance(n_examples, bool) or not isinstance(n_examples, (int, np.integer)) or n_examples < 1:
        raise ConfigError(f"n_examples must be an int >= 1, but got {n_examples!r}.")
    if flops is not None:
        unit = _check_unit(unit)
        fl, rw = _check_flops(flops), _check_rewards(rewards)
        if fl.shape != rw.shape or fl.shape != (result.n_archs, k):
            raise ConfigError(
                f"flops and rewards must have shape {(result.n_archs, k)} like the selection, "
                f"but got {fl.shape} and {rw.shape}."
            )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = result.names or tuple(f"C{j + 1}" for j in range(k))
    col_labels = [f"{lab}*" if j in result.exclude else lab for j, lab in enumerate(labels)]
    order = np.argsort(-np.where(np.isfinite(result.mean_tau), result.mean_tau, -np.inf), kind="stable")
    paths: dict[str, Path] = {}

    lines = [
        "# Leave-one-out extrapolation family selection (MSRobNet Sec. 5.2, Alg. 2)",
        "",
        f"N = {result.n_archs} architectures, K = {k} supernets; selected family: **{result.best}**. "
        "Columns marked * are left out of the mean.",
        "",
        *[f"> **Warning:** {w}" + "\n" for w in trust_warnings],
        "| family | mean tau | " + " | ".join(col_labels) + " | failed fits |",
        "|---|---:|" + "---:|" * k + "---:|",
    ]
    for i in order:
        lines.append(f"| {result.families[i]} | {_fmt(result.mean_tau[i])} | "
                     + " | ".join(_fmt(t) for t in result.tau[i]) + f" | {int(result.failures[i].sum())} |")
    lines += ["", "Failed fits per left-out supernet (left out of that correlation):", "",
              "| family | " + " | ".join(col_labels) + " |", "|---|" + "---:|" * k]
    for i in order:
        lines.append(f"| {result.families[i]} | " + " | ".join(str(int(c)) for c in result.failures[i]) + " |")
    paths["markdown"] = out / f"{stem}.md"
    paths["markdown"].write_text("\n".join(lines) + "\n")

    paths["csv"] = out / f"{stem}.csv"
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["family", "mean_tau", *[f"tau_{lab}" for lab in labels],
                         *[f"failures_{lab}" for lab in labels]])
        for i in order:
            writer.writerow([result.families[i], _fmt(result.mean_tau[i]), *[_fmt(t) for t in result.tau[i]],
                             *[int(c) for c in result.failures[i]]])

    paths["json"] = out / f"{stem}.json"
    paths["json"].write_text(json.dumps({**result.to_dict(), "warnings": list(trust_warnings)}, indent=2) + "\n")

    fig = Figure(figsize=(9, 4.5))  # the legend sits right of the axes, never over the data
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(k)
    for i in order:
        ax.plot(pos, result.tau[i], marker="o", label=f"{result.families[i]} ({_fmt(result.mean_tau[i])})")
    for j in result.exclude:
        ax.axvspan(j - 0.4, j + 0.4, color="0.9", zorder=0)
    ax.set_xticks(pos, col_labels)
    ax.set_xlabel("left-out supernet j (* = not in the mean)")
    ax.set_ylabel("LOO Spearman tau_j")
    ax.set_title(f"Leave-one-out ranking correlation (N={result.n_archs})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              title="family (mean tau)", title_fontsize=8)
    fig.tight_layout()
    paths["plot"] = out / f"{stem}.png"
    fig.savefig(paths["plot"], dpi=120)

    if flops is not None and result.best is not None:
        fig = Figure(figsize=(8.5, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        picks = np.unique(np.linspace(0, result.n_archs - 1, num=min(n_examples, result.n_archs)).round().astype(int))
        fits = fit_many(result.best, fl[picks], rw[picks], unit=unit)
        for a, res in zip(picks, fits):
            line = ax.plot(fl[a] / unit, rw[a], "o", label=f"architecture {a}")[0]
            if res.ok:
                top = max(fl[a].max() * 2.0, 1.1 * target) if target else fl[a].max() * 2.0
                grid = np.geomspace(fl[a].min(), top, 200)
                ax.plot(grid / unit, res.predict(grid), "-", color=line.get_color())
                if target:
                    ax.plot([target / unit], res.predict(np.array([float(target)])), "*", ms=12,
                            color=line.get_color(), label=f"architecture {a}: estimate at C_T")
        if target:
            ax.axvline(target / unit, color="0.3", ls="--", lw=1.0,
                       label=f"target C_T = {target / 1e6:g} MFLOPs")
        ax.set_xscale("log")
        ax.set_xlabel("MFLOPs" if unit == 1e6 else f"FLOPs / {unit:g}")
        ax.set_ylabel("reward")
        ax.set_title(f"{result.best} fitted to all K supernets")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        fig.tight_layout()
        paths["curves"] = out / f"{stem}_curves.png"
        fig.savefig(paths["curves"], dpi=120)
    return paths
