"""Where a scaling rule stops holding: trajectories across batch sizes, compared in SDE time.

A scaling rule (linear: lr ∝ B for SGD; square root for Adam; SVAG's l) says that runs at
different batch sizes follow the same SDE, so their metric trajectories coincide when plotted
against SDE time (Li, Malladi, Arora, *On the Validity of Modeling SGD with SDEs*, 2021). It
holds for small batches and breaks past some size. `check_scaling_rule` finds that size:

- **time**: the reported ``sde_time`` metric (the scaling study's continuous time), or, where a
  frame has no such column, steps·lr accumulated per trial as Σ lr_now·Δsteps over its reports
  (``lr_now`` is the LR of each slice's last step, so this is exact for a constant LR and an
  approximation under a schedule; ``lr`` is the configured peak and is not used when ``lr_now``
  is there; experiments from before ``lr_now`` existed reported the current LR as ``lr``, so
  ``lr`` stands in for it when the column is missing). Any other column may be named;
  ``time="steps·lr"`` computes steps·lr even where ``sde_time`` exists. The time must put the
  compared runs on one clock (the wrong clock finds a wrong break): the scaling study's
  ``sde_time`` = Σ lr aligns SVAG's l and batch sizes under the linear rule alike.
- **final metric**: each trial's metric at the *horizon*, the SDE time every batch size reaches
  (the smallest, over batch sizes, of the longest trial's end time), linearly interpolated
  between reports; trials that end before the horizon (stopped early) are left out and noted.
- **noise**: where several trials (seeds) share a batch size, the spread of their final values
  (the mean's standard error, t with n−1 degrees of freedom); for a single trial, the
  report-to-report fluctuation of its trajectory over the last quarter of the horizon (the
  standard deviation of the residuals around a straight line, t with m−2 degrees of freedom):
  the noise of one final value. ``pool_seeds`` (the default) pools the seed variance over
  batch sizes. A check whose batch sizes have one trial each rests on one seed: the
  trajectory's fluctuation misses seed-to-seed variation, and the summary says so
  (`ScalingRuleCheck.one_seed`); run the space with ``replicates: 2`` or more.
- **departs**: the reference (by default the smallest batch size: the one closest to the SDE)
  is compared with every other batch size: a batch size departs when the t-interval (Welch's
  degrees of freedom) of its difference from the reference excludes zero. The intervals are
  simultaneous: Bonferroni-adjusted over the batch sizes compared, so flat data shows a
  spurious departure with probability at most 1 − ``level``. ``breaks_at`` is the first
  departing batch size going outward from the reference. A batch size without a finite final
  value (its trials diverged) departs; one without a noise estimate cannot be judged and does
  not depart (noted).

For SVAG, pass ``batch_size="gradient.l"`` and ``reference="largest"``: larger l is closer to
the SDE, so the rule breaks going *down* in l.

Hand-written: the interpolation at a common SDE time and the two noise sources are specific to
this question; the t quantiles come from scipy. The trajectories and their SDE time are read in
`tune_lip.analysis.sde_time`.

Example:
    >>> from tune_lip.analysis import check_scaling_rule, load             # doctest: +SKIP
    >>> check = check_scaling_rule(load("tune_lip_results/linear_rule"), metric="val_acc")  # doctest: +SKIP
    >>> print(check.summary()); check.breaks_at                            # doctest: +SKIP
    512.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import pandas as pd
import scipy.stats

from tune_lip.analysis.results import jsonable
from tune_lip.analysis.sde_time import GRAD_STATS, _tail_noise, _trajectories, _value_at
from tune_lip.analysis.sde_time import LR_STEPS as LR_STEPS
from tune_lip.analysis.trials import split_groups

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ScalingRuleCheck", "check_scaling_rule", "write_scaling_rule_report"]

Mode = Literal["max", "min"]


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------

def _fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4g}"


@dataclass(frozen=True)
class ScalingRuleCheck:
    """Where trajectories at different batch sizes stop agreeing in SDE time.

    per_batch: one row per batch size, ascending: ``batch_size``, ``n_trials``, ``final`` (the
        metric at the horizon; the mean over trials), ``lo``/``hi`` (its simultaneous interval),
        ``noise_from`` ("seeds", "pooled seeds", "trajectory" or "none"), ``difference`` (final − the
        reference's) with ``diff_lo``/``diff_hi``, ``departs`` (bool) and ``worse`` (the
        difference points the bad way for ``mode``).
    breaks_at: the first departing batch size going outward from ``reference``, or None.
    reference: the batch size the others are compared with.
    horizon: the SDE time the final values are read at; time: the time axis's name.
    curves: every report used (trial_id, batch_size, time, value, grad_norm_sq/grad_noise when
        reported), for the plots.
    notes: what was left out or could not be judged, and why.
    """

    metric: str
    mode: str
    reference: float
    breaks_at: float | None
    horizon: float
    time: str
    level: float
    per_batch: pd.DataFrame = field(repr=False, compare=False)
    curves: pd.DataFrame = field(repr=False, compare=False)
    notes: list[str] = field(default_factory=list)
    group: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def one_seed(self) -> bool:
        """Whether some compared batch size's noise is one run's fluctuation, not seeds' spread."""
        return bool((self.per_batch["noise_from"].isin(["trajectory", "none"])
                     & (self.per_batch["n_trials"] <= 1)).any())

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.group.items())

    def to_dict(self) -> dict[str, Any]:
        """Everything but the curves, as JSON-able Python values (non-finite -> None)."""
        return jsonable({"metric": self.metric, "mode": self.mode, "reference": self.reference,
                         "breaks_at": self.breaks_at, "one_seed": self.one_seed, "horizon": self.horizon, "time": self.time,
                         "level": self.level, "group": self.group, "notes": list(self.notes),
                         "settings": self.settings, "per_batch": self.per_batch.to_dict("records")})

    def summary(self) -> str:
        """A printable per-batch table and the verdict."""
        key = self.settings.get("batch_size", "batch size")
        head = (f"scaling rule check: {self.metric} ({self.mode}) at {self.time} = {_fmt(self.horizon)}, "
                f"reference {key} = {self.reference:g}, simultaneous {self.level:.0%} intervals"
                + (f" [{self.label}]" if self.label else ""))
        columns = (f"{'batch':>8}  {'final':>9}  {'interval':<21} {'diff':>9}  {'trials':>6}  "
                   f"{'noise from':<12}  verdict")
        lines = [head, columns]
        for r in self.per_batch.itertuples(index=False):
            verdict = ("reference" if r.batch_size == self.reference else
                       ("departs" + (" (worse)" if r.worse else " (better)")) if r.departs else "holds")
            lines.append(f"{r.batch_size:>8g}  {_fmt(r.final):>9}  {f'[{_fmt(r.lo)}, {_fmt(r.hi)}]':<21} "
                         f"{_fmt(r.difference):>9}  {r.n_trials:>6}  {r.noise_from:<12}  {verdict}")
        if self.breaks_at is None:
            lines.append("the rule holds at every batch size tried (no departure beyond the noise)")
        else:
            lines.append(f"the rule stops holding at {key} = {self.breaks_at:g}")
        if self.one_seed:
            lines.append("caution: this rests on one seed per batch size: the noise is each run's report-to-report "
                         "fluctuation, which misses seed-to-seed variation; run with replicates: 2 or more")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    # ------------------------------------------------------------------------------- plots
    def _colors(self) -> dict[float, Any]:
        import matplotlib.pyplot as plt

        cmap = plt.get_cmap("viridis")
        sizes = sorted(self.curves["batch_size"].dropna().unique())
        return {b: cmap(0.9 * i / max(len(sizes) - 1, 1)) for i, b in enumerate(sizes)}

    def plot_final(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """The final metric against batch size (log x) with intervals; departures in red."""
        from matplotlib.ticker import FuncFormatter, NullFormatter

        fig, ax = _axes(ax)
        pb = self.per_batch
        ref = pb[pb["batch_size"] == self.reference].iloc[0]
        if math.isfinite(ref["lo"]) and math.isfinite(ref["hi"]):
            ax.axhspan(ref["lo"], ref["hi"], color="0.5", alpha=0.15, lw=0, label="reference interval")
        for departs, color, label in ((False, "black", "holds"), (True, "C3", "departs")):
            rows = pb[(pb["departs"] == departs) & np.isfinite(pb["final"])]
            if rows.empty:
                continue
            lo = np.where(np.isfinite(rows["lo"]), rows["final"] - rows["lo"], 0.0)
            hi = np.where(np.isfinite(rows["hi"]), rows["hi"] - rows["final"], 0.0)
            ax.errorbar(rows["batch_size"], rows["final"], yerr=[lo, hi], fmt="o", color=color, ms=6,
                        capsize=3, label=label)
        if self.breaks_at is not None:
            ax.axvline(self.breaks_at, color="C3", ls="--", lw=1.2, label=f"breaks at {self.breaks_at:g}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(pb["batch_size"].to_numpy(float))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(self.settings.get("batch_size", "batch size"))
        ax.set_ylabel(f"{self.metric} at {self.time} = {_fmt(self.horizon)}")
        ax.set_title(title or f"{self.metric} at a fixed SDE time vs batch size"
                     + (f" [{self.label}]" if self.label else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        return fig

    def plot_trajectories(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """The metric against SDE time, one colour per batch size (one line per trial)."""
        fig, ax = _axes(ax)
        colors = self._colors()
        for b, rows in self.curves.groupby("batch_size", sort=True):
            for i, (_, trial) in enumerate(rows.groupby("trial_id", sort=True)):
                trial = trial.sort_values("time")
                ax.plot(trial["time"], trial["value"], "-", color=colors[b], lw=1.2, alpha=0.8,
                        label=f"{b:g}" if i == 0 else None)
        ax.axvline(self.horizon, color="0.3", ls=":", lw=1.2, label="horizon")
        ax.set_xlabel(self.time)
        ax.set_ylabel(self.metric)
        ax.set_title(title or f"{self.metric} vs SDE time" + (f" [{self.label}]" if self.label else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(title=self.settings.get("batch_size", "batch size"), loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize="small")
        return fig

    @property
    def has_grad_stats(self) -> bool:
        return any(c in self.curves and np.isfinite(self.curves[c]).any() for c in GRAD_STATS)

    def plot_grad_stats(self, *, title: str = "") -> Figure:
        """G_t (``grad_norm_sq``) and N_t (``grad_noise``) against SDE time, one line per batch
        size (log y; non-positive estimates are not drawn). Raises ValueError without them."""
        import matplotlib.pyplot as plt

        present = [c for c in GRAD_STATS if c in self.curves and np.isfinite(self.curves[c]).any()]
        if not present:
            raise ValueError("no grad_norm_sq or grad_noise reports to plot (grad_stats_every: 0?)")
        fig, axes = plt.subplots(1, len(present), figsize=(5.2 * len(present), 4.2), layout="constrained",
                                 squeeze=False)
        colors = self._colors()
        names = {"grad_norm_sq": "G_t = ‖∇L‖² (grad_norm_sq)", "grad_noise": "N_t = tr Σ (grad_noise)"}
        for ax, col in zip(axes[0], present):
            for b, rows in self.curves.groupby("batch_size", sort=True):
                for i, (_, trial) in enumerate(rows.groupby("trial_id", sort=True)):
                    trial = trial[np.isfinite(trial[col]) & (trial[col] > 0)].sort_values("time")
                    ax.plot(trial["time"], trial[col], "-", color=colors[b], lw=1.2, alpha=0.8,
                            label=f"{b:g}" if i == 0 else None)
            ax.set_yscale("log")
            ax.set_xlabel(self.time)
            ax.set_ylabel(names[col])
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(title=self.settings.get("batch_size", "batch size"), loc="upper left",
                           bbox_to_anchor=(1.01, 1.0), fontsize="small")
        fig.suptitle(title or "gradient norm and noise vs SDE time" + (f" [{self.label}]" if self.label else ""))
        return fig


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
        return fig, ax
    return ax.get_figure(), ax  # type: ignore[return-value]


def _check_group(curves: pd.DataFrame, *, metric: str, mode: Mode, reference: str | float,
                 level: float, pool_seeds: bool, time: str, group: dict[str, Any],
                 settings: dict[str, Any]) -> ScalingRuleCheck:
    notes: list[str] = []
    curves = curves[np.isfinite(curves["batch_size"]) & np.isfinite(curves["time"])]
    if curves.empty:
        raise ValueError("no reports with a batch size and a finite time")
    sizes = sorted(curves["batch_size"].unique())
    if len(sizes) < 2:
        raise ValueError(f"only one batch size ({sizes[0]:g}): nothing to compare")
    if reference in ("smallest", "largest"):
        ref = sizes[0] if reference == "smallest" else sizes[-1]
    else:
        ref = float(reference)  # type: ignore[arg-type]
        if ref not in sizes:
            raise ValueError(f"reference batch size {ref:g} not among those tried: "
                             f"{', '.join(f'{b:g}' for b in sizes)}")
    end = curves.groupby("trial_id")["time"].max()
    trial_b = curves.groupby("trial_id")["batch_size"].first()
    horizon = float(end.groupby(trial_b).max().min())
    if not horizon > 0:
        raise ValueError(f"the runs reach no positive SDE time (horizon {horizon:g})")
    short = end[end < horizon * (1 - 1e-9)]
    if len(short):
        notes.append(f"{len(short)} trial(s) end before the horizon {horizon:.4g} (stopped early?) "
                     f"and are left out, e.g. {short.index[0]!r}")

    finals: list[dict[str, Any]] = []
    for b in sizes:
        trials = [t for t in trial_b.index[trial_b == b] if t not in short.index]
        values, noise = [], []
        for t in trials:
            rows = curves[curves["trial_id"] == t]
            tt, vv = rows["time"].to_numpy(float), rows["value"].to_numpy(float)
            values.append(_value_at(tt, vv, horizon))
            noise.append(_tail_noise(tt, vv, horizon))
        v = np.asarray(values, float)
        finite = v[np.isfinite(v)]
        if 0 < len(finite) < len(v):
            notes.append(f"batch size {b:g}: {len(v) - len(finite)} of {len(v)} trials have no finite "
                         f"{metric} at the horizon (diverged?); the others give its value")
        if len(finite) >= 2:
            se, dof, source = float(np.std(finite, ddof=1) / math.sqrt(len(finite))), len(finite) - 1, "seeds"
        elif len(finite) == 1:
            se, dof = noise[int(np.flatnonzero(np.isfinite(v))[0])]
            source = "trajectory" if dof > 0 else "none"
        else:
            se, dof, source = math.nan, 0, "none"
        finals.append({"batch_size": b, "n_trials": len(trials), "n_finite": len(finite),
                       "final": float(finite.mean()) if len(finite) else math.nan,
                       "se": se, "dof": dof, "noise_from": source})
    seeded = [r for r in finals if r["noise_from"] == "seeds"]
    pooled_dof = sum(r["dof"] for r in seeded)
    if pool_seeds and len(seeded) >= 2:
        # One seed variance for every batch size (ANOVA's pooled estimate): more degrees of freedom
        # than 2 or 3 seeds give one batch size, at the price of assuming an equal spread.
        var = sum(r["dof"] * r["se"] ** 2 * r["n_finite"] for r in seeded) / pooled_dof
        for r in seeded:
            r.update(se=math.sqrt(var / r["n_finite"]), dof=pooled_dof, noise_from="pooled seeds")

    m = len(sizes) - 1   # comparisons with the reference
    alpha = (1 - level) / max(m, 1)   # Bonferroni: simultaneous over the comparisons
    by_b = {r["batch_size"]: r for r in finals}
    r0 = by_b[ref]
    for r in finals:
        q = scipy.stats.t.ppf(1 - alpha / 2, r["dof"]) if r["dof"] > 0 else math.nan
        r["lo"], r["hi"] = r["final"] - q * r["se"], r["final"] + q * r["se"]
        r["difference"] = r["final"] - r0["final"]
        if r["batch_size"] == ref:
            r.update(diff_lo=0.0, diff_hi=0.0, departs=False, worse=False)
            continue
        var = r["se"] ** 2 + r0["se"] ** 2
        if var > 0 and r["noise_from"] == r0["noise_from"] == "pooled seeds":
            q = float(scipy.stats.t.ppf(1 - alpha / 2, pooled_dof))   # one variance estimate, not two
        elif var > 0 and r["dof"] > 0 and r0["dof"] > 0:   # Welch–Satterthwaite degrees of freedom
            terms = [s ** 4 / d for s, d in ((r["se"], r["dof"]), (r0["se"], r0["dof"])) if s > 0]
            q = float(scipy.stats.t.ppf(1 - alpha / 2, var ** 2 / sum(terms)))
        else:
            q = 0.0 if var == 0 else math.nan   # noiseless runs: any difference is a departure
        half = q * math.sqrt(var) if math.isfinite(var) else math.nan
        r["diff_lo"], r["diff_hi"] = r["difference"] - half, r["difference"] + half
        if not math.isfinite(r["final"]):
            r["departs"] = True   # no finite value at the horizon: its runs diverged
            notes.append(f"batch size {r['batch_size']:g}: no finite {metric} at the horizon; counted as departing")
        elif not math.isfinite(half):
            r["departs"] = False
            notes.append(f"batch size {r['batch_size']:g}: no noise estimate (one trial with < 3 reports "
                         f"in the last quarter, or none for the reference); not judged")
        else:
            r["departs"] = bool(abs(r["difference"]) > half)
        r["worse"] = bool(r["departs"] and math.isfinite(r["difference"])
                          and (r["difference"] < 0 if mode == "max" else r["difference"] > 0))
    outward = [b for b in sizes if b > ref] if ref == sizes[0] else (
        [b for b in reversed(sizes) if b < ref] if ref == sizes[-1] else
        sorted((b for b in sizes if b != ref), key=lambda b: abs(math.log(b / ref))))
    breaks_at = next((float(b) for b in outward if by_b[b]["departs"]), None)
    per_batch = pd.DataFrame(finals)[["batch_size", "n_trials", "final", "lo", "hi", "noise_from",
                                      "difference", "diff_lo", "diff_hi", "departs", "worse"]]
    return ScalingRuleCheck(metric=metric, mode=mode, reference=float(ref), breaks_at=breaks_at,
                            horizon=horizon, time=time, level=level, per_batch=per_batch,
                            curves=curves.reset_index(drop=True), notes=notes, group=group,
                            settings=settings)


@overload
def check_scaling_rule(df: pd.DataFrame, *, metric: str = ..., mode: Mode = ..., batch_size: str = ...,
                       by: None = ..., time: str = ..., reference: str | float = ...,
                       level: float = ..., pool_seeds: bool = ...) -> ScalingRuleCheck: ...


@overload
def check_scaling_rule(df: pd.DataFrame, *, metric: str = ..., mode: Mode = ..., batch_size: str = ...,
                       by: str | Sequence[str], time: str = ..., reference: str | float = ...,
                       level: float = ..., pool_seeds: bool = ...) -> dict[Any, ScalingRuleCheck]: ...


def check_scaling_rule(df: pd.DataFrame, *, metric: str = "val_acc", mode: Mode = "max",
                       batch_size: str = "dataset.batch_size", by: str | Sequence[str] | None = None,
                       time: str = "sde_time", reference: str | float = "smallest", level: float = 0.95,
                       pool_seeds: bool = True) -> ScalingRuleCheck | dict[Any, ScalingRuleCheck]:
    """Compare metric trajectories across batch sizes in SDE time; say where the rule breaks.

    df: what `load` returns (one row per report) or any frame with ``trial_id``, the metric, the
        batch-size config column and a time (see the module docstring for every step).
    metric, mode: the metric and whether higher ("max") or lower ("min") is better (``mode`` only
        labels a departure as worse or better: any departure breaks the rule).
    batch_size: the config key of the compared axis ("dataset.batch_size", or SVAG's
        "gradient.l"). by: config key(s) to check separately; the result is then a dict from the
        group's value to its check.
    time: the time column ("sde_time"; steps·lr computed when absent, see the module docstring).
    reference: "smallest", "largest" or a batch size: the run the others should match.
    level: the simultaneous confidence of the departure intervals.
    pool_seeds: one seed variance pooled over all batch sizes with several trials (the default:
        more degrees of freedom: with 2 seeds a batch size's own t has 1, and its interval is ~6x
        wider than pooled over 7 batch sizes), assuming the seed-to-seed spread is alike at every
        batch size; False gives each batch size its own.

    Raises ValueError for a missing column, fewer than two batch sizes, or a bad option.

    Example:
        >>> import numpy as np, pandas as pd
        >>> rng = np.random.default_rng(0)
        >>> rows = [{"trial_id": f"{b}-{s}", "training_iteration": k, "sde_time": k / 10,
        ...          "config/dataset/batch_size": b,
        ...          "val_acc": (0.9 if b <= 256 else 0.7) * (1 - np.exp(-k / 3)) + rng.normal(0, 0.005)}
        ...         for b in (64, 128, 256, 512, 1024) for s in range(3) for k in range(1, 21)]
        >>> check_scaling_rule(pd.DataFrame(rows)).breaks_at
        512.0
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if isinstance(reference, str) and reference not in ("smallest", "largest"):
        raise ValueError(f"reference must be 'smallest', 'largest' or a batch size, got {reference!r}")
    settings = {"batch_size": batch_size, "time": time, "reference": reference, "pool_seeds": pool_seeds}
    groups = split_groups(df, by)
    out: dict[Any, ScalingRuleCheck] = {}
    for key, group, rows in groups:
        curves, axis = _trajectories(rows, metric=metric, batch_size=batch_size, time=time)
        out[key] = _check_group(curves, metric=metric, mode=mode, reference=reference, level=level,
                                pool_seeds=pool_seeds,
                                time=axis, group=group, settings=settings)
    return out[None] if by is None else out


def write_scaling_rule_report(df: pd.DataFrame, *, out_dir: str | Path, title: str = "",
                              **options: Any) -> dict[str, Any]:
    """Check the scaling rule and write its figures (PNG and PDF) into ``out_dir``.

    Files: ``scaling_rule_final`` (final metric vs batch size), ``scaling_rule_trajectories``
    (metric vs SDE time) and, when the runs reported them, ``scaling_rule_grad_stats`` (G_t and
    N_t vs SDE time). ``options`` go to `check_scaling_rule` (``metric``, ``mode``,
    ``batch_size``, ``time``, ``reference``, ``level``; not ``by``: call once per group).

    Returns ``{"per_batch": [row dicts], "breaks_at": float | None, "summary": str,
    "plots": [paths as str], "check": the check's to_dict()}``, JSON-able.

    Example:
        >>> from tune_lip.analysis import load, write_scaling_rule_report      # doctest: +SKIP
        >>> write_scaling_rule_report(load("tune_lip_results/linear_rule"), out_dir="plots",
        ...                           title="PreResNet-32, linear rule")["plots"][:2]  # doctest: +SKIP
        ['plots/scaling_rule_final.png', 'plots/scaling_rule_final.pdf']
    """
    import matplotlib.pyplot as plt

    from tune_lip.analysis.plots import save_figure

    if options.get("by") is not None:
        raise ValueError("write_scaling_rule_report checks one group: split the frame and call it per group")
    options.pop("by", None)
    check = check_scaling_rule(df, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = f"{title}: " if title else ""
    figures = [("scaling_rule_final", lambda: check.plot_final(title=head + f"{check.metric} at a fixed SDE time")),
               ("scaling_rule_trajectories", lambda: check.plot_trajectories(title=head + f"{check.metric} vs SDE time"))]
    if check.has_grad_stats:
        figures.append(("scaling_rule_grad_stats",
                        lambda: check.plot_grad_stats(title=head + "gradient norm and noise vs SDE time")))
    plots: list[str] = []
    for name, draw in figures:
        fig = draw()
        plots += [str(p) for p in save_figure(fig, out / name)]
        plt.close(fig)
    info = check.to_dict()
    return {"per_batch": info["per_batch"], "breaks_at": info["breaks_at"], "summary": check.summary(),
            "plots": plots, "check": info}
