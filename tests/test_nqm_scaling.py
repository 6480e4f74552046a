"""Ground truth for the LR-scaling analysis: a real search on the NQM, fitted vs exact alpha.

The noisy quadratic model's expected loss under SGD is exact, so the true lr*(b) and the true
slope alpha are known. A real Tune search (Optuna per batch size) plus `fit_lr_scaling` must
recover that alpha: inside its 95% interval and close to it.
"""

from __future__ import annotations

import json

import pytest

from tune_lip.analysis import fit_lr_scaling, load
from tune_lip.cli import main
from tune_lip.studies.nqm import NQMConfig, exact_lr_scaling
from tune_lip.tune.launch import run_search, study_metrics
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow

BATCH_SIZES = [1, 2, 4, 8, 16]   # the SDE regime of this NQM: exact alpha ~ 1
SPACE = f"""\
study: nqm
metric: train_loss
mode: min
budget: {{examples: 4096}}
reports: 2
searcher: {{name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 4}}
num_samples: 10
max_concurrent_trials: 2
checkpoint_every: 0
space:
  dim: 100
  power: 1.0
  noise: 1.0
  dataset: {{batch_size: {{grid: {BATCH_SIZES}}}}}
  optimizer: {{name: sgd, lr: {{loguniform: [0.002, 0.6]}}, momentum: 0.0}}
  schedule: constant
"""


def test_search_plus_fit_recovers_the_exact_alpha(ray_local, tmp_path, capsys):
    (tmp_path / "nqm.yaml").write_text(SPACE)
    spec = load_spec(tmp_path / "nqm.yaml", studies=study_metrics())
    grid = run_search(spec, name="nqm", storage_path=tmp_path, verbose=0)
    assert grid.num_errors == 0

    cfg = NQMConfig.from_dict({"dim": 100, "power": 1.0, "noise": 1.0, "budget": {"examples": 4096},
                               "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0}})
    lr_exact, alpha_exact = exact_lr_scaling(cfg, BATCH_SIZES)

    fit = fit_lr_scaling(load(grid.experiment_path), metric="train_loss", mode="min")
    lo, hi = fit.alpha_ci
    assert lo <= alpha_exact <= hi, fit.summary()
    assert fit.alpha == pytest.approx(alpha_exact, abs=0.15), fit.summary()
    # every per-batch estimate lies within a factor 2 of the exact optimum
    for b, exact in zip(BATCH_SIZES, lr_exact):
        row = fit.per_batch.set_index("batch_size").loc[b]
        assert exact / 2 < row["lr_star"] < exact * 2, fit.summary()

    # the CLI gives the same fit, and writes the figures
    capsys.readouterr()
    assert main(["analyze", "lr-scaling", grid.experiment_path, "--json", "--out", str(tmp_path / "plots")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"]["all"]["alpha"] == pytest.approx(fit.alpha)
    for name in ("metric_vs_lr.png", "metric_vs_lr.pdf", "lr_scaling.png", "lr_scaling.pdf"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
