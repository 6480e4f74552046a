"""Streamed training data (`tune_lip.data.stream`, ``dataset.placement``): the same batches as the
device path, bit for bit; host RSS bounded however large the file.

The data sets are fabricated under tmp_path (a fake CIFAR-10 test set and generated npz files in
the official DM-Improves-AT format); nothing downloads.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import write_fake_cifar10, write_npz

import tune_lip.data.stream as stream_mod
from tune_lip.data.augment import AugmentConfig, augment_batch
from tune_lip.data.datasets import load_dataset, split_validation
from tune_lip.data.sampling import BatchOrder
from tune_lip.data.stream import NpyRows, RowReader, StreamedBatches, choose_placement
from tune_lip.errors import ConfigError
from tune_lip.studies.config import _DATA_CACHE, DataConfig, training_data
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop


def load_generated(root: Path, **options) -> object:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*md5 check failed")   # the fake CIFAR-10
        return load_dataset("generated", data_dir=root, path="gen.npz", **options)


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """tmp_path with a fake CIFAR-10 (its test set) and gen.npz of 40 generated images."""
    write_fake_cifar10(tmp_path)
    write_npz(tmp_path / "gen.npz", n=40)
    return tmp_path


def test_row_reader_reads_rows_in_order_from_file_and_tensor(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    offset = np.load(tmp_path / "x.npy", mmap_mode="r").offset
    from_file = RowReader.from_npy(NpyRows(tmp_path / "x.npy", offset), images.shape)
    from_tensor = RowReader.from_tensor(torch.from_numpy(images))
    # Random rows, a run of consecutive ones (one read), a repeat and the last row.
    rows = np.array([7, 3, 4, 5, 6, 29, 3, 0])
    for reader in (from_file, from_tensor):
        assert np.array_equal(reader.read(rows).numpy(), images[rows])
        with pytest.raises(IndexError):
            reader.read(np.array([30]))
    # Only the first shape[0] rows count (generated: num_train): row 10 of a 10-row view is out.
    with pytest.raises(IndexError):
        RowReader.from_npy(NpyRows(tmp_path / "x.npy", offset), (10, 4, 4, 3)).read(np.array([10]))


def test_host_order_is_the_device_order_across_epochs():
    order = BatchOrder(num_examples=10, batch_size=4, seed=5)
    for step in range(8):    # batches 2, 4 and 7 straddle two epochs
        assert np.array_equal(order.host(step), order(step).numpy())


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_batches_equal_device_batches(generated, device):
    """Same images, labels and order as the device path, with a validation split, across epochs
    and after going back to an earlier step (a checkpoint restore), and the same augmentation.
    On CUDA: through pinned buffers and the side copy stream."""
    host = split_validation(load_generated(generated), 6, seed=1)         # 34 to train on
    assert host.placement == "device" and host.train_file is not None
    data, streamed = host.to(device), host.to(device, "stream")
    assert streamed.train_images.device.type == "cpu" and streamed.train_labels.device.type == device
    order = BatchOrder(num_examples=data.num_train, batch_size=16, seed=3, device=device)
    fetch = StreamedBatches(streamed, order, depth=2)
    aug = AugmentConfig.from_dict("crop_flip")
    g_device = torch.Generator(device=device).manual_seed(0)
    g_stream = torch.Generator(device=device).manual_seed(0)
    kept = []
    for step in [0, 1, 2, 3, 4, 5, 1, 2, 9]:
        idx = order(step)
        x_dev, y_dev = data.train_batch(idx)
        x, y = fetch(step, idx)
        kept.append((x, x_dev))
        assert x.dtype == torch.uint8 and x.device == x_dev.device
        assert torch.equal(x, x_dev) and torch.equal(y, y_dev)
        assert torch.equal(augment_batch(x, aug, g_stream), augment_batch(x_dev, aug, g_device))
    # Batches handed out earlier are not overwritten by later reads.
    assert all(torch.equal(x, x_dev) for x, x_dev in kept)
    # The synchronous path (sharpness, channel_std) and the validation split agree too.
    idx = torch.tensor([33, 0, 5], device=device)
    assert all(torch.equal(a, b) for a, b in zip(streamed.train_batch(idx), data.train_batch(idx)))
    again = split_validation(load_generated(generated).to(device, "stream"), 6, seed=1)
    assert torch.equal(again.val_images, data.val_images) and again.mean == data.mean
    assert again.fingerprint() == data.fingerprint()
    fetch.close()


def _run(generated: Path, placement: str) -> list[float]:
    _DATA_CACHE.clear()
    cfg = LipschitzConfig.from_dict({
        "seed": 2, "dataset": {"name": "generated", "data_dir": str(generated), "path": "gen.npz",
                               "batch_size": 8, "validation": 4, "placement": placement},
        "augmentation": "crop_flip", "model": {"name": "aol_mlp", "width": 32, "depth": 2},
        "budget": {"steps": 12}, "reports": 3, "eval": {"robust_steps": 0}})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*md5 check failed")
        loop = LipschitzLoop(cfg)
    assert loop.data.placement == placement
    losses = [loop.train_for(4)["train_loss"] for _ in range(2)]
    state = loop.state_dict()
    resumed = LipschitzLoop(cfg)
    resumed.load_state_dict(state)     # a fresh stream continues at step 8
    losses.append(resumed.train_for(4)["train_loss"])
    return losses + [resumed.evaluate()["val_loss"]]


def test_streamed_training_gives_the_device_paths_losses(generated):
    # Bit-identical: the same bytes through the same float operations in the same order.
    assert _run(generated, "stream") == _run(generated, "device")
    _DATA_CACHE.clear()


def test_placement_key_is_validated_and_auto_is_logged(generated, monkeypatch, caplog):
    with pytest.raises(ConfigError, match="dataset.placement.*'disk'.*auto, device, stream"):
        DataConfig(name="synthetic", placement="disk")
    with pytest.raises(ConfigError, match="dataset.placement"):
        LipschitzConfig.from_dict({"dataset": {"name": "synthetic", "placement": "gpu"}})
    cpu = torch.device("cpu")
    # In RAM already: nothing to gain from streaming on the CPU.
    assert choose_placement("auto", load_dataset("synthetic"), cpu)[0] == "device"
    data = load_generated(generated)
    assert choose_placement("auto", data, cpu)[0] == "device"        # 120 KB: fits
    monkeypatch.setattr(stream_mod, "_host_available_bytes", lambda: 100_000)
    choice, why = choose_placement("auto", data, cpu)
    assert choice == "stream" and "0.00 GB" in why and "auto" in why and "over" in why
    assert choose_placement("device", data, cpu)[0] == "device"       # an explicit key wins
    _DATA_CACHE.clear()
    with caplog.at_level(logging.INFO, logger="tune_lip.studies.config"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*md5 check failed")
        split = training_data(DataConfig(name="generated", data_dir=str(generated), validation=4,
                                         options={"path": "gen.npz"}), cpu)
    assert split.placement == "stream"
    assert [r.levelname for r in caplog.records] == ["WARNING"]      # auto chose the slower path
    assert caplog.records[0].getMessage().startswith("data placement: stream (dataset.placement: auto)")
    _DATA_CACHE.clear()


# The child process: load the generated npz (convert it, compute its mean), hold out a validation
# split, stream batches at random indices, check their content, and report VmRSS / VmHWM (MB);
# then gather as many random rows through a plain memmap, to show that the measurement sees pages
# of a mapping that stay in RSS.
_CHILD = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np, torch
    from tune_lip.data.datasets import load_dataset, split_validation
    from tune_lip.data.sampling import BatchOrder
    from tune_lip.data.stream import StreamedBatches

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}

    root, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    imported = status()                                     # torch alone: 0.5-0.9 GB by build and machine
    sys.stdin.readline()                                    # imported: wait until the npz is written
    warnings.simplefilter("ignore")
    data = load_dataset("generated", data_dir=root, path="big.npz").to("cpu", "stream")
    data = split_validation(data, 5000, seed=0)
    order = BatchOrder(num_examples=data.num_train, batch_size=batch, seed=0)
    fetch = StreamedBatches(data, order)
    before = status()
    pattern = np.load(root + "/pattern.npy")                # (251, 3072): row r is pattern[r % 251]
    rows_of = data.train_index.numpy()
    for step in range(steps):
        idx = order(step)
        x, y = fetch(step, idx)
        rows = rows_of[idx.numpy()]
        assert np.array_equal(x.numpy().reshape(batch, -1), pattern[rows % 251]), step
        assert np.array_equal(y.numpy(), rows % 10), step
    after = status()
    fetch.close()
    mapped = np.load(data.train_file.path, mmap_mode="r")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        mapped[np.sort(rng.integers(0, len(mapped), batch))].sum()
    print(json.dumps({"imported": imported, "before": before, "after": after, "memmap": status()}))
""")


