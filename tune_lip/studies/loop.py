"""The loop skeleton every study shares: budget, progress counters, report slices, divergence, checkpoints.

A study module is its recipe -- model, data, optimizer, schedule, one training step, what it
reports -- written as small hooks on one of two classes here; the bookkeeping around them
lives once, in this file:

- `BudgetedLoop`: the budget (``total_steps``) and the progress counters every loop has
  (``steps``, ``diverged``, ``examples``, ``fraction``, ``finished``), and the checkpoint of
  those counters plus the resolved config; a study adds its own state through
  ``extra_state()`` / ``load_extra_state()``. The NQM (`tune_lip.studies.nqm`) uses only this:
  it has no torch model and advances its exact moments many steps at a time.
- `ModelLoop`: a `BudgetedLoop` that trains a torch model step by step. ``train_for(steps)``
  runs the study's ``train_step`` hook (which returns the step's detached mean loss and its
  number of correct predictions) for the steps the budget still allows -- none once diverged --,
  runs ``measure()`` after every ``measure_every``-th step off the clock, times the slice
  (training only: measurements and evaluation are not charged to the budget), syncs with the
  host once, marks the trial diverged when the slice's mean loss is not finite (or the
  study's ``weights_finite()`` says so), and reports the DESIGN.md metrics in a fixed order:
  ``steps``, ``lr``, the other progress counters, ``lr_now``, ``diverged``, ``train_loss``,
  ``train_acc``, then the study's ``slice_metrics``. ``evaluate()`` counts evaluations,
  reports the study's ``eval_metrics`` on the validation split, prefixed ``val_`` (or its
  ``diverged_eval_metrics``, finite worst values, once diverged), its ``weight_metrics`` and
  ``sharpness`` at every ``sharpness.every``-th call: what searchers and schedulers see.
  ``evaluate_test()`` reports the same ``eval_metrics`` on the test set, prefixed ``test_``;
  the Trainable calls it once, at a trial's last report, so no decision ever rests on it.
  A wall-clock budget (``wall_budget`` seconds) is trained with ``train_for_seconds``.

Divergence: a NaN or inf ends a trial cleanly, as ``diverged=True`` with the finite
`DIVERGED_LOSS` (and zero accuracies) in place of every non-finite number, since Ray's ASHA
and Optuna mishandle NaN silently (DESIGN.md, "Metric vocabulary").

Example:
    >>> from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop
    >>> cfg = LipschitzConfig.from_dict({"dataset": {"name": "synthetic", "batch_size": 32},
    ...     "model": {"name": "aol_mlp", "width": 32, "depth": 2}, "budget": {"steps": 4}, "reports": 2})
    >>> loop = LipschitzLoop(cfg)
    >>> list(loop.train_for(2))[:6]
    ['steps', 'lr', 'examples', 'wall_seconds', 'lr_now', 'diverged']
    >>> loop.train_for(10)["steps"], loop.finished   # the budget ends the slice early
    (4, True)
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import Tensor

from tune_lip.data.datasets import ImageData
from tune_lip.studies.budget import cooldown_steps

__all__ = ["DIVERGED_LOSS", "BudgetedLoop", "ModelLoop", "finite_or_worst", "train_to_branch"]

# A diverged trial reports this finite loss (and zero accuracies): Ray's ASHA and Optuna
# silently mishandle NaN, so the trial must end with a finite worst value and diverged=True.
DIVERGED_LOSS = 1e6


def finite_or_worst(value: float) -> float:
    """``value`` if finite, else `DIVERGED_LOSS` (what a scheduler or searcher may see)."""
    return value if math.isfinite(value) else DIVERGED_LOSS


class BudgetedLoop:
    """A trial's budget and progress counters, and their checkpoint; see the module docstring.

    cfg: the study's typed config (``to_dict()`` is saved with every checkpoint).
    total_steps: optimizer steps the budget buys; None for a wall-clock budget, which then
    gives ``wall_budget`` (seconds) and is tracked by `ModelLoop`'s ``wall_seconds``.
    examples_per_step: examples one step draws (the batch size; SVAG draws 2B, NGD its subset).
    """

    def __init__(self, cfg: Any, *, total_steps: int | None, examples_per_step: int,
                 wall_budget: float | None = None) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.wall_budget = wall_budget
        self.examples_per_step = examples_per_step
        self.steps = 0
        self.wall_seconds = 0.0     # training time only; evaluation is not charged to the budget
        self.diverged = False

    @property
    def examples(self) -> int:
        return self.steps * self.examples_per_step

    @property
    def fraction(self) -> float:
        """Fraction of the budget done, in [0, 1]."""
        if self.total_steps is not None:
            return min(self.steps / self.total_steps, 1.0)
        assert self.wall_budget is not None
        return min(self.wall_seconds / self.wall_budget, 1.0)

    @property
    def finished(self) -> bool:
        return self.diverged or self.fraction >= 1.0

    def steps_left(self, steps: int) -> int:
        """How many of ``steps`` more steps the budget allows: none once diverged."""
        if self.diverged:
            return 0
        if self.total_steps is None:
            return max(steps, 0)
        return max(0, min(steps, self.total_steps - self.steps))

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        """The study's own checkpoint state (model, optimizer, generators, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` saved (``state`` is the whole checkpoint)."""

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "steps": self.steps, "diverged": self.diverged,
                **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_extra_state(state)
        self.steps = int(state["steps"])
        self.diverged = bool(state["diverged"])


