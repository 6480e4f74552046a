"""tune-lip's performance benchmarks, one command: each a ratio against a baseline run side by side.

    .venv/bin/python bench/perf.py              # every benchmark, >= 5 timed runs after a warm-up
    .venv/bin/python bench/perf.py --quick      # a sub-minute smoke version (CI runs it; never its timings)
    .venv/bin/python bench/perf.py --only P4    # some of them

Prints a table (median and min-max of each ratio over the runs, its goal, the machine, the
versions) and writes bench/results/perf.json (bench/results/perf_quick.json with --quick).
A ratio is always taken in one process run, baseline and candidate alternating, so the machine's
load hits both alike. Goals are issue 15's.

- P1: the Lipschitz Trainable's training throughput against a bare PyTorch loop on the same
  model, data, batch, loss, optimizer and OneCycle schedule, examples/s. Goal >= 0.97.
- P2: an AOL-MLP training step against a plain MLP of the same shape (Linear + MaxMin), as a
  ratio to the analytic bound 1 + w/b (the Gram W^T W costs a w x w x w product per layer on top
  of the b x w x w ones). Goal <= 1.15: a regression benchmark.
- P3: per-sample augmentation of uint8 batches on the device against torchvision's per-image
  transforms in a DataLoader (2 workers), images/s. Goal >= 20.
- P4: `tune_lip.analysis.load` against Ray's `ExperimentAnalysis` on the same experiment (a real
  Tune run of a function trainable through the Parquet callback: 300 trials x 100 reports, quick
  10 x 10). Each side runs in a fresh process with pandas already imported, as in a notebook,
  and its clock covers its own imports and the load; the contents are checked equal. Goal >= 10.
- P5: `tune-lip search` of 48 NQM trials (8 reports, < 1 ms of compute each; quick 4) against
  plain Ray Tune running the same loop in a function trainable, 2 at a time, actors reused, wall
  clock of each whole process. Goal <= 1.15.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from perf_common import Outcome, seconds  # noqa: E402


# --------------------------------------------------------------------------------------- P1
def bench_trainable(quick: bool, runs: int) -> Outcome:
    """P1: the Lipschitz Trainable's training throughput against a bare PyTorch loop on the same
    model, data, batch, loss, optimizer and OneCycle schedule (examples/s). The Trainable's run
    is one report with its evaluation on 64 validation and 64 test images, which the bare loop
    also does once. Goal >= 0.97."""
    import torch

    from trainables import LipschitzTrainable
    from tune_lip.data.datasets import convert_and_center, load_dataset
    from tune_lip.nn.losses import OffsetCrossEntropy, cross_entropy_and_accuracy
    from tune_lip.nn.models.registry import build_model

    # CPU-sized: at width 1024 each AOL step's Gram products take ~0.4 s on 2 cores
    steps, batch, width = (30, 64, 256) if quick else (200, 256, 256)
    config = {"seed": 0, "dataset": {"name": "synthetic", "batch_size": batch, "num_train": 4096 + 64,
                                     "num_test": 64, "validation": 64, "channels": 3, "image_size": 16},
              "model": {"name": "aol_mlp", "width": width, "depth": 4},
              "optimizer": {"lr": 0.05, "momentum": 0.9}, "budget": {"steps": steps}, "reports": 1,
              "eval": {"robust_steps": 0}}

    def trainable() -> None:
        t = LipschitzTrainable(config=config)
        t.train()
        t.stop()

    data = load_dataset("synthetic", num_train=4096, num_test=64, channels=3, image_size=16)
    mean = torch.tensor(data.mean)

    def bare() -> None:
        torch.manual_seed(0)
        model = build_model("aol_mlp", input_shape=data.input_shape, num_classes=10, width=width, depth=4)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=steps)
        loss_fn = OffsetCrossEntropy(eps=36 / 255, temperature=0.25)
        g = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, data.num_train, (batch,), generator=g)
            x = convert_and_center(data.train_images[idx], mean)
            loss = loss_fn(model(x), data.train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            cross_entropy_and_accuracy(model, data.test_images, data.test_labels, mean)
            cross_entropy_and_accuracy(model, data.test_images, data.test_labels, mean)

    trainable(), bare()  # warm-up
    pairs = [(seconds(trainable), seconds(bare)) for _ in range(runs)]
    return Outcome("P1", "Trainable / bare PyTorch loop, training examples/s", ">= 0.97",
                   [b / t for t, b in pairs],
                   {"trainable_examples_per_s": [steps * batch / t for t, _ in pairs],
                    "bare_examples_per_s": [steps * batch / b for _, b in pairs],
                    "steps": steps, "batch": batch, "width": width})


# --------------------------------------------------------------------------------------- P2
def _square_input(width: int) -> tuple[int, int, int]:
    """An image shape of ``width`` values: (3, 32, 32) for 3072, (1, s, s) for a square width."""
    if width == 3072:
        return (3, 32, 32)
    side = int(round(width ** 0.5))
    if side * side != width:
        raise ValueError(f"P2: width {width} is not 3072 or a square")
    return (1, side, side)


def bench_aol_step(quick: bool, runs: int) -> Outcome:
    import torch
    from torch import nn

    from tune_lip.nn.models.activations import MaxMin
    from tune_lip.nn.models.registry import build_model

    torch.manual_seed(0)
    widths, batches, depth, steps = ((256,), (64, 512), 4, 3) if quick else ((1024, 3072), (256, 2048), 8, 3)
    rows: list[dict[str, Any]] = []
    ratios: list[list[float]] = []
    for w in widths:
        for b in batches:
            shape = _square_input(w)  # input size = width, as the paper's 3072 = 3 x 32 x 32
            aol = build_model("aol_mlp", input_shape=shape, num_classes=10, width=w, depth=depth)
            layers: list[nn.Module] = [nn.Flatten()]
            for _ in range(depth - 1):
                layers += [nn.Linear(w, w, bias=False), MaxMin()]
            plain = nn.Sequential(*layers, nn.Linear(w, w, bias=False))
            x, y = torch.randn(b, *shape), torch.randint(0, 10, (b,))

            def step(model: nn.Module) -> Callable[[], None]:
                opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

                def run() -> None:
                    for _ in range(steps):
                        opt.zero_grad(set_to_none=True)
                        nn.functional.cross_entropy(model(x), y).backward()
                        opt.step()
                return run

            run_aol, run_plain = step(aol), step(plain)
            run_aol(), run_plain()  # warm-up
            pairs = [(seconds(run_aol), seconds(run_plain)) for _ in range(runs)]
            bound = 1 + w / b
            r = [a / p / bound for a, p in pairs]
            ratios.append(r)
            rows.append({"model": "aol_mlp train", "width": w, "batch": b, "depth": depth, "bound": bound,
                         "aol_over_plain": statistics.median([a / p for a, p in pairs]),
                         "of_bound": statistics.median(r), "of_bound_min": min(r), "of_bound_max": max(r)})
    # CPL at eval: sigma is cached after the first evaluation, so a CPLConv2d forward is a conv
    # and a transposed conv (bound 2) against one conv of the same shape (Conv2d + ReLU).
    from tune_lip.nn.models.cpl import CPLConv2d

    channels, size, b, depth = (16, 8, 32, 2) if quick else (64, 16, 128, 4)
    cpl = nn.Sequential(*[CPLConv2d(channels, eval_power_iterations=10) for _ in range(depth)]).eval()
    plain = nn.Sequential(*[m for _ in range(depth) for m in (nn.Conv2d(channels, channels, 3, padding=1),
                                                                nn.ReLU())]).eval()
    x = torch.randn(b, channels, size, size)

    def forward(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for _ in range(steps):
                    model(x)
        return run

    run_cpl, run_conv = forward(cpl), forward(plain)
    run_cpl(), run_conv()  # warm-up (and the cached sigma)
    pairs = [(seconds(run_cpl), seconds(run_conv)) for _ in range(runs)]
    r = [c / p / 2 for c, p in pairs]
    ratios.append(r)
    rows.append({"model": "cpl_conv eval", "channels": channels, "size": size, "batch": b, "depth": depth,
                 "bound": 2, "cpl_over_plain": statistics.median([c / p for c, p in pairs]),
                 "of_bound": statistics.median(r), "of_bound_min": min(r), "of_bound_max": max(r)})
    worst = max(ratios, key=statistics.median)  # the goal is about every configuration
    return Outcome("P2", "AOL-MLP step / plain MLP step as a fraction of 1 + w/b, and CPL conv eval / "
                   "plain conv as a fraction of 2 (worst config)",
                   "<= 1.15", worst, {"configs": rows, "torch_threads": torch.get_num_threads()})


# --------------------------------------------------------------------------------------- P3
def bench_augmentation(quick: bool, runs: int) -> Outcome:
    """P3: per-sample augmentation of uint8 batches on the device (`augment_batch`: crop 4 with
    reflect padding, flip, an 8x8 erased square at the mean colour, every image its own draw)
    against the same torchvision transforms per PIL image in a DataLoader (2 workers), images/s.
    Goal >= 20."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from tune_lip.data.augment import AugmentConfig, augment_batch

    n, batch = (2048, 256) if quick else (20480, 512)
    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8)   # (N, H, W, C), as on the device
    cfg = AugmentConfig(crop=4, pad_mode="reflect", flip=True, erase=1.0, erase_scale=(1 / 16, 1 / 16),
                        erase_ratio=(1.0, 1.0), erase_value="mean")
    # The usual torchvision CIFAR pipeline: PIL images (as torchvision.datasets.CIFAR10 gives),
    # transforms per image, to a centred tensor, then erasing.
    per_image = transforms.Compose([
        transforms.RandomCrop(32, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize((0.491, 0.482, 0.447), (1.0, 1.0, 1.0)),
        transforms.RandomErasing(p=1.0, scale=(1 / 16, 1 / 16), ratio=(1.0, 1.0))])
    arrays = images.numpy()

    class Images(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> torch.Tensor:
            return per_image(Image.fromarray(arrays[i]))   # (C, H, W) per image

    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.491, 0.482, 0.447])

    def ours() -> None:
        for start in range(0, n, batch):
            augment_batch(images[start:start + batch], cfg, g, mean=mean)

    def torchvision_loader() -> None:
        for _ in DataLoader(Images(), batch_size=batch, num_workers=2):
            pass

    ours(), torchvision_loader()  # warm-up
    pairs = [(seconds(ours), seconds(torchvision_loader)) for _ in range(runs)]
    return Outcome("P3", "per-sample on-device augmentation / torchvision per image in a DataLoader, "
                   "images/s", ">= 20", [t / o for o, t in pairs],
                   {"ours_images_per_s": [n / o for o, _ in pairs],
                    "torchvision_images_per_s": [n / t for _, t in pairs], "images": n,
                    "device": "cpu"})


