"""Datasets held in memory as tensors, and a loader that augments on the device.

Supported datasets (:data:`DATASETS`):

* ``cifar10``, ``cifar100``: read from torchvision's on-disk format
  (``<root>/cifar-10-batches-py/`` with ``data_batch_1`` ... ``data_batch_5``
  and ``test_batch``; ``<root>/cifar-100-python/`` with ``train`` and
  ``test``).
* ``svhn``: ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat``
  (torchvision's format, the original Stanford files; label 10 means digit 0).
* ``digits``: scikit-learn's 8x8 handwritten digits (1,797 real images, 1
  channel, 10 classes), shipped inside scikit-learn, so it works offline.

The files are parsed here with the same rules torchvision's dataset classes
use (latin-1 pickles, ``.mat`` arrays transposed to NCHW, SVHN label 10 -> 0),
but without torchvision's MD5 check, so a subset of a dataset written in the
same format loads too (the tests rely on this). With ``download=True`` a
missing dataset is fetched through ``torchvision.datasets`` (which verifies
the checksums); when that fails the error says where to put the files.

Images are kept as ``uint8`` tensors (N, C, H, W) for CIFAR and SVHN; digits
are ``float32`` in [0, 1] (the raw values 0..16 divided by 16, which are exact
in float32). Labels are ``int64``. Normalization is not applied: it lives in
the model (``nni_robust.models.Normalize``) with :attr:`DatasetInfo.mean` and
:attr:`DatasetInfo.std`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import random
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .config import check_choice, check_range
from .errors import ConfigError, DatasetNotFoundError

__all__ = ["DatasetInfo", "DataSplits", "DATASETS", "load_dataset", "default_data_root",
           "TensorLoader", "make_loaders", "DATA_ROOT_ENV", "DIGITS_TEST_FRACTION",
           "DIGITS_TEST_SEED"]

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "NNI_ROBUST_DATA"
"""Environment variable naming the default data folder."""

DIGITS_TEST_FRACTION = 0.2
"""Fraction of scikit-learn's digits held out as the test set (it has no official one)."""

DIGITS_TEST_SEED = 0
"""Seed of the fixed digits train/test split (independent of ``load_dataset``'s ``seed``)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: Registry name (a key of :data:`DATASETS`).
        num_classes: Number of classes.
        channels: Image channels.
        size: Image height (= width) in pixels.
        mean: Per-channel mean of the training images in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
        flip: Whether random horizontal flips are a valid augmentation
            (not for digits, where a flip changes the class identity of
            some glyphs, and not for SVHN house numbers).
    """

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """A dataset split into a training part and a validation (or test) part.

    Attributes:
        train: ``(images, labels)``: images (N, C, H, W), ``uint8`` or
            ``float32`` in [0, 1]; labels ``int64`` (N,).
        val: ``(images, labels)`` like ``train``: the held-out part of the
            training set (``split="search"``) or the test set
            (``split="final"``).
        info: The dataset's :class:`DatasetInfo`.
    """

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    info: DatasetInfo


# Mean/std: the values commonly used for these datasets (computed over the
# training sets). For digits: computed over all 1,797 images scaled to [0, 1].
DATASETS: Mapping[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), flip=True),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), flip=True),
    "svhn": DatasetInfo("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728),
                        (0.1980, 0.2010, 0.1970), flip=False),
    "digits": DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3760,), flip=False),
}
"""Registry of supported datasets: name -> :class:`DatasetInfo`."""

_SPLITS = ("search", "final")

