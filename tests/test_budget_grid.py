"""A search space that varies the budget: ``budget: {steps: {grid: [...]}}`` (issue 16, item 3).

Every grid point runs at each budget; ASHA and the grouped searchers compare trials only within
one budget (ASHA's progress is then the fraction of each trial's own budget); the results carry
``config/budget/<kind>`` per trial, so `tune-lip analyze lr-scaling` fits the joint law
lr*(b, D) from one search.
"""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest
from helpers import TUNE_LIP

from tune_lip.cli import parse_budget_flag
from tune_lip.errors import UserError
from tune_lip.studies.budget import Budget
from tune_lip.tune.domains import Grid
from tune_lip.tune.spec import load_spec, parse_spec

SPACE = """\
study: nqm
metric: train_loss
mode: min
budget: {steps: {grid: [80, 20, 40]}}
reports: 4
scheduler: {name: asha, grace_fraction: 0.25, reduction_factor: 2, protect: 2}
searcher: {name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}
num_samples: 3
max_concurrent_trials: 2
checkpoint_every: 0
space:
  dim: 20
  dataset: {batch_size: {grid: [4, 32]}}
  optimizer: {name: sgd, lr: {loguniform: [0.01, 1.0]}}
  schedule: constant
"""


def _spec(tmp_path, text=SPACE, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path)


def test_a_budget_grid_is_parsed_sorted_with_the_largest_as_the_budget(tmp_path):
    spec = _spec(tmp_path)
    assert spec.budget == Budget("steps", 80) and spec.budget_grid == (20, 40, 80)
    assert [b.amount for b in spec.budgets()] == [20, 40, 80]
    assert spec.budget_key == "budget.steps"
    assert spec.searcher.per == ("dataset.batch_size",)            # as written ...
    assert spec.group_keys() == ("dataset.batch_size", "budget.steps")   # ... compared within a budget too
    assert spec.search_space()["budget"] == {"steps": Grid((20, 40, 80))}
    assert "budget" not in spec.space
    assert parse_spec(spec.to_dict(), where=spec.path) == spec    # the saved spec reloads as it ran
    assert spec.to_dict()["budget"] == {"steps": {"grid": [20, 40, 80]}}


def test_one_budget_is_unchanged(tmp_path):
    spec = _spec(tmp_path, SPACE.replace("{steps: {grid: [80, 20, 40]}}", "{steps: 80}"))
    assert spec.budget_grid == () and spec.budget_key is None and spec.budgets() == [spec.budget]
    assert spec.group_keys() == ("dataset.batch_size",) and "budget" not in spec.search_space()


@pytest.mark.parametrize("budget, key", [
    ("{steps: {grid: [100]}}", "budget.steps"),                  # one value: not a grid
    ("{steps: {grid: [100, 0]}}", "budget.steps"),               # each value checked as a budget
    ("{steps: {grid: [100, 2.5]}}", "budget.steps"),
    ("{steps: {choice: [100, 200]}}", "budget.steps"),
    ("{steps: {grid: [100, 200]}, reference: A100}", "budget.reference"),
    ("{steps: {grid: [2, 100]}}", "reports"),                    # the smallest buys fewer steps than reports
])
def test_bad_budget_grids_name_the_key(tmp_path, budget, key):
    with pytest.raises(UserError) as err:
        _spec(tmp_path, SPACE.replace("{steps: {grid: [80, 20, 40]}}", budget))
    assert err.value.key == key and err.value.fix


def test_searchers_that_run_one_budget_refuse_a_grid(tmp_path):
    text = SPACE.replace("{name: asha, grace_fraction: 0.25, reduction_factor: 2, protect: 2}", "none").replace(
        "{name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}",
        "{name: lr_transfer, key: optimizer.lr}")
    with pytest.raises(UserError, match="runs one budget") as err:
        _spec(tmp_path, text)
    assert err.value.key == "budget"


def test_space_budget_is_refused_with_the_top_level_form(tmp_path):
    with pytest.raises(UserError, match="top-level budget") as err:
        _spec(tmp_path, SPACE + "  budget: {steps: 10}\n")
    assert err.value.key == "space.budget" and "grid" in err.value.fix


