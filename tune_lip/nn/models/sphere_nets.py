"""Scale-invariant networks for the sphere study: ConvNetSI and ResNet18SI, and their Af variants.

From *Training Scale-Invariant Neural Networks on the Sphere Can Happen in Three Regimes*
(Kodryan et al., 2022). Every convolution is followed (directly, or through the residual
stream) by a BatchNorm with ``affine=False``, so multiplying all scale-invariant (SI) weights
by a constant c > 0 leaves the network's function unchanged (exactly in train-mode BN, up to
BN's eps; in eval mode when the running statistics were estimated at the same scale). The
last Linear layer is initialised at Frobenius norm ``last_layer_norm`` (10, as the paper) and
frozen, so the whole trainable parameter vector lives in the SI set and training happens on
its sphere.

- ``ConvNetSI``: 4 stages of conv3x3 -> BN(affine off) -> ReLU with widths w, 2w, 4w, 8w,
  MaxPool(2) between stages, global average pooling, Linear. Each conv *filter* is followed by
  its own BN channel, so each filter is scale-invariant on its own (``filterwise_invariant``).
- ``ResNet18SI``: pre-activation ResNet-18 (stem conv, [2, 2, 2, 2] blocks of widths w..8w,
  strides 1, 2, 2, 2) with BN affine off and a final BN -> ReLU before global average
  pooling. The residual stream is a sum of conv outputs, so only the *joint* vector of all
  conv weights is scale-invariant (not each filter).
- ``ConvNetSIAf`` / ``ResNet18SIAf``: the same networks with BN affine on and a trainable
  last layer with bias (every parameter trained). Their conv weights stay scale-invariant;
  the BN affine parameters and the last layer are ``other_parameters()``.

Both run on 8x8 digits and 32x32 CIFAR (global pooling makes the head size-agnostic). They
downsample only while the feature map is larger than 2x2 (8x8 digits: 8, 4, 2, 2; CIFAR: 32,
16, 8, 4): a 3x3 conv on a 1x1 map would use only its centre tap, and the 8 dead taps would
sit on the sphere as a norm reservoir that the projection slowly drains into the live ones.

Example:
    >>> import torch
    >>> net = ConvNetSI(input_shape=(1, 8, 8), num_classes=10, width=8)
    >>> net(torch.zeros(4, 1, 8, 8)).shape
    torch.Size([4, 10])
    >>> round(float(net.head.weight.norm()), 4), net.head.weight.requires_grad
    (10.0, False)
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import Tensor, nn

__all__ = ["ConvNetSI", "ConvNetSIAf", "ResNet18SI", "ResNet18SIAf", "ScaleInvariantNet"]


class ScaleInvariantNet(nn.Module):
    """Base: SI conv weights, the head at a fixed norm, and the SI / other parameter split.

    ``train_all`` (a class attribute): False = BN affine off and the head frozen (SI);
    True = the ``Af`` variant, BN affine on and the head trained.
    """

    train_all: ClassVar[bool] = False
    filterwise_invariant: ClassVar[bool] = False   # is each conv filter SI on its own?

    def _bn(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, affine=self.train_all)

    def _head(self, features: int, num_classes: int, norm: float) -> nn.Linear:
        head = nn.Linear(features, num_classes, bias=self.train_all)
        with torch.no_grad():
            head.weight.mul_(norm / head.weight.norm())     # Frobenius norm = ``norm``
        head.weight.requires_grad_(self.train_all)
        return head

    def scale_invariant_parameters(self) -> list[nn.Parameter]:
        """The conv weights, in module order: scaling them all by c > 0 keeps the output."""
        return [cast(nn.Parameter, m.weight) for m in self.modules() if isinstance(m, nn.Conv2d)]

    def other_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not scale-invariant (frozen ones included), in module order."""
        si = {id(p) for p in self.scale_invariant_parameters()}
        return [p for p in self.parameters() if id(p) not in si]


def _conv(c_in: int, c_out: int, *, stride: int = 1, kernel: int = 3) -> nn.Conv2d:
    # No bias: the BN after it would subtract it anyway, and it is not scale-invariant.
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


