"""Feature statistics shared by the studies: the effective rank of a batch of features.

Large-step and SAM papers relate the rank of a network's penultimate features to how well it
generalises; the sphere and scaling studies report it as ``feature_rank``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def effective_rank(features: Tensor, eps: float = 1e-12) -> float:
    """Effective rank (Roy & Vetterli 2007) of a (batch, dim) feature matrix: exp of the entropy
    of its normalised singular values, between 1 (one direction) and min(batch, dim).

    Features are centred over the batch first, so a constant offset adds no rank.

    >>> round(effective_rank(torch.eye(4)), 3)
    3.0
    """
    x = features.detach().flatten(1).double()
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if not torch.isfinite(total) or total <= eps:
        return 1.0
    p = s / total
    p = p[p > eps]
    return float(torch.exp(-(p * p.log()).sum()))
