"""The anti-bandit arm statistics of ABanditNAS (strategies/abandit/bandit.py)."""

from __future__ import annotations

import json
import math
import random

import pytest

from nni_robust.errors import ArchitectureError, CheckpointError, ConfigError
from nni_robust.strategies.abandit.bandit import AntiBandit, total_samples

OPS3 = ["a", "b", "c"]


def feed(bandit: AntiBandit, steps):
    """Apply hand-chosen ``(option, reward)`` updates to a one-edge bandit."""
    events = []
    for option, reward in steps:
        events += bandit.update({"e": option}, reward)
    return events


# --------------------------------------------------------------------------- formulas on a hand-computed case


def test_updates_bounds_and_probabilities_match_the_formulas():
    bandit = AntiBandit({"e": OPS3}, samples_per_arm=2, seed=0)
    assert bandit.probabilities("e") == [1 / 3] * 3  # untried arms: uniform
    feed(bandit, [("a", 0.5), ("b", 0.8), ("c", 0.2), ("a", 0.9)])
    stats = bandit.stats("e")
    # first reward sets m; then m <- 0.3 m + 0.7 a: 0.3 * 0.5 + 0.7 * 0.9 = 0.78
    assert stats["a"]["m"] == pytest.approx(0.78) and stats["a"]["n"] == 2
    assert (stats["b"]["m"], stats["b"]["n"], stats["c"]["m"]) == (0.8, 1, 0.2) and bandit.total == 4
    ln4 = math.log(4)
    lcb = [0.78 - math.sqrt(2 * ln4 / 2), 0.8 - math.sqrt(2 * ln4), 0.2 - math.sqrt(2 * ln4)]
    ucb = [0.78 + math.sqrt(2 * ln4 / 2), 0.8 + math.sqrt(2 * ln4), 0.2 + math.sqrt(2 * ln4)]
    assert bandit.lcb("e") == pytest.approx(lcb) and bandit.ucb("e") == pytest.approx(ucb)
    weights = [math.exp(-v) for v in lcb]
    assert bandit.probabilities("e") == pytest.approx([w / sum(weights) for w in weights])
    # by hand: LCB = (-0.39741, -0.86511, -1.46511) -> p = (0.18165, 0.28998, 0.52837)
    assert bandit.probabilities("e") == pytest.approx([0.18165, 0.28998, 0.52837], abs=1e-5)


def test_abandon_removes_the_smallest_ucb_not_the_smallest_mean():
    bandit = AntiBandit({"e": OPS3}, samples_per_arm=2, seed=0)
    events = feed(bandit, [("a", 0.5), ("b", 0.8), ("c", 0.2), ("a", 0.9), ("a", 0.1)])
    assert events == [] and bandit.samples_until_abandon == 1  # phase: K T = 3 * 2 = 6 rewards
    events = feed(bandit, [("a", 0.1)])
    # N = 6: UCB_a = 0.1612 + sqrt(2 ln 6 / 4) = 1.1077, UCB_b = 0.8 + sqrt(2 ln 6) = 2.6930, UCB_c = 2.0930:
    # the much-tried arm a goes although c has the lower mean.
    assert [(e["label"], e["option"], e["step"]) for e in events] == [("e", "a", 6)]
    assert events[0]["ucb"] == pytest.approx([1.10771, 2.69302, 2.09302], abs=1e-5)
    assert bandit.remaining("e") == ("b", "c") and bandit.phase_length == 4  # K is now 2
    feed(bandit, [("b", 0.7), ("c", 0.3), ("c", 0.3), ("b", 0.6)])
    assert bandit.done and bandit.abandon_order("e") == ["a", "c"] and bandit.result() == {"e": "b"}
    assert bandit.total == 10 == total_samples({"e": OPS3}, 2)
    assert bandit.sample() == {"e": "b"}  # after the search: the result
    assert bandit.stats("e")["a"]["remaining"] is False


