"""Load and check a Ray cluster-launcher config (``cluster.yaml``) before ``ray up`` does.

Three layers, each offline (no AWS call, no network):

- :func:`load_cluster_config` reads the YAML as Ray does (``yaml.safe_load``, except that a
  duplicate key is an error) and raises a one-line :class:`~tune_lip.errors.UserError` for a
  malformed file or a missing key.
- :func:`validate_with_ray` runs Ray's own offline validation: ``prepare_config`` (merges the
  provider's ``defaults.yaml``, fills per-type worker counts) then ``validate_config`` (the
  JSON schema, e.g. integer resources, plus cross-key rules). The raw file fails
  ``validate_config`` alone: keys such as ``cluster_synced_files`` only exist after
  ``prepare_config`` (Ray reads their absence as defaults from an older Ray). Neither touches
  AWS; ``ray up``'s AWS bootstrap (IAM, subnets, security groups) comes later, not here.
- :func:`check_cluster_config` applies tune-lip's own rules, which Ray does not check: no Ray
  port reachable from outside the cluster, the dashboard on loopback, token authentication
  on, integer resources, one ``accelerator_type:<T>`` per GPU worker type, the head free of
  trials. It returns problems, one line each, naming the key and the fix.

Hand-written because Ray has no such security check; the rules mirror what ray 2.60's AWS
launcher does (see ``ray/autoscaler/_private/aws/config.py``): when it creates a security
group itself it always opens SSH to 0.0.0.0/0, so every node type must name its own group.

Example:
    >>> config = load_cluster_config("cluster.yaml")   # doctest: +SKIP
    >>> check_cluster_config(config)                     # doctest: +SKIP
    []
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tune_lip.errors import UserError

__all__ = [
    "RAY_PORTS",
    "load_cluster_config",
    "validate_with_ray",
    "check_cluster_config",
    "pinned_requirements",
]

# Ray's well-known ports (ray 2.60 defaults): none may be reachable from outside the cluster.
RAY_PORTS: dict[int, str] = {
    6379: "GCS",
    8265: "dashboard and jobs API",
    10001: "Ray Client",
    8076: "object manager",
    8077: "node manager",
    52365: "dashboard agent",
    8080: "metrics export",
}
# Worker processes listen on ports in this range (ray start --min/max-worker-port defaults).
RAY_WORKER_PORTS = (10002, 19999)
SSH_PORT = 22

# Networks a VPC's own addresses come from (RFC 1918). Python's `is_private` would also count
# documentation and other special ranges as private, which are not the cluster.
_VPC_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# An outside CIDR allowed in (for SSH) may be no wider than this: an office, not the internet.
MAX_OUTSIDE_PREFIX = 16

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_DASHBOARD_HOST = re.compile(r"--dashboard-host(?:=|\s+)['\"]?([^\s'\";]+)")
_AUTH_DISABLED = re.compile(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", re.IGNORECASE)
_RAY_START = re.compile(r"\bray\s+start\b")
_AUTH_TOKEN_ON = re.compile(r"RAY_AUTH_MODE=['\"]?token\b")
_PIN = re.compile(r"['\"]?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([A-Za-z0-9.+!_-]+)['\"]?")

COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
REQUIRED_KEYS = ("cluster_name", "provider", "max_workers", "head_node_type", "available_node_types",
                 "head_start_ray_commands", "worker_start_ray_commands")


# ---------------------------------------------------------------------------- loading


def load_cluster_config(path: str | Path) -> dict[str, Any]:
    """The cluster config at ``path`` as Ray reads it; UserError for a malformed file or a
    missing key (the structure :func:`check_cluster_config` and Ray rely on).

    Example: ``load_cluster_config("cluster.yaml")["head_node_type"]`` -> ``'head'``
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(where, None, f"cannot be read ({exc.strerror or exc.__class__.__name__})",
                        fix="pass the path of your cluster.yaml") from None
    except UnicodeDecodeError:
        raise UserError(where, None, "is not a UTF-8 text file", fix="pass a YAML file") from None
    try:
        config = yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark is not None else None
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise UserError(where, line, f"malformed YAML ({problem})",
                        fix="check the indentation and that each `key: value` has a space after the colon"
                        ) from None
    except yaml.YAMLError as exc:
        raise UserError(where, None, f"malformed YAML ({' '.join(str(exc).split())})",
                        fix="check the file is YAML") from None

    if not isinstance(config, dict):
        raise UserError(where, None, f"top level must be a mapping, got {type(config).__name__}",
                        fix="start from the repository's cluster.yaml")
    for key in REQUIRED_KEYS:
        if key not in config:
            raise UserError(where, key, "missing", fix="see the repository's cluster.yaml for an example")
    provider = config["provider"]
    if not isinstance(provider, dict) or "type" not in provider:
        raise UserError(where, "provider.type", "missing", fix="e.g. `provider: {type: aws, region: us-west-2}`")
    node_types = config["available_node_types"]
    if not isinstance(node_types, dict) or not node_types:
        raise UserError(where, "available_node_types", "must map node type names to their settings",
                        fix="see the repository's cluster.yaml")
    if config["head_node_type"] not in node_types:
        raise UserError(where, "head_node_type", f"{config['head_node_type']!r} is not in available_node_types",
                        fix=f"use one of: {', '.join(map(str, node_types))}")
    for name, node_type in node_types.items():
        if not isinstance(node_type, dict):
            raise UserError(where, f"available_node_types.{name}", "must be a mapping",
                            fix="give it `resources:` and `node_config:`")
        for key in ("resources", "node_config"):
            if not isinstance(node_type.get(key), dict):
                raise UserError(where, f"available_node_types.{name}.{key}", "missing (or not a mapping)",
                                fix="Ray requires both `resources:` and `node_config:` for every node type")
    for key in COMMAND_KEYS:
        commands = config.get(key, [])
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise UserError(where, key, "must be a list of shell commands (strings)",
                            fix="write one `- command` per line")
    return config


