"""An experiment written by an older tune-lip still loads, resumes and analyses.

``fixtures/pre_move_experiment`` is a real, interrupted search written at commit afb28b8,
before the modules moved into layer folders (issue 12): a Lipschitz search with ASHA and
Optuna (spec ``fixtures/pre_move_experiment/search_space.yaml``), its driver SIGKILLed after
the second trial's first checkpoint. Its ``tuner.pkl`` pickles the callbacks, searcher and spec
under their old module paths (``tune_lip.callbacks``, ``tune_lip.searchers``,
``tune_lip.pending``, ``tune_lip.spec``, ``tune_lip.launch``), which must stay importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import TUNE_LIP

from tune_lip.analysis import load

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "pre_move_experiment"
OLD_MODULES = ("tune_lip.callbacks", "tune_lip.searchers", "tune_lip.pending", "tune_lip.spec", "tune_lip.launch")


def test_the_fixture_pickles_the_old_module_paths():
    pickled = (FIXTURE / "tuner.pkl").read_bytes()
    assert all(name.encode() in pickled for name in OLD_MODULES)


def test_a_pre_move_experiment_loads_resumes_and_analyses(tmp_path: Path):
    shutil.copytree(FIXTURE, tmp_path / "old")
    before = load(tmp_path / "old")
    assert before["trial_id"].nunique() == 1 and len(before) == 6   # the first trial, all six reports
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    resumed = subprocess.run([*TUNE_LIP, "search", "--resume", "old", "--storage-path", str(tmp_path)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stdout + resumed.stderr
    df = load(tmp_path / "old")
    # All three trials ran; none repeats a report (ASHA may stop some before the sixth).
    iterations = df.groupby("trial_id")["training_iteration"].apply(list)
    assert len(iterations) == 3
    assert all(its == list(range(1, len(its) + 1)) for its in iterations), iterations.tolist()
    # The trials the resumed searcher created live in the experiment's new home, not in the
    # path the experiment was written at (/tmp/fx/old, pickled in its state).
    assert len(list((tmp_path / "old").glob("LipschitzTrainable_*/checkpoint_*"))) >= 3
    for command in (["results", str(tmp_path / "old")], ["analyze", "lr-scaling", str(tmp_path / "old")]):
        done = subprocess.run([*TUNE_LIP, *command], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Traceback" not in done.stdout + done.stderr
        if command[0] == "results":   # the resume is on record; the start, by an older tune-lip, is not
            assert "started by an older tune-lip (no provenance); resumed" in done.stdout, done.stdout
