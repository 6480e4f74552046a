"""Scale-invariant networks for the sphere study: ConvNetSI and ResNet18SI, and their Af variants.

From *Training Scale-Invariant Neural Networks on the Sphere Can Happen in Three Regimes*
(Kodryan et al., 2022), re-implemented after the authors' code (github.com/tipt0p/
three_regimes_on_the_sphere, ``nets/convnet_si.py``, ``nets/resnet_si.py`` and their ``_af``
twins; parameter counts and layer sequences are checked against it in
``tests/models/test_parity_sphere.py``). Every convolution is followed (directly, or through
the residual stream) by a BatchNorm with ``affine=False``, so multiplying all scale-invariant
(SI) weights by a constant c > 0 leaves the network's function unchanged (exactly in train-mode
BN, up to BN's eps). The head (the last Linear) is set to Frobenius norm ``last_layer_norm``
(10, the original's ``init_scale``) and frozen (the original trains it at lr 0), so training
moves only the SI weights, on their sphere.

- ``ConvNetSI``: conv3x3(C -> w) -> BN -> ReLU at full resolution, then three blocks
  conv3x3 -> BN -> ReLU -> MaxPool(2) of widths 2w, 4w, 8w, a max pool over the remaining
  map (MaxPool(4) on CIFAR's 4x4), flatten, Linear(8w -> classes) *with* bias. Each conv filter
  is followed by its own BN channel, so each filter is also scale-invariant on its own.
- ``ResNet18SI``: pre-activation ResNet-18 (stem conv3x3, [2, 2, 2, 2] blocks of widths
  w..8w, strides 1, 2, 2, 2), BN affine off; a downsampling block's shortcut is
  BN -> conv1x1 (the normalisation keeps the shortcut scale-invariant), so the network has
  20 BN layers. Final BN -> ReLU -> average pool over the map (AvgPool(4) on CIFAR) ->
  Linear(8w -> classes) without bias. Only the *joint* vector of all conv weights is SI.
- ``ConvNetSIAf`` / ``ResNet18SIAf``: the same networks with BN affine on and the head left
  at PyTorch's initialisation and trained (every parameter trains). Their conv weights stay
  scale-invariant; the BN affine parameters and the head are ``other_parameters()``.

``head_seed`` draws the head from its own seed (the original's ``--same_last_layer`` draws it
after seeding 228, so every run shares one head); None draws it from the global RNG.

Small images: the final pool covers whatever map is left (8x8 digits: ConvNetSI 8 -> 1;
ResNet18SI stops striding at 2x2, so a 3x3 conv never runs on a 1x1 map, where its 8 dead taps
would sit on the sphere as a norm reservoir the projection slowly drains). On 32x32 CIFAR both
are the original's networks.

Example:
    >>> import torch
    >>> net = ConvNetSI(input_shape=(1, 8, 8), num_classes=10, width=8)
    >>> net(torch.zeros(4, 1, 8, 8)).shape, net.embed(torch.zeros(4, 1, 8, 8)).shape
    (torch.Size([4, 10]), torch.Size([4, 64]))
    >>> round(float(net.head.weight.norm()), 4), net.head.weight.requires_grad
    (10.0, False)
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import Tensor, nn

__all__ = ["ConvNetSI", "ConvNetSIAf", "ResNet18SI", "ResNet18SIAf", "ScaleInvariantNet"]


class ScaleInvariantNet(nn.Module):
    """Base: SI conv weights, the head, and the SI / other parameter split.

    ``train_all`` (a class attribute): False = BN affine off and the head frozen (SI);
    True = the ``Af`` variant, BN affine on and the head trained.
    ``embed(x)`` gives the penultimate features (B, D), the head's input.
    """

    train_all: ClassVar[bool] = False
    head: nn.Linear

    def _bn(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, affine=self.train_all)

    def _head(self, features: int, num_classes: int, *, bias: bool, norm: float | None,
              seed: int | None) -> nn.Linear:
        if seed is None:
            head = nn.Linear(features, num_classes, bias=bias)
        else:   # its own seed, leaving the global RNG (which draws the convs) where it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                head = nn.Linear(features, num_classes, bias=bias)
        if norm is not None:
            if norm <= 0:
                raise ValueError(f"last_layer_norm must be > 0 (or null: PyTorch's init), got {norm}")
            with torch.no_grad():
                # norm * W / ||W||, in the original's order of operations (bit-identical heads)
                head.weight.copy_(norm * head.weight / head.weight.norm())
        head.requires_grad_(self.train_all)
        return head

    def embed(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, D)
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, num_classes)
        return self.head(self.embed(x))

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


def _pool_kernel(h: int, w: int) -> int | tuple[int, int]:
    return h if h == w else (h, w)


def _check(name: str, width: int, h: int, w: int) -> None:
    if width < 1 or min(h, w) < 8:
        raise ValueError(f"{name}: needs width >= 1 and images of at least 8x8, got width {width}, {h}x{w}")


class ConvNetSI(ScaleInvariantNet):
    """conv-BN-ReLU (w), then conv-BN-ReLU-MaxPool(2) blocks (2w, 4w, 8w), a max pool over the
    rest of the map, Linear(8w -> num_classes) with bias at Frobenius norm ``last_layer_norm``, frozen.

    Input (B, C, H, W) with H, W >= 8 (32x32 CIFAR: 32, 32, 16, 8, then MaxPool(4));
    output (B, num_classes) logits. The original: ``nets/convnet_si.py`` (``max_depth=3``).
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 width: int = 32,                         # channels of the first conv; the paper's 32
                 last_layer_norm: float | None = 10.0,    # the head's Frobenius norm; None = PyTorch's init
                 head_seed: int | None = None,            # the head's own seed (the original: 228); None = global
                 ) -> None:
        super().__init__()
        c, h, w = input_shape
        _check("convnet_si", width, h, w)
        # Pooling follows each conv after the first, so the first two convs see the full image.
        layers: list[nn.Module] = [_conv(c, width), self._bn(width), nn.ReLU(inplace=True)]
        channels = width
        for out in (2 * width, 4 * width, 8 * width):
            layers += [_conv(channels, out), self._bn(out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, h, w = out, h // 2, w // 2
        layers += [nn.MaxPool2d(_pool_kernel(h, w)), nn.Flatten()]   # (B, 8w)
        self.features = nn.Sequential(*layers)
        self.head = self._head(channels, num_classes, bias=True, norm=last_layer_norm, seed=head_seed)

    def embed(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 8w)
        return cast(Tensor, self.features(x))


class ConvNetSIAf(ConvNetSI):
    """ConvNetSI with BN affine on and a trained head (PyTorch's init unless ``last_layer_norm``)."""

    train_all: ClassVar[bool] = True

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 width: int = 32, last_layer_norm: float | None = None, head_seed: int | None = None) -> None:
        super().__init__(input_shape=input_shape, num_classes=num_classes, width=width,
                         last_layer_norm=last_layer_norm, head_seed=head_seed)


class _PreActBlock(nn.Module):
    """BN -> ReLU -> conv(stride) -> BN -> ReLU -> conv, plus the input or BN -> conv1x1 of it."""

    def __init__(self, net: ScaleInvariantNet, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = net._bn(c_in), _conv(c_in, c_out, stride=stride)
        self.bn2, self.conv2 = net._bn(c_out), _conv(c_out, c_out)
        # The original normalises the shortcut's input once more (after arXiv:1910.07454), which
        # keeps the residual stream homogeneous of degree 1 in the conv weights.
        self.shortcut = (nn.Sequential(net._bn(c_in), _conv(c_in, c_out, stride=stride, kernel=1))
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class ResNet18SI(ScaleInvariantNet):
    """Pre-activation ResNet-18 with BN affine off and a frozen head at norm ``last_layer_norm``.

    stem conv3x3(C -> w) -> 4 stages of 2 blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2,
    but stride 1 once the map is 2x2) -> BN -> ReLU -> average pool over the map ->
    Linear(8w -> num_classes), no bias. Input (B, C, H, W), H, W >= 8; output (B, num_classes).
    The original: ``nets/resnet_si.py`` (``PreActResNet(PreActBlock, [2, 2, 2, 2])``).
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 width: int = 64,                         # channels of the first stage; ResNet-18's 64
                 last_layer_norm: float | None = 10.0,    # the head's Frobenius norm; None = PyTorch's init
                 head_seed: int | None = None,            # the head's own seed (the original: 228); None = global
                 ) -> None:
        super().__init__()
        c, h, w = input_shape
        _check("resnet18_si", width, h, w)
        self.stem = _conv(c, width)
        blocks: list[nn.Module] = []
        channels = width
        for i, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 2 if i and min(h, w) > 2 else 1
            h, w = h // stride, w // stride
            for j in range(2):
                blocks.append(_PreActBlock(self, channels, out, stride=stride if j == 0 else 1))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        # The final BN is what makes the network SI: without it the logits would scale with c.
        self.bn = self._bn(channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(_pool_kernel(h, w))     # AvgPool(4) on CIFAR's 4x4 map
        self.head = self._head(channels, num_classes, bias=False, norm=last_layer_norm, seed=head_seed)

    def embed(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 8w)
        out = self.relu(self.bn(self.blocks(self.stem(x))))   # (B, 8w, H', W'), H' = max(H/8, 2)
        return self.pool(out).flatten(1)


class ResNet18SIAf(ResNet18SI):
    """ResNet18SI with BN affine on and a trained head (PyTorch's init unless ``last_layer_norm``)."""

    train_all: ClassVar[bool] = True

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int,
                 width: int = 64, last_layer_norm: float | None = None, head_seed: int | None = None) -> None:
        super().__init__(input_shape=input_shape, num_classes=num_classes, width=width,
                         last_layer_norm=last_layer_norm, head_seed=head_seed)
