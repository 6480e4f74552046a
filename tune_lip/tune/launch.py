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

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from tune_lip.errors import ConfigError, UserError
from tune_lip.studies.registry import get as get_study
from tune_lip.studies.registry import study_metrics
from tune_lip.tune.spec import SearchSpec

__all__ = ["study_metrics", "check_spec", "check_data", "check_placement", "check_resources", "preflight",
           "placement_table", "start_ray", "make_search_alg", "build_tuner", "run_search", "experiment_name",
           "load_space", "stored_spec", "resume_spec", "storage_root", "PendingTimeoutError", "DEFAULT_STORAGE", "SPEC_FILE", "LAUNCH_FILE"]

DEFAULT_STORAGE = "tune_lip_results"


# ---------------------------------------------------------------------------- validation

def check_spec(spec: SearchSpec) -> dict[str, Any]:
    """Validate the space against its study's config; return the representative trial config.

    The study's config class builds the representative trial config (every domain at a
    valid value); its ConfigError becomes a UserError naming the YAML file and key.
    """
    config = {**spec.representative_config(), "budget": spec.budget.to_dict(), "reports": spec.reports}
    try:
        get_study(spec.study).config.from_dict(config)
    except ConfigError as exc:
        raise UserError(spec.path, exc.key, exc.problem) from None
    return config


def _num_train(data: Any, where: str) -> int:
    """Training examples of the data set a study's ``DataConfig`` names (reads it)."""
    from tune_lip.data.datasets import load_dataset

    try:
        return load_dataset(data.name, data_dir=data.data_dir, download=data.download, **data.options).num_train
    except ValueError as exc:
        raise UserError(where, "dataset", str(exc)) from None


def _study_config(spec: SearchSpec, config: dict[str, Any]) -> Any:
    try:
        return get_study(spec.study).config.from_dict(config)
    except ConfigError as exc:
        raise UserError(spec.path, exc.key, exc.problem) from None


def check_data(spec: SearchSpec) -> None:
    """Read every data set the grid's trials train on, and check each trial's budget buys at
    least one step per report; a UserError names the missing or broken file, or the budget.

    Run on the driver before Ray starts, for a local Ray, whose workers read the same files.
    Each distinct data set is read once (the generated npz's conversion is cached on disk, so
    the trials find it done).
    """
    sizes: dict[str, int] = {}
    for config in grid_configs(spec):
        cfg = _study_config(spec, config)
        data = getattr(cfg, "dataset", None)
        num_train = 0
        if data is not None and hasattr(data, "name"):   # a study with a data set (not the NQM)
            key = json.dumps([data.name, data.data_dir, data.options], sort_keys=True, default=str)
            if key not in sizes:
                sizes[key] = _num_train(data, spec.path)
            num_train = sizes[key]
        if spec.budget.kind not in ("epochs", "examples"):
            continue   # steps are checked by the spec; time budgets are decided while running
        steps = (cfg.total_steps(num_train) if callable(getattr(cfg, "total_steps", None))
                 else spec.budget.total_steps(batch_size=cfg.dataset.batch_size, num_train=num_train))
        if steps is not None and steps < spec.reports:
            raise UserError(spec.path, "budget", f"{spec.budget.amount:g} {spec.budget.kind} buy {steps} steps at "
                            f"batch size {cfg.dataset.batch_size}, fewer than the {spec.reports} reports",
                            fix="use a larger budget or fewer reports")


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


CALIBRATION_FILE = "calibration.parquet"


