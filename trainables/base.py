"""`SlicedTrainable`: the one Ray Tune adapter every study's Trainable is made of.

A study supplies a Ray-free loop (``make_loop(config)``) with ``cfg.reports``,
``cfg.to_dict()``, ``total_steps`` (None for a wall-clock budget, then ``wall_budget`` in
seconds and ``train_for_seconds``), ``steps``, ``train_for(steps)``, ``evaluate()``,
``finished``, ``state_dict()`` and ``load_state_dict()`` (optionally ``final_metrics()``
and ``evaluate_test()``, added to the last report). This class trains it in
``reports`` equal slices of the budget (with a wsd schedule's ``branch_at``: one report per branch
point and one at the end, each the annealed model of a forked cooldown,
`tune_lip.studies.loop.train_to_branch`; ``reports`` is then unused): each ``step()`` trains one slice, evaluates (the
validation metrics, ``val_*``) and returns the metrics (with ``budget_fraction``, the share of the
trial's own budget done: ASHA's progress where a search's budget varies), the last one (or a divergence) with
``done=True`` and the test metrics (``test_*``): computed once, after every decision a searcher
or scheduler could take on the trial (a trial a scheduler stops early has none). Every report also
names the ``accelerator`` type the trial ran on, its ``device`` (``cpu``, ``cuda:0 (<GPU name>)``),
whether its budget is ``hardware_dependent`` (a wall-clock budget) and, for a study with a data
set, ``data_sha256`` (`tune_lip.data.ImageData.fingerprint`). Checkpoints hold the
loop's whole state plus the resolved config (``config.json``, readable without torch), so a
restored trial continues exactly; ``reset_config`` rebuilds the loop so Tune reuses actors.

An experiment written before the validation split searched a metric every report then carried
(``certified_acc``, ``test_acc``: `tune_lip.studies.registry.Study.legacy_metrics`). It resumes
with ``trainable_for(study, legacy=True)``: trials train without a split (``dataset.validation:
0``, as they began) and report the test metrics at every report under their old names, so its
pickled searcher and scheduler see what they were built for. New experiments never do.

Example:
    >>> class MyTrainable(SlicedTrainable):                                  # doctest: +SKIP
    ...     def make_loop(self, config):
    ...         return MyLoop(MyConfig.from_dict(config))
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from ray import tune

__all__ = ["SlicedTrainable", "StudyTrainable", "trainable_for"]

STATE_FILE = "loop_state.pt"
CONFIG_FILE = "config.json"


def _quiet_termination(unraisable: Any) -> None:
    """Ray ends a finished trial's actor with SIGTERM, whose handler raises SystemExit wherever
    the worker is; inside a garbage-collection callback Python can only print that as an
    "Exception ignored" traceback, which Ray relays to the user's terminal. It is no error."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def _device_name(device: Any) -> str:
    """``cpu``, or e.g. ``cuda:0 (NVIDIA H200)``: where the trial's loop computes."""
    device = torch.device(device)
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _without_split(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``dataset.validation: 0`` unless it names a split (a pre-split trial's)."""
    dataset = config.get("dataset")
    dataset = {"name": dataset} if isinstance(dataset, str) else dict(dataset or {})
    dataset.setdefault("validation", 0)
    return {**config, "dataset": dataset}


def _legacy_names(metrics: dict[str, Any], legacy: dict[str, str]) -> dict[str, Any]:
    """Test metrics under the names a pre-split experiment reported them (``test_certified_acc@0.1``
    -> ``certified_acc@0.1``); ``legacy``: old name -> today's."""
    old = {new: name for name, new in legacy.items()}
    out = {}
    for key, value in metrics.items():
        base, at, eps = key.partition("@")
        out[old.get(base, base) + at + eps] = value
    return out


class SlicedTrainable(tune.Trainable):
    """Trains ``make_loop(config)`` in ``reports`` slices; see the module docstring."""

    # Resuming an experiment written before the validation split: see the module docstring.
    legacy_metrics: dict[str, str] | None = None

    def make_loop(self, config: dict[str, Any]) -> Any:
        raise NotImplementedError

    def setup(self, config: dict[str, Any]) -> None:
        from tune_lip.cluster.placement import node_accelerator

        if sys.unraisablehook is sys.__unraisablehook__:   # this process is a Ray worker
            sys.unraisablehook = _quiet_termination
        self.loop = self.make_loop(_without_split(config) if self.legacy_metrics else config)
        self.reports_done = 0
        self.charged_steps = 0   # wsd branching: main line plus every cooldown so far
        if not hasattr(self, "accelerator"):  # once per actor: a reused actor stays on its node
            self.accelerator = node_accelerator()  # the type the scheduler placed this trial on
        budget = getattr(self.loop.cfg, "budget", None)
        self.hardware_dependent = bool(budget is not None and budget.hardware_dependent)
        self.device = _device_name(getattr(self.loop, "device", "cpu"))
        data: Any = getattr(self.loop, "data", None)   # provenance: the data this trial read
        self.data_sha256 = data.fingerprint() if hasattr(data, "fingerprint") else None

    def _branch_at(self) -> tuple[float, ...]:
        """The wsd schedule's ``branch_at`` fractions, if the loop's config has any."""
        return tuple(getattr(getattr(self.loop.cfg, "schedule", None), "branch_at", ()) or ())

    def _branched_step(self, k: int) -> tuple[dict[str, Any], bool]:
        """Report ``k`` of a wsd-branched trial: the annealed model at the k-th horizon."""
        from tune_lip.studies.budget import branch_horizons
        from tune_lip.studies.loop import train_to_branch

        loop = self.loop
        if loop.total_steps is None:
            raise ValueError("schedule.branch_at needs a budget in steps, epochs or examples (not wall_hours)")
        horizons = branch_horizons(self._branch_at(), loop.total_steps)
        final = k >= len(horizons)
        metrics = train_to_branch(loop, horizons[k - 1], final=final)
        metrics["budget_fraction"] = round(horizons[k - 1] / loop.total_steps, 12)   # the annealed model's
        self.charged_steps += metrics.pop("charged")
        metrics["charged_steps"] = self.charged_steps
        return metrics, final or loop.finished

    def step(self) -> dict[str, Any]:
        loop, reports = self.loop, self.loop.cfg.reports
        k = self.reports_done + 1
        if self._branch_at():   # wsd branching: reports at the branch points, each an annealed model
            metrics, done = self._branched_step(k)
        else:
            if loop.total_steps is not None:
                metrics = loop.train_for(math.ceil(loop.total_steps * k / reports) - loop.steps)
                metrics["budget_fraction"] = round(loop.steps / loop.total_steps, 12)
            else:  # wall-clock budget: equal slices of wall time
                metrics = loop.train_for_seconds(loop.wall_budget * k / reports - loop.wall_seconds)
                metrics["budget_fraction"] = round(min(loop.wall_seconds / loop.wall_budget, 1.0), 12)
            metrics.update(loop.evaluate())
            done = loop.finished or k >= reports
        if self.legacy_metrics:    # a pre-split experiment: test metrics at every report, old names
            metrics.update(_legacy_names(loop.evaluate_test(), self.legacy_metrics))
        elif done and hasattr(loop, "evaluate_test"):
            metrics.update(loop.evaluate_test())   # once: after every decision on this trial
        self.reports_done = k
        metrics["accelerator"] = self.accelerator
        metrics["hardware_dependent"] = self.hardware_dependent
        metrics["device"] = self.device
        if self.data_sha256 is not None:
            metrics["data_sha256"] = self.data_sha256
        metrics["done"] = done
        if metrics["done"] and hasattr(loop, "final_metrics"):
            metrics.update(loop.final_metrics())   # what only the whole run tells, e.g. the sphere's regime
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        path = Path(checkpoint_dir)
        torch.save({"loop": self.loop.state_dict(), "reports_done": self.reports_done,
                    "charged_steps": self.charged_steps}, path / STATE_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(self.loop.cfg.to_dict(), indent=2))

    def load_checkpoint(self, checkpoint_dir: str) -> None:  # type: ignore[override]  # Tune passes the dir we saved to
        device = getattr(self.loop, "device", "cpu")
        state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=device, weights_only=False)
        self.loop.load_state_dict(state["loop"])
        self.reports_done = int(state["reports_done"])
        self.charged_steps = int(state.get("charged_steps", 0))

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)
        self.config = new_config
        return True


