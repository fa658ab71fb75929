"""A tabular robustness benchmark: every architecture of a space measured once, read from a folder.

Jung, Lukasik and Keuper, "Neural Architecture Design and Robustness: A
Dataset" (ICLR 2023), Sec. 3: all 6,466 non-isomorphic cells of the
NAS-Bench-201 space trained once (normally) and evaluated on the test set,
clean and under FGSM and PGD (L-inf, eps from 0.1/255 to 8/255; AutoAttack
parts listed in ``meta.json`` too). The files are the user's: this module
reads the dataset's own layout from a folder the user gives and ships none
of it.

Layout (``root``)::

    data/meta.json                      {"ids": {uid: {"nb201-string": str, "isomorph": uid}},
                                         "epsilons": {attack: [eps in 1/255 units, ...]}}
    <dataset>/clean_accuracy.json       {<dataset>: {"clean": {"accuracy": {uid: acc}}}}
    <dataset>/<attack>_accuracy.json    {<dataset>: {<attack>: {"accuracy": {uid: [acc per eps]}}}}

``isomorph`` names the uid whose measurements a string shares (its class
representative, which maps to itself); accuracy files list the
representatives. Attacks are keyed like ``pgd@Linf``; an attack of
``meta.epsilons`` without a file is listed in
:attr:`RobustnessTable.missing_attacks` and usable only once its file exists.

Core knows no search space: the table maps the dataset's strings to uids
through ``meta.json`` and, for strings it does not list, through an optional
``canonicalize`` callback (a space's isomorphism key, e.g.
:func:`nni_robust.spaces.nb201.canonical_string`).

Objectives (:class:`Objective`): ``"clean"``, an attack at an eps in 1/255
units (``"pgd@1.0"``, ``"fgsm@0.5"``; adversarial accuracy), or the
project's reward ``(1 - lam) clean + lam adv`` (:func:`nni_robust.reward.robust_reward`),
written ``"reward(pgd@1.0, lam=0.5)"`` or ``{"adv": "pgd@1.0", "lam": 0.5}``.
Every value is a numpy array over the table's rows (one per string, in
uid order), so 15,625 lookups are one fancy-indexing step.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from .errors import ArchitectureError, ConfigError, DatasetNotFoundError
from .reward import robust_reward

__all__ = [
    "Objective",
    "RobustnessTable",
    "IsomorphismAgreement",
    "load_robustness_table",
    "META_FILE",
    "STRING_KEY",
    "NORM",
]

logger = logging.getLogger(__name__)

#: ``meta.json``'s place under the root.
META_FILE = "data/meta.json"
#: The key of a uid's architecture string in ``meta.json``.
STRING_KEY = "nb201-string"
#: The norm suffix of the dataset's attack keys (``pgd@Linf``).
NORM = "Linf"
#: Default ``lam`` of a reward objective (MSRobNet Sec. 5.1, as :func:`robust_reward`).
DEFAULT_LAM = 0.5
_POPULATIONS = ("unique", "strings")
_ADV_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_\-]*)\s*@\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_REWARD_RE = re.compile(r"^\s*reward\s*\(\s*([^,()]+?)\s*(?:,\s*lam\s*=\s*([^,()]+?)\s*)?\)\s*$")


# --------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """What a table scores: clean accuracy, adversarial accuracy, or the robust reward.

    Args:
        attack: Short attack name (``"pgd"``, ``"fgsm"``; the dataset's key
            without ``@Linf``), or ``None`` for clean accuracy.
        eps: The attack's eps in 1/255 units (``None`` for clean).
        lam: Weight of the adversarial accuracy, ``(1 - lam) clean + lam adv``;
            1 = adversarial accuracy alone. Ignored for clean.

    Use :meth:`parse` for the text forms and :meth:`RobustnessTable.objective`
    to check one against a table's attacks and eps.

    Raises:
        ConfigError: eps given without attack or vice versa, eps not a
            positive number, lam outside ``[0, 1]``.
    """

    attack: str | None = None
    eps: float | None = None
    lam: float = 1.0

    def __post_init__(self) -> None:
        if (self.attack is None) != (self.eps is None):
            raise ConfigError(f"Objective needs both attack and eps (or neither, for clean accuracy), but got "
                              f"attack={self.attack!r}, eps={self.eps!r}.")
        if self.eps is not None:
            if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps) \
                    or self.eps <= 0:
                raise ConfigError(f"Objective eps must be a positive number in 1/255 units, but got {self.eps!r}.")
            object.__setattr__(self, "eps", float(self.eps))
        robust_reward(0.0, 0.0, self.lam)  # validates lam
        object.__setattr__(self, "lam", float(self.lam))
        if self.attack is None:
            object.__setattr__(self, "lam", 0.0)

    @property
    def is_clean(self) -> bool:
        """Whether only clean accuracy counts."""
        return self.attack is None or self.lam == 0.0

    def __str__(self) -> str:
        if self.attack is None:
            return "clean"
        adv = f"{self.attack}@{self.eps:g}"
        return adv if self.lam == 1.0 else f"reward({adv}, lam={self.lam:g})"

    @classmethod
    def parse(cls, spec: "Objective | str | Mapping[str, Any]") -> "Objective":
        """Read ``"clean"``, ``"pgd@1.0"``, ``"reward(pgd@1.0, lam=0.5)"`` (lam defaults to
        0.5), ``{"adv": "pgd@1.0", "lam": 0.5}`` or an :class:`Objective`.

        Raises:
            ConfigError: any other form, naming what is valid.
        """
        valid = "'clean', '<attack>@<eps in 1/255>' (e.g. 'pgd@1.0'), 'reward(pgd@1.0, lam=0.5)' or " \
                "{'adv': 'pgd@1.0', 'lam': 0.5}"
        if isinstance(spec, Objective):
            return spec
        if isinstance(spec, Mapping):
            extra = [k for k in spec if k not in ("adv", "lam")]
            if extra or "adv" not in spec:
                raise ConfigError(f"An objective mapping needs key 'adv' and optionally 'lam', but got "
                                  f"{dict(spec)!r}; valid forms: {valid}.")
            attack, eps = _parse_adv(spec["adv"], valid)
            return cls(attack, eps, spec.get("lam", DEFAULT_LAM))
        if not isinstance(spec, str):
            raise ConfigError(f"Cannot read an objective from {spec!r}; valid forms: {valid}.")
        if spec.strip().lower() == "clean":
            return cls()
        m = _REWARD_RE.match(spec)
        if m:
            attack, eps = _parse_adv(m.group(1), valid)
            lam: Any = DEFAULT_LAM
            if m.group(2) is not None:
                try:
                    lam = float(m.group(2))
                except ValueError:
                    raise ConfigError(f"Objective {spec!r}: lam must be a number in [0, 1], but got "
                                      f"{m.group(2)!r}.") from None
            return cls(attack, eps, lam)
        attack, eps = _parse_adv(spec, valid)
        return cls(attack, eps, 1.0)


def _parse_adv(text: Any, valid: str) -> tuple[str, float]:
    m = _ADV_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"Cannot read the objective {text!r}; valid forms: {valid}.")
    return m.group(1), float(m.group(2))


# --------------------------------------------------------------------------- isomorphism agreement


@dataclass(frozen=True)
class IsomorphismAgreement:
    """How a canonical form's classes compare with the table's ``isomorph`` grouping.

    Attributes:
        strings: Strings compared.
        table_classes: Classes of the table (distinct ``isomorph`` uids).
        key_classes: Classes of the canonical form.
        split_table_classes: Table classes the canonical form splits.
        merged_key_classes: Canonical classes that hold several table classes.
        strings_disagreeing: Strings in a split table class or a merged canonical class.
    """

    strings: int
    table_classes: int
    key_classes: int
    split_table_classes: int
    merged_key_classes: int
    strings_disagreeing: int

    @property
    def exact(self) -> bool:
        """Whether both partitions are identical."""
        return self.split_table_classes == 0 and self.merged_key_classes == 0


# --------------------------------------------------------------------------- the table


class RobustnessTable:
    """Accuracies of every string of a space, read from the dataset's layout.

    Build with :func:`load_robustness_table`. Rows are the uids of
    ``meta.json`` in increasing order (row = uid for the real data, whose
    uids are ``0 .. 15624``); every row carries its representative's
    measurements.

    Attributes:
        root: The folder read.
        dataset: The dataset part (``"cifar10"``).
        uids: ``int64 (n,)`` the uid of each row.
        strings: The architecture string of each row.
        rep_rows: ``int64 (n,)`` the row of each row's representative (``isomorph``).
        epsilons: ``{attack key: eps tuple}`` of the attacks with a file
            (``"pgd@Linf": (0.1, 0.5, ...)``).
        missing_attacks: Attack keys ``meta.json`` lists without a file.
        clean: ``float64 (n,)`` clean accuracy of each row.
        adversarial: ``{attack key: float64 (n, len(eps))}``.
        load_seconds: Wall time :func:`load_robustness_table` took.
    """

    def __init__(self, *, root: Path, dataset: str, uids: np.ndarray, strings: Sequence[str], rep_rows: np.ndarray,
                 clean: np.ndarray, adversarial: Mapping[str, np.ndarray], epsilons: Mapping[str, Sequence[float]],
                 missing_attacks: Sequence[str] = (),
                 canonicalize: Callable[[str], Hashable] | None = None) -> None:
        self.root, self.dataset = Path(root), dataset
        self.uids = np.asarray(uids, dtype=np.int64)
        self.strings = tuple(strings)
        self.rep_rows = np.asarray(rep_rows, dtype=np.int64)
        self.clean = np.asarray(clean, dtype=np.float64)
        self.adversarial = {k: np.asarray(v, dtype=np.float64) for k, v in adversarial.items()}
        self.epsilons = {k: tuple(float(e) for e in v) for k, v in epsilons.items()}
        self.missing_attacks = tuple(missing_attacks)
        self.canonicalize = canonicalize
        self.load_seconds = 0.0
        self._row_of_string = {s: r for r, s in enumerate(self.strings)}
        self._row_of_uid = {int(u): r for r, u in enumerate(self.uids)}
        self._unique_rows = np.flatnonzero(self.rep_rows == np.arange(len(self.strings)))
        self._canon_rows: dict[Hashable, int] | None = None
        self._values: dict[Objective, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.strings)

    def __repr__(self) -> str:
        return (f"RobustnessTable(root={str(self.root)!r}, dataset={self.dataset!r}, strings={len(self)}, "
                f"classes={self.num_classes}, attacks={sorted(self.epsilons)})")

    @property
    def num_classes(self) -> int:
        """Number of isomorphism classes (distinct measured architectures)."""
        return len(self._unique_rows)

    @property
    def unique_rows(self) -> np.ndarray:
        """The rows of the class representatives."""
        return self._unique_rows

    @property
    def attacks(self) -> tuple[str, ...]:
        """Short names of the attacks with a file (``"fgsm"``, ``"pgd"``)."""
        return tuple(sorted(_short(k) for k in self.epsilons))

    # ---- objectives
    def objective(self, spec: "Objective | str | Mapping[str, Any]") -> Objective:
        """Parse ``spec`` (see :meth:`Objective.parse`) and check it against this table.

        Raises:
            ConfigError: an attack the table lacks (naming those it has, and
                its file when ``meta.json`` lists the attack), or an eps it
                was not measured at (listing the valid ones).
        """
        obj = Objective.parse(spec)
        if obj.attack is None:
            return obj
        key = f"{obj.attack}@{NORM}"
        if key not in self.epsilons:
            if key in self.missing_attacks:
                raise ConfigError(f"Objective {str(obj)!r}: meta.json lists attack {key!r}, but its file "
                                  f"{self._attack_file(key)} does not exist; attacks with files: "
                                  f"{list(self.attacks)}.")
            raise ConfigError(f"Objective {str(obj)!r}: unknown attack {obj.attack!r}; attacks in this table: "
                              f"{list(self.attacks)}.")
        eps = self.epsilons[key]
        if not any(math.isclose(obj.eps, e, rel_tol=1e-9, abs_tol=1e-12) for e in eps):
            raise ConfigError(f"Objective {str(obj)!r}: {obj.attack} was not measured at eps {obj.eps:g}/255; "
                              f"valid eps (1/255 units): {[f'{e:g}' for e in eps]}.")
        return obj

    def values(self, objective: "Objective | str | Mapping[str, Any]") -> np.ndarray:
        """The objective of every row, ``float64 (n,)`` (read-only, cached).

        Raises:
            ConfigError: see :meth:`objective`.
        """
        obj = self.objective(objective)
        cached = self._values.get(obj)
        if cached is not None:
            return cached
        if obj.attack is None:
            out = self.clean.copy()
        else:
            key = f"{obj.attack}@{NORM}"
            col = next(k for k, e in enumerate(self.epsilons[key]) if math.isclose(obj.eps, e, rel_tol=1e-9,
                                                                                      abs_tol=1e-12))
            adv = self.adversarial[key][:, col]
            out = adv.copy() if obj.lam == 1.0 else robust_reward(self.clean, adv, obj.lam)
        out.setflags(write=False)
        self._values[obj] = out
        return out

    # ---- lookups
    def row(self, string: str) -> int:
        """The row of ``string``; a string ``meta.json`` does not list goes to its class's
        representative through ``canonicalize``.

        Raises:
            ArchitectureError: an unknown string (and no class for it).
        """
        r = self._row_of_string.get(string)
        if r is not None:
            return r
        if self.canonicalize is not None:
            if self._canon_rows is None:
                self._canon_rows = {}
                for s, rep in zip(self.strings, self.rep_rows.tolist()):
                    self._canon_rows.setdefault(self.canonicalize(s), rep)
            r = self._canon_rows.get(self.canonicalize(string))
            if r is not None:
                return r
            raise ArchitectureError(f"{string!r} is not in the table and no listed string is isomorphic to it "
                                    f"({len(self)} strings in {self.root / META_FILE}).")
        raise ArchitectureError(f"{string!r} is not in the table ({len(self)} strings in {self.root / META_FILE}; "
                                f"load with canonicalize= to answer unlisted strings by isomorphism).")

    def rows(self, strings: Iterable[str]) -> np.ndarray:
        """:meth:`row` of each string, ``int64``."""
        table = self._row_of_string
        return np.fromiter((table[s] if s in table else self.row(s) for s in strings), dtype=np.int64)

    def row_of_uid(self, uid: "int | str") -> int:
        """The row of a ``meta.json`` uid.

        Raises:
            ArchitectureError: an unknown uid.
        """
        try:
            return self._row_of_uid[int(uid)]
        except (KeyError, ValueError, TypeError):
            raise ArchitectureError(f"uid {uid!r} is not in {self.root / META_FILE}.") from None

    def uid(self, string: str) -> int:
        """The uid of the representative (``isomorph``) whose measurements ``string`` shares."""
        return int(self.uids[self.rep_rows[self.row(string)]])

    def lookup(self, strings: "str | Iterable[str]", objective: "Objective | str | Mapping[str, Any]") -> Any:
        """The objective of one string (a float) or of many (``float64`` array).

        Raises:
            ArchitectureError: an unknown string.
            ConfigError: a bad objective.
        """
        values = self.values(objective)
        if isinstance(strings, str):
            return float(values[self.row(strings)])
        return values[self.rows(strings)]

    # ---- statistics
    def _population(self, over: str) -> np.ndarray:
        if over == "unique":
            return self._unique_rows
        if over == "strings":
            return np.arange(len(self))
        raise ConfigError(f"over must be one of {list(_POPULATIONS)}, but got {over!r}.")

    def optimum(self, objective: "Objective | str | Mapping[str, Any]") -> tuple[float, int, str]:
        """``(best value, uid, string)`` of the objective (the representative's string; ties
        go to the smallest uid)."""
        values = self.values(objective)
        rows = self._unique_rows
        r = int(rows[int(np.argmax(values[rows]))])
        return float(values[r]), int(self.uids[r]), self.strings[r]

    def quantile(self, objective: "Objective | str | Mapping[str, Any]", q: "float | Sequence[float]", *,
                 over: str = "unique") -> Any:
        """Quantile(s) ``q`` of the objective (numpy's linear interpolation).

        Args:
            objective: The objective.
            q: A quantile in ``[0, 1]`` or several.
            over: ``"unique"`` (one value per measured architecture, as the
                dataset's summary statistics) or ``"strings"`` (one per
                string: what uniform sampling of strings sees).

        Raises:
            ConfigError: bad ``q`` or ``over``.
        """
        qs = np.asarray(q, dtype=np.float64)
        if qs.size == 0 or not np.all((qs >= 0) & (qs <= 1)):
            raise ConfigError(f"q must be quantile(s) in [0, 1], but got {q!r}.")
        out = np.quantile(self.values(objective)[self._population(over)], qs)
        return float(out) if out.ndim == 0 else out

    def top_threshold(self, objective: "Objective | str | Mapping[str, Any]", fraction: float = 0.01, *,
                      over: str = "unique") -> float:
        """The value a result must reach to be in the top ``fraction`` (1%: the 0.99
        quantile; PGD at 1/255 on CIFAR-10: 0.546 over unique architectures).

        Raises:
            ConfigError: ``fraction`` outside ``(0, 1]`` or bad ``over``.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ConfigError(f"fraction must lie in (0, 1], but got {fraction!r}.")
        return self.quantile(objective, 1.0 - fraction, over=over)

    def agreement(self, key: Callable[[str], Hashable]) -> IsomorphismAgreement:
        """Compare the classes of a canonical form ``key`` with the table's ``isomorph`` classes."""
        keys = [key(s) for s in self.strings]
        key_ids: dict[Hashable, int] = {}
        codes = np.fromiter((key_ids.setdefault(k, len(key_ids)) for k in keys), dtype=np.int64, count=len(keys))
        pairs = np.unique(np.stack([self.rep_rows, codes], axis=1), axis=0)
        reps_per_key = np.bincount(pairs[:, 1], minlength=len(key_ids))
        reps, keys_per_rep = np.unique(pairs[:, 0], return_counts=True)
        split_reps = reps[keys_per_rep > 1]
        merged_keys = np.flatnonzero(reps_per_key > 1)
        bad = np.isin(self.rep_rows, split_reps) | np.isin(codes, merged_keys)
        return IsomorphismAgreement(strings=len(keys), table_classes=self.num_classes, key_classes=len(key_ids),
                                    split_table_classes=len(split_reps), merged_key_classes=len(merged_keys),
                                    strings_disagreeing=int(bad.sum()))

    def _attack_file(self, key: str) -> Path:
        return self.root / self.dataset / f"{key}_accuracy.json"


def _short(key: str) -> str:
    return key[: -len(NORM) - 1] if key.endswith(f"@{NORM}") else key


# --------------------------------------------------------------------------- loading


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist: expected {what}.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): expected {what}.") from None


