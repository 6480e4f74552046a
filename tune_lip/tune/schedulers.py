"""ASHA that compares trials only within their group (e.g. within one batch size).

A scaling-law search asks for the best LR *at each* batch size. One ASHA over all trials
compares a batch-256 trial with a batch-16 trial at the same progress; under an epoch budget
the large batch has taken 16x fewer steps and always looks worse, so ASHA stops every
large-batch trial and the search never learns the large-batch optimum. `GroupedASHAScheduler`
keeps separate ASHA brackets per value of the group keys (the searcher's ``per`` keys), so
each batch size's trials compete only with each other. Everything else is Ray's ASHA.

``protect=K`` leaves the analysis its data: at every rung, a trial among the best K of its
group is never stopped (it stops only when K trials of its group did better there, and it is
below ASHA's cutoff too). So the first K trials to reach a rung always go on, and at least K
trials of every group (of at least K) run their whole budget: a scaling fit needs
``min_trials`` full-budget trials at every batch size. Plain ASHA with reduction factor 3 and
grace 0.1 lets about 1 in 3² of a group's trials finish.

Example:
    >>> s = GroupedASHAScheduler(group_keys=["dataset.batch_size"], time_attr="steps",
    ...                          metric="acc", mode="max", max_t=100, grace_period=10, protect=4)
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from tune_lip.tune.spec import get_in

__all__ = ["GroupedASHAScheduler", "QueueFIFOScheduler"]

logger = logging.getLogger(__name__)


class _ProtectedBracket(_Bracket):
    """Ray's bracket whose cutoff never falls on one of the best ``protect`` recorded results.

    Each rung also keeps its recorded rewards sorted (beside Ray's ``{trial_id: reward}``), so a
    result at a rung costs a binary search and an insertion, not Ray's percentile over every
    trial recorded there: a search's per-result cost must not grow with its number of trials.
    The cutoff is the same number (numpy's linear percentile, NaN rewards ignored).
    Milestones are rounded to 12 decimals, as `tune_lip.tune.spec_sections.branch_fractions`: in
    budget fractions Ray's 0.1 * 3**2 is 0.9000000000000001, which a report at 0.9 would miss.
    """

    def __init__(self, *args: Any, protect: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rungs = [(round(milestone, 12), recorded) for milestone, recorded in self._rungs]
        self.protect = protect
        self._sorted: list[list[float]] = [[] for _ in self._rungs]   # non-NaN rewards, ascending
        self._nans = [0] * len(self._rungs)

    def _rung_sorted(self, k: int) -> list[float]:
        """Rung k's rewards, sorted; rebuilt only if they went out of step with Ray's dict (a
        bracket pickled before they existed)."""
        if getattr(self, "_sorted", None) is None:
            self._sorted, self._nans = [[] for _ in self._rungs], [-1] * len(self._rungs)
        recorded = self._rungs[k][1]
        if len(self._sorted[k]) + self._nans[k] != len(recorded):
            values = [float(v) for v in recorded.values()]
            self._sorted[k] = sorted(v for v in values if v == v)
            self._nans[k] = len(values) - len(self._sorted[k])
        return self._sorted[k]

    def _cutoff_at(self, k: int) -> Any:
        recorded = self._rungs[k][1]
        if not recorded:
            return None
        values = self._rung_sorted(k)
        if not values:
            return float("nan")   # as np.nanpercentile of NaNs only
        cutoff = _percentile(values, (1 - 1 / self.rf) * 100)
        if self.protect <= 0:
            return cutoff
        if len(recorded) < self.protect:
            return None           # fewer than K others at this rung: the trial is in the top K
        kth_best = values[-self.protect] if len(values) >= self.protect else values[0]
        return min(cutoff, kth_best)  # ASHA (sign-adjusted rewards: higher is better)

    def cutoff(self, recorded: dict[str, float]) -> Any:
        for k, (_, rung) in enumerate(self._rungs):
            if rung is recorded:
                return self._cutoff_at(k)
        cutoff = super().cutoff(recorded)   # a dict that is no rung of this bracket
        if self.protect <= 0 or cutoff is None:
            return cutoff
        if len(recorded) < self.protect:
            return None
        return min(cutoff, np.sort(np.asarray(list(recorded.values()), dtype=float))[::-1][self.protect - 1])

    def on_result(self, trial: Any, cur_iter: float, cur_rew: float | None) -> str:
        """Ray's `_Bracket.on_result`, with the rung's sorted rewards kept up to date."""
        action = TrialScheduler.CONTINUE
        for k, (milestone, recorded) in enumerate(self._rungs):
            if cur_iter >= milestone and trial.trial_id in recorded and not self._stop_last_trials:
                break   # decided at this rung already
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            cutoff = self._cutoff_at(k)
            if cutoff is not None and cur_rew is not None and cur_rew < cutoff:
                action = TrialScheduler.STOP
            if cur_rew is None:
                logger.warning("Reward attribute is None! Consider reporting using a different field.")
            else:
                self._rung_sorted(k)   # in step with ``recorded`` before this reward joins both
                recorded[trial.trial_id] = cur_rew
                if cur_rew == cur_rew:
                    bisect.insort(self._sorted[k], float(cur_rew))
                else:
                    self._nans[k] += 1
            break
        return action


def _percentile(ascending: list[float], q: float) -> float:
    """numpy's default (linear) percentile of sorted values, in O(1)."""
    position = q / 100 * (len(ascending) - 1)
    i = min(int(math.floor(position)), len(ascending) - 1)
    if i + 1 >= len(ascending):
        return ascending[i]
    a, b, t = ascending[i], ascending[i + 1], position - i
    # numpy's _lerp: the form that is exact at t = 0 and t = 1
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


class _TrialQueue:
    """Ray's FIFO choice of the next trial to start, looking only at unfinished trials.

    Ray's `FIFOScheduler.choose_trial_to_run` scans every trial of the experiment, finished ones
    included, at every step of Tune's loop: at 2,000 trials that scan was the largest cost that
    grew with the search (bench/perf_search.py, P8). This keeps the unfinished trials in the
    order Tune added them (a trial Tune requeues after a failure is added again, at the end, as
    Tune moves it in its own list) and drops finished ones as it meets them, so the choice is
    the same -- the first PENDING trial, else the first PAUSED -- at O(unfinished) per step.
    """

    def _trial_queue(self) -> dict[str, Any]:
        queue = self.__dict__.get("_queue")
        if queue is None:   # (a scheduler pickled before the queue, or unpickled without it)
            queue = self.__dict__["_queue"] = {}
        return queue

    def _enqueue(self, trial: Any) -> None:
        queue = self._trial_queue()
        queue.pop(trial.trial_id, None)
        queue[trial.trial_id] = trial

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        queue = self._trial_queue()
        paused = None
        for trial_id, trial in list(queue.items()):
            status = trial.status
            if status == "PENDING":
                return trial
            if status in ("TERMINATED", "ERROR"):
                del queue[trial_id]
            elif status == "PAUSED" and paused is None:
                paused = trial
        return paused

    def __getstate__(self) -> dict[str, Any]:   # Tune pickles the scheduler with the Tuner: no trials in it
        return {k: v for k, v in self.__dict__.items() if k != "_queue"}


class QueueFIFOScheduler(_TrialQueue, FIFOScheduler):
    """Ray's FIFOScheduler (every trial runs its whole budget) whose per-step choice of the next
    trial does not grow with the number of finished trials; see `_TrialQueue`."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self._enqueue(trial)


class GroupedASHAScheduler(_TrialQueue, ASHAScheduler):
    """Ray's ASHA with one set of brackets per group; ``group_keys`` are dotted config paths.

    With no group keys and ``protect=0`` it makes Ray's ASHA decisions, at a cost per result and
    per step that does not grow with the number of trials (`_ProtectedBracket`, `_TrialQueue`).
    """

    def __init__(self, *, group_keys: Sequence[str], time_attr: str = "training_iteration",
                 metric: str | None = None, mode: str | None = None, max_t: float = 100,
                 grace_period: float = 1, reduction_factor: float = 4, brackets: int = 1,
                 protect: int = 0) -> None:
        # Ray annotates max_t and grace_period as int, but its brackets work in any monotone units
        # (here steps, examples or reference seconds, possibly fractional).
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t,  # type: ignore[arg-type]
                         grace_period=grace_period,  # type: ignore[arg-type]
                         reduction_factor=reduction_factor, brackets=brackets)
        self._group_keys = list(group_keys)
        self._bracket_args = (grace_period, max_t, reduction_factor)
        self._num_brackets = brackets
        self._protect = protect
        self._groups: dict[tuple[Any, ...], list[_Bracket]] = {}

    def _group(self, config: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(repr(get_in(config, key)) for key in self._group_keys)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)  # validates metric/mode
        group = self._group(trial.config)
        if group not in self._groups:
            grace, max_t, rf = self._bracket_args
            self._groups[group] = [_ProtectedBracket(grace, max_t, rf, s,  # type: ignore[arg-type]  # float units
                                                     stop_last_trials=self._stop_last_trials,
                                                     protect=getattr(self, "_protect", 0))  # pickled before protect
                                   for s in range(self._num_brackets)]
        brackets = self._groups[group]
        # as Ray's ASHA: prefer brackets with more rungs, at random (seeded by Ray's numpy state)
        sizes = np.array([len(b._rungs) for b in brackets])
        probs = np.e ** (sizes - sizes.max())
        self._trial_info[trial.trial_id] = brackets[np.random.choice(len(brackets), p=probs / probs.sum())]
        self._enqueue(trial)

    def debug_string(self) -> str:
        lines = [f"Using grouped AsyncHyperBand: num_stopped={self._num_stopped}"]
        for group, brackets in self._groups.items():
            lines += [f"{dict(zip(self._group_keys, group))}: {b.debug_str()}" for b in brackets]
        return "\n".join(lines)
