"""CIFAR-10/100 in the official python format: torchvision reads it (md5-checked), and our own
reader of the same format takes over, with a warning, for a directory torchvision refuses.
Yields numpy arrays; `tune_lip.data.datasets` wraps them into `ImageData`.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune_lip.errors import UserError


@dataclass(frozen=True)
class _CifarFormat:
    folder: str                 # the directory the official archive unpacks to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int


_CIFAR = {
    "cifar10": _CifarFormat("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                            ("test_batch",), "labels", 10),
    "cifar100": _CifarFormat("cifar-100-python", ("train",), ("test",), "fine_labels", 100),
}


_CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def _read_cifar(name: str, root: Path, *, train: bool,
                download: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split of CIFAR-10/100 as (uint8 (N, 32, 32, 3), int64 (N,)) numpy arrays."""
    import torchvision  # imported here: only the CIFAR loaders need it

    fmt = _CIFAR[name]
    folder = root / fmt.folder
    files = fmt.train_files if train else fmt.test_files
    missing = [f for f in files if not (folder / f).is_file()]
    fix = (f"get {_CIFAR_ARCHIVES[name]} from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it in "
           f"{root} (dataset.data_dir), or set dataset.download: true on a machine with internet")
    if missing and not download:
        raise UserError(str(folder), "dataset", f"{name} files missing: {', '.join(missing)}",
                        fix=fix)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        # download only when files are missing: torchvision would otherwise re-download over a
        # user's own (md5-different) copy of the official format.
        ds = cls(root=str(root), train=train, download=bool(missing))
    except OSError as err:
        raise UserError(str(folder), "dataset", f"{name} download failed ({err})", fix=fix) from err
    except RuntimeError as err:  # torchvision's md5 check: a file is missing or not byte-identical
        if missing:
            raise UserError(str(folder), "dataset", f"{name} download incomplete ({err})",
                            fix=fix) from err
        warnings.warn(f"{folder}: torchvision's md5 check failed (a file is missing or differs "
                      f"from the official release); reading {', '.join(files)} with tune_lip's "
                      f"reader of the official format", stacklevel=2)
        images, labels = _read_cifar_batches(folder, files, fmt.label_key)
    else:
        images = np.ascontiguousarray(ds.data)  # torchvision's NHWC array is a transposed view
        labels = np.asarray(ds.targets, dtype=np.int64)
    _check_labels(labels, fmt.num_classes, where=str(folder / files[0]), key=fmt.label_key)
    return images, labels


def _read_cifar_batches(folder: Path, files: tuple[str, ...],
                        label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR batch files in the official python format without md5 checks.

    Each file is a pickled dict with ``data`` uint8 (N, 3072) (channel-major: 1024 R, G, B
    values per image) and a list of N labels under ``label_key``; keys may be str or bytes.
    """
    all_images, all_labels = [], []
    for file in files:
        path = folder / file
        fix = "the file is corrupt or not in the CIFAR python format; download it again"
        try:
            with open(path, "rb") as f:
                # latin1 as torchvision does: the official files are Python 2 pickles.
                entry = pickle.load(f, encoding="latin1")
        except Exception as err:  # noqa: BLE001 -- a damaged pickle can fail in almost any way
            raise UserError(str(path), None, f"cannot unpickle ({type(err).__name__}: {err})",
                            fix=fix) from err
        if not isinstance(entry, dict):
            raise UserError(str(path), None, f"expected a pickled dict, got {type(entry).__name__}",
                            fix=fix)
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = entry.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3 * 32 * 32:
            got = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
                   else type(data).__name__)
            raise UserError(str(path), "data", f"expected uint8 array (N, 3072), got {got}",
                            fix=fix)
        labels = entry.get(label_key)
        if labels is None or len(labels) != data.shape[0]:
            got = "nothing" if labels is None else f"{len(labels)} labels"
            raise UserError(str(path), label_key, f"expected {data.shape[0]} labels, got {got}",
                            fix=fix)
        all_images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        all_labels.append(np.asarray(labels, dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(all_images)), np.concatenate(all_labels)


def _check_labels(labels: np.ndarray, num_classes: int, *, where: str, key: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(where, key, f"labels must lie in [0, {num_classes}), "
                        f"found [{labels.min()}, {labels.max()}]")
