"""Networks of the scaling-rules study: PreResNet-32, ResNet-32, VGG-16 and VGG-19.

From the experiments of *On the Validity of Modeling SGD with Stochastic Differential
Equations* (Li, Malladi, Arora, 2021) and the CIFAR classics they build on. Every network
takes ``norm`` (``"bn"`` BatchNorm, ``"gn"`` GroupNorm(8), ``"none"``) and a ``width``
multiplier of the channel counts (each count rounded, at least 1), and maps (B, C, H, W)
-> (B, num_classes).

- ``PreResNet32``: the SVAG paper's net. Pre-activation CIFAR ResNet, 6n+2 = 32 layers
  (3 stages of n = 5 blocks, widths 16w, 32w, 64w, strides 1, 2, 2), norm layers with
  **affine off**, a final norm -> ReLU -> global average pool, and a **frozen** Linear head
  (no bias; optionally at Frobenius norm ``head_norm``): with a norm layer the whole
  trainable vector is then scale-invariant, as the paper's analysis assumes.
- ``ResNet32``: the original post-activation CIFAR ResNet-32 (He et al., 2016), affine norm
  layers, 1x1-conv projection shortcuts, trained head.
- ``VGG16`` / ``VGG19``: the CIFAR VGGs (13 / 16 conv layers of 64w..512w, five 2x2 max-pools,
  one Linear head), conv -> norm -> ReLU, affine norm layers, trained head.

Norm epsilon. The paper uses eps = 0 in PreResNet-32 (exact scale invariance). eps = 0 turns a
normalised set that is exactly constant -- a dead channel (BN) or group (GN), a 1x1 map with one
channel per group, all-zero inputs of a bias-free conv -- into 0/0 = NaN. PreResNet-32 therefore
uses eps = ``SI_EPS`` = 1e-20: the normaliser's relative change is eps/var, below float32
resolution (2^-24) for every variance above 2e-13, so the layer equals eps = 0 to the last bit
wherever eps = 0 is defined on non-degenerate inputs, and a constant channel normalises to 0
instead of NaN. (torch 2.14's BatchNorm refuses eps = 0 in training outright. Below 1e-5 cuDNN's
BatchNorm is not used; torch falls back to its native CUDA kernel.) ResNet-32 and VGG keep
torch's default eps = 1e-5, as their sources do.

Small inputs. Every network runs on 8x8 digits and 32x32 CIFAR: a stride-2 stage or a max-pool
is skipped once the feature map is already 1x1 (VGG's stages on 8x8: 8, 4, 2, 1, 1), and global
average pooling makes the head size-agnostic. GroupNorm uses gcd(8, channels) groups when a
small width leaves a channel count that 8 does not divide.

Without normalisation (``norm: none``) the last conv of every residual branch starts at zero
(SkipInit, De & Smith 2020): the 15 residual additions would otherwise double the activation
variance each, 2^15 in all.

Example:
    >>> import torch
    >>> net = PreResNet32(input_shape=(1, 8, 8), num_classes=10, norm="gn", width=0.25)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> net.head.weight.requires_grad
    False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["NORMS", "SI_EPS", "VGG16", "VGG19", "PreResNet32", "ResNet32", "make_norm"]

NORMS = ("bn", "gn", "none")
SI_EPS = 1e-20       # PreResNet-32's norm epsilon: eps = 0 to float32 precision, never NaN (see above)
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


def _check(name: str, norm: str, width: float, input_shape: tuple[int, int, int]) -> None:
    if norm not in NORMS:
        raise ValueError(f"{name}: unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"{name}: width must be a positive multiplier, got {width!r}")
    if min(input_shape[1:]) < 1:
        raise ValueError(f"{name}: empty images {input_shape}")


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _conv(c_in: int, c_out: int, *, stride: int = 1, kernel: int = 3) -> nn.Conv2d:
    # No bias: a norm layer follows (and would remove it); without one, ReLU nets train fine without.
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    # He init keeps the activation scale through 16-32 layers also when there is no norm layer.
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    return conv


# ---------------------------------------------------------------------------- residual nets

class _PreActBlock(nn.Module):
    """norm -> ReLU -> conv(stride) -> norm -> ReLU -> conv, plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, eps: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = make_norm(norm, c_in, affine=False, eps=eps), _conv(c_in, c_out, stride=stride)
        self.norm2, self.conv2 = make_norm(norm, c_out, affine=False, eps=eps), _conv(c_out, c_out)
        self.shortcut = _conv(c_in, c_out, stride=stride, kernel=1) if stride != 1 or c_in != c_out else None
        if norm == "none":
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:       # (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)
        out = torch.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(torch.relu(self.norm2(self.conv1(out))))
        return out + skip


