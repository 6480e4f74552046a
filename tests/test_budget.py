"""Budgets resolve to step counts; schedules are pure functions of the budget fraction."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from tune_lip.errors import UserError
from tune_lip.studies.budget import (
    Budget,
    ScheduleConfig,
    lookup_step_seconds,
    lr_at,
    parse_budget,
    schedule_clock,
)


def test_step_counts_per_kind():
    assert parse_budget({"steps": 100}, where="x").total_steps(batch_size=64, num_train=1000) == 100
    # 2 epochs of 1000 examples at batch 64: 2000 // 64 full batches
    assert parse_budget({"epochs": 2}, where="x").total_steps(batch_size=64, num_train=1000) == 31
    assert parse_budget({"examples": 640}, where="x").total_steps(batch_size=64, num_train=10) == 10
    ref = parse_budget({"reference_hours": 1, "reference": "A100"}, where="x")
    assert ref.total_steps(batch_size=64, num_train=10, step_seconds=0.5) == 7200
    assert parse_budget({"wall_hours": 0.5}, where="x").total_steps(batch_size=8, num_train=10) is None


def test_progress_attr_and_max():
    assert Budget("steps", 50).progress_attr == "steps"
    assert Budget("epochs", 2.0).progress_max(num_train=100) == 200.0
    assert Budget("reference_hours", 1.0, reference="A100").progress_attr == "reference_seconds"
    assert Budget("wall_hours", 0.5).progress_max() == 1800.0
    assert Budget("wall_hours", 0.5).hardware_dependent


@pytest.mark.parametrize("raw, key", [
    ({"steps": 0}, "budget.steps"),
    ({"steps": 1.5}, "budget.steps"),
    ({"steps": 10, "epochs": 2}, "budget"),
    ({"hours": 1}, "budget.hours"),
    ({"reference_hours": 1}, "budget.reference"),
    ({"epochs": 1, "reference": "A100"}, "budget.reference"),
    ("ten steps", "budget"),
])
def test_bad_budgets_name_the_key(raw, key):
    with pytest.raises(UserError) as err:
        parse_budget(raw, where="space.yaml")
    assert err.value.line().startswith(f"space.yaml: {key}:")


def test_one_cycle_matches_torch_step_for_step():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    total = 37
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=total)
    cfg = ScheduleConfig("one_cycle")
    for step in range(total):
        assert math.isclose(opt.param_groups[0]["lr"], lr_at(step / total, peak_lr=0.3, schedule=cfg,
                                                             total_steps=total), rel_tol=1e-9, abs_tol=1e-12)
        opt.step()
        sched.step()


@pytest.mark.parametrize("name, start, mid, end", [
    ("constant", 1.0, 1.0, 1.0), ("cosine", 1.0, 0.5, 0.0), ("linear", 1.0, 0.5, 0.0)])
def test_simple_schedules(name, start, mid, end):
    cfg = ScheduleConfig(name)
    assert [lr_at(f, peak_lr=1.0, schedule=cfg) for f in (0.0, 0.5, 1.0)] == pytest.approx([start, mid, end])


def test_warmup_ramps_linearly():
    cfg = ScheduleConfig("cosine", warmup=0.1)
    assert lr_at(0.05, peak_lr=2.0, schedule=cfg) == pytest.approx(1.0)
    assert lr_at(0.1, peak_lr=2.0, schedule=cfg) == pytest.approx(2.0)


def test_calibration_lookup_exact_and_interpolated():
    table = pd.DataFrame({"accelerator": ["A100"] * 2, "model_key": ["m"] * 2, "batch_size": [64, 256],
                          "step_seconds": [0.01, 0.04]})
    assert lookup_step_seconds(table, accelerator="a100", model_key="m", batch_size=64) == 0.01
    # halfway in log b between 64 and 256 -> geometric mean of the times
    assert lookup_step_seconds(table, accelerator="A100", model_key="m", batch_size=128) == pytest.approx(0.02)
    with pytest.raises(UserError, match="outside the calibrated range"):
        lookup_step_seconds(table, accelerator="A100", model_key="m", batch_size=1024)
    with pytest.raises(UserError, match="no calibration"):
        lookup_step_seconds(table, accelerator="T4", model_key="m", batch_size=64)


def test_step_decay_drops_at_its_milestones_per_epoch_as_multisteplr():
    # SVAG's preresnet32 (hparams/cifar10_hparams_dict.py): lr 0.8, x0.1 at epochs 80 and 120 of 160,
    # applied at the start of an epoch (utils.py LR_WD_Scheduler, epoch_wise=True) -- what torch's
    # MultiStepLR stepped once per epoch does. Here 4 steps per epoch (batch 25 of 100 examples).
    cfg = ScheduleConfig.from_dict({"name": "step", "milestones": [0.5, 0.75], "gamma": 0.1, "interval": "epoch"})
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.8)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[80, 120], gamma=0.1)
    total = 160 * 4
    for step in range(total):
        fraction, ticks = schedule_clock(step, schedule=cfg, total_steps=total, batch_size=25, num_train=100)
        assert math.isclose(lr_at(fraction, peak_lr=0.8, schedule=cfg, total_steps=ticks),
                            opt.param_groups[0]["lr"], rel_tol=1e-9), step
        opt.step()
        if step % 4 == 3:   # an epoch ends
            sched.step()
    # the milestones themselves: the last step of epoch 79 at 0.8, the first of epoch 80 at 0.08
    at = [lr_at(schedule_clock(t, schedule=cfg, total_steps=total, batch_size=25, num_train=100)[0],
                peak_lr=0.8, schedule=cfg) for t in (319, 320, 479, 480)]
    assert at == pytest.approx([0.8, 0.08, 0.08, 0.008])


def test_step_decay_per_step_and_at_an_unrounded_fraction():
    # The linear-scaling-rule runs: x0.1 at epoch 250 of 300 (preresnet32_simple); 250/300 is not
    # a binary fraction, so the milestone must count as reached at exactly that epoch.
    cfg = ScheduleConfig("step", milestones=(250 / 300,))
    assert lr_at(249 / 300, peak_lr=1.0, schedule=cfg) == 1.0
    assert lr_at(250 / 300, peak_lr=1.0, schedule=cfg) == pytest.approx(0.1)
    # interval step: the drop comes at the first step at or past the milestone fraction
    cfg = ScheduleConfig("step", milestones=(0.5,), gamma=0.5)
    assert [lr_at(t / 10, peak_lr=2.0, schedule=cfg, total_steps=10) for t in (4, 5)] == [2.0, 1.0]


@pytest.mark.parametrize("raw, match", [
    ({"name": "step"}, "needs milestones"),
    ({"name": "step", "milestones": [0.75, 0.5]}, "increasing"),
    ({"name": "step", "milestones": [80, 120]}, "budget fractions"),
    ({"name": "step", "milestones": [0.5], "gamma": 0}, "gamma"),
])
def test_bad_step_schedules_say_what_to_write(raw, match):
    with pytest.raises(ValueError, match=match):
        ScheduleConfig.from_dict(raw)
