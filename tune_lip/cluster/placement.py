"""Where a trial runs: GPU fraction, accelerator types, memory, from the spec and the config.

A spec's ``resources`` say what every trial asks Ray for. Two of them may depend on the
trial's config (its model and batch size), through an estimate of its GPU memory:

- ``gpu: auto`` -> the smallest of 1/8, 1/4, 1/2 or 1 GPU that holds the estimate on the
  smallest allowed GPU, so small trials pack several per GPU;
- ``min_gpu_memory_gb: auto`` (or a number) -> only accelerator types with at least that much
  memory per GPU (`GPU_MEMORY_GB`, extended by ``resources.gpu_memory_gb``) are allowed.

``accelerator: A100`` (or a list) limits the types too. One allowed type pins the trial with
``accelerator_type:<T>: 0.001`` in its bundle (the resource every node of the type declares,
which is also what Ray's autoscaler scales on); several allowed types become a bundle label
selector ``ray.io/accelerator-type in(...)`` (the label Ray sets on GPU nodes and
``cluster.yaml`` declares per node type).

The estimate (`estimate_memory`) runs the model's forward pass on PyTorch's ``meta`` device at
the trial's batch size and adds up what autograd saves for the backward pass, plus weights,
gradients, optimizer state, the data set kept on the device, and the CUDA context.

Example:
    >>> p = plan_placement({"cpu": 1, "gpu": 0.25, "accelerator": ("A100", "H100")}, {})
    >>> p.bundle(), p.label_selector()
    ({'CPU': 1.0, 'GPU': 0.25}, {'ray.io/accelerator-type': 'in(A100,H100)'})
    >>> plan_placement({"cpu": 1, "gpu": 1, "accelerator": ("T4",)}, {}).bundle()
    {'CPU': 1.0, 'GPU': 1.0, 'accelerator_type:T4': 0.001}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tune_lip.errors import UserError

__all__ = ["GPU_MEMORY_GB", "ACCELERATOR_LABEL", "MemoryEstimate", "Placement", "estimate_memory",
           "plan_placement", "cluster_accelerators", "launchable_accelerators", "node_accelerator",
           "resource_function", "accelerator_type", "Node", "local_node", "live_nodes", "launchable_nodes", "check_fits",
           "describe_resources"]

ACCELERATOR_LABEL = "ray.io/accelerator-type"
PIN_AMOUNT = 0.001          # of the node's accelerator_type:<T> resource: a pin, not a quota
GPU_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
CUDA_CONTEXT_GB = 0.6       # CUDA context + cuBLAS/cuDNN workspaces, per process
ACTIVATION_HEADROOM = 1.5   # temporaries and allocator fragmentation on top of saved tensors

# Memory per GPU of Ray's accelerator type names (ray.util.accelerators). Where a type comes
# in two sizes the smaller is listed, so a rule never lets a trial on a GPU too small for it.
GPU_MEMORY_GB: dict[str, float] = {
    "K80": 12, "P4": 8, "P100": 16, "V100": 16, "T4": 16, "A10": 24, "A10G": 24, "L4": 24,
    "L40S": 48, "A100": 40, "A100-40G": 40, "A100-80G": 80, "H100": 80, "H200": 141, "B200": 180,
}


@dataclass(frozen=True)
class MemoryEstimate:
    """A trial's GPU memory, in bytes, by what holds it."""

    params: int                  # number of model parameters
    state_bytes: int             # weights + gradients + optimizer state (float32)
    activation_bytes: int        # tensors autograd saves for backward, at the trial's batch size
    data_bytes: int              # the data set kept on the device (uint8 images + labels)

    @property
    def total_gb(self) -> float:
        used = self.state_bytes + ACTIVATION_HEADROOM * self.activation_bytes + self.data_bytes
        return used / 2**30 + CUDA_CONTEXT_GB


_ESTIMATES: dict[str, MemoryEstimate] = {}


