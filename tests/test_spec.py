"""Tests for tune_lip.tune.spec: every class of input mistake gives one line naming file, key and fix;
the shipped search spaces load; the helpers the launcher uses behave."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tune_lip import search_spaces
from tune_lip.errors import UserError
from tune_lip.studies.budget import Budget
from tune_lip.tune.spec import (
    Choice,
    Grid,
    LogUniform,
    RandInt,
    SchedulerSpec,
    SearchSpec,
    Uniform,
    get_in,
    load_spec,
    parse_spec,
    set_in,
)

STUDIES: dict[str, set[str] | None] = {
    "lipschitz": {"val_certified_acc", "val_acc", "val_loss", "train_loss"},
    "sphere": None,
    "nqm": None,
    "scaling": None,
}

# A small valid spec; each mistake test breaks exactly one thing in a copy of it.
BASE: dict[str, Any] = {
    "study": "lipschitz",
    "metric": "val_certified_acc",
    "mode": "max",
    "budget": {"epochs": 2},
    "reports": 4,
    "scheduler": {"name": "asha", "grace_fraction": 0.25, "reduction_factor": 3},
    "searcher": {"name": "optuna", "per": "dataset.batch_size"},
    "num_samples": 2,
    "max_concurrent_trials": 2,
    "resources": {"cpu": 1},
    "space": {
        "seed": 0,
        "model": {"name": "aol_mlp", "width": 64, "depth": 4},
        "dataset": {"name": "digits", "batch_size": {"grid": [16, 64]}},
        "optimizer": {"name": "sgd", "lr": {"loguniform": [0.01, 1.0]}, "momentum": 0.9},
    },
}


def write(tmp_path: Path, raw: Any, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def error_for(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> tuple[Path, UserError]:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(UserError) as info:
        load_spec(path, studies=STUDIES)
    return path, info.value


def assert_user_line(err: UserError, where: Path | str, key: str | None, *fragments: str) -> None:
    line = err.line()
    assert "\n" not in line  # one line, printable without a traceback
    assert line.startswith(f"{where}: ")  # names the file first
    if key is not None:
        assert err.key == key and f": {key}: " in line  # then the key
    assert err.fix and line.endswith(err.fix)  # and ends with the fix
    for fragment in fragments:
        assert fragment in line, line


def test_base_is_valid(tmp_path: Path) -> None:
    # Guards the mistake tests: each fails for its one change, not for BASE itself.
    spec = load_spec(write(tmp_path, BASE), studies=STUDIES)
    assert spec.metric == "val_certified_acc"


# ---------------------------------------------------------------------------- files


def test_missing_file_suggests_list(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as info:
        load_spec(missing)
    assert_user_line(info.value, missing, None, "tune-lip search --list", "demo")


def test_unknown_bare_name_suggests_close_name() -> None:
    with pytest.raises(UserError) as info:
        load_spec("dmeo")
    assert_user_line(info.value, "dmeo", None, "did you mean 'demo'", "tune-lip search --list")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_spec(tmp_path)
    assert_user_line(info.value, tmp_path, None, "not a file", "tune-lip search --list")


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "study: lipschitz\nmetric: val_certified_acc\nspace: {model: [1, 2}\n")
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert_user_line(info.value, path, "line 3", "malformed YAML")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    # PyYAML would silently keep the second lr; a typo'd override must not pass unnoticed.
    path = write(tmp_path, "study: lipschitz\nspace:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert_user_line(info.value, path, "line 4", "duplicate key 'lr'")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert_user_line(info.value, path, None)


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 as a string; the loader must not, since the fixes suggest that spelling.
    text = yaml.safe_dump(BASE, sort_keys=False).replace("- 0.01", "- 1e-3")
    spec = load_spec(write(tmp_path, text))
    assert spec.domains()["optimizer.lr"] == LogUniform(0.001, 1.0)


# ---------------------------------------------------------------------------- top level


def test_unknown_top_level_key_did_you_mean(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(num_sample=3))
    assert_user_line(err, path, "num_sample", "did you mean 'num_samples'")


@pytest.mark.parametrize("key", ["study", "metric", "mode", "budget", "space"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    path, err = error_for(tmp_path, lambda r: r.pop(key))
    assert_user_line(err, path, key, "missing")


def test_unknown_study_lists_valid(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(study="lipschits"))
    assert_user_line(err, path, "study", "did you mean 'lipschitz'", "lipschitz, nqm, scaling, sphere")


def test_metric_not_reported_by_study(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(metric="val_certified_accuracy"))
    assert_user_line(err, path, "metric", "did you mean 'val_certified_acc'", "val_acc")


@pytest.mark.parametrize("metric, use", [("test_acc", "val_acc"), ("test_loss", "val_loss"),
                                         ("certified_acc", "val_certified_acc"),
                                         ("test_certified_acc@0.07", "val_certified_acc@0.07")])
def test_a_search_never_sees_test_metrics(tmp_path: Path, metric: str, use: str) -> None:
    # Test metrics come once, at a trial's end: a searcher or scheduler deciding on them would
    # choose on the test set. The error names the validation metric to search instead.
    path, err = error_for(tmp_path, lambda r: r.update(metric=metric))
    assert_user_line(err, path, "metric", "not a validation metric", f"use metric: {use}")


def test_metric_with_radius_suffix_is_allowed(tmp_path: Path) -> None:
    raw = {**copy.deepcopy(BASE), "metric": "val_certified_acc@0.0706"}
    assert load_spec(write(tmp_path, raw), studies=STUDIES).metric == "val_certified_acc@0.0706"


def test_mode_must_be_min_or_max(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(mode="maximize"))
    assert_user_line(err, path, "mode", "min or max")


@pytest.mark.parametrize(
    "budget, key",
    [({"hours": 1}, "budget.hours"), ({"steps": -5}, "budget.steps"), (30, "budget"),
     ({"reference_hours": 1}, "budget.reference")],
)
def test_bad_budget(tmp_path: Path, budget: Any, key: str) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(budget=budget))
    assert_user_line(err, path, key)


@pytest.mark.parametrize(
    "field, value",
    [("num_samples", 0), ("num_samples", 2.5), ("max_concurrent_trials", 0), ("reports", 0),
     ("reports", True), ("checkpoint_every", -1)],
)
def test_counts_must_be_positive_whole_numbers(tmp_path: Path, field: str, value: Any) -> None:
    path, err = error_for(tmp_path, lambda r: r.update({field: value}))
    assert_user_line(err, path, field)


def test_reports_must_fit_a_steps_budget(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(budget={"steps": 3}, reports=4))
    assert_user_line(err, path, "reports", "use reports: 3")


# ---------------------------------------------------------------------------- resources


@pytest.mark.parametrize(
    "resources, key, fragment",
    [
        ({"cpu": -1}, "resources.cpu", ">= 0"),
        ({"num_gpus": 1}, "resources.num_gpus", "did you mean 'gpu'"),
        ({"gpu": "half"}, "resources.gpu", "number"),
        ({"gpu": 1.5}, "resources.gpu", "gpu: 2"),
        ({"gpu": 0.5, "accelerator": 7}, "resources.accelerator", "A100"),
        ({"accelerator": "A100"}, "resources.accelerator", "GPU"),
        ({"min_gpu_memory_gb": 40}, "resources.min_gpu_memory_gb", "GPU"),
    ],
)
def test_bad_resources(tmp_path: Path, resources: dict[str, Any], key: str, fragment: str) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(resources=resources))
    assert_user_line(err, path, key, fragment)


def test_resources_accelerator_and_default_cpu(tmp_path: Path) -> None:
    raw = {**copy.deepcopy(BASE), "resources": {"gpu": 0.25, "accelerator": ["A100", "H100"],
                                                  "min_gpu_memory_gb": 40}}
    spec = load_spec(write(tmp_path, raw))
    # cpu defaults to Ray's 1 per trial; accelerator becomes a tuple of acceptable types.
    assert spec.resources == {"gpu": 0.25, "accelerator": ("A100", "H100"),
                              "min_gpu_memory_gb": 40.0, "cpu": 1.0}


# ---------------------------------------------------------------------------- scheduler, searcher


@pytest.mark.parametrize(
    "scheduler, key, fragment",
    [
        ({"name": "hyperband"}, "scheduler.name", "asha, none"),
        ("ashaa", "scheduler.name", "did you mean 'asha'"),
        ({"name": "asha", "grace_fraction": 0}, "scheduler.grace_fraction", "(0, 1]"),
        ({"name": "asha", "grace_fraction": 1.5}, "scheduler.grace_fraction", "(0, 1]"),
        ({"name": "asha", "reduction_factor": 1}, "scheduler.reduction_factor", "> 1"),
        ({"name": "asha", "brackets": 0}, "scheduler.brackets", ">= 1"),
        ({"name": "asha", "protect": -1}, "scheduler.protect", ">= 0"),
        ({"name": "asha", "protect": "all"}, "scheduler.protect", "protect: 4"),
        ({"name": "asha", "grace_period": 3}, "scheduler.grace_period",
         "did you mean 'grace_fraction'"),
    ],
)
def test_bad_scheduler(tmp_path: Path, scheduler: Any, key: str, fragment: str) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(scheduler=scheduler))
    assert_user_line(err, path, key, fragment)


@pytest.mark.parametrize("raw, expected", [
    ("none", SchedulerSpec("none")), (None, SchedulerSpec("none")),
    ({"name": "asha"}, SchedulerSpec("asha", 0.1, 3.0, 1)),
    ({"name": "asha", "protect": 4}, SchedulerSpec("asha", 0.1, 3.0, 1, protect=4)),
])
def test_scheduler_forms(tmp_path: Path, raw: Any, expected: SchedulerSpec) -> None:
    spec = load_spec(write(tmp_path, {**copy.deepcopy(BASE), "scheduler": raw}))
    assert spec.scheduler == expected


def test_unknown_searcher(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(searcher={"name": "optunaa"}))
    assert_user_line(err, path, "searcher.name", "did you mean 'optuna'", "optuna, random, grid")


def test_per_must_name_a_grid_domain(tmp_path: Path) -> None:
    per = ["optimizer.lr", "dataset.batch_size"]
    path, err = error_for(tmp_path, lambda r: r["searcher"].update(per=per))
    assert_user_line(err, path, "searcher.per", "'optimizer.lr' is a loguniform domain")


def test_per_must_name_an_existing_path(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r["searcher"].update(per="dataset.batchsize"))
    assert_user_line(err, path, "searcher.per", "did you mean 'dataset.batch_size'")


def test_per_only_for_optuna(tmp_path: Path) -> None:
    searcher = {"name": "random", "per": "dataset.batch_size"}
    path, err = error_for(tmp_path, lambda r: r.update(searcher=searcher))
    assert_user_line(err, path, "searcher.per", "only applies to searcher optuna")


def test_grid_searcher_rejects_random_domains(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r.update(searcher="grid"))
    assert_user_line(err, path, "optimizer.lr", "cannot sample a loguniform", "{grid: [...]}")


def test_optuna_needs_every_grid_in_per(tmp_path: Path) -> None:
    def mutate(r: dict[str, Any]) -> None:
        r["space"]["model"]["depth"] = {"grid": [2, 4]}

    path, err = error_for(tmp_path, mutate)
    assert_user_line(err, path, "searcher.per", "'model.depth'", "grid_search",
                     "per: [dataset.batch_size, model.depth]")


def test_optuna_with_nothing_to_search(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r["space"]["optimizer"].update(lr=0.1))
    assert_user_line(err, path, "searcher", "nothing to search", "searcher: grid")


# ---------------------------------------------------------------------------- domains


@pytest.mark.parametrize(
    "lr, key, fragment",
    [
        ({"loguniform": [0, 1.0]}, "optimizer.lr.loguniform", "lower bound must be > 0, got 0"),
        ({"loguniform": [-1, 1.0]}, "optimizer.lr.loguniform", "> 0"),
        ({"loguniform": [1.0, 0.1]}, "optimizer.lr.loguniform", "must be < upper bound"),
        ({"uniform": [0.5, 0.5]}, "optimizer.lr.uniform", "lower bound must be < upper bound"),
        ({"uniform": [0.1, 0.2, 0.3]}, "optimizer.lr.uniform", "exactly two bounds"),
        ({"loguniform": 0.1}, "optimizer.lr.loguniform", "exactly two bounds"),
        ({"loguniform": ["a", 1.0]}, "optimizer.lr.loguniform", "finite numbers"),
        ({"uniform": [True, 2]}, "optimizer.lr.uniform", "finite numbers"),
        ({"choice": []}, "optimizer.lr.choice", "non-empty list"),
        ({"choice": [0.1, 0.1]}, "optimizer.lr.choice", "twice"),
        ({"randint": [1.5, 4]}, "optimizer.lr.randint", "integers"),
        ({"randint": [4, 4]}, "optimizer.lr.randint", "exclusive"),
        ({"loguniform": [0.01, 1.0], "choice": [0.1]}, "optimizer.lr", "several domain keys"),
        ({"loguniform": [0.01, 1.0], "base": 0.1}, "optimizer.lr", "mixes a domain"),
        ({"log_uniform": [0.01, 1.0]}, "optimizer.lr.log_uniform", "did you mean 'loguniform'"),
        ({"grid_search": [0.1, 1.0]}, "optimizer.lr.grid_search", "did you mean 'grid'"),
        ([{"loguniform": [0.01, 1.0]}], "optimizer.lr[0]", "inside lists"),
    ],
)
def test_bad_domain(tmp_path: Path, lr: Any, key: str, fragment: str) -> None:
    path, err = error_for(tmp_path, lambda r: r["space"]["optimizer"].update(lr=lr))
    assert_user_line(err, path, key, fragment)


def test_empty_grid(tmp_path: Path) -> None:
    path, err = error_for(tmp_path, lambda r: r["space"]["dataset"].update(batch_size={"grid": []}))
    assert_user_line(err, path, "dataset.batch_size.grid", "non-empty list",
                     "{grid: [64, 256, 1024]}")


def test_domains_parsed_into_classes(tmp_path: Path) -> None:
    raw = copy.deepcopy(BASE)
    raw["searcher"] = "random"
    raw["space"]["optimizer"].update(momentum={"uniform": [0.8, 0.99]},
                                     name={"choice": ["sgd", "adam"]})
    raw["space"]["model"]["depth"] = {"randint": [2, 9]}
    spec = load_spec(write(tmp_path, raw))
    # File order, dotted paths without the `space.` prefix.
    assert spec.domains() == {
        "model.depth": RandInt(2, 9),
        "dataset.batch_size": Grid((16, 64)),
        "optimizer.name": Choice(("sgd", "adam")),
        "optimizer.lr": LogUniform(0.01, 1.0),
        "optimizer.momentum": Uniform(0.8, 0.99),
    }
    assert isinstance(spec.domains()["optimizer.lr"].lo, float)


# ---------------------------------------------------------------------------- helpers


def test_grid_points_and_representative_config(tmp_path: Path) -> None:
    raw = copy.deepcopy(BASE)
    raw["space"]["model"]["depth"] = {"grid": [2, 4, 8]}
    raw["searcher"]["per"] = ["dataset.batch_size", "model.depth"]
    spec = load_spec(write(tmp_path, raw))
    points = spec.grid_points()
    # Cartesian product, first domain in file order varies slowest.
    assert points[:2] == [{"model.depth": 2, "dataset.batch_size": 16},
                          {"model.depth": 2, "dataset.batch_size": 64}]
    assert len(points) == 6 and len({tuple(p.items()) for p in points}) == 6
    config = spec.representative_config()
    assert config["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9}  # lo of the range
    assert config["model"]["depth"] == 2 and config["dataset"]["batch_size"] == 16  # first values
    config["model"]["depth"] = 99  # a copy: the spec is untouched
    assert spec.domains()["model.depth"] == Grid((2, 4, 8))


def test_grid_points_without_grids() -> None:
    raw = copy.deepcopy(BASE)
    raw["searcher"] = "random"
    raw["space"]["dataset"]["batch_size"] = 64
    assert parse_spec(raw, where="inline").grid_points() == [{}]


def test_with_overrides() -> None:
    spec = parse_spec(copy.deepcopy(BASE), where="inline")
    small = spec.with_overrides(num_samples=1, budget={"steps": 10})
    assert small.num_samples == 1 and small.budget == Budget("steps", 10)
    assert spec.num_samples == 2 and spec.budget == Budget("epochs", 2.0)  # original unchanged
    assert spec.with_overrides(budget=Budget("steps", 20)).budget.amount == 20
    with pytest.raises(UserError) as info:
        spec.with_overrides(num_samples=0, where="--num-samples")
    assert_user_line(info.value, "--num-samples", "num_samples")


def test_get_in_set_in() -> None:
    config: dict[str, Any] = {"dataset": {"name": "digits"}}
    set_in(config, "dataset.batch_size", 64)
    set_in(config, "optimizer.lr", 0.1)  # creates the intermediate mapping
    assert config == {"dataset": {"name": "digits", "batch_size": 64}, "optimizer": {"lr": 0.1}}
    assert get_in(config, "optimizer.lr") == 0.1
    with pytest.raises(KeyError, match="optimizer.momentum"):
        get_in(config, "optimizer.momentum")


# ---------------------------------------------------------------------------- shipped spaces


def test_shipped_names() -> None:
    assert {"demo", "aol_lr_batch", "aol_depth", "cpl_lr_batch"} <= set(search_spaces.available())
    assert search_spaces.path_of("demo.yaml") == search_spaces.path_of("demo")
    with pytest.raises(UserError):
        search_spaces.path_of("nope")


@pytest.mark.parametrize("name", search_spaces.available())
def test_shipped_space_round_trips(name: str) -> None:
    spec = load_spec(name, studies=STUDIES)
    assert spec.description  # the first comment line, shown by `tune-lip search --list`
    assert Path(spec.path).is_file()
    # to_dict() is the YAML format again: re-parsing gives the same spec.
    dumped = yaml.safe_load(yaml.safe_dump(spec.to_dict()))
    assert parse_spec(dumped, where=spec.path, studies=STUDIES) == spec
    assert spec.representative_config()  # a concrete config exists for every shipped space


def test_demo_by_name() -> None:
    spec = load_spec("demo")
    assert load_spec("demo.yaml") == spec
    assert isinstance(spec, SearchSpec)
    assert spec.study == "lipschitz" and spec.mode == "max"
    assert spec.searcher.name == "grid" and spec.scheduler.name == "none" and spec.replicates == 2
    assert spec.space["dataset"]["name"] == "digits"
    assert sorted({p["dataset.batch_size"] for p in spec.grid_points()}) == [8, 16, 32, 64]
    assert isinstance(spec.domains()["optimizer.lr"], Grid)


def test_error_for_shipped_name_uses_short_where(tmp_path: Path) -> None:
    # Shipped files are named `search_spaces/<name>.yaml` in messages, not by install path.
    with pytest.raises(UserError) as info:
        load_spec("demo", studies={"sphere": None})
    assert info.value.line().startswith("search_spaces/demo.yaml: study: ")


def test_spec_module_is_ray_free() -> None:
    code = ("import sys, tune_lip.tune.spec, tune_lip.search_spaces; "
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


BOUNDARY = {"study": "sphere", "metric": "train_loss", "mode": "min", "budget": {"steps": 100},
            "searcher": {"name": "boundary", "key": "optimizer.elr", "initial": 5}, "num_samples": 12,
            "space": {"optimizer": {"mode": "sphere", "elr": {"loguniform": [1e-5, 1.0]}}}}


def test_boundary_searcher_parses_and_round_trips() -> None:
    spec = parse_spec(BOUNDARY, where="b.yaml")
    assert (spec.searcher.name, spec.searcher.key, spec.searcher.initial) == ("boundary", "optimizer.elr", 5)
    assert parse_spec(spec.to_dict(), where="b.yaml") == spec


@pytest.mark.parametrize("change, key", [
    (lambda r: r["space"]["optimizer"].update(elr={"uniform": [0.0, 1.0]}), "searcher.key"),
    (lambda r: r["searcher"].update(key="optimizer.lr"), "searcher.key"),
    (lambda r: r["space"].update(seed={"grid": [0, 1]}), "seed"),
    (lambda r: r["searcher"].pop("key"), "searcher.key"),
    (lambda r: r["searcher"].update(initial=1), "searcher.initial"),
])
def test_boundary_searcher_mistakes(change, key) -> None:
    import copy

    raw = copy.deepcopy(BOUNDARY)
    change(raw)
    with pytest.raises(UserError) as err:
        parse_spec(raw, where="b.yaml")
    assert err.value.line().startswith(f"b.yaml: {key}:")


def _line_spec(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load((Path(search_spaces.__file__).parent / "nqm_sgd_lr_line.yaml").read_text())
    raw.update(changes)
    return raw


def test_line_searcher_parses_and_round_trips() -> None:
    spec = parse_spec(_line_spec(), where="line.yaml")
    s = spec.searcher
    assert (s.name, s.per, s.key, s.tolerance, s.warm_start) == ("line", ("dataset.batch_size",), "optimizer.lr",
                                                                  0.1, True)
    assert parse_spec(spec.to_dict(), where="line.yaml") == spec
    assert "tolerance" not in parse_spec(_line_spec(searcher="random"), where="r.yaml").to_dict()["searcher"]


@pytest.mark.parametrize("changes,key", [
    ({"scheduler": {"name": "asha"}}, "scheduler"),
    ({"replicates": 2}, "replicates"),
    ({"searcher": {"name": "line", "per": "dataset.batch_size", "key": "dim"}}, "searcher.key"),
    ({"searcher": {"name": "line", "key": "optimizer.lr"}}, "dataset.batch_size"),
    ({"searcher": {"name": "line", "per": "dataset.batch_size", "key": "optimizer.lr", "tolerance": 1.5}},
     "searcher.tolerance"),
    ({"searcher": {"name": "line", "per": "dataset.batch_size", "key": "optimizer.lr", "warm_start": "yes"}},
     "searcher.warm_start"),
])
def test_line_searcher_errors_name_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(UserError) as err:
        parse_spec(_line_spec(**changes), where="line.yaml")
    assert err.value.key == key and err.value.fix
