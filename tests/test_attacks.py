"""FGSM / PGD: bounds, agreement with foolbox, strength ordering, side effects; evaluate()."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from nni_robust.attacks import FGSM, PGD, Attack, build_attack
from nni_robust.errors import ConfigError, NniRobustError
from nni_robust.evaluation import evaluate
from nni_robust.models import Normalize

TOL = 1e-6


def tiny_cnn(seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        Normalize((0.5, 0.4, 0.3), (0.25, 0.2, 0.3)),
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
    return net.to(dtype).eval()


def batch(n: int = 32, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64).to(dtype),
            torch.randint(0, 4, (n,), generator=g))


def assert_valid(x_adv, x, eps):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + TOL
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


ATTACK_CASES = [
    FGSM(0.05),
    FGSM(0.05, random_start=True),
    FGSM(0.05, step=0.0625, random_start=True),
    PGD(0.05, step=0.02, steps=5),
    PGD(0.05, step=0.02, steps=5, random_start=False),
]


@pytest.mark.parametrize("attack", ATTACK_CASES, ids=repr)
def test_within_eps_ball_and_unit_box(attack):
    model = tiny_cnn()
    x, y = batch()
    x[:4] = 0.0  # pixels on the box boundary
    x[4:8] = 1.0
    x_adv = attack(model, x, y)
    assert_valid(x_adv, x, attack.eps)
    assert (x_adv != x).any()
    # loss goes up
    ce = nn.CrossEntropyLoss()
    with torch.no_grad():
        assert ce(model(x_adv), y) > ce(model(x), y)


def test_fgsm_matches_foolbox():
    fb = pytest.importorskip("foolbox")
    model = tiny_cnn(dtype=torch.float64)
    x, y = batch(dtype=torch.float64)
    eps = 8 / 255
    ours = FGSM(eps)(model, x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, theirs, _ = fb.attacks.FGSM()(fmodel, x, y, epsilons=eps)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (ours - x).abs().max() == pytest.approx(eps)


def test_pgd_matches_foolbox():
    fb = pytest.importorskip("foolbox")
    model = tiny_cnn(dtype=torch.float64)
    x, y = batch(dtype=torch.float64)
    eps, step, steps = 8 / 255, 2 / 255, 7
    ours = PGD(eps, step=step, steps=steps, random_start=False)(model, x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=False)
    _, theirs, _ = attack(fmodel, x, y, epsilons=eps)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def _trained_model_and_data():
    """A tiny CNN trained for a few steps on a learnable synthetic task."""
    g = torch.Generator().manual_seed(3)
    n = 192
    y = torch.randint(0, 4, (n,), generator=g)
    # class k: channel (k % 3) brighter in the top (k < 3) or the whole image (k == 3)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.5
    for k in range(4):
        idx = y == k
        if k < 3:
            x[idx, k, :4] += 0.4
        else:
            x[idx] += 0.2
    model = tiny_cnn(seed=4).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(40):
        i = torch.arange(step * 64, step * 64 + 64) % n
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, x, y


def test_attack_strength_ordering_with_evaluate():
    model, x, y = _trained_model_and_data()
    model.train()  # evaluate() must switch to eval and back
    loader = [(x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50)]
    eps = 0.1
    accs = evaluate(model, loader, {"clean": None, "fgsm": FGSM(eps),
                                    "pgd": PGD(eps, step=eps / 4, steps=6),
                                    "clean_again": None}, device="cpu")
    assert model.training and all(m.training for m in model.modules())
    assert accs["clean"] == accs["clean_again"] > 0.8
    assert accs["pgd"] <= accs["fgsm"] < accs["clean"]
    assert accs["pgd"] < accs["clean"] - 0.2
    # matches a direct computation
    model.eval()
    with torch.no_grad():
        direct = (model(x).argmax(1) == y).float().mean().item()
    assert accs["clean"] == pytest.approx(direct)
    # limits: max_images truncates inside a batch, max_batches counts batches
    part = evaluate(model, loader, {"clean": None}, device="cpu", max_images=70)
    with torch.no_grad():
        assert part["clean"] == pytest.approx((model(x[:70]).argmax(1) == y[:70]).float().mean())
    part = evaluate(model, loader, None, device="cpu", max_batches=1)
    with torch.no_grad():
        assert part["clean"] == pytest.approx((model(x[:50]).argmax(1) == y[:50]).float().mean())


def test_evaluate_validation():
    model = tiny_cnn()
    x, y = batch()
    with pytest.raises(ConfigError, match="attacks"):
        evaluate(model, [(x, y)], {}, device="cpu")
    with pytest.raises(ConfigError, match="max_images"):
        evaluate(model, [(x, y)], None, device="cpu", max_images=0)
    with pytest.raises(ConfigError, match="no images"):
        evaluate(model, [], None, device="cpu")


class RaisingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        self.train()  # a forward that flips the mode, then fails
        raise RuntimeError("forward failed")


@pytest.mark.parametrize("attack", [FGSM(0.1), PGD(0.1, step=0.03, steps=2)], ids=repr)
def test_mode_restored_when_model_raises(attack):
    model = RaisingModel().eval()
    x, y = batch(4)
    with pytest.raises(RuntimeError, match="forward failed"):
        attack(model, x, y)
    assert not model.training and not model.bn.training


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_runs_in_given_mode_and_leaves_parameter_grads(mode):
    model = tiny_cnn()
    getattr(model, mode)()
    x, y = batch()
    for attack in (FGSM(0.05, random_start=True), PGD(0.05, step=0.02, steps=3)):
        assert_valid(attack(model, x, y), x, 0.05)
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training == (mode == "train") for m in model.modules())


def test_works_inside_no_grad_and_keeps_dtype():
    model = tiny_cnn()
    x, y = batch()
    with torch.no_grad():
        x_adv = PGD(0.05, step=0.02, steps=2)(model, x, y)
    assert_valid(x_adv, x, 0.05)
    assert (x_adv != x).any()
    assert torch.equal(FGSM(0.0)(model, x, y), x)
    with torch.inference_mode():
        x_inf = x.clone()
        with pytest.raises(NniRobustError, match="inference_mode"):
            FGSM(0.05)(model, x_inf, y)
    assert_valid(FGSM(0.05)(model, x_inf, y), x, 0.05)  # an inference tensor as input is fine


def test_bf16_autocast_on_cpu():
    model = tiny_cnn()
    x, y = batch(64)
    for attack in (FGSM(0.05, autocast=True), PGD(0.05, step=0.02, steps=3, autocast=True)):
        x_adv = attack(model, x, y)
        assert x_adv.dtype == torch.float32
        assert_valid(x_adv, x, 0.05)
    # the bf16 gradient sign agrees with the fp32 one on most pixels
    agree = (FGSM(0.05, autocast=True)(model, x, y) == FGSM(0.05)(model, x, y)).float().mean()
    assert agree > 0.8


def test_zero_gradient_warning_once():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3)) * 0.0)

    attack = FGSM(0.1)
    x, y = batch(4)
    with pytest.warns(RuntimeWarning, match="all-zero input gradient"):
        attack(Constant(), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack(Constant(), x, y)  # warned once per attack object


def test_invalid_settings():
    bad = [
        lambda: FGSM(-0.1), lambda: FGSM(float("nan")), lambda: FGSM("0.1"),
        lambda: FGSM(0.1, step=0.0), lambda: FGSM(0.1, random_start=1),
        lambda: PGD(0.1, step=-1.0, steps=3), lambda: PGD(0.1, step=0.01, steps=0),
        lambda: PGD(0.1, step=0.01, steps=2.5), lambda: PGD(0.1, step=0.01, steps=True),
        lambda: PGD(0.1, step=0.01, steps=3, autocast="yes"),
    ]
    for make in bad:
        with pytest.raises(ConfigError):
            make()
    with pytest.raises(ConfigError, match="eps.*-0.1"):
        FGSM(-0.1)
    with pytest.raises(ConfigError, match="steps.*0"):
        PGD(0.1, step=0.01, steps=0)
    model = tiny_cnn()
    x, y = batch(4)
    with pytest.raises(ConfigError, match="float"):
        FGSM(0.1)(model, (x * 255).to(torch.uint8), y)
    with pytest.raises(ConfigError, match="labels"):
        FGSM(0.1)(model, x, y[:2])


def test_build_attack():
    assert build_attack("none", eps=0.1) is None
    assert build_attack(None) is None
    a = build_attack("PGD", eps=0.03, step=0.01, steps=7, random_start=False, autocast=None)
    assert isinstance(a, PGD) and isinstance(a, Attack)
    assert (a.eps, a.step, a.steps, a.random_start, a.autocast) == (0.03, 0.01, 7, False, False)
    f = build_attack("fgsm", eps=0.03, steps=7)  # steps is meaningless for FGSM
    assert isinstance(f, FGSM) and f.step == 0.03 and not f.random_start
    with pytest.raises(ConfigError, match="cw.*fgsm, pgd, none"):
        build_attack("cw", eps=0.1)
    with pytest.raises(ConfigError, match="pgd"):
        build_attack("pgd", eps=0.1)  # step and steps missing
    with pytest.raises(ConfigError, match="norm"):
        build_attack("fgsm", eps=0.1, norm="l2")


def test_device_helpers():
    from nni_robust.device import autocast_context, resolve_device

    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == auto
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu0", "", 3):
        with pytest.raises(ConfigError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")
    with autocast_context("cpu", True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert nn.Linear(4, 2)(torch.rand(3, 4)).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")
