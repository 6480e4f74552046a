"""Training budgets and learning-rate schedules as functions of the budget fraction.

A trial's budget is *work*, not wall-clock seconds, so the same config gives the same
result on any accelerator (DESIGN.md, "Budgets"). Kinds:

- ``{steps: N}``, ``{epochs: E}``, ``{examples: X}``: exact.
- ``{reference_hours: H, reference: A100}``: steps = H*3600 / step_seconds(reference, model, batch),
  the step time read from a calibration table (``tune-lip calibrate``).
- ``{wall_hours: H}``: literal wall-clock, hardware-dependent (and labelled so in results).

Every LR schedule is a pure function of the fraction of the budget done, so it is identical
on every device.

Example:
    >>> b = parse_budget({"epochs": 2}, where="demo.yaml")
    >>> b.total_steps(batch_size=64, num_train=1437)
    44
    >>> round(lr_at(0.0, peak_lr=0.1, schedule=ScheduleConfig("one_cycle")), 4)
    0.004
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tune_lip.errors import UserError

__all__ = [
    "BUDGET_KINDS",
    "Budget",
    "ScheduleConfig",
    "SCHEDULES",
    "parse_budget",
    "lr_at",
    "momentum_at",
    "schedule_clock",
    "cooldown_steps",
    "branch_horizons",
    "SCHEDULE_INTERVALS",
    "read_calibration",
    "lookup_step_seconds",
]

BUDGET_KINDS = ("steps", "epochs", "examples", "reference_hours", "wall_hours")
# The metric ASHA measures progress in, per budget kind (monotone, in units of work).
PROGRESS_ATTR = {
    "steps": "steps",
    "epochs": "examples",
    "examples": "examples",
    "reference_hours": "reference_seconds",
    "wall_hours": "wall_seconds",
}


@dataclass(frozen=True)
class Budget:
    """How much training one trial gets.

    kind: one of BUDGET_KINDS; amount: in the kind's unit (steps, epochs, examples, hours).
    reference: accelerator type whose calibrated step time defines ``reference_hours``.
    calibration: path of the calibration table (Parquet) for ``reference_hours``.
    """

    kind: str
    amount: float
    reference: str | None = None
    calibration: str | None = None

    @property
    def progress_attr(self) -> str:
        """The reported metric that measures progress (ASHA's ``time_attr``)."""
        return PROGRESS_ATTR[self.kind]

    @property
    def hardware_dependent(self) -> bool:
        return self.kind == "wall_hours"

    def total_steps(
        self, *, batch_size: int, num_train: int, step_seconds: float | None = None
    ) -> int | None:
        """Optimizer steps this budget buys; None for ``wall_hours`` (decided while running).

        ``step_seconds`` is the reference accelerator's calibrated seconds per step, needed
        for ``reference_hours``.
        """
        if self.kind == "steps":
            return int(self.amount)
        if self.kind == "epochs":
            return max(1, int(self.amount * num_train) // batch_size)
        if self.kind == "examples":
            return max(1, int(self.amount) // batch_size)
        if self.kind == "reference_hours":
            if step_seconds is None or step_seconds <= 0:
                raise ValueError("reference_hours budget needs a calibrated step time")
            return max(1, int(self.amount * 3600.0 / step_seconds))
        return None

    def progress_max(self, *, num_train: int | None = None) -> float:
        """Largest value of ``progress_attr`` a trial reaches (ASHA's ``max_t``)."""
        if self.kind == "steps":
            return float(self.amount)
        if self.kind == "examples":
            return float(self.amount)
        if self.kind == "epochs":
            if num_train is None:
                raise ValueError("an epochs budget needs the training-set size")
            return float(self.amount * num_train)
        return float(self.amount * 3600.0)  # reference_hours and wall_hours, in seconds

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.amount}
        if self.reference is not None:
            out["reference"] = self.reference
        if self.calibration is not None:
            out["calibration"] = self.calibration
        return out


def parse_budget(raw: Any, *, where: str, key: str = "budget") -> Budget:
    """Read a budget mapping such as ``{steps: 2000}``; bad input raises UserError."""
    example = "e.g. {steps: 2000}, {epochs: 30} or {reference_hours: 1, reference: A100}"
    if not isinstance(raw, dict):
        raise UserError(where, key, f"must be a mapping, got {raw!r}", fix=example)
    kinds = [k for k in raw if k in BUDGET_KINDS]
    extra = [k for k in raw if k not in BUDGET_KINDS and k not in ("reference", "calibration")]
    if extra:
        raise UserError(where, f"{key}.{extra[0]}", "unknown budget key",
                        fix=f"use one of {', '.join(BUDGET_KINDS)} (+ reference, calibration)")
    if len(kinds) != 1:
        raise UserError(where, key, f"needs exactly one of {', '.join(BUDGET_KINDS)}, got {kinds}",
                        fix=example)
    kind = kinds[0]
    amount = raw[kind]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > 0:
        raise UserError(where, f"{key}.{kind}", f"must be a positive number, got {amount!r}")
    if kind in ("steps", "examples") and float(amount) != int(amount):
        raise UserError(where, f"{key}.{kind}", f"must be a whole number, got {amount!r}")
    reference = raw.get("reference")
    if kind == "reference_hours" and not reference:
        raise UserError(where, f"{key}.reference", "a reference_hours budget needs the reference "
                        "accelerator type", fix="add e.g. reference: A100 (or CPU)")
    if kind != "reference_hours" and reference is not None:
        raise UserError(where, f"{key}.reference", "only a reference_hours budget takes a reference",
                        fix="remove it, or use {reference_hours: H, reference: T}")
    calibration = raw.get("calibration")
    return Budget(kind=kind, amount=float(amount) if kind not in ("steps", "examples") else int(amount),
                  reference=str(reference) if reference is not None else None,
                  calibration=str(calibration) if calibration is not None else None)


# ---------------------------------------------------------------------------- schedules

SCHEDULES = ("one_cycle", "constant", "cosine", "linear", "step", "wsd")
COOLDOWN_SHAPES = ("linear", "1-sqrt")
# How often the schedule advances: every optimizer step (SU: torch's OneCycleLR stepped per batch,
# lipschitz/training/trainer.py) or once per epoch (LLC: OneCycleLR(epochs=E, steps_per_epoch=1)
# stepped after each epoch, trainer/lr_scheduler/__init__.py and trainer/train_module.py).
SCHEDULE_INTERVALS = ("step", "epoch")


def _budget_fractions(values: Any, key: str, example: str) -> tuple[float, ...]:
    """``values`` as a tuple after checking they are increasing budget fractions in (0, 1)."""
    values = tuple(values)
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0 for f in values) \
            or list(values) != sorted(set(values)):
        raise ValueError(f"schedule.{key} must be increasing budget fractions in (0, 1), "
                         f"e.g. {example}; got {list(values)}")
    return values


@dataclass(frozen=True)
class ScheduleConfig:
    """LR schedule over the budget fraction f in [0, 1].

    name: one_cycle (torch's OneCycleLR, cosine annealing, by step fraction, as the Lipschitz
    code), constant, cosine (to 0), linear (decay to 0) or step (step decay: the LR is
    multiplied by ``gamma`` at each of the ``milestones``, budget fractions in (0, 1); the SVAG
    code's LR_WD_Scheduler, utils.py, with hparams/cifar10_hparams_dict.py's x0.1 at epochs 80
    and 120 of 160 = milestones [0.5, 0.75], stepped per epoch with ``interval: epoch``).
    warmup: fraction of the budget with linear warm-up from 0 (cosine/linear/constant only).
    pct_start, div_factor, final_div_factor: OneCycleLR's knobs, same defaults as torch.
    cycle_momentum, base_momentum, max_momentum: one_cycle also cycles the optimizer's momentum
    (SGD ``momentum``, Adam ``betas[0]``) inversely to the LR, max -> base -> max, as torch's
    OneCycleLR does by default (and so both Lipschitz papers' code: it overrides the optimizer's
    configured momentum); `momentum_at`. Ignored by the other schedules.
    interval: "step" (advance every optimizer step) or "epoch" (piecewise constant over each
    epoch, as OneCycleLR(epochs=E, steps_per_epoch=1) stepped per epoch); `schedule_clock`.

    wsd (warmup-stable-decay, Hägele et al. 2024): a linear warm-up over ``warmup_steps``
    optimizer steps (absolute, the same at every horizon), the peak LR, then a decay to about 0
    (``cooldown_shape`` linear or 1-sqrt) over the last `cooldown_steps` (``cooldown`` of the
    horizon, in (0, 1)). The LR before the decay does not depend on the horizon, so a cooldown
    forked from a long run at step t is a fresh run of budget t. ``branch_at``: budget fractions
    in (0, 1) where a trial forks such a cooldown and reports the annealed model, then continues
    from the pre-cooldown state (`tune_lip.studies.loop.train_to_branch`; ASHA fills them with its
    rungs under ``scheduler.branching``). wsd needs a step count (not a wall_hours budget) and
    interval step.
    """

    name: str = "one_cycle"
    warmup: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    interval: str = "step"
    milestones: tuple[float, ...] = ()   # step: budget fractions where the LR drops, increasing
    gamma: float = 0.1                    # step: LR factor at each milestone
    warmup_steps: int = 0                 # wsd: linear warm-up, in optimizer steps
    cooldown: float = 0.2                 # wsd: fraction of the horizon the decay takes
    cooldown_shape: str = "linear"        # wsd: linear or 1-sqrt
    branch_at: tuple[float, ...] = ()     # wsd: budget fractions where a trial forks a cooldown

    def __post_init__(self) -> None:
        self._check_wsd()
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; valid schedules: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"schedule.warmup must be in [0, 1), got {self.warmup}")
        if not 0.0 < self.pct_start < 1.0:
            raise ValueError(f"schedule.pct_start must be in (0, 1), got {self.pct_start}")
        if not isinstance(self.cycle_momentum, bool):
            raise ValueError(f"schedule.cycle_momentum must be true or false, got {self.cycle_momentum!r}")
        if not 0.0 <= self.base_momentum <= self.max_momentum < 1.0:
            raise ValueError(f"schedule momenta need 0 <= base_momentum <= max_momentum < 1, "
                             f"got {self.base_momentum}, {self.max_momentum}")
        object.__setattr__(self, "milestones", _budget_fractions(self.milestones, "milestones", "[0.5, 0.75]"))
        if self.name == "step" and not self.milestones:
            raise ValueError("schedule step needs milestones: budget fractions, e.g. [0.5, 0.75]")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not self.gamma > 0:
            raise ValueError(f"schedule.gamma must be a positive number, got {self.gamma!r}")
        if self.interval not in SCHEDULE_INTERVALS:
            raise ValueError(f"schedule.interval must be one of {', '.join(SCHEDULE_INTERVALS)}, "
                             f"got {self.interval!r}")

    def _check_wsd(self) -> None:
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"schedule.warmup_steps must be a whole number >= 0, got {self.warmup_steps!r}")
        if isinstance(self.cooldown, bool) or not isinstance(self.cooldown, (int, float)) \
                or not 0.0 < self.cooldown < 1.0:
            raise ValueError(f"schedule.cooldown must be a fraction in (0, 1), e.g. 0.2; got {self.cooldown!r}")
        if self.cooldown_shape not in COOLDOWN_SHAPES:
            raise ValueError(f"schedule.cooldown_shape must be one of {', '.join(COOLDOWN_SHAPES)}, "
                             f"got {self.cooldown_shape!r}")
        object.__setattr__(self, "branch_at", _budget_fractions(self.branch_at, "branch_at", "[0.1, 0.3]"))
        if self.name != "wsd" and self.branch_at:
            raise ValueError(f"schedule.branch_at needs schedule wsd (the LR before a cooldown must not "
                             f"depend on the horizon), got schedule {self.name}")
        if self.name == "wsd" and self.interval != "step":
            raise ValueError("schedule wsd needs interval: step (its warm-up and cooldown count optimizer steps)")

    def cooldown_steps(self, horizon: int) -> int:
        """`cooldown_steps` of this schedule at ``horizon`` steps."""
        return cooldown_steps(horizon, self.cooldown)

    @classmethod
    def from_dict(cls, raw: Any) -> ScheduleConfig:
        if raw is None:
            return cls()
        if isinstance(raw, str):
            return cls(name=raw)
        if not isinstance(raw, dict):
            raise ValueError(f"schedule must be a name or a mapping, got {raw!r}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown schedule option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(known))}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _one_cycle_phase(fraction: float, schedule: ScheduleConfig, total_steps: int | None) -> tuple[bool, float]:
    """(in the warm-up phase?, progress within that phase in [0, 1]) at budget ``fraction``,
    with torch OneCycleLR's step mapping when ``total_steps`` is given (phase ends at
    ``pct_start*total - 1`` and ``total - 1``)."""
    f = min(max(fraction, 0.0), 1.0)
    if total_steps is not None:
        step = f * total_steps
        end_up = float(schedule.pct_start * total_steps) - 1.0
        end_down = float(total_steps) - 1.0
    else:
        step, end_up, end_down = f, schedule.pct_start, 1.0
    if step <= end_up:
        return True, step / end_up if end_up > 0 else 1.0
    return False, min((step - end_up) / (end_down - end_up), 1.0)


def lr_at(fraction: float, *, peak_lr: float, schedule: ScheduleConfig, total_steps: int | None = None) -> float:
    """Learning rate at budget fraction ``fraction`` (0 = first step, 1 = end of budget).

    For one_cycle with ``total_steps`` given, the fraction is mapped exactly as torch's
    OneCycleLR maps step indices (phase ends at ``pct_start*total - 1`` and ``total - 1``),
    so ``lr_at(step / total_steps, ...)`` reproduces it step for step.
    """
    f = min(max(fraction, 0.0), 1.0)
    s = schedule
    if s.name == "wsd":
        if total_steps is None:
            raise ValueError("schedule wsd needs a budget in steps, epochs or examples (not wall_hours)")
        return peak_lr * _wsd_factor(round(f * total_steps), s, total_steps)
    if s.name == "one_cycle":
        initial = peak_lr / s.div_factor
        final = initial / s.final_div_factor
        up, pct = _one_cycle_phase(f, s, total_steps)
        return _cos_anneal(initial, peak_lr, pct) if up else _cos_anneal(peak_lr, final, pct)
    if s.warmup > 0 and f < s.warmup:
        return peak_lr * f / s.warmup
    rest = (f - s.warmup) / (1.0 - s.warmup)
    if s.name == "constant":
        return peak_lr
    if s.name == "cosine":
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * rest))
    if s.name == "step":   # a milestone is passed at the first fraction that reaches it (to rounding)
        return peak_lr * s.gamma ** sum(f >= m - 1e-9 for m in s.milestones)
    return peak_lr * (1.0 - rest)  # linear