def test_line_search_runs_once_per_budget_and_batch_size(tmp_path):
    from tune_lip.tune.launch import make_search_alg

    text = SPACE.replace("{name: asha, grace_fraction: 0.25, reduction_factor: 2, protect: 2}", "none").replace(
        "{name: optuna, per: dataset.batch_size, seed: 0, n_startup_trials: 2}",
        "{name: line, per: dataset.batch_size, key: optimizer.lr}")
    spec = _spec(tmp_path, text)
    searcher = make_search_alg(spec)
    assert searcher.total_samples == 2 * 3 * 3


def test_overrides_replace_or_set_the_grid(tmp_path):
    spec = _spec(tmp_path)
    one = spec.with_overrides(budget={"steps": 50})
    assert one.budget == Budget("steps", 50) and one.budget_grid == ()
    again = one.with_overrides(budget=parse_budget_flag("steps=10,30"))
    assert again.budget == Budget("steps", 30) and again.budget_grid == (10, 30)


def test_budget_flag_reads_several_values_as_a_grid():
    assert parse_budget_flag("steps=250,1000,4000") == {"steps": {"grid": [250, 1000, 4000]}}
    assert parse_budget_flag("examples=4096") == {"examples": 4096}
    assert parse_budget_flag("cpu=2,gpu=0.5") == {"cpu": 2, "gpu": 0.5}     # resources unchanged


def test_asha_judges_budget_fractions_within_one_budget(ray_local, tmp_path):
    from tune_lip.tune.launch import build_tuner

    spec = _spec(tmp_path)
    tuner = build_tuner(spec, name="inspect", storage_path=tmp_path / "res", verbose=0)
    scheduler = tuner._local_tuner._tune_config.scheduler
    assert scheduler._time_attr == "budget_fraction" and scheduler._max_t == 1.0
    assert tuple(scheduler._group_keys) == ("dataset.batch_size", "budget.steps")
    assert "budget" not in tuner._local_tuner._param_space   # each trial's budget comes from the searcher


def test_best_per_group_takes_each_cells_best_last_report():
    from tune_lip.analysis import best_per_group

    df = pd.DataFrame({"trial_id": ["a", "a", "b", "c", "d"], "training_iteration": [1, 2, 1, 1, 1],
                       "loss": [0.1, 0.9, 0.5, 0.4, float("nan")],
                       "config/dataset/batch_size": [16, 16, 16, 64, 64], "config/budget/steps": [10] * 5})
    best = best_per_group(df, metric="loss", mode="min", by=["dataset.batch_size", "budget.steps"])
    assert best["trial_id"].tolist() == ["b", "c"]      # a's last report is 0.9; d reports no loss
    with pytest.raises(KeyError, match="model.width"):
        best_per_group(df, metric="loss", mode="min", by=["model.width"])


def test_rungs_are_rounded_so_a_fraction_reaches_them():
    from tune_lip.tune.schedulers import _ProtectedBracket

    bracket = _ProtectedBracket(min_t=0.1, max_t=1.0, reduction_factor=3, s=0)
    assert sorted(m for m, _ in bracket._rungs) == [0.1, 0.3, 0.9]   # Ray's own: 0.9000000000000001


def test_trials_report_the_fraction_of_their_own_budget():
    from tune_lip.trainables.nqm import NQMTrainable

    base = {"dim": 10, "dataset": {"batch_size": 4}, "optimizer": {"name": "sgd", "lr": 0.1}, "reports": 4}
    t = NQMTrainable(config={**base, "budget": {"steps": 30}})
    assert [t.train()["budget_fraction"] for _ in range(4)] == pytest.approx([8 / 30, 15 / 30, 23 / 30, 1.0])
    t.stop()
    branched = NQMTrainable(config={**base, "budget": {"steps": 200},
                                    "schedule": {"name": "wsd", "cooldown": 0.2, "branch_at": [0.1, 0.3, 0.9]}})
    assert [branched.train()["budget_fraction"] for _ in range(4)] == [0.1, 0.3, 0.9, 1.0]
    branched.stop()


