"""Conversion of DM-Improves-AT style npz files (the ``"generated"`` data set) into plain ``.npy``
files that can be memory-mapped: streamed in chunks, validated, written atomically, reused while
fresh. `tune_lip.data.datasets` loads the result.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from tune_lip.errors import UserError

__all__ = ["convert_npz"]

_IMAGES, _LABELS, _MARKER, _MEANS = "images.npy", "labels.npy", "source.json", "means.json"
_NPZ_FIX = "the npz needs arrays 'image' (N, H, W, C) uint8 and 'label' (N,) integer"
_CHUNK_BYTES = 64 << 20  # per read while converting: bounded memory for any N


def convert_npz(npz_path: str | Path, cache_dir: str | Path) -> Path:
    """Convert an npz with ``image`` uint8 (N, H, W, C) and ``label`` (N,) to ``.npy`` files.

    Writes ``<cache_dir>/<npz stem>/images.npy`` (uint8) and ``labels.npy`` (int64) and returns
    that directory; load them with ``np.load(..., mmap_mode=...)``. The image array is
    streamed in 64 MB chunks, so converting 20M images never holds them in RAM. A conversion
    newer than the npz (and of the same source size) is reused. Every file is written to a
    temporary name and renamed, and a marker file is written last, so a crash leaves either
    the old conversion or none. Raises `UserError` naming the file and key for a missing,
    truncated or malformed npz.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> np.savez(d / "gen.npz", image=np.zeros((5, 32, 32, 3), np.uint8), label=np.arange(5))
        >>> out = convert_npz(d / "gen.npz", d / "cache")
        >>> np.load(out / "images.npy", mmap_mode="r").shape
        (5, 32, 32, 3)
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise UserError(str(npz_path), "path", "file not found",
                        fix="give the path of a DM-Improves-AT style npz file")
    out_dir = Path(cache_dir) / npz_path.stem
    if _conversion_is_fresh(npz_path, out_dir):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # Invalidate first: from here until the new marker exists, nothing counts as converted.
    (out_dir / _MARKER).unlink(missing_ok=True)
    (out_dir / _MEANS).unlink(missing_ok=True)
    tmp = f".tmp{os.getpid()}"
    images_tmp, labels_tmp = out_dir / (_IMAGES + tmp), out_dir / (_LABELS + tmp)
    try:
        try:
            with zipfile.ZipFile(npz_path) as zf:
                labels = _read_label_member(zf, npz_path)
                with _npy_member(zf, "image", npz_path) as (f, shape, dtype):
                    if dtype != np.uint8 or len(shape) != 4 or shape[0] == 0:
                        raise UserError(str(npz_path), "image", f"expected uint8 (N, H, W, C) "
                                        f"with N > 0, got {dtype} {shape}", fix=_NPZ_FIX)
                    if shape[0] != len(labels):
                        raise UserError(str(npz_path), "label", f"{len(labels)} labels for "
                                        f"{shape[0]} images", fix=_NPZ_FIX)
                    _stream_to_npy(f, shape, images_tmp, npz_path)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as err:
            raise UserError(str(npz_path), None, f"unreadable npz ({type(err).__name__}: {err})",
                            fix="the file looks truncated or corrupt; copy it again") from err
        with open(labels_tmp, "wb") as label_file:
            np.save(label_file, labels)
        os.replace(labels_tmp, out_dir / _LABELS)
        os.replace(images_tmp, out_dir / _IMAGES)
        stat = npz_path.stat()
        _write_json_atomic(out_dir / _MARKER, {
            "source": str(npz_path.resolve()), "source_bytes": stat.st_size,
            "num_images": int(len(labels)),
        })
    finally:
        images_tmp.unlink(missing_ok=True)
        labels_tmp.unlink(missing_ok=True)
    return out_dir


def _conversion_is_fresh(npz_path: Path, out_dir: Path) -> bool:
    try:
        marker = json.loads((out_dir / _MARKER).read_text())
        npz_stat = npz_path.stat()
        outputs = [(out_dir / name).stat() for name in (_IMAGES, _LABELS, _MARKER)]
    except (OSError, ValueError):
        return False
    return (marker.get("source_bytes") == npz_stat.st_size
            and all(s.st_mtime_ns >= npz_stat.st_mtime_ns for s in outputs))


@contextmanager
def _npy_member(zf: zipfile.ZipFile, key: str,
                npz_path: Path) -> Iterator[tuple[IO[bytes], tuple[int, ...], np.dtype]]:
    """Open ``<key>.npy`` inside an npz and parse its header.

    Yields (file positioned at the array data, shape, dtype); the caller reads the data.
    """
    names = zf.namelist()
    if f"{key}.npy" not in names:
        found = ", ".join(sorted(n.removesuffix(".npy") for n in names)) or "nothing"
        raise UserError(str(npz_path), key, f"key missing (found: {found})", fix=_NPZ_FIX)
    with zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise UserError(str(npz_path), key, f"unsupported .npy format version {version}",
                            fix="save the npz with numpy.savez or numpy.savez_compressed")
        if fortran or dtype.hasobject:
            raise UserError(str(npz_path), key, "Fortran-ordered or object arrays are not "
                            "supported", fix="save a C-ordered numeric array")
        yield f, tuple(shape), dtype


def _read_label_member(zf: zipfile.ZipFile, npz_path: Path) -> np.ndarray:
    with _npy_member(zf, "label", npz_path) as (f, shape, dtype):
        if len(shape) != 1 or not np.issubdtype(dtype, np.integer):
            raise UserError(str(npz_path), "label", f"expected integer (N,), got {dtype} {shape}",
                            fix=_NPZ_FIX)
        labels = np.empty(shape, dtype=dtype)
        _read_exact(f, memoryview(labels).cast("B"), npz_path, "label")  # type: ignore[arg-type]  # ndarray is a buffer
        _expect_end(f, npz_path, "label")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise UserError(str(npz_path), "label", f"labels must be >= 0, found {labels.min()}",
                        fix=_NPZ_FIX)
    return labels


def _stream_to_npy(f: IO[bytes], shape: tuple[int, ...], out_path: Path, npz_path: Path) -> None:
    # Plain writes through one chunk buffer, not a writable memmap: the pages of a mapping one
    # writes stay in the process's RSS, which would grow to the file's size (61 GB).
    total = int(np.prod(shape))                      # N*H*W*C bytes
    chunk = bytearray(min(_CHUNK_BYTES, max(total, 1)))
    with open(out_path, "wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": tuple(shape)}
        np.lib.format.write_array_header_1_0(out, header)   # the header open_memmap writes
        for start in range(0, total, len(chunk)):
            view = memoryview(chunk)[:min(len(chunk), total - start)]
            _read_exact(f, view, npz_path, "image")
            out.write(view)
    _expect_end(f, npz_path, "image")


def _read_exact(f: IO[bytes], buf: memoryview, npz_path: Path, key: str) -> None:
    filled = 0
    while filled < len(buf):
        n = f.readinto(buf[filled:])  # type: ignore[attr-defined]
        if not n:
            raise UserError(str(npz_path), key, f"array data ends early ({filled} of "
                            f"{len(buf)} bytes)", fix="the file looks truncated; copy it again")
        filled += n


def _expect_end(f: IO[bytes], npz_path: Path, key: str) -> None:
    # Reading past the end also makes zipfile verify the member's CRC.
    if f.read(1):
        raise UserError(str(npz_path), key, "unexpected bytes after the array data", fix=_NPZ_FIX)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)

