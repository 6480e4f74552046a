"""CPL layers: 1-Lipschitz in eval once power iteration has converged, the training step,
the cached eval estimate, exact checkpoints, seeded start vectors."""

from __future__ import annotations

from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian

import tune_lip.nn.models.cpl as cpl
from tune_lip.nn.models import CPLConv2d, CPLLinear, conv_spectral_norm_bound

# Derandomised: the same draws every run, so a rare draw cannot make CI flaky.
FAST = settings(max_examples=15, deadline=None, derandomize=True)
# Power iteration approaches ||W|| from below, so a CPL layer is (1 + 4 delta)-Lipschitz when its
# estimate is delta short. delta shrinks with the steps, slowly where the top singular values
# nearly coincide, as they do in pairs for zero-padded convolutions (a 3-channel 3x3 kernel on
# 6x6: ratio 0.9994, delta = 1.4e-4 after LLC's 100 steps, 2.2e-5 after SU's 1000, 2e-7 after
# 3000). The property is checked after enough steps for these small layers, to this slack:
ENOUGH = 5000
SLACK = 1e-4


Layer = TypeVar("Layer", CPLLinear, CPLConv2d)


def _gaussian(layer: Layer, seed: int) -> Layer:
    """Weights and bias far from the init (so the check is not trivial), float64, eval."""
    gen = torch.Generator().manual_seed(seed)
    layer.double()  # in place, as .eval() below
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    layer.eval()
    return layer