# --------------------------------------------------------------------------------------- P4
_RAY_SIDE = """
import pandas as pd, time, sys
t = time.perf_counter()
from ray.tune import ExperimentAnalysis
a = ExperimentAnalysis(sys.argv[1])
df = pd.concat(a.trial_dataframes.values(), ignore_index=True)
dt = time.perf_counter() - t
print(dt, len(df), df["metric"].sum())
"""
_OURS_SIDE = """
import pandas as pd, time, sys
t = time.perf_counter()
from tune_lip.analysis import load
df = load(sys.argv[1])
dt = time.perf_counter() - t
print(dt, len(df), df["metric"].sum())
"""


def _make_experiment(root: Path, trials: int, reports: int) -> Path:
    """A real Tune run: a function trainable reporting ``reports`` times, through our callback."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import tune

    from tune_lip.tune.callbacks import ParquetResultsCallback

    def trainable(config: dict[str, Any]) -> None:
        for i in range(reports):
            tune.report({"metric": config["x"] * (i + 1), "val_loss": 1.0 / (i + 1)})

    ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
    try:
        experiment = root / "exp"
        tuner = tune.Tuner(
            trainable, param_space={"x": tune.grid_search(list(range(trials)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
            run_config=tune.RunConfig(name="exp", storage_path=str(root), verbose=0,
                                      callbacks=[ParquetResultsCallback(experiment)]))
        tuner.fit()
    finally:
        ray.shutdown()
    return experiment


def bench_load(quick: bool, runs: int) -> Outcome:
    trials, reports = (10, 10) if quick else (300, 100)
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        experiment = _make_experiment(Path(d), trials, reports)
        made = time.perf_counter() - start

        def side(code: str) -> tuple[float, int, float]:
            out = subprocess.run([sys.executable, "-c", "import pandas\n" + code, str(experiment)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            dt, n, total = out.stdout.split()[-3:]
            return float(dt), int(n), float(total)

        side(_OURS_SIDE), side(_RAY_SIDE)  # warm-up (file system caches, .pyc)
        ratios, ours_s, rays_s = [], [], []
        for _ in range(runs):
            o, r = side(_OURS_SIDE), side(_RAY_SIDE)
            if o[1:] != r[1:]:
                raise AssertionError(f"P4: different contents, ours {o[1:]} vs Ray's {r[1:]}")
            if o[1] != trials * reports:
                raise AssertionError(f"P4: {o[1]} rows, expected {trials * reports}")
            ours_s.append(o[0])
            rays_s.append(r[0])
            ratios.append(r[0] / o[0])
    return Outcome("P4", f"Ray's ExperimentAnalysis / tune_lip load, {trials} trials x {reports} reports",
                   ">= 10", ratios, {"ours_seconds": ours_s, "rays_seconds": rays_s,
                                     "experiment_seconds": made, "trials": trials, "reports": reports})


# --------------------------------------------------------------------------------------- P5
_NQM_SPACE = """
study: nqm
metric: train_loss
mode: min
budget: {{examples: 2048}}
reports: 8
scheduler: none
searcher: {{name: random, seed: 0}}
num_samples: 1
max_concurrent_trials: 2
resources: {{cpu: 1}}
checkpoint_every: 0
space:
  seed: 0
  dim: 100
  dataset: {{batch_size: {{grid: {batches}}}}}
  optimizer: {{name: sgd, lr: {{grid: {lrs}}}, momentum: 0.0}}
  schedule: constant
