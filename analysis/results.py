"""Experiment results as pandas DataFrames (no torch, no Ray at import).

During a search, a Tune callback (`tune_lip.callbacks.ParquetResultsCallback`) appends
every reported result to Parquet files in ``<experiment>/tune_lip_results/``. `load`
reads them back: one row per report, columns named as Ray names them in
``Result.metrics_dataframe`` (``config/optimizer/lr``, ``certified_acc``, ``trial_id``,
``training_iteration``, ...). Experiments without Parquet files (or with
``source="ray"``) are read from Ray's own per-trial ``result.json`` files instead.
Paths may be local or URIs that pyarrow understands (``s3://bucket/tune-lip/<name>``).

Example:
    >>> df = load("tune_lip_results/demo")                                   # doctest: +SKIP
    >>> last_reports(df).groupby("config/dataset/batch_size")["certified_acc"].max()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["PARQUET_DIR", "flatten_result", "jsonable", "load", "read_ray_results", "storage_location", "last_reports", "best_reports", "config_column",
           "ran_full_budget"]

PARQUET_DIR = "tune_lip_results"


def flatten_result(result: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with ``/`` between keys, as Ray's ``flatten_dict`` does."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_result(value, prefix=f"{name}/"))
        else:
            out[name] = value
    return out


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, non-finite floats as None, keys as str."""
    import math

    import numpy as np

    if isinstance(value, Mapping):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(x) for x in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def config_column(key: str) -> str:
    """``optimizer.lr`` -> ``config/optimizer/lr`` (names already in column form pass through)."""
    return key if key.startswith("config/") else "config/" + key.replace(".", "/")


def storage_location(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI such as ``s3://bucket/x``."""
    text = str(location)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _experiment(location: str | Path) -> tuple[pafs.FileSystem, str]:
    fs, path = storage_location(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{location}: no such experiment directory (pass the folder Ray wrote, "
                                f"e.g. tune_lip_results/<name>)")
    return fs, path


def _children(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(infos, key=lambda i: i.path)


def _from_parquet(fs: pafs.FileSystem, folder: str) -> pd.DataFrame:
    parts = [i.path for i in _children(fs, folder) if i.base_name.startswith("part-")
             and i.base_name.endswith(".parquet")]
    frames = [pq.read_table(p, filesystem=fs).to_pandas() for p in parts]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def read_ray_results(location: str | Path) -> pd.DataFrame:
    """All reports from Ray's own per-trial result.json files, flattened like `load`."""
    fs, exp = storage_location(location)
    rows: list[dict[str, Any]] = []
    for trial in _children(fs, exp):
        result_file = f"{trial.path}/result.json"
        if trial.type != pafs.FileType.Directory or fs.get_file_info(result_file).type != pafs.FileType.File:
            continue
        with fs.open_input_stream(result_file) as f:
            for line in f.read().decode().splitlines():
                if line.strip():
                    rows.append(flatten_result(json.loads(line)))
    return pd.DataFrame(rows)


def load(path: str | Path, *, source: str = "auto") -> pd.DataFrame:
    """All reports of an experiment, one row per report (see the module docstring).

    source: "auto" (Parquet if present, else Ray's files), "parquet" or "ray".
    A trial resumed from a checkpoint re-reports some iterations; the latest report of each
    (trial_id, training_iteration) is kept. Rows are sorted by trial and iteration.
    """
    if source not in ("auto", "parquet", "ray"):
        raise ValueError(f"source must be auto, parquet or ray, got {source!r}")
    fs, exp = _experiment(path)
    df = _from_parquet(fs, f"{exp}/{PARQUET_DIR}") if source != "ray" else pd.DataFrame()
    if df.empty and source != "parquet":
        df = read_ray_results(path)
    if df.empty:
        return df
    df = df.drop_duplicates(subset=["trial_id", "training_iteration"], keep="last")
    return df.sort_values(["trial_id", "training_iteration"], kind="stable").reset_index(drop=True)


def ran_full_budget(result: Mapping[str, Any]) -> bool:
    """Whether a trial's last report ends its budget (or it diverged), i.e. was not stopped early.

    Ray marks the last result of a trial that ASHA stopped with ``done=True`` too, so ``done``
    cannot tell; a trial that trained its whole budget has made all ``config.reports`` reports.
    Works on a nested result (as Tune passes it) and on a flat row of `load`'s frame.
    """
    reports = result.get("config/reports")
    if reports is None:
        reports = (result.get("config") or {}).get("reports")
    if bool(result.get("diverged", False)):
        return True
    return reports is not None and int(result.get("training_iteration", 0)) >= int(reports)


def last_reports(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its last report (what ``ResultGrid.get_dataframe()`` shows)."""
    return df.sort_values("training_iteration").groupby("trial_id", sort=True).tail(1).reset_index(drop=True)


def best_reports(df: pd.DataFrame, *, metric: str, mode: str = "max") -> pd.DataFrame:
    """One row per trial: its best report by ``metric``."""
    if metric not in df:
        raise KeyError(f"metric {metric!r} not in the results; columns: {', '.join(sorted(df.columns)[:20])} ...")
    ordered = df.sort_values(metric, ascending=(mode == "min"), kind="stable")
    return ordered.groupby("trial_id", sort=True).head(1).reset_index(drop=True)
