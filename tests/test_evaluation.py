"""evaluate(): the fused clean + FGSM pass equals separate clean and FGSM passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_robust.attacks import FGSM, PGD
from nni_robust.errors import ConfigError
from nni_robust.evaluation import evaluate
from nni_robust.models import Normalize


def _model():
    torch.manual_seed(0)
    return nn.Sequential(Normalize((0.5,), (0.25,)), nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_fused_fgsm_equals_separate_passes():
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(96, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    loader = [(x[:48], y[:48]), (x[48:], y[48:])]
    fgsm = FGSM(0.1)
    fused = evaluate(model, loader, {"clean": None, "fgsm": fgsm})
    separate = {"clean": evaluate(model, loader, {"clean": None})["clean"],
                "fgsm": evaluate(model, loader, {"fgsm": fgsm})["fgsm"]}
    assert fused == separate
    # the model's own mode is untouched, and random-start FGSM is never fused
    assert model.training
    with pytest.raises(ConfigError, match="random_start"):
        FGSM(0.1, random_start=True).with_clean_logits(model, x, y)
    both = evaluate(model, loader, {"clean": None, "fgsm": fgsm, "pgd": PGD(0.1, step=0.05, steps=3)})
    assert both["clean"] == fused["clean"] and both["fgsm"] == fused["fgsm"]
    assert both["pgd"] <= both["clean"]


def test_with_clean_logits_are_the_clean_logits():
    model = _model().eval()
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    x_adv, logits = FGSM(0.05).with_clean_logits(model, x, y)
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-6)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
