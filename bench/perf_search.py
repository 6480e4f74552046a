"""Search benchmarks of bench/perf.py: P6 (search compute against a full grid) and P8 (scale).

P6: the compute (training examples actually run) that `GroupedLineSearch` needs, run by Ray Tune
through `tune_lip.tune.launch.build_tuner` on the NQM space ``search_spaces/nqm_sgd_lr_batch.yaml``
(SGD, 16,384 examples per trial, batch sizes 1..1024), to find lr* within 10% at every batch
size, against the full grid that is sure to find it: log-spaced lrs a factor 1.21 apart over the
same range [0.003, 3] (38 points; the best grid point is then within sqrt(1.21) = 1.1 of lr* on a
loss symmetric in log lr), times the batch sizes, each trial run to its end (or to its detected
divergence, as the Trainable would). The grid's cost is counted by running each grid trial's
`NQMLoop` in 8 slices as the Trainable does, no Ray; its own answer is checked too. The exact lr*
comes from `tune_lip.studies.nqm.exact_optimal_lr`. A run is one searcher seed (the phase of the
first batch size's starting points). Goal <= 0.25, and every batch size's best trial within 10%
(a run that misses counts as ratio inf). --quick drives the same searcher in-process, without
Ray (each trial the Trainable's `NQMLoop` in its 8 slices), since Ray's per-trial cost on 2
cores makes the ~75 trials of a run take over a minute.

P8: a real search of N NQM trials (N = 2,000; quick 80) of under a millisecond of compute each,
run by `tune_lip.tune.launch.run_search` (what ``tune-lip search`` runs: Parquet results, the
pending watchdog, grouped ASHA with protected trials, 2 at a time, actors reused). A Tune
callback notes when each trial ends and the driver's resident memory. The ratio is the median
time between consecutive trial ends over the last 10% of trials against the same over the first
10% (after the first 10 trials, which start the actors). Goal <= 1.15. Beside it, the same
ratio of the driver process's CPU seconds per trial, which the machine's other load touches
less than wall time (on 2 shared cores the wall-time ratio of one search varied 0.84-1.41 from
search to search). The driver's memory
growth per trial between 10% and 100% of the trials is reported beside it (Ray's Trial objects,
with their last results, stay in the driver for the whole search: some growth per trial is the
results themselves).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf_common import Outcome  # noqa: E402

GRID_RATIO = 1.21          # neighbouring grid lrs: the best is within sqrt(1.21) = 1.1 of lr*
TOLERANCE = 0.1            # lr* within 10%


def _start_ray() -> None:
    """A private local Ray (as `tune_lip.tune.launch.start_ray`), without the trials' log lines."""
    import ray

    from tune_lip.tune.launch import start_ray
    if not ray.is_initialized():
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    start_ray(num_cpus=2)


