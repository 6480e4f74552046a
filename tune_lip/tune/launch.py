"""SearchSpec -> `ray.tune.Tuner`: scheduler, searcher, resources, callbacks; resume.

`run_search` is what ``tune-lip search`` calls: it validates the spec against its study,
starts (or joins) Ray, builds the Tuner and fits it. The experiment lives in
``<storage_path>/<name>`` (Ray's own layout, plus Parquet results from
`ParquetResultsCallback`).

Example:
    >>> from tune_lip.tune.spec import load_spec
    >>> spec = load_spec("demo")                                            # doctest: +SKIP
    >>> grid = run_search(spec, name="demo-1", storage_path="tune_lip_results")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from tune_lip.errors import UserError
from tune_lip.studies.registry import get as get_study
from tune_lip.studies.registry import study_metrics
from tune_lip.tune.experiment import (  # noqa: F401  (re-exported: launch's names before the split)
    LAUNCH_FILE,
    SPEC_FILE,
    _differences,
    _follow_the_experiment,
    _new_trials_where_the_experiment_is,
    _override_values,
    _read_text,
    _write_text,
    experiment_name,
    load_space,
    resume_spec,
    save_spec,
    storage_root,
    stored_spec,
)
from tune_lip.tune.preflight import (  # noqa: F401  (re-exported: launch's names before the split)
    _estimator,
    _is_local,
    _num_train,
    _present_accelerators,
    _study_config,
    check_data,
    check_placement,
    check_resources,
    check_spec,
    grid_configs,
    placement_table,
    preflight,
)
from tune_lip.tune.spec import SearchSpec

__all__ = ["study_metrics", "check_spec", "check_data", "check_placement", "check_resources", "preflight",
           "placement_table", "start_ray", "make_search_alg", "build_tuner", "run_search", "experiment_name",
           "load_space", "stored_spec", "resume_spec", "storage_root", "PendingTimeoutError", "DEFAULT_STORAGE", "SPEC_FILE", "LAUNCH_FILE"]

DEFAULT_STORAGE = "tune_lip_results"


CALIBRATION_FILE = "calibration.parquet"


def _resolve_calibration(spec: SearchSpec, storage_path: str, experiment_dir: str) -> SearchSpec:
    """For a reference_hours budget: check the calibration table covers every grid point,
    then copy it into the experiment, where every node reads it (local path or URI)."""
    if spec.budget.kind != "reference_hours":
        return spec
    from tune_lip.analysis.results import storage_location
    from tune_lip.cluster.calibrate import append_table
    from tune_lip.studies.budget import lookup_step_seconds, read_calibration

    raw = spec.budget.calibration
    if raw and "://" in raw:
        source = raw
    else:
        path = Path(raw).expanduser() if raw else None
        if path is None:
            source = f"{storage_path}/{CALIBRATION_FILE}"
        elif path.is_absolute():
            source = str(path)
        else:
            beside_spec = Path(spec.path).parent / path
            source = str(beside_spec.resolve() if beside_spec.exists() else path.resolve())
    study = get_study(spec.study)
    if study.step_key is None:
        raise UserError(spec.path, "budget", f"study {spec.study} has no reference_hours budget "
                        "(no calibrated step times)", fix="use {steps: N}, {epochs: E} or {examples: X}")
    table = read_calibration(source)
    assert spec.budget.reference is not None
    for config in grid_configs(spec):
        cfg = study.config.from_dict(config)
        lookup_step_seconds(table, accelerator=spec.budget.reference, model_key=study.step_key(cfg),
                            batch_size=cfg.dataset.batch_size, where=source)
    copy = f"{experiment_dir}/{CALIBRATION_FILE}"
    fs, path_in_fs = storage_location(copy)
    if fs.get_file_info(path_in_fs).type == pafs.FileType.NotFound:  # a resumed search keeps its copy
        append_table(table, copy)
    return replace(spec, budget=replace(spec.budget, calibration=copy))


# ---------------------------------------------------------------------------- Ray

def start_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at ``address`` ("auto" on a cluster node), or start a private local Ray.

    A local Ray binds only to 127.0.0.1 and runs no dashboard.
    """
    import ray

    if ray.is_initialized():
        return
    if address in (None, "local"):
        # Keeps every local node on loopback (ray 2.60; see DESIGN.md "Testing"). Ray reads the
        # variable once, when it is first imported (perhaps before this call): set its constant too.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 log_to_driver=True, configure_logging=False)
    else:
        ray.init(address=address)


