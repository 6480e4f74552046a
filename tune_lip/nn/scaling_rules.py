"""The scaling-rules study's maths, free of the training loop and of Ray: LR rules, SVAG, NGD, noise.

From *On the Validity of Modeling SGD with SDEs* (Li, Malladi, Arora 2021) and *On the SDEs and
Scaling Rules for Adaptive Gradient Algorithms* (Malladi et al. 2022). Hand-written: no library
has SVAG, NGD or these noise estimates. `tune_lip.studies.scaling` trains and measures with them.

- `scaled_lr`: the LR at batch size B from η at B₀: η·B/B₀ (``linear``, SGD's rule),
  η·√(B/B₀) (``sqrt``, the SDE rule for Adam/RMSprop) or η (``none``).
- `svag_coefficients`, `svag_objective`: SVAG with l ≥ 1 on two independent halves b₁, b₂ of
  a draw of 2B minimises c₁L(b₁) + c₂L(b₂), c = √(2l−1), c₁ = (1+c)/2, c₂ = (1−c)/2: the mean
  gradient is kept and the noise covariance multiplied by l, so at lr/l for l× the steps it
  follows the same SDE. l = 1 is minibatch training.
- `ngd_weights`, `ngd_backward`: on N examples, the full gradient with per-example weights
  1 + √(N/B)(zᵢ − z̄), z ~ N(0, I), whose noise has covariance exactly Σ/B: SGD's at batch B,
  made Gaussian. Accumulated chunk by chunk.
- `gradient_noise`: from k ≥ 2 gradients g₁..g_k of minibatches of B drawn uniformly with
  replacement, with S = mean‖g_j‖² and M = ‖mean g_j‖², E S = ‖∇L‖² + tr Σ/B and
  E M = ‖∇L‖² + tr Σ/(kB), so G = (kM − S)/(k−1) is unbiased for ‖∇L‖² and
  N = B(S − G) = B/(k−1)·Σ_j‖g_j − ḡ‖² is unbiased for tr Σ; N/G is the simple noise scale
  B_simple, in examples.

Units: learning rates per optimizer step; B, B₀ and N in examples; Σ is the covariance of one
example's loss gradient, so tr Σ, like ‖∇L‖², is in loss² per parameter². Tensor results stay
on the device (no host sync).

Example:
    >>> scaled_lr("sqrt", eta=1e-3, batch_size=512, base_batch=128)   # η·√(512/128)
    0.002
    >>> c1, c2 = svag_coefficients(2.0)
    >>> round(c1 + c2, 12), round(c1 ** 2 + c2 ** 2, 12)              # mean kept, variance ×l
    (1.0, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["gradient_noise", "ngd_backward", "ngd_weights", "scaled_lr", "svag_coefficients", "svag_objective"]


def scaled_lr(rule: str, *, eta: float, batch_size: int, base_batch: int) -> float:
    """The LR a rule gives batch size B: η·B/B₀ (linear), η·√(B/B₀) (sqrt) or η (none).

    Example:
        >>> scaled_lr("linear", eta=0.8, batch_size=512, base_batch=128)
        3.2
    """
    ratio = batch_size / base_batch
    return eta * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]


def svag_coefficients(l: float) -> tuple[float, float]:
    """SVAG's (c₁, c₂) = ((1+c)/2, (1−c)/2), c = √(2l−1): c₁ + c₂ = 1 and c₁² + c₂² = l.

    Example:
        >>> svag_coefficients(1.0), svag_coefficients(5.0)
        ((1.0, 0.0), (2.0, -1.0))
    """
    c = math.sqrt(2 * l - 1)
    return (1 + c) / 2, (1 - c) / 2


def svag_objective(losses_1: Tensor, losses_2: Tensor, l: float) -> Tensor:
    """c₁·mean(losses_1) + c₂·mean(losses_2) for two independent halves: one half's mean
    gradient, l times its covariance. Not a loss to report (c₂ < 0)."""
    c1, c2 = svag_coefficients(l)
    return c1 * losses_1.mean() + c2 * losses_2.mean()


def ngd_weights(n: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """(n,) per-example weights 1 + √(n/B)(zᵢ − z̄), z ~ N(0, I_n) from ``generator``'s device.

    (1/n)Σ wᵢ∇ℓᵢ has mean ḡ and noise √(n/B)/n·Σ zᵢ(∇ℓᵢ − ḡ), of covariance exactly Σ/B with
    Σ = (1/n)Σ(∇ℓᵢ − ḡ)(∇ℓᵢ − ḡ)ᵀ: the noise of SGD at batch B, made Gaussian.
    """
    z = torch.randn(n, generator=generator, device=generator.device)
    return 1 + math.sqrt(n / batch_size) * (z - z.mean())


def ngd_backward(losses_of: Callable[[Tensor], Tensor], indices: Tensor, weights: Tensor, *,
                 chunk: int) -> Tensor:
    """Accumulate ∇(1/n)Σ wᵢℓᵢ into ``.grad``, ``chunk`` examples per forward/backward.

    ``losses_of(idx)``: per-example losses (len(idx),); ``indices``, ``weights``: (n,).
    Returns the unweighted mean loss, detached, on the device (no host sync).
    """
    n, total = len(indices), torch.zeros((), device=weights.device)
    for start in range(0, n, chunk):
        losses = losses_of(indices[start:start + chunk])
        (losses @ weights[start:start + chunk] / n).backward()
        total += losses.detach().sum()
    return total / n


def gradient_noise(losses_of: Callable[[Tensor], Tensor], params: Sequence[Tensor],
                   batches: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """(G, N): unbiased ‖∇L‖² and tr Σ from k ≥ 2 minibatch gradients (see the module docstring).

    ``batches``: k index tensors of B, drawn uniformly with replacement (so E g_j = ∇L and
    Cov g_j = Σ/B exactly); ``losses_of(idx)``: per-example losses. k backward passes;
    float64 0-d tensors on the device (no host sync).

    Example:
        >>> w = torch.zeros(1, requires_grad=True); x = torch.tensor([1.0, 3.0])   # ℓᵢ = (w − xᵢ)²/2
        >>> g, n = gradient_noise(lambda i: (w - x[i]) ** 2 / 2, [w], [torch.tensor([0]), torch.tensor([1])])
        >>> float(g), float(n)   # (kM − S)/(k−1) = (2·4 − 5)/1 and 1·(5 − 3): one draw, not yet the mean
        (3.0, 2.0)
    """
    k, b = len(batches), len(batches[0])
    if k < 2:
        raise ValueError(f"gradient_noise needs k >= 2 minibatches to separate mean and noise, got {k}")
    grad_sum = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    sq_sum = torch.zeros((), dtype=torch.float64, device=grad_sum[0].device)
    for idx in batches:
        grads = torch.autograd.grad(losses_of(idx).mean(), list(params))
        sq_sum = sq_sum + sum(g.double().pow(2).sum() for g in grads)
        torch._foreach_add_(grad_sum, [g.double() for g in grads])
    s = sq_sum / k                                                 # mean ‖g_j‖²
    m = sum((g / k).pow(2).sum() for g in grad_sum)                # ‖mean g_j‖²
    g_sq = (k * m - s) / (k - 1)
    return g_sq, b * (s - g_sq)

