"""1-Lipschitz layers and networks, and the model registry.

Example:
    >>> from tune_lip.nn.models import build_model
    >>> build_model("cpl_convnet", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1).__class__.__name__
    'CPLLCN'
"""

from __future__ import annotations

from tune_lip.nn.models.activations import MaxMin
from tune_lip.nn.models.aol import (
    AOLConv2d,
    AOLLinear,
    CachedInEval,
    aol_conv_weight,
    aol_linear_weight,
)
from tune_lip.nn.models.cpl import CPLConv2d, CPLLinear, conv_spectral_norm_bound
from tune_lip.nn.models.cpl_nets import CPLLCN, CPLConvNetS, FirstChannels, ZeroChannelConcatenation
from tune_lip.nn.models.networks import AOLMLP, CPLConvNet
from tune_lip.nn.models.registry import MODELS, build_model, model_options

__all__ = [
    "AOLMLP",
    "MODELS",
    "AOLConv2d",
    "AOLLinear",
    "CPLLCN",
    "CPLConv2d",
    "CPLConvNet",
    "CPLConvNetS",
    "CPLLinear",
    "CachedInEval",
    "FirstChannels",
    "MaxMin",
    "ZeroChannelConcatenation",
    "aol_conv_weight",
    "aol_linear_weight",
    "build_model",
    "conv_spectral_norm_bound",
    "model_options",
]
