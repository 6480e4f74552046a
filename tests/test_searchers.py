"""GroupedOptunaSearch: an independent Optuna study per batch size; pruned vs complete trials."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import pytest
from optuna.trial import TrialState

from tune_lip.tune.searchers import GroupedLineSearch, GroupedOptunaSearch, to_tune_space
from tune_lip.tune.spec import Choice, Grid, LogUniform


def _searcher(samples: int = 3) -> GroupedOptunaSearch:
    space = {"optimizer": {"lr": LogUniform(1e-3, 1.0), "name": "sgd"},
             "dataset": {"batch_size": Grid((16, 64)), "name": "digits"}, "seed": 0}
    return GroupedOptunaSearch(space, per=["dataset.batch_size"], samples_per_group=samples,
                               metric="acc", mode="max", seed=0)


def test_every_batch_size_gets_its_own_samples():
    s = _searcher(samples=3)
    configs = [s.suggest(f"t{i}") for i in range(6)]
    assert s.suggest("t6") == s.FINISHED  # 2 groups x 3 samples, then done
    sizes = [c["dataset"]["batch_size"] for c in configs]
    assert sorted(sizes) == [16, 16, 16, 64, 64, 64]
    assert all(1e-3 <= c["optimizer"]["lr"] <= 1.0 and c["optimizer"]["name"] == "sgd" for c in configs)


def test_scheduler_stopped_trials_are_pruned_not_complete():
    s = _searcher()
    s.suggest("a")
    s.suggest("b")
    s.on_trial_result("a", {"acc": 0.3, "training_iteration": 1})
    # Ray sets done=True on a trial ASHA stopped, too: only the report count tells them apart.
    s.on_trial_complete("a", {"acc": 0.3, "done": True, "training_iteration": 1, "config": {"reports": 4}})
    s.on_trial_complete("b", {"acc": 0.9, "done": True, "training_iteration": 4, "config": {"reports": 4}})
    states = {g["dataset.batch_size"]: [t.state for t in st.trials] for g, st in s.studies()}
    assert states == {16: [TrialState.PRUNED], 64: [TrialState.COMPLETE]}


def test_failed_trial_is_failed():
    s = _searcher()
    s.suggest("a")
    s.on_trial_complete("a", None, error=True)
    assert s.studies()[0][1].trials[0].state == TrialState.FAIL


def test_state_survives_pickle_round_trip(tmp_path):
    s = _searcher()
    s.suggest("a")
    s.save(str(tmp_path / "s.pkl"))
    restored = _searcher()
    restored.restore(str(tmp_path / "s.pkl"))
    restored.on_trial_complete("a", {"acc": 0.5, "diverged": True})  # a trial from before the restore
    assert restored.studies()[0][1].trials[0].state == TrialState.COMPLETE
    assert pickle.loads(pickle.dumps(restored.get_state()))["suggested"] == [1, 0]


def test_seeded_suggestions_repeat():
    a, b = _searcher(), _searcher()
    # Exact on purpose: the same seeded sampler draws the same lr bits twice in one process.
    assert [a.suggest(f"t{i}") for i in range(4)] == [b.suggest(f"t{i}") for i in range(4)]


def test_tune_space_conversion():
    space = to_tune_space({"lr": LogUniform(0.1, 1.0), "act": Choice(("a", "b")), "fixed": {"x": 1}})
    assert space["fixed"] == {"x": 1}
    assert type(space["lr"]).__name__ == "Float" and type(space["act"]).__name__ == "Categorical"


# ---------------------------------------------------------------------------- GroupedLineSearch

def _line(warm_start: bool = True, batches: tuple[int, ...] = (1, 4, 16, 64), **kw) -> GroupedLineSearch:
    space = {"optimizer": {"lr": LogUniform(1e-4, 10.0), "name": "sgd"},
             "dataset": {"batch_size": Grid(batches)}, "reports": 4}
    return GroupedLineSearch(space, per=["dataset.batch_size"], key="optimizer.lr", samples_per_group=30,
                             metric="loss", mode="min", warm_start=warm_start, **kw)


def _loss(lr: float, b: int) -> dict:
    """A loss with its optimum at lr = 0.01 b, asymmetric in log lr, diverging above lr = 2."""
    if lr > 2.0:
        return {"loss": 1e6, "diverged": True, "training_iteration": 1, "config": {"reports": 4}}
    x = math.log(lr / (0.01 * b))
    return {"loss": 1.0 + x * x + 0.3 * x ** 3 * (x > 0), "training_iteration": 4, "config": {"reports": 4}}


def _drive(s: GroupedLineSearch, start: int = 0) -> list[tuple[int, float]]:
    """Run the search to its end, one trial at a time; (batch size, lr) of every trial."""
    trials, i = [], start
    while (config := s.suggest(f"t{i}")) != s.FINISHED:
        assert config is not None   # one trial at a time: the search never has to wait
        b, lr = config["dataset"]["batch_size"], config["optimizer"]["lr"]
        s.on_trial_complete(f"t{i}", _loss(lr, b))
        trials.append((b, lr))
        i += 1
    return trials


def test_line_search_finds_every_groups_optimum_within_tolerance():
    for warm in (True, False):
        s = _line(warm_start=warm)
        trials = _drive(s)
        for group, lr in s.best_configs():
            b = group["dataset.batch_size"]
            assert lr is not None and abs(lr / (0.01 * b) - 1) <= 0.1, (warm, b, lr)
        per_group = Counter(b for b, _ in trials)
        # Far fewer than the 56 points of a 1.21-ratio grid over [1e-4, 10] (about 10 each);
        # groups after the first start near the previous optimum when warm-started.
        assert max(per_group.values()) <= 14, per_group
        if warm:
            assert all(per_group[b] <= 8 for b in (4, 16, 64)), per_group


def test_line_search_treats_diverged_and_failed_trials_as_worst():
    # b = 256: optimum 2.56 lies beyond the divergence at 2, so the best is just below the cliff.
    s = _line(batches=(256,))
    trials = _drive(s)
    (_, best), = s.best_configs()
    assert best is not None and 1.6 < best <= 2.0 and len(trials) <= 14
    s = _line(batches=(16,))
    s.suggest("a")
    s.on_trial_complete("a", None, error=True)
    line = s._lines[0]
    assert line is not None and line.values == {line.initial[0]: math.inf}   # a failed trial: the worst


def test_line_search_groups_wait_for_the_previous_one_when_warm_started():
    s = _line(batches=(1, 4))
    first = [s.suggest(f"t{i}") for i in range(3)]      # the first group's three starting points
    assert [c["dataset"]["batch_size"] for c in first] == [1, 1, 1]
    assert s.suggest("t3") is None                       # nothing to do until they finish
    cold = _line(warm_start=False, batches=(1, 4))
    assert [cold.suggest(f"t{i}")["dataset"]["batch_size"] for i in range(6)] == [1, 1, 1, 4, 4, 4]


def test_line_search_resumes_where_it_stopped(tmp_path):
    whole = _drive(_line())
    s = _line()
    head = []
    for i in range(7):   # stop with trial t7 running
        config = s.suggest(f"t{i}")
        head.append((config["dataset"]["batch_size"], config["optimizer"]["lr"]))
        s.on_trial_complete(f"t{i}", _loss(*reversed(head[-1])))
    running = s.suggest("t7")
    s.save(str(tmp_path / "s.pkl"))
    resumed = _line()
    resumed.restore(str(tmp_path / "s.pkl"))
    resumed.on_trial_complete("t7", _loss(running["optimizer"]["lr"], running["dataset"]["batch_size"]))
    tail = _drive(resumed, start=8)
    got = head + [(running["dataset"]["batch_size"], running["optimizer"]["lr"])] + tail
    assert [b for b, _ in got] == [b for b, _ in whole]
    assert [lr for _, lr in got] == pytest.approx([lr for _, lr in whole])


def test_line_search_rejects_what_it_cannot_search():
    with pytest.raises(ValueError, match="LogUniform"):
        GroupedLineSearch({"lr": Choice((0.1, 1.0)), "b": Grid((1, 2))}, per=["b"], key="lr", samples_per_group=5)
    with pytest.raises(ValueError, match="neither"):
        GroupedLineSearch({"lr": LogUniform(0.1, 1.0), "wd": LogUniform(1e-5, 1e-3)}, per=[], key="lr",
                          samples_per_group=5)


def test_line_search_stops_each_group_at_its_cap():
    space = {"optimizer": {"lr": LogUniform(1e-4, 10.0)}, "dataset": {"batch_size": Grid((1, 4))}}
    s = GroupedLineSearch(space, per=["dataset.batch_size"], key="optimizer.lr", samples_per_group=1,
                          metric="loss", mode="min")
    assert [b for b, _ in _drive(s)] == [1, 4]   # one trial per batch size (a smoke run), then done
