"""`LipschitzTrainable`: the Ray Tune adapter around `tune_lip.train_loop.LipschitzLoop`.

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

import json
import math
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tune_lip.budget import lookup_step_seconds, read_calibration
from tune_lip.train_loop import LipschitzConfig, LipschitzLoop, model_key

__all__ = ["LipschitzTrainable", "make_loop"]

STATE_FILE = "loop_state.pt"
CONFIG_FILE = "config.json"


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


class LipschitzTrainable(tune.Trainable):
    """Trains one Lipschitz trial in ``reports`` slices; see the module docstring."""

    def setup(self, config: dict[str, Any]) -> None:
        self.loop = make_loop(config)
        self.reports_done = 0

    def step(self) -> dict[str, Any]:
        loop, reports = self.loop, self.loop.cfg.reports
        k = self.reports_done + 1
        if loop.total_steps is not None:
            target = math.ceil(loop.total_steps * k / reports)
            metrics = loop.train_for(target - loop.steps)
        else:  # wall-clock budget: equal slices of wall time
            assert loop.wall_budget is not None
            metrics = loop.train_for_seconds(loop.wall_budget * k / reports - loop.wall_seconds)
        metrics.update(loop.evaluate())
        self.reports_done = k
        metrics["done"] = loop.finished or k >= reports
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        path = Path(checkpoint_dir)
        torch.save({"loop": self.loop.state_dict(), "reports_done": self.reports_done}, path / STATE_FILE)
        # The resolved config travels with every checkpoint (readable without torch).
        (path / CONFIG_FILE).write_text(json.dumps(self.loop.cfg.to_dict(), indent=2))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=self.loop.device, weights_only=False)
        self.loop.load_state_dict(state["loop"])
        self.reports_done = int(state["reports_done"])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)
        self.config = new_config
        return True
