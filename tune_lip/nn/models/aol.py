"""AOL (Almost-Orthogonal Lipschitz) linear and convolutional layers.

Contract: for every weight, the layer's linear part has spectral norm <= 1 in l2
(Prach & Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz
Networks"). The raw parameter ``W`` is rescaled column-wise by

    d_i = (sum_j |(W^T W)_ij| + 1e-6) ** -0.5,    W_tilde = W @ diag(d),

which bounds ||W_tilde|| <= 1 by a Schur test. For a convolution, W^T W is the Gram of
the convolution operator; its entries are v = conv2d(W^T, W^T, padding=k-1) and the sum
runs over input channels j and all spatial shifts. Zero padding only restricts the
operator, so the bound holds for any padding.

Hand-written because no maintained library provides AOL layers.

In eval mode the rescaled weight is computed once and cached (`CachedInEval`); in
training it is recomputed every forward so gradients flow through the rescaling.

Example:
    >>> import torch
    >>> layer = AOLLinear(4, 3)
    >>> bool(torch.linalg.matrix_norm(layer.rescaled_weight(), 2) <= 1)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AOLConv2d", "AOLLinear", "CachedInEval", "aol_conv_weight", "aol_linear_weight"]

_AOL_EPS = 1e-6


def aol_linear_weight(weight: Tensor) -> Tensor:
    """Rescale ``weight`` (out, in) so that its spectral norm is <= 1."""
    gram = weight.T @ weight  # (in, in)
    d = (gram.abs().sum(dim=1) + _AOL_EPS).rsqrt()  # (in,)
    return weight * d  # (out, in), column i scaled by d_i


def aol_conv_weight(weight: Tensor) -> Tensor:
    """Rescale a conv kernel (out, in, k, k) so that the convolution has spectral norm <= 1."""
    k = weight.shape[-1]
    wt = weight.transpose(0, 1)  # (in, out, k, k)
    v = F.conv2d(wt, wt, padding=k - 1)  # (in, in, 2k-1, 2k-1): Gram entries per shift
    d = (v.abs().sum(dim=(1, 2, 3)) + _AOL_EPS).rsqrt()  # (in,)
    return weight * d[None, :, None, None]


class CachedInEval(nn.Module):
    """Base for layers whose parameter transform is fixed in eval mode.

    ``self.cached(key, compute)`` runs ``compute()`` every call in training (so autograd
    sees it) and once per ``key`` in eval, without a graph. The cache is dropped by every
    ``train()``/``eval()`` call, by ``load_state_dict``, by ``.to()``/``.double()`` and by
    any in-place change to the layer's own parameters (e.g. an optimizer step). Transforms
    run with autocast disabled, so mixed-precision training cannot loosen the bound.
    """

    def __init__(self) -> None:
        super().__init__()
        self._eval_cache: dict[Hashable, Tensor] = {}
        self._eval_stamp: tuple[int, ...] = ()

    def cached(self, key: Hashable, compute: Callable[[], Tensor]) -> Tensor:
        if self.training:
            with self.full_precision():
                return compute()
        # Parameter version counters change on every in-place update.
        stamp = tuple(p._version for p in self.parameters(recurse=False))
        if stamp != self._eval_stamp:
            self._eval_cache, self._eval_stamp = {}, stamp
        if key not in self._eval_cache:
            # inference_mode(False): a cache filled inside inference_mode must still be
            # usable later by ordinary autograd (e.g. a gradient attack in eval mode).
            with torch.inference_mode(False), torch.no_grad(), self.full_precision():
                self._eval_cache[key] = compute()
        return self._eval_cache[key]

    def full_precision(self) -> AbstractContextManager[Any]:
        """Weight transforms bound a norm: keep them out of autocast's bf16/fp16."""
        device = next(self.parameters()).device.type
        if device == "meta":  # shape-only forward (memory estimates): autocast has no meta mode
            return nullcontext()
        return torch.autocast(device, enabled=False)

    def clear_cache(self) -> None:
        self._eval_cache = {}

    def train(self, mode: bool = True) -> CachedInEval:
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> CachedInEval:
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)


class AOLLinear(CachedInEval):
    """1-Lipschitz linear layer ``y = x @ W_tilde.T``; identity init, no bias.

    Shapes: (B, in_features) -> (B, out_features). Rectangular shapes are fine.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.eye(out_features, in_features))  # (out, in)

    def rescaled_weight(self) -> Tensor:
        return self.cached(None, lambda: aol_linear_weight(self.weight))

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, out)
        return F.linear(x, self.rescaled_weight())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class AOLConv2d(CachedInEval):
    """1-Lipschitz 2-D convolution (stride 1, zero padding); dirac (identity) init.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H', W'), H' = H + 2*padding - k + 1.
    The bias does not change the Lipschitz constant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.padding = kernel_size // 2 if padding is None else padding
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(nn.init.dirac_(weight))  # (out, in, k, k)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def rescaled_weight(self) -> Tensor:
        return self.cached(None, lambda: aol_conv_weight(self.weight))

    def forward(self, x: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, H', W')
        return F.conv2d(x, self.rescaled_weight(), self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding={self.padding}, bias={self.bias is not None}"
        )
