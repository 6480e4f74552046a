"""User-facing input errors.

A `UserError` is a mistake in something the user gave us (a YAML file, a data file, a
CLI flag). The CLI prints it as one line, ``<where>: <key>: <problem>; <fix>``, and exits
with code 2, without a traceback. Everything else is a bug and keeps its traceback.

Example:
    >>> print(UserError("search_spaces/x.yaml", "optimizer.lr.loguniform",
    ...                 "lower bound must be > 0, got 0", fix="use e.g. [1e-3, 1.0]"))
    search_spaces/x.yaml: optimizer.lr.loguniform: lower bound must be > 0, got 0; use e.g. [1e-3, 1.0]
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An input error that names the file (or source), the key and the fix."""

    def __init__(self, where: str, key: str | None, problem: str, *, fix: str | None = None):
        self.where = str(where)
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [self.where]
        if self.key:
            parts.append(self.key)
        text = ": ".join(parts) + ": " + self.problem
        if self.fix:
            text += f"; {self.fix}"
        return text


class ConfigError(ValueError):
    """A trial config that a study cannot build; ``key`` is the dotted config key at fault.

    Study configs raise it from ``from_dict`` so the launcher can name the key in the
    user's YAML file (it becomes a `UserError` there).
    """

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")
