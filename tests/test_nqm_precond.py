"""The paper's preconditioned SGD on the NQM (Zhang et al. 2019, arXiv 1907.04164): exact vs Monte
Carlo, p = 0 is SGD, the paper's defaults and formula, the critical batch size growing with p."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from tune_lip.errors import ConfigError
from tune_lip.studies.loop import DIVERGED_LOSS
from tune_lip.studies.nqm import (
    NQMConfig,
    NQMLoop,
    critical_batch_size,
    curvatures,
    exact_lr_scaling,
    expected_loss_sgd,
    monte_carlo_loss,
    preconditioner,
    steps_to_target,
)
from tune_lip.tune.launch import check_spec, study_metrics
from tune_lip.tune.spec import LogUniform, load_spec


def _cfg(optimizer: dict, **over) -> NQMConfig:
    raw = {"seed": 0, "dim": 20, "dataset": {"batch_size": 4}, "budget": {"steps": 200}, "reports": 4,
           "optimizer": {"name": "precond_sgd", "precond_power": 0.5, **optimizer}}
    raw.update(over)
    return NQMConfig.from_dict(raw)


def _close(actual, expected, rtol: float) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=rtol, atol=0.0)


# ---------------------------------------------------------------------------- the paper's defaults

def test_defaults_are_the_papers_nqm():
    # §3 and the NQM simulations of Zhang et al.: d = 10^4, h_i = 1/i, C = H (the study's
    # `noise` is C in units of H). §3.3: P = H^p with 0 <= p <= 1 (p = 0 is plain SGD).
    cfg = NQMConfig.from_dict({"optimizer": {"name": "precond_sgd"}})
    assert (cfg.dim, cfg.power, cfg.noise) == (10_000, 1.0, 1.0)
    _close(curvatures(cfg), 1.0 / np.arange(1, 10_001), rtol=1e-15)
    assert cfg.optimizer.precond_power == 0.0
    assert NQMConfig.from_dict({"optimizer": {"name": "precond_sgd", "precond_power": 1.0}}).optimizer.precond_power == 1
    _close(preconditioner(_cfg({"precond_power": 1.0}, dim=5)), np.arange(1, 6), rtol=1e-15)   # H^-1 = diag(i)


def test_closed_form_is_the_papers_per_dimension_risk():
    # §3.3: dimension i behaves as SGD with curvature h_i^(1-p) and noise c_i h_i^(-p): risk
    # (1 - a h^(1-p))^(2t) E l_i(0) + (1 - (1 - a h^(1-p))^(2t)) a c_i h^(-p) / (2B(2 - a h^(1-p))),
    # c_i = h_i, E l_i(0) = h_i/2 (theta_0 ~ N(0, I)). The paper states it as a bound, without the
    # second (1 - ...) factor; with it, it is the exact expected risk.
    a, p, B, t = 0.3, 0.5, 8, 150
    cfg = _cfg({"lr": a, "precond_power": p}, dim=1000, dataset={"batch_size": B}, budget={"steps": t})
    h = curvatures(cfg)
    decay = (1 - a * h ** (1 - p)) ** (2 * t)
    paper = np.sum(decay * h / 2 + (1 - decay) * a * h * h**-p / (2 * B * (2 - a * h ** (1 - p))))
    _close(expected_loss_sgd(cfg), paper, rtol=1e-10)
    assert NQMLoop(cfg).train_for(t)["train_loss"] == pytest.approx(paper, rel=1e-10)


# ---------------------------------------------------------------------------- exact vs Monte Carlo

@pytest.mark.parametrize("optimizer, schedule", [
    ({"lr": 0.1}, "constant"),                                           # closed form
    ({"lr": 0.3, "precond_power": 0.75}, "one_cycle"),                  # per-step recursion
    ({"lr": 0.02, "momentum": 0.9}, "constant"),                         # heavy ball, preconditioned
    ({"lr": 0.01, "momentum": 0.9, "nesterov": True, "precond_power": 1.0}, "cosine"),
])
def test_exact_moments_agree_with_monte_carlo(optimizer, schedule):
    cfg = _cfg(optimizer, schedule=schedule)
    exact = expected_loss_sgd(cfg)
    mean, stderr = monte_carlo_loss(cfg, chains=1000)   # the same update on 1000 seeded chains
    # Unbiased within 4 standard errors (seeded: cannot flake); stderr is a few % of the loss, so
    # a missing or doubled preconditioner factor (tens of % here) fails by far.
    assert abs(mean - exact) < 4 * stderr, (mean, exact, stderr)
    assert stderr < 0.05 * exact
    loop = NQMLoop(cfg)
    assert loop.train_for(200)["train_loss"] == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.8, True)])
def test_without_noise_it_is_preconditioned_gradient_descent(momentum, nesterov):
    cfg = _cfg({"lr": 0.3, "momentum": momentum, "nesterov": nesterov}, noise=0.0)
    h = curvatures(cfg)
    theta, v = np.ones_like(h), np.zeros_like(h)
    for _ in range(200):                       # theta <- theta - lr P^-1 (g [+ mu v]), P = H^0.5
        g = h ** -0.5 * (h * theta)
        v = momentum * v + g
        theta = theta - 0.3 * (g + momentum * v if nesterov else v)
    _close(expected_loss_sgd(cfg), 0.5 * np.sum(h * theta**2), rtol=1e-10)


# ---------------------------------------------------------------------------- p = 0 is SGD

@pytest.mark.parametrize("optimizer, schedule", [
    ({"lr": 0.05}, "constant"),
    ({"lr": 0.05, "momentum": 0.9}, "constant"),
    ({"lr": 0.3, "momentum": 0.5, "nesterov": True}, "one_cycle"),
])
def test_power_zero_is_sgd(optimizer, schedule):
    pre = _cfg({**optimizer, "precond_power": 0.0}, schedule=schedule)
    sgd = _cfg({**optimizer, "name": "sgd", "precond_power": 0.0}, schedule=schedule)
    lrs = np.array([0.01, 0.05, 0.2])
    _close(expected_loss_sgd(pre, lrs), expected_loss_sgd(sgd, lrs), rtol=1e-15)
    a, b = NQMLoop(pre), NQMLoop(sgd)
    for n in (70, 130):
        _close(a.train_for(n)["train_loss"], b.train_for(n)["train_loss"], rtol=1e-15)
    _close(a.evaluate()["test_loss"], b.evaluate()["test_loss"], rtol=1e-15)


# ---------------------------------------------------------------------------- the paper's finding

def test_preconditioning_extends_perfect_scaling_to_larger_batches():
    # Zhang et al.'s headline (abstract; §3.3): with the lr tuned per batch size, the steps to a
    # target loss halve with every doubling of b (perfect scaling) up to a critical batch size,
    # and preconditioning (larger p) moves that critical batch size up. A small NQM (d = 1000,
    # h_i = 1/i, C = H) and a target 1/10 of the initial loss keep this fast.
    batch_sizes = [1, 4, 16, 64, 256, 1024, 4096, 16384]
    lrs = np.geomspace(1e-5, 2.0, 40)
    found = {}
    for p in (0.0, 0.5, 0.75):
        cfg = _cfg({"precond_power": p}, dim=1000)
        target = 0.1 * 0.5 * float(curvatures(cfg).sum())
        steps, b_crit = critical_batch_size(cfg, batch_sizes, target, lrs=lrs)
        assert np.all(np.isfinite(steps)) and np.all(np.diff(steps) <= 0)
        # Perfect scaling at the small batches: 4x the batch, ~1/4 the steps.
        assert steps[0] / steps[1] == pytest.approx(4.0, rel=0.1)
        found[p] = b_crit
    # Measured b_crit = E_min / S_min: 26 (p = 0), 150 (p = 0.5), 554 (p = 0.75): each step up in p
    # multiplies it (the steps at b = 1 fall too here: 3325, 1214, 1126).
    assert 3 * found[0.0] < found[0.5] and 3 * found[0.5] < found[0.75], found


def test_steps_to_target_is_the_first_step_below_the_target():
    cfg = _cfg({"lr": 0.4}, dim=200, dataset={"batch_size": 256})
    target = 0.6
    n = steps_to_target(cfg, target)
    assert expected_loss_sgd(cfg, steps=int(n)) <= target < expected_loss_sgd(cfg, steps=int(n) - 1)
    # Below the steady-state risk of a large lr at batch 1 the target is never reached.
    assert math.isinf(steps_to_target(cfg, 1e-3, lr=1.5, batch_size=1, max_steps=10**6))
    with pytest.raises(ValueError, match="constant lr without momentum"):
        steps_to_target(_cfg({"momentum": 0.9}), 0.1)


# ---------------------------------------------------------------------------- the loop, config, space

def test_state_dict_continues_exactly():
    cfg = _cfg({"lr": 0.05, "momentum": 0.9})
    full = NQMLoop(cfg)
    expected = [full.train_for(n)["train_loss"] for n in (70, 130)]
    first = NQMLoop(cfg)
    head = first.train_for(70)["train_loss"]
    second = NQMLoop(cfg)
    second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    # Exact on purpose: a restored loop promises the uninterrupted run's bits (same process).
    assert [head, second.train_for(130)["train_loss"]] == expected


def test_unstable_lr_ends_diverged():
    # Stable iff lr * h_1^(1-p) < 2; h_1 = 1 for every p, so lr = 2.5 diverges.
    loop = NQMLoop(_cfg({"lr": 2.5}, budget={"steps": 5000}))
    m = loop.train_for(5000)
    assert m["diverged"] and m["train_loss"] == DIVERGED_LOSS and m["steps"] < 5000


@pytest.mark.parametrize("optimizer, key", [
    ({"name": "sgd", "precond_power": 0.5}, "optimizer"),        # the power needs precond_sgd
    ({"name": "adam", "precond_power": 0.5}, "optimizer"),
    ({"name": "precond_sgd", "precond_power": 1.5}, "optimizer"),  # the paper's range is [0, 1]
    ({"name": "precond_sgd", "precond_power": -0.1}, "optimizer"),
    ({"name": "precond_sgd", "precond_power": "half"}, "optimizer"),
    ({"name": "precond_sgd", "power": 0.5}, "optimizer.power"),    # a typo names the key
])
def test_config_errors_name_the_key(optimizer, key):
    with pytest.raises(ConfigError) as info:
        NQMConfig.from_dict({"optimizer": optimizer})
    assert info.value.key == key


def test_config_round_trips():
    cfg = _cfg({"lr": 0.2, "precond_power": 0.25, "momentum": 0.5})
    assert NQMConfig.from_dict(cfg.to_dict()) == cfg


def test_shipped_space_brackets_the_exact_optima():
    spec = load_spec("nqm_precond_lr_batch", studies=study_metrics())
    cfg = NQMConfig.from_dict(check_spec(spec))
    assert spec.study == "nqm" and spec.metric == "train_loss" and spec.mode == "min"
    assert cfg.optimizer.name == "precond_sgd" and cfg.optimizer.precond_power == 0.5
    assert (cfg.dim, cfg.power, cfg.noise) == (10_000, 1.0, 1.0)          # the paper's NQM
    domain = spec.domains()["optimizer.lr"]
    assert isinstance(domain, LogUniform)
    batch_sizes = [p["dataset.batch_size"] for p in spec.grid_points()]
    lr_stars, _ = exact_lr_scaling(cfg, batch_sizes, lr_range=(1e-5, 10.0))
    # Every exact optimum lies well inside the searched range (the YAML's comment lists them).
    assert np.all(lr_stars > 3 * domain.lo) and np.all(lr_stars * 1.5 < domain.hi)
    # lr* ~ b at the small batches (the SDE regime), saturating below the stability limit 2.
    assert lr_stars[4] / lr_stars[0] == pytest.approx(16.0, rel=0.02) and lr_stars[-1] < 2.0
