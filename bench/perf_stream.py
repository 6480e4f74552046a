"""P9 of bench/perf.py: training throughput with the training images streamed from a memory-mapped
``.npy`` file (``dataset.placement: stream``) against the same images already on the device
(``placement: device``; on the CPU: in RAM), images/s.

Both run the data path of the Lipschitz loop's training step
(`tune_lip.studies.lipschitz.LipschitzLoop.train_step`): batch fetch (`train_batches`),
per-sample augmentation on the device (crop 4 + flip), centring; then a small MLP step (SGD; an
AOL layer's Gram of 3072 inputs would hide the data path on a CPU). The file is written in the
converted generated-data layout (uint8 (N, 32, 32, 3) ``.npy``) in a temporary directory and
read warm (it was just written, so it is in the page cache): the figure is the streaming
machinery's overhead, not the disk's random-read speed.
Baseline and candidate alternate after a warm-up; a ratio per run. Goal >= 0.9.

    .venv/bin/python bench/perf.py --only P9 [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf_common import Outcome, seconds  # noqa: E402


def bench_streaming(quick: bool, runs: int) -> Outcome:
    """P9: training images/s streaming from a memory-mapped file over the same with the images on
    the device (see the module docstring). Goal >= 0.9."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from tune_lip.data.augment import AugmentConfig, augment_batch
    from tune_lip.data.datasets import ImageData, convert_and_center
    from tune_lip.data.sampling import BatchOrder
    from tune_lip.data.stream import NpyRows, train_batches

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # A GPU step is ~100x shorter: more steps a run, so that a run is not a few milliseconds.
    n, batch, steps = (8_192, 128, 4) if quick else (200_000, 512, 400 if device.type == "cuda" else 50)
    aug = AugmentConfig.from_dict("crop_flip")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
        rng = np.random.default_rng(0)
        for start in range(0, n, 16384):           # in chunks: the file may exceed RAM
            stop = min(start + 16384, n)
            images[start:stop] = rng.integers(0, 256, (stop - start, 32, 32, 3), dtype=np.uint8)
        images.flush()
        del images
        mapped = np.load(path, mmap_mode="c")       # as `_load_generated` maps it
        labels = torch.from_numpy(rng.integers(0, 10, n).astype(np.int64))
        test = torch.zeros((16, 32, 32, 3), dtype=torch.uint8)
        common = dict(train_labels=labels, test_images=test, test_labels=torch.zeros(16, dtype=torch.int64),
                      num_classes=10, name="generated", mean=(0.5, 0.5, 0.5))
        streamed = ImageData(train_images=torch.from_numpy(mapped), train_file=NpyRows(path, int(mapped.offset)),
                             **common).to(device, "stream")                               # type: ignore[arg-type]
        on_device = ImageData(train_images=torch.from_numpy(np.array(mapped)), **common).to(device)  # type: ignore[arg-type]

        def trainer(data: ImageData):  # type: ignore[no-untyped-def]
            """`LipschitzLoop.train_step`'s data path and a small MLP step, ``steps`` steps a call."""
            order = BatchOrder(num_examples=n, batch_size=batch, seed=0, device=device)
            fetch = train_batches(data, order)
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 256), torch.nn.ReLU(),
                                        torch.nn.Linear(256, 10)).to(device)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            g = torch.Generator(device=device).manual_seed(1)
            mean = data.mean_tensor()
            done = [0]

            def train() -> None:
                for _ in range(steps):
                    step = done[0]
                    x, y = fetch(step, order(step))                    # (B, 32, 32, 3) uint8, (B,)
                    x = convert_and_center(augment_batch(x, aug, g, mean=mean), mean)
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    done[0] += 1
                float(loss.detach())                                   # host sync: the run's end
            return train, fetch

        (device_run, _), (stream_run, fetch) = trainer(on_device), trainer(streamed)
        device_run(), stream_run()                   # warm-up
        pairs = [(seconds(device_run), seconds(stream_run)) for _ in range(runs)]
        fetch.close()
        del fetch, stream_run, streamed, mapped
    images_per_run = steps * batch
    return Outcome("P9", "streamed from a memory-mapped .npy / on the device, training images/s "
                   "(fetch + crop_flip + small MLP step)", ">= 0.9", [d / s for d, s in pairs],
                   {"device_images_per_s": [images_per_run / d for d, _ in pairs],
                    "stream_images_per_s": [images_per_run / s for _, s in pairs],
                    "file_images": n, "file_bytes": n * 3072, "batch": batch, "steps_per_run": steps,
                    "device": str(device), "torch_threads": torch.get_num_threads(), "page_cache": "warm"})
