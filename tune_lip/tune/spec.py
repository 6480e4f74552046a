"""YAML search spaces -> a typed, validated :class:`SearchSpec` (Ray-free: no ray, no torch).

A search space is one YAML file (see ``search_spaces/*.yaml``)::

    study: lipschitz
    metric: certified_acc
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
``pending_timeout_seconds: 900``, ``num_samples: 1``,
``max_concurrent_trials: null`` (unlimited), ``resources: {cpu: 1}``, ``scheduler: none`` (no
silent early stopping unless asked for), ``searcher: random``.

Example:
    >>> spec = parse_spec({
    ...     "study": "lipschitz", "metric": "certified_acc", "mode": "max",
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

import copy
import difflib
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Union

import yaml

from tune_lip.errors import UserError
from tune_lip.studies.budget import Budget, parse_budget

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


# ---------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on [lo, hi] with 0 < lo < hi, as ``ray.tune.loguniform``."""

    lo: float
    hi: float
    kind = "loguniform"  # not a field: the YAML key of this domain

    def representative(self) -> float:
        return self.lo

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: [self.lo, self.hi]}


@dataclass(frozen=True)
class Uniform:
    """Uniform on [lo, hi] with lo < hi, as ``ray.tune.uniform``."""

    lo: float
    hi: float
    kind = "uniform"

    def representative(self) -> float:
        return self.lo

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: [self.lo, self.hi]}


@dataclass(frozen=True)
class Choice:
    """One of ``values``, sampled (``ray.tune.choice``); a searcher may prefer some."""

    values: tuple[Any, ...]
    kind = "choice"

    def representative(self) -> Any:
        return copy.deepcopy(self.values[0])

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Grid:
    """Every one of ``values`` is tried (``ray.tune.grid_search``, or one search per value)."""

    values: tuple[Any, ...]
    kind = "grid"

    def representative(self) -> Any:
        return copy.deepcopy(self.values[0])

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class RandInt:
    """An integer in [lo, hi) — upper bound exclusive, as ``ray.tune.randint``."""

    lo: int
    hi: int
    kind = "randint"

    def representative(self) -> int:
        return self.lo

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: [self.lo, self.hi]}


Domain = Union[LogUniform, Uniform, Choice, Grid, RandInt]

DOMAIN_KEYS = ("loguniform", "uniform", "choice", "grid", "randint")
_DOMAIN_EXAMPLES = {
    "loguniform": "{loguniform: [1e-3, 1.0]}",
    "uniform": "{uniform: [0.0, 0.5]}",
    "choice": "{choice: [sgd, adam]}",
    "grid": "{grid: [64, 256, 1024]}",
    "randint": "{randint: [1, 10]} (upper bound exclusive)",
}
# Spellings people bring from Ray, Optuna or habit; caught so they are not taken as fixed values.
_DOMAIN_ALIASES = {
    "grid_search": "grid",
    "log_uniform": "loguniform",
    "loguniform_float": "loguniform",
    "categorical": "choice",
    "choices": "choice",
    "randrange": "randint",
    "int": "randint",
}


# ---------------------------------------------------------------------------- scheduler, searcher

SCHEDULERS = ("asha", "none")
SEARCHERS = ("optuna", "random", "grid", "boundary")
RESOURCE_KINDS = ("cpu", "gpu", "memory_gb", "accelerator", "min_gpu_memory_gb", "gpu_memory_gb")
_RESOURCE_ALIASES = {"num_cpus": "cpu", "cpus": "cpu", "num_gpus": "gpu", "gpus": "gpu",
                     "memory": "memory_gb", "accelerator_type": "accelerator"}


@dataclass(frozen=True)
class SchedulerSpec:
    """Trial scheduler. ``asha``: Ray's ASHAScheduler in units of work (budget.progress_attr).

    grace_fraction: fraction of the budget every trial gets before it can be stopped, in (0, 1].
    reduction_factor: keep 1/reduction_factor of trials at each rung (> 1).
    brackets: ASHA brackets (1 = plain successive halving).
    ``none``: every trial runs its whole budget (the knobs are then ignored).
    """

    name: str
    grace_fraction: float = 0.1
    reduction_factor: float = 3
    brackets: int = 1


