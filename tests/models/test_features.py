import torch
from torch.testing import assert_close

from tune_lip.nn.features import effective_rank


def test_effective_rank_counts_directions():
    g = torch.Generator().manual_seed(0)
    # k orthogonal directions with equal energy: rank k (centring removes nothing: zero-mean signs)
    signs = torch.tensor([[1.0], [-1.0]]).repeat(64, 1)
    for k in (1, 3, 8):
        basis = torch.linalg.qr(torch.randn(32, k, generator=g))[0].T  # (k, 32) orthonormal rows
        x = torch.cat([signs * basis[i] for i in range(k)], dim=0)
        assert_close(effective_rank(x), float(k), rtol=1e-6, atol=1e-6)
    # a constant offset adds nothing; a rank-1 matrix plus an offset is rank 1
    low = torch.randn(100, 1, generator=g) @ torch.randn(1, 20, generator=g) + 5.0
    assert_close(effective_rank(low), 1.0, rtol=1e-4, atol=1e-4)
    # all-equal features: no direction at all, reported as 1
    assert effective_rank(torch.ones(10, 4)) == 1.0
