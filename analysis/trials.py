"""One row per trial, as the fits see it: `trial_outcomes` and `split_groups`.

The lowest layer of the fits: the lr-scaling and scaling-rule fits and the plots read trials
through it (numpy/pandas only; nothing here imports another analysis module but ``results``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from tune_lip.analysis.results import config_column, hashable_value, ran_full_budget

__all__ = ["Mode", "Use", "split_groups", "trial_outcomes"]

Mode = Literal["max", "min"]
Use = Literal["last", "best"]



def _require_columns(df: pd.DataFrame, needed: Mapping[str, str]) -> None:
    """``needed`` maps column -> what the user called it; raise naming the first missing one."""
    config_cols = sorted(c for c in df.columns if str(c).startswith("config/"))
    for col, asked in needed.items():
        if col in df.columns:
            continue
        if col.startswith("config/"):
            raise ValueError(f"column {col!r} (for {asked!r}) not in the results; config columns: "
                             f"{', '.join(config_cols) or '(none)'}")
        others = sorted(str(c) for c in df.columns if not str(c).startswith("config/"))
        raise ValueError(f"column {col!r} ({asked}) not in the results; other columns: "
                         f"{', '.join(others) or '(none)'}")


def _by_columns(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    keys = [by] if isinstance(by, str) else list(by)
    return [config_column(k) for k in keys]


def trial_outcomes(df: pd.DataFrame, *, metric: str, mode: Mode = "max", lr: str = "optimizer.lr",
                   batch_size: str = "dataset.batch_size", by: str | Sequence[str] | None = None,
                   use: Use = "last") -> pd.DataFrame:
    """One row per trial, as `fit_lr_scaling` sees it.

    Columns: ``trial_id``, ``lr``, ``batch_size``, the ``by`` config columns, ``value`` (the
    metric from the trial's last report, or its best by ``mode`` with ``use="best"``; NaN where
    it is not finite), ``finished`` (the trial ran its whole budget or diverged, see
    `ran_full_budget`; True for every trial when the frame has no ``config/reports`` or
    ``training_iteration`` to tell) and ``diverged``.

    Raises ValueError for a missing column, a bad ``mode``/``use``, or a non-positive lr.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"trial_id": ["a", "a", "b"], "training_iteration": [1, 2, 1],
        ...                    "config/reports": 2, "acc": [0.5, 0.7, 0.1],
        ...                    "config/optimizer/lr": [0.1, 0.1, 1.0],
        ...                    "config/dataset/batch_size": 64})
        >>> trial_outcomes(df, metric="acc")[["trial_id", "value", "finished"]].values.tolist()
        [['a', 0.7, True], ['b', 0.1, False]]
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if use not in ("last", "best"):
        raise ValueError(f"use must be 'last' or 'best', got {use!r}")
    lr_col, b_col = config_column(lr), config_column(batch_size)
    by_cols = _by_columns(by)
    needed = {"trial_id": "trial ids", metric: "the metric", lr_col: lr, b_col: batch_size}
    needed.update({c: c for c in by_cols})
    _require_columns(df, needed)

    extra = [c for c in ("training_iteration", "config/reports", "diverged") if c in df.columns]
    rep = df[list(dict.fromkeys([*needed, *extra]))].copy()
    if "training_iteration" in rep:
        rep = rep.sort_values(["trial_id", "training_iteration"], kind="stable")
    raw = pd.to_numeric(rep[metric], errors="coerce").astype(float)
    rep["_value"] = raw.where(np.isfinite(raw))
    last = rep.groupby("trial_id", sort=True).tail(1).set_index("trial_id")
    if use == "best":
        # Sorting puts NaN last, so a trial's best is finite whenever it reported anything finite.
        score = rep["_value"] if mode == "max" else -rep["_value"]
        best = rep.assign(_score=score).sort_values("_score", ascending=False, na_position="last",
                                                    kind="stable")
        value = best.groupby("trial_id", sort=True).head(1).set_index("trial_id")["_value"]
    else:
        value = last["_value"]

    if "diverged" in last:
        diverged = pd.to_numeric(last["diverged"], errors="coerce").fillna(0).astype(bool)
    else:
        diverged = pd.Series(False, index=last.index)
    if "config/reports" in last and "training_iteration" in last:
        records = last[["config/reports", "training_iteration"]].assign(diverged=diverged)
        finished = [ran_full_budget(r) for r in records.to_dict("records")]
    else:
        finished = [True] * len(last)

    out = pd.DataFrame({
        "trial_id": last.index,
        "lr": pd.to_numeric(last[lr_col], errors="coerce").to_numpy(float),
        "batch_size": pd.to_numeric(last[b_col], errors="coerce").to_numpy(float),
        **{c: last[c].to_numpy() for c in by_cols},
        "value": value.reindex(last.index).to_numpy(float),
        "finished": np.asarray(finished, bool),
        "diverged": diverged.to_numpy(bool),
    })
    bad_lr = ~(np.isfinite(out["lr"]) & (out["lr"] > 0))
    if bad_lr.any():
        raise ValueError(f"{lr_col}: {int(bad_lr.sum())} trial(s) have a missing or non-positive "
                         f"learning rate (e.g. trial {out.loc[bad_lr, 'trial_id'].iloc[0]!r}); "
                         f"a log-lr fit needs lr > 0")
    bad_b = ~(np.isfinite(out["batch_size"]) & (out["batch_size"] > 0))
    if bad_b.any():
        raise ValueError(f"{b_col}: {int(bad_b.sum())} trial(s) have a missing or non-positive "
                         f"batch size (e.g. trial {out.loc[bad_b, 'trial_id'].iloc[0]!r})")
    return out


def split_groups(df: pd.DataFrame, by: str | Sequence[str] | None
                 ) -> list[tuple[Any, dict[str, Any], pd.DataFrame]]:
    """``df`` split by the config keys ``by``: ``[(key, {config key: value}, rows), ...]``.

    ``key`` is the group's value (a tuple for several keys), hashable: a list or dict value is
    its JSON text there (`hashable_value`), while ``group`` holds the value itself. With
    ``by=None`` one group ``(None, {}, df)``.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"config/budget/steps": [100, 200, 100]})
        >>> [(k, g, len(rows)) for k, g, rows in split_groups(df, "budget.steps")]
        [(100, {'budget.steps': 100}, 2), (200, {'budget.steps': 200}, 1)]
        >>> df = pd.DataFrame({"config/eval/extra_eps": [[0.1], [0.2], [0.1]]})
        >>> [(k, g, len(rows)) for k, g, rows in split_groups(df, "eval.extra_eps")]
        [('[0.1]', {'eval.extra_eps': [0.1]}, 2), ('[0.2]', {'eval.extra_eps': [0.2]}, 1)]
    """
    if by is None:
        return [(None, {}, df)]
    keys = [by] if isinstance(by, str) else list(by)
    cols = _by_columns(keys)
    _require_columns(df, {c: k for c, k in zip(cols, keys)})
    hashed = [df[c].map(hashable_value) for c in cols]
    try:
        grouped = list(df.groupby(hashed, sort=True, dropna=False))
    except TypeError:  # values of mixed types (3 and "auto") have no order
        grouped = list(df.groupby(hashed, sort=False, dropna=False))
    out = []
    for value, rows in grouped:
        values = tuple(_python(v) for v in value)
        group = {k.removeprefix("config/").replace("/", "."): _python(rows[c].iloc[0])
                 for k, c in zip(keys, cols)}
        out.append((values if len(values) > 1 else values[0], group, rows))
    return out


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
