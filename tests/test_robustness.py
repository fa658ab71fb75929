"""nni_robust.robustness: AutoAttack against a direct pyautoattack run, the gradient-masking checks
on models built to trip them (and silent on a normal one), the strength curve, transfer attacks,
non-finite outputs, progress output and the report writers.

All on the embedded 8x8 digits data with a TinyCNN trained for a second; AutoAttack with
cheap settings (a subset of attacks, fewer targets/queries, a few dozen images).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_robust.attacks import FGSM, PGD
from nni_robust.data import TensorLoader, load_dataset
from nni_robust.errors import ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_flops, count_params
from nni_robust.robustness import (SUITES, WSR_STRENGTHS, MaskingThresholds, NonFiniteOutputError,
                                   SuiteConfig, check_autoattack_gap, check_fgsm_vs_pgd,
                                   check_large_eps, check_pgd_steps, check_square,
                                   check_strength_curve, check_transfer, evaluate_attacks,
                                   flat_metrics, markdown, pgd_at_strength, robustness_report,
                                   run_autoattack, strength_curve, train_transfer_source,
                                   transfer_pgd, write_report)

EPS = 0.1  # on 8x8 digits, 8/255 barely moves a normal network; 0.1 takes PGD to ~10 %
N = 64

# --------------------------------------------------------------------------- data and models

_CACHE: dict = {}


def _digits():
    if "digits" not in _CACHE:
        _CACHE["digits"] = load_dataset("digits", split="final")
    return _CACHE["digits"]


def _test_images(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits().val
    return x[:n].float(), y[:n]


def _train(model: nn.Module, seed: int) -> nn.Module:
    """Three epochs of Adam on the digits training set (about 93 % test accuracy)."""
    x, y = _digits().train
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(3):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx].float()), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture
def trained(tiny_cnn):
    """``trained(seed)``: a TinyCNN (width 16) trained on digits, cached per seed (not modified by the tests)."""

    def get(seed: int = 0) -> nn.Module:
        key = ("model", seed)
        if key not in _CACHE:
            _CACHE[key] = _train(tiny_cnn(in_channels=1, num_classes=10, width=16, seed=seed), seed)
        return _CACHE[key]

    return get


class Quantised(nn.Module):
    """Non-differentiable input quantisation in front of a network: ``round(4 x) / 4`` has zero
    gradient almost everywhere, so every gradient attack is blind (Athalye et al.'s "shattered
    gradients")."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class GradientOnDataGrid(nn.Module):
    """The same function as ``net``, but its input gradient vanishes off the 1/16 grid that digits
    pixels lie on: FGSM from the clean image gets the full gradient, PGD from a random start none."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on_grid = (x * 16 - torch.round(x * 16)).abs() < 1e-4
        return self.net(torch.where(on_grid, x, x.detach()))


class PerturbationDetector(nn.Module):
    """The same function as ``net``, but it knows the clean images and hides its gradient from
    inputs farther than ``tau`` (l-inf) from all of them: small-eps attacks work, large-eps ones
    are stuck at their random start, so accuracy *rises* with eps."""

    def __init__(self, net: nn.Module, reference: torch.Tensor, tau: float = 0.05) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("reference", reference.flatten(1))
        self.tau = tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x.detach().flatten(1)[:, None, :] - self.reference[None]).abs().amax(2).amin(1)
        far = (dist > self.tau).view(-1, *([1] * (x.dim() - 1)))
        return self.net(torch.where(far, x.detach(), x))


class NaNOffGrid(nn.Module):
    """Finite logits on the clean (on-grid) digits, NaN on any perturbed input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on_grid = ((x * 16 - torch.round(x * 16)).abs() < 1e-4).flatten(1).all(1, keepdim=True)
        return torch.where(on_grid, self.net(x), torch.full_like(self.net(x), float("nan")))


def _suite(**changes) -> SuiteConfig:
    base = dict(name="test", num_images=N, pgd_steps=(7, 20), curve_eps=(0.03, 0.1, 0.17, 0.25),
                curve_steps=10, autoattack=True, autoattack_attacks=("apgd-ce", "square"),
                autoattack_images=32)
    base.update(changes)
    return SuiteConfig(**base)


def _report(model: nn.Module, source: nn.Module | None, key: str, **suite_changes) -> dict:
    if key not in _CACHE:
        _CACHE[key] = robustness_report(model, _test_images(), suite=_suite(**suite_changes), eps=EPS,
                                        source=source, autoattack_kwargs={"n_queries": 300})
    return _CACHE[key]


def _has(warnings: list[str], text: str) -> bool:
    return any(text in w for w in warnings)


# --------------------------------------------------------------------------- AutoAttack


def test_autoattack_equals_a_direct_pyautoattack_run(trained):
    from pyautoattack import AutoAttack

    model = trained(0)
    x, y = _test_images(24)
    attacks = ("apgd-ce", "apgd-t", "square")
    ours = run_autoattack(model, (x, y), eps=0.07, attacks=attacks, batch_size=16, n_target_classes=2,
                          n_queries=100)

    def direct(names):
        aa = AutoAttack(model, norm="Linf", eps=0.07, version="standard", device="cpu", seed=0)
        aa.attacks_to_run = list(names)
        aa.apgd_targeted.n_target_classes = 2
        aa.fab.n_target_classes = 2
        aa.square.n_queries = 100
        return aa.run_standard_evaluation(x, y, batch_size=16)

    x_adv, y_adv = direct(attacks)
    robust = y_adv == y
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) == y, robust)  # AutoAttack's own bookkeeping
        clean = (model(x).argmax(1) == y).sum().item() / 24
    assert ours.robust == robust.sum().item() / 24
    assert torch.equal(ours.robust_mask, robust)
    assert ours.clean == clean and ours.num_images == 24
    # the cascade: cumulative, non-increasing, each attack adds to the previous ones
    per = list(ours.per_attack.values())
    assert list(ours.per_attack) == list(attacks)
    assert per == sorted(per, reverse=True) and per[-1] == ours.robust
    assert 0 < ours.robust < ours.per_attack["apgd-ce"] < clean  # APGD-T broke points APGD-CE left
    _, y_first = direct(["apgd-ce"])
    assert ours.per_attack["apgd-ce"] == (y_first == y).sum().item() / 24
    assert ours.settings["attacks"]["apgd-t"]["n_target_classes"] == 2
    assert ours.settings["attacks"]["square"]["n_queries"] == 100


