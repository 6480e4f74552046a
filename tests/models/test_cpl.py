"""CPL layers: 1-Lipschitz in eval for every weight, power iteration, exact checkpoints."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.autograd.functional import jacobian

from tune_lip.nn.models import CPLConv2d, CPLLinear, conv_spectral_norm_bound

FAST = settings(max_examples=25, deadline=None)
ELEMENTS = st.floats(-3, 3, allow_subnormal=False)


def _set(layer: torch.nn.Module, **values: np.ndarray) -> None:
    with torch.no_grad():
        for name, value in values.items():
            getattr(layer, name).copy_(torch.from_numpy(value))


def _jacobian_norm(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    jac = jacobian(layer, x, vectorize=True).reshape(x.numel(), x.numel())
    return torch.linalg.matrix_norm(jac, 2)


@FAST
@given(st.integers(1, 6), st.data())
def test_cpl_linear_is_1_lipschitz_in_eval(features: int, data: st.DataObject) -> None:
    layer = CPLLinear(features).double().eval()
    _set(
        layer,
        weight=data.draw(hnp.arrays(np.float64, (features, features), elements=ELEMENTS)),
        bias=data.draw(hnp.arrays(np.float64, (features,), elements=ELEMENTS)),
    )
    x = torch.from_numpy(data.draw(hnp.arrays(np.float64, (1, features), elements=ELEMENTS)))
    assert _jacobian_norm(layer, x) <= 1 + 1e-5


@FAST
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.data())
def test_cpl_conv_is_1_lipschitz_in_eval(channels: int, k: int, data: st.DataObject) -> None:
    layer = CPLConv2d(channels, k).double().eval()
    _set(
        layer,
        weight=data.draw(hnp.arrays(np.float64, (channels, channels, k, k), elements=ELEMENTS)),
        bias=data.draw(hnp.arrays(np.float64, (channels,), elements=ELEMENTS)),
    )
    x = torch.from_numpy(data.draw(hnp.arrays(np.float64, (1, channels, 4, 4), elements=ELEMENTS)))
    assert _jacobian_norm(layer, x) <= 1 + 1e-5


def test_conv_training_sigma_converges_to_the_eval_bound() -> None:
    torch.manual_seed(0)
    layer = CPLConv2d(3, 3, power_iterations=200).double()
    layer(torch.randn(2, 3, 6, 6, dtype=torch.float64))  # one training forward: 200 steps
    estimate = layer.sigma((6, 6)).detach()
    bound = conv_spectral_norm_bound(layer.weight.detach(), (6, 6), layer.padding)
    # Training and eval aim at the same sigma: the circular operator on the 8x8 torus.
    torch.testing.assert_close(estimate, bound, rtol=1e-6, atol=0)
    # ... which bounds the zero-padded operator that the layer applies (dense, 108 x 108).
    n = 3 * 6 * 6
    basis = torch.eye(n, dtype=torch.float64).view(n, 3, 6, 6)
    operator = torch.nn.functional.conv2d(basis, layer.weight.detach(), padding=1).reshape(n, n)
    assert torch.linalg.matrix_norm(operator, 2) <= bound


def test_linear_power_iteration_converges_and_trains_through_sigma() -> None:
    torch.manual_seed(0)
    layer = CPLLinear(5, power_iterations=50).double()
    sigma = layer.sigma()
    torch.testing.assert_close(sigma, torch.linalg.matrix_norm(layer.weight, 2), rtol=1e-6, atol=0)
    sigma.backward()
    assert layer.weight.grad is not None  # sigma carries gradient to W


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
    assert layer.u.shape == (1, 2, 7, 7)  # the torus around 5x5 (padding 1)
    layer(torch.randn(1, 2, 6, 6))
    assert layer.u.shape == (1, 2, 8, 8)  # new spatial size: new vector

    fresh = CPLConv2d(2, 3)
    fresh.load_state_dict(layer.state_dict())  # adopts the lazily shaped buffer
    x = torch.randn(3, 2, 6, 6)
    torch.testing.assert_close(fresh(x), layer(x))  # training forwards, u included, agree
    torch.testing.assert_close(fresh.u, layer.u)


def test_eval_cache_is_stable_and_refreshes_after_a_step() -> None:
    torch.manual_seed(0)
    layer = CPLLinear(4)
    x = torch.randn(3, 4)
    layer.eval()
    first, u_before = layer(x), layer.u.clone()
    torch.testing.assert_close(layer(x), first)
    torch.testing.assert_close(layer.u, u_before)  # evaluating never touches u
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer.train()
    layer(x).square().sum().backward()
    opt.step()
    layer.eval()
    expected = x - 2 / torch.linalg.matrix_norm(layer.weight, 2) ** 2 * (
        torch.relu(x @ layer.weight.T + layer.bias) @ layer.weight
    )
    torch.testing.assert_close(layer(x), expected.detach())


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
    assert a.u.shape == (1, 3, 7, 7) and torch.equal(a.u, b.u)
    torch.manual_seed(1)
    c = CPLConv2d(3)
    c.train()(x)
    assert not torch.equal(a.u, c.u)
