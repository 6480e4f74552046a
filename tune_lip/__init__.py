"""tune-lip: training-regime studies as Ray Tune searches. The layers, bottom to top:

errors, search_spaces, analysis -> data -> nn -> studies -> cluster -> trainables -> tune -> demo -> cli.
A module imports only from its own layer or the layers below (docs/ARCHITECTURE.md;
tests/test_architecture.py checks it). Modules that moved into the layer folders stay
importable under their old names (`_MOVED`), so experiments pickled before the move resume.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

# Bottom to top; a module's layer is the first name after ``tune_lip.`` in its own name.
LAYERS = ("errors", "search_spaces", "analysis", "data", "nn", "studies", "cluster", "trainables",
          "tune", "demo", "cli")

# old module name -> where it lives now (issue 12: the flat package became layer folders).
# ``tuner.pkl`` of an older experiment pickles e.g. tune_lip.callbacks.ParquetResultsCallback.
_MOVED = {
    "tune_lip.models": "tune_lip.nn.models",
    "tune_lip.losses": "tune_lip.nn.losses",
    "tune_lip.optim": "tune_lip.nn.optim",
    "tune_lip.sam": "tune_lip.nn.sam",
    "tune_lip.scaling_rules": "tune_lip.nn.scaling_rules",
    "tune_lip.augment": "tune_lip.data.augment",
    "tune_lip.sampling": "tune_lip.data.sampling",
    "tune_lip.budget": "tune_lip.studies.budget",
    "tune_lip.train_loop": "tune_lip.studies.lipschitz",
    "tune_lip.sphere": "tune_lip.studies.sphere",
    "tune_lip.scaling": "tune_lip.studies.scaling",
    "tune_lip.nqm": "tune_lip.studies.nqm",
    "tune_lip.placement": "tune_lip.cluster.placement",
    "tune_lip.calibrate": "tune_lip.cluster.calibrate",
    "tune_lip.spec": "tune_lip.tune.spec",
    "tune_lip.launch": "tune_lip.tune.launch",
    "tune_lip.searchers": "tune_lip.tune.searchers",
    "tune_lip.schedulers": "tune_lip.tune.schedulers",
    "tune_lip.callbacks": "tune_lip.tune.callbacks",
    "tune_lip.pending": "tune_lip.tune.pending",
    "tune_lip.boundary_search": "tune_lip.tune.boundary_search",
    "tune_lip.rehearse": "tune_lip.tune.rehearse",
}   # tune_lip.data and tune_lip.cluster are packages now; their __init__ re-exports the old names


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module it moved to (the same module object)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name not in _MOVED and not any(name.startswith(old + ".") for old in _MOVED):
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        old = next(o for o in _MOVED if module.__name__ == o or module.__name__.startswith(o + "."))
        # The import system returns what sys.modules holds after this: the moved module itself.
        sys.modules[module.__name__] = importlib.import_module(_MOVED[old] + module.__name__[len(old):])


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())   # first: a moved package's submodules must not load twice