_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"],
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "CIFAR100"),
}
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def default_data_root() -> Path:
    """The data folder used when ``root`` is not given.

    Returns:
        ``$NNI_ROBUST_DATA`` when set, else ``~/.cache/nni_robust/data``.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nni_robust" / "data"


def load_dataset(name: str, *, root: str | os.PathLike | None = None, val_fraction: float = 0.2,
                 seed: int | None = 0, split: str = "search", download: bool = False) -> DataSplits:
    """Load a dataset into memory and split it.

    Args:
        name: One of :data:`DATASETS` (``cifar10``, ``cifar100``, ``svhn``,
            ``digits``).
        root: Data folder; default :func:`default_data_root`. Not used by
            ``digits``.
        val_fraction: Fraction of the training set held out as ``val`` when
            ``split="search"``; in (0, 1).
        seed: Seed of the search split's permutation. ``None`` draws one and
            logs it.
        split: ``"search"``: ``train``/``val`` are a seeded
            ``1 - val_fraction`` / ``val_fraction`` split of the training set
            (the test set is never touched). ``"final"``: ``train`` is the
            whole training set and ``val`` the test set.
            Digits has no official test set: a fixed split
            (:data:`DIGITS_TEST_FRACTION` = 20 %, seed
            :data:`DIGITS_TEST_SEED`, not ``seed``) defines its "training"
            (1,438 images) and "test" (359 images) sets, and the two split
            modes then work as for the other datasets.
        download: Try to download a missing dataset through
            ``torchvision.datasets``. If that fails, the dataset is reported
            missing.

    Returns:
        The :class:`DataSplits`.

    Raises:
        ConfigError: Unknown ``name`` or ``split``, or ``val_fraction`` out of
            range or leaving an empty part.
        DatasetNotFoundError: The files are not in ``root``; the message
            names the absolute folder, the files expected there and how to
            get them.
    """
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ConfigError(f"dataset must be one of {sorted(DATASETS)}, but got {name!r}.")
    name = name.lower()
    check_choice("split", split, _SPLITS)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise ConfigError(f"val_fraction must be a number in (0, 1), but got {val_fraction!r}.")
    check_range("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        logger.info("load_dataset(%r): drew split seed %d", name, seed)
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int or None, but got {seed!r}.")

    info = DATASETS[name]
    want_test = split == "final"
    if name == "digits":
        train, test = _read_digits()
    else:
        root_path = Path(root).expanduser() if root is not None else default_data_root()
        reader = _read_cifar if name in _CIFAR_FILES else _read_svhn
        train, test = reader(name, root_path, want_test, download)

    if want_test:
        splits = DataSplits(train=train, val=test, info=info)
    else:
        tr, va = _split(train, val_fraction, seed, name)
        splits = DataSplits(train=tr, val=va, info=info)
    logger.info("Loaded %s (%s split): %d train / %d val images", name, split,
                len(splits.train[1]), len(splits.val[1]))
    return splits


def _split(data: tuple[torch.Tensor, torch.Tensor], fraction: float, seed: int,
           name: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    images, labels = data
    n = len(labels)
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise ConfigError(f"val_fraction={fraction!r} splits the {n} training images of {name!r} "
                          f"into an empty part; choose a fraction between {1 / n:.4g} and "
                          f"{1 - 1 / n:.4g}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def _read_digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    # scikit-learn's own file (what sklearn.datasets.load_digits reads: 64 pixels and the label a row), read
    # without importing scikit-learn, which costs seconds of CPU in every trial process; load_digits otherwise.
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders
                 if (Path(f) / "datasets" / "data" / "digits.csv.gz").is_file()), None)
    if path is not None:
        rows = np.loadtxt(path, delimiter=",")
        pixels, target = rows[:, :-1].reshape(-1, 8, 8), rows[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
            raise ImportError("The 'digits' dataset needs scikit-learn: pip install scikit-learn") from exc
        bunch = load_digits()
        pixels, target = bunch.images, bunch.target
    images = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(target, dtype=np.int64))
    return _split((images.contiguous(), labels), DIGITS_TEST_FRACTION, DIGITS_TEST_SEED, "digits")


def _not_found(name: str, folder: Path, expected: list[str], how: str,
               download_error: BaseException | None) -> DatasetNotFoundError:
    folder = folder.resolve()
    msg = (f"Dataset {name!r} not found in {folder}: expected "
           f"{', '.join(expected)} there (torchvision's on-disk format). {how} "
           f"Or point root= / ${DATA_ROOT_ENV} at the folder that holds them.")
    if download_error is not None:
        msg += f" (Download failed: {type(download_error).__name__}: {download_error})"
    return DatasetNotFoundError(msg)


def _try_download(name: str, root: Path, cls_name: str, kwargs_list: list[dict[str, Any]]) -> BaseException | None:
    """Download through torchvision; return the error, or None on success."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        root.mkdir(parents=True, exist_ok=True)
        for kwargs in kwargs_list:
            cls(str(root), download=True, **kwargs)
    except Exception as exc:  # network, checksum, import errors: all mean "not available"
        logger.warning("Downloading %s into %s failed: %s", name, root, exc)
        return exc
    return None


