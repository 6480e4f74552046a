"""Helpers shared by the tests (the Ray-free loops, the local Ray)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TUNE_LIP = [sys.executable, "-m", "tune_lip.cli"]


def run_slices(loop: Any, slices: int, *, steps: int) -> list[dict]:
    """Train ``slices`` slices of ``steps`` steps, evaluating after each: the reports a Trainable makes.

    ``wall_seconds`` is dropped: it is the only metric that depends on the machine's speed.
    """
    out = []
    for _ in range(slices):
        metrics = loop.train_for(steps)
        metrics.update(loop.evaluate())
        metrics.pop("wall_seconds")
        out.append(metrics)
    return out


def start_local_ray() -> None:
    """The private local Ray (2 CPUs) the tests share; a no-op when Ray is up."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)


def kill_and_resume(args: list[str], experiment: Path, *, timeout_s: float = 240,
                    resume_args: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the search command ``args``, SIGKILL its process group once the experiment's second
    trial has a checkpoint (one trial done, one mid-way), then run ``resume_args`` (default
    ``args --resume``) to the end; returns that finished run."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    with open(experiment.parent / f"{experiment.name}.first.log", "w") as log:
        driver = subprocess.Popen(args, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and driver.poll() is None:
            trials = sorted(experiment.glob("*Trainable_*"))
            if len(trials) >= 2 and any(trials[1].glob("checkpoint_*")):
                break
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver (and a local Ray it started; not a cluster)
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    resumed = subprocess.run(resume_args or [*args, "--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return resumed
