"""The trust-warning record (strategies/trust.py): logged, appended as JSON lines, read back."""

from __future__ import annotations

import json
import logging
import math

import pytest

from nni_robust.strategies.trust import WARNINGS_FILE, read_warnings, record_warning


def test_record_logs_appends_and_reads_back(tmp_path, caplog):
    work = tmp_path / "work"  # created on the first record
    assert read_warnings(work) == []
    with caplog.at_level(logging.WARNING, logger="nni_robust.strategies.trust"):
        first = record_warning(work, "msrobnet.family", "the chosen family's correlation is -0.12",
                               family="log_power", mean_tau=-0.12, tau=(0.1, math.nan))
        record_warning(work, "final.chance", "clean accuracy 11% is near chance (10%)", acc_clean=0.11)
    assert "the chosen family's correlation is -0.12" in caplog.text
    lines = (work / WARNINGS_FILE).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)  # strict JSON, NaN -> null
    got = read_warnings(work)
    assert [w["source"] for w in got] == ["msrobnet.family", "final.chance"]
    assert got[0]["tau"] == [0.1, None] and got[0]["mean_tau"] == -0.12 and got[0]["family"] == "log_power"
    assert got[0]["time"] == pytest.approx(first["time"]) and got[1]["acc_clean"] == 0.11


def test_a_broken_line_is_skipped_and_reserved_keys_are_refused(tmp_path):
    (tmp_path / WARNINGS_FILE).write_text('{"source": "a.b", "message": "m", "time": 1}\n{"cut sh\n\n')
    assert [w["source"] for w in read_warnings(tmp_path)] == ["a.b"]
    with pytest.raises(ValueError, match="reserved"):
        record_warning(tmp_path, "a.b", "m", time=3)
    with pytest.raises(ValueError, match="source"):
        record_warning(tmp_path, "", "m")
    assert read_warnings(None) == [] and record_warning(None, "a.b", "only logged")["message"] == "only logged"


def test_a_final_network_near_chance_is_flagged():
    from nni_robust.strategies.final import NEAR_CHANCE_FACTOR, near_chance

    (text,) = near_chance({"clean": 0.12, "pgd20": 0.05}, 10)
    assert "12.0%" in text and "near chance (10% for 10 classes)" in text
    assert near_chance({"clean": 0.969}, 10) == [] and near_chance({"pgd20": 0.0}, 10) == []
    assert near_chance({"clean": NEAR_CHANCE_FACTOR / 100 - 1e-3}, 100) and not near_chance({"clean": 0.2}, 10)


def test_a_keyed_warning_is_replaced_and_withdrawn(tmp_path):
    from nni_robust.strategies.trust import resolve_warning

    record_warning(tmp_path, "a.check", "first")
    record_warning(tmp_path, "t.noise", "within noise after 2", key="front", trials=2)
    record_warning(tmp_path, "b.check", "second")
    record_warning(tmp_path, "t.noise", "within noise after 3", key="front", trials=3)
    assert [w["message"] for w in read_warnings(tmp_path)] == ["first", "within noise after 3", "second"]
    resolve_warning(tmp_path, "t.noise", "front")
    assert [w["message"] for w in read_warnings(tmp_path)] == ["first", "second"]
    record_warning(tmp_path, "t.noise", "within noise again", key="front")
    assert [w["message"] for w in read_warnings(tmp_path)] == ["first", "within noise again", "second"]
    with pytest.raises(ValueError, match="resolved"):
        record_warning(tmp_path, "t.noise", "x", resolved=True)
