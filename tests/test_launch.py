"""A real search on a local Ray: ASHA + per-batch-size Optuna, Parquet results = Ray's view."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from tune_lip.analysis import PARQUET_DIR, load, ran_full_budget
from tune_lip.errors import UserError
from tune_lip.tune.launch import build_tuner, make_search_alg, run_search
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow

TINY = """\
study: lipschitz
metric: val_certified_acc
mode: max
budget: {steps: 12}
reports: 4
scheduler: {name: asha, grace_fraction: 0.25, reduction_factor: 2}
searcher: {name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}
num_samples: 4
max_concurrent_trials: 1        # one at a time: the order trials reach ASHA's rungs is fixed
checkpoint_every: 2
space:
  model: {name: aol_mlp, width: 64, depth: 2}
  dataset: {name: synthetic, batch_size: {grid: [16, 64]}, num_train: 256, num_test: 64}
  optimizer: {lr: {loguniform: [0.001, 1.0]}}
"""


@pytest.fixture(scope="module")
def search(ray_local, tmp_path_factory):
    """One tiny search shared by the tests of this module (Ray start-up is the slow part)."""
    root = tmp_path_factory.mktemp("search")
    (root / "tiny.yaml").write_text(TINY)
    spec = load_spec(root / "tiny.yaml")
    grid = run_search(spec, name="tiny", storage_path=root / "results", verbose=0)
    return spec, grid, root


def test_every_trial_finishes_and_each_batch_size_gets_its_samples(search):
    spec, grid, _ = search
    assert grid.num_errors == 0 and len(grid) == 8
    sizes = [r.config["dataset"]["batch_size"] for r in grid]
    assert sorted(sizes) == [16] * 4 + [64] * 4


def test_asha_stopped_some_trials_and_optuna_saw_them_as_pruned(search):
    spec, grid, _ = search
    full = [ran_full_budget(r.metrics) for r in grid]
    assert any(full) and not all(full)  # ASHA with grace 1/3 and factor 2 stops some early


def test_parquet_results_equal_rays_own_view(search):
    _, grid, _ = search
    ours = load(grid.experiment_path)
    rays = pd.concat([r.metrics_dataframe for r in grid], ignore_index=True)
    assert set(ours.columns) == set(rays.columns)
    key = ["trial_id", "training_iteration"]
    rays = rays.sort_values(key).reset_index(drop=True)[ours.columns]
    pd.testing.assert_frame_equal(ours, rays, check_dtype=False)
    # and Ray's own reading of its files agrees with the callback's
    pd.testing.assert_frame_equal(ours, load(grid.experiment_path, source="ray")[ours.columns], check_dtype=False)
    # the callback merged its parts into one file when the search ended
    parts = list((Path(grid.experiment_path) / PARQUET_DIR).glob("part-*.parquet"))
    assert len(parts) == 1 and "~compact" in parts[0].name


def test_existing_name_is_not_overwritten(search):
    spec, _, root = search
    with pytest.raises(UserError, match="exists already"):
        run_search(spec, name="tiny", storage_path=root / "results")


def test_resume_of_a_finished_experiment_reruns_nothing(search):
    spec, grid, root = search
    before = load(grid.experiment_path)
    again = run_search(spec, name="tiny", storage_path=root / "results", resume=True, verbose=0)
    assert len(again) == len(grid)
    pd.testing.assert_frame_equal(load(again.experiment_path), before)


def test_grouped_optuna_told_pruned_and_complete(ray_local, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    spec = load_spec(tmp_path / "tiny.yaml")
    searcher = make_search_alg(spec)
    grid = build_tuner(spec, name="inspect", storage_path=tmp_path, verbose=0, search_alg=searcher).fit()
    states = [t.state for _, study in searcher.studies() for t in study.trials]
    n_full = sum(ran_full_budget(r.metrics) for r in grid)
    assert states.count(TrialState.COMPLETE) == n_full
    assert states.count(TrialState.PRUNED) == len(grid) - n_full


def test_random_searcher_crosses_the_grid(ray_local, tmp_path):
    text = TINY.replace("searcher: {name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}",
                        "searcher: {name: random, seed: 1}").replace("num_samples: 4", "num_samples: 1")
    (tmp_path / "r.yaml").write_text(text)
    grid = run_search(load_spec(tmp_path / "r.yaml"), name="r", storage_path=tmp_path, verbose=0)
    assert sorted(r.config["dataset"]["batch_size"] for r in grid) == [16, 64]


def test_bad_model_option_is_a_user_error_naming_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text(TINY.replace("depth: 2}", "depth: 2, colour: red}"))
    with pytest.raises(UserError) as err:
        run_search(load_spec(tmp_path / "bad.yaml"), name="x", storage_path=tmp_path)
    assert "bad.yaml: model: unknown option 'colour'" in err.value.line()
    assert not (tmp_path / "x").exists()


def test_unknown_model_lists_valid_ones(tmp_path):
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(TINY).replace("name: aol_mlp", "name: resnet9"))
    with pytest.raises(UserError, match="valid models: aol_mlp, .*cpl_convnet"):
        run_search(load_spec(tmp_path / "bad.yaml"), name="x", storage_path=tmp_path)
