"""The Ray-free Lipschitz loop: determinism, exact continuation, divergence, budgets."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from helpers import run_slices

from tune_lip.studies.budget import lr_at
from tune_lip.studies.lipschitz import DIVERGED_LOSS, LipschitzConfig, LipschitzLoop


def _cfg(**over) -> LipschitzConfig:
    raw = {"seed": 3, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64},
           "model": {"name": "aol_mlp", "width": 64, "depth": 3},
           "augmentation": {"name": "crop_flip", "crop": 1},
           "optimizer": {"lr": 0.2}, "budget": {"steps": 24}, "reports": 4, "eval": {"extra_eps": [0.05]}}
    raw.update(over)
    return LipschitzConfig.from_dict(raw)


_run = partial(run_slices, steps=6)  # one loop's reports, without wall_seconds


def test_same_seed_same_metrics():
    # Exact on purpose: the loop promises bit-identical runs for the same seed on the same machine.
    assert _run(LipschitzLoop(_cfg()), 3) == _run(LipschitzLoop(_cfg()), 3)


def test_different_seed_differs():
    assert _run(LipschitzLoop(_cfg()), 1) != _run(LipschitzLoop(_cfg(seed=4)), 1)


def test_state_dict_continues_bit_identically():
    straight = LipschitzLoop(_cfg())
    expected = _run(straight, 4)
    first = LipschitzLoop(_cfg())
    head = _run(first, 2)
    state = first.state_dict()
    resumed = LipschitzLoop(_cfg())  # a fresh process would build exactly this
    resumed.load_state_dict(state)
    # Exact on purpose: a resumed loop repeats the uninterrupted run's bits (same process, same seed).
    assert head + _run(resumed, 2) == expected
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)  # bit-identical, not just close


def test_batch_indices_cover_each_epoch_once():
    # 256 images less 32 held out for validation: 7 batches of 32 are one epoch.
    loop = LipschitzLoop(_cfg(dataset={"name": "synthetic", "batch_size": 32, "num_train": 256, "validation": 32}))
    n, b = loop.data.num_train, loop.cfg.dataset.batch_size
    assert n == 224
    seen = torch.cat([loop.batch_indices(t) for t in range(n // b)])
    assert sorted(seen.tolist()) == list(range(n))  # one epoch = a permutation
    # batches that straddle an epoch boundary are still full
    odd = LipschitzLoop(_cfg(dataset={"name": "synthetic", "batch_size": 100, "num_train": 256}))
    assert len(odd.batch_indices(2)) == 100


def test_budget_ends_training():
    loop = LipschitzLoop(_cfg())
    loop.train_for(1000)
    assert loop.steps == 24 and loop.finished and loop.fraction == 1.0
    epochs = LipschitzLoop(_cfg(budget={"epochs": 2}))
    assert epochs.total_steps == 2 * (256 - 26) // 32   # epochs count the images left after the 10% split


def test_lr_is_the_configured_peak_and_lr_now_the_schedules():
    loop = LipschitzLoop(_cfg())                                   # one_cycle (the default), peak 0.2
    cfg = loop.cfg.schedule
    reports = [loop.train_for(6) for _ in range(4)]
    assert all(m["lr"] == 0.2 for m in reports)                    # the config's value, passed through
    for m in reports:   # the LR of the slice's last step: step steps - 1 of 24
        assert m["lr_now"] == pytest.approx(lr_at((m["steps"] - 1) / 24, peak_lr=0.2, schedule=cfg,
                                                  total_steps=24), rel=1e-12)
    assert reports[-1]["lr_now"] < 1e-3 * 0.2                      # OneCycle ends ~1e4 below the peak
    # Before any step, lr_now is the LR the first step will take (peak / div_factor).
    assert LipschitzLoop(_cfg()).train_for(0)["lr_now"] == pytest.approx(0.2 / 25, rel=1e-12)


def test_huge_lr_ends_as_diverged_with_finite_worst_values():
    # An AOL net only stalls at huge LRs (its rescaling undoes the weight scale); a CPL net's
    # unnormalised bias overflows to NaN (at 1e10 SU's CPL-LCN only reaches a huge finite loss in 6 steps).
    loop = LipschitzLoop(_cfg(model={"name": "cpl_convnet", "width": 8, "depth": 1},
                              optimizer={"name": "sgd", "lr": 1e20, "momentum": 0.9}, schedule="constant"))
    metrics = loop.train_for(6)
    metrics.update(loop.evaluate())
    metrics.update(loop.evaluate_test())
    assert metrics["diverged"] is True and loop.finished
    assert metrics["train_loss"] == DIVERGED_LOSS and metrics["val_certified_acc"] == 0.0
    assert metrics["val_loss"] == metrics["test_loss"] == DIVERGED_LOSS and metrics["test_certified_acc"] == 0.0
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    # A diverged loop trains no further (as the sphere and scaling loops): steps stay where they were.
    again = loop.train_for(6)
    assert again["steps"] == metrics["steps"] and again["diverged"] and again["train_loss"] == DIVERGED_LOSS


def test_certified_never_exceeds_clean_accuracy():
    loop = LipschitzLoop(_cfg())
    for m in _run(loop, 2):
        m.update(loop.evaluate_test())
        for split in ("val", "test"):
            assert m[f"{split}_certified_acc@0.05"] >= m[f"{split}_certified_acc"]  # smaller radius certifies more
            assert m[f"{split}_acc"] >= m[f"{split}_certified_acc@0.05"]


def test_training_learns_the_synthetic_task():
    loop = LipschitzLoop(_cfg(budget={"steps": 120}, augmentation="none"))
    before = loop.evaluate()["val_acc"]
    after = _run(loop, 1, steps=120)[0]["val_acc"]
    assert after > max(before, 0.5)
    assert loop.evaluate_test()["test_acc"] > 0.5   # and it generalises beyond the training images


def test_resolved_config_round_trips():
    cfg = _cfg()
    assert LipschitzConfig.from_dict(cfg.to_dict()) == cfg  # what checkpoints save can be rebuilt


@pytest.mark.parametrize("draws", ["per_batch", "per_sample"])
def test_su_augmentation_trains_reproducibly_and_resumes(draws):
    """SU's color_crop_flip_erase (one draw per batch, on the centred batch) and its per-sample
    variant run in the loop; the augmentation generator is checkpointed, so a resumed run repeats."""
    over = {"dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64, "channels": 3},
            "augmentation": {"name": "color_crop_flip_erase", "draws": draws}}
    straight = LipschitzLoop(_cfg(**over))
    expected = _run(straight, 2)
    first = LipschitzLoop(_cfg(**over))
    head = _run(first, 1)
    resumed = LipschitzLoop(_cfg(**over))
    resumed.load_state_dict(first.state_dict())
    assert head + _run(resumed, 1) == expected
    assert all(math.isfinite(m["train_loss"]) for m in expected)
