"""The ``tune-lip`` command line: parse, call one function, print.

    tune-lip demo                                   # a real search on digits, then analysis and plots
    tune-lip search aol_lr_batch --address auto     # a shipped space (or a path to your YAML)
    tune-lip search --resume demo-1                 # continue a killed search (its stored spec)
    tune-lip search aol_depth --resources cpu=1     # a GPU space on the CPU
    tune-lip calibrate aol_lr_batch                 # step times for reference_hours budgets
    tune-lip calibrate aol_lr_batch --cluster       # ... on every GPU type of the Ray cluster
    tune-lip placement cluster_rehearsal            # GPU share and types per grid point
    tune-lip rehearse demo --kill T4                # the cluster flow on fake local GPU nodes
    tune-lip results tune_lip_results/demo-1 --csv results.csv

Input errors print one line (file: key: problem; fix) and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tune_lip.errors import EXIT_USER_ERROR, UserError

__all__ = ["main", "parse_budget_flag", "parse_resources_flag"]


def parse_budget_flag(text: str) -> dict[str, Any]:
    """``--budget steps=200`` / ``epochs=3`` / ``"{reference_hours: 1, reference: A100}"`` -> mapping;
    ``steps=250,1000,4000`` (values after the first without a key) -> ``{steps: {grid: [250, 1000, 4000]}}``."""
    import yaml

    if "=" in text and not text.strip().startswith("{"):
        out: dict[str, Any] = {}
        key = None
        for part in text.split(","):
            if "=" not in part and key is not None:   # one more value of the previous key: a grid
                previous = out[key]
                out[key] = {"grid": [*(previous["grid"] if isinstance(previous, dict) else [previous]),
                                     yaml.safe_load(part)]}
                continue
            key, _, raw = part.partition("=")
            key = key.strip()
            out[key] = yaml.safe_load(raw)
        return out
    value: Any
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise UserError("--budget", None, f"cannot read {text!r}", fix="use e.g. --budget steps=200 or epochs=3")
    return value


def parse_resources_flag(text: str) -> dict[str, Any]:
    """``--resources cpu=1`` / ``cpu=2,gpu=0.5`` / ``"{cpu: 1, gpu: 0.25, accelerator: [A100]}"`` -> mapping."""
    try:
        return parse_budget_flag(text)
    except UserError:
        raise UserError("--resources", None, f"cannot read {text!r}", fix="use e.g. --resources cpu=1") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The spec overrides on the command line, as plain values (recorded in the experiment)."""
    out: dict[str, Any] = {}
    if getattr(args, "num_samples", None) is not None:
        if args.num_samples < 1:
            raise UserError("--num-samples", None, f"must be >= 1, got {args.num_samples}")
        out["num_samples"] = args.num_samples
    if getattr(args, "budget", None):
        out["budget"] = parse_budget_flag(args.budget)
    if getattr(args, "resources", None):
        out["resources"] = parse_resources_flag(args.resources)
    if getattr(args, "pending_timeout", None) is not None:
        out["pending_timeout_seconds"] = args.pending_timeout
    if getattr(args, "replicates", None) is not None:
        out["replicates"] = args.replicates
    return out


# Test metrics shown beside the trials chosen by a (validation) metric: each trial reports them
# once, at its end, so a trial a scheduler stopped early has none.
TEST_COLUMNS = ("test_certified_acc", "test_acc", "test_loss")


