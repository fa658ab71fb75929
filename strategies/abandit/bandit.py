"""The anti-bandit arm statistics of ABanditNAS, torch-free and resumable.

Chen, Zhang et al., "Anti-Bandit Neural Architecture Search for Model
Defense" (ECCV 2020; arXiv 2008.00698), Sec. 3 (the anti-bandit algorithm
and the anti-bandit search); a later extended text by the authors states the
same as Eqs. 4.8-4.14 and its complexity analysis.
Every edge of the search space is a multi-armed bandit whose arms are its
candidate operations. With ``m_k`` the running reward of arm ``k``, ``n_k``
the number of samples that used it and ``N`` the total number of samples:

* LCB_k = m_k - sqrt(2 ln N / n_k) drives the sampling, which prefers the
  arms with the *smaller* confidence (hence "anti"-bandit):
  ``p_k = exp(-LCB_k) / sum_j exp(-LCB_j)`` over the remaining arms of the
  edge; one arm is drawn on every edge, independently.
* The sampled architecture is trained (ABanditNAS: one epoch of FGSM
  adversarial training with random start) and its validation accuracy ``a``
  updates every arm it used: ``m_k <- (1 - lambda) m_k + lambda a``
  (``lambda = 0.7``, the paper's best value); ``n_k`` and ``N`` grow by one.
* After ``K T`` samples, on every edge the arm with the smallest
  UCB_k = m_k + sqrt(2 ln N / n_k) is abandoned; this repeats until one arm
  per edge remains.

Choices made here where the paper is silent or ambiguous (all stated again on
:class:`AntiBandit`):

* **Untried arms** (``n_k = 0``): the paper first gives every operation an
  initial performance ``m_{k,0}`` by sampling it once and assigning it the
  accuracy of the sampled network. This class reads that as an infinite
  exploration bonus: an untried arm's LCB is ``-inf`` (its UCB ``+inf``), so
  while an edge has untried arms it samples uniformly among them (the limit
  of ``softmax(-LCB)``), and an untried arm is never abandoned. With updates
  after every sample, the first ``K`` samples try every arm exactly once (a
  random order per edge). The first reward of an arm *sets* ``m_k = a``
  (``m_{k,0}``); later ones follow the ``lambda`` rule.
* **K in "every K T samples"**: the *current* number of remaining arms. The
  paper's complexity ``O(T sum_{k=2}^{K} k) = O(T K^2)`` counts ``k T``
  samples for the phase with ``k`` arms per edge, so the whole search takes
  ``T (K (K + 1) / 2 - 1)`` samples (9 operations: ``44 T``). When the edges
  have different numbers of arms (a generic categorical space), the phase
  length uses the largest remaining count and every edge with more than one
  arm loses one arm per phase. The warm-up samples count towards the first
  phase (``T >= 1``, so the phase is at least ``K`` samples long).
* **T** (``samples_per_arm``) is not stated in the paper; the default 3 is
  this project's choice (``132`` samples for 9 operations).
* **N** counts the rewards received (:meth:`AntiBandit.update`), not the
  samples drawn, so a resumed search sees exactly the statistics it saved.
* **Ties** (equal UCB) abandon the arm listed first in the edge's options;
  an edge with one remaining arm consumes no random number when sampled.
* **Stale samples**: a reward for a sample drawn before one of its arms was
  abandoned updates ``N`` and the sample's arms that remain, not the
  abandoned one.

Behaviour worth knowing (measured on synthetic additive bandits: the reward
is the mean over the edges of the sampled arms' means plus Gaussian noise,
every used arm receives it, as in ABanditNAS; noise sd 0.5, ``T = 3``
(2 edges: ``T = 5``), 200 seeds (60 edges: 40)):

* The exploration bonus has no unit, so **the scale of the reward matters**:
  with arm means spread evenly over 10 points (accuracies in percent) one
  edge of 9 arms keeps its best arm in 99% of the runs; with the means and
  noise divided by 100 (accuracies in [0, 1]) only 31% (chance: 11%),
  because the bonus (about 1) swamps the differences. Which one the paper
  used is not known: it says "the accuracy a"; DARTS's own code reports
  accuracies in percent, but the authors' released evaluation code (a
  pt.darts derivative) computes them as fractions in [0, 1]. The strategy
  passes ``reward_scale`` (default 100: percent) times the accuracy, the
  reading under which the method's confidence bounds can tell arms apart;
  ``reward_scale: 1`` gives the other reading.
* Because every used arm gets the same reward, the other edges' choices act
  as noise on each edge, and ``m`` (an exponential average with
  ``lambda = 0.7``) hardly averages it out: keeping the best arm on *every*
  edge works for 1-2 edges (99%, 98%: see the tests) but drops with more
  edges (3 edges of 3 arms: 69%; the ABanditNAS space's 60 edges of 9 arms:
  18% of the edges keep their best arm, chance 11%).

The class knows nothing of networks: ``edges`` maps a label to its list of
options, so it runs on the ABanditNAS space (``{"c0_e01": ops, ...}``, see
:func:`nni_robust.spaces.abandit.abandit_choices` with ``form="edge"``) and on
any space whose choices are categorical (for instance NAS-Bench-201's six
edges). Its state (:meth:`AntiBandit.state_dict`) is a JSON-able dict that
includes the random generator, so a search resumes exactly.
"""

