"""Step-time calibration: the Lipschitz code's ``time_batch_all``, as a Parquet table.

For every model configuration and batch size, full training steps (data sampling,
augmentation, forward, backward, optimizer step) are timed after warm-up on this machine's
accelerator. A ``reference_hours`` budget reads the table to turn "H hours on an A100" into
a step count that is the same on every node. On a Ray cluster, `calibrate_cluster` times the
same configs on every accelerator type present (one Ray task per type, pinned to it with
``accelerator_type:<T>``, on a whole GPU) and returns one table.

Example:
    >>> table = time_batch_all([{"model": {"name": "aol_mlp", "width": 64, "depth": 2},
    ...     "dataset": {"name": "synthetic", "batch_size": 32}}], warmup_steps=1, timed_steps=2,
    ...     progress=False)
    >>> list(table.columns)[:3]
    ['accelerator', 'model_key', 'batch_size']
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tune_lip.cluster.placement import accelerator_type
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop, model_key

__all__ = ["time_batch_all", "calibrate_cluster", "append_table"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batch_all(configs: Sequence[dict[str, Any]], *, warmup_steps: int = 5, timed_steps: int = 20,
                   accelerator: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Seconds per full training step for each trial config (one row each).

    Each config is a trial config (its ``dataset.batch_size`` set); timing excludes
    set-up and warm-up, and ends with a device sync so queued GPU work is counted.
    """
    from tqdm.auto import tqdm

    rows = []
    for raw in tqdm(configs, desc="calibrating", unit="config", disable=not progress):
        raw = {**raw, "budget": {"steps": warmup_steps + timed_steps}, "reports": 1}
        cfg = LipschitzConfig.from_dict(raw)
        loop = LipschitzLoop(cfg)
        loop.train_for(warmup_steps)
        _sync(loop.device)
        start = time.perf_counter()
        loop.train_for(timed_steps)
        _sync(loop.device)
        elapsed = time.perf_counter() - start
        rows.append({
            "accelerator": accelerator or accelerator_type(loop.device),
            "model_key": model_key(cfg),
            "batch_size": cfg.dataset.batch_size,
            "step_seconds": elapsed / timed_steps,
            "steps_timed": timed_steps,
            "torch_version": torch.__version__,
            "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
    return pd.DataFrame(rows)


def calibrate_cluster(configs: Sequence[dict[str, Any]], *, warmup_steps: int = 5, timed_steps: int = 20,
                      types: Sequence[str] | None = None, timeout_s: float | None = None) -> pd.DataFrame:
    """`time_batch_all` on each accelerator type of the connected Ray cluster, as one table.

    types: default every type with a live node or one the autoscaler can start (from ``ray up``'s
    config on the head, `tune_lip.cluster.placement.launchable_accelerators`). Each
    type's task asks for one whole GPU and ``accelerator_type:<T>: 0.001``, so it runs on a node
    of that type, alone on its GPU; the types run in parallel. A named type with no node yet
    waits for the autoscaler to start one (the pending task is the demand it scales on).
    timeout_s: give up (UserError) after this long; None waits for ever.
    """
    import ray

    from tune_lip.cluster.placement import PIN_AMOUNT, cluster_accelerators, launchable_accelerators
    from tune_lip.errors import UserError

    kinds = list(types) if types else sorted(set(cluster_accelerators()) | set(launchable_accelerators()))
    if not kinds:
        raise UserError("tune-lip calibrate --cluster", None, "the Ray cluster has no GPU node with an "
                        "accelerator_type:<T> resource", fix="start GPU workers (ray up cluster.yaml), "
                        "or calibrate on this machine without --cluster")
    timer: Any = ray.remote(max_retries=1)(time_batch_all)  # Ray's stubs do not carry the signature
    refs = [timer.options(num_cpus=1, num_gpus=1, resources={f"accelerator_type:{kind}": PIN_AMOUNT},
                          name=f"calibrate-{kind}").remote(list(configs), warmup_steps=warmup_steps,
                                                           timed_steps=timed_steps, accelerator=kind,
                                                           progress=False)
            for kind in kinds]
    try:
        tables = ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise UserError("tune-lip calibrate --cluster", None, f"calibration did not finish in {timeout_s:g} s "
                        f"on {', '.join(kinds)}", fix="check that nodes of every type can start "
                        "(ray status), or calibrate fewer batch sizes") from None
    return pd.concat(tables, ignore_index=True)


def append_table(new: pd.DataFrame, path: str | Path) -> str:
    """Append rows to the calibration table at ``path`` (local or a URI; created if missing).

    A local table is replaced atomically, so a crash never leaves half a table.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from tune_lip.analysis.results import storage_location
    from tune_lip.studies.budget import read_calibration

    fs, inner = storage_location(str(path))
    exists = fs.get_file_info(inner).type == pafs.FileType.File
    table = pd.concat([read_calibration(path), new], ignore_index=True) if exists else new
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = Path(inner).with_name(f".{Path(inner).name}.tmp")
        pq.write_table(arrow, str(tmp))
        os.replace(tmp, inner)
    else:  # object stores write whole objects: a reader never sees half of one
        pq.write_table(arrow, inner, filesystem=fs)
    return str(path)