def _resolve_calibration(spec: SearchSpec, storage_path: str, experiment_dir: str) -> SearchSpec:
    """For a reference_hours budget: check the calibration table covers every grid point,
    then copy it into the experiment, where every node reads it (local path or URI)."""
    if spec.budget.kind != "reference_hours":
        return spec
    from tune_lip.analysis.results import storage_location
    from tune_lip.cluster.calibrate import append_table
    from tune_lip.studies.budget import lookup_step_seconds, read_calibration
    from tune_lip.studies.lipschitz import LipschitzConfig, model_key

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
    table = read_calibration(source)
    assert spec.budget.reference is not None
    for config in grid_configs(spec):
        cfg = LipschitzConfig.from_dict(config)
        lookup_step_seconds(table, accelerator=spec.budget.reference, model_key=model_key(cfg),
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


def experiment_name(spec: SearchSpec) -> str:
    stem = Path(spec.path).stem or "search"
    return f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


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


def preflight(spec: SearchSpec, *, address: str | None, num_cpus: int | None = None) -> None:
    """Everything that can be checked before Ray starts, in the order a user would fix it:
    the space against its study, the data files and the budget (local Ray only: a cluster's
    workers may see other files), and whether the local machine can run the trials at all."""
    check_spec(spec)
    if _is_local(address):
        check_data(spec)
        check_resources(spec, address=address, num_cpus=num_cpus)   # with check_placement
    else:
        check_placement(spec)   # the memory rule; the cluster's nodes once it is joined


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


def _trainable(spec: SearchSpec, present: tuple[str, ...] = ()) -> Any:
    """The study's Trainable with per-trial resources (`tune_lip.cluster.placement`)."""
    from ray import tune

    from tune_lip.cluster.placement import resource_function
    from tune_lip.trainables.base import trainable_for

    return tune.with_resources(trainable_for(spec.study),
                               resource_function(spec.resources, present=present, where=spec.path,
                                                 estimate=_estimator(spec)))


def _trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default packs the whole config into the name)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def make_search_alg(spec: SearchSpec) -> Any:
    """The spec's searcher: `GroupedOptunaSearch`, `BoundarySearch`, or Tune's random/grid generator."""
    from tune_lip.tune.searchers import GroupedOptunaSearch, random_search

    if spec.searcher.name == "boundary":
        from tune_lip.tune.boundary_search import BoundarySearch
        from tune_lip.tune.spec import get_in

        domain = get_in(spec.space, spec.searcher.key)
        dataset = spec.representative_config().get("dataset") or {}
        return BoundarySearch(spec.representative_config(), key=spec.searcher.key, lo=domain.lo, hi=domain.hi,
                              initial=spec.searcher.initial, max_trials=spec.num_samples, seed=spec.searcher.seed,
                              num_classes=100 if dataset.get("name") == "cifar100" else 10)
    if spec.searcher.name == "optuna":
        return GroupedOptunaSearch(spec.space, per=spec.searcher.per, samples_per_group=spec.num_samples,
                                   seed=spec.searcher.seed, n_startup_trials=spec.searcher.n_startup_trials)
    return random_search(spec.searcher.seed, max_concurrent=spec.max_concurrent_trials)


