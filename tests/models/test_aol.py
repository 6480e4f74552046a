"""AOL layers: spectral norm <= 1 for every weight, and the eval-mode weight cache."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tune_lip.nn.models import AOLConv2d, AOLLinear

L = TypeVar("L", AOLLinear, AOLConv2d)

FAST = settings(max_examples=40, deadline=None)
ELEMENTS = st.floats(-4, 4, allow_subnormal=False)


def conv_operator(layer: AOLConv2d, channels: int, size: int) -> torch.Tensor:
    """The matrix of the layer's linear part on (channels, size, size) inputs."""
    n = channels * size * size
    basis = torch.eye(n, dtype=torch.float64).view(n, channels, size, size)  # (n, C, H, W)
    out = F.conv2d(basis, layer.rescaled_weight(), padding=layer.padding)  # no bias: linear part
    return out.reshape(n, -1).T  # (outputs, n)


@FAST
@given(st.integers(1, 8), st.integers(1, 8), st.data())
def test_aol_linear_spectral_norm_at_most_one(n_in: int, n_out: int, data: st.DataObject) -> None:
    layer = AOLLinear(n_in, n_out).double()
    weight = data.draw(hnp.arrays(np.float64, (n_out, n_in), elements=ELEMENTS))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
    assert torch.linalg.matrix_norm(layer.rescaled_weight(), 2) <= 1 + 1e-5


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 2, 3, 5]), st.data())
def test_aol_conv_spectral_norm_at_most_one(
    c_in: int, c_out: int, k: int, data: st.DataObject
) -> None:
    layer = AOLConv2d(c_in, c_out, k).double()
    weight = data.draw(hnp.arrays(np.float64, (c_out, c_in, k, k), elements=ELEMENTS))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
    # The largest singular value of the full Jacobian on a 5x5 input is the operator norm.
    assert torch.linalg.matrix_norm(conv_operator(layer, c_in, 5), 2) <= 1 + 1e-5


def test_identity_init_is_exact_identity() -> None:
    x = torch.randn(4, 6)
    torch.testing.assert_close(AOLLinear(6, 6)(x), x, rtol=1e-5, atol=1e-6)  # d = (1 + 1e-6)^-1/2
    img = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(AOLConv2d(3, 3, 3)(img), img, rtol=1e-5, atol=1e-6)


def test_bias_and_shapes() -> None:
    conv = AOLConv2d(2, 4, 3)
    assert conv(torch.randn(1, 2, 7, 7)).shape == (1, 4, 7, 7)
    assert AOLConv2d(2, 4, 3, bias=False).bias is None
    assert AOLLinear(5, 3)(torch.randn(2, 5)).shape == (2, 3)


def _randomised(layer: L) -> L:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def test_eval_cache_matches_training_and_refreshes_after_a_step() -> None:
    cases: list[tuple[AOLLinear | AOLConv2d, torch.Tensor]] = [
        (_randomised(AOLLinear(6, 4)), torch.randn(3, 6)),
        (_randomised(AOLConv2d(2, 3, 3)), torch.randn(3, 2, 6, 6)),
    ]
    for layer, x in cases:
        train_out = layer.train()(x)
        layer.eval()
        torch.testing.assert_close(layer(x), train_out.detach())  # cached == recomputed
        assert layer._eval_cache  # the rescaled weight is cached ...
        cached = layer.rescaled_weight()
        assert layer.rescaled_weight() is cached  # ... and reused, not recomputed
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        layer.train()
        layer(x).square().sum().backward()
        opt.step()
        after_step = layer(x).detach()
        layer.eval()
        torch.testing.assert_close(layer(x), after_step)  # eval sees the updated weight
        assert not torch.allclose(layer(x), train_out)


def test_eval_cache_dropped_by_load_state_dict_and_in_place_edits() -> None:
    layer, x = AOLLinear(4, 4).eval(), torch.randn(2, 4)
    identity_out = layer(x)
    other = _randomised(AOLLinear(4, 4))
    layer.load_state_dict(other.state_dict())  # still in eval mode
    torch.testing.assert_close(layer(x), other.train()(x).detach())
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4))  # e.g. an EMA update applied to an eval model
    torch.testing.assert_close(layer(x), identity_out)


def test_cache_built_in_inference_mode_works_with_autograd_later() -> None:
    layer = AOLLinear(3, 3).eval()
    with torch.inference_mode():
        layer(torch.randn(1, 3))
    x = torch.randn(1, 3, requires_grad=True)
    layer(x).sum().backward()  # must not complain about inference tensors
    assert x.grad is not None


def test_rescaling_ignores_autocast() -> None:
    layer = AOLLinear(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight = layer.rescaled_weight()
    assert weight.dtype == torch.float32  # the Gram sum stays full precision under AMP
