"""Optimizers by name, configured by a typed dataclass.

The learning rate here is the *peak* LR of the schedule; the training loop sets each
step's LR from `tune_lip.studies.budget.lr_at`. ``sam_rho > 0`` makes the loop take SAM steps
(`tune_lip.nn.sam.sam_step`) around the optimizer named here.

Example:
    >>> import torch
    >>> cfg = OptimizerConfig.from_dict({"name": "sgd", "lr": 0.1, "momentum": 0.9})
    >>> opt = build_optimizer(cfg, torch.nn.Linear(2, 2).parameters())
    >>> type(opt).__name__
    'SGD'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["OPTIMIZERS", "OptimizerConfig", "build_optimizer"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1             # peak learning rate, per step, at this trial's batch size
    momentum: float = 0.9       # SGD/RMSprop momentum (0 = plain SGD)
    nesterov: bool = True       # SGD only; needs momentum > 0
    weight_decay: float = 0.0   # L2 coefficient (decoupled for adamw)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW
    eps: float = 1e-8           # Adam/AdamW/RMSprop denominator epsilon
    sam_rho: float = 0.0        # SAM perturbation radius in parameter space (tune_lip.nn.sam); 0 = off
    sam_adaptive: bool = False  # ASAM: perturb in |w|-rescaled coordinates (rho then ~relative)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("optimizer.momentum and optimizer.weight_decay must be >= 0")
        if not (self.sam_rho >= 0 and math.isfinite(self.sam_rho)):
            raise ValueError(f"optimizer.sam_rho must be >= 0 (0 = plain steps, no SAM), got {self.sam_rho}")
        if not isinstance(self.sam_adaptive, bool):
            raise TypeError(f"optimizer.sam_adaptive must be true or false, got {self.sam_adaptive!r}")
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            object.__setattr__(self, "nesterov", False)  # torch refuses nesterov without momentum

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OptimizerConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown optimizer option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(known))}")
        values = dict(raw)
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        for key in ("lr", "momentum", "weight_decay", "eps", "sam_rho"):
            if key in values:
                values[key] = float(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


def build_optimizer(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """A torch optimizer for ``params`` as ``cfg`` says (foreach kernels: fewer launches)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps,
                               weight_decay=cfg.weight_decay)
