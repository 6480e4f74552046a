"""Parity of the scaling study's networks with the authors' code (SVAG).

SVAG = github.com/sadhikamalladi/svag at e618094 (mirrored). The numbers below were measured by
building the original classes with the settings of hparams/cifar10_hparams_dict.py over the
defaults of hparams/hparams.py (CIFAR10_HParams: is_bias=True, ntk_init=False, last_bn=False),
for a 10-class 32x32 input, in torch 2.14 on CPU:
- ``preresnet32`` (models/my_models/preresnet.py, PreResNet(depth=32, widths=[16, 32, 64],
  norm_method='BN'|'GN', homo=True, bn_affine=False, fix_last_layer=True)), also widen_factor=4;
- ``vgg19`` (models/my_models/vggv2.py, vgg19_bn with the same flags: the paper's "VGG-16",
  cifar10_hparams_dict.py's ``vgg16 = evolve(vgg19, arch='vgg19_bn')``);
- the dict entry ``'vgg16'`` (vggv2.vgg16: batch_norm=False, so no norm and conv biases), and
  vggv2.vgg16_bn with the flags of ``vgg19``.
Layer sequences are the leaf modules in the order a forward pass calls them (forward hooks), with
NTKConv2d/NTKLinear read as conv/linear. The original could not run a training-mode forward:
torch 2.14 raises "batch_norm eps must be positive during training, but got 0" on its eps = 0.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tune_lip.nn.models import build_model
from tune_lip.nn.models.scaling_nets import SI_EPS

CIFAR = (3, 32, 32)

# name, options, trained parameters, all parameters (the frozen head's 10·D + 10 included),
# conv layers, norm layers -- measured on SVAG.
CASES = [
    ("preresnet32", {"norm": "bn"}, 464_048, 464_698, 34, 34),
    ("preresnet32", {"norm": "gn"}, 464_048, 464_698, 34, 34),
    ("preresnet32", {"norm": "bn", "width": 4}, 7_419_584, 7_422_154, 34, 34),
    ("vgg19", {"norm": "bn"}, 20_018_880, 20_024_010, 16, 16),
    ("vgg19", {"norm": "gn"}, 20_018_880, 20_024_010, 16, 16),
    ("vgg16", {"norm": "none"}, 14_714_688, 14_719_818, 13, 0),
    ("vgg16", {"norm": "bn"}, 14_710_464, 14_715_594, 13, 13),   # vggv2.vgg16_bn, same flags
]

_BLOCK = "bn relu conv3 bn relu conv3"
# Measured on SVAG's PreResNet-32: stem, then per stage a first block whose shortcut is
# bn -> conv1x1 (stride 2 in stages 2 and 3) on the block's raw input, four plain blocks; final
# bn -> adaptive average pool -> linear (no ReLU before the pool).
PRERESNET_CALLS = " ".join(
    ["conv3", _BLOCK, "bn conv1", *[_BLOCK] * 4,
     "bn relu conv3/2 bn relu conv3 bn conv1/2", *[_BLOCK] * 4,
     "bn relu conv3/2 bn relu conv3 bn conv1/2", *[_BLOCK] * 4,
     "bn gap linear"]).split()
# Measured on SVAG's vgg19_bn: conv3 -> bn -> relu per width, 2x2 average pools, global pool, linear.
VGG19_CALLS = " ".join(
    ["conv3 bn relu", "conv3 bn relu", "avgpool", *["conv3 bn relu"] * 2, "avgpool",
     *["conv3 bn relu"] * 4, "avgpool", *["conv3 bn relu"] * 4, "avgpool", *["conv3 bn relu"] * 4, "avgpool",
     "gap linear"]).split()


def _token(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"conv{module.kernel_size[0]}" + (f"/{module.stride[0]}" if module.stride[0] > 1 else "")
    return {nn.BatchNorm2d: "bn", nn.GroupNorm: "gn", nn.ReLU: "relu", nn.AvgPool2d: "avgpool",
            nn.MaxPool2d: "maxpool", nn.AdaptiveAvgPool2d: "gap", nn.Linear: "linear"}[type(module)]


def _calls(model: nn.Module, x: torch.Tensor) -> list[str]:
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(_token(m)))
             for m in model.modules() if not list(m.children())]
    model(x)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("name, options, trained, total, convs, norms", CASES)
def test_parameter_counts_match_the_original(name, options, trained, total, convs, norms):
    model = build_model(name, input_shape=CIFAR, num_classes=10, **options)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trained
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert sum(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules()) == norms


@pytest.mark.parametrize("name, expected", [("preresnet32", PRERESNET_CALLS), ("vgg19", VGG19_CALLS)])
def test_layer_sequence_matches_the_original(name, expected):
    assert len(expected) == {"preresnet32": 100, "vgg19": 55}[name]   # the lengths measured on SVAG
    model = build_model(name, input_shape=CIFAR, num_classes=10).eval()
    assert _calls(model, torch.randn(2, *CIFAR)) == expected


@pytest.mark.parametrize("name", ["preresnet32", "vgg16", "vgg19"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_norms_are_affine_free_at_si_eps_and_the_head_is_frozen(name, norm):
    model = build_model(name, input_shape=CIFAR, num_classes=10, norm=norm)
    layers = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    # SVAG: eps = 0, affine=False (bn_affine=False) everywhere; ours eps = 1e-20 (see scaling_nets).
    assert layers and all(m.eps == SI_EPS and not m.affine for m in layers)
    if norm == "gn":
        assert all(m.num_groups == 8 for m in layers)   # ntk.py's norm2d: nn.GroupNorm(8, C)
    head = model.head
    assert isinstance(head, nn.Linear) and head.bias is not None   # CIFAR10_HParams.is_bias = True
    assert not head.weight.requires_grad and not head.bias.requires_grad   # fix_last_layer = True
    assert torch.count_nonzero(head.bias) == 0


@pytest.mark.parametrize("name, width", [("preresnet32", 64), ("vgg19", 512)])
def test_init_statistics_match_ntk_reset_parameters(name, width):
    torch.manual_seed(0)
    model = build_model(name, input_shape=CIFAR, num_classes=10)
    # ntk.py reset_parameters (ntk_init=False): conv weight N(0, 2/fan_in), fan_in = k*k*c_in.
    # Measured on SVAG (seed 0): every conv's std / sqrt(2/fan_in) in [0.976, 1.057] (PreResNet-32),
    # [0.994, 1.005] (vgg19_bn). Pooled over all convs the standardised weights are N(0, 1):
    z = torch.cat([(m.weight / math.sqrt(2.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))).flatten()
                   for m in model.modules() if isinstance(m, nn.Conv2d)]).detach()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            ratio = float(m.weight.detach().std()) / math.sqrt(2.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
            assert 0.9 < ratio < 1.1
            assert m.bias is None
    # The head: N(0, 2/D). Measured on SVAG (seed 0): std 0.170 (D = 64, sqrt(2/64) = 0.177),
    # 0.0616 (D = 512, sqrt(2/512) = 0.0625).
    assert model.head.weight.std().item() == pytest.approx(math.sqrt(2.0 / width), rel=0.15)


@pytest.mark.parametrize("name", ["preresnet32", "vgg19"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_scale_invariant_in_the_trained_weights(name, norm):
    # SVAG's utils.py sc_test: scale every trainable parameter by 10, the output must not move
    # (homo=True makes the stage-1 shortcut normalised too; the frozen head is not scaled).
    torch.manual_seed(1)
    model = build_model(name, input_shape=CIFAR, num_classes=10, norm=norm, width=0.25).train()
    x = torch.randn(8, *CIFAR)
    before = model(x).detach()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.mul_(10.0)
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-4, atol=1e-5)


def test_no_relu_between_the_last_norm_and_the_pool():
    # preresnet.py's forward: bn -> avgpool -> fc; the penultimate features take both signs.
    torch.manual_seed(0)
    model = build_model("preresnet32", input_shape=CIFAR, num_classes=10, width=0.25).train()
    features = model.features(torch.randn(16, *CIFAR))
    assert features.shape == (16, 16) and (features < 0).any()
