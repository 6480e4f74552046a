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

from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from tune_lip.tune.spec import get_in

__all__ = ["GroupedASHAScheduler"]


class _ProtectedBracket(_Bracket):
    """Ray's bracket whose cutoff never falls on one of the best ``protect`` recorded results."""

    def __init__(self, *args: Any, protect: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protect = protect

    def cutoff(self, recorded: dict[str, float]) -> Any:
        cutoff = super().cutoff(recorded)
        if self.protect <= 0 or cutoff is None:
            return cutoff
        if len(recorded) < self.protect:
            return None              # fewer than K others at this rung: the trial is in the top K
        kth_best = np.sort(np.asarray(list(recorded.values()), dtype=float))[::-1][self.protect - 1]
        return min(cutoff, kth_best)  # ASHA (sign-adjusted rewards: higher is better)


class GroupedASHAScheduler(ASHAScheduler):
    """Ray's ASHA with one set of brackets per group; ``group_keys`` are dotted config paths."""

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

    def debug_string(self) -> str:
        lines = [f"Using grouped AsyncHyperBand: num_stopped={self._num_stopped}"]
        for group, brackets in self._groups.items():
            lines += [f"{dict(zip(self._group_keys, group))}: {b.debug_str()}" for b in brackets]
        return "\n".join(lines)
