"""Step-time calibration: the Lipschitz code's ``time_batch_all``, as a Parquet table.

For every model configuration and batch size, full training steps (data sampling,
augmentation, forward, backward, optimizer step) are timed after warm-up on this machine's
accelerator. A ``reference_hours`` budget reads the table to turn "H hours on an A100" into
a step count that is the same on every node.

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
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tune_lip.train_loop import LipschitzConfig, LipschitzLoop, model_key, pick_device

__all__ = ["accelerator_type", "time_batch_all", "append_table"]


def accelerator_type(device: torch.device | None = None) -> str:
    """Ray-style accelerator name of ``device``: "A100", "V100", "T4", "H100", ... or "CPU"."""
    device = device or pick_device("auto")
    if device.type != "cuda":
        return "CPU"
    name = torch.cuda.get_device_name(device)
    for known in ("H200", "H100", "A100", "A10G", "A10", "L40S", "L4", "V100", "T4", "P100", "K80"):
        if known in name.upper():
            return known
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


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


def append_table(new: pd.DataFrame, path: str | Path) -> Path:
    """Append rows to the calibration table at ``path`` (created if missing), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat([pd.read_parquet(path), new], ignore_index=True) if path.exists() else new
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
