"""Offset cross-entropy and certification at an l2 radius."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tune_lip.nn.losses import OffsetCrossEntropy, certified_correct, correct, offset_cross_entropy


def test_offset_cross_entropy_by_hand() -> None:
    scores, labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    # offset 0.5, T 0.5: logits become [[1, 0], [-1, 4]]; the CE of class 0 is
    # log(1 + e^-1) and log(e^-1 + e^4) + 1, then the mean is multiplied by T.
    expected = 0.5 * (math.log(1 + math.exp(-1)) + math.log(math.exp(-1) + math.exp(4)) + 1) / 2
    loss = offset_cross_entropy(scores, labels, offset=0.5, temperature=0.5)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_module_uses_sqrt2_eps_offset() -> None:
    scores, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    loss = OffsetCrossEntropy(0.1412)(scores, labels)
    expected = offset_cross_entropy(scores, labels, offset=math.sqrt(2) * 0.1412, temperature=0.25)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="temperature"):
        OffsetCrossEntropy(0.1, temperature=0.0)


def _certified_by_loop(scores: torch.Tensor, labels: torch.Tensor, eps: float) -> list[bool]:
    result = []
    for s, y in zip(scores.tolist(), labels.tolist()):
        runner_up = max(v for j, v in enumerate(s) if j != y)
        result.append(s[y] - math.sqrt(2) * eps > runner_up)
    return result


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    classes=st.integers(2, 6),
    eps=st.sampled_from([0.0, 0.01, 36 / 255, 1.0]),
    rounded=st.booleans(),
)
def test_certification_matches_a_loop_and_never_exceeds_accuracy(
    seed: int, classes: int, eps: float, rounded: bool
) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(32, classes, generator=gen)
    if rounded:
        scores = scores.round()  # many exact ties, which must not count as certified
    labels = torch.randint(0, classes, (32,), generator=gen)
    certified = certified_correct(scores, labels, eps)
    assert certified.dtype == torch.bool and certified.shape == (32,)
    assert certified.tolist() == _certified_by_loop(scores, labels, eps)
    # Certified implies correct, so certified accuracy never exceeds clean accuracy.
    assert not torch.any(certified & ~correct(scores, labels))


def test_ties_are_not_certified() -> None:
    scores, labels = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0])
    assert not certified_correct(scores, labels, 0.0).item()
    assert correct(torch.tensor([[3.0, 1.0]]), torch.tensor([0])).item()


def test_cross_entropy_and_accuracy_matches_one_big_batch():
    """Batched, eval-mode pass == the same sums over the whole set; train mode comes back."""
    from tune_lip.data.datasets import convert_and_center
    from tune_lip.nn.losses import cross_entropy_and_accuracy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 3))
    images = torch.randint(0, 256, (10, 2, 2, 3), dtype=torch.uint8)
    labels = torch.randint(0, 3, (10,))
    mean = torch.tensor([0.5, 0.4, 0.3])
    loss, acc = cross_entropy_and_accuracy(model, images, labels, mean, batch_size=4)  # 4 + 4 + 2
    assert model.training and loss.dtype == acc.dtype == torch.float64
    model.eval()
    with torch.no_grad():
        scores = model(convert_and_center(images, mean))
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(scores, labels)), rel=1e-6)
    assert float(acc) == pytest.approx(float((scores.argmax(1) == labels).double().mean()))


def test_cross_entropy_and_accuracy_divides_by_std():
    from tune_lip.data.datasets import convert_and_center
    from tune_lip.nn.losses import cross_entropy_and_accuracy

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    images = torch.randint(0, 256, (6, 2, 2, 3), dtype=torch.uint8)
    labels = torch.randint(0, 3, (6,))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.3, 0.4])
    loss, _ = cross_entropy_and_accuracy(model, images, labels, mean, batch_size=4, std=std)
    with torch.no_grad():
        scores = model(convert_and_center(images, mean, std))
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(scores, labels)), rel=1e-6)
