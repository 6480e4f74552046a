"""The noisy quadratic model: exact moments vs Monte Carlo, LR-scaling ground truth, loop, Trainable."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from tune_lip.errors import ConfigError
from tune_lip.studies.lipschitz import DIVERGED_LOSS
from tune_lip.studies.nqm import (
    DIVERGE_FACTOR,
    NQMConfig,
    NQMLoop,
    curvatures,
    exact_lr_scaling,
    exact_optimal_lr,
    expected_loss_sgd,
    monte_carlo_loss,
)
from tune_lip.tune.launch import check_spec, study_metrics
from tune_lip.tune.spec import LogUniform, load_spec

# The shipped SGD space's quadratic and budget (search_spaces/nqm_sgd_lr_batch.yaml).
SHIPPED = {"dim": 100, "power": 1.0, "noise": 1.0, "budget": {"examples": 16384}}


def _cfg(**over) -> NQMConfig:
    raw = {"seed": 0, "dim": 20, "noise": 1.0, "dataset": {"batch_size": 4}, "optimizer": {"lr": 0.05},
           "budget": {"steps": 200}, "reports": 4}
    raw.update(over)
    return NQMConfig.from_dict(raw)


# ---------------------------------------------------------------------------- exact vs Monte Carlo

@pytest.mark.parametrize("optimizer, schedule", [
    ({"lr": 0.05}, "constant"),                                        # closed form
    ({"lr": 0.3}, "one_cycle"),                                        # per-step recursion
    ({"lr": 0.05, "momentum": 0.9}, "constant"),                       # heavy ball
    ({"lr": 0.02, "momentum": 0.9, "nesterov": True}, "cosine"),       # Nesterov, scheduled
])
def test_exact_moments_agree_with_monte_carlo(optimizer, schedule):
    cfg = _cfg(optimizer=optimizer, schedule=schedule)
    exact = expected_loss_sgd(cfg)
    mean, stderr = monte_carlo_loss(cfg, chains=1000)
    # An unbiased estimate within 4 standard errors (seeded, so this cannot flake); stderr is
    # ~1% of the loss, so a wrong recursion term (tens of %) would fail by far.
    assert abs(mean - exact) < 4 * stderr, (mean, exact, stderr)
    assert stderr < 0.03 * exact
    # The loop reports the same exact number, and its test_loss is that number too.
    loop = NQMLoop(cfg)
    assert loop.train_for(200)["train_loss"] == pytest.approx(exact, rel=1e-12)
    assert loop.evaluate()["test_loss"] == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.8, False), (0.8, True)])
def test_without_noise_the_loss_is_deterministic_gradient_descent(momentum, nesterov):
    cfg = _cfg(noise=0.0, optimizer={"lr": 0.3, "momentum": momentum, "nesterov": nesterov})
    h = curvatures(cfg)
    theta, v = np.ones_like(h), np.zeros_like(h)      # E θ0² = 1: θ0 = 1 has the same expected loss
    for _ in range(200):                               # torch.optim.SGD's update, written out
        g = h * theta
        v = momentum * v + g
        theta = theta - 0.3 * (g + momentum * v if nesterov else v)
    assert expected_loss_sgd(cfg) == pytest.approx(0.5 * np.sum(h * theta**2), rel=1e-10)


def test_expected_loss_vectorises_over_lr_and_marks_divergence():
    cfg = _cfg()
    lrs = np.array([0.01, 0.1, 1.0, 2.5, 10.0])
    losses = expected_loss_sgd(cfg, lrs)
    assert losses.shape == (5,)
    assert losses[:3] == pytest.approx([expected_loss_sgd(cfg, lr) for lr in lrs[:3]], rel=1e-12)
    assert 1e60 < losses[3] < math.inf    # lr·h_1 = 2.5 > 2: unstable, grows like 1.5^(2·200)
    assert math.isinf(losses[4])          # 9^400 overflows float64: inf, never NaN


# ---------------------------------------------------------------------------- LR-scaling ground truth

def test_exact_optimal_lr_grows_linearly_then_saturates():
    cfg = NQMConfig.from_dict(SHIPPED)
    lr = {b: exact_optimal_lr(cfg, b) for b in (2, 8, 256, 512, 1024)}
    assert lr[8] / lr[2] == pytest.approx(4.0, rel=0.02)     # small batches: lr* ∝ b
    assert lr[1024] / lr[512] < 1.05                          # past the critical batch: flat
    assert lr[1024] / lr[256] < 1.2
    assert lr[1024] < 2.0                                     # below the stability limit 2 / max h
    # It is a minimum: a little off either side is worse.
    for b, best in lr.items():
        nearby = min(expected_loss_sgd(cfg, best * f, b) for f in (0.97, 1.03))
        assert expected_loss_sgd(cfg, best, b) < nearby


def test_alpha_of_exact_optima_is_one_at_small_batches():
    # With a fixed examples budget and lr* ≪ 1/max h the dynamics are the SDE's, which depend on
    # lr/b only, so α = 1 exactly in the limit; the discrete-step correction grows with lr*·max h
    # (≤ 0.18 here). Measured: α = 0.996 over b = 1..16 (0.987 over 1..64), so 0.01 is a strict tolerance.
    lr_stars, alpha = exact_lr_scaling(NQMConfig.from_dict(SHIPPED), [1, 2, 4, 8, 16])
    assert abs(alpha - 1.0) < 0.01
    assert np.all(np.diff(lr_stars) > 0)
    # A fixed *steps* budget is a different question: a larger lr also travels further, so the
    # optimum grows much more slowly than b (measured α = 0.29 at 1000 steps).
    steps_cfg = NQMConfig.from_dict({**SHIPPED, "budget": {"steps": 1000}})
    _, alpha_steps = exact_lr_scaling(steps_cfg, [1, 2, 4, 8, 16])
    assert 0.1 < alpha_steps < 0.5


def test_exact_optimal_lr_refuses_a_range_that_does_not_bracket():
    with pytest.raises(ValueError, match="lr_range"):
        exact_optimal_lr(NQMConfig.from_dict(SHIPPED), 1, lr_range=(0.1, 1.0))


def test_shipped_spaces_load_validate_and_bracket_the_exact_optima():
    for name in ("nqm_sgd_lr_batch", "nqm_adam_lr_batch"):
        spec = load_spec(name, studies=study_metrics())
        config = check_spec(spec)
        assert spec.study == "nqm" and spec.metric == "train_loss" and spec.mode == "min"
        assert spec.searcher.per == ("dataset.batch_size",)
        assert NQMConfig.from_dict(config).budget.kind == "examples"
    spec = load_spec("nqm_sgd_lr_batch", studies=study_metrics())
    cfg = NQMConfig.from_dict(check_spec(spec))
    domain = spec.domains()["optimizer.lr"]
    assert isinstance(domain, LogUniform)
    batch_sizes = [p["dataset.batch_size"] for p in spec.grid_points()]
    lr_stars, _ = exact_lr_scaling(cfg, batch_sizes)
    # Every exact optimum lies well inside the searched range (a factor 3 from each end).
    assert np.all(lr_stars > 3 * domain.lo) and np.all(lr_stars * 1.5 < domain.hi)


# ---------------------------------------------------------------------------- the loop

def _slices(loop: NQMLoop, sizes: list[int]) -> list[dict]:
    out = []
    for n in sizes:
        m = loop.train_for(n)
        m.update(loop.evaluate())
        out.append(m)
    return out


@pytest.mark.parametrize("optimizer", [{"lr": 0.05}, {"lr": 0.05, "momentum": 0.9},
                                       {"name": "adam", "lr": 0.01}])
def test_state_dict_continues_exactly(optimizer):
    cfg = _cfg(optimizer=optimizer, chains=16)
    expected = _slices(NQMLoop(cfg), [70, 50, 80])
    first = NQMLoop(cfg)
    head = _slices(first, [70])
    state = pickle.loads(pickle.dumps(first.state_dict()))   # as a checkpoint stores it
    second = NQMLoop(cfg)
    second.load_state_dict(state)
    # Exact on purpose: a restored loop promises the uninterrupted run's bits (same process, same seed).
    assert head + _slices(second, [50, 80]) == expected


def test_closed_form_loss_does_not_depend_on_slicing():
    cfg = _cfg()
    a, b = NQMLoop(cfg), NQMLoop(cfg)
    _slices(a, [200])
    _slices(b, [1, 63, 7, 129])
    # Exact on purpose: the closed form is a pure function of the step count, so both loops make
    # the very same call. expected_loss_sgd sums the same terms in another order (np.sum, not a
    # BLAS dot), so it agrees to rounding only; the last bits depend on the CPU and the BLAS.
    assert a.loss() == b.loss()
    assert a.loss() == pytest.approx(expected_loss_sgd(cfg), rel=1e-12)


def test_adam_loss_is_a_seeded_chain_mean():
    cfg = _cfg(optimizer={"name": "adam", "lr": 0.01}, chains=16)
    m = NQMLoop(cfg).train_for(200)
    # Same seed, same draws: the loop's chains are monte_carlo_loss's (another code path, so to rounding).
    assert m["train_loss"] == pytest.approx(monte_carlo_loss(cfg, chains=16)[0], rel=1e-12)
    other_seed = _cfg(optimizer={"name": "adam", "lr": 0.01}, chains=16, seed=1)
    assert m["train_loss"] != pytest.approx(NQMLoop(other_seed).train_for(200)["train_loss"], rel=1e-6)
    assert m["train_loss"] < NQMLoop(cfg).loss()                          # it learned


def test_examples_budget_and_progress_counters():
    loop = NQMLoop(_cfg(budget={"examples": 1000}, dataset={"batch_size": 16}))
    assert loop.total_steps == 62
    m = loop.train_for(10_000)
    assert (m["steps"], m["examples"], m["lr"], m["lr_now"]) == (62, 992, 0.05, 0.05)   # constant lr
    assert loop.finished


def test_lr_is_the_configured_peak_and_lr_now_the_schedules():
    loop = NQMLoop(_cfg(schedule="one_cycle"))                        # 200 steps, peak 0.05
    reports = [loop.train_for(50) for _ in range(4)]
    assert all(m["lr"] == 0.05 for m in reports)                     # the config's value, passed through
    for m in reports:   # the LR of the slice's last step
        assert m["lr_now"] == pytest.approx(loop.lr(m["steps"] - 1), rel=1e-12)
    assert reports[-1]["lr_now"] < 1e-3 * 0.05                        # OneCycle ends ~1e4 below the peak
    # Step 59 (pct_start 0.3 of 200, less one) is where OneCycle peaks.
    assert NQMLoop(_cfg(schedule="one_cycle")).train_for(60)["lr_now"] == pytest.approx(0.05, rel=1e-12)


# Stability needs lr·max h < 2 for SGD and < 2(1 + μ) = 3.8 for heavy ball with μ = 0.9.
@pytest.mark.parametrize("optimizer", [{"lr": 3.0}, {"lr": 5.0, "momentum": 0.9}])
def test_divergent_lr_ends_diverged_with_finite_values(optimizer):
    loop = NQMLoop(_cfg(optimizer=optimizer, budget={"steps": 5000}))
    m = loop.train_for(5000)
    m.update(loop.evaluate())
    assert m["diverged"] and loop.finished
    assert m["train_loss"] == m["test_loss"] == DIVERGED_LOSS and math.isfinite(m["lr"])
    assert m["steps"] < 5000                    # stopped at a divergence check, not at the budget
    assert DIVERGE_FACTOR * loop.initial_loss < loop.loss() or not math.isfinite(loop.loss())


# ---------------------------------------------------------------------------- config errors

@pytest.mark.parametrize("raw, key", [
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"dim": 0}, "dim"),
    ({"dim": 2.5}, "dim"),
    ({"noise": -1.0}, "noise"),
    ({"chains": 0}, "chains"),
    ({"optimizer": {"name": "lion"}}, "optimizer"),
    ({"optimizer": {"lr": 0.1, "beta": 0.9}}, "optimizer.beta"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "optimizer"),
    ({"optimizer": {"lr": 0.0}}, "optimizer"),
    ({"dataset": {"batch_size": 0}}, "dataset"),
    ({"dataset": {"name": "cifar10"}}, "dataset.name"),
    ({"schedule": "warm"}, "schedule"),
    ({"budget": {"epochs": 3}}, "budget"),
    ({"budget": {"steps": -1}}, "budget.steps"),
])
def test_config_errors_name_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        NQMConfig.from_dict(raw)
    assert info.value.key == key


def test_config_round_trips_through_to_dict():
    cfg = _cfg(optimizer={"name": "adam", "lr": 0.01, "betas": [0.8, 0.99]}, schedule={"warmup": 0.1})
    assert cfg.schedule.name == "constant"                   # the NQM's default schedule
    assert NQMConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------- the Trainable

TRAINABLE_CONFIG = {"dim": 20, "dataset": {"batch_size": 8}, "optimizer": {"lr": 0.1, "momentum": 0.5},
                    "budget": {"steps": 30}, "reports": 3}


def test_trainable_reports_then_done_and_restores(tmp_path):
    from tune_lip.trainables.nqm import NQMTrainable

    t = NQMTrainable(config=TRAINABLE_CONFIG)
    results = [t.train() for _ in range(3)]
    assert [r["steps"] for r in results] == [10, 20, 30]
    assert [r["done"] for r in results] == [False, False, True]
    assert {"examples", "lr", "train_loss", "test_loss", "diverged"} <= set(results[0])
    first = NQMTrainable(config=TRAINABLE_CONFIG)
    first.train()
    checkpoint = first.save(str(tmp_path / "ckpt"))
    second = NQMTrainable(config=TRAINABLE_CONFIG)
    second.restore(checkpoint)
    rest = [second.train() for _ in range(2)]
    # Exact on purpose: a checkpoint restore continues the uninterrupted run bit for bit (same process).
    assert [r["train_loss"] for r in rest] == [r["train_loss"] for r in results[1:]]
    assert (tmp_path / "ckpt" / "config.json").exists()
    assert t.reset_config({**TRAINABLE_CONFIG, "optimizer": {"lr": 10.0}})
    diverged = t.train()                                      # a fresh trial on the reused actor
    assert diverged["diverged"] and diverged["done"] and diverged["train_loss"] == DIVERGED_LOSS
    for trainable in (t, first, second):
        trainable.stop()
