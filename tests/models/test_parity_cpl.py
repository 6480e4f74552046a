"""The CPL ConvNets against the originals: parameter counts, layer sequences, CPL settings and
initialisations, and the networks' 1-Lipschitz property.

The numbers and sequences below were measured by running the originals' own code (our venv, in
a scratch directory, not shipped), on a (1, 3, 32, 32) CIFAR-10 input:
- SU = berndprach/scaling_up_Lipschitz_networks @ e7b2c70:
  ``lipschitz.models.load("CPL-LCN")`` from lipschitz/models/architectures/lipschitz_convolutional_network.py
  (``get_cpl_lcn``, DEFAULTS_YAML); CPL layers in lipschitz/models/layers/lipschitz/cpl.py.
- LLC = berndprach/1LipschitzLayersCompared @ 01e3f2a:
  ``models.get_model("ConvNetS", "CPLConv2d")`` from models/model_layer_combinations.py and
  models/simplified_conv_net.py (DEFAULT_MODELS["ConvNetS"]); CPL layers in
  models/layers/lipschitz/cpl.py.
The sequence lists every module, descending into nn.Sequential containers only (LLC's CPL layer
holds a ReLU submodule; it is one layer). Kernel shapes are (out, in, kh, kw) or (out, in).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tune_lip.nn.models import CPLConv2d, CPLLinear, build_model

SU_PARAMETERS = 41_918_336   # SU CPL-LCN, all trainable (biases too: requires_grad=bias=True)
LLC_PARAMETERS = 6_283_136   # LLC ConvNetS with CPLConv2d, all trainable


def _su_sequence() -> list[tuple[str, tuple[int, ...] | None]]:
    seq: list[tuple[str, tuple[int, ...] | None]] = [
        ("ZeroChannelConcatenation", None), ("CPLConv2d", (64, 64, 1, 1)), ("MaxMin", None)]
    for c in (64, 128, 256, 512, 1024):  # 5 blocks of 3, 3x3 kernels in every block
        seq += [("CPLConv2d", (c, c, 3, 3)), ("MaxMin", None)] * 3
        seq += [("FirstChannels", None), ("PixelUnshuffle", None)]
    return seq + [("MaxPool2d", None), ("Flatten", None), ("CPLLinear", (2048, 2048)),
                  ("FirstChannels", None)]


def _llc_sequence() -> list[tuple[str, tuple[int, ...] | None]]:
    seq: list[tuple[str, tuple[int, ...] | None]] = [
        ("ZeroChannelConcatenation", None), ("CPLConv2d", (32, 32, 1, 1)), ("MaxMin", None)]
    for c, k in ((32, 3), (64, 3), (128, 3), (256, 3), (512, 1)):  # 1x1 in the last block
        seq += [("CPLConv2d", (c, c, k, k)), ("MaxMin", None)] * 5
        seq += [("FirstChannels", None), ("PixelUnshuffle", None)]
    return seq + [("AdaptiveMaxPool2d", None), ("CPLConv2d", (1024, 1024, 1, 1)),
                  ("Flatten", None), ("FirstChannels", None)]


# Measured: 47 entries (SU) and 67 (LLC), the runs as written out above.
MEASURED = {"cpl_convnet": (SU_PARAMETERS, _su_sequence(), 47),
            "cpl_convnet_s": (LLC_PARAMETERS, _llc_sequence(), 67)}


def _atoms(module: nn.Module) -> list[tuple[str, tuple[int, ...] | None]]:
    out: list[tuple[str, tuple[int, ...] | None]] = []
    for child in module.children():
        if isinstance(child, nn.Sequential):
            out += _atoms(child)
        else:
            weight = getattr(child, "weight", None)
            out.append((type(child).__name__, tuple(weight.shape) if weight is not None else None))
    return out


def _cifar(name: str, **options: int) -> nn.Module:
    with torch.device("meta"):  # shapes only: the 41.9M weights are never allocated
        return build_model(name, input_shape=(3, 32, 32), num_classes=10, **options)


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_default_configuration_matches_the_original(name: str) -> None:
    parameters, sequence, length = MEASURED[name]
    model = _cifar(name)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert all(p.requires_grad for p in model.parameters())
    atoms = _atoms(model)
    assert len(atoms) == length and atoms == sequence


def test_su_pooling_is_maxpool_of_size_1_on_cifar() -> None:
    # SU: nn.MaxPool2d(s), s = 32 // 2**number_of_blocks = 1
    pools = [m for m in _cifar("cpl_convnet").modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 1 and pools[0].kernel_size == (1, 1)


CPL_SETTINGS = {
    # SU cpl.py: kaiming_uniform_(a=sqrt(5)), bias=True (zeros, trainable) also passed to the
    # transpose, val_iterations=1000 from torch.randn_like (a fresh start); power_iteration.py
    # get_eigenvalue: one training_pi.step() per training forward.
    "cpl_convnet": {"init": "kaiming_uniform", "power_iterations": 1,
                    "eval_power_iterations": 1000, "eval_start": "random",
                    "bias_after_transpose": True},
    # LLC cpl.py: xavier_normal_ kernel, bias U(+-1/sqrt(fan_in)), conv_transpose2d without
    # bias, update_uv(1, ...) per training forward, val_niter=100 from self.u (not stored back).
    "cpl_convnet_s": {"init": "xavier_normal", "power_iterations": 1,
                      "eval_power_iterations": 100, "eval_start": "training",
                      "bias_after_transpose": False},
}


@pytest.mark.parametrize("name", sorted(CPL_SETTINGS))
def test_every_cpl_layer_has_the_original_settings(name: str) -> None:
    layers = [m for m in _cifar(name).modules() if isinstance(m, (CPLConv2d, CPLLinear))]
    assert len(layers) == (17 if name == "cpl_convnet" else 27)
    for layer in layers:
        assert {key: getattr(layer, key) for key in CPL_SETTINGS[name]} == CPL_SETTINGS[name]


def test_power_iterations_option_reaches_every_layer() -> None:
    model = _cifar("cpl_convnet_s", power_iterations=3)
    assert {m.power_iterations for m in model.modules() if isinstance(m, CPLConv2d)} == {3}


def test_initialisations_follow_the_originals() -> None:
    torch.manual_seed(0)
    fan_in = 64 * 9
    su = CPLConv2d(64, 3)  # kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)), std = bound/sqrt(3)
    bound = 1 / math.sqrt(fan_in)
    assert su.weight.abs().max() <= bound and torch.equal(su.bias, torch.zeros(64))
    torch.testing.assert_close(su.weight.std(), torch.tensor(bound / math.sqrt(3)), rtol=0.03, atol=0)
    llc = CPLConv2d(64, 3, init="xavier_normal")  # N(0, 2/(fan_in+fan_out)), bias U(+-1/sqrt(fan_in))
    torch.testing.assert_close(llc.weight.std(), torch.tensor(math.sqrt(2 / (2 * fan_in))),
                               rtol=0.03, atol=0)
    assert llc.bias.abs().max() <= bound and llc.bias.abs().max() > bound / 2
    linear = CPLLinear(256)  # SU CPLLinear: the same kaiming-uniform, fan_in = 256
    assert linear.weight.abs().max() <= 1 / 16 and torch.equal(linear.bias, torch.zeros(256))


def test_small_configurations_run_on_digits_and_cifar() -> None:
    for name in ("cpl_convnet", "cpl_convnet_s"):
        digits = build_model(name, input_shape=(1, 8, 8), num_classes=10, width=4, depth=1)
        x = torch.randn(2, 1, 8, 8)
        assert digits(x).shape == digits.eval()(x).shape == (2, 10)
        # 8x8: 3 blocks (8 -> 4 -> 2 -> 1) instead of the originals' 5 on 32x32
        assert sum(isinstance(m, nn.PixelUnshuffle) for m in digits.modules()) == 3
    with pytest.raises(ValueError, match="width must be even"):
        build_model("cpl_convnet", input_shape=(3, 32, 32), num_classes=10, width=5)
    with pytest.raises(ValueError, match="fewer than num_classes"):
        build_model("cpl_convnet", input_shape=(3, 2, 2), num_classes=10, width=4)


def _randomise(model: nn.Module, seed: int, scale: float) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


@pytest.mark.parametrize("name", ["cpl_convnet", "cpl_convnet_s"])
@pytest.mark.parametrize("seed", [0, 1])
def test_networks_are_1_lipschitz_after_enough_power_iterations(name: str, seed: int) -> None:
    """|f(x) - f(y)| <= |x - y| in eval, probed along random pairs and the steepest direction
    (the top right singular vector of the Jacobian), once the eval estimates have converged."""
    torch.manual_seed(seed)
    model = build_model(name, input_shape=(2, 8, 8), num_classes=3, width=4, depth=2).double()
    model(torch.randn(1, 2, 8, 8, dtype=torch.float64))  # training forward: the u vectors
    model = _randomise(model, seed, 0.3).eval()
    for m in model.modules():
        if isinstance(m, (CPLConv2d, CPLLinear)):
            m.eval_power_iterations = 5000  # enough for these small layers (see test_cpl.py)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(model, x, vectorize=True).reshape(3, -1)
    assert torch.linalg.matrix_norm(jac, 2) <= 1 + 1e-4
    steepest = torch.linalg.svd(jac).Vh[0].reshape(x.shape)
    for delta in (1e-4 * steepest, 0.5 * steepest, torch.randn_like(x)):
        assert (model(x) - model(x + delta)).norm() <= delta.norm() * (1 + 1e-4)