def _logger_callbacks(wandb: bool, mlflow: bool, name: str) -> list[Any]:
    callbacks: list[Any] = []
    if wandb:
        try:
            import wandb as _  # noqa: F401
            from ray.air.integrations.wandb import WandbLoggerCallback
        except ImportError:
            raise UserError("--wandb", None, "the wandb package is not installed",
                            fix="pip install wandb, then wandb login") from None
        callbacks.append(WandbLoggerCallback(project="tune-lip", group=name))
    if mlflow:
        try:
            import mlflow as _m  # noqa: F401
            from ray.air.integrations.mlflow import MLflowLoggerCallback
        except ImportError:
            raise UserError("--mlflow", None, "the mlflow package is not installed", fix="pip install mlflow") from None
        callbacks.append(MLflowLoggerCallback(experiment_name=name))
    return callbacks


def _trainable(spec: SearchSpec, present: tuple[str, ...] = ()) -> Any:
    """The study's Trainable with per-trial resources (`tune_lip.cluster.placement`); for an
    experiment that searched a metric from before the validation split (`Study.legacy_metrics`,
    accepted only when resuming), the Trainable that reports it as then."""
    from ray import tune

    from tune_lip.cluster.placement import resource_function
    from tune_lip.studies.registry import get
    from tune_lip.trainables.base import trainable_for

    study, base = get(spec.study), spec.metric.split("@")[0]
    legacy = base in study.legacy_metrics and base not in study.metrics
    return tune.with_resources(trainable_for(spec.study, legacy=legacy),
                               resource_function(spec.resources, present=present, where=spec.path,
                                                 estimate=_estimator(spec)))


def _trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default packs the whole config into the name)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def make_search_alg(spec: SearchSpec) -> Any:
    """The spec's searcher: `GroupedOptunaSearch`, `GroupedLineSearch`, `LRTransferSearch`, `BoundarySearch`, or Tune's
    random/grid generator."""
    from tune_lip.tune.searchers import GroupedOptunaSearch, random_search

    if spec.searcher.name == "boundary":
        from tune_lip.tune.boundary_search import BoundarySearch
        from tune_lip.tune.spec import get_in

        domain = get_in(spec.space, spec.searcher.key)
        dataset = spec.representative_config().get("dataset") or {}
        return BoundarySearch(spec.representative_config(), key=spec.searcher.key, lo=domain.lo, hi=domain.hi,
                              initial=spec.searcher.initial, max_trials=spec.num_samples, seed=spec.searcher.seed,
                              num_classes=100 if dataset.get("name") == "cifar100" else 10)
    if spec.searcher.name == "line":
        from tune_lip.tune.searchers import GroupedLineSearch

        return GroupedLineSearch(spec.search_space(), per=spec.group_keys(), key=spec.searcher.key,
                                 samples_per_group=spec.num_samples, tolerance=spec.searcher.tolerance,
                                 warm_start=spec.searcher.warm_start, seed=spec.searcher.seed)
    if spec.searcher.name == "lr_transfer":
        from tune_lip.tune.lr_transfer import LRTransferSearch

        return LRTransferSearch(spec.space, per=spec.searcher.per, key=spec.searcher.key,
                                samples_per_group=spec.num_samples, tolerance=spec.searcher.tolerance,
                                anchors=spec.searcher.anchors, seed=spec.searcher.seed)
    if spec.searcher.name == "optuna":
        return GroupedOptunaSearch(spec.search_space(), per=spec.group_keys(), samples_per_group=spec.num_samples,
                                   seed=spec.searcher.seed, n_startup_trials=spec.searcher.n_startup_trials,
                                   seeds=spec.seeds())   # [] with one replicate
    return random_search(spec.searcher.seed, max_concurrent=spec.max_concurrent_trials,
                         replicates=spec.replicates > 1)


