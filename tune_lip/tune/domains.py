"""Search domains: what a search space varies (``loguniform``, ``uniform``, ``choice``, ``grid``,
``randint``), how the ``space`` section of a YAML spec is parsed into them, and the dotted-path
helpers (`get_in`, `set_in`) that address keys of a nested config. Ray-free; re-exported by
`tune_lip.tune.spec`.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from tune_lip.errors import UserError

__all__ = [
    "LogUniform",
    "Uniform",
    "Choice",
    "Grid",
    "RandInt",
    "Domain",
    "DOMAIN_KEYS",
    "get_in",
    "set_in",
]


# ---------------------------------------------------------------------------- domains


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on [lo, hi] with 0 < lo < hi, as ``ray.tune.loguniform``."""

    lo: float
    hi: float
    kind = "loguniform"  # not a field: the YAML key of this domain

    def representative(self) -> float:
        return self.lo

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: [self.lo, self.hi]}


@dataclass(frozen=True)
class Uniform:
    """Uniform on [lo, hi] with lo < hi, as ``ray.tune.uniform``."""

    lo: float
    hi: float
    kind = "uniform"

    def representative(self) -> float:
        return self.lo

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: [self.lo, self.hi]}


@dataclass(frozen=True)
class Choice:
    """One of ``values``, sampled (``ray.tune.choice``); a searcher may prefer some."""

    values: tuple[Any, ...]
    kind = "choice"

    def representative(self) -> Any:
        return copy.deepcopy(self.values[0])

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Grid:
    """Every one of ``values`` is tried (``ray.tune.grid_search``, or one search per value)."""

    values: tuple[Any, ...]
    kind = "grid"

    def representative(self) -> Any:
        return copy.deepcopy(self.values[0])

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class RandInt:
    """An integer in [lo, hi) — upper bound exclusive, as ``ray.tune.randint``."""

    lo: int
    hi: int
    kind = "randint"

    def representative(self) -> int:
        return self.lo

    def to_raw(self) -> dict[str, Any]:
        return {self.kind: [self.lo, self.hi]}


Domain = Union[LogUniform, Uniform, Choice, Grid, RandInt]

DOMAIN_KEYS = ("loguniform", "uniform", "choice", "grid", "randint")
_DOMAIN_EXAMPLES = {
    "loguniform": "{loguniform: [1e-3, 1.0]}",
    "uniform": "{uniform: [0.0, 0.5]}",
    "choice": "{choice: [sgd, adam]}",
    "grid": "{grid: [64, 256, 1024]}",
    "randint": "{randint: [1, 10]} (upper bound exclusive)",
}
# Spellings people bring from Ray, Optuna or habit; caught so they are not taken as fixed values.
_DOMAIN_ALIASES = {
    "grid_search": "grid",
    "log_uniform": "loguniform",
    "loguniform_float": "loguniform",
    "categorical": "choice",
    "choices": "choice",
    "randrange": "randint",
    "int": "randint",
}



# ---------------------------------------------------------------------------- dotted paths


