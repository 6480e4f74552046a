"""The scaling-rules study: models, LR rules, SVAG and NGD noise, gradient-noise estimates, the loop, Trainable."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from helpers import run_slices

from tune_lip.errors import ConfigError
from tune_lip.nn.models import MODELS, build_model
from tune_lip.nn.models.scaling_nets import SI_EPS
from tune_lip.nn.scaling_rules import (
    gradient_noise,
    ngd_backward,
    ngd_weights,
    scaled_lr,
    svag_coefficients,
    svag_objective,
)
from tune_lip.studies.budget import lr_at
from tune_lip.studies.lipschitz import DIVERGED_LOSS
from tune_lip.studies.scaling import ScalingConfig, ScalingLoop

SCALING_MODELS = ["preresnet32", "resnet32", "vgg16", "vgg19"]


def _cfg(**over) -> ScalingConfig:
    raw = {"seed": 3, "dataset": {"name": "synthetic", "batch_size": 16, "num_train": 128, "num_test": 32},
           "model": {"name": "preresnet32", "norm": "bn", "width": 0.125}, "budget": {"steps": 12}, "reports": 4}
    raw.update(over)
    return ScalingConfig.from_dict(raw)


_run = partial(run_slices, steps=3)  # one loop's reports, without wall_seconds


# ---------------------------------------------------------------------------- a linear-regression problem

class LinearProblem:
    """ℓᵢ(w) = (xᵢ·w − yᵢ)²/2 on n examples: per-example gradients (xᵢ·w − yᵢ)xᵢ are exact."""

    def __init__(self, n: int = 48, d: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.y = self.x @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
        self.w = torch.nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64))  # away from the optimum

    def losses(self, idx: torch.Tensor) -> torch.Tensor:
        return (self.x[idx] @ self.w - self.y[idx]) ** 2 / 2

    def per_example_grads(self) -> torch.Tensor:                     # (n, d)
        return ((self.x @ self.w - self.y)[:, None] * self.x).detach()

    def mean_and_sigma(self) -> tuple[torch.Tensor, torch.Tensor]:
        """∇L and Σ = (1/n)Σ(gᵢ − ḡ)(gᵢ − ḡ)ᵀ, the per-example gradient covariance over the data."""
        g = self.per_example_grads()
        centred = g - g.mean(0)
        return g.mean(0), centred.T @ centred / len(g)

    def grad(self, objective: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(objective, [self.w])[0]


def _moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return samples.mean(0), torch.cov(samples.T, correction=1)


# ---------------------------------------------------------------------------- SVAG and NGD noise

def test_svag_coefficients_keep_the_mean_and_scale_the_variance():
    for l in (1, 2, 4, 32, 2.5):
        c1, c2 = svag_coefficients(l)
        assert c1 + c2 == pytest.approx(1) and c1**2 + c2**2 == pytest.approx(l)


def test_svag_gradient_has_sgds_mean_and_l_times_its_covariance():
    p, b, draws = LinearProblem(), 4, 4000
    mean, sigma = p.mean_and_sigma()
    g = torch.Generator().manual_seed(1)
    covs = {}
    for l in (1, 4, 16):
        # Two independent halves of B (uniform with replacement: SGD's noise is then exactly Σ/B).
        idx = torch.randint(len(p.y), (draws, 2 * b), generator=g)
        # One copy of w per draw, so one backward pass gives every draw's gradient: the objective
        # of (draws, B) halves is the mean over draws of each draw's objective, hence the x draws.
        w = p.w.detach().expand(draws, -1).clone().requires_grad_()
        losses = ((p.x[idx] * w[:, None, :]).sum(-1) - p.y[idx]) ** 2 / 2          # (draws, 2B)
        samples = torch.autograd.grad(svag_objective(losses[:, :b], losses[:, b:], l) * draws, w)[0]  # (draws, d)
        got_mean, covs[l] = _moments(samples)
        # The mean is SGD's (the full gradient): within 4 standard errors per coordinate.
        stderr = (l * sigma.diagonal() / b / draws).sqrt()
        assert ((got_mean - mean).abs() < 4 * stderr).all()
        # The covariance is l·Σ/B: an estimate from 4000 draws is good to a few per cent.
        torch.testing.assert_close(covs[l], l * sigma / b, rtol=0.0, atol=0.12 * float((l * sigma / b).norm()))
    # Against SGD (l = 1) measured the same way: the trace grows by l.
    assert float(covs[4].trace() / covs[1].trace()) == pytest.approx(4, rel=0.1)
    assert float(covs[16].trace() / covs[1].trace()) == pytest.approx(16, rel=0.1)


def test_ngd_gradient_has_covariance_sigma_over_b():
    p, n, b, draws = LinearProblem(n=30), 30, 4, 4000
    mean, sigma = p.mean_and_sigma()
    gen = torch.Generator().manual_seed(2)
    weights = torch.stack([ngd_weights(n, b, gen) for _ in range(draws)]).double()     # (draws, n)
    # ngd_backward leaves exactly (1/n)·Σ wᵢ∇ℓᵢ in .grad (7 does not divide 30: a short last chunk) ...
    for w in weights[:3]:
        p.w.grad = None
        ngd_backward(p.losses, torch.arange(n), w, chunk=7)
        torch.testing.assert_close(p.w.grad, w @ p.per_example_grads() / n)
    # ... so its draws are these, whose mean is ∇L and covariance Σ/B.
    got_mean, cov = _moments(weights @ p.per_example_grads() / n)
    assert ((got_mean - mean).abs() < 4 * (sigma.diagonal() / b / draws).sqrt()).all()
    torch.testing.assert_close(cov, sigma / b, rtol=0.0, atol=0.1 * float((sigma / b).norm()))


def test_ngd_chunks_sum_to_the_one_pass_gradient():
    p, w = LinearProblem(n=30), ngd_weights(30, 4, torch.Generator().manual_seed(0)).double()
    grads = []
    for chunk in (30, 4):
        p.w.grad = None
        loss = ngd_backward(p.losses, torch.arange(30), w, chunk=chunk)
        grads.append(p.w.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert float(loss) == pytest.approx(float(p.losses(torch.arange(30)).detach().mean()))   # the unweighted loss


# ---------------------------------------------------------------------------- gradient-noise estimates

def test_gradient_noise_estimates_match_the_closed_forms():
    p, b, k, repeats = LinearProblem(n=40, seed=5), 8, 4, 1000
    mean, sigma = p.mean_and_sigma()
    true_g, true_trace = float(mean.pow(2).sum()), float(sigma.trace())
    per_example = p.per_example_grads()
    gen = torch.Generator().manual_seed(3)
    est = []
    for _ in range(repeats):
        batches = list(torch.randint(40, (k, b), generator=gen))
        g_sq, noise = gradient_noise(p.losses, [p.w], batches)
        naive = float(torch.stack([per_example[i].mean(0) for i in batches]).mean(0).pow(2).sum())
        est.append((float(g_sq), float(noise), naive))
    g_sq, noise, naive = torch.tensor(est, dtype=torch.float64).T
    se = lambda t: float(t.std() / math.sqrt(repeats))
    # G_t is unbiased for ‖∇L‖², N_t for tr Σ: both within 4 standard errors of the exact values.
    assert abs(float(g_sq.mean()) - true_g) < 4 * se(g_sq)
    assert abs(float(noise.mean()) - true_trace) < 4 * se(noise)
    # ‖mean g‖² alone is biased by tr Σ/(kB), far beyond its standard error: the correction matters.
    assert float(naive.mean()) - true_g == pytest.approx(true_trace / (k * b), rel=0.15)
    assert float(naive.mean()) - true_g > 5 * se(naive)


def test_loop_measures_noise_without_changing_training():
    aug = {"name": "crop_flip", "crop": 1}
    plain = ScalingLoop(_cfg(augmentation=aug))
    measured = ScalingLoop(_cfg(grad_stats_every=2, grad_stats_batches=3, augmentation=aug))
    a, b = _run(plain, 2), _run(measured, 2)
    assert "grad_norm_sq" not in a[0]
    for x, y in zip(a, b):
        stats = {key: y.pop(key) for key in ("grad_norm_sq", "grad_noise", "noise_scale")}
        # Exact on purpose: measuring must not change a bit of training (same seed, same process).
        assert x == y
        assert stats["grad_noise"] > 0 and math.isfinite(stats["grad_norm_sq"])
        if stats["grad_norm_sq"] > 0:
            assert stats["noise_scale"] == pytest.approx(stats["grad_noise"] / stats["grad_norm_sq"])


# ---------------------------------------------------------------------------- LR rules and budgets

def test_lr_rules_give_the_configured_lr_per_batch_size():
    assert scaled_lr("linear", eta=0.8, batch_size=2, base_batch=128) == pytest.approx(0.0125)
    assert scaled_lr("sqrt", eta=1e-3, batch_size=32, base_batch=128) == pytest.approx(5e-4)
    assert scaled_lr("none", eta=0.3, batch_size=2048, base_batch=128) == 0.3
    cases = [({"name": "sgd"}, 16, 0.8 * 16 / 128),                       # SGD defaults: linear, eta 0.8, B0 128
             ({"name": "sgd", "eta": 0.4, "base_batch": 64}, 64, 0.4),
             ({"name": "adam"}, 32, 1e-3 * math.sqrt(32 / 128)),          # Adam defaults: sqrt, eta 1e-3
             ({"name": "rmsprop", "lr_rule": "linear", "eta": 1e-3}, 64, 1e-3 * 64 / 128),
             ({"name": "sgd", "lr_rule": "none", "eta": 0.05}, 64, 0.05)]
    for optimizer, b, lr in cases:
        loop = ScalingLoop(_cfg(optimizer=optimizer, dataset={"name": "synthetic", "batch_size": b,
                                                              "num_train": 128, "num_test": 32}))
        assert loop.train_for(1)["lr"] == pytest.approx(lr)
        assert [g["lr"] for g in loop.optimizer.param_groups] == [pytest.approx(lr)]
    svag = ScalingLoop(_cfg(gradient={"name": "svag", "l": 4}))
    m = svag.train_for(1)
    assert m["lr"] == pytest.approx(0.8 * 16 / 128)                          # the trial's LR: the rule's
    assert m["lr_now"] == pytest.approx(0.8 * 16 / 128 / 4)                  # SVAG steps at lr / l
    assert svag.total_steps == 4 * 12                                        # ... for l times the steps


def test_lr_is_the_rules_and_lr_now_the_step_size_taken():
    loop = ScalingLoop(_cfg(gradient={"name": "svag", "l": 2}, schedule="one_cycle"))   # 24 steps
    lr = 0.8 * 16 / 128                       # linear rule at B = 16: the trial's LR, before SVAG's 1/l
    reports = [loop.train_for(6) for _ in range(4)]
    assert all(m["lr"] == pytest.approx(lr) for m in reports)
    for m in reports:   # the step size of the slice's last step: the schedule, peak lr / l
        assert m["lr_now"] == pytest.approx(lr_at((m["steps"] - 1) / 24, peak_lr=lr / 2,
                                                  schedule=loop.cfg.schedule, total_steps=24), rel=1e-12)
    assert reports[-1]["lr_now"] < 1e-3 * lr                   # OneCycle ends ~1e4 below the peak
    # sde_time is the sum of the step sizes taken, not of the trial's lr
    steps = [lr_at(t / 24, peak_lr=lr / 2, schedule=loop.cfg.schedule, total_steps=24) for t in range(24)]
    assert reports[-1]["sde_time"] == pytest.approx(sum(steps), rel=1e-12)


def test_budget_rules():
    # 288 images less 32 held out for validation: epochs count the 256 left.
    epochs = {"budget": {"epochs": 2}, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 288, "num_test": 32,
                                                   "validation": 32}}
    assert ScalingLoop(_cfg(**epochs)).total_steps == 16
    assert ScalingLoop(_cfg(**epochs, budget_rule="sde_time")).total_steps == 16   # epochs already fix the SDE time
    fixed = {"budget": {"steps": 6}, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 32}}
    assert ScalingLoop(_cfg(**fixed, reports=1)).total_steps == 6
    assert ScalingLoop(_cfg(**fixed, reports=1, budget_rule="sde_time")).total_steps == 24    # 6 steps at B0 = 128
    loop = ScalingLoop(_cfg(**fixed, reports=1, budget_rule="sde_time", gradient={"name": "svag", "l": 2}))
    assert loop.total_steps == 48
    m = loop.train_for(200)
    assert (m["steps"], m["examples"]) == (48, 48 * 64)                           # SVAG draws 2B per step
    assert m["sde_time"] == pytest.approx(48 * 0.8 * 32 / 128 / 2)                # Σ lr: 48 steps at lr/l


# ---------------------------------------------------------------------------- models

def test_registry_has_the_scaling_models():
    assert set(SCALING_MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", SCALING_MODELS)
@pytest.mark.parametrize("norm", ["bn", "gn", "none"])
def test_models_run_on_digits_and_cifar_shapes(name, norm):
    for shape in [(1, 8, 8), (3, 32, 32)]:
        model = build_model(name, input_shape=shape, num_classes=10, norm=norm, width=0.125)
        out = model(torch.randn(2, *shape))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        out.sum().backward()


def test_preresnet_is_affine_free_with_a_frozen_head_and_never_nan():
    for norm in ("bn", "gn"):
        net = build_model("preresnet32", input_shape=(1, 8, 8), num_classes=10, norm=norm, width=0.25)
        norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
        assert norms and all(not m.affine and m.eps == SI_EPS for m in norms)
        assert not net.head.weight.requires_grad and not net.head.bias.requires_grad
        # A constant image makes constant channels: eps = 0 would give 0/0 = NaN here.
        assert torch.isfinite(net(torch.ones(2, 1, 8, 8))).all()
    # eps = 1e-20 is eps = 0 to float32 precision on ordinary inputs (torch's BatchNorm refuses eps = 0
    # in training, so eps = 0 is written out: (x - mean) / std over the normalised set).
    x = torch.randn(16, 4, 5, 5)
    bn_0 = (x - x.mean((0, 2, 3), keepdim=True)) / x.var((0, 2, 3), keepdim=True, correction=0).sqrt()
    torch.testing.assert_close(torch.nn.BatchNorm2d(4, eps=SI_EPS, affine=False)(x), bn_0)
    groups = x.reshape(16, 2, -1)
    gn_0 = (groups - groups.mean(2, keepdim=True)) / groups.var(2, keepdim=True, correction=0).sqrt()
    torch.testing.assert_close(torch.nn.GroupNorm(2, 4, eps=SI_EPS, affine=False)(x), gn_0.reshape(x.shape))


# ---------------------------------------------------------------------------- the loop

def test_state_dict_continues_bit_identically():
    for over in ({"gradient": {"name": "svag", "l": 2}, "augmentation": {"name": "crop_flip", "crop": 1},
                  "grad_stats_every": 2, "optimizer": {"name": "sgd", "momentum": 0.9}, "schedule": "cosine"},
                 {"model": {"name": "preresnet32", "norm": "gn", "width": 0.125},
                  "gradient": {"name": "ngd", "subset": 40, "chunk": 16}, "grad_stats_every": 3}):
        straight = ScalingLoop(_cfg(**over))
        expected = _run(straight, 4)
        first = ScalingLoop(_cfg(**over))
        head = _run(first, 2)
        resumed = ScalingLoop(_cfg(**over))   # a fresh process would build exactly this
        resumed.load_state_dict(first.state_dict())
        # Exact on purpose: a resumed loop repeats the uninterrupted run's bits (same process, same seed).
        assert head + _run(resumed, 2) == expected
        for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
            assert torch.equal(a, b)


def test_svag_l1_is_plain_minibatch_training():
    a = _run(ScalingLoop(_cfg()), 2)
    b = _run(ScalingLoop(_cfg(gradient={"name": "svag", "l": 1})), 2)
    assert a == b   # exact on purpose: l = 1 takes the minibatch code path itself (ScalingLoop.svag is False)


def test_ngd_and_sam_train_on_digits():
    cfg = {"dataset": {"name": "digits", "batch_size": 32}, "budget": {"steps": 30}, "reports": 1,
           "model": {"name": "preresnet32", "norm": "gn", "width": 0.25}}
    ngd = ScalingLoop(_cfg(**cfg, gradient={"name": "ngd", "subset": 256, "chunk": 128}))
    m = ngd.train_for(30)
    assert m["examples"] == 30 * 256 and m["train_loss"] < math.log(10)
    sam = ScalingLoop(_cfg(**cfg, gradient={"name": "svag", "l": 2}, optimizer={"sam_rho": 0.05},
                           sharpness={"every": 1, "iters": 3, "batch_size": 32}))
    m = sam.train_for(10)
    m.update(sam.evaluate())
    assert not m["diverged"] and m["sharpness"] > 0


def test_blow_up_ends_diverged_with_finite_values():
    loop = ScalingLoop(_cfg(model={"name": "vgg16", "norm": "none", "width": 0.125}, optimizer={"eta": 1e6},
                            grad_stats_every=1))
    m = loop.train_for(6)
    m.update(loop.evaluate())
    assert m["diverged"] and loop.finished and m["train_loss"] == DIVERGED_LOSS
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize("over, key", [
    ({"model": {"name": "resnet1000"}}, "model"),
    ({"model": {"name": "vgg16", "norm": "ln"}}, "model"),
    ({"optimizer": {"lr_rule": "cubic"}}, "optimizer"),
    ({"optimizer": {"eta": -1}}, "optimizer"),
    ({"optimizer": {"lr": 0.1}}, "optimizer"),
    ({"gradient": {"name": "minibatch", "l": 4}}, "gradient"),
    ({"gradient": {"name": "svag", "l": 0.5}}, "gradient"),
    ({"gradient": {"name": "ngd"}}, "gradient"),
    ({"gradient": {"name": "ngd", "subset": 64}, "augmentation": "crop_flip"}, "augmentation"),
    ({"budget_rule": "epochs"}, "budget_rule"),
    ({"budget": {"wall_hours": 1}}, "budget"),
    ({"grad_stats_batches": 1}, "grad_stats_batches"),
    ({"grad_stats_every": 1.5}, "grad_stats_every"),
    ({"lr": 0.1}, "lr"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError) as info:
        _cfg(**over)
    assert info.value.key == key


def test_loop_refuses_what_the_data_cannot_give():
    with pytest.raises(ConfigError) as info:
        ScalingLoop(_cfg(gradient={"name": "ngd", "subset": 10_000}))
    assert info.value.key == "gradient.subset"
    with pytest.raises(ConfigError) as info:
        ScalingLoop(_cfg(budget={"steps": 2}))
    assert info.value.key == "budget"


def test_config_round_trips_through_to_dict():
    cfg = _cfg(gradient={"name": "svag", "l": 8}, grad_stats_every=5, optimizer={"name": "adam"})
    assert ScalingConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.optimizer.lr_rule == "sqrt" and cfg.optimizer.eta == 1e-3    # resolved defaults are recorded


@pytest.mark.parametrize("name", ["lsr_sgd", "lsr_sgd_paper", "sqrt_adam", "svag_l", "ngd_vs_sgd"])
def test_shipped_spaces_validate_at_every_grid_point(name):
    from tune_lip.tune.launch import check_spec, study_metrics
    from tune_lip.tune.spec import load_spec, set_in

    spec = load_spec(name, studies=study_metrics())
    assert spec.study == "scaling" and spec.scheduler.name == "none"
    config = check_spec(spec)
    for point in spec.grid_points():
        for key, value in point.items():
            set_in(config, key, value)
        ScalingConfig.from_dict(config)


def test_drop_last_cuts_each_epoch_into_whole_batches():
    # SVAG's My_BatchSampler (utils.py) with drop_last_batch=True: len // B disjoint batches per
    # epoch from that epoch's permutation, the rest unused; an {epochs: E} budget is E such epochs.
    loop = ScalingLoop(_cfg(drop_last=True, budget={"epochs": 3}))
    n, b = len(loop.pool), 16
    per_epoch = n // b
    assert n % b and loop.total_steps == 3 * per_epoch
    for epoch in range(2):
        seen = torch.cat([loop.batch_indices(epoch * per_epoch + k) for k in range(per_epoch)])
        assert len(seen) == len(set(seen.tolist())) == per_epoch * b
        assert torch.equal(seen, loop.pool[loop.batch_order.permutation(epoch)[:per_epoch * b]])
    # SVAG l = 4: 2lE epochs of 2B, as the SVAG code's sde1 (max_epochs·2·k epochs at batch 2B)
    svag = ScalingLoop(_cfg(drop_last=True, budget={"epochs": 3}, gradient={"name": "svag", "l": 4}))
    assert svag.total_steps == 2 * 4 * 3 * (n // (2 * b))


def test_step_schedule_drops_at_epoch_starts_in_the_loop():
    # preresnet32's x0.1 at epochs 80 and 120 of 160, scaled to 4 epochs: milestones [0.5, 0.75].
    loop = ScalingLoop(_cfg(drop_last=True, budget={"epochs": 4},
                            schedule={"name": "step", "milestones": [0.5, 0.75], "interval": "epoch"}))
    per_epoch, peak = len(loop.pool) // 16, 0.8 * 16 / 128
    expected = [peak] * 2 * per_epoch + [peak * 0.1] * per_epoch + [peak * 0.01] * per_epoch
    assert [loop._lr(t) for t in range(loop.total_steps)] == pytest.approx(expected)


def test_mean_std_normalisation_and_feature_rank():
    loop = ScalingLoop(_cfg(dataset={"name": "digits", "batch_size": 16, "normalize": "mean_std"},
                            model={"name": "preresnet32", "norm": "gn", "width": 0.125}, feature_rank_batch=64))
    x, _ = loop._inputs(loop.pool, None)                               # the whole training split
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(1), rtol=1e-3, atol=1e-3)
    m = loop.evaluate()
    assert 1.0 <= m["feature_rank"] <= min(64, loop.model.head.in_features)
    off = ScalingLoop(_cfg(feature_rank_batch=0))
    assert "feature_rank" not in off.evaluate()


# ---------------------------------------------------------------------------- the Trainable

TRAINABLE_CONFIG = {"seed": 1, "dataset": {"name": "synthetic", "batch_size": 16, "num_train": 64, "num_test": 32},
                    "model": {"name": "preresnet32", "norm": "gn", "width": 0.125},
                    "gradient": {"name": "svag", "l": 2}, "budget": {"steps": 8}, "reports": 4,
                    "grad_stats_every": 4}


def test_trainable_reports_then_done(tmp_path):
    from tune_lip.trainables.scaling import ScalingTrainable

    t = ScalingTrainable(config=TRAINABLE_CONFIG)
    results = [t.train() for _ in range(4)]
    assert [r["steps"] for r in results] == [4, 8, 12, 16]             # 8 steps x l = 2
    # SDE time = Σ lr = steps x 0.8 * 16/128 / l: the same as 4 plain steps per report at l = 1
    assert [r["sde_time"] for r in results] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert [r["done"] for r in results] == [False, False, False, True]
    assert all(r["lr"] == pytest.approx(0.8 * 16 / 128) for r in results)   # the trial's LR, whatever l
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "weight_norm", "lr",
                "lr_now", "examples", "grad_norm_sq", "grad_noise"):
        assert math.isfinite(results[-1][key])
    # Validation metrics at every report; test metrics once, with the last.
    assert all("val_acc" in r for r in results)
    assert [("test_acc" in r) for r in results] == [False, False, False, True]
    first = ScalingTrainable(config=TRAINABLE_CONFIG)
    first.train(), first.train()
    checkpoint = first.save(str(tmp_path / "ckpt"))
    second = ScalingTrainable(config=TRAINABLE_CONFIG)
    second.restore(checkpoint)
    tail = [second.train() for _ in range(2)]
    # Exact on purpose: a checkpoint restore continues the uninterrupted run bit for bit (same process).
    assert [r["train_loss"] for r in tail] == [r["train_loss"] for r in results[2:]]
    assert second.reset_config({**TRAINABLE_CONFIG, "seed": 2}) and second.loop.steps == 0
    for trainable in (t, first, second):
        trainable.stop()
