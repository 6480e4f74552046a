"""Per-trial placement: GPU fractions, accelerator pins and the memory rule (no Ray cluster)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from tune_lip.cluster.placement import (
    ACCELERATOR_LABEL,
    GPU_MEMORY_GB,
    MemoryEstimate,
    estimate_memory,
    plan_placement,
)
from tune_lip.errors import UserError
from tune_lip.tune.spec import parse_spec

CONFIG = {"model": {"name": "aol_mlp", "width": 64, "depth": 4},
          "dataset": {"name": "synthetic", "batch_size": 64, "num_train": 128, "num_test": 32}}


def _needs(gb: float):
    """An estimator that says every config needs ``gb`` GB (CUDA context included)."""
    from tune_lip.cluster.placement import CUDA_CONTEXT_GB

    return lambda config: MemoryEstimate(params=0, state_bytes=int((gb - CUDA_CONTEXT_GB) * 2**30),
                                         activation_bytes=0, data_bytes=0)


# ---------------------------------------------------------------------------- the estimate

def _saved_bytes_in_a_real_step(config: dict) -> tuple[int, int]:
    """(parameters, bytes autograd saves) of a real CPU forward pass of the trial's model."""
    from tune_lip.data.datasets import load_dataset
    from tune_lip.nn.models import build_model

    ds = dict(config["dataset"])
    b = ds.pop("batch_size")
    data = load_dataset(ds.pop("name"), **ds)
    model = build_model(config["model"]["name"], input_shape=data.input_shape, num_classes=data.num_classes,
                        **{k: v for k, v in config["model"].items() if k != "name"})
    params = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if id(t) not in params:
            saved[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(b, *data.input_shape)).sum().backward()
    return sum(p.numel() for p in model.parameters()), sum(saved.values())


@pytest.mark.parametrize("model", [{"name": "aol_mlp", "width": 64, "depth": 4},
                                   {"name": "cpl_convnet", "width": 8, "depth": 2},
                                   {"name": "convnet_si", "width": 8}])
def test_estimate_counts_what_a_real_step_saves(model):
    config = {**CONFIG, "model": model}
    params, saved = _saved_bytes_in_a_real_step(config)
    est = estimate_memory(config)
    assert est.params == params
    assert est.activation_bytes == saved > 0
    assert est.state_bytes == 4 * params * 3  # weights, gradients, SGD momentum


def test_estimate_grows_with_batch_size_and_adam_state():
    def at(b: int):
        return estimate_memory({**CONFIG, "dataset": {**CONFIG["dataset"], "batch_size": b}})

    small, mid, big = at(64), at(128), at(256)
    # linear in the batch size (plus what the weight transforms save, once per step)
    assert big.activation_bytes - mid.activation_bytes == 2 * (mid.activation_bytes - small.activation_bytes) > 0
    assert big.total_gb > small.total_gb
    adam = estimate_memory({**CONFIG, "optimizer": {"name": "adam"}})
    assert adam.state_bytes == 4 * small.params * 4


# ---------------------------------------------------------------------------- the rules

def test_one_accelerator_pins_by_resource_a_list_by_label():
    one = plan_placement({"cpu": 1, "gpu": 0.5, "accelerator": ("V100",)}, CONFIG)
    assert one.bundle() == {"CPU": 1.0, "GPU": 0.5, "accelerator_type:V100": 0.001}
    assert one.label_selector() is None
    two = plan_placement({"cpu": 2, "gpu": 1, "accelerator": ("A100", "T4")}, CONFIG)
    assert two.bundle() == {"CPU": 2.0, "GPU": 1.0}
    assert two.label_selector() == {ACCELERATOR_LABEL: "in(A100,T4)"}
    factory = two.factory()
    assert factory.bundles == [{"CPU": 2.0, "GPU": 1.0}]
    assert factory._bound.kwargs["bundle_label_selector"] == [{ACCELERATOR_LABEL: "in(A100,T4)"}]
    free = plan_placement({"cpu": 1, "gpu": 0.25, "memory_gb": 2}, CONFIG)
    assert free.bundle() == {"CPU": 1.0, "GPU": 0.25, "memory": 2 * 2**30} and free.label_selector() is None


def test_memory_rule_keeps_big_configs_off_small_gpus():
    resources = {"cpu": 1, "gpu": 1, "min_gpu_memory_gb": "auto", "accelerator": ("A100", "V100", "T4")}
    small = plan_placement(resources, CONFIG, estimate=_needs(10))
    assert small.accelerators == ("A100", "V100", "T4")
    big = plan_placement(resources, CONFIG, estimate=_needs(30))
    assert big.accelerators == ("A100",)
    assert big.bundle()["accelerator_type:A100"] == 0.001
    fixed = plan_placement({**resources, "min_gpu_memory_gb": 24.0}, CONFIG, estimate=_needs(1))
    assert fixed.accelerators == ("A100",)