class _Loader(yaml.SafeLoader):
    """Ray's ``yaml.safe_load`` semantics, except that a duplicate key is an error: PyYAML (and
    so ``ray up``) silently keeps the last one, which could hide, say, a second
    ``head_start_ray_commands`` that undoes the first."""


def _no_duplicate_keys(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def validate_with_ray(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own offline validation; returns the prepared config (``config`` is not changed).

    Raises what Ray raises: ``jsonschema.ValidationError`` (e.g. a float resource value) or
    ``ValueError`` (e.g. the sum of min_workers above max_workers).
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# ---------------------------------------------------------------------------- checking


def check_cluster_config(config: dict[str, Any]) -> list[str]:
    """tune-lip's rules for a cluster config; one line per problem (empty: all good).

    ``config`` is the loaded YAML (:func:`load_cluster_config`), not Ray's prepared one,
    so that a key Ray's defaults would fill in (an open dashboard, say) is caught as missing.
    """
    problems: list[str] = []
    problems += _check_node_types(config)
    problems += _check_network(config)
    problems += _check_commands(config)
    return problems


def _check_node_types(config: dict[str, Any]) -> list[str]:
    problems = []
    node_types: dict[str, Any] = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    global_max = config.get("max_workers")
    for key in ("max_workers", "idle_timeout_minutes", "upscaling_speed"):
        if key not in config:
            problems.append(f"{key}: missing; set it explicitly (Ray's defaults are for a 2-node demo)")
    min_sum = 0
    for name, node_type in node_types.items():
        where = f"available_node_types.{name}"
        resources: dict[str, Any] = node_type.get("resources") or {}
        for resource, value in resources.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{where}.resources.{resource}: {value!r} is not a non-negative integer; "
                                f"write a whole number of units (e.g. 1, not 0.5 or 1.0)")
        lo, hi = node_type.get("min_workers", 0), node_type.get("max_workers")
        min_sum += lo if isinstance(lo, int) else 0
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append(f"{where}.min_workers: {lo} is above max_workers {hi}; lower it or raise max_workers")
        if isinstance(hi, int) and isinstance(global_max, int) and hi > global_max:
            problems.append(f"{where}.max_workers: {hi} is above the global max_workers {global_max}; "
                            f"Ray would never reach it, so lower it or raise max_workers")
        accelerators = [r for r in resources if str(r).startswith("accelerator_type:")]
        if name == head:
            if resources.get("CPU") != 0 or resources.get("GPU", 0) != 0:
                problems.append(f"{where}.resources: the head must run no trials; "
                                f"declare `resources: {{CPU: 0}}` (and no GPU)")
            continue
        gpus = resources.get("GPU", 0)
        if isinstance(gpus, int) and gpus > 0 and len(accelerators) != 1:
            problems.append(f"{where}.resources: a GPU worker type needs exactly one `accelerator_type:<T>: 1` "
                            f"(found {len(accelerators)}), e.g. \"accelerator_type:A100\": 1, so trials can "
                            f"be pinned to it and budgets calibrated for it")
    if isinstance(global_max, int) and min_sum > global_max:
        problems.append(f"max_workers: {global_max} is below the sum of min_workers ({min_sum}); raise it")
    return problems


def _check_network(config: dict[str, Any]) -> list[str]:
    provider = config.get("provider") or {}
    if provider.get("type") != "aws":
        return []  # the rules below are about AWS security groups
    problems = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        node_config = node_type.get("node_config") or {}
        interfaces = node_config.get("NetworkInterfaces") or []
        has_groups = bool(node_config.get("SecurityGroupIds")) or (
            bool(interfaces) and all(i.get("Groups") for i in interfaces))
        if not has_groups:
            problems.append(f"available_node_types.{name}.node_config.SecurityGroupIds: missing; without it "
                            f"Ray creates a group (or fills an empty one) with SSH open to 0.0.0.0/0 - create the group "
                            f"yourself (see cluster.yaml) and name it here")
    group = provider.get("security_group") or {}
    own_groups = {g for nt in (config.get("available_node_types") or {}).values()
                  for g in (nt.get("node_config") or {}).get("SecurityGroupIds") or []}
    for i, rule in enumerate(group.get("IpPermissions") or []):
        where = f"provider.security_group.IpPermissions[{i}]"
        ports = _rule_ports(rule)
        for cidr in _rule_cidrs(rule):
            problems += _check_source(where, cidr, ports)
        for pair in rule.get("UserIdGroupPairs") or []:
            source = pair.get("GroupId") or pair.get("GroupName")
            is_own = source in own_groups or (source is not None and source == group.get("GroupName"))
            if not is_own and ports != {SSH_PORT}:
                problems.append(f"{where}.UserIdGroupPairs: {_describe_ports(ports)} reachable from group "
                                f"{source}, which is not the cluster's own (SecurityGroupIds); "
                                f"allow only the cluster's group here")
        if rule.get("PrefixListIds") and ports != {SSH_PORT}:
            problems.append(f"{where}.PrefixListIds: a prefix list may grant only SSH (22), "
                            f"this rule opens {_describe_ports(ports)}; narrow it to port 22")
    return problems


def _rule_cidrs(rule: dict[str, Any]) -> Iterator[str]:
    for entry in rule.get("IpRanges") or []:
        yield str(entry.get("CidrIp", ""))
    for entry in rule.get("Ipv6Ranges") or []:
        yield str(entry.get("CidrIpv6", ""))


def _rule_ports(rule: dict[str, Any]) -> set[int] | None:
    """The ports a rule opens: None means all of them (protocol -1, or ports -1 / 0-65535)."""
    protocol = str(rule.get("IpProtocol", "-1")).lower()
    if protocol in ("-1", "all"):
        return None
    if protocol in ("icmp", "icmpv6", "1", "58"):
        return set()  # FromPort/ToPort are ICMP types there, not ports
    try:
        lo, hi = int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1))
    except (TypeError, ValueError):
        return None  # unreadable: assume the worst
    if lo == -1 or hi == -1 or (lo <= 0 and hi >= 65535):
        return None
    return set(range(lo, hi + 1))


