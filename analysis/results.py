"""Experiment results as pandas DataFrames (no torch, no Ray at import).

During a search, a Tune callback (`tune_lip.tune.callbacks.ParquetResultsCallback`) appends
every reported result to Parquet files in ``<experiment>/tune_lip_results/``. `load`
reads them back: one row per report, columns named as Ray names them in
``Result.metrics_dataframe`` (``config/optimizer/lr``, ``val_certified_acc``, ``trial_id``,
``training_iteration``, ...). Experiments without Parquet files (or with
``source="ray"``) are read from Ray's own per-trial ``result.json`` files instead.
Paths may be local or URIs that pyarrow understands (``s3://bucket/tune-lip/<name>``).

Every config value comes back as the Python value the Trainable got: lists as lists (not numpy
arrays), dicts as dicts, strings, bools, None. `write_results` stores the columns Arrow cannot
hold faithfully (lists, dicts, mixed types) as JSON text and names them in the file's schema
metadata; `load` decodes them. In a numeric column, a None reads as NaN (pandas' missing number).

Example:
    >>> df = load("tune_lip_results/demo")                                   # doctest: +SKIP
    >>> last_reports(df).groupby("config/dataset/batch_size")["val_certified_acc"].max()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["PARQUET_DIR", "compact", "flatten_result", "jsonable", "load", "read_ray_results", "storage_location", "last_reports", "best_reports", "best_per_group", "config_column",
           "ran_full_budget", "write_results", "hashable_value", "json_cells"]

PARQUET_DIR = "tune_lip_results"
JSON_COLUMNS = b"tune_lip.json_columns"  # schema metadata key: JSON list of the columns stored as JSON text
_COMPACTED = "~compact-"  # in the name of a part `compact` wrote: one row per (trial, iteration), sorted


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

    if isinstance(value, Mapping):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(x) for x in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_nested(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple, set, frozenset, np.ndarray))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)  # as Ray's result.json encoder does for anything else


def _json_text(value: Any, *, sort_keys: bool = False) -> str:
    try:
        return json.dumps(value, default=_json_default, sort_keys=sort_keys)
    except TypeError:  # sort_keys over keys of mixed types
        return json.dumps(value, default=_json_default)


def hashable_value(value: Any) -> Any:
    """``value``, or for a list, tuple, dict or array its JSON text (keys sorted): a key that
    ``groupby``, ``nunique`` and ``set`` accept, equal for equal values.

    Example:
        >>> hashable_value([0.0706, 0.2824]), hashable_value({"b": 1, "a": None}), hashable_value(3)
        ('[0.0706, 0.2824]', '{"a": null, "b": 1}', 3)
        >>> df = pd.DataFrame({"config/eval/extra_eps": [[0.1], [0.1], [0.2]]})
        >>> int(df["config/eval/extra_eps"].map(hashable_value).nunique())
        2
    """
    return _json_text(value, sort_keys=True) if _is_nested(value) else value


def json_cells(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose list and dict cells are JSON text (for CSV files and printing).

    Example:
        >>> json_cells(pd.DataFrame({"x": [["a", "b"], None]}))["x"].tolist()
        ['["a", "b"]', None]
    """
    out = df.copy()
    for col in df.columns:
        if df[col].dtype == object and df[col].map(_is_nested).any():
            out[col] = _objects([_json_text(v) if _is_nested(v) else v for v in df[col]], df.index)
    return out


def write_results(rows: pd.DataFrame | Sequence[Mapping[str, Any]], path: str | Path, *,
                  filesystem: pafs.FileSystem | None = None) -> None:
    """Write reports to one Parquet file that `load` reads back value for value.

    rows: flat dicts (as `flatten_result` gives; a key a row lacks is null there) or a frame
    (as `load` gives). path: a local path or URI, or a path in ``filesystem``.
    A column with a list, tuple, dict or array value, or with values of types Arrow cannot
    hold in one column (``"auto"`` and ``3``), is stored as JSON text and listed under
    ``tune_lip.json_columns`` in the schema metadata. In a column of ints and floats the ints
    become floats; bools stay bools. Tuples come back as lists, as from Ray's result.json.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_results([{"config/eps": [0.1, 0.2], "config/aug": {}, "lr": 1},
        ...                    {"config/eps": [], "lr": 0.5}], f"{d}/r.parquet")
        ...     load(f"{d}/r.parquet").to_dict("list")
        {'config/eps': [[0.1, 0.2], []], 'config/aug': [{}, None], 'lr': [1.0, 0.5]}
    """
    if isinstance(rows, pd.DataFrame):
        columns: dict[str, Any] = {str(c): rows[c] for c in rows.columns}
    else:
        columns = _row_columns(rows)
    arrays: dict[str, pa.Array] = {}
    as_json: list[str] = []
    for name, values in columns.items():
        arrays[name], encoded = _arrow_column(values)
        if encoded:
            as_json.append(name)
    table = pa.table(arrays)
    table = table.replace_schema_metadata({JSON_COLUMNS: json.dumps(as_json).encode()})
    if filesystem is None:
        filesystem, path = storage_location(path)
    pq.write_table(table, str(path), filesystem=filesystem)


