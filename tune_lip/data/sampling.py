"""The order of training examples: batch indices as a pure function of (seed, step).

The examples form an endless stream of per-epoch permutations, permutation e drawn from
``seed * 1_000_003 + e``; step t's batch is the stream's slice [t*B, (t+1)*B), so a batch
may straddle two epochs and is always full. No state beyond the step count is needed to
continue a run exactly, which is what makes checkpoint/restore bit-identical.

Example:
    >>> order = BatchOrder(num_examples=10, batch_size=4, seed=0)
    >>> sorted(torch.cat([order(0), order(1)]).tolist() + order(2)[:2].tolist())
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["BatchOrder"]


class BatchOrder:
    """``order(step) -> (B,)`` int64 indices on ``device``; see the module docstring."""

    def __init__(self, *, num_examples: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.device = torch.device(device)
        self._cached: tuple[int, torch.Tensor] | None = None  # the current epoch's permutation
        self._host: dict[int, np.ndarray] = {}   # epoch -> its permutation on the host (two at most)

    def _draw(self, epoch: int) -> torch.Tensor:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=g, device=self.device)

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._draw(epoch))
        return self._cached[1]

    def host_permutation(self, epoch: int) -> np.ndarray:
        """`permutation` (drawn on ``device``, so the same numbers) as int64 on the host; a host
        sync once per epoch. For readers of host data (`tune_lip.data.stream`)."""
        if epoch not in self._host:
            for old in [e for e in self._host if e < epoch - 1 or e > epoch + 1]:
                del self._host[old]
            self._host[epoch] = self._draw(epoch).cpu().numpy()
        return self._host[epoch]

    def _slices(self, step: int) -> list[tuple[int, int, int]]:
        """(epoch, start, stop) pieces of the stream that make up step ``step``'s batch."""
        n = self.num_examples
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        parts = []
        while start < stop:
            epoch, offset = divmod(start, n)
            take = min(stop - start, n - offset)
            parts.append((epoch, offset, offset + take))
            start += take
        return parts

    def __call__(self, step: int) -> torch.Tensor:
        parts = [self.permutation(e)[a:b] for e, a, b in self._slices(step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def host(self, step: int) -> np.ndarray:
        """``order(step)`` as int64 (B,) on the host (see `host_permutation`)."""
        parts = [self.host_permutation(e)[a:b] for e, a, b in self._slices(step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
