"""Every shipped search space through the real command line, as a user runs it.

``tune-lip search SPACE --num-samples 1 --replicates 1 --budget steps=50``, then ``tune-lip results EXP`` and
the study's ``tune-lip analyze ... EXP``, each as a subprocess: each exits 0 and no traceback
reaches the user. A space whose data set is not on this offline machine (CIFAR-10) exits 2
with one line naming the missing files and how to get them, before any Ray starts.

The searches share one loopback Ray cluster (``--address``, as on a cluster), which saves
starting a Ray per space; `test_gpu_space_on_a_cpu_only_local_ray` runs the private local Ray
path, with a GPU space refused and then run with ``--resources cpu=1``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import TUNE_LIP

from tune_lip import search_spaces
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow

SPACES = search_spaces.available()
# The analysis each study's question gets (README: "Analysis").
ANALYSIS = {"lipschitz": "lr-scaling", "nqm": "lr-scaling", "sphere": "regimes", "scaling": "scaling-rule"}
FLOW = ["--num-samples", "1", "--replicates", "1", "--budget", "steps=50"]


def _flow(space: str) -> list[str]:
    """FLOW, with the budget cut to 10 steps for the scaling study's spaces: SVAG runs l times the
    steps (its l = 32 trial alone took 2 of CI's 25 minutes at 50), and each of the others took
    30-45 s at 50; 10 (or one per report) still gives every report a step. A space with a budget
    grid runs two budgets (25 and 50 steps), so its analysis fits the joint law."""
    spec = load_spec(space)
    if spec.study == "scaling":
        return [*FLOW[:-1], f"steps={max(10, spec.reports)}"]
    if spec.budget_grid:   # a space that varies the budget keeps varying it: two budgets
        return [*FLOW[:-1], "steps=25,50"]
    return FLOW


def _needs_files(space: str) -> bool:
    """Whether the space trains on a data set that is files on disk (not bundled or generated)."""
    dataset = load_spec(space).representative_config().get("dataset") or {}
    return dataset.get("name") in ("cifar10", "cifar100", "generated")


def _wants_gpu(space: str) -> bool:
    return load_spec(space).resources.get("gpu", 0) not in (0, 0.0)


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLBACKEND": "Agg"}
    done = subprocess.run([*TUNE_LIP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    text = done.stdout + done.stderr
    # Python's own "Exception ignored in: ..." reports (a Ray worker interrupted while it is torn
    # down, relayed by Ray) are tracebacks Python itself ignored; every other one is a failure.
    tracebacks = text.count("Traceback (most recent call last)") - text.count("Exception ignored in")
    at = text.find("Traceback")
    assert tracebacks <= 0, (args, text[max(0, at - 2000):at + 3000])
    return done


@pytest.fixture(scope="module")
def shared_ray():
    """One loopback Ray (2 CPUs) that every search joins with --address."""
    from tune_lip.tune.rehearse import start_fake_cluster

    cluster = start_fake_cluster({}, head_cpus=2)
    yield cluster.address
    cluster.shutdown()


def test_every_shipped_space_is_covered():
    assert len(SPACES) >= 16 and {load_spec(s).study for s in SPACES} <= set(ANALYSIS)


@pytest.mark.parametrize("space", [s for s in SPACES if _needs_files(s)])
def test_space_without_its_data_exits_2_before_ray(space, tmp_path):
    done = _run(["search", space, *FLOW, "--storage-path", "res"], tmp_path, timeout=120)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1, line            # one line ...
    assert "cifar-10-batches-py" in line and "data_batch_1" in line    # ... naming the missing files
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in line       # ... and how to get them
    assert not (tmp_path / "res").exists()                            # nothing written


@pytest.mark.parametrize("space", [s for s in SPACES if not _needs_files(s)])
def test_space_runs_end_to_end(space, tmp_path, shared_ray):
    resources = ["--resources", "cpu=1"] if _wants_gpu(space) else []   # the cluster has no GPUs
    done = _run(["search", space, *_flow(space), *resources, "--name", "e", "--storage-path", "res",
                 "--address", shared_ray], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    experiment = tmp_path / "res" / "e"
    assert f"results: {experiment}" in done.stdout
    results = _run(["results", str(experiment)], tmp_path, timeout=120)
    assert results.returncode == 0 and "trials" in results.stdout, results.stderr
    analysis = _run(["analyze", ANALYSIS[load_spec(space).study], str(experiment)], tmp_path, timeout=300)
    assert analysis.returncode == 0, (analysis.stdout + analysis.stderr)[-4000:]
    # Plots, or (a search that varied no numeric axis: ngd_vs_sgd) the reason there is no check.
    assert "plots:" in analysis.stdout or "no check:" in analysis.stdout


def test_gpu_space_on_a_cpu_only_local_ray(tmp_path):
    """A GPU space on a machine without a GPU: refused at once (never a silent PENDING), in one
    line that says what was asked, what the machine has and the fix; the fix runs it."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    space = "cluster_rehearsal"
    assert _wants_gpu(space) and not _needs_files(space)
    refused = _run(["search", space, *FLOW, "--storage-path", "res"], tmp_path, timeout=120)
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "GPU 0.125" in line and "no GPU" in line and "--resources cpu=1" in line
    assert not (tmp_path / "res").exists()
    done = _run(["search", space, *FLOW, "--resources", "cpu=1", "--name", "cpu", "--storage-path", "res"],
                tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "2 trials" in done.stdout
