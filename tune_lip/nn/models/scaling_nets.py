"""Networks of the scaling-rules study: PreResNet-32, ResNet-32, VGG-16 and VGG-19.

From the experiments of *On the Validity of Modeling SGD with Stochastic Differential
Equations* (Li, Malladi, Arora, 2021), re-implemented after their code (the SVAG repository,
``models/my_models/{preresnet,vggv2,ntk,resnet}.py`` with the settings of
``hparams/cifar10_hparams_dict.py``; docs/RECIPES.md lists every setting and
difference). Every network takes ``norm`` (``"bn"`` BatchNorm, ``"gn"`` GroupNorm(8),
``"none"``) and a ``width`` multiplier of the channel counts (each count rounded, at least 1;
the originals' ``widen_factor`` is an integer multiplier), and maps (B, C, H, W) ->
(B, num_classes). ``features(x)`` returns the (B, D) penultimate features, the head's input.

- ``PreResNet32``: the paper's scale-invariant net (``preresnet32``: ``homo=True``,
  ``bn_affine=False``, ``fix_last_layer=True``). Pre-activation CIFAR ResNet, 6n+2 = 32 layers
  (3 stages of n = 5 blocks, widths 16w, 32w, 64w, strides 1, 2, 2); norm layers with
  **affine off**; the first block of **every** stage, stage 1 included, adds a shortcut
  conv1x1(norm(x)) of its raw input x (``homo``), the others add x; after the last stage a
  norm and a global average pool -- **no ReLU** before the pool -- and a **frozen** Linear head
  with a bias. 464,048 trained parameters at width 1 on CIFAR-10, as the original.
- ``VGG16`` / ``VGG19``: ``vggv2.py``'s VGG with ``batch_norm`` (13 / 16 conv -> norm -> ReLU
  layers of 64w..512w), **average** pools, a global average pool and the same frozen head, norm
  affine off: scale-invariant like PreResNet-32. With ``norm: none`` the convs get a (zero-init)
  bias, as vggv2's plain VGG. Note: the paper's "VGG-16" runs (``vgg16_*`` configs) build
  ``vgg19_bn`` (``vgg16 = evolve(vgg19, arch='vgg19_bn')``): reproduce them with ``vgg19``;
  ``vgg16`` with ``norm: none`` is that file's ``CIFAR10_HParams_Dict['vgg16']`` entry.
- ``ResNet32``: ``resnet.py``, the post-activation CIFAR ResNet-32 (He et al., 2016) the paper
  uses as the not-scale-invariant control: affine norm layers (eps 1e-5), 1x1-conv projection
  shortcuts, a trained head.

Init (``ntk.py``'s ``reset_parameters``, ``ntk_init=False``): convs N(0, 2/fan_in), fan_in =
k·k·c_in (ResNet-32: N(0, 2/fan_out), fan_out = k·k·c_out, as ``resnet.py``); the frozen head's
weight N(0, 2/D), D its input width, bias 0. ``head_norm`` (ours) rescales that weight to a
Frobenius norm: on 8x8 digits at width 0.25 a larger head lets the loss fall further.

Norm epsilon. The originals use eps = 0 (``eps = 0`` in preresnet.py and vggv2.py: exact scale
invariance). torch 2.14's BatchNorm refuses eps = 0 in training outright, and eps = 0 turns a
normalised set that is exactly constant -- a dead channel (BN) or group (GN), all-zero inputs
of a bias-free conv -- into 0/0 = NaN. PreResNet-32 and VGG therefore use eps = ``SI_EPS`` =
1e-20: the normaliser's relative change is eps/var, below float32 resolution (2^-24) for every
variance above 2e-13, so the layer equals eps = 0 to the last bit wherever eps = 0 is defined,
and a constant channel normalises to 0 instead of NaN. (Below 1e-5 cuDNN's BatchNorm is not
used; torch falls back to its native CUDA kernel.) ResNet-32 keeps torch's default 1e-5, as
``resnet.py`` does.

Small inputs (ours). Every network runs on 8x8 digits and 32x32 CIFAR: a stride-2 stage or a
pool is skipped once the feature map is already 1x1 (VGG's pools on 8x8: 8 -> 4 -> 2 -> 1, then
none), and global average pooling makes the head size-agnostic. GroupNorm uses gcd(8,
channels) groups when a small width leaves a channel count that 8 does not divide.

Example:
    >>> import torch
    >>> net = PreResNet32(input_shape=(1, 8, 8), num_classes=10, norm="gn", width=0.25)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> net.head.weight.requires_grad, net.head.bias.requires_grad
    (False, False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["NORMS", "SI_EPS", "VGG16", "VGG19", "PreResNet32", "ResNet32", "make_norm"]

NORMS = ("bn", "gn", "none")
SI_EPS = 1e-20       # the originals' eps = 0, to float32 precision, never NaN (see above)
GN_GROUPS = 8


def make_norm(norm: str, channels: int, *, affine: bool, eps: float) -> nn.Module:
    """The norm layer ``norm`` for ``channels`` channels; ``"none"`` is the identity.

    Example:
        >>> make_norm("gn", 12, affine=False, eps=1e-5).num_groups   # gcd(8, 12)
        4
    """
    if norm == "bn":
        return nn.BatchNorm2d(channels, eps=eps, affine=affine)
    if norm == "gn":
        return nn.GroupNorm(math.gcd(GN_GROUPS, channels), channels, eps=eps, affine=affine)
    return nn.Identity()


def _check(name: str, norm: str, width: float, input_shape: tuple[int, int, int],
           head_norm: float | None = None) -> None:
    if norm not in NORMS:
        raise ValueError(f"{name}: unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"{name}: width must be a positive multiplier, got {width!r}")
    if min(input_shape[1:]) < 1:
        raise ValueError(f"{name}: empty images {input_shape}")
    if head_norm is not None and (isinstance(head_norm, bool) or not isinstance(head_norm, (int, float))
                                  or not head_norm > 0):
        raise ValueError(f"{name}: head_norm must be a positive number or null, got {head_norm!r}")


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _conv(c_in: int, c_out: int, *, stride: int = 1, kernel: int = 3, bias: bool = False,
          fan: str = "in") -> nn.Conv2d:
    """A conv with ``padding = kernel // 2``, weight N(0, 2/fan) (fan = k·k·c_in, or ·c_out), bias 0."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
    fan_size = kernel * kernel * (c_in if fan == "in" else c_out)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_size))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _frozen_head(features: int, num_classes: int, head_norm: float | None) -> nn.Linear:
    """Linear(features -> num_classes), weight N(0, 2/features), bias 0, both frozen."""
    head = nn.Linear(features, num_classes)
    nn.init.normal_(head.weight, 0.0, math.sqrt(2.0 / features))
    nn.init.zeros_(head.bias)
    if head_norm is not None:
        with torch.no_grad():
            head.weight.mul_(head_norm / head.weight.norm())
    # Frozen: with it fixed the trainable weights are scale-invariant, so weight decay and the
    # LR act through the effective LR lr/|w|^2, the regime the paper's SDE analysis covers.
    head.requires_grad_(False)
    return head