@dataclass(frozen=True)
class SearcherSpec:
    """How configs are proposed.

    name: ``optuna`` (TPE via Ray's OptunaSearch), ``random`` (Ray's BasicVariantGenerator: grid
    domains crossed, the rest sampled) or ``grid`` (only grid domains; every point tried).
    per: dotted paths (without ``space.``) of Grid domains at each of whose values an independent
    Optuna search of ``num_samples`` trials runs (OptunaSearch cannot do grid_search itself).
    seed: searcher seed. n_startup_trials: Optuna's random trials before TPE takes over.
    key, initial: for ``boundary`` (`tune_lip.tune.boundary_search.BoundarySearch`): the dotted path
    of the one loguniform domain (e.g. ``optimizer.elr``) whose regime boundaries are sought,
    and the number of log-spaced points of the initial sweep.
    """

    name: str
    per: tuple[str, ...] = ()
    seed: int = 0
    n_startup_trials: int = 5
    key: str = ""
    initial: int = 6


# ---------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space; build it with :func:`load_spec` or :func:`parse_spec`.

    path: the YAML file (or the ``where`` given to parse_spec).
    budget: work per trial. reports: reports (and ASHA decision points) per trial.
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
        where: str = "override",
    ) -> SearchSpec:
        """A copy with ``num_samples``, ``budget``, ``resources`` and/or the pending timeout
        replaced (e.g. from command-line flags).

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
            new = budget if isinstance(budget, Budget) else _budget(dict(budget), where=where)
            _check_reports_fit(self.reports, new, where=where)
            changes["budget"] = new
        if resources is not None:
            changes["resources"] = _resources(dict(resources), where=where)
        if pending_timeout_seconds is not None:
            changes["pending_timeout_seconds"] = _pending_timeout(pending_timeout_seconds, where=where)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain mapping in the YAML format: ``parse_spec(s.to_dict(), where=s.path)
        == s``. Saved next to results so a run records exactly what it searched."""
        resources = {k: (list(v) if k == "accelerator" else v) for k, v in self.resources.items()}
        searcher = asdict(self.searcher)
        searcher["per"] = list(self.searcher.per)
        if self.searcher.name != "optuna":  # only Optuna takes these; parse_spec refuses them elsewhere
            del searcher["per"], searcher["n_startup_trials"]
        if self.searcher.name != "boundary":
            del searcher["key"], searcher["initial"]
        return {
            "study": self.study,
            "metric": self.metric,
            "mode": self.mode,
            "budget": self.budget.to_dict(),
            "reports": self.reports,
            "scheduler": asdict(self.scheduler),
            "searcher": searcher,
            "num_samples": self.num_samples,
            "max_concurrent_trials": self.max_concurrent_trials,
            "resources": resources,
            "checkpoint_every": self.checkpoint_every,
            "keep_checkpoints": self.keep_checkpoints,
            "max_failures": self.max_failures,
            "pending_timeout_seconds": self.pending_timeout_seconds,
            "space": _to_raw(self.space),
            "description": self.description,
        }


# ---------------------------------------------------------------------------- dotted paths


