"""The NQM's gradient noise scale in closed form (McCandlish et al. 2018, *An Empirical Model of
Large-Batch Training*, arXiv 1812.06162), numpy only.

On the noisy quadratic model (`tune_lip.studies.nqm`) the loss is L(θ) = ½ Σ h_i θ_i², so the
true gradient at θ is G = Hθ, and one example's gradient has covariance Σ = noise·H whatever θ
is. McCandlish et al.'s statistics are then exact:

- ``grad_norm_sq`` |G|² = Σ h_i² θ_i², in expectation over the iterate Σ h_i² E θ_i²;
- ``grad_noise`` tr Σ = noise·Σ h_i (per example: the same units as the scaling study's N_t);
- ``noise_scale`` B_simple = tr Σ / |G|² (examples), and the Hessian-aware
  B_noise = tr(HΣ) / (Gᵀ H G) = noise·Σ h_i² / Σ h_i³ E θ_i² (`hessian_noise_scale`), the
  batch size at which their model's optimal step is half its noiseless value
  (ε_opt(B) = ε_max / (1 + B_noise/B)).

"At the iterate" means at its second moments E θ_i² (exact for (preconditioned) SGD, the mean
over chains for the simulated Adam): the ratio of the expected statistics, which is what
`tune_lip.analysis.noise_scale` estimates from reports (the ratio of means, not a mean of
ratios). B_simple grows as training shrinks |G|²: from noise·Σh / Σh² at θ₀ (E θ₀² = 1).

Example:
    >>> import numpy as np
    >>> h = 1.0 / np.arange(1, 5)
    >>> round(float(simple_noise_scale(h, np.ones(4), noise=1.0)), 4)   # at θ₀: Σh / Σh²
    1.4634
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gradient_statistics", "hessian_noise_scale", "simple_noise_scale"]


def gradient_statistics(h: np.ndarray, theta_sq: np.ndarray, noise: float) -> dict[str, float]:
    """``grad_norm_sq`` Σ h_i² E θ_i², ``grad_noise`` noise·Σ h_i and ``noise_scale`` (their
    ratio, B_simple, in examples; NaN where the gradient is 0) at second moments ``theta_sq``
    (dim,) of the iterate, curvatures ``h`` (dim,), per-example noise covariance ``noise``·H.

    Example:
        >>> import numpy as np
        >>> gradient_statistics(np.array([1.0, 0.5]), np.array([1.0, 4.0]), 2.0)
        {'grad_norm_sq': 2.0, 'grad_noise': 3.0, 'noise_scale': 1.5}
    """
    with np.errstate(over="ignore", invalid="ignore"):
        g_sq = float(np.sum(h * h * theta_sq))
    trace = float(noise * np.sum(h))
    return {"grad_norm_sq": g_sq, "grad_noise": trace,
            "noise_scale": trace / g_sq if g_sq > 0 and np.isfinite(g_sq) else float("nan")}


def simple_noise_scale(h: np.ndarray, theta_sq: Any, noise: float) -> Any:
    """B_simple = noise·Σ h_i / Σ h_i² E θ_i² (examples); ``theta_sq`` (..., dim) -> (...)."""
    g_sq = np.sum(h * h * np.asarray(theta_sq, float), axis=-1)
    return noise * float(np.sum(h)) / g_sq


def hessian_noise_scale(h: np.ndarray, theta_sq: Any, noise: float) -> Any:
    """B_noise = tr(HΣ)/(GᵀHG) = noise·Σ h_i² / Σ h_i³ E θ_i² (examples): McCandlish et al.'s
    noise scale with the curvature, where their quadratic model's optimal lr halves."""
    return noise * float(np.sum(h * h)) / np.sum(h**3 * np.asarray(theta_sq, float), axis=-1)
