"""The sections of a search spec other than ``space``: ``scheduler``, ``searcher`` (and whether it
fits the space's domains), ``resources``, ``budget``, ``pending_timeout_seconds``, with the small
validators (`_name`, `_int`, `_float`, `_did_you_mean`) every part of the spec parser shares.
Re-exported by `tune_lip.tune.spec`.
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any

from tune_lip.errors import UserError
from tune_lip.studies.budget import Budget, parse_budget
from tune_lip.tune.domains import Domain, Grid, LogUniform

# ---------------------------------------------------------------------------- scheduler, searcher

SCHEDULERS = ("asha", "none")
SEARCHERS = ("optuna", "random", "grid", "boundary", "line", "lr_transfer")
RESOURCE_KINDS = ("cpu", "gpu", "memory_gb", "accelerator", "min_gpu_memory_gb", "gpu_memory_gb")
_RESOURCE_ALIASES = {"num_cpus": "cpu", "cpus": "cpu", "num_gpus": "gpu", "gpus": "gpu",
                     "memory": "memory_gb", "accelerator_type": "accelerator"}


@dataclass(frozen=True)
class SchedulerSpec:
    """Trial scheduler. ``asha``: Ray's ASHAScheduler in units of work (budget.progress_attr).

    grace_fraction: fraction of the budget every trial gets before it can be stopped, in (0, 1].
    reduction_factor: keep 1/reduction_factor of trials at each rung (> 1).
    brackets: ASHA brackets (1 = plain successive halving).
    protect: never stop a trial that is among the best ``protect`` of its group (the searcher's
    ``per`` keys, e.g. its batch size) at a rung, so at least that many trials per group run
    their whole budget (0 = plain ASHA). A scaling fit needs full-budget trials at every batch size.
    branching: warmup-stable-decay branching (issue 16): every trial's wsd schedule gets
    ``branch_at`` = ASHA's rung fractions (`branch_fractions`), so at each rung the trial forks a
    cooldown and ASHA compares annealed models; the space's schedule must be wsd (`with_branching`).
    ``none``: every trial runs its whole budget (the knobs are then ignored).
    """

    name: str
    grace_fraction: float = 0.1
    reduction_factor: float = 3
    brackets: int = 1
    protect: int = 0
    branching: bool = False


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
    ``line`` (`tune_lip.tune.searchers.GroupedLineSearch`): the optimum of the loguniform ``key``
    at each grid point of ``per`` by line search, until the best trial's neighbours are within a
    factor 1 + ``tolerance``; ``warm_start``: grid points one after another, each starting
    around the previous one's optimum.
    ``lr_transfer`` (`tune_lip.tune.lr_transfer.LRTransferSearch`): as ``line`` with one ``per`` key
    (the batch size), the smallest ``anchors`` values searched broadly, every larger one inside the
    predictive interval of a fit of log lr* against log b, widened when the law breaks.
    """

    name: str
    per: tuple[str, ...] = ()
    seed: int = 0
    n_startup_trials: int = 5
    key: str = ""
    initial: int = 6
    tolerance: float = 0.1
    warm_start: bool = True
    anchors: int = 2



# ---------------------------------------------------------------------------- section parsers


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


GRID_BUDGET_KINDS = ("steps", "examples", "epochs")


