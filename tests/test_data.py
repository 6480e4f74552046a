"""Data sets: digits, CIFAR in the official on-disk format, generated npz, synthetic; preprocessing.

Everything is fabricated under tmp_path or bundled with scikit-learn; nothing downloads.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tune_lip.data.datasets import (
    DATASETS,
    ImageData,
    channel_std,
    convert_and_center,
    convert_npz,
    default_validation,
    load_dataset,
    normalize_data,
    split_validation,
    validation_count,
)
from tune_lip.errors import ConfigError, UserError

# ---------------------------------------------------------------------------------------------
# A fake CIFAR in the official python format


class _Py2Str(str):
    """A dict key pickled as a Python 2 ``str``, as in the official CIFAR files."""


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles `_Py2Str` with the Python 2 string opcode, so the file loads like the real ones:
    str keys under encoding="latin1" (torchvision), bytes keys (b"data") under encoding="bytes"."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2str(self, obj: _Py2Str) -> None:
        raw = obj.encode("latin1")
        self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray,
                 label_key: str = "labels") -> None:
    """images uint8 (N, 32, 32, 3) -> the official row layout (N, 3072): all R, then G, then B."""
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)  # (N, 3072)
    entry = {
        _Py2Str("batch_label"): _Py2Str("fake batch"),
        _Py2Str("data"): rows,
        _Py2Str(label_key): [int(y) for y in labels],
    }
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(entry)


def _fake_images(rng: np.random.Generator, n: int,
                 num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, num_classes, size=n).astype(np.int64))


def write_fake_cifar10(root: Path, per_batch: int = 6, num_test: int = 8) -> dict[str, np.ndarray]:
    """Write ``root/cifar-10-batches-py``; return the expected arrays (NHWC)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = _fake_images(rng, per_batch)
        _write_batch(folder / f"data_batch_{i}", x, y)
        train_x.append(x)
        train_y.append(y)
    test_x, test_y = _fake_images(rng, num_test)
    _write_batch(folder / "test_batch", test_x, test_y)
    with open(folder / "batches.meta", "wb") as f:
        names = [_Py2Str(f"class{i}") for i in range(10)]
        _Py2Pickler(f, protocol=2).dump({_Py2Str("label_names"): names})
    return {"train_x": np.concatenate(train_x), "train_y": np.concatenate(train_y),
            "test_x": test_x, "test_y": test_y}


def load_md5_mismatch(name: str, **kwargs) -> ImageData:
    """Load a fake CIFAR: torchvision's md5 check must fail and our reader take over."""
    with pytest.warns(UserWarning, match="md5 check failed"):
        return load_dataset(name, **kwargs)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, write_fake_cifar10(tmp_path)


def test_fake_cifar_is_in_the_official_format(cifar_dir):
    root, _ = cifar_dir
    # The recipe on the CIFAR web page unpickles with encoding="bytes" and finds b"data".
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert entry[b"data"].shape == (6, 3072) and entry[b"data"].dtype == np.uint8
    assert len(entry[b"labels"]) == 6


def test_cifar10_through_torchvision(cifar_dir, monkeypatch):
    root, expected = cifar_dir
    import torchvision.datasets.cifar as tv_cifar

    # Our fake files cannot carry the official md5s; pretend they do, so that torchvision's
    # own reader (the path real downloads take) reads them.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: torchvision read the files
        data = load_dataset("cifar10", data_dir=root)
    np.testing.assert_array_equal(data.train_images.numpy(), expected["train_x"])
    np.testing.assert_array_equal(data.train_labels.numpy(), expected["train_y"])
    np.testing.assert_array_equal(data.test_images.numpy(), expected["test_x"])
    np.testing.assert_array_equal(data.test_labels.numpy(), expected["test_y"])
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert data.train_images.is_contiguous()


