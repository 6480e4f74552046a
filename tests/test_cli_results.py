"""`tune-lip results` and the search summary on experiments with list- and dict-valued config keys
(fabricated results written by the callback: no Ray run)."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fake_results import assert_same_values, expected_rows, reports
from helpers import TUNE_LIP

from tune_lip.analysis.results import PARQUET_DIR, flatten_result, load
from tune_lip.cli import _summary, main
from tune_lip.tune.callbacks import ParquetResultsCallback


def _experiment(path):
    callback = ParquetResultsCallback(path)
    for i, result in enumerate(reports(), start=1):
        callback.on_trial_result(iteration=i, trials=[], trial=None, result=result)
    callback.on_experiment_end(trials=[])
    return path


def test_summary_shows_varying_list_and_dict_columns(tmp_path):
    text = _summary(_experiment(tmp_path / "exp"), metric="certified_acc", mode="max", top=5)
    assert "2 trials, 4 reports" in text and "diverged: 0" in text
    header, best, other = text.splitlines()[-3:]
    # the config keys that differ between the trials, lists and dicts as JSON; not the constant ones
    assert "config/eval/extra_eps" in header and "config/layers" in header and "config/optimizer/lr" in header
    assert "config/augmentation" not in header and "config/model/activations" not in header
    assert best.split()[0] == "b" and '[{"width": 32, "act": "relu"}]' in best and "[0.1]" in best
    assert "[0.0706, 0.2824]" in other


def test_summary_shows_the_test_metrics_of_the_best_trials(tmp_path):
    # Trials are chosen by a validation metric; their test metrics (reported once, at the end)
    # stand beside it. An experiment from before the split (certified_acc) is summarised above.
    callback = ParquetResultsCallback(tmp_path / "exp")
    for i, result in enumerate(reports(), start=1):
        result["val_certified_acc"] = result.pop("certified_acc")
        if result["done"]:
            result["test_certified_acc"] = 0.4 if result["trial_id"] == "a" else 0.3
        callback.on_trial_result(iteration=i, trials=[], trial=None, result=result)
    callback.on_experiment_end(trials=[])
    text = _summary(tmp_path / "exp", metric=None, mode="max", top=5)   # no spec: the headline val metric
    assert "best 2 of 2 by val_certified_acc (max), with their test_certified_acc (once, at each trial's end):" in text  # 2 trials, top 5 asked
    header, best, other = text.splitlines()[-3:]
    assert header.split()[:3] == ["trial_id", "val_certified_acc", "test_certified_acc"]
    assert best.split()[:3] == ["b", "1.0", "0.3"] and other.split()[:3] == ["a", "0.5", "0.4"]


def test_results_exports_read_back(tmp_path, capsys):
    experiment = _experiment(tmp_path / "exp")
    csv, parquet = tmp_path / "all.csv", tmp_path / "all.parquet"
    assert main(["results", str(experiment), "--csv", str(csv), "--parquet", str(parquet)]) == 0
    assert "[0.0706, 0.2824]" in capsys.readouterr().out
    assert_same_values(load(parquet).to_dict("records"), expected_rows(reports()))
    # CSV has no types: a list or dict cell is its JSON text
    table = pd.read_csv(csv)
    assert json.loads(table["config/eval/extra_eps"][0]) == [0.0706, 0.2824]
    assert json.loads(table["config/layers"][3]) == [{"width": 32, "act": "relu"}]
    assert json.loads(table["config/augmentation"][0]) == {}


def test_results_subprocess_exits_0_without_traceback(tmp_path):
    """As a user runs it, on an experiment whose parts were written before lists went to JSON
    (Arrow lists, which pandas reads as numpy arrays: the summary's old TypeError)."""
    folder = tmp_path / "old" / PARQUET_DIR
    folder.mkdir(parents=True)
    rows = [{k: v for k, v in flatten_result(r).items() if v != {}} for r in reports()]  # {} never wrote
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    out = subprocess.run([*TUNE_LIP, "results", str(tmp_path / "old"), "--parquet", str(tmp_path / "x.parquet")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "[0.0706, 0.2824]" in out.stdout
    assert load(tmp_path / "x.parquet")["config/eval/extra_eps"].tolist() == [[0.0706, 0.2824]] * 2 + [[0.1]] * 2
