"""A search whose driver is killed (SIGKILL) resumes with ``--resume NAME`` and loses nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import TUNE_LIP, kill_and_resume

from tune_lip.analysis import last_reports, load
from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop

pytestmark = pytest.mark.slow

SPACE = """\
study: lipschitz
metric: val_certified_acc
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
    out.update(loop.evaluate_test())   # the Trainable adds these to the last report
    return out


def _summary(text: str, experiment: Path, trial_ids) -> list[str]:
    """The summary tune-lip prints (from ``<experiment>: N trials`` on; Ray's progress output
    before it is not tune-lip's), with the experiment's path and its trial ids (random per
    run) masked: what must match between two runs of one search. The provenance's "resumed"
    line is left out: only the resumed experiment has a second run on record (with versions
    that may differ, e.g. the checkout's uncommitted changes)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{experiment}: "))
    text = "\n".join(line.rstrip() for line in lines[start:] if "(pid=" not in line and not line.startswith("resumed "))
    for trial_id in trial_ids:
        text = text.replace(trial_id, "<trial>")
    return text.replace(str(experiment), "<experiment>").splitlines()


def test_killed_driver_resumes_by_name_and_matches_an_uninterrupted_run(tmp_path: Path):
    (tmp_path / "k.yaml").write_text(SPACE)
    search = [*TUNE_LIP, "search", str(tmp_path / "k.yaml"), "--storage-path", str(tmp_path)]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    uninterrupted = subprocess.run([*search, "--name", "u"], env=env, capture_output=True, text=True, timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    # The resume names only the experiment: its spec comes from the experiment itself.
    resumed = kill_and_resume([*search, "--name", "k"], tmp_path / "k",
                              resume_args=[*TUNE_LIP, "search", "--resume", "k", "--storage-path", str(tmp_path)])
    df = load(tmp_path / "k")
    assert sorted(df.groupby("trial_id")["training_iteration"].apply(list).tolist()) == [list(range(1, 7))] * 3
    for _, row in last_reports(df).iterrows():
        expected = _expected(int(row["config/dataset/batch_size"]))
        for metric in ("steps", "train_loss", "val_certified_acc", "test_loss", "test_acc", "test_certified_acc",
                       "weight_norm"):
            assert row[metric] == pytest.approx(expected[metric], rel=1e-6), metric
    # Every report, flushed before the kill, backfilled from result.json or written after the
    # resume, has the config values the Trainable got, as Python values (passed through
    # unchanged, so compared exactly): a list stays a list, not a numpy array.
    for column, value in (("config/eval/extra_eps", [0.0706, 0.2824]), ("config/augmentation", {}),
                          ("config/sharpness", None)):
        assert all(type(v) is type(value) and v == value for v in df[column]), (column, df[column].tolist())

    # The resumed search prints the summary the uninterrupted one printed, and so does
    # `tune-lip results` (same seeds and configs on one machine: the same numbers).
    ids = {name: load(tmp_path / name)["trial_id"].unique() for name in ("u", "k")}
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert (_summary(resumed.stdout, tmp_path / "k", ids["k"])
            == _summary(uninterrupted.stdout, tmp_path / "u", ids["u"]))
    results = {name: subprocess.run([*TUNE_LIP, "results", str(tmp_path / name)], env=env, capture_output=True,
                                    text=True, timeout=120) for name in ("u", "k")}
    assert all(r.returncode == 0 for r in results.values())
    assert (_summary(results["k"].stdout, tmp_path / "k", ids["k"])
            == _summary(results["u"].stdout, tmp_path / "u", ids["u"]))


def test_ray_tuner_restore_reads_a_tune_lip_experiment(tmp_path: Path, ray_local):
    """Ray's own `Tuner.restore(path, trainable=...)` works on what tune-lip wrote (README)."""
    from ray import tune

    from tune_lip.trainables.lipschitz import LipschitzTrainable
    from tune_lip.tune.launch import run_search
    from tune_lip.tune.spec import load_spec

    (tmp_path / "r.yaml").write_text(SPACE.replace("budget: {steps: 240}", "budget: {steps: 12}"))
    run_search(load_spec(tmp_path / "r.yaml"), name="r", storage_path=tmp_path, verbose=0)
    assert tune.Tuner.can_restore(str(tmp_path / "r"))
    grid = tune.Tuner.restore(str(tmp_path / "r"), trainable=LipschitzTrainable).get_results()
    assert len(grid) == 3 and grid.num_errors == 0
    assert sorted(r.metrics["config"]["dataset"]["batch_size"] for r in grid) == [16, 32, 64]