def test_cifar10_md5_mismatch_falls_back_to_own_reader(cifar_dir):
    root, expected = cifar_dir
    data = load_md5_mismatch("cifar10", data_dir=root)
    np.testing.assert_array_equal(data.train_images.numpy(), expected["train_x"])
    np.testing.assert_array_equal(data.train_labels.numpy(), expected["train_y"])
    np.testing.assert_array_equal(data.test_images.numpy(), expected["test_x"])
    np.testing.assert_array_equal(data.test_labels.numpy(), expected["test_y"])
    # mean: per channel over the training images, in [0, 1]
    np.testing.assert_allclose(data.mean, expected["train_x"].mean(axis=(0, 1, 2)) / 255,
                               rtol=1e-12)


def test_cifar_reader_accepts_bytes_keys(tmp_path):
    # A batch re-pickled from a dict loaded with encoding="bytes" has bytes keys.
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x, y = _fake_images(rng, 3)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x.transpose(0, 3, 1, 2).reshape(3, -1), b"labels": list(y)}, f)
    data = load_md5_mismatch("cifar10", data_dir=tmp_path)
    np.testing.assert_array_equal(data.test_images.numpy(), x)


def test_cifar100(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = _fake_images(rng, 10, num_classes=100)
    test = _fake_images(rng, 4, num_classes=100)
    _write_batch(folder / "train", *train, label_key="fine_labels")
    _write_batch(folder / "test", *test, label_key="fine_labels")
    data = load_md5_mismatch("cifar100", data_dir=tmp_path)
    assert data.num_classes == 100
    np.testing.assert_array_equal(data.train_labels.numpy(), train[1])
    np.testing.assert_array_equal(data.test_images.numpy(), test[0])


def test_cifar_missing_without_download_names_dir_and_fix(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "download: true" in message and "data_batch_1" in message


def test_cifar_truncated_batch_names_file(cifar_dir):
    root, _ = cifar_dir
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(UserError) as err, pytest.warns(UserWarning, match="md5"):
        load_dataset("cifar10", data_dir=root)
    assert str(batch) in str(err.value)


def test_cifar_bad_data_shape_names_file_and_key(cifar_dir):
    root, _ = cifar_dir
    batch = root / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(UserError) as err, pytest.warns(UserWarning, match="md5"):
        load_dataset("cifar10", data_dir=root)
    assert f"{batch}: data: expected uint8 array (N, 3072)" in str(err.value)


# ---------------------------------------------------------------------------------------------
# generated: npz -> .npy conversion


def write_npz(path: Path, n: int = 20, *, compressed: bool = True,
              seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images, labels = _fake_images(rng, n)
    (np.savez_compressed if compressed else np.savez)(path, image=images, label=labels)
    return images, labels


@pytest.mark.parametrize("compressed", [True, False])
def test_convert_npz_round_trip_is_memory_mapped(tmp_path, compressed, monkeypatch):
    import tune_lip.data.npz as npz_mod

    monkeypatch.setattr(npz_mod, "_CHUNK_BYTES", 5000)  # several chunks, one ending mid-image
    images, labels = write_npz(tmp_path / "gen.npz", compressed=compressed)
    out = convert_npz(tmp_path / "gen.npz", tmp_path / "cache")
    assert out == tmp_path / "cache" / "gen"
    loaded = np.load(out / "images.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, images)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), labels)
    assert np.load(out / "labels.npy").dtype == np.int64
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "labels.npy", "source.json"]


def test_convert_npz_reuses_fresh_conversion(tmp_path):
    npz = tmp_path / "gen.npz"
    write_npz(npz)
    out = convert_npz(npz, tmp_path / "cache")
    first = (out / "images.npy").stat()
    assert convert_npz(npz, tmp_path / "cache") == out
    again = (out / "images.npy").stat()
    # Same inode and mtime: the second call did not rewrite the file.
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)

    new_images, _ = write_npz(npz, seed=9)  # the npz changes: now newer than the conversion
    future = first.st_mtime + 10
    os.utime(npz, (future, future))
    convert_npz(npz, tmp_path / "cache")
    assert (out / "images.npy").stat().st_ino != first.st_ino
    np.testing.assert_array_equal(np.load(out / "images.npy"), new_images)


def test_load_generated(tmp_path):
    cifar = write_fake_cifar10(tmp_path)
    images, labels = write_npz(tmp_path / "gen.npz", n=20)
    data = load_md5_mismatch("generated", data_dir=tmp_path, path="gen.npz", num_train=12)
    assert data.name == "generated" and data.num_train == 12 and data.num_classes == 10
    np.testing.assert_array_equal(data.train_images.numpy(), images[:12])  # the first n
    np.testing.assert_array_equal(data.train_labels.numpy(), labels[:12])
    np.testing.assert_array_equal(data.test_images.numpy(), cifar["test_x"])  # CIFAR-10 test
    np.testing.assert_allclose(data.mean, images[:12].mean(axis=(0, 1, 2)) / 255, rtol=1e-12)
    # The mean is cached per n, so a trial need not read 20M images to start.
    assert (tmp_path / "npy_cache" / "gen" / "means.json").is_file()
    again = load_md5_mismatch("generated", data_dir=tmp_path, path="gen.npz", num_train=12)
    assert again.mean == data.mean   # exact: read back from means.json, not recomputed


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_load_generated_train_images_stay_on_disk(tmp_path):
    write_fake_cifar10(tmp_path)
    write_npz(tmp_path / "gen.npz")
    data = load_md5_mismatch("generated", data_dir=tmp_path, path=str(tmp_path / "gen.npz"))
    # The tensor's memory must be a mapping of the converted file, not a copy in RAM.
    ptr = data.train_images.data_ptr()
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        start, end = (int(a, 16) for a in parts[0].split("-"))
        if start <= ptr < end:
            mapped.append(parts[5] if len(parts) > 5 else "")
    assert mapped and mapped[0].endswith("images.npy")


def test_truncated_npz_names_file(tmp_path):
    npz = tmp_path / "gen.npz"
    write_npz(npz)
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(UserError) as err:
        convert_npz(npz, tmp_path / "cache")
    assert str(npz) in str(err.value) and "truncated" in str(err.value)


def test_corrupt_npz_leaves_nothing_half_written(tmp_path):
    npz = tmp_path / "gen.npz"
    write_npz(npz, compressed=False)
    convert_npz(npz, tmp_path / "cache")  # a good conversion first
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 64] = bytes(64)  # damage image bytes: zip CRC fails
    npz.write_bytes(bytes(raw))
    with pytest.raises(UserError) as err:
        convert_npz(npz, tmp_path / "cache")
    assert str(npz) in str(err.value)
    out = tmp_path / "cache" / "gen"
    # The old conversion no longer counts (no marker), and no temporary file is left.
    assert not (out / "source.json").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_npz_missing_key_names_file_and_key(tmp_path):
    npz = tmp_path / "gen.npz"
    np.savez(npz, image=np.zeros((3, 32, 32, 3), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(UserError) as err:
        convert_npz(npz, tmp_path / "cache")
    assert str(err.value).startswith(f"{npz}: label: key missing (found: image, labels)")


def test_npz_wrong_dtype_and_length(tmp_path):
    npz = tmp_path / "gen.npz"
    np.savez(npz, image=np.zeros((3, 32, 32, 3), np.float32), label=np.zeros(3, np.int64))
    with pytest.raises(UserError, match="image: expected uint8"):
        convert_npz(npz, tmp_path / "cache")
    np.savez(npz, image=np.zeros((3, 32, 32, 3), np.uint8), label=np.zeros(4, np.int64))
    with pytest.raises(UserError, match="label: 4 labels for 3 images"):
        convert_npz(npz, tmp_path / "cache")


def test_generated_errors(tmp_path):
    with pytest.raises(UserError, match="gen.npz: path: file not found"):
        load_dataset("generated", data_dir=tmp_path, path="gen.npz")
    write_npz(tmp_path / "gen.npz", n=5)
    # No CIFAR-10 test set under data_dir: the user is told how to get one.
    with pytest.raises(UserError, match="download: true"):
        load_dataset("generated", data_dir=tmp_path, path="gen.npz")
    write_fake_cifar10(tmp_path)
    with pytest.raises(UserError, match="num_train: asked for 6 images, the file has 5"):
        load_dataset("generated", data_dir=tmp_path, path="gen.npz", num_train=6)
    with pytest.raises(ValueError, match="needs option path"):
        load_dataset("generated", data_dir=tmp_path)
    # Generated images must match the CIFAR-10 test images they are evaluated against.
    np.savez(tmp_path / "small.npz", image=np.zeros((2, 16, 16, 3), np.uint8),
             label=np.zeros(2, np.int64))
    with pytest.raises(UserError, match=r"small.npz: image: images are \(16, 16, 3\)"), \
            pytest.warns(UserWarning, match="md5"):
        load_dataset("generated", data_dir=tmp_path, path="small.npz")


# ---------------------------------------------------------------------------------------------
# digits, synthetic, registry


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def test_digits_shapes_and_values(digits):
    assert digits.train_images.shape == (1437, 8, 8, 1)
    assert digits.test_images.shape == (360, 8, 8, 1)
    assert digits.train_images.dtype == torch.uint8 and digits.train_labels.dtype == torch.int64
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    # Pixel values are round(v * 255 / 16) for v in 0..16, reaching both ends.
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(digits.train_images.unique().tolist()) <= allowed
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0


def test_digits_split_is_stratified_and_deterministic(digits):
    again = load_dataset("digits")
    assert torch.equal(again.train_images, digits.train_images)
    assert torch.equal(again.test_labels, digits.test_labels)
    # Stratified: every class is ~20% of the test set (the digits classes have 174..183 images).
    test_counts = torch.bincount(digits.test_labels, minlength=10)
    train_counts = torch.bincount(digits.train_labels, minlength=10)
    fraction = test_counts / (test_counts + train_counts)
    assert torch.all((fraction - 0.2).abs() < 0.01)


def test_synthetic_is_deterministic_and_learnable():
    a = load_dataset("synthetic", seed=5)
    b = load_dataset("synthetic", seed=5)
    c = load_dataset("synthetic", seed=6)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, c.train_images)
    assert a.train_images.shape == (512, 8, 8, 1) and a.test_images.shape == (128, 8, 8, 1)
    # Learnable: nearest class mean (from the training set) classifies the test set well.
    x = a.train_images.flatten(1).float()
    centers = torch.stack([x[a.train_labels == k].mean(0) for k in range(10)])  # (10, 64)
    pred = torch.cdist(a.test_images.flatten(1).float(), centers).argmin(1)
    assert (pred == a.test_labels).float().mean() > 0.9


def test_synthetic_options():
    d = load_dataset("synthetic", num_train=30, num_test=7, image_size=5, channels=3, num_classes=4)
    assert d.train_images.shape == (30, 5, 5, 3) and d.test_images.shape == (7, 5, 5, 3)
    assert d.num_classes == 4 and int(d.train_labels.max()) == 3 and len(d.mean) == 3
    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        load_dataset("synthetic", num_train=0)


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; valid: cifar10, cifar100, dig"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown option 'batch_size'"):
        load_dataset("synthetic", batch_size=4)
    assert set(DATASETS) == {"digits", "cifar10", "cifar100", "generated", "synthetic"}


def test_image_data_to_and_validation():
    d = load_dataset("synthetic", num_train=8, num_test=4)
    moved = d.to("cpu")
    assert moved.train_images.dtype == torch.uint8 and moved.num_train == 8 and moved.num_test == 4
    with pytest.raises(ValueError, match="uint8"):
        ImageData(d.train_images.float(), d.train_labels, d.test_images, d.test_labels,
                  10, "x", d.mean)


# ---------------------------------------------------------------------------------------------
# preprocessing


def test_convert_and_center_values():
    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8))
    mean = torch.tensor([0.1, 0.5, 0.9])
    x = convert_and_center(images, mean)
    assert x.dtype == torch.float32 and x.shape == (5, 3, 4, 6) and x.is_contiguous()
    expected = images.permute(0, 3, 1, 2).double() / 255 - mean.double().view(3, 1, 1)
    torch.testing.assert_close(x, expected.float())
    assert images.dtype == torch.uint8  # the input is untouched
    with pytest.raises(ValueError, match="mean must have shape"):
        convert_and_center(images, torch.zeros(1))


