"""``replicates: K``: every sampled config runs with K seeds, the seed a config column (issue 13, item 2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import TUNE_LIP

from tune_lip.analysis import last_reports, load
from tune_lip.errors import UserError
from tune_lip.tune.searchers import GroupedOptunaSearch
from tune_lip.tune.spec import Grid, LogUniform, load_spec

SPACE = """\
study: nqm
metric: train_loss
mode: min
budget: {steps: 16}
reports: 2
replicates: 3
searcher: {name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}
num_samples: 2
space:
  seed: 5
  dim: 10
  dataset: {batch_size: {grid: [4, 64]}}
  optimizer: {name: sgd, lr: {loguniform: [0.01, 1.0]}}
  schedule: constant
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "r.yaml").write_text(text)
    return tmp_path / "r.yaml"


def test_replicates_parse_and_name_the_seeds(tmp_path: Path):
    spec = load_spec(_write(tmp_path, SPACE))
    assert spec.replicates == 3 and spec.seeds() == [5, 6, 7]
    assert load_spec(_write(tmp_path, SPACE.replace("replicates: 3\n", ""))).seeds() == []
    # One replicate leaves the seed to the space, which may search it (a grid of seeds).
    grid = SPACE.replace("replicates: 3\n", "").replace("  seed: 5", "  seed: {grid: [0, 1]}")
    assert load_spec(_write(tmp_path, grid.replace("{name: optuna, per: dataset.batch_size,",
                                                   "{name: optuna, per: [dataset.batch_size, seed],"))).seeds() == []


@pytest.mark.parametrize("change, key", [
    (("replicates: 3", "replicates: 0"), "replicates"),
    (("  seed: 5", "  seed: {choice: [0, 1]}"), "space.seed"),
])
def test_bad_replicates_name_the_key(tmp_path: Path, change, key):
    with pytest.raises(UserError) as err:
        load_spec(_write(tmp_path, SPACE.replace(*change)))
    assert err.value.key == key


def test_grouped_optuna_runs_each_config_with_every_seed_and_tells_the_mean():
    s = GroupedOptunaSearch({"lr": LogUniform(1e-3, 1.0), "b": Grid((16, 64))}, per=["b"], samples_per_group=2,
                            metric="acc", mode="max", seed=0, seeds=[0, 1])
    assert s.total_samples == 8
    configs = [s.suggest(f"t{i}") for i in range(8)]
    assert s.suggest("t8") == "FINISHED"
    for first, second in zip(configs[::2], configs[1::2]):   # each config twice, seeds 0 then 1
        assert (first["seed"], second["seed"]) == (0, 1)
        assert {k: v for k, v in first.items() if k != "seed"} == {k: v for k, v in second.items() if k != "seed"}
    full = {"training_iteration": 4, "config": {"reports": 4}}          # ran_full_budget
    s.on_trial_complete("t0", {**full, "acc": 0.2})
    study = s.studies()[0][1]
    assert study.trials[0].state.name == "RUNNING"           # the other seed still runs
    s.on_trial_complete("t1", {**full, "acc": 0.4})
    assert study.trials[0].value == pytest.approx(0.3)       # the mean over the seeds
    s.on_trial_complete("t2", {"training_iteration": 1, "config": {"reports": 4}, "acc": 0.9})   # stopped early
    s.on_trial_complete("t3", {"training_iteration": 1, "config": {"reports": 4}, "acc": 0.9})
    assert s.studies()[1][1].trials[0].state.name == "PRUNED"   # t2, t3: the second group's first config


@pytest.mark.slow
@pytest.mark.parametrize("searcher", ["{name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}",
                                      "{name: random, seed: 0}"])
def test_a_search_with_replicates_runs_every_config_with_every_seed(tmp_path: Path, searcher: str):
    text = SPACE.replace("searcher: {name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}",
                         f"searcher: {searcher}").replace("num_samples: 2", "num_samples: 1")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run([*TUNE_LIP, "search", str(_write(tmp_path, text)), "--storage-path", str(tmp_path),
                           "--name", "r"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = last_reports(load(tmp_path / "r"))
    assert len(last) == 2 * 3                                 # 2 batch sizes x 1 config x 3 seeds
    per_config = last.groupby(["config/dataset/batch_size", "config/optimizer/lr"])["config/seed"].apply(sorted)
    assert per_config.tolist() == [[5, 6, 7]] * 2
