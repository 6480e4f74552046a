"""Image data sets as uint8 tensors that live on the training device.

Every data set loads into one `ImageData`: uint8 images (N, H, W, C), int64 labels (N,), the
per-channel mean of the training images and a per-channel divisor ``std`` (all 1.0 unless a
study normalises by the standard deviation: `normalize_data`). Training keeps the images as
uint8 on the device; `convert_and_center` turns a batch into float32 (B, C, H, W) there, and
`tune_lip.data.augment` augments it there, so the host never touches a pixel during training.

Data sets (the `DATASETS` registry; options are keyword arguments of `load_dataset`):

- ``"digits"``: scikit-learn's bundled 8x8 digits (offline), pixels 0..16 scaled to 0..255,
  a fixed stratified 80/20 train/test split (1437 / 360 images).
- ``"cifar10"``, ``"cifar100"``: the official python-format directories
  (``cifar-10-batches-py``, ``cifar-100-python``) under ``data_dir``, read by torchvision.
  torchvision refuses files whose md5 differs from the official release; such a directory
  (e.g. re-pickled, or only the test batch present) is read by our own reader of the same
  format, with a warning. Missing files raise `UserError` unless ``download=True``.
- ``"generated"``: DM-Improves-AT style npz files (``image`` N x 32 x 32 x 3 uint8,
  ``label`` N), options ``path`` (relative paths are taken relative to ``data_dir``),
  ``num_train`` (the first n images), ``test`` (only ``"cifar10"``: the CIFAR-10 test set from
  ``data_dir``), ``validation_from`` (``"generated"``: the validation split is held out of the
  generated images; ``"cifar10"``: of the real CIFAR-10 training set, as SU does, while all
  generated images train) and ``cache_dir`` (default ``<data_dir>/npy_cache``). The npz is converted once
  by `convert_npz` to plain ``.npy`` files that are memory-mapped, so 20M images (61 GB) are
  paged in from disk on demand instead of sitting in RAM twice.
- ``"synthetic"``: a deterministic, learnable toy set for tests (class mean images + noise).

Placement: ``to(device)`` puts every tensor on the device (the fast path). Training images too
large for the device stay on the host with ``to(device, "stream")``: batches are then read by
index from the memory-mapped file (`ImageData.train_file`) into host buffers and copied over
(`tune_lip.data.stream`; a study picks it with ``dataset.placement``).

The CIFAR reader lives in `tune_lip.data.cifar`, the npz conversion in `tune_lip.data.npz`;
their names are re-exported here.

Validation split: `split_validation` holds out ``validation`` training images (a count, or a
fraction in (0, 1); `validation_count`) as the validation set, drawn by ``seed`` alone (the
data-split seed, not the training seed, so replicates share one split). The training set keeps
the rest (as an index into the loaded images: nothing is copied), and its channel mean is
recomputed from them. `DEFAULT_VALIDATION` gives each data set's default: 5,000 images for
CIFAR-10/100 and the generated data (as *Scaling Up Lipschitz Networks* does), 10% otherwise.

Example:
    >>> data = load_dataset("digits")
    >>> data.train_images.shape, data.train_images.dtype, data.input_shape
    (torch.Size([1437, 8, 8, 1]), torch.uint8, (1, 8, 8))
    >>> x = convert_and_center(data.train_images[:4], data.mean_tensor())
    >>> x.shape, x.dtype
    (torch.Size([4, 1, 8, 8]), torch.float32)
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Names that lived in this module before it was split are imported back (noqa: the ones not
# used here are re-exported).
from tune_lip.data.cifar import (  # noqa: F401
    _CIFAR,
    _CIFAR_ARCHIVES,
    _check_labels,
    _CifarFormat,
    _read_cifar,
    _read_cifar_batches,
)
from tune_lip.data.npz import (  # noqa: F401
    _CHUNK_BYTES,
    _IMAGES,
    _LABELS,
    _MARKER,
    _MEANS,
    _NPZ_FIX,
    _conversion_is_fresh,
    _expect_end,
    _npy_member,
    _read_exact,
    _read_label_member,
    _stream_to_npy,
    _write_json_atomic,
    convert_npz,
)
from tune_lip.data.stream import NpyRows, RowReader
from tune_lip.errors import UserError

__all__ = [
    "DATASETS",
    "DEFAULT_VALIDATION",
    "ImageData",
    "default_validation",
    "load_dataset",
    "split_validation",
    "SPLIT_RNGS",
    "validation_count",
    "convert_npz",
    "convert_and_center",
    "channel_std",
    "normalize_data",
    "NORMALIZATIONS",
]


_HASH_CHUNK_BYTES = 64 << 20   # `ImageData.fingerprint` reads this much at a time


@dataclass(eq=False)  # tensors have no single truth value, so no generated __eq__
class ImageData:
    """A labelled image data set, kept as uint8 so that all of it fits on the device.

    train_images / test_images: uint8 (N, H, W, C), pixel values 0..255.
    train_labels / test_labels: int64 (N,), values in [0, num_classes).
    mean: per-channel mean of the training images in [0, 1] (length C), for `convert_and_center`.
    std: per-channel divisor (length C) applied after centring; None on construction means all
    1.0 (plain centring, the Lipschitz code's). `normalize_data` sets it.
    After `split_validation`: val_images / val_labels hold the validation set, train_index
    (int64 (N_train,), into train_images) the training images left, and source the data set
    as loaded (its `fingerprint` is this one's). Read training batches with `train_batch`.

    Example:
        >>> d = load_dataset("synthetic", num_train=20, num_test=10)
        >>> d.num_train, d.input_shape, len(d.mean)
        (20, (1, 8, 8), 1)
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    name: str
    mean: tuple[float, ...]
    sha256: str | None = field(default=None, repr=False)   # `fingerprint`, once computed
    std: tuple[float, ...] | None = None       # divisor per channel; None -> all 1.0
    val_images: torch.Tensor | None = None     # uint8 (V, H, W, C): held out of the training images
    val_labels: torch.Tensor | None = None     # int64 (V,)
    train_index: torch.Tensor | None = field(default=None, repr=False)  # int64 (N_train,); None = all
    source: ImageData | None = field(default=None, repr=False)          # the data set as loaded
    # Where a validation split is drawn from when not from the training images: e.g. the CIFAR-10
    # training set for the generated data, as SU holds out 5,000 real CIFAR-10 training images.
    val_pool_images: torch.Tensor | None = field(default=None, repr=False)   # uint8 (P, H, W, C)
    val_pool_labels: torch.Tensor | None = field(default=None, repr=False)   # int64 (P,)
    # The file train_images map (the generated data's images.npy), which streaming reads from.
    train_file: NpyRows | None = field(default=None, repr=False)
    # "device": train_images live where the labels do; "stream": train_images stay on the host and
    # every batch is read from there (`tune_lip.data.stream`), the other tensors are on the device.
    placement: str = "device"

    def __post_init__(self) -> None:
        if self.placement not in ("device", "stream"):
            raise ValueError(f"{self.name}: placement must be device or stream, got {self.placement!r}")
        # Shape and dtype checks only: they read metadata, never data, so they cost no host sync.
        for split in ("train", "test"):
            images: torch.Tensor = getattr(self, f"{split}_images")
            labels: torch.Tensor = getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(f"{self.name}: {split}_images must be uint8 (N, H, W, C), "
                                 f"got {images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise ValueError(f"{self.name}: {split}_labels must be int64 ({images.shape[0]},), "
                                 f"got {labels.dtype} {tuple(labels.shape)}")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(f"{self.name}: train images {tuple(self.train_images.shape[1:])} and "
                             f"test images {tuple(self.test_images.shape[1:])} differ in shape")
        channels = self.train_images.shape[3]
        if len(self.mean) != channels:
            raise ValueError(f"{self.name}: mean has {len(self.mean)} entries for "
                             f"{channels} channels")
        if self.std is None:
            self.std = (1.0,) * channels
        if len(self.std) != channels or not all(s > 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be {channels} positive numbers, got {self.std}")

    def to(self, device: torch.device | str, placement: str | None = None) -> ImageData:
        """The same data set with every tensor on ``device`` (images stay uint8); with
        ``placement`` "stream" (or None on streamed data) the training images stay on the host and
        `train_batch` reads them from there (`tune_lip.data.stream`)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        placement = self.placement if placement is None else placement
        if placement not in ("device", "stream"):
            raise ValueError(f"placement must be device or stream, got {placement!r}")
        if placement == "stream" and self.train_images.device.type != "cpu":
            raise ValueError(f"{self.name}: only training images on the host can be streamed")
        return replace(
            self,
            placement=placement,
            train_images=self.train_images if placement == "stream" else self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
            val_images=move(self.val_images),
            val_labels=move(self.val_labels),
            train_index=move(self.train_index),
            val_pool_images=move(self.val_pool_images),
            val_pool_labels=move(self.val_pool_labels),
        )

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images (B, H, W, C) uint8 and labels (B,) at positions ``idx`` (B,) of the
        training set (after a validation split: of the images left to train on). No host sync on
        the device; streamed, the images are read from the host (a sync: for occasional batches;
        training reads ahead with `tune_lip.data.stream.StreamedBatches`)."""
        if self.train_index is not None:
            idx = self.train_index[idx]
        if self.placement == "stream":
            rows = idx.cpu().numpy()                                # host sync
            pin = self.device.type == "cuda"
            images = self.train_reader().read(rows, torch.empty((len(rows), *self.train_images.shape[1:]),
                                                                 dtype=torch.uint8, pin_memory=pin))
            return images.to(self.device, non_blocking=pin), self.train_labels[idx]
        return self.train_images[idx], self.train_labels[idx]

    @property
    def device(self) -> torch.device:
        """Where training happens: the labels' device (streamed images stay on the host)."""
        return self.train_labels.device

    def train_reader(self) -> RowReader:
        """Reads rows of ``train_images`` by index into host buffers: from `train_file` with
        ``os.preadv`` when there is one (nothing stays mapped), else from the host tensor."""
        if self.train_file is not None:
            return RowReader.from_npy(self.train_file, tuple(self.train_images.shape))
        return RowReader.from_tensor(self.train_images.cpu())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W): the shape of one image after `convert_and_center`."""
        _, h, w, c = self.train_images.shape
        return (c, h, w)

    @property
    def num_train(self) -> int:
        """Images to train on (after a validation split, those left)."""
        return self.train_images.shape[0] if self.train_index is None else self.train_index.shape[0]

    @property
    def num_val(self) -> int:
        return 0 if self.val_labels is None else self.val_labels.shape[0]

    @property
    def num_test(self) -> int:
        return self.test_images.shape[0]

    def fingerprint(self) -> str:
        """SHA-256 of the data set's content: the train and test images and labels as loaded
        (uint8 and int64 bytes, in that order), so the same data read from another file format
        hashes the same; then the validation pool's, when there is one. Computed once (on a CPU
        copy) and kept across `to`. Recorded in every experiment's provenance. A split data set's
        is its source's."""
        if self.source is not None:
            return self.source.fingerprint()
        if self.sha256 is None:
            digest = hashlib.sha256()
            tensors = [self.train_images, self.train_labels, self.test_images, self.test_labels]
            if self.val_pool_images is not None and self.val_pool_labels is not None:
                tensors += [self.val_pool_images, self.val_pool_labels]
            # In 64 MB chunks (20M images are 61 GB); the same bytes, so the same digest. A
            # memory-mapped file is read through `train_reader`, so its pages do not stay in RSS.
            reader = self.train_reader() if self.train_images.device.type == "cpu" else None
            for i, tensor in enumerate(tensors):
                n = tensor.shape[0]
                rows = max(1, _HASH_CHUNK_BYTES // max(1, tensor[:1].numel() * tensor.element_size()))
                for start in range(0, n, rows):
                    if i == 0 and reader is not None:
                        chunk = reader.read(np.arange(start, min(start + rows, n)))
                    else:
                        chunk = tensor[start:start + rows].detach().cpu().contiguous()
                    digest.update(chunk.numpy().tobytes())
            self.sha256 = digest.hexdigest()
        return self.sha256

    def mean_tensor(self) -> torch.Tensor:
        """`mean` as float32 (C,) on the images' device; build it once, not per batch."""
        return torch.tensor(self.mean, dtype=torch.float32, device=self.device)

    def std_tensor(self) -> torch.Tensor:
        """`std` as float32 (C,) on the images' device; build it once, not per batch."""
        assert self.std is not None   # set in __post_init__
        return torch.tensor(self.std, dtype=torch.float32, device=self.device)


def convert_and_center(images: torch.Tensor, mean: torch.Tensor,
                       std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) with value (x / 255 - mean[c]) / std[c].

    Runs on the images' device with no host sync. ``mean`` is float (C,) in [0, 1], ``std``
    float (C,) > 0 or None (no division: the Lipschitz code's plain centring); pass them
    already on the images' device (`ImageData.mean_tensor`, `ImageData.std_tensor`), else they
    are copied there per call.

    Example:
        >>> x = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
        >>> convert_and_center(x, torch.tensor([0.5, 0.25, 0.0]))[0, :, 0, 0]
        tensor([0.5000, 0.7500, 1.0000])
        >>> convert_and_center(x, torch.tensor([0.5, 0.25, 0.0]), torch.tensor([0.5, 0.25, 2.0]))[0, :, 0, 0]
        tensor([1.0000, 3.0000, 0.5000])
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (B, H, W, C), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if mean.shape != (images.shape[3],):
        raise ValueError(f"mean must have shape ({images.shape[3]},), got {tuple(mean.shape)}")
    if std is not None and std.shape != (images.shape[3],):
        raise ValueError(f"std must have shape ({images.shape[3]},), got {tuple(std.shape)}")
    mean = mean.to(device=images.device, dtype=torch.float32)
    # Contiguous NCHW so that models may flatten or convolve without another copy.
    x = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    x = x.div_(255.0).sub_(mean.view(-1, 1, 1))  # (B, C, H, W)
    if std is not None:
        x = x.div_(std.to(device=images.device, dtype=torch.float32).view(-1, 1, 1))
    return x


# ---------------------------------------------------------------------------------------------
# Normalisation

# How a study's inputs are normalised (``dataset.normalize``): "mean" = x / 255 - mean (the
# Lipschitz papers' centring: a 1-Lipschitz network's radius is then in pixel units / 255);
# "mean_std" = (x / 255 - mean) / std (torchvision's Normalize, as the sphere/SVAG code uses).
NORMALIZATIONS = ("mean", "mean_std")


def channel_std(data: ImageData, chunk: int = 1 << 15) -> tuple[float, ...]:
    """Per-channel standard deviation (population, in [0, 1] units) of the images ``data`` trains
    on (after a validation split: those left), around their own mean; exact integer moments,
    read in chunks of ``chunk`` images so that a memory-mapped set is not paged in at once."""
    _, h, w, c = data.train_images.shape
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    n = data.num_train
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=data.device)
        x, _ = data.train_batch(idx)                             # (b, H, W, C) uint8
        x64 = x.to(torch.int64)
        total += x64.sum(dim=(0, 1, 2)).cpu().double()           # host sync: once per chunk
        squares += (x64 * x64).sum(dim=(0, 1, 2)).cpu().double()
    count = n * h * w
    mean, mean_sq = total / count, squares / count
    var = (mean_sq - mean * mean).clamp_min(0.0) / 255.0 ** 2
    return tuple(float(v) ** 0.5 for v in var)


def normalize_data(data: ImageData, normalize: str = "mean", *, mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None) -> ImageData:
    """``data`` with the channel ``mean`` and divisor ``std`` a study's `convert_and_center` uses.

    normalize "mean": std all 1.0 (``std`` must be None); "mean_std": std = ``std`` if given,
    else the training images' own (`channel_std`, after the validation split). ``mean`` given
    replaces the training images' own mean (e.g. *Scaling Up Lipschitz Networks*' fixed
    (0.491, 0.482, 0.447)). ValueError for an unknown ``normalize``, a wrong length or a
    non-positive std.

    Example:
        >>> d = normalize_data(load_dataset("synthetic", channels=3), "mean", mean=(0.5, 0.5, 0.5))
        >>> d.mean, d.std
        ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; valid: {', '.join(NORMALIZATIONS)}")
    channels = data.train_images.shape[3]
    for key, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) != channels:
            raise ValueError(f"{key} has {len(value)} entries, the images have {channels} channels")
    if normalize == "mean" and std is not None:
        raise ValueError("std is only used with normalize: mean_std")
    new_mean = data.mean if mean is None else tuple(float(m) for m in mean)
    if normalize == "mean":
        new_std = (1.0,) * channels
    else:
        new_std = channel_std(data) if std is None else tuple(float(s) for s in std)
    if not all(s > 0 for s in new_std):
        raise ValueError(f"std must be positive in every channel, got {new_std}")
    return replace(data, mean=new_mean, std=new_std)


# ---------------------------------------------------------------------------------------------
# Validation split

# Held-out training images per data set, when a config names none (``dataset.validation``):
# the Lipschitz paper holds out 5,000 CIFAR-10 images; the small sets give 10%.
DEFAULT_VALIDATION: dict[str, int | float] = {"cifar10": 5000, "cifar100": 5000, "generated": 5000}
FALLBACK_VALIDATION = 0.1


def default_validation(name: str) -> int | float:
    """The validation split data set ``name`` gets by default: a count or a fraction."""
    return DEFAULT_VALIDATION.get(name, FALLBACK_VALIDATION)


def check_validation(validation: Any) -> int | float:
    """``validation`` if it is a valid split size (an int >= 0 or a float in (0, 1)), else ValueError."""
    if isinstance(validation, bool) or not isinstance(validation, (int, float)):
        raise ValueError(f"must be a count (int) or a fraction in (0, 1), got {validation!r}")
    if isinstance(validation, float) and not 0 < validation < 1:
        raise ValueError(f"a fraction must lie in (0, 1), got {validation!r} (a count is an int)")
    if isinstance(validation, int) and validation < 0:
        raise ValueError(f"must be >= 0 images, got {validation}")
    return validation


def validation_count(validation: int | float, num_train: int) -> int:
    """Images a split of ``validation`` holds out of ``num_train``: the count itself, or the
    fraction of them rounded (at least 1); ValueError unless at least one image is left to train on.

    Example:
        >>> validation_count(5000, 50000), validation_count(0.1, 1437), validation_count(0, 10)
        (5000, 144, 0)
    """
    check_validation(validation)
    count = validation if isinstance(validation, int) else max(1, round(validation * num_train))
    if count >= num_train:
        raise ValueError(f"holds out {count} of the {num_train} training images, leaving none to train on; "
                         f"use fewer (e.g. a fraction such as 0.1)")
    return count


SPLIT_RNGS = ("torch", "numpy")


def split_validation(data: ImageData, validation: int | float, *, seed: int = 0, rng: str = "torch") -> ImageData:
    """Hold ``validation`` images (`validation_count`) out of ``data``'s training set.

    The validation images are a uniformly random subset drawn by ``seed`` alone (on the CPU,
    so the split is the same on every device): ``rng`` "torch" takes the first ``count`` of
    ``torch.randperm(n)``; "numpy" the LAST ``count`` of numpy's legacy
    ``RandomState(seed).permutation(n)``, which is exactly *Scaling Up Lipschitz Networks*'
    ``split_deterministically`` (``np.random.seed(1111); np.random.shuffle(indices)``, sizes
    (45,000, 5,000), lipschitz/data/datasets/dataset.py and cifar10.py). The training set keeps
    the rest, in their order, as `ImageData.train_index` (nothing is copied, so a memory-mapped
    set stays on disk), and ``mean`` becomes the channel mean of the images left to train on.

    A data set with a validation pool (``val_pool_images``, e.g. the generated data's CIFAR-10
    training set) draws the validation set from the pool instead and trains on all its
    training images (mean unchanged). ``validation`` 0 returns ``data`` unchanged. ValueError
    for a bad size or ``rng``, or a data set already split.

    Example:
        >>> data = load_dataset("synthetic", num_train=100)
        >>> split = split_validation(data, 0.1, seed=0)
        >>> split.num_train, split.num_val, split.num_test
        (90, 10, 128)
    """
    if data.train_index is not None or data.val_labels is not None:
        raise ValueError(f"{data.name}: already split into training and validation images")
    if rng not in SPLIT_RNGS:
        raise ValueError(f"unknown split rng {rng!r}; valid: {', '.join(SPLIT_RNGS)}")
    pool = data.val_pool_labels is not None and data.val_pool_images is not None
    n = int(data.val_pool_labels.shape[0]) if data.val_pool_labels is not None else data.num_train
    count = validation_count(validation, n)
    if count == 0:
        return replace(data, val_pool_images=None, val_pool_labels=None) if pool else data
    device = data.device
    if rng == "torch":
        generator = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(n, generator=generator)               # (N,) on the CPU: device-independent
        val_index, train_index = order[:count].sort().values, order[count:].sort().values
    else:
        order = torch.from_numpy(np.random.RandomState(int(seed)).permutation(n))   # (N,) int64
        val_index, train_index = order[n - count:].sort().values, order[:n - count].sort().values
    if pool:
        assert data.val_pool_images is not None and data.val_pool_labels is not None
        index = val_index.to(data.val_pool_images.device)
        return replace(data, val_images=data.val_pool_images[index], val_labels=data.val_pool_labels[index],
                       val_pool_images=None, val_pool_labels=None, source=data, sha256=None)
    if data.placement == "stream":
        val_images = data.train_reader().read(val_index.numpy()).to(device)   # (V, H, W, C) uint8
    else:
        val_images = data.train_images[val_index.to(device)]            # (V, H, W, C) uint8
    # Exact channel sums of the held-out images; the rest's mean follows from the whole set's.
    _, h, w, c = data.train_images.shape
    val_sums = val_images.sum(dim=(0, 1, 2), dtype=torch.int64).tolist()   # host sync: once per split
    pixels = h * w * 255.0
    mean = tuple((m * n * pixels - s) / ((n - count) * pixels) for m, s in zip(data.mean, val_sums))
    return replace(data, mean=mean, val_images=val_images, val_labels=data.train_labels[val_index.to(device)],
                   train_index=train_index.to(device), source=data, sha256=None)


# ---------------------------------------------------------------------------------------------
# Registry


Loader = Callable[..., ImageData]


def load_dataset(name: str, *, data_dir: str | Path = "data", download: bool = False,
                 **options: Any) -> ImageData:
    """Load data set ``name`` from ``data_dir`` (see the module docstring for names and options).

    ``download=True`` lets torchvision fetch CIFAR when its files are missing; nothing is
    ever downloaded otherwise. Returns an `ImageData` on the CPU.
    Raises ValueError for an unknown name or option, `UserError` for missing or bad data files.

    Example:
        >>> load_dataset("synthetic", num_train=64, channels=3).train_images.shape
        torch.Size([64, 8, 8, 3])
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    loader = DATASETS[name]
    valid = _option_names(loader)
    for key in options:
        if key not in valid:
            raise ValueError(f"dataset {name!r}: unknown option {key!r}; "
                             f"valid: {', '.join(valid) if valid else 'none'}")
    return loader(data_dir=Path(data_dir), download=download, **options)


def _option_names(loader: Loader) -> list[str]:
    params = inspect.signature(loader).parameters.values()
    return [p.name for p in params
            if p.kind is p.KEYWORD_ONLY and p.name not in ("data_dir", "download")]


# ---------------------------------------------------------------------------------------------
# digits and synthetic


def _load_digits(*, data_dir: Path, download: bool) -> ImageData:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 -> 0..255, so that digits look like any other uint8 image set.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    labels = digits.target.astype(np.int64)
    # A fixed seed makes the split identical in every trial and on every machine.
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=0.2, stratify=labels,
                                              random_state=0)
    return _image_data("digits", tr_x, tr_y, te_x, te_y, num_classes=10)


def _load_synthetic(*, data_dir: Path, download: bool, num_train: int = 512, num_test: int = 128,
                    image_size: int = 8, channels: int = 1, num_classes: int = 10,
                    seed: int = 0) -> ImageData:
    for key, value in [("num_train", num_train), ("num_test", num_test), ("image_size", image_size),
                       ("channels", channels), ("num_classes", num_classes)]:
        _check_positive_int("synthetic", key, value)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"dataset 'synthetic': option seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size, channels)
    # Class means far apart relative to the noise: a linear model learns the set in a few steps.
    centers = rng.uniform(40.0, 215.0, size=(num_classes, *shape))  # (K, H, W, C)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)  # balanced
        noise = rng.normal(0.0, 30.0, size=(n, *shape))
        images = np.clip(np.rint(centers[labels] + noise), 0, 255).astype(np.uint8)  # (n, H, W, C)
        return images, labels

    tr_x, tr_y = draw(num_train)
    te_x, te_y = draw(num_test)
    return _image_data("synthetic", tr_x, tr_y, te_x, te_y, num_classes=num_classes)


def _check_positive_int(dataset: str, key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"dataset {dataset!r}: option {key} must be a positive integer, "
                         f"got {value!r}")


def _image_data(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                test_y: np.ndarray, *, num_classes: int,
                mean: tuple[float, ...] | None = None) -> ImageData:
    """Wrap numpy arrays without copying them (a memory-mapped array stays memory-mapped)."""
    return ImageData(
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_labels=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(np.ascontiguousarray(test_y, dtype=np.int64)),
        num_classes=num_classes,
        name=name,
        mean=_channel_mean(train_x) if mean is None else mean,
    )


def _channel_mean(images: np.ndarray, chunk: int = 1 << 15) -> tuple[float, ...]:
    """Per-channel mean of uint8 (N, H, W, C) in [0, 1], exact, in chunks of ``chunk`` images.

    Integer sums make the result exact and independent of chunking; chunks keep a
    memory-mapped set from being paged in all at once.
    """
    n, h, w, c = images.shape
    total = np.zeros(c, dtype=np.int64)
    for start in range(0, n, chunk):
        total += images[start:start + chunk].sum(axis=(0, 1, 2), dtype=np.int64)
    return tuple(float(t) / (n * h * w * 255.0) for t in total)


# ---------------------------------------------------------------------------------------------
# CIFAR


def _load_cifar(name: str) -> Loader:
    def load(*, data_dir: Path, download: bool) -> ImageData:
        train_x, train_y = _read_cifar(name, data_dir, train=True, download=download)
        test_x, test_y = _read_cifar(name, data_dir, train=False, download=download)
        return _image_data(name, train_x, train_y, test_x, test_y,
                           num_classes=_CIFAR[name].num_classes)

    load.__name__ = f"_load_{name}"
    return load


# ---------------------------------------------------------------------------------------------
# generated (DM-Improves-AT npz)

def _cached_mean(out_dir: Path, images: np.ndarray, rows: NpyRows) -> tuple[float, ...]:
    """`_channel_mean` of the first n converted images, cached per n next to the conversion.

    Computing it reads every image (minutes for 20M), so each trial should not redo it. It reads
    them from the file ``rows`` in chunks (`RowReader`), so their pages do not stay in RSS.
    """
    path, key = out_dir / _MEANS, str(images.shape[0])
    try:
        means = json.loads(path.read_text())
    except (OSError, ValueError):
        means = {}
    if key not in means:
        n, h, w, c = images.shape
        reader, chunk, total = RowReader.from_npy(rows, images.shape), 1 << 14, np.zeros(c, dtype=np.int64)
        buffer = reader.empty(chunk)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            part = reader.read(np.arange(start, stop), buffer[:stop - start]).numpy()
            # Per byte column (uint32 cannot overflow: 2^14 x 255 < 2^32), then per channel: SIMD
            # adds of contiguous rows, 20x faster than numpy's strided sum over axes (0, 1, 2).
            total += part.reshape(len(part), -1).sum(axis=0, dtype=np.uint32).reshape(-1, c).sum(0, dtype=np.int64)
        means[key] = [float(t) / (n * h * w * 255.0) for t in total]   # `_channel_mean`'s, exactly
        # Concurrent trials may race here; each write is whole, the last one wins.
        _write_json_atomic(path, means)
    return tuple(float(m) for m in means[key])


def _load_generated(*, data_dir: Path, download: bool, path: str | Path | None = None,
                    num_train: int | None = None, test: str = "cifar10",
                    cache_dir: str | Path | None = None, validation_from: str = "generated") -> ImageData:
    if path is None:
        raise ValueError("dataset 'generated' needs option path (the npz file)")
    if test != "cifar10":
        raise ValueError(f"dataset 'generated': unknown test set {test!r}; valid: cifar10")
    if validation_from not in ("generated", "cifar10"):
        raise ValueError(f"dataset 'generated': option validation_from must be generated or cifar10, "
                         f"got {validation_from!r}")
    pool = None
    if validation_from == "cifar10":
        # SU validates its generated-data runs on a hold-out of the real CIFAR-10 training set
        # (lipschitz/data/datasets/edm_cifar10.py: get_data -> cifar10.get_data(...).eval).
        pool = _read_cifar("cifar10", data_dir, train=True, download=download)   # (50000, 32, 32, 3), (50000,)
    npz_path = Path(path) if Path(path).is_absolute() else data_dir / path
    out_dir = convert_npz(npz_path,
                          data_dir / "npy_cache" if cache_dir is None else Path(cache_dir))
    # Copy-on-write mapping: pages come from disk on demand and an accidental in-place write
    # changes a private copy instead of crashing on read-only memory.
    images = np.load(out_dir / _IMAGES, mmap_mode="c")  # (N, H, W, C) uint8, not in RAM
    train_file = NpyRows(out_dir / _IMAGES, int(images.offset))
    labels = np.load(out_dir / _LABELS)                 # (N,) int64
    _check_labels(labels, 10, where=str(npz_path), key="label")
    if num_train is not None:
        if not isinstance(num_train, int) or isinstance(num_train, bool) or num_train < 1:
            raise ValueError(f"dataset 'generated': option num_train must be a positive integer, "
                             f"got {num_train!r}")
        if num_train > len(labels):
            raise UserError(str(npz_path), "num_train", f"asked for {num_train} images, the file "
                            f"has {len(labels)}", fix=f"use num_train <= {len(labels)}")
        images, labels = images[:num_train], labels[:num_train]
    test_x, test_y = _read_cifar("cifar10", data_dir, train=False, download=download)
    if images.shape[1:] != test_x.shape[1:]:
        raise UserError(str(npz_path), "image", f"images are {images.shape[1:]}, the CIFAR-10 test "
                        f"set's are {test_x.shape[1:]}", fix=_NPZ_FIX)
    data = _image_data("generated", images, labels, test_x, test_y, num_classes=10,
                       mean=_cached_mean(out_dir, images, train_file))
    data = replace(data, train_file=train_file)
    if pool is not None:
        data = replace(data, val_pool_images=torch.from_numpy(np.ascontiguousarray(pool[0])),
                       val_pool_labels=torch.from_numpy(np.ascontiguousarray(pool[1], dtype=np.int64)))
    return data


DATASETS: dict[str, Loader] = {
    "digits": _load_digits,
    "cifar10": _load_cifar("cifar10"),
    "cifar100": _load_cifar("cifar100"),
    "generated": _load_generated,
    "synthetic": _load_synthetic,
}
