"""Every experiment records what produced it (issue 13, item 9), and ``tune-lip results`` shows it.

A real search through the CLI: ``provenance.json`` holds the tune-lip version and commit, the
Python, torch, Ray and Optuna versions, the machine, the command and the data set's SHA-256;
every report carries its trial's device, accelerator and data hash. A ``--resume`` adds a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import TUNE_LIP

from tune_lip.analysis import load
from tune_lip.analysis.provenance import describe, read_provenance
from tune_lip.data import load_dataset

pytestmark = pytest.mark.slow

SPACE = """\
study: lipschitz
metric: val_certified_acc
mode: max
budget: {steps: 20}
reports: 2
searcher: {name: grid}
space:
  model: {name: aol_mlp, width: 16, depth: 2}
  dataset: {name: synthetic, batch_size: {grid: [16, 32]}, num_train: 64, num_test: 16}
  optimizer: {lr: {grid: [0.05, 0.2]}}
"""


def test_a_real_experiment_records_its_provenance(tmp_path: Path):
    (tmp_path / "p.yaml").write_text(SPACE)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run([*TUNE_LIP, "search", str(tmp_path / "p.yaml"), "--storage-path", str(tmp_path),
                           "--name", "p"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    provenance = json.loads((tmp_path / "p" / "provenance.json").read_text())
    assert provenance == read_provenance(tmp_path / "p")
    (run,) = provenance["runs"]
    assert run["tune_lip"]["version"] == metadata.version("tune-lip")
    assert run["python"] == ".".join(map(str, sys.version_info[:3]))
    for package in ("torch", "ray", "optuna"):
        assert run["packages"][package] == metadata.version(package)
    assert run["command"][-4:] == ["--storage-path", str(tmp_path), "--name", "p"]
    if (Path(__file__).resolve().parents[1] / ".git").exists():   # a git checkout: its commit
        assert len(run["tune_lip"]["commit"]) == 12 and isinstance(run["tune_lip"]["dirty"], bool)
    expected = load_dataset("synthetic", num_train=64, num_test=16).fingerprint()
    data = provenance["data"]
    assert [d["sha256"] for d in data.values()] == [expected] and list(data.values())[0]["num_train"] == 64
    df = load(tmp_path / "p")
    assert set(df["device"]) == {"cpu"} and set(df["accelerator"]) == {"CPU"}
    assert set(df["data_sha256"]) == {expected}
    shown = subprocess.run([*TUNE_LIP, "results", str(tmp_path / "p")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"produced by tune-lip {metadata.version('tune-lip')}" in shown.stdout
    assert f"sha256 {expected[:12]}" in shown.stdout and "device: cpu (4 trials)" in shown.stdout
    # The analysis JSON carries it too.
    analysed = subprocess.run([*TUNE_LIP, "analyze", "lr-scaling", str(tmp_path / "p"), "--json"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert analysed.returncode == 0, analysed.stderr
    report = json.loads(analysed.stdout[analysed.stdout.index("{"):])
    assert report["provenance"] == provenance


def test_an_experiment_without_provenance_says_so():
    assert describe({}) == ["provenance: not recorded (an experiment from before tune-lip kept provenance.json)"]


def test_a_resumed_run_with_other_versions_is_listed():
    base = {"tune_lip": {"version": "0.1.0"}, "python": "3.11.7", "packages": {"torch": "2.14.1"}}
    lines = describe({"runs": [base, {**base, "started": "later", "packages": {"torch": "2.15.0"}}]})
    assert lines[1] == "resumed later by tune-lip 0.1.0, Python 3.11.7, torch 2.15.0"
