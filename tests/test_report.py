"""The report page (``nni-robust report``) and what NNI's web UI is sent (``strategies.display``).

The report is built from a fake experiment written in the real formats: NNI's
database (``db/nni.sqlite``: ExperimentProfile, TrialJobEvent, MetricData),
the final trial's folder (``final_report.json``, ``robustness.md``) and the
search's work dir (``trials.jsonl``, ``best_architecture.json``,
``warnings.jsonl``, a method report with a plot).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nni_robust.errors import ConfigError
from nni_robust.spaces.darts import DartsArch
from nni_robust.strategies.bridge import _parse_value
from nni_robust.strategies.display import (OBJECTIVE, PROVISIONAL, SUMMARY_KEY, for_nni, parameter_summary, restore,
                                           task_kind)
from nni_robust.strategies.trust import record_warning
from nni_robust.trial.report import load_experiment, locate_experiment, to_html, write_report

EXP = "fake1234"
T0 = 1_790_000_000_000  # ms, NNI's timestamps
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


# ---------------------------------------------------------------------------- display
def test_only_the_objective_keeps_a_numeric_default_and_restore_undoes_it():
    sup = {"default": 0.412, "probe_acc_clean": 0.5, "width": 16.0}
    shown = for_nni(sup, task="supernet")
    assert shown["default"] == "supernet c16 · 0.412" and shown["value"] == 0.412 and shown["width"] == 16.0
    fin = {"default": 0.712, "acc_clean": 0.953, "acc_fgsm": 0.8, "acc_pgd20": 0.712}
    assert for_nni(fin, task="final")["default"] == "final · clean 0.953 · pgd20 0.712"
    ev = {"default": 0.3, "reward_c8": 0.2}
    assert for_nni(ev, task="evaluate") == ev  # the objective: unchanged
    assert restore(shown) == sup and restore(for_nni(fin, task="final")) == fin and restore(ev) == ev
    # the bridge tuner and trials.jsonl see the task's own dict, the strategy the number
    assert _parse_value(shown) == (0.412, sup)
    assert for_nni({"default": 1.0, "value": 2.0}, task="final")["default"] == 1.0  # a 'value' key: left alone

    def fsp_task(ctx):
        return {}, {}

    fsp_task.trial_kind = "screening"
    assert [task_kind(t) for t in ("final", "robnet_supernet", "evaluate")] == ["final", "supernet", OBJECTIVE]
    assert task_kind("robnet_fsp", fsp_task) == "screening"
    assert for_nni({"default": 7102.1}, task="robnet_fsp", kind="screening")["default"] == "robnet_fsp · 7102"
    # MSRobNet's random stage before the family selection: not ranked as the objective
    assert task_kind("evaluate", None, {"provisional": True, "family": "log_power"}) == PROVISIONAL
    assert task_kind("evaluate", None, {"provisional": False}) == OBJECTIVE
    shown = for_nni({"default": 0.358, "est_log_power": 0.358}, task="evaluate", kind=PROVISIONAL)
    assert shown["default"] == "evaluate · 0.358 (provisional)" and restore(shown)["default"] == 0.358


def test_parameter_summary_is_flat_and_short():
    args = {"widths": [4, 6, 8], "target_mflops": 1.5, "family": "log_power", "supernet_dir": "/x/supernets",
            "arch": '{"space": "darts"}', "mode": "multishot", "flag": True, "note": None, "a": 1, "b": 2, "c": 3}
    out = parameter_summary("evaluate", args)
    assert out == {"kind": "evaluate", "target_mflops": 1.5, "family": "log_power", "mode": "multishot",
                   "flag": True, "a": 1}
    assert all(not isinstance(v, (dict, list)) for v in out.values()) and SUMMARY_KEY == "mutation_summary"


# ---------------------------------------------------------------------------- a fake experiment
def _arch() -> DartsArch:
    pairs = [("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("dil_conv_3x3", 2),
             ("max_pool_3x3", 1), ("sep_conv_5x5", 3), ("skip_connect", 0), ("avg_pool_3x3", 4)]
    return DartsArch({"normal": pairs, "reduce": pairs})


def _fake_experiment(root: Path) -> tuple[Path, Path]:
    exp = root / EXP
    work = exp / "nni_robust"
    (exp / "db").mkdir(parents=True)
    work.mkdir()
    settings = {"dataset": "digits", "space": {"name": "darts", "num_cells": 3}}
    profile = {"experimentName": "fake-quick", "tuner": {"className": "nni_robust.strategies.bridge.StrategyTuner",
                                                         "classArgs": {"strategy": "msrobnet", "settings": settings,
                                                                       "space": {"name": "darts"}}}}
    trials = [  # id, task, start s, seconds, status, final as the task returned it
        ("aaaaa", "supernet", 0, 120, "SUCCEEDED", {"default": 0.31, "probe_acc_clean": 0.4, "width": 4.0}),
        ("bbbbb", "supernet", 0, 180, "SUCCEEDED", {"default": 0.35, "probe_acc_clean": 0.45, "width": 8.0}),
        # a random-stage estimate under a stand-in family (provisional): higher, but not the best once re-read
        ("ccccc", "evaluate", 200, 60, "SUCCEEDED", {"default": 0.60, "reward_c4": 0.3, "seconds": 9.0}),
        ("ddddd", "evaluate", 200, 50, "SUCCEEDED", {"default": 0.57, "reward_c4": 0.4}),
        ("eeeee", "evaluate", 270, 10, "FAILED", None),
        ("fffff", "final", 300, 400, "SUCCEEDED", {"default": 0.61, "acc_clean": 0.93, "acc_pgd20": 0.61}),
    ]
    con = sqlite3.connect(exp / "db" / "nni.sqlite")
    con.execute("CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, "
                "logPath text, sequenceId integer, message text, environmentId text)")
    con.execute("CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text, "
                "sequence integer, data text)")
    con.execute("CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime integer, "
                "endTime integer, logDir text, nextSequenceId integer, revision integer)")
    con.execute("INSERT INTO ExperimentProfile VALUES (?, ?, 0, ?, NULL, ?, 6, 3)",
                (json.dumps(profile), EXP, T0, str(exp)))
    records = []
    for seq, (tid, task, start, secs, status, final) in enumerate(trials):
        folder = exp / "environments" / "local-env" / "trials" / tid
        folder.mkdir(parents=True)
        args = {"width": 4, "provisional": True} if tid == "ccccc" else {"width": 4}
        params = {"task": task, "sample": {"pick": tid} if task == "evaluate" else None, "args": args,
                  "settings": settings, "work_dir": str(work), "model_id": seq,
                  SUMMARY_KEY: parameter_summary(task, args)}
        hp = json.dumps({"parameter_id": seq, "parameter_source": "algorithm", "parameters": params,
                         "parameter_index": 0})
        con.execute("INSERT INTO TrialJobEvent VALUES (?, ?, 'WAITING', ?, ?, ?, NULL, 'local-env')",
                    (T0 + 1000 * start - 500, tid, hp, str(folder), seq))
        con.execute("INSERT INTO TrialJobEvent VALUES (?, ?, 'RUNNING', NULL, ?, ?, NULL, 'local-env')",
                    (T0 + 1000 * start, tid, str(folder), seq))
        con.execute("INSERT INTO TrialJobEvent VALUES (?, ?, ?, NULL, ?, ?, NULL, 'local-env')",
                    (T0 + 1000 * (start + secs), tid, status, str(folder), seq))
        if final is not None:  # stored as NNI stores it: the display form, JSON inside a JSON string
            shown = for_nni(final, task=task, kind=task_kind(task, None, args))
            con.execute("INSERT INTO MetricData VALUES (?, ?, ?, 'FINAL', 0, ?)",
                        (T0 + 1000 * (start + secs), tid, str(seq), json.dumps(json.dumps(shown))))
            con.execute("INSERT INTO MetricData VALUES (?, ?, ?, 'PERIODICAL', 0, ?)",
                        (T0 + 1000 * start + 1, tid, str(seq), json.dumps(json.dumps({"default": 0.1}))))
        records.append({"parameter_id": seq, "model_id": seq, "status": status, "metric": (final or {}).get("default"),
                        "result": final, "parameters": params, "time": (T0 / 1000) + start + secs,
                        "experiment_id": EXP})
    con.commit()
    con.close()
    (work / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    arch = _arch()
    (work / "best_architecture.json").write_text(json.dumps({"arch": arch.to_json(), "estimate": 0.55,
                                                             "family": "ilog2", "sample": {"pick": "ddddd"}}))
    record_warning(work, "msrobnet.family", "The chosen family's correlation is not positive (-0.12).", tau=-0.12)
    (work / "family_selection").mkdir()
    (work / "family_selection" / "loo.md").write_text("# Family selection\n\n| family | tau |\n|---|---|\n"
                                                      "| ilog2 | 0.5 |\n\n![plot](loo.png)\n")
    (work / "family_selection" / "loo.png").write_bytes(PNG)
    final_dir = exp / "environments" / "local-env" / "trials" / "fffff"
    history = [{"epoch": e, "train_acc": 0.2 * e, "train_loss": 2.0 / e} for e in (1, 2, 3)]
    report = {"arch": arch.to_json(), "init_channels": 8, "mflops": 1.7, "params_M": 0.09, "epochs": 3,
              "test_images": 359, "train_seconds": 380.0, "history": history,
              "accuracy": {"pgd100": 0.6, "clean": 0.93, "pgd20": 0.61, "fgsm": 0.7, "pgd7": 0.62},
              "robustness": {"suite": "quick", "metrics": {"autoattack": 0.55}, "warnings": ["FGSM beats PGD-20."]}}
    (final_dir / "final_report.json").write_text(json.dumps(report))
    (final_dir / "robustness.md").write_text("# Robustness report: DartsNetwork\n\n## AutoAttack\n\n55.00%\n")
    return exp, work


def test_locate_by_id_folder_and_work_dir(tmp_path):
    exp, work = _fake_experiment(tmp_path)
    assert locate_experiment(EXP, experiment_dir=tmp_path) == (exp, work)
    assert locate_experiment(exp) == (exp, work)
    assert locate_experiment(work, experiment_dir=tmp_path) == (exp, work)
    with pytest.raises(ConfigError, match="nowhere"):
        locate_experiment(tmp_path / "nowhere", experiment_dir=tmp_path)


def test_report_page_from_a_fake_experiment(tmp_path):
    exp, work = _fake_experiment(tmp_path)
    data = load_experiment(EXP, experiment_dir=tmp_path)
    sup = data["trials"][0]
    assert sup["final"]["default"] == 0.31 and sup["kind"] == "supernet" and sup["duration"] == 120.0
    paths = write_report(EXP, experiment_dir=tmp_path)
    md = paths["md"].read_text()
    folder = work / "experiment_report"
    assert paths["folder"] == folder and (folder / "index.html").is_file()
    # stages in the order they started, with counts, durations and the default's range
    rows = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |", "| 4 |"))]
    assert "`supernet`" in rows[0] and "2 of 2 succeeded" in rows[0] and "5 min 00 s" in rows[0]
    assert "0.310 – 0.330 – 0.350" in rows[0]
    # the provisional evaluation and the objective's are separate stages of one task
    assert data["trials"][2]["kind"] == PROVISIONAL and data["trials"][3]["kind"] == OBJECTIVE
    assert "`evaluate`" in rows[1] and "provisional" in rows[1] and "1 of 1 succeeded" in rows[1]
    assert "| 0.600 |" in rows[1]
    assert "`evaluate`" in rows[2] and "the search's objective" in rows[2] and "1 of 2 succeeded (FAILED)" in rows[2]
    assert "| 0.570 |" in rows[2]
    assert "`final`" in rows[3] and "6 min 40 s" in rows[3]
    assert "| 3 | `ddddd` ★ | evaluate |" in md  # the export's best, not the provisional 0.60
    # at a glance (the export's value), warnings (warnings.jsonl and the robustness suite's)
    assert "trial `ddddd` (evaluate), objective **0.550** (the search's export" in md
    assert "AutoAttack 55.0%" in md and "2 warnings" in md
    assert "**msrobnet.family**: The chosen family's correlation is not positive (-0.12)." in md
    assert "**final.robustness**: FGSM beats PGD-20." in md
    # the final evaluation, attacks from the weakest to the strongest, and the curve
    order = [md.index(f"| {a} |") for a in ("clean", "fgsm", "pgd7", "pgd20", "pgd100")]
    assert order == sorted(order) and (folder / "figures" / "training.png").stat().st_size > 5_000
    assert "#### AutoAttack" in md  # the robustness report, headings demoted under the page's
    # the architecture drawn, the method's report embedded with its picture copied beside the page
    assert (folder / "figures" / "architecture.png").read_bytes()[:8] == PNG[:8]
    assert "![architecture](figures/architecture.png)" in md
    assert "#### Family selection" in md and "](figures/family_selection_loo.png)" in md
    assert (folder / "figures" / "family_selection_loo.png").read_bytes() == PNG
    html = paths["html"].read_text()
    assert "<table>" in html and '<img alt="architecture" src="figures/architecture.png"' in html
    assert "<details" in html and "| stage |" not in html  # the tables were converted


def test_report_of_a_work_dir_without_nni(tmp_path):
    _, work = _fake_experiment(tmp_path)
    import shutil

    shutil.rmtree(work.parent / "db")  # e.g. a search run in-process: the bridge's records alone
    paths = write_report(work, out=tmp_path / "page", experiment_dir=tmp_path / "none")
    md = paths["md"].read_text()
    assert "`supernet`" in md and "2 of 2 succeeded" in md and "| 3 | `#3` ★ | evaluate |" in md
    # without the export the largest objective default (the provisional trial is not ranked)
    (work / "best_architecture.json").unlink()
    md = write_report(work, out=tmp_path / "page2", experiment_dir=tmp_path / "none")["md"].read_text()
    assert "| 3 | `#3` ★ | evaluate |" in md and "objective **0.570** (the largest `default`)" in md
    assert "<h1" in to_html(md, "t") and (tmp_path / "page" / "figures" / "architecture.png").is_file()


def test_report_of_an_optuna_experiment_shows_its_pareto_front(tmp_path):
    from nni_robust.strategies.tradeoff.pareto import write_pareto

    trials = [{"number": 0, "values": [0.9, 0.5], "params": {"lam": 0.2}},
              {"number": 1, "values": [0.8, 0.6], "params": {"lam": 0.7}},
              {"number": 2, "values": [0.7, 0.4], "params": {"lam": 0.9}}]  # dominated by both others
    write_pareto(trials, ["acc_clean", "acc_pgd20"], ["maximize", "maximize"], tmp_path / "work", plot=False)
    md = write_report(tmp_path / "work", experiment_dir=tmp_path)["md"].read_text()
    front = md[md.index("## Pareto front"):]
    assert "Pareto front: 2 of 3 trials" in front and "| lam |" in front
    assert "| 0 | 0.9 | 0.5 | 0.2 |" in front and "| 1 | 0.8 | 0.6 | 0.7 |" in front
