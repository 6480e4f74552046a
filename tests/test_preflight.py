"""What `tune-lip search` checks before Ray starts, and the spec an experiment stores for
``--resume NAME`` (no Ray here: every check is on files and this machine)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tune_lip import search_spaces
from tune_lip.cli import main
from tune_lip.cluster.placement import Node, Placement, check_fits
from tune_lip.errors import UserError
from tune_lip.tune.launch import (
    LAUNCH_FILE,
    SPEC_FILE,
    check_data,
    check_resources,
    check_spec,
    resume_spec,
    save_spec,
)
from tune_lip.tune.spec import load_spec

SPACE = """\
study: lipschitz
metric: val_certified_acc
mode: max
budget: {steps: 40}
reports: 4
searcher: {name: grid}
space:
  model: {name: aol_mlp, width: 64, depth: 2}
  dataset: {name: synthetic, batch_size: {grid: [16, 32]}, num_train: 128, num_test: 32}
  optimizer: {lr: 0.1}
  eval: {extra_eps: [0.0706]}
"""


def _space(tmp_path: Path, text: str = SPACE, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err   # one line, no traceback
    return err


# ---------------------------------------------------------------------------- data and budgets

def test_missing_cifar_names_the_folder_the_files_and_where_to_get_them(tmp_path):
    spec = load_spec(_space(tmp_path, SPACE.replace(
        "{name: synthetic, batch_size: {grid: [16, 32]}, num_train: 128, num_test: 32}",
        f"{{name: cifar10, batch_size: 16, data_dir: {tmp_path / 'data'}}}")))
    with pytest.raises(UserError) as err:
        check_data(spec)
    line = err.value.line()
    assert str(tmp_path / "data" / "cifar-10-batches-py") in line and "data_batch_1" in line
    assert "cifar-10-python.tar.gz" in line and "dataset.data_dir" in line


def test_truncated_cifar_file_is_refused_before_ray(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"\x80\x04\x95")   # the first bytes of a pickle, then nothing
    spec = load_spec(_space(tmp_path, SPACE.replace(
        "{name: synthetic, batch_size: {grid: [16, 32]}, num_train: 128, num_test: 32}",
        f"{{name: cifar10, batch_size: 16, data_dir: {tmp_path / 'data'}}}")))
    with pytest.raises(UserError) as err:
        check_data(spec)
    assert "data_batch_1" in err.value.line()


def test_an_epochs_budget_too_small_for_the_reports_is_refused(tmp_path):
    # 1 epoch of the 115 images left of 128 after the 10% validation split is 7 steps at batch 16
    # (3 at batch 32): fewer than 8 reports.
    spec = load_spec(_space(tmp_path, SPACE.replace("budget: {steps: 40}", "budget: {epochs: 1}")
                            .replace("reports: 4", "reports: 8")))
    with pytest.raises(UserError) as err:
        check_data(spec)
    assert err.value.key == "budget" and "7 steps at batch size 16" in err.value.line()
    check_data(spec.with_overrides(budget={"epochs": 3}))   # 10 steps at batch 32: fits


def test_the_validation_split_is_checked_before_ray(tmp_path):
    # A search on a val_* metric needs a validation set; one that leaves nothing to train on is refused.
    none = load_spec(_space(tmp_path, SPACE.replace("num_test: 32}", "num_test: 32, validation: 0}")))
    with pytest.raises(UserError) as err:
        check_spec(none)
    assert err.value.key == "dataset.validation" and "no validation set" in err.value.line()
    assert "\n" not in err.value.line()
    whole = load_spec(_space(tmp_path, SPACE.replace("num_test: 32}", "num_test: 32, validation: 128}")))
    with pytest.raises(UserError) as err:
        check_data(whole)
    assert err.value.key == "dataset.validation" and "none to train on" in err.value.line()
    half = load_spec(_space(tmp_path, SPACE.replace("num_test: 32}", "num_test: 32, validation: 1.5}")))
    with pytest.raises(UserError) as err:
        check_spec(half)
    assert err.value.key == "dataset.validation" and "fraction" in err.value.line()


# ---------------------------------------------------------------------------- resources

def test_fit_needs_every_resource_and_an_allowed_type():
    cpu_node = Node({"CPU": 2.0}, {}, name="this machine")
    t4 = Node({"CPU": 4.0, "GPU": 1.0, "accelerator_type:T4": 1.0}, {"ray.io/accelerator-type": "T4"})
    assert cpu_node.fits(Placement(cpu=1)) and not cpu_node.fits(Placement(cpu=3))
    assert not cpu_node.fits(Placement(cpu=1, gpu=0.25)) and t4.fits(Placement(cpu=1, gpu=0.25))
    assert t4.fits(Placement(cpu=1, gpu=1, accelerators=("T4",)))            # a pin
    assert not t4.fits(Placement(cpu=1, gpu=1, accelerators=("A100",)))
    assert t4.fits(Placement(cpu=1, gpu=1, accelerators=("A100", "T4")))     # a label selector
    assert not t4.fits(Placement(cpu=1, gpu=1, accelerators=("A100", "H100")))
    with pytest.raises(UserError) as err:
        check_fits([Placement(cpu=1, gpu=0.25)], [cpu_node], where="s.yaml", cluster="the local Ray", fix="F")
    assert err.value.line() == ("s.yaml: resources: each trial asks for CPU 1, GPU 0.25; the local Ray cannot give "
                                "that (this machine: CPU 2, no GPU); F")


def test_more_cpus_than_this_machine_has_is_refused(tmp_path):
    spec = load_spec(_space(tmp_path, SPACE.replace("searcher:", "resources: {cpu: 4096}\nsearcher:")))
    with pytest.raises(UserError) as err:
        check_resources(spec, address=None)
    assert "CPU 4096" in err.value.line() and "--resources cpu=1" in err.value.line()
    check_resources(spec.with_overrides(resources={"cpu": 1}), address=None)


def test_a_gpu_space_on_a_machine_without_gpu_exits_2_before_writing_anything(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = _space(tmp_path, SPACE.replace("searcher:", "resources: {cpu: 1, gpu: 0.25}\nsearcher:"))
    assert main(["search", str(path), "--storage-path", str(tmp_path / "res")]) == 2
    line = _one_line(capsys)
    assert "GPU 0.25" in line and "no GPU" in line and "--resources cpu=1" in line
    assert not (tmp_path / "res").exists()


def test_resources_flag_is_validated_like_the_space(tmp_path, capsys):
    path = _space(tmp_path)
    assert main(["search", str(path), "--resources", "gpus=1", "--storage-path", str(tmp_path / "res")]) == 2
    assert "resources.gpus" in _one_line(capsys)
    assert main(["search", str(path), "--resources", "[1]", "--storage-path", str(tmp_path / "res")]) == 2
    assert "--resources" in _one_line(capsys)


def test_pending_timeout_must_be_positive(tmp_path, capsys):
    path = _space(tmp_path, SPACE.replace("searcher:", "pending_timeout_seconds: 0\nsearcher:"))
    assert main(["search", str(path), "--storage-path", str(tmp_path / "res")]) == 2
    assert "pending_timeout_seconds" in _one_line(capsys)


# ---------------------------------------------------------------------------- the stored spec and --resume NAME

def _experiment(tmp_path: Path, overrides: dict | None = None) -> tuple[Path, Path]:
    space = _space(tmp_path)
    spec = load_spec(space).with_overrides(**{k: v for k, v in (overrides or {}).items()})
    experiment = tmp_path / "res" / "x"
    save_spec(spec, str(experiment), overrides=overrides)
    return space, experiment


def test_the_experiment_stores_the_resolved_spec_the_space_text_and_the_overrides(tmp_path):
    space, experiment = _experiment(tmp_path, {"num_samples": 2, "budget": {"steps": 20}})
    launch = yaml.safe_load((experiment / LAUNCH_FILE).read_text())
    assert launch["space_text"] == space.read_text() and launch["space"] == str(space)
    assert launch["overrides"] == {"num_samples": 2, "budget": {"steps": 20}}
    resolved = yaml.safe_load((experiment / SPEC_FILE).read_text())
    assert resolved["num_samples"] == 2 and resolved["budget"] == {"steps": 20}


def test_resume_without_a_space_gets_the_stored_spec(tmp_path):
    space, experiment = _experiment(tmp_path, {"budget": {"steps": 20}})
    expected = load_spec(space).with_overrides(budget={"steps": 20})
    got = resume_spec(str(experiment))
    assert got.to_dict() == expected.to_dict()


def test_resume_with_the_same_space_reapplies_the_stored_overrides(tmp_path):
    space, experiment = _experiment(tmp_path, {"budget": {"steps": 20}})
    assert resume_spec(str(experiment), space=space).budget.amount == 20


def test_resume_with_a_changed_space_says_what_differs(tmp_path):
    space, experiment = _experiment(tmp_path)
    space.write_text(SPACE.replace("lr: 0.1", "lr: 0.2"))
    with pytest.raises(UserError) as err:
        resume_spec(str(experiment), space=space)
    assert "space.optimizer.lr: started with 0.1, given 0.2" in err.value.line()
    with pytest.raises(UserError) as err:
        resume_spec(str(experiment), overrides={"budget": {"steps": 80}})
    assert "budget.steps: started with 40, given 80" in err.value.line()


def test_resume_cli_errors_are_one_line(tmp_path, capsys):
    storage = str(tmp_path / "res")
    assert main(["search", "--resume", "nope", "--storage-path", storage]) == 2
    assert "nope" in _one_line(capsys)
    assert main(["search", "--resume", "a", "--name", "b", "--storage-path", storage]) == 2
    assert "--resume" in _one_line(capsys)
    assert main(["search", "--resume", "--storage-path", storage]) == 2
    assert "--resume NAME" in _one_line(capsys)
    space, experiment = _experiment(tmp_path)
    space.write_text(SPACE.replace("lr: 0.1", "lr: 0.2"))
    assert main(["search", str(space), "--resume", "x", "--storage-path", storage]) == 2
    assert "space.optimizer.lr" in _one_line(capsys)


def test_a_scaling_space_whose_asha_may_starve_the_fit_is_warned_about_before_launch(tmp_path, capsys):
    from tune_lip.tune.launch import load_space
    from tune_lip.tune.preflight import scheduler_warnings

    text = (Path(search_spaces.path_of("aol_lr_batch")).read_text()
            .replace("brackets: 1, protect: 4}", "brackets: 1}"))
    (tmp_path / "starved.yaml").write_text(text)
    (warning,) = scheduler_warnings(load_space(tmp_path / "starved.yaml"))
    assert "starved.yaml" in warning and "protect: 4" in warning and "dataset.batch_size" in warning
    for name in search_spaces.available():   # every shipped space leaves its analysis its data
        assert scheduler_warnings(load_space(name)) == [], name
    # Through the CLI, on stderr, before anything starts (here the preflight then stops it:
    # no node of this machine has 64 CPUs).
    assert main(["search", str(tmp_path / "starved.yaml"), "--resources", "cpu=64",
                 "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.index("warning: ") < err.index("error: ") and "protect: 4" in err


def test_generated_data_validated_on_cifar10_keeps_every_generated_image():
    # SU validates the generated data on a hold-out of the real CIFAR-10 training set: an epoch
    # counts every generated image, and a small generated file is no error.
    from tune_lip.studies.config import DataConfig
    from tune_lip.tune.preflight import _after_split

    su = DataConfig(name="generated", validation=5000, options={"validation_from": "cifar10"})
    assert _after_split(su, 1000, "space.yaml") == 1000
    held_out = DataConfig(name="generated", validation=500)
    assert _after_split(held_out, 1000, "space.yaml") == 500