def estimate_memory(config: Mapping[str, Any], config_class: Any = None) -> MemoryEstimate:
    """GPU memory of one training step of an image-study trial config (model, dataset, optimizer).

    config_class: the study's config class; its defaults fill what ``config`` leaves out (a
    study without a model raises ValueError). Cached per (model, dataset, batch size,
    optimizer), so a search estimates each once.
    """
    import torch

    from tune_lip.nn.models import build_model

    if config_class is not None:
        cfg = config_class.from_dict(dict(config))
        if not (hasattr(cfg, "model") and hasattr(cfg, "dataset")):
            raise ValueError(f"{config_class.__name__} trains no model on a data set, so there is no "
                             "memory to estimate")
        ds = cfg.dataset
        config = {"model": {"name": cfg.model.name, **cfg.model.options},
                  "dataset": {"name": ds.name, "batch_size": ds.batch_size, "data_dir": ds.data_dir,
                              "download": ds.download, **ds.options},
                  "optimizer": {"name": getattr(getattr(cfg, "optimizer", None), "name", "sgd")}}
    model = dict(config.get("model") or {})
    dataset = dict(config.get("dataset") or {})
    optimizer = config.get("optimizer") or {}
    optimizer_name = str(optimizer.get("name", "sgd")).lower() if isinstance(optimizer, Mapping) else "sgd"
    key = json.dumps([model, dataset, optimizer_name], sort_keys=True, default=str)
    if key in _ESTIMATES:
        return _ESTIMATES[key]

    name = model.pop("name")
    batch_size = int(dataset.pop("batch_size", 256))
    input_shape, num_classes, data_bytes = _data_shape(dataset)
    with torch.device("meta"):  # shapes only: no memory, no compute
        net = build_model(name, input_shape=input_shape, num_classes=num_classes, **model)
    params = sum(p.numel() for p in net.parameters())
    param_ids = {id(p) for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in param_ids:  # weights are counted once, in state_bytes
            saved[id(t)] = t.numel() * t.element_size()
        return t

    net.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.empty(batch_size, *input_shape, device="meta"))
    states = 2 if "adam" in optimizer_name else 1  # Adam: two moments; SGD: momentum
    estimate = MemoryEstimate(params=params, state_bytes=4 * params * (2 + states),
                              activation_bytes=sum(saved.values()), data_bytes=data_bytes)
    _ESTIMATES[key] = estimate
    return estimate


# Shapes of the CIFAR sets, for estimating on a machine without their files (a cluster's head):
# (C, H, W), classes, train + test images.
_CIFAR_SHAPES = {"cifar10": ((3, 32, 32), 10, 60_000), "cifar100": ((3, 32, 32), 100, 60_000)}


def _data_shape(dataset: dict[str, Any]) -> tuple[tuple[int, int, int], int, int]:
    """(input shape, classes, bytes of the uint8 images and int64 labels kept on the device)."""
    from tune_lip.data.datasets import load_dataset

    name = dataset.pop("name", "digits")
    try:
        data = load_dataset(name, data_dir=dataset.pop("data_dir", "data"),
                            download=dataset.pop("download", False), **dataset)
    except UserError:
        if name not in _CIFAR_SHAPES:
            raise
        shape, classes, images = _CIFAR_SHAPES[name]
        return shape, classes, images * (math.prod(shape) + 8)
    data_bytes = sum(t.numel() * t.element_size() for t in
                     (data.train_images, data.train_labels, data.test_images, data.test_labels))
    return data.input_shape, data.num_classes, data_bytes


