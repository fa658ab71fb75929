"""BatchNorm folding after calibration (nni_robust.bn.fold_bn) and the multi-shot evaluator's fast paths."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nni_robust.attacks import build_attack
from nni_robust.bn import calibrate_bn, fold_bn
from nni_robust.data import DATASETS, TensorLoader
from nni_robust.evaluation import evaluate
from nni_robust.flops import count_flops
from nni_robust.spaces.dense_rob import DenseRobArch, Layout
from nni_robust.strategies.msrobnet.multishot import MultiShotEvaluator
from nni_robust.strategies.networks import build_network
from nni_robust.strategies.settings import EvalSettings

SPACE = {"layout": "cellwise-4"}


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def calibrated():
    """A supernet with one active architecture, trained a few steps so that BN is not the identity, calibrated."""
    torch.manual_seed(0)
    net = build_network(None, width=4, info=DATASETS["digits"], space=SPACE)
    net.set_arch(DenseRobArch.random(Layout.from_name("cellwise-4"), random.Random(2)))
    x, y = _data(192)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for i in range(3):  # move the affine BN parameters away from (1, 0)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[64 * i:64 * (i + 1)]), y[64 * i:64 * (i + 1)]).backward()
        opt.step()
    calibrate_bn(net, TensorLoader(x[:128], y[:128], batch_size=64, shuffle=False))
    return net


def test_folded_network_computes_the_same_and_is_restored(calibrated):
    net = calibrated
    x, y = _data(96, seed=1)
    before = _state(net)
    net.train()
    net.cells[0].training = False  # mixed modes must come back as they were
    modes = {name: m.training for name, m in net.named_modules()}
    with torch.no_grad():
        net.eval()
        ref = net(x)
    for name, m in net.named_modules():
        m.training = modes[name]
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    with fold_bn(net) as fold:
        assert fold.pairs > 10
        assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == n_bn - fold.pairs
        assert not any(m.training for m in net.modules())  # folded = the eval-mode network
        with torch.no_grad():
            out = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert (out.argmax(1) == ref.argmax(1)).all()
    after = _state(net)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(isinstance(p, nn.Parameter) for p in net.parameters())
    assert {name: m.training for name, m in net.named_modules()} == modes
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), ref)  # the undone network computes bit for bit as before


def test_fgsm_accuracy_is_identical_after_folding(calibrated):
    x, y = _data(160, seed=3)
    loader = TensorLoader(x, y, batch_size=80, shuffle=False)
    fgsm = build_attack("fgsm", eps=8 / 255)
    plain = evaluate(calibrated, loader, {"clean": None, "adv": fgsm})
    with fold_bn(calibrated):
        folded = evaluate(calibrated, loader, {"clean": None, "adv": fgsm})
    assert folded == plain
    assert plain["clean"] != plain["adv"]  # the attack bites: the comparison is not vacuous


def test_only_bn_directly_after_a_convolution_is_folded():
    torch.manual_seed(1)
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4),                 # folded (conv bias)
        nn.ReLU(), nn.BatchNorm2d(4),                                                 # after a ReLU: kept
        nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4, affine=False),              # folded (non-affine)
        nn.Conv2d(4, 6, 1, bias=False), nn.BatchNorm2d(6),                            # hooked below: kept
    )
    seq.train()
    with torch.no_grad():
        for _ in range(3):
            seq(torch.randn(16, 3, 6, 6) * 2 + 1)
        for m in seq.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
    calls = []
    seq[7].register_forward_hook(lambda *a: calls.append(1))
    seq.eval()
    x = torch.randn(8, 3, 6, 6)
    with torch.no_grad():
        ref = seq(x)
        with fold_bn(seq) as fold:
            assert fold.pairs == 2
            assert [type(m).__name__ for m in seq] == ["Conv2d", "Identity", "ReLU", "BatchNorm2d", "Conv2d",
                                                      "Identity", "Conv2d", "BatchNorm2d"]
            out = seq(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2  # the hooked BatchNorm still ran
    # only_run: a BatchNorm that has not seen a batch since its reset is left alone (still correct)
    seq[1].reset_running_stats()
    with fold_bn(seq) as fold:
        assert fold.pairs == 1
    with fold_bn(seq, only_run=False) as fold:
        assert fold.pairs == 2


def test_fold_is_undone_on_error(calibrated):
    before = _state(calibrated)
    kinds = {name: type(m) for name, m in calibrated.named_modules()}
    with pytest.raises(RuntimeError, match="boom"):
        with fold_bn(calibrated):
            raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in _state(calibrated).items())
    assert {name: type(m) for name, m in calibrated.named_modules()} == kinds


def test_multishot_fast_paths_give_the_plain_measures():
    """Closed-form FLOPs (after the first topology) and the folded reward equal count_flops and the unfolded one."""
    torch.manual_seed(0)
    info = DATASETS["digits"]
    widths = (4, 6)
    supernets = {w: build_network(None, width=w, info=info, space=SPACE) for w in widths}
    x, y = _data(128, seed=5)
    settings = EvalSettings(calib_images=64, eval_images=64, eval_offset=64, batch_size=64)
    ev = MultiShotEvaluator(supernets, x, y, info, settings=settings, target_flops=0.3, flops_unit=1e3,
                            device="cpu", channels_last=False)
    fgsm = build_attack("fgsm", eps=settings.eps)
    rng = random.Random(7)
    for _ in range(2):  # the second topology takes the closed-form FLOPs
        arch = DenseRobArch.random(Layout.from_name("cellwise-4"), rng)
        per = ev.one_shot(arch)
        for p in per:
            model = supernets[p["width"]]
            assert p["mflops"] == count_flops(model, (1, 8, 8)) / 1e6
            calibrate_bn(model, TensorLoader(x[:64], y[:64], batch_size=64, shuffle=False))
            acc = evaluate(model, TensorLoader(x[64:], y[64:], batch_size=64, shuffle=False),
                           {"clean": None, "adv": fgsm})
            assert (p["acc_clean"], p["acc_adv"]) == (acc["clean"], acc["adv"])
    assert all(sn.analytic for sn in ev.supernets)
