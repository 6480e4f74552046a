"""Search algorithms: spec domains -> Ray Tune / Optuna, and a per-grid-point Optuna searcher.

Ray's OptunaSearch rejects ``tune.grid_search``, yet a scaling-law study needs the best LR
*at each* batch size. `GroupedOptunaSearch` keeps one Optuna study (TPE, seeded) per point
of the grid over the ``per`` keys and hands out suggestions round-robin, so every batch
size gets its own ``num_samples`` LR search. It uses Optuna's ask/tell API directly.

Early-stopped trials: when ASHA stops a trial, Tune calls ``on_trial_complete`` with a
partial result. Telling Optuna that value as COMPLETE would let a 10%-trained trial compete
with finished ones in TPE's model, so such trials are told as PRUNED (their intermediate
values were reported with ``report``; TPE ranks pruned trials behind complete ones by the
step they reached). A trial is complete when it made all its reports or diverged
(`tune_lip.analysis.ran_full_budget`; Ray's ``done`` flag is set for stopped trials too).

Replicates (``seeds=[0, 1]``): every config Optuna proposes runs once per seed (the config's
``seed`` key), one after another; Optuna is told the mean over the seeds that ran their whole
budget once all of them ended (PRUNED if none did, FAIL if all failed), so it models the
config, not one seed's luck.

Example:
    >>> from tune_lip.tune.spec import LogUniform, Grid
    >>> s = GroupedOptunaSearch({"lr": LogUniform(1e-3, 1.0), "b": Grid((16, 64))},
    ...     per=["b"], samples_per_group=2, metric="acc", mode="max", seed=0)
    >>> sorted(s.suggest("t1"))
    ['b', 'lr']
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from tune_lip.analysis.results import ran_full_budget
from tune_lip.tune.spec import Choice, Grid, LogUniform, RandInt, Uniform, get_in, set_in

__all__ = ["GroupedOptunaSearch", "GroupedLineSearch", "PickledStateSearcher", "to_tune_space", "flat_domains", "with_seeds"]

_DOMAINS = (LogUniform, Uniform, Choice, Grid, RandInt)


def flat_domains(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> domain for every domain in a nested space."""
    out: dict[str, Any] = {}
    for key, value in space.items():
        path = f"{prefix}{key}"
        if isinstance(value, _DOMAINS):
            out[path] = value
        elif isinstance(value, Mapping):
            out.update(flat_domains(value, prefix=f"{path}."))
    return out


def _to_tune(domain: Any) -> Any:
    if isinstance(domain, LogUniform):
        return tune.loguniform(domain.lo, domain.hi)
    if isinstance(domain, Uniform):
        return tune.uniform(domain.lo, domain.hi)
    if isinstance(domain, Choice):
        return tune.choice(list(domain.values))
    if isinstance(domain, Grid):
        return tune.grid_search(list(domain.values))
    if isinstance(domain, RandInt):
        return tune.randint(domain.lo, domain.hi)
    raise TypeError(f"not a domain: {domain!r}")


def to_tune_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """The nested space with every domain replaced by its Ray Tune equivalent."""
    return {k: (_to_tune(v) if isinstance(v, _DOMAINS) else to_tune_space(v) if isinstance(v, Mapping)
                else copy.deepcopy(v)) for k, v in space.items()}


def _to_optuna(domain: Any) -> BaseDistribution:
    if isinstance(domain, LogUniform):
        return FloatDistribution(domain.lo, domain.hi, log=True)
    if isinstance(domain, Uniform):
        return FloatDistribution(domain.lo, domain.hi)
    if isinstance(domain, Choice):
        return CategoricalDistribution(list(domain.values))
    if isinstance(domain, RandInt):
        return IntDistribution(domain.lo, domain.hi - 1)
    raise TypeError(f"{domain!r} cannot be searched by Optuna; list its key in searcher.per")


