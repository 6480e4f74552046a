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

from tune_lip.studies.lipschitz import make_loop
from tune_lip.trainables.base import StudyTrainable

__all__ = ["LipschitzTrainable", "make_loop"]


class LipschitzTrainable(StudyTrainable):
    """Trains one Lipschitz trial in ``reports`` slices; see the module docstring."""

    study = "lipschitz"   # its loop: tune_lip.studies.lipschitz.make_loop
