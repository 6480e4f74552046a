"""MaxMin pairs ADJACENT channels, as both originals do.

*Scaling Up Lipschitz Networks* (lipschitz/models/layers/activations/max_min.py) and
*1-Lipschitz Layers Compared* (models/layers/activations/max_min.py) view (B, C, ...) as
(B, C/2, 2, ...) and write back [max, min] per pair ("Order [max, min, max, min, ...]").
Measured: our MaxMin equals both files' forward exactly on random (3, 8) and (2, 6, 5, 5) inputs.
"""

from __future__ import annotations

import pytest
import torch

from tune_lip.nn.models.activations import MaxMin


def _reference(x: torch.Tensor) -> torch.Tensor:
    """Adjacent pairs sorted descending, channel by channel (a plain loop, independent of MaxMin)."""
    out = x.clone()
    for k in range(0, x.shape[1], 2):
        a, b = x[:, k], x[:, k + 1]
        out[:, k], out[:, k + 1] = torch.maximum(a, b), torch.minimum(a, b)
    return out


def test_maxmin_sorts_adjacent_pairs_max_first() -> None:
    out = MaxMin()(torch.tensor([[1.0, 5.0, 3.0, 2.0]]))  # pairs (1, 5) and (3, 2)
    torch.testing.assert_close(out, torch.tensor([[5.0, 1.0, 3.0, 2.0]]))


@pytest.mark.parametrize("shape", [(3, 8), (2, 6, 5, 5), (1, 2, 3)])
def test_maxmin_matches_the_adjacent_pair_reference(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(MaxMin()(x), _reference(x), rtol=0, atol=0)


def test_maxmin_other_dim_and_odd_channels() -> None:
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))
    expected = _reference(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(MaxMin(dim=-1)(x), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="even number of channels"):
        MaxMin()(torch.zeros(2, 3))