def test_memory_rule_without_a_list_uses_the_clusters_types():
    resources = {"cpu": 1, "gpu": 0.5, "min_gpu_memory_gb": "auto"}
    p = plan_placement(resources, CONFIG, present=("A100", "L4", "T4"), estimate=_needs(20))
    assert p.accelerators == ("A100", "L4")  # 40 and 24 GB
    assert plan_placement(resources, CONFIG, present=("A100", "L4", "T4"), estimate=_needs(30)).accelerators == ("A100",)
    anywhere = plan_placement(resources, CONFIG, estimate=_needs(100))  # no cluster: the memory table
    assert set(anywhere.accelerators) == {t for t, gb in GPU_MEMORY_GB.items() if gb >= 100}


def test_gpu_auto_packs_small_trials():
    resources = {"cpu": 1, "gpu": "auto", "accelerator": ("T4",)}  # 16 GB
    assert plan_placement(resources, CONFIG, estimate=_needs(1.5)).gpu == 0.125
    assert plan_placement(resources, CONFIG, estimate=_needs(3.0)).gpu == 0.25
    assert plan_placement(resources, CONFIG, estimate=_needs(7.9)).gpu == 0.5
    assert plan_placement(resources, CONFIG, estimate=_needs(12)).gpu == 1.0
    # sized on the smallest allowed GPU: 3 GB is an eighth of an A100 but a quarter of a T4
    both = {**resources, "accelerator": ("A100", "T4")}
    assert plan_placement(both, CONFIG, estimate=_needs(3.0)).gpu == 0.25
    with_rule = {**both, "min_gpu_memory_gb": "auto"}
    assert plan_placement(with_rule, CONFIG, estimate=_needs(20)).gpu == 0.5  # 20 of 40 GB


def test_no_gpu_big_enough_is_a_user_error():
    resources = {"cpu": 1, "gpu": 1, "min_gpu_memory_gb": "auto", "accelerator": ("V100", "T4")}
    with pytest.raises(UserError) as err:
        plan_placement(resources, CONFIG, where="big.yaml", estimate=_needs(30))
    assert err.value.key == "resources.min_gpu_memory_gb" and err.value.where == "big.yaml"
    assert "30.0 GB" in err.value.problem and "V100 16 GB" in err.value.problem


def test_unknown_accelerator_memory_needs_a_table_entry():
    resources = {"cpu": 1, "gpu": 1, "min_gpu_memory_gb": 20.0, "accelerator": ("RTX4090",)}
    with pytest.raises(UserError) as err:
        plan_placement(resources, CONFIG)
    assert err.value.key == "resources.gpu_memory_gb"
    ok = plan_placement({**resources, "gpu_memory_gb": {"RTX4090": 24.0}}, CONFIG)
    assert ok.accelerators == ("RTX4090",)


# ---------------------------------------------------------------------------- the spec

def _spec(resources: dict, **extra) -> dict:
    return {"study": "lipschitz", "metric": "val_acc", "mode": "max", "budget": {"steps": 10}, "reports": 2,
            "resources": resources, "space": {"optimizer": {"lr": 0.1}}, **extra}


def test_spec_reads_auto_rules_and_max_failures():
    spec = parse_spec(_spec({"gpu": "auto", "min_gpu_memory_gb": "auto", "accelerator": ["A100", "T4"],
                             "gpu_memory_gb": {"T4": 15}}, max_failures=5), where="s.yaml")
    assert spec.resources == {"gpu": "auto", "min_gpu_memory_gb": "auto", "accelerator": ("A100", "T4"),
                              "gpu_memory_gb": {"T4": 15.0}, "cpu": 1.0}
    assert spec.max_failures == 5
    assert parse_spec(spec.to_dict(), where="s.yaml") == spec
    assert parse_spec(_spec({"cpu": 1}), where="s.yaml").max_failures == 3


@pytest.mark.parametrize("resources, key", [
    ({"gpu": "lots"}, "resources.gpu"),
    ({"cpu": "auto"}, "resources.cpu"),
    ({"gpu": 1, "gpu_memory_gb": {"T4": -1}}, "resources.gpu_memory_gb"),
    ({"gpu": 1, "gpu_memory_gb": [16]}, "resources.gpu_memory_gb"),
    ({"min_gpu_memory_gb": "auto"}, "resources.min_gpu_memory_gb"),
])
def test_spec_rejects_bad_resources(resources, key):
    with pytest.raises(UserError) as err:
        parse_spec(_spec(resources), where="s.yaml")
    assert err.value.key == key and err.value.fix