def _budget_grid(raw: Any, *, where: str) -> tuple[Budget, tuple[float, ...]]:
    """``budget``: one budget (grid ``()``), or ``{steps: {grid: [250, 1000, 4000]}}`` (also
    examples, epochs): the largest as the Budget (ASHA's ``max_t``) and the grid, ascending."""
    kind = next((k for k in GRID_BUDGET_KINDS if isinstance(raw, dict) and isinstance(raw.get(k), dict)), None)
    if kind is None:
        return _budget(raw, where=where), ()
    fix = f"use e.g. budget: {{{kind}: {{grid: [250, 1000, 4000]}}}} (two or more budgets, one trial set each)"
    inner = raw[kind]
    others = [k for k in raw if k != kind]
    if others:
        raise UserError(where, f"budget.{others[0]}", f"a budget grid takes no other key, got {others[0]!r}", fix=fix)
    if list(inner) != ["grid"] or not isinstance(inner["grid"], list) or len(set(map(str, inner["grid"]))) < 2:
        raise UserError(where, f"budget.{kind}", f"must be a number or {{grid: [...]}} of two or more "
                        f"distinct numbers, got {inner!r}", fix=fix)
    budgets = [_budget({kind: v}, where=where) for v in inner["grid"]]   # each checked like one budget
    return max(budgets, key=lambda b: b.amount), tuple(sorted(inner["grid"]))


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
    knobs = ("name", "grace_fraction", "reduction_factor", "brackets", "protect", "branching")
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
    protect = _int(raw.get("protect", 0), where=where, key="scheduler.protect", minimum=0,
                   fix="use e.g. protect: 4 (the best 4 trials of each group run their whole budget)")
    branching = raw.get("branching", False)
    if not isinstance(branching, bool):
        raise UserError(where, "scheduler.branching", f"must be true or false, got {branching!r}",
                        fix="use branching: true (ASHA compares annealed wsd branches) or leave it out")
    if branching and name != "asha":
        raise UserError(where, "scheduler.branching", f"only applies to scheduler asha, not {name}",
                        fix="use scheduler: {name: asha, branching: true}, or leave branching out")
    return SchedulerSpec(name=name, grace_fraction=grace, reduction_factor=rf, brackets=brackets, protect=protect,
                         branching=branching)


def branch_fractions(scheduler: SchedulerSpec) -> tuple[float, ...]:
    """ASHA's rung positions below the whole budget, as budget fractions: grace_fraction *
    reduction_factor**k for the k < int(log(1/grace)/log(rf) + 1) of Ray's ``_Bracket`` (every
    bracket's rungs are among them).

    Example:
        >>> branch_fractions(SchedulerSpec("asha", grace_fraction=0.1, reduction_factor=3))
        (0.1, 0.3, 0.9)
    """
    grace, rf = scheduler.grace_fraction, scheduler.reduction_factor
    rungs = int(math.log(1.0 / grace) / math.log(rf) + 1)
    return tuple(f for f in (round(grace * rf**k, 12) for k in range(rungs)) if f < 1.0 - 1e-9)