def get_in(d: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path; KeyError names the first missing part.

    Example: ``get_in({'a': {'b': 1}}, 'a.b') == 1``
    """
    node: Any = d
    done: list[str] = []
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(".".join([*done, part]))
        node = node[part]
        done.append(part)
    return node


def set_in(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set the value at a dotted path in place, creating intermediate dicts.

    Example: ``c = {}; set_in(c, 'dataset.batch_size', 64)`` -> ``{'dataset': {'batch_size': 64}}``
    """
    *parents, last = dotted.split(".")
    node = d
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


# ---------------------------------------------------------------------------- loading

TOP_LEVEL_KEYS = (
    "study", "metric", "mode", "budget", "reports", "scheduler", "searcher", "num_samples",
    "max_concurrent_trials", "resources", "checkpoint_every", "keep_checkpoints", "max_failures",
    "pending_timeout_seconds", "space", "description",
)
REQUIRED_KEYS = ("study", "metric", "mode", "budget", "space")
_REQUIRED_EXAMPLES = {
    "study": "study: lipschitz",
    "metric": "metric: certified_acc",
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


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 would give the string '1e-3') and
    rejects duplicate keys (PyYAML silently keeps the last, hiding a typo'd override)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping_no_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merges may be overridden by design
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                        _construct_mapping_no_duplicates)


def _load_yaml(text: str, *, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark is not None else None
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        if problem.startswith("duplicate key"):
            raise UserError(where, line, problem, fix="keep only one of them") from None
        raise UserError(where, line, f"malformed YAML ({problem})",
                        fix="check the indentation, the brackets, and that each `key: value` "
                            "has a space after the colon") from None
    except yaml.YAMLError as exc:
        raise UserError(where, None, f"malformed YAML ({' '.join(str(exc).split())})",
                        fix="check the file is YAML") from None


def _leading_comment(text: str) -> str:
    """The file's first line if it is a comment (the one-line summary ``--list`` shows),
    minus a leading ``search_spaces/name.yaml —``; the lines after it are rationale."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    if not first.startswith("#"):
        return ""
    return re.sub(r"^\S+\.ya?ml\s*[—–-]+\s*", "", first.lstrip("#").strip())


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
    metric = _name(raw["metric"], where=where, key="metric", fix="use e.g. metric: certified_acc")
    allowed = studies.get(study) if studies is not None else None
    # `certified_acc@0.0706` columns are allowed wherever their base metric is.
    if allowed is not None and metric.split("@")[0] not in allowed:
        raise UserError(where, "metric",
                        f"{metric!r} is not reported by study {study!r}"
                        f"{_did_you_mean(metric, allowed)}",
                        fix=f"use one of: {', '.join(sorted(allowed))}")
    mode = raw["mode"]
    if mode not in ("min", "max"):
        raise UserError(where, "mode", f"must be min or max, got {mode!r}",
                        fix="use mode: max for accuracies, mode: min for losses")

    budget = _budget(raw["budget"], where=where)
    reports = _int(raw.get("reports", 20), where=where, key="reports", minimum=1,
                   fix="use e.g. reports: 20 (reports and ASHA decision points per trial)")
    _check_reports_fit(reports, budget, where=where)
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
    space = _parse_space(space_raw, where=where, prefix="")
    searcher = _searcher(raw.get("searcher"), where=where)
    _check_searcher_fits_space(searcher, dict(_walk_domains(space, "")), where=where)

    desc = raw.get("description", description)
    if not isinstance(desc, str):
        raise UserError(where, "description", f"must be text, got {desc!r}",
                        fix="write description: \"what this search answers\"")
    return SearchSpec(
        path=path, study=study, metric=metric, mode=mode, budget=budget, scheduler=scheduler,
        searcher=searcher, num_samples=num_samples, max_concurrent_trials=max_concurrent,
        resources=resources, reports=reports, checkpoint_every=checkpoint_every, space=space,
        description=desc, keep_checkpoints=keep_checkpoints, max_failures=max_failures,
        pending_timeout_seconds=pending_timeout,
    )


def _budget(raw: Any, *, where: str) -> Budget:
    example = "use e.g. {epochs: 30}, {steps: 2000} or {reference_hours: 1, reference: A100}"
    try:
        return parse_budget(raw, where=where, key="budget")
    except UserError as exc:
        if exc.fix is not None:
            raise
        # parse_budget leaves some messages without a fix; every spec error carries one.
        raise UserError(exc.where, exc.key, exc.problem, fix=example) from None


def _pending_timeout(raw: Any, *, where: str) -> float:
    fix = "use e.g. pending_timeout_seconds: 900 (seconds trials may wait for resources with none running)"
    seconds = _float(raw, where=where, key="pending_timeout_seconds", fix=fix)
    if not seconds > 0:
        raise UserError(where, "pending_timeout_seconds", f"must be > 0, got {raw!r}", fix=fix)
    return seconds


def _check_reports_fit(reports: int, budget: Budget, *, where: str) -> None:
    # Only a steps budget is known before the data set is; a trial cannot report between steps.
    if budget.kind == "steps" and reports > budget.amount:
        raise UserError(where, "reports",
                        f"{reports} reports do not fit in a budget of {budget.amount} steps",
                        fix=f"use reports: {int(budget.amount)} or fewer, or a larger budget")


def _scheduler(raw: Any, *, where: str) -> SchedulerSpec:
    fix = "use e.g. {name: asha, grace_fraction: 0.1, reduction_factor: 3}, or none"
    if raw is None:
        return SchedulerSpec("none")
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise UserError(where, "scheduler", f"must be a name or a mapping, got {raw!r}", fix=fix)
    name = raw.get("name")
    if name is None:
        raise UserError(where, "scheduler.name", "is missing", fix=fix)
    if name not in SCHEDULERS:
        raise UserError(where, "scheduler.name",
                        f"unknown scheduler {name!r}{_did_you_mean(str(name), SCHEDULERS)}",
                        fix=f"use one of: {', '.join(SCHEDULERS)}")
    knobs = ("name", "grace_fraction", "reduction_factor", "brackets")
    for key in raw:
        if key not in knobs:
            raise UserError(where, f"scheduler.{key}",
                            f"unknown scheduler option{_did_you_mean(str(key), knobs)}",
                            fix=f"valid options: {', '.join(knobs)}")
    grace = _float(raw.get("grace_fraction", 0.1), where=where, key="scheduler.grace_fraction",
                   fix="use e.g. grace_fraction: 0.1 (a fraction of the budget)")
    if not 0.0 < grace <= 1.0:
        raise UserError(where, "scheduler.grace_fraction", f"must be in (0, 1], got {grace}",
                        fix="use e.g. grace_fraction: 0.1 (a fraction of the budget)")
    rf = _float(raw.get("reduction_factor", 3), where=where, key="scheduler.reduction_factor",
                fix="use e.g. reduction_factor: 3")
    if not rf > 1.0:
        raise UserError(where, "scheduler.reduction_factor", f"must be > 1, got {rf:g}",
                        fix="use e.g. reduction_factor: 3 (keep the best third at each rung)")
    brackets = _int(raw.get("brackets", 1), where=where, key="scheduler.brackets", minimum=1,
                    fix="use e.g. brackets: 1")
    return SchedulerSpec(name=name, grace_fraction=grace, reduction_factor=rf, brackets=brackets)


def _searcher(raw: Any, *, where: str) -> SearcherSpec:
    fix = "use e.g. {name: optuna, per: dataset.batch_size}, random or grid"
    if raw is None:
        return SearcherSpec("random")
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise UserError(where, "searcher", f"must be a name or a mapping, got {raw!r}", fix=fix)
    name = raw.get("name")
    if name is None:
        raise UserError(where, "searcher.name", "is missing", fix=fix)
    if name not in SEARCHERS:
        raise UserError(where, "searcher.name",
                        f"unknown searcher {name!r}{_did_you_mean(str(name), SEARCHERS)}",
                        fix=f"use one of: {', '.join(SEARCHERS)}")
    knobs = {"optuna": ("name", "per", "seed", "n_startup_trials"),
             "boundary": ("name", "key", "seed", "initial")}.get(name, ("name", "seed"))
    for key in raw:
        if key not in knobs:
            if key in ("per", "n_startup_trials"):
                raise UserError(where, f"searcher.{key}",
                                f"only applies to searcher optuna, not {name}",
                                fix="remove it (random and grid already run num_samples "
                                    "at every grid point)")
            raise UserError(where, f"searcher.{key}",
                            f"unknown searcher option{_did_you_mean(str(key), knobs)}",
                            fix=f"valid options for {name}: {', '.join(knobs)}")
    per_raw = raw.get("per", [])
    per_list = [per_raw] if isinstance(per_raw, str) else per_raw
    if not isinstance(per_list, list) or not all(isinstance(p, str) and p for p in per_list):
        raise UserError(where, "searcher.per",
                        f"must be a dotted path or a list of them, got {per_raw!r}",
                        fix="use e.g. per: dataset.batch_size, "
                            "or per: [dataset.batch_size, model.depth]")
    per = tuple(p[len("space."):] if p.startswith("space.") else p for p in per_list)
    if len(set(per)) != len(per):
        raise UserError(where, "searcher.per", f"lists a path twice: {list(per)}",
                        fix="list each path once")
    seed = _int(raw.get("seed", 0), where=where, key="searcher.seed", minimum=0,
                fix="use e.g. seed: 0")
    n_startup = _int(raw.get("n_startup_trials", 5), where=where, key="searcher.n_startup_trials",
                     minimum=0, fix="use e.g. n_startup_trials: 5")
    key = raw.get("key", "")
    if name == "boundary" and (not isinstance(key, str) or not key):
        raise UserError(where, "searcher.key", f"must name the swept domain, got {key!r}",
                        fix="use e.g. {name: boundary, key: optimizer.elr}")
    initial = _int(raw.get("initial", 6), where=where, key="searcher.initial", minimum=3,
                   fix="use e.g. initial: 6 (log-spaced points before the boundary search)")
    return SearcherSpec(name=name, per=per, seed=seed, n_startup_trials=n_startup,
                        key=key[len("space."):] if key.startswith("space.") else key, initial=initial)


def _check_searcher_fits_space(
    searcher: SearcherSpec, domains: dict[str, Domain], *, where: str
) -> None:
    grids = [k for k, d in domains.items() if isinstance(d, Grid)]
    for p in searcher.per:
        if p not in domains:
            raise UserError(where, "searcher.per",
                            f"{p!r} is not a domain in space{_did_you_mean(p, grids)}",
                            fix=f"name a grid domain ({', '.join(grids) or 'none in this space'}), "
                                f"e.g. batch_size: {{grid: [64, 256]}}")
        if not isinstance(domains[p], Grid):
            raise UserError(where, "searcher.per",
                            f"{p!r} is a {domains[p].kind} domain, not a grid",
                            fix="make it {grid: [...]} or remove it from per")
    if searcher.name == "grid":
        for k, d in domains.items():
            if not isinstance(d, Grid):
                raise UserError(where, k, f"searcher grid cannot sample a {d.kind} domain",
                                fix="list its values as {grid: [...]}, "
                                    "or use searcher optuna or random")
    if searcher.name == "boundary":
        if not isinstance(domains.get(searcher.key), LogUniform):
            raise UserError(where, "searcher.key", f"{searcher.key!r} must be a loguniform domain in space",
                            fix=f"make it e.g. {searcher.key or 'optimizer.elr'}: {{loguniform: [1e-5, 1.0]}}")
        others = [k for k in domains if k != searcher.key]
        if others:
            raise UserError(where, others[0], "searcher boundary sweeps one domain only",
                            fix="make it a fixed value, or use searcher random")
    if searcher.name == "optuna":
        missing = [k for k in grids if k not in searcher.per]
        if missing:
            everything = ", ".join([*searcher.per, *missing])
            raise UserError(where, "searcher.per",
                            f"grid domain {missing[0]!r} is not listed in per "
                            "(Ray's OptunaSearch cannot do grid_search)",
                            fix=f"add it to per: [{everything}], or make it a choice")
        if all(isinstance(d, Grid) for d in domains.values()):
            raise UserError(where, "searcher",
                            "optuna has nothing to search: every domain is a grid in per",
                            fix="use searcher: grid, or add a range, "
                                "e.g. lr: {loguniform: [0.01, 1.0]}")


def _resources(raw: Any, *, where: str) -> dict[str, Any]:
    fix = "use e.g. resources: {cpu: 1, gpu: 0.25}"
    if not isinstance(raw, dict):
        raise UserError(where, "resources", f"must be a mapping, got {raw!r}", fix=fix)
    out: dict[str, Any] = {}
    for kind, value in raw.items():
        key = f"resources.{kind}"
        if kind not in RESOURCE_KINDS:
            hint = (f" (did you mean {_RESOURCE_ALIASES[kind]!r}?)" if kind in _RESOURCE_ALIASES
                    else _did_you_mean(str(kind), RESOURCE_KINDS))
            raise UserError(where, key, f"unknown resource kind{hint}",
                            fix=f"use one of: {', '.join(RESOURCE_KINDS)}")
        if kind == "accelerator":
            types = [value] if isinstance(value, str) else value
            ok = isinstance(types, list) and types and all(isinstance(t, str) and t for t in types)
            if not ok:
                raise UserError(where, key,
                                f"must be an accelerator type or a list of them, got {value!r}",
                                fix="use e.g. accelerator: A100 or accelerator: [A100, H100]")
            out[kind] = tuple(types)
            continue
        if kind == "gpu_memory_gb":
            table_fix = "use e.g. gpu_memory_gb: {RTX4090: 24}"
            if not isinstance(value, dict) or not value:
                raise UserError(where, key, f"must map accelerator types to GB per GPU, got {value!r}", fix=table_fix)
            out[kind] = {str(t): _float(gb, where=where, key=f"{key}.{t}", fix=table_fix) for t, gb in value.items()}
            if any(gb <= 0 for gb in out[kind].values()):
                raise UserError(where, key, "GB per GPU must be > 0", fix=table_fix)
            continue
        if value == "auto" and kind in ("gpu", "min_gpu_memory_gb"):
            out[kind] = "auto"  # from the trial config's estimated memory (tune_lip.cluster.placement)
            continue
        amount = _float(value, where=where, key=key, fix=fix)
        if amount < 0:
            raise UserError(where, key, f"must be >= 0, got {value!r}", fix=fix)
        out[kind] = amount
    # Ray packs fractional GPUs only below one; above it trials take whole GPUs.
    gpu = out.get("gpu", 0.0)
    if gpu != "auto" and gpu > 1 and gpu != int(gpu):
        raise UserError(where, "resources.gpu",
                        f"a trial can use a fraction of one GPU or whole GPUs, got {gpu:g}",
                        fix=f"use gpu: {math.ceil(gpu)} or a value <= 1")
    for needs_gpu in ("accelerator", "min_gpu_memory_gb", "gpu_memory_gb"):
        if needs_gpu in out and gpu != "auto" and gpu <= 0:
            raise UserError(where, f"resources.{needs_gpu}",
                            "only makes sense for trials that use a GPU",
                            fix="add e.g. gpu: 0.25, or remove it")
    out.setdefault("cpu", 1.0)  # Ray's own default per trial, written down so results record it
    return out


def _parse_space(raw: Any, *, where: str, prefix: str) -> Any:
    """``raw`` with every domain mapping replaced by its Domain; fixed values copied."""
    if isinstance(raw, dict):
        found = [k for k in raw if k in DOMAIN_KEYS]
        here = prefix or "space"
        if len(found) > 1:
            raise UserError(where, here, f"has several domain keys ({', '.join(found)})",
                            fix=f"keep exactly one, e.g. {_DOMAIN_EXAMPLES[found[0]]}")
        if found:
            extra = [str(k) for k in raw if k != found[0]]
            if extra:
                raise UserError(where, here,
                                f"mixes a domain ({found[0]}) with other keys ({', '.join(extra)})",
                                fix="a domain is a mapping with one key, "
                                    f"e.g. {_DOMAIN_EXAMPLES[found[0]]}")
            return _parse_domain(found[0], raw[found[0]], where=where, key=_join(prefix, found[0]))
        if len(raw) == 1:
            (only,) = raw
            if isinstance(only, str) and isinstance(raw[only], list):
                close = difflib.get_close_matches(only, DOMAIN_KEYS, n=1, cutoff=0.8)
                near = _DOMAIN_ALIASES.get(only) or (close[0] if close else None)
                if near is not None:
                    raise UserError(where, _join(prefix, only),
                                    f"looks like a misspelt domain (did you mean {near!r}?)",
                                    fix=f"use e.g. {_DOMAIN_EXAMPLES[near]}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not key or "." in key:
                raise UserError(where, _join(prefix, str(key)),
                                f"keys in space must be names without dots, got {key!r}",
                                fix="nest mappings instead of dotted keys, "
                                    "e.g. optimizer: {lr: 0.1}")
            out[key] = _parse_space(value, where=where, prefix=_join(prefix, key))
        return out
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            if _contains_domain(item):
                raise UserError(where, f"{prefix}[{i}]", "domains inside lists are not supported",
                                fix="move the varied value into a mapping key, "
                                    "e.g. {lr: {loguniform: [...]}}")
        return copy.deepcopy(raw)
    return raw


def _parse_domain(kind: str, raw: Any, *, where: str, key: str) -> Domain:
    fix = f"use e.g. {_DOMAIN_EXAMPLES[kind]}"
    if kind in ("choice", "grid"):
        if not isinstance(raw, list) or not raw:
            raise UserError(where, key, f"needs a non-empty list of values, got {raw!r}", fix=fix)
        for i, v in enumerate(raw):
            if _contains_domain(v):
                raise UserError(where, f"{key}[{i}]",
                                f"a {kind} value cannot itself contain a domain",
                                fix="list fixed values only; vary the inner key in its own domain")
            if any(v == w for w in raw[:i]):
                raise UserError(where, key, f"lists {v!r} twice", fix="list each value once")
        return Choice(tuple(raw)) if kind == "choice" else Grid(tuple(raw))
    if not isinstance(raw, list) or len(raw) != 2:
        raise UserError(where, key, f"needs exactly two bounds [lo, hi], got {raw!r}", fix=fix)
    for v in raw:
        if kind == "randint":
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(where, key, f"bounds must be integers, got {v!r}", fix=fix)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(where, key, f"bounds must be finite numbers, got {v!r}", fix=fix)
    lo, hi = raw
    if kind == "loguniform" and lo <= 0:
        raise UserError(where, key, f"lower bound must be > 0, got {lo!r}", fix=fix)
    if lo >= hi:
        problem = (f"upper bound is exclusive, so it must exceed the lower one, got [{lo}, {hi}]"
                   if kind == "randint" else f"lower bound must be < upper bound, got [{lo}, {hi}]")
        raise UserError(where, key, problem, fix=fix)
    if kind == "randint":
        return RandInt(lo, hi)
    if kind == "loguniform":
        return LogUniform(float(lo), float(hi))
    return Uniform(float(lo), float(hi))


def _contains_domain(value: Any) -> bool:
    if isinstance(value, dict):
        return (any(k in DOMAIN_KEYS for k in value)
                or any(_contains_domain(v) for v in value.values()))
    if isinstance(value, list):
        return any(_contains_domain(v) for v in value)
    return False


# ---------------------------------------------------------------------------- small helpers

_DOMAIN_TYPES = (LogUniform, Uniform, Choice, Grid, RandInt)


def _walk_domains(node: Any, prefix: str) -> list[tuple[str, Domain]]:
    if isinstance(node, _DOMAIN_TYPES):
        return [(prefix, node)]
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk_domains(v, _join(prefix, k))]
    return []


def _resolve(node: Any) -> Any:
    if isinstance(node, _DOMAIN_TYPES):
        return node.representative()
    if isinstance(node, dict):
        return {k: _resolve(v) for k, v in node.items()}
    return copy.deepcopy(node)


def _to_raw(node: Any) -> Any:
    if isinstance(node, _DOMAIN_TYPES):
        return node.to_raw()
    if isinstance(node, dict):
        return {k: _to_raw(v) for k, v in node.items()}
    return copy.deepcopy(node)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _did_you_mean(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _name(raw: Any, *, where: str, key: str, fix: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise UserError(where, key, f"must be a name, got {raw!r}", fix=fix)
    return raw.strip()


def _int(raw: Any, *, where: str, key: str, minimum: int, fix: str) -> int:
    # bool is an int in Python; `num_samples: yes` is a mistake, not 1.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise UserError(where, key, f"must be a whole number, got {raw!r}", fix=fix)
    if raw < minimum:
        raise UserError(where, key, f"must be >= {minimum}, got {raw}", fix=fix)
    return raw


def _float(raw: Any, *, where: str, key: str, fix: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise UserError(where, key, f"must be a finite number, got {raw!r}", fix=fix)
    return float(raw)
