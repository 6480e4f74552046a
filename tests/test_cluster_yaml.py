"""cluster.yaml: Ray's own offline validation, the cluster's shape, and the security rules.

Everything here is offline: `prepare_config` + `validate_config` only merge Ray's bundled
defaults and check a JSON schema (a fixture makes any network call fail). The security rules
live in tune_lip.cluster.cluster_file.check_cluster_config; the mutation tests below break the shipped
config one way at a time and assert the checker names what broke, so these tests can fail.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomllib
from packaging.requirements import Requirement

from tune_lip.cluster.cluster_file import (
    check_cluster_config,
    load_cluster_config,
    pinned_requirements,
    validate_with_ray,
)
from tune_lip.cluster.placement import ACCELERATOR_LABEL
from tune_lip.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
ADMIN_CIDR = "203.0.113.10/32"


@pytest.fixture
def config() -> dict[str, Any]:
    return load_cluster_config(CLUSTER_YAML)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _node_types(config: dict[str, Any]) -> dict[str, Any]:
    return config["available_node_types"]


def _gpu_workers(config: dict[str, Any]) -> dict[str, Any]:
    return {name: nt for name, nt in _node_types(config).items()
            if name != config["head_node_type"] and nt["resources"].get("GPU", 0) > 0}


# ---------------------------------------------------------------------------- Ray's own validation


def test_ray_offline_validation_passes(config, no_network, monkeypatch):
    monkeypatch.chdir(ROOT)  # `ray up` runs from the root: file_mounts' local paths are relative to it
    prepared = validate_with_ray(config)
    # prepare_config merged the AWS defaults and filled what the raw file leaves out.
    assert "cluster_synced_files" in prepared
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
    assert prepared["head_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]
    assert config == load_cluster_config(CLUSTER_YAML)  # the loaded config was not changed


def test_raw_yaml_needs_prepare_config_first(config):
    # DESIGN's pitfall: validate_config alone rejects any hand-written file, because keys such
    # as cluster_synced_files come from the provider defaults that prepare_config merges in.
    from ray.autoscaler._private.util import validate_config

    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(copy.deepcopy(config))


def test_ray_rejects_a_float_resource(config, no_network):
    # Ray's schema wants integer resources: its validation has teeth, not only ours. (It does
    # accept 1.0, an integral float, which check_cluster_config rejects as well.)
    next(iter(_gpu_workers(config).values()))["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_with_ray(config)


def test_module_imports_without_ray():
    code = "import sys, tune_lip.cluster.cluster_file; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------------- the cluster's shape


def test_shipped_config_passes_every_check(config):
    assert check_cluster_config(config) == []


def test_three_gpu_types_of_distinct_accelerators(config):
    workers = _gpu_workers(config)
    accelerators = {}
    for name, node_type in workers.items():
        keys = [k for k in node_type["resources"] if k.startswith("accelerator_type:")]
        assert len(keys) == 1, name
        accelerators[name] = keys[0]
        assert node_type["resources"][keys[0]] == 1
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    assert len(set(accelerators.values())) == len(accelerators) >= 3, accelerators
    for node_type in _node_types(config).values():
        for value in node_type["resources"].values():
            assert type(value) is int and value >= 0  # bool and float are not whole units
    # The global cap covers every type's maximum, and the autoscaler knobs are explicit.
    assert config["max_workers"] >= sum(nt["max_workers"] for nt in workers.values())
    assert config["idle_timeout_minutes"] > 0 and config["upscaling_speed"] > 0


def _label_problems(config: dict[str, Any]) -> list[str]:
    """GPU worker types whose `ray.io/accelerator-type` label is missing or names a type other
    than their `accelerator_type:<T>` resource."""
    problems = []
    for name, node_type in _gpu_workers(config).items():
        pinned = [k.split(":", 1)[1] for k in node_type["resources"] if k.startswith("accelerator_type:")]
        label = (node_type.get("labels") or {}).get(ACCELERATOR_LABEL)
        if label is None or [label] != pinned:
            problems.append(f"{name}: label {label!r}, resource accelerator_type:{pinned}")
    return problems


def test_gpu_types_declare_the_accelerator_label(config):
    # A spec allowing several accelerators schedules by a label selector on this label, and the
    # autoscaler matches it against the labels a node type declares; one type pins by resource.
    # Both must name the same type, or the two ways of asking start different nodes.
    assert _label_problems(config) == []
    name = next(iter(_gpu_workers(config)))
    # The check has teeth: a missing label and a label naming another type are both caught.
    unlabeled = copy.deepcopy(config)
    unlabeled["available_node_types"][name].pop("labels")
    assert [p for p in _label_problems(unlabeled) if p.startswith(f"{name}:")]
    wrong = copy.deepcopy(config)
    wrong["available_node_types"][name]["labels"] = {ACCELERATOR_LABEL: "H100"}
    assert [p for p in _label_problems(wrong) if p.startswith(f"{name}:")]


def test_head_runs_no_trials(config):
    head = _node_types(config)[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("GPU", 0) == 0


def test_pins_match_pyproject_and_the_local_ray(config):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    allowed = {Requirement(d).name.lower(): Requirement(d).specifier
               for d in pyproject["project"]["dependencies"]}
    pins = pinned_requirements(config)
    assert {"torch", "torchvision", "ray", "optuna"} <= pins.keys()
    for name, pinned in pins.items():
        assert name in allowed, f"{name} is pinned on the nodes but is no dependency of tune-lip"
        assert allowed[name].contains(pinned), f"{name}=={pinned} is outside pyproject's {allowed[name]}"
        caps = [s.version for s in allowed[name] if s.operator == "<="]
        if caps:  # a capped dependency (torch, torchvision) is pinned at its cap, the tested build
            assert pinned == caps[0], f"{name}=={pinned}, pyproject caps it at {caps[0]}"
    # `ray up` and the cluster must run the same Ray: the head runs the launcher's bootstrap config.
    assert pins["ray"] == installed_version("ray")


def test_nodes_install_this_checkout(config):
    # Every source folder the package is built from (pyproject's package-dir, the pyproject
    # itself and the README it names) is mounted from the local checkout under one root, which
    # the setup commands then install in editable mode.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"],
              *pyproject["tool"]["setuptools"]["package-dir"].values()}
    mounts = {remote: local for remote, local in config["file_mounts"].items()
              if remote.startswith("~/tune-lip/")}
    assert {remote.removeprefix("~/tune-lip/") for remote in mounts} == needed
    for remote, local in mounts.items():
        assert Path(local).as_posix().removeprefix("./") == remote.removeprefix("~/tune-lip/")
        assert (ROOT / local).exists(), local
    assert any("-e ~/tune-lip" in c for c in config["setup_commands"])


# ---------------------------------------------------------------------------- security: mutations

Mutation = Callable[[dict[str, Any]], None]


def _rules(c: dict[str, Any]) -> list[dict[str, Any]]:
    return c["provider"]["security_group"]["IpPermissions"]


def _open(port: int | None, cidr: str, *, v6: bool = False) -> Mutation:
    def mutate(c: dict[str, Any]) -> None:
        rule: dict[str, Any] = {"IpProtocol": "-1"} if port is None else \
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
        rule["Ipv6Ranges" if v6 else "IpRanges"] = [{"CidrIpv6" if v6 else "CidrIp": cidr}]
        _rules(c).append(rule)
    return mutate


def _ssh_rule(c: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in _rules(c) if r.get("FromPort") == 22)


def _set_head_start(c: dict[str, Any], old: str, new: str) -> None:
    c["head_start_ray_commands"] = [cmd.replace(old, new) for cmd in c["head_start_ray_commands"]]


def _first_gpu(c: dict[str, Any]) -> dict[str, Any]:
    return next(iter(_gpu_workers(c).values()))


MUTATIONS: dict[str, tuple[Mutation, str]] = {
    # name: (how the config is broken, what the checker's message must mention)
    "dashboard port to the internet": (_open(8265, "0.0.0.0/0"), "0.0.0.0/0"),
    "GCS port to the internet over IPv6": (_open(6379, "::/0", v6=True), "::/0"),
    "SSH to the internet": (lambda c: _ssh_rule(c)["IpRanges"].append({"CidrIp": "0.0.0.0/0"}), "0.0.0.0/0"),
    "SSH to a /8": (lambda c: _ssh_rule(c)["IpRanges"].append({"CidrIp": "52.0.0.0/8"}), "wider than /16"),
    "GCS port to the admin CIDR": (_open(6379, ADMIN_CIDR), "6379 GCS"),
    "Ray Client port to the admin CIDR": (_open(10001, ADMIN_CIDR), "10001 Ray Client"),
    "metrics port to the admin CIDR": (_open(8080, ADMIN_CIDR), "8080 metrics"),
    "every port to the admin CIDR": (_open(None, ADMIN_CIDR), "every port"),
    "every port to a foreign group": (
        lambda c: _rules(c).append({"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-0badbadbadbadbad0"}]}),
        "not the cluster's own"),
    "a node type without its own group (Ray would open SSH to 0.0.0.0/0)": (
        lambda c: _first_gpu(c)["node_config"].pop("SecurityGroupIds"), "SecurityGroupIds"),
    "dashboard bound to every interface": (
        lambda c: _set_head_start(c, "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
        "--dashboard-host=0.0.0.0"),
    "dashboard host left to Ray's default": (
        lambda c: _set_head_start(c, "--dashboard-host=127.0.0.1", ""), "lacks --dashboard-host"),
    "token auth disabled in setup": (
        lambda c: c["setup_commands"].append("echo 'export RAY_AUTH_MODE=disabled' >> ~/.bashrc"),
        "RAY_AUTH_MODE=disabled"),
    "token auth disabled for one node type": (
        lambda c: _first_gpu(c).setdefault("worker_setup_commands", []).append("export RAY_AUTH_MODE=disabled"),
        "RAY_AUTH_MODE=disabled"),
    "worker ray start without token mode": (
        lambda c: c.update(worker_start_ray_commands=[
            cmd.replace("RAY_AUTH_MODE=token ", "") for cmd in c["worker_start_ray_commands"]]),
        "without RAY_AUTH_MODE=token"),
    "no token on the nodes": (lambda c: c["file_mounts"].pop("~/.ray/auth_token"), "auth_token"),
    "a fractional resource": (lambda c: _first_gpu(c)["resources"].update(GPU=0.5), "not a non-negative integer"),
    "an integral float resource": (lambda c: _first_gpu(c)["resources"].update(GPU=1.0), "not a non-negative integer"),
    "min_workers above max_workers": (lambda c: _first_gpu(c).update(min_workers=99), "above max_workers"),
    "trials allowed on the head": (
        lambda c: c["available_node_types"][c["head_node_type"]].update(resources={}), "head must run no trials"),
    "a GPU type without accelerator_type": (
        lambda c: _first_gpu(c).update(resources={"CPU": 4, "GPU": 1}), "accelerator_type"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_checker_flags_each_mutation(config, name):
    mutate, expected = MUTATIONS[name]
    broken = copy.deepcopy(config)
    mutate(broken)
    problems = check_cluster_config(broken)
    assert any(expected in p for p in problems), problems
    assert all("\n" not in p and ":" in p for p in problems)  # one line each, key first


def test_traffic_from_inside_the_vpc_is_allowed(config):
    # The negative control: every port from the VPC's own (RFC 1918) range is the cluster itself.
    _open(None, "10.0.0.0/16")(config)
    _open(6379, "172.31.0.0/16")(config)
    assert check_cluster_config(config) == []


# ---------------------------------------------------------------------------- loading errors


@pytest.mark.parametrize("text, key, problem", [
    ("cluster_name: [unclosed\n", "line 2", "malformed YAML"),
    ("- just\n- a list\n", None, "top level must be a mapping"),
    ("cluster_name: x\nprovider: {type: aws}\n", "max_workers", "missing"),
    ("cluster_name: x\ncluster_name: y\n", "line 2", "duplicate key 'cluster_name'"),
])
def test_load_errors_name_the_key(tmp_path, text, key, problem):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_cluster_config(path)
    assert info.value.where == str(path) and info.value.key == key and problem in info.value.problem
    assert info.value.fix  # every error says what to do


def test_load_error_for_an_unknown_head_type(tmp_path):
    text = CLUSTER_YAML.read_text().replace("head_node_type: head", "head_node_type: hed")
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="head_node_type: 'hed' is not in available_node_types"):
        load_cluster_config(path)


def test_load_error_for_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="cannot be read"):
        load_cluster_config(tmp_path / "nope.yaml")
