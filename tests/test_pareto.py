"""Pareto fronts: the non-dominated set on known points, and the table/plot files."""

from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest

from nni_robust.errors import ConfigError
from nni_robust.strategies.tradeoff.pareto import dominates, format_table, pareto_front, write_pareto

PNG = b"\x89PNG\r\n\x1a\n"


def test_front_two_maximized_objectives_with_duplicates():
    pts = [[1, 1], [1, 1], [0, 2], [0, 0], [2, 0], [0.5, 0.5], [2, 0]]
    # [1,1] twice (copies do not dominate each other), [0,2] and [2,0] (twice) are optimal
    assert pareto_front(pts, ["maximize", "maximize"]).tolist() == [0, 1, 2, 4, 6]


def test_front_mixed_directions():
    # (accuracy: maximize, mflops: minimize)
    pts = [[0.90, 500], [0.85, 200], [0.90, 600], [0.80, 200], [0.95, 900], [0.85, 200]]
    front = pareto_front(pts, ["maximize", "minimize"]).tolist()
    # [0.90, 600] is dominated by [0.90, 500] (tie in accuracy, more flops); [0.80, 200] by [0.85, 200]
    assert front == [0, 1, 4, 5]
    # flipping both directions flips the roles
    assert pareto_front(pts, ["minimize", "maximize"]).tolist() == [2, 3, 4]


def test_front_one_objective_keeps_every_tie_of_the_best():
    assert pareto_front([3.0, 5.0, 5.0, 1.0], ["maximize"]).tolist() == [1, 2]
    assert pareto_front([[3.0], [5.0], [1.0], [1.0]], ["minimize"]).tolist() == [2, 3]


def test_front_ignores_non_finite_points():
    pts = [[np.nan, 10.0], [1.0, 1.0], [np.inf, 0.0], [0.0, 2.0]]
    assert pareto_front(pts, ["maximize", "maximize"]).tolist() == [1, 3]
    assert not dominates([np.nan, 5], [0, 0], ["maximize", "maximize"])
    assert pareto_front(np.zeros((0, 2)), ["maximize", "minimize"]).tolist() == []


def test_front_matches_pairwise_definition_on_random_points_with_ties():
    rng = np.random.default_rng(0)
    directions = ["maximize", "minimize", "maximize"]
    pts = rng.integers(0, 5, size=(120, 3)).astype(float)  # many ties and duplicates
    expected = [i for i in range(len(pts))
                if not any(dominates(pts[j], pts[i], directions) for j in range(len(pts)))]
    assert pareto_front(pts, directions).tolist() == expected
    front = pts[expected]
    for a, b in itertools.combinations(front, 2):
        assert not dominates(a, b, directions) and not dominates(b, a, directions)


def test_dominates():
    assert dominates([2, 1], [1, 1], ["maximize", "maximize"])
    assert not dominates([1, 1], [1, 1], ["maximize", "maximize"])
    assert dominates([1, 100], [1, 200], ["maximize", "minimize"])
    assert not dominates([2, 300], [1, 200], ["maximize", "minimize"])


def test_bad_directions_are_errors():
    with pytest.raises(ConfigError, match="'max'"):
        pareto_front([[1, 2]], ["max", "minimize"])
    with pytest.raises(ConfigError, match="one direction per objective"):
        pareto_front([[1, 2]], ["maximize"])


def _trials():
    return [
        {"number": 0, "values": [0.90, 500.0], "params": {"width": 32, "lr": 0.1}},
        {"number": 1, "values": [0.85, 200.0], "params": {"width": 16, "lr": 0.01}},
        {"number": 2, "values": [0.90, 600.0], "params": {"width": 48, "lr": 0.1}},
        {"number": 3, "values": [0.95, 900.0], "params": {"width": 64, "lr": 0.05, "opt": "a|b"}},
        {"number": 4, "values": [0.70, 300.0], "params": {"width": 16, "lr": 0.3}},
    ]


def test_write_pareto_two_objectives(tmp_path):
    paths = write_pareto(_trials(), ["acc", "mflops"], ["maximize", "minimize"], tmp_path, title="t")
    assert set(paths) == {"csv", "md", "png"}
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    # the front, best accuracy first
    assert [int(r["trial"]) for r in rows] == [3, 0, 1]
    assert [float(r["acc"]) for r in rows] == [0.95, 0.90, 0.85]
    assert [float(r["mflops"]) for r in rows] == [900.0, 500.0, 200.0]
    assert rows[0]["opt"] == "a|b" and rows[1]["width"] == "32"
    md = paths["md"].read_text()
    assert "Pareto front: 3 of 5 trials" in md
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert [int(line.split("|")[1]) for line in body] == [3, 0, 1]
    assert "a\\|b" in md  # a '|' in a value does not break the table
    assert paths["png"].read_bytes()[:8] == PNG
    assert format_table(_trials(), ["acc", "mflops"], ["maximize", "minimize"]).count("\n| ") == 4


