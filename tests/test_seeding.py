"""Reproducibility (issue 15): seeded runs repeat exactly, resumes continue exactly.

Regression tests of four seeding bugs, each failing before its fix:

* models were built before anything was seeded, so a run's initial weights
  depended on what ran before it in the process (``train_final``,
  ``train_supernet``, the trial runner);
* ``PredictorSearch`` drew a new seed on resume when ``seed`` was null;
* the trainer reseeded every supernet with the same seed, so the K widths
  saw the same architecture sequence;
* the per-epoch probe drew its PGD random start from the training's
  generators after the epoch's checkpoint (and left its BatchNorm
  calibration in the supernet), so a resumed run diverged.

And the issue's "a tiny seeded run repeated twice gives identical metrics":
the MSRobNet ``supernet`` and ``final`` trial tasks, run twice in one process
with the global generators disturbed in between, give the same numbers and
weights bit for bit. Networks: the 3-cell dense robust space at 2 channels on
the 8x8 ``digits`` images, a 144-image training split.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from nni_robust.checkpoint import load_checkpoint
from nni_robust.errors import ConfigError
from nni_robust.seeding import derive_seed, isolated_rng, seed_everything
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.settings import TrialSettings
from nni_robust.strategies.supernet import supernet_path, uniform_sampler

LAYOUT = "cellwise-3"
SETTINGS = {
    "dataset": "digits", "device": "cpu", "seed": 0, "val_fraction": 0.9, "space": {"layout": LAYOUT},
    "supernet": {"epochs": 2, "batch_size": 64, "steps": 1, "step": 0.03},
    # the probe attacks with PGD from a random start (the resume bug needs one)
    "evaluation": {"attack": "pgd", "steps": 1, "step": 0.03, "calib_images": 32, "eval_images": 32,
                   "batch_size": 32, "calib_batch_size": 32},
    "final": {"train": {"epochs": 1, "milestones": [1], "batch_size": 512, "attack": "fgsm", "step": 0.03},
              "eval_images": 32, "eval_batch_size": 32,
              "attacks": {"pgd": {"name": "pgd", "eps": 0.03, "step": 0.01, "steps": 2}}},
}
SAMPLE = DenseRobArch.random(Layout.from_name(LAYOUT), random.Random(3)).to_sample()
_VOLATILE = ("seconds", "time_s", "images_per_s")


def disturb(n: int) -> None:
    """Advance every global generator by an amount that differs between calls."""
    for _ in range(n):
        random.random()
    np.random.rand(n)
    torch.rand(n)


def steady(d):
    """``d`` without its timings (the only numbers allowed to differ between runs)."""
    if isinstance(d, dict):
        return {k: steady(v) for k, v in d.items() if not any(t in k for t in _VOLATILE)}
    if isinstance(d, list):
        return [steady(v) for v in d]
    return d


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- nni_robust.seeding

def test_seed_everything_derive_seed_and_isolated_rng():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(5)
    first = draw()
    disturb(9)
    seed_everything(5)
    assert draw() == first
    # derived seeds: stable across processes (SHA-256, not Python's salted hash), distinct per key, 31 bits
    assert derive_seed(0, "supernet", 4) == 1250436244
    assert len({derive_seed(s, "supernet", w) for s in (0, 1) for w in (4, 6, 8)}) == 6
    assert all(0 <= derive_seed(s, "x") < 2 ** 31 for s in range(50))
    # a block with generators of its own: same draws at every entry, the outer stream untouched
    seed_everything(1)
    outer = draw(), draw()
    seed_everything(1)
    with isolated_rng(7):
        inside = draw()
    assert draw() == outer[0]
    with pytest.raises(RuntimeError), isolated_rng(7):
        assert draw() == inside
        raise RuntimeError("restored on errors too")
    assert draw() == outer[1]
    for bad in (1.5, True, "0", None):
        with pytest.raises(ConfigError, match="must be an integer"):
            seed_everything(bad)
    seed_everything(-1)  # (the settings allow negative seeds)
    assert 0 <= derive_seed(-1, "x") < 2 ** 31


def test_the_trial_runner_seeds_every_generator_from_settings_seed(monkeypatch, tmp_path):
    import nni_robust.trial.run as run_module

    def task(ctx):
        return {"default": 0.0}, {"draws": [random.random(), float(np.random.rand()), float(torch.rand(()))]}

    import nni_robust.strategies.registry as registry  # the runner looks tasks up lazily (no torch at import)

    monkeypatch.setattr(registry, "task_function", lambda name: task)
    draws = []
    for n, seed in ((1, 0), (17, 0), (1, 1)):
        disturb(n)
        params = {"task": "fake", "settings": {"dataset": "digits", "seed": seed}, "work_dir": str(tmp_path)}
        draws.append(run_module.run_task(params, nested=True)[1]["draws"])
    assert draws[0] == draws[1] != draws[2]


# --------------------------------------------------------------------------- bug a: models built unseeded

class _Stop(Exception):
    pass


def _initial_weights(monkeypatch, module, call):
    """The state dict of the model ``call`` hands to the trainer (stubbed: it stops the run there)."""
    captured = []

    class Trainer:
        def __init__(self, model, *args, **kwargs):
            captured.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            raise _Stop

    monkeypatch.setattr(module, "AdversarialTrainer", Trainer)
    with pytest.raises(_Stop):
        call()
    return captured[0]


@pytest.mark.parametrize("kind", ["final", "supernet"])
def test_initial_weights_come_from_the_seed_not_from_what_ran_before(monkeypatch, tmp_path, kind):
    import nni_robust.strategies.final as final_module
    import nni_robust.strategies.supernet as supernet_module

    def run(settings, tag):
        if kind == "final":
            arch = DenseRobArch.from_sample(SAMPLE, Layout.from_name(LAYOUT))
            return lambda: final_module.train_final(settings, arch, tmp_path / tag, init_channels=2)
        return lambda: supernet_module.train_supernet(settings, 2, tmp_path / tag, probe_images=8)

    module = final_module if kind == "final" else supernet_module
    settings = TrialSettings.from_dict(SETTINGS)
    disturb(1)
    a = _initial_weights(monkeypatch, module, run(settings, "a"))
    disturb(23)
    b = _initial_weights(monkeypatch, module, run(settings, "b"))
    assert_same_tensors(a, b)
    # ... and they are the training seed's: another seed, other weights
    other = dict(SETTINGS, **{"supernet": {**SETTINGS["supernet"], "seed": 1},
                              "final": {**SETTINGS["final"], "train": {**SETTINGS["final"]["train"], "seed": 1}}})
    c = _initial_weights(monkeypatch, module, run(TrialSettings.from_dict(other), "c"))
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# --------------------------------------------------------------------------- bug b: PredictorSearch's seed on resume

def test_predictor_search_resumes_with_its_drawn_seed(tmp_path):
    from nni_robust.strategies.msrobnet.predictor_search import PredictorSearch

    first = PredictorSearch(seed=None, work_dir=str(tmp_path))
    state = json.loads(json.dumps(first.state_dict()))  # the bridge keeps it as JSON
    assert state["seed"] == first.seed
    resumed = PredictorSearch(seed=None, work_dir=str(tmp_path))  # (draws another one)
    resumed.load_state_dict(state)
    assert resumed.seed == first.seed
    assert resumed._rng.getstate() == first._rng.getstate()


# --------------------------------------------------------------------------- the supernet and final tasks

def _supernet_run(work, monkeypatch, *, width=2, epochs=2, stop_after=None):
    """The MSRobNet ``supernet`` trial task; returns (final, full, reports, architectures sampled, weights)."""
    from nni_robust.strategies.msrobnet import tasks
    from nni_robust.trial.run import run_task

    archs = []

    def recording(layout, rng):
        arch = uniform_sampler(layout, rng)
        archs.append(arch.to_json())
        return arch

    monkeypatch.setattr(tasks, "uniform_sampler", recording)
    reports = []

    def reporter(metrics):
        reports.append(metrics)
        if stop_after is not None and len(reports) == stop_after:
            raise _Stop  # the trial is killed after this epoch's checkpoint (and probe)

    settings = dict(SETTINGS, supernet={**SETTINGS["supernet"], "epochs": epochs})
    params = {"task": "supernet", "args": {"width": width}, "settings": settings, "work_dir": str(work),
              "model_id": f"c{width}"}
    final, full = run_task(params, reporter=reporter, nested=True)
    weights = load_checkpoint(supernet_path(work / "supernets", width))["model"]
    return final, full, reports, archs, weights


def _final_run(work):
    from nni_robust.trial.run import run_task

    params = {"task": "final", "args": {"sample": SAMPLE, "init_channels": 2}, "settings": SETTINGS,
              "work_dir": str(work), "model_id": "final"}
    final, report = run_task(params, nested=True)
    return final, report, load_checkpoint(work / "trials" / "final" / "model.pt")["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch supernet run and a final run."""
    mp = pytest.MonkeyPatch()
    try:
        work = tmp_path_factory.mktemp("reference")
        disturb(3)
        return {"supernet": _supernet_run(work, mp), "final": _final_run(work)}
    finally:
        mp.undo()


