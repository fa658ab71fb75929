"""FLOPs / parameter counting and the width search (MSRobNet Eq. 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_robust.errors import ConfigError
from nni_robust.flops import count_flops, count_params, profile, search_width
from nni_robust.models import Normalize, cifar_resnet18


def test_resnet18_matches_published_size():
    net = cifar_resnet18(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    info = profile(net, (3, 32, 32))
    # MSRobNet lists the CIFAR ResNet-18 at about 1110 MFLOPs (2 per MAC) and 11.17M params.
    assert info["flops"] == pytest.approx(1110e6, rel=0.01)
    assert info["params"] == pytest.approx(11.17e6, rel=0.005)
    assert info["flops_M"] == pytest.approx(info["flops"] / 1e6)
    assert info["params_M"] == pytest.approx(info["params"] / 1e6)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)            # 8x8 out
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)  # 4x4 out
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.conv2(x).mean(dim=(2, 3))
        return self.fc(x)


def test_tiny_model_exact_flops_and_params():
    net = Tiny()
    expected = 2 * 3 * 9 * 4 * 8 * 8 + 2 * (4 // 2) * 9 * 8 * 4 * 4 + 2 * 8 * 5
    assert count_flops(net, (3, 8, 8)) == expected == 18512
    params = (3 * 9 * 4 + 4) + (4 + 4) + (2 * 9 * 8 + 8) + (8 * 5 + 5)
    assert count_params(net) == params
    net.conv1.weight.requires_grad_(False)
    assert count_params(net) == params - 3 * 9 * 4


def test_shared_parameters_counted_once():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(net) == 20
    # but the executed FLOPs count the shared layer twice
    assert count_flops(net, (4,)) == 2 * (2 * 4 * 4)


class Branchy(nn.Module):
    """A supernet-like module: forward executes only the active branch."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1, bias=False)
        self.big = nn.Conv2d(2, 16, 3, padding=1)
        self.small = nn.Conv2d(2, 16, 1)
        self.active = "small"

    def forward(self, x):
        x = self.stem(x)
        return getattr(self, self.active)(x)


def test_only_executed_branch_is_counted():
    net = Branchy()
    stem = 2 * 1 * 2 * 4 * 4
    assert count_flops(net, (1, 4, 4)) == stem + 2 * 2 * 16 * 4 * 4
    net.active = "big"
    assert count_flops(net, (1, 4, 4)) == stem + 2 * 2 * 9 * 16 * 4 * 4
    # parameters are those of the whole supernet
    assert count_params(net) == 2 + (2 * 9 * 16 + 16) + (2 * 16 + 16)


def test_count_flops_restores_modes_and_leaves_stats():
    net = Tiny()
    net.train()
    net.bn.eval()
    before = net.bn.running_mean.clone()
    count_flops(net, (3, 8, 8))
    assert net.training and net.conv1.training and not net.bn.training
    assert torch.equal(net.bn.running_mean, before)


def test_count_flops_bad_input_size():
    with pytest.raises(ConfigError, match="input_size"):
        count_flops(Tiny(), (3, 0, 8))


def _toy_builder(width: int) -> nn.Module:
    return nn.Sequential(Normalize(), nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def test_search_width_finds_closest_width():
    size = (3, 4, 4)
    flops = {w: count_flops(_toy_builder(w), size) for w in range(1, 71)}
    assert all(flops[w] < flops[w + 1] for w in range(1, 70))
    for target in (5e3, 4.1e4, 3.3e5, 1.0e6, (flops[20] + flops[21]) / 2):
        best = min(flops, key=lambda w: (abs(flops[w] - target), w))
        width, got = search_width(_toy_builder, target, input_size=size)
        assert width == best, target
        assert got == flops[best]
        # same answer with an explicit upper bound
        assert search_width(_toy_builder, target, input_size=size, high=70)[0] == best
    # a tie goes to the smaller width
    assert search_width(_toy_builder, (flops[20] + flops[21]) / 2, input_size=size)[0] == 20


def test_search_width_bounds_and_validation():
    size = (3, 8, 8)
    # target below the smallest width: the lower bound
    assert search_width(_toy_builder, 1.0, input_size=size, low=3)[0] == 3
    # target above the largest width: the upper bound
    assert search_width(_toy_builder, 1e12, input_size=size, high=5)[0] == 5
    # other monotone capacity measures work too
    width, params = search_width(_toy_builder, 10_000, measure=count_params)
    assert abs(params - 10_000) <= abs(count_params(_toy_builder(width + 1)) - 10_000)
    assert abs(params - 10_000) <= abs(count_params(_toy_builder(width - 1)) - 10_000)
    for bad in (0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="target_flops"):
            search_width(_toy_builder, bad, input_size=size)
    with pytest.raises(ConfigError, match="low"):
        search_width(_toy_builder, 1e5, input_size=size, low=0)
    with pytest.raises(ConfigError, match="high"):
        search_width(_toy_builder, 1e5, input_size=size, low=4, high=2)