def test_convert_and_center_divides_by_std():
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8))
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.25, 0.5])
    expected = (images.permute(0, 3, 1, 2).double() / 255 - mean.double().view(3, 1, 1)) / std.double().view(3, 1, 1)
    torch.testing.assert_close(convert_and_center(images, mean, std), expected.float())
    # std None (the existing callers) is plain centring; all-ones std is the same.
    torch.testing.assert_close(convert_and_center(images, mean), convert_and_center(images, mean, torch.ones(3)))
    with pytest.raises(ValueError, match="std must have shape"):
        convert_and_center(images, mean, torch.ones(2))


def test_image_data_std_defaults_to_ones_and_std_tensor():
    d = load_dataset("synthetic", num_train=20, num_test=4, channels=3)
    assert d.std == (1.0, 1.0, 1.0)
    torch.testing.assert_close(d.std_tensor(), torch.ones(3))
    with pytest.raises(ValueError, match="std must be 3 positive"):
        ImageData(d.train_images, d.train_labels, d.test_images, d.test_labels, 10, "x", d.mean, std=(1.0, 0.0, 1.0))


def test_normalize_data_mean_and_mean_std():
    d = split_validation(load_dataset("synthetic", num_train=60, num_test=4, channels=3, seed=2), 10, seed=0)
    plain = normalize_data(d, "mean")
    assert plain.mean == d.mean and plain.std == (1.0, 1.0, 1.0)
    fixed = normalize_data(d, "mean", mean=(0.491, 0.482, 0.447))
    assert fixed.mean == (0.491, 0.482, 0.447) and fixed.std == (1.0, 1.0, 1.0)
    own = normalize_data(d, "mean_std")
    # The std of the images left to train on (not the held-out ones), population form.
    train = d.train_images[d.train_index].double() / 255                      # (50, H, W, C)
    expected = train.reshape(-1, 3).std(dim=0, unbiased=False)
    torch.testing.assert_close(torch.tensor(own.std, dtype=torch.float64), expected)
    torch.testing.assert_close(torch.tensor(channel_std(d), dtype=torch.float64), expected)
    assert own.mean == d.mean
    given = normalize_data(d, "mean_std", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.5))
    assert given.std == (0.25, 0.25, 0.5) and given.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown normalize"):
        normalize_data(d, "zca")
    with pytest.raises(ValueError, match="only used with normalize: mean_std"):
        normalize_data(d, "mean", std=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="3 channels"):
        normalize_data(d, "mean", mean=(0.5,))