def test_a_tiny_seeded_run_repeated_gives_identical_numbers(reference, monkeypatch, tmp_path):
    disturb(31)  # whatever ran before in the process
    final, full, reports, archs, weights = _supernet_run(tmp_path, monkeypatch)
    ref_final, ref_full, ref_reports, ref_archs, ref_weights = reference["supernet"]
    assert len(reports) == 2 and len(archs) == 2 * 2  # 2 epochs of 2 batches
    assert steady(final) == steady(ref_final) and steady(full) == steady(ref_full)
    assert steady(reports) == steady(ref_reports) and archs == ref_archs
    assert_same_tensors(weights, ref_weights)
    disturb(5)
    final, report, model = _final_run(tmp_path)
    ref_final, ref_report, ref_model = reference["final"]
    assert steady(final) == steady(ref_final) and steady(report) == steady(ref_report)
    assert_same_tensors(model, ref_model)
    assert 0.0 <= final["acc_pgd"] <= final["acc_clean"] <= 1.0


def test_each_width_trains_on_its_own_reproducible_architecture_sequence(reference, monkeypatch, tmp_path):
    _, _, _, archs2, _ = reference["supernet"]
    _, _, _, archs3, _ = _supernet_run(tmp_path, monkeypatch, width=3, epochs=1)
    assert len(archs3) == 2 and archs3 != archs2[:2]  # before the fix: the same sequence for every width
    assert len(set(archs2 + archs3)) == 6


def test_a_resumed_supernet_run_equals_the_uninterrupted_one(reference, monkeypatch, tmp_path):
    with pytest.raises(_Stop):  # killed after epoch 1 (its checkpoint is written, the PGD probe has run)
        _supernet_run(tmp_path, monkeypatch, stop_after=1)
    disturb(11)  # a new process: other generator states
    final, full, reports, archs, weights = _supernet_run(tmp_path, monkeypatch)
    ref_final, ref_full, ref_reports, ref_archs, ref_weights = reference["supernet"]
    assert len(reports) == 1 and archs == ref_archs[2:]  # only epoch 2 ran, on the same architectures
    assert steady(reports[0]) == steady(ref_reports[1])
    assert steady(final) == steady(ref_final) and steady(full) == steady(ref_full)
    assert_same_tensors(weights, ref_weights)  # BatchNorm statistics included
