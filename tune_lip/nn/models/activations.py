"""MaxMin activation: sort channel pairs (Anil et al., "Sorting out Lipschitz function approximation").

Contract: the channels along ``dim`` are taken in ADJACENT pairs (0, 1), (2, 3), ... and each
pair is replaced, in place, by [max, min]: output channel 2k is max(x_2k, x_2k+1) and 2k+1 is
min(x_2k, x_2k+1). This is the layout of both originals: *Scaling Up Lipschitz Networks*
(``lipschitz/models/layers/activations/max_min.py``) and *1-Lipschitz Layers Compared*
(``models/layers/activations/max_min.py``), which view (B, C, ...) as (B, C/2, 2, ...) and
write back "[max, min, max, min, ...]". Each output pair is a permutation of its input pair,
so the map is 1-Lipschitz in l2, preserves the norm of every input, and its Jacobian is a
permutation matrix (gradient norm preserving). An odd channel count is an error (as in SU).

Example:
    >>> import torch
    >>> MaxMin()(torch.tensor([[1.0, -2.0, 3.0, 0.0]]))
    tensor([[ 1., -2.,  3.,  0.]])
    >>> MaxMin()(torch.tensor([[-2.0, 1.0, 0.0, 3.0]]))
    tensor([[ 1., -2.,  3.,  0.]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MaxMin"]


class MaxMin(nn.Module):
    """Sort adjacent channel pairs into [max, min]; the size along ``dim`` must be even."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:  # (B, C, ...) -> (B, C, ...)
        dim = self.dim % x.ndim
        channels = x.shape[dim]
        if channels % 2:
            raise ValueError(
                f"MaxMin needs an even number of channels along dim {self.dim}, got {channels}"
            )
        pairs = x.unflatten(dim, (channels // 2, 2))               # (B, C/2, 2, ...)
        a, b = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)  # (B, C/2, ...) each
        out = torch.stack([torch.maximum(a, b), torch.minimum(a, b)], dim=dim + 1)  # (B, C/2, 2, ...)
        return out.flatten(dim, dim + 1)                           # (B, C, ...)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
