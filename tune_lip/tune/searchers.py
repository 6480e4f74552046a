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
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Literal

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

__all__ = ["GroupedOptunaSearch", "PickledStateSearcher", "to_tune_space", "flat_domains", "with_seeds"]

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