def test_search_refuses_a_config_no_gpu_can_hold(tmp_path):
    """Exit 2 with one line before Ray starts; nothing is written."""
    (tmp_path / "big.yaml").write_text(textwrap.dedent("""\
        study: lipschitz
        metric: val_acc
        mode: max
        budget: {steps: 10}
        reports: 2
        resources: {gpu: 1, min_gpu_memory_gb: auto, accelerator: T4, gpu_memory_gb: {T4: 0.5}}
        space:
          model: {name: aol_mlp, width: 64, depth: 2}
          dataset: {name: synthetic, batch_size: 64, num_train: 128, num_test: 32}
          optimizer: {lr: 0.1}
        """))
    out = subprocess.run([sys.executable, "-m", "tune_lip.cli", "search", str(tmp_path / "big.yaml"),
                          "--storage-path", str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "big.yaml" in lines[0] and "resources.min_gpu_memory_gb" in lines[0]
    assert not (tmp_path / "results").exists()


def test_rehearse_reads_nodes_and_refuses_bad_ones():
    from tune_lip.tune.rehearse import DEFAULT_NODES, parse_nodes

    assert parse_nodes(DEFAULT_NODES) == {"A100": 2, "A10G": 1, "T4": 1}
    for bad in ("A100", "A100:0", ":2", "A100:two"):
        with pytest.raises(UserError):
            parse_nodes(bad)
    out = subprocess.run([sys.executable, "-m", "tune_lip.cli", "rehearse", "demo", "--nodes", "A100:1",
                          "--kill", "T4"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--kill" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_estimate_fills_in_the_studys_defaults():
    from tune_lip.studies.lipschitz import LipschitzConfig

    bare = {"dataset": {"name": "synthetic", "batch_size": 64, "num_train": 128, "num_test": 32}}
    default_model = {"model": {"name": LipschitzConfig().model.name, **LipschitzConfig().model.options}}
    assert estimate_memory(bare, config_class=LipschitzConfig) == estimate_memory({**bare, **default_model})


def test_auto_needs_a_study_with_a_model():
    import functools

    from tune_lip.studies.nqm import NQMConfig

    estimate = functools.partial(estimate_memory, config_class=NQMConfig)
    with pytest.raises(UserError) as err:
        plan_placement({"cpu": 1, "gpu": "auto"}, {"budget": {"steps": 10}}, where="nqm.yaml", estimate=estimate)
    assert err.value.key == "resources.gpu" and "no model" in err.value.problem


def test_cifar_estimate_needs_no_files(tmp_path):
    """A cluster's head often has no data: the CIFAR shapes are known without the files."""
    est = estimate_memory({"model": {"name": "aol_mlp", "width": 64, "depth": 2},
                           "dataset": {"name": "cifar10", "batch_size": 16, "data_dir": str(tmp_path)}})
    assert est.data_bytes == 60_000 * (32 * 32 * 3 + 8)
    from tune_lip.nn.models import build_model

    model = build_model("aol_mlp", input_shape=(3, 32, 32), num_classes=10, width=64, depth=2)
    assert est.params == sum(p.numel() for p in model.parameters())


def test_placement_command_prints_each_grid_point(tmp_path):
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""\
        study: lipschitz
        metric: val_acc
        mode: max
        budget: {steps: 10}
        reports: 2
        resources: {gpu: auto, min_gpu_memory_gb: auto, accelerator: [A100, T4]}
        space:
          model: {name: aol_mlp, width: 64, depth: 2}
          dataset: {name: synthetic, batch_size: {grid: [16, 256]}, num_train: 128, num_test: 32}
          optimizer: {lr: {loguniform: [0.01, 1.0]}}
        """))
    out = subprocess.run([sys.executable, "-m", "tune_lip.cli", "placement", str(tmp_path / "p.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:3]]
    assert [r[0] for r in rows] == ["16", "256"]
    assert all(r[-1] == "in(A100,T4)" and float(r[3]) == 0.125 for r in rows)


def test_launchable_types_come_from_ray_ups_config_on_the_head(tmp_path, monkeypatch):
    """On a `ray up` head node the cluster config says which GPU types the autoscaler can start,
    so `gpu: auto` and `calibrate --cluster` know them before any GPU node runs."""
    import shutil
    from pathlib import Path

    from tune_lip.cluster.placement import launchable_accelerators
    from tune_lip.tune.launch import _present_accelerators

    shipped = Path(__file__).parents[1] / "cluster.yaml"
    assert launchable_accelerators(shipped) == {"A100": 16.0, "A10G": 4.0, "T4": 8.0}  # max_workers x GPUs
    monkeypatch.setenv("HOME", str(tmp_path))
    assert launchable_accelerators() == {} and _present_accelerators() == ()  # not a head node
    shutil.copy(shipped, tmp_path / "ray_bootstrap_config.yaml")
    assert _present_accelerators() == ("A100", "A10G", "T4")
    (tmp_path / "ray_bootstrap_config.yaml").write_text("available_node_types: [not, a, mapping")
    assert launchable_accelerators() == {}  # unreadable: the live nodes decide
