"""The Lipschitz loop's LR and momentum, step by step, against torch's OneCycleLR.

*Scaling Up Lipschitz Networks* builds ``OneCycleLR(optimizer, optimizer.lr, total_steps=...)``
with torch's defaults and steps it after every batch (lipschitz/training/scheduler.py,
lipschitz/training/trainer.py), so momentum cycles 0.95 -> 0.85 -> 0.95 over the configured
0.9. *1-Lipschitz Layers Compared* builds ``OneCycleLR(optimizer, max_lr, epochs=E,
steps_per_epoch=1)`` and steps it once per epoch (trainer/lr_scheduler/__init__.py,
trainer/train_module.py): ``schedule.interval: epoch``.
"""

from __future__ import annotations

import pytest
import torch

from tune_lip.studies.budget import ScheduleConfig, momentum_at
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop


def _loop(schedule, *, steps: int, num_train: int = 320) -> LipschitzLoop:
    return LipschitzLoop(LipschitzConfig.from_dict({
        "seed": 0, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": num_train, "num_test": 8,
                               "validation": 0},
        "model": {"name": "aol_mlp", "width": 64, "depth": 2}, "augmentation": "none",
        "optimizer": {"name": "sgd", "lr": 0.3, "momentum": 0.9, "nesterov": True},
        "schedule": schedule, "budget": {"steps": steps}, "reports": 1}))


def _record(loop: LipschitzLoop, steps: int) -> list[tuple[float, float]]:
    """(lr, momentum) each optimizer step of ``loop`` used."""
    seen: list[tuple[float, float]] = []
    step = loop.optimizer.step

    def recording_step(*args, **kwargs):
        group = loop.optimizer.param_groups[0]
        seen.append((group["lr"], group["momentum"]))
        return step(*args, **kwargs)

    loop.optimizer.step = recording_step  # type: ignore[method-assign]
    loop.train_for(steps)
    return seen


def _torch_one_cycle(*, total_steps: int | None = None, epochs: int | None = None,
                     steps_per_tick: int = 1, steps: int) -> list[tuple[float, float]]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3, momentum=0.9, nesterov=True)
    if epochs is None:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.3, total_steps=total_steps)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, epochs=epochs, steps_per_epoch=1)
    out = []
    for t in range(steps):
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        if (t + 1) % steps_per_tick == 0 and (epochs is None or (t + 1) // steps_per_tick < epochs):
            sched.step()
    return out


def test_per_step_lr_and_momentum_match_torch_one_cycle():
    total = 40
    ours = _record(_loop("one_cycle", steps=total), total)
    theirs = _torch_one_cycle(total_steps=total, steps=total)
    assert len(ours) == total
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), torch.tensor(theirs, dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)
    momenta = [m for _, m in ours]
    assert momenta[0] == pytest.approx(0.95) and min(momenta) == pytest.approx(0.85, abs=2e-3)


def test_per_epoch_one_cycle_matches_torch_stepped_per_epoch():
    # 320 images / batch 32 = 10 steps per epoch, 5 epochs: torch ticks once per epoch.
    ours = _record(_loop({"name": "one_cycle", "interval": "epoch"}, steps=50), 50)
    theirs = _torch_one_cycle(epochs=5, steps_per_tick=10, steps=50)
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), torch.tensor(theirs, dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)
    assert len({lr for lr, _ in ours[:10]}) == 1          # constant within an epoch


def test_momentum_cycling_can_be_switched_off():
    ours = _record(_loop({"name": "one_cycle", "cycle_momentum": False}, steps=10), 10)
    assert {m for _, m in ours} == {0.9}                  # the configured momentum stays
    assert momentum_at(0.5, schedule=ScheduleConfig("constant")) is None


def test_schedule_options_are_validated():
    from tune_lip.errors import ConfigError

    for bad in ({"name": "one_cycle", "interval": "batch"}, {"name": "one_cycle", "base_momentum": 0.99}):
        with pytest.raises(ConfigError) as info:
            _loop(bad, steps=4)
        assert info.value.key == "schedule"
    with pytest.raises(ConfigError) as info:
        LipschitzLoop(LipschitzConfig.from_dict({
            "dataset": {"name": "synthetic", "batch_size": 32}, "model": {"name": "aol_mlp", "width": 64, "depth": 2},
            "schedule": {"name": "one_cycle", "interval": "epoch"}, "budget": {"wall_hours": 0.001}}))
    assert info.value.key == "schedule.interval"
