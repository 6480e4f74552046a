"""SAM and sharpness: the update against a hand computation, power iteration against exact
Hessians, and both wired into the Lipschitz and sphere loops (exact continuation, intervals)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from helpers import run_slices
from torch import nn
from torch.func import functional_call

from tune_lip.errors import ConfigError
from tune_lip.nn.optim import OptimizerConfig
from tune_lip.nn.sam import ASAM_ETA, SharpnessConfig, sam_step, top_hessian_eigenvalue
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop
from tune_lip.studies.sphere import SphereConfig, SphereLoop

# ---------------------------------------------------------------------------- the SAM update

A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0], dtype=torch.float64)


class Quadratic(nn.Module):
    """L(w) = ½ wᵀAw − bᵀw: ∇L = Aw − b in closed form."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        return 0.5 * self.w @ A @ self.w - B @ self.w


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_the_hand_computed_update(adaptive):
    w0 = torch.tensor([0.7, -1.3], dtype=torch.float64)
    rho, lr = 0.2, 0.1
    g = A @ w0 - B
    if adaptive:   # ASAM: ε = ρ T²g / ‖Tg‖, T = |w| + η
        t = w0.abs() + ASAM_ETA
        eps = rho * t * t * g / torch.linalg.vector_norm(t * g)
    else:          # SAM: ε = ρ g / ‖g‖
        eps = rho * g / torch.linalg.vector_norm(g)
    expected = w0 - lr * (A @ (w0 + eps) - B)   # SGD step from w with the gradient at w + ε

    model = Quadratic(w0.tolist())
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = sam_step(model, model.loss, opt, rho=rho, adaptive=adaptive)
    torch.testing.assert_close(model.w.detach(), expected)
    torch.testing.assert_close(loss, 0.5 * w0 @ A @ w0 - B @ w0)   # the loss at w, not at w + ε
    assert not loss.requires_grad


def test_sam_restores_the_weights_bit_for_bit_before_the_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)   # a zero step: only the restore acts
    sam_step(model, lambda: nn.functional.cross_entropy(model(x), y), opt, rho=0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # sam.py restores a saved copy


def test_rho_zero_is_the_plain_step():
    def make() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        return model, torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True)

    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    sam_model, sam_opt = make()
    plain_model, plain_opt = make()
    for _ in range(3):
        sam_step(sam_model, lambda: nn.functional.cross_entropy(sam_model(x), y), sam_opt, rho=0.0)
        plain_opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()
    # identical bits, momentum buffers included: rho = 0 takes exactly the plain code path's step
    assert all(torch.equal(a, b) for a, b in zip(sam_model.parameters(), plain_model.parameters()))
    for a, b in zip(sam_model.parameters(), plain_model.parameters()):
        assert torch.equal(sam_opt.state[a]["momentum_buffer"], plain_opt.state[b]["momentum_buffer"])


# ---------------------------------------------------------------------------- sharpness

@pytest.mark.parametrize("spectrum", [
    [7.0, 3.0, 2.0, 1.0, 0.5, 0.1],      # positive definite: λ_max is also the largest |λ|
    [-9.0, 4.0, 2.0, 1.0, -0.5, 0.1],    # a saddle: the largest |λ| is negative, λ_max = 4
])
def test_top_eigenvalue_of_a_quadratic_is_exact(spectrum):
    torch.manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    H = q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T
    model = Quadratic([0.0] * 2)
    model.w = nn.Parameter(torch.randn(6, dtype=torch.float64))
    value = top_hessian_eigenvalue(model, lambda: 0.5 * model.w @ H @ model.w, iters=150,
                                   generator=torch.Generator().manual_seed(0))
    assert value == pytest.approx(max(spectrum), rel=1e-9)


def test_top_eigenvalue_of_an_mlp_matches_autograd_hessian_and_keeps_bn_stats():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(32, 3, dtype=torch.float64), torch.randint(0, 3, (32,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[i:i + shape.numel()].view(shape)
            i += shape.numel()
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    eigs = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat0))   # ascending
    assert eigs[-2] / eigs[-1] < 0.9 and eigs[-1] > eigs[0].abs()   # a gap: 300 iterations converge
    buffers = [b.clone() for b in model.buffers()]
    value = top_hessian_eigenvalue(model, lambda: nn.functional.cross_entropy(model(x), y), iters=300,
                                   generator=torch.Generator().manual_seed(0))
    assert value == pytest.approx(float(eigs[-1]), rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))   # BN stats restored from a copy


def test_sharpness_config_defaults_and_errors():
    assert SharpnessConfig.from_dict(None) == SharpnessConfig(every=0, iters=20, batch_size=256)
    assert [SharpnessConfig(every=3).due(k) for k in range(1, 7)] == [False, False, True] * 2
    assert not any(SharpnessConfig().due(k) for k in range(1, 5))   # every = 0: never
    for bad in ({"every": -1}, {"iters": 0}, {"batch_size": 2.5}, {"evry": 2}):
        with pytest.raises(ValueError):
            SharpnessConfig.from_dict(bad)
    with pytest.raises(ValueError):
        OptimizerConfig(sam_rho=-0.1)


# ---------------------------------------------------------------------------- the loops

def _lip_cfg(**over) -> LipschitzConfig:
    raw = {"seed": 3, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64},
           "model": {"name": "aol_mlp", "width": 64, "depth": 3},
           "augmentation": {"name": "crop_flip", "crop": 1},
           "optimizer": {"lr": 0.2, "sam_rho": 0.05}, "budget": {"steps": 24}, "reports": 4,
           "sharpness": {"every": 2, "iters": 5, "batch_size": 64}}
    raw.update(over)
    return LipschitzConfig.from_dict(raw)


