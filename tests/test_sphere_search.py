"""Real sphere sweeps on a local Ray: regimes reported, boundaries fitted, the boundary searcher."""

from __future__ import annotations

import json

import pytest

from tune_lip.analysis import last_reports, load, regime_boundaries
from tune_lip.cli import main
from tune_lip.tune.launch import run_search, study_metrics
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow

SPACE = """\
study: sphere
metric: train_loss
mode: min
budget: {steps: 400}
reports: 40
searcher: {name: grid}
max_concurrent_trials: 2
checkpoint_every: 0
space:
  model: {name: convnet_si, width: 8}
  dataset: {name: digits, batch_size: 64}
  augmentation: none
  optimizer: {mode: sphere, elr: {grid: [0.005, 0.035, 0.3]}, lr_other: 0.0, momentum: 0.0}
"""


def test_small_elr_sweep_shows_at_least_two_regimes(ray_local, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(SPACE)
    grid = run_search(load_spec(tmp_path / "s.yaml", studies=study_metrics()), name="s", storage_path=tmp_path,
                      verbose=0)
    assert grid.num_errors == 0
    df = load(grid.experiment_path)
    last = last_reports(df).sort_values("config/optimizer/elr")
    regimes = list(last["regime"])
    assert len(set(regimes)) >= 2, regimes
    assert regimes[0] == "converged" and regimes[-1] == "diverged"  # the ends of the ELR range
    # the ELR stays exactly as configured on the sphere
    for _, rows in df.groupby("trial_id"):
        assert rows["elr"].to_numpy() == pytest.approx(rows["config/optimizer/elr"].to_numpy(), rel=1e-6)

    fit = regime_boundaries(df)
    assert len(fit.thresholds) >= 1
    row = fit.thresholds.iloc[0]
    assert 0.005 <= row["elr"] <= 0.3

    capsys.readouterr()
    assert main(["analyze", "regimes", grid.experiment_path, "--json", "--out", str(tmp_path / "plots")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["thresholds"] and len(report["plots"]) == 4
    assert (tmp_path / "plots" / "regime_map.png").stat().st_size > 1000


def test_boundary_searcher_drives_a_real_search(ray_local, tmp_path):
    text = (SPACE.replace("searcher: {name: grid}", "searcher: {name: boundary, key: optimizer.elr, initial: 3}\n"
                                                   "num_samples: 4")
            .replace("{grid: [0.005, 0.035, 0.3]}", "{loguniform: [0.001, 1.0]}")
            .replace("steps: 400", "steps: 160").replace("reports: 40", "reports: 16"))
    (tmp_path / "b.yaml").write_text(text)
    grid = run_search(load_spec(tmp_path / "b.yaml", studies=study_metrics()), name="b", storage_path=tmp_path,
                      verbose=0)
    elrs = sorted(r.config["optimizer"]["elr"] for r in grid)
    assert len(elrs) == 4 and grid.num_errors == 0
    assert elrs[0] == pytest.approx(0.001) and elrs[-1] == pytest.approx(1.0)  # the sweep spans the range
    assert all("regime" in r.metrics for r in grid)
