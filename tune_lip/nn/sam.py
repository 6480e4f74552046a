"""Sharpness-aware minimisation (SAM) and curvature (Hessian eigenvalue and trace), for every study.

From Foret et al., *Sharpness-Aware Minimization for Efficiently Improving Generalization*
(2021), its adaptive variant ASAM (Kwon et al., 2021), and their use by Andriushchenko et al.
to study SAM, weight decay and large step sizes.

- `sam_step`: one SAM update with any torch optimizer. Gradients g at w; a perturbation
  ε = ρ·g/‖g‖ (ASAM: ε = ρ·T²g/‖Tg‖ with T = |w| + η elementwise, η = `ASAM_ETA`); gradients
  at w + ε; w restored exactly; ``optimizer.step()`` with the gradients from w + ε. ρ is a
  Euclidean radius in parameter space (ASAM: in the coordinates rescaled by 1/T, so roughly a
  relative perturbation). It costs two forward/backward passes per step.
- `sam_gradients`: the same without the optimizer step, for loops that act on the gradients
  or the weights around the step (the sphere loop scales per-filter gradients and projects).
- `top_hessian_eigenvalue`: the loss's sharpness, λ_max of ∇²L, by power iteration with
  Hessian-vector products (double backward). Units: loss per parameter²; full-batch GD with
  step size lr is stable along the top direction only while λ_max < 2/lr.
- `hutchinson_trace`: tr ∇²L by Hutchinson's estimator (the mean of vᵀHv over Rademacher v),
  with its standard error. Units: loss per parameter², summed over the parameters.
- `buffers_restored`: a context in which forward passes leave ``model``'s buffers (BN running
  statistics, CPL's power-iteration vectors) as they were, so measuring never changes training.
- `SharpnessConfig`: the study-level ``sharpness: {every, iters, batch_size}`` key.

Hand-written on purpose: torch has no SAM and no Hessian eigensolver. The usual SAM code is an
optimizer class wrapping a base optimizer, which would not fit loops that act between the
gradient and the step (the sphere loop scales per-filter gradients, then projects); here SAM is
a function around any optimizer, with ‖g‖ kept on the device (no host sync). Power iteration and
Hutchinson's estimator are a few lines of ``torch.autograd`` each.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> x, y = torch.ones(4, 2), torch.zeros(4, 1)
    >>> loss = sam_step(model, lambda: ((model(x) - y) ** 2).mean(), opt, rho=0.05)
    >>> round(top_hessian_eigenvalue(model, lambda: ((model(x) - y) ** 2).mean(), iters=30), 4)
    6.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

__all__ = ["ASAM_ETA", "SharpnessConfig", "buffers_restored", "hutchinson_trace", "sam_gradients", "sam_step",
           "top_hessian_eigenvalue"]

# ASAM's offset in T = |w| + η: keeps weights at zero (zero-initialised biases) perturbable.
ASAM_ETA = 0.01
_TINY = 1e-12  # keeps ε finite when the gradient is exactly zero (ε is then zero too)


@dataclass(frozen=True)
class SharpnessConfig:
    """The study config's ``sharpness`` key: when and how to measure the top Hessian eigenvalue.

    Measured at every ``every``-th evaluation (the ``every``-th, 2·``every``-th, ... report;
    with ``reports`` a multiple of ``every`` the last report has one), on a fixed batch: the
    first ``batch_size`` training examples of the data order (epoch 0's permutation, which
    starts with step 0's batch), not augmented.

    Example:
        >>> SharpnessConfig.from_dict({"every": 5})
        SharpnessConfig(every=5, iters=20, batch_size=256)
    """

    every: int = 0          # evaluations (reports) between measurements; 0 = off
    iters: int = 20         # power-iteration steps = Hessian-vector products per measurement
    batch_size: int = 256   # examples in the fixed batch (capped at the training set's size)

    def __post_init__(self) -> None:
        for key in ("every", "iters", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ValueError(f"sharpness.{key} must be an integer, got {value!r}")
            object.__setattr__(self, key, int(value))
        if self.every < 0 or self.iters < 1 or self.batch_size < 1:
            raise ValueError(f"sharpness needs every >= 0, iters >= 1 and batch_size >= 1, got "
                             f"every={self.every}, iters={self.iters}, batch_size={self.batch_size}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> SharpnessConfig:
        """From the config's ``sharpness`` mapping (None: off); unknown keys raise ValueError."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise TypeError(f"sharpness must be a mapping such as {{every: 5}}, got {raw!r}")
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown sharpness option {min(unknown)!r}; valid: {', '.join(sorted(known))}")
        return cls(**raw)

    def due(self, evaluations: int) -> bool:
        """Whether the ``evaluations``-th evaluation (counting from 1) measures sharpness."""
        return self.every > 0 and evaluations % self.every == 0


def _global_norm(tensors: Sequence[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
    """‖(t₁, t₂, ...)‖₂ as one 0-d tensor of ``dtype`` on the device (no host sync)."""
    return torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in torch._foreach_norm(list(tensors))]))