def _write_big_npz(path: Path, n: int) -> np.ndarray:
    """An npz in the generated format (``image`` (n, 32, 32, 3) uint8, ``label`` (n,)), stored
    uncompressed as np.savez writes it, but in chunks: row r is pattern[r % 251], label r % 10."""
    row = np.arange(3072, dtype=np.int64)
    pattern = ((np.arange(251)[:, None] * 31 + row[None, :] * 7) % 251).astype(np.uint8)  # (251, 3072)
    block = memoryview(np.tile(pattern, (64, 1)))          # 64 periods: 16,064 rows, 49 MB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("label.npy", "w") as f:
            np.lib.format.write_array(f, np.arange(n, dtype=np.int64) % 10)
        with zf.open("image.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (n, 32, 32, 3)})
            rows_per_block = len(block)
            for start in range(0, n, rows_per_block):
                f.write(block[:min(rows_per_block, n - start)])
    return pattern


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_streaming_a_multi_gb_file_keeps_rss_bounded(tmp_path):
    n, steps, batch = 651_000, 300, 256             # 2.0 GB of images
    # The child imports torch while the npz is written.
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), str(steps), str(batch)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        write_fake_cifar10(tmp_path)
        np.save(tmp_path / "pattern.npy", _write_big_npz(tmp_path / "big.npz", n))
    finally:
        stdout, stderr = child.communicate("go\n", timeout=300)
    assert child.returncode == 0, stderr[-3000:]
    rss = json.loads(stdout.splitlines()[-1])
    # The peak over the whole run (the conversion, the mean, the stream) stays within 512 MB of
    # what importing torch alone takes (a quarter of the 2 GB file; 0.3 GB measured here, and
    # 828 MB in all on this dev machine; torch's own RSS differs between machines, 0.5-0.9 GB),
    # and streaming 77k random images added next to nothing ...
    assert rss["after"]["VmHWM"] - rss["imported"]["VmRSS"] < 512, rss
    assert rss["after"]["VmRSS"] - rss["before"]["VmRSS"] < 64, rss
    # ... while gathering as many through a memmap keeps its pages: the measurement can see them.
    assert rss["memmap"]["VmRSS"] - rss["after"]["VmRSS"] > 256, rss


