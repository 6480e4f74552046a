"""The tune-lip command line: input errors are one line + exit 2; calibrate, results, demo."""

from __future__ import annotations

import pandas as pd
import pytest

from tune_lip.cli import main, parse_budget_flag

TINY = """\
study: lipschitz
metric: val_certified_acc
mode: max
budget: {steps: 8}
reports: 2
searcher: {name: grid}
space:
  model: {name: aol_mlp, width: 64, depth: 2}
  dataset: {name: synthetic, batch_size: {grid: [16, 32]}, num_train: 128, num_test: 32}
  optimizer: {lr: 0.1}
"""


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    return err


@pytest.mark.parametrize("text, expected", [
    ("study: [unclosed", "line 1"),
    (TINY.replace("lr: 0.1", "lr: {loguniform: [0, 1]}"), "optimizer.lr.loguniform"),
    (TINY.replace("aol_mlp", "aol_mpl"), "model: unknown model 'aol_mpl'"),
    (TINY.replace("metric: val_certified_acc", "metric: accuracy"), "metric"),
    # WSD branching needs the wsd schedule: refused before Ray starts or res/ is written
    (TINY.replace("searcher: {name: grid}", "scheduler: {name: asha, branching: true}\nsearcher: {name: grid}"),
     "space.schedule"),
    (TINY.replace("searcher: {name: grid}", "searcher: {name: lr_transfer}").replace("lr: 0.1", "lr: 0.1"),
     "searcher"),
])
def test_bad_spaces_exit_2_with_one_line(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["search", str(path), "--storage-path", str(tmp_path / "res")]) == 2
    line = _error_line(capsys)
    assert "bad.yaml" in line and expected in line
    assert not (tmp_path / "res").exists()  # nothing written for a bad input


def test_missing_space_file(capsys):
    assert main(["search", "no_such_space"]) == 2
    assert "no_such_space" in _error_line(capsys)


def test_bad_budget_flag(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(TINY)
    assert main(["search", str(tmp_path / "s.yaml"), "--budget", "steps=-3"]) == 2
    assert "budget.steps" in _error_line(capsys)


def test_budget_flag_forms():
    assert parse_budget_flag("steps=200") == {"steps": 200}
    assert parse_budget_flag("{reference_hours: 1, reference: A100}") == {"reference_hours": 1, "reference": "A100"}


def test_list_shows_shipped_spaces(capsys):
    assert main(["search", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"demo", "aol_lr_batch", "aol_depth", "cpl_lr_batch"} <= set(names)


def test_results_of_missing_dir(tmp_path, capsys):
    assert main(["results", str(tmp_path / "nope")]) == 2
    assert "nope" in _error_line(capsys)


@pytest.mark.slow
def test_calibrate_then_reference_hours_search(ray_local, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(TINY)
    table = tmp_path / "cal.parquet"
    assert main(["calibrate", str(tmp_path / "s.yaml"), "--warmup", "1", "--steps", "3",
                 "--accelerator", "CPU", "--out", str(table)]) == 0
    rows = pd.read_parquet(table)
    assert sorted(rows["batch_size"]) == [16, 32] and (rows["step_seconds"] > 0).all()

    hours = 20 * float(rows["step_seconds"].max()) / 3600  # about 20 steps of the slower batch size
    spec = TINY.replace("budget: {steps: 8}",
                        f"budget: {{reference_hours: {hours}, reference: CPU, calibration: {table}}}")
    (tmp_path / "ref.yaml").write_text(spec)
    assert main(["search", str(tmp_path / "ref.yaml"), "--name", "ref", "--storage-path", str(tmp_path)]) == 0
    from tune_lip.analysis import last_reports, load

    last = last_reports(load(tmp_path / "ref"))
    for _, row in last.iterrows():
        step_seconds = rows.set_index("batch_size").loc[row["config/dataset/batch_size"], "step_seconds"]
        # the same reference work on any node: steps = H * 3600 / calibrated step time
        assert row["steps"] == int(hours * 3600 / step_seconds)
        assert row["reference_seconds"] == pytest.approx(row["steps"] * step_seconds)


@pytest.mark.slow
def test_results_summary_and_export(ray_local, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(TINY)
    assert main(["search", str(tmp_path / "s.yaml"), "--name", "x", "--storage-path", str(tmp_path)]) == 0
    capsys.readouterr()
    out_csv = tmp_path / "all.csv"
    assert main(["results", str(tmp_path / "x"), "--csv", str(out_csv)]) == 0
    assert "2 trials, 4 reports" in capsys.readouterr().out
    assert len(pd.read_csv(out_csv)) == 4
    # an existing export is never overwritten without --force
    assert main(["results", str(tmp_path / "x"), "--csv", str(out_csv)]) == 2
    assert (tmp_path / "x" / "search_space.yaml").exists()
    # One LR per batch size cannot give an lr* anywhere: the answer is "no fit" and why (not an
    # input error, so exit 0), with the metric-vs-LR figure, and no invented slope.
    capsys.readouterr()
    assert main(["analyze", "lr-scaling", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert "no fit:" in out and "batch" in out and "alpha" not in out
    assert (tmp_path / "x" / "plots" / "metric_vs_lr.png").exists()


@pytest.mark.slow
def test_demo_quick_end_to_end(ray_local, tmp_path, capsys):
    assert main(["demo", "--quick", "--seed", "3", "--storage-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Best trial per batch size" in out
    (experiment,) = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    for suffix in (".png", ".pdf"):
        assert (experiment / "plots" / f"metric_vs_lr{suffix}").stat().st_size > 1000
    from tune_lip.analysis import load

    df = load(experiment)
    assert set(df["config/dataset/batch_size"]) == {8, 16, 32, 64}
    assert set(df["config/seed"]) == {3}                  # --seed; --quick runs one replicate


def test_wandb_without_the_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):  # as on a machine without wandb installed
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    (tmp_path / "s.yaml").write_text(TINY)
    assert main(["search", str(tmp_path / "s.yaml"), "--wandb", "--storage-path", str(tmp_path)]) == 2
    assert "pip install wandb" in _error_line(capsys)
    assert not list(tmp_path.glob("s-*"))  # nothing written
