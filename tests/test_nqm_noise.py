"""The NQM's gradient noise scale: the closed form (`tune_lip.studies.nqm_noise`) against what the
loop reports and against a Monte Carlo measurement of McCandlish et al.'s estimator."""

from __future__ import annotations

import numpy as np
import pytest

from tune_lip.studies.nqm import NQMConfig, NQMLoop, curvatures
from tune_lip.studies.nqm_noise import gradient_statistics, hessian_noise_scale, simple_noise_scale


def _cfg(**over):
    raw = {"dim": 200, "dataset": {"batch_size": 16}, "optimizer": {"lr": 0.2},
           "budget": {"steps": 300}, "reports": 3}
    raw.update(over)
    return NQMConfig.from_dict(raw)


def test_loop_reports_the_closed_form_at_its_moments():
    cfg = _cfg()
    loop = NQMLoop(cfg)
    h = curvatures(cfg)
    first = simple_noise_scale(h, np.ones(cfg.dim), cfg.noise)   # at θ₀: Σh / Σh²
    scales = []
    for _ in range(3):
        m = loop.train_for(100)
        exact = gradient_statistics(h, loop.moments[0], cfg.noise)
        assert m["noise_scale"] == pytest.approx(exact["noise_scale"], rel=1e-12)
        assert m["grad_noise"] == pytest.approx(cfg.noise * h.sum(), rel=1e-12)
        assert m["noise_scale"] == pytest.approx(m["grad_noise"] / m["grad_norm_sq"], rel=1e-12)
        scales.append(m["noise_scale"])
    assert first < scales[0] < scales[1] < scales[2]   # |G|² falls as training goes on


def test_closed_form_matches_sampled_gradients():
    # Draw θ from the iterate's distribution and per-example gradients Hθ + ξ, ξ ~ N(0, noise·H):
    # McCandlish et al.'s two-batch-size estimates of |G|² and tr Σ, averaged, then divided,
    # agree with the closed form.
    rng = np.random.default_rng(0)
    cfg = _cfg(noise=0.5)
    h = curvatures(cfg)
    theta_sq = np.linspace(2.0, 0.1, cfg.dim)
    small, big, draws = 4, 64, 4000
    theta = rng.standard_normal((draws, cfg.dim)) * np.sqrt(theta_sq)
    def batch_grad(b):
        return h * theta + rng.standard_normal(theta.shape) * np.sqrt(cfg.noise * h / b)
    g_small, g_big = (np.sum(batch_grad(b) ** 2, axis=1).mean() for b in (small, big))
    g_sq = (big * g_big - small * g_small) / (big - small)
    trace = (g_small - g_big) / (1 / small - 1 / big)
    exact = gradient_statistics(h, theta_sq, cfg.noise)
    assert trace == pytest.approx(exact["grad_noise"], rel=0.05)
    assert g_sq / exact["grad_norm_sq"] == pytest.approx(1.0, rel=0.05)
    assert trace / g_sq == pytest.approx(exact["noise_scale"], rel=0.08)


def test_adam_reports_the_chain_mean_and_divergence_the_floor():
    cfg = _cfg(dim=50, chains=8, optimizer={"name": "adam", "lr": 0.01})
    loop = NQMLoop(cfg)
    m = loop.train_for(50)
    theta_sq = (loop.chains.theta ** 2).mean(axis=0)
    assert m["noise_scale"] == pytest.approx(simple_noise_scale(curvatures(cfg), theta_sq, cfg.noise))
    diverged = NQMLoop(_cfg(optimizer={"lr": 3.0})).train_for(300)
    assert diverged["diverged"] and np.isfinite(diverged["noise_scale"])


def test_hessian_noise_scale_is_b_simple_when_the_curvature_is_flat():
    h, theta_sq = np.full(5, 0.3), np.linspace(1, 2, 5)
    assert hessian_noise_scale(h, theta_sq, 2.0) == pytest.approx(simple_noise_scale(h, theta_sq, 2.0))
