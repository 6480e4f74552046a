"""Synthetic regime worlds with known ELR thresholds: the fast coverage test
(`test_regime_coverage.py`) and the larger study (`bench/regime_coverage.py`) draw from these.

A world is two thresholds in log10 ELR; a design places the trials; each trial's switch points
are the thresholds jittered by N(0, sd) decades (label noise).
"""

from __future__ import annotations

import numpy as np

LO, HI = -5.0, 0.0  # log10 ELR range searched
PAIRS = (("converged", "chaotic"), ("chaotic", "diverged"))


def world(rng: np.random.Generator) -> tuple[float, float]:
    t1 = rng.uniform(-4.0, -2.5)
    return t1, t1 + rng.uniform(0.8, 2.0)


def design(kind: str, truth: tuple[float, float], rng: np.random.Generator, n: int = 160
           ) -> np.ndarray:
    """log10 ELRs of ``n`` trials: ``uniform``, a log ``grid``, 4 ``replicates`` per grid ELR, or
    ``search`` (a coarse sweep, then trials near the thresholds, as the boundary searcher places them)."""
    if kind == "uniform":
        return rng.uniform(LO, HI, n)
    if kind == "grid":
        return np.linspace(LO, HI, n)
    if kind == "replicates":
        return np.repeat(np.linspace(LO, HI, n // 4), 4)
    near = [np.clip(t + rng.normal(0, 0.15) + rng.normal(0, 0.25, (n - 16) // 2), LO, HI)
            for t in truth]
    return np.concatenate([np.linspace(LO, HI, 16), *near])


def labels(x: np.ndarray, truth: tuple[float, float], sd: float, rng: np.random.Generator
           ) -> list[str]:
    s1 = truth[0] + sd * rng.standard_normal(x.size)
    s2 = truth[1] + sd * rng.standard_normal(x.size)
    return list(np.where(x >= s2, "diverged", np.where(x >= s1, "chaotic", "converged")))
