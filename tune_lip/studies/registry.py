"""The study registry: every study is a plug-in that declares itself and registers here.

A study module ends with one `register(Study(...))`: its name (``study:`` in the YAML), its
typed config class (``from_dict(raw)`` parses the trial config and raises `ConfigError`
naming the key; ``to_dict()`` writes it back), its loop (trial config -> a Ray-free loop,
`tune_lip.studies.loop`), the metric names a search may optimise (reported at every report:
for an image study validation metrics, never test metrics) and its default model. Nothing
else in tune-lip names a study: the spec checks ``metric`` against `metrics`, the launcher
builds the Trainable from `loop`.

The four shipped studies are imported on the first look-up. Another package adds a study
through the ``tune_lip.studies`` entry-point group (``toy = my_package.toy_study`` in its
``pyproject.toml``'s ``[project.entry-points."tune_lip.studies"]``): importing the named
module registers it, in the driver and in every Ray worker alike.

Example:
    >>> sorted(studies())
    ['lipschitz', 'nqm', 'scaling', 'sphere']
    >>> get("sphere").default_model
    'convnet_si'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

__all__ = ["Study", "register", "get", "studies", "study_metrics", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "tune_lip.studies"
_BUILTIN = ("tune_lip.studies.lipschitz", "tune_lip.studies.sphere", "tune_lip.studies.scaling",
            "tune_lip.studies.nqm")


@dataclass(frozen=True)
class Study:
    """A study as the generic code sees it; see the module docstring."""

    name: str                             # the YAML's ``study:``
    config: Any                           # a class: from_dict(raw) -> config (ConfigError naming the key)
    loop: Callable[[dict[str, Any]], Any]  # a trial's config (nested dict) -> its Ray-free loop
    metrics: frozenset[str]               # what every report carries; the spec's ``metric`` is one of them
    default_model: str | None = None      # the model a config that names none trains
    # config -> what a calibrated step time depends on (model, options, input), for a
    # ``reference_hours`` budget (`tune_lip.cluster.calibrate`); None: the study has no such budget
    step_key: Callable[[Any], str] | None = None
    # Metrics every report carried before the validation split (old name -> today's test_* name,
    # reported once at the end): an experiment that searched one resumes as it began
    # (`tune_lip.trainables.base`); a new search may not name them.
    legacy_metrics: Mapping[str, str] = field(default_factory=dict)


_STUDIES: dict[str, Study] = {}
_loaded = False


def register(study: Study) -> Study:
    """Add ``study`` (a module registers its study once, when imported); returns it."""
    known = _STUDIES.get(study.name)
    if known is not None and known.config.__module__ != study.config.__module__:
        raise ValueError(f"two studies are named {study.name!r}: {known.config.__module__} and "
                         f"{study.config.__module__}; rename one")
    _STUDIES[study.name] = study
    return study


def _load() -> None:
    """Import the shipped studies and the entry-point plug-ins (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _load_entry(entry)


def _load_entry(entry: Any) -> None:
    loaded = entry.load()             # a module (registers itself on import) or a Study
    if isinstance(loaded, Study):
        register(loaded)


def _load_one(name: str) -> None:
    """Import only what registers the study ``name`` when it can be told from the name (a shipped
    study's module, or the plug-in whose entry point has that name); everything otherwise. A
    search imports one study, not all four (their imports cost seconds of a short search)."""
    if name in _STUDIES or _loaded:
        return
    builtin = f"tune_lip.studies.{name}"
    if builtin in _BUILTIN:
        importlib.import_module(builtin)
    else:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == name:
                _load_entry(entry)
    if name not in _STUDIES:
        _load()


def studies() -> dict[str, Study]:
    """Every registered study by name."""
    _load()
    return dict(_STUDIES)


def get(name: str) -> Study:
    """The study named ``name``; KeyError naming the known ones otherwise."""
    _load_one(name)
    try:
        return _STUDIES[name]
    except KeyError:
        raise KeyError(f"no study named {name!r}; known: {', '.join(sorted(_STUDIES))}") from None


class _StudyMetrics(Mapping[str, "set[str] | None"]):
    """Study name -> its metric names, loading a study when it is looked up (all on iteration)."""

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy

    def __getitem__(self, name: str) -> set[str] | None:
        try:
            s = get(name)
        except KeyError:
            raise KeyError(name) from None
        return set(s.metrics) | (set(s.legacy_metrics) if self.legacy else set())

    def __iter__(self) -> Iterator[str]:
        return iter(studies())

    def __len__(self) -> int:
        return len(studies())


def study_metrics(*, legacy: bool = False) -> Mapping[str, set[str] | None]:
    """Study names and their metric names, as `tune_lip.tune.spec.load_spec` wants them;
    ``legacy``: with the `Study.legacy_metrics` too (an experiment written before the split).
    A study is imported when it is looked up: checking one spec imports its study only."""
    return _StudyMetrics(legacy)
