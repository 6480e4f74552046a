"""`LipschitzTrainable`: the Ray Tune adapter around `tune_lip.studies.lipschitz.LipschitzLoop`.

Each ``step()`` trains one of ``config["reports"]`` equal slices of the trial's budget,
evaluates, and returns the DESIGN.md metric vocabulary; the last slice (or a divergence)
returns ``done=True``. Checkpoints hold the loop's full state, so a restored trial
continues bit-identically. ``reset_config`` rebuilds the loop in place, so Tune can
reuse the actor (and its cached data set) for the next trial.

Example (on a running Ray):
    >>> from ray import tune
    >>> tuner = tune.Tuner(LipschitzTrainable, param_space={
    ...     "dataset": {"name": "digits", "batch_size": 64},
    ...     "model": {"name": "aol_mlp", "width": 64, "depth": 3},
    ...     "optimizer": {"lr": tune.loguniform(1e-2, 1.0)}, "budget": {"epochs": 1}})
"""

from __future__ import annotations

from typing import Any

from tune_lip.studies.budget import lookup_step_seconds, read_calibration
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop, model_key
from tune_lip.trainables.base import SlicedTrainable

__all__ = ["LipschitzTrainable", "make_loop"]

def make_loop(config: dict[str, Any]) -> LipschitzLoop:
    """Build the Ray-free loop for a trial config (resolving a reference_hours step time)."""
    cfg = LipschitzConfig.from_dict(config)
    step_seconds = None
    if cfg.budget.kind == "reference_hours":
        assert cfg.budget.reference is not None
        if cfg.budget.calibration is None:
            raise ValueError("a reference_hours budget needs budget.calibration (set by the launcher)")
        table = read_calibration(cfg.budget.calibration)
        step_seconds = lookup_step_seconds(table, accelerator=cfg.budget.reference, model_key=model_key(cfg),
                                           batch_size=cfg.dataset.batch_size, where=cfg.budget.calibration)
    return LipschitzLoop(cfg, step_seconds=step_seconds)


class LipschitzTrainable(SlicedTrainable):
    """Trains one Lipschitz trial in ``reports`` slices; see the module docstring."""

    def make_loop(self, config: dict[str, Any]) -> LipschitzLoop:
        return make_loop(config)