def _stride(stage: int, block: int, size: int) -> int:
    """Stage ``stage``'s first block halves the map (not stage 0's, nor a 1x1 map)."""
    return 2 if stage > 0 and block == 0 and size > 1 else 1


# ---------------------------------------------------------------------------- residual nets

class _PreActBlock(nn.Module):
    """norm -> ReLU -> conv(stride) -> norm -> ReLU -> conv, plus x, or conv1x1(stride)(norm(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, *, shortcut: bool) -> None:
        super().__init__()
        self.norm1, self.conv1 = make_norm(norm, c_in, affine=False, eps=SI_EPS), _conv(c_in, c_out, stride=stride)
        self.norm2, self.conv2 = make_norm(norm, c_out, affine=False, eps=SI_EPS), _conv(c_out, c_out)
        self.relu = nn.ReLU()
        # The original's `homo` shortcut: normalised, so the block stays homogeneous of degree 1
        # in the conv weights and the whole net scale-invariant.
        self.shortcut = (nn.Sequential(make_norm(norm, c_in, affine=False, eps=SI_EPS),
                                       _conv(c_in, c_out, stride=stride, kernel=1)) if shortcut else None)

    def forward(self, x: Tensor) -> Tensor:       # (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class _PostActBlock(nn.Module):
    """conv(stride) -> norm -> ReLU -> conv -> norm, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv(c_in, c_out, stride=stride, fan="out"), make_norm(norm, c_out, affine=True, eps=1e-5)
        self.conv2, self.norm2 = _conv(c_out, c_out, fan="out"), make_norm(norm, c_out, affine=True, eps=1e-5)
        self.shortcut: nn.Module = (nn.Sequential(_conv(c_in, c_out, stride=stride, kernel=1, fan="out"),
                                                  make_norm(norm, c_out, affine=True, eps=1e-5))
                                    if stride != 1 or c_in != c_out else nn.Identity())
        if norm == "none":   # ours: resnet.py has no norm-free variant; SkipInit keeps it trainable
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def _stages(widths: Sequence[int], blocks: int, size: int,
            make: Callable[[int, int, int, int], nn.Module]) -> tuple[nn.Sequential, int]:
    """Stages of ``blocks`` blocks each, ``make(c_in, c_out, stride, block_index)``."""
    stages: list[nn.Module] = []
    channels = widths[0]
    for i, out in enumerate(widths):
        layers = []
        for j in range(blocks):
            stride = _stride(i, j, size)
            size = (size + 1) // 2 if stride == 2 else size
            layers.append(make(channels, out, stride, j))
            channels = out
        stages.append(nn.Sequential(*layers))
    return nn.Sequential(*stages), channels