def _summary(path: Path, *, metric: str | None, mode: str, top: int, df: Any = None,
             per: Sequence[str] = ()) -> str:
    """The experiment in a few lines: trials, reports, diverged, and the ``top`` trials by ``metric``
    with their test metrics (when reported) and the config keys that vary (list and dict values
    printed as JSON); with ``per`` (config keys, e.g. the batch size and the budget) also the best
    trial of each group. ``df``: `load`'s frame, if read."""
    import pandas as pd

    from tune_lip.analysis.results import (
        best_per_group,
        config_column,
        hashable_value,
        json_cells,
        last_reports,
        load,
    )

    if df is None:
        df = load(path)
    if df.empty:
        return f"{path}: no results yet"
    last = last_reports(df)
    # Without a stored spec: the headline validation metric; an experiment from before the split had test ones.
    metric = metric or next((m for m in ("val_certified_acc", "val_acc", "certified_acc", "test_acc") if m in last),
                            None)
    lines = [f"{path}: {last['trial_id'].nunique()} trials, {len(df)} reports"]
    if "diverged" in last:
        diverged = pd.to_numeric(last["diverged"], errors="coerce").fillna(0).astype(bool)
        lines.append(f"diverged: {int(diverged.sum())}")
    if metric and metric in last:
        config_cols = [c for c in last.columns if c.startswith("config/")
                       and last[c].map(hashable_value).nunique(dropna=False) > 1]
        best = json_cells(last.sort_values(metric, ascending=(mode == "min")).head(top))
        tests = [c for c in TEST_COLUMNS if c in best and c != metric and best[c].notna().any()]
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines.append(f"best {len(best)} of {len(last)} by {metric} ({mode})" + (f", with their {', '.join(tests)} "
                                                             "(once, at each trial's end):" if tests else ":"))
            lines.append(best[["trial_id", metric, *tests, *config_cols]].to_string(index=False))
            if per and all(config_column(k) in last for k in per):
                groups = json_cells(best_per_group(df, metric=metric, mode=mode, by=per))
                lines.append(f"best per {' x '.join(per)} ({len(groups)} groups):")
                lines.append(groups[["trial_id", metric, *tests, *config_cols]].to_string(index=False))
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    from tune_lip.tune.launch import (
        DEFAULT_STORAGE,
        PendingTimeoutError,
        load_space,
        resume_spec,
        run_search,
        storage_root,
    )

    if args.list:
        from tune_lip.search_spaces import available

        print("\n".join(available()))
        return 0
    overrides = _overrides(args)
    storage = Path(args.storage_path or DEFAULT_STORAGE)
    name = args.name
    if args.resume:
        if isinstance(args.resume, str):
            if name and name != args.resume:
                raise UserError("--resume", None, f"names {args.resume!r} but --name says {name!r}",
                                fix="give the experiment's name once: tune-lip search --resume NAME")
            name = args.resume
        if not name:
            raise UserError("--resume", None, "which experiment?", fix="tune-lip search --resume NAME "
                            "(the folder name under --storage-path)")
        experiment = f"{storage_root(storage)}/{name}"
        if not Path(experiment).is_dir() and "://" not in experiment:
            raise UserError(experiment, None, "no experiment to resume here",
                            fix="pass the name (and --storage-path) of the killed search")
        spec = resume_spec(experiment, space=args.space, overrides=overrides)
    elif not args.space:
        raise UserError("tune-lip search", "SPACE", "missing", fix="name a shipped space (tune-lip search --list) "
                        "or a YAML file, or continue a search with --resume NAME")
    else:
        spec = load_space(args.space, overrides)
    from tune_lip.tune.preflight import scheduler_warnings

    for warning in scheduler_warnings(spec):   # before anything starts: the user may fix the space
        print(f"warning: {warning}", file=sys.stderr)
    try:
        grid = run_search(spec, name=name, storage_path=storage, address=args.address, resume=bool(args.resume),
                          wandb=args.wandb, mlflow=args.mlflow, overrides=overrides)
    except PendingTimeoutError as exc:
        print(_summary(Path(exc.experiment_dir), metric=spec.metric, mode=spec.mode, top=5))
        raise
    experiment_path = Path(grid.experiment_path)
    print(_summary(experiment_path, metric=spec.metric, mode=spec.mode, top=5, per=spec.group_keys()))
    print(f"\nresults: {experiment_path}  (tune_lip.analysis.load({str(experiment_path)!r}))")
    failed = [r for r in grid if r.error is not None]
    if failed:   # a crash in a trial is not an input error: its traceback is in the trial's folder
        print(f"tune-lip: {len(failed)} trial(s) failed; their tracebacks: "
              + ", ".join(f"{r.path}/error.txt" for r in failed[:3]) + (" ..." if len(failed) > 3 else ""),
              file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tune_lip.demo import run_demo

    run_demo(storage_path=args.storage_path, quick=args.quick, num_cpus=args.num_cpus, seed=args.seed)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tune_lip.cluster.calibrate import append_table, calibrate_cluster, time_batch_all
    from tune_lip.tune.launch import (
        CALIBRATION_FILE,
        DEFAULT_STORAGE,
        grid_configs,
        load_space,
        start_ray,
    )

    spec = load_space(args.space)
    points = spec.grid_points()
    if args.batch_sizes:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        points = [{**p, "dataset.batch_size": b} for p in points for b in sizes]
        points = [dict(t) for t in {tuple(sorted(p.items())) for p in points}]
    configs = grid_configs(spec, sorted(points, key=lambda p: sorted(p.items())))
    if args.cluster:
        if args.accelerator:
            raise UserError("--accelerator", None, "names the type of this machine, not of a cluster's nodes",
                            fix="leave it out with --cluster (each node records its own type)")
        start_ray(args.address or "auto")
        types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None
        table = calibrate_cluster(configs, warmup_steps=args.warmup, timed_steps=args.steps, types=types,
                                  timeout_s=args.timeout)
    else:
        table = time_batch_all(configs, warmup_steps=args.warmup, timed_steps=args.steps,
                               accelerator=args.accelerator)
    out = append_table(table, args.out or f"{DEFAULT_STORAGE}/{CALIBRATION_FILE}")
    print(table[["accelerator", "model_key", "batch_size", "step_seconds"]].to_string(index=False))
    print(f"\ncalibration table: {out}")
    return 0


def cmd_placement(args: argparse.Namespace) -> int:
    import pandas as pd

    from tune_lip.tune.launch import _present_accelerators, load_space, placement_table, start_ray

    spec = load_space(args.space)
    if args.address:
        start_ray(args.address)
    present = _present_accelerators()
    table = placement_table(spec, present)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    print(f"\nGPU types considered: {', '.join(present) if present else 'the spec list, else every known type'}"
          "  (estimated_gb: one training step's GPU memory; see tune_lip.cluster.placement)")
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    from tune_lip.tune.rehearse import parse_nodes, rehearse

    experiment = rehearse(args.space, nodes=parse_nodes(args.nodes), storage_path=args.storage_path,
                          name=args.name, kill=args.kill, cpus_per_node=args.cpus_per_node,
                          overrides=_overrides(args))
    print(f"\nresults: {experiment}  (tune-lip results {experiment})")
    return 0


def _saved_spec(path: Path) -> dict[str, Any]:
    """The spec an experiment searched (its ``search_space.yaml``), or {} when it has none."""
    import yaml

    from tune_lip.tune.launch import SPEC_FILE

    if not path.is_dir():
        raise UserError(str(path), None, "no such experiment directory", fix="pass tune_lip_results/<name>")
    if (path / SPEC_FILE).exists():
        return yaml.safe_load((path / SPEC_FILE).read_text()) or {}
    return {}


def _per_keys(flag: str | None, saved: dict[str, Any], path: Path) -> tuple[str, ...]:
    """``--per`` (comma-separated config keys, ``none`` for no table), else the keys the stored
    search compared trials within (`SearchSpec.group_keys`; none if it has no readable spec)."""
    from tune_lip.tune.spec import parse_spec

    if flag is not None:
        return () if flag.strip().lower() == "none" else tuple(k.strip() for k in flag.split(",") if k.strip())
    try:
        return parse_spec(saved, where=str(path)).group_keys() if saved else ()
    except UserError:
        return ()


def _experiment_metric(path: Path, metric: str | None, mode: str | None) -> tuple[str, str]:
    """The metric and mode to analyse: the flags, else those the search optimised."""
    from tune_lip.tune.launch import SPEC_FILE

    saved = _saved_spec(path)
    metric = metric or saved.get("metric")
    if not metric:
        raise UserError(str(path), "--metric", f"no {SPEC_FILE} here to read the searched metric from",
                        fix="pass --metric and --mode")
    return metric, mode or saved.get("mode") or "max"


def _load_experiment(path: Path) -> Any:
    """`tune_lip.analysis.load` with a one-line error for a missing or empty experiment."""
    from tune_lip.analysis import load

    if not path.is_dir():
        raise UserError(str(path), None, "no such experiment directory", fix="pass tune_lip_results/<name>")
    df = load(path)
    if df.empty:
        raise UserError(str(path), None, "the experiment has no results yet", fix="wait for trials to report")
    return df


def _analyze(args: argparse.Namespace, write: Any, **options: Any) -> tuple[dict[str, Any] | None, Path]:
    """Load the experiment, run one ``write_*_report`` into ``--out`` and print it as ``--json``.

    Returns (report, plots folder); the report is None when it was printed as JSON already.
    """
    path = Path(args.experiment)
    df = _load_experiment(path)
    out = Path(args.out) if args.out else path / "plots"
    try:
        report = write(df, out_dir=out, title=path.name, **options)
    except (ValueError, KeyError) as exc:
        raise UserError(str(path), None, str(exc).split("\n")[0]) from None
    if isinstance(report, dict):   # what produced the experiment travels with its analysis
        from tune_lip.analysis.provenance import read_provenance

        report["provenance"] = read_provenance(path)
    if args.json:
        print(json.dumps(report, indent=2))
        return None, out
    return report, out


def cmd_analyze_lr_scaling(args: argparse.Namespace) -> int:
    from tune_lip.analysis import write_lr_scaling_report

    metric, mode = _experiment_metric(Path(args.experiment), args.metric, args.mode)
    by = args.by.split(",") if args.by else None
    options: dict[str, Any] = {"use": args.use}
    if args.min_trials is not None:   # else fit_lr_scaling's default (MIN_TRIALS)
        options["min_trials"] = args.min_trials
    if args.include_stopped:
        options["include_stopped"] = True
    report, out = _analyze(args, write_lr_scaling_report, metric=metric, mode=mode, by=by, **options)
    if report is not None:
        by = by or report.get("by")   # a search whose budget varies is fitted per budget
        for name, summary in report["summaries"].items():
            print(summary if by is None else f"[{name}]\n{summary}\n")
        for name, why in report["errors"].items():
            print(f"no fit: {why}" if by is None else f"[{name}] no fit: {why}")
        print(f"\nplots: {out}/ ({len(report['plots'])} files)")
    return 0


def cmd_analyze_regimes(args: argparse.Namespace) -> int:
    from tune_lip.analysis import write_regime_report

    report, out = _analyze(args, write_regime_report, elr=args.elr, num_classes=args.num_classes)
    if report is not None:
        print(f"{report['summary']}\n\nplots: {out}/ ({len(report['plots'])} files)")
    return 0


# The axes a scaling-rules search compares along, in order of preference, and the run the
# others should match: the smallest batch size; for SVAG the largest l (closest to the SDE).
_RULE_AXES = {"dataset.batch_size": "smallest", "gradient.l": "largest"}


def _varied_keys(path: Path) -> dict[str, tuple[Any, ...]]:
    """Grid keys (not the seed) the experiment's search varied, with their values."""
    from tune_lip.tune.launch import stored_spec
    from tune_lip.tune.spec import Grid

    try:
        spec, _ = stored_spec(str(path))
    except UserError:
        return {}
    return {k: d.values for k, d in spec.domains().items()
            if isinstance(d, Grid) and len(d.values) > 1 and k.split(".")[-1] != "seed"}


def cmd_analyze_scaling_rule(args: argparse.Namespace) -> int:
    from tune_lip.analysis import write_scaling_rule_report

    path = Path(args.experiment)
    metric, mode = _experiment_metric(path, args.metric, args.mode)
    axis, reference = args.axis, "smallest"
    if axis is None:   # the numeric key the search varied: batch size, else SVAG's l
        varied = _varied_keys(path)
        numeric = [k for k, values in varied.items()
                   if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)]
        axis = next((k for k in _RULE_AXES if k in numeric), numeric[0] if numeric else None)
        if axis is None and varied:
            print(f"no check: the search varied no numeric key to compare along (it varied "
                  f"{', '.join(varied)}); pass --axis KEY, or compare with tune-lip results {path}")
            return 0
        axis = axis or "dataset.batch_size"
        reference = _RULE_AXES.get(axis, "smallest")
    report, out = _analyze(args, write_scaling_rule_report, metric=metric, mode=mode, batch_size=axis,
                           reference=reference, time=args.time, pool_seeds=args.pool_seeds)
    if report is not None:
        print(f"{report['summary']}\n\nplots: {out}/ ({len(report['plots'])} files)")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from tune_lip.analysis.provenance import describe as describe_provenance
    from tune_lip.analysis.provenance import read_provenance
    from tune_lip.analysis.results import config_column, json_cells, load, write_results

    path = Path(args.path)
    saved = _saved_spec(path)   # rank by the searched metric unless told otherwise
    df = load(path)
    per = _per_keys(args.per, saved, path)
    missing = [k for k in per if args.per is not None and config_column(k) not in df]
    if missing:
        keys = sorted(c.removeprefix("config/").replace("/", ".") for c in df.columns if c.startswith("config/"))
        raise UserError(str(path), "--per", f"no config key {missing[0]!r} in these results",
                        fix=f"use config keys such as {', '.join(keys[:6])}")
    print(_summary(path, metric=args.metric or saved.get("metric"), mode=args.mode or saved.get("mode") or "max",
                   top=args.top, df=df, per=per))
    print("\n".join(describe_provenance(read_provenance(path), df)))   # what produced it
    exports = ((args.csv, lambda target: json_cells(df).to_csv(target, index=False)),  # lists as JSON text
               (args.parquet, lambda target: write_results(df, target)))  # load(target) reads it back
    for target, _ in exports:
        if target and Path(target).exists() and not args.force:
            raise UserError(str(target), None, "exists already", fix="choose another file or pass --force")
    for target, write in exports:
        if target:
            write(target)
            print(f"wrote {target} ({len(df)} rows)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tune-lip", description="Training-regime studies on Ray Tune.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="run a search space on Ray Tune")
    p.add_argument("space", nargs="?", help="a shipped space name (see --list) or a YAML file")
    p.add_argument("--list", action="store_true", help="list the shipped search spaces")
    p.add_argument("--name", help="experiment name (default: <space>-<timestamp>)")
    p.add_argument("--storage-path", help="where experiments live (default: ./tune_lip_results)")
    p.add_argument("--address", help="Ray address: 'auto' on a cluster node; default: a private local Ray")
    p.add_argument("--num-samples", type=int, help="override num_samples (per grid point)")
    p.add_argument("--budget", help="override the budget, e.g. steps=200 or epochs=3; several: steps=250,1000,4000")
    p.add_argument("--replicates", type=int, help="override replicates (seeds per sampled config)")
    p.add_argument("--resume", nargs="?", const=True, metavar="NAME",
                   help="continue the killed search NAME (its stored spec; SPACE is then optional)")
    p.add_argument("--resources", help="override every trial's resources, e.g. cpu=1 (a GPU space on the CPU) "
                   "or \"{cpu: 1, gpu: 0.5}\"")
    p.add_argument("--pending-timeout", type=float, metavar="SECONDS",
                   help="stop the search when trials wait this long for resources with none running "
                   "(default: the space's pending_timeout_seconds, 900)")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (Ray's callback)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow (Ray's callback)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("demo", help="a few-minute AOL-MLP search on the bundled digits data, with plots")
    p.add_argument("--storage-path", default="tune_lip_results")
    p.add_argument("--quick", action="store_true", help="a smaller search (for tests)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--seed", type=int, help="the first seed (default 0; the second replicate takes the next)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("calibrate", help="time training steps per batch size on this accelerator")
    p.add_argument("space", help="search space whose models and batch sizes to time")
    p.add_argument("--batch-sizes", help="comma-separated, default: the space's grid")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--accelerator", help="name to record (default: detected, e.g. A100 or CPU)")
    p.add_argument("--out", help="table path or URI (default: tune_lip_results/calibration.parquet)")
    p.add_argument("--cluster", action="store_true",
                   help="time on every accelerator type of the Ray cluster (one pinned task per type)")
    p.add_argument("--address", help="Ray address with --cluster (default: auto)")
    p.add_argument("--types", help="with --cluster: these accelerator types, e.g. A100,A10G,T4 (default: the "
                   "types with a live node or in ray up's config; the autoscaler starts missing ones)")
    p.add_argument("--timeout", type=float, default=1800, help="with --cluster: give up after this many "
                   "seconds (default 1800)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("placement", help="what each grid point's trials ask Ray for: GPU share, types, memory")
    p.add_argument("space", help="a shipped space name or a YAML file")
    p.add_argument("--address", help="join this Ray cluster to see its GPU types ('auto' on a cluster node)")
    p.set_defaults(func=cmd_placement)

    p = sub.add_parser("rehearse", help="run a search on a local multi-node Ray with fake GPU types")
    p.add_argument("space", help="a shipped space name or a YAML file")
    p.add_argument("--nodes", default="A100:2,A10G:1,T4:1", help="TYPE:GPUS per fake worker node "
                   "(default A100:2,A10G:1,T4:1: cluster.yaml's types)")
    p.add_argument("--cpus-per-node", type=int, default=2, help="CPUs of each fake worker node (default 2)")
    p.add_argument("--kill", metavar="TYPE", help="remove this type's node once a trial there has checkpointed")
    p.add_argument("--name", help="experiment name (default: <space>-<timestamp>)")
    p.add_argument("--storage-path", default="tune_lip_results", help="where experiments live")
    p.add_argument("--num-samples", type=int, help="override num_samples (per grid point)")
    p.add_argument("--budget", help="override the budget, e.g. steps=200")
    p.set_defaults(func=cmd_rehearse)

    p = sub.add_parser("analyze", help="fit scaling laws and regime boundaries of an experiment")
    kinds = p.add_subparsers(dest="analysis", required=True)
    q = kinds.add_parser("lr-scaling", help="best LR per batch size and the power law lr* ~ b^alpha")
    q.add_argument("experiment", help="experiment directory, e.g. tune_lip_results/demo-20260101-120000")
    q.add_argument("--metric", help="metric to optimise (default: the one the search optimised)")
    q.add_argument("--mode", choices=("max", "min"), help="default: the search's mode")
    q.add_argument("--by", help="fit separately per value of these config keys, e.g. budget.steps")
    q.add_argument("--use", choices=("last", "best"), default="last", help="each trial's last or best report")
    q.add_argument("--min-trials", type=int,
                   help="finished trials needed per batch size (default: the fit's, 4)")
    q.add_argument("--include-stopped", action="store_true", help="also count trials ASHA stopped early")
    q.add_argument("--out", help="folder for the plots (default: EXPERIMENT/plots)")
    q.add_argument("--json", action="store_true", help="print the fits as JSON")
    q.set_defaults(func=cmd_analyze_lr_scaling)
    q = kinds.add_parser("regimes", help="regime of every trial and the ELR thresholds between regimes")
    q.add_argument("experiment", help="experiment directory of a sphere search")
    q.add_argument("--elr", default="optimizer.elr", help="config key of the ELR (default optimizer.elr)")
    q.add_argument("--num-classes", type=int, default=10, help="classes, for the chance level ln C (default 10)")
    q.add_argument("--out", help="folder for the plots (default: EXPERIMENT/plots)")
    q.add_argument("--json", action="store_true", help="print the thresholds as JSON")
    q.set_defaults(func=cmd_analyze_regimes)
    q = kinds.add_parser("scaling-rule", help="where a batch-size (or SVAG l) scaling rule stops holding")
    q.add_argument("experiment", help="experiment directory of a scaling search")
    q.add_argument("--metric", help="metric to compare (default: the one the search optimised)")
    q.add_argument("--mode", choices=("max", "min"), help="default: the search's mode")
    q.add_argument("--axis", help="config key compared across trials (default: the numeric key the search "
                   "varied, dataset.batch_size first, then SVAG's gradient.l, whose reference is the largest l)")
    q.add_argument("--time", default="sde_time", help="the progress metric curves are aligned on (default sde_time)")
    q.add_argument("--pool-seeds", action=argparse.BooleanOptionalAction, default=True,
                   help="pool the seed variance across batch sizes (default; --no-pool-seeds: each its own)")
    q.add_argument("--out", help="folder for the plots (default: EXPERIMENT/plots)")
    q.add_argument("--json", action="store_true", help="print the check as JSON")
    q.set_defaults(func=cmd_analyze_scaling_rule)

    p = sub.add_parser("results", help="summarise an experiment; export CSV/Parquet")
    p.add_argument("path", help="experiment directory, e.g. tune_lip_results/demo-20260101-120000")
    p.add_argument("--metric", help="rank trials by this metric (default: the one the search optimised)")
    p.add_argument("--mode", choices=("max", "min"), help="default: the search's mode")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--per", help="also the best trial per group of these config keys, e.g. dataset.batch_size,"
                                 "budget.steps (default: the keys the search compared within; none: no table)")
    p.add_argument("--csv", help="write all reports to this CSV file")
    p.add_argument("--parquet", help="write all reports to this Parquet file")
    p.add_argument("--force", action="store_true", help="overwrite existing export files")
    p.set_defaults(func=cmd_results)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"tune-lip: error: {exc.line()}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
