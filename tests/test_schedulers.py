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
