"""How close is `tune_lip.cluster.placement.estimate_memory` to what a trial really uses on a GPU?

For each config (AOL-MLP and CPL ConvNet at CIFAR-10's shape, several batch sizes) it builds
the real `LipschitzLoop` on the GPU with a synthetic CIFAR-shaped data set, trains a few
steps (SGD with momentum, so the optimizer state exists), and reads the peak of
``torch.cuda.max_memory_allocated`` (the caching allocator's live tensors; the CUDA context is
not in it). The estimate without its CUDA-context term is set against that peak:

    ratio = (estimate.total_gb - CUDA_CONTEXT_GB) / peak_gb        (>= 1: the estimate is safe)

Reported per config: the peak, the estimate, the ratio, and the largest GPU share ``gpu: auto``
would give on a 16 GB and on a 40 GB GPU. Results also go to bench/results/memory_estimate.json.
Median over ``--runs`` runs (the peak barely moves between runs; the timing of the steps is
not the point here).

Run:  .venv/bin/python bench/memory_estimate.py          (needs a CUDA GPU; ~1 minute)
On a machine without CUDA it says so and exits 0: the CPU check is the unit test
``tests/test_placement.py::test_estimate_counts_what_a_real_step_saves``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

from tune_lip.cluster.placement import CUDA_CONTEXT_GB, estimate_memory, plan_placement
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop

CONFIGS = [
    ({"name": "aol_mlp", "width": 3072, "depth": 8}, [256, 1024, 2048]),
    ({"name": "cpl_convnet", "width": 32, "depth": 5}, [256, 1024, 2048]),
]
NUM_TRAIN = 4096  # a CIFAR-shaped synthetic set: the data term is small and known


def measure(model: dict, batch_size: int, steps: int) -> float:
    """Peak GB of live tensors while the real loop trains ``steps`` steps on the GPU."""
    raw = {"model": model, "device": "cuda", "budget": {"steps": steps}, "reports": 1,
           "dataset": {"name": "synthetic", "batch_size": batch_size, "num_train": NUM_TRAIN,
                       "num_test": 512, "image_size": 32, "channels": 3},
           "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    loop = LipschitzLoop(LipschitzConfig.from_dict(raw))
    loop.train_for(steps)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    del loop
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/memory_estimate.py needs a CUDA GPU; none here (the CPU check is a unit test).")
        return 0
    rows = []
    for model, sizes in CONFIGS:
        for b in sizes:
            config = {"model": model, "dataset": {"name": "synthetic", "batch_size": b, "num_train": NUM_TRAIN,
                                                  "num_test": 512, "image_size": 32, "channels": 3},
                      "optimizer": {"name": "sgd"}}
            est = estimate_memory(config)
            peak = statistics.median(measure(model, b, args.steps) for _ in range(args.runs))
            shares = {f"gpu_on_{gb}gb": plan_placement({"cpu": 1, "gpu": "auto", "accelerator": (kind,)}, config).gpu
                      for gb, kind in ((16, "T4"), (40, "A100"))}
            rows.append({"model": model["name"], "batch_size": b, "peak_gb": round(peak, 3),
                         "estimate_gb": round(est.total_gb - CUDA_CONTEXT_GB, 3),
                         "ratio": round((est.total_gb - CUDA_CONTEXT_GB) / peak, 3), **shares})
            print(rows[-1], flush=True)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
           "runs": args.runs, "steps": args.steps, "rows": rows}
    path = Path(__file__).parent / "results" / "memory_estimate.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
