"""`SphereTrainable`: the Ray Tune adapter around `tune_lip.studies.sphere.SphereLoop` (the three regimes).

Each ``step()`` trains one of ``config["reports"]`` equal slices of the trial's budget,
evaluates, and returns the DESIGN.md metrics (``train_loss``, ``val_acc``, ``weight_norm``,
``elr``, ``effective_grad_norm``, ``angular_update``, ``feature_rank``, ...; ``test_*`` with the
last report); the last slice (or a divergence)
returns ``done=True`` together with the trial's ``regime`` (converged / chaotic / diverged),
labelled from its whole train-loss trajectory. Checkpoints hold the loop's full state, so a
restored trial continues bit-identically. ``reset_config`` rebuilds the loop in place, so Tune
can reuse the actor (and its cached data set).

Example (on a running Ray):
    >>> from ray import tune
    >>> tuner = tune.Tuner(SphereTrainable, param_space={
    ...     "dataset": {"name": "digits", "batch_size": 64},
    ...     "model": {"name": "convnet_si", "width": 8},
    ...     "optimizer": {"mode": "sphere", "elr": tune.loguniform(1e-5, 1.0)},
    ...     "budget": {"steps": 400}, "reports": 20})
"""

from __future__ import annotations

from tune_lip.trainables.base import StudyTrainable

__all__ = ["SphereTrainable"]

class SphereTrainable(StudyTrainable):
    """Trains one sphere trial in ``reports`` slices; see the module docstring."""

    study = "sphere"   # its loop: tune_lip.studies.sphere (which labels the regime at the end)