def _check_source(where: str, cidr: str, ports: set[int] | None) -> list[str]:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return [f"{where}: {cidr!r} is not a CIDR; write e.g. 203.0.113.10/32"]
    inside = network.version == 4 and any(network.subnet_of(v) for v in _VPC_NETWORKS)  # type: ignore[arg-type]
    if inside:
        return []  # the VPC's own addresses may reach everything, like the cluster's group
    problems = []
    if network.prefixlen == 0:
        problems.append(f"{where}: ingress from {cidr} (the whole internet); allow your admin CIDR only "
                        f"(SSH), never 0.0.0.0/0 or ::/0")
    elif network.prefixlen < MAX_OUTSIDE_PREFIX:
        problems.append(f"{where}: ingress from {cidr} is wider than /{MAX_OUTSIDE_PREFIX}; "
                        f"allow your admin address(es) only")
    if ports is None or (ports and ports != {SSH_PORT}):  # None: all ports; empty: ICMP only
        problems.append(f"{where}: {_describe_ports(ports)} reachable from {cidr}, outside the cluster; from "
                        f"outside allow SSH (tcp 22) only, and reach the dashboard with `ray dashboard cluster.yaml`")
    return problems


def _describe_ports(ports: set[int] | None) -> str:
    if ports is None:
        return "every port (incl. Ray's " + ", ".join(f"{p} {n}" for p, n in RAY_PORTS.items()) + ")"
    if not ports:
        return "no port"
    named = [f"{p} {RAY_PORTS[p]}" for p in sorted(ports) if p in RAY_PORTS]
    if any(RAY_WORKER_PORTS[0] <= p <= RAY_WORKER_PORTS[1] for p in ports):
        named.append("worker ports")
    span = f"port {min(ports)}" if len(ports) == 1 else f"ports {min(ports)}-{max(ports)}"
    return span + (f" (incl. Ray's {', '.join(named)})" if named else "")