def build_tuner(spec: SearchSpec, *, name: str, storage_path: str | Path,
                extra_callbacks: list[Any] | None = None, verbose: int = 1, search_alg: Any = None) -> Any:
    """The `ray.tune.Tuner` for ``spec``; the experiment goes to ``storage_path/name``.

    search_alg: default `make_search_alg(spec)`; pass your own to inspect it afterwards
    (e.g. the Optuna studies of a `GroupedOptunaSearch`).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from tune_lip.tune.callbacks import ParquetResultsCallback
    from tune_lip.tune.pending import PendingTimeout
    from tune_lip.tune.schedulers import GroupedASHAScheduler
    from tune_lip.tune.searchers import GroupedOptunaSearch, to_tune_space

    storage = storage_root(storage_path)
    config = check_spec(spec)
    present = _present_accelerators()
    check_placement(spec, present)
    spec = _resolve_calibration(spec, storage, f"{storage}/{name}")
    fixed = {"budget": spec.budget.to_dict(), "reports": spec.reports}

    search_alg = search_alg or make_search_alg(spec)
    if isinstance(search_alg, GroupedOptunaSearch):
        num_samples = search_alg.total_samples
        param_space = fixed
    elif spec.searcher.name == "boundary":  # BoundarySearch proposes whole configs
        num_samples = spec.num_samples
        param_space = fixed
    else:
        num_samples = spec.num_samples
        param_space = {**to_tune_space(spec.space), **fixed}

    if spec.scheduler.name == "asha":
        num_train = (_num_train(_study_config(spec, config).dataset, spec.path) if spec.budget.kind == "epochs"
                     else None)
        max_t = spec.budget.progress_max(num_train=num_train)
        asha: dict[str, Any] = dict(time_attr=spec.budget.progress_attr, max_t=max_t,
                    grace_period=max(spec.scheduler.grace_fraction * max_t, 1e-9),
                    reduction_factor=spec.scheduler.reduction_factor, brackets=spec.scheduler.brackets)
        # With searcher.per, ASHA compares trials only within their group (e.g. batch size).
        scheduler: Any = (GroupedASHAScheduler(group_keys=spec.searcher.per, **asha) if spec.searcher.per
                          else ASHAScheduler(**asha))
    else:
        scheduler = FIFOScheduler()

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


SPEC_FILE = "search_space.yaml"   # the resolved spec the search ran (overrides applied)
LAUNCH_FILE = "launch.yaml"       # how it was started: the space file, its text, the overrides


def storage_root(storage_path: str | Path) -> str:
    """A URI (``s3://bucket/x``) as given; a local path made absolute, as Ray wants it."""
    text = str(storage_path)
    return text.rstrip("/") if "://" in text else str(Path(text).expanduser().resolve())


def _write_text(target: str, text: str) -> None:
    from tune_lip.analysis.results import storage_location

    fs, path = storage_location(target)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def _read_text(target: str) -> str | None:
    from tune_lip.analysis.results import storage_location

    fs, path = storage_location(target)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


def save_spec(spec: SearchSpec, experiment_dir: str, *, overrides: dict[str, Any] | None = None) -> str:
    """Record the searched spec in the experiment: the resolved spec (``search_space.yaml``,
    which the analysis and ``--resume NAME`` read) and how it was launched (``launch.yaml``:
    the space file, its text and the command-line overrides)."""
    import yaml

    from tune_lip.analysis.results import storage_location

    fs, path = storage_location(experiment_dir)
    fs.create_dir(path, recursive=True)
    _write_text(f"{experiment_dir}/{SPEC_FILE}",
                f"# searched from {spec.path}\n" + yaml.safe_dump(spec.to_dict(), sort_keys=False))
    source = Path(spec.path)
    launch = {"space": spec.path,
              "space_text": source.read_text(encoding="utf-8") if source.is_file() else None,
              "overrides": overrides or {}}
    _write_text(f"{experiment_dir}/{LAUNCH_FILE}", yaml.safe_dump(launch, sort_keys=False))
    return f"{experiment_dir}/{SPEC_FILE}"


def stored_spec(experiment_dir: str) -> tuple[SearchSpec, dict[str, Any]]:
    """The resolved spec an experiment ran, and the overrides it was launched with."""
    import yaml

    from tune_lip.tune.spec import parse_spec

    text = _read_text(f"{experiment_dir}/{SPEC_FILE}")
    if text is None:
        raise UserError(experiment_dir, None, f"no {SPEC_FILE} here: the search was started by an older "
                        "tune-lip or by hand", fix="name its space too: tune-lip search SPACE --name NAME --resume")
    spec = parse_spec(yaml.safe_load(text), where=f"{experiment_dir}/{SPEC_FILE}", studies=study_metrics())
    launch = yaml.safe_load(_read_text(f"{experiment_dir}/{LAUNCH_FILE}") or "{}") or {}
    return spec, dict(launch.get("overrides") or {})


def _differences(stored: SearchSpec, given: SearchSpec) -> list[str]:
    """``key: started with X, given Y`` for each key (dotted, ``space.`` inside the space) where
    the two specs differ."""
    from tune_lip.analysis.results import flatten_result

    a, b = (flatten_result({k: v for k, v in s.to_dict().items() if k != "description"}) for s in (stored, given))
    return [f"{key.replace('/', '.')}: started with {a.get(key)!r}, given {b.get(key)!r}"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def resume_spec(experiment_dir: str, *, space: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> SearchSpec:
    """The spec to resume ``experiment_dir`` with: the stored one, or ``space`` (with the stored
    overrides, then ``overrides``) if it resolves to the same spec. A UserError says what differs."""
    from tune_lip.tune.spec import load_spec

    stored, launched = stored_spec(experiment_dir)
    if space is None:
        given = stored.with_overrides(**_override_values(overrides or {}), where="--resume")
        where = "--resume"
    else:
        given = load_spec(space, studies=study_metrics())
        given = given.with_overrides(**_override_values({**launched, **(overrides or {})}), where=given.path)
        where = given.path
    diff = _differences(stored, given)
    if diff:
        raise UserError(where, None, f"differs from the spec {Path(experiment_dir).name} was started with "
                        f"({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''})",
                        fix=f"resume with `tune-lip search --resume {Path(experiment_dir).name}` and no SPACE "
                            "or overrides, or start a new search under another --name")
    return given


def load_space(space: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """A search space (a YAML file or a shipped name) validated against its study, with the
    command-line ``overrides`` (num_samples, budget, resources, pending_timeout_seconds) applied."""
    from tune_lip.tune.spec import load_spec

    spec = load_spec(space, studies=study_metrics())
    return spec.with_overrides(**_override_values(overrides or {}), where="command line")


def _override_values(overrides: dict[str, Any]) -> dict[str, Any]:
    keys = ("num_samples", "budget", "resources", "pending_timeout_seconds")
    return {k: overrides[k] for k in keys if overrides.get(k) is not None}


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
    from tune_lip.tune import pending

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
    preflight(spec, address=address, num_cpus=num_cpus)
    loggers = [] if resume else _logger_callbacks(wandb, mlflow, name)  # input errors first: nothing started
    start_ray(address, num_cpus=num_cpus)
    if not _is_local(address):
        check_resources(spec, address=address)
    pending.clear(experiment_dir)
    if resume:
        tuner = tune.Tuner.restore(experiment_dir, trainable=_trainable(spec, _present_accelerators()),
                                   resume_unfinished=True, resume_errored=True)
        _follow_the_experiment(tuner, experiment_dir)
        with _new_trials_where_the_experiment_is():
            grid = tuner.fit()
    else:
        save_spec(spec, experiment_dir, overrides=overrides)
        tuner = build_tuner(spec, name=name, storage_path=storage, verbose=verbose,
                            extra_callbacks=[*loggers, *(extra_callbacks or [])])
        grid = tuner.fit()
    why = pending.fired(experiment_dir)
    if why:
        raise PendingTimeoutError(experiment_dir, grid, why)
    return grid


def _follow_the_experiment(tuner: Any, experiment_dir: str) -> None:
    """Point a restored experiment's tune-lip callbacks at where the experiment is now.

    ``tuner.pkl`` holds the callbacks with the experiment path they were created with; an
    experiment copied off a cluster or renamed would otherwise write its Parquet results to
    the old path (or fail there). Ray itself relocates the trials it restores.
    """
    from tune_lip.tune.callbacks import ParquetResultsCallback
    from tune_lip.tune.pending import PendingTimeout

    run_config = tuner._local_tuner.get_run_config()   # Ray has no public accessor
    for callback in [*(run_config.callbacks or []), run_config.stop]:
        if isinstance(callback, (ParquetResultsCallback, PendingTimeout)):
            callback.experiment = experiment_dir


@contextlib.contextmanager
def _new_trials_where_the_experiment_is() -> Iterator[None]:
    """While a restored search runs, its new trials go where the experiment is now.

    Ray (2.60) restores the search algorithm's state with the experiment spec it pickled,
    storage location included, so trials a restored searcher creates would be written to the
    experiment's old path. After the controller's ``resume`` this points that spec (a
    `SearchGenerator`'s experiment, or a `BasicVariantGenerator`'s iterators) at the
    controller's storage, which `Tuner.restore` built from the path given.
    """
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.resume

    def resume(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        alg = self._search_alg
        experiment = getattr(alg, "_experiment", None)
        specs = [experiment.spec] if experiment is not None else []
        specs += [it.unresolved_spec for it in getattr(alg, "_iterators", [])]
        for spec in specs:
            if isinstance(spec, dict) and "storage" in spec:
                spec["storage"] = self._storage

    TuneController.resume = resume   # type: ignore[method-assign]
    try:
        yield
    finally:
        TuneController.resume = original   # type: ignore[method-assign]


class PendingTimeoutError(UserError):
    """The search stopped because trials waited too long for resources; ``grid`` holds what finished."""

    def __init__(self, experiment_dir: str, grid: Any, why: str) -> None:
        super().__init__(experiment_dir, "resources", f"search stopped: {why}",
                         fix=f"give the cluster such nodes (or change resources), then continue with "
                             f"tune-lip search --resume {Path(experiment_dir).name}; finished trials are kept")
        self.grid = grid
        self.experiment_dir = experiment_dir
