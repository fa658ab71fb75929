"""BatchNorm calibration (MSRobNet Sec. 5.1) and the robust reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nni_robust.bn import calibrate_bn
from nni_robust.errors import ConfigError
from nni_robust.reward import robust_reward


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.BatchNorm2d(3, affine=False, momentum=0.3),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4, momentum=0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(4),
        nn.Linear(4, 2),
    )


def _batches(sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, 5, 5, generator=g) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
             + torch.tensor([0.0, 0.3, 0.7]).view(1, 3, 1, 1), torch.zeros(n, dtype=torch.long))
            for n in sizes]


def _spoil(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(9.0)
            m.num_batches_tracked.fill_(123)


def test_calibration_equals_data_statistics():
    model = _model()
    _spoil(model)
    model.eval()
    params = {k: v.clone() for k, v in model.named_parameters()}
    batches = _batches([16, 16, 16, 16])
    n = calibrate_bn(model, batches)
    assert n == 64
    data = torch.cat([x for x, _ in batches])
    bn0 = model[0]
    # cumulative average of equal-size batch means = global mean of the data
    torch.testing.assert_close(bn0.running_mean, data.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    # running var = average of per-batch unbiased variances
    per_batch_var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x, _ in batches])
    torch.testing.assert_close(bn0.running_var, per_batch_var.mean(0), rtol=1e-5, atol=1e-6)
    assert int(bn0.num_batches_tracked) == 4
    # deeper layers were recalibrated too (no trace of the spoiled values)
    for m in (model[2], model[5]):
        assert int(m.num_batches_tracked) == 4
        assert (m.running_mean - 5.0).abs().min() > 1e-3
    # mode, momentum and parameters are restored / untouched
    assert not any(m.training for m in model.modules())
    assert bn0.momentum == 0.3 and model[2].momentum == 0.2 and model[5].momentum == 0.1
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k])


def test_calibration_restores_mixed_modes_and_accepts_plain_tensors():
    model = _model()
    model.train()
    model[2].eval()
    batches = [x for x, _ in _batches([8, 8])]
    calibrate_bn(model, batches, device="cpu")
    assert model.training and model[0].training and not model[2].training
    data = torch.cat(batches)
    torch.testing.assert_close(model[0].running_mean, data.mean(dim=(0, 2, 3)),
                               rtol=1e-5, atol=1e-6)


def test_calibration_max_images_truncates():
    model = _model()
    batches = _batches([16, 16, 16])
    n = calibrate_bn(model, batches, max_images=40)
    assert n == 40
    used = [batches[0][0], batches[1][0], batches[2][0][:8]]
    # with unequal batches the cumulative average is the mean of the batch means
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in used]).mean(0)
    torch.testing.assert_close(model[0].running_mean, expected, rtol=1e-5, atol=1e-6)
    assert int(model[0].num_batches_tracked) == 3


def test_calibration_restores_on_error_and_validates():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3, momentum=0.25)

        def forward(self, x):
            self.bn(x)
            raise RuntimeError("boom")

    model = Boom().eval()
    with pytest.raises(RuntimeError, match="boom"):
        calibrate_bn(model, [torch.rand(4, 3, 2, 2)])
    assert not model.training and not model.bn.training and model.bn.momentum == 0.25
    with pytest.raises(ConfigError, match="max_images"):
        calibrate_bn(_model(), _batches([4]), max_images=0)
    with pytest.raises(ConfigError, match="no calibration image"):
        calibrate_bn(_model(), [])


def test_bn_without_running_stats_is_left_alone():
    model = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False), nn.BatchNorm2d(3))
    calibrate_bn(model, _batches([8]))
    assert model[0].running_mean is None
    assert int(model[1].num_batches_tracked) == 1


def test_reward_formula():
    assert robust_reward(0.8, 0.4) == pytest.approx(0.6)
    assert robust_reward(0.8, 0.4, lam=0.0) == pytest.approx(0.8)
    assert robust_reward(0.8, 0.4, lam=1.0) == pytest.approx(0.4)
    assert robust_reward(0.9, 0.3, lam=0.25) == pytest.approx(0.25 * 0.3 + 0.75 * 0.9)
    t = robust_reward(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5]), lam=0.7)
    torch.testing.assert_close(t, torch.tensor([0.3, 0.5]))
    a = robust_reward(np.array([0.2, 0.6]), np.array([0.4, 0.0]), lam=np.float64(0.5))
    np.testing.assert_allclose(a, [0.3, 0.3])


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_reward_rejects_bad_lambda(lam):
    with pytest.raises(ConfigError, match="lam"):
        robust_reward(0.5, 0.5, lam=lam)
