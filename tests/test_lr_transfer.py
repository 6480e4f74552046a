"""LRTransferSearch driven without Ray: fabricated results from synthetic worlds with a known lr*(b)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import pytest

from tune_lip.errors import UserError
from tune_lip.tune.lr_transfer import LRTransferSearch, predict_log_lr
from tune_lip.tune.spec import Grid, LogUniform, parse_spec

BATCHES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
GRID_TRIALS = 50 * len(BATCHES)   # a dense grid: 50 log-spaced LRs per batch size over 1e-4 .. 10 (~26% apart)
TOL = 0.1

WORLDS: dict[str, Callable[[int], float]] = {
    "alpha_1": lambda b: 1e-3 * b,
    "alpha_half": lambda b: 1e-2 * b ** 0.5,
    "critical_batch": lambda b: 1e-3 * min(b, 256),      # lr* ~ b below b_c = 256, flat above
    "law_breaks": lambda b: 1e-3 * b * (8.0 if b == 256 else 1.0),   # one batch size far off the line
}


def _result(lr: float, b: int, lr_star: Callable[[int], float], skew: float) -> dict:
    """A loss with its minimum at lr_star(b), asymmetric in log lr (steeper by ``skew`` above it);
    more than e^2 above the optimum the trial diverges (a finite worst value, diverged=True)."""
    u = math.log(lr / lr_star(b))
    if u > 2.0:
        return {"loss": 1e6, "diverged": True, "training_iteration": 4, "config": {"reports": 4}}
    return {"loss": 1.0 + u * u * (skew if u > 0 else 1.0), "training_iteration": 4, "config": {"reports": 4}}


def _search(**kw) -> LRTransferSearch:
    # the grid is given unsorted: the searcher goes from the smallest batch size up
    space = {"optimizer": {"lr": LogUniform(1e-4, 10.0)}, "dataset": {"batch_size": Grid(tuple(reversed(BATCHES)))}}
    return LRTransferSearch(space, per=["dataset.batch_size"], key="optimizer.lr", samples_per_group=40,
                            metric="loss", mode="min", tolerance=TOL, **kw)


def _drive(s: LRTransferSearch, lr_star: Callable[[int], float], *, skew: float = 1.0, concurrent: int = 3,
           stop_after: int | None = None) -> int:
    """Run ``concurrent`` trials at a time (the oldest finishes first) to the end; the trials run."""
    live: list[tuple[str, dict]] = []
    n = 0
    while stop_after is None or n < stop_after:
        while len(live) < concurrent:
            config = s.suggest(f"t{n}")
            if config is None or config == s.FINISHED:
                break
            live.append((f"t{n}", config))
            n += 1
        if not live:
            break
        trial_id, config = live.pop(0)
        s.on_trial_complete(trial_id, _result(config["optimizer"]["lr"], config["dataset"]["batch_size"],
                                              lr_star, skew))
    return n


def _assert_found(s: LRTransferSearch, lr_star: Callable[[int], float]) -> None:
    for group, lr in s.best_configs():
        b = group["dataset.batch_size"]
        assert lr is not None and abs(lr / lr_star(b) - 1) <= TOL, (b, lr, lr_star(b))


@pytest.mark.parametrize("world", ["alpha_1", "alpha_half", "critical_batch"])
@pytest.mark.parametrize("skew", [1.0, 4.0])
def test_finds_lr_star_at_every_batch_size_in_fewer_trials_than_a_grid(world, skew):
    s = _search()
    trials = _drive(s, WORLDS[world], skew=skew)
    _assert_found(s, WORLDS[world])
    # means: the transfer pays off -- about 7 trials per batch size, a fifth of the dense grid
    assert trials < GRID_TRIALS / 4, trials
    # means: past the anchors, a batch size costs fewer trials than an anchor's broad search
    per_group = s.trials_per_group()
    assert sum(per_group[2:]) / len(per_group[2:]) < min(per_group[:2]), per_group


def test_the_prediction_brackets_lr_star_once_the_law_is_learnt():
    s = _search()
    _drive(s, WORLDS["alpha_1"])
    inside = [lo < WORLDS["alpha_1"](g["dataset.batch_size"]) < hi
              for g, iv in s.predicted_intervals() if iv is not None for lo, hi in [iv]]
    assert len(inside) == len(BATCHES) - 2 and all(inside)


def test_widens_when_the_law_breaks_and_still_finds_every_lr_star():
    s = _search()
    trials = _drive(s, WORLDS["law_breaks"])
    _assert_found(s, WORLDS["law_breaks"])   # b = 256 too, 8x off the line
    intervals = dict((g["dataset.batch_size"], iv) for g, iv in s.predicted_intervals())
    lo, hi = intervals[256]
    assert not lo < WORLDS["law_breaks"](256) < hi   # means: the jump lay outside the prediction ...
    width = {b: math.log(iv[1] / iv[0]) for b, iv in intervals.items() if iv is not None}
    assert width[512] > 1.5 * width[128]            # ... so the next interval was widened
    assert trials < GRID_TRIALS / 4


def test_critical_batch_size_prediction_does_not_extrapolate_the_slope_blindly():
    # lr* = b up to 256, flat above: the interval at 1024 from optima up to 512 must contain lr*
    log_b = [math.log(b) for b in (8, 16, 32, 64, 128, 256, 512)]
    log_lr = [math.log(min(b, 256)) for b in (8, 16, 32, 64, 128, 256, 512)]
    centre, half = predict_log_lr(log_b, log_lr, math.log(1024))
    assert centre - half < math.log(256) < centre + half


def test_resume_mid_search_gives_the_same_trials(tmp_path):
    world = WORLDS["critical_batch"]
    first = _search()
    _drive(first, world, concurrent=1, stop_after=23)
    first.save(str(tmp_path / "searcher.pkl"))
    resumed = _search()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    reference = pickle.loads(pickle.dumps(first))
    assert _drive(resumed, world, concurrent=1) == _drive(reference, world, concurrent=1)
    assert resumed.best_configs() == reference.best_configs()
    _assert_found(resumed, world)


def test_waits_for_running_trials_and_finishes():
    s = _search()
    running = [s.suggest(f"t{i}") for i in range(7)]
    # means: the two anchors' three start points each, then nothing until results arrive
    assert [c["dataset"]["batch_size"] for c in running[:6]] == [8, 8, 8, 16, 16, 16] and running[6] is None


BASE = {"study": "nqm", "metric": "train_loss", "mode": "min", "budget": {"examples": 1024},
        "scheduler": "none", "num_samples": 10,
        "space": {"dataset": {"batch_size": {"grid": [8, 32, 128]}},
                  "optimizer": {"name": "sgd", "lr": {"loguniform": [0.001, 3.0]}}}}


def _spec(**changes):
    return parse_spec({**BASE, **changes}, where="x.yaml")


def test_spec_defaults_and_round_trip():
    spec = _spec(searcher={"name": "lr_transfer", "key": "optimizer.lr"})
    assert spec.searcher.per == ("dataset.batch_size",) and spec.searcher.anchors == 2
    assert parse_spec(spec.to_dict(), where="x.yaml") == spec


@pytest.mark.parametrize(("changes", "key"), [
    ({"searcher": {"name": "lr_transfer"}}, "searcher.key"),
    ({"searcher": {"name": "lr_transfer", "key": "optimizer.lr", "anchors": 1}}, "searcher.anchors"),
    ({"searcher": {"name": "lr_transfer", "key": "optimizer.lr", "warm_start": True}}, "searcher.warm_start"),
    ({"searcher": {"name": "lr_transfer", "key": "optimizer.name"}}, "searcher.key"),
    ({"searcher": {"name": "lr_transfer", "key": "optimizer.lr"}, "scheduler": "asha"}, "scheduler"),
    ({"searcher": {"name": "lr_transfer", "key": "optimizer.lr"}, "replicates": 2}, "replicates"),
    ({"searcher": {"name": "lr_transfer", "key": "optimizer.lr", "per": ["dataset.batch_size", "optimizer.name"]},
      "space": {**BASE["space"], "optimizer": {"name": {"grid": ["sgd", "adam"]},
                                               "lr": {"loguniform": [0.001, 3.0]}}}}, "searcher.per"),
])
def test_spec_errors_name_file_and_key(changes, key):
    with pytest.raises(UserError) as err:
        _spec(**changes)
    # means: one line naming the file and the key, with a fix
    assert "x.yaml" in str(err.value) and key in str(err.value) and "\n" not in str(err.value)
