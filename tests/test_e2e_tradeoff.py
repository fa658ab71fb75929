"""End to end under nnictl: the quick trade-off experiment (Optuna tunes the multi-shot reward's
lambda; each trial runs a whole small search and the final evaluation), stopped after its first
trial and resumed: the Optuna study in its SQLite file must hold every NNI trial exactly once,
with its objectives, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState


ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "tradeoff-msrobnet-quick.yml"
MAX_TRIALS = 2  # one before the stop (it trains the shared supernets), one after the resume
# the smallest budgets that still run every stage of each trial's search (the later --set of a key wins)
SMALLEST = (" --set 'strategy_args.widths=[4, 6, 8]' --set strategy_args.num_random=3"
            " --set strategy_args.population=3 --set strategy_args.tournament=2 --set strategy_args.steps=2"
            " --set strategy_args.target_mflops=1.0 --set settings.supernet.epochs=1"
            " --set 'settings.final.train={epochs: 1, milestones: [1], batch_size: 128, channels_last: true}'")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(nnictl):
    command = yaml.safe_load(QUICK.read_text())["trialCommand"] + SMALLEST
    first = nnictl.run("tradeoff-msrobnet-quick", timeout=1200, stop_after=1,
                       overrides={"maxTrialNumber": MAX_TRIALS, "trialConcurrency": 1, "trialCommand": command})
    study_after_stop = _study(first)
    second = nnictl.resume(first, timeout=1200)
    return first, study_after_stop, second


def _study(run):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = Path(run["work_dir"]) / "optuna.db"
    assert db.exists(), f"no study database in {run['work_dir']}"
    return [(t.number, t.state, dict(t.params), t.values, dict(t.user_attrs))
            for t in optuna.load_study(study_name=run["id"], storage=f"sqlite:///{db}").get_trials()]


def test_stop_after_the_first_trial(runs):
    first, study, _ = runs
    assert first["status"] == "STOPPED", first
    done = [t for t in first["trials"] if t["status"] == "SUCCEEDED"]
    assert len(done) >= 1
    complete = [s for s in study if s[1] == TrialState.COMPLETE]
    assert len(complete) == len(done)
    assert all(s[1] in (TrialState.COMPLETE, TrialState.RUNNING) for s in study)


def test_resume_continues_the_same_study_with_no_trial_lost_or_repeated(runs):
    first, before, second = runs
    assert second["id"] == first["id"] and second["status"] == "DONE", second
    trials = second["trials"]
    assert len(trials) == MAX_TRIALS and second["failed_trials"] == [], trials
    study = _study(second)
    # every NNI trial is one COMPLETE study trial, with the reported objectives, and nothing else
    assert [s[1] for s in study] == [TrialState.COMPLETE] * MAX_TRIALS, study
    assert [s[0] for s in study] == list(range(MAX_TRIALS))
    by_lam = {s[2]["lam"]: s for s in study}
    assert len(by_lam) == MAX_TRIALS
    for t in trials:
        s = by_lam[t["parameters"]["lam"]]
        assert s[3] == [t["final"]["acc_clean"], t["final"]["acc_pgd20"]]
        assert s[4]["nni_parameters"] == t["parameters"]
    # the trials stored before the stop are the same ones afterwards (not re-asked)
    for number, state, params, values, _ in before:
        assert study[number][2] == params
        if state == TrialState.COMPLETE:
            assert study[number][3] == values
    # two tuner sessions wrote to one study: the first asked (at least) the trial it ran, the
    # resumed one told (at least) the trial run after the resume (NNI may have asked for that
    # trial's parameters before the stop, then re-runs it)
    asked = {s[4]["nni_session"] for s in study}
    told = {s[4]["nni_told_session"] for s in study}
    assert len(asked | told) == 2, study
    assert told - {s[4]["nni_session"] for s in before if s[1] == TrialState.COMPLETE}, study


def test_trials_ran_a_search_and_a_final_evaluation(runs):
    _, _, second = runs
    search = yaml.safe_load(QUICK.read_text())
    for t in second["trials"]:
        final = t["final"]
        assert 0.0 <= final["acc_pgd20"] <= final["acc_clean"] <= 1.0
        assert final["search_evaluated"] >= 3 and 0.0 <= final["search_best_reward"] <= 1.0
        assert final["mflops"] > 0
        assert t["intermediate"] and all("default" in r for r in t["intermediate"])
    exp = Path(second["experiment_dir"])
    reports = sorted(exp.rglob("trials/*/tradeoff_report.json"))
    assert len(reports) >= MAX_TRIALS
    lams = set()
    for path in reports:
        report = json.loads(path.read_text())
        if report["final"] is None:
            continue
        lams.add(report["parameters"]["lam"])
        assert report["class_args"]["settings"]["evaluation"]["lam"] == report["parameters"]["lam"]
        assert report["best_architecture"] is not None
        assert (path.parent / "search" / "family_selection.md").exists() or \
            list((path.parent / "search").glob("family_selection*"))
        assert list((path.parent / "tensorboard").rglob("events.out.tfevents.*"))
    assert lams == {t["parameters"]["lam"] for t in second["trials"]}
    # the supernets are trained once, by the first trial, and shared
    supernets = exp / "shared" / "supernets"
    assert sorted(p.parent.name for p in supernets.glob("c*/supernet.pt")) == ["c4", "c6", "c8"]
    trained = [r for r in reports if any(t["task"] == "supernet"
                                         for t in json.loads(r.read_text())["trials"])]
    assert len(trained) == 1
    assert "lam" in search["searchSpace"]


def test_pareto_outputs(runs):
    _, _, second = runs
    work = Path(second["work_dir"])
    for name in ("pareto.md", "pareto.csv", "trials.csv"):
        assert (work / name).exists(), name
    assert (work / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((work / "tensorboard").rglob("events.out.tfevents.*"))