@pytest.mark.parametrize("study", ["sphere", "scaling"])
def test_other_studies_train_the_same_on_streamed_data(study):
    """The sphere and scaling studies load through the same `training_data`, so dataset.placement
    works for them too (their batches through `ImageData.train_batch`, without read-ahead)."""
    if study == "sphere":
        from tune_lip.studies.sphere import SphereConfig as Cfg
        from tune_lip.studies.sphere import SphereLoop as Loop
        raw = {"model": {"name": "convnet_si", "width": 4}, "optimizer": {"mode": "sphere", "elr": 1e-2}}
    else:
        from tune_lip.studies.scaling import ScalingConfig as Cfg  # type: ignore[assignment]
        from tune_lip.studies.scaling import ScalingLoop as Loop  # type: ignore[assignment]
        raw = {"model": {"name": "preresnet32", "norm": "bn", "width": 0.125}}
    losses = {}
    for placement in ("device", "stream"):
        _DATA_CACHE.clear()
        loop = Loop(Cfg.from_dict({"seed": 3, "budget": {"steps": 8}, "reports": 4, **raw, "dataset": {
            "name": "synthetic", "batch_size": 16, "num_train": 128, "num_test": 32, "placement": placement}}))
        assert loop.data.placement == placement
        losses[placement] = [loop.train_for(2)["train_loss"] for _ in range(2)]
    assert losses["stream"] == losses["device"]
    _DATA_CACHE.clear()
