"""The CPL ConvNets of the Lipschitz papers: SU's CPL-LCN (``cpl_convnet``) and LLC's ConvNetS.

Contract: in eval mode each maps images (B, C, H, W) to scores (B, num_classes) and is
1-Lipschitz in l2 up to the power-iteration estimate of its CPL layers (`tune_lip.nn.models.cpl`):
zero-channel padding, CPL layers, MaxMin, FirstChannels (a projection), PixelUnshuffle (a
permutation), max pooling to 1x1 and flatten are each 1-Lipschitz.

Read from (SU = berndprach/scaling_up_Lipschitz_networks, LLC = berndprach/1LipschitzLayersCompared):

- `CPLLCN`: SU ``lipschitz/models/architectures/lipschitz_convolutional_network.py``
  (``construct_lcn``, DEFAULTS_YAML, ``get_cpl_lcn`` = "CPL-LCN"): base width 64, 5 blocks of
  3 [CPLConv2d 3x3, MaxMin], 1 CPLLinear; 41,918,336 parameters on CIFAR-10.
- `CPLConvNetS`: LLC ``models/simplified_conv_net.py`` (``SimplifiedConvNet``, DEFAULT_MODELS
  "ConvNetS") with ``get_conv=CPLConv2d, get_activation=MaxMin`` and no linear layer
  (``models/model_layer_combinations.py`` ``get_model``): base width 32, 5 blocks of 5, 1x1
  kernels in the last block, a 1x1 CPLConv2d head; 6,283,136 parameters on CIFAR-10.

Both originals are written for 32x32 images and 5 blocks. Here the number of blocks is 5 where
the image allows it (H and W divisible by 32) and otherwise as many halvings as H and W allow
(8x8 digits: 3), so the same network runs on small test images; the pooling then covers what
is left (SU's ``MaxPool2d(32 // 2**blocks)``, LLC's ``AdaptiveMaxPool2d(1)``).

Example:
    >>> import torch
    >>> model = CPLLCN(input_shape=(1, 8, 8), num_classes=10, width=4, depth=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from tune_lip.nn.models.activations import MaxMin
from tune_lip.nn.models.cpl import CPLConv2d, CPLLinear

__all__ = ["CPLLCN", "CPLConvNetS", "FirstChannels", "ZeroChannelConcatenation", "lcn_blocks"]

MAX_BLOCKS = 5  # both originals: number_of_blocks / nrof_blocks = 5 on 32x32 images


class FirstChannels(nn.Module):
    """Keep the first ``channels`` channels (dim 1): a projection, 1-Lipschitz."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:  # (B, C, ...) -> (B, channels, ...)
        return x[:, : self.channels]

    def extra_repr(self) -> str:
        return str(self.channels)