def cooldown_steps(horizon: int, cooldown: float) -> int:
    """Steps of a wsd decay at ``horizon`` steps: round(cooldown * horizon), at least 1 and at
    most ``horizon``. ``horizon - cooldown_steps`` never decreases as the horizon grows.

    Example:
        >>> [cooldown_steps(t, 0.2) for t in (1, 5, 10, 12, 100)]
        [1, 1, 2, 2, 20]
    """
    return min(max(1, round(cooldown * horizon)), max(horizon, 1))


def _wsd_factor(step: int, s: ScheduleConfig, horizon: int) -> float:
    """wsd's LR factor at optimizer step ``step`` (0-based) of a run of ``horizon`` steps: warm-up
    (step+1)/warmup_steps, then 1; over the last c = `cooldown_steps` steps it decays as
    1 - p (linear) or 1 - sqrt(p) (1-sqrt), p = j/(c+1) at the decay's j-th step (j = 1..c),
    so the last step's LR is peak/(c+1) (linear), not a wasted 0."""
    warm = min(1.0, (step + 1) / s.warmup_steps) if s.warmup_steps > 0 else 1.0
    c = cooldown_steps(horizon, s.cooldown)
    j = step - (horizon - c) + 1
    if j <= 0:
        return warm
    p = min(j, c) / (c + 1)
    decay = 1.0 - p if s.cooldown_shape == "linear" else 1.0 - math.sqrt(p)
    return min(warm, decay)


