"""The sphere study: SI models, the projection and fixed ELR, full space, metrics, Hessian trace, Trainable."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
from helpers import run_slices

from tune_lip.errors import ConfigError
from tune_lip.nn.models import MODELS, build_model
from tune_lip.nn.sam import hutchinson_trace
from tune_lip.studies.lipschitz import DIVERGED_LOSS
from tune_lip.studies.sphere import SphereConfig, SphereLoop

SI_MODELS = ["convnet_si", "convnet_si_af", "resnet18_si", "resnet18_si_af"]


def _cfg(**over) -> SphereConfig:
    raw = {"seed": 3, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64},
           "model": {"name": "convnet_si", "width": 4}, "optimizer": {"mode": "sphere", "elr": 1e-2},
           "budget": {"steps": 24}, "reports": 4}
    raw.update(over)
    return SphereConfig.from_dict(raw)


_run = partial(run_slices, steps=6)  # one loop's reports, without wall_seconds


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))


# ---------------------------------------------------------------------------- models

def test_registry_has_the_sphere_models():
    assert set(SI_MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", SI_MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_models_run_on_digits_and_cifar_shapes(name, shape):
    model = build_model(name, input_shape=shape, num_classes=10, width=2)
    assert model(torch.randn(4, *shape)).shape == (4, 10)
    si = {id(p) for p in model.scale_invariant_parameters()}
    others = {id(p) for p in model.other_parameters()}
    assert si and not si & others and si | others == {id(p) for p in model.parameters()}  # a partition


def _reestimated_eval_output(model, xs, x_eval) -> torch.Tensor:
    """Eval-mode output with BN running statistics estimated afresh on the batches ``xs``."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the estimate depends only on the data
    model.train()
    with torch.no_grad():
        for x in xs:
            model(x)
    model.eval()
    with torch.no_grad():
        return model(x_eval)


@pytest.mark.parametrize("name", SI_MODELS)
def test_output_is_invariant_to_scaling_the_si_weights(name):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(1, 8, 8), num_classes=10, width=4)
    x = torch.randn(32, 1, 8, 8)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        for p in scaled.scale_invariant_parameters():
            p.mul_(3.7)
    # Train-mode BN: exact up to BN's eps (1e-5 against unit-order variances).
    model.train(), scaled.train()
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), model(x), rtol=1e-3, atol=1e-3)
    # Eval mode: invariant when the running statistics are estimated at the weights' own scale.
    xs = [torch.randn(32, 1, 8, 8) for _ in range(3)]
    torch.testing.assert_close(_reestimated_eval_output(scaled, xs, x), _reestimated_eval_output(model, xs, x),
                               rtol=1e-3, atol=1e-3)


def test_si_head_is_frozen_at_norm_10_and_af_head_trains():
    loop = SphereLoop(_cfg(optimizer={"elr": 1e-2, "lr_other": 0.1}))
    head = loop.model.head.weight
    assert not head.requires_grad and float(head.norm()) == pytest.approx(10.0, rel=1e-6)
    before = head.detach().clone()
    loop.train_for(10)
    assert torch.equal(head, before)  # SI mode: lr_other does not reach the frozen head (never written)
    af = SphereLoop(_cfg(model={"name": "convnet_si_af", "width": 4}, optimizer={"elr": 1e-2, "lr_other": 0.1}))
    assert af.model.head.weight.requires_grad   # Af: PyTorch's init (the original's init_scale -1), trained
    before = af.model.head.weight.detach().clone()
    af.train_for(10)
    assert not torch.equal(af.model.head.weight, before)  # Af: the head trains