class ZeroChannelConcatenation(nn.Module):
    """Append zero channels up to ``channels`` (dim 1): an isometry onto its image."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, max(C, channels), H, W)
        pad = max(self.channels - x.shape[1], 0)
        return nn.functional.pad(x, (0, 0, 0, 0, 0, pad))

    def extra_repr(self) -> str:
        return str(self.channels)


def lcn_blocks(height: int, width: int) -> int:
    """Down-sampling blocks for an H x W image: halvings of both, at most `MAX_BLOCKS`."""
    blocks = 0
    while blocks < MAX_BLOCKS and height % 2 == 0 and width % 2 == 0:
        height, width, blocks = height // 2, width // 2, blocks + 1
    return blocks


def _check(name: str, c_in: int, num_classes: int, width: int, depth: int, blocks: int) -> None:
    if depth < 1 or width < 2 or width % 2:
        raise ValueError(f"{name}: width must be even and >= 2 and depth >= 1, "
                         f"got width={width}, depth={depth}")
    if width < c_in:
        raise ValueError(f"{name}: width ({width}) must be >= the image's channels ({c_in})")
    if width * 2**blocks < num_classes:
        raise ValueError(f"{name}: width * 2**blocks = {width * 2**blocks} features are fewer than "
                         f"num_classes ({num_classes}); raise width")


def _down_sampling(channels: int) -> list[nn.Module]:
    """FirstChannels(c/2) + PixelUnshuffle(2): (B, c, H, W) -> (B, 2c, H/2, W/2), both originals."""
    return [FirstChannels(channels // 2), nn.PixelUnshuffle(2)]


class CPLLCN(nn.Module):
    """SU's CPL-LCN ("CPL ConvNet" of *Scaling Up Lipschitz Networks*).

    ZeroChannelConcatenation(width) -> CPLConv2d 1x1, MaxMin -> blocks x [depth x (CPLConv2d 3x3,
    MaxMin), FirstChannels(c/2), PixelUnshuffle(2)] (channels double per block) ->
    MaxPool2d to 1x1 -> Flatten -> CPLLinear(width * 2**blocks) -> first ``num_classes``.
    CPL layers as SU's: kaiming-uniform(a=sqrt(5)) weights, zero trainable biases (also added
    after W^T), 1 power-iteration step per training forward, 1000 at eval (cached).
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 64,  # base width (channels of the first block); SU: 64
        depth: int = 3,  # CPLConv2d layers per block; SU: block_depth 3
        power_iterations: int = 1,  # per training forward, per CPL layer; SU: 1
    ) -> None:
        super().__init__()
        c_in, height, wid = input_shape
        blocks = lcn_blocks(height, wid)
        _check("cpl_convnet", c_in, num_classes, width, depth, blocks)
        conv = partial(CPLConv2d, power_iterations=power_iterations, eval_power_iterations=1000)
        layers: list[nn.Module] = [ZeroChannelConcatenation(width), conv(width, 1), MaxMin()]
        c = width
        for _ in range(blocks):
            for _ in range(depth):
                layers += [conv(c, 3), MaxMin()]  # 3x3 also at 2x2 (zero padding)
            layers += _down_sampling(c)
            c *= 2
        pool = (height // 2**blocks, wid // 2**blocks)
        linear = CPLLinear(c, power_iterations=power_iterations, eval_power_iterations=1000)
        layers += [nn.MaxPool2d(pool), nn.Flatten(), linear, FirstChannels(num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.layers(x)


class CPLConvNetS(nn.Module):
    """LLC's ConvNetS with CPL layers (*1-Lipschitz Layers Compared*).

    ZeroChannelConcatenation(width) -> CPLConv2d 1x1, MaxMin -> blocks x [depth x (CPLConv2d,
    MaxMin), FirstChannels(c/2), PixelUnshuffle(2)] with 3x3 kernels and 1x1 in the last block
    -> AdaptiveMaxPool2d(1) -> CPLConv2d 1x1 (width * 2**blocks) -> Flatten -> first
    ``num_classes``. CPL layers as LLC's: xavier-normal weights, biases U(+-1/sqrt(fan_in)), no
    bias after W^T, 1 power-iteration step per training forward, 100 at eval continuing from
    the training vector (cached).
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 32,  # base width; LLC ConvNetS: 32
        depth: int = 5,  # CPLConv2d layers per block; LLC: nrof_layers_per_block 5
        power_iterations: int = 1,  # per training forward, per CPL layer; LLC: 1
    ) -> None:
        super().__init__()
        c_in, height, wid = input_shape
        blocks = lcn_blocks(height, wid)
        _check("cpl_convnet_s", c_in, num_classes, width, depth, blocks)
        conv = partial(CPLConv2d, power_iterations=power_iterations, eval_power_iterations=100,
                       eval_start="training", init="xavier_normal", bias_after_transpose=False)
        layers: list[nn.Module] = [ZeroChannelConcatenation(width), conv(width, 1), MaxMin()]
        c = width
        for block in range(blocks):
            kernel = 1 if block == blocks - 1 else 3  # LLC: "2x2 blocks do not allow kernel size >= 3"
            for _ in range(depth):
                layers += [conv(c, kernel), MaxMin()]
            layers += _down_sampling(c)
            c *= 2
        layers += [nn.AdaptiveMaxPool2d(1), conv(c, 1), nn.Flatten(),
                   FirstChannels(num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.layers(x)