def with_branching(space: dict[str, Any], scheduler: SchedulerSpec, budget: Budget, *,
                   where: str) -> dict[str, Any]:
    """``space`` with ``schedule.branch_at`` set to `branch_fractions` under ``scheduler.branching``
    (else ``space`` itself). The space's schedule must be one fixed wsd schedule whose own
    ``branch_at``, if written, is exactly those rungs (so applying it twice is harmless), and the
    budget a step count; otherwise UserError."""
    if not scheduler.branching:
        return space
    fix = "use schedule: {name: wsd, warmup_steps: 0, cooldown: 0.2} (one fixed wsd schedule)"
    schedule = space.get("schedule")
    if isinstance(schedule, str):
        schedule = {"name": schedule}
    if not isinstance(schedule, dict) or any(isinstance(v, typing.get_args(Domain)) for v in schedule.values()):
        raise UserError(where, "space.schedule", f"scheduler.branching needs one fixed wsd schedule, got "
                        f"{'none (the study default)' if schedule is None else repr(schedule)}", fix=fix)
    if schedule.get("name") != "wsd":
        raise UserError(where, "space.schedule.name", f"scheduler.branching needs schedule wsd (its LR before a "
                        f"cooldown does not depend on the horizon), got {schedule.get('name')!r}", fix=fix)
    rungs = list(branch_fractions(scheduler))
    written = schedule.get("branch_at")
    if isinstance(written, tuple):
        written = list(written)
    if "branch_at" in schedule and written != rungs:   # equal: already filled (idempotent)
        raise UserError(where, "space.schedule.branch_at", f"{schedule['branch_at']!r} is not ASHA's rungs "
                        f"{rungs}: scheduler.branching sets it", fix="remove schedule.branch_at, or scheduler.branching")
    if budget.kind == "wall_hours":
        raise UserError(where, "budget", "scheduler.branching needs a budget that counts steps",
                        fix="use e.g. {steps: 2000}, {epochs: 30} or {reference_hours: 1, reference: A100}")
    return {**space, "schedule": {**schedule, "branch_at": rungs}}


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
             "boundary": ("name", "key", "seed", "initial"),
             "line": ("name", "per", "key", "seed", "tolerance", "warm_start"),
             "lr_transfer": ("name", "per", "key", "seed", "tolerance", "anchors")}.get(name, ("name", "seed"))
    for key in raw:
        if key not in knobs:
            if key in ("per", "n_startup_trials"):
                raise UserError(where, f"searcher.{key}",
                                f"only applies to searcher optuna{', line and lr_transfer' if key == 'per' else ''}, not {name}",
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
    if name in ("boundary", "line", "lr_transfer") and (not isinstance(key, str) or not key):
        raise UserError(where, "searcher.key", f"must name the swept domain, got {key!r}",
                        fix=f"use e.g. {{name: {name}, key: optimizer.{'elr' if name == 'boundary' else 'lr'}}}")
    if name == "lr_transfer" and not raw.get("per"):
        per_default = ["dataset.batch_size"]
    else:
        per_default = []
    tolerance = _float(raw.get("tolerance", 0.1), where=where, key="searcher.tolerance",
                       fix="use e.g. tolerance: 0.1 (lr* within 10%)")
    if not 0 < tolerance < 1:
        raise UserError(where, "searcher.tolerance", f"must be in (0, 1), got {tolerance}",
                        fix="use e.g. tolerance: 0.1 (lr* within 10%)")
    warm_start = raw.get("warm_start", True)
    if not isinstance(warm_start, bool):
        raise UserError(where, "searcher.warm_start", f"must be true or false, got {warm_start!r}",
                        fix="use warm_start: true (each batch size starts at the previous optimum)")
    initial = _int(raw.get("initial", 6), where=where, key="searcher.initial", minimum=3,
                   fix="use e.g. initial: 6 (log-spaced points before the boundary search)")
    anchors = _int(raw.get("anchors", 2), where=where, key="searcher.anchors", minimum=2,
                   fix="use e.g. anchors: 2 (the smallest batch sizes searched broadly)")
    return SearcherSpec(name=name, per=per or tuple(per_default), seed=seed, n_startup_trials=n_startup,
                        key=key[len("space."):] if key.startswith("space.") else key, initial=initial,
                        tolerance=tolerance, warm_start=warm_start, anchors=anchors)


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
    if searcher.name == "lr_transfer":
        if len(searcher.per) != 1:
            raise UserError(where, "searcher.per", f"lr_transfer transfers along one grid key, got {list(searcher.per)}",
                            fix="use per: dataset.batch_size (one key; use searcher line for several)")
        per_domain = domains[searcher.per[0]]
        values = per_domain.values if isinstance(per_domain, Grid) else ()   # a Grid: checked above
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
            raise UserError(where, searcher.per[0], f"lr_transfer needs positive numbers, got {list(values)}",
                            fix="use e.g. batch_size: {grid: [8, 32, 128, 512]}")
    if searcher.name in ("line", "lr_transfer"):
        if not isinstance(domains.get(searcher.key), LogUniform):
            raise UserError(where, "searcher.key", f"{searcher.key!r} must be a loguniform domain in space",
                            fix=f"make it e.g. {searcher.key or 'optimizer.lr'}: {{loguniform: [0.001, 3.0]}}")
        others = [k for k in domains if k != searcher.key and k not in searcher.per]
        if others:
            raise UserError(where, others[0], f"searcher {searcher.name} searches one domain at each grid point of per",
                            fix="add it to per (if a grid), make it a fixed value, or use searcher optuna")
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



# ---------------------------------------------------------------------------- small helpers


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