@pytest.mark.parametrize("m", [1, 3])
def test_write_pareto_one_and_three_objectives(tmp_path, m):
    rng = np.random.default_rng(m)
    trials = [{"number": i, "values": rng.random(m).tolist(), "params": {"x": i}} for i in range(12)]
    directions = ["maximize", "minimize", "maximize"][:m]
    names = ["a", "b", "c"][:m]
    paths = write_pareto(trials, names, directions, tmp_path)
    expected = pareto_front([t["values"] for t in trials], directions)
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["trial"]) for r in rows) == sorted(expected.tolist())
    if m == 1:
        assert len(rows) == 1 and int(rows[0]["trial"]) == int(np.argmax([t["values"][0] for t in trials]))
    assert paths["png"].read_bytes()[:8] == PNG


def test_write_pareto_without_trials_and_bad_records(tmp_path):
    paths = write_pareto([], ["a", "b"], ["maximize", "minimize"], tmp_path)
    assert "Pareto front: 0 of 0 trials" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == PNG
    with pytest.raises(ConfigError, match="2 objectives"):
        write_pareto([{"number": 0, "values": [1.0]}], ["a", "b"], ["maximize", "minimize"], tmp_path)


def test_noise_verdict_judges_accuracies_against_their_test_sets():
    from nni_robust.strategies.tradeoff.pareto import noise_verdict

    def trials(*accs, n=359):
        return [{"number": i, "values": list(a), "test_images": n} for i, a in enumerate(accs)]

    objectives = ["acc_clean", "acc_pgd20"]
    # 2 SE of the difference between 0.40 and 0.43 on 359 images each: 2 * sqrt(.4*.6/359 + .43*.57/359) = 7.3 pts
    assert "acc_pgd20 spans 30.0-32.0%" in noise_verdict(trials((0.40, 0.30), (0.43, 0.32)), objectives)
    # one objective beyond noise: a trade-off the evaluation resolves
    assert noise_verdict(trials((0.40, 0.30), (0.43, 0.40)), objectives) is None
    # the same gap on 10,000 images each is beyond noise (2 SE: 1.4 points)
    assert noise_verdict(trials((0.40, 0.30), (0.43, 0.32), n=10000), objectives) is None
    # not judged: one trial, objectives that are not accuracies, or trials without their test-set size
    assert noise_verdict(trials((0.40, 0.30)), objectives) is None
    assert noise_verdict(trials((0.40, 1.2), (0.41, 1.3)), ["acc_clean", "mflops"]) is None
    assert noise_verdict([{"values": [0.4, 0.3]}, {"values": [0.41, 0.3]}], objectives) is None
    # identical results are within noise
    assert noise_verdict(trials((0.5, 0.2), (0.5, 0.2)), objectives) is not None


def test_the_plot_shows_each_accuracy_with_its_test_set_standard_error(tmp_path):
    from nni_robust.strategies.tradeoff.pareto import _standard_errors

    trials = [{"number": i, "values": [0.94 + 0.003 * i, 0.72 + 0.01 * i], "test_images": 359} for i in range(4)]
    objectives, directions = ["acc_clean", "acc_pgd20"], ["maximize", "maximize"]
    errors = _standard_errors(trials, objectives, np.array([t["values"] for t in trials]))
    assert errors[0] == pytest.approx([math.sqrt(0.94 * 0.06 / 359), math.sqrt(0.72 * 0.28 / 359)])
    assert np.isnan(_standard_errors(trials, ["acc_clean", "mflops"], np.array([[0.9, 3.0]] * 4))[:, 1]).all()
    with_bars = write_pareto(trials, objectives, directions, tmp_path / "bars")["png"].read_bytes()
    plain = [{k: v for k, v in t.items() if k != "test_images"} for t in trials]
    without = write_pareto(plain, objectives, directions, tmp_path / "plain")["png"].read_bytes()
    assert with_bars[:8] == without[:8] == b"\x89PNG\r\n\x1a\n" and with_bars != without
