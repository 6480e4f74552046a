"""Training regimes by effective learning rate: label each run, then fit the ELR thresholds.

Scale-invariant networks trained on the sphere at a fixed effective learning rate (ELR) fall
into three regimes, ordered by ELR (Kodryan et al., *Training Scale-Invariant Neural Networks
on the Sphere Can Happen in Three Regimes*):

- **converged**: the train loss keeps falling toward zero;
- **chaotic**: the loss settles at a stationary, ELR-dependent level above zero;
- **diverged**: the loss stays near chance, ln C for C classes (or becomes non-finite).

`classify_regime` labels one train-loss trajectory from its last quarter, on scales that do
not depend on the budget: time as a fraction of the run, loss levels as fractions of chance
(diverged at >= 0.9 ln C, converged at the floor <= 0.005 ln C or while still falling by >= 5%
across the last quarter; chaotic otherwise). `regime_boundaries` labels every trial of a search
(the ``regime`` its last report holds, else from its train-loss history) and fits the threshold
between each pair of adjacent regimes from the trials of those two regimes.

**The headline interval** (``elr_lo``, ``elr_hi``) is the 95% credible interval of
`threshold_posterior`: a grid posterior over the threshold and the boundary's width, whose model
lets each trial's switch point spread around the threshold. Replicates (several seeds of one
config) are pooled as trials, and seeds that disagree widen it. On synthetic searches of 160
trials with switch points jittered by 0.1-0.2 decades it held the truth in 93-98% of them, with
median widths of 0.1-0.25 decades (bench/regime_coverage.py). Beside it, for comparison only,
the classical fit (``fit_lo``, ``fit_hi``): a logistic regression of P(upper regime | log ELR)
with a stratified bootstrap, or the gap between the regimes where they do not overlap (the
logistic fit has no finite maximum there). It is exact for a sharp boundary, but near a noisy
one a gap can be luck and a bootstrap over a few overlapping trials is too narrow: it held the
truth in only 82-95% of the same searches. A regime no trial reached has no boundary.
`tune_lip.tune.boundary_search.BoundarySearch` places its trials with the posterior.

Hand-written on purpose: the logistic fits of all bootstrap replicates run as one batched
Newton iteration on multinomial weights (scipy fits one replicate at a time, and treats no
separated replicate as an interval), and no library has a threshold posterior that stays
finite under separation. The slope test uses scipy's Theil-Sen.

Where it lives: `regime_labels` (the regimes, `classify_regime`, `trial_regimes`),
`regime_posterior` (`threshold_posterior`), `regime_fit` (the logistic fits,
`fit_regime_thresholds`, `RegimeBoundaries`), `regime_plots` (its plots); this module labels and
fits a search (`regime_boundaries`), writes the report and re-exports the rest.

Example:
    >>> from tune_lip.analysis import load, regime_boundaries               # doctest: +SKIP
    >>> fit = regime_boundaries(load("tune_lip_results/sphere"))           # doctest: +SKIP
    >>> print(fit.summary()); fit.plot()                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tune_lip.analysis.regime_fit import REGIME_COLORS as REGIME_COLORS
from tune_lip.analysis.regime_fit import THRESHOLD_COLUMNS as THRESHOLD_COLUMNS
from tune_lip.analysis.regime_fit import RegimeBoundaries, fit_regime_thresholds
from tune_lip.analysis.regime_labels import REGIMES, classify_regime, trial_regimes
from tune_lip.analysis.regime_labels import Regime as Regime
from tune_lip.analysis.regime_posterior import ThresholdPosterior, threshold_posterior
from tune_lip.analysis.results import config_column

__all__ = ["REGIMES", "RegimeBoundaries", "ThresholdPosterior", "classify_regime",
           "fit_regime_thresholds", "regime_boundaries", "threshold_posterior", "trial_regimes",
           "write_regime_report"]


def _progress_column(df: pd.DataFrame) -> str:
    # `steps` is work done (the same on any device); report counts are the fallback.
    if "steps" in df and pd.to_numeric(df["steps"], errors="coerce").notna().any():
        return "steps"
    return "training_iteration"


def regime_boundaries(df: pd.DataFrame, *, elr: str = "optimizer.elr", num_classes: int = 10,
                      n_boot: int = 1000, level: float = 0.95, seed: int | None = 0,
                      classify_options: Mapping[str, Any] | None = None,
                      replicate: str | None = "seed") -> RegimeBoundaries:
    """Label every trial of a search, then fit the ELR thresholds between adjacent regimes.

    ``df`` is what `load` returns (one row per report). Labels come from `trial_regimes`
    (the reported ``regime`` of each trial's last report, else `classify_regime` on its
    ``train_loss`` history with ``num_classes`` and ``classify_options``); trials too short to
    classify are left out and noted. Replicates, trials that differ only in the config key
    ``replicate`` (the seed), are pooled: each is one draw of the regime at its ELR, so seeds
    that disagree widen the interval. Thresholds are fitted by `fit_regime_thresholds`: the
    headline ``level`` interval ``elr_lo``/``elr_hi`` is the credible interval (see the module
    docstring); ``n_boot`` and ``seed`` drive the comparison fit's bootstrap. Raises ValueError
    for a missing ELR column (naming the config columns there are), a non-positive ELR, or no
    trial left to fit.

    Example:
        >>> import numpy as np, pandas as pd
        >>> rows = [{"trial_id": f"t{i}", "training_iteration": k + 1, "config/optimizer/elr": e,
        ...          "train_loss": (2.3 * 0.7 ** k if e < 1e-3 else 0.5 if e < 3e-2 else 2.3)}
        ...         for i, e in enumerate(np.geomspace(1e-5, 1, 11)) for k in range(12)]
        >>> fit = regime_boundaries(pd.DataFrame(rows))
        >>> fit.thresholds[["lower", "upper"]].values.tolist()
        [['converged', 'chaotic'], ['chaotic', 'diverged']]
    """
    if df.empty:
        raise ValueError("the results are empty: no trial to label")
    trials = trial_regimes(df, elr=elr, num_classes=num_classes,
                           classify_options=classify_options, replicate=replicate)
    left_out = trials[trials["regime"].isna()]
    if len(left_out) == len(trials):
        raise ValueError(f"no trial could be labelled (e.g. trial {left_out['trial_id'].iloc[0]!r}"
                         f": {left_out['why'].iloc[0]})")
    progress = _progress_column(df)
    history = pd.DataFrame(columns=["trial_id", "progress", "train_loss"])
    if "train_loss" in df:
        order = ["trial_id", "training_iteration"] if "training_iteration" in df else ["trial_id"]
        ordered = df.sort_values(order, kind="stable")
        history = pd.DataFrame({
            "trial_id": ordered["trial_id"].to_numpy(),
            "progress": pd.to_numeric(ordered[progress], errors="coerce").to_numpy(float)
            if progress in ordered else np.arange(len(ordered), dtype=float),
            "train_loss": pd.to_numeric(ordered["train_loss"], errors="coerce").to_numpy(float),
        })
    placed = trials[np.isfinite(trials["elr"].to_numpy(float))]
    fit = fit_regime_thresholds(
        placed["elr"].to_numpy(float), list(placed["regime"]),
        n_boot=n_boot, level=level, seed=seed, trials=placed, history=history,
        settings={"elr": elr, "num_classes": num_classes,
                  "classify_options": dict(classify_options or {}), "progress": progress})
    if config_column(elr) not in df.columns:
        fit.notes.append("ELR: each trial's reported elr (lr/|w|^2, which drifts in the full space), "
                         "geometric mean over its last quarter of reports")
    seeds = trials.loc[trials["regime"].notna(), "replicate"].dropna()
    if seeds.nunique() > 1:
        per_elr = trials.loc[seeds.index].groupby("elr")["replicate"].nunique()
        # One note on replicates: the seed column's, in place of the fit's generic one.
        fit.notes[:] = [n for n in fit.notes if not n.startswith("replicates pooled")]
        fit.notes.append(f"replicates pooled: {seeds.nunique()} seeds "
                         f"({config_column(str(replicate))}), {per_elr.min()}-{per_elr.max()} per "
                         f"ELR, each one draw of where training switches regime (seeds that "
                         f"disagree widen the interval)")
    if not left_out.empty:
        first = left_out.iloc[0]
        fit.notes.append(f"{len(left_out)} trial(s) left out, too short to classify (e.g. "
                         f"{first['trial_id']!r}: {first['why']})")
    return fit


def write_regime_report(df: pd.DataFrame, *, out_dir: str | Path, elr: str = "optimizer.elr",
                        title: str = "", **fit_options: Any) -> dict[str, Any]:
    """Fit the regime thresholds and write ``regime_map`` and ``train_loss_by_elr`` (PNG, PDF).

    ``fit_options`` go to `regime_boundaries` (``num_classes``, ``n_boot``, ``seed``, ...).
    Returns ``{"headline": str, "thresholds": [row dicts], "notes": [str], "counts": {...},
    "plots": [paths as str], "summary": str}``, JSON-able. ``headline`` says first what each
    threshold's ``elr_lo``/``elr_hi`` are (the credible interval); the summary prints it too.

    Example:
        >>> from tune_lip.analysis import load, write_regime_report          # doctest: +SKIP
        >>> write_regime_report(load("tune_lip_results/sphere"), out_dir="plots",
        ...                     title="ConvNetSI")["plots"]                 # doctest: +SKIP
        ['plots/regime_map.png', 'plots/regime_map.pdf', 'plots/train_loss_by_elr.png', ...]
    """
    import matplotlib.pyplot as plt

    from tune_lip.analysis.plots import save_figure

    fit = regime_boundaries(df, elr=elr, **fit_options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    head = f"{title}: " if title else ""
    for name, draw, what in (("regime_map", fit.plot_regime_map, "regime map"),
                             ("train_loss_by_elr", fit.plot_train_loss, "train loss by ELR")):
        fig = draw(title=head + what)
        plots += [str(p) for p in save_figure(fig, out / name)]
        plt.close(fig)
    info = fit.to_dict()
    return {"headline": info["headline"], "thresholds": info["thresholds"], "notes": info["notes"],
            "counts": info["counts"], "plots": plots, "summary": fit.summary()}
