"""Config sections and helpers every image study shares: model, data set, device, the data cache.

A study's typed config (`tune_lip.studies.lipschitz.LipschitzConfig`, ``SphereConfig``,
``ScalingConfig``) is built from these sections: ``model`` (a registered name plus its
constructor options) and ``dataset`` (a registered name, the batch size, the validation split
and loader options).
`_from_dict` and `_section` turn a trial's nested mapping into them and name the key at fault;
`config_to_dict` writes a resolved config back (saved with every checkpoint). `_dataset`
loads a data set once per process and device, so a reused Ray actor keeps it across trials;
`training_data` then holds the trial's validation split out of it.

Example:
    >>> cfg = _from_dict(DataConfig, {"name": "synthetic", "batch_size": 32, "num_train": 64},
    ...                  "dataset", free="options")
    >>> cfg.batch_size, cfg.options
    (32, {'num_train': 64})
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from tune_lip.data.datasets import (
    NORMALIZATIONS,
    SPLIT_RNGS,
    ImageData,
    check_validation,
    default_validation,
    load_dataset,
    normalize_data,
    split_validation,
)
from tune_lip.data.stream import PLACEMENTS, choose_placement
from tune_lip.errors import ConfigError
from tune_lip.nn.models import MODELS, model_options

__all__ = ["ModelConfig", "DataConfig", "config_to_dict", "pick_device", "training_data"]


def _from_dict(cls: Any, raw: Any, section: str, *, free: str | None = None) -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys go to field ``free`` or fail."""
    if raw is None:
        return cls()
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ValueError(f"{section} must be a mapping, got {raw!r}")
    names = {f.name for f in fields(cls)} - ({free} if free else set())
    known = {k: v for k, v in raw.items() if k in names}
    rest = {k: v for k, v in raw.items() if k not in names}
    if rest and free is None:
        raise ValueError(f"unknown {section} option {sorted(rest)[0]!r}; valid: {', '.join(sorted(names))}")
    return cls(**known, **({free: rest} if free else {}))


def _section(key: str, build: Any) -> Any:
    """Run ``build()``; a ValueError/TypeError becomes a ConfigError naming ``key``."""
    try:
        return build()
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, str(exc).split("\n")[0]) from None


def _model_config(raw: Any, default: str = "aol_mlp") -> ModelConfig:
    """The ``model`` section: a name or a mapping; ``default`` is the study's model when it names none."""
    if raw is None or isinstance(raw, (str, dict)):
        raw = {"name": default, **({"name": raw} if isinstance(raw, str) else (raw or {}))}
    cfg = _from_dict(ModelConfig, raw, "model", free="options")
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; valid models: {', '.join(sorted(MODELS))}")
    unknown = set(cfg.options) - set(model_options(cfg.name))
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} for model {cfg.name}; "
                         f"valid: {', '.join(model_options(cfg.name))}")
    return cfg


