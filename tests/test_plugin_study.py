"""A study is a plug-in: a toy study runs through ``tune-lip search`` on a local Ray.

The toy module (README.md's example, as a reader copies it) and a one-file distribution
naming it under the ``tune_lip.studies`` entry-point group are written to a temporary folder on PYTHONPATH, as ``pip install`` of a user's package
would put them; nothing in tune-lip changes for it. The toy fits one number w to 3 by gradient
descent on (w - 3)²: after T steps w = 3 (1 - (1 - 2 lr)^T), so the loss it reports is known.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TUNE_LIP

from tune_lip.analysis import last_reports, load

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_plugin_study.py runs the next code block as it stands -->"


def _readme_study() -> str:
    """The toy study module as README.md shows it ("Your own study: a plug-in")."""
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)^```", README.read_text(), re.S | re.M)
    assert match, f"README.md has no ```python block after {MARKER!r}"
    return match.group(1)


SPACE = """\
study: toy
metric: loss
mode: min
budget: {steps: 20}
reports: 2
searcher: {name: grid}
checkpoint_every: 1
space:
  lr: {grid: [0.1, 0.4]}
"""


@pytest.fixture
def toy_env(tmp_path: Path) -> dict[str, str]:
    """A folder on PYTHONPATH holding the toy study and its entry point (as pip installs them)."""
    site = tmp_path / "site"
    (site / "toy_study-0.1.dist-info").mkdir(parents=True)
    (site / "toy_study.py").write_text(_readme_study())
    (site / "toy_study-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-study\nVersion: 0.1\n")
    (site / "toy_study-0.1.dist-info" / "entry_points.txt").write_text("[tune_lip.studies]\ntoy = toy_study\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.mark.slow
def test_a_toy_study_from_an_entry_point_runs_through_tune_lip_search(tmp_path: Path, toy_env):
    (tmp_path / "toy.yaml").write_text(SPACE)
    done = subprocess.run([*TUNE_LIP, "search", str(tmp_path / "toy.yaml"), "--storage-path", str(tmp_path),
                           "--name", "toy"], env=toy_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final = last_reports(load(tmp_path / "toy")).sort_values("config/lr")
    assert final["config/lr"].tolist() == [0.1, 0.4]
    for lr, loss, steps in zip(final["config/lr"], final["loss"], final["steps"]):
        assert steps == 20
        assert loss == pytest.approx((3.0 * (1 - 2 * lr) ** 20) ** 2, rel=1e-9, abs=1e-15)
    shown = subprocess.run([*TUNE_LIP, "results", str(tmp_path / "toy")], env=toy_env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "by loss (min)" in shown.stdout, shown.stdout + shown.stderr


def test_a_plugin_studys_metrics_are_checked_like_a_shipped_one(tmp_path: Path, toy_env):
    (tmp_path / "toy.yaml").write_text(SPACE.replace("metric: loss", "metric: acc"))
    done = subprocess.run([*TUNE_LIP, "search", str(tmp_path / "toy.yaml"), "--storage-path", str(tmp_path)],
                          env=toy_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "metric" in done.stderr and "loss" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.glob("toy*/"))


def test_checking_a_space_imports_only_its_study() -> None:
    """A search's driver parses its space before Ray starts; importing all four studies (torch,
    torchvision, the models) cost seconds of every short search (issue 15, P5)."""
    code = ("import sys; from tune_lip.tune.experiment import load_space; load_space('nqm_sgd_lr_batch'); "
            "print(sorted(m for m in sys.modules if m.startswith('tune_lip.studies.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(eval(out))   # noqa: S307  # our own printout of a list of module names
    assert "tune_lip.studies.nqm" in loaded
    assert not loaded & {"tune_lip.studies.lipschitz", "tune_lip.studies.sphere", "tune_lip.studies.scaling"}
