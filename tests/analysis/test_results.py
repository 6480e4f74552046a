"""Results of every config type round-trip: the callback's Parquet parts, Ray's result.json and
exports all read back through `load` as the Python values the Trainable got (no Ray runs here)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_results import assert_same_values, expected_rows, report, reports, write_ray_trial

from tune_lip.analysis import check_scaling_rule, fit_lr_scaling, split_groups
from tune_lip.analysis.results import (
    PARQUET_DIR,
    compact,
    flatten_result,
    hashable_value,
    load,
    write_results,
)
from tune_lip.tune.callbacks import ParquetResultsCallback


def _callback_writes(experiment, results, *, flush_every: int | None = None) -> None:
    """Feed ``results`` to the callback as Tune would; flush after every ``flush_every``."""
    callback = ParquetResultsCallback(experiment, flush_seconds=1e9)
    for i, result in enumerate(results, start=1):
        callback.on_trial_result(iteration=i, trials=[], trial=None, result=result)
        if flush_every and i % flush_every == 0:
            callback.flush()
    callback.on_experiment_end(trials=[])


def test_every_value_type_round_trips_through_the_callback(tmp_path):
    results = reports()
    _callback_writes(tmp_path, results)
    got = load(tmp_path).to_dict("records")
    assert_same_values(got, expected_rows(results))
    row = got[0]
    # the cases that used to break: lists came back as numpy arrays, an empty dict could not be written
    assert row["config/eval/extra_eps"] == [0.0706, 0.2824]
    assert row["config/model/activations"] == ["relu", "abs"]
    assert row["config/schedule/milestones"] == [] and row["config/augmentation"] == {}
    assert row["config/layers"] == [{"width": 64}]  # no "act": None filled in from trial b's dicts
    assert row["config/options/nested/deep"] == "x" and row["config/options/nested/empty"] == {}
    assert row["config/sharpness"] is None and row["checkpoint_dir_name"] is None


def test_parts_with_different_columns(tmp_path):
    """Two flushed parts: the first has a list column and a metric the second lacks, the second
    columns the first lacks; a missing cell is None (NaN in a numeric column)."""
    first = report("a", 1)
    first["certified_acc@0.07"] = 0.125
    second = report("b", 1)
    del second["config"]["eval"]
    second["config"]["tags"] = ["x", "y"]
    second["wall_seconds"] = 2  # an int column of one part only
    _callback_writes(tmp_path, [first, second], flush_every=1)
    # two flushed parts, merged into one when the experiment ended
    assert [p.name.split("-")[2] for p in (tmp_path / PARQUET_DIR).glob("part-*.parquet")] == ["~compact"]
    a, b = load(tmp_path).to_dict("records")
    assert_same_values([a], [flatten_result(first)])
    assert_same_values([b], [{k: v for k, v in flatten_result(second).items() if k != "wall_seconds"}])
    assert b["config/eval/extra_eps"] is None and a["config/tags"] is None
    assert math.isnan(b["certified_acc@0.07"]) and math.isnan(a["wall_seconds"])
    assert b["wall_seconds"] == 2.0  # a numeric column with a gap is float: pandas' missing number


def test_int_and_float_unify_bools_stay_bools(tmp_path):
    write_results([{"x": 1, "flag": True, "maybe": True}, {"x": 0.5, "flag": False, "maybe": None}],
                  tmp_path / "r.parquet")
    df = load(tmp_path / "r.parquet")
    assert df["x"].dtype == np.float64 and df["x"].tolist() == [1.0, 0.5]
    assert df["flag"].dtype == bool
    assert df["maybe"].tolist() == [True, None]


def test_mixed_types_in_one_column_round_trip(tmp_path):
    """Arrow holds one type per column; "auto" and 3 (or a scalar and a list) go as JSON text."""
    rows = [{"device": "auto", "eps": 0.1}, {"device": 3, "eps": [0.1, 0.2]}]
    write_results(rows, tmp_path / "r.parquet")
    assert_same_values(load(tmp_path / "r.parquet").to_dict("records"), rows)


def test_resume_backfill_from_ray_result_json(tmp_path):
    """A killed driver had flushed iteration 1 only; setup recovers iteration 2 from result.json."""
    results = reports()
    for trial_id in ("a", "b"):
        write_ray_trial(tmp_path, results, trial_id)
    _callback_writes(tmp_path, [r for r in results if r["training_iteration"] == 1])
    ParquetResultsCallback(tmp_path).setup()
    assert_same_values(load(tmp_path, source="parquet").to_dict("records"), expected_rows(results))
    assert_same_values(load(tmp_path, source="ray").to_dict("records"), expected_rows(results))


def test_parquet_export_reads_back_the_same(tmp_path):
    results = reports()
    _callback_writes(tmp_path / "exp", results)
    write_results(load(tmp_path / "exp"), tmp_path / "all.parquet")
    assert_same_values(load(tmp_path / "all.parquet").to_dict("records"), expected_rows(results))


def test_parts_written_before_json_columns_give_lists_not_arrays(tmp_path):
    """Older experiments stored lists as native Arrow lists; they read back as Python lists."""
    folder = tmp_path / PARQUET_DIR
    folder.mkdir()
    rows = [{"trial_id": "a", "training_iteration": 1, "config/eval/extra_eps": [0.0706, 0.2824],
             "config/model/activations": ["relu"]}]
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    assert_same_values(load(tmp_path).to_dict("records"), rows)


def _lr_search(extra_eps: list[list[float]]) -> pd.DataFrame:
    """An lr x batch-size search (acc peaks at lr* = 1e-3 · b^0.5) per value of a list-valued key,
    as `load` gives it after a round trip through Parquet."""
    rows = [{"trial_id": f"{e}-{b}-{i}", "training_iteration": 1, "config/reports": 1,
             "config/optimizer/lr": float(lr), "config/dataset/batch_size": b,
             "config/eval/extra_eps": e, "acc": 0.9 - 0.03 * (np.log(lr) - np.log(1e-3 * b ** 0.5)) ** 2}
            for e in extra_eps for b in (32, 64, 128, 256) for i, lr in enumerate(np.geomspace(1e-3, 1.0, 8))]
    return pd.DataFrame(rows)


def test_analysis_groups_by_a_list_valued_config_key(tmp_path):
    df = _lr_search([[0.1, 0.2], [0.3]])
    write_results(df, tmp_path / "r.parquet")
    df = load(tmp_path / "r.parquet")
    groups = split_groups(df, "eval.extra_eps")
    assert [(key, group) for key, group, _ in groups] == [
        ("[0.1, 0.2]", {"eval.extra_eps": [0.1, 0.2]}), ("[0.3]", {"eval.extra_eps": [0.3]})]
    fits = fit_lr_scaling(df, metric="acc", mode="max", by="eval.extra_eps", n_boot=20)
    assert sorted(fits) == ["[0.1, 0.2]", "[0.3]"]
    assert fits["[0.3]"].group == {"eval.extra_eps": [0.3]}
    assert fits["[0.3]"].alpha == pytest.approx(0.5, abs=0.05)


def test_scaling_rule_by_a_list_valued_key():
    rng = np.random.default_rng(0)
    rows = [{"trial_id": f"{e}-{b}-{s}", "training_iteration": k, "sde_time": k / 10,
             "config/dataset/batch_size": b, "config/eval/extra_eps": e,
             "test_acc": 0.9 * (1 - np.exp(-k / 3)) + rng.normal(0, 0.005)}
            for e in ([0.1], [0.2, 0.3]) for b in (64, 128, 256) for s in range(2) for k in range(1, 11)]
    checks = check_scaling_rule(pd.DataFrame(rows), metric="test_acc", by="eval.extra_eps")
    assert sorted(checks) == ["[0.1]", "[0.2, 0.3]"]


@pytest.mark.parametrize("a, b", [([1, 2], (1, 2)), ({"x": 1, "y": [2]}, {"y": [2], "x": 1}),
                                  (np.array([0.5, 1.0]), [0.5, 1.0])])
def test_hashable_value_is_equal_for_equal_values(a, b):
    assert hashable_value(a) == hashable_value(b)
    assert hash(hashable_value(a)) == hash(hashable_value(b))


def _parts(experiment) -> list:
    return sorted((experiment / PARQUET_DIR).glob("part-*.parquet"))


def _searched(experiment, n_trials: int = 6, n_reports: int = 5):
    """Parts as a search writes them: flushed every few reports, a list-valued config, a metric
    only some reports have, and one trial resumed (iterations 3-4 reported again, new values)."""
    results = []
    for t in range(n_trials):
        for i in range(1, n_reports + 1):
            r = report(f"t{t}", i)
            if i % 2:
                r["val_certified_acc@0.14"] = 0.1 * i
            results.append(r)
    again = [report("t0", i) | {"val_loss": 99.0 + i} for i in (3, 4)]
    callback = ParquetResultsCallback(experiment, flush_seconds=1e9)
    for i, result in enumerate(results + again, start=1):
        callback.on_trial_result(iteration=i, trials=[], trial=None, result=result)
        if i % 4 == 0:
            callback.flush()
    callback.flush()   # no on_experiment_end: the parts stay parts


def test_compaction_keeps_what_load_returns(tmp_path):
    _searched(tmp_path)
    before = load(tmp_path)
    assert len(_parts(tmp_path)) > 5
    n_parts = len(_parts(tmp_path))
    assert compact(tmp_path) == n_parts
    assert len(_parts(tmp_path)) == 1
    after = load(tmp_path)
    pd.testing.assert_frame_equal(after, before)
    # the resumed trial's second reports won, as before
    t0 = after[after["trial_id"] == "t0"].set_index("training_iteration")
    assert t0.loc[3, "val_loss"] == 102.0 and t0.loc[4, "val_loss"] == 103.0
    # a later part (a resumed search reporting again) still wins over the merged file
    _callback_writes(tmp_path, [report("t1", 2) | {"val_loss": -1.0}], flush_every=1)
    later = load(tmp_path)
    assert later.loc[(later["trial_id"] == "t1") & (later["training_iteration"] == 2), "val_loss"].item() == -1.0


def test_compaction_killed_at_any_point_loses_and_repeats_nothing(tmp_path):
    _searched(tmp_path)
    before = load(tmp_path)
    saved = {p.name: p.read_bytes() for p in _parts(tmp_path)}
    # killed while writing the merged file: a temporary is left, the parts are whole
    (tmp_path / PARQUET_DIR / ".part-1-~compact-dead.parquet.tmp").write_bytes(b"half a file")
    pd.testing.assert_frame_equal(load(tmp_path), before)
    # killed after the rename, before (all) the parts were deleted: they repeat its rows
    compact(tmp_path)
    assert not list((tmp_path / PARQUET_DIR).glob(".*.tmp"))  # the dead temporary is gone
    for name in list(saved)[:3]:
        (tmp_path / PARQUET_DIR / name).write_bytes(saved[name])
    assert len(_parts(tmp_path)) == 4
    pd.testing.assert_frame_equal(load(tmp_path), before)
    # the next compaction finishes the job
    compact(tmp_path)
    assert len(_parts(tmp_path)) == 1
    pd.testing.assert_frame_equal(load(tmp_path), before)


def test_loading_results_imports_no_fit_no_plot_no_torch_no_ray():
    import subprocess
    import sys
    code = ("import sys, pandas; from tune_lip.analysis import load, last_reports; "
            "print(sorted(m for m in ('scipy', 'matplotlib', 'torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