class ConvNetSI(ScaleInvariantNet):
    """conv-BN-ReLU stages of widths (w, 2w, 4w, 8w), MaxPool(2) between them (down to 2x2),
    global average pool, then Linear(8w -> num_classes) at Frobenius norm ``last_layer_norm``, frozen.

    Input (B, C, H, W) with H, W >= 8 (8x8 digits end at 2x2, 32x32 CIFAR at 4x4);
    output (B, num_classes) logits.
    """

    filterwise_invariant: ClassVar[bool] = True

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 width: int = 32,                 # channels of the first stage; the paper's 32
                 last_layer_norm: float = 10.0,   # Frobenius norm of the head's weight
                 ) -> None:
        super().__init__()
        c, h, w = input_shape
        if width < 1 or min(h, w) < 8:
            raise ValueError(f"convnet_si: needs width >= 1 and images of at least 8x8, "
                             f"got width {width}, {h}x{w}")
        layers: list[nn.Module] = []
        channels, size = c, min(h, w)
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            if i and size > 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += [_conv(channels, out), self._bn(out), nn.ReLU(inplace=True)]
            channels = out
        # Average (not max) pooling: in the divergent regime (weights random at every step) the
        # pooled features vary little between inputs, so the loss stays near chance: 2.2-3.2 on
        # digits (ln 10 = 2.3), where global max pooling gave 6-7 through the norm-10 head.
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = self._head(channels, num_classes, last_layer_norm)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, num_classes)
        return self.head(self.features(x))


class ConvNetSIAf(ConvNetSI):
    """ConvNetSI with BN affine on and a trainable head (with bias)."""

    train_all: ClassVar[bool] = True


class _PreActBlock(nn.Module):
    """BN -> ReLU -> conv(stride) -> BN -> ReLU -> conv, plus the (projected) input."""

    def __init__(self, net: ScaleInvariantNet, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = net._bn(c_in), _conv(c_in, c_out, stride=stride)
        self.bn2, self.conv2 = net._bn(c_out), _conv(c_out, c_out)
        self.shortcut = (_conv(c_in, c_out, stride=stride, kernel=1)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        # The shortcut sees the normalised input, so the residual stream stays homogeneous
        # of degree 1 in the conv weights -- what makes the joint weight vector SI.
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class ResNet18SI(ScaleInvariantNet):
    """Pre-activation ResNet-18 with BN affine off and a frozen head at norm ``last_layer_norm``.

    stem conv3x3(C -> w) -> 4 stages of 2 blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2,
    but stride 1 once the map is 2x2)
    -> BN -> ReLU -> global average pool -> Linear(8w -> num_classes).
    Input (B, C, H, W), any H, W >= 8; output (B, num_classes) logits.
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 width: int = 64,                 # channels of the first stage; ResNet-18's 64
                 last_layer_norm: float = 10.0,   # Frobenius norm of the head's weight
                 ) -> None:
        super().__init__()
        c, h, w = input_shape
        if width < 1 or min(h, w) < 8:
            raise ValueError(f"resnet18_si: needs width >= 1 and images of at least 8x8, "
                             f"got width {width}, {h}x{w}")
        self.stem = _conv(c, width)
        blocks: list[nn.Module] = []
        channels, size = width, min(h, w)
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 2 if i and size > 2 else 1
            size //= stride
            for j in range(2):
                blocks.append(_PreActBlock(self, channels, out, stride=stride if j == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        # The final BN is what makes the network SI: without it the logits would scale with c.
        self.bn = self._bn(channels)
        self.head = self._head(channels, num_classes, last_layer_norm)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, num_classes)
        out = torch.relu(self.bn(self.blocks(self.stem(x))))   # (B, 8w, H', W'), H' = max(H/8, 2)
        return self.head(out.mean(dim=(2, 3)))


class ResNet18SIAf(ResNet18SI):
    """ResNet18SI with BN affine on and a trainable head (with bias)."""

    train_all: ClassVar[bool] = True