class _PostActBlock(nn.Module):
    """conv(stride) -> norm -> ReLU -> conv -> norm, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv(c_in, c_out, stride=stride), make_norm(norm, c_out, affine=True, eps=1e-5)
        self.conv2, self.norm2 = _conv(c_out, c_out), make_norm(norm, c_out, affine=True, eps=1e-5)
        self.shortcut: nn.Module = (nn.Sequential(_conv(c_in, c_out, stride=stride, kernel=1),
                                                  make_norm(norm, c_out, affine=True, eps=1e-5))
                                    if stride != 1 or c_in != c_out else nn.Identity())
        if norm == "none":
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def _stages(widths: Sequence[int], blocks: int, size: int,
            make: Callable[[int, int, int], nn.Module]) -> tuple[nn.Sequential, int]:
    """Stages of ``blocks`` blocks each (strides 1, 2, 2, ...; 1 once the map is 1x1)."""
    layers: list[nn.Module] = []
    channels = widths[0]
    for i, out in enumerate(widths):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 and size > 1 else 1
            size = (size + 1) // 2 if stride == 2 else size
            layers.append(make(channels, out, stride))
            channels = out
    return nn.Sequential(*layers), channels


class PreResNet32(nn.Module):
    """Pre-activation ResNet-32, norm affine off, frozen bias-free head (the SVAG paper's net).

    stem conv3x3(C -> 16w) -> 3 stages x 5 pre-activation blocks (16w, 32w, 64w; strides
    1, 2, 2) -> norm -> ReLU -> global average pool -> Linear(64w -> num_classes), frozen.
    Norm eps is ``SI_EPS`` (see the module docstring). Input (B, C, H, W), output logits.

    ``head_norm``: the frozen head bounds the logits (its input is normalised), so it sets a
    floor under the loss. torch's init gives it norm ~1.8 at every width; on digits that
    held the train loss near 1.9 after 6 epochs at 52% test accuracy, where norm 10 (the
    sphere study's choice) reached 0.98 and 79% (batch 128, lr 0.8, GN, width 0.25).
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 norm: str = "bn",          # bn | gn (GroupNorm(8)) | none
                 width: float = 1.0,        # channel multiplier: 1 = the paper's 16/32/64
                 head_norm: float | None = None,   # Frobenius norm of the frozen head; None = torch's init
                 ) -> None:
        super().__init__()
        _check("preresnet32", norm, width, input_shape)
        if head_norm is not None and (isinstance(head_norm, bool) or not isinstance(head_norm, (int, float))
                                      or not head_norm > 0):
            raise ValueError(f"preresnet32: head_norm must be a positive number or null, got {head_norm!r}")
        widths = [_channels(c, width) for c in (16, 32, 64)]
        self.stem = _conv(input_shape[0], widths[0])
        self.stages, channels = _stages(widths, 5, min(input_shape[1:]),
                                        lambda i, o, s: _PreActBlock(i, o, s, norm, SI_EPS))
        self.final_norm = make_norm(norm, channels, affine=False, eps=SI_EPS)
        self.head = nn.Linear(channels, num_classes, bias=False)
        if head_norm is not None:
            with torch.no_grad():
                self.head.weight.mul_(head_norm / self.head.weight.norm())
        # Frozen: with it fixed the trainable weights are scale-invariant, so weight decay and the
        # LR act through the effective LR lr/|w|^2, the regime the paper's SDE analysis covers.
        self.head.weight.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:       # (B, C, H, W) -> (B, num_classes)
        out = torch.relu(self.final_norm(self.stages(self.stem(x))))
        return self.head(out.mean(dim=(2, 3)))


class ResNet32(nn.Module):
    """Post-activation CIFAR ResNet-32 (He et al., 2016) with affine norm layers and a trained head.

    conv3x3(C -> 16w) -> norm -> ReLU -> 3 stages x 5 blocks (16w, 32w, 64w; strides 1, 2, 2)
    -> global average pool -> Linear(64w -> num_classes).
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 norm: str = "bn",          # bn | gn (GroupNorm(8)) | none
                 width: float = 1.0,        # channel multiplier: 1 = 16/32/64
                 ) -> None:
        super().__init__()
        _check("resnet32", norm, width, input_shape)
        widths = [_channels(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(_conv(input_shape[0], widths[0]),
                                  make_norm(norm, widths[0], affine=True, eps=1e-5), nn.ReLU())
        self.stages, channels = _stages(widths, 5, min(input_shape[1:]),
                                        lambda i, o, s: _PostActBlock(i, o, s, norm))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:       # (B, C, H, W) -> (B, num_classes)
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


# ---------------------------------------------------------------------------- VGG

_VGG_PLANS: dict[int, tuple[int | str, ...]] = {   # conv widths, "M" = 2x2 max-pool
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


class _VGG(nn.Module):
    depth = 16

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 norm: str = "bn",          # bn | gn (GroupNorm(8)) | none
                 width: float = 1.0,        # channel multiplier: 1 = 64..512
                 ) -> None:
        super().__init__()
        _check(f"vgg{self.depth}", norm, width, input_shape)
        layers: list[nn.Module] = []
        channels, size = input_shape[0], min(input_shape[1:])
        for item in _VGG_PLANS[self.depth]:
            if item == "M":
                if size > 1:   # 8x8 digits run out of resolution after three pools
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out = _channels(int(item), width)
            layers += [_conv(channels, out), make_norm(norm, out, affine=True, eps=1e-5), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:       # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x).mean(dim=(2, 3)))


class VGG16(_VGG):
    """CIFAR VGG-16: 13 conv -> norm -> ReLU layers (64w..512w), five max-pools, Linear(512w -> classes)."""

    depth = 16


class VGG19(_VGG):
    """CIFAR VGG-19: 16 conv -> norm -> ReLU layers (64w..512w), five max-pools, Linear(512w -> classes)."""

    depth = 19