def test_data_config_normalisation_keys():
    from tune_lip.studies.config import DataConfig, training_data

    cfg = DataConfig(name="synthetic", normalize="mean_std", mean=[0.5], std=[0.25], options={"num_train": 40})
    assert cfg.mean == (0.5,) and cfg.std == (0.25,)
    data = training_data(cfg, torch.device("cpu"))
    assert data.mean == (0.5,) and data.std == (0.25,)
    assert training_data(DataConfig(name="synthetic", options={"num_train": 40}), torch.device("cpu")).std == (1.0,)
    for kwargs, key in [({"normalize": "zca"}, "dataset.normalize"),
                        ({"mean": [1.5]}, "dataset.mean"),
                        ({"mean": "0.5"}, "dataset.mean"),
                        ({"std": [0.2]}, "dataset.std"),                      # needs mean_std
                        ({"normalize": "mean_std", "std": [0.0]}, "dataset.std")]:
        with pytest.raises(ConfigError) as info:
            DataConfig(name="synthetic", **kwargs)
        assert info.value.key == key
    with pytest.raises(ConfigError) as info:
        training_data(DataConfig(name="synthetic", mean=[0.5, 0.5, 0.5], options={"num_train": 40}),
                      torch.device("cpu"))
    assert info.value.key == "dataset.mean" and "1 channels" in str(info.value)


