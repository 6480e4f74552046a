"""The strict YAML reader of search-spec files: ``1e-3`` is a float, a duplicate key is an
error (a `UserError` naming the line), and the file's leading comment is its one-line summary.
Re-exported by `tune_lip.tune.spec`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tune_lip.errors import UserError


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 would give the string '1e-3') and
    rejects duplicate keys (PyYAML silently keeps the last, hiding a typo'd override)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping_no_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merges may be overridden by design
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                        _construct_mapping_no_duplicates)


def _load_yaml(text: str, *, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark is not None else None
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        if problem.startswith("duplicate key"):
            raise UserError(where, line, problem, fix="keep only one of them") from None
        raise UserError(where, line, f"malformed YAML ({problem})",
                        fix="check the indentation, the brackets, and that each `key: value` "
                            "has a space after the colon") from None
    except yaml.YAMLError as exc:
        raise UserError(where, None, f"malformed YAML ({' '.join(str(exc).split())})",
                        fix="check the file is YAML") from None


def _leading_comment(text: str) -> str:
    """The file's first line if it is a comment (the one-line summary ``--list`` shows),
    minus a leading ``search_spaces/name.yaml —``; the lines after it are rationale."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    if not first.startswith("#"):
        return ""
    return re.sub(r"^\S+\.ya?ml\s*[—–-]+\s*", "", first.lstrip("#").strip())

