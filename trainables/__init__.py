"""The studies' Ray Tune Trainables: the public API for your own `ray.tune.Tuner`.

Each Trainable takes a trial's config as a nested dict (the keys of its study's config
class, e.g. `tune_lip.studies.lipschitz.LipschitzConfig`) and reports the DESIGN.md metrics; bring
your own searcher, scheduler, resources and callbacks (README.md, "Python API").

- `LipschitzTrainable`: 1-Lipschitz networks (AOL, CPL), certified accuracy.
- `SphereTrainable`: scale-invariant networks on the sphere at a fixed effective LR.
- `ScalingTrainable`: LR scaling rules, SVAG and NGD, gradient-noise statistics.
- `NQMTrainable`: the noisy quadratic model (exact expected loss for SGD).
- `StudyTrainable`: trains a registered study's loop (``study = "name"``; README "Your own study").
- `SlicedTrainable`: the base class; subclass it with ``make_loop(config)`` for a loop of your own.

May import: Ray Tune, the studies and the cluster layer (which GPU type a trial landed on);
never the Tune orchestration above it (`tune_lip.tune`).

The classes are imported on first use (PEP 562), so ``import tune_lip.trainables`` costs
nothing; the first of them imports torch and Ray (about 3-5 s on a 2-core machine).

Example:
    >>> import tune_lip.trainables
    >>> sorted(tune_lip.trainables.__all__)[:2]
    ['LipschitzTrainable', 'NQMTrainable']
    >>> from tune_lip.trainables import LipschitzTrainable                  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tune_lip.trainables.base import SlicedTrainable, StudyTrainable
    from tune_lip.trainables.lipschitz import LipschitzTrainable
    from tune_lip.trainables.nqm import NQMTrainable
    from tune_lip.trainables.scaling import ScalingTrainable
    from tune_lip.trainables.sphere import SphereTrainable

__all__ = ["LipschitzTrainable", "NQMTrainable", "ScalingTrainable", "SlicedTrainable", "SphereTrainable",
           "StudyTrainable"]

# public name -> the submodule that defines it
_MODULES = {
    "LipschitzTrainable": "lipschitz",
    "NQMTrainable": "nqm",
    "ScalingTrainable": "scaling",
    "SlicedTrainable": "base",
    "SphereTrainable": "sphere",
    "StudyTrainable": "base",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tune_lip.trainables.{_MODULES[name]}"), name)
    globals()[name] = value   # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