# ---------------------------------------------------------------------------------------------
# the validation split


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in images.reshape(len(images), -1).numpy()}


def test_validation_split_is_disjoint_and_covers_the_training_set():
    data = load_dataset("synthetic", num_train=200, num_test=50, channels=3, seed=1)
    split = split_validation(data, 0.1, seed=0)
    assert (split.num_train, split.num_val, split.num_test) == (180, 20, 50)
    train_index = split.train_index.tolist()
    val_index = sorted(set(range(200)) - set(train_index))
    assert len(val_index) == 20 and len(set(train_index)) == 180   # every loaded image in exactly one part
    torch.testing.assert_close(split.val_images, data.train_images[val_index])
    torch.testing.assert_close(split.val_labels, data.train_labels[val_index])
    x, y = split.train_batch(torch.arange(180))
    assert not _rows(x) & _rows(split.val_images)                   # training never sees a validation image
    assert not _rows(split.val_images) & _rows(split.test_images)   # nor is one a test image
    assert split.test_images is data.test_images                    # the test set is untouched
    # The mean that centres inputs is the training images' left, not the whole set's.
    expected = x.double().mean(dim=(0, 1, 2)) / 255
    torch.testing.assert_close(torch.tensor(split.mean, dtype=torch.float64), expected)
    assert split.fingerprint() == data.fingerprint()                # provenance: the data as loaded