def test_lr_other_zero_freezes_the_non_si_parameters():
    loop = SphereLoop(_cfg(model={"name": "convnet_si_af", "width": 4}, optimizer={"elr": 1e-2, "lr_other": 0.0}))
    others = [p.detach().clone() for p in loop.model.other_parameters()]
    si = [p.detach().clone() for p in loop.model.scale_invariant_parameters()]
    loop.train_for(10)
    # Exact: with lr_other = 0 these parameters are never updated (sphere.py freezes them).
    assert all(torch.equal(a, b) for a, b in zip(others, loop.model.other_parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(si, loop.model.scale_invariant_parameters()))


def test_inputs_are_normalised_by_mean_and_std():
    # The paper's transforms.Normalize(mean, std) (SPH nets/convnet_si.py): dataset.normalize: mean_std.
    data = {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64,
            "normalize": "mean_std", "mean": [0.5], "std": [0.25]}
    loop = SphereLoop(_cfg(dataset=data))
    idx = loop.batch_indices(0)
    x, _ = loop._inputs(idx, augment=False)
    raw, _ = loop.data.train_batch(idx)                                   # (B, H, W, C) uint8
    torch.testing.assert_close(x, (raw.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25)


def test_feature_rank_is_the_effective_rank_of_the_heads_input_on_a_fixed_validation_batch():
    from tune_lip.data.datasets import convert_and_center
    from tune_lip.nn.features import effective_rank

    loop = SphereLoop(_cfg(feature_rank_batch=16))
    loop.train_for(6)
    first = loop.evaluate()["feature_rank"]
    assert loop.evaluate()["feature_rank"] == first           # the same batch, weights unchanged
    loop.model.eval()
    with torch.no_grad():
        x = convert_and_center(loop.data.val_images[:16], loop.mean, loop.std)
        expected = effective_rank(loop.model.embed(x))        # (16, 32): the first 16 validation images
    torch.testing.assert_close(first, expected)
    assert 1.0 <= first <= 16
    assert "feature_rank" not in SphereLoop(_cfg(feature_rank_batch=0)).evaluate()


# ---------------------------------------------------------------------------- the sphere

@pytest.mark.parametrize("fix_all_elr", [False, True])
def test_projection_keeps_the_norm_and_the_elr_fixed(fix_all_elr):
    loop = SphereLoop(_cfg(optimizer={"elr": 0.05, "fix_all_elr": fix_all_elr}))
    rho0 = _norm(loop.si)
    assert loop.rho0 == pytest.approx(rho0, rel=1e-12)
    for _ in range(12):
        m = loop.train_for(1)
        assert abs(_norm(loop.si) / rho0 - 1) < 1e-6          # on the sphere after every step
        assert abs(m["weight_norm"] / rho0 - 1) < 1e-6
        assert m["elr"] == pytest.approx(0.05, rel=1e-6)       # lr / ||w||^2 = configured ELR
        assert m["lr"] == pytest.approx(0.05 * rho0**2, rel=1e-9)
        assert m["lr_now"] == m["lr"]                             # no schedule: passed through


@pytest.mark.parametrize("name", ["convnet_si", "resnet18_si"])
def test_fix_all_elr_puts_every_filter_at_one_common_norm(name):
    # The original's --fix_all_elr (train.py, training_utils.fix_si_pnorms): r = sqrt(sum ||w||^2 / #filters)
    # at init, every filter rescaled to r at init and after every step, lr = elr * sum ||w||^2.
    cfg = _cfg(model={"name": name, "width": 2}, optimizer={"elr": 0.05, "fix_all_elr": True})
    torch.manual_seed(cfg.seed)
    fresh = build_model(name, input_shape=(1, 8, 8), num_classes=4, width=2).scale_invariant_parameters()
    total_sq = _norm(fresh) ** 2
    r = math.sqrt(total_sq / sum(p.shape[0] for p in fresh))
    loop = SphereLoop(cfg)
    assert loop.si_lr == pytest.approx(0.05 * total_sq, rel=1e-6)   # lr = elr * sum ||w||^2 (before the fix)
    for step in range(3):
        if step:
            before = [p.detach().clone() for p in loop.si]
            loop.train_for(1)
            assert not all(torch.equal(a, b) for a, b in zip(before, loop.si))   # the step moved them
        for p in loop.si:   # every filter, of every layer, at the common norm
            norms = p.detach().flatten(1).norm(dim=1)
            torch.testing.assert_close(norms, torch.full_like(norms, r), rtol=1e-5, atol=0)


def test_angular_update_and_effective_grad_norm_are_what_they_say():
    loop = SphereLoop(_cfg(optimizer={"elr": 1e-2}))
    loop.train_for(3)
    w0 = torch.cat([p.detach().flatten().double() for p in loop.si])
    # The gradient of the step to come, computed on a copy so the loop's state is untouched.
    twin = copy.deepcopy(loop)
    loss, _, _ = twin._loss(twin.batch_indices(twin.steps), augment=False)
    grads = torch.autograd.grad(loss, twin.si)
    m = loop.train_for(1)
    w1 = torch.cat([p.detach().flatten().double() for p in loop.si])
    cos = float(w0 @ w1 / (w0.norm() * w1.norm()))
    assert m["angular_update"] == pytest.approx(math.acos(cos), rel=1e-4)
    assert m["effective_grad_norm"] == pytest.approx(_norm(grads) * float(w0.norm()), rel=1e-4)
    # On the sphere one step turns w by atan(elr * effective_grad_norm): the gradient is orthogonal to w.
    assert m["angular_update"] == pytest.approx(math.atan(1e-2 * m["effective_grad_norm"]), rel=1e-3)


def test_full_space_reports_the_drifting_elr():
    loop = SphereLoop(_cfg(optimizer={"mode": "full", "lr": 0.5, "weight_decay": 1e-2, "momentum": 0.9}))
    norms, elrs = [], []
    for _ in range(4):
        m = loop.train_for(6)
        assert m["lr"] == m["lr_now"] == 0.5                      # full mode: the configured lr
        norm = _norm(loop.si)
        assert m["weight_norm"] == pytest.approx(norm, rel=1e-9)
        assert m["elr"] == pytest.approx(0.5 / norm**2, rel=1e-9)   # ELR = lr / ||w||^2
        norms.append(norm)
        elrs.append(m["elr"])
    assert abs(norms[-1] / loop.rho0 - 1) > 1e-3 and len(set(elrs)) == 4   # no projection: it drifts


def test_state_dict_continues_bit_identically():
    over = dict(optimizer={"elr": 1e-2, "momentum": 0.5}, augmentation={"name": "crop_flip", "crop": 1},
                metrics_every=2)
    straight = SphereLoop(_cfg(**over))
    expected = _run(straight, 4)
    first = SphereLoop(_cfg(**over))
    head = _run(first, 2)
    resumed = SphereLoop(_cfg(**over))  # a fresh process would build exactly this
    resumed.load_state_dict(first.state_dict())
    # Exact on purpose: a resumed loop repeats the uninterrupted run's bits (same process, same seed).
    assert head + _run(resumed, 2) == expected
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert resumed.train_loss_history == straight.train_loss_history


def test_huge_elr_stays_at_chance_or_worse():
    cfg = _cfg(dataset={"name": "digits", "batch_size": 64}, model={"name": "convnet_si", "width": 8},
               optimizer={"elr": 10.0}, budget={"steps": 40}, reports=4)
    loop = SphereLoop(cfg)
    losses = [loop.train_for(10)["train_loss"] for _ in range(4)]
    # Every step turns w by ~90 degrees: the network is random at each step, loss ~ln 10 or above.
    assert min(losses) > 0.9 * math.log(10)
    assert loop.evaluate()["val_acc"] < 0.3


def test_blow_up_ends_diverged_with_finite_values():
    # The SI weights cannot blow the loss up (BN undoes any scale), but a trained head can.
    loop = SphereLoop(_cfg(model={"name": "convnet_si_af", "width": 4}, optimizer={"elr": 1e-2, "lr_other": 1e30},
                           hessian_trace=True))
    m = loop.train_for(6)
    m.update(loop.evaluate())
    assert m["diverged"] and loop.finished and loop.regime() == "diverged"
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    assert m["train_loss"] == DIVERGED_LOSS


# ---------------------------------------------------------------------------- Hessian trace

def test_hutchinson_matches_the_exact_trace_within_its_standard_error():
    loop = SphereLoop(_cfg(model={"name": "convnet_si", "width": 1}, hessian_trace=True, hutchinson_samples=64))
    loop.train_for(6)
    params = loop.si
    # Exact Hessian of the fixed-batch loss, one column per basis vector (387 weights).
    grads = torch.autograd.grad(loop.fixed_batch_loss(), params, create_graph=True)
    flat = torch.cat([g.flatten() for g in grads])
    n = flat.numel()
    H = torch.stack([torch.cat([h.flatten() for h in torch.autograd.grad(flat[i], params, retain_graph=True)])
                     for i in range(n)]).double()
    exact = float(H.trace())
    # One Rademacher probe has variance 2 * sum_{i != j} H_ij^2; the mean of S probes 1/S of it.
    sigma = math.sqrt(2 * float(H.pow(2).sum() - H.diagonal().pow(2).sum()) / 64)
    buffers = [b.clone() for b in loop.model.buffers()]
    estimate, stderr = loop.hessian_trace()
    assert abs(estimate - exact) < 4 * sigma
    assert 0.5 * sigma < stderr < 2 * sigma          # the reported error bar is honest
    assert all(torch.equal(a, b) for a, b in zip(buffers, loop.model.buffers()))  # BN stats restored from a copy
    assert loop.evaluate()["hessian_trace"] == pytest.approx(estimate)  # same probes every report


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    w = torch.randn(5, requires_grad=True)
    est, _ = hutchinson_trace(lambda: (torch.arange(1.0, 6.0) * w**2).sum(), [w], samples=3,
                              generator=torch.Generator().manual_seed(0))
    assert est == pytest.approx(2 * 15.0)  # v^T H v = tr H for every ±1 probe when H is diagonal


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize("over, key", [
    ({"model": {"name": "aol_mlp"}}, "model"),
    ({"optimizer": {"mode": "sphere", "weight_decay": 1e-4}}, "optimizer"),
    ({"optimizer": {"mode": "full", "fix_all_elr": True}}, "optimizer"),
    ({"optimizer": {"per_filter": True}}, "optimizer.per_filter"),
    ({"feature_rank_batch": -1}, "feature_rank_batch"),
    ({"optimizer": {"mode": "orbit"}}, "optimizer"),
    ({"optimizer": {"elr": 0}}, "optimizer"),
    ({"reports": 3}, "reports"),
    ({"budget": {"wall_hours": 1}}, "budget"),
    ({"hessian_trace": "yes"}, "hessian_trace"),
    ({"lr": 0.1}, "lr"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError) as info:
        _cfg(**over)
    assert info.value.key == key


def test_fix_all_elr_is_refused_where_the_original_refuses_it():
    with pytest.raises(ConfigError) as info:
        SphereLoop(_cfg(model={"name": "resnet18_si_af", "width": 2}, optimizer={"elr": 1e-2, "fix_all_elr": True}))
    assert info.value.key == "optimizer.fix_all_elr"


def test_config_round_trips_through_to_dict():
    cfg = _cfg(metrics_every=3, hessian_trace=True)
    assert SphereConfig.from_dict({k: v for k, v in cfg.to_dict().items()}) == cfg


@pytest.mark.parametrize("name", ["sphere_elr", "sphere_elr_grid", "sphere_elr_boundary", "sphere_cifar10_elr",
                                  "sphere_resnet18_elr", "full_space_lr_wd"])
def test_shipped_spaces_validate(name):
    from tune_lip.tune.launch import check_spec, study_metrics
    from tune_lip.tune.spec import load_spec

    spec = load_spec(name, studies=study_metrics())
    assert spec.study == "sphere" and spec.scheduler.name == "none"
    check_spec(spec)


@pytest.mark.parametrize("name", ["sphere_cifar10_elr", "sphere_resnet18_elr"])
def test_cifar_spaces_follow_the_papers_recipe(name):
    # SPH run_train_and_test.py: --no_aug --no_schedule, momentum 0, wd 0, noninvlr 0, init_scale 10,
    # --same_last_layer (seed 228); parser_train.py: batch 128; nets/convnet_si.py, nets/resnet_si.py:
    # Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)).
    from tune_lip.tune.spec import load_spec

    cfg = SphereConfig.from_dict(load_spec(name).representative_config())
    assert cfg.augmentation.is_identity
    assert (cfg.dataset.name, cfg.dataset.batch_size, cfg.dataset.normalize) == ("cifar10", 128, "mean_std")
    assert cfg.dataset.mean == (0.4914, 0.4822, 0.4465) and cfg.dataset.std == (0.2023, 0.1994, 0.2010)
    o = cfg.optimizer
    assert (o.mode, o.momentum, o.weight_decay, o.lr_other, o.fix_all_elr) == ("sphere", 0.0, 0.0, 0.0, False)
    assert cfg.model.options.get("head_seed") == 228 and cfg.model.options.get("last_layer_norm", 10.0) == 10.0


# ---------------------------------------------------------------------------- the Trainable

TRAINABLE_CONFIG = {"seed": 1, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 128, "num_test": 32},
                    "model": {"name": "convnet_si", "width": 4}, "optimizer": {"elr": 1e-2},
                    "budget": {"steps": 16}, "reports": 4}


def test_trainable_reports_then_done_with_a_regime(tmp_path):
    from tune_lip.trainables.sphere import SphereTrainable

    t = SphereTrainable(config=TRAINABLE_CONFIG)
    results = [t.train() for _ in range(4)]
    assert [r["steps"] for r in results] == [4, 8, 12, 16]
    assert [r["done"] for r in results] == [False, False, False, True]
    assert "regime" not in results[0] and results[-1]["regime"] in ("converged", "chaotic", "diverged")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "weight_norm", "elr",
                "effective_grad_norm", "angular_update", "feature_rank"):
        assert math.isfinite(results[-1][key])
    assert all(1.0 <= r["feature_rank"] <= 32 for r in results)   # width-4 ConvNetSI: 32 features
    # Validation metrics at every report; test metrics once, with the last.
    assert all("val_acc" in r for r in results)
    assert [("test_acc" in r) for r in results] == [False, False, False, True]
    # Restore from a checkpoint after two reports: the rest repeats exactly.
    first = SphereTrainable(config=TRAINABLE_CONFIG)
    first.train(), first.train()
    checkpoint = first.save(str(tmp_path / "ckpt"))
    second = SphereTrainable(config=TRAINABLE_CONFIG)
    second.restore(checkpoint)
    tail = [second.train() for _ in range(2)]
    # Exact on purpose: a checkpoint restore continues the uninterrupted run bit for bit (same process).
    assert [r["train_loss"] for r in tail] == [r["train_loss"] for r in results[2:]]
    assert tail[-1]["regime"] == results[-1]["regime"]
    assert second.reset_config({**TRAINABLE_CONFIG, "seed": 2}) and second.loop.steps == 0
    for trainable in (t, first, second):
        trainable.stop()
