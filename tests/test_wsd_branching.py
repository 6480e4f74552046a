"""WSD branching (issue 16): wsd's LR shape, annealed forks equal fresh runs, the main line resumes
bit-identically, charged steps add up, and the spec's scheduler.branching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tune_lip.errors import UserError
from tune_lip.studies.budget import ScheduleConfig, branch_horizons, cooldown_steps, lr_at
from tune_lip.studies.loop import train_to_branch
from tune_lip.studies.nqm import NQMConfig, NQMLoop

WSD = {"name": "wsd", "warmup_steps": 4, "cooldown": 0.2}


def test_wsd_shape_warmup_constant_decay():
    s = ScheduleConfig.from_dict(WSD)
    lrs = [lr_at(t / 30, peak_lr=2.0, schedule=s, total_steps=30) for t in range(30)]
    assert lrs[:4] == [0.5, 1.0, 1.5, 2.0]
    assert lrs[4:24] == [2.0] * 20                       # stable until the last cooldown_steps(30) = 6
    assert all(a > b for a, b in zip(lrs[23:], lrs[24:]))
    assert lrs[-1] == pytest.approx(2.0 / 7)             # decays to about 0, never a wasted 0
    sq = ScheduleConfig.from_dict({**WSD, "cooldown_shape": "1-sqrt"})
    assert lr_at(29 / 30, peak_lr=1.0, schedule=sq, total_steps=30) == pytest.approx(1 - (6 / 7) ** 0.5)
    assert [cooldown_steps(t, 0.2) for t in (1, 3, 10, 50)] == [1, 1, 2, 10]
    # horizon - cooldown never decreases: a longer run's stable phase covers a shorter one's
    assert all(t - cooldown_steps(t, 0.15) <= t + 1 - cooldown_steps(t + 1, 0.15) for t in range(1, 500))
    assert branch_horizons((0.1, 0.3, 0.9), 50) == [5, 15, 45, 50]


@pytest.mark.parametrize("bad", [{"cooldown": 1.0}, {"cooldown_shape": "cos"}, {"branch_at": [0.5, 0.2]},
                                 {"branch_at": [1.0]}, {"interval": "epoch"}, {"warmup_steps": -1}])
def test_wsd_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        ScheduleConfig.from_dict({**WSD, **bad})
    with pytest.raises(ValueError, match="needs schedule wsd"):
        ScheduleConfig.from_dict({"name": "cosine", "branch_at": [0.5]})


def _nqm(steps, **opt):
    return NQMLoop(NQMConfig.from_dict({"dim": 20, "noise": 1.0, "dataset": {"batch_size": 4},
                                        "optimizer": {"name": "sgd", "lr": 0.5, **opt},
                                        "budget": {"steps": steps},
                                        "schedule": {**WSD, "branch_at": [0.1, 0.3, 0.9]}}))


@pytest.mark.parametrize("opt", [{}, {"momentum": 0.9, "lr": 0.1}])
def test_nqm_annealed_rung_equals_a_fresh_run_of_that_budget(opt):
    loop = _nqm(200, **opt)
    for t in branch_horizons(loop.cfg.schedule.branch_at, 200):
        annealed = train_to_branch(loop, t, final=t == 200)
        fresh = _nqm(t, **opt)
        fresh.train_for(t)
        assert annealed["steps"] == t and annealed["annealed"]
        assert annealed["test_loss"] == pytest.approx(fresh.evaluate()["test_loss"], rel=1e-12)


def test_nqm_main_line_continues_as_if_it_never_forked():
    forked, straight = _nqm(200), _nqm(200)
    for t in (20, 60, 180):
        train_to_branch(forked, t, final=False)
        straight.train_for(t - cooldown_steps(t, 0.2) - straight.steps)
        assert forked.steps == straight.steps and forked.total_steps == 200
        np.testing.assert_array_equal(forked.moments, straight.moments)   # bit-identical on purpose


def test_charged_steps_add_up_to_the_budget():
    from tune_lip.trainables.nqm import NQMTrainable

    config = {"dim": 20, "noise": 1.0, "dataset": {"batch_size": 4}, "optimizer": {"name": "sgd", "lr": 0.5},
              "budget": {"steps": 200}, "schedule": {**WSD, "branch_at": [0.1, 0.3, 0.9]}}
    t = NQMTrainable(config=config)
    results = [t.train() for _ in range(4)]
    assert [r["steps"] for r in results] == [20, 60, 180, 200]
    assert [r["done"] for r in results] == [False, False, False, True]
    assert [r["cooldown_steps"] for r in results] == [4, 12, 36, 40]
    last = results[-1]
    assert last["stable_steps"] + last["cooldown_steps"] == 200
    assert last["charged_steps"] == 200 + 4 + 12 + 36
    assert [r["charged_steps"] for r in results[:3]] == [20, 60 + 4, 180 + 16]
    t.stop()


LIP = {"seed": 1, "dataset": {"name": "synthetic", "batch_size": 16, "num_train": 64, "num_test": 16},
       "model": {"name": "aol_mlp", "width": 32, "depth": 2}, "optimizer": {"lr": 0.1},
       "budget": {"steps": 20}, "schedule": {**WSD, "branch_at": [0.25, 0.5]}}


def _strip(result):
    keep = ("steps", "lr_now", "train_loss", "val_loss", "val_acc", "val_certified_acc", "test_loss",
            "stable_steps", "cooldown_steps", "charged_steps", "done")
    return {k: result[k] for k in keep if k in result}


def test_lipschitz_main_line_and_checkpoint_resume_bit_identically(tmp_path):
    from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop
    from tune_lip.trainables.lipschitz import LipschitzTrainable

    forked = LipschitzLoop(LipschitzConfig.from_dict(LIP))
    straight = LipschitzLoop(LipschitzConfig.from_dict(LIP))
    train_to_branch(forked, 5, final=False)
    train_to_branch(forked, 10, final=False)
    straight.train_for(forked.steps)
    for a, b in zip(forked.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)                        # bit-identical on purpose (same process)
    forked.train_for(4)
    straight.train_for(4)
    for a, b in zip(forked.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)

    whole = LipschitzTrainable(config=LIP)
    expected = [_strip(whole.train()) for _ in range(3)]
    first = LipschitzTrainable(config=LIP)
    head = [_strip(first.train())]
    checkpoint = first.save(str(tmp_path / "ckpt"))
    second = LipschitzTrainable(config=LIP)
    second.restore(checkpoint)
    assert head + [_strip(second.train()) for _ in range(2)] == expected
    assert expected[-1]["done"] and "test_loss" in expected[-1]
    for t in (whole, first, second):
        t.stop()


def _spec(tmp_path, schedule, budget="{steps: 100}", scheduler="{name: asha, branching: true}"):
    from tune_lip.tune.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text(f"study: nqm\nmetric: train_loss\nmode: min\nbudget: {budget}\nscheduler: {scheduler}\n"
                    f"space:\n  optimizer: {{name: sgd, lr: {{loguniform: [0.01, 1.0]}}}}\n  schedule: {schedule}\n")
    return load_spec(str(path))


def test_branching_fills_branch_at_with_asha_rungs(tmp_path):
    from tune_lip.tune.spec_sections import branch_fractions, with_branching

    spec = _spec(tmp_path, "{name: wsd, warmup_steps: 2}")
    assert branch_fractions(spec.scheduler) == (0.1, 0.3, 0.9)
    space = with_branching(spec.space, spec.scheduler, spec.budget, where=spec.path)
    assert space["schedule"] == {"name": "wsd", "warmup_steps": 2, "branch_at": [0.1, 0.3, 0.9]}
    assert "branch_at" not in spec.space["schedule"]
    assert with_branching(space, spec.scheduler, spec.budget, where=spec.path) == space   # idempotent


@pytest.mark.parametrize("schedule, budget, key", [
    ("one_cycle", "{steps: 100}", "space.schedule.name"),
    ("{name: wsd, branch_at: [0.5]}", "{steps: 100}", "space.schedule.branch_at"),
    ("{name: {choice: [wsd, cosine]}}", "{steps: 100}", "space.schedule"),
    ("wsd", "{wall_hours: 0.1}", "budget"),
])
def test_branching_without_a_fixed_wsd_schedule_is_a_user_error(tmp_path, schedule, budget, key):
    # Raised while the spec loads: before Ray starts or an experiment directory is written.
    with pytest.raises(UserError) as err:
        _spec(tmp_path, schedule, budget)
    assert err.value.key == key and err.value.fix and "s.yaml" in str(err.value)


def test_branching_only_with_asha(tmp_path):
    with pytest.raises(UserError, match="scheduler.branching"):
        _spec(tmp_path, "wsd", scheduler="{name: none, branching: true}")