def test_validation_split_is_deterministic_in_its_seed():
    data = load_dataset("digits")
    a, b = split_validation(data, 500, seed=0), split_validation(data, 500, seed=0)
    assert torch.equal(a.train_index, b.train_index) and torch.equal(a.val_images, b.val_images)
    other = split_validation(data, 500, seed=1)
    assert not torch.equal(a.train_index, other.train_index)
    assert (a.num_train, a.num_val) == (937, 500)


def test_validation_sizes():
    assert validation_count(5000, 50000) == 5000
    assert validation_count(0.1, 1437) == 144            # a fraction, rounded
    assert validation_count(0.001, 100) == 1             # at least one image
    assert validation_count(0, 10) == 0                  # no split
    assert default_validation("cifar10") == default_validation("generated") == 5000
    assert default_validation("digits") == default_validation("synthetic") == 0.1
    for bad, why in [(1.0, "fraction"), (-3, ">= 0"), (True, "count"), ("10%", "count")]:
        with pytest.raises(ValueError, match=why):
            validation_count(bad, 100)
    with pytest.raises(ValueError, match="leaving none to train on"):
        validation_count(100, 100)
    data = load_dataset("synthetic", num_train=20)
    assert split_validation(data, 0) is data
    with pytest.raises(ValueError, match="already split"):
        split_validation(split_validation(data, 2), 2)