def _uid_int(uid: Any, path: Path, where: str) -> int:
    try:
        value = int(uid)
    except (TypeError, ValueError):
        value = -1
    if value < 0 or str(value) != str(uid):
        raise ConfigError(f"{path}: {where} has uid {uid!r}; uids are non-negative integers written as strings.")
    return value


def _uid_array(keys: Sequence[Any], path: Path, where: str) -> np.ndarray:
    """``int64`` uids of ``keys`` (non-negative decimal strings), or a ConfigError naming the first bad one."""
    try:
        out = np.array([int(k) for k in keys], dtype=np.int64)
        if (out.size and out.min() < 0) or [str(u) for u in out.tolist()] != [str(k) for k in keys]:
            raise ValueError
        return out
    except (TypeError, ValueError, OverflowError):
        for k in keys:
            _uid_int(k, path, where)
        raise ConfigError(f"{path}: {where} has malformed uids.") from None


def _rows_of(uids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``wanted`` in the sorted ``uids`` and a mask of those not found."""
    rows = np.searchsorted(uids, wanted)
    unknown = (rows >= len(uids)) | (uids[np.minimum(rows, len(uids) - 1)] != wanted)
    return rows, unknown


def _accuracy_map(path: Path, dataset: str, attack: str, what: str) -> Mapping[str, Any]:
    data = _read_json(path, what)
    try:
        acc = data[dataset][attack]["accuracy"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: expected {what}, but the key path "
                          f"[{dataset!r}][{attack!r}]['accuracy'] is missing.") from None
    if not isinstance(acc, Mapping) or not acc:
        raise ConfigError(f"{path}: [{dataset!r}][{attack!r}]['accuracy'] must be a non-empty object {{uid: ...}}, "
                          f"but got {acc!r:.80}.")
    return acc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fill(path: Path, acc: Mapping[str, Any], uids: np.ndarray, reps: np.ndarray, width: int | None,
          what: str) -> np.ndarray:
    """Accuracies of a file as an array over rows (the representatives' values, broadcast)."""
    keys = list(acc)
    rows, unknown = _rows_of(uids, _uid_array(keys, path, "the accuracy object"))
    if unknown.any():
        raise ConfigError(f"{path}: uid {keys[int(np.argmax(unknown))]!r} is not in meta.json's ids.")
    shape = (len(keys),) if width is None else (len(keys), width)
    try:
        values = np.array(list(acc.values()), dtype=np.float64)
        if values.shape != shape:
            raise ValueError
    except (TypeError, ValueError):
        values = None
    if values is None or np.any(~np.isfinite(values) | (values < 0) | (values > 1)):
        for uid, value in acc.items():  # find the culprit
            ok = _is_number(value) if width is None else (
                isinstance(value, list) and len(value) == width and all(_is_number(v) for v in value))
            if not ok or not np.all((np.asarray(value, dtype=np.float64) >= 0)
                                    & (np.asarray(value, dtype=np.float64) <= 1)):
                raise ConfigError(f"{path}: uid {uid!r} has {value!r}; expected {what}.")
        raise ConfigError(f"{path}: the accuracies do not form {shape} numbers; expected {what}.")
    out = np.full((len(uids),) if width is None else (len(uids), width), np.nan)
    out[rows] = values
    rep_unique = np.unique(reps)
    missing = rep_unique[np.isnan(out[rep_unique]).reshape(len(rep_unique), -1).any(axis=1)]
    if len(missing):
        raise ConfigError(f"{path}: no accuracy for {len(missing)} representative uid(s) of meta.json, e.g. "
                          f"{[str(u) for u in uids[missing[:5]].tolist()]}; expected {what} for every "
                          f"'isomorph' uid.")
    return out[reps]


def load_robustness_table(root: "str | Path", dataset: str = "cifar10", *,
                          canonicalize: Callable[[str], Hashable] | None = None) -> RobustnessTable:
    """Read the robustness dataset's layout (see the module docstring) from ``root``.

    Args:
        root: The folder holding ``data/meta.json`` and ``<dataset>/``.
        dataset: The dataset part (``"cifar10"``).
        canonicalize: A space's isomorphism key, used to answer strings
            ``meta.json`` does not list (e.g.
            :func:`nni_robust.spaces.nb201.canonical_string`); optional.

    Raises:
        DatasetNotFoundError: the folder, ``meta.json``, the dataset folder
            or its ``clean_accuracy.json`` is missing (naming the path and
            what was expected).
        ConfigError: a malformed file (naming it, the bad part and the
            expected structure).
    """
    start = time.perf_counter()
    if not isinstance(root, (str, Path)):
        raise ConfigError(f"root must be a folder path, but got {root!r}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"Robustness dataset folder {root} does not exist: expected a folder holding "
                                   f"{META_FILE} and <dataset>/clean_accuracy.json (the layout of Jung et al.'s "
                                   f"robustness-dataset).")
    if not isinstance(dataset, str) or not dataset or "/" in dataset or dataset.startswith("."):
        raise ConfigError(f"dataset must be a folder name like 'cifar10', but got {dataset!r}.")
    meta_path = root / META_FILE
    meta_what = '{"ids": {uid: {"%s": str, "isomorph": uid}}, "epsilons": {attack: [eps, ...]}}' % STRING_KEY
    meta = _read_json(meta_path, meta_what)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("ids"), Mapping) or not meta["ids"]:
        raise ConfigError(f"{meta_path}: expected {meta_what}, but 'ids' is missing, empty or not an object.")
    epsilons = meta.get("epsilons", {})
    if not isinstance(epsilons, Mapping) or not all(
            isinstance(v, list) and v and all(_is_number(e) and e > 0 for e in v) for v in epsilons.values()):
        raise ConfigError(f"{meta_path}: 'epsilons' must be an object {{attack: [eps, ...]}} with non-empty lists "
                          f"of positive numbers, but got {epsilons!r:.200}.")
    ids = meta["ids"]
    for uid, entry in ids.items():
        if type(entry) is not dict or type(entry.get(STRING_KEY)) is not str or "isomorph" not in entry:
            raise ConfigError(f"{meta_path}: ids[{uid!r}] must be {{{STRING_KEY!r}: str, 'isomorph': uid}}, but got "
                              f"{entry!r:.200}.")
    key_uids = _uid_array(list(ids), meta_path, "'ids'")
    iso_uids = _uid_array([e["isomorph"] for e in ids.values()], meta_path, "an 'isomorph' field")
    order = np.argsort(key_uids, kind="stable")
    uids, isos = key_uids[order], iso_uids[order]
    values = list(ids.values())
    strings = [values[i][STRING_KEY] for i in order.tolist()]
    if len(set(strings)) != len(strings):
        seen: dict[str, int] = {}
        for u, st in zip(uids.tolist(), strings):
            if st in seen:
                raise ConfigError(f"{meta_path}: uids '{seen[st]}' and '{u}' have the same string {st!r}.")
            seen[st] = u
    rep_rows, unknown = _rows_of(uids, isos)
    if unknown.any():
        r = int(np.argmax(unknown))
        raise ConfigError(f"{meta_path}: ids['{uids[r]}']['isomorph'] = '{isos[r]}' is not a uid of 'ids'.")
    not_self = np.flatnonzero(rep_rows[rep_rows] != rep_rows)
    if len(not_self):
        r = int(not_self[0])
        raise ConfigError(f"{meta_path}: ids['{uids[r]}'] names isomorph '{uids[rep_rows[r]]}', whose own isomorph "
                          f"is '{uids[rep_rows[rep_rows[r]]]}'; a representative must name itself.")

    data_dir = root / dataset
    if not data_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "clean_accuracy.json").is_file())
        raise DatasetNotFoundError(f"Dataset folder {data_dir} does not exist: expected <root>/{dataset}/"
                                   f"clean_accuracy.json; dataset folders found: {found}.")
    clean_path = data_dir / "clean_accuracy.json"
    clean_what = f'{{"{dataset}": {{"clean": {{"accuracy": {{uid: accuracy}}}}}}}}'
    clean = _fill(clean_path, _accuracy_map(clean_path, dataset, "clean", clean_what), uids, rep_rows, None,
                  "a fraction in [0, 1]")
    adversarial, eps_found, missing = {}, {}, []
    for key, eps in epsilons.items():
        path = data_dir / f"{key}_accuracy.json"
        if not path.is_file():
            missing.append(key)
            continue
        what = f'{{"{dataset}": {{"{key}": {{"accuracy": {{uid: [{len(eps)} accuracies, one per eps {eps}]}}}}}}}}'
        adversarial[key] = _fill(path, _accuracy_map(path, dataset, key, what), uids, rep_rows, len(eps),
                                 f"a list of {len(eps)} fractions in [0, 1] (one per eps {eps})")
        eps_found[key] = eps
    table = RobustnessTable(root=root, dataset=dataset, uids=uids, strings=strings, rep_rows=rep_rows, clean=clean,
                            adversarial=adversarial, epsilons=eps_found, missing_attacks=missing,
                            canonicalize=canonicalize)
    table.load_seconds = time.perf_counter() - start
    if missing:
        logger.info("%s lists attacks without files in %s: %s", meta_path, data_dir, missing)
    logger.info("Loaded %s in %.2f s", table, table.load_seconds)
    return table
