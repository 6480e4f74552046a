"""The public API: the imports a Ray user writes, and the README's own-Tuner example, run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_public_api.py runs the next code block as it stands -->"

# Run in a fresh interpreter: this test process has torch imported already (conftest.py).
IMPORTS = """
import json, sys
import tune_lip.trainables as trainables
cheap = not {"torch", "ray"} & set(sys.modules)        # the package alone imports neither
import tune_lip.analysis as analysis
analysis_light = not {"torch", "ray"} & set(sys.modules)
from tune_lip.trainables import (LipschitzTrainable, NQMTrainable, ScalingTrainable, SlicedTrainable,
                                 SphereTrainable)
from ray import tune
print(json.dumps({
    "cheap": cheap, "analysis_light": analysis_light,
    "trainables_all": sorted(trainables.__all__), "analysis_all": sorted(analysis.__all__),
    "missing": [f"{m.__name__}.{n}" for m in (trainables, analysis) for n in m.__all__ if not hasattr(m, n)],
    "subclasses": [issubclass(c, SlicedTrainable) and issubclass(c, tune.Trainable)
                   for c in (LipschitzTrainable, NQMTrainable, ScalingTrainable, SphereTrainable)],
}))
"""


def _python(code: str, *, cwd: Path | None = None, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}   # never join another Ray
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_public_imports_and_every_all_name_resolves():
    out = _python(IMPORTS, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["cheap"], "import tune_lip.trainables imported torch or ray"
    assert got["analysis_light"], "import tune_lip.analysis imported torch or ray"
    assert got["trainables_all"] == ["LipschitzTrainable", "NQMTrainable", "ScalingTrainable",
                                     "SlicedTrainable", "SphereTrainable", "StudyTrainable"]
    assert {"load", "fit_lr_scaling", "check_scaling_rule", "classify_regime"} <= set(got["analysis_all"])
    assert got["missing"] == []                      # every name in __all__ exists
    assert all(got["subclasses"])                    # the four studies are Tune Trainables via the base


def test_unknown_trainable_name_is_an_attribute_error():
    import tune_lip.trainables

    with pytest.raises(AttributeError, match="LipTrainable"):
        tune_lip.trainables.LipTrainable


def readme_example() -> str:
    """The Python block right after MARKER in README.md, exactly as a reader copies it."""
    text = README.read_text()
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)^```", text, re.S | re.M)
    assert match, f"README.md has no ```python block after {MARKER!r}"
    return match.group(1)


def test_readme_example_shows_what_the_issue_asks_for():
    # The example is the documentation of the public API: a plain Tuner with the user's own
    # search algorithm, resources and callback, on offline data, with a tiny budget.
    code = readme_example()
    for needed in ("from tune_lip.trainables import", "tune.Tuner(", "search_alg=", "tune.with_resources(",
                   "tune.Callback", '"digits"', '"budget": {"steps": 20}',
                   'ray.init(address="local", num_cpus=2, include_dashboard=False)'):
        assert needed in code, needed


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    out = _python(readme_example(), cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    # The callback saw both trials finish, and the best result has the searched metric.
    assert sum(line.startswith("trial ") and "val_certified_acc=" in line for line in lines) == 2, out.stdout[-2000:]
    assert any(line.startswith("best lr ") for line in lines)
    assert (tmp_path / "tune_lip_results" / "my-search").is_dir()   # in the working directory, as written