from __future__ import annotations

import json
import logging
import math
import random
from typing import Any, Mapping, Sequence

from nni_robust.errors import ArchitectureError, CheckpointError, ConfigError

__all__ = ["AntiBandit", "total_samples", "STATE_VERSION"]

logger = logging.getLogger(__name__)

#: Version of the :meth:`AntiBandit.state_dict` layout.
STATE_VERSION = 1

_SCALARS = (str, int, float, bool, type(None))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def total_samples(edges: Mapping[str, Sequence[Any]], samples_per_arm: int = 3) -> int:
    """Samples (rewards) an :class:`AntiBandit` needs until one arm per edge remains.

    ``T * sum_{k=2}^{K} k`` with ``K`` the largest number of options of an edge
    (ABanditNAS's complexity ``O(T K^2)``); 0 when every edge has one option.
    """
    if not _is_int(samples_per_arm) or samples_per_arm < 1:
        raise ConfigError(f"samples_per_arm must be an int >= 1, but got {samples_per_arm!r}.")
    k_max = max((len(v) for v in edges.values()), default=1)
    return samples_per_arm * sum(range(2, k_max + 1))


class AntiBandit:
    """Per-edge anti-bandit arm statistics: LCB sampling, lambda-updates, UCB abandoning.

    Usage (sequential, as in the paper)::

        bandit = AntiBandit({"e0": ["a", "b", "c"], "e1": ["x", "y"]}, seed=0)
        while not bandit.done:
            choice = bandit.sample()          # {"e0": "b", "e1": "x"}
            bandit.update(choice, accuracy)   # may abandon one arm per edge
        bandit.result()                       # {"e0": ..., "e1": ...}

    See the module docstring for the formulas and for the choices made where
    the paper is silent (untried arms have an infinite bonus, ``K`` is the
    current number of remaining arms, ``N`` counts rewards).

    Args:
        edges: ``{label: options}``; options are distinct JSON scalars (str,
            int, float, bool or None), at least one per edge. The label order
            is the order of sampling (and of the random numbers drawn).
        samples_per_arm: ``T``: a phase with ``k`` remaining arms per edge
            lasts ``k T`` samples (paper: not stated; default 3, this
            project's choice).
        lam: ``lambda`` of ``m_k <- (1 - lambda) m_k + lambda a`` (paper: 0.7).
        seed: Seed of the sampling generator; ``None`` draws one (logged and
            kept in :attr:`seed`).

    Raises:
        ConfigError: bad ``edges``, ``samples_per_arm``, ``lam`` or ``seed``.
    """

    def __init__(self, edges: Mapping[str, Sequence[Any]], *, samples_per_arm: int = 3, lam: float = 0.7,
                 seed: int | None = None) -> None:
        if not isinstance(edges, Mapping) or not edges:
            raise ConfigError(f"edges must be a non-empty mapping label -> list of options, but got {edges!r}.")
        options: dict[str, tuple[Any, ...]] = {}
        for label, opts in edges.items():
            if not isinstance(label, str) or not label:
                raise ConfigError(f"edges: labels must be non-empty strings, but got {label!r}.")
            if isinstance(opts, (str, bytes)) or not isinstance(opts, Sequence) or not opts:
                raise ConfigError(f"edges[{label!r}] must be a non-empty list of options, but got {opts!r}.")
            for opt in opts:
                if not isinstance(opt, _SCALARS) or (isinstance(opt, float) and not math.isfinite(opt)):
                    raise ConfigError(f"edges[{label!r}]: options must be JSON scalars (str, int, finite float, "
                                      f"bool, None), but got {opt!r}.")
            if len(set(opts)) != len(opts) or len({(type(o), o) for o in opts}) != len(opts):
                raise ConfigError(f"edges[{label!r}]: options must be distinct, but got {list(opts)}.")
            options[label] = tuple(opts)
        if not _is_int(samples_per_arm) or samples_per_arm < 1:
            raise ConfigError(f"samples_per_arm must be an int >= 1 (T of ABanditNAS), but got {samples_per_arm!r}.")
        if not _is_real(lam) or not 0.0 < lam <= 1.0:
            raise ConfigError(f"lam must lie in (0, 1] (ABanditNAS: 0.7), but got {lam!r}.")
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 32)
            logger.info("AntiBandit: no seed given, drew seed=%d", seed)
        elif not _is_int(seed) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int or None, but got {seed!r}.")
        self.seed = int(seed)
        self.samples_per_arm = int(samples_per_arm)
        self.lam = float(lam)
        self._options = options
        self._index = {label: {opt: k for k, opt in enumerate(opts)} for label, opts in options.items()}
        self._remaining: dict[str, list[int]] = {label: list(range(len(opts))) for label, opts in options.items()}
        self._m: dict[str, list[float]] = {label: [0.0] * len(opts) for label, opts in options.items()}
        self._n: dict[str, list[int]] = {label: [0] * len(opts) for label, opts in options.items()}
        self._total = 0          # N: rewards received
        self._phase_count = 0    # rewards received in the current phase
        self._drawn = 0          # samples drawn
        self._history: list[dict[str, Any]] = []
        self._rng = random.Random(self.seed)

    # ------------------------------------------------------------------ read-only views
    @property
    def labels(self) -> tuple[str, ...]:
        """The edge labels, in sampling order."""
        return tuple(self._options)

    @property
    def edges(self) -> dict[str, tuple[Any, ...]]:
        """``{label: all options}`` (abandoned ones included)."""
        return dict(self._options)

    total = property(lambda self: self._total, doc="``N``: the number of rewards received (int).")
    drawn = property(lambda self: self._drawn, doc="The number of samples drawn by :meth:`sample` (int).")

    @property
    def done(self) -> bool:
        """Whether every edge has one arm left."""
        return all(len(r) == 1 for r in self._remaining.values())

    @property
    def max_remaining(self) -> int:
        """The largest number of remaining arms of an edge (``K`` of the current phase)."""
        return max(len(r) for r in self._remaining.values())

    @property
    def phase_length(self) -> int:
        """``K T``: rewards per phase (0 once done)."""
        return 0 if self.done else self.samples_per_arm * self.max_remaining

    @property
    def samples_until_abandon(self) -> int:
        """Rewards still needed before the next abandoning (0 once done)."""
        return 0 if self.done else self.phase_length - self._phase_count

    @property
    def samples_to_finish(self) -> int:
        """Rewards still needed until one arm per edge remains (with no stale samples)."""
        if self.done:
            return 0
        return self.samples_until_abandon + self.samples_per_arm * sum(range(2, self.max_remaining))

    @property
    def abandon_history(self) -> list[dict[str, Any]]:
        """One JSON-able record per abandoned arm, in order: ``step`` (``N`` at the time),
        ``label``, ``option``, ``index`` (in the edge's options), and the edge's
        ``remaining`` options before the abandoning with their ``ucb``, ``m`` and ``n``
        (``ucb`` ``None`` for an untried arm: ``+inf``)."""
        return [dict(h) for h in self._history]

    def index_of(self, label: str, option: Any) -> int:
        """The index of ``option`` among edge ``label``'s options (type-exact: ``1`` is not ``True``).

        Raises:
            ArchitectureError: ``option`` is not an option of that edge.
        """
        self._check_label(label)
        k = self._index[label].get(option) if isinstance(option, _SCALARS) else None
        opts = self._options[label]
        if k is None or type(opts[k]) is not type(option) and not (_is_real(option) and _is_real(opts[k])):
            raise ArchitectureError(f"{option!r} is not an option of edge {label!r}; options: {list(opts)}.")
        return k

    def abandon_order(self, label: str) -> list[Any]:
        """The options abandoned on edge ``label``, in order."""
        self._check_label(label)
        return [h["option"] for h in self._history if h["label"] == label]

    def remaining(self, label: str) -> tuple[Any, ...]:
        """The remaining options of edge ``label``, in the edge's option order."""
        self._check_label(label)
        return tuple(self._options[label][k] for k in self._remaining[label])

    def stats(self, label: str) -> dict[Any, dict[str, float | int | bool]]:
        """``{option: {"m", "n", "remaining"}}`` of every option of edge ``label``."""
        self._check_label(label)
        rem = set(self._remaining[label])
        return {opt: {"m": self._m[label][k], "n": self._n[label][k], "remaining": k in rem}
                for k, opt in enumerate(self._options[label])}

    # ------------------------------------------------------------------ confidence bounds
    def _bonus(self, n: int) -> float:
        if n == 0:
            return math.inf
        if self._total <= 1:
            return 0.0  # ln 1 = 0 (N >= n >= 1 here)
        return math.sqrt(2.0 * math.log(self._total) / n)

    def lcb(self, label: str) -> list[float]:
        """``m_k - sqrt(2 ln N / n_k)`` of the remaining arms of ``label`` (``-inf`` if untried)."""
        self._check_label(label)
        return [self._m[label][k] - self._bonus(self._n[label][k]) for k in self._remaining[label]]

    def ucb(self, label: str) -> list[float]:
        """``m_k + sqrt(2 ln N / n_k)`` of the remaining arms of ``label`` (``+inf`` if untried)."""
        self._check_label(label)
        return [self._m[label][k] + self._bonus(self._n[label][k]) for k in self._remaining[label]]

    def probabilities(self, label: str) -> list[float]:
        """Sampling probabilities ``softmax(-LCB)`` of the remaining arms of ``label``
        (aligned with :meth:`remaining`); uniform over the untried arms while there are any."""
        lcb = self.lcb(label)
        untried = [v == -math.inf for v in lcb]
        if any(untried):
            count = sum(untried)
            return [1.0 / count if u else 0.0 for u in untried]
        low = min(lcb)
        weights = [math.exp(low - v) for v in lcb]  # exp(-v) / exp(-low), <= 1: no overflow
        total = sum(weights)
        return [w / total for w in weights]

    # ------------------------------------------------------------------ sampling and updates
    def sample(self) -> dict[str, Any]:
        """Draw one option per edge from :meth:`probabilities` (``{label: option}``).

        After the search is done this returns :meth:`result` (no random number
        is drawn for an edge with one remaining arm).
        """
        out: dict[str, Any] = {}
        for label, rem in self._remaining.items():
            if len(rem) == 1:
                out[label] = self._options[label][rem[0]]
                continue
            probs = self.probabilities(label)
            u = self._rng.random()
            pick = len(rem) - 1
            acc = 0.0
            for pos, p in enumerate(probs):
                acc += p
                if u < acc:
                    pick = pos
                    break
            while probs[pick] == 0.0:  # rounding at the top end: the last arm with mass
                pick -= 1
            out[label] = self._options[label][rem[pick]]
        self._drawn += 1
        return out

    def update(self, sample: Mapping[str, Any], reward: float) -> list[dict[str, Any]]:
        """Credit ``reward`` (the sampled network's validation accuracy) to the arms of ``sample``.

        ``m_k`` of every used, still remaining arm becomes ``reward`` on its
        first use and ``(1 - lam) m_k + lam reward`` after; ``n_k`` and ``N``
        grow by one. When the phase is complete (``K T`` rewards) the arm with
        the smallest UCB is abandoned on every edge with more than one arm.

        Args:
            sample: ``{label: option}`` for every edge (as :meth:`sample` returns).
            reward: A finite number (ABanditNAS: the validation accuracy; its scale matters,
                see the module docstring).

        Returns:
            The abandon records this update caused (empty when none; see
            :attr:`abandon_history`).

        Raises:
            ArchitectureError: a missing or unknown label, or an unknown option.
            ConfigError: a non-finite ``reward``.
        """
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"sample must be a mapping label -> option, but got {sample!r}.")
        for label in sample:
            if label not in self._options:
                raise ArchitectureError(f"Unknown label {label!r} in the sample; labels: {list(self._options)}.")
        indices: dict[str, int] = {}
        for label in self._options:
            if label not in sample:
                raise ArchitectureError(f"The sample lacks label {label!r} (it must name one option per edge).")
            try:
                indices[label] = self.index_of(label, sample[label])
            except ArchitectureError:
                raise ArchitectureError(f"sample[{label!r}] = {sample[label]!r} is not an option of that edge; "
                                        f"options: {list(self._options[label])}.") from None
        if not _is_real(reward):
            raise ConfigError(f"reward must be a finite number, but got {reward!r}.")
        a = float(reward)
        for label, k in indices.items():
            if k not in self._remaining[label]:
                logger.debug("AntiBandit: stale sample, %s=%r was abandoned; not updated", label,
                             self._options[label][k])
                continue
            if self._n[label][k] == 0:
                self._m[label][k] = a
            else:
                self._m[label][k] = (1.0 - self.lam) * self._m[label][k] + self.lam * a
            self._n[label][k] += 1
        self._total += 1
        self._phase_count += 1
        if self.done or self._phase_count < self.phase_length:
            return []
        return self._abandon()

    def _abandon(self) -> list[dict[str, Any]]:
        events = []
        for label, rem in self._remaining.items():
            if len(rem) == 1:
                continue
            ucb = self.ucb(label)
            pos = min(range(len(rem)), key=lambda q: (ucb[q], q))
            k = rem[pos]
            event = {
                "step": self._total,
                "label": label,
                "option": self._options[label][k],
                "index": k,
                "remaining": [self._options[label][j] for j in rem],
                "ucb": [None if math.isinf(v) else v for v in ucb],
                "m": [self._m[label][j] for j in rem],
                "n": [self._n[label][j] for j in rem],
            }
            events.append(event)
        for event in events:
            self._remaining[event["label"]].remove(event["index"])
        self._history.extend(events)
        self._phase_count = 0
        logger.info("AntiBandit: after %d samples abandoned %d arms (%d left per edge at most)%s", self._total,
                    len(events), self.max_remaining, "; done" if self.done else "")
        return [dict(e) for e in events]

    def result(self) -> dict[str, Any]:
        """``{label: the one remaining option}``.

        Raises:
            ConfigError: some edge still has more than one arm.
        """
        if not self.done:
            raise ConfigError(f"The anti-bandit search is not done: {self.samples_to_finish} more rewards are "
                              f"needed; edges with several arms left: "
                              f"{[label for label, r in self._remaining.items() if len(r) > 1][:4]}.")
        return {label: self._options[label][rem[0]] for label, rem in self._remaining.items()}

    def scores(self) -> dict[str, float]:
        """``{label: m}`` of each edge's best remaining arm (its only one once done); ``-inf``
        for an edge whose remaining arms are all untried."""
        out = {}
        for label, rem in self._remaining.items():
            tried = [self._m[label][k] for k in rem if self._n[label][k] > 0]
            out[label] = max(tried) if tried else -math.inf
        return out

    def arm_table(self) -> list[dict[str, Any]]:
        """One JSON-able row per arm (for reports and TensorBoard): ``label``, ``option``,
        ``m``, ``n``, ``lcb``, ``ucb``, ``p`` (``None`` for abandoned arms and for
        infinite bounds), ``remaining``, ``abandoned_at`` (``N`` or ``None``)."""
        abandoned = {(h["label"], h["index"]): h["step"] for h in self._history}
        rows = []
        for label, opts in self._options.items():
            rem = self._remaining[label]
            lcb, ucb, probs = self.lcb(label), self.ucb(label), self.probabilities(label)
            for k, opt in enumerate(opts):
                row = {"label": label, "option": opt, "m": self._m[label][k], "n": self._n[label][k],
                       "lcb": None, "ucb": None, "p": None, "remaining": k in rem,
                       "abandoned_at": abandoned.get((label, k))}
                if k in rem:
                    pos = rem.index(k)
                    row["lcb"] = None if math.isinf(lcb[pos]) else lcb[pos]
                    row["ucb"] = None if math.isinf(ucb[pos]) else ucb[pos]
                    row["p"] = probs[pos]
                rows.append(row)
        return rows

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The complete state as a JSON-able dict (``json.dumps`` works on it), including the
        settings, the arm statistics, the abandon history and the random generator."""
        version, internal, gauss = self._rng.getstate()
        return {
            "version": STATE_VERSION,
            "settings": {"samples_per_arm": self.samples_per_arm, "lam": self.lam, "seed": self.seed},
            "edges": {label: list(opts) for label, opts in self._options.items()},
            "remaining": {label: list(r) for label, r in self._remaining.items()},
            "m": {label: list(v) for label, v in self._m.items()},
            "n": {label: list(v) for label, v in self._n.items()},
            "total": self._total,
            "phase_count": self._phase_count,
            "drawn": self._drawn,
            "history": [dict(h) for h in self._history],
            "rng": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (also after a JSON round trip).

        Raises:
            CheckpointError: another state version, other edges or settings, or
                a malformed state (the message names the key).
        """
        if isinstance(state, (str, bytes)):
            state = json.loads(state)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"An AntiBandit state must be a dict, but got {type(state).__name__}.")
        required = ("version", "settings", "edges", "remaining", "m", "n", "total", "phase_count", "drawn",
                    "history", "rng")
        missing = [key for key in required if key not in state]
        if missing:
            raise CheckpointError(f"AntiBandit state lacks keys {missing}.")
        if state["version"] != STATE_VERSION:
            raise CheckpointError(f"AntiBandit state['version'] is {state['version']!r}; this code reads "
                                  f"version {STATE_VERSION}.")
        edges = {label: tuple(opts) for label, opts in dict(state["edges"]).items()}
        if edges != self._options or list(edges) != list(self._options):
            raise CheckpointError(f"AntiBandit state['edges'] differ from this bandit's edges (labels "
                                  f"{list(edges)[:4]}... vs {list(self._options)[:4]}...).")
        settings = dict(state["settings"])
        for key, mine in (("samples_per_arm", self.samples_per_arm), ("lam", self.lam)):
            if settings.get(key) != mine:
                raise CheckpointError(f"AntiBandit state['settings'][{key!r}] = {settings.get(key)!r} differs "
                                      f"from this bandit's {mine!r}.")
        try:
            remaining = {label: [int(k) for k in state["remaining"][label]] for label in self._options}
            m = {label: [float(v) for v in state["m"][label]] for label in self._options}
            n = {label: [int(v) for v in state["n"][label]] for label in self._options}
            version, internal, gauss = state["rng"]
            rng_state = (int(version), tuple(int(v) for v in internal), gauss)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"AntiBandit state is malformed ({type(exc).__name__}: {exc}).") from exc
        for label, opts in self._options.items():
            size = len(opts)
            if len(m[label]) != size or len(n[label]) != size:
                raise CheckpointError(f"AntiBandit state['m'/'n'][{label!r}] must list {size} values.")
            if not remaining[label] or any(not 0 <= k < size for k in remaining[label]):
                raise CheckpointError(f"AntiBandit state['remaining'][{label!r}] = {remaining[label]!r} is not "
                                      f"a non-empty list of indices in [0, {size - 1}].")
        rng = random.Random()
        try:
            rng.setstate(rng_state)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"AntiBandit state['rng'] is not a random.Random state: {exc}.") from exc
        self.seed = int(settings.get("seed", self.seed))
        self._remaining, self._m, self._n = remaining, m, n
        self._total = int(state["total"])
        self._phase_count = int(state["phase_count"])
        self._drawn = int(state["drawn"])
        self._history = [dict(h) for h in state["history"]]
        self._rng = rng

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any] | str) -> "AntiBandit":
        """A bandit rebuilt from :meth:`state_dict` output alone.

        Raises:
            CheckpointError: a malformed state.
        """
        if isinstance(state, (str, bytes)):
            state = json.loads(state)
        try:
            settings = dict(state["settings"])
            bandit = cls(dict(state["edges"]), samples_per_arm=settings["samples_per_arm"], lam=settings["lam"],
                         seed=settings["seed"])
        except (KeyError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"AntiBandit state is malformed: {exc}") from exc
        bandit.load_state_dict(state)
        return bandit

    # ------------------------------------------------------------------ helpers
    def _check_label(self, label: str) -> None:
        if label not in self._options:
            raise ConfigError(f"Unknown edge label {label!r}; labels: {list(self._options)[:8]}"
                              f"{' ...' if len(self._options) > 8 else ''}.")

    def __repr__(self) -> str:
        return (f"AntiBandit({len(self._options)} edges, K<={self.max_remaining}, T={self.samples_per_arm}, "
                f"lam={self.lam}, N={self._total}{', done' if self.done else ''})")
