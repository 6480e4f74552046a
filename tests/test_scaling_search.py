"""A small scaling-rule sweep on a local Ray, then its analysis (CLI), end to end."""

from __future__ import annotations

import json

import pytest

from tune_lip.analysis import last_reports, load
from tune_lip.cli import main
from tune_lip.tune.launch import run_search, study_metrics
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow

SPACE = """\
study: scaling
metric: val_acc
mode: max
budget: {epochs: 2}
reports: 4
searcher: {name: grid}
max_concurrent_trials: 2
checkpoint_every: 0
space:
  seed: {grid: [0, 1]}
  model: {name: preresnet32, norm: gn, width: 0.125, head_norm: 10.0}
  dataset: {name: digits, batch_size: {grid: [16, 64, 256]}}
  augmentation: none
  optimizer: {name: sgd, lr_rule: linear, eta: 0.8, base_batch: 128, momentum: 0.0}
  gradient: {name: minibatch}
  grad_stats_every: 2
  schedule: constant
"""


def test_linear_rule_sweep_and_its_analysis(ray_local, tmp_path, capsys):
    (tmp_path / "lsr.yaml").write_text(SPACE)
    grid = run_search(load_spec(tmp_path / "lsr.yaml", studies=study_metrics()), name="lsr",
                      storage_path=tmp_path, verbose=0)
    assert grid.num_errors == 0 and len(grid) == 6
    last = last_reports(load(grid.experiment_path))
    # the linear rule set each trial's LR from its batch size: lr = 0.8 * B / 128
    for _, row in last.iterrows():
        assert row["lr"] == pytest.approx(0.8 * row["config/dataset/batch_size"] / 128)
    assert {"grad_norm_sq", "grad_noise", "noise_scale", "sde_time"} <= set(last.columns)

    capsys.readouterr()
    assert main(["analyze", "scaling-rule", grid.experiment_path, "--json", "--out", str(tmp_path / "plots")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(r["batch_size"] for r in report["per_batch"]) == [16, 64, 256]
    names = {p.rsplit("/", 1)[-1] for p in report["plots"]}
    assert {"scaling_rule_final.png", "scaling_rule_trajectories.png", "scaling_rule_grad_stats.png"} <= names
