"""What NNI's web UI shows of a trial: a short parameter summary and the objective as the only ranked number.

NNI 3.0's web UI (``ts/webui`` of microsoft/nni 3.0) decides what a user sees
from two things a trial carries:

* **Parameters.** When a trial's parameters hold a ``mutation_summary`` dict
  (the key NNI's own NAS uses, ``RETIARIIPARAMETERS`` in its ``const.ts``), the
  trial table's parameter columns, the *Hyper-parameter* tab's axes and the
  *Parameters* panel of an expanded row show that dict alone; the whole
  parameters stay behind the panel's *Original parameters* button. The bridge
  tuner's parameters (``task``, ``sample``, ``args``, ``settings`` ...) are nested
  dicts that the UI would show as ``[object Object]`` on ~35 axes, so every trial
  also gets ``mutation_summary = {"kind": <task>, <a few scalar arguments>}``
  (:func:`parameter_summary`); the trial entry point reads only the other keys.
* **The final metric's ``default``.** The overview's *Top trials* and best
  metric, and the *Default metric* chart, rank the trials whose ``default`` is a
  finite number. So a trial whose number is not the search's objective
  (a supernet's probe reward, an FSP distance, the final network's PGD
  accuracy) reports ``default`` as a short text naming what it is and what it
  reached (``"supernet c16 · 0.412"``, ``"final · clean 0.953 · pgd20 0.712"``),
  which the trial table's *Default metric* column shows, and its number under
  ``value`` (:func:`for_nni`); every other key stays a metric column.
  :func:`restore` turns that back into the dict the task returned
  (``default`` = the number), which is what the bridge tuner, ``trials.jsonl``
  and ``nni-robust run`` see: only NNI's web UI and database hold the text.

Which tasks are not the objective: a task function may say so with a
``trial_kind`` attribute (``fn.trial_kind = "screening"``); otherwise ``final``
is ``"final"``, a task whose name contains ``supernet`` is ``"supernet"``, and
every other task is ``"search"`` (its ``default`` is the search's objective:
an estimated reward, a fine-tuned accuracy, a search trial's validation reward).
A trial whose arguments hold ``provisional: true`` is ``"provisional"``: its
number is the objective measured before the search knew how to measure it
(MSRobNet's random stage estimates under a stand-in extrapolation family before
the family selection picks one, and re-reads them afterwards), so NNI does not
rank it against the objective's trials either; the search's own export
(``best_architecture.json``) ranks every trial under the final definition.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

__all__ = ["SUMMARY_KEY", "VALUE_KEY", "OBJECTIVE", "PROVISIONAL", "task_kind", "parameter_summary", "for_nni",
           "restore"]

#: The parameter key NNI's web UI shows instead of the parameters (its ``RETIARIIPARAMETERS``).
SUMMARY_KEY = "mutation_summary"
#: Where :func:`for_nni` keeps the number of a ``default`` it replaced by a text.
VALUE_KEY = "value"
#: The kind of the trials whose ``default`` is the search's objective.
OBJECTIVE = "search"
#: The kind of a trial whose objective was measured provisionally (its arguments hold ``provisional: true``).
PROVISIONAL = "provisional"

_MAX_ARGS = 5
_PATH_KEYS = ("_dir", "_file", "_path", "dir", "file", "path", "root")


def task_kind(task: str, fn: Callable[..., Any] | None = None, args: Mapping[str, Any] | None = None) -> str:
    """``"search"`` (:data:`OBJECTIVE`) for a task whose ``default`` is the search's objective, else what the
    task is (``"final"``, ``"supernet"``, the task function's ``trial_kind``, or :data:`PROVISIONAL` when
    the trial's ``args`` say ``provisional: true``)."""
    if isinstance(args, Mapping) and args.get("provisional") is True:
        return PROVISIONAL
    kind = getattr(fn, "trial_kind", None) if fn is not None else None
    if isinstance(kind, str) and kind:
        return kind
    if task == "final":
        return "final"
    if "supernet" in task:
        return "supernet"
    return OBJECTIVE


def _shown(key: str, value: Any) -> bool:
    if value is None or isinstance(value, (dict, list, tuple)) or key.endswith(_PATH_KEYS):
        return False
    if isinstance(value, str):
        return len(value) <= 32 and "/" not in value and "\\" not in value and not value.lstrip().startswith(("{", "["))
    return isinstance(value, (bool, int, float))


def parameter_summary(task: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The flat dict NNI's web UI shows as a trial's parameters: ``kind`` (the task) and up to five of its
    scalar arguments (numbers, flags, short names; no paths, lists or dicts)."""
    out: dict[str, Any] = {"kind": task}
    for key, value in (args or {}).items():
        if len(out) > _MAX_ARGS:
            break
        if key != "kind" and _shown(str(key), value):
            out[str(key)] = value
    return out


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _fmt(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.4g}"


def _label(task: str, kind: str, final: Mapping[str, Any], value: float | None) -> str:
    if kind == "final":
        parts = ["final"]
        if "acc_clean" in final:
            parts.append(f"clean {_fmt(_num(final['acc_clean']))}")
        same = [k for k, v in final.items() if k.startswith("acc_") and k != "acc_clean" and _num(v) == value]
        parts.append(f"{same[0][4:] if same else 'default'} {_fmt(value)}")
        return " · ".join(parts)
    if kind == PROVISIONAL:
        return f"{task} · {_fmt(value)} (provisional)"
    width = _num(final.get("width"))
    name = f"{task} c{int(width)}" if width is not None and width.is_integer() else task
    return f"{name} · {_fmt(value)}"


def for_nni(final: Mapping[str, Any], *, task: str, kind: str | None = None) -> dict[str, Any]:
    """The final result as reported to NNI: unchanged for the objective's trials; for the others ``default``
    becomes a text (kind and key numbers) and its number moves to :data:`VALUE_KEY`.

    A result that already has a :data:`VALUE_KEY` key, or no ``default``, is reported unchanged.
    """
    final = dict(final)
    kind = kind or task_kind(task)
    if kind == OBJECTIVE or "default" not in final or VALUE_KEY in final or isinstance(final["default"], str):
        return final
    value = _num(final["default"])
    return {**final, "default": _label(task, kind, final, value), VALUE_KEY: final["default"]}


def restore(value: Any) -> Any:
    """Undo :func:`for_nni`: ``default`` is the number again (anything else is returned unchanged)."""
    if isinstance(value, Mapping) and isinstance(value.get("default"), str) and VALUE_KEY in value:
        out = dict(value)
        out["default"] = out.pop(VALUE_KEY)
        return out
    return value