def _read_cifar(name: str, root: Path, want_test: bool, download: bool):
    folder_name, train_files, test_files, url, cls_name = _CIFAR_FILES[name]
    folder = root / folder_name
    needed = train_files + (test_files if want_test else [])
    error = None
    if download and not all((folder / f).is_file() for f in needed):
        error = _try_download(name, root, cls_name, [{"train": True}] + ([{"train": False}] if want_test else []))
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise _not_found(
            name, root, [f"{folder_name}/{f}" for f in needed],
            f"Missing: {', '.join(missing)}. Get them with torchvision.datasets.{cls_name}("
            f"root='{root.resolve()}', download=True) on a machine with internet access, or "
            f"download {url} and extract it into {root.resolve()}.", error)
    train = _read_cifar_files(folder, train_files)
    test = _read_cifar_files(folder, test_files) if want_test else None
    return train, test


_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, strings, numbers, numpy arrays):
    a crafted file naming any other global is refused, so reading a dataset never runs code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _read_cifar_files(folder: Path, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for fname in files:
        path = folder / fname
        try:
            with open(path, "rb") as f:
                entry = _CifarUnpickler(f, encoding="latin1").load()
            entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
            data = np.asarray(entry["data"], dtype=np.uint8)
            label = entry["labels"] if "labels" in entry else entry["fine_labels"]
        except Exception as exc:
            raise DatasetNotFoundError(
                f"{path.resolve()} is not a readable CIFAR batch (a pickled dict with 'data' and "
                f"'labels'/'fine_labels'): {type(exc).__name__}: {exc}. Delete it and download "
                f"the dataset again.") from exc
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(label, dtype=np.int64))
    return (torch.from_numpy(np.ascontiguousarray(np.concatenate(images))),
            torch.from_numpy(np.concatenate(labels)))


def _read_svhn(name: str, root: Path, want_test: bool, download: bool):
    parts = ["train"] + (["test"] if want_test else [])
    needed = [_SVHN_FILES[p] for p in parts]
    error = None
    if download and not all((root / f).is_file() for f in needed):
        error = _try_download(name, root, "SVHN", [{"split": p} for p in parts])
    missing = [f for f in needed if not (root / f).is_file()]
    if missing:
        raise _not_found(
            name, root, needed,
            f"Missing: {', '.join(missing)}. Get them with torchvision.datasets.SVHN("
            f"root='{root.resolve()}', split='train'/'test', download=True) on a machine with "
            f"internet access, or download them from http://ufldl.stanford.edu/housenumbers/ "
            f"into {root.resolve()}.", error)
    train = _read_svhn_file(root / _SVHN_FILES["train"])
    test = _read_svhn_file(root / _SVHN_FILES["test"]) if want_test else None
    return train, test


