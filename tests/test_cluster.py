"""The cluster flow on a fake heterogeneous cluster (`ray.cluster_utils.Cluster`, loopback only).

One CPU head plus an A100 node (2 fake GPUs), a V100 node and a T4 node (1 each), all on
127.0.0.1, built by the same `start_fake_cluster` that ``tune-lip rehearse`` uses. Trials
train on the CPU; the GPUs exist only for Ray's scheduler, which is what is under test:
pins, packing, the memory rule, a lost node, a killed driver, and equal work on every type.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from helpers import TUNE_LIP, kill_and_resume, start_local_ray
from ray.tune import Callback

from tune_lip.analysis import last_reports, load
from tune_lip.cluster.placement import estimate_memory
from tune_lip.tune.launch import run_search
from tune_lip.tune.rehearse import NodeKiller, start_fake_cluster
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow

NODES = {"A100": 2, "V100": 1, "T4": 1}
MODEL = "{name: aol_mlp, width: 64, depth: 4}"
DATA = "{name: synthetic, batch_size: 32, num_train: 256, num_test: 64}"


@pytest.fixture(scope="module")
def cluster():
    """The fake cluster, connected; the session's local Ray gives way and comes back after."""
    import ray

    was_local = ray.is_initialized()
    ray.shutdown()
    fake = start_fake_cluster(NODES, cpus_per_node=2)
    ray.init(address=fake.address, configure_logging=False)
    try:
        yield fake
    finally:
        ray.shutdown()
        fake.shutdown()
        if was_local:
            start_local_ray()


