"""Checks before a search starts: the space against its study, the data files and budgets,
whether the machine or cluster can place every trial (`preflight`, ``tune-lip placement``).

Everything here runs on the driver before any trial; a problem is one `UserError` line.
"""

from __future__ import annotations

import json
from typing import Any

from tune_lip.errors import ConfigError, UserError
from tune_lip.studies.registry import get as get_study
from tune_lip.tune.spec import SearchSpec


def check_spec(spec: SearchSpec) -> dict[str, Any]:
    """Validate the space against its study's config; return the representative trial config.

    The study's config class builds the representative trial config (every domain at a
    valid value); its ConfigError becomes a UserError naming the YAML file and key.
    A study with a data set must hold out a validation split when the search's metric is
    measured on it (``val_*``): ``dataset.validation: 0`` then is a UserError.
    """
    # the smallest budget: the one that must still buy a step per report
    config = {**spec.representative_config(), "budget": spec.budgets()[0].to_dict(), "reports": spec.reports}
    try:
        cfg = get_study(spec.study).config.from_dict(config)
    except ConfigError as exc:
        raise UserError(spec.path, exc.key, exc.problem) from None
    if getattr(getattr(cfg, "dataset", None), "validation", None) == 0 and spec.metric.startswith("val_"):
        raise UserError(spec.path, "dataset.validation", f"0 holds out no validation set, but metric "
                        f"{spec.metric} is measured on it", fix="hold out a split, e.g. dataset.validation: 0.1")
    return config


def _read_data(data: Any, where: str) -> Any:
    """The data set a study's ``DataConfig`` names (an `ImageData`; reads it)."""
    from tune_lip.data.datasets import load_dataset

    try:
        return load_dataset(data.name, data_dir=data.data_dir, download=data.download, **data.options)
    except ValueError as exc:
        raise UserError(where, "dataset", str(exc)) from None


def _after_split(data: Any, num_train: int, where: str) -> int:
    """Training examples left of ``num_train`` once ``data.validation`` (a ``DataConfig``'s) is held out."""
    from tune_lip.data.datasets import validation_count

    if (getattr(data, "options", None) or {}).get("validation_from", "generated") != "generated":
        return num_train   # validated on another set's hold-out (SU's generated data: CIFAR-10's)
    try:
        return num_train - validation_count(data.validation, num_train)
    except ValueError as exc:
        raise UserError(where, "dataset.validation", str(exc)) from None


def _num_train(data: Any, where: str) -> int:
    """Training examples of the data set a study's ``DataConfig`` names (reads it), once its
    validation split is held out: what an epoch budget counts."""
    return _after_split(data, int(_read_data(data, where).num_train), where)


def _study_config(spec: SearchSpec, config: dict[str, Any]) -> Any:
    try:
        return get_study(spec.study).config.from_dict(config)
    except ConfigError as exc:
        raise UserError(spec.path, exc.key, exc.problem) from None


def check_data(spec: SearchSpec) -> dict[str, dict[str, Any]]:
    """Read every data set the grid's trials train on, and check each trial's budget buys at
    least one step per report; a UserError names the missing or broken file, or the budget.

    Run on the driver before Ray starts, for a local Ray, whose workers read the same files.
    Each distinct data set is read once (the generated npz's conversion is cached on disk, so
    the trials find it done). Returns what was read, for the provenance: per data set (its name,
    with its options when they are not the defaults) the SHA-256 of its content and its sizes.
    """
    sizes: dict[str, int] = {}
    read: dict[str, dict[str, Any]] = {}
    for config in grid_configs(spec):
        cfg = _study_config(spec, config)
        data = getattr(cfg, "dataset", None)
        num_train = 0
        if data is not None and hasattr(data, "name"):   # a study with a data set (not the NQM)
            key = json.dumps([data.name, data.data_dir, data.options], sort_keys=True, default=str)
            if key not in sizes:
                images = _read_data(data, spec.path)
                sizes[key] = int(images.num_train)
                label = data.name + (json.dumps(data.options, sort_keys=True, default=str) if data.options else "")
                read[label] = {"sha256": images.fingerprint(), "num_train": int(images.num_train),
                               "num_test": int(images.num_test), "data_dir": str(data.data_dir)}
            num_train = _after_split(data, sizes[key], spec.path)
        if cfg.budget.kind not in ("epochs", "examples"):
            continue   # steps are checked by the spec; time budgets are decided while running
        steps = (cfg.total_steps(num_train) if callable(getattr(cfg, "total_steps", None))
                 else cfg.budget.total_steps(batch_size=cfg.dataset.batch_size, num_train=num_train))
        if steps is not None and steps < spec.reports:
            raise UserError(spec.path, "budget", f"{cfg.budget.amount:g} {cfg.budget.kind} buy {steps} steps at "
                            f"batch size {cfg.dataset.batch_size}, fewer than the {spec.reports} reports",
                            fix="use a larger budget or fewer reports")
    return read


