"""What produced an experiment: read its ``provenance.json`` and say it in a few lines.

`tune-lip search` writes the file when a search starts and adds a run to it on every
``--resume`` (`tune_lip.tune.provenance`): the tune-lip version and git commit, the Python,
torch, Ray and Optuna versions, the machine, the command, and the SHA-256 of every data set
the driver read. Each report carries the trial's own ``device``, ``accelerator`` and
``data_sha256`` (the data set as the trial read it), so a trial on another node is covered too.

Example:
    >>> describe({"runs": [{"started": "2026-12-02T10:00:00", "tune_lip": {"version": "0.1.0",
    ...     "commit": "abc1234", "dirty": False}, "python": "3.11.7",
    ...     "packages": {"torch": "2.14.1", "ray": "2.60.0", "optuna": "5.0.0"}}],
    ...     "data": {"digits": {"sha256": "40e9c367b975aa"}}})[:2]
    ['produced by tune-lip 0.1.0 (commit abc1234), Python 3.11.7, torch 2.14.1, ray 2.60.0, optuna 5.0.0', 'data: digits sha256 40e9c367b975']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["PROVENANCE_FILE", "read_provenance", "describe"]

PROVENANCE_FILE = "provenance.json"


def read_provenance(experiment: str | Path) -> dict[str, Any]:
    """The experiment's ``provenance.json`` ({} for an experiment written before tune-lip kept one)."""
    from tune_lip.analysis.results import storage_location

    fs, path = storage_location(f"{experiment}/{PROVENANCE_FILE}")
    try:
        with fs.open_input_stream(path) as f:
            return dict(json.loads(bytes(f.read()).decode()))
    except FileNotFoundError:
        return {}


def _versions(run: dict[str, Any]) -> str:
    tl = run.get("tune_lip") or {}
    commit = tl.get("commit")
    origin = f" (commit {commit}{', uncommitted changes' if tl.get('dirty') else ''})" if commit else ""
    packages = run.get("packages") or {}
    parts = [f"tune-lip {tl.get('version', '?')}{origin}", f"Python {run.get('python', '?')}"]
    parts += [f"{name} {packages[name]}" for name in ("torch", "ray", "optuna") if packages.get(name)]
    return ", ".join(parts)


def describe(provenance: dict[str, Any], df: pd.DataFrame | None = None) -> list[str]:
    """A few lines for a summary: versions (each resumed run that differs, too), the data
    sets' hashes, and where the trials ran (from the reports' ``device``/``accelerator``)."""
    runs = provenance.get("runs") or []
    if not runs:
        return ["provenance: not recorded (an experiment from before tune-lip kept provenance.json)"]
    if runs[0].get("run") == "resume":   # started by a tune-lip that kept no provenance
        lines = [f"started by an older tune-lip (no provenance); resumed {runs[0].get('started', '?')} "
                 f"by {_versions(runs[0])}"]
    else:
        lines = [f"produced by {_versions(runs[0])}"]
    for run in runs[1:]:
        if _versions(run) != _versions(runs[0]):
            lines.append(f"resumed {run.get('started', '?')} by {_versions(run)}")
    data = provenance.get("data") or {}
    if data:
        lines.append("data: " + "; ".join(f"{name} sha256 {d.get('sha256', '?')[:12]}" for name, d in data.items()))
    if df is not None and not df.empty:
        last = df.sort_values("training_iteration").groupby("trial_id").tail(1)
        for column in ("device", "accelerator"):
            if column in last:
                counts = last[column].dropna().astype(str).value_counts()
                if len(counts):
                    lines.append(f"{column}: " + ", ".join(f"{k} ({v} trials)" for k, v in counts.items()))
        if "data_sha256" in last:
            hashes = sorted(last["data_sha256"].dropna().astype(str).str[:12].unique())
            if len(hashes) > 1 or (hashes and data and hashes[0] not in
                                   {d.get("sha256", "")[:12] for d in data.values()}):
                lines.append(f"trials read data sha256 {', '.join(hashes)}")
    return lines