def _search_in_process(searcher: Any, fixed: dict[str, Any], metric: str, mode: str) -> list[tuple[int, float, dict]]:
    """--quick: the searcher driven without Ray, one trial at a time, each trial the Trainable's
    `NQMLoop` in ``reports`` slices; ``fixed``: what Tune's param_space adds (budget, reports).
    Returns (batch size, lr, last result) per trial."""
    from ray.tune.search import Searcher

    from tune_lip.studies.nqm import NQMConfig, NQMLoop

    searcher.set_search_properties(metric, mode, {})
    rows, n = [], 0
    while True:
        config = searcher.suggest(f"t{n}")
        if config == Searcher.FINISHED or config is None:   # one at a time: None cannot happen
            return rows
        config = {**config, **fixed}
        reports = fixed["reports"]
        loop = NQMLoop(NQMConfig.from_dict(config))
        for k in range(1, reports + 1):
            result = loop.train_for(-(-loop.total_steps * k // reports) - loop.steps)
            if loop.diverged:
                break
        result = {**result, "training_iteration": k, "config": config}
        searcher.on_trial_complete(f"t{n}", result)
        rows.append((config["dataset"]["batch_size"], config["optimizer"]["lr"], result))
        n += 1


def _grid_trial(config: dict[str, Any], reports: int) -> tuple[int, float]:
    """(examples run, final loss; inf if diverged) of one grid trial, in ``reports`` slices as
    the Trainable runs it."""
    from tune_lip.studies.nqm import NQMConfig, NQMLoop

    loop = NQMLoop(NQMConfig.from_dict(config))
    for k in range(1, reports + 1):
        loop.train_for(-(-loop.total_steps * k // reports) - loop.steps)
        if loop.diverged:
            break
    return int(loop.examples), math.inf if loop.diverged else loop.loss()


def bench_search_compute(quick: bool, runs: int) -> Outcome:
    """P6: examples run by `GroupedLineSearch` (Ray Tune, `build_tuner`) to find lr* within 10% at
    every batch size of the NQM, over those of the full 1.21-ratio grid. Goal <= 0.25."""
    import numpy as np

    from tune_lip.studies.nqm import NQMConfig, exact_optimal_lr
    from tune_lip.tune.launch import build_tuner
    from tune_lip.tune.searchers import GroupedLineSearch
    from tune_lip.tune.spec import Grid, load_spec, set_in

    spec = load_spec("nqm_sgd_lr_batch")
    batches = list(spec.space["dataset"]["batch_size"].values)
    space = {**spec.space, "dataset": {"batch_size": Grid(tuple(batches))}}
    spec = replace(spec, space=space, num_samples=40, max_concurrent_trials=3)
    lr_domain = spec.space["optimizer"]["lr"]
    config = spec.representative_config()
    config.update(budget=spec.budget.to_dict(), reports=spec.reports)
    cfg = NQMConfig.from_dict(config)
    truth = {b: exact_optimal_lr(cfg, b) for b in batches}

    # The full grid: every lr of the 1.21-ratio grid at every batch size, each to its end.
    n_grid = 1 + math.ceil(math.log(lr_domain.hi / lr_domain.lo) / math.log(GRID_RATIO))
    grid_lrs = np.geomspace(lr_domain.lo, lr_domain.hi, n_grid)
    grid_examples, grid_ok = 0, True
    for b in batches:
        losses = []
        for lr in grid_lrs:
            c = {**config, "dataset": {**config["dataset"], "batch_size": b}}
            set_in(c, "optimizer.lr", float(lr))
            examples, loss = _grid_trial(c, spec.reports)
            grid_examples += examples
            losses.append(loss)
        grid_ok &= abs(grid_lrs[int(np.argmin(losses))] / truth[b] - 1) <= TOLERANCE

    if not quick:
        _start_ray()
    ratios, details = [], {"grid_points_per_batch": n_grid, "grid_examples": grid_examples, "grid_finds_lr_star": grid_ok,
                           "batch_sizes": batches, "lr_star": [truth[b] for b in batches], "runs": []}
    with tempfile.TemporaryDirectory() as d:
        for seed in range(runs):
            searcher = GroupedLineSearch(spec.space, per=["dataset.batch_size"], key="optimizer.lr",
                                         samples_per_group=spec.num_samples, tolerance=TOLERANCE, seed=seed)
            if quick:
                rows = _search_in_process(searcher, {"budget": spec.budget.to_dict(), "reports": spec.reports},
                                          spec.metric, spec.mode)
            else:   # what `tune-lip search` runs, with this searcher
                grid = build_tuner(spec, name=f"p6_{seed}", storage_path=d, verbose=0, search_alg=searcher).fit()
                rows = [(r.config["dataset"]["batch_size"], r.config["optimizer"]["lr"], r.metrics)
                        for r in grid if r.metrics]
            examples = sum(int(m["examples"]) for _, _, m in rows)
            found = {}
            for b in batches:
                ok = [(m["train_loss"], lr) for bb, lr, m in rows if bb == b and not m.get("diverged")]
                found[b] = min(ok)[1]
            within = all(abs(found[b] / truth[b] - 1) <= TOLERANCE for b in batches)
            ratio = examples / grid_examples if within else math.inf   # a miss counts as failing the goal
            ratios.append(ratio)
            details["runs"].append({"seed": seed, "trials": len(rows), "examples": examples, "all_within_10pct": within,
                                    "worst_error": max(abs(found[b] / truth[b] - 1) for b in batches)})
    return Outcome("P6", f"examples run by GroupedLineSearch / full {GRID_RATIO}-ratio lr grid "
                   f"({n_grid} lrs x {len(batches)} batch sizes), NQM lr* within 10% at every batch size",
                   "<= 0.25", ratios, details)


_SCALE_SPACE = """
study: nqm
metric: train_loss
mode: min
budget: {{examples: 1024}}
reports: 4
scheduler: {{name: asha, grace_fraction: 0.25, reduction_factor: 2, protect: 2}}
searcher: {{name: {searcher}, seed: 0{per}}}
num_samples: {samples}
max_concurrent_trials: 2
resources: {{cpu: 1}}
checkpoint_every: 0
space:
  seed: 0
  dim: 100
  dataset: {{batch_size: {{grid: [16, 64]}}}}
  optimizer: {{name: sgd, lr: {{loguniform: [0.003, 3.0]}}, momentum: 0.0}}
  schedule: constant
"""


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _Probe:
    """A Tune callback: the time each trial ends, and the driver's RSS then."""

    def __new__(cls) -> Any:
        from ray.tune import Callback

        class Probe(Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []
                self.cpu: list[float] = []     # the driver's CPU seconds (all its threads)
                self.rss: list[int] = []

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self.ends.append(time.perf_counter())
                self.cpu.append(time.process_time())
                self.rss.append(_rss_bytes())

            on_trial_error = on_trial_complete

        return Probe()


def _scale_run(n: int, searcher: str, d: str, name: str) -> dict[str, Any]:
    import numpy as np

    from tune_lip.tune.launch import run_search
    from tune_lip.tune.spec import load_spec

    path = Path(d) / f"{name}.yaml"
    per = ", per: dataset.batch_size" if searcher == "optuna" else ""
    path.write_text(_SCALE_SPACE.format(searcher=searcher, per=per, samples=n // 2))
    probe = _Probe()
    start = time.perf_counter()
    run_search(load_spec(path), name=name, storage_path=d, num_cpus=2, verbose=0, extra_callbacks=[probe])
    wall = time.perf_counter() - start
    gaps = np.diff(np.asarray(probe.ends))
    k = max(len(gaps) // 10, 5)
    first, last = float(np.median(gaps[10:10 + k])), float(np.median(gaps[-k:]))
    cpu = np.asarray(probe.cpu)
    cpu_first, cpu_last = (cpu[10 + k] - cpu[10]) / k, (cpu[-1] - cpu[-1 - k]) / k
    tenth = max(len(probe.rss) // 10, 1)
    return {"searcher": searcher, "trials": len(probe.ends), "wall_seconds": wall,
            "first_10pct_seconds_per_trial": first, "last_10pct_seconds_per_trial": last, "ratio": last / first,
            "driver_cpu_seconds_per_trial_first_10pct": cpu_first, "driver_cpu_seconds_per_trial_last_10pct": cpu_last,
            "driver_cpu_ratio": cpu_last / cpu_first,
            "rss_mb_at_10pct": probe.rss[tenth - 1] / 2**20, "rss_mb_at_end": probe.rss[-1] / 2**20,
            "rss_kb_per_trial": (probe.rss[-1] - probe.rss[tenth - 1]) / 1024 / max(len(probe.rss) - tenth, 1)}


def bench_scale(quick: bool, runs: int) -> Outcome:
    """P8: N short NQM trials through `run_search`: seconds per trial over the last 10% of trials
    against the first 10% (and the driver's memory growth per trial). Goal <= 1.15. Up to 3
    searches one after another in one Ray (N = 2,000 takes 2-4 minutes each on 2 cores); quick:
    one search of N = 80."""
    _start_ray()
    n = 80 if quick else 2000
    searches = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(1 if quick else min(runs, 3)):
            searches.append(_scale_run(n, "random", d, f"p8_{i}"))
    kb = sorted(r["rss_kb_per_trial"] for r in searches)
    return Outcome("P8", f"seconds per trial, last 10% / first 10% of {n} NQM trials in one search (random "
                   f"searcher, grouped ASHA protect 2, Parquet results); driver RSS +{kb[len(kb) // 2]:.0f} KB/trial",
                   "<= 1.15", [r["ratio"] for r in searches], {"searches": searches})


if __name__ == "__main__":
    import json
    quick = "--quick" in sys.argv
    start = time.perf_counter()
    fn = bench_scale if "P8" in sys.argv else bench_search_compute
    out = fn(quick, 2 if quick else 5)
    print(out.median, out.ratios, json.dumps(out.details, default=str)[:2000], f"{time.perf_counter() - start:.1f}s")