def _sphere_cfg(**over) -> SphereConfig:
    raw = {"seed": 3, "dataset": {"name": "synthetic", "batch_size": 32, "num_train": 256, "num_test": 64},
           "model": {"name": "convnet_si", "width": 4},
           "optimizer": {"mode": "sphere", "elr": 1e-2, "momentum": 0.5, "sam_rho": 0.5},
           "augmentation": {"name": "crop_flip", "crop": 1}, "budget": {"steps": 24}, "reports": 4,
           "sharpness": {"every": 2, "iters": 5, "batch_size": 64}}
    raw.update(over)
    return SphereConfig.from_dict(raw)


_run = partial(run_slices, steps=6)  # one loop's reports, without wall_seconds


@pytest.mark.parametrize("make_loop, make_cfg", [(LipschitzLoop, _lip_cfg), (SphereLoop, _sphere_cfg)],
                         ids=["lipschitz", "sphere"])
def test_loops_train_with_sam_and_continue_exactly(make_loop, make_cfg):
    straight = make_loop(make_cfg())
    expected = _run(straight, 4)
    first = make_loop(make_cfg())
    head = _run(first, 2)
    resumed = make_loop(make_cfg())   # a fresh process would build exactly this
    resumed.load_state_dict(first.state_dict())
    # Exact on purpose: a resumed loop repeats the uninterrupted run's bits (same process, same seed).
    assert head + _run(resumed, 2) == expected
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))
    # every = 2: sharpness at the 2nd and 4th report only, positive and finite (near a minimum)
    assert ["sharpness" in m for m in expected] == [False, True, False, True]
    assert all(0 < m["sharpness"] < 1e6 for m in expected if "sharpness" in m)
    assert not expected[-1]["diverged"] and expected[-1]["train_loss"] < expected[0]["train_loss"]
    # SAM is on: the same config without it takes other steps
    plain = make_loop(make_cfg(optimizer={**make_cfg().to_dict()["optimizer"], "sam_rho": 0.0}))
    assert _run(plain, 1)[0]["train_loss"] != expected[0]["train_loss"]


def test_sphere_sam_keeps_the_weights_on_the_sphere():
    loop = SphereLoop(_sphere_cfg())
    m = loop.train_for(6)   # the perturbation leaves the sphere; the restore and projection return
    assert m["weight_norm"] == pytest.approx(loop.rho0, rel=1e-6) and m["elr"] == pytest.approx(1e-2, rel=1e-5)


@pytest.mark.parametrize("make_loop, make_cfg, model", [
    (LipschitzLoop, _lip_cfg, {"name": "cpl_convnet", "width": 4, "depth": 1}),   # CPL's power-iteration buffers
    (SphereLoop, _sphere_cfg, {"name": "convnet_si", "width": 4}),                # BN running statistics
], ids=["lipschitz-cpl", "sphere-bn"])
def test_measuring_sharpness_never_changes_training(make_loop, make_cfg, model):
    # One loop after the other: CPL draws its lazy power-iteration vector from the global RNG at
    # the first training forward, so two loops built before either trains would differ anyway.
    measured = make_loop(make_cfg(model=model, sharpness={"every": 1, "iters": 3, "batch_size": 32}))
    a = _run(measured, 2, steps=3)
    silent = make_loop(make_cfg(model=model))
    b = _run(silent, 2, steps=3)
    assert all("sharpness" in m for m in a)
    # Exact on purpose: measuring uses its own generator and restores the buffers it touches, so it
    # cannot change a bit of training (same seed, same process).
    assert [{k: v for k, v in m.items() if k != "sharpness"} for m in a] == [
        {k: v for k, v in m.items() if k != "sharpness"} for m in b]
    assert all(torch.equal(x, y) for x, y in zip(measured.model.state_dict().values(),
                                                   silent.model.state_dict().values()))


def test_sharpness_is_the_top_eigenvalue_on_the_fixed_batch():
    loop = LipschitzLoop(_lip_cfg(sharpness={"every": 1, "iters": 40, "batch_size": 48}))
    loop.train_for(6)
    idx = loop.sharpness_indices
    assert torch.equal(idx[:32], loop.batch_indices(0)) and len(idx) == 48   # step 0's batch, then on
    value = loop.evaluate()["sharpness"]
    # Exact on purpose: the same function on the same batch from the same start vector, twice.
    assert math.isfinite(value) and value == loop.measure_sharpness()


@pytest.mark.parametrize("make_cfg, over, key", [
    (_lip_cfg, {"sharpness": {"every": -1}}, "sharpness"),
    (_lip_cfg, {"optimizer": {"sam_rho": -1.0}}, "optimizer"),
    (_sphere_cfg, {"sharpness": {"iterations": 3}}, "sharpness"),
    (_sphere_cfg, {"optimizer": {"elr": 1e-2, "sam_rho": -1.0}}, "optimizer"),
    (_sphere_cfg, {"optimizer": {"elr": 1e-2, "sam_adaptive": "yes"}}, "optimizer"),
])
def test_config_errors_name_the_key(make_cfg, over, key):
    with pytest.raises(ConfigError) as info:
        make_cfg(**over)
    assert info.value.key == key


def test_configs_round_trip_with_sam_and_sharpness():
    lip = _lip_cfg(optimizer={"lr": 0.2, "sam_rho": 0.1, "sam_adaptive": True})
    assert OptimizerConfig.from_dict(lip.optimizer.to_dict()) == lip.optimizer
    assert SharpnessConfig.from_dict(lip.to_dict()["sharpness"]) == lip.sharpness
    sphere = _sphere_cfg()
    assert SphereConfig.from_dict(sphere.to_dict()) == sphere
