"""Regime labels do not depend on the budget's scale: time stretched, loss in units of chance.

`classify_regime` reads a trajectory as a function of the run's fraction of time and measures
loss levels in units of the chance level ln C; these tests hold it to that on fabricated
trajectories of every regime (fixed seeds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tune_lip.analysis import REGIMES, classify_regime

LN10 = math.log(10)


def trajectory(regime: str, *, n: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy train-loss curve of one regime over n reports (10% multiplicative noise)."""
    t = np.linspace(0, 1, n)
    noise = np.exp(rng.normal(0, 0.1, n))
    if regime == "converged":
        return LN10 * np.exp(-t * 5) * noise  # falls ~7x over the run, still falling at its end
    if regime == "chaotic":  # falls from chance, then hovers at 0.5
        return (0.5 + (LN10 - 0.5) * np.exp(-t * 12)) * noise
    return LN10 * np.exp(rng.normal(0, 0.02, n))  # diverged: stuck at chance


def repeated(loss: np.ndarray, k: int) -> np.ndarray:
    """The same run reported k times as often, each report's loss held over its interval."""
    return np.repeat(loss, k)


def interpolated(loss: np.ndarray, k: int) -> np.ndarray:
    """The same run reported k times as often, the loss interpolated between reports."""
    n = loss.size
    return np.interp(np.linspace(0, n - 1, k * n), np.arange(n), loss)


def cases() -> list[tuple[str, np.ndarray]]:
    """(expected regime, trajectory): 10 noisy draws of each regime at 32 and 40 reports, and
    noiseless edge cases (a slow power law, a curve that reaches the floor)."""
    out = []
    for regime in REGIMES:
        for seed in range(10):
            for n in (32, 40):
                out.append((regime, trajectory(regime, n=n, rng=np.random.default_rng(seed))))
    t = np.arange(1, 101)
    out.append(("converged", 3.0 / t ** 0.8 + 0.01))  # falls only ~20% over the last quarter
    out.append(("converged", np.geomspace(2.3, 1e-4, 40)))
    out.append(("chaotic", 0.5 + 0.02 * np.cos(3 * np.arange(40))))
    return out


@pytest.mark.parametrize("stretch", [repeated, interpolated])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_the_same_trajectory_stretched_in_time_gets_the_same_label(stretch, k):
    for i, (regime, loss) in enumerate(cases()):
        label = classify_regime(loss, num_classes=10)
        assert label == regime, i  # the fabricated regime is recognised ...
        # ... and a run of k times as many reports (a longer budget at the same reporting
        # rate per unit of progress, or the same budget reported more often) gets it too
        assert classify_regime(stretch(loss, k), num_classes=10) == label, (i, k)


def test_repeating_reports_changes_nothing_at_all():
    """Held over its interval, a repeated report is the same step function of time: the label
    and every rule's input are identical, even for a noisy trajectory near a rule's edge."""
    labels = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        # falls by 0-63% over the last quarter: half of them either side of "still falling"
        level = 0.5 * np.exp(-np.linspace(0, 1, 36) * rng.uniform(0, 4.0))
        loss = level * np.exp(rng.normal(0, 0.1, 36))
        labels.append(classify_regime(loss, num_classes=10))
        assert all(classify_regime(repeated(loss, k), num_classes=10) == labels[-1]
                   for k in (2, 3, 4, 7)), seed
    assert {"converged", "chaotic"} <= set(labels)  # the edge was exercised from both sides


@pytest.mark.parametrize("classes", [2, 100, 1000])
def test_a_trajectory_in_units_of_chance_gets_the_same_label_for_any_number_of_classes(classes):
    """The same run as a fraction of chance: multiplied by ln C / ln 10, labelled with C
    classes. Levels are fractions of ln C (diverged >= 0.9 ln C, floor <= 0.005 ln C) and
    the trend is a fraction of the loss, so nothing changes."""
    scale = math.log(classes) / LN10
    for i, (regime, loss) in enumerate(cases()):
        assert classify_regime(loss * scale, num_classes=classes) == regime, i
    # the edges themselves, just inside and outside, in units of chance
    chance = math.log(classes)
    assert classify_regime(np.full(40, 0.91 * chance), num_classes=classes) == "diverged"
    assert classify_regime(np.full(40, 0.89 * chance), num_classes=classes) == "chaotic"
    assert classify_regime(np.full(40, 0.0049 * chance), num_classes=classes) == "converged"
    assert classify_regime(np.full(40, 0.0051 * chance), num_classes=classes) == "chaotic"


def test_short_runs_read_their_last_min_tail_reports():
    # 12 reports: the tail is the last 8 (two thirds of the run), one report per bin
    t = np.arange(12)
    assert classify_regime(2.3 * 0.7 ** t, num_classes=10) == "converged"
    assert classify_regime(np.full(12, 0.4), num_classes=10) == "chaotic"
