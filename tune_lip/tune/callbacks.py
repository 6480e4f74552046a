"""A Tune callback that appends every reported result to Parquet, for fast pandas queries.

Ray's own experiment directory stays the source of truth (``ResultGrid``, ``Tuner.restore``);
this callback writes the same rows, flattened as Ray flattens them, to
``<experiment>/tune_lip_results/part-*.parquet``. Rows are buffered and flushed every
``flush_rows`` results, every ``flush_seconds``, when a trial ends and when the experiment
ends; each part is written to a temporary name and renamed, so a crash never leaves a
half-written file that `tune_lip.analysis.load` would trip on.

When a killed experiment is resumed, results reported before the kill but not yet
flushed are recovered in ``setup`` from Ray's own ``result.json`` files. When the experiment
ends, and after a resume's recovery, the parts are merged into one file
(`tune_lip.analysis.results.compact`), which `load` reads in a fraction of the time.

Parts are written by `tune_lip.analysis.results.write_results`, so list- and dict-valued
config keys come back from `load` as the lists and dicts the Trainable got.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from tune_lip.analysis.results import (
    PARQUET_DIR,
    compact,
    flatten_result,
    load,
    read_ray_results,
    storage_location,
    write_results,
)

__all__ = ["ParquetResultsCallback"]

logger = logging.getLogger(__name__)


class ParquetResultsCallback(Callback):
    """Append results of every trial to Parquet parts under ``experiment_dir/tune_lip_results``."""

    def __init__(self, experiment_dir: str | Path, *, flush_rows: int = 500, flush_seconds: float = 10.0) -> None:
        self.experiment = str(experiment_dir)  # a local path or a URI (s3://...)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    def setup(self, **info: Any) -> None:  # type: ignore[override]  # Ray passes everything by keyword
        """Backfill rows Ray recorded but this callback never flushed (a killed driver)."""
        try:
            ray_rows = read_ray_results(self.experiment)
        except FileNotFoundError:
            return
        if ray_rows.empty:
            return
        ours = load(self.experiment, source="parquet")
        if not ours.empty:
            have = set(zip(ours["trial_id"], ours["training_iteration"]))
            keys = zip(ray_rows["trial_id"], ray_rows["training_iteration"])
            ray_rows = ray_rows[[k not in have for k in keys]]
        self._rows.extend(_records(ray_rows))
        self.flush()
        self.compact()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._rows.append(flatten_result(result))
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()
        self.compact()

    def compact(self) -> None:
        """Merge the parts into one file (`tune_lip.analysis.results.compact`); a failure costs
        only speed, never results, so it is logged and the search goes on."""
        try:
            compact(self.experiment)
        except (OSError, ValueError) as exc:
            logger.warning("could not compact %s/%s (results are intact, load is slower): %s",
                           self.experiment, PARQUET_DIR, exc)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        fs, experiment = storage_location(self.experiment)
        folder = f"{experiment}/{PARQUET_DIR}"
        fs.create_dir(folder, recursive=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = f"{folder}/.{name}.tmp"  # object stores write whole objects; a rename keeps local files whole
        write_results(rows, tmp, filesystem=fs)
        fs.move(tmp, f"{folder}/{name}")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts without the NaN padding of columns a row never had."""
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}
            for row in df.to_dict("records")]
