"""OptunaTuner: search-space mapping, classArgs, and the tuner driven in-process the way NNI's
dispatcher drives it (generate -> final result -> trial end; import_data on resume)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nni_robust.errors import ConfigError
from nni_robust.strategies.tradeoff.optuna_tuner import (
    NORMAL_TRUNCATION, OptunaTuner, extract_objectives, map_search_space, parse_objectives,
)
from nni_robust.strategies.tradeoff.pareto import pareto_front

PNG = b"\x89PNG\r\n\x1a\n"
TWO = [{"key": "f1", "direction": "minimize"}, {"key": "f2", "direction": "minimize"}]
SPACE = {"x0": {"_type": "uniform", "_value": [0.0, 1.0]},
         "x1": {"_type": "quniform", "_value": [0.0, 1.0, 0.05]},
         "kind": {"_type": "choice", "_value": ["a", "b"]}}


def zdt1(p):
    """ZDT1 on (x0, x1), both minimised; the Pareto-optimal set is x1 = 0."""
    f1 = p["x0"]
    g = 1.0 + 9.0 * p["x1"]
    return {"f1": f1, "f2": g * (1.0 - math.sqrt(f1 / g)), "default": -f1}


def load(tuner):
    """The study as stored on disk, read independently of the tuner."""
    return optuna.load_study(study_name=tuner.study_name, storage=tuner.storage_url)


# ---------------------------------------------------------------------- search-space mapping
def test_choice_maps_to_categorical():
    sp = map_search_space({"act": {"_type": "choice", "_value": ["relu", "gelu"]},
                           "w": {"_type": "choice", "_value": [16, 32, 0.5, None]},
                           "shape": {"_type": "choice", "_value": [[1, 2], [3]]}})
    assert sp["act"].distribution == CategoricalDistribution(["relu", "gelu"])
    assert sp["act"].to_nni("gelu") == "gelu" and sp["act"].from_nni("relu") == "relu"
    assert sp["w"].distribution == CategoricalDistribution([16, 32, 0.5, None])
    # lists are not Optuna choices: searched by index, sent as the value
    assert sp["shape"].distribution == CategoricalDistribution([0, 1])
    assert sp["shape"].to_nni(1) == [3] and sp["shape"].from_nni([1, 2]) == 0
    with pytest.raises(ValueError):
        sp["act"].from_nni("tanh")


def test_randint_is_upper_exclusive():
    p = map_search_space({"layers": {"_type": "randint", "_value": [2, 5]}})["layers"]
    assert p.distribution == IntDistribution(2, 4)
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    seen = {p.to_nni(study.ask({"layers": p.distribution}).params["layers"]) for _ in range(60)}
    assert seen == {2, 3, 4} and all(type(v) is int for v in seen)


def test_uniform_and_loguniform():
    sp = map_search_space({"u": {"_type": "uniform", "_value": [-1, 3]},
                           "lr": {"_type": "loguniform", "_value": [1e-4, 1e-1]}})
    assert sp["u"].distribution == FloatDistribution(-1.0, 3.0)
    assert sp["lr"].distribution == FloatDistribution(1e-4, 1e-1, log=True)
    assert sp["lr"].to_nni(0.003) == 0.003
    with pytest.raises(ValueError):
        sp["lr"].from_nni(0.5)


def test_quniform_follows_nni_rounding():
    sp = map_search_space({"a": {"_type": "quniform", "_value": [0, 1, 0.25]},
                           "b": {"_type": "quniform", "_value": [1, 11, 3]},
                           "c": {"_type": "qloguniform", "_value": [1, 100, 10]}})
    # bounds on the q grid: Optuna's step grid is NNI's grid
    assert sp["a"].distribution == FloatDistribution(0.0, 1.0, step=0.25)
    # NNI: clip(round(x / q) * q, low, high), multiples of q counted from 0
    assert sp["b"].distribution == FloatDistribution(1.0, 11.0)
    xs = np.linspace(1.0, 11.0, 401)
    assert {sp["b"].to_nni(x) for x in xs} == {1.0, 3.0, 6.0, 9.0, 11.0}  # 0 and 12 clipped
    assert sp["c"].distribution == FloatDistribution(1.0, 100.0, log=True)
    assert {sp["c"].to_nni(x) for x in np.geomspace(1, 100, 300)} == {1.0, 10.0, 20.0, 30.0, 40.0, 50.0,
                                                                        60.0, 70.0, 80.0, 90.0, 100.0}
    assert sp["a"].from_nni(0.75) == 0.75
    with pytest.raises(ValueError):
        sp["a"].from_nni(0.3)


def test_normal_types_search_the_quantile():
    sp = map_search_space({"n": {"_type": "normal", "_value": [2.0, 0.5]},
                           "ln": {"_type": "lognormal", "_value": [0.0, 1.0]},
                           "qn": {"_type": "qnormal", "_value": [10.0, 3.0, 2.0]}})
    dist = sp["n"].distribution
    assert isinstance(dist, FloatDistribution) and not dist.log
    assert 0.0 < dist.low < 1e-8 and 1 - 1e-8 < dist.high < 1.0
    # a uniform draw of the quantile is a draw of NNI's normal prior
    u = np.random.default_rng(0).uniform(dist.low, dist.high, 20000)
    x = np.array([sp["n"].to_nni(v) for v in u])
    assert abs(x.mean() - 2.0) < 0.02 and abs(x.std() - 0.5) < 0.02
    assert 2.0 - NORMAL_TRUNCATION * 0.5 - 1e-6 <= sp["n"].to_nni(dist.low)
    assert sp["n"].to_nni(0.5) == pytest.approx(2.0)
    assert sp["n"].to_nni(sp["n"].from_nni(2.7)) == pytest.approx(2.7)
    ln = np.array([sp["ln"].to_nni(v) for v in u[:5000]])
    assert (ln > 0).all() and abs(np.median(ln) - 1.0) < 0.05
    qn = {sp["qn"].to_nni(v) for v in u[:2000]}
    assert all(v % 2.0 == 0 for v in qn)


@pytest.mark.parametrize("spec, match", [
    ({"p": {"_type": "mutable_layer", "_value": [1]}}, "'p' has type 'mutable_layer'"),
    ({"p": {"_type": "unifrom", "_value": [0, 1]}}, "Did you mean 'uniform'"),
    ({"p": {"_type": "choice", "_value": [{"_name": "a", "x": {"_type": "uniform", "_value": [0, 1]}}]}},
     "'p'.*nested"),
    ({"p": {"_type": "uniform", "_value": [1, 0]}}, "'p'.*low must be < high"),
    ({"p": {"_type": "loguniform", "_value": [0, 1]}}, "'p'.*low must be > 0"),
    ({"p": {"_type": "normal", "_value": [0, -1]}}, "'p'.*sigma must be > 0"),
    ({"p": {"_type": "quniform", "_value": [0, 1]}}, "'p'.*expected 3 numbers"),
    ({"p": {"_type": "randint", "_value": [3, 3]}}, "'p'.*lower < upper"),
    ({"p": {"_type": "uniform", "_value": [0, "x"]}}, "'p'.*finite numbers"),
    ({"p": [0, 1]}, "'p' must be a dict"),
])
def test_unsupported_or_malformed_parameters_are_named(spec, match):
    with pytest.raises(ConfigError, match=match):
        map_search_space(spec)


# ---------------------------------------------------------------------- objectives, classArgs
def test_extract_objectives():
    objs = parse_objectives(None)
    assert extract_objectives(0.5, objs) == ([0.5], None)
    assert extract_objectives({"default": 0.7, "x": 1}, objs) == ([0.7], None)
    objs = parse_objectives(TWO)
    assert extract_objectives({"f1": 1, "f2": np.float32(2.0)}, objs) == ([1.0, 2.0], None)
    values, reason = extract_objectives({"f1": 1.0}, objs)
    assert values is None and "'f2' is missing" in reason
    assert "not a finite number" in extract_objectives({"f1": 1.0, "f2": float("nan")}, objs)[1]
    assert "not a finite number" in extract_objectives({"f1": True, "f2": 1.0}, objs)[1]
    assert extract_objectives('{"f1": 1, "f2": 2}', objs) == ([1.0, 2.0], None)


@pytest.mark.parametrize("kwargs, match", [
    ({"samplr": "tpe"}, "'samplr'.*Did you mean 'sampler'"),
    ({"sampler": "nsga"}, "Unknown sampler 'nsga'.*nsga2"),
    ({"sampler": "tpe", "sampler_args": {"n_startup": 3}}, "'n_startup'.*n_startup_trials"),
    ({"sampler": "cmaes", "objectives": TWO}, "single objective"),
    ({"objectives": [{"key": "a", "direction": "max"}]}, "'max'"),
    ({"objectives": [{"key": "a"}, {"key": "a"}]}, r"\['a'\] more than once"),
    ({"objectives": "default"}, "non-empty list"),
    ({"seed": 1, "sampler_args": {"seed": 2}}, "seed once"),
    ({"fail_grace": -1}, "'fail_grace'"),
])
def test_bad_class_args_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OptunaTuner(work_dir=tmp_path, **kwargs)


def test_work_dir_defaults_to_the_experiment_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NNI_LOG_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="'work_dir' is required"):
        OptunaTuner()
    monkeypatch.setenv("NNI_LOG_DIRECTORY", str(tmp_path / "abc123" / "log"))
    tuner = OptunaTuner()
    assert tuner.work_dir == (tmp_path / "abc123" / "nni_robust").resolve()
    assert tuner.study_name == "abc123"
    assert tuner.storage_url == f"sqlite:///{tuner.work_dir / 'optuna.db'}"


# ---------------------------------------------------------------------- in-process runs
def run_trials(tuner, ids, *, fail=(), missing=(), concurrency=2):
    """Drive ``tuner`` like NNI: ``concurrency`` trials in flight, result then trial end."""
    ids = list(ids)
    pending: list[tuple[int, dict]] = []
    reported = {}
    while ids or pending:
        while ids and len(pending) < concurrency:
            pid = ids.pop(0)
            pending.append((pid, tuner.generate_parameters(pid)))
        pid, params = pending.pop(0)
        if pid in fail:
            tuner.trial_end(pid, False)
            continue
        value = zdt1(params)
        if pid in missing:
            del value["f2"]
        tuner.receive_trial_result(pid, params, value, trial_job_id=f"job{pid}")
        tuner.trial_end(pid, True)
        reported[pid] = (params, value)
    return reported


def test_nsga2_run_is_stored_with_reports(tmp_path):
    tuner = OptunaTuner(objectives=TWO, sampler_args={"population_size": 6}, seed=0, work_dir=tmp_path,
                        fail_grace=0, study_name="zdt1")
    tuner.update_search_space(SPACE)
    reported = run_trials(tuner, range(30), fail={4, 17}, missing={9})
    tuner.flush()

    study = load(tuner)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(30))
    for t in trials:
        pid = t.user_attrs["nni_parameter_id"]
        assert t.number == pid  # asked in order
        params = t.user_attrs["nni_parameters"]
        assert set(params) == {"x0", "x1", "kind"} and params["x1"] in np.round(np.arange(0, 1.01, 0.05), 10)
        if pid in (4, 17, 9):
            assert t.state == TrialState.FAIL
            assert ("'f2' is missing" if pid == 9 else "without a final result") in t.user_attrs["nni_fail_reason"]
            continue
        assert t.state == TrialState.COMPLETE
        assert reported[pid][0] == params
        assert t.values == pytest.approx([reported[pid][1]["f1"], reported[pid][1]["f2"]])
        assert t.user_attrs["nni_trial_job_id"] == f"job{pid}"
        assert t.user_attrs["nni_result"] == reported[pid][1]
    # NSGA-II went past its random first generation, which needs the told values
    assert max(t.system_attrs.get("NSGAIISampler:generation", 0) for t in trials) >= 2

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    front = {complete[i].number for i in pareto_front([t.values for t in complete], ["minimize", "minimize"])}
    with open(tmp_path / "pareto.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["trial"]) for r in rows} == front
    assert [float(r["f1"]) for r in rows] == sorted(float(r["f1"]) for r in rows)  # best f1 first
    assert f"Pareto front: {len(front)} of {len(complete)} trials" in (tmp_path / "pareto.md").read_text()
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    with open(tmp_path / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows].count("FAIL") == 3
    assert {int(r["trial"]) for r in rows if r["pareto"] == "1"} == front
    assert all(r["result.default"] != "" for r in rows if r["state"] == "COMPLETE")

    # TensorBoard HPARAMS: one run per completed trial with its parameters and objectives
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == [f"trial_{t.number:05d}" for t in complete]
    (event_file,) = (tmp_path / "tensorboard" / runs[-1]).glob("events.out.tfevents.*")
    hparams, scalars = {}, {}
    for event in EventFileLoader(str(event_file)).Load():
        for v in event.summary.value:
            if v.tag == "_hparams_/session_start_info":
                data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                hparams = {k: x.WhichOneof("kind") for k, x in data.session_start_info.hparams.items()}
            elif v.tag.startswith("objective/"):
                scalars[v.tag] = v.tensor.float_val[0] if v.tensor.float_val else v.simple_value
    assert hparams == {"x0": "number_value", "x1": "number_value", "kind": "string_value"}
    assert scalars == pytest.approx({"objective/f1": complete[-1].values[0], "objective/f2": complete[-1].values[1]})
    tuner.close()


def test_resume_continues_the_same_study(tmp_path):
    kwargs = dict(objectives=TWO, sampler_args={"population_size": 20}, seed=0, work_dir=tmp_path,
                  fail_grace=0, study_name="resumed", tensorboard=False, plot=False)
    first = OptunaTuner(**kwargs)
    first.update_search_space(SPACE)
    reported = run_trials(first, range(4), fail={2})
    running = first.generate_parameters(4)  # still running when the experiment stops
    first.close()
    first_params = [t.user_attrs["nni_parameters"] for t in load(first).get_trials()]

    # nnictl resume: a new tuner process on the same storage and study
    second = OptunaTuner(**kwargs)
    second.update_search_space(SPACE)
    # NNI re-sends the finished trials' results (with their job ids) ...
    second.import_data([{"parameter": p, "value": v, "trialJobId": f"job{pid}"} for pid, (p, v) in reported.items()])
    assert len(load(second).get_trials()) == 5  # nothing told twice
    # ... and re-runs the trial that was running; its result arrives through import_data
    second.import_data([{"parameter": running, "value": zdt1(running)}])
    reported2 = run_trials(second, range(5, 9))
    second.flush()

    trials = load(second).get_trials()
    assert [t.number for t in trials] == list(range(9))  # numbers continue, none lost
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 6
    assert trials[4].user_attrs["nni_parameters"] == running
    assert trials[4].values == pytest.approx([zdt1(running)["f1"], zdt1(running)["f2"]])
    new_params = [t.user_attrs["nni_parameters"] for t in trials[5:]]
    assert [reported2[pid][0] for pid in range(5, 9)] == new_params
    assert not any(p in first_params for p in new_params)  # the resumed sampler does not replay draws
    assert {t.user_attrs["nni_session"] for t in trials[:5]} == {first.session}
    assert {t.user_attrs["nni_session"] for t in trials[5:]} == {second.session}
    # the trial asked before the stop was told by the resumed process; the failed one by neither
    assert trials[4].user_attrs["nni_told_session"] == second.session
    assert {t.user_attrs["nni_told_session"] for t in trials[:2]} == {first.session}
    assert "nni_told_session" not in trials[2].user_attrs

    # a foreign record is added; one outside the search space is skipped; known ones stay known
    foreign = {"x0": 0.5, "x1": 0.25, "kind": "b"}
    second.import_data([{"parameter": foreign, "value": zdt1(foreign)},
                        {"parameter": {"x0": 3.0, "x1": 0.0, "kind": "a"}, "value": {"f1": 0, "f2": 0}},
                        {"parameter": running, "value": zdt1(running)}])
    trials = load(second).get_trials()
    assert len(trials) == 10 and trials[9].user_attrs["nni_imported"] is True
    assert trials[9].user_attrs["nni_parameters"] == foreign and trials[9].state == TrialState.COMPLETE
    second.close()

    with pytest.raises(ConfigError, match="objectives"):
        third = OptunaTuner(**{**kwargs, "objectives": [{"key": "f1", "direction": "maximize"}]})
        third.update_search_space(SPACE)


def test_trial_end_before_result_waits_for_the_grace(tmp_path):
    tuner = OptunaTuner(objectives=TWO, sampler="random", seed=1, work_dir=tmp_path, fail_grace=0.3,
                        report_interval=0.0, tensorboard=False, plot=False)
    tuner.update_search_space(SPACE)
    p0, p1 = tuner.generate_parameters(0), tuner.generate_parameters(1)
    start = time.monotonic()
    tuner.trial_end(0, False)  # ends before its result is delivered
    tuner.trial_end(1, False)  # ends without any result
    assert time.monotonic() - start < 0.2  # never blocks
    tuner.receive_trial_result(0, p0, zdt1(p0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and load(tuner).get_trials()[1].state == TrialState.RUNNING:
        time.sleep(0.05)  # the worker thread tells FAIL once the grace has passed
    states = [t.state for t in load(tuner).get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    tuner.close()


def test_single_objective_tpe_with_float_results(tmp_path):
    tuner = OptunaTuner(sampler="tpe", sampler_args={"n_startup_trials": 4}, seed=0, work_dir=tmp_path,
                        tensorboard=False, fail_grace=0)
    tuner.update_search_space({"x": {"_type": "uniform", "_value": [-2.0, 2.0]},
                               "n": {"_type": "normal", "_value": [0.0, 1.0]}})
    best = -math.inf
    for pid in range(12):
        p = tuner.generate_parameters(pid)
        value = -(p["x"] - 1.0) ** 2 - 0.1 * p["n"] ** 2
        best = max(best, value)
        tuner.receive_trial_result(pid, p, value)  # a bare float is {"default": value}
        tuner.trial_end(pid, True)
    tuner.flush()
    study = load(tuner)
    assert study.best_value == pytest.approx(best)
    with open(tmp_path / "pareto.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert int(row["trial"]) == study.best_trial.number and float(row["default"]) == pytest.approx(best)
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    tuner.close()


def test_unknown_parameter_id_result_is_imported(tmp_path):
    tuner = OptunaTuner(objectives=TWO, sampler="random", seed=0, work_dir=tmp_path, tensorboard=False,
                        plot=False)
    tuner.update_search_space(SPACE)
    p = {"x0": 0.25, "x1": 0.5, "kind": "a"}
    tuner.receive_trial_result(77, p, zdt1(p), trial_job_id="X")
    (t,) = load(tuner).get_trials()
    assert t.state == TrialState.COMPLETE and t.user_attrs["nni_trial_job_id"] == "X"
    assert Path(tuner.storage_url[len("sqlite:///"):]).is_file()
    tuner.close()


def test_no_trial_is_asked_beyond_the_experiments_max_trial_number(tmp_path, monkeypatch):
    """After nnictl resume, NNI 3.0 over-asks by one and drops the answer: the tuner must refuse
    (NoMoreTrialError) rather than leave a never-run trial RUNNING in the study."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import nni

    def job(name, pid):
        return {"trialJobId": name, "hyperParameters": [json.dumps({"parameter_id": pid, "parameters": {}})]}

    state = {"jobs": [job("a", 100), job("b", 101)], "max": 4}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = {"params": {"maxTrialNumber": state["max"]}} if self.path.endswith("/experiment") \
                else state["jobs"]
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("NNI_TUNER_COMMAND_CHANNEL", f"ws://127.0.0.1:{server.server_port}/tuner")
        tuner = OptunaTuner(objectives=TWO, seed=0, work_dir=tmp_path, study_name="budget")
        tuner.update_search_space(SPACE)
        assert set(tuner.generate_parameters(0)) == {"x0", "x1", "kind"}  # 2 jobs < 4
        assert set(tuner.generate_parameters(1)) == {"x0", "x1", "kind"}  # 2 jobs + 1 queued < 4
        with pytest.raises(nni.NoMoreTrialError):  # 2 jobs + 2 queued (not yet jobs)
            tuner.generate_parameters(5)
        state["jobs"] += [job("c", 0), job("d", 1)]
        with pytest.raises(nni.NoMoreTrialError):  # 4 jobs
            tuner.generate_parameters(1)
        assert tuner.generate_multiple_parameters([1, 2]) == []  # NNI's default path: no parameters
        assert len(load(tuner).get_trials()) == 2  # nothing more asked of the study
        state["max"] = None  # no limit: asks again
        assert set(tuner.generate_parameters(3)) == {"x0", "x1", "kind"}
        tuner.close()
    finally:
        server.shutdown()