def _all_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _all_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _all_strings(v, f"{path}[{i}]")


def _check_commands(config: dict[str, Any]) -> list[str]:
    problems = []
    # Everywhere (per-node-type command lists and docker options included).
    for path, text in _all_strings(config):
        if _AUTH_DISABLED.search(text):
            problems.append(f"{path}: sets RAY_AUTH_MODE=disabled; remove it - token authentication "
                            f"stays on (RAY_AUTH_MODE=token)")
        for host in _DASHBOARD_HOST.findall(text):
            if host not in _LOOPBACK_HOSTS:
                problems.append(f"{path}: --dashboard-host={host} exposes the dashboard and its jobs API; "
                                f"use --dashboard-host=127.0.0.1 and `ray dashboard cluster.yaml` (SSH tunnel)")
    head_start = config.get("head_start_ray_commands") or []
    if not any("--dashboard-host" in c for c in head_start if _RAY_START.search(c)):
        problems.append("head_start_ray_commands: `ray start --head` lacks --dashboard-host; add "
                        "--dashboard-host=127.0.0.1 so the dashboard listens on loopback only")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config.get(key) or [] if _RAY_START.search(c)]
        if not starts:
            problems.append(f"{key}: no `ray start` command; start Ray as in the repository's cluster.yaml")
        for i, command in enumerate(config.get(key) or []):
            if _RAY_START.search(command) and not _AUTH_TOKEN_ON.search(command):
                problems.append(f"{key}[{i}]: `ray start` without RAY_AUTH_MODE=token; prefix it with "
                                f"RAY_AUTH_MODE=token (a plain `ray start` runs without authentication "
                                f"unless it finds a token)")
    mounts = config.get("file_mounts") or {}
    if not any(str(remote).rstrip("/").endswith(".ray/auth_token") for remote in mounts):
        problems.append("file_mounts: no ~/.ray/auth_token; mount `~/.ray/auth_token: ~/.ray/auth_token` so "
                        "every node has the cluster's token (`ray get-auth-token --generate` makes yours)")
    return problems


def pinned_requirements(config: dict[str, Any]) -> dict[str, str]:
    """``name==version`` pins in the setup commands: lower-case name -> version.

    Example: a command ``pip install "torch==2.14.1" "ray[tune]==2.60.0"`` gives
    ``{"torch": "2.14.1", "ray": "2.60.0"}``.
    """
    pins: dict[str, str] = {}
    for key in COMMAND_KEYS:
        for command in config.get(key) or []:
            for name, version in _PIN.findall(command):
                pins[name.lower().replace("_", "-")] = version
    return pins
