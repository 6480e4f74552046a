"""GroupedASHAScheduler: trials compete only within their group (e.g. their batch size)."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_lip.tune.schedulers import GroupedASHAScheduler


def _trial(trial_id: str, batch_size: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"dataset": {"batch_size": batch_size}})


def _run(scheduler: ASHAScheduler) -> dict[str, str]:
    """Trials reach the first rung (steps=10) one after another; which does ASHA stop?"""
    # Large batches score lower at equal progress (fewer steps under an epoch budget).
    reports = [("a16", 16, 0.9), ("b16", 16, 0.8), ("a256", 256, 0.3), ("b256", 256, 0.5), ("c256", 256, 0.2)]
    actions = {}
    for tid, b, acc in reports:
        trial = _trial(tid, b)
        scheduler.on_trial_add(None, trial)
        actions[tid] = scheduler.on_trial_result(None, trial, {"steps": 10, "acc": acc})
    return actions


def test_plain_asha_stops_large_batches_for_being_large():
    plain = ASHAScheduler(time_attr="steps", metric="acc", mode="max", max_t=100, grace_period=10,
                          reduction_factor=2)
    assert _run(plain)["b256"] == TrialScheduler.STOP  # 0.5 is below the median of all trials


def test_grouped_asha_compares_within_the_batch_size():
    grouped = GroupedASHAScheduler(group_keys=["dataset.batch_size"], time_attr="steps", metric="acc",
                                   mode="max", max_t=100, grace_period=10, reduction_factor=2)
    actions = _run(grouped)
    assert actions["a256"] == TrialScheduler.CONTINUE   # first of its group at the rung
    assert actions["b256"] == TrialScheduler.CONTINUE   # best batch-256 trial so far
    assert actions["c256"] == TrialScheduler.STOP       # worst within batch 256
    assert actions["b16"] == TrialScheduler.STOP        # below the batch-16 median


def _finishers(scheduler: ASHAScheduler, *, groups: tuple[int, ...] = (16, 256), trials: int = 12,
               mode: str = "max") -> dict[int, int]:
    """Trials of each group run one after another through rungs 10, 30 and 90 (max_t 100), each
    trial worse than every earlier one (plain ASHA's worst case). How many reach max_t?"""
    finished = dict.fromkeys(groups, 0)
    for b in groups:
        for i in range(trials):
            trial = _trial(f"t{b}_{i}", b)
            scheduler.on_trial_add(None, trial)
            score = 1.0 - 0.05 * i if mode == "max" else 0.05 * i
            for steps in (10, 30, 90):   # past the last rung a trial runs to max_t
                if scheduler.on_trial_result(None, trial, {"steps": steps, "acc": score}) == TrialScheduler.STOP:
                    break
            else:
                finished[b] += 1
    return finished


def test_protect_leaves_k_finishers_per_group():
    asha = dict(time_attr="steps", metric="acc", max_t=100, grace_period=10, reduction_factor=3)
    plain = GroupedASHAScheduler(group_keys=["dataset.batch_size"], mode="max", **asha)
    assert _finishers(plain) == {16: 1, 256: 1}          # each later trial is cut at the first rung
    for mode in ("max", "min"):
        protected = GroupedASHAScheduler(group_keys=["dataset.batch_size"], mode=mode, protect=4, **asha)
        assert _finishers(protected, mode=mode) == {16: 4, 256: 4}
    # Without searcher.per, protect counts over the whole search (one group).
    single = GroupedASHAScheduler(group_keys=[], mode="max", protect=3, **asha)
    assert _finishers(single, groups=(16,)) == {16: 3}


def test_protect_still_stops_the_worst():
    protected = GroupedASHAScheduler(group_keys=["dataset.batch_size"], time_attr="steps", metric="acc",
                                     mode="max", max_t=100, grace_period=10, reduction_factor=2, protect=2)
    actions = {}
    for tid, acc in (("a", 0.9), ("b", 0.8), ("c", 0.1), ("d", 0.95)):
        trial = _trial(tid, 16)
        protected.on_trial_add(None, trial)
        actions[tid] = protected.on_trial_result(None, trial, {"steps": 10, "acc": acc})
    assert actions == {"a": "CONTINUE", "b": "CONTINUE", "c": "STOP", "d": "CONTINUE"}
