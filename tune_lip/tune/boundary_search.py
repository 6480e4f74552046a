"""A Ray Tune searcher that places ELRs where the regime thresholds are least certain.

`BoundarySearch` looks for the effective learning rates (ELR) at which training changes regime
(converged < chaotic < diverged; see `tune_lip.analysis.regimes`). It starts with a log-spaced
sweep of ``initial`` ELRs over [lo, hi]. Afterwards, on the trials finished so far,
`tune_lip.analysis.fit_regime_thresholds` finds the boundaries between the regimes seen, each
with a grid posterior over its threshold and width (`tune_lip.analysis.ThresholdPosterior`:
a logistic boundary of unknown width, so it stays honest when trials near a noisy boundary
happen not to overlap). Each suggestion goes to the boundary whose 95% credible interval is
widest in decades, at the ELR whose outcome is expected to shrink that posterior's entropy most
(the Psi method of psychophysics, Kontsevich & Tyler 1999). On a sharp boundary that is close
to bisecting the gap between the regimes, with an occasional check just outside it; on a noisy
one it spreads trials over the transition band. Trials still running count as landing on their
likelier side, so concurrent suggestions do not repeat one point.

Why not bisect the gap alone: on a noisy boundary every trial placed inside the gap keeps the
regimes separated whatever it lands in, so bisection shrinks the gap around a random point and
the interval misses the threshold (bench/boundary_search.py measured it).

Before two regimes have been seen it fills the widest gap in log ELR between the ELRs suggested
so far. It learns a finished trial's regime from the result given to ``on_trial_complete``: its
``regime``, else ``diverged`` when ``diverged`` is true, else
`tune_lip.analysis.classify_regime` on the ``train_loss`` values it saw in ``on_trial_result``.
Trials that error or are too short to classify are left out (see ``notes``). It suggests
``max_trials`` configurations, then `Searcher.FINISHED`.

Hand-written: no library searcher targets a classification boundary (Tune's and Optuna's
optimise a metric).

Example:
    >>> s = BoundarySearch({"optimizer": {"name": "sgd"}}, lo=1e-5, hi=1.0, initial=6,
    ...                    max_trials=10)
    >>> s.suggest("t0")["optimizer"]
    {'name': 'sgd', 'elr': 1e-05}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.special
from ray.tune.search import Searcher

from tune_lip.analysis.regimes import (
    REGIMES,
    RegimeBoundaries,
    ThresholdPosterior,
    classify_regime,
    fit_regime_thresholds,
)
from tune_lip.tune.searchers import PickledStateSearcher
from tune_lip.tune.spec import set_in

__all__ = ["BoundarySearch"]


class BoundarySearch(PickledStateSearcher):
    """Suggests ELRs that tighten the regime thresholds; see the module docstring.

    space: nested dict of fixed values; each suggestion is a deep copy with ``key`` set.
    key: dotted path of the ELR in the config (``optimizer.elr``).
    lo, hi: the ELR range searched (> 0); every suggestion lies in it.
    initial: ELRs of the first log-spaced sweep over [lo, hi] (both ends included), >= 2.
    max_trials: suggestions in all; then ``Searcher.FINISHED``.
    num_classes: C of the chance level ln C, to classify trials that report no ``regime``.
    seed: seeds the bootstrap of every fit (placement itself is deterministic given the data).
    n_boot: bootstrap draws per fit (one fit per suggestion after the sweep).
    metric, mode: passed to Tune's `Searcher` (the search itself needs neither).
    """

    def __init__(self, space: Mapping[str, Any], *, key: str = "optimizer.elr", lo: float,
                 hi: float, initial: int = 6, max_trials: int, num_classes: int = 10,
                 seed: int = 0, n_boot: int = 200, metric: str | None = None,
                 mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise ValueError(f"BoundarySearch: need 0 < lo < hi for the ELR range, got lo={lo}, "
                             f"hi={hi}")
        if initial < 2:
            raise ValueError(f"BoundarySearch: initial must be >= 2 (the sweep spans [lo, hi]), "
                             f"got {initial}")
        if max_trials < 1:
            raise ValueError(f"BoundarySearch: max_trials must be >= 1, got {max_trials}")
        self._space = copy.deepcopy(dict(space))
        self._key = key
        self._lo, self._hi = float(lo), float(hi)
        self._sweep = [float(v) for v in np.geomspace(lo, hi, initial)]
        self._max_trials = max_trials
        self._num_classes = num_classes
        self._seed = seed
        self._n_boot = n_boot
        self._suggested: list[float] = []  # every ELR handed out, in order
        self._pending: dict[str, float] = {}  # trial_id -> ELR, not finished yet
        self._losses: dict[str, dict[int, float]] = {}  # trial_id -> {iteration: train_loss}
        self._observed: list[tuple[str, float, str]] = []  # (trial_id, ELR, regime)
        self.notes: list[str] = []
        self._fit: RegimeBoundaries | None = None
        self._fit_size = -1  # observations behind the cached fit

    # -- Tune's Searcher interface ---------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if len(self._suggested) >= self._max_trials:
            return Searcher.FINISHED  # type: ignore[return-value]
        n = len(self._suggested)
        elr = self._sweep[n] if n < len(self._sweep) else self._next_elr()
        self._suggested.append(elr)
        self._pending[trial_id] = elr
        config = copy.deepcopy(self._space)
        set_in(config, self._key, elr)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._pending or result.get("train_loss") is None:
            return
        history = self._losses.setdefault(trial_id, {})
        # Keyed by iteration: Tune passes the last result to on_trial_complete as well.
        step = int(result.get("training_iteration", len(history)))
        history[step] = float(result["train_loss"])

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._pending:
            return
        elr = self._pending.pop(trial_id)
        history = self._losses.pop(trial_id, {})
        if error or result is None:
            self.notes.append(f"trial {trial_id} (ELR {elr:.3g}) errored: left out")
            return
        regime = result.get("regime")
        if regime not in REGIMES:
            if bool(result.get("diverged", False)):
                regime = "diverged"
            else:
                step = result.get("training_iteration")
                # The last result usually came through on_trial_result already.
                if result.get("train_loss") is not None and (
                        step not in history if step is not None else not history):
                    history[int(step) if step is not None else 0] = float(result["train_loss"])
                losses = [history[k] for k in sorted(history)]
                try:
                    regime = classify_regime(losses, num_classes=self._num_classes)
                except ValueError as err:
                    self.notes.append(f"trial {trial_id} (ELR {elr:.3g}) left out: {err}")
                    return
        self._observed.append((trial_id, elr, str(regime)))

    # -- what it knows ---------------------------------------------------------------------------

    @property
    def observations(self) -> pd.DataFrame:
        """Finished trials it learnt from: ``trial_id``, ``elr``, ``regime``."""
        return pd.DataFrame(self._observed, columns=["trial_id", "elr", "regime"])

    def boundaries(self) -> RegimeBoundaries | None:
        """The current threshold fit on the finished trials (None before any finished)."""
        if not self._observed:
            return None
        if self._fit_size != len(self._observed):
            _, elrs, regimes = zip(*self._observed)
            # The fit's seed follows the data, so a restored searcher refits identically.
            self._fit = fit_regime_thresholds(list(elrs), list(regimes), n_boot=self._n_boot,
                                              seed=self._seed + len(self._observed),
                                              elr_range=(self._lo, self._hi))
            self._fit_size = len(self._observed)
        return self._fit

    # -- where next ------------------------------------------------------------------------------

    def _next_elr(self) -> float:
        fit = self.boundaries()
        best: tuple[float, ThresholdPosterior] | None = None  # (credible width, posterior)
        if fit is not None:
            for post in fit.posteriors.values():
                # Running trials count as landing on their likelier side (the "believer"
                # heuristic), so concurrent suggestions spread instead of repeating.
                for elr in self._pending.values():
                    post = post.observe(elr, bool(post.predictive(elr)[0] > 0.5))
                lo, hi = post.interval()
                width = math.log10(hi / lo)
                if best is None or width > best[0]:
                    best = (width, post)
        if best is not None:
            return _most_informative(best[1])
        # Nothing to bracket yet: fill the widest gap between the ELRs tried or running.
        cuts = sorted({math.log(self._lo), math.log(self._hi),
                       *(math.log(e) for e in self._suggested)})
        j = int(np.diff(cuts).argmax())
        return float(math.exp((cuts[j] + cuts[j + 1]) / 2))

    # -- resume ----------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {"suggested": self._suggested, "pending": self._pending, "losses": self._losses,
                "observed": self._observed, "notes": self.notes,
                "metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self._suggested = list(state["suggested"])
        self._pending = dict(state["pending"])
        self._losses = dict(state["losses"])
        self._observed = list(state["observed"])
        self.notes = list(state["notes"])
        self._metric, self._mode = state["metric"], state["mode"]
        self._fit, self._fit_size = None, -1


def _most_informative(post: ThresholdPosterior, *, candidates: int = 41) -> float:
    """The ELR whose outcome tells most about the boundary: max mutual information.

    The Psi method of Kontsevich and Tyler (1999) for psychometric thresholds picks the trial
    that minimises the expected entropy of the posterior over (threshold, width); that equals
    maximising I(outcome; threshold, width) = H(P(upper)) - E_posterior[H(P(upper | x0, s))],
    which needs no posterior update per candidate. Scoring the width too, not the threshold
    alone, places some trials that pin down how sharp the boundary is, without which a noisy
    threshold's interval stays wide. Candidates sit at quantiles of the threshold's posterior.
    """
    elr = post.quantile(np.linspace(0.01, 0.99, candidates))
    u = (np.log(elr)[:, None, None] - post.centres[None, :, None]) / post.scales[None, None, :]
    p = scipy.special.expit(u)  # (C, J, S) P(upper) under each hypothesis
    h = np.logaddexp(0.0, -u) + (1 - p) * u  # binary entropy of p, in nats, stable for any u
    joint = np.exp(post.log_post)  # (J, S)
    pred = np.tensordot(p, joint, axes=2).clip(1e-12, 1 - 1e-12)  # (C,)
    h_pred = -(pred * np.log(pred) + (1 - pred) * np.log(1 - pred))
    gain = h_pred - np.tensordot(h, joint, axes=2)
    return float(elr[int(gain.argmax())])
