"""Parity of the sphere study's networks with the authors' code (SPH).

SPH = github.com/tipt0p/three_regimes_on_the_sphere at 17877fc (mirrored; nets/convnet_si.py,
nets/convnet_si_af.py, nets/resnet_si.py, nets/resnet_si_af.py). The numbers below were measured
by building the original classes as train.py does for a 10-class 32x32 input (ConvNet:
init_channels=32, max_depth=3, the num_channels/depth of run_train_and_test.py; ResNet18:
PreActResNet(PreActBlock, [2, 2, 2, 2]), init_channels 64 (parser_train.py's default) and 32)
and counting their parameters, BatchNorm layers and leaf modules in registration order.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tune_lip.nn.models import build_model

CIFAR = (3, 32, 32)

# Leaf modules in registration order, measured on SPH's ConvNetDepth: conv-BN-ReLU at full
# resolution, then conv-BN-ReLU-MaxPool(2) three times (pooling after each conv), MaxPool(4),
# Flatten, Linear.
CONVNET_LEAVES = (["Conv2d", "BatchNorm2d", "ReLU"]
                  + ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 3
                  + ["MaxPool2d", "Flatten", "Linear"])
# Measured on SPH's PreActResNet: stem conv, then per block bn1, conv1, bn2, conv2 (+ the
# shortcut's BN, conv1x1 in the three downsampling blocks), final BN, ReLU, AvgPool2d(4), Linear.
RESNET_LEAVES = ["Conv2d", "BatchNorm2d"] * 20 + ["ReLU", "AvgPool2d", "Linear"]

# name, options, total parameters, SI (conv) parameters, conv tensors, filters, BN layers,
# BN affine, head bias, head norm (None: PyTorch's init) -- all measured on SPH.
CASES = [
    ("convnet_si", {}, 390_506, 387_936, 4, 480, 4, False, True, 10.0),
    ("convnet_si_af", {}, 391_466, 387_936, 4, 480, 4, True, True, None),
    ("resnet18_si", {}, 11_164_352, 11_159_232, 20, 4800, 20, False, False, 10.0),
    ("resnet18_si", {"width": 32}, 2_792_800, 2_790_240, 20, 2400, 20, False, False, 10.0),
    ("resnet18_si_af", {}, 11_173_056, 11_159_232, 20, 4800, 20, True, False, None),
]


def _leaves(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if not list(m.children())]


@pytest.mark.parametrize(("name", "options", "total", "si", "tensors", "filters", "bns", "affine", "bias", "norm"),
                         CASES, ids=[f"{c[0]}{c[1].get('width', '')}" for c in CASES])
def test_matches_the_original(name, options, total, si, tensors, filters, bns, affine, bias, norm):
    model = build_model(name, input_shape=CIFAR, num_classes=10, **options)
    assert sum(p.numel() for p in model.parameters()) == total
    convs = model.scale_invariant_parameters()
    assert (sum(p.numel() for p in convs), len(convs), sum(p.shape[0] for p in convs)) == (si, tensors, filters)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == bns and {m.affine for m in norms} == {affine}
    assert _leaves(model) == (CONVNET_LEAVES if name.startswith("convnet") else RESNET_LEAVES)
    assert (model.head.bias is not None) == bias
    if norm is not None:   # the SI variants: head at norm 10 (init_scale 10), never trained (noninvlr 0)
        torch.testing.assert_close(model.head.weight.detach().norm().item(), norm, rtol=1e-6, atol=0)
        assert not any(p.requires_grad for p in model.head.parameters())
    else:                  # the Af variants train everything (noninvlr -1, init_scale -1)
        assert all(p.requires_grad for p in model.parameters())
    assert model(torch.zeros(2, *CIFAR)).shape == (2, 10)


def test_head_seed_gives_the_originals_same_last_layer():
    # train.py --same_last_layer: seed 228, nn.Linear(256, 10), weight 10 W / ||W||; the values
    # below were measured there (CPU). The conv init (global RNG) is left untouched by head_seed.
    torch.manual_seed(5)
    model = build_model("convnet_si", input_shape=CIFAR, num_classes=10, head_seed=228)
    torch.testing.assert_close(model.head.weight[0, :4].tolist(),
                               [-0.002980112796649337, 0.08253120630979538, 0.12515725195407867,
                                0.009756269864737988], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.head.bias[:4].tolist(),
                               [-0.028695665299892426, -0.04395453631877899, 0.061620354652404785,
                                -0.044783830642700195], rtol=1e-6, atol=1e-7)
    torch.manual_seed(5)
    other = build_model("convnet_si", input_shape=CIFAR, num_classes=10, head_seed=228)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_penultimate_features_feed_the_head():
    for name in ("convnet_si", "resnet18_si"):
        model = build_model(name, input_shape=(1, 8, 8), num_classes=10, width=4).eval()
        x = torch.randn(3, 1, 8, 8)
        features = model.embed(x)
        assert features.shape == (3, 32)
        torch.testing.assert_close(model.head(features), model(x))
