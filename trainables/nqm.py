"""`NQMTrainable`: the Ray Tune adapter around `tune_lip.studies.nqm.NQMLoop` (the noisy quadratic model).

Each ``step()`` trains one of ``config["reports"]`` equal slices of the trial's step budget and
returns the DESIGN.md metrics (``steps``, ``examples``, ``lr`` (the configured peak), ``lr_now``
(the scheduled LR of the last step), ``train_loss``, ``test_loss``, ``diverged``); the last slice
(or a divergence) returns ``done=True``. Checkpoints hold the loop's full state (exact moments for
``sgd`` and ``precond_sgd``, or Adam's chains and their RNG), so a restored trial continues exactly.
``reset_config`` rebuilds the loop in place, so Tune can reuse the actor.

Example (on a running Ray):
    >>> from ray import tune
    >>> tuner = tune.Tuner(NQMTrainable, param_space={
    ...     "dataset": {"batch_size": tune.grid_search([1, 16, 256])},
    ...     "optimizer": {"name": "sgd", "lr": tune.loguniform(1e-3, 3.0)},
    ...     "budget": {"examples": 16384}, "reports": 4})
"""

from __future__ import annotations

from tune_lip.trainables.base import StudyTrainable

__all__ = ["NQMTrainable"]

class NQMTrainable(StudyTrainable):
    """Trains one NQM trial in ``reports`` slices; see the module docstring."""

    study = "nqm"   # its loop: tune_lip.studies.nqm
