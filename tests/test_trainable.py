"""LipschitzTrainable: Ray's own save/restore validation, exact resume, reuse, divergence."""

from __future__ import annotations

import pytest

from tune_lip.cluster.placement import accelerator_type
from tune_lip.trainables.lipschitz import LipschitzTrainable

CONFIG = {"seed": 1, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 128, "num_test": 32},
          "model": {"name": "aol_mlp", "width": 64, "depth": 2}, "optimizer": {"lr": 0.1},
          "budget": {"steps": 12}, "reports": 3}


def _strip(result: dict) -> dict:
    """Metrics that must repeat exactly (timing and bookkeeping keys vary run to run)."""
    keep = ("steps", "examples", "lr", "lr_now", "train_loss", "train_acc", "val_loss", "val_acc", "val_certified_acc",
            "test_loss", "test_acc", "test_certified_acc", "weight_norm", "diverged", "done")
    return {k: result[k] for k in keep if k in result}


def test_reports_then_done_at_budget(tmp_path):
    t = LipschitzTrainable(config=CONFIG)
    results = [t.train() for _ in range(3)]
    assert [r["steps"] for r in results] == [4, 8, 12]
    assert [r["done"] for r in results] == [False, False, True]
    t.stop()


def test_validation_metrics_at_every_report_test_metrics_once_at_the_end():
    t = LipschitzTrainable(config={**CONFIG, "eval": {"extra_eps": [0.05]}})
    results = [t.train() for _ in range(3)]
    val = ("val_loss", "val_acc", "val_certified_acc", "val_certified_acc@0.05")
    test = ("test_loss", "test_acc", "test_certified_acc", "test_certified_acc@0.05")
    assert all(k in r for r in results for k in val)          # what a searcher and a scheduler see
    assert not any(k in r for r in results[:-1] for k in test)  # never before the trial's last report
    assert all(k in results[-1] for k in test)
    assert not any(k in r for r in results for k in ("certified_acc", "certified_acc@0.05"))   # no old names
    t.stop()


def test_a_pre_split_experiment_resumes_reporting_as_it_began():
    # An experiment searched certified_acc before the validation split: its resumed trials train on
    # every training image and report the test metrics at every report, under the old names.
    from tune_lip.trainables.base import trainable_for

    legacy = trainable_for("lipschitz", legacy=True)
    assert legacy.__name__ == "LipschitzTrainable" and issubclass(legacy, LipschitzTrainable)   # Tune restores by name
    t = legacy(config=CONFIG)
    assert t.loop.data.num_train == 128 and t.loop.data.num_val == 0
    results = [t.train() for _ in range(3)]
    assert all({"certified_acc", "test_acc", "test_loss"} <= set(r) for r in results)
    assert not any(k.startswith("val_") or k == "test_certified_acc" for r in results for k in r)
    t.stop()


def test_checkpoint_restore_continues_exactly(tmp_path):
    straight = LipschitzTrainable(config=CONFIG)
    expected = [_strip(straight.train()) for _ in range(3)]
    first = LipschitzTrainable(config=CONFIG)
    head = [_strip(first.train())]
    checkpoint = first.save(str(tmp_path / "ckpt"))
    second = LipschitzTrainable(config=CONFIG)
    second.restore(checkpoint)
    # Exact on purpose: a checkpoint restore continues the uninterrupted run bit for bit (same process).
    assert head + [_strip(second.train()) for _ in range(2)] == expected
    assert (tmp_path / "ckpt" / "config.json").exists()  # the resolved config travels along
    for t in (straight, first, second):
        t.stop()


def test_reset_config_reuses_the_actor():
    t = LipschitzTrainable(config=CONFIG)
    t.train()
    other = {**CONFIG, "optimizer": {"lr": 0.05}}
    assert t.reset_config(other)
    assert t.loop.steps == 0 and t.loop.cfg.optimizer.lr == 0.05
    fresh = LipschitzTrainable(config=other)
    # Exact on purpose: a reset actor must repeat a fresh one's bits (same seed, same process).
    assert _strip(t.train()) == _strip(fresh.train())  # nothing of the old trial leaks
    t.stop()
    fresh.stop()


def test_diverging_trial_ends_cleanly():
    # The CPL layers normalise their weights, so even lr = 1e10 keeps the loss finite; at 1e30 the
    # weights overflow and the loss is NaN.
    config = {**CONFIG, "model": {"name": "cpl_convnet", "width": 8, "depth": 1},
              "optimizer": {"lr": 1e30}, "schedule": "constant"}
    t = LipschitzTrainable(config=config)
    result = t.train()
    assert result["diverged"] and result["done"] and result["val_certified_acc"] == result["test_certified_acc"] == 0.0
    t.stop()


@pytest.mark.slow
def test_ray_validate_save_restore(ray_local):
    from ray.tune.utils import validate_save_restore

    assert validate_save_restore(LipschitzTrainable, config=CONFIG)


def test_wall_clock_budget_trains_in_equal_slices_of_time():
    # 0.0002 h = 0.72 s of training time, in two reports; hardware-dependent by design
    t = LipschitzTrainable(config={**CONFIG, "budget": {"wall_hours": 0.0002}, "reports": 2})
    first, second = t.train(), t.train()
    assert not first["done"] and second["done"]
    assert 0.36 <= first["wall_seconds"] and 0.72 <= second["wall_seconds"]
    assert second["steps"] > first["steps"] > 0
    assert first["hardware_dependent"] and first["accelerator"] == accelerator_type()  # labelled in results
    t.stop()


def test_work_budgets_are_not_hardware_dependent():
    t = LipschitzTrainable(config=CONFIG)
    result = t.train()
    assert result["hardware_dependent"] is False and result["accelerator"] == accelerator_type()  # "CPU" here
    t.stop()


def test_an_actor_terminated_by_ray_prints_no_ignored_traceback(capsys):
    """Ray's SIGTERM handler raises SystemExit inside whatever runs, a GC callback included;
    that "Exception ignored" report is silenced, and every other one still prints."""
    import sys

    from tune_lip.trainables.base import _quiet_termination

    class Raises:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def __del__(self) -> None:   # an exception here can only be reported, as in a GC callback
            raise self.exc

    before = sys.unraisablehook
    sys.unraisablehook = _quiet_termination
    try:
        Raises(SystemExit(1))
        assert capsys.readouterr().err == ""
        Raises(ValueError("a real one"))
        assert "a real one" in capsys.readouterr().err
    finally:
        sys.unraisablehook = before
