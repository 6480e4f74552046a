"""Margin losses and certification for 1-Lipschitz classifiers.

Contract: for a model that is 1-Lipschitz in l2, the difference of two scores is
sqrt(2)-Lipschitz, so a sample is *certified* at radius eps when its true score beats every
other score by more than sqrt(2)*eps (ties are not certified). The training loss is the
offset cross-entropy of *Scaling Up Lipschitz Networks*:

    T * CE((s - offset * onehot(y)) / T),    offset = sqrt(2) * eps_train,  T = 1/4.

All functions return tensors and never synchronise with the device (no ``.item()``).

Example:
    >>> import torch
    >>> scores, labels = torch.tensor([[2.0, 0.0], [0.1, 0.0]]), torch.tensor([0, 0])
    >>> certified_correct(scores, labels, eps=0.5)
    tensor([ True, False])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OffsetCrossEntropy", "certified_correct", "correct", "offset_cross_entropy", "cross_entropy_and_accuracy",
           "pgd_l2_robust"]


def offset_cross_entropy(
    scores: Tensor, labels: Tensor, *, offset: float, temperature: float
) -> Tensor:
    """Mean of T * CE((s - offset * onehot(y)) / T); scores (B, K), labels (B,) -> scalar."""
    onehot = F.one_hot(labels, scores.shape[-1]).to(scores.dtype)  # (B, K)
    return temperature * F.cross_entropy((scores - offset * onehot) / temperature, labels)


class OffsetCrossEntropy(nn.Module):
    """Offset cross-entropy for training at l2 radius ``eps`` (offset = sqrt(2) * eps)."""

    def __init__(self, eps: float, *, temperature: float = 0.25) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.eps, self.temperature = eps, temperature
        self.offset = math.sqrt(2) * eps

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:  # (B, K), (B,) -> ()
        return offset_cross_entropy(
            scores, labels, offset=self.offset, temperature=self.temperature
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, temperature={self.temperature}"


def certified_correct(scores: Tensor, labels: Tensor, eps: float) -> Tensor:
    """(B,) bool: s_y - sqrt(2)*eps > max_{j != y} s_j, i.e. robust at l2 radius ``eps``."""
    true = scores.gather(1, labels[:, None]).squeeze(1)  # (B,)
    others = scores.scatter(1, labels[:, None], float("-inf")).amax(dim=1)  # (B,)
    return true - math.sqrt(2) * eps > others


def correct(scores: Tensor, labels: Tensor) -> Tensor:
    """(B,) bool: argmax of the scores equals the label."""
    return scores.argmax(dim=1) == labels


@torch.no_grad()
def cross_entropy_and_accuracy(model: nn.Module, images: Tensor, labels: Tensor, mean: Tensor, *,
                       batch_size: int = 1024, std: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of ``model`` on a uint8 test set, as float64 0-d tensors.

    images: (N, H, W, C) uint8, centred with ``mean`` and divided by ``std`` (None: not divided;
    `tune_lip.data.datasets.convert_and_center`) one batch at a time. The pass runs in eval mode (BatchNorm uses its running statistics); the
    model is back in train mode after. No host sync: the caller reads both values at once.
    """
    from tune_lip.data.datasets import convert_and_center

    model.eval()
    n = len(labels)
    loss_sum = torch.zeros((), device=labels.device, dtype=torch.float64)
    hits = torch.zeros((), device=labels.device, dtype=torch.long)
    for start in range(0, n, batch_size):
        x = convert_and_center(images[start:start + batch_size], mean, std)   # (B, C, H, W)
        y = labels[start:start + batch_size]
        scores = model(x)                                                # (B, num_classes)
        loss_sum += F.cross_entropy(scores, y, reduction="sum").double()
        hits += (scores.argmax(dim=1) == y).sum()
    model.train()
    return loss_sum / n, hits.double() / n


def pgd_l2_robust(model: nn.Module, x: Tensor, labels: Tensor, *, eps: float, steps: int = 10,
                  step_size: float | None = None, lower: Tensor | None = None,
                  upper: Tensor | None = None) -> Tensor:
    """(B,) bool: still correctly classified under an l2 PGD attack of radius ``eps``
    (an *empirical* robust accuracy: an upper bound on the certified one, a lower bound on the
    true robust one).

    x: float (B, C, H, W), the model's input (after `convert_and_center`); labels (B,). The
    attack maximises the margin max_{j != y} s_j - s_y from x itself (no random start) with
    ``steps`` normalised-gradient steps of ``step_size`` (default 2.5 * eps / steps), projected
    back to the l2 ball of radius ``eps`` around each input and, when given, to the valid
    pixel box [lower, upper] (per channel, (C,) tensors in input units). A sample counts as
    robust only if it is classified correctly at x and at every iterate. The model's mode is
    left as it is (call it in eval mode, as certification is). No host sync.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
        >>> x = torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])   # (2, 1, 2, 2)
        >>> pgd_l2_robust(model, x, torch.tensor([0, 0]), eps=1.0)     # margin 0.5 breaks, 2.0 holds
        tensor([False,  True])
    """
    if steps < 1 or not eps > 0:
        raise ValueError(f"pgd_l2_robust needs steps >= 1 and eps > 0, got {steps}, {eps}")
    alpha = 2.5 * eps / steps if step_size is None else step_size
    c = x.shape[1]
    lo = None if lower is None else lower.to(x.device, x.dtype).view(1, c, 1, 1)
    hi = None if upper is None else upper.to(x.device, x.dtype).view(1, c, 1, 1)

    def margin(scores: Tensor) -> Tensor:                        # (B,): > 0 means misclassified
        true = scores.gather(1, labels[:, None]).squeeze(1)
        others = scores.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
        return others - true

    with torch.no_grad():
        robust = correct(model(x), labels)                        # (B,)
    x_adv = x.detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = margin(model(x_adv)).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = x_adv.detach() + alpha * grad / norms
            delta = x_adv - x
            scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(-1, 1, 1, 1)
            x_adv = x + delta * scale                                 # back into the l2 ball
            if lo is not None and hi is not None:
                x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)   # and into the pixel box
            robust &= correct(model(x_adv), labels)
    return robust
