"""A search whose driver is killed (SIGKILL) resumes with --resume and loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TUNE_LIP, kill_and_resume

from tune_lip.analysis import last_reports, load
from tune_lip.train_loop import LipschitzConfig, LipschitzLoop

pytestmark = pytest.mark.slow

SPACE = """\
study: lipschitz
metric: certified_acc
mode: max
budget: {steps: 240}
reports: 6
searcher: {name: grid}
max_concurrent_trials: 1
checkpoint_every: 1
space:
  model: {name: aol_mlp, width: 64, depth: 2}
  dataset: {name: synthetic, batch_size: {grid: [16, 32, 64]}, num_train: 256, num_test: 32}
  optimizer: {lr: 0.1}
  eval: {extra_eps: [0.0706, 0.2824]}   # a list, an empty dict, a None: must round-trip (training unchanged)
  augmentation: {}
  sharpness: null
"""


def _expected(batch_size: int) -> dict:
    """What an uninterrupted run reports at its end (same seed and config -> same numbers)."""
    loop = LipschitzLoop(LipschitzConfig.from_dict({
        "model": {"name": "aol_mlp", "width": 64, "depth": 2}, "optimizer": {"lr": 0.1},
        "dataset": {"name": "synthetic", "batch_size": batch_size, "num_train": 256, "num_test": 32},
        "budget": {"steps": 240}, "reports": 6}))
    for k in range(1, 7):
        out = loop.train_for(40 * k - loop.steps)
    out.update(loop.evaluate())
    return out


def test_killed_driver_resumes_and_completes(tmp_path: Path):
    (tmp_path / "k.yaml").write_text(SPACE)
    kill_and_resume([*TUNE_LIP, "search", str(tmp_path / "k.yaml"), "--name", "k", "--storage-path", str(tmp_path)],
                    tmp_path / "k")
    df = load(tmp_path / "k")
    assert sorted(df.groupby("trial_id")["training_iteration"].apply(list).tolist()) == [list(range(1, 7))] * 3
    for _, row in last_reports(df).iterrows():
        expected = _expected(int(row["config/dataset/batch_size"]))
        for metric in ("steps", "train_loss", "test_loss", "test_acc", "certified_acc", "weight_norm"):
            assert row[metric] == pytest.approx(expected[metric], rel=1e-6), metric
    # Every report, flushed before the kill, backfilled from result.json or written after the
    # resume, has the config values the Trainable got, as Python values (passed through
    # unchanged, so compared exactly): a list stays a list, not a numpy array.
    for column, value in (("config/eval/extra_eps", [0.0706, 0.2824]), ("config/augmentation", {}),
                          ("config/sharpness", None)):
        assert all(type(v) is type(value) and v == value for v in df[column]), (column, df[column].tolist())