def branch_horizons(branch_at: tuple[float, ...], total_steps: int) -> list[int]:
    """The horizons (steps) a branched wsd trial reports at: ceil(f * total_steps) for each
    ``branch_at`` fraction (so a report reaches an ASHA rung at f of the budget), then
    ``total_steps``; duplicates and horizons of 0 dropped.

    Example:
        >>> branch_horizons((0.1, 0.3, 0.9), 50)
        [5, 15, 45, 50]
    """
    out: list[int] = []
    for f in branch_at:
        t = min(math.ceil(f * total_steps - 1e-9), total_steps)
        if t > 0 and (not out or t > out[-1]):
            out.append(t)
    if not out or out[-1] < total_steps:
        out.append(total_steps)
    return out


def momentum_at(fraction: float, *, schedule: ScheduleConfig, total_steps: int | None = None) -> float | None:
    """Momentum at budget ``fraction`` for a one_cycle schedule with ``cycle_momentum``: cosine
    from ``max_momentum`` down to ``base_momentum`` while the LR rises, and back up while it
    falls (torch's OneCycleLR, same step mapping as `lr_at`); None for every other schedule
    (the optimizer keeps its configured momentum).

    Example:
        >>> s = ScheduleConfig("one_cycle")
        >>> [round(momentum_at(f, schedule=s), 3) for f in (0.0, 0.3, 1.0)]
        [0.95, 0.85, 0.95]
    """
    s = schedule
    if s.name != "one_cycle" or not s.cycle_momentum:
        return None
    up, pct = _one_cycle_phase(fraction, s, total_steps)
    if up:
        return _cos_anneal(s.max_momentum, s.base_momentum, pct)
    return _cos_anneal(s.base_momentum, s.max_momentum, pct)