def test_autoattack_restores_rng_and_modes_and_validates(trained):
    model = trained(0)
    x, y = _test_images(8)
    model.train()
    try:
        torch.manual_seed(123)
        state = torch.get_rng_state()
        result = run_autoattack(model, (x, y), eps=0.1, attacks=["apgd-ce"], progress=False)
        assert torch.equal(torch.get_rng_state(), state)  # pyautoattack seeds the global RNG
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    assert result.settings["version"] == "standard-subset"
    with pytest.raises(ConfigError, match="apgd-x"):
        run_autoattack(model, (x, y), attacks=["apgd-x"])
    with pytest.raises(ConfigError, match="eps"):
        run_autoattack(model, (x, y), eps=0.0)


# --------------------------------------------------------------------------- masking checks


def test_normal_model_report_is_silent_and_complete(trained):
    model, source = trained(0), trained(1)
    report = _report(model, source, "report-normal")
    assert report["warnings"] == []
    acc = report["accuracy"]
    assert list(acc) == ["clean", "fgsm", "noise", "pgd7", "pgd20"]
    assert acc["pgd20"] <= acc["pgd7"] <= acc["fgsm"] < acc["noise"] <= acc["clean"]
    curve = report["strength_curve"]
    assert curve["eps"] == [0.03, 0.1, 0.17, 0.25] and curve["num_images"] == N
    assert all(a >= b for a, b in zip(curve["pgd"], curve["pgd"][1:]))  # non-increasing
    assert curve["pgd"][0] < curve["clean"] and curve["pgd_mean"] == pytest.approx(sum(curve["pgd"]) / 4)
    assert report["large_eps"]["accuracy"] <= 0.05
    assert report["transfer"]["accuracy"] >= acc["pgd20"]
    aa = report["autoattack"]
    assert aa["num_images"] == 32 and aa["robust"] <= report["autoattack_pgd"]["accuracy"]
    assert report["model"]["params"] == count_params(model)
    assert report["model"]["flops"] == count_flops(model, (1, 8, 8))
    assert report["num_images"] == N and report["seed"] == 0
    metrics = flat_metrics(report)
    assert metrics["autoattack"] == aa["robust"] and metrics["masking_warnings"] == 0.0
    assert metrics["strength@0.1"] == curve["pgd"][1]


def test_quantised_input_trips_the_masking_checks(trained):
    model = trained(0)
    quantised = Quantised(model)
    x, y = _test_images(8)
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(quantised(x), y), x)
    assert grad.abs().max() == 0  # the gradient really is masked
    warnings = _report(quantised, model, "report-quantised")["warnings"]
    assert _has(warnings, "does no better than its own random start")  # PGD steps make no progress
    assert _has(warnings, "transfer (black-box) attack")  # black-box beats white-box
    assert _has(warnings, "At eps=0.5")  # accuracy far from zero at a large eps
    assert _has(warnings, "below PGD-20 on the same images")  # AutoAttack far below PGD
    assert _has(warnings, "Square Attack (black-box) lowered")  # AutoAttack's own flag
    assert not _has(warnings, "FGSM (")