def _row_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows -> one value list per column (None where a row lacks the key); a column with a
    float has its ints (not bools) as floats, so pandas sees one number type per column."""
    names = dict.fromkeys(key for row in rows for key in row)
    out: dict[str, list[Any]] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if any(isinstance(v, float) for v in values):
            values = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
        out[name] = values
    return out


def _arrow_column(values: list[Any] | pd.Series) -> tuple[pa.Array, bool]:
    """(Arrow array, whether it holds JSON text) for one column's values."""
    from_pandas = isinstance(values, pd.Series)
    if isinstance(values, pd.Series):
        if values.dtype != object:
            return pa.Array.from_pandas(values), False
        values = values.tolist()
    if not any(_is_nested(v) for v in values):
        try:
            return pa.array(values, from_pandas=from_pandas), False
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types, e.g. "auto" and 3
            pass
    return pa.array([None if v is None else _json_text(v) for v in values], pa.string()), True


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


def _read_parquet(fs: pafs.FileSystem, path: str) -> pd.DataFrame:
    """One Parquet file as a frame; JSON-text columns decoded and natively nested columns (files
    written before `write_results`) as Python lists and dicts, never numpy arrays."""
    table = pq.read_table(path, filesystem=fs)
    as_json = set(json.loads((table.schema.metadata or {}).get(JSON_COLUMNS, b"[]")))
    df = table.to_pandas()
    for field in table.schema:
        if field.name not in as_json and not pa.types.is_nested(field.type):
            continue
        values = table.column(field.name).to_pylist()
        if field.name in as_json:
            values = [None if v is None else json.loads(v) for v in values]
        df[field.name] = _objects(values, df.index)
    return df


def _objects(values: Sequence[Any], index: pd.Index) -> pd.Series:
    """An object Series holding ``values`` as they are (a list stays one cell)."""
    cells = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        cells[i] = value
    return pd.Series(cells, index=index, dtype=object)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames -> one; a column a frame lacks is None there (NaN once the column is numeric)."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    frames = [f.assign(**{c: None for c in columns if c not in f.columns}) for f in frames]
    # infer_objects: a column of None in one part and floats in another is float, as in one part
    return pd.concat(frames, ignore_index=True)[columns].infer_objects()


def _parts(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    """The Parquet parts in write order (their names start with the write time in ns)."""
    return [i for i in _children(fs, folder)
            if i.base_name.startswith("part-") and i.base_name.endswith(".parquet")]


def compact(path: str | Path) -> int:
    """Merge an experiment's Parquet parts into one file; returns how many parts it replaced.

    A search writes one part per flush (hundreds over a long search): reading them is most of
    `load`'s time, and one file reads in a fraction of it. The merged file keeps what `load`
    would return (the latest report of each trial and iteration) and is named after the newest
    part it holds, so parts written later still sort, and win, after it. It is written under a
    temporary name and renamed before any part is deleted: a compaction killed at any point
    loses nothing (before the rename the parts are whole; after it, a part not yet deleted
    only repeats rows of the merged file, which `load` drops), and the next one finishes it.
    The Parquet callback compacts when a search ends and after a resume.
    """
    fs, exp = _experiment(path)
    folder = f"{exp}/{PARQUET_DIR}"
    for stale in _children(fs, folder):  # temporaries of a writer that was killed
        if stale.base_name.startswith(".") and stale.base_name.endswith(".tmp"):
            fs.delete_file(stale.path)
    parts = _parts(fs, folder)
    if len(parts) < 2:
        return 0
    df = _concat([_read_parquet(fs, i.path) for i in parts])
    if {"trial_id", "training_iteration"} <= set(df.columns):
        df = df.drop_duplicates(subset=["trial_id", "training_iteration"], keep="last")
        df = df.sort_values(["trial_id", "training_iteration"], kind="stable")
    newest = parts[-1].base_name.split("-")[1]
    name = f"part-{newest}-{_COMPACTED}{uuid.uuid4().hex[:8]}.parquet"  # "~" sorts after the hex ids
    tmp = f"{folder}/.{name}.tmp"
    write_results(df.reset_index(drop=True), tmp, filesystem=fs)
    fs.move(tmp, f"{folder}/{name}")
    for part in parts:
        fs.delete_file(part.path)
    return len(parts)


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
    columns = list(dict.fromkeys(key for row in rows for key in row))
    # None, not NaN, where a row lacks a list- or dict-valued key (as `load` gives from Parquet)
    return pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)


