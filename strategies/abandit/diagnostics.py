"""Is there a search signal? Checks of an anti-bandit run that say when its result should not be trusted.

ABanditNAS (ECCV 2020, Sec. 3) credits one reward -- the sampled network's
validation accuracy -- to every arm the sample used, so on each edge the
other edges' choices are noise, and the rewards also drift upwards while
the shared weights train. The paper reports no check that the kept
operations are better than a random choice; this module adds three, all
computed from the run's own records (no extra training):

* **Permutation tests** (:func:`edge_pvalues`): the rewards are detrended
  (minus their centred moving mean over ``window`` samples, which removes
  the training-progress drift), then on every edge the between-arm sum of
  squares ``sum_k S_k^2 / n_k`` (``S_k`` the sum of the residuals of the
  samples that used arm ``k``) is compared with its distribution when the
  residuals are shuffled among the samples; so is its sum over the edges.
  The overall test pools many small effects: it decides ``signal`` ("the
  rewards depend on the arms at all", p < 0.05). Per edge, under "the
  edge's choice does not matter" the p-values are uniform, so about
  ``alpha`` of the edges fall below ``alpha`` by chance; the count of edges
  that do (against a binomial tail; the edges share the rewards, so read it
  as an indication) says whether single edges' choices stand out.
* **The paper's confidence bounds at each abandon** (:func:`abandon_overlaps`):
  whether the abandoned arm's interval ``[LCB, UCB]`` overlapped that of the
  best remaining arm (largest ``m``), i.e. whether the two were
  indistinguishable within the bounds the method itself uses. Then the
  choice was made by the exploration bonus (the counts ``n``), not by
  rewards.
* **The reward's scale against the bonus**: rewards whose spread is far
  below ``sqrt(2 ln N / n)`` (accuracies in [0, 1]) make the search
  near-random (see :mod:`.bandit`).

:func:`search_signal` returns the numbers and the warnings (also logged).
NumPy only; no torch.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["detrend", "edge_pvalues", "abandon_overlaps", "search_signal"]

logger = logging.getLogger(__name__)


def detrend(rewards: Sequence[float], window: int) -> np.ndarray:
    """``rewards`` minus their centred moving mean over ``window`` samples (shrunk at the ends)."""
    r = np.asarray(rewards, dtype=float)
    half = max(0, int(window) // 2)
    csum = np.concatenate([[0.0], np.cumsum(r)])
    idx = np.arange(len(r))
    lo, hi = np.maximum(0, idx - half), np.minimum(len(r), idx + half + 1)
    return r - (csum[hi] - csum[lo]) / (hi - lo)


def edge_pvalues(arms: np.ndarray, residuals: np.ndarray, sizes: Sequence[int], *, permutations: int = 1000,
                 seed: int = 0) -> tuple[np.ndarray, float]:
    """Permutation p-values of "the residual reward does not depend on the arms": per edge and overall.

    Args:
        arms: ``(samples, edges)`` option index of each sample on each edge.
        residuals: ``(samples,)`` detrended rewards.
        sizes: Number of options per edge.
        permutations: Shuffles of the residuals.
        seed: Seed of the shuffles.

    Returns:
        ``(per-edge p-values, overall p-value)``: ``(1 + #{shuffled >= observed}) / (1 + permutations)``
        of the edge's between-arm sum of squares (1.0 for an edge whose samples all used one arm),
        and of its sum over the edges, which pools many small effects (one test, so no multiple-testing
        correction is needed).
    """
    arms = np.asarray(arms, dtype=int)
    res = np.asarray(residuals, dtype=float)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([res] + [rng.permutation(res) for _ in range(permutations)])  # (1 + P, samples)
    out = np.ones(arms.shape[1])
    total = np.zeros(shuffled.shape[0])
    for e, size in enumerate(sizes):
        onehot = np.eye(size)[arms[:, e]]  # (samples, K)
        counts = onehot.sum(axis=0)
        used = counts > 0
        if used.sum() < 2:
            continue
        sums = shuffled @ onehot[:, used]  # (1 + P, K used)
        stat = (sums ** 2 / counts[used]).sum(axis=1)
        total += stat
        out[e] = (1 + np.sum(stat[1:] >= stat[0] - 1e-12)) / (1 + permutations)
    overall = float((1 + np.sum(total[1:] >= total[0] - 1e-12)) / (1 + permutations))
    return out, overall


def _binom_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def abandon_overlaps(history: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Per abandon record (:attr:`~.bandit.AntiBandit.abandon_history`): whether the abandoned arm's
    ``[m - b, m + b]`` overlapped the best remaining arm's (largest ``m``), ``b = sqrt(2 ln N / n)``."""
    out = []
    for event in history:
        n_total, remaining = event["step"], event["remaining"]
        bounds = []
        for m, n in zip(event["m"], event["n"]):
            bonus = math.inf if n == 0 else (math.sqrt(2 * math.log(n_total) / n) if n_total > 1 else 0.0)
            bounds.append((m - bonus, m + bonus, m))
        lost = remaining.index(event["option"])
        others = [b for q, b in enumerate(bounds) if q != lost]
        best = max(others, key=lambda b: b[2])
        out.append(bool(bounds[lost][1] >= best[0]))
    return out


def search_signal(edges: Mapping[str, Sequence[Any]], records: Sequence[Mapping[str, Any]],
                  abandon_history: Sequence[Mapping[str, Any]], *, window: int | None = None,
                  permutations: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """The checks of the module docstring on a run's records.

    Args:
        edges: ``{label: options}`` (the bandit's, in its label order).
        records: Per sample: ``arms`` (option index per edge, in label order),
            ``reward``, optional ``warmup`` (warm-up samples are left out).
        abandon_history: The bandit's abandon records.
        window: Moving-mean width of the detrending (default: the first
            phase's length ``K T`` estimated from the first abandon, at least 5).
        permutations: Shuffles per test.
        alpha: Per-edge level.
        seed: Seed of the shuffles.

    Returns:
        A JSON-able dict: ``samples``, ``edges``, ``pvalues`` (per label),
        ``significant_edges``, ``expected_by_chance``, ``binomial_p``,
        ``overall_p``, ``signal`` (bool: ``overall_p < 0.05``), ``notes`` (when
        there is a signal but no single edge stands out),
        ``overlap_fraction`` (abandons within the confidence bounds),
        ``residual_sd``, ``reward_sd``, ``reward_trend`` (mean of the last
        tenth minus the first), ``bonus`` (median exploration bonus at the
        last abandon), ``window``, and ``warnings`` (sentences; also logged).
    """
    labels = list(edges)
    rows = [r for r in records if not r.get("warmup")]
    out: dict[str, Any] = {"samples": len(rows), "edges": len(labels), "warnings": []}
    if len(rows) < 4:
        out["warnings"].append(f"Only {len(rows)} credited samples: too few to tell a search signal from noise.")
        out["signal"] = False
        return _log(out)
    rewards = np.array([float(r["reward"]) for r in rows])
    arms = np.array([r["arms"] for r in rows], dtype=int)
    if window is None:
        first = abandon_history[0]["step"] if abandon_history else len(rows)
        window = max(5, int(first))
    residuals = detrend(rewards, window)
    pvalues, overall = edge_pvalues(arms, residuals, [len(edges[label]) for label in labels],
                                    permutations=permutations, seed=seed)
    significant = int(np.sum(pvalues < alpha))
    binomial_p = _binom_tail(significant, len(labels), alpha)
    tenth = max(1, len(rows) // 10)
    overlaps = abandon_overlaps(abandon_history)
    last = [h for h in abandon_history if h["step"] == abandon_history[-1]["step"]] if abandon_history else []
    bonuses = [math.sqrt(2 * math.log(h["step"]) / n) for h in last for n in h["n"] if n > 0 and h["step"] > 1]
    out.update({
        "pvalues": {label: float(p) for label, p in zip(labels, pvalues)},
        "significant_edges": significant, "alpha": alpha, "expected_by_chance": alpha * len(labels),
        "binomial_p": binomial_p, "overall_p": overall, "signal": bool(overall < 0.05),
        "overlap_fraction": float(np.mean(overlaps)) if overlaps else None, "abandons": len(overlaps),
        "residual_sd": float(residuals.std()), "reward_sd": float(rewards.std()),
        "reward_trend": float(rewards[-tenth:].mean() - rewards[:tenth].mean()),
        "bonus": float(np.median(bonuses)) if bonuses else None, "window": int(window),
    })
    if not out["signal"]:
        out["warnings"].append(
            f"No search signal above noise: the (detrended) rewards depend on the sampled arms no more than "
            f"chance allows (permutation test over all edges: p = {overall:.2f}; single edges at p < {alpha}: "
            f"{significant} of {len(labels)}, {alpha * len(labels):.1f} expected by chance). The kept operations "
            "cannot be told from a random choice: do not trust this architecture (more samples per arm T, more "
            "validation images, a longer-trained supernet or fewer edges would help).")
    elif binomial_p >= 0.05:
        out["notes"] = (f"The rewards depend on the arms overall (p = {overall:.3f}), but no single edge stands out "
                        f"({significant} of {len(labels)} at p < {alpha}, as chance gives): the signal is spread "
                        "thinly, and each edge's kept operation is a weak choice.")
    if overlaps and out["overlap_fraction"] > 0.5:
        out["warnings"].append(
            f"At {100 * out['overlap_fraction']:.0f}% of the {len(overlaps)} abandons the abandoned arm's "
            "confidence interval [LCB, UCB] overlapped the best remaining arm's: the arms' means were "
            "indistinguishable within the method's own bounds, and the exploration bonus (the counts n) decided.")
    if out["bonus"] is not None and out["residual_sd"] < 0.1 * out["bonus"]:
        out["warnings"].append(
            f"The rewards vary by {out['residual_sd']:.3g} (sd) while the exploration bonus sqrt(2 ln N / n) is "
            f"{out['bonus']:.3g}: the bonus decides the search. Scale the reward (reward_scale: 100 for "
            "accuracies in percent).")
    return _log(out)


def _log(out: dict[str, Any]) -> dict[str, Any]:
    for text in out["warnings"]:
        logger.warning("Anti-bandit search: %s", text)
    return out
