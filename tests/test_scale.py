"""Per-event cost of the search machinery stays flat as trials accumulate (issue 15, P8).

No clocks: each test counts the work an event does (values read, trials looked at, entries
kept) after a few thousand fabricated trials, where an O(trials)-per-event implementation
would show thousands.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from tune_lip.tune.pending import PendingTimeout
from tune_lip.tune.schedulers import GroupedASHAScheduler, QueueFIFOScheduler, _percentile
from tune_lip.tune.searchers import GroupedLineSearch
from tune_lip.tune.spec import Grid, LogUniform


class _CountingDict(dict):
    """A rung's ``{trial_id: reward}`` that counts how often all its values are read."""

    reads = 0

    def values(self) -> Any:
        _CountingDict.reads += 1
        return super().values()

    def items(self) -> Any:
        _CountingDict.reads += 1
        return super().items()

    def __iter__(self) -> Any:
        _CountingDict.reads += 1
        return super().__iter__()


def _reference_action(recorded: dict[str, float], reward: float, rf: float, protect: int) -> str:
    """ASHA's decision at a rung as Ray (and the protected bracket before P8) computed it."""
    if not recorded:
        return TrialScheduler.CONTINUE
    cutoff = np.nanpercentile(list(recorded.values()), (1 - 1 / rf) * 100)
    if protect > 0:
        if len(recorded) < protect:
            return TrialScheduler.CONTINUE
        cutoff = min(cutoff, np.sort(np.asarray(list(recorded.values())))[::-1][protect - 1])
    return TrialScheduler.STOP if reward < cutoff else TrialScheduler.CONTINUE


@pytest.mark.parametrize("protect", [0, 3])
def test_asha_decides_as_ray_without_reading_every_recorded_reward(protect: int):
    asha = GroupedASHAScheduler(group_keys=["b"], time_attr="steps", metric="acc", mode="max", max_t=100,
                                grace_period=10, reduction_factor=3, protect=protect)
    rng = random.Random(0)
    shadow: dict[str, float] = {}   # the first rung's rewards, for the reference decision
    counted = False
    for i in range(3000):
        trial = SimpleNamespace(trial_id=f"t{i}", config={"b": 16})
        asha.on_trial_add(None, trial)
        if not counted:   # swap the group's rungs for counting ones before any reward is recorded
            for bracket in asha._groups[("16",)]:
                bracket._rungs = [(m, _CountingDict()) for m, _ in bracket._rungs]
            counted = True
        acc = round(rng.random(), 2)   # ties on purpose
        expected = _reference_action(shadow, acc, 3, protect)
        assert asha.on_trial_result(None, trial, {"steps": 10, "acc": acc}) == expected, i
        shadow[trial.trial_id] = acc
    # Ray's own bracket reads every reward at the rung for each result (3000 reads here).
    assert _CountingDict.reads == 0


def test_percentile_is_numpys():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 101):
        values = sorted(rng.normal(size=n).round(1))
        for q in (0.0, 25.0, 50.0, 200 / 3, 75.0, 100.0):
            assert _percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-15)


class _Trial:
    """A Tune trial whose status reads are counted."""

    reads = 0

    def __init__(self, status: str) -> None:
        self._status = status

    @property
    def status(self) -> str:
        _Trial.reads += 1
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value


def test_pending_watchdog_looks_only_at_unfinished_trials():
    clock = SimpleNamespace(now=0.0)
    watchdog = PendingTimeout("x", seconds=60, clock=lambda: clock.now)
    trials: list[_Trial] = []
    for i in range(2000):   # one trial at a time starts, runs and finishes; one waits behind it
        trials.append(_Trial("RUNNING"))
        trials.append(_Trial("PENDING"))
        watchdog.on_step_end(iteration=i, trials=trials)
        trials[-2].status = "TERMINATED"
        trials[-1].status = "TERMINATED"
    _Trial.reads = 0
    trials.append(_Trial("PENDING"))
    for _ in range(10):
        watchdog.on_step_end(iteration=0, trials=trials)
    # 4001 trials, 1 unfinished: a step reads a few statuses, not thousands.
    assert _Trial.reads <= 10 * 4
    assert len(watchdog._open) == 1
    clock.now = 61.0
    watchdog.on_step_end(iteration=0, trials=trials)
    assert watchdog.stop_all()   # and it still fires on the one that waits


def test_line_search_keeps_nothing_per_finished_trial():
    space = {"lr": LogUniform(1e-4, 10.0), "b": Grid(tuple(2 ** k for k in range(12)))}
    s = GroupedLineSearch(space, per=["b"], key="lr", samples_per_group=30, metric="loss", mode="min")
    n = 0
    while (config := s.suggest(f"t{n}")) != s.FINISHED:
        x = np.log(config["lr"] / (0.01 * config["b"]))
        s.on_trial_complete(f"t{n}", {"loss": 1 + x * x, "training_iteration": 1, "config": {"reports": 1}})
        n += 1
    assert n > 12 * 5 and s._trial_x == {}
    # Each group holds only its own points, at most samples_per_group.
    assert sum(len(line.values) for line in s._lines if line is not None) == n


@pytest.mark.parametrize("make", [
    lambda: GroupedASHAScheduler(group_keys=["b"], time_attr="steps", metric="acc", mode="max", max_t=100,
                                 grace_period=10, protect=1),
    lambda: QueueFIFOScheduler(),
])
def test_next_trial_is_rays_fifo_choice_looking_only_at_unfinished_trials(make):
    scheduler = make()
    scheduler.set_search_properties("acc", "max")
    rng = random.Random(1)
    trials: list[Any] = []
    controller = SimpleNamespace(get_trials=lambda: trials)
    for i in range(2000):   # trials arrive, start, pause, resume and end in random order
        trial = _Trial("PENDING")
        trial.trial_id, trial.config = f"t{i}", {"b": 16}
        trials.append(trial)
        scheduler.on_trial_add(None, trial)
        for other in rng.sample(trials[-20:], min(3, len(trials))):
            if other._status != "TERMINATED":
                other._status = rng.choice(["RUNNING", "PAUSED", "TERMINATED", "TERMINATED"])
        for old in trials[max(i - 40, 0):i - 20]:   # trials end within 20 arrivals
            old._status = "TERMINATED"
        if i == 1000:   # a failed trial Tune requeues: it moves to the end of Tune's list, and is added again
            moved = next(t for t in trials if t._status == "RUNNING")
            moved._status = "PENDING"
            trials.remove(moved)
            trials.append(moved)
            scheduler.on_trial_add(None, moved)
        expected = FIFOScheduler.choose_trial_to_run(FIFOScheduler(), controller)
        _Trial.reads = 0
        assert scheduler.choose_trial_to_run(controller) is expected, i
        unfinished = sum(t._status != "TERMINATED" for t in trials)
        # at most the unfinished trials and those that ended since the last step; Ray's reads
        # every trial's status up to the first PENDING one: about i of them
        assert _Trial.reads <= unfinished + 25, (i, _Trial.reads, unfinished)