def load(path: str | Path, *, source: str = "auto") -> pd.DataFrame:
    """All reports of an experiment, one row per report (see the module docstring).

    path: the experiment folder, or one Parquet file (``tune-lip results --parquet``'s export).
    source: "auto" (Parquet if present, else Ray's files), "parquet" or "ray".
    A trial resumed from a checkpoint re-reports some iterations; the latest report of each
    (trial_id, training_iteration) is kept. Rows are sorted by trial and iteration.
    Config values come back as the Trainable got them: lists as lists, dicts as dicts.
    """
    if source not in ("auto", "parquet", "ray"):
        raise ValueError(f"source must be auto, parquet or ray, got {source!r}")
    fs, location = storage_location(path)
    if source != "ray" and fs.get_file_info(location).type == pafs.FileType.File:
        df = _read_parquet(fs, location)
    else:
        fs, exp = _experiment(path)
        parts = _parts(fs, f"{exp}/{PARQUET_DIR}") if source != "ray" else []
        if len(parts) == 1 and _COMPACTED in parts[0].base_name:
            return _read_parquet(fs, parts[0].path)   # `compact` wrote it deduplicated and sorted
        df = _concat([_read_parquet(fs, i.path) for i in parts])
        if df.empty and source != "parquet":
            df = read_ray_results(path)
    if df.empty or not {"trial_id", "training_iteration"} <= set(df.columns):
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


def best_per_group(df: pd.DataFrame, *, metric: str, mode: str = "max", by: Sequence[str]) -> pd.DataFrame:
    """The best trial (by its last report's ``metric``) in each group of the config keys ``by``
    (dotted, e.g. ``["dataset.batch_size", "budget.steps"]``): one row per group, sorted by the
    groups, with the trial's last report. A group whose trials report no ``metric`` is left out.

    Example:
        >>> df = pd.DataFrame({"trial_id": ["a", "b", "c"], "training_iteration": 1, "acc": [0.5, 0.7, 0.6],
        ...                    "config/dataset/batch_size": [16, 16, 64]})
        >>> best_per_group(df, metric="acc", by=["dataset.batch_size"])["trial_id"].tolist()
        ['b', 'c']
    """
    last = last_reports(df)
    cols = [config_column(k) for k in by]
    missing = [k for k, c in zip(by, cols) if c not in last]
    if missing:
        raise KeyError(f"config key {missing[0]!r} not in the results (no column {config_column(missing[0])!r})")
    if metric not in last:
        raise KeyError(f"metric {metric!r} not in the results")
    ranked = last.dropna(subset=[metric]).sort_values(metric, ascending=(mode == "min"), kind="stable")
    keys = [ranked[c].map(hashable_value) for c in cols]
    best = ranked.groupby(keys, sort=False, dropna=False).head(1)
    return best.sort_values(cols, kind="stable").reset_index(drop=True)


def best_reports(df: pd.DataFrame, *, metric: str, mode: str = "max") -> pd.DataFrame:
    """One row per trial: its best report by ``metric``."""
    if metric not in df:
        raise KeyError(f"metric {metric!r} not in the results; columns: {', '.join(sorted(df.columns)[:20])} ...")
    ordered = df.sort_values(metric, ascending=(mode == "min"), kind="stable")
    return ordered.groupby("trial_id", sort=True).head(1).reset_index(drop=True)
