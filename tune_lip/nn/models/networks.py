"""1-Lipschitz networks for the Lipschitz study: an AOL MLP and a CPL ConvNet.

Contract: in eval mode each model maps images (B, C, H, W) to scores (B, num_classes)
and is 1-Lipschitz in l2 end to end, so a margin of sqrt(2)*eps between the true score and
every other score certifies robustness at radius eps (`tune_lip.nn.losses.certified_correct`).
Every piece is 1-Lipschitz: AOL layers, CPL layers (eval), MaxMin, flatten, PixelUnshuffle
(a permutation) and taking the first outputs (a projection).

Example:
    >>> import torch
    >>> model = AOLMLP(input_shape=(1, 8, 8), num_classes=10, width=64, depth=3)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from torch import Tensor, nn

from tune_lip.nn.models.activations import MaxMin
from tune_lip.nn.models.aol import AOLConv2d, AOLLinear
from tune_lip.nn.models.cpl import CPLConv2d

__all__ = ["AOLMLP", "CPLConvNet"]


class AOLMLP(nn.Module):
    """The AOL-MLP of *Scaling Up Lipschitz Networks*.

    flatten -> AOLLinear(C*H*W, width), MaxMin -> (depth-2) x [AOLLinear(width, width), MaxMin]
    -> AOLLinear(width, width) -> first ``num_classes`` outputs. ``depth`` counts AOL layers.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 3072,  # hidden units; 3072 = a CIFAR image's size
        depth: int = 8,  # number of AOL layers, >= 2
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"aol_mlp: depth must be >= 2, got {depth}")
        if width < num_classes or width % 2:
            raise ValueError(
                f"aol_mlp: width must be even and >= num_classes ({num_classes}), got {width}"
            )
        c, h, w = input_shape
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Flatten(), AOLLinear(c * h * w, width), MaxMin()]
        for _ in range(depth - 2):
            layers += [AOLLinear(width, width), MaxMin()]
        layers.append(AOLLinear(width, width))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.layers(x)[:, : self.num_classes]


class CPLConvNet(nn.Module):
    """A small 1-Lipschitz ConvNet built from CPL blocks.

    stem AOLConv2d(C -> width, 3) -> stage 1 -> [PixelUnshuffle(2), AOLConv2d 1x1 (4c -> 2c)]
    -> stage 2 -> ... -> AOLConv2d 1x1 (c -> width) -> flatten -> AOLLinear(-> num_classes).

    Each stage is ``depth`` CPLConv2d(c, 3) layers; channels double per stage (width, 2*width,
    4*width). There are 3 stages when min(H, W) >= 16 (32x32 CIFAR: 32 -> 16 -> 8) and
    2 otherwise (8x8 digits: 8 -> 4); H and W must be divisible by 2**(stages-1). No extra
    activation: a CPL layer is already nonlinear (its ReLU), as in the CPL paper. The 1x1
    head back to ``width`` channels keeps the final AOLLinear's Gram (features^2) small.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 32,  # channels of the first stage
        depth: int = 5,  # CPL layers per stage
        power_iterations: int = 1,  # per training forward, per CPL layer
    ) -> None:
        super().__init__()
        c_in, height, wid = input_shape
        stages = 3 if min(height, wid) >= 16 else 2
        factor = 2 ** (stages - 1)
        if height % factor or wid % factor:
            raise ValueError(
                f"cpl_convnet: input height and width must be divisible by {factor} "
                f"for {stages} stages, got {height}x{wid}"
            )
        if width < 1 or depth < 1:
            raise ValueError(
                f"cpl_convnet: width and depth must be >= 1, got width={width}, depth={depth}"
            )
        layers: list[nn.Module] = [AOLConv2d(c_in, width, 3)]
        channels = width
        for stage in range(stages):
            if stage > 0:
                layers += [nn.PixelUnshuffle(2), AOLConv2d(4 * channels, 2 * channels, 1)]
                channels *= 2
            layers += [
                CPLConv2d(channels, 3, power_iterations=power_iterations) for _ in range(depth)
            ]
        features = width * (height // factor) * (wid // factor)
        layers += [AOLConv2d(channels, width, 1), nn.Flatten(), AOLLinear(features, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.layers(x)
