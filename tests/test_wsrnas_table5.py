"""benchmarks/wsrnas_table5.py (Wsr-NAS Table 5, ``wsr-nas.txt``): on tiny sizes its main writes a telling table."""

from __future__ import annotations

import csv
import importlib
import io
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ESTIMATORS = ["a_ane", "wa_ane", "e_ane_minus", "e_ane"]
TINY = ["--models", "3", "--held-out", "2", "--epochs", "3", "--train-eps", "0", "--updates", "3", "--batch", "16",
        "--eval-images", "128", "--pgd-steps", "3", "--target-eps", "0.06", "0.1", "--seed", "1"]


@pytest.fixture(scope="module")
def table5(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        module = importlib.import_module("wsrnas_table5")
        out = tmp_path_factory.mktemp("table5")
        assert module.main([*TINY, "--out", str(out)]) == 0
    return module, out


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "table5.csv").read_text())))


def test_held_out_models_lose_accuracy_under_pgd_and_every_estimator_is_reported(table5):
    module, out = table5
    rows = _rows(out)
    models = sorted({r["model"] for r in rows})
    assert models == ["m0-c16-32-k3", "m1-c8-16-16-k3"]          # the held-out ones, not the memory model m2
    assert len(rows) == 2 * (1 + 2 * (1 + len(ESTIMATORS)))       # per model: clean + (PGD + 4 estimators) x 2 eps
    acc = {(r["model"], r["attack"], float(r["eps"])): float(r["accuracy"]) for r in rows}
    for m in models:
        clean = acc[(m, "clean", 0.0)]
        assert clean > 0.6                                          # the models learned
        for e in (0.06, 0.1):
            assert acc[(m, "pgd", e)] < clean                       # the attack bites on every held-out model
            for name in ESTIMATORS:
                assert 0.0 <= acc[(m, name, e)] <= 1.0
        assert acc[(m, "pgd", 0.1)] <= acc[(m, "pgd", 0.06)]
    for name in ESTIMATORS:                                         # estimated noises attack too
        mean = sum(acc[(m, name, e)] for m in models for e in (0.06, 0.1)) / 4
        assert mean < sum(acc[(m, "clean", 0.0)] for m in models) / 2


def test_markdown_has_table5_row_per_strength_rows_and_matches_the_csv(table5):
    module, out = table5
    md = (out / "table5.md").read_text()
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| | Avg. Nat. Acc."))
    assert [c.strip() for c in head.split("|")[4:-1]] == ["A-ANE", "WA-ANE", "E-ANE^-", "E-ANE"]
    run = next(line for line in lines if line.startswith("| this run: 2 held-out models"))
    values = [float(c) for c in run.split("|")[2:-1]]
    rows = _rows(out)
    mean = {a: 100 * sum(float(r["accuracy"]) for r in rows if r["attack"] == a)
            / sum(1 for r in rows if r["attack"] == a) for a in ["clean", "pgd", *ESTIMATORS]}
    assert values == pytest.approx([mean[a] for a in ["clean", "pgd", *ESTIMATORS]], abs=0.051)
    assert values[1] < values[0]
    paper = next(line for line in lines if line.startswith("| paper (CIFAR-10"))
    assert [float(c) for c in paper.split("|")[2:-1]] == [73.0, 38.7, 43.6, 67.4, 71.1, 48.9]
    per_eps = lines[lines.index("## Per strength") + 2:]
    assert per_eps[0] == "| attack | eps=0.06 | eps=0.1 | mean | mean - PGD | MSE |"
    assert [line.split("|")[1].strip() for line in per_eps[2:8]] == ["clean", "PGD", *ESTIMATORS]
    assert "## Warnings" in md                                      # 128 images: it says differences are noise


def test_held_out_must_leave_a_memory_model(table5):
    module, out = table5
    with pytest.raises(SystemExit):
        module.parse_args(["--models", "3", "--held-out", "3"])
