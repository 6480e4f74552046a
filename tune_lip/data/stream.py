"""Training images streamed from the host to the device, for data that does not fit on the device.

The default (``placement: device``) keeps every training image on the device as uint8
(`tune_lip.data.datasets.ImageData.to`). ``placement: stream`` keeps the training images on the
host instead (the generated data's memory-mapped ``images.npy``, or an array in RAM) and reads
each batch by index:

- `RowReader` reads rows of a uint8 (N, H, W, C) array into a buffer: from an ``.npy`` file
  with ``os.preadv`` (one call per run of consecutive rows), so no page of the file stays mapped
  into the process and its RSS does not grow with the file (pages of an ``mmap`` that a gather
  touches stay in RSS as RssFile until unmapped); from a host tensor with ``index_select``.
- `StreamedBatches` gives step t's batch: it reads the batches of steps t+1 .. t+depth in a
  background thread (each batch split among a few reader threads) while step t computes, into pinned host buffers (CUDA only; plain ones on
  the CPU), and copies them to the device ``non_blocking`` on a side CUDA stream, so the read
  and the copy overlap compute. The labels stay on the device and are indexed there, as in the
  device path.

Exactness: the batch at step t is the rows `tune_lip.data.sampling.BatchOrder` picks for (seed,
t) -- the same permutation the device path draws, on the same device, copied to the host once
per epoch -- so both placements give the same images, labels and order, and the on-device
augmentation after it draws the same numbers.

`choose_placement` resolves ``auto``: stream when the training images do not fit on the device
with a margin (on the CPU: when a memory-mapped file is larger than half the memory available).

Hand-written: torch's DataLoader would read per sample in worker processes and gives no way to
keep the device path's batch order and generator draws bit-identical.

Example:
    >>> import numpy as np
    >>> reader = RowReader.from_tensor(torch.arange(24, dtype=torch.uint8).view(6, 2, 2, 1))
    >>> reader.read(np.array([4, 5, 0])).view(3, 4)[:, 0].tolist()
    [16, 20, 0]
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from tune_lip.data.datasets import ImageData
    from tune_lip.data.sampling import BatchOrder

__all__ = ["PLACEMENTS", "NpyRows", "RowReader", "StreamedBatches", "choose_placement", "train_batches"]

_log = logging.getLogger(__name__)

PLACEMENTS = ("auto", "device", "stream")
# auto on CUDA: the training images go on the device when they fit in its free memory less this
# margin (for the model, activations and optimizer state): 15% of the device's memory, >= 4 GiB.
DEVICE_MARGIN_FRACTION = 0.15
DEVICE_MARGIN_MIN_BYTES = 4 << 30
# auto on the CPU: a memory-mapped training set larger than this fraction of the memory
# available is streamed (it would page the file into the process otherwise).
HOST_FRACTION = 0.5


@dataclass(frozen=True)
class NpyRows:
    """Where a uint8 (N, ...) array's rows lie in a file: ``path``, and ``offset`` bytes to row 0
    (an ``.npy`` file's header length)."""

    path: Path
    offset: int


class RowReader:
    """Rows of a uint8 array (N, *row_shape) read by index into a host buffer; see the module docstring.

    Build one with `from_npy` (a file: ``os.preadv``, nothing stays mapped) or `from_tensor`.
    """

    def __init__(self, shape: tuple[int, ...], *, rows: NpyRows | None = None,
                 tensor: torch.Tensor | None = None) -> None:
        if (rows is None) == (tensor is None):
            raise ValueError("RowReader needs a file (rows) or a tensor, not both")
        self.shape = tuple(shape)                      # (N, H, W, C)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self.tensor = tensor
        self.offset = 0 if rows is None else rows.offset
        self.fd: int | None = None
        if rows is not None:
            self.fd = os.open(rows.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self.fd)

    @classmethod
    def from_npy(cls, rows: NpyRows, shape: tuple[int, ...]) -> RowReader:
        """The first ``shape[0]`` rows of the file ``rows`` (uint8, C order)."""
        return cls(shape, rows=rows)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> RowReader:
        """Rows of a uint8 tensor on the host."""
        if tensor.device.type != "cpu" or tensor.dtype != torch.uint8:
            raise ValueError(f"RowReader reads a uint8 host tensor, got {tensor.dtype} on {tensor.device}")
        return cls(tuple(tensor.shape), tensor=tensor.contiguous())

    def empty(self, n: int, *, pin: bool = False) -> torch.Tensor:
        """An uninitialised uint8 buffer for ``n`` rows (pinned if ``pin``)."""
        return torch.empty((n, *self.shape[1:]), dtype=torch.uint8, pin_memory=pin)

    def read(self, rows: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``rows`` (int, (B,)) in that order, as uint8 (B, *row_shape) in ``out`` (a
        contiguous host buffer of that shape; a new one if None). IndexError for a row out of range."""
        rows = np.asarray(rows, dtype=np.int64)
        if out is None:
            out = self.empty(len(rows))
        if tuple(out.shape) != (len(rows), *self.shape[1:]) or not out.is_contiguous():
            raise ValueError(f"out must be contiguous {(len(rows), *self.shape[1:])}, got {tuple(out.shape)}")
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"rows must lie in [0, {self.shape[0]}), got {rows.min()}..{rows.max()}")
        if self.tensor is not None:
            torch.index_select(self.tensor, 0, torch.from_numpy(rows), out=out)
            return out
        assert self.fd is not None
        buf = memoryview(out.numpy()).cast("B")        # type: ignore[arg-type]  # (B * row_bytes,)
        b = self.row_bytes
        # Runs of consecutive rows are one read each (a sorted scan is a few large reads). Byte
        # ranges as Python ints up front: this loop is the reader's cost (~1-3 us a row).
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], cuts)) * b                     # into buf
        ends = np.concatenate((cuts, [len(rows)])) * b
        at = rows[starts // b] * b + self.offset                     # into the file
        fd, preadv = self.fd, os.preadv
        for i, j, pos in zip(starts.tolist(), ends.tolist(), at.tolist()):
            if preadv(fd, [buf[i:j]], pos) != j - i:
                raise OSError(f"short read from the training images at byte {pos}: the file "
                              f"changed or is truncated")
        return out


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _host_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def choose_placement(requested: str, data: ImageData, device: torch.device) -> tuple[str, str]:
    """Resolve ``dataset.placement`` for ``data``'s training images on ``device``: ("device" or
    "stream", the one-line reason with sizes). ``auto`` on CUDA: device when the images fit in
    the device's free memory (this process's cached blocks count as free) less
    `DEVICE_MARGIN_FRACTION` of its memory (at least `DEVICE_MARGIN_MIN_BYTES`); on the CPU:
    stream only a memory-mapped file larger than `HOST_FRACTION` of the memory available.

    Example:
        >>> from tune_lip.data.datasets import load_dataset
        >>> choose_placement("stream", load_dataset("synthetic"), torch.device("cpu"))[0]
        'stream'
    """
    if requested not in PLACEMENTS:
        raise ValueError(f"unknown placement {requested!r}; valid: {', '.join(PLACEMENTS)}")
    need = data.train_images.numel()                     # uint8: bytes
    size = f"training images {_gb(need)} ({data.train_images.shape[0]} x {tuple(data.train_images.shape[1:])} uint8)"
    if requested != "auto":
        return requested, f"data placement: {requested} (dataset.placement: {requested}); {size}"
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        margin = max(DEVICE_MARGIN_FRACTION * total, DEVICE_MARGIN_MIN_BYTES)
        fits = need + margin <= free
        why = (f"{size} {'fit' if fits else 'do not fit'} in {device}'s {_gb(free)} free "
               f"less a {_gb(margin)} margin")
    elif data.train_file is None:
        fits, why = True, f"{size} are in host memory already"
    else:
        available = _host_available_bytes()
        fits = available is None or need <= HOST_FRACTION * available
        why = (f"{size}, memory-mapped, {'within' if fits else 'over'} {HOST_FRACTION:g} x the "
               f"{_gb(available or 0)} of host memory available")
    choice = "device" if fits else "stream"
    return choice, f"data placement: {choice} (dataset.placement: auto): {why}"


class StreamedBatches:
    """``batches(step, idx) -> (images uint8 (B, H, W, C), labels int64 (B,))`` on ``data.device``
    for a streamed `ImageData`; ``idx`` = ``order(step)`` (on the device) picks the labels, the
    images come from the host, read ``depth`` steps ahead. See the module docstring.
    """

    def __init__(self, data: ImageData, order: BatchOrder, *, depth: int = 2, readers: int = 4) -> None:
        if depth < 1 or readers < 1:
            raise ValueError(f"depth and readers must be >= 1, got {depth} and {readers}")
        self.data, self.order, self.depth = data, order, depth
        self.device = data.device
        self.reader = data.train_reader()
        # Positions in the training set -> rows of the file (after a validation split).
        self.rows_of = None if data.train_index is None else data.train_index.cpu().numpy()
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        slots = depth + 1          # depth batches ahead + the one being copied out
        self.buffers = [self.reader.empty(order.batch_size, pin=True) for _ in range(slots)] if self.cuda else []
        self.copied: list[torch.cuda.Event | None] = [None] * slots
        self.jobs = 0
        self.pending: dict[int, Future[tuple[torch.Tensor, torch.cuda.Event | None]]] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tune-lip-stream")
        # A batch is split among `readers` threads: from a cold disk each row is a random read,
        # and parallel reads keep the disk's queue full (measured 1.5x with 4 on a VM's disk; an
        # NVMe drive gains more); from the page cache they gain ~15%.
        self.readers = readers
        self.read_pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="tune-lip-read")
        weakref.finalize(self, self.pool.shutdown, wait=False, cancel_futures=True)
        weakref.finalize(self, self.read_pool.shutdown, wait=False, cancel_futures=True)

    def rows(self, step: int) -> np.ndarray:
        """File rows (B,) of step ``step``'s batch."""
        pos = self.order.host(step)
        return pos if self.rows_of is None else self.rows_of[pos]

    def _read(self, rows: np.ndarray, out: torch.Tensor) -> torch.Tensor:
        """``rows`` into ``out``, in `readers` parts read in parallel."""
        cuts = np.linspace(0, len(rows), min(self.readers, len(rows)) + 1).astype(int).tolist()
        parts = [self.read_pool.submit(self.reader.read, rows[a:b], out[a:b])
                 for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
        for part in parts:
            part.result()
        return out

    def _load(self, rows: np.ndarray, slot: int) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """In the worker thread: read ``rows`` and (CUDA) start their copy to the device."""
        if not self.cuda:
            return self._read(rows, self.reader.empty(len(rows))), None   # fresh: callers may keep batches
        assert self.copy_stream is not None
        previous = self.copied[slot]
        if previous is not None:
            previous.synchronize()                     # the slot's last copy has left the buffer
        host = self._read(rows, self.buffers[slot][:len(rows)])
        with torch.cuda.stream(self.copy_stream):
            images = host.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        self.copied[slot] = done
        return images, done

    def _submit(self, step: int) -> None:
        if step not in self.pending:
            slot = self.jobs % len(self.copied) if self.cuda else 0
            self.jobs += 1
            self.pending[step] = self.pool.submit(self._load, self.rows(step), slot)

    def __call__(self, step: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for s in range(step, step + self.depth + 1):
            self._submit(s)
        for s in [s for s in self.pending if s < step]:   # read ahead of a step now past: drop
            del self.pending[s]
        images, done = self.pending.pop(step).result()
        if done is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(done)                    # no host sync: the compute stream waits
            images.record_stream(stream)
        rows = idx if self.data.train_index is None else self.data.train_index[idx]
        return images, self.data.train_labels[rows]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.read_pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()


BatchFetch = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def train_batches(data: ImageData, order: BatchOrder) -> BatchFetch:
    """``fetch(step, idx) -> (images, labels)``: `ImageData.train_batch` for data on the device,
    a `StreamedBatches` for streamed data."""
    if data.placement == "stream":
        return StreamedBatches(data, order)
    return lambda step, idx: data.train_batch(idx)