@dataclass(frozen=True)
class Placement:
    """What one trial asks Ray for."""

    cpu: float
    gpu: float = 0.0
    memory_bytes: float | None = None
    accelerators: tuple[str, ...] | None = None   # allowed types; None = any node

    def bundle(self) -> dict[str, float]:
        out = {"CPU": float(self.cpu)}
        if self.gpu:
            out["GPU"] = float(self.gpu)
        if self.memory_bytes:
            out["memory"] = float(self.memory_bytes)
        if self.accelerators is not None and len(self.accelerators) == 1:
            out[f"accelerator_type:{self.accelerators[0]}"] = PIN_AMOUNT
        return out

    def label_selector(self) -> dict[str, str] | None:
        if self.accelerators is None or len(self.accelerators) == 1:
            return None
        return {ACCELERATOR_LABEL: f"in({','.join(self.accelerators)})"}

    def factory(self) -> Any:
        """The `ray.tune.PlacementGroupFactory` of this placement."""
        from ray import tune

        selector = self.label_selector()
        if selector is None:
            return tune.PlacementGroupFactory([self.bundle()])
        return tune.PlacementGroupFactory([self.bundle()], bundle_label_selector=[selector])


def _memory_of(kind: str, table: Mapping[str, float]) -> float | None:
    return table.get(kind, table.get(kind.upper()))


def plan_placement(resources: Mapping[str, Any], config: Mapping[str, Any], *,
                   present: tuple[str, ...] = (), where: str = "resources",
                   estimate: Callable[[Mapping[str, Any]], MemoryEstimate] = estimate_memory) -> Placement:
    """The placement of the trial with ``config`` under the spec's ``resources``.

    present: accelerator types the cluster has or can start; without an ``accelerator`` list
    they are the candidates (else every type in the memory table is).
    Raises UserError (naming ``where`` and the key) when no allowed GPU can hold the trial.
    """
    memory = {**GPU_MEMORY_GB, **(resources.get("gpu_memory_gb") or {})}
    gpu, rule = resources.get("gpu", 0.0), resources.get("min_gpu_memory_gb")
    need = None
    if "auto" in (gpu, rule):
        try:
            need = estimate(config).total_gb
        except ValueError as exc:
            key = "resources.gpu" if gpu == "auto" else "resources.min_gpu_memory_gb"
            raise UserError(where, key, f"auto: {exc}", fix="give it a number instead") from None
    listed = resources.get("accelerator")
    candidates = tuple(listed) if listed else (tuple(present) or tuple(memory))
    allowed: tuple[str, ...] | None = tuple(listed) if listed else None

    if rule is not None:
        need_gb = need if rule == "auto" else float(rule)
        assert need_gb is not None
        unknown = [t for t in candidates if _memory_of(t, memory) is None]
        if listed and unknown:
            raise UserError(where, "resources.gpu_memory_gb", f"memory of accelerator {unknown[0]} is unknown",
                            fix=f"add e.g. gpu_memory_gb: {{{unknown[0]}: 24}} to resources")
        allowed = tuple(t for t in candidates if (_memory_of(t, memory) or 0) >= need_gb)
        if not allowed:
            have = ", ".join(f"{t} {_memory_of(t, memory):g} GB" for t in candidates if t not in unknown)
            raise UserError(where, "resources.min_gpu_memory_gb",
                            f"a trial with {_describe(config)} needs {need_gb:.1f} GB of GPU memory; "
                            f"no allowed GPU has that ({have})",
                            fix="allow a bigger GPU in resources.accelerator or lower the batch size")
    if gpu == "auto":
        assert need is not None
        pool = allowed or candidates
        sizes = [gb for gb in (_memory_of(t, memory) for t in pool) if gb]
        smallest = min(sizes, default=None)
        if smallest is None:
            raise UserError(where, "resources.gpu", f"gpu: auto needs the memory of {', '.join(pool)}",
                            fix=f"add e.g. gpu_memory_gb: {{{pool[0]}: 24}} to resources, or give gpu a number")
        gpu = next((f for f in GPU_FRACTIONS if f * smallest >= need), 1.0)
    memory_gb = resources.get("memory_gb")
    return Placement(cpu=float(resources.get("cpu", 1.0)), gpu=float(gpu),
                     memory_bytes=memory_gb * 2**30 if memory_gb else None, accelerators=allowed)