@dataclass(frozen=True)
class ModelConfig:
    name: str = "aol_mlp"
    options: dict[str, Any] = field(default_factory=dict)  # constructor options, e.g. width, depth


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    batch_size: int = 256       # examples per optimizer step
    data_dir: str = "data"      # where CIFAR-10/100 and converted npz files live
    download: bool = False      # let torchvision download CIFAR (never in tests or the demo)
    # Training images held out as the validation set (what searchers and schedulers see):
    # a count (int) or a fraction in (0, 1); None = 5,000 for cifar10/cifar100/generated,
    # 0.1 for the others (resolved on construction); 0 = no split, then no val_* metrics.
    validation: int | float | None = None
    split_seed: int = 0         # draws the validation split; not the training seed, so replicates share it
    # How split_seed draws it: "torch" (randperm, the first images) or "numpy" (SU's exact split:
    # np.random.seed(seed); shuffle; the last images; with split_seed 1111 SU's 5,000 images).
    split_rng: str = "torch"
    # Input normalisation on the device: "mean" = x/255 - mean (the Lipschitz code's centring),
    # "mean_std" = (x/255 - mean) / std.
    normalize: str = "mean"
    # Fixed channel means in [0, 1] (e.g. (0.491, 0.482, 0.447), Scaling Up Lipschitz Networks);
    # None = the training images' own (after the validation split).
    mean: tuple[float, ...] | None = None
    # Fixed channel stds in [0, 1] units, only with normalize: mean_std; None = the training images' own.
    std: tuple[float, ...] | None = None
    # Where the training images live: "device" (all of them, the fast path), "stream" (on the host,
    # each batch read ahead and copied over: for data larger than the device) or "auto" (device
    # when they fit with a margin; `tune_lip.data.stream.choose_placement`).
    placement: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)  # loader options, e.g. path for generated

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ConfigError("dataset.placement", f"unknown placement {self.placement!r}; "
                              f"valid: {', '.join(PLACEMENTS)}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"dataset.batch_size must be a positive integer, got {self.batch_size}")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        validation = default_validation(self.name) if self.validation is None else self.validation
        try:
            object.__setattr__(self, "validation", check_validation(validation))
        except ValueError as exc:
            raise ConfigError("dataset.validation", str(exc)) from None
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int):
            raise ConfigError("dataset.split_seed", f"must be an integer, got {self.split_seed!r}")
        if self.split_rng not in SPLIT_RNGS:
            raise ConfigError("dataset.split_rng", f"unknown {self.split_rng!r}; valid: {', '.join(SPLIT_RNGS)}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError("dataset.normalize", f"unknown normalisation {self.normalize!r}; "
                              f"valid: {', '.join(NORMALIZATIONS)}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is None:
                continue
            if (isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) == 0
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ConfigError(f"dataset.{key}", f"must be a list of numbers (one per channel), got {value!r}")
            object.__setattr__(self, key, tuple(float(v) for v in value))
        if self.mean is not None and not all(0.0 <= m <= 1.0 for m in self.mean):
            raise ConfigError("dataset.mean", f"channel means are in [0, 1] (pixel / 255), got {list(self.mean)}")
        if self.std is not None:
            if self.normalize != "mean_std":
                raise ConfigError("dataset.std", "a fixed std needs normalize: mean_std "
                                  "(normalize: mean divides by nothing)")
            if not all(s > 0 for s in self.std):
                raise ConfigError("dataset.std", f"channel stds must be > 0, got {list(self.std)}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A study's resolved config as the JSON-able mapping its ``from_dict`` reads back.

    The free ``options`` of ``model`` and ``dataset`` go back into their section, the budget
    into its YAML form. Saved with every checkpoint.
    """
    out = asdict(cfg)
    for section in ("model", "dataset"):
        if isinstance(out.get(section), dict) and "options" in out[section]:
            out[section].update(out[section].pop("options"))
    out["budget"] = cfg.budget.to_dict()
    return json.loads(json.dumps(out, default=list))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


_DATA_CACHE: dict[str, ImageData] = {}
_log = logging.getLogger(__name__)


def _dataset(cfg: DataConfig, device: torch.device) -> ImageData:
    """Load once per process and device (a reused Ray actor keeps it across trials), placed by
    ``cfg.placement`` (`tune_lip.data.stream.choose_placement`); the choice is logged in one line."""
    key = json.dumps([cfg.name, cfg.data_dir, cfg.options, str(device), cfg.placement], sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        data = load_dataset(cfg.name, data_dir=cfg.data_dir, download=cfg.download, **cfg.options)
        _DATA_CACHE.clear()  # keep one data set on the device, not one per config ever seen
        placement, why = choose_placement(cfg.placement, data, device)
        # Streaming chosen for the user is the slower path: say so where default logging shows it.
        _log.log(logging.WARNING if placement == "stream" and cfg.placement == "auto" else logging.INFO, why)
        _DATA_CACHE[key] = data.to(device, placement)
    return _DATA_CACHE[key]


def training_data(cfg: DataConfig, device: torch.device, data: ImageData | None = None) -> ImageData:
    """A trial's data on ``device``: ``data`` (else `_dataset`'s load of ``cfg``) with ``cfg.validation``
    training images held out by ``cfg.split_seed`` (`tune_lip.data.datasets.split_validation`);
    ``data`` already split is used as given. A size that leaves nothing to train on is a
    ConfigError naming ``dataset.validation``. Then its ``mean`` and ``std`` are set by
    ``cfg.normalize`` (`tune_lip.data.datasets.normalize_data`): fixed ``cfg.mean``/``cfg.std`` or
    the training images' own; a length that does not match the channels is a ConfigError."""
    if data is not None:   # given data keeps its placement unless the config names one
        data = data.to(device, None if cfg.placement == "auto" else cfg.placement)
    else:
        data = _dataset(cfg, device)
    if data.val_labels is None and data.train_index is None:
        assert cfg.validation is not None   # resolved by DataConfig
        validation = cfg.validation
        data = _section("dataset.validation", lambda: split_validation(data, validation, seed=cfg.split_seed,
                                                                        rng=cfg.split_rng))
    channels = data.train_images.shape[3]
    for key, value in (("mean", cfg.mean), ("std", cfg.std)):
        if value is not None and len(value) != channels:
            raise ConfigError(f"dataset.{key}", f"has {len(value)} entries, data set {cfg.name!r} "
                              f"has {channels} channels; give one per channel")
    split = data
    return _section("dataset.normalize", lambda: normalize_data(split, cfg.normalize, mean=cfg.mean, std=cfg.std))