def sam_gradients(params: Iterable[Tensor], compute_loss: Callable[[], Tensor], *, rho: float,
                  adaptive: bool = False, loss: Tensor | None = None) -> Tensor:
    """Leave SAM's gradient (the gradient at w + ε) in ``p.grad``; w is restored exactly.

    ``params``: the tensors to perturb (those without ``requires_grad`` are skipped); their
    ``.grad`` is overwritten, as ``zero_grad(set_to_none=True)`` + backward would. ``loss``:
    the loss at w if the caller already ran that forward pass, else ``compute_loss()`` runs
    twice. ``compute_loss`` must see the same batch (and augmentation) both times. ``rho = 0``
    is a plain backward. Returns the loss at w, detached. No host sync.

    Example:
        >>> w = torch.tensor([3.0, 4.0], requires_grad=True)
        >>> _ = sam_gradients([w], lambda: (w ** 2).sum() / 2, rho=0.5)
        >>> [round(g, 5) for g in w.grad.tolist()]   # the gradient w at w + 0.5·w/‖w‖ = 1.1·w
        [3.3, 4.4]
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    params = [p for p in params if p.requires_grad]
    if loss is None:
        loss = compute_loss()
    for p in params:
        p.grad = None
    loss.backward()
    live = [p for p in params if p.grad is not None]   # parameters the loss does not reach stay put
    if rho == 0 or not live:
        return loss.detach()
    with torch.no_grad():
        grads = [p.grad for p in live if p.grad is not None]
        if adaptive:
            scales = [p.abs() + ASAM_ETA for p in live]        # T, elementwise
            eps = torch._foreach_mul(grads, scales)            # T g
            norm = _global_norm(eps)                           # ‖T g‖
            torch._foreach_mul_(eps, scales)                   # T² g
        else:
            eps = tuple(g.clone() for g in grads)
            norm = _global_norm(eps)
        torch._foreach_mul_(eps, rho / (norm + _TINY))
        # A copy restores w bit for bit (w + ε − ε would not): the step starts from w itself.
        saved = [p.detach().clone() for p in live]
        torch._foreach_add_(live, eps)
        del eps
    for p in params:
        p.grad = None
    compute_loss().backward()
    with torch.no_grad():
        torch._foreach_copy_(live, saved)
    return loss.detach()


def sam_step(model: nn.Module, compute_loss: Callable[[], Tensor], optimizer: torch.optim.Optimizer, *,
             rho: float, adaptive: bool = False, loss: Tensor | None = None) -> Tensor:
    """One SAM update of ``model``'s trainable parameters with ``optimizer``; see `sam_gradients`.

    The optimizer steps from w with the gradient taken at w + ε, so momentum, weight decay and
    the learning rate act exactly as in a plain step. ``rho = 0`` is the plain step
    (zero_grad, backward, step). Returns the loss at w (the first pass), detached; no host sync.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x = torch.randn(8, 3)
        >>> loss = sam_step(model, lambda: model(x).pow(2).mean(), opt, rho=0.05, adaptive=True)
    """
    out = sam_gradients(model.parameters(), compute_loss, rho=rho, adaptive=adaptive, loss=loss)
    optimizer.step()
    return out


def _normalised(vs: Sequence[Tensor]) -> list[Tensor]:
    norm = _global_norm(vs, torch.float64).clamp_min(1e-30)
    return [v / norm.to(v.dtype) for v in vs]


@contextmanager
def buffers_restored(model: nn.Module) -> Iterator[None]:
    """Copy ``model``'s buffers on entry and put them back on exit, also after an exception.

    A buffer whose shape changed inside (CPL's lazily sized ``u``) is reassigned, not copied.

    Example:
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> with buffers_restored(bn):
        ...     _ = bn(torch.randn(8, 2))   # a train-mode pass updates the running statistics
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        _restore_buffers(model, saved)


def _restore_buffers(model: nn.Module, saved: dict[str, Tensor]) -> None:
    """Put ``model``'s buffers back; one whose shape changed (CPL's lazy ``u``) is reassigned."""
    with torch.no_grad():
        for name, buffer in list(model.named_buffers()):
            old = saved.get(name)
            if old is None:
                continue
            if buffer.shape == old.shape:
                buffer.copy_(old)
            else:
                owner, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(owner), leaf, old)


