"""BoundarySearch driven by hand (no Ray): sweep, placement between regimes, resume."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from ray.tune.search import Searcher

import tune_lip.tune.boundary_search as boundary_search_module
from tune_lip.tune.boundary_search import BoundarySearch

T1, T2 = 1e-3, 3e-2  # sharp truth: converged below T1, chaotic up to T2, diverged above
SPACE = {"optimizer": {"name": "sgd", "elr": None}, "model": {"name": "convnet_si"}, "seed": 0}


def regime(elr: float) -> str:
    return "diverged" if elr > T2 else "chaotic" if elr >= T1 else "converged"


def elr_of(config: dict) -> float:
    return config["optimizer"]["elr"]


def gaps(observed: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """Per boundary, (largest ELR of the lower regime, smallest of the upper)."""
    out = []
    for lower, upper in (("converged", "chaotic"), ("chaotic", "diverged")):
        out.append((max(e for e, r in observed if r == lower),
                    min(e for e, r in observed if r == upper)))
    return out


def drive(search: BoundarySearch, n: int, *, start: int = 0) -> list[float]:
    """Suggest and complete ``n`` trials one at a time; returns their ELRs."""
    elrs = []
    for i in range(start, start + n):
        elr = elr_of(search.suggest(f"t{i}"))
        search.on_trial_complete(f"t{i}", {"regime": regime(elr)})
        elrs.append(elr)
    return elrs


def test_initial_sweep_is_log_spaced_and_keeps_the_space():
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=6, max_trials=20)
    configs = [s.suggest(f"t{i}") for i in range(6)]
    np.testing.assert_allclose([elr_of(c) for c in configs], np.geomspace(1e-5, 1.0, 6))
    assert all(c["model"] == {"name": "convnet_si"} and c["optimizer"]["name"] == "sgd"
               for c in configs)
    assert SPACE["optimizer"]["elr"] is None  # the caller's space is never modified


def test_new_elrs_go_between_the_regimes_and_tighten_the_thresholds():
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=6, max_trials=30)
    observed = [(e, regime(e)) for e in drive(s, 6)]
    for i in range(6, 30):
        elr = elr_of(s.suggest(f"t{i}"))
        brackets = gaps(observed)
        inside = any(a < elr < b for a, b in brackets)
        if i < 8:
            # right after the sweep, each boundary's gap gets its trial
            assert inside, (i, elr, brackets)
        # later ones may check just outside a gap whether the boundary is noisy, never further
        # off than the widest boundary the posterior allows (0.3 decades)
        distance = min(abs(math.log10(elr / v)) for ab in brackets for v in ab)
        assert inside or distance < 0.3, (i, elr, brackets)
        observed.append((elr, regime(elr)))
        s.on_trial_complete(f"t{i}", {"regime": regime(elr)})
    fit = s.boundaries()
    for (lower, upper), truth in zip((("converged", "chaotic"), ("chaotic", "diverged")),
                                     (T1, T2)):
        row = fit.boundary(lower, upper)
        # 30 trials pin the gap around a sharp threshold to < 0.05 decades (a 30-point grid gets
        # 0.17); the headline (credible) interval also allows the boundary to be up to 0.3
        # decades wide, as far as the trials cannot rule that out, and still holds the truth
        assert row["elr_lo"] <= truth <= row["elr_hi"]
        assert row["fit_width_decades"] < 0.05
        assert row["width_decades"] < 0.3


def test_finished_after_max_trials():
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=4, max_trials=7)
    drive(s, 7)
    assert s.suggest("t7") == Searcher.FINISHED
    # fewer trials than the sweep: the sweep is cut short, then FINISHED
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=6, max_trials=2)
    assert [elr_of(s.suggest(f"t{i}")) for i in range(2)] == pytest.approx([1e-5, 1e-4])
    assert s.suggest("t2") == Searcher.FINISHED


def test_save_and_restore_continue_exactly_where_it_stopped(tmp_path):
    def fresh() -> BoundarySearch:
        return BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=6, max_trials=20, seed=3)

    whole = fresh()
    expected = drive(whole, 16)

    first = fresh()
    head = drive(first, 10)
    pending = elr_of(first.suggest("t10"))  # a trial still running at the checkpoint
    first.save(str(tmp_path / "searcher.pkl"))

    resumed = fresh()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("t10", {"regime": regime(pending)})
    tail = drive(resumed, 5, start=11)
    assert head + [pending] + tail == pytest.approx(expected)
    # Tune's own path: save_to_dir / restore_from_dir go through save / restore
    resumed.save_to_dir(str(tmp_path))
    again = fresh()
    again.restore_from_dir(str(tmp_path))
    assert len(again.observations) == 16


def test_regime_is_learnt_from_train_loss_when_not_reported():
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=3, max_trials=10, num_classes=10)
    t = np.arange(12)
    curves = {"a": 2.3 * np.exp(-t / 3), "b": 0.5 + 0.01 * np.cos(2 * t), "c": np.full(12, 2.3)}
    for trial_id, curve in curves.items():
        s.suggest(trial_id)
        for k, loss in enumerate(curve):
            s.on_trial_result(trial_id, {"train_loss": float(loss), "training_iteration": k + 1})
        # the last result comes again with on_trial_complete; it must not be counted twice
        s.on_trial_complete(trial_id, {"train_loss": float(curve[-1]),
                                       "training_iteration": len(curve)})
    assert s.observations["regime"].tolist() == ["converged", "chaotic", "diverged"]


def test_errored_short_and_flagged_trials():
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=3, max_trials=10)
    for trial_id in "abc":
        s.suggest(trial_id)
    s.on_trial_complete("a", None, error=True)
    s.on_trial_result("b", {"train_loss": 1.0, "training_iteration": 1})
    s.on_trial_complete("b", {"train_loss": 1.0, "training_iteration": 1})  # too short
    s.on_trial_complete("c", {"diverged": True, "train_loss": 1e9})
    assert s.observations["regime"].tolist() == ["diverged"]
    assert any("errored" in n for n in s.notes) and any("left out" in n for n in s.notes)


def test_concurrent_suggestions_do_not_repeat_a_point():
    s = BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=6, max_trials=20, seed=1)
    drive(s, 6)
    running = [elr_of(s.suggest(f"r{i}")) for i in range(4)]  # four trials at once
    assert len({round(math.log10(e), 3) for e in running}) == 4


def test_before_two_regimes_are_seen_it_fills_the_widest_gap():
    s = BoundarySearch(SPACE, lo=1e-4, hi=1e-2, initial=3, max_trials=10)
    for i in range(3):
        s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", {"regime": "chaotic"})
    # the sweep left two one-decade gaps: the next two ELRs halve one each
    nxt = sorted(round(math.log10(elr_of(s.suggest(f"t{i}"))), 6) for i in (3, 4))
    assert nxt == [-3.5, -2.5]


def test_bad_options_raise():
    with pytest.raises(ValueError, match="0 < lo < hi"):
        BoundarySearch(SPACE, lo=1.0, hi=1e-3, max_trials=5)
    with pytest.raises(ValueError, match="initial"):
        BoundarySearch(SPACE, lo=1e-5, hi=1.0, initial=1, max_trials=5)


def test_docstring_examples_run():
    assert doctest.testmod(boundary_search_module).failed == 0