class ModelLoop(BudgetedLoop):
    """A `BudgetedLoop` that trains ``model`` with ``optimizer`` step by step; see the module docstring.

    A study sets ``model``, ``optimizer``, ``device``, ``data`` (an `ImageData` with its
    validation split, `tune_lip.studies.config.training_data`), ``lr`` (the trial's LR, reported
    as ``lr``) and implements `train_step`, `eval_metrics`, `diverged_eval_metrics` and, when it
    measures sharpness, `measure_sharpness`; the other hooks default to nothing.
    """

    data: ImageData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    lr: float
    measure_every: int = 0      # steps between `measure` calls; 0 = never

    def __init__(self, cfg: Any, *, total_steps: int | None, examples_per_step: int,
                 wall_budget: float | None = None) -> None:
        super().__init__(cfg, total_steps=total_steps, examples_per_step=examples_per_step,
                         wall_budget=wall_budget)
        self.evaluations = 0        # evaluate() calls so far: sharpness is due every k-th one

    # ------------------------------------------------------------------ the study's hooks
    def train_step(self, last: bool) -> tuple[Tensor, Tensor]:
        """Take step ``self.steps`` (``last``: the slice's last); (detached mean loss, correct count)."""
        raise NotImplementedError

    def start_slice(self) -> None:
        """Reset the study's per-slice accumulators (before a slice's first step)."""

    def measure(self) -> None:
        """A measurement after every ``measure_every``-th step, not charged to the training time."""

    def weights_finite(self) -> bool:
        """False marks the trial diverged even when its loss is finite (checked after a slice)."""
        return True

    def slice_metrics(self, steps: int, mean_loss: float) -> dict[str, Any]:
        """The study's own metrics of the slice just trained (``steps`` steps at ``mean_loss``)."""
        return {}

    def lr_now(self) -> float:
        """The LR of the last step taken (before the first step, the first step's)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def eval_metrics(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """The study's metrics of the model on one labelled split, unprefixed (``loss``, ``acc``, ...):
        uint8 images (N, H, W, C), int64 labels (N,). `evaluate` prefixes them ``val_``,
        `evaluate_test` ``test_``."""
        raise NotImplementedError

    def diverged_eval_metrics(self) -> dict[str, float]:
        """`eval_metrics`' keys with finite worst values: what a diverged trial reports."""
        raise NotImplementedError

    def weight_metrics(self) -> dict[str, float]:
        """Metrics of the weights alone (e.g. ``weight_norm``), reported with every `evaluate`."""
        return {}

    def diverged_weight_metrics(self) -> dict[str, float]:
        """`weight_metrics`' keys with finite worst values."""
        return {}

    def measure_sharpness(self) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------ progress
    def progress(self) -> dict[str, float]:
        """The progress counters, in report order (``steps`` first)."""
        return {"steps": self.steps, "examples": self.examples, "wall_seconds": self.wall_seconds}

    # ------------------------------------------------------------------ training
    def train_for(self, steps: int) -> dict[str, Any]:
        """Train ``steps`` steps (fewer at the budget's end, none once diverged); the slice's metrics.

        train_loss / train_acc are means over the slice's steps; ``lr`` is the trial's LR and
        ``lr_now`` the last step's (see each study). One host sync, at the end.
        """
        self.model.train()
        n = self.steps_left(steps)
        self.start_slice()
        loss_sum = torch.zeros((), device=self.device)
        correct_sum = torch.zeros((), device=self.device, dtype=torch.long)
        start = time.perf_counter()
        for i in range(n):
            loss, hits = self.train_step(last=i == n - 1)
            loss_sum += loss
            correct_sum += hits
            self.steps += 1
            if self.measure_every and self.steps % self.measure_every == 0:
                clock = time.perf_counter()
                self.measure()
                start += time.perf_counter() - clock    # not charged to the training time
        mean_loss = (loss_sum / max(n, 1)).item()                      # host sync: once per slice
        self.wall_seconds += time.perf_counter() - start
        if not math.isfinite(mean_loss) or not self.weights_finite():
            self.diverged = True
        # steps and lr first: Ray's live progress table shows a trial's first four numeric metrics.
        out: dict[str, Any] = {"steps": self.steps, "lr": self.lr, **self.progress()}
        out.update(lr_now=self.lr_now(), diverged=self.diverged,
                   train_loss=DIVERGED_LOSS if self.diverged else mean_loss,
                   train_acc=0.0 if self.diverged else correct_sum.item() / max(n * self.examples_per_step, 1))
        extra = self.slice_metrics(n, mean_loss)
        if self.diverged:   # finite worst values: Ray's schedulers and searchers mishandle NaN
            extra = {k: finite_or_worst(v) if isinstance(v, float) else v for k, v in extra.items()}
        out.update(extra)
        return out

    def train_for_seconds(self, seconds: float, *, chunk: int = 10) -> dict[str, Any]:
        """Train until ``seconds`` more wall-clock training time has passed (wall budgets)."""
        target = min(self.wall_seconds + seconds, self.wall_budget or math.inf)
        out = self.train_for(0)
        while self.wall_seconds < target and not self.diverged:
            out = self.train_for(chunk)
        return out

    # ------------------------------------------------------------------ evaluation
    def _split_metrics(self, split: str) -> dict[str, float]:
        """The study's `eval_metrics` on split ``val`` or ``test``, prefixed with its name."""
        if self.diverged:
            out = self.diverged_eval_metrics()
        else:
            out = self.eval_metrics(getattr(self.data, f"{split}_images"), getattr(self.data, f"{split}_labels"))
        return {f"{split}_{name}": value for name, value in out.items()}

    def evaluate(self) -> dict[str, float]:
        """The study's metrics on the validation split (``val_*``; none without a split), its
        weight metrics, and ``sharpness`` at every ``sharpness.every``-th call."""
        self.evaluations += 1
        sharpness_due = self.cfg.sharpness.due(self.evaluations)
        out = self._split_metrics("val") if self.data.val_labels is not None else {}
        out.update(self.diverged_weight_metrics() if self.diverged else self.weight_metrics())
        if sharpness_due:
            out["sharpness"] = DIVERGED_LOSS if self.diverged else finite_or_worst(self.measure_sharpness())
        return out

    def evaluate_test(self) -> dict[str, float]:
        """The study's metrics on the test set (``test_*``). The Trainable calls it once, at a
        trial's last report (its budget done, or diverged): searchers and schedulers decide on
        validation metrics only."""
        return self._split_metrics("test")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "steps": self.steps,
                "wall_seconds": self.wall_seconds, "diverged": self.diverged,
                "evaluations": self.evaluations, **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        super().load_state_dict(state)
        self.wall_seconds = float(state["wall_seconds"])
        self.evaluations = int(state["evaluations"])


