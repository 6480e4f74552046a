"""Record what produced an experiment, in its ``provenance.json`` (read by `tune_lip.analysis.provenance`).

One entry per run of the search (the start, then each ``--resume``): when, the command, the
tune-lip version and git commit (when tune-lip runs from a git checkout; ``dirty`` when it has
uncommitted changes), the Python, torch, Ray, Optuna, numpy and pandas versions, and the
machine. ``data``: the SHA-256 of every data set the driver read before the search
(`tune_lip.data.ImageData.fingerprint`). Each trial's reports add its own ``device``,
``accelerator`` and ``data_sha256``.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tune_lip.analysis.provenance import PROVENANCE_FILE, read_provenance

__all__ = ["run_record", "record"]

PACKAGES = ("torch", "ray", "optuna", "numpy", "pandas", "scipy")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(source: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_record() -> dict[str, Any]:
    """This process: versions, commit, machine, command."""
    source = Path(__file__).resolve().parents[2]            # the checkout holding tune_lip/
    commit = _git(source, "rev-parse", "--short=12", "HEAD") if (source / ".git").exists() else None
    dirty = bool(_git(source, "status", "--porcelain", "--untracked-files=no")) if commit else None
    return {
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": sys.argv,
        "tune_lip": {"version": _version("tune-lip"), "commit": commit, "dirty": dirty},
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "machine": {"platform": platform.platform(), "node": platform.node(), "processor": platform.machine()},
    }


def record(experiment_dir: str, *, data: dict[str, dict[str, Any]] | None = None,
           resumed: bool = False) -> dict[str, Any]:
    """Add this run (the start, or a resume) to the experiment's provenance (data hashes merged
    in); returns it all."""
    from tune_lip.analysis.results import storage_location

    provenance = read_provenance(experiment_dir) or {"runs": [], "data": {}}
    provenance["runs"].append({"run": "resume" if resumed else "start", **run_record()})
    provenance.setdefault("data", {}).update(data or {})
    fs, path = storage_location(f"{experiment_dir}/{PROVENANCE_FILE}")
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(provenance, indent=2, default=str).encode())
    return provenance