def test_gradient_only_on_the_data_grid_trips_the_fgsm_check(trained):
    model = trained(0)
    masked = GradientOnDataGrid(model)
    x, _ = _test_images()
    with torch.no_grad():
        assert torch.equal(masked(x), model(x))  # the same classifier
    report = _report(masked, model, "report-grid", autoattack=False)
    warnings = report["warnings"]
    assert report["accuracy"]["fgsm"] < report["accuracy"]["pgd20"] - 0.5
    assert _has(warnings, "FGSM (") and _has(warnings, "transfer (black-box) attack")


def test_perturbation_detector_trips_the_strength_curve_check(trained):
    model = trained(0)
    x, y = _test_images()
    detector = PerturbationDetector(model, x)
    curve = strength_curve(detector, (x, y), eps=(0.03, 0.1), steps=10)
    assert curve.pgd[1] > curve.pgd[0] + 0.01  # more accuracy at the larger eps
    warnings = check_strength_curve(curve.eps, curve.pgd)
    assert len(warnings) == 1 and "rises with the strength" in warnings[0]
    assert check_strength_curve(*_normal_curve(model, x, y)) == []


def _normal_curve(model, x, y):
    curve = strength_curve(model, (x, y), eps=(0.03, 0.1), steps=10)
    return curve.eps, curve.pgd


def test_checks_on_hand_made_numbers():
    assert check_fgsm_vs_pgd(0.30, 0.32) and not check_fgsm_vs_pgd(0.315, 0.32)
    assert check_pgd_steps({7: 0.50, 20: 0.52}) and not check_pgd_steps({7: 0.50, 20: 0.505})
    assert check_pgd_steps({7: 0.50, 20: 0.49}, noise=0.495)  # steps do ~nothing from their start
    assert not check_pgd_steps({7: 0.50, 20: 0.49}, noise=0.9)
    assert not check_pgd_steps({7: 0.04, 20: 0.04}, noise=0.04)  # nothing left to lower
    assert check_transfer(0.40, 0.45) and not check_transfer(0.45, 0.45)
    assert check_large_eps(0.06, 0.5) and not check_large_eps(0.05, 0.5)
    assert check_autoattack_gap(0.39, 0.50) and not check_autoattack_gap(0.41, 0.50)
    assert check_autoattack_gap(0.45, 0.50, gap=0.04)
    assert check_square({"apgd-ce": 0.5, "apgd-t": 0.48, "square": 0.47})
    assert not check_square({"apgd-ce": 0.5, "apgd-t": 0.48, "square": 0.479})
    assert not check_square({"square": 0.2, "apgd-ce": 0.1})  # square first: nothing to compare
    assert check_strength_curve([0.1, 0.03], [0.5, 0.3]) and not check_strength_curve([0.03, 0.1], [0.5, 0.3])
    with pytest.raises(ConfigError, match="MaskingThresholds.fgsm_tolerance"):
        MaskingThresholds(fgsm_tolerance=2.0)
    with pytest.raises(ConfigError, match="bogus"):
        MaskingThresholds.from_dict({"bogus": 0.1})
    with pytest.raises(ConfigError, match="fgsm"):
        check_fgsm_vs_pgd(float("nan"), 0.3)


# --------------------------------------------------------------------------- strength curve, transfer


def test_multi_strength_in_one_pass_equals_separate_evaluate_calls(trained):
    model = trained(0)
    x, y = _test_images()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    curve = strength_curve(model, (x, y), eps=WSR_STRENGTHS, steps=5, seed=3, batch_size=16)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    for eps, acc, loss in zip(WSR_STRENGTHS, curve.pgd, curve.pgd_loss):
        torch.manual_seed(3)
        attack = pgd_at_strength(eps, steps=5)
        assert attack.step == pytest.approx(eps * 2.5 / 5) and attack.random_start
        separate = evaluate(model, TensorLoader(x, y, batch_size=16, shuffle=False), {"pgd": attack})
        assert acc == separate["pgd"]
        assert loss > curve.clean_loss
    assert curve.mean == pytest.approx(sum(curve.pgd) / 4)
    assert curve.settings["step"] == pytest.approx([e / 2 for e in WSR_STRENGTHS])
    assert curve.clean == evaluate(model, TensorLoader(x, y, batch_size=16, shuffle=False))["clean"]


