"""MaxMin activation: sort channel pairs (Anil et al., "Sorting out Lipschitz function approximation").

Contract: the channels along ``dim`` are split into halves a, b and the output is
cat(max(a, b), min(a, b)). Each output pair is a permutation of its input pair, so the map
is 1-Lipschitz in l2, preserves the norm of every input, and its Jacobian is a permutation
matrix (gradient norm preserving).

Example:
    >>> import torch
    >>> MaxMin()(torch.tensor([[1.0, -2.0, 3.0, 0.0]]))
    tensor([[ 3.,  0.,  1., -2.]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MaxMin"]


class MaxMin(nn.Module):
    """Pairwise sort of channel halves; the size along ``dim`` must be even."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:  # (B, C, ...) -> (B, C, ...)
        channels = x.shape[self.dim]
        if channels % 2:
            raise ValueError(
                f"MaxMin needs an even number of channels along dim {self.dim}, got {channels}"
            )
        a, b = x.chunk(2, dim=self.dim)  # (B, C/2, ...) each
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