def test_a_front_within_test_set_noise_is_a_warning_until_a_trial_resolves_it(tmp_path):
    """Accuracies on 359 test images: 40 % against 43 % is within noise (2 standard errors of the difference
    are 7.3 points), so the front shows no trade-off: pareto.md and warnings.jsonl say so; a later trial that
    is clearly better withdraws the warning."""
    from nni_robust.strategies.trust import read_warnings

    acc = [{"key": "acc_clean", "direction": "maximize"}, {"key": "acc_pgd20", "direction": "maximize"}]
    kwargs = dict(objectives=acc, seed=0, work_dir=tmp_path, fail_grace=0, study_name="noise", tensorboard=False,
                  plot=False)
    tuner = OptunaTuner(**kwargs)
    tuner.update_search_space({"lam": {"_type": "uniform", "_value": [0.0, 1.0]}})
    results = [(0.396, 0.234), (0.396, 0.234), (0.429, 0.270)]
    for pid, (clean, pgd) in enumerate(results):
        params = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, params, {"default": pgd, "acc_clean": clean, "acc_pgd20": pgd,
                                                 "test_images": 359.0})
        tuner.trial_end(pid, True)
    tuner.flush()
    (warning,) = read_warnings(tmp_path)
    assert warning["source"] == "tradeoff.noise" and warning["trials"] == 3
    assert "acc_clean spans 39.6-42.9% (2 standard errors of the difference: 7.3 points)" in warning["message"]
    assert "359 test images" in warning["message"]
    assert warning["message"] in (tmp_path / "pareto.md").read_text()

    params = tuner.generate_parameters(3)  # a trial far outside the noise: a real difference
    tuner.receive_trial_result(3, params, {"default": 0.8, "acc_clean": 0.9, "acc_pgd20": 0.8, "test_images": 359.0})
    tuner.trial_end(3, True)
    tuner.flush()
    assert read_warnings(tmp_path) == []
    assert "Warning" not in (tmp_path / "pareto.md").read_text()
    tuner.close()

    # results without test_images (or objectives that are not accuracies) are not judged
    other = tmp_path / "other"
    tuner = OptunaTuner(**dict(kwargs, work_dir=other, study_name="unjudged"))
    tuner.update_search_space({"lam": {"_type": "uniform", "_value": [0.0, 1.0]}})
    for pid in range(2):
        params = tuner.generate_parameters(pid)
        tuner.receive_trial_result(pid, params, {"default": 0.3, "acc_clean": 0.4, "acc_pgd20": 0.3})
        tuner.trial_end(pid, True)
    tuner.flush()
    assert read_warnings(other) == []
    tuner.close()