def get_in(d: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path; KeyError names the first missing part.

    Example: ``get_in({'a': {'b': 1}}, 'a.b') == 1``
    """
    node: Any = d
    done: list[str] = []
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(".".join([*done, part]))
        node = node[part]
        done.append(part)
    return node


def set_in(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set the value at a dotted path in place, creating intermediate dicts.

    Example: ``c = {}; set_in(c, 'dataset.batch_size', 64)`` -> ``{'dataset': {'batch_size': 64}}``
    """
    *parents, last = dotted.split(".")
    node = d
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value



# ---------------------------------------------------------------------------- parsing the space


def _parse_space(raw: Any, *, where: str, prefix: str) -> Any:
    """``raw`` with every domain mapping replaced by its Domain; fixed values copied."""
    if isinstance(raw, dict):
        found = [k for k in raw if k in DOMAIN_KEYS]
        here = prefix or "space"
        if len(found) > 1:
            raise UserError(where, here, f"has several domain keys ({', '.join(found)})",
                            fix=f"keep exactly one, e.g. {_DOMAIN_EXAMPLES[found[0]]}")
        if found:
            extra = [str(k) for k in raw if k != found[0]]
            if extra:
                raise UserError(where, here,
                                f"mixes a domain ({found[0]}) with other keys ({', '.join(extra)})",
                                fix="a domain is a mapping with one key, "
                                    f"e.g. {_DOMAIN_EXAMPLES[found[0]]}")
            return _parse_domain(found[0], raw[found[0]], where=where, key=_join(prefix, found[0]))
        if len(raw) == 1:
            (only,) = raw
            if isinstance(only, str) and isinstance(raw[only], list):
                close = difflib.get_close_matches(only, DOMAIN_KEYS, n=1, cutoff=0.8)
                near = _DOMAIN_ALIASES.get(only) or (close[0] if close else None)
                if near is not None:
                    raise UserError(where, _join(prefix, only),
                                    f"looks like a misspelt domain (did you mean {near!r}?)",
                                    fix=f"use e.g. {_DOMAIN_EXAMPLES[near]}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not key or "." in key:
                raise UserError(where, _join(prefix, str(key)),
                                f"keys in space must be names without dots, got {key!r}",
                                fix="nest mappings instead of dotted keys, "
                                    "e.g. optimizer: {lr: 0.1}")
            out[key] = _parse_space(value, where=where, prefix=_join(prefix, key))
        return out
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            if _contains_domain(item):
                raise UserError(where, f"{prefix}[{i}]", "domains inside lists are not supported",
                                fix="move the varied value into a mapping key, "
                                    "e.g. {lr: {loguniform: [...]}}")
        return copy.deepcopy(raw)
    return raw


def _parse_domain(kind: str, raw: Any, *, where: str, key: str) -> Domain:
    fix = f"use e.g. {_DOMAIN_EXAMPLES[kind]}"
    if kind in ("choice", "grid"):
        if not isinstance(raw, list) or not raw:
            raise UserError(where, key, f"needs a non-empty list of values, got {raw!r}", fix=fix)
        for i, v in enumerate(raw):
            if _contains_domain(v):
                raise UserError(where, f"{key}[{i}]",
                                f"a {kind} value cannot itself contain a domain",
                                fix="list fixed values only; vary the inner key in its own domain")
            if any(v == w for w in raw[:i]):
                raise UserError(where, key, f"lists {v!r} twice", fix="list each value once")
        return Choice(tuple(raw)) if kind == "choice" else Grid(tuple(raw))
    if not isinstance(raw, list) or len(raw) != 2:
        raise UserError(where, key, f"needs exactly two bounds [lo, hi], got {raw!r}", fix=fix)
    for v in raw:
        if kind == "randint":
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(where, key, f"bounds must be integers, got {v!r}", fix=fix)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(where, key, f"bounds must be finite numbers, got {v!r}", fix=fix)
    lo, hi = raw
    if kind == "loguniform" and lo <= 0:
        raise UserError(where, key, f"lower bound must be > 0, got {lo!r}", fix=fix)
    if lo >= hi:
        problem = (f"upper bound is exclusive, so it must exceed the lower one, got [{lo}, {hi}]"
                   if kind == "randint" else f"lower bound must be < upper bound, got [{lo}, {hi}]")
        raise UserError(where, key, problem, fix=fix)
    if kind == "randint":
        return RandInt(lo, hi)
    if kind == "loguniform":
        return LogUniform(float(lo), float(hi))
    return Uniform(float(lo), float(hi))


def _contains_domain(value: Any) -> bool:
    if isinstance(value, dict):
        return (any(k in DOMAIN_KEYS for k in value)
                or any(_contains_domain(v) for v in value.values()))
    if isinstance(value, list):
        return any(_contains_domain(v) for v in value)
    return False



# ---------------------------------------------------------------------------- small helpers

_DOMAIN_TYPES = (LogUniform, Uniform, Choice, Grid, RandInt)


def _walk_domains(node: Any, prefix: str) -> list[tuple[str, Domain]]:
    if isinstance(node, _DOMAIN_TYPES):
        return [(prefix, node)]
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk_domains(v, _join(prefix, k))]
    return []


def _resolve(node: Any) -> Any:
    if isinstance(node, _DOMAIN_TYPES):
        return node.representative()
    if isinstance(node, dict):
        return {k: _resolve(v) for k, v in node.items()}
    return copy.deepcopy(node)


def _to_raw(node: Any) -> Any:
    if isinstance(node, _DOMAIN_TYPES):
        return node.to_raw()
    if isinstance(node, dict):
        return {k: _to_raw(v) for k, v in node.items()}
    return copy.deepcopy(node)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key

