"""Empirical robustness beside the certificate: PGD-L2 at the certified radius (test_robust_acc),
and certified acc <= empirical robust acc <= clean acc on every trial (a violation is a bug)."""

from __future__ import annotations

import math

import pytest
import torch

from tune_lip.nn.losses import certified_correct, pgd_l2_robust
from tune_lip.studies.lipschitz import (
    CertificateWarning,
    LipschitzConfig,
    LipschitzLoop,
    check_certificate,
)

STRICT = pytest.mark.filterwarnings("error::tune_lip.studies.lipschitz.CertificateWarning")


def test_pgd_breaks_exactly_the_linear_samples_within_the_radius():
    """Two classes, a linear score difference w.x: the exact l2 distance to the boundary is
    |w.x| / |w|, and PGD (no pixel box) breaks a sample iff that distance is <= eps."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2, 12, generator=gen, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(w)
    x = torch.randn(200, 3, 2, 2, generator=gen, dtype=torch.float64)
    scores = model(x)
    labels = scores.argmax(1)                                        # all correct at x
    distance = ((scores[:, 0] - scores[:, 1]).abs() / (w[0] - w[1]).norm()).detach()
    eps = float(distance.median().detach())
    robust = pgd_l2_robust(model, x, labels, eps=eps, steps=5)
    far, near = distance > eps * 1.01, distance < eps * 0.99
    assert robust[far].all() and not robust[near].any()


@STRICT
def test_loop_reports_test_robust_acc_between_certified_and_clean():
    loop = LipschitzLoop(LipschitzConfig.from_dict({
        "seed": 1, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64, "channels": 3},
        "model": {"name": "aol_mlp", "width": 192, "depth": 3}, "augmentation": "none", "loss": {"eps": 0.5},
        "optimizer": {"lr": 0.2}, "budget": {"steps": 40}, "eval": {"eps": 1.6, "robust_steps": 5}}))
    loop.train_for(40)
    out = loop.evaluate_test()
    assert out["test_certified_acc"] <= out["test_robust_acc"] <= out["test_acc"]
    assert 0 < out["test_acc"] and out["test_robust_acc"] < out["test_acc"]   # eps 1.6 breaks some: the attack works
    off = LipschitzLoop(LipschitzConfig.from_dict({
        "dataset": {"name": "synthetic", "batch_size": 32}, "model": {"name": "aol_mlp", "width": 64, "depth": 2},
        "budget": {"steps": 2}, "eval": {"robust_steps": 0}}))
    assert "test_robust_acc" not in off.evaluate_test()


@STRICT
def test_certified_samples_survive_the_attack_on_a_trained_aol_net():
    """Sample by sample: every certified test image stays correct under PGD (the certificate's
    promise), on a net trained at a radius where both sets are non-trivial."""
    loop = LipschitzLoop(LipschitzConfig.from_dict({
        "seed": 2, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64},
        "model": {"name": "aol_mlp", "width": 64, "depth": 3}, "augmentation": "none",
        "optimizer": {"lr": 0.2}, "budget": {"steps": 40}}))
    loop.train_for(40)
    loop.model.eval()
    x = loop.data.test_images
    from tune_lip.data.datasets import convert_and_center

    inputs = convert_and_center(x, loop.mean, loop.std)
    y = loop.data.test_labels
    with torch.no_grad():
        certified = certified_correct(loop.model(inputs), y, 0.3)
    robust = pgd_l2_robust(loop.model, inputs, y, eps=0.3, steps=10)
    assert certified.any() and not (certified & ~robust).any()


def test_a_violation_warns_loudly_and_tests_raise():
    good = {"test_certified_acc": 0.5, "test_robust_acc": 0.6, "test_acc": 0.7}
    assert check_certificate(good)
    with pytest.warns(CertificateWarning, match="certificate violated"):
        assert not check_certificate({**good, "test_robust_acc": 0.4})
    with pytest.warns(CertificateWarning):
        assert not check_certificate({**good, "test_robust_acc": 0.8})
    assert math.isfinite(good["test_acc"])