class PreResNet32(nn.Module):
    """Pre-activation ResNet-32, norm affine off, homogeneous shortcuts, frozen head (the SVAG paper's net).

    stem conv3x3(C -> 16w) -> 3 stages x 5 pre-activation blocks (16w, 32w, 64w; strides
    1, 2, 2; each stage's first block with the shortcut conv1x1(norm(x))) -> norm -> global
    average pool -> Linear(64w -> num_classes) with bias, frozen. Norm eps is ``SI_EPS`` (see the
    module docstring). Input (B, C, H, W), output logits.

    ``head_norm`` (ours): the Frobenius norm of the frozen head's weight; None keeps the
    original's N(0, 2/64w) init (norm ≈ sqrt(2·num_classes) ≈ 4.5).
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 norm: str = "bn",          # bn | gn (GroupNorm(8)) | none
                 width: float = 1.0,        # channel multiplier: 1 = the paper's 16/32/64
                 head_norm: float | None = None,   # Frobenius norm of the frozen head; None = the original's init
                 ) -> None:
        super().__init__()
        _check("preresnet32", norm, width, input_shape, head_norm)
        widths = [_channels(c, width) for c in (16, 32, 64)]
        self.stem = _conv(input_shape[0], widths[0])
        self.stages, channels = _stages(widths, 5, min(input_shape[1:]),
                                        lambda i, o, s, j: _PreActBlock(i, o, s, norm, shortcut=j == 0))
        self.final_norm = make_norm(norm, channels, affine=False, eps=SI_EPS)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _frozen_head(channels, num_classes, head_norm)

    def features(self, x: Tensor) -> Tensor:      # (B, C, H, W) -> (B, 64w): the head's input
        return self.pool(self.final_norm(self.stages(self.stem(x)))).flatten(1)

    def forward(self, x: Tensor) -> Tensor:       # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))


class ResNet32(nn.Module):
    """Post-activation CIFAR ResNet-32 (He et al., 2016) with affine norm layers and a trained head.

    conv3x3(C -> 16w) -> norm -> ReLU -> 3 stages x 5 blocks (16w, 32w, 64w; strides 1, 2, 2)
    -> global average pool -> Linear(64w -> num_classes) (torch's init, as ``resnet.py``).
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 norm: str = "bn",          # bn | gn (GroupNorm(8)) | none
                 width: float = 1.0,        # channel multiplier: 1 = 16/32/64
                 ) -> None:
        super().__init__()
        _check("resnet32", norm, width, input_shape)
        widths = [_channels(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(_conv(input_shape[0], widths[0], fan="out"),
                                  make_norm(norm, widths[0], affine=True, eps=1e-5), nn.ReLU())
        self.stages, channels = _stages(widths, 5, min(input_shape[1:]),
                                        lambda i, o, s, j: _PostActBlock(i, o, s, norm))
        self.head = nn.Linear(channels, num_classes)

    def features(self, x: Tensor) -> Tensor:      # (B, C, H, W) -> (B, 64w)
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:       # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))


# ---------------------------------------------------------------------------- VGG

_VGG_PLANS: dict[int, tuple[int | str, ...]] = {   # conv widths, "M" = 2x2 average pool (vggv2.py's cfg)
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


class _VGG(nn.Module):
    depth = 16

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 norm: str = "bn",          # bn | gn (GroupNorm(8)) | none
                 width: float = 1.0,        # channel multiplier: 1 = 64..512
                 head_norm: float | None = None,   # Frobenius norm of the frozen head; None = the original's init
                 ) -> None:
        super().__init__()
        _check(f"vgg{self.depth}", norm, width, input_shape, head_norm)
        layers: list[nn.Module] = []
        channels, size = input_shape[0], min(input_shape[1:])
        for item in _VGG_PLANS[self.depth]:
            if item == "M":
                if size > 1:   # 8x8 digits run out of resolution after three pools
                    layers.append(nn.AvgPool2d(2))
                    size //= 2
                continue
            out = _channels(int(item), width)
            layers.append(_conv(channels, out, bias=norm == "none"))
            if norm != "none":
                layers.append(make_norm(norm, out, affine=False, eps=SI_EPS))
            layers.append(nn.ReLU())
            channels = out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.body = nn.Sequential(*layers)
        self.head = _frozen_head(channels, num_classes, head_norm)

    def features(self, x: Tensor) -> Tensor:      # (B, C, H, W) -> (B, 512w): the head's input
        return self.body(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:       # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))


class VGG16(_VGG):
    """VGG-16 of vggv2.py: 13 conv -> norm -> ReLU layers (64w..512w), five average pools, frozen head."""

    depth = 16


class VGG19(_VGG):
    """VGG-19 of vggv2.py (``vgg19_bn``, the paper's "VGG-16"): 16 conv -> norm -> ReLU layers, frozen head."""

    depth = 19