def _space(tmp_path: Path, name: str, *, resources: str, budget: str = "{steps: 60}", reports: int = 3,
           batch_sizes: str = "32", lrs: str = "[0.05, 0.2]", extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        study: lipschitz
        metric: val_acc
        mode: max
        budget: {budget}
        reports: {reports}
        searcher: {{name: grid}}
        checkpoint_every: 1
        resources: {resources}
        {extra}
        space:
          seed: 0
          model: {MODEL}
          dataset: {{name: synthetic, batch_size: {{grid: [{batch_sizes}]}}, num_train: 256, num_test: 64}}
          optimizer: {{lr: {{grid: {lrs}}}}}
        """))
    return path


def _wait_until_idle(timeout_s: float = 60.0) -> None:
    """Wait (bounded) until every CPU and GPU of the fake cluster is free again: Ray releases a finished
    test's actors asynchronously."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        free, total = ray.available_resources(), ray.cluster_resources()
        if all(free.get(k, 0) >= total.get(k, 0) for k in ("CPU", "GPU")):
            return
        time.sleep(0.5)


def _search(path: Path, storage: Path, **kwargs):
    grid = run_search(load_spec(path), name=path.stem, storage_path=storage, address="auto", verbose=0, **kwargs)
    assert grid.num_errors == 0
    return grid, load(Path(grid.experiment_path))


def _where(df) -> dict[str, list[str]]:
    """trial_id -> the accelerator types it reported from, in order, without repeats."""
    return {t: list(dict.fromkeys(g.sort_values("training_iteration")["accelerator"]))
            for t, g in df.groupby("trial_id")}


def test_pinned_trials_run_only_on_their_type(cluster, tmp_path):
    _, df = _search(_space(tmp_path, "pin", resources="{cpu: 1, gpu: 0.5, accelerator: V100}",
                           lrs="[0.05, 0.1, 0.2]"), tmp_path)
    assert set(df["accelerator"]) == {"V100"} and df["trial_id"].nunique() == 3
    _, df = _search(_space(tmp_path, "pair", resources="{cpu: 1, gpu: 1, accelerator: [A100, T4]}",
                           lrs="[0.05, 0.1, 0.2]"), tmp_path)
    assert set(df["accelerator"]) <= {"A100", "T4"} and df["trial_id"].nunique() == 3


class _Concurrency(Callback):
    """Most trials RUNNING at once, as Tune's controller saw it."""

    most = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.most = max(self.most, sum(t.status == "RUNNING" for t in trials))


def test_fractional_trials_pack_onto_one_gpu(cluster, tmp_path):
    """Four quarter-GPU trials pinned to the single T4 run side by side."""
    counter = _Concurrency()
    _, df = _search(_space(tmp_path, "pack", resources="{cpu: 0.5, gpu: 0.25, accelerator: T4}",
                           budget="{steps: 400}", reports=4, lrs="[0.02, 0.05, 0.1, 0.2]"),
                    tmp_path, extra_callbacks=[counter])
    assert set(df["accelerator"]) == {"T4"} and df["trial_id"].nunique() == 4
    assert counter.most >= 2  # impossible on one GPU unless trials share it


def test_big_configs_avoid_small_gpus(cluster, tmp_path):
    """With min_gpu_memory_gb: auto, a config bigger than the small GPUs runs only on the A100."""
    def need(batch_size: int) -> float:
        return estimate_memory({"model": {"name": "aol_mlp", "width": 64, "depth": 4},
                                "dataset": {"name": "synthetic", "batch_size": batch_size,
                                            "num_train": 256, "num_test": 64}}).total_gb

    small_gb = (need(8) + need(256)) / 2  # the fake V100 and T4 hold the batch-8 trials, not the 256s
    resources = (f"{{cpu: 1, gpu: 0.5, min_gpu_memory_gb: auto, "
                 f"gpu_memory_gb: {{A100: 40, V100: {small_gb:.6f}, T4: {small_gb:.6f}}}}}")
    _, df = _search(_space(tmp_path, "mem", resources=resources, batch_sizes="8, 256",
                           lrs="[0.05, 0.1, 0.2]"), tmp_path)
    big = df[df["config/dataset/batch_size"] == 256]
    assert big["trial_id"].nunique() == 3 and set(big["accelerator"]) == {"A100"}


def test_identical_configs_on_two_types_do_the_same_work(cluster, tmp_path):
    """`calibrate_cluster` times every type; then a reference_hours budget gives the same
    steps and the same metrics on an A100 and on a T4."""
    from tune_lip.cluster.calibrate import append_table, calibrate_cluster
    from tune_lip.tune.launch import grid_configs

    a100 = _space(tmp_path, "on_a100", resources="{cpu: 1, gpu: 1, accelerator: A100}",
                  budget="{reference_hours: 0.00002, reference: A100, calibration: calibration.parquet}",
                  lrs="[0.1]")
    t4 = tmp_path / "on_t4.yaml"
    t4.write_text(a100.read_text().replace("accelerator: A100}", "accelerator: T4}"))
    table = calibrate_cluster(grid_configs(load_spec(a100)), warmup_steps=1, timed_steps=3, timeout_s=240)
    assert sorted(table["accelerator"]) == ["A100", "T4", "V100"]  # one pinned task per type present
    append_table(table, tmp_path / "calibration.parquet")

    runs = [last_reports(_search(path, tmp_path)[1]).iloc[0] for path in (a100, t4)]
    assert [r["accelerator"] for r in runs] == ["A100", "T4"]
    step_seconds = float(table.loc[table["accelerator"] == "A100", "step_seconds"].iloc[0])
    assert runs[0]["steps"] == runs[1]["steps"] == max(1, int(0.00002 * 3600 / step_seconds))  # A100 time
    assert not runs[0]["hardware_dependent"]
    for metric in ("train_loss", "val_certified_acc", "test_loss", "test_acc", "test_certified_acc", "weight_norm",
                   "reference_seconds"):
        assert runs[0][metric] == pytest.approx(runs[1][metric], rel=1e-6), metric


def test_killed_driver_resumes_on_the_cluster(cluster, tmp_path):
    """SIGKILL the driver mid-search; ``--resume`` against the cluster finishes every trial."""
    path = _space(tmp_path, "k", resources="{cpu: 1, gpu: 1, accelerator: [A100, T4]}",
                  budget="{steps: 240}", reports=6, lrs="[0.02, 0.05, 0.1, 0.2]", extra="max_concurrent_trials: 1")
    kill_and_resume([*TUNE_LIP, "search", str(path), "--name", "k", "--storage-path", str(tmp_path),
                     "--address", cluster.address], tmp_path / "k")
    df = load(tmp_path / "k")
    # every trial reported each of its 6 slices exactly once: nothing lost, nothing re-run
    assert sorted(df.groupby("trial_id")["training_iteration"].apply(list).tolist()) == [list(range(1, 7))] * 4
    assert set(df["accelerator"]) <= {"A100", "T4"}


def test_calibrate_cluster_command_writes_one_table(cluster, tmp_path):
    import pandas as pd

    path = _space(tmp_path, "cal", resources="{cpu: 1, gpu: 1}", batch_sizes="16, 64", lrs="[0.1]")
    out = subprocess.run([*TUNE_LIP, "calibrate", str(path), "--cluster", "--address", cluster.address,
                          "--warmup", "1", "--steps", "2", "--types", "A100,T4", "--timeout", "240",
                          "--out", str(tmp_path / "cal.parquet")],
                         env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "cal.parquet")
    assert sorted(zip(table["accelerator"], table["batch_size"])) == [("A100", 16), ("A100", 64), ("T4", 16), ("T4", 64)]

def test_calibrating_a_type_without_a_node_times_out_with_a_clear_error(cluster):
    """A named type with no node waits for the autoscaler; --timeout bounds the wait."""
    from tune_lip.cluster.calibrate import calibrate_cluster
    from tune_lip.errors import UserError

    config = {"model": {"name": "aol_mlp", "width": 64, "depth": 2},
              "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 64, "num_test": 16}}
    with pytest.raises(UserError) as err:
        calibrate_cluster([config], warmup_steps=1, timed_steps=1, types=["H100"], timeout_s=3)
    assert "H100" in err.value.problem and err.value.fix

def test_a_type_no_node_has_is_refused_before_any_trial_launches(cluster, tmp_path):
    """Ray would leave trials pinned to H100 PENDING for ever on this cluster (no such node, no
    autoscaler to add one): the search refuses in one line naming what was asked and what the
    cluster has, and writes nothing."""
    from tune_lip.errors import UserError

    spec = load_spec(_space(tmp_path, "h100", resources="{cpu: 1, gpu: 1, accelerator: H100}"))
    with pytest.raises(UserError) as err:
        run_search(spec, name="h100", storage_path=tmp_path / "res", address="auto", verbose=0)
    line = err.value.line()
    assert "GPU 1 on H100" in line and "(A100)" in line and "(T4)" in line and "--resources" in line
    assert not (tmp_path / "res").exists()


def test_losing_a_node_mid_search_resumes_its_trials_elsewhere(cluster, tmp_path):
    """The T4 node dies once a trial there has checkpointed: its trials finish on the A100
    from their last checkpoint; trials already finished keep their results. (Runs last: it
    removes the T4 node, then adds a new one.)"""
    import ray
    _wait_until_idle()   # an earlier test's actors still holding the T4 node would leave it unused
    free = ray.available_resources()
    killer = NodeKiller(cluster, "T4", after=2)
    path = _space(tmp_path, "lost", resources="{cpu: 1, gpu: 1, accelerator: [A100, T4]}",
                  budget="{steps: 240}", reports=6, lrs="[0.02, 0.05, 0.1, 0.2]", extra="max_failures: 3")
    try:
        grid, df = _search(path, tmp_path, extra_callbacks=[killer])
    finally:
        cluster.nodes_by_type["T4"] = cluster.add_node(num_cpus=2, num_gpus=1, resources={"accelerator_type:T4": 1},
                                                       labels={"ray.io/accelerator-type": "T4"})
    assert killer.removed_at is not None and killer.victims, f"no trial ran on the T4 node: {_where(df)}, free at start: {free}"
    assert all(r.metrics["training_iteration"] == 6 for r in grid)
    where = _where(df)
    for victim in killer.victims:
        assert where[victim] == ["T4", "A100"]
        reports = df[df["trial_id"] == victim].sort_values("training_iteration")
        # restored from the checkpoint: progress never went back to step 0
        assert reports["steps"].is_monotonic_increasing and reports["steps"].iloc[-1] == 240
        restarted = reports[reports["accelerator"] == "A100"].iloc[0]
        assert restarted["training_iteration"] > 1
    assert df.groupby("trial_id")["training_iteration"].max().tolist() == [6] * 4