# The name the image loops' shared checkpoint state had before issue 12 (then in
# tune_lip.studies.lipschitz, which still re-exports it); it is now ModelLoop's.
LoopCheckpoint = ModelLoop


# Counters that keep counting through a forked cooldown: its compute is real and charged.
_CUMULATIVE = ("wall_seconds", "evaluations")


def train_to_branch(loop: Any, horizon: int, *, final: bool) -> dict[str, Any]:
    """Warmup-stable-decay branching: the annealed model of budget ``horizon``, forked from ``loop``.

    ``loop`` (any loop with ``cfg.schedule`` a wsd `ScheduleConfig`, ``total_steps``, ``steps``,
    ``train_for``, ``evaluate``, ``state_dict``/``load_state_dict``) trains its main line at the
    stable LR up to ``horizon - c`` (c = `tune_lip.studies.budget.cooldown_steps` of ``horizon``),
    then forks: with ``total_steps`` set to ``horizon`` it trains the c cooldown steps (the LR
    decays to about 0, exactly as a fresh run of budget ``horizon`` would) and evaluates. Unless
    ``final``, it then restores the pre-cooldown state in memory and the budget, so the main line
    continues bit-identically as if it had never forked; ``wall_seconds`` and ``evaluations`` keep
    the fork's count. ``final`` (``horizon`` is the whole budget): the cooldown is the run's own end.

    Returns the slice's train metrics of the cooldown and ``evaluate()``'s, with ``steps`` =
    ``horizon`` (the annealed model's budget), ``annealed=True``, ``stable_steps`` (the main
    line's steps at the fork), ``cooldown_steps`` (the fork's steps) and ``charged`` (steps
    trained by this call, main line and cooldown together).
    """
    start = loop.steps
    cool = cooldown_steps(horizon, loop.cfg.schedule.cooldown)
    loop.train_for(max(horizon - cool - loop.steps, 0))
    stable = loop.steps
    total = loop.total_steps
    saved = None if final else copy.deepcopy(loop.state_dict())
    loop.total_steps = horizon
    metrics = loop.train_for(horizon - loop.steps)
    metrics.update(loop.evaluate())
    forked = loop.steps - stable
    if saved is not None:
        kept = {name: getattr(loop, name) for name in _CUMULATIVE if hasattr(loop, name)}
        loop.load_state_dict(saved)
        loop.total_steps = total
        for name, value in kept.items():
            setattr(loop, name, value)
    metrics.update(annealed=True, stable_steps=stable, cooldown_steps=forked,
                   charged=stable - start + forked)
    return metrics