def grid_configs(spec: SearchSpec, points: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The representative trial config (see `check_spec`) at each grid point (default: the spec's)."""
    import copy

    from tune_lip.tune.spec import set_in

    base = check_spec(spec)
    configs = []
    for point in spec.grid_points() if points is None else points:
        config = copy.deepcopy(base)
        for key, value in point.items():
            set_in(config, key, value)
        configs.append(config)
    return configs


def _present_accelerators() -> tuple[str, ...]:
    """The GPU types the cluster has (live nodes) or can start (``ray up``'s config on the head)."""
    import ray

    from tune_lip.cluster.placement import cluster_accelerators, launchable_accelerators

    live = set(cluster_accelerators()) if ray.is_initialized() else set()
    return tuple(sorted(live | set(launchable_accelerators())))


def _estimator(spec: SearchSpec) -> Any:
    """The memory estimate of a trial config, with the study's defaults filled in."""
    import functools

    from tune_lip.cluster.placement import estimate_memory

    return functools.partial(estimate_memory, config_class=get_study(spec.study).config)


def check_placement(spec: SearchSpec, present: tuple[str, ...] = ()) -> list[Any]:
    """The `Placement` of every grid point's representative config; a UserError when one fits
    no allowed GPU (before anything starts)."""
    from tune_lip.cluster.placement import plan_placement

    return [plan_placement(spec.resources, config, present=present, where=spec.path, estimate=_estimator(spec))
            for config in grid_configs(spec)]


def _is_local(address: str | None) -> bool:
    return address in (None, "local")


def check_resources(spec: SearchSpec, *, address: str | None, num_cpus: int | None = None) -> None:
    """A UserError unless some node can run every grid point's trial: Ray would leave such
    trials PENDING for ever. A local Ray is checked before it starts (this machine's CPUs and
    GPUs); a cluster once joined (its live nodes, plus the node types ``ray up``'s config lets
    the autoscaler start)."""
    from tune_lip.cluster.placement import launchable_nodes, live_nodes, local_node

    if _is_local(address):
        nodes, cluster = [local_node(num_cpus)], "the local Ray (this machine)"
        fix = ("run it on the CPU with --resources cpu=1, or pass --address of a Ray cluster that has such nodes"
               " (tune-lip placement shows what each trial asks for)")
        placements = check_placement(spec, (nodes[0].kind,) if nodes[0].kind else ())
    else:
        nodes, cluster = [*live_nodes(), *launchable_nodes()], f"the Ray cluster at {address}"
        fix = ("add such a node type to the cluster (cluster.yaml), or change the space's resources "
               "(e.g. --resources cpu=1 runs it on CPUs)")
        placements = check_placement(spec, _present_accelerators())
    from tune_lip.cluster.placement import check_fits

    check_fits(placements, nodes, where=spec.path, cluster=cluster, fix=fix)


def preflight(spec: SearchSpec, *, address: str | None, num_cpus: int | None = None) -> dict[str, dict[str, Any]]:
    """Everything that can be checked before Ray starts, in the order a user would fix it:
    the space against its study, the data files and the budget (local Ray only: a cluster's
    workers may see other files), and whether the local machine can run the trials at all.
    Returns the data sets read (`check_data`; none on a cluster), for the provenance."""
    check_spec(spec)
    if _is_local(address):
        read = check_data(spec)
        check_resources(spec, address=address, num_cpus=num_cpus)   # with check_placement
        return read
    check_placement(spec)   # the memory rule; the cluster's nodes once it is joined
    return {}


def placement_table(spec: SearchSpec, present: tuple[str, ...] = ()) -> Any:
    """One row per grid point: its estimated GPU memory and what its trials ask Ray for
    (``tune-lip placement``); a pandas DataFrame."""
    import pandas as pd

    from tune_lip.cluster.placement import plan_placement

    estimate = _estimator(spec)
    rows = []
    for point, config in zip(spec.grid_points(), grid_configs(spec)):
        try:
            gb: float | None = estimate(config).total_gb
        except ValueError:  # a study without a model (nqm)
            gb = None
        p = plan_placement(spec.resources, config, present=present, where=spec.path, estimate=estimate)
        if p.accelerators is None:
            where = "any node"
        elif len(p.accelerators) == 1:
            where = f"accelerator_type:{p.accelerators[0]}"
        else:
            where = f"label in({','.join(p.accelerators)})"
        rows.append({**point, "estimated_gb": None if gb is None else round(gb, 2), "cpu": p.cpu, "gpu": p.gpu,
                     "runs_on": where})
    return pd.DataFrame(rows)


def scheduler_warnings(spec: SearchSpec, *, min_trials: int | None = None) -> list[str]:
    """Why the space's scheduler may not leave its analysis the data it needs (one line each).

    A search grouped by batch size (``searcher.per``) asks a scaling question whose fit needs
    ``min_trials`` full-budget trials per group. ASHA keeps about 1/reduction_factor of a
    group's trials at each cut (a rung before the end of the budget), and which ones is up to
    the order trials arrive in: without ``protect: min_trials`` it may leave fewer.
    """
    s = spec.scheduler
    if s.name != "asha" or not spec.searcher.per:
        return []
    if min_trials is None:   # what `tune-lip analyze lr-scaling` needs by default (imports scipy)
        from tune_lip.analysis.lr_scaling import MIN_TRIALS

        min_trials = MIN_TRIALS
    if s.protect >= min_trials:
        return []
    cuts = sum(1 for k in range(64) if s.grace_fraction * s.reduction_factor ** k < 1 - 1e-9)
    group = " x ".join(spec.searcher.per)
    return [f"{spec.path}: scheduler: ASHA keeps about 1/{s.reduction_factor:g} of each {group}'s trials at each "
            f"of its {cuts} cut{'s' if cuts != 1 else ''} (of {spec.num_samples}, about "
            f"{spec.num_samples / s.reduction_factor ** cuts:.1f} run their whole budget) and may leave fewer than "
            f"the {min_trials} full-budget trials per {group} the scaling fit needs. Fix: scheduler: "
            f"{{name: asha, ..., protect: {min_trials}}} (the best {min_trials} of each {group} are never "
            f"stopped), or scheduler: none"]