def build_tuner(spec: SearchSpec, *, name: str, storage_path: str | Path,
                extra_callbacks: list[Any] | None = None, verbose: int = 1, search_alg: Any = None) -> Any:
    """The `ray.tune.Tuner` for ``spec``; the experiment goes to ``storage_path/name``.

    search_alg: default `make_search_alg(spec)`; pass your own to inspect it afterwards
    (e.g. the Optuna studies of a `GroupedOptunaSearch`).
    """
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from tune_lip.tune.callbacks import ParquetResultsCallback
    from tune_lip.tune.pending import PendingTimeout
    from tune_lip.tune.schedulers import GroupedASHAScheduler, QueueFIFOScheduler
    from tune_lip.tune.searchers import GroupedOptunaSearch, to_tune_space, with_seeds
    from tune_lip.tune.spec_sections import with_branching

    storage = storage_root(storage_path)
    # scheduler.branching: every trial's wsd schedule forks a cooldown at each ASHA rung
    spec = replace(spec, space=with_branching(spec.space, spec.scheduler, spec.budget, where=spec.path))
    config = check_spec(spec)
    present = _present_accelerators()
    check_placement(spec, present)
    spec = _resolve_calibration(spec, storage, f"{storage}/{name}")
    # with a budget grid the budget is a grid key of the space (spec.search_space), else fixed
    fixed = {"reports": spec.reports, **({} if spec.budget_grid else {"budget": spec.budget.to_dict()})}

    search_alg = search_alg or make_search_alg(spec)
    if isinstance(search_alg, GroupedOptunaSearch):
        num_samples = search_alg.total_samples
        param_space = fixed
    elif spec.searcher.name == "boundary":  # BoundarySearch proposes whole configs
        num_samples = spec.num_samples
        param_space = fixed
    else:   # Tune's generator: num_samples per grid point; replicates are a grid over the seed
        num_samples = spec.num_samples
        param_space = {**with_seeds(to_tune_space(spec.search_space()), spec.seeds()), **fixed}

    if spec.scheduler.name == "asha":
        # Progress as the fraction of each trial's own budget (every trial reports it): with several
        # budgets, and under branching, whose reports sit at exact fractions (an examples budget
        # not divisible by b reports 14745 examples at 0.9 of 16384, short of the 14745.6 rung).
        if spec.budget_grid or spec.scheduler.branching:
            time_attr, max_t = "budget_fraction", 1.0
        else:
            num_train = (_num_train(_study_config(spec, config).dataset, spec.path) if spec.budget.kind == "epochs"
                         else None)
            time_attr, max_t = spec.budget.progress_attr, spec.budget.progress_max(num_train=num_train)
        asha: dict[str, Any] = dict(time_attr=time_attr, max_t=max_t,
                                    grace_period=max(spec.scheduler.grace_fraction * max_t, 1e-9),
                                    reduction_factor=spec.scheduler.reduction_factor, brackets=spec.scheduler.brackets)
        # With searcher.per, ASHA compares trials only within their group (e.g. batch size);
        # with protect, the best trials of each group (of the whole search without per) run on.
        # Without either it is one group: Ray's ASHA decisions at a cost per result that does
        # not grow with the trials (Ray's own takes a percentile over every trial at the rung).
        # With a budget grid the budget is a group key too: a trial meets only its own budget.
        scheduler: Any = GroupedASHAScheduler(group_keys=spec.group_keys(), protect=spec.scheduler.protect, **asha)
    else:   # FIFO, choosing the next trial among unfinished ones only (Ray's scans every trial)
        scheduler = QueueFIFOScheduler()

    # Trials that wait for resources nobody provides stop the search instead of hanging it.
    watchdog = PendingTimeout(f"{storage}/{name}", seconds=spec.pending_timeout_seconds)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=[ParquetResultsCallback(f"{storage}/{name}"), watchdog, *(extra_callbacks or [])],
        stop=watchdog,
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=spec.checkpoint_every,
                                                checkpoint_at_end=True,
                                                num_to_keep=spec.keep_checkpoints),
        # A trial whose node is lost restarts from its last checkpoint on any node that fits it.
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        verbose=verbose,
    )
    # Tune wraps a Searcher in a ConcurrencyLimiter; its own generator limits itself (above).
    concurrency = None if isinstance(search_alg, BasicVariantGenerator) else spec.max_concurrent_trials
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=search_alg,
                                  num_samples=num_samples, max_concurrent_trials=concurrency,
                                  reuse_actors=True, trial_dirname_creator=_trial_dirname)
    return tune.Tuner(_trainable(spec, present), param_space=param_space, tune_config=tune_config, run_config=run_config)


