"""Convex Potential Layers (CPL), linear and convolutional.

Contract: ``y = x - 2/sigma**2 * W^T ReLU(W x + b)`` with sigma >= ||W|| is 1-Lipschitz in
l2 (Meunier et al., "A Dynamical System Perspective for Lipschitz Neural Networks"): its
Jacobian is I - h W^T D W with D diagonal in [0, 1], whose eigenvalues lie in [-1, 1]
whenever h = 2/sigma**2 <= 2/||W||**2. For the conv layer W is the convolution operator
(stride 1, zero padding k//2) and W^T its adjoint, conv_transpose2d.

How sigma is obtained (the only delicate part). Power iteration always *under*-estimates
a norm, and a relative underestimate delta makes the layer about (1 + 4*delta)-Lipschitz,
which would make certificates unsound. So:

- Linear: training runs ``power_iterations`` steps on the persistent buffer ``u`` (no
  grad), then sigma = ||W u|| with the gradient through W. Eval uses the exact spectral
  norm (SVD), computed once and cached.
- Conv: sigma refers to the *circular* convolution on the (H+2p) x (W+2p) torus, which
  contains the zero-padded layer operator as a sub-block, so its norm is an upper bound.
  Training runs power iteration for that circular operator (``u`` lives on the torus);
  eval computes its norm exactly (FFT, one small SVD per frequency), once per input size,
  cached. Training and eval therefore aim at the same sigma, and eval is sound. The bound
  is tight on large maps (~0.2% above the zero-padded norm at 32x32) and looser on tiny
  ones (~15% at 4x4), which only makes those layers more contractive.

Eval never modifies ``u``, so evaluating does not change training.

Hand-written because no maintained library provides CPL layers.

Example:
    >>> import torch
    >>> layer = CPLLinear(4).eval()
    >>> x, y = torch.randn(2, 4), torch.randn(2, 4)
    >>> bool((layer(x) - layer(y)).norm() <= (x - y).norm())
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tune_lip.nn.models.aol import CachedInEval

__all__ = ["CPLConv2d", "CPLLinear", "conv_spectral_norm_bound"]

_MIN_SIGMA_SQ = 1e-12  # a smaller step h than 2/||W||^2 is still 1-Lipschitz, so clamping is safe


def conv_spectral_norm_bound(weight: Tensor, size: tuple[int, int], padding: int) -> Tensor:
    """Upper bound on the l2 norm of ``conv2d(., weight, padding=padding)`` on (H, W) inputs.

    The zero-padded convolution is a sub-block of the circular convolution on the
    (H + 2*padding) x (W + 2*padding) torus, whose norm is the largest singular value of
    the kernel's DFT over all frequencies.
    """
    n1, n2 = size[0] + 2 * padding, size[1] + 2 * padding
    k_hat = torch.fft.rfft2(weight, s=(n1, n2))  # (C_out, C_in, n1, n2//2+1), complex
    # rfft2 keeps half the frequencies; the other half are complex conjugates (same norms).
    return torch.linalg.matrix_norm(k_hat.permute(2, 3, 0, 1), ord=2).amax()


class CPLLinear(CachedInEval):
    """1-Lipschitz residual layer ``y = x - 2/sigma^2 W^T ReLU(W x + b)``; (B, F) -> (B, F)."""

    u: Tensor

    def __init__(self, features: int, *, power_iterations: int = 1) -> None:
        super().__init__()
        if power_iterations < 0:
            raise ValueError(f"power_iterations must be >= 0, got {power_iterations}")
        self.features, self.power_iterations = features, power_iterations
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(features, features)))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("u", F.normalize(torch.randn(features), dim=0))  # (F,)

    def sigma(self) -> Tensor:
        """Spectral-norm estimate of W (training) or its exact value (eval, cached)."""
        if not self.training:
            return self.cached(None, lambda: torch.linalg.matrix_norm(self.weight, ord=2))
        w = self.weight
        with torch.no_grad(), self.full_precision():
            u = self.u.clone()  # the graph keeps u; the buffer changes at the next forward
            for _ in range(self.power_iterations):
                u = F.normalize(w.T @ (w @ u), dim=0)
            self.u.copy_(u)
        with self.full_precision():
            return torch.linalg.vector_norm(w @ u)  # gradient flows through W only

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, F)
        h = 2 / self.sigma().square().clamp_min(_MIN_SIGMA_SQ)
        z = F.relu(F.linear(x, self.weight, self.bias))  # (B, F)
        return x - h * F.linear(z, self.weight.T)

    def extra_repr(self) -> str:
        return f"features={self.features}, power_iterations={self.power_iterations}"


class CPLConv2d(CachedInEval):
    """1-Lipschitz convolutional CPL (zero padding k//2); (B, C, H, W) -> (B, C, H, W).

    The power-iteration buffer ``u`` has shape (1, C, H+2p, W+2p) (the torus, see the
    module docstring); it is created at the first training forward from the input's
    spatial size (from a seed drawn at construction, so seeding the model seeds it too) and
    re-initialised when that size changes. It is in the state_dict (empty until the first
    training forward), and ``load_state_dict`` adopts the checkpoint's shape, so a restore is
    exact.
    """

    u: Tensor

    def __init__(self, channels: int, kernel_size: int = 3, *, power_iterations: int = 1) -> None:
        super().__init__()
        if power_iterations < 0:
            raise ValueError(f"power_iterations must be >= 0, got {power_iterations}")
        self.channels, self.kernel_size = channels, kernel_size
        self.power_iterations = power_iterations
        self.padding = kernel_size // 2
        weight = torch.empty(channels, channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(nn.init.orthogonal_(weight))  # (C, C, k, k)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("u", torch.empty(0))  # (1, C, H+2p, W+2p) after a training forward
        # The start of u is drawn now, with the weights, from the global RNG: a seeded model
        # gets the same u whatever else draws random numbers before its first training step.
        self.u_seed = int(torch.randint(2**62, (1,), device="cpu"))

    def _circular(self, u: Tensor, weight: Tensor, left: int) -> Tensor:
        """Circular cross-correlation on the torus; (1, C, N1, N2) -> (1, C, N1, N2)."""
        right = self.kernel_size - 1 - left
        return F.conv2d(F.pad(u, (left, right, left, right), mode="circular"), weight)

    def _torus_step(self, u: Tensor) -> Tensor:
        """One power-iteration step of A^T A for the circular operator A, normalised."""
        w = self.weight
        v = self._circular(u, w, self.padding)
        # Adjoint: correlation with the flipped, channel-transposed kernel, mirrored padding.
        u = self._circular(v, w.transpose(0, 1).flip(-2, -1), self.kernel_size - 1 - self.padding)
        return u / u.norm().clamp_min(1e-12)

    def sigma(self, size: tuple[int, int]) -> Tensor:
        """Norm of the circular operator on the torus around (H, W) inputs.

        Training: a power-iteration estimate with gradient through W. Eval: exact, cached.
        """
        if not self.training:
            return self.cached(
                size, lambda: conv_spectral_norm_bound(self.weight, size, self.padding)
            )
        torus = (size[0] + 2 * self.padding, size[1] + 2 * self.padding)
        with torch.no_grad(), self.full_precision():
            if self.u.shape[2:] != torus:
                g = torch.Generator().manual_seed(self.u_seed)
                u0 = torch.randn(1, self.channels, *torus, generator=g, dtype=self.weight.dtype)
                self.u = (u0 / u0.norm()).to(self.weight.device)
            u = self.u.clone()  # the graph keeps u; the buffer changes at the next forward
            for _ in range(self.power_iterations):
                u = self._torus_step(u)
            self.u.copy_(u)
        with self.full_precision():
            return torch.linalg.vector_norm(self._circular(u, self.weight, self.padding))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        h = 2 / self.sigma((x.shape[-2], x.shape[-1])).square().clamp_min(_MIN_SIGMA_SQ)
        z = F.relu(F.conv2d(x, self.weight, self.bias, padding=self.padding))  # (B, C, H', W')
        return x - h * F.conv_transpose2d(z, self.weight, padding=self.padding)  # adjoint conv

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "u")
        if saved is not None and saved.shape != self.u.shape:  # lazily shaped buffer
            self.u = torch.empty(saved.shape, device=self.u.device, dtype=self.u.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, "
            f"power_iterations={self.power_iterations}"
        )
