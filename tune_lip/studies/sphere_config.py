"""The sphere study's typed config: the scale-invariant models, the two modes and their optimizer.

`SphereConfig.from_dict` reads a trial's nested mapping and raises `ConfigError` naming the
key at fault; `tune_lip.studies.sphere` (which re-exports every name here) trains it.

Example:
    >>> cfg = SphereConfig.from_dict({"optimizer": {"elr": 1e-3}, "budget": {"steps": 100}})
    >>> cfg.model.name, cfg.optimizer.mode, cfg.optimizer.elr
    ('convnet_si', 'sphere', 0.001)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from tune_lip.data.augment import AugmentConfig
from tune_lip.errors import ConfigError, UserError
from tune_lip.nn.sam import SharpnessConfig
from tune_lip.studies.budget import Budget, parse_budget
from tune_lip.studies.config import (
    DataConfig,
    ModelConfig,
    _from_dict,
    _model_config,
    _section,
    config_to_dict,
)

__all__ = ["SPHERE_MODELS", "MODES", "SphereOptimizerConfig", "SphereConfig"]

SPHERE_MODELS = ("convnet_si", "convnet_si_af", "resnet18_si", "resnet18_si_af")
MODES = ("sphere", "full")


@dataclass(frozen=True)
class SphereOptimizerConfig:
    mode: str = "sphere"        # sphere: fixed ELR on the sphere; full: plain SGD, ELR drifts
    elr: float = 1e-3           # sphere mode: effective LR lr/‖w‖², per step (the paper: 1e-5 .. 1e-1)
    lr: float = 0.1             # full mode: LR of the SI weights, per step
    lr_other: float = 0.0       # LR of the non-SI trainable parameters, per step; 0 freezes them
    momentum: float = 0.0       # heavy-ball momentum of every group (the paper: 0)
    weight_decay: float = 0.0   # L2 coefficient, full mode only
    # Sphere mode, the original's --fix_all_elr: every conv filter rescaled to one common norm
    # sqrt(Σ‖w‖² / #filters) at init and after every step, lr = elr·Σ‖w‖² (false: --fix_elr, the
    # joint vector of all SI weights on its sphere).
    fix_all_elr: bool = False
    sam_rho: float = 0.0        # SAM radius in weight space (tune_lip.nn.sam; angle atan(ρ/ρ₀)); 0 = off
    sam_adaptive: bool = False  # ASAM: perturb in |w|-rescaled coordinates

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        for key in ("elr", "lr", "lr_other", "momentum", "weight_decay", "sam_rho"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"optimizer.{key} must be a number, got {value!r}")
            object.__setattr__(self, key, float(value))
        if not (self.elr > 0 and self.lr > 0):
            raise ValueError(f"optimizer.elr and optimizer.lr must be > 0, got {self.elr}, {self.lr}")
        if self.lr_other < 0 or self.weight_decay < 0 or self.sam_rho < 0 or not 0 <= self.momentum < 1:
            raise ValueError("optimizer.lr_other, weight_decay and sam_rho must be >= 0, momentum in [0, 1)")
        for key in ("sam_adaptive", "fix_all_elr"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"optimizer.{key} must be true or false, got {getattr(self, key)!r}")
        if self.mode == "sphere" and self.weight_decay:
            raise ValueError("optimizer.weight_decay is for mode full: on the sphere the norm is fixed, "
                             "so weight decay would only rescale the ELR")
        if self.mode == "full" and self.fix_all_elr:
            raise ValueError("optimizer.fix_all_elr is for mode sphere (full mode has no sphere)")


def _sphere_model(raw: Any) -> ModelConfig:
    cfg = _model_config(raw, default="convnet_si")
    if cfg.name not in SPHERE_MODELS:
        raise ValueError(f"model {cfg.name!r} is not scale-invariant; valid: {', '.join(SPHERE_MODELS)}")
    return cfg


@dataclass(frozen=True)
class SphereConfig:
    """Everything one sphere trial needs; `from_dict` takes a trial's (Ray) config."""

    seed: int = 0
    model: ModelConfig = field(default_factory=lambda: ModelConfig("convnet_si"))
    dataset: DataConfig = field(default_factory=DataConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: SphereOptimizerConfig = field(default_factory=SphereOptimizerConfig)
    budget: Budget = field(default_factory=lambda: Budget("steps", 1000))
    reports: int = 20             # train slices per trial (each ends with an evaluation); >= 4
    metrics_every: int = 0        # steps between gradient/angle measurements; 0 = last step of a slice
    hessian_trace: bool = False   # report the Hutchinson trace of the SI weights' Hessian
    hutchinson_samples: int = 10  # probe vectors per trace estimate (standard error ∝ 1/sqrt)
    feature_rank_batch: int = 256  # examples of the fixed validation batch for feature_rank; 0 = off
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)  # top Hessian eigenvalue; off
    device: str = "auto"          # auto = cuda when visible, else cpu

    def __post_init__(self) -> None:
        if self.reports < 4:   # classify_regime needs >= 4 points of the per-report loss trajectory
            raise ConfigError("reports", f"the regime label needs at least 4 reports, got {self.reports}")
        for key, low in (("metrics_every", 0), ("hutchinson_samples", 1), ("feature_rank_batch", 0)):
            if getattr(self, key) < low:
                raise ConfigError(key, f"must be >= {low}, got {getattr(self, key)}")
        if self.budget.kind not in ("steps", "epochs", "examples"):
            raise ConfigError("budget", f"a {self.budget.kind} budget is not supported here; "
                              "use {steps: N}, {epochs: E} or {examples: X}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SphereConfig:
        """Build from a nested mapping (a trial's config); raises ConfigError naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown config key; valid: {', '.join(sorted(known))}")
        try:
            budget = parse_budget(raw.get("budget", {"steps": 1000}), where="config")
        except UserError as exc:
            raise ConfigError(exc.key or "budget", exc.problem) from None
        for key in ("seed", "reports", "metrics_every", "hutchinson_samples", "feature_rank_batch"):
            value = raw.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ConfigError(key, f"must be an integer, got {value!r}")
        optimizer = raw.get("optimizer")
        if isinstance(optimizer, dict) and "per_filter" in optimizer:
            raise ConfigError("optimizer.per_filter", "removed (it kept each filter at its own initial "
                              "norm, which the paper's code never does); use fix_all_elr: true, every "
                              "filter at one common norm as the original's --fix_all_elr")
        if not isinstance(raw.get("hessian_trace", False), bool):
            raise ConfigError("hessian_trace", f"must be true or false, got {raw['hessian_trace']!r}")
        return _section("config", lambda: cls(
            seed=int(raw.get("seed", 0)),
            model=_section("model", lambda: _sphere_model(raw.get("model"))),
            dataset=_section("dataset", lambda: _from_dict(DataConfig, raw.get("dataset"), "dataset",
                                                            free="options")),
            augmentation=_section("augmentation", lambda: AugmentConfig.from_dict(raw.get("augmentation"))),
            optimizer=_section("optimizer", lambda: _from_dict(SphereOptimizerConfig, raw.get("optimizer"),
                                                                "optimizer")),
            budget=budget,
            reports=int(raw.get("reports", 20)),
            metrics_every=int(raw.get("metrics_every", 0)),
            hessian_trace=bool(raw.get("hessian_trace", False)),
            hutchinson_samples=int(raw.get("hutchinson_samples", 10)),
            feature_rank_batch=int(raw.get("feature_rank_batch", 256)),
            sharpness=_section("sharpness", lambda: SharpnessConfig.from_dict(raw.get("sharpness"))),
            device=str(raw.get("device", "auto")),
        ))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)
