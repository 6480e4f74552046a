"""``tune-lip rehearse``: the cluster flow on one machine, with fake GPU types.

Starts a local multi-node Ray (`ray.cluster_utils.Cluster`, every node on 127.0.0.1): a CPU
head plus one worker node per accelerator type, each declaring fake GPUs, the
``accelerator_type:<T>`` resource and the ``ray.io/accelerator-type`` label exactly as the
nodes of ``cluster.yaml`` do. Then it does what you would do on the real cluster: calibrates
every type (for a ``reference_hours`` budget), runs the search against the cluster's address,
optionally removes a worker node mid-search (fault tolerance), and prints where trials ran.
The "GPUs" are scheduling fiction: trials train on the CPU.

Example:
    >>> cluster = start_fake_cluster({"A100": 2, "T4": 1})                  # doctest: +SKIP
    >>> cluster.address                                                     # doctest: +SKIP
    '127.0.0.1:6379'
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from tune_lip.errors import UserError

__all__ = ["parse_nodes", "start_fake_cluster", "NodeKiller", "rehearse"]

DEFAULT_NODES = "A100:2,A10G:1,T4:1"  # cluster.yaml's worker types, fewer GPUs


def parse_nodes(text: str) -> dict[str, int]:
    """``"A100:2,A10G:1,T4:1"`` -> {accelerator type: GPUs on its node}."""
    out: dict[str, int] = {}
    for part in text.split(","):
        kind, _, count = part.strip().partition(":")
        if not kind or not count.strip().isdigit() or int(count) < 1:
            raise UserError("--nodes", None, f"cannot read {part.strip()!r}",
                            fix=f"use TYPE:GPUS pairs, e.g. --nodes {DEFAULT_NODES}")
        out[kind] = int(count)
    return out


def start_fake_cluster(nodes: Mapping[str, int], *, cpus_per_node: int = 2, head_cpus: int = 1) -> Any:
    """A loopback Ray cluster: a CPU head and one node per type with fake GPUs; returns the Cluster
    (its ``nodes_by_type`` maps each type to its node).

    The caller connects with ``ray.init(address=cluster.address)`` and ends it with
    ``ray.shutdown(); cluster.shutdown()``.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node binds 127.0.0.1 (ray 2.60)
    from ray.cluster_utils import Cluster

    from tune_lip.cluster.placement import ACCELERATOR_LABEL

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
    cluster.nodes_by_type = {  # type: ignore[attr-defined]  # our own attribute on Ray's Cluster
        kind: cluster.add_node(num_cpus=cpus_per_node, num_gpus=gpus, resources={f"accelerator_type:{kind}": 1},
                               labels={ACCELERATOR_LABEL: kind})
        for kind, gpus in nodes.items()}
    cluster.wait_for_nodes()
    return cluster


class NodeKiller(Callback):
    """A Tune callback that removes the worker node of ``kind`` once a trial there has
    checkpointed at report ``after`` or later: rehearses (and tests) losing a node mid-search.

    ``victims`` are the trials running there at that moment; Tune restarts them from their
    last checkpoint on nodes that are left (FailureConfig ``max_failures``).
    """

    def __init__(self, cluster: Any, kind: str, after: int = 1) -> None:
        self.cluster, self.kind, self.after = cluster, kind, after
        self.removed_at: float | None = None
        self.victims: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; a restored killer kills nothing.
        return {**self.__dict__, "cluster": None, "removed_at": self.removed_at or 0.0}

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if (self.removed_at is not None or result.get("accelerator") != self.kind
                or result.get("training_iteration", 0) < self.after):
            return
        node = self.cluster.nodes_by_type[self.kind]
        self.victims = {t.trial_id for t in trials
                        if t.status == "RUNNING" and (t.last_result or {}).get("accelerator") == self.kind}
        print(f"rehearse: removing the {self.kind} node (trials there: {', '.join(sorted(self.victims))})",
              flush=True)
        self.cluster.remove_node(node)
        self.removed_at = time.time()


def rehearse(space: str, *, nodes: Mapping[str, int], storage_path: str | Path, name: str | None = None,
             kill: str | None = None, cpus_per_node: int = 2, overrides: dict[str, Any] | None = None) -> Path:
    """Run ``space`` (with the command-line ``overrides`` of `tune_lip.tune.launch.load_space`) on a
    fake local cluster; return the experiment directory."""
    import ray

    from tune_lip.cluster.calibrate import append_table, calibrate_cluster
    from tune_lip.tune.launch import (
        CALIBRATION_FILE,
        check_placement,
        check_spec,
        experiment_name,
        grid_configs,
        load_space,
        run_search,
    )
    from tune_lip.tune.launch import storage_root as absolute_storage

    spec = load_space(space, overrides)
    if kill is not None and kill not in nodes:
        raise UserError("--kill", None, f"no {kill} node in --nodes", fix=f"use one of: {', '.join(nodes)}")
    check_spec(spec)
    check_placement(spec, tuple(nodes))  # input errors before any node starts
    storage = absolute_storage(storage_path)
    name = name or experiment_name(spec)
    cluster = start_fake_cluster(nodes, cpus_per_node=cpus_per_node)
    try:
        ray.init(address=cluster.address, configure_logging=False)
        print(f"rehearse: fake cluster at {cluster.address}: head + "
              + ", ".join(f"{kind} ({n} GPU)" for kind, n in nodes.items()), flush=True)
        if spec.budget.kind == "reference_hours" and not spec.budget.calibration:
            table = calibrate_cluster(grid_configs(spec), warmup_steps=2, timed_steps=5, types=list(nodes),
                                      timeout_s=600)
            print(f"rehearse: calibrated {', '.join(sorted(set(table['accelerator'])))} -> "
                  f"{append_table(table, f'{storage}/{CALIBRATION_FILE}')}", flush=True)
        callbacks = [NodeKiller(cluster, kill)] if kill else []
        grid = run_search(spec, name=name, storage_path=storage, address=cluster.address,
                          extra_callbacks=callbacks)
        experiment = Path(grid.experiment_path)
        _print_placement(experiment)
        return experiment
    finally:
        ray.shutdown()
        cluster.shutdown()


def _print_placement(experiment: Path) -> None:
    from tune_lip.analysis import load

    df = load(experiment)
    if "accelerator" not in df:
        return
    where = df.groupby("trial_id")["accelerator"].agg(lambda s: " -> ".join(dict.fromkeys(s)))
    print("\nrehearse: where each trial ran")
    print(where.value_counts().rename_axis("accelerator").to_string())
