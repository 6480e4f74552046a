"""Search spaces shipped with tune-lip (package data ``tune_lip.search_spaces``).

Each ``<name>.yaml`` here is one study question; ``tune_lip.tune.spec.load_spec(name)`` reads it.
This folder sits at the repository root and installs as ``tune_lip.search_spaces``.
May import: `tune_lip.errors` only (a bottom layer: the spec parser above reads the files).

Example:
    >>> "demo" in available()
    True
    >>> path_of("demo").name
    'demo.yaml'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tune_lip.errors import UserError

__all__ = ["available", "path_of"]


def available() -> list[str]:
    """Names (without ``.yaml``) of the shipped search spaces, sorted."""
    return sorted(f.name[: -len(".yaml")] for f in files(__name__).iterdir()
                  if f.name.endswith(".yaml") and f.is_file())


def path_of(name: str) -> Path:
    """The file of shipped search space ``name`` (``demo`` or ``demo.yaml``).

    Unknown names raise UserError listing the available ones. Installs are unzipped
    (setuptools' default), so the resource is a real file on disk.
    """
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    names = available()
    if stem not in names:
        raise UserError(name, None, "no such shipped search space",
                        fix=f"use one of: {', '.join(names) or 'none'} (`tune-lip search --list`)")
    return Path(str(files(__name__) / f"{stem}.yaml"))