def test_transfer_from_the_model_to_itself_equals_the_white_box_attack(trained):
    model = trained(0)
    x, y = _test_images()
    ev = evaluate_attacks(model, (x, y), {
        "clean": None,
        "white": PGD(EPS, step=EPS / 4, steps=10),
        "transfer": transfer_pgd(model, eps=EPS, steps=10, step=EPS / 4),
        "other": transfer_pgd(trained(1), eps=EPS, steps=10, step=EPS / 4)},
        batch_size=16, keep_masks=True)
    assert torch.equal(ev.correct["transfer"], ev.correct["white"])
    assert ev.accuracy["transfer"] == ev.accuracy["white"] and ev.loss["transfer"] == ev.loss["white"]
    assert ev.accuracy["white"] < ev.accuracy["other"] < ev.accuracy["clean"]


def test_train_transfer_source_builds_a_trained_resnet():
    torch.manual_seed(0)
    source = train_transfer_source(_digits(), epochs=1, width=4, device="cpu", max_train=64, batch_size=32)
    assert not source.training and source.fc.out_features == 10 and source.conv1.in_channels == 1
    x, _ = _test_images(4)
    with torch.no_grad():
        assert source(x).shape == (4, 10)


# --------------------------------------------------------------------------- errors, progress, reports


def test_non_finite_outputs_are_an_error(trained):
    model = trained(0)
    x, y = _test_images(16)
    broken = NaNOffGrid(model)
    assert evaluate_attacks(broken, (x, y), {"clean": None}).accuracy["clean"] > 0.5  # finite on clean
    with pytest.raises(NonFiniteOutputError, match="NaN"):
        evaluate_attacks(broken, (x, y), {"pgd": PGD(EPS, step=EPS / 4, steps=2)})
    with pytest.raises(NonFiniteOutputError):
        run_autoattack(broken, (x, y), eps=EPS, attacks=["apgd-ce"])

    class Inf(nn.Module):
        def forward(self, x):
            return model(x) * float("inf")

    with pytest.raises(NonFiniteOutputError):
        evaluate_attacks(Inf(), (x, y), {"clean": None})


def test_progress_only_when_asked_and_nothing_printed(trained, capsys):
    model = trained(0)
    x, y = _test_images(8)
    evaluate_attacks(model, (x, y), {"fgsm": FGSM(EPS)}, progress=False, desc="quiet-run")
    assert capsys.readouterr() == ("", "")
    evaluate_attacks(model, (x, y), {"fgsm": FGSM(EPS)}, progress=None, desc="auto-run")
    assert capsys.readouterr() == ("", "")  # pytest's stderr is no terminal
    evaluate_attacks(model, (x, y), {"fgsm": FGSM(EPS)}, progress=True, desc="loud-run")
    out, err = capsys.readouterr()
    assert out == "" and "loud-run" in err and "/1 " in err  # batches done / total


def test_report_writers(trained, tmp_path):
    import matplotlib.image

    report = _report(trained(0), trained(1), "report-normal")
    paths = write_report(report, tmp_path, stem="tiny")
    assert sorted(paths) == ["json", "markdown", "png"]
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(report))
    text = paths["markdown"].read_text()
    assert text == markdown(report)
    assert f"**AutoAttack robust accuracy: {100 * report['autoattack']['robust']:.2f}%**" in text
    assert f"| PGD-20 | 20 steps of 0.025, random start | {100 * report['accuracy']['pgd20']:.2f}% |" in text
    assert "| mean |" in text and "No warning" in text
    image = matplotlib.image.imread(paths["png"])
    assert image.shape[0] > 300 and image.shape[1] > 500


def test_suites_and_settings_validation(trained):
    assert not SUITES["quick"].autoattack and SUITES["quick"].pgd_steps == (7, 20)
    assert SUITES["standard"].autoattack and SUITES["standard"].autoattack_attacks is None
    assert SUITES["standard"].pgd_steps == (7, 20, 100) and SUITES["standard"].num_images is None
    assert SUITES["full"].transfer_required and SUITES["full"].autoattack_images is None
    model = trained(0)
    data = _test_images(8)
    with pytest.raises(ConfigError, match="suite"):
        robustness_report(model, data, suite="fast")
    with pytest.raises(ConfigError, match="source"):
        robustness_report(model, data, suite="full")
    with pytest.raises(ConfigError, match="pgd_stepz"):
        robustness_report(model, data, pgd_stepz=(7,))
    with pytest.raises(ConfigError, match="SuiteConfig.curve_eps"):
        SuiteConfig(curve_eps=(0.03, 2.0))
    with pytest.raises(ConfigError, match="n_iter"):
        robustness_report(model, data, autoattack_kwargs={"n_iter": 5})
    small = robustness_report(model, data, suite="quick", eps=EPS, curve_eps=(), large_eps=None,
                              pgd_steps=(3,), progress=False)
    assert small["strength_curve"] is None and small["large_eps"] is None and small["num_images"] == 8
    assert list(small["accuracy"]) == ["clean", "fgsm", "noise", "pgd3"]
