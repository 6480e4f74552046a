"""Helpers shared by the tests (the Ray-free loops, the local Ray)."""

from __future__ import annotations

from typing import Any


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