def schedule_clock(step: int, *, schedule: ScheduleConfig, total_steps: int | None,
                   batch_size: int, num_train: int) -> tuple[float, int | None]:
    """(fraction, ticks) to pass to `lr_at` / `momentum_at` for optimizer step ``step``.

    interval "step": (step / total_steps, total_steps). interval "epoch": the schedule ticks once
    per pass over the ``num_train`` training examples (epoch = step * batch_size // num_train,
    so a batch that straddles the boundary counts to the epoch it starts in), over
    ceil(total_steps * batch_size / num_train) epochs: (epoch / epochs, epochs). ValueError for
    an epoch interval without a step count (a wall_hours budget).

    Example:
        >>> s = ScheduleConfig("one_cycle", interval="epoch")
        >>> [schedule_clock(t, schedule=s, total_steps=10, batch_size=25, num_train=100) for t in (0, 3, 4, 9)]
        [(0.0, 3), (0.0, 3), (0.3333333333333333, 3), (0.6666666666666666, 3)]
    """
    if schedule.interval == "step":
        return (step / total_steps if total_steps else 0.0), total_steps
    if total_steps is None:
        raise ValueError("schedule.interval: epoch needs a budget in steps, epochs or examples")
    epochs = max(1, -(-total_steps * batch_size // num_train))
    return (step * batch_size // num_train) / epochs, epochs


# ---------------------------------------------------------------------------- calibration table

CALIBRATION_COLUMNS = ("accelerator", "model_key", "batch_size", "step_seconds", "steps_timed",
                       "torch_version", "measured_at")


def read_calibration(path: str | Path) -> "Any":
    """The calibration table (pandas DataFrame) written by ``tune-lip calibrate``.

    ``path`` may be local or a URI pyarrow understands (``s3://bucket/x/calibration.parquet``).
    """
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from tune_lip.analysis.results import storage_location

    where = str(path)
    fs, inner = storage_location(where)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        raise UserError(where, None, "calibration table not found",
                        fix="run `tune-lip calibrate SPACE` first, or set budget.calibration")
    try:
        df = pq.read_table(inner, filesystem=fs).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(where, None, f"not a readable Parquet calibration table ({exc.__class__.__name__})",
                        fix="re-run `tune-lip calibrate`") from None
    missing = [c for c in ("accelerator", "model_key", "batch_size", "step_seconds") if c not in df]
    if missing:
        raise UserError(where, missing[0], "column missing from the calibration table",
                        fix="re-run `tune-lip calibrate`")
    return df


def lookup_step_seconds(table: Any, *, accelerator: str, model_key: str, batch_size: int,
                        where: str = "calibration table") -> float:
    """Seconds per training step on ``accelerator`` for this model and batch size.

    Uses the most recent measurement of the exact batch size; between measured batch sizes
    it interpolates log(step time) linearly in log(batch size). Never extrapolates.
    """
    rows = table[(table["accelerator"].str.lower() == accelerator.lower()) & (table["model_key"] == model_key)]
    if rows.empty:
        have = sorted(set(table["accelerator"]))
        raise UserError(where, f"{accelerator}/{model_key}", "no calibration for this accelerator and model",
                        fix=f"run `tune-lip calibrate` on a {accelerator} node (table has: {', '.join(have) or 'nothing'})")
    exact = rows[rows["batch_size"] == batch_size]
    if not exact.empty:
        if "measured_at" in exact:
            exact = exact.sort_values("measured_at")
        return float(exact["step_seconds"].iloc[-1])
    per_b = rows.groupby("batch_size")["step_seconds"].last().sort_index()
    lower = per_b[per_b.index < batch_size]
    upper = per_b[per_b.index > batch_size]
    if lower.empty or upper.empty:
        raise UserError(where, f"{accelerator}/{model_key}/batch {batch_size}",
                        f"batch size outside the calibrated range {list(per_b.index)}",
                        fix="calibrate this batch size too (`tune-lip calibrate --batch-sizes ...`)")
    b0, t0 = lower.index[-1], lower.iloc[-1]
    b1, t1 = upper.index[0], upper.iloc[0]
    w = (math.log(batch_size) - math.log(b0)) / (math.log(b1) - math.log(b0))
    return float(math.exp((1 - w) * math.log(t0) + w * math.log(t1)))