def test_a_budget_grid_search_through_the_cli(tmp_path):
    """As a user runs it: every (batch size, budget) gets its trials, each trial trains exactly its
    own budget, and analyze lr-scaling fits the joint law over the budgets."""
    (tmp_path / "grid.yaml").write_text(SPACE)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLBACKEND": "Agg"}

    def run(*args):
        return subprocess.run([*TUNE_LIP, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    done = run("search", "grid.yaml", "--name", "g", "--storage-path", "res")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "config/budget/steps" in done.stdout       # the summary shows each best trial's budget
    assert "best per dataset.batch_size x budget.steps (6 groups):" in done.stdout   # and each cell's best
    from tune_lip.analysis import load

    df = load(tmp_path / "res" / "g")
    last = df.sort_values("training_iteration").groupby("trial_id").last()
    cells = last.groupby(["config/dataset/batch_size", "config/budget/steps"]).size()
    assert cells.to_dict() == {(b, s): 3 for b in (4, 32) for s in (20, 40, 80)}
    full = last[last["budget_fraction"] == 1.0]
    assert (full["steps"] == full["config/budget/steps"]).all() and len(full) >= 2 * 3 * 2  # protect: 2
    stopped = last[last["budget_fraction"] < 1.0]
    assert (stopped["steps"] < stopped["config/budget/steps"]).all()
    analysis = run("analyze", "lr-scaling", "res/g", "--out", "an")
    assert analysis.returncode == 0, (analysis.stdout + analysis.stderr)[-3000:]
    assert "budget.steps" in analysis.stdout and "Traceback" not in analysis.stdout + analysis.stderr
    results = run("results", "res/g")
    assert results.returncode == 0 and "best per dataset.batch_size x budget.steps (6 groups):" in results.stdout
    table = results.stdout.split("(6 groups):")[1].splitlines()[2:8]
    assert [(int(r.split()[-3]), int(r.split()[-1])) for r in table] == [(b, s) for b in (4, 32) for s in (20, 40, 80)]
    bad = run("results", "res/g", "--per", "budget.step")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "budget.step'" in bad.stderr
    saved = load_spec(tmp_path / "res" / "g" / "search_space.yaml")   # what --resume and analyze read
    assert saved.budget_grid == (20, 40, 80)


def test_branching_asha_judges_fractions_so_an_examples_budget_reaches_every_rung(ray_local, tmp_path):
    """16384 examples at b = 3 buy 5461 steps; the branch at 0.9 is step 4915 = 14745 examples,
    short of 0.9 x 16384 = 14745.6: in examples ASHA would judge it only at the final report. In
    budget fractions it is 0.90002, at the rung."""
    from tune_lip.trainables.nqm import NQMTrainable
    from tune_lip.tune.launch import build_tuner

    text = SPACE.replace("{steps: {grid: [80, 20, 40]}}", "{examples: 16384}").replace(
        "grace_fraction: 0.25, reduction_factor: 2,", "grace_fraction: 0.1, reduction_factor: 3, branching: true,").replace(
        "schedule: constant", "schedule: {name: wsd, cooldown: 0.2}").replace("[4, 32]", "[3, 32]")
    spec = _spec(tmp_path, text)
    scheduler = build_tuner(spec, name="b", storage_path=tmp_path / "res", verbose=0)._local_tuner._tune_config.scheduler
    assert scheduler._time_attr == "budget_fraction" and scheduler._max_t == 1.0
    t = NQMTrainable(config={"dim": 10, "dataset": {"batch_size": 3}, "optimizer": {"name": "sgd", "lr": 0.1},
                             "budget": {"examples": 16384},
                             "schedule": {"name": "wsd", "cooldown": 0.2, "branch_at": [0.1, 0.3, 0.9]}})
    reports = [t.train() for _ in range(4)]
    t.stop()
    assert reports[2]["examples"] < 0.9 * 16384 <= reports[3]["examples"]
    assert [r["budget_fraction"] >= f for r, f in zip(reports, (0.1, 0.3, 0.9, 1.0))] == [True] * 4