def test_first_samples_try_every_arm_once_and_phases_shrink():
    ops = [f"op{k}" for k in range(9)]
    edges = {f"c{t}_e{i}": ops for t in range(2) for i in range(3)}
    bandit = AntiBandit(edges, samples_per_arm=2, seed=5)
    rng = random.Random(0)
    for _ in range(9):  # warm-up: uniform over the untried arms
        bandit.update(bandit.sample(), rng.random())
    assert all(s["n"] == 1 for label in edges for s in bandit.stats(label).values())
    steps = []
    while not bandit.done:
        for event in bandit.update(bandit.sample(), rng.random()):
            steps.append(event["step"])
    # one abandon per edge after 2*9, then 2*8, ... 2*2 more rewards: 2 * (2 + ... + 9) = 88 in total
    expected, n = [], 0
    for k in range(9, 1, -1):
        n += 2 * k
        expected += [n] * len(edges)
    assert steps == expected and bandit.total == 88 == total_samples(edges, 2)
    assert all(len(bandit.abandon_order(label)) == 8 for label in edges)


def test_every_abandon_follows_the_recorded_ucb():
    ops = list("pqrstu")
    edges = {"x": ops, "y": ops[:4], "z": ops[:2]}  # different arm counts per edge
    bandit = AntiBandit(edges, samples_per_arm=3, seed=11)
    rng = random.Random(1)
    means = {"x": dict(zip(ops, [0.1, 0.5, 0.2, 0.9, 0.3, 0.4])), "y": dict(zip(ops, [0.3, 0.1, 0.6, 0.2])),
             "z": {"p": 0.2, "q": 0.5}}
    while not bandit.done:
        before = {label: (bandit.remaining(label), [s for s in bandit.stats(label).values()]) for label in edges}
        total_before = bandit.total
        sample = bandit.sample()
        events = bandit.update(sample, sum(means[k][v] for k, v in sample.items()) + rng.gauss(0, 0.05))
        for event in events:
            label = event["label"]
            remaining = list(before[label][0])
            assert event["remaining"] == remaining and event["step"] == total_before + 1
            # recompute the UCB from the recorded statistics, N after this update
            n_total = event["step"]
            ucb = [m + math.sqrt(2 * math.log(n_total) / n) for m, n in zip(event["m"], event["n"])]
            assert event["ucb"] == pytest.approx(ucb)
            assert event["option"] == remaining[min(range(len(ucb)), key=lambda q: (ucb[q], q))]
            assert event["option"] not in bandit.remaining(label)
    assert [len(bandit.abandon_order(k)) for k in edges] == [5, 3, 1]
    assert bandit.total == total_samples(edges, 3) == 3 * (2 + 3 + 4 + 5 + 6)


# --------------------------------------------------------------------------- synthetic bandits with known means


def _synthetic_run(seed: int, num_edges: int, num_arms: int, samples_per_arm: int, spread: float,
                   noise: float) -> bool:
    """One search on an additive synthetic space: reward = mean over the edges of the sampled arms' means
    (arm means ``spread * k / (K - 1)`` in a random order per edge) + Gaussian noise; all used arms get it."""
    rng = random.Random(10_000 + seed)
    ops = [f"op{k}" for k in range(num_arms)]
    means, best = {}, {}
    for e in range(num_edges):
        values = [spread * k / (num_arms - 1) for k in range(num_arms)]
        rng.shuffle(values)
        means[f"e{e}"] = dict(zip(ops, values))
        best[f"e{e}"] = max(means[f"e{e}"], key=means[f"e{e}"].get)
    bandit = AntiBandit({label: ops for label in means}, samples_per_arm=samples_per_arm, seed=seed)
    while not bandit.done:
        sample = bandit.sample()
        reward = sum(means[k][v] for k, v in sample.items()) / num_edges + rng.gauss(0.0, noise)
        bandit.update(sample, reward)
    return bandit.result() == best


@pytest.mark.parametrize("num_edges, num_arms, samples_per_arm", [(1, 9, 3), (2, 3, 5)])
def test_keeps_the_best_arm_on_every_edge_in_95_percent_of_runs(num_edges, num_arms, samples_per_arm):
    # Arm means 10 apart at most (accuracies in percent), noise sd 0.5.
    runs = [_synthetic_run(seed, num_edges, num_arms, samples_per_arm, 10.0, 0.5) for seed in range(200)]
    assert sum(runs) / len(runs) >= 0.95


