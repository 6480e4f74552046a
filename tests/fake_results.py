"""Fabricated Tune results with config values of every type, for the results round-trip tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tune_lip.analysis.results import flatten_result


def report(trial_id: str, iteration: int) -> dict[str, Any]:
    """One result as Ray passes it to a callback: metrics, Ray's bookkeeping and the nested config.

    The two trials "a" and "b" differ in a float, a list and a list of dicts, so a summary shows
    those config columns.
    """
    a = trial_id == "a"
    return {
        "trial_id": trial_id,
        "training_iteration": iteration,
        "done": iteration == 2,
        "steps": 10 * iteration,                              # int
        "certified_acc": (0.25 if a else 0.5) * iteration,    # float
        "diverged": False,                                    # bool
        "hostname": "node-1",                                 # str
        "checkpoint_dir_name": None,                          # None in every row
        "config": {
            "seed": 0,
            "reports": 2,
            "model": {"name": "aol_mlp", "activations": ["relu", "abs"]},        # str, list of str
            "optimizer": {"lr": 0.1 if a else 0.3, "nesterov": True},             # float, bool
            "eval": {"extra_eps": [0.0706, 0.2824] if a else [0.1]},              # list of floats
            "schedule": {"milestones": []},                                       # empty list
            "augmentation": {},                                                   # empty dict: a leaf
            "sharpness": None,
            "layers": [{"width": 64}] if a else [{"width": 32, "act": "relu"}],   # list of dicts
            "options": {"nested": {"deep": "x", "empty": {}}},                    # nested dicts
        },
    }


def reports(trial_ids: tuple[str, ...] = ("a", "b"), iterations: int = 2) -> list[dict[str, Any]]:
    return [report(t, k) for t in trial_ids for k in range(1, iterations + 1)]


def expected_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `load` must give for ``results``: Ray's flattening of each, sorted as load sorts."""
    rows = [flatten_result(r) for r in results]
    return sorted(rows, key=lambda r: (r["trial_id"], r["training_iteration"]))


def write_ray_trial(experiment: Path, results: list[dict[str, Any]], trial_id: str) -> None:
    """The ``result.json`` Ray writes into a trial folder (one JSON line per report)."""
    folder = experiment / f"LipschitzTrainable_{trial_id}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in results if r["trial_id"] == trial_id]
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def assert_same_values(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Every key of ``want`` has in ``got`` the same value of the same Python type (a list is a
    list, not an array). The values pass through unchanged, so floats may compare exactly."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for key, value in w.items():
            assert key in g, key
            assert type(g[key]) is type(value), (key, g[key], value)
            assert g[key] == value, (key, g[key], value)