def top_hessian_eigenvalue(model: nn.Module, compute_loss: Callable[[], Tensor], *, iters: int = 20,
                           generator: torch.Generator | None = None,
                           params: Iterable[Tensor] | None = None) -> float:
    """λ_max, the largest eigenvalue of ∇²L(``params``), by power iteration: the sharpness.

    One forward pass and a backward with ``create_graph``, then ``iters`` Hessian-vector
    products; the estimate is the last Rayleigh quotient vᵀHv/vᵀv, whose error shrinks as
    (λ₂/λ₁)^(2·iters) for the two eigenvalues of largest magnitude. Power iteration finds the
    eigenvalue of largest *magnitude*; where that is negative (away from a minimum, e.g. early
    in training), ``iters`` more products find λ_max as the dominant eigenvalue of H − λ₁I,
    which converges more slowly when |λ₁| ≫ λ_max. ``params``: default all of ``model``'s
    trainable parameters. ``generator`` draws the start vector (None: torch's global RNG,
    which it then advances).

    The model runs in the mode it is given: in train mode BN normalises with the batch's own
    statistics (the Hessian of the loss that training minimises) and the study models recompute
    their Lipschitz rescaling (in eval it is cached as a constant, so the Hessian would miss it).
    Every buffer a forward pass touches (BN running statistics, CPL's power-iteration vectors)
    is restored afterwards, so measuring never changes training. One or two host syncs.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> model = torch.nn.Module(); model.w = w
        >>> loss = lambda: (torch.tensor([1.0, 5.0, 2.0]) * w ** 2).sum() / 2
        >>> round(top_hessian_eigenvalue(model, loss, iters=50), 4)
        5.0
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    # enable_grad: callers measure from inside their no_grad evaluation
    with buffers_restored(model), torch.enable_grad():
        return _power_iteration(compute_loss, params, iters=iters, generator=generator)


def _power_iteration(compute_loss: Callable[[], Tensor], params: list[Tensor], *, iters: int,
                     generator: torch.Generator | None) -> float:
    grads = torch.autograd.grad(compute_loss(), params, create_graph=True, allow_unused=True)
    # A gradient without a graph is constant in the parameters: that block of H is zero.
    pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
    if not pairs:
        return 0.0
    ps, gs = [p for p, _ in pairs], [g for _, g in pairs]

    def hvp(v: list[Tensor]) -> list[Tensor]:
        hv = torch.autograd.grad(gs, ps, grad_outputs=v, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(ps, hv)]

    # Drawn on the generator's device, then moved: a CPU generator cannot fill a CUDA tensor.
    device = generator.device if generator is not None else ps[0].device
    start = _normalised([torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype).to(p.device)
                         for p in ps])
    dominant = _dominant_eigenvalue(hvp, start, iters=iters, shift=0.0)
    if dominant >= 0:
        return dominant
    # Away from a minimum the largest |λ| can be negative. H − λ₁I has eigenvalues λᵢ − λ₁ ≥ 0
    # (up to λ₁'s error), so its dominant one is λ_max − λ₁.
    return dominant + _dominant_eigenvalue(hvp, start, iters=iters, shift=dominant)


def _dominant_eigenvalue(hvp: Callable[[list[Tensor]], list[Tensor]], v: list[Tensor], *, iters: int,
                         shift: float) -> float:
    """The eigenvalue of largest magnitude of H − shift·I, from ``iters`` products. One host sync."""
    eig = torch.zeros((), dtype=torch.float64, device=v[0].device)
    for _ in range(iters):
        hv = hvp(v)
        if shift:
            hv = [h - shift * x for h, x in zip(hv, v)]
        # vᵀHv / vᵀv: the division makes up for ‖v‖ = 1 holding only to the dtype's precision
        eig = (torch.stack([(a.double() * b.double()).sum() for a, b in zip(v, hv)]).sum()
               / torch.stack([a.double().pow(2).sum() for a in v]).sum().clamp_min(1e-300))
        v = _normalised(hv)
    return float(eig)                                              # host sync


def hutchinson_trace(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], *, samples: int,
                     generator: torch.Generator) -> tuple[float, float]:
    """Hutchinson's estimate of tr ∇²L over ``params``: the mean of vᵀHv over Rademacher v.

    Unbiased; one probe's variance is 2·Σ_{i≠j} H_ij², so the error shrinks as 1/sqrt(samples).
    Returns (estimate, its standard error from the probes' spread; NaN for one probe).
    ``samples`` Hessian-vector products (double backward) after one forward pass.

    Example:
        >>> w = torch.ones(3, requires_grad=True)
        >>> hutchinson_trace(lambda: (w ** 2).sum(), [w], samples=4, generator=torch.Generator())
        (6.0, 0.0)
    """
    grads = torch.autograd.grad(loss_fn(), list(params), create_graph=True)
    values = []
    for _ in range(samples):
        probes = [torch.randint(0, 2, p.shape, generator=generator, device=p.device, dtype=p.dtype) * 2 - 1
                  for p in params]
        hvps = torch.autograd.grad(grads, list(params), grad_outputs=probes, retain_graph=True)
        values.append(cast(Tensor, sum((v * hv).sum() for v, hv in zip(probes, hvps))))
    t = torch.stack(values).double()   # (samples,)
    stderr = float(t.std() / math.sqrt(samples)) if samples > 1 else math.nan
    return float(t.mean()), stderr
