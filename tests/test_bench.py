"""`bench/perf.py --quick` runs every benchmark as CI runs it (issue 15): exit code 0, a JSON with one
entry per benchmark and finite figures. Never its timings: those are BENCHMARKS.md's, measured on a
quiet machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "bench" / "perf.py"
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLBACKEND": "Agg"}


@pytest.mark.slow
def test_quick_runs_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "perf_quick.json"
    run = subprocess.run([sys.executable, str(PERF), "--quick", "--out", str(out)], capture_output=True,
                         text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    report = json.loads(out.read_text())
    names = [b["name"] for b in report["benchmarks"]]
    assert names == [f"P{k}" for k in range(1, 10)]
    for b in report["benchmarks"]:
        assert b["ratios"] and all(math.isfinite(r) and r > 0 for r in b["ratios"]), b
        assert b["goal"].split()[0] in (">=", "<=")
    assert report["quick"] is True and report["machine"]["torch"]
    for name in names:   # the printed table names every benchmark and its verdict
        assert f"{name}  " in run.stdout


def test_unknown_benchmark_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(PERF), "--only", "P1,P42"], capture_output=True, text=True,
                         env=ENV, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "P42" in run.stderr and "P1" in run.stderr
