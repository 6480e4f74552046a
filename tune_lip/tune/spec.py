"""YAML search spaces -> a typed, validated :class:`SearchSpec` (Ray-free: no ray, no torch).

A search space is one YAML file (see ``search_spaces/*.yaml``)::

    study: lipschitz
    metric: val_certified_acc
    mode: max
    budget: {epochs: 30}
    scheduler: {name: asha, grace_fraction: 0.1, reduction_factor: 3}
    searcher: {name: optuna, per: dataset.batch_size}
    num_samples: 12
    space:
      dataset: {name: cifar10, batch_size: {grid: [64, 256, 1024]}}
      optimizer: {name: sgd, lr: {loguniform: [0.01, 1.0]}}

Inside ``space`` a mapping with exactly one of the keys ``loguniform``, ``uniform``, ``choice``,
``grid``, ``randint`` is a *domain* (what the search varies); everything else is a fixed value.
The launcher turns domains into Ray Tune's own (``tune.loguniform`` etc.); this module only
checks them, so every mistake surfaces before Ray starts, as one line that names the file, the
key and the fix (:class:`~tune_lip.errors.UserError`).

Key convention in messages and in dotted paths (``searcher.per``, :meth:`SearchSpec.domains`):
keys inside ``space`` are written *without* the ``space.`` prefix (``optimizer.lr``), top-level
keys as themselves (``scheduler.grace_fraction``).

Defaults for optional keys: ``reports: 20``, ``checkpoint_every: 5``, ``max_failures: 3``,
``pending_timeout_seconds: 900``, ``num_samples: 1``, ``replicates: 1``,
``max_concurrent_trials: null`` (unlimited), ``resources: {cpu: 1}``, ``scheduler: none`` (no
silent early stopping unless asked for), ``searcher: random``.

This module holds `SearchSpec` and the top-level parse; the domains live in
`tune_lip.tune.domains`, the other sections' parsers in `tune_lip.tune.spec_sections`, the
strict YAML reader in `tune_lip.tune.spec_yaml`. Their names are re-exported here.

Example:
    >>> spec = parse_spec({
    ...     "study": "lipschitz", "metric": "val_certified_acc", "mode": "max",
    ...     "budget": {"epochs": 2},
    ...     "searcher": {"name": "optuna", "per": "dataset.batch_size"},
    ...     "space": {"dataset": {"name": "digits", "batch_size": {"grid": [16, 64]}},
    ...               "optimizer": {"lr": {"loguniform": [0.01, 1.0]}}},
    ... }, where="inline")
    >>> spec.domains()
    {'dataset.batch_size': Grid(values=(16, 64)), 'optimizer.lr': LogUniform(lo=0.01, hi=1.0)}
    >>> spec.grid_points()
    [{'dataset.batch_size': 16}, {'dataset.batch_size': 64}]
    >>> spec.representative_config()["optimizer"]
    {'lr': 0.01}
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tune_lip.errors import UserError
from tune_lip.studies.budget import Budget

# Every name that lived in this module before it was split is imported back (noqa: the ones not
# used here are re-exported): code and older experiments' pickles name them here.
from tune_lip.tune.domains import (  # noqa: F401
    _DOMAIN_ALIASES,
    _DOMAIN_EXAMPLES,
    _DOMAIN_TYPES,
    DOMAIN_KEYS,
    Choice,
    Domain,
    Grid,
    LogUniform,
    RandInt,
    Uniform,
    _contains_domain,
    _join,
    _parse_domain,
    _parse_space,
    _resolve,
    _to_raw,
    _walk_domains,
    get_in,
    set_in,
)
from tune_lip.tune.spec_sections import (  # noqa: F401
    _RESOURCE_ALIASES,
    RESOURCE_KINDS,
    SCHEDULERS,
    SEARCHERS,
    SchedulerSpec,
    SearcherSpec,
    _budget,
    _budget_grid,
    _check_reports_fit,
    _check_searcher_fits_space,
    _did_you_mean,
    _float,
    _int,
    _name,
    _pending_timeout,
    _resources,
    _scheduler,
    _searcher,
    with_branching,
)
from tune_lip.tune.spec_yaml import (  # noqa: F401
    _construct_mapping_no_duplicates,
    _leading_comment,
    _load_yaml,
    _Loader,
)

__all__ = [
    "LogUniform",
    "Uniform",
    "Choice",
    "Grid",
    "RandInt",
    "Domain",
    "DOMAIN_KEYS",
    "SchedulerSpec",
    "SearcherSpec",
    "SearchSpec",
    "load_spec",
    "parse_spec",
    "get_in",
    "set_in",
]


# ---------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space; build it with :func:`load_spec` or :func:`parse_spec`.

    path: the YAML file (or the ``where`` given to parse_spec).
    budget: work per trial; with ``budget_grid``, the largest of the budgets.
    budget_grid: the budgets (in ``budget.kind``, ascending) when the spec writes
        ``budget: {steps: {grid: [...]}}``: every grid point runs at each of them, so one search
        gives lr* at several budgets (`budgets`, `search_space`); () for one budget.
    reports: reports (and ASHA decision points) per trial.
    num_samples: trials per grid point (per value of ``searcher.per`` for optuna).
    max_concurrent_trials: None = as many as resources allow.
    resources: per trial: ``cpu``, ``gpu``, ``memory_gb``, ``min_gpu_memory_gb`` as floats
        (``gpu`` and ``min_gpu_memory_gb`` may be "auto": from the config's estimated memory,
        see `tune_lip.cluster.placement`), ``gpu_memory_gb`` as {accelerator type: GB per GPU},
    ``accelerator`` as a tuple of accelerator types (any of them will do).
    checkpoint_every: reports between checkpoints; 0 = only at the end.
    max_failures: times a failed trial (e.g. its node was lost) restarts from its last
        checkpoint, anywhere in the cluster; -1 = no limit.
    pending_timeout_seconds: how long trials may wait for resources with no trial running
        (an autoscaler that never delivers, a GPU type lost for good) before the search stops,
        keeping every finished result.
    keep_checkpoints: newest checkpoints kept per trial; None = all. Ray deletes older ones
    as new ones land; a driver killed between a deletion and Tune's next experiment snapshot
    can leave a trial pointing at a deleted checkpoint, so None is the safe default.
    replicates: seeds per sampled config: every config the searcher proposes runs with seeds
        ``space.seed``, ``space.seed + 1``, ... (``config/seed`` tells them apart), so
        seed-to-seed variance enters the analysis' intervals. 1 = one seed.
    space: the nested config with Domain objects where the search varies it.
    description: the ``description`` key, else the file's first line if it is a comment.
    """

    path: str
    study: str
    metric: str
    mode: str
    budget: Budget
    scheduler: SchedulerSpec
    searcher: SearcherSpec
    num_samples: int
    max_concurrent_trials: int | None
    resources: dict[str, Any]
    reports: int
    checkpoint_every: int
    space: dict[str, Any]
    description: str = ""
    keep_checkpoints: int | None = None
    max_failures: int = 3
    pending_timeout_seconds: float = 900.0
    replicates: int = 1
    budget_grid: tuple[float, ...] = ()

    @property
    def budget_key(self) -> str | None:
        """The config key the budget varies along (``budget.steps``, ...); None for one budget."""
        return f"budget.{self.budget.kind}" if self.budget_grid else None

    def budgets(self) -> list[Budget]:
        """Every budget a trial may get, smallest first: ``[budget]`` without a budget grid."""
        return [replace(self.budget, amount=a) for a in self.budget_grid] or [self.budget]

    def group_keys(self) -> tuple[str, ...]:
        """The keys trials are compared within: ``searcher.per``, plus the budget key where the
        budget varies (ASHA and the grouped searchers never compare two budgets)."""
        key = self.budget_key
        return self.searcher.per + ((key,) if key and key not in self.searcher.per else ())

    def search_space(self) -> dict[str, Any]:
        """``space`` plus, with a budget grid, ``budget: {<kind>: Grid(budget_grid)}``: what the
        searchers draw trial configs from (without one the budget is fixed beside the space)."""
        if not self.budget_grid:
            return self.space
        return {**self.space, "budget": {self.budget.kind: Grid(tuple(self.budget_grid))}}

    def seeds(self) -> list[int]:
        """The seeds every sampled config runs with (``replicates`` of them, from ``space.seed``);
        [] with one replicate, where ``space.seed`` may itself be searched (e.g. a grid)."""
        if self.replicates == 1:
            return []
        return [int(self.space.get("seed", 0)) + r for r in range(self.replicates)]

    def domains(self) -> dict[str, Domain]:
        """Dotted path (without ``space.``) -> domain, in file order.

        Example: ``{'dataset.batch_size': Grid(values=(16, 64)), 'optimizer.lr': LogUniform(...)}``
        """
        return dict(_walk_domains(self.space, ""))

    def grid_points(self) -> list[dict[str, Any]]:
        """Cartesian product of all Grid domains as ``{dotted: value}``; ``[{}]`` if none.

        Example: grids a: [1, 2], b: [x] -> ``[{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]``.
        """
        grids = {k: d for k, d in self.domains().items() if isinstance(d, Grid)}
        combos = itertools.product(*(d.values for d in grids.values()))
        return [dict(zip(grids, combo)) for combo in combos]

    def representative_config(self) -> dict[str, Any]:
        """The nested space with every domain replaced by a valid value (lo of ranges, first of
        choice/grid): a concrete config for smoke tests and calibration.

        Example: ``{'lr': {loguniform: [0.01, 1.0]}}`` -> ``{'lr': 0.01}``
        """
        return _resolve(self.space)

    def with_overrides(
        self,
        *,
        num_samples: int | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
        pending_timeout_seconds: float | None = None,
        replicates: int | None = None,
        where: str = "override",
    ) -> SearchSpec:
        """A copy with ``num_samples``, ``budget``, ``resources``, the pending timeout and/or
        ``replicates`` replaced (e.g. from command-line flags).

        ``budget`` may be a Budget or a mapping such as ``{"steps": 100}``; ``resources``
        replaces the whole ``resources`` mapping (``{"cpu": 1}`` runs a GPU space on the CPU).
        Bad values raise UserError naming ``where``.
        Example: ``spec.with_overrides(num_samples=2, budget={"steps": 50}, resources={"cpu": 1})``
        """
        changes: dict[str, Any] = {}
        if num_samples is not None:
            changes["num_samples"] = _int(num_samples, where=where, key="num_samples", minimum=1,
                                          fix="use e.g. 4")
        if budget is not None:
            new, grid = (budget, ()) if isinstance(budget, Budget) else _budget_grid(dict(budget), where=where)
            for one in [replace(new, amount=a) for a in grid] or [new]:
                _check_reports_fit(self.reports, one, where=where)
            changes["budget"], changes["budget_grid"] = new, grid
        if resources is not None:
            changes["resources"] = _resources(dict(resources), where=where)
        if pending_timeout_seconds is not None:
            changes["pending_timeout_seconds"] = _pending_timeout(pending_timeout_seconds, where=where)
        if replicates is not None:
            changes["replicates"] = _int(replicates, where=where, key="replicates", minimum=1, fix="use e.g. 2")
            if changes["replicates"] > 1 and self.searcher.name in ("boundary", "line", "lr_transfer"):
                raise UserError(where, "replicates", f"the {self.searcher.name} searcher places one trial per point",
                                fix="leave --replicates out")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain mapping in the YAML format: ``parse_spec(s.to_dict(), where=s.path)
        == s``. Saved next to results so a run records exactly what it searched."""
        resources = {k: (list(v) if k == "accelerator" else v) for k, v in self.resources.items()}
        searcher = asdict(self.searcher)
        searcher["per"] = list(self.searcher.per)
        # only the searchers that take them: parse_spec refuses them elsewhere
        name = self.searcher.name
        if name not in ("optuna", "line", "lr_transfer"):
            del searcher["per"]
        if name != "optuna":
            del searcher["n_startup_trials"]
        if name not in ("boundary", "line", "lr_transfer"):
            del searcher["key"]
        if name != "boundary":
            del searcher["initial"]
        if name not in ("line", "lr_transfer"):
            del searcher["tolerance"]
        if name != "line":
            del searcher["warm_start"]
        if name != "lr_transfer":
            del searcher["anchors"]
        return {
            "study": self.study,
            "metric": self.metric,
            "mode": self.mode,
            "budget": {self.budget.kind: {"grid": list(self.budget_grid)}} if self.budget_grid else self.budget.to_dict(),
            "reports": self.reports,
            "scheduler": asdict(self.scheduler),
            "searcher": searcher,
            "num_samples": self.num_samples,
            "replicates": self.replicates,
            "max_concurrent_trials": self.max_concurrent_trials,
            "resources": resources,
            "checkpoint_every": self.checkpoint_every,
            "keep_checkpoints": self.keep_checkpoints,
            "max_failures": self.max_failures,
            "pending_timeout_seconds": self.pending_timeout_seconds,
            "space": _to_raw(self.space),
            "description": self.description,
        }


# ---------------------------------------------------------------------------- loading

TOP_LEVEL_KEYS = (
    "study", "metric", "mode", "budget", "reports", "scheduler", "searcher", "num_samples", "replicates",
    "max_concurrent_trials", "resources", "checkpoint_every", "keep_checkpoints", "max_failures",
    "pending_timeout_seconds", "space", "description",
)
REQUIRED_KEYS = ("study", "metric", "mode", "budget", "space")
_REQUIRED_EXAMPLES = {
    "study": "study: lipschitz",
    "metric": "metric: val_certified_acc",
    "mode": "mode: max",
    "budget": "budget: {epochs: 30}",
    "space": "space: {optimizer: {lr: {loguniform: [0.01, 1.0]}}}",
}


def load_spec(
    path_or_name: str | Path, *, studies: Mapping[str, set[str] | None] | None = None
) -> SearchSpec:
    """Read and validate a search space from a YAML file or a shipped name.

    ``path_or_name``: a path to a YAML file, or a bare name (``demo`` or ``demo.yaml``) of a file
    shipped in ``tune_lip.search_spaces``; an existing file of that name wins over the shipped one.
    ``studies``: valid study names -> their allowed metric names (None = any metric); not given,
    any study name is accepted. Every input mistake raises UserError.

    Example:
        >>> load_spec("demo").study
        'lipschitz'
    """
    from tune_lip import search_spaces  # package data; imported here to keep import order simple

    raw_arg = str(path_or_name)
    p = Path(path_or_name)
    if p.is_file():
        file, where = p, raw_arg
    elif p.exists():
        raise UserError(raw_arg, None, "is not a file (a directory?)",
                        fix="pass a YAML search-space file, or a shipped name; "
                            "`tune-lip search --list` shows them")
    else:
        name = raw_arg[: -len(".yaml")] if raw_arg.endswith(".yaml") else raw_arg
        available = search_spaces.available()
        is_bare = "/" not in raw_arg and "\\" not in raw_arg
        if not (is_bare and name in available):
            hint = _did_you_mean(name, available) if is_bare else ""
            raise UserError(raw_arg, None, f"no such file or shipped search space{hint}",
                            fix=f"`tune-lip search --list` shows the shipped ones "
                                f"({', '.join(available) or 'none'})")
        file, where = search_spaces.path_of(name), f"search_spaces/{name}.yaml"
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(where, None, "is not a UTF-8 text file",
                        fix="pass a YAML search-space file") from None
    except OSError as exc:
        raise UserError(where, None, f"cannot be read ({exc.strerror or exc.__class__.__name__})",
                        fix="check the path and its permissions") from None
    raw = _load_yaml(text, where=where)
    return _parse(raw, where=where, path=str(file), studies=studies,
                  description=_leading_comment(text))


def parse_spec(
    raw: Any, *, where: str, studies: Mapping[str, set[str] | None] | None = None
) -> SearchSpec:
    """Validate an already-loaded mapping (same format as the YAML file); ``where`` names its
    source in error messages and becomes ``SearchSpec.path``.

    Example: ``parse_spec(yaml.safe_load(text), where="my.yaml")``
    """
    return _parse(raw, where=where, path=where, studies=studies, description="")


# ---------------------------------------------------------------------------- validation


def _parse(
    raw: Any, *, where: str, path: str, studies: Mapping[str, set[str] | None] | None,
    description: str,
) -> SearchSpec:
    if raw is None:
        raise UserError(where, None, "is empty",
                        fix="start from a shipped space (`tune-lip search --list`), "
                            "e.g. search_spaces/demo.yaml")
    if not isinstance(raw, dict):
        raise UserError(where, None,
                        f"top level must be a mapping of keys, got {type(raw).__name__}",
                        fix="write `study: ...`, `metric: ...`, `space: ...` as top-level keys")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            hint = _did_you_mean(str(key), TOP_LEVEL_KEYS)
            raise UserError(where, str(key), f"unknown top-level key{hint}",
                            fix=f"valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise UserError(where, key, "required key is missing",
                            fix=f"add e.g. `{_REQUIRED_EXAMPLES[key]}`")

    study = _name(raw["study"], where=where, key="study", fix="use e.g. study: lipschitz")
    if studies is not None and study not in studies:
        raise UserError(where, "study", f"unknown study {study!r}{_did_you_mean(study, studies)}",
                        fix=f"use one of: {', '.join(sorted(studies))}")
    metric = _name(raw["metric"], where=where, key="metric", fix="use e.g. metric: val_certified_acc")
    allowed = studies.get(study) if studies is not None else None
    # `val_certified_acc@0.0706` columns are allowed wherever their base metric is.
    validation_name = "val_" + metric.removeprefix("test_")   # certified_acc, test_acc -> val_*
    if allowed is not None and metric.split("@")[0] not in allowed and validation_name.split("@")[0] in allowed:
        raise UserError(where, "metric", f"{metric!r} is not a validation metric: searchers and schedulers see "
                        "only validation metrics (test_* are computed once, at a trial's end)",
                        fix=f"use metric: {validation_name}")
    if allowed is not None and metric.split("@")[0] not in allowed:
        raise UserError(where, "metric",
                        f"{metric!r} is not reported by study {study!r}"
                        f"{_did_you_mean(metric, allowed)}",
                        fix=f"use one of: {', '.join(sorted(allowed))}")
    mode = raw["mode"]
    if mode not in ("min", "max"):
        raise UserError(where, "mode", f"must be min or max, got {mode!r}",
                        fix="use mode: max for accuracies, mode: min for losses")

    budget, budget_grid = _budget_grid(raw["budget"], where=where)
    reports = _int(raw.get("reports", 20), where=where, key="reports", minimum=1,
                   fix="use e.g. reports: 20 (reports and ASHA decision points per trial)")
    _check_reports_fit(reports, replace(budget, amount=budget_grid[0]) if budget_grid else budget, where=where)
    checkpoint_every = _int(raw.get("checkpoint_every", 5), where=where, key="checkpoint_every",
                            minimum=0,
                            fix="use e.g. checkpoint_every: 5 (reports; 0 = only at the end)")
    keep_raw = raw.get("keep_checkpoints")
    keep_checkpoints = None if keep_raw is None else _int(
        keep_raw, where=where, key="keep_checkpoints", minimum=1,
        fix="use e.g. keep_checkpoints: 2, or leave it out to keep every checkpoint")
    max_failures = _int(raw.get("max_failures", 3), where=where, key="max_failures", minimum=-1,
                        fix="use e.g. max_failures: 3 (restarts of a failed trial from its last checkpoint; -1 = no limit)")
    pending_timeout = _pending_timeout(raw.get("pending_timeout_seconds", 900), where=where)
    num_samples = _int(raw.get("num_samples", 1), where=where, key="num_samples", minimum=1,
                       fix="use e.g. num_samples: 12 (trials per grid point)")
    mct_raw = raw.get("max_concurrent_trials")
    max_concurrent = None if mct_raw is None else _int(
        mct_raw, where=where, key="max_concurrent_trials", minimum=1,
        fix="use e.g. max_concurrent_trials: 16, or leave it out for no limit")
    resources = _resources(raw.get("resources", {"cpu": 1}), where=where)
    scheduler = _scheduler(raw.get("scheduler"), where=where)

    space_raw = raw["space"]
    if not isinstance(space_raw, dict):
        raise UserError(where, "space", f"must be a mapping, got {space_raw!r}",
                        fix=f"use e.g. `{_REQUIRED_EXAMPLES['space']}`")
    if "budget" in space_raw:
        raise UserError(where, "space.budget", "the budget is set by the top-level budget key",
                        fix="remove space.budget; to vary it write e.g. budget: {steps: {grid: [250, 1000, 4000]}}")
    space = _parse_space(space_raw, where=where, prefix="")
    with_branching(space, scheduler, budget, where=where)   # check now: before Ray starts or anything is written
    searcher = _searcher(raw.get("searcher"), where=where)
    domains = dict(_walk_domains(space, ""))
    checked = searcher
    if budget_grid:
        if searcher.name in ("boundary", "lr_transfer"):
            raise UserError(where, "budget", f"the {searcher.name} searcher runs one budget",
                            fix="give one budget, e.g. budget: {steps: 1000}, or use searcher optuna, line or random")
        key = f"budget.{budget.kind}"
        domains[key] = Grid(budget_grid)
        # the spec keeps per as written, without the budget (SearchSpec.group_keys adds it back)
        searcher = replace(searcher, per=tuple(p for p in searcher.per if p != key))
        if searcher.name in ("optuna", "line"):   # one search per budget too
            checked = replace(searcher, per=(*searcher.per, key))
    _check_searcher_fits_space(checked, domains, where=where)
    replicates = _int(raw.get("replicates", 1), where=where, key="replicates", minimum=1,
                      fix="use e.g. replicates: 2 (seeds per sampled config)")
    if replicates > 1:
        seed = space.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(where, "space.seed", f"must be one integer with replicates, got {_to_raw(seed)!r}",
                            fix=f"use e.g. seed: 0 (the {replicates} replicates run seeds 0..{replicates - 1})")
        if searcher.name == "boundary":
            raise UserError(where, "replicates", "the boundary searcher places one trial per ELR",
                            fix="leave replicates out, or use searcher: {name: random} or grid")
        if searcher.name in ("line", "lr_transfer"):
            raise UserError(where, "replicates", f"the {searcher.name} searcher places one trial per point of its line search",
                            fix="leave replicates out (or use searcher optuna, which averages replicates)")
    if searcher.name in ("line", "lr_transfer") and scheduler.name != "none":
        raise UserError(where, "scheduler", f"the {searcher.name} searcher needs every trial's whole budget "
                        "(an early-stopped trial would count as the worst)", fix="use scheduler: none")

    desc = raw.get("description", description)
    if not isinstance(desc, str):
        raise UserError(where, "description", f"must be text, got {desc!r}",
                        fix="write description: \"what this search answers\"")
    return SearchSpec(
        path=path, study=study, metric=metric, mode=mode, budget=budget, scheduler=scheduler,
        searcher=searcher, num_samples=num_samples, max_concurrent_trials=max_concurrent,
        resources=resources, reports=reports, checkpoint_every=checkpoint_every, space=space,
        description=desc, keep_checkpoints=keep_checkpoints, max_failures=max_failures,
        pending_timeout_seconds=pending_timeout, replicates=replicates, budget_grid=budget_grid,
    )