class StudyTrainable(SlicedTrainable):
    """Trains the loop of the registered study named by the class attribute ``study``."""

    study: str = ""

    def make_loop(self, config: dict[str, Any]) -> Any:
        from tune_lip.studies.registry import get

        return get(self.study).loop(config)


def trainable_for(study: str, *, legacy: bool = False) -> type[SlicedTrainable]:
    """The Trainable of the registered study ``study``: the public one of `tune_lip.trainables`
    for a shipped study (its import path is what an experiment's ``tuner.pkl`` records), else a
    `StudyTrainable` made for it (Ray sends such a class to its workers by value, and a worker
    finds the study in its own registry, through the same entry point).

    ``legacy``: for resuming an experiment written before the validation split (module
    docstring): a subclass of the same name (Tune restores trials by name) that reports as then.
    """
    import tune_lip.trainables as public
    from tune_lip.studies.registry import get

    found: type[SlicedTrainable] | None = None
    for name in public.__all__:
        cls = getattr(public, name)
        if getattr(cls, "study", None) == study:
            found = cls
            break
    if found is None:
        found = type(f"{study.title().replace('_', '')}Trainable", (StudyTrainable,), {"study": study})
    if legacy:
        found = type(found.__name__, (found,), {"legacy_metrics": dict(get(study).legacy_metrics)})
    return found
