"""``tune-lip demo``: the shipped ``demo.yaml`` search end to end, then its analysis and plots.

AOL-MLPs on scikit-learn's bundled digits (offline): a grid of 7 learning rates x 4 batch
sizes x 2 seeds, every trial to the end of its budget, on a private local Ray. About a minute
on 2 CPU cores; ``quick=True`` is a smaller version for the tests.
"""

from __future__ import annotations

from pathlib import Path

from tune_lip.studies.budget import parse_budget
from tune_lip.tune.launch import experiment_name, run_search
from tune_lip.tune.spec import load_spec

__all__ = ["run_demo"]


def run_demo(*, storage_path: str | Path = "tune_lip_results", quick: bool = False,
             num_cpus: int | None = None, verbose: int = 1, seed: int | None = None) -> Path:
    """Run the demo search; print the best trial per batch size; return the experiment dir.

    seed: the first of the demo's seeds (``space.seed``; its replicates take the next ones), to
    see how much the answer moves with the seed.
    """
    from dataclasses import replace

    from tune_lip.analysis import last_reports, load, write_lr_scaling_report

    spec = load_spec("demo")
    if seed is not None:
        spec = replace(spec, space={**spec.space, "seed": int(seed)})
    if quick:
        spec = spec.with_overrides(replicates=1, budget=parse_budget({"steps": 60}, where="demo --quick"))
    name = experiment_name(spec)
    grid = run_search(spec, name=name, storage_path=storage_path, num_cpus=num_cpus, verbose=verbose)
    experiment = Path(grid.experiment_path)

    df = load(experiment)
    last = last_reports(df)
    b, lr, metric = "config/dataset/batch_size", "config/optimizer/lr", spec.metric
    best = last.sort_values(metric, ascending=(spec.mode == "min")).groupby(b).head(1).sort_values(b)
    print(f"\nBest trial per batch size ({metric}, {spec.mode}; {len(last)} trials, "
          f"{int(last['diverged'].astype(bool).sum())} diverged):")
    # Chosen on the validation split; the test metrics of the chosen trials (each trial's last report) beside them.
    tests = [c for c in ("test_certified_acc", "test_acc") if c in best and c != metric]
    print(best[[b, lr, metric, *tests, "steps", "trial_id"]].to_string(index=False))
    plots = experiment / "plots"
    print()
    # Every trial runs its whole budget (no early stopping): 7 lrs x 2 seeds per batch size.
    report = write_lr_scaling_report(df, metric=metric, mode=spec.mode, out_dir=plots, title=experiment.name)
    for summary in report["summaries"].values():
        print(summary)
    for why in report["errors"].values():  # too few finished trials: say so rather than invent a slope
        print(f"lr-scaling fit not possible: {why}")
    print(f"\nresults: {experiment}")
    print(f"  pandas:   tune_lip.analysis.load({str(experiment)!r})")
    print(f"  summary:  tune-lip results {experiment}")
    print(f"  analysis: tune-lip analyze lr-scaling {experiment}")
    print(f"plots:    {plots}/ (" + ", ".join(sorted(p.name for p in plots.glob('*.png'))) + ")")
    return experiment