"""
_PLAIN_TUNE = """
import os, sys
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
import ray
from ray import tune
from tune_lip.studies.nqm import NQMConfig, NQMLoop

def trainable(config):
    loop = NQMLoop(NQMConfig.from_dict(config))
    for k in range(1, 9):
        loop.train_for(-(-loop.total_steps * k // 8) - loop.steps)
        tune.report(loop.evaluate())

ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
space = {{"seed": 0, "dim": 100, "budget": {{"examples": 2048}}, "reports": 8, "schedule": "constant",
         "dataset": {{"batch_size": tune.grid_search({batches})}},
         "optimizer": {{"name": "sgd", "momentum": 0.0, "lr": tune.grid_search({lrs})}}}}
tune.Tuner(trainable, param_space=space,
           tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
           run_config=tune.RunConfig(name="plain", storage_path=sys.argv[1], verbose=0)).fit()
ray.shutdown()
"""


def bench_orchestration(quick: bool, runs: int) -> Outcome:
    """P5: ``tune-lip search`` of NQM trials (8 reports, under 1 ms of compute each) against plain
    Ray Tune running the same loop in a function trainable; both 2 at a time, actors reused,
    wall clock of the whole process (Ray's start-up included). Goal <= 1.15."""
    batches = [8, 16, 32, 64, 128, 256] if not quick else [16, 64]
    lrs = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0] if not quick else [0.05, 0.5]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    tune_lip_bin = str(Path(sys.executable).with_name("tune-lip"))
    with tempfile.TemporaryDirectory() as d:
        space = Path(d) / "nqm_bench.yaml"
        space.write_text(_NQM_SPACE.format(batches=batches, lrs=lrs))
        plain = Path(d) / "plain.py"
        plain.write_text(_PLAIN_TUNE.format(batches=batches, lrs=lrs))

        def ours(i: int) -> float:
            return seconds(lambda: subprocess.run(
                [tune_lip_bin, "search", str(space), "--name", f"ours{i}", "--storage-path", d],
                check=True, capture_output=True, env=env, cwd=ROOT))

        def theirs(i: int) -> float:
            return seconds(lambda: subprocess.run(
                [sys.executable, str(plain), f"{d}/plain{i}"], check=True, capture_output=True,
                env=env, cwd=ROOT))

        if not quick:
            ours(-1), theirs(-1)  # warm-up
        pairs = [(ours(i), theirs(i)) for i in range(1 if quick else runs)]
    n = len(batches) * len(lrs)
    return Outcome("P5", f"tune-lip search / plain Ray Tune, {n} NQM trials x 8 reports, wall clock",
                   "<= 1.15", [o / t for o, t in pairs],
                   {"tune_lip_seconds": [o for o, _ in pairs], "plain_seconds": [t for _, t in pairs],
                    "trials": n})


# --------------------------------------------------------------------------------------- P7
def bench_demo(quick: bool, runs: int) -> Outcome:
    """P7: ``tune-lip demo`` end to end, wall clock of the whole process (Ray's start-up, the
    search, the fits and the plots), as a user runs it after ``make install``. Not a ratio: the
    figure is seconds, goal <= 180 s on 2 cores. Quick: ``tune-lip demo --quick``, once."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLBACKEND": "Agg"}
    tune_lip_bin = str(Path(sys.executable).with_name("tune-lip"))
    with tempfile.TemporaryDirectory() as d:
        def demo() -> None:
            subprocess.run([tune_lip_bin, "demo", "--storage-path", d, *(["--quick"] if quick else [])],
                           check=True, capture_output=True, env=env, cwd=d)

        times = [seconds(demo) for _ in range(1 if quick else max(1, min(runs, 3)))]
    return Outcome("P7", "tune-lip demo end to end, wall-clock seconds (not a ratio)" + (" (--quick)" if quick else ""),
                   "<= 180", times, {"seconds_each": times})


def _elsewhere(module: str, function: str) -> Callable[[bool, int], Outcome]:
    """A benchmark defined in another bench module, imported when it runs."""
    def run(quick: bool, runs: int) -> Outcome:
        return getattr(importlib.import_module(module), function)(quick, runs)  # type: ignore[no-any-return]
    return run


BENCHMARKS: dict[str, Callable[[bool, int], Outcome]] = {
    "P1": bench_trainable, "P2": bench_aol_step, "P3": bench_augmentation, "P4": bench_load,
    "P5": bench_orchestration,
    "P6": _elsewhere("perf_search", "bench_search_compute"),
    "P7": bench_demo,
    "P8": _elsewhere("perf_search", "bench_scale"),
    "P9": _elsewhere("perf_stream", "bench_streaming"),
}


def _versions() -> dict[str, str]:
    import numpy
    import pandas
    import pyarrow
    import ray
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__, "pyarrow": pyarrow.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a sub-minute smoke version")
    parser.add_argument("--only", default="", help="comma-separated names, e.g. P2,P4")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 5, quick 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON file (default bench/results/perf.json, with --quick perf_quick.json)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"bench/perf.py: --only: unknown benchmark {unknown[0]!r}; valid: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    runs = args.runs or (2 if args.quick else 5)
    machine = {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
               "cpus": os.cpu_count(), **_versions()}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    outcomes = []
    for name in names:
        start = time.perf_counter()
        outcome = BENCHMARKS[name](args.quick, runs)
        outcome.details["seconds"] = time.perf_counter() - start
        outcomes.append(outcome)
        print(f"{outcome.name}  {outcome.what}: median {outcome.median:.3g} "
              f"[{min(outcome.ratios):.3g}, {max(outcome.ratios):.3g}] over {len(outcome.ratios)}, "
              f"goal {outcome.goal}: {'met' if outcome.met else 'NOT met'} "
              f"({outcome.details['seconds']:.0f} s)", flush=True)
    path = args.out or ROOT / "bench" / "results" / ("perf_quick.json" if args.quick else "perf.json")
    path.write_text(json.dumps({"machine": machine, "quick": args.quick, "runs": runs,
                                "benchmarks": [asdict(o) | {"median": o.median, "met": o.met}
                                               for o in outcomes]}, indent=2, default=float))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
