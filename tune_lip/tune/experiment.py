"""An experiment's directory: its name, the spec it was started with (``search_space.yaml``,
``launch.yaml``), reading that spec back for ``--resume``, and keeping a resumed experiment
writing where it now is (it may have been copied or moved).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from tune_lip.errors import UserError
from tune_lip.studies.registry import study_metrics
from tune_lip.tune.spec import SearchSpec, load_spec, parse_spec


def experiment_name(spec: SearchSpec) -> str:
    stem = Path(spec.path).stem or "search"
    return f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


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

    text = _read_text(f"{experiment_dir}/{SPEC_FILE}")
    if text is None:
        raise UserError(experiment_dir, None, f"no {SPEC_FILE} here: the search was started by an older "
                        "tune-lip or by hand", fix="name its space too: tune-lip search SPACE --name NAME --resume")
    # An experiment written before the validation split may have searched a metric no longer
    # reported (e.g. certified_acc); it resumes reporting it (`tune_lip.trainables.base`).
    spec = parse_spec(yaml.safe_load(text), where=f"{experiment_dir}/{SPEC_FILE}",
                      studies=study_metrics(legacy=True))
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

    spec = load_spec(space, studies=study_metrics())
    return spec.with_overrides(**_override_values(overrides or {}), where="command line")


def _override_values(overrides: dict[str, Any]) -> dict[str, Any]:
    keys = ("num_samples", "budget", "resources", "pending_timeout_seconds", "replicates")
    return {k: overrides[k] for k in keys if overrides.get(k) is not None}


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
