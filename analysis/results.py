"""Experiment results as pandas DataFrames (no torch, no Ray at import).

During a search, a Tune callback (`tune_lip.callbacks.ParquetResultsCallback`) appends
every reported result to Parquet files in ``<experiment>/tune_lip_results/``. `load`
reads them back: one row per report, columns named as Ray names them in
``Result.metrics_dataframe`` (``config/optimizer/lr``, ``certified_acc``, ``trial_id``,
``training_iteration``, ...). Experiments without Parquet files (or with
``source="ray"``) are read from Ray's own per-trial ``result.json`` files instead.

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

__all__ = ["PARQUET_DIR", "flatten_result", "load", "read_ray_results", "last_reports", "best_reports", "config_column",
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


def config_column(key: str) -> str:
    """``optimizer.lr`` -> ``config/optimizer/lr`` (names already in column form pass through)."""
    return key if key.startswith("config/") else "config/" + key.replace(".", "/")


def _experiment_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such experiment directory (pass the folder Ray wrote, "
                                f"e.g. tune_lip_results/<name>)")
    return p


def _from_parquet(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("part-*.parquet"))
    frames = [pd.read_parquet(p) for p in parts]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def read_ray_results(exp: Path) -> pd.DataFrame:
    """All reports from Ray's own per-trial result.json files, flattened like `load`."""
    rows: list[dict[str, Any]] = []
    for result_file in sorted(exp.glob("*/result.json")):
        with open(result_file) as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(flatten_result(json.loads(line)))
    return pd.DataFrame(rows)


def load(path: str | Path, *, source: str = "auto") -> pd.DataFrame:
    """All reports of an experiment, one row per report (see the module docstring).

    source: "auto" (Parquet if present, else Ray's files), "parquet" or "ray".
    A trial resumed from a checkpoint re-reports some iterations; the latest report of each
    (trial_id, training_iteration) is kept. Rows are sorted by trial and iteration.
    """
    exp = _experiment_dir(path)
    if source not in ("auto", "parquet", "ray"):
        raise ValueError(f"source must be auto, parquet or ray, got {source!r}")
    folder = exp / PARQUET_DIR
    use_parquet = source == "parquet" or (source == "auto" and any(folder.glob("part-*.parquet")))
    df = _from_parquet(folder) if use_parquet else read_ray_results(exp)
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