def test_dataset_validation_config_names_the_key():
    from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop

    def cfg(**dataset):
        return LipschitzConfig.from_dict({"dataset": {"name": "synthetic", "batch_size": 8, "num_train": 40,
                                                      **dataset}, "model": {"name": "aol_mlp", "width": 64,
                                                                            "depth": 2}})
    assert cfg().dataset.validation == 0.1 and cfg().dataset.split_seed == 0   # resolved, saved with the config
    assert LipschitzConfig.from_dict({"dataset": {"name": "cifar10"}}).dataset.validation == 5000
    assert LipschitzLoop(cfg(validation=10)).data.num_train == 30
    for bad in (1.5, -1, "half", [0.1]):
        with pytest.raises(ConfigError) as info:
            cfg(validation=bad)
        assert info.value.key == "dataset.validation" and "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        cfg(split_seed="a")
    assert info.value.key == "dataset.split_seed"
    with pytest.raises(ConfigError) as info:   # too large: found when the data set is read
        LipschitzLoop(cfg(validation=40))
    assert info.value.key == "dataset.validation" and "none to train on" in info.value.problem


def test_numpy_split_is_scaling_up_lipschitz_networks_split():
    """rng "numpy" holds out exactly SU's images: lipschitz/data/datasets/dataset.py
    split_deterministically (np.random.seed(1111); np.random.shuffle(indices); sizes (train, val))."""
    data = load_dataset("synthetic", num_train=200, num_test=4, seed=5)
    split = split_validation(data, 50, seed=1111, rng="numpy")
    indices = list(range(200))
    np.random.seed(1111)
    np.random.shuffle(indices)
    su_val = sorted(indices[150:200])                 # SU: eval = the images after the first 150
    expected = data.train_images[torch.tensor(su_val)]
    assert torch.equal(split.val_images, expected)
    assert sorted(split.train_index.tolist()) == sorted(indices[:150])
    with pytest.raises(ValueError, match="unknown split rng"):
        split_validation(data, 50, rng="jax")


def test_generated_validates_on_a_cifar10_hold_out(tmp_path):
    """validation_from: cifar10 holds the validation set out of the real CIFAR-10 training set, as SU
    does for its generated-data runs (lipschitz/data/datasets/edm_cifar10.py); all generated images train."""
    from tune_lip.studies.config import DataConfig, training_data

    cifar = write_fake_cifar10(tmp_path)                       # 30 training images
    images, _ = write_npz(tmp_path / "gen.npz", n=20)
    cfg = DataConfig(name="generated", data_dir=str(tmp_path), validation=10, split_seed=1111, split_rng="numpy",
                     mean=[0.491, 0.482, 0.447], options={"path": "gen.npz", "validation_from": "cifar10"})
    with pytest.warns(UserWarning, match="md5 check failed"):
        data = training_data(cfg, torch.device("cpu"))
    assert data.num_train == 20 and data.num_val == 10 and data.val_pool_images is None
    np.testing.assert_array_equal(data.train_batch(torch.arange(20))[0].numpy(), images)
    order = np.random.RandomState(1111).permutation(30)
    np.testing.assert_array_equal(data.val_images.numpy(), cifar["train_x"][np.sort(order[20:])])
    assert data.mean == (0.491, 0.482, 0.447)
    with pytest.raises(ValueError, match="validation_from"):
        load_dataset("generated", data_dir=tmp_path, path="gen.npz", validation_from="test")


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_fingerprint_is_the_sha256_of_the_contents_read_in_chunks(tmp_path, monkeypatch, placement):
    import hashlib

    import tune_lip.data.datasets as datasets_mod

    cifar = write_fake_cifar10(tmp_path)
    images, labels = write_npz(tmp_path / "gen.npz", n=20)
    data = load_md5_mismatch("generated", data_dir=tmp_path, path="gen.npz").to("cpu", placement)
    # 7 images a chunk: the file is read in pieces (one ending mid-set), as 20M images would be.
    monkeypatch.setattr(datasets_mod, "_HASH_CHUNK_BYTES", 7 * 32 * 32 * 3)
    expected = hashlib.sha256(b"".join(a.tobytes() for a in (images, labels, cifar["test_x"],
                                                              cifar["test_y"].astype(np.int64))))
    assert data.fingerprint() == expected.hexdigest()
