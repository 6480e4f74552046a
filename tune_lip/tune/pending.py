"""Never wait silently for ever: stop a search whose trials wait for resources nobody provides.

Ray Tune leaves a trial PENDING for as long as no node can take it: an autoscaler that never
delivers a node type, or a GPU type lost for good, makes a search hang without a word. A
`PendingTimeout` watches the trials from the driver; when trials have been PENDING with no
trial RUNNING for ``seconds``, it stops the experiment (Tune's ``stop_all``), which keeps every
finished result, and records why. `run_search` then tells the user, in one line, what the
waiting trials asked for and what the cluster has.

While any trial runs, waiting trials are a queue, not a hang, and the clock does not run.

Tune calls ``on_step_end`` with every trial of the experiment, at every step of its loop. The
watchdog looks only at the trials added since its last look and at those not yet finished
(Tune's list only grows, in order), so a step costs O(unfinished trials), not O(all trials).

Example:
    >>> watchdog = PendingTimeout("tune_lip_results/x", seconds=600)
    >>> watchdog.stop_all(), fired("tune_lip_results/x") is None
    (False, True)
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from tune_lip.cluster.placement import describe_resources

__all__ = ["PendingTimeout", "fired"]

# experiment -> why it was stopped. The restored copy of a watchdog (after `--resume`) runs in
# the same driver process as `run_search`, which reads this after `Tuner.fit`.
_FIRED: dict[str, str] = {}
_FINISHED = ("TERMINATED", "ERROR")   # Ray's Trial statuses a trial never leaves


def fired(experiment: str) -> str | None:
    """Why the watchdog of ``experiment`` stopped it in this process, or None."""
    return _FIRED.get(str(experiment))


def clear(experiment: str) -> None:
    _FIRED.pop(str(experiment), None)


class PendingTimeout(Callback, Stopper):
    """A Tune callback (it watches trial states) and stopper (it ends the experiment) in one.

    Pass the same object as ``RunConfig(callbacks=[w], stop=w)``.
    """

    def __init__(self, experiment: str, *, seconds: float, clock: Any = time.monotonic) -> None:
        self.experiment = str(experiment)
        self.seconds = float(seconds)
        self.clock = clock
        self._since: float | None = None
        self._stop = False
        self._seen = 0                       # trials[:_seen] were looked at before
        self._open: dict[int, Any] = {}      # id(trial) -> trial, for those not finished when last seen

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        seen = getattr(self, "_seen", 0)     # (a watchdog pickled before these existed)
        if not hasattr(self, "_open") or seen > len(trials):
            seen, self._open = 0, {}         # a new list of trials (a resumed experiment)
        for trial in trials[seen:]:
            self._open[id(trial)] = trial
        self._seen = len(trials)
        for key in [k for k, t in self._open.items() if t.status in _FINISHED]:
            del self._open[key]
        pending = [t for t in self._open.values() if t.status == "PENDING"]
        if not pending or any(t.status == "RUNNING" for t in self._open.values()):
            self._since = None
            return
        now = self.clock()
        self._since = now if self._since is None else self._since
        if now - self._since >= self.seconds and not self._stop:
            self._stop = True
            asked = sorted({_describe(t) for t in pending})
            _FIRED[self.experiment] = (f"{len(pending)} trial(s) waited {self.seconds:g} s for resources with no "
                                       f"trial running (each asks for {' or '.join(asked)}; the cluster has "
                                       f"{_cluster()})")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A failed trial that Ray retries waits again (Ray moves it to the end of its list).
        if hasattr(self, "_open"):
            self._open[id(trial)] = trial

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self._stop

    def __getstate__(self) -> dict[str, Any]:   # a resumed search starts its clock (and its list) afresh
        return {**self.__dict__, "_since": None, "_stop": False, "clock": None, "_seen": 0, "_open": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.clock = time.monotonic


def _describe(trial: Any) -> str:
    factory = getattr(trial, "placement_group_factory", None)
    bundles = getattr(factory, "bundles", None) or [{}]
    return "{" + describe_resources(dict(sorted(bundles[0].items()))) + "}"


def _cluster() -> str:
    try:
        import ray

        total = ray.cluster_resources()
    except Exception:  # noqa: BLE001  # only for the message: never hide the timeout behind it
        return "unknown resources"
    shown = {k: v for k, v in sorted(total.items()) if k in ("CPU", "GPU") or k.startswith("accelerator_type:")}
    return describe_resources(shown) or "no resources"
