"""`NQMTrainable`: the Ray Tune adapter around `tune_lip.nqm.NQMLoop` (the noisy quadratic model).

Each ``step()`` trains one of ``config["reports"]`` equal slices of the trial's step budget and
returns the DESIGN.md metrics (``steps``, ``examples``, ``lr``, ``train_loss``, ``test_loss``,
``diverged``); the last slice (or a divergence) returns ``done=True``. Checkpoints hold the
loop's full state (moments, or chains and their RNG), so a restored trial continues exactly.
``reset_config`` rebuilds the loop in place, so Tune can reuse the actor.

Example (on a running Ray):
    >>> from ray import tune
    >>> tuner = tune.Tuner(NQMTrainable, param_space={
    ...     "dataset": {"batch_size": tune.grid_search([1, 16, 256])},
    ...     "optimizer": {"name": "sgd", "lr": tune.loguniform(1e-3, 3.0)},
    ...     "budget": {"examples": 16384}, "reports": 4})
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

from ray import tune

from tune_lip.nqm import NQMConfig, NQMLoop

__all__ = ["NQMTrainable"]

STATE_FILE = "loop_state.pkl"
CONFIG_FILE = "config.json"


class NQMTrainable(tune.Trainable):
    """Trains one NQM trial in ``reports`` slices; see the module docstring."""

    def setup(self, config: dict[str, Any]) -> None:
        self.loop = NQMLoop(NQMConfig.from_dict(config))
        self.reports_done = 0

    def step(self) -> dict[str, Any]:
        loop, reports = self.loop, self.loop.cfg.reports
        k = self.reports_done + 1
        target = math.ceil(loop.total_steps * k / reports)
        metrics = loop.train_for(target - loop.steps)
        metrics.update(loop.evaluate())
        self.reports_done = k
        metrics["done"] = loop.finished or k >= reports
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        path = Path(checkpoint_dir)
        # numpy arrays and the chains' RNG state: plain pickle, no torch needed.
        with open(path / STATE_FILE, "wb") as f:
            pickle.dump({"loop": self.loop.state_dict(), "reports_done": self.reports_done}, f)
        (path / CONFIG_FILE).write_text(json.dumps(self.loop.cfg.to_dict(), indent=2))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        with open(Path(checkpoint_dir) / STATE_FILE, "rb") as f:
            state = pickle.load(f)
        self.loop.load_state_dict(state["loop"])
        self.reports_done = int(state["reports_done"])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)
        self.config = new_config
        return True
