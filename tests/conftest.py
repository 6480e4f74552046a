"""Shared fixtures. Ray runs only on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), no dashboard."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import start_local_ray  # noqa: E402

# The tests' tensors are tiny: OpenMP threads fighting over 2 cores only slow them down.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray (2 CPUs) for every test that needs it.

    A test module that needs another Ray (tests/test_cluster.py: a fake multi-node cluster)
    shuts it down and calls `start_local_ray` again when it is done.
    """
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()