def run_search(spec: SearchSpec, *, name: str | None = None, storage_path: str | Path = DEFAULT_STORAGE,
               address: str | None = None, resume: bool = False, num_cpus: int | None = None,
               wandb: bool = False, mlflow: bool = False, verbose: int = 1,
               extra_callbacks: list[Any] | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """Run (or with ``resume=True`` continue) the search; returns Ray's ResultGrid.

    Everything that can be checked is checked before Ray starts (`preflight`), and whether
    the cluster can run the trials before any trial is launched (`check_resources`).
    extra_callbacks: more Tune callbacks (after the loggers) for a new search.
    overrides: the command-line overrides ``spec`` carries, recorded in the experiment.
    Raises `PendingTimeoutError` (a UserError) when trials waited longer than
    ``spec.pending_timeout_seconds`` for resources with no trial running; the finished
    results stay in the experiment.
    """
    from ray import tune

    from tune_lip.analysis.results import storage_location
    from tune_lip.tune import pending, provenance

    storage = storage_root(storage_path)
    name = name or experiment_name(spec)
    experiment_dir = f"{storage}/{name}"
    if resume:
        if not tune.Tuner.can_restore(experiment_dir):
            raise UserError(str(experiment_dir), None, "no experiment to resume here",
                            fix="pass the --name (and --storage-path) of the killed search")
    else:
        fs, path = storage_location(experiment_dir)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise UserError(experiment_dir, None, "an experiment with this name exists already",
                            fix="pass --resume to continue it, or choose another --name")
    data = preflight(spec, address=address, num_cpus=num_cpus)
    loggers = [] if resume else _logger_callbacks(wandb, mlflow, name)  # input errors first: nothing started
    start_ray(address, num_cpus=num_cpus)
    if not _is_local(address):
        check_resources(spec, address=address)
    pending.clear(experiment_dir)
    if not resume:
        save_spec(spec, experiment_dir, overrides=overrides)
    provenance.record(experiment_dir, data=data, resumed=resume)   # versions, commit, machine, data
    if resume:
        tuner = tune.Tuner.restore(experiment_dir, trainable=_trainable(spec, _present_accelerators()),
                                   resume_unfinished=True, resume_errored=True)
        _follow_the_experiment(tuner, experiment_dir)
        with _new_trials_where_the_experiment_is():
            grid = tuner.fit()
    else:
        tuner = build_tuner(spec, name=name, storage_path=storage, verbose=verbose,
                            extra_callbacks=[*loggers, *(extra_callbacks or [])])
        grid = tuner.fit()
    why = pending.fired(experiment_dir)
    if why:
        raise PendingTimeoutError(experiment_dir, grid, why)
    return grid


class PendingTimeoutError(UserError):
    """The search stopped because trials waited too long for resources; ``grid`` holds what finished."""

    def __init__(self, experiment_dir: str, grid: Any, why: str) -> None:
        super().__init__(experiment_dir, "resources", f"search stopped: {why}",
                         fix=f"give the cluster such nodes (or change resources), then continue with "
                             f"tune-lip search --resume {Path(experiment_dir).name}; finished trials are kept")
        self.grid = grid
        self.experiment_dir = experiment_dir
