"""`ScalingTrainable`: the Ray Tune adapter around `tune_lip.studies.scaling.ScalingLoop` (LR rules, SVAG, NGD).

Each ``step()`` trains one of ``config["reports"]`` equal slices of the trial's budget (which
SVAG has already multiplied by l), evaluates, and returns the DESIGN.md metrics (``train_loss``,
``test_acc``, ``lr`` (the rule's LR at the trial's batch size), ``lr_now`` (the step size of
the last step: scheduled, /l for SVAG), ``weight_norm``, ``feature_rank``, ``sde_time``, and ``grad_norm_sq`` /
``grad_noise`` / ``noise_scale`` when ``grad_stats_every`` > 0); the last slice (or a
divergence) returns ``done=True``. Checkpoints hold the loop's full state, so a restored trial
continues bit-identically; ``reset_config`` rebuilds the loop so Tune can reuse the actor.

Example (on a running Ray):
    >>> from ray import tune
    >>> tuner = tune.Tuner(ScalingTrainable, param_space={
    ...     "dataset": {"name": "digits", "batch_size": tune.grid_search([16, 64, 256])},
    ...     "model": {"name": "preresnet32", "norm": "gn", "width": 0.25}, "drop_last": True,
    ...     "optimizer": {"name": "sgd", "lr_rule": "linear", "eta": 0.8, "base_batch": 128},
    ...     "budget": {"epochs": 4}, "reports": 8})
"""

from __future__ import annotations

from tune_lip.trainables.base import StudyTrainable

__all__ = ["ScalingTrainable"]


class ScalingTrainable(StudyTrainable):
    """Trains one scaling-rules trial in ``reports`` slices; see the module docstring."""

    study = "scaling"   # its loop: tune_lip.studies.scaling
