"""Which epoch's architecture a differentiable search exports (DSARA Sec. 4.3).

DSARA (``dsara.txt``, Sec. 4.3) uses its second, multi-objective stage only
to fine-tune the architecture: "Once the testing performance degrades
significantly, we will choose the neural architectures before the
performance degradation." The search derives an architecture after every
epoch (``search_dir/architectures.jsonl``, with that epoch's validation
accuracies); this module states the rule that picks one of them.

Rules (``select.rule``):

* ``"before_degradation"`` (DSARA's default) -- scan the watched epochs in
  order, keeping the best metric so far; the first epoch whose metric is
  more than ``tolerance`` below that best (or not finite) is the
  degradation, and the export is the watched epoch just before it. Without
  a degradation, the last epoch.
* ``"best"`` -- the watched epoch of the highest metric (the earliest on ties).
* ``"last"`` -- the last epoch (RNAS's default: its paper exports the end).

Watched epochs: with a second stage in the history (DSARA), the last epoch
of the first stage and every later one -- the paper's degradation is one of
the second stage, and the architecture at the end of the first stage is its
reference; otherwise the epochs that updated the architecture (after RNAS's
warm-up), or every epoch.

Choices where the paper is silent (each is a setting): the metric is the
per-epoch robust reward ``default = 0.5 * clean + 0.5 * adversarial``
validation accuracy of the supernet (the paper measures "testing
performance", which a search cannot see; it wants accuracy and robustness
both), and "significantly" is an absolute drop of ``tolerance = 0.02``
(two points of accuracy, above the noise of the per-epoch measurement on
its default 1,000 images for the differences of consecutive epochs).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni_robust.errors import ConfigError

__all__ = ["RULES", "METRICS", "METHOD_DEFAULTS", "SelectRule", "select_epoch", "read_architectures"]

RULES = ("before_degradation", "best", "last")
#: Per-epoch metrics of ``architectures.jsonl`` a rule can watch (higher is better).
METRICS = ("default", "val_adv_acc", "val_clean_acc")
#: The rule of each method when ``select`` is not given.
METHOD_DEFAULTS: dict[str, str] = {"dsara": "before_degradation", "rnas": "last"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class SelectRule:
    """The export rule (see the module docstring).

    Attributes:
        rule: ``"before_degradation"``, ``"best"`` or ``"last"``.
        metric: The per-epoch metric watched (:data:`METRICS`).
        tolerance: The drop below the best so far that counts as a degradation (``>= 0``).
    """

    rule: str = "before_degradation"
    metric: str = "default"
    tolerance: float = 0.02

    @classmethod
    def from_arg(cls, value: str | Mapping[str, Any] | None, *, method: str = "dsara",
                 key: str = "strategy_args.select") -> "SelectRule":
        """Build from a strategy argument: ``None`` (the method's default), a rule name, or a mapping
        ``{rule, metric, tolerance}``.

        Raises:
            ConfigError: naming the full key (``key`` and its sub-key), the bad value and what is valid.
        """
        if value is None:
            return cls(rule=METHOD_DEFAULTS.get(method, "last"))
        if isinstance(value, str):
            value = {"rule": value}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a rule name ({', '.join(RULES)}) or a mapping with 'rule', 'metric' "
                              f"and 'tolerance', but got {value!r}.")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{key} has unknown keys {unknown}; valid: ['metric', 'rule', 'tolerance'].")
        rule = value.get("rule", METHOD_DEFAULTS.get(method, "last"))
        if rule not in RULES:
            raise ConfigError(f"{key}.rule must be one of {list(RULES)}, but got {rule!r}.")
        metric = value.get("metric", "default")
        if metric not in METRICS:
            raise ConfigError(f"{key}.metric must be one of {list(METRICS)}, but got {metric!r}.")
        tol = value.get("tolerance", 0.02)
        if not _finite(tol) or tol < 0:
            raise ConfigError(f"{key}.tolerance must be a finite number >= 0 (an absolute drop of {metric}), "
                              f"but got {tol!r}.")
        return cls(rule=rule, metric=metric, tolerance=float(tol))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def select(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """:func:`select_epoch` with this rule."""
        return select_epoch(rows, rule=self.rule, metric=self.metric, tolerance=self.tolerance)


def _watched(rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], str]:
    """Indices of the watched rows and why (see the module docstring)."""
    stages = [r.get("stage") for r in rows]
    if any(s == 2 for s in stages):
        first = [i for i, s in enumerate(stages) if s == 1]
        start = first[-1] if first else 0
        return list(range(start, len(rows))), ("the end of stage 1 and stage 2" if first else "stage 2")
    updated = [i for i, r in enumerate(rows) if r.get("arch_updated") == 1]
    if updated and len(updated) < len(rows):
        return updated, "the epochs that updated the architecture"
    return list(range(len(rows))), "every epoch"


def select_epoch(rows: Sequence[Mapping[str, Any]], *, rule: str = "before_degradation", metric: str = "default",
                 tolerance: float = 0.02) -> dict[str, Any]:
    """Choose the epoch whose architecture to export.

    Args:
        rows: One dict per finished epoch, in order, with ``epoch`` (1-based),
            ``stage`` / ``arch_updated`` when known and the metric.
        rule, metric, tolerance: see :class:`SelectRule`.

    Returns:
        ``{"index"`` (of the chosen row), ``"epoch"``, ``"last_epoch"``,
        ``"rule"``, ``"metric"``, ``"tolerance"``, ``"watched"`` (first and
        last watched epoch), ``"value"`` (the chosen epoch's metric),
        ``"best_epoch"``, ``"best_value"``, ``"degraded_at"`` (the epoch of the
        degradation, or None), ``"fallback"`` (True when the rule could not be
        applied and the last epoch was taken) and ``"reason"`` (a sentence)}.

    Raises:
        ConfigError: no rows, or a bad rule / metric / tolerance.
    """
    if not rows:
        raise ConfigError("select_epoch needs the history of at least one epoch, but got none.")
    SelectRule.from_arg({"rule": rule, "metric": metric, "tolerance": tolerance}, key="select")
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    last = len(rows) - 1
    out: dict[str, Any] = {"rule": rule, "metric": metric, "tolerance": float(tolerance), "last_epoch": epochs[last],
                           "degraded_at": None, "fallback": False, "best_epoch": None, "best_value": None}

    def done(index: int, reason: str) -> dict[str, Any]:
        value = rows[index].get(metric)
        out.update(index=index, epoch=epochs[index], value=float(value) if _finite(value) else None, reason=reason)
        return out

    watched, why = _watched(rows)
    out["watched"] = [epochs[watched[0]], epochs[watched[-1]]]
    if rule == "last":
        return done(last, f"rule 'last': the last epoch ({epochs[last]}).")
    values = [rows[i].get(metric) for i in watched]
    finite = [(v, i) for v, i in zip(values, watched) if _finite(v)]
    if not finite:
        out["fallback"] = True
        return done(last, f"no epoch has a finite {metric!r} (per-epoch validation off: eval_images 0?); "
                          f"exported the last epoch ({epochs[last]}).")
    best_value = max(v for v, _ in finite)
    best_index = next(i for v, i in finite if v == best_value)
    out.update(best_epoch=epochs[best_index], best_value=float(best_value))
    span = f"epochs {epochs[watched[0]]}-{epochs[watched[-1]]} ({why})"
    if rule == "best":
        return done(best_index, f"rule 'best': the highest {metric} ({best_value:.4f}) of {span}.")
    running = -math.inf
    for pos, (i, v) in enumerate(zip(watched, values)):
        if pos > 0 and (not _finite(v) or v < running - tolerance):
            prev = watched[pos - 1]
            out["degraded_at"] = epochs[i]
            shown = f"{v:.4f}" if _finite(v) else repr(v)
            return done(prev, f"rule 'before_degradation': {metric} fell to {shown} in epoch {epochs[i]}, more than "
                              f"{tolerance:g} below the best so far ({running:.4f}) over {span}; exported the "
                              f"epoch before it ({epochs[prev]}).")
        if _finite(v):
            running = max(running, v)
    return done(last, f"rule 'before_degradation': {metric} never fell more than {tolerance:g} below its best "
                      f"so far over {span}; exported the last epoch ({epochs[last]}).")


def read_architectures(search_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of ``search_dir/architectures.jsonl`` (``epoch``, metrics, ``arch``); [] if absent."""
    path = Path(search_dir) / "architectures.jsonl"
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {n} is not JSON ({exc}); delete the file to export the last "
                              "architecture.") from exc
        if not isinstance(row, dict) or "arch" not in row:
            raise ConfigError(f"{path} line {n} has no 'arch': {str(row)[:200]}")
        rows.append(row)
    return rows
