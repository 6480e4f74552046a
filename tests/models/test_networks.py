"""Whole networks are 1-Lipschitz end to end; MaxMin; the model registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian

from tune_lip.nn.models import AOLMLP, MODELS, CPLConvNet, MaxMin, build_model, model_options

FAST = settings(max_examples=15, deadline=None)


@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 4, 6]))
def test_maxmin_is_norm_preserving_and_1_lipschitz(seed: int, pairs: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 3, 2 * pairs, 3, generator=gen, dtype=torch.float64)
    f = MaxMin()
    torch.testing.assert_close(f(x).norm(), x.norm())  # each pair is permuted: norm kept
    assert (f(x) - f(y)).norm() <= (x - y).norm() * (1 + 1e-12)


def test_maxmin_sorts_pairs_and_rejects_odd_channels() -> None:
    # adjacent pairs (1, 5) and (3, 2), each written [max, min], as both papers' code
    out = MaxMin()(torch.tensor([[1.0, 5.0, 3.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[5.0, 1.0, 3.0, 2.0]]))
    with pytest.raises(ValueError, match="even number of channels"):
        MaxMin()(torch.zeros(2, 3))


def _randomise(model: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    """Move far from the (near-identity) init so the check is not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


MODELS_UNDER_TEST = {
    "aol_mlp": lambda: AOLMLP(input_shape=(1, 4, 4), num_classes=3, width=12, depth=3),
    "cpl_convnet": lambda: CPLConvNet(input_shape=(2, 8, 8), num_classes=3, width=3, depth=2),
}


@pytest.mark.parametrize("name", sorted(MODELS_UNDER_TEST))
@FAST
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.0, 0.01, 0.1, 1.0]))
def test_network_is_1_lipschitz(name: str, seed: int, scale: float) -> None:
    torch.manual_seed(seed)
    model = _randomise(MODELS_UNDER_TEST[name]().double(), seed, scale)
    shape = (1, 2, 8, 8) if name == "cpl_convnet" else (1, 1, 4, 4)
    x = torch.randn(shape, dtype=torch.float64)
    # Random pairs are far from the worst case (ratios ~0.1), so also probe the steepest
    # direction: the top right singular vector of the Jacobian (norm ~1 at small scales).
    jac = jacobian(model, x, vectorize=True).reshape(3, -1)  # (num_classes, C*H*W)
    assert torch.linalg.matrix_norm(jac, 2) <= 1 + 1e-9
    steepest = torch.linalg.svd(jac).Vh[0].reshape(shape)
    for delta in (1e-4 * steepest, 0.5 * steepest, torch.randn(shape, dtype=torch.float64)):
        y = x + delta
        assert (model(x) - model(y)).norm() <= (x - y).norm() * (1 + 1e-9)


def test_cpl_convnet_shapes_for_digits_and_cifar() -> None:
    digits = CPLConvNet(input_shape=(1, 8, 8), num_classes=10, width=4, depth=1)
    assert digits(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    cifar = CPLConvNet(input_shape=(3, 32, 32), num_classes=10, width=4, depth=1)
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(isinstance(m, torch.nn.PixelUnshuffle) for m in cifar.modules()) == 2  # 3 stages
    with pytest.raises(ValueError, match="divisible by 4"):
        CPLConvNet(input_shape=(3, 30, 30), num_classes=10)


def test_aol_mlp_structure_and_validation() -> None:
    model = AOLMLP(input_shape=(3, 4, 4), num_classes=10, width=48, depth=4)
    assert sum(isinstance(m, MaxMin) for m in model.modules()) == 3  # depth - 1 activations
    assert model(torch.randn(5, 3, 4, 4)).shape == (5, 10)
    with pytest.raises(ValueError, match="depth must be >= 2"):
        AOLMLP(input_shape=(1, 4, 4), num_classes=10, depth=1)
    with pytest.raises(ValueError, match="width must be even"):
        AOLMLP(input_shape=(1, 4, 4), num_classes=10, width=11)


def test_registry_builds_every_model_with_options() -> None:
    assert {"aol_mlp", "cpl_convnet"} <= set(MODELS)
    assert model_options("aol_mlp") == ["width", "depth"]
    assert model_options("cpl_convnet") == ["width", "depth", "power_iterations"]
    model = build_model("aol_mlp", input_shape=[1, 8, 8], num_classes=10, width=16, depth=2)
    assert isinstance(model, AOLMLP) and model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_registry_errors_list_the_valid_names() -> None:
    with pytest.raises(ValueError) as unknown_model:
        build_model("resnet", input_shape=(1, 8, 8), num_classes=10)
    assert str(unknown_model.value) == f"unknown model 'resnet'; valid models: {', '.join(sorted(MODELS))}"
    with pytest.raises(ValueError) as unknown_option:
        build_model("cpl_convnet", input_shape=(1, 8, 8), num_classes=10, widht=8)
    message = str(unknown_option.value)
    assert "'widht'" in message and "width, depth, power_iterations" in message
