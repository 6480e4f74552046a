"""Models by name, so search spaces can say ``model: {name: aol_mlp, width: 3072}``.

Contract: ``build_model(name, input_shape=..., num_classes=..., **options)`` returns an
untrained ``nn.Module`` mapping (B, C, H, W) -> (B, num_classes). An unknown name or option
raises ``ValueError`` listing the valid ones; the options are the constructor's keyword
arguments other than ``input_shape`` and ``num_classes``.

Example:
    >>> model = build_model("aol_mlp", input_shape=(1, 8, 8), num_classes=10, width=64, depth=2)
    >>> model_options("aol_mlp")
    ['width', 'depth']
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from tune_lip.nn.models.cpl_nets import CPLLCN, CPLConvNetS
from tune_lip.nn.models.networks import AOLMLP, CPLConvNet
from tune_lip.nn.models.scaling_nets import VGG16, VGG19, PreResNet32, ResNet32
from tune_lip.nn.models.sphere_nets import ConvNetSI, ConvNetSIAf, ResNet18SI, ResNet18SIAf

__all__ = ["MODELS", "build_model", "model_options"]

MODELS: dict[str, type[nn.Module]] = {
    "aol_mlp": AOLMLP,
    # CPL ConvNets: SU's CPL-LCN, LLC's ConvNetS, and tune-lip's earlier small AOL+CPL net
    "cpl_convnet": CPLLCN, "cpl_convnet_s": CPLConvNetS, "cpl_convnet_small": CPLConvNet,
    # the sphere study's scale-invariant networks
    "convnet_si": ConvNetSI, "convnet_si_af": ConvNetSIAf,
    "resnet18_si": ResNet18SI, "resnet18_si_af": ResNet18SIAf,
    # the scaling-rules study's networks (options: norm bn|gn|none, width multiplier)
    "preresnet32": PreResNet32, "resnet32": ResNet32, "vgg16": VGG16, "vgg19": VGG19,
}

_DATA_ARGS = ("input_shape", "num_classes")  # supplied by the dataset, not the search space


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_options(name: str) -> list[str]:
    """The option names ``build_model`` accepts for model ``name``, in signature order."""
    params = inspect.signature(_model_class(name)).parameters
    return [p for p in params if p not in _DATA_ARGS]


def build_model(
    name: str, *, input_shape: Sequence[int], num_classes: int, **options: Any
) -> nn.Module:
    """Build model ``name`` for images of ``input_shape`` (C, H, W) and ``num_classes`` classes."""
    valid = model_options(name)
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for model {name!r}; valid options: {', '.join(valid)}"
        )
    c, h, w = input_shape
    return _model_class(name)(
        input_shape=(int(c), int(h), int(w)), num_classes=num_classes, **options
    )