def _read_svhn_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io as sio

    try:
        mat = sio.loadmat(str(path))
        x = np.asarray(mat["X"], dtype=np.uint8)  # H, W, C, N
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except Exception as exc:
        raise DatasetNotFoundError(
            f"{path.resolve()} is not a readable SVHN .mat file (arrays 'X' of shape 32x32x3xN "
            f"and 'y'): {type(exc).__name__}: {exc}. Delete it and download it again.") from exc
    if x.ndim != 4 or x.shape[3] != len(y):
        raise DatasetNotFoundError(f"{path.resolve()}: 'X' has shape {x.shape}, expected HxWxCxN "
                                   f"with N = {len(y)} labels.")
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))  # N, C, H, W as torchvision
    np.place(y, y == 10, 0)  # SVHN labels digit 0 as 10
    return torch.from_numpy(images), torch.from_numpy(y)


class TensorLoader:
    """Batches of in-memory images, augmented on the device.

    Each iteration is one epoch. The images are copied to ``device`` once
    (on the first iteration, in their stored dtype, so ``uint8`` stays
    compact) and every batch is cut, augmented and converted to float there.
    Augmentation is the standard one for small images: a random crop of the
    zero-padded image (``pad`` pixels on each side) and, when ``flip``, a
    random horizontal flip; both are done for the whole batch with one
    gather, never with a Python loop over samples.

    Randomness: epoch ``e`` draws its order, crop offsets and flips from a
    CPU :class:`torch.Generator` seeded from ``(seed, e)`` (through NumPy's
    ``SeedSequence``, so different seeds never share epochs). Epochs are
    therefore reproducible and independent of the global RNGs, and resuming
    needs only the epoch counter (:meth:`state_dict`). Resuming inside an
    epoch is not supported; checkpoint between epochs.

    Data-parallel runs (``world_size`` ``W`` > 1, :mod:`nni_robust.distributed`):
    ``batch_size`` stays the *global* batch and must be a multiple of ``W``.
    Every process draws the same epoch order, crops and flips (same seed); the
    order is padded to a multiple of ``W`` by repeating its first images (as
    :class:`torch.utils.data.DistributedSampler` does), and process ``rank``
    yields the ``rank``-th of the ``W`` equal contiguous slices of every
    global batch. So all processes yield the same number of batches (``len()``
    is the number of global batches), the slices of one global batch
    concatenated in rank order are the single-process batch (when ``W``
    divides the number of images), and the padding draws its augmentation
    after the single-process draws, leaving those unchanged. ``W = 1`` runs
    the single-process code path, unchanged.

    Args:
        images: (N, C, H, W) ``uint8`` (scaled by 1/255) or floating point
            (taken as already in [0, 1]).
        labels: (N,) integer labels.
        batch_size: Images per batch.
        shuffle: Draw a new order every epoch.
        augment: Random crop (+ flip).
        seed: Seed of the epoch generators; ``None`` draws one and logs it.
        device: Where batches are produced (anything
            :func:`nni_robust.device.resolve_device` accepts).
        drop_last: Skip the last, smaller batch.
        pad: Zero padding of the random crop; default 4 pixels, 1 pixel for
            images smaller than 16 pixels.
        flip: Random horizontal flips when ``augment``.
        channels_last: Yield images in ``torch.channels_last`` memory format.
        max_images: Use only the first ``max_images`` images.
        rank: This process's rank in a data-parallel run (see above).
        world_size: Number of processes of the run; 1 (the default) is the
            single-process loader.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 shuffle: bool = True, augment: bool = False, seed: int | None = 0,
                 device: str | torch.device = "cpu", drop_last: bool = False,
                 pad: int | None = None, flip: bool = True, channels_last: bool = False,
                 max_images: int | None = None, rank: int = 0, world_size: int = 1) -> None:
        from .device import resolve_device

        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ConfigError(f"images must be a 4-D tensor (N, C, H, W), but got "
                              f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}.")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ConfigError(f"images must be uint8 or floating point, but got {images.dtype}.")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(images):
            raise ConfigError(f"labels must be a 1-D tensor with one label per image "
                              f"({len(images)}), but got "
                              f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}.")
        _check_int("batch_size", batch_size, 1)
        if max_images is not None:
            _check_int("max_images", max_images, 1)
            images, labels = images[:max_images], labels[:max_images]
        if pad is None:
            pad = 4 if min(images.shape[-2:]) >= 16 else 1
        _check_int("pad", pad, 0)
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
            logger.info("TensorLoader: drew seed %d", seed)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an int or None, but got {seed!r}.")
        _check_int("world_size", world_size, 1)
        _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ConfigError(f"rank must be < world_size={world_size}, but got {rank}.")
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} (the global batch) must be a multiple of the number of "
                              f"processes {world_size}, so that every process gets an equal share.")
        if len(images) == 0 or (drop_last and len(images) < batch_size):
            raise ConfigError(f"TensorLoader has {len(images)} images, too few for one batch of "
                              f"{batch_size} (drop_last={drop_last}).")
        self.images = images
        self.labels = labels.long()
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = seed
        self.device = resolve_device(device)
        self.drop_last = bool(drop_last)
        self.pad = pad
        self.flip = bool(flip)
        self.channels_last = bool(channels_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_images(self) -> int:
        """Number of images the loader iterates over."""
        return len(self.labels)

    def __len__(self) -> int:
        n, b = self.num_images, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its order and augmentation)."""
        _check_int("epoch", epoch, 0)
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """The loader's position: ``{"epoch": next epoch, "seed": seed}``."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a :meth:`state_dict`.

        Raises:
            ConfigError: ``state`` lacks the ``epoch`` key.
        """
        if "epoch" not in state:
            raise ConfigError(f"TensorLoader state must hold 'epoch', but got keys {sorted(state)}.")
        self.set_epoch(int(state["epoch"]))
        if "seed" in state:
            self.seed = int(state["seed"])

    def _on_device(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            self._cache = (self.images.to(self.device), self.labels.to(self.device))
        return self._cache

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch]).generate_state(2, np.uint64)
        return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.world_size > 1:
            yield from self._iter_shard()
            return
        epoch = self.epoch
        self.epoch += 1
        x_all, y_all = self._on_device()
        n, b = self.num_images, self.batch_size
        gen = self._epoch_generator(epoch)
        order = torch.randperm(n, generator=gen).to(self.device) if self.shuffle else None
        if self.augment:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen).to(self.device)
            flips = (torch.rand(n, generator=gen) < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
            flips = flips.to(self.device)
        stop = (n // b) * b if self.drop_last else n
        for start in range(0, stop, b):
            end = min(start + b, n)
            if order is None:
                x, y = x_all[start:end], y_all[start:end]
            else:
                idx = order[start:end]
                x, y = x_all[idx], y_all[idx]
            if self.augment:
                x = crop_flip(x, offsets[start:end], flips[start:end], self.pad)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _iter_shard(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's slices of the global batches (``world_size`` > 1; see the class docstring)."""
        epoch = self.epoch
        self.epoch += 1
        x_all, y_all = self._on_device()
        n, b, w = self.num_images, self.batch_size, self.world_size
        gen = self._epoch_generator(epoch)  # the same draws, in the same order, as the single-process loader
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        stop = (n // b) * b if self.drop_last else -(-n // w) * w
        if self.augment:
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
            flips = (torch.rand(n, generator=gen) < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
        extra = max(0, stop - n)
        if extra:  # padding: repeat the first images of the order; its augmentation is drawn afterwards
            order = torch.cat([order, order[:extra]])
            if self.augment:
                offsets = torch.cat([offsets, torch.randint(0, 2 * self.pad + 1, (extra, 2), generator=gen)])
                flips = torch.cat([flips, (torch.rand(extra, generator=gen) < 0.5) if self.flip
                                   else torch.zeros(extra, dtype=torch.bool)])
        order = order.to(self.device)
        if self.augment:
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        for start in range(0, stop, b):
            share = (min(start + b, stop) - start) // w
            lo = start + self.rank * share
            idx = order[lo:lo + share]
            x, y = x_all[idx], y_all[idx]
            if self.augment:
                x = crop_flip(x, offsets[lo:lo + share], flips[lo:lo + share], self.pad)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def __repr__(self) -> str:
        shard = f", rank={self.rank}, world_size={self.world_size}" if self.world_size > 1 else ""
        return (f"TensorLoader(num_images={self.num_images}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, augment={self.augment}, pad={self.pad}, "
                f"flip={self.flip}, device={str(self.device)!r}, epoch={self.epoch}{shard})")


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a batch in one gather.

    Output pixel ``(i, j)`` of image ``b`` is pixel ``(i + dy_b, j' + dx_b)``
    of the image zero-padded by ``pad`` on each side, where ``j' = W-1-j`` if
    ``flips[b]`` else ``j``; ``(dy_b, dx_b) = offsets[b]`` in ``[0, 2 pad]``
    (``(pad, pad)`` is the identity).

    Args:
        x: (B, C, H, W) images, any dtype.
        offsets: (B, 2) integer crop offsets ``(dy, dx)``.
        flips: (B,) bool, flip image ``b`` horizontally.
        pad: Zero padding on each side.

    Returns:
        (B, C, H, W) augmented images, same dtype and device as ``x``.
    """
    bsz, ch, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    rows = offsets[:, 0, None] + torch.arange(h, device=dev)  # B, H
    cols_id = torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], (w - 1) - cols_id, cols_id) + offsets[:, 1, None]  # B, W
    return padded[torch.arange(bsz, device=dev)[:, None, None, None],
                  torch.arange(ch, device=dev)[None, :, None, None],
                  rows[:, None, :, None],
                  cols[:, None, None, :]]


def cutout(x: torch.Tensor, length: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017, as DARTS uses it): zero one ``length`` x ``length`` square per image.

    The square's centre is uniform over the image and the square is clipped at
    the borders. Batched: one mask for the whole batch, no loop over samples.
    Images are in [0, 1], so the hole is black (DARTS zeroes normalized
    images, i.e. fills with the mean; our normalization lives in the model).

    Args:
        x: (B, C, H, W) images.
        length: side of the square in pixels (0 returns ``x`` unchanged).
        generator: random generator on ``x``'s device (default: the global one).

    Returns:
        A new tensor, ``x`` with the holes.
    """
    if length <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    half = length // 2
    hole = ((rows - cy).abs() <= half - (1 - length % 2) * (rows >= cy)) \
        & ((cols - cx).abs() <= half - (1 - length % 2) * (cols >= cx))
    return x * (~hole).unsqueeze(1).to(x.dtype)


def make_loaders(splits: DataSplits, *, batch_size: int, device: str | torch.device = "cpu",
                 augment: bool = True, seed: int | None = 0, eval_batch_size: int | None = None,
                 channels_last: bool = False, max_train: int | None = None,
                 max_val: int | None = None) -> tuple[TensorLoader, TensorLoader]:
    """Build the training and validation loaders of a :class:`DataSplits`.

    The training loader shuffles and (when ``augment``) applies the
    dataset's augmentation (crop, plus flip where :attr:`DatasetInfo.flip`);
    the validation loader keeps the order and does not augment.

    Args:
        splits: From :func:`load_dataset`.
        batch_size: Training batch size.
        device: Where batches are produced.
        augment: Augment the training batches.
        seed: Seed of the training loader.
        eval_batch_size: Validation batch size (default ``batch_size``).
        channels_last: Yield ``channels_last`` batches.
        max_train: Use only the first ``max_train`` training images.
        max_val: Use only the first ``max_val`` validation images.

    Returns:
        ``(train_loader, val_loader)``.
    """
    train = TensorLoader(*splits.train, batch_size=batch_size, shuffle=True, augment=augment,
                         seed=seed, device=device, flip=splits.info.flip,
                         channels_last=channels_last, max_images=max_train)
    val = TensorLoader(*splits.val, batch_size=eval_batch_size or batch_size, shuffle=False,
                       augment=False, seed=0, device=device, channels_last=channels_last,
                       max_images=max_val)
    return train, val


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, but got {value!r}.")
