"""nni_robust.data: dataset readers, splits and the on-device augmenting loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_robust.data import (DATA_ROOT_ENV, DATASETS, DataSplits, TensorLoader, crop_flip,
                             default_data_root, load_dataset, make_loaders)
from nni_robust.errors import ConfigError, DatasetNotFoundError


def _ids(images: torch.Tensor) -> set[int]:
    return set(images[:, 0, 0, 0].tolist())


# --------------------------------------------------------------------------- readers


def test_cifar10_search_split_is_seeded_disjoint_80_20(tiny_cifar10):
    s = load_dataset("cifar10", root=tiny_cifar10, split="search", seed=3)
    assert isinstance(s, DataSplits) and s.info == DATASETS["cifar10"]
    (xt, yt), (xv, yv) = s.train, s.val
    assert xt.shape == (40, 3, 32, 32) and xv.shape == (10, 3, 32, 32)
    assert xt.dtype == torch.uint8 and yt.dtype == torch.int64
    assert _ids(xt).isdisjoint(_ids(xv)) and _ids(xt) | _ids(xv) == set(range(50))
    # labels travel with their images (label = index % 10, also written in the image)
    assert torch.equal(yt, xt[:, 0, 0, 0].long() % 10)
    assert torch.equal(yv, xv[:, 1, 0, 0].long())
    again = load_dataset("cifar10", root=tiny_cifar10, split="search", seed=3)
    assert torch.equal(again.val[0], xv)
    other = load_dataset("cifar10", root=tiny_cifar10, split="search", seed=4)
    assert _ids(other.val[0]) != _ids(xv)


def test_cifar10_final_split_is_train_and_test(tiny_cifar10):
    s = load_dataset("cifar10", root=tiny_cifar10, split="final")
    assert _ids(s.train[0]) == set(range(50))
    assert _ids(s.val[0]) == set(range(100, 110))


def test_val_fraction_sets_split_size(tiny_cifar10):
    s = load_dataset("cifar10", root=tiny_cifar10, val_fraction=0.5)
    assert len(s.train[1]) == 25 and len(s.val[1]) == 25


def test_cifar100_reads_fine_labels(tiny_cifar100):
    s = load_dataset("cifar100", root=tiny_cifar100, split="final")
    assert s.info.num_classes == 100
    assert s.train[0].shape == (40, 3, 32, 32) and s.val[0].shape == (20, 3, 32, 32)
    ids = s.train[0][:, 0, 0, 0].long()
    assert torch.equal(s.train[1], (ids * 7) % 100)
    assert int(s.val[1].max()) <= 99


def test_svhn_layout_and_label_10_is_zero(tiny_svhn):
    import scipy.io as sio

    s = load_dataset("svhn", root=tiny_svhn, split="final")
    x, y = s.train
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    raw = sio.loadmat(tiny_svhn / "train_32x32.mat")["X"]  # H, W, C, N
    assert torch.equal(x[7], torch.from_numpy(np.ascontiguousarray(raw[:, :, :, 7].transpose(2, 0, 1))))
    assert torch.equal(y, (1 + torch.arange(30) % 10) % 10)
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert s.val[0].shape == (10, 3, 32, 32)
    search = load_dataset("svhn", root=tiny_svhn)
    assert len(search.train[1]) == 24 and len(search.val[1]) == 6


def test_missing_dataset_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert str((tmp_path / "nowhere").resolve()) in msg
    assert "cifar-10-batches-py/data_batch_1" in msg and "download=True" in msg
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        load_dataset("svhn", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python/train"):
        load_dataset("cifar100", root=tmp_path)


def test_final_split_needs_test_files(tiny_cifar10):
    (tiny_cifar10 / "cifar-10-batches-py" / "test_batch").unlink()
    load_dataset("cifar10", root=tiny_cifar10, split="search")  # the test set is not needed
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        load_dataset("cifar10", root=tiny_cifar10, split="final")


def test_corrupt_batch_is_reported(tiny_cifar10):
    (tiny_cifar10 / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", root=tiny_cifar10)


def test_default_root_from_environment(monkeypatch, tiny_cifar10):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tiny_cifar10))
    assert default_data_root() == tiny_cifar10
    assert len(load_dataset("cifar10").train[1]) == 40


def test_digits_real_dataset():
    final = load_dataset("digits", split="final")
    x, y = final.train
    assert len(final.train[1]) + len(final.val[1]) == 1797
    assert len(final.val[1]) == 359
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))
    # the fixed "test" set does not depend on the search seed and never enters a search split
    search = load_dataset("digits", split="search", seed=5)
    assert len(search.train[1]) + len(search.val[1]) == len(final.train[1])
    key = lambda t: {tuple(img.flatten().tolist()) for img in t}  # noqa: E731
    assert key(search.val[0]) <= key(final.train[0])
    all_x = torch.cat([x, final.val[0]])
    assert abs(float(all_x.mean()) - DATASETS["digits"].mean[0]) < 1e-3
    assert abs(float(all_x.std()) - DATASETS["digits"].std[0]) < 1e-3
    # read from scikit-learn's file without importing scikit-learn: the same images as load_digits
    from sklearn.datasets import load_digits

    bunch = load_digits()
    all_y = torch.cat([y, final.val[1]])
    ours = torch.cat([(all_x.flatten(1) * 16).round(), all_y[:, None].float()], 1).int().tolist()
    theirs = torch.cat([torch.from_numpy(bunch.data), torch.from_numpy(bunch.target)[:, None]], 1).int().tolist()
    assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))


@pytest.mark.parametrize("kwargs, needle", [
    ({"name": "mnist"}, "cifar10"),
    ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
    ({"name": "digits", "val_fraction": 0}, "val_fraction"),
    ({"name": "digits", "split": "test"}, "search"),
    ({"name": "digits", "seed": 1.5}, "seed"),
])
def test_invalid_arguments(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        load_dataset(**kwargs)


def test_tiny_dataset_cannot_leave_empty_val(tiny_cifar10):
    with pytest.raises(ConfigError, match="empty"):
        load_dataset("cifar10", root=tiny_cifar10, val_fraction=0.001)


# --------------------------------------------------------------------------- loader


def _pattern(n: int, size: int = 12, channels: int = 2) -> torch.Tensor:
    """uint8 images whose every pixel is distinct and non-zero within an image."""
    base = torch.arange(1, channels * size * size + 1).reshape(channels, size, size) % 251 + 1
    return torch.stack([((base + 3 * i) % 250 + 1).to(torch.uint8) for i in range(n)])


def _matching_shift(out: torch.Tensor, img: torch.Tensor, pad: int) -> tuple[int, int, bool] | None:
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    h, w = img.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            if torch.equal(out, crop):
                return dy, dx, False
            if torch.equal(out, crop.flip(-1)):
                return dy, dx, True
    return None


def test_loader_batches_without_augmentation():
    x, y = _pattern(10), torch.arange(10)
    loader = TensorLoader(x, y, batch_size=4, shuffle=False)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    xb = torch.cat([b[0] for b in batches])
    assert xb.dtype == torch.float32 and torch.equal(xb, x.float() / 255)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert len(TensorLoader(x, y, batch_size=4, drop_last=True)) == 2
    assert sum(len(b[1]) for b in TensorLoader(x, y, batch_size=4, drop_last=True)) == 8


def test_loader_shuffle_is_a_permutation_per_epoch():
    x, y = _pattern(20), torch.arange(20)
    loader = TensorLoader(x, y, batch_size=6, shuffle=True, seed=1)
    e0 = torch.cat([b[1] for b in loader])
    e1 = torch.cat([b[1] for b in loader])
    assert sorted(e0.tolist()) == list(range(20)) and sorted(e1.tolist()) == list(range(20))
    assert not torch.equal(e0, e1)


def test_augmentation_is_real_crop_shift_and_flip():
    x, y = _pattern(64), torch.arange(64)
    loader = TensorLoader(x, y, batch_size=64, shuffle=False, augment=True, pad=3, flip=True, seed=0)
    assert loader.pad == 3
    (xb, yb), = list(loader)
    assert xb.shape == (64, 2, 12, 12) and float(xb.min()) >= 0 and float(xb.max()) <= 1
    shifts = [_matching_shift((xb[i] * 255).round().to(torch.uint8), x[i], 3) for i in range(64)]
    assert all(s is not None for s in shifts), "every output must be a shifted (flipped) crop"
    assert sum(s[:2] != (3, 3) for s in shifts) > 40  # most images really move
    assert 10 < sum(s[2] for s in shifts) < 54  # about half are flipped
    assert len({s[:2] for s in shifts}) > 10  # offsets vary over the batch


def test_no_flip_when_disabled_and_default_pad():
    x, y = _pattern(32, size=8, channels=1), torch.arange(32)
    loader = TensorLoader(x, y, batch_size=32, augment=True, flip=False, shuffle=False)
    assert loader.pad == 1  # images smaller than 16 pixels
    assert TensorLoader(_pattern(2, size=16), torch.arange(2), batch_size=1).pad == 4
    (xb, _), = list(loader)
    shifts = [_matching_shift((xb[i] * 255).round().to(torch.uint8), x[i], 1) for i in range(32)]
    assert all(s is not None and not s[2] for s in shifts)


def test_crop_flip_identity_offsets():
    x = torch.rand(3, 2, 5, 7)
    offsets = torch.full((3, 2), 2)
    assert torch.equal(crop_flip(x, offsets, torch.zeros(3, dtype=torch.bool), 2), x)
    assert torch.equal(crop_flip(x, offsets, torch.ones(3, dtype=torch.bool), 2), x.flip(-1))


def test_loader_is_deterministic_per_seed_and_resumes():
    x, y = _pattern(30), torch.arange(30)

    def run(loader, epochs):
        return [torch.cat([b[0] for b in loader]) for _ in range(epochs)]

    a = run(TensorLoader(x, y, batch_size=8, augment=True, seed=7), 3)
    b = run(TensorLoader(x, y, batch_size=8, augment=True, seed=7), 3)
    c = run(TensorLoader(x, y, batch_size=8, augment=True, seed=8), 1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])
    first = TensorLoader(x, y, batch_size=8, augment=True, seed=7)
    run(first, 2)
    state = first.state_dict()
    assert state["epoch"] == 2
    torch.manual_seed(123)  # global RNG does not matter
    resumed = TensorLoader(x, y, batch_size=8, augment=True, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(run(resumed, 1)[0], a[2])


def test_float_images_channels_last_and_max_images():
    x = torch.rand(10, 3, 16, 16)
    loader = TensorLoader(x, torch.zeros(10, dtype=torch.long), batch_size=4, shuffle=False,
                          channels_last=True, max_images=6)
    batches = list(loader)
    assert loader.num_images == 6 and len(loader) == 2
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.cat([b[0] for b in batches]), x[:6])


@pytest.mark.parametrize("kwargs, needle", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2, "pad": -1}, "pad"),
    ({"batch_size": 2, "seed": "x"}, "seed"),
    ({"batch_size": 20, "drop_last": True}, "too few"),
])
def test_loader_rejects_bad_settings(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TensorLoader(_pattern(10), torch.arange(10), **kwargs)


def test_loader_rejects_mismatched_labels():
    with pytest.raises(ConfigError, match="labels"):
        TensorLoader(_pattern(10), torch.arange(9), batch_size=2)
    with pytest.raises(ConfigError, match="4-D"):
        TensorLoader(torch.zeros(10, 8, 8), torch.arange(10), batch_size=2)


def test_make_loaders_follows_dataset_info(tiny_svhn):
    splits = load_dataset("svhn", root=tiny_svhn)
    train, val = make_loaders(splits, batch_size=8, eval_batch_size=5)
    assert train.augment and train.shuffle and not train.flip  # no flips for house numbers
    assert not val.augment and not val.shuffle and len(val) == 2
    xb, yb = next(iter(train))
    assert xb.shape == (8, 3, 32, 32) and yb.dtype == torch.int64
