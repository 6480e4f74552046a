"""Convex Potential Layers (CPL), linear and convolutional, as the Lipschitz papers' code has them.

Contract: ``y = x - 2/sigma**2 * W^T ReLU(W x + b)`` with sigma >= ||W|| is 1-Lipschitz in
l2 (Meunier et al., "A Dynamical System Perspective for Lipschitz Neural Networks"): its
Jacobian is I - h W^T D W with D diagonal in [0, 1], whose eigenvalues lie in [-1, 1]
whenever h = 2/sigma**2 <= 2/||W||**2. For the conv layer W is the convolution operator
(stride 1, zero padding k//2, "same") and W^T its adjoint, conv_transpose2d. A constant
added to the output (``bias_after_transpose``) changes nothing of this.

sigma comes from power iteration on A^T A for the operator A the layer applies (the
zero-padded convolution on the input's H x W, or the matrix), exactly as in both originals
(SU = *Scaling Up Lipschitz Networks*, ``lipschitz/models/layers/lipschitz/cpl.py`` and
``power_iteration.py``; LLC = *1-Lipschitz Layers Compared*, ``models/layers/lipschitz/cpl.py``):

- one step ``v = A u / |A u|, u = A^T v / |A^T v|`` then ``sigma = <v, A u>``, with the
  gradient through W only (u, v are constants);
- training: ``power_iterations`` steps per forward (both originals: 1) on a persistent
  vector ``u``, updated in place;
- eval: ``eval_power_iterations`` steps (SU: 1000, LLC: 100), computed once and cached
  until the weights change or the layer is switched to training (`CachedInEval`), starting
  from a fresh random vector (``eval_start="random"``, SU) or from the training vector
  (``"training"``, LLC). Evaluating never changes ``u``, so it does not change training.

Power iteration approaches ||A|| from below, so a layer is (1 + O(delta))-Lipschitz where the
estimate is delta short; after the eval iterations delta is tiny for a generic weight (the
originals' certificates rest on the same estimate). `conv_spectral_norm_bound` gives a
certified upper bound (FFT) for checks.

Differences from the originals, on purpose: the start vectors come from a seed drawn at
construction (a seeded model evaluates identically, and evaluating draws nothing from the
global RNG, which would shift the data order); ``u`` is in the state_dict (SU keeps it outside
the module), so a checkpoint resumes exactly; the conv ``u`` follows a change of input size.

Hand-written because no maintained library provides CPL layers.

Example:
    >>> import torch
    >>> layer = CPLLinear(4).eval()
    >>> x, y = torch.randn(2, 4), torch.randn(2, 4)
    >>> bool((layer(x) - layer(y)).norm() <= (x - y).norm() * (1 + 1e-5))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tune_lip.nn.models.aol import CachedInEval

__all__ = ["CPLConv2d", "CPLLinear", "conv_spectral_norm_bound", "power_iteration"]

Init = Literal["kaiming_uniform", "xavier_normal"]
EvalStart = Literal["random", "training"]
_NORMALIZE_EPS = 1e-12  # SU power_iteration.normalize; LLC uses 1e-6 in training, 1e-12 in eval
_SIGMA_SQ_EPS = 1e-12   # SU cpl_rescaling: 2 / (sigma^2 + 1e-12); LLC adds 1e-6


def conv_spectral_norm_bound(weight: Tensor, size: tuple[int, int], padding: int) -> Tensor:
    """Certified upper bound on the l2 norm of ``conv2d(., weight, padding=padding)`` on (H, W).

    The zero-padded convolution is a sub-block of the circular convolution on the
    (H + 2*padding) x (W + 2*padding) torus, whose norm is the largest singular value of
    the kernel's DFT over all frequencies.
    """
    n1, n2 = size[0] + 2 * padding, size[1] + 2 * padding
    k_hat = torch.fft.rfft2(weight, s=(n1, n2))  # (C_out, C_in, n1, n2//2+1), complex
    # rfft2 keeps half the frequencies; the other half are complex conjugates (same norms).
    return torch.linalg.matrix_norm(k_hat.permute(2, 3, 0, 1), ord=2).amax()


def _normalize(x: Tensor) -> Tensor:
    return x / (torch.linalg.vector_norm(x) + _NORMALIZE_EPS)


def power_iteration(
    u: Tensor, forward: Callable[[Tensor], Tensor], adjoint: Callable[[Tensor], Tensor], steps: int
) -> tuple[Tensor, Tensor]:
    """``steps`` steps of power iteration for A^T A from ``u``; returns (u, v), both unit.

    Each step is ``v = A u / |A u|; u = A^T v / |A^T v|`` (SU ``PowerIteration.step``,
    LLC ``update_uv``), so ``<v, A u>`` estimates ||A|| from below. With 0 steps v = A u / |A u|.
    """
    v = None
    for _ in range(steps):
        v = _normalize(forward(u))
        u = _normalize(adjoint(v))
    if v is None:
        v = _normalize(forward(u))
    return u, v


def _init_(weight: Tensor, bias: Tensor, init: Init) -> None:
    """The originals' initialisations of a CPL weight (out, in, ...) and its bias."""
    if init == "kaiming_uniform":  # SU cpl.py: partial(kaiming_uniform_, a=sqrt(5)); zero bias
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        nn.init.zeros_(bias)
    elif init == "xavier_normal":  # LLC cpl.py: xavier_normal_; bias U(+-1/sqrt(fan_in))
        nn.init.xavier_normal_(weight)
        fan_in = weight.shape[1] * math.prod(weight.shape[2:])
        nn.init.uniform_(bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
    else:
        raise ValueError(f"init must be 'kaiming_uniform' or 'xavier_normal', got {init!r}")


class _PowerIterationCPL(CachedInEval):
    """What CPLLinear and CPLConv2d share: the options, sigma in training and eval."""

    weight: Tensor
    bias: Tensor
    u: Tensor

    def __init__(
        self,
        *,
        power_iterations: int,
        eval_power_iterations: int,
        eval_start: EvalStart,
        bias_after_transpose: bool,
    ) -> None:
        super().__init__()
        if power_iterations < 0 or eval_power_iterations < 0:
            raise ValueError(
                "power_iterations and eval_power_iterations must be >= 0, got "
                f"{power_iterations} and {eval_power_iterations}"
            )
        if eval_start not in ("random", "training"):
            raise ValueError(f"eval_start must be 'random' or 'training', got {eval_start!r}")
        self.power_iterations = power_iterations
        self.eval_power_iterations = eval_power_iterations
        self.eval_start = eval_start
        self.bias_after_transpose = bias_after_transpose
        self.u_seed = 0  # drawn by the subclass right after its weights: `_draw_seed`

    def _draw_seed(self) -> None:
        # Start vectors are drawn from this seed (taken from the global RNG now, with the
        # weights), so seeding the model seeds them, whatever draws random numbers later.
        self.u_seed = int(torch.randint(2**62, (1,), device="cpu"))

    def _start(self, shape: tuple[int, ...], offset: int) -> Tensor:
        """A unit random vector of ``shape`` (offset 0: training's u, 1: eval's start)."""
        g = torch.Generator().manual_seed(self.u_seed + offset)
        u0 = torch.randn(shape, generator=g, dtype=self.weight.dtype)
        return (u0 / u0.norm()).to(self.weight.device)

    def _operators(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        raise NotImplementedError

    def _training_u(self, shape: tuple[int, ...]) -> Tensor:
        """The persistent vector, (re)created for ``shape`` when it has another shape."""
        if self.u.shape != shape:
            self.u = self._start(shape, 0)
        return self.u

    def rescaling(self, shape: tuple[int, ...]) -> Tensor:
        """h = 2 / sigma^2 for a power-iteration vector of ``shape``; cached per shape in eval."""
        if not self.training:
            return self.cached(shape, lambda: self._eval_rescaling(shape))
        forward, adjoint = self._operators()
        with torch.no_grad(), self.full_precision():
            u = self._training_u(shape).clone()  # the graph keeps u; the buffer changes next time
            u, v = power_iteration(u, forward, adjoint, self.power_iterations)
            self.u.copy_(u)
        with self.full_precision():
            sigma = (v * forward(u)).sum()  # gradient flows through W only
            return 2 / (sigma.square() + _SIGMA_SQ_EPS)

    def _eval_rescaling(self, shape: tuple[int, ...]) -> Tensor:
        forward, adjoint = self._operators()
        if self.eval_start == "training" and self.u.shape == shape:
            start = self.u.clone()  # LLC: continue from the training vector, leave it unchanged
        else:
            start = self._start(shape, 0 if self.eval_start == "training" else 1)
        u, v = power_iteration(start, forward, adjoint, self.eval_power_iterations)
        sigma = (v * forward(u)).sum()
        return 2 / (sigma.square() + _SIGMA_SQ_EPS)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "u")
        if saved is not None and saved.shape != self.u.shape:  # lazily shaped buffer
            self.u = torch.empty(saved.shape, device=self.u.device, dtype=self.u.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _options_repr(self) -> str:
        return (
            f"power_iterations={self.power_iterations}, "
            f"eval_power_iterations={self.eval_power_iterations}, eval_start={self.eval_start}, "
            f"bias_after_transpose={self.bias_after_transpose}"
        )


class CPLLinear(_PowerIterationCPL):
    """1-Lipschitz residual layer ``y = x - 2/sigma^2 W^T ReLU(W x + b)``; (B, F) -> (B, F).

    Defaults are SU's ``CPLLinear``: kaiming-uniform(a=sqrt(5)) weight, trainable zero bias
    that is also added after W^T, 1 power-iteration step per training forward, 1000 from a
    fresh random vector at eval. ``u`` has shape (1, F).
    """

    def __init__(
        self,
        features: int,
        *,
        power_iterations: int = 1,  # per training forward
        eval_power_iterations: int = 1000,  # once per eval, cached
        eval_start: EvalStart = "random",
        init: Init = "kaiming_uniform",
        bias_after_transpose: bool = True,  # SU: linear(relu(.), W.t(), bias=self.bias)
    ) -> None:
        super().__init__(
            power_iterations=power_iterations,
            eval_power_iterations=eval_power_iterations,
            eval_start=eval_start,
            bias_after_transpose=bias_after_transpose,
        )
        self.features, self.init = features, init
        self.weight = nn.Parameter(torch.empty(features, features))  # (F, F)
        self.bias = nn.Parameter(torch.empty(features))
        _init_(self.weight, self.bias, init)
        self._draw_seed()
        self.register_buffer("u", self._start((1, features), 0))  # (1, F)

    def _operators(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        w = self.weight
        return (lambda u: F.linear(u, w)), (lambda v: F.linear(v, w.T))

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, F)
        h = self.rescaling((1, self.features))
        z = F.relu(F.linear(x, self.weight, self.bias))  # (B, F)
        back = self.bias if self.bias_after_transpose else None
        return x - h * F.linear(z, self.weight.T, back)

    def extra_repr(self) -> str:
        return f"features={self.features}, init={self.init}, {self._options_repr()}"


class CPLConv2d(_PowerIterationCPL):
    """1-Lipschitz convolutional CPL (zero padding k//2); (B, C, H, W) -> (B, C, H, W).

    Defaults are SU's ``CPLConv2d`` (see `CPLLinear`). The power-iteration vector ``u`` has
    shape (1, C, H, W): it is created at the first training forward from the input's size
    (from the seed drawn at construction) and re-created when that size changes. It is in the
    state_dict (empty until the first training forward), and ``load_state_dict`` adopts the
    checkpoint's shape, so a restore is exact.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        power_iterations: int = 1,  # per training forward
        eval_power_iterations: int = 1000,  # once per eval and input size, cached
        eval_start: EvalStart = "random",
        init: Init = "kaiming_uniform",
        bias_after_transpose: bool = True,  # SU: transpose_conv2d(., W, bias=self.bias)
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"CPLConv2d needs an odd kernel_size ('same' padding), got {kernel_size}")
        super().__init__(
            power_iterations=power_iterations,
            eval_power_iterations=eval_power_iterations,
            eval_start=eval_start,
            bias_after_transpose=bias_after_transpose,
        )
        self.channels, self.kernel_size, self.padding = channels, kernel_size, kernel_size // 2
        self.init = init
        weight = torch.empty(channels, channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(weight)  # (C, C, k, k)
        self.bias = nn.Parameter(torch.empty(channels))
        _init_(self.weight, self.bias, init)
        self._draw_seed()
        self.register_buffer("u", torch.empty(0))  # (1, C, H, W) after a training forward

    def _operators(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        w, p = self.weight, self.padding
        return (lambda u: F.conv2d(u, w, padding=p)), (lambda v: F.conv_transpose2d(v, w, padding=p))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        h = self.rescaling((1, self.channels, x.shape[-2], x.shape[-1]))
        z = F.relu(F.conv2d(x, self.weight, self.bias, padding=self.padding))  # (B, C, H, W)
        back = self.bias if self.bias_after_transpose else None
        return x - h * F.conv_transpose2d(z, self.weight, back, padding=self.padding)  # adjoint

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, init={self.init}, "
            f"{self._options_repr()}"
        )