# --------------------------------------------------------------------------- resume, generic spaces, errors


def test_resume_from_state_dict_gives_identical_samples():
    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    edges = {f"{j}<-{i}": ops for j in range(1, 4) for i in range(j)}  # a NAS-Bench-201 cell: 6 edges x 5 ops

    def reward(sample):  # deterministic, so both runs see the same rewards
        return sum(ops.index(v) * (1 + len(k)) for k, v in sample.items()) / 10.0

    bandit = AntiBandit(edges, samples_per_arm=2, seed=3)
    for _ in range(17):  # mid-phase (first abandon after 10)
        s = bandit.sample()
        bandit.update(s, reward(s))
    state = json.loads(json.dumps(bandit.state_dict()))
    resumed = AntiBandit.from_state_dict(state)
    loaded = AntiBandit(edges, samples_per_arm=2, seed=99)
    loaded.load_state_dict(state)
    tail = {"orig": [], "resumed": [], "loaded": []}
    for name, b in (("orig", bandit), ("resumed", resumed), ("loaded", loaded)):
        while not b.done:
            s = b.sample()
            tail[name].append((s, [b.probabilities(k) for k in edges]))
            b.update(s, reward(s))
    assert tail["orig"] == tail["resumed"] == tail["loaded"] and len(tail["orig"]) > 10
    assert bandit.state_dict() == resumed.state_dict() == loaded.state_dict()
    assert bandit.total == total_samples(edges, 2) == 2 * 14 and bandit.drawn == 17 + len(tail["orig"])
    assert len(bandit.result()) == 6 and bandit.arm_table()[0]["label"] == "1<-0"


def test_stale_samples_do_not_update_abandoned_arms():
    bandit = AntiBandit({"e": ["a", "b"]}, samples_per_arm=1, seed=0)
    feed(bandit, [("a", 0.9), ("b", 0.1)])  # phase K T = 2: b (smaller UCB, equal n) is abandoned
    assert bandit.done and bandit.result() == {"e": "a"}
    before = bandit.stats("e")["b"]
    bandit.update({"e": "b"}, 1.0)
    assert bandit.stats("e")["b"] == before and bandit.total == 3


def test_bad_input_is_rejected_with_the_key():
    with pytest.raises(ConfigError, match=r"edges\['e'\]: options must be distinct"):
        AntiBandit({"e": ["a", "a"]})
    with pytest.raises(ConfigError, match=r"edges\['e'\] must be a non-empty list"):
        AntiBandit({"e": []})
    with pytest.raises(ConfigError, match="lam must lie in"):
        AntiBandit({"e": OPS3}, lam=0.0)
    with pytest.raises(ConfigError, match="samples_per_arm"):
        AntiBandit({"e": OPS3}, samples_per_arm=0)
    bandit = AntiBandit({"e": OPS3, "f": [1, 2]}, seed=0)
    with pytest.raises(ArchitectureError, match="lacks label 'f'"):
        bandit.update({"e": "a"}, 0.5)
    with pytest.raises(ArchitectureError, match="Unknown label 'g'"):
        bandit.update({"e": "a", "f": 1, "g": 0}, 0.5)
    with pytest.raises(ArchitectureError, match=r"sample\['f'\] = '1' is not an option"):
        bandit.update({"e": "a", "f": "1"}, 0.5)
    with pytest.raises(ConfigError, match="reward must be a finite number"):
        bandit.update({"e": "a", "f": 1}, float("nan"))
    with pytest.raises(ConfigError, match="not done"):
        bandit.result()
    other = AntiBandit({"e": OPS3}, seed=0)
    with pytest.raises(CheckpointError, match="edges"):
        other.load_state_dict(bandit.state_dict())
    with pytest.raises(CheckpointError, match="lacks keys"):
        bandit.load_state_dict({"version": 1})
