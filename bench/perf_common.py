"""What every benchmark of bench/perf.py returns, shared with the modules that define some of them
(bench/perf_search.py: P6, P8; bench/perf_stream.py: P9)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    """One benchmark's ratios over its runs (higher or lower is better as ``goal`` says)."""

    name: str
    what: str
    goal: str  # e.g. ">= 10" or "<= 1.15"
    ratios: list[float]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool:
        op, bound = self.goal.split()
        return bool(self.median >= float(bound) if op == ">=" else self.median <= float(bound))


def seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