def _describe(config: Mapping[str, Any]) -> str:
    model = config.get("model") or {}
    dataset = config.get("dataset") or {}
    return f"model {model.get('name', '?')} and batch size {dataset.get('batch_size', '?')}"


def resource_function(resources: Mapping[str, Any], *, present: tuple[str, ...] = (), where: str = "resources",
                      estimate: Callable[[Mapping[str, Any]], MemoryEstimate] = estimate_memory,
                      ) -> Callable[[dict[str, Any]], Any]:
    """``config -> PlacementGroupFactory`` for `ray.tune.with_resources`."""
    def placement(config: dict[str, Any]) -> Any:
        return plan_placement(resources, config, present=present, where=where, estimate=estimate).factory()

    return placement


BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` leaves the cluster config on the head


# ---------------------------------------------------------------------------- can the cluster run it?

@dataclass(frozen=True)
class Node:
    """What one node offers Ray's scheduler: its resources and labels (a live node, the local
    machine before Ray starts, or a node type the autoscaler can start)."""

    resources: Mapping[str, float]
    labels: Mapping[str, str]
    name: str = "node"

    @property
    def kind(self) -> str | None:
        """The node's accelerator type (None for a CPU node)."""
        return _node_type(self.labels, self.resources)

    def fits(self, placement: Placement) -> bool:
        if any(self.resources.get(k, 0.0) + 1e-9 < amount for k, amount in placement.bundle().items()):
            return False
        if placement.accelerators is not None and len(placement.accelerators) > 1:
            return self.kind in placement.accelerators
        return True

    def describe(self) -> str:
        text = describe_resources({k: v for k, v in sorted(self.resources.items()) if k in ("CPU", "GPU")})
        return f"{self.name}: {text}{' (' + self.kind + ')' if self.kind else ', no GPU'}"


def describe_resources(resources: Mapping[str, float]) -> str:
    """``{"CPU": 1.0, "GPU": 0.25}`` -> ``"CPU 1, GPU 0.25"``, as the messages print resources."""
    return ", ".join(f"{k} {v:g}" for k, v in resources.items())


def local_node(num_cpus: int | None = None) -> Node:
    """The machine a private local Ray would run on, read before Ray starts (as Ray reads it:
    every CPU unless ``num_cpus``; the GPUs CUDA sees, typed by `accelerator_type`)."""
    import os

    import torch

    gpus = torch.cuda.device_count()
    resources: dict[str, float] = {"CPU": float(num_cpus or os.cpu_count() or 1),
                                   "memory": float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))}
    labels: dict[str, str] = {}
    if gpus:
        kind = accelerator_type()
        resources.update({"GPU": float(gpus), f"accelerator_type:{kind}": 1.0})
        labels[ACCELERATOR_LABEL] = kind
    return Node(resources, labels, name="this machine")


def live_nodes() -> list[Node]:
    """The alive nodes of the connected Ray cluster."""
    import ray

    return [Node(dict(n.get("Resources") or {}), dict(n.get("Labels") or {}),
                 name=f"node {n.get('NodeManagerAddress', '?')}") for n in ray.nodes() if n.get("Alive")]


def _bootstrap_node_types(path: str | Path) -> dict[str, dict[str, Any]]:
    """``available_node_types`` of the cluster config ``ray up`` leaves on the head node; {} on a
    machine without one, or when it cannot be read (the live nodes then say what the cluster has)."""
    import yaml

    p = Path(path).expanduser()
    try:
        config = yaml.safe_load(p.read_text()) if p.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    node_types = config.get("available_node_types") if isinstance(config, dict) else None
    return {str(k): v for k, v in (node_types or {}).items() if isinstance(v, dict)}


def launchable_nodes(path: str | Path = BOOTSTRAP_CONFIG) -> list[Node]:
    """The worker types ``ray up``'s config lets the autoscaler start (``max_workers > 0``)."""
    return [Node({k: float(v) for k, v in (node_type.get("resources") or {}).items()},
                 dict(node_type.get("labels") or {}), name=f"node type {name}")
            for name, node_type in _bootstrap_node_types(path).items()
            if int(node_type.get("max_workers", 0) or 0) > 0]


def check_fits(placements: list[Placement], nodes: list[Node], *, where: str, cluster: str, fix: str) -> None:
    """UserError unless every placement fits on at least one node: Ray would otherwise leave
    those trials PENDING for ever, without a word.

    cluster: how to name ``nodes`` in the message ("the local Ray", "the Ray cluster at ...").
    """
    for placement in dict.fromkeys(placements):
        if any(node.fits(placement) for node in nodes):
            continue
        asked = describe_resources({k: v for k, v in placement.bundle().items()
                                    if k != "memory" and not k.startswith("accelerator_type:")})
        if placement.memory_bytes:
            asked += f", memory {placement.memory_bytes / 2**30:g} GB"
        if placement.accelerators:
            asked += " on " + " or ".join(placement.accelerators)
        have = "; ".join(node.describe() for node in nodes) or "no nodes"
        raise UserError(where, "resources", f"each trial asks for {asked}; {cluster} cannot give that ({have})",
                        fix=fix)


def launchable_accelerators(path: str | Path = BOOTSTRAP_CONFIG) -> dict[str, float]:
    """GPUs per accelerator type the autoscaler can start (max_workers x GPUs per node).

    Read from the cluster config ``ray up`` leaves on the head node (`_bootstrap_node_types`).
    """
    gpus: dict[str, float] = {}
    for node_type in _bootstrap_node_types(path).values():
        resources = node_type.get("resources") or {}
        kind = _node_type(node_type.get("labels") or {}, resources)
        if kind is not None:
            count = float(resources.get("GPU", 0)) * int(node_type.get("max_workers", 0) or 0)
            gpus[kind] = gpus.get(kind, 0.0) + count
    return gpus


def cluster_accelerators() -> dict[str, float]:
    """GPUs per accelerator type on the connected Ray cluster (live nodes only)."""
    import ray

    gpus: dict[str, float] = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        kind = _node_type(node.get("Labels") or {}, node.get("Resources") or {})
        if kind is not None:
            gpus[kind] = gpus.get(kind, 0.0) + float(node["Resources"].get("GPU", 0.0))
    return gpus


def _node_type(labels: Mapping[str, str], resources: Mapping[str, float]) -> str | None:
    """The node's ``accelerator_type:<T>`` resource (what trials pin with), else its label."""
    kinds = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
    if kinds:
        return kinds[0]
    return labels.get(ACCELERATOR_LABEL) or None


def accelerator_type(device: Any = None) -> str:
    """Ray-style accelerator name of ``device`` (a torch.device; default: the one training
    would pick): "A100", "V100", "T4", "H100", ... or "CPU"."""
    import re

    import torch

    from tune_lip.studies.config import pick_device

    device = device or pick_device("auto")
    if device.type != "cuda":
        return "CPU"
    name = torch.cuda.get_device_name(device)
    for known in ("H200", "H100", "A100", "A10G", "A10", "L40S", "L4", "V100", "T4", "P100", "K80"):
        if known in name.upper():
            return known
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def node_accelerator() -> str:
    """The accelerator type of the node this process runs on ("CPU" if none is declared).

    Read from the node's Ray label (or its ``accelerator_type:<T>`` resource), so it names the
    type the scheduler placed the trial on; outside Ray, the local device's type.
    """
    import ray

    if ray.is_initialized():
        context = ray.get_runtime_context()
        labels = cast(Mapping[str, str], context.get_node_labels() or {})  # values are str at run time
        kind = labels.get(ACCELERATOR_LABEL)  # known locally: no call to the GCS
        if kind is None:  # a node started without the label: its accelerator_type:<T> resource
            node: dict[str, Any] = next((n for n in ray.nodes() if n["NodeID"] == context.get_node_id()), {})
            kind = _node_type({}, node.get("Resources") or {})
        if kind is not None:
            return kind
    return accelerator_type()