def random_search(seed: int, *, max_concurrent: int | None = None,
                  replicates: bool = False) -> BasicVariantGenerator:
    """Tune's own random/grid generator (grid domains are crossed, num_samples per point).

    It limits concurrency itself: Tune ignores ``TuneConfig.max_concurrent_trials`` for it.
    ``replicates``: the seeds are a grid, and each random draw is kept for every grid point
    (Tune's ``constant_grid_search``), so each draw runs with every seed. The draw is then the
    same at every other grid point too (e.g. every batch size tries the same LRs).
    """
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent or 0,
                                 constant_grid_search=replicates)


def with_seeds(param_space: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """``param_space`` (Tune's) whose ``seed`` is a grid over ``seeds`` (replicates), if more than one."""
    if len(seeds) <= 1:
        return param_space
    return {**param_space, "seed": tune.grid_search(list(seeds))}


class PickledStateSearcher(Searcher):
    """A Searcher whose ``get_state()``/``set_state()`` are saved and restored by pickle (for resume)."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


class GroupedOptunaSearch(PickledStateSearcher):
    """One seeded Optuna TPE study per grid point of the ``per`` keys; see the module docstring.

    space: nested dict whose leaves are spec domains or fixed values.
    per: dotted keys of Grid domains; their cartesian product defines the groups.
    samples_per_group: configs per group (the spec's ``num_samples``).
    seeds: the seeds each config runs with (replicates); None = the space's own seed, once.
    """

    def __init__(self, space: Mapping[str, Any], *, per: Sequence[str], samples_per_group: int,
                 metric: str | None = None, mode: str | None = None, seed: int = 0,
                 n_startup_trials: int = 5, seeds: Sequence[int] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self._space = copy.deepcopy(dict(space))
        domains = flat_domains(self._space)
        self._per = list(per)
        self._searched = {k: _to_optuna(d) for k, d in domains.items() if k not in self._per}
        grids = [list(get_in(self._space, k).values) for k in self._per]
        self._groups = [dict(zip(self._per, values)) for values in itertools.product(*grids)] or [{}]
        self._samples_per_group = samples_per_group
        self._seed = seed
        self._n_startup = n_startup_trials
        self._studies: list[optuna.Study] | None = None
        self._suggested = [0] * len(self._groups)
        self._live: dict[str, tuple[int, optuna.trial.Trial]] = {}
        self._seeds = list(seeds) if seeds else []
        self._queued: list[tuple[int, optuna.trial.Trial, dict[str, Any]]] = []   # replicates to hand out
        self._ended: dict[int, list[float | None | str]] = {}   # Optuna trial number -> outcomes so far

    @property
    def total_samples(self) -> int:
        return self._samples_per_group * len(self._groups) * max(len(self._seeds), 1)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def _ensure_studies(self) -> list[optuna.Study]:
        if self._studies is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            direction: Literal["maximize", "minimize"] = "maximize" if self._mode == "max" else "minimize"
            self._studies = [
                optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(
                    seed=self._seed + i, n_startup_trials=self._n_startup))
                for i in range(len(self._groups))
            ]
        return self._studies

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        queued = getattr(self, "_queued", [])   # (a searcher pickled before replicates has none)
        if queued:   # the next seed of the config asked last
            group, trial, config = queued.pop(0)
            self._live[trial_id] = (group, trial)
            return config
        studies = self._ensure_studies()
        open_groups = [i for i, n in enumerate(self._suggested) if n < self._samples_per_group]
        if not open_groups:
            return Searcher.FINISHED  # type: ignore[return-value]  # Ray's sentinel string ends the search
        group = min(open_groups, key=lambda i: (self._suggested[i], i))  # round-robin
        trial = studies[group].ask(self._searched)
        self._suggested[group] += 1
        self._live[trial_id] = (group, trial)
        config = copy.deepcopy(self._space)
        for key, value in {**trial.params, **self._groups[group]}.items():
            set_in(config, key, value)
        seeds = getattr(self, "_seeds", [])
        if len(seeds) > 1:
            for seed in seeds[1:]:
                queued.append((group, trial, {**copy.deepcopy(config), "seed": seed}))
            config["seed"] = seeds[0]
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._live and self._metric in result:
            _, trial = self._live[trial_id]
            trial.report(float(result[self._metric]), int(result.get("training_iteration", 0)))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._live:
            return
        group, trial = self._live.pop(trial_id)
        study = self._ensure_studies()[group]
        if error:
            outcome: float | None | str = "failed"
        elif result and ran_full_budget(result) and self._metric in result:
            outcome = float(result[self._metric])
        else:  # stopped early by the scheduler (or no metric): not a finished evaluation
            outcome = None
        seeds = getattr(self, "_seeds", [])
        ended = getattr(self, "_ended", {}).setdefault(trial.number, [])
        ended.append(outcome)
        if len(ended) < max(len(seeds), 1):
            return   # other seeds of this config still run
        del self._ended[trial.number]
        finished = [v for v in ended if isinstance(v, float)]
        if finished:   # the config's value: its mean over the seeds that ran the whole budget
            study.tell(trial, sum(finished) / len(finished))
        elif all(v == "failed" for v in ended):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, state=TrialState.PRUNED)

    def studies(self) -> list[tuple[dict[str, Any], optuna.Study]]:
        """(group values, Optuna study) pairs, for inspection in a notebook."""
        return list(zip(self._groups, self._ensure_studies()))

    def get_state(self) -> dict[str, Any]:
        return {"studies": self._ensure_studies(), "suggested": self._suggested, "live": self._live,
                "metric": self._metric, "mode": self._mode, "seeds": self._seeds, "queued": self._queued,
                "ended": self._ended}

    def set_state(self, state: dict[str, Any]) -> None:
        self._studies = state["studies"]
        self._suggested = state["suggested"]
        self._live = state["live"]
        self._metric, self._mode = state["metric"], state["mode"]
        self._seeds = state.get("seeds", [])   # absent in a searcher saved before replicates
        self._queued = state.get("queued", [])
        self._ended = state.get("ended", {})


# ---------------------------------------------------------------------------- line search per group

_GOLDEN = 0.381966  # 2 - golden ratio: the golden-section step, as a fraction of the wider side
_DONE = "done"


class _LineGroup:
    """A 1-D minimisation over x = log(value) in [lo, hi] for one group, by ask and tell.

    Brent's method made asynchronous: a parabola through the best point and its two neighbours
    proposes the next x; when it is unusable (a neighbour diverged, the vertex falls outside the
    bracket, or it does not halve the step before last) a golden-section step into the wider
    side is taken instead; a step shorter than tol/2 is lengthened to tol. The group is done when
    the best point's neighbours lie within ``tol`` on both sides (then the minimum of a unimodal
    function lies within ``tol`` of the best point), when the best point is an end of [lo, hi],
    or after ``max_points`` points. Values are minimised; inf is a failed or diverged trial.
    """

    def __init__(self, lo: float, hi: float, tol: float, initial: list[float], max_points: int) -> None:
        self.lo, self.hi, self.tol, self.max_points = lo, hi, tol, max_points
        self.initial = sorted({min(max(x, lo), hi) for x in initial})
        self.values: dict[float, float] = {}   # x -> value (one entry per finished trial)
        self.pending: set[float] = set()
        self.steps: list[float] = []            # |x_new - x_best| of every step after the initial points
        self.done = False

    def best(self) -> float | None:
        return min(self.values, key=lambda x: (self.values[x], x)) if self.values else None

    def ask(self) -> float | str | None:
        """The next x, None when waiting for a running trial, or ``_DONE``."""
        if self.done:
            return _DONE
        asked = len(self.values) + len(self.pending)
        if asked >= self.max_points:
            self.done = not self.pending
            return _DONE if self.done else None
        if asked < len(self.initial):      # the initial points run concurrently
            x = self.initial[asked]
            self.pending.add(x)
            return x
        if self.pending:
            return None
        step = self._next()
        if step is None:
            self.done = True
            return _DONE
        self.pending.add(step)
        return step

    def tell(self, x: float, value: float) -> None:
        self.pending.discard(x)
        self.values[x] = value

    def _next(self) -> float | None:
        xs = sorted(self.values)
        best = self.best()
        assert best is not None
        i = xs.index(best)
        tol, d0 = self.tol, (self.hi - self.lo) / 3
        if i == 0:                          # no bracket on the left: step out, growing by the golden ratio
            if best - self.lo < 1e-12:
                return None                 # the best is the range's lower end
            d = xs[1] - best if len(xs) > 1 else d0
            return max(self.lo, best - 1.618 * d)
        if i == len(xs) - 1:
            if self.hi - best < 1e-12:
                return None
            d = best - xs[-2]
            return min(self.hi, best + 1.618 * d)
        a, c = xs[i - 1], xs[i + 1]
        if best - a <= tol and c - best <= tol:
            return None                     # bracketed within tol on both sides
        fa, fb, fc = self.values[a], self.values[best], self.values[c]
        v: float | None = None
        if not math.isfinite(fc):           # a cliff (divergence) on the right: bisect towards it
            v = 0.5 * (best + c) if c - best > tol else None
        elif not math.isfinite(fa):
            v = 0.5 * (a + best) if best - a > tol else None
        else:
            den = (best - a) * (fb - fc) - (best - c) * (fb - fa)
            if den != 0:
                v = best - 0.5 * ((best - a) ** 2 * (fb - fc) - (best - c) ** 2 * (fb - fa)) / den
            if v is not None and len(self.steps) >= 2 and abs(v - best) >= 0.5 * self.steps[-2]:
                v = None                    # Brent's safeguard: the parabola is not converging
        if v is None or not a < v < c:
            v = best + _GOLDEN * (c - best) if c - best > best - a else best - _GOLDEN * (best - a)
        if abs(v - best) < tol / 2:         # too close to tell apart: test the wider side at tol
            v = best - tol if best - a > tol else best + tol
        v = min(max(v, a + 0.1 * tol), c - 0.1 * tol)
        self.steps.append(abs(v - best))
        return v


class GroupedLineSearch(GroupedOptunaSearch):
    """The optimum of one loguniform key (e.g. the LR) at each grid point of ``per``, by line search.

    For a scaling-law study's question -- lr* at each batch size -- a 1-D search needs far fewer
    trials than a grid or TPE: each group runs Brent's method (parabolic steps with golden-section
    safeguards, `_LineGroup`) on log ``key`` until the best trial's neighbours lie within a factor
    ``1 + tolerance`` on both sides, so lr* lies within ``tolerance`` of the best trial when the
    metric is unimodal in log ``key``. Hand-written: Optuna's and Tune's searchers have no
    bracketing 1-D minimiser.

    warm_start: groups run one after another in the order of ``per``'s grid (e.g. batch size
    1, 2, 4, ...); a group starts from three points ``1.3``x apart around the previous group's
    best, moved by the step between the two groups before it (a straight line in log-log: the
    scaling law so far). Otherwise every group starts from three points spread over the whole
    range, at a phase drawn from ``seed``, and all groups run at once.
    samples_per_group: at most this many trials per group (the spec's ``num_samples``); a group
    that reaches it ends with the best trial it has.
    Trials that fail, diverge (``diverged=True``) or stop before their whole budget
    (`tune_lip.analysis.ran_full_budget`) count as worse than every finished one: run it with
    ``scheduler: none``. Replicates are not supported (``seeds`` must be None).

    Example:
        >>> from tune_lip.tune.spec import LogUniform, Grid
        >>> s = GroupedLineSearch({"lr": LogUniform(1e-3, 1.0), "b": Grid((16, 64))}, per=["b"],
        ...     key="lr", samples_per_group=20, metric="loss", mode="min")
        >>> [round(s.suggest(f"t{i}")["lr"], 4) for i in range(3)]   # the first group's start
        [0.0043, 0.0433, 0.4335]
    """

    def __init__(self, space: Mapping[str, Any], *, per: Sequence[str], key: str, samples_per_group: int,
                 tolerance: float = 0.1, warm_start: bool = True, metric: str | None = None,
                 mode: str | None = None, seed: int = 0) -> None:
        domains = flat_domains(space)
        if not isinstance(domains.get(key), LogUniform):
            raise ValueError(f"GroupedLineSearch: {key!r} must be a LogUniform domain of the space")
        others = [k for k in domains if k != key and k not in per]
        if others:
            raise ValueError(f"GroupedLineSearch: {others[0]!r} is neither the searched key nor in per")
        if not 0 < tolerance < 1:
            raise ValueError(f"GroupedLineSearch: tolerance must be in (0, 1), got {tolerance}")
        if samples_per_group < 1:
            raise ValueError(f"GroupedLineSearch: samples_per_group must be >= 1, got {samples_per_group}")
        super().__init__(space, per=per, samples_per_group=samples_per_group, metric=metric, mode=mode, seed=seed)
        domain = domains[key]
        self._key = key
        self._lo, self._hi = math.log(domain.lo), math.log(domain.hi)
        self._tol = math.log1p(tolerance)
        self._warm = warm_start
        self._lines: list[_LineGroup | None] = [None] * len(self._groups)   # started lazily
        self._trial_x: dict[str, tuple[int, float]] = {}                     # running trial -> (group, x)
        self._first_open = 0                                                 # groups before it are done
        self._phase = np.random.default_rng(seed).random()

    def _start(self, g: int) -> _LineGroup:
        line = self._lines[g]
        if line is not None:
            return line
        span = self._hi - self._lo
        initial = [self._lo + (k + self._phase) * span / 3 for k in range(3)]
        if self._warm:
            prev = [self._lines[j].best() for j in (g - 1, g - 2)   # type: ignore[union-attr]
                    if j >= 0 and self._same_line(j, g)]
            if prev and prev[0] is not None:
                guess = prev[0] + (prev[0] - prev[1] if len(prev) > 1 and prev[1] is not None else 0.0)
                w = math.log(1.3)
                initial = [guess - w, guess, guess + w]
        line = self._lines[g] = _LineGroup(self._lo, self._hi, self._tol, initial, self._samples_per_group)
        return line

    def _same_line(self, j: int, g: int) -> bool:
        """Groups j and g differ in the last per key only (a chain along, e.g., the batch size)."""
        return all(self._groups[j][k] == self._groups[g][k] for k in self._per[:-1])

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        while self._first_open < len(self._groups) and self._start(self._first_open).done:
            self._first_open += 1
        if self._first_open == len(self._groups):
            return Searcher.FINISHED  # type: ignore[return-value]
        # warm start: only the first open group runs; otherwise every group may
        last = self._first_open + 1 if self._warm else len(self._groups)
        for g in range(self._first_open, last):
            x = self._start(g).ask()
            if isinstance(x, float):
                self._trial_x[trial_id] = (g, x)
                config = copy.deepcopy(self._space)
                for key, value in {self._key: math.exp(x), **self._groups[g]}.items():
                    set_in(config, key, value)
                return config
            if x == _DONE and g == self._first_open:
                return self.suggest(trial_id)     # that group just finished: move on
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._trial_x:
            return
        g, x = self._trial_x.pop(trial_id)
        value = math.inf
        if (not error and result and self._metric in result and ran_full_budget(result)
                and not result.get("diverged", False)):
            metric = float(result[self._metric])
            value = (-metric if self._mode == "max" else metric) if math.isfinite(metric) else math.inf
        line = self._lines[g]
        assert line is not None
        line.tell(x, value)

    def best_configs(self) -> list[tuple[dict[str, Any], float | None]]:
        """(group values, best value of ``key`` found so far or None) per group."""
        out = []
        for group, line in zip(self._groups, self._lines):
            x = line.best() if line is not None else None
            out.append((group, None if x is None else math.exp(x)))
        return out

    def studies(self) -> list[tuple[dict[str, Any], optuna.Study]]:
        raise TypeError("GroupedLineSearch keeps no Optuna studies; see best_configs()")

    def get_state(self) -> dict[str, Any]:
        return {"lines": self._lines, "trial_x": self._trial_x, "first_open": self._first_open,
                "metric": self._metric, "mode": self._mode}

    def set_state(self, state: dict[str, Any]) -> None:
        self._lines = state["lines"]
        self._trial_x = state["trial_x"]
        self._first_open = state["first_open"]
        self._metric, self._mode = state["metric"], state["mode"]