def _jacobian_norm(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    jac = jacobian(layer, x, vectorize=True).reshape(x.numel(), x.numel())
    return torch.linalg.matrix_norm(jac, 2)


def _dense_conv(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The zero-padded ('same') convolution as a matrix, (C*H*W, C*H*W)."""
    c = weight.shape[1]
    n = c * size[0] * size[1]
    basis = torch.eye(n, dtype=weight.dtype).view(n, c, *size)
    return F.conv2d(basis, weight, padding=weight.shape[-1] // 2).reshape(n, n).T


@FAST
@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.sampled_from(["random", "training"]))
def test_cpl_linear_is_1_lipschitz_in_eval(features: int, seed: int, start: str) -> None:
    torch.manual_seed(seed)
    layer = CPLLinear(features, eval_power_iterations=ENOUGH, eval_start=start)  # type: ignore[arg-type]
    layer = _gaussian(layer, seed)
    x, y = torch.randn(2, 1, features, dtype=torch.float64)
    assert _jacobian_norm(layer, x) <= 1 + SLACK
    assert (layer(x) - layer(y)).norm() <= (x - y).norm() * (1 + SLACK)


@FAST
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(0, 2**31 - 1),
       st.sampled_from(["random", "training"]))
def test_cpl_conv_is_1_lipschitz_in_eval(channels: int, k: int, seed: int, start: str) -> None:
    torch.manual_seed(seed)
    layer = CPLConv2d(channels, k, eval_power_iterations=ENOUGH, eval_start=start)  # type: ignore[arg-type]
    layer(torch.randn(1, channels, 4, 4))  # a training forward creates u (the LLC start)
    layer = _gaussian(layer, seed)
    x, y = torch.randn(2, 1, channels, 4, 4, dtype=torch.float64)
    assert _jacobian_norm(layer, x) <= 1 + SLACK
    assert (layer(x) - layer(y)).norm() <= (x - y).norm() * (1 + SLACK)


def test_power_iteration_reaches_the_zero_padded_norm() -> None:
    """Training and eval estimate the norm of the operator the layer applies (zero padding, as
    both originals), not a circular bound; the FFT bound stays above it."""
    torch.manual_seed(0)
    layer = _gaussian(CPLConv2d(3, 3, power_iterations=ENOUGH, eval_power_iterations=ENOUGH), 0)
    layer.train()(torch.randn(2, 3, 6, 6, dtype=torch.float64))  # one training forward
    exact = torch.linalg.matrix_norm(_dense_conv(layer.weight.detach(), (6, 6)), 2)
    h_train = layer.rescaling((1, 3, 6, 6)).detach()
    torch.testing.assert_close(h_train, 2 / exact**2, rtol=1e-6, atol=0)
    h_eval = layer.eval().rescaling((1, 3, 6, 6))
    torch.testing.assert_close(h_eval, 2 / exact**2, rtol=1e-6, atol=0)
    assert exact <= conv_spectral_norm_bound(layer.weight.detach(), (6, 6), layer.padding)


def test_one_training_step_is_one_power_iteration_step_with_sigma_through_w() -> None:
    torch.manual_seed(0)
    layer = CPLLinear(5).double()
    w, u0 = layer.weight.detach(), layer.u.clone()
    x = torch.randn(3, 5, dtype=torch.float64)
    out = layer(x)
    v = F.normalize(u0 @ w.T, dim=1)  # SU PowerIteration.step: v = A u, u = A^T v, normalised
    u1 = F.normalize(v @ w, dim=1)
    torch.testing.assert_close(layer.u, u1)
    sigma = (v * (u1 @ w.T)).sum()  # SU get_eigenvalue: <v, A u>
    b = layer.bias.detach()
    expected = x - 2 / sigma**2 * (torch.relu(x @ w.T + b) @ w + b)  # bias also after W^T (SU)
    torch.testing.assert_close(out.detach(), expected)
    layer.rescaling((1, 5)).backward()
    assert layer.weight.grad is not None  # sigma carries gradient to W


def test_llc_layer_adds_no_bias_after_the_transpose() -> None:
    torch.manual_seed(0)
    layer = CPLConv2d(2, 3, bias_after_transpose=False, init="xavier_normal").double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    w, b = layer.weight.detach(), layer.bias.detach()
    z = torch.relu(F.conv2d(x, w, b, padding=1))
    h = layer.rescaling((1, 2, 5, 5))
    torch.testing.assert_close(layer(x), x - h * F.conv_transpose2d(z, w, padding=1))


def test_two_training_forwards_before_backward() -> None:
    # u is updated in place on every forward; the graph of the first forward must survive.
    for iterations in (0, 1):
        layer = CPLConv2d(2, 3, power_iterations=iterations)
        x = torch.randn(2, 2, 5, 5)
        (layer(x).sum() + layer(x).sum()).backward()
        assert layer.weight.grad is not None


def test_conv_u_lazy_reinit_and_exact_checkpoint_restore() -> None:
    torch.manual_seed(0)
    layer = CPLConv2d(2, 3)
    assert layer.u.numel() == 0  # not created until the first training forward
    layer(torch.randn(1, 2, 5, 5))
    assert layer.u.shape == (1, 2, 5, 5)  # the input's shape, as both originals
    layer(torch.randn(1, 2, 6, 6))
    assert layer.u.shape == (1, 2, 6, 6)  # new spatial size: new vector

    fresh = CPLConv2d(2, 3)
    fresh.load_state_dict(layer.state_dict())  # adopts the lazily shaped buffer
    x = torch.randn(3, 2, 6, 6)
    torch.testing.assert_close(fresh(x), layer(x))  # training forwards, u included, agree
    torch.testing.assert_close(fresh.u, layer.u)


def test_eval_estimate_is_cached_never_moves_u_and_refreshes_after_a_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    layer = CPLConv2d(3, 3)
    x = torch.randn(4, 3, 6, 6)
    layer(x)
    calls: list[int] = []
    real = cpl.power_iteration

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(cpl, "power_iteration", counting)
    layer.eval()
    u_before, rng_before = layer.u.clone(), torch.random.get_rng_state()
    first = layer(x)
    torch.testing.assert_close(layer(x[:2]), first[:2])  # same size, other batch: cached
    assert calls == [1000]  # one eval power iteration of 1000 steps (SU val_iterations)
    torch.testing.assert_close(layer.u, u_before)  # evaluating never touches u ...
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # ... nor the global RNG
    layer(torch.randn(1, 3, 4, 4))
    assert calls == [1000, 1000]  # another input size: its own estimate

    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.train()
    layer(x).square().sum().backward()
    opt.step()
    layer.eval()
    layer(x)
    assert calls == [1000, 1000, 1, 1000]  # training step (1), then a fresh eval estimate
    exact = torch.linalg.matrix_norm(_dense_conv(layer.weight.detach(), (6, 6)), 2)
    # SU's 1000 eval steps: short by < 1e-4 here (2 delta in h), below ENOUGH's precision
    torch.testing.assert_close(layer.rescaling((1, 3, 6, 6)), 2 / exact**2, rtol=2e-4, atol=0)


def test_eval_start_random_or_training() -> None:
    """SU starts the eval iteration from a fresh random vector, LLC from the training one."""
    torch.manual_seed(0)
    su = CPLConv2d(2, 3, eval_power_iterations=0)
    su(torch.randn(1, 2, 5, 5))
    llc = CPLConv2d(2, 3, eval_power_iterations=0, eval_start="training")
    llc.load_state_dict(su.state_dict())
    operator = _dense_conv(su.weight.detach(), (5, 5))
    from_training = 2 / (operator @ su.u.flatten()).norm() ** 2
    torch.testing.assert_close(llc.eval().rescaling((1, 2, 5, 5)), from_training)
    assert not torch.allclose(su.eval().rescaling((1, 2, 5, 5)), from_training)


def test_cpl_conv_power_iteration_start_is_seeded_with_the_model() -> None:
    """Two models built from the same seed start power iteration from the same u, however many
    random numbers are drawn between construction and the first training step."""
    torch.manual_seed(0)
    a = CPLConv2d(3)
    torch.manual_seed(0)
    b = CPLConv2d(3)
    x = torch.randn(2, 3, 5, 5)
    a.train()(x)
    torch.randn(1000)  # e.g. the data order or another trial's model
    b.train()(x)
    # Exact on purpose: the same seed draws the same start vector, then the same iteration on the same x.
    assert a.u.shape == (1, 3, 5, 5) and torch.equal(a.u, b.u)
    torch.manual_seed(1)
    c = CPLConv2d(3)
    c.train()(x)
    assert not torch.equal(a.u, c.u)


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="odd kernel_size"):
        CPLConv2d(2, 2)
    with pytest.raises(ValueError, match="eval_start"):
        CPLLinear(2, eval_start="zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init"):
        CPLLinear(2, init="orthogonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        CPLConv2d(2, power_iterations=-1)
