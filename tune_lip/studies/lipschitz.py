"""The Lipschitz study's budgeted training loop, free of Ray.

One trial = one `LipschitzLoop`: it builds data (uint8, on the training device, or streamed
from the host when ``dataset.placement`` says so: `tune_lip.data.stream`), the
1-Lipschitz model, the optimizer and the LR schedule from a typed `LipschitzConfig`, then
trains in slices: ``train_for(steps)`` returns the slice's training metrics,
``evaluate()`` the validation metrics (``val_loss``, ``val_acc``, ``val_certified_acc``),
``evaluate_test()`` the same on the test set (``test_*``, once per trial), and
``state_dict()``/``load_state_dict()`` continue a run bit-identically. ``optimizer.sam_rho > 0``
trains with SAM (`tune_lip.nn.sam`); ``sharpness: {every: k}`` adds ``sharpness`` (the top Hessian
eigenvalue on a fixed batch) to every k-th evaluation. The Ray Trainable in
`tune_lip.trainables.lipschitz` is a thin adapter around it.

Determinism: the model is initialised from ``seed``; the order of examples is a stream of
per-epoch permutations each drawn from ``(seed, epoch)``, so the batch at step t depends only
on (seed, t); augmentation draws from one generator whose state is checkpointed.

Example:
    >>> cfg = LipschitzConfig.from_dict({"dataset": {"name": "synthetic", "batch_size": 32},
    ...     "model": {"name": "aol_mlp", "width": 64, "depth": 2}, "budget": {"steps": 4}})
    >>> loop = LipschitzLoop(cfg)
    >>> sorted(loop.train_for(4))[:3]
    ['diverged', 'examples', 'lr']
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, cast

import torch

from tune_lip.data.augment import AugmentConfig, augment_batch, augment_centred
from tune_lip.data.datasets import ImageData, convert_and_center
from tune_lip.data.sampling import BatchOrder
from tune_lip.data.stream import train_batches
from tune_lip.errors import ConfigError
from tune_lip.nn.losses import OffsetCrossEntropy, certified_correct, correct, pgd_l2_robust
from tune_lip.nn.models import build_model
from tune_lip.nn.optim import OptimizerConfig, build_optimizer
from tune_lip.nn.sam import SharpnessConfig, sam_step, top_hessian_eigenvalue
from tune_lip.studies.budget import (
    Budget,
    ScheduleConfig,
    lookup_step_seconds,
    lr_at,
    momentum_at,
    parse_budget,
    read_calibration,
    schedule_clock,
)

# The shared config sections and helpers live in tune_lip.studies.config; callers still import them here.
from tune_lip.studies.config import (  # noqa: F401 (_DATA_CACHE, load_dataset, MODELS, model_options: re-exported)
    _DATA_CACHE,
    MODELS,
    DataConfig,
    ModelConfig,
    _from_dict,
    _model_config,
    _section,
    config_to_dict,
    load_dataset,
    model_options,
    pick_device,
    training_data,
)
from tune_lip.studies.loop import DIVERGED_LOSS, LoopCheckpoint, ModelLoop, finite_or_worst  # noqa: F401 (LoopCheckpoint: re-exported)
from tune_lip.studies.registry import Study, register

__all__ = [
    "DIVERGED_LOSS",
    "CertificateWarning",
    "check_certificate",
    "ModelConfig",
    "DataConfig",
    "LossConfig",
    "EvalConfig",
    "LipschitzConfig",
    "LipschitzLoop",
    "make_loop",
    "model_key",
    "pick_device",
]

_log = logging.getLogger(__name__)


class CertificateWarning(RuntimeWarning):
    """certified acc <= empirical robust acc <= clean acc failed on a split: the certificate (or
    the model's Lipschitz bound) is wrong. Tests turn it into an error."""


@dataclass(frozen=True)
class LossConfig:
    name: str = "offset_ce"
    eps: float = 36 / 255       # l2 training radius; logit offset = sqrt(2) * eps
    temperature: float = 0.25   # T in T * CE((s - offset * onehot) / T)
    # The logit offset itself, instead of eps (eps = offset / sqrt(2)): LLC's LipCrossEntropyLoss
    # margin (0.3993 = sqrt(2) * 72/255 to 4 digits) is such an offset.
    offset: float | None = None

    def __post_init__(self) -> None:
        if self.name != "offset_ce":
            raise ValueError(f"unknown loss {self.name!r}; valid losses: offset_ce")
        if self.offset is not None:
            if not self.offset >= 0:
                raise ValueError(f"loss.offset must be >= 0, got {self.offset}")
            object.__setattr__(self, "eps", float(self.offset) / math.sqrt(2))
        if self.eps < 0 or not self.temperature > 0:
            raise ValueError("loss.eps must be >= 0 and loss.temperature > 0")


@dataclass(frozen=True)
class EvalConfig:
    eps: float = 36 / 255                 # headline l2 radius of val_/test_certified_acc
    extra_eps: tuple[float, ...] = ()     # more radii, reported as val_certified_acc@<eps> (and test_)
    batch_size: int = 1024                # examples per evaluation forward pass
    # PGD-L2 steps of the attack at radius eps on the test set at a trial's end (test_robust_acc);
    # 0 = off. Each step is one forward + backward pass over the test set.
    robust_steps: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_eps", tuple(float(e) for e in self.extra_eps))
        if isinstance(self.robust_steps, bool) or not isinstance(self.robust_steps, int) or self.robust_steps < 0:
            raise ValueError(f"eval.robust_steps must be an integer >= 0, got {self.robust_steps!r}")


@dataclass(frozen=True)
class LipschitzConfig:
    """Everything one Lipschitz trial needs; `from_dict` takes a trial's (Ray) config."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DataConfig = field(default_factory=DataConfig)
    preprocessing: str = "convert_and_center"   # x / 255 - per-channel mean, on the device
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget: Budget = field(default_factory=lambda: Budget("epochs", 1.0))
    reports: int = 20           # train slices per trial (each ends with an evaluation)
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)  # top Hessian eigenvalue; off
    device: str = "auto"        # auto = cuda when visible, else cpu

    def __post_init__(self) -> None:
        if self.preprocessing != "convert_and_center":
            raise ValueError(f"unknown preprocessing {self.preprocessing!r}; valid: convert_and_center")
        if self.reports < 1:
            raise ValueError(f"reports must be >= 1, got {self.reports}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LipschitzConfig:
        """Build from a nested mapping (a trial's config); raises ConfigError naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown config key; valid: {', '.join(sorted(known))}")
        aug, budget, model = raw.get("augmentation"), raw.get("budget"), raw.get("model")
        return _section("config", lambda: cls(
            seed=int(raw.get("seed", 0)),
            model=_section("model", lambda: _model_config(model)),
            dataset=_section("dataset", lambda: _from_dict(DataConfig, raw.get("dataset"), "dataset", free="options")),
            preprocessing=raw.get("preprocessing", "convert_and_center"),
            augmentation=_section("augmentation", lambda: AugmentConfig.from_dict(aug)),
            optimizer=_section("optimizer", lambda: OptimizerConfig.from_dict(raw.get("optimizer") or {})),
            schedule=_section("schedule", lambda: ScheduleConfig.from_dict(raw.get("schedule"))),
            loss=_section("loss", lambda: _from_dict(LossConfig, raw.get("loss"), "loss")),
            eval=_section("eval", lambda: _from_dict(EvalConfig, raw.get("eval"), "eval")),
            budget=Budget("epochs", 1.0) if budget is None else parse_budget(budget, where="config"),
            reports=int(raw.get("reports", 20)),
            sharpness=_section("sharpness", lambda: SharpnessConfig.from_dict(raw.get("sharpness"))),
            device=str(raw.get("device", "auto")),
        ))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def model_key(cfg: LipschitzConfig) -> str:
    """Identifies what a calibrated step time depends on: model, its options, input shape."""
    options = json.dumps(cfg.model.options, sort_keys=True)
    return f"{cfg.model.name}{options}@{cfg.dataset.name}"


class LipschitzLoop(ModelLoop):
    """Budgeted training of one 1-Lipschitz network; see the module docstring.

    step_seconds: the reference accelerator's calibrated seconds per step; needed for a
    ``reference_hours`` budget and then reported as ``reference_seconds``.
    """

    def __init__(self, cfg: LipschitzConfig, *, step_seconds: float | None = None,
                 data: ImageData | None = None) -> None:
        self.device = pick_device(cfg.device)
        self.data = training_data(cfg.dataset, self.device, data)   # the validation split held out
        self.step_seconds = step_seconds
        if cfg.budget.kind == "reference_hours" and step_seconds is None:
            raise ValueError("a reference_hours budget needs step_seconds from the calibration table")
        b = cfg.dataset.batch_size
        super().__init__(cfg, total_steps=cfg.budget.total_steps(batch_size=b, num_train=self.data.num_train,
                                                                 step_seconds=step_seconds),
                         examples_per_step=b,
                         wall_budget=cfg.budget.amount * 3600.0 if cfg.budget.kind == "wall_hours" else None)
        if cfg.schedule.interval == "epoch" and self.total_steps is None:
            raise ConfigError("schedule.interval", "epoch needs a budget in steps, epochs or examples, "
                              "not wall_hours")

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, input_shape=self.data.input_shape,
                                 num_classes=self.data.num_classes, **cfg.model.options).to(self.device)
        self.lr = cfg.optimizer.lr   # reported as lr: the configured peak; the schedule shapes it
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters())
        self.loss_fn = OffsetCrossEntropy(eps=cfg.loss.eps, temperature=cfg.loss.temperature)
        self.mean = self.data.mean_tensor()                                                # (C,)
        self.std = self.data.std_tensor()               # (C,): all 1.0 unless dataset.normalize: mean_std
        self.aug_generator = torch.Generator(device=self.device)
        self.aug_generator.manual_seed(cfg.seed + 1)
        self.augment = not cfg.augmentation.is_identity
        self.batch_order = BatchOrder(num_examples=self.data.num_train, batch_size=cfg.dataset.batch_size,
                                      seed=cfg.seed, device=self.device)
        # Streamed data (dataset.placement) reads the next batches while this one computes.
        self.fetch_batch = train_batches(self.data, self.batch_order)
        # Sharpness's fixed batch: the data order's first examples (step 0's batch and on).
        self.sharpness_indices = self.batch_order.permutation(0)[:cfg.sharpness.batch_size]  # (B_s,)
        # The optimizer's lr is the last step's (checkpointed with it); before any step, the first step's.
        self._set_lr()

    def progress(self) -> dict[str, float]:
        out = super().progress()
        if self.step_seconds is not None:
            out["reference_seconds"] = self.steps * self.step_seconds
        return out

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the examples in step ``step``'s batch: (B,), a pure function of (seed, step)."""
        return self.batch_order(step)

    # ------------------------------------------------------------------ training
    def _set_lr(self) -> float:
        """Set the scheduled lr (and, for one_cycle, momentum: torch's OneCycleLR cycles it by
        default, overriding the configured one, as both papers' code runs it) for the step about
        to be taken: at the current budget fraction, or at the current epoch for a per-epoch schedule."""
        schedule = self.cfg.schedule
        if schedule.interval == "step":
            fraction, ticks = self.fraction, self.total_steps
        else:
            fraction, ticks = schedule_clock(self.steps, schedule=schedule, total_steps=self.total_steps,
                                             batch_size=self.cfg.dataset.batch_size,
                                             num_train=self.data.num_train)
        lr = lr_at(fraction, peak_lr=self.cfg.optimizer.lr, schedule=schedule, total_steps=ticks)
        momentum = momentum_at(fraction, schedule=schedule, total_steps=ticks)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is None:
                continue
            if "momentum" in group:          # SGD, RMSprop
                group["momentum"] = momentum
            elif "betas" in group:           # Adam: beta1 plays momentum, as in torch's OneCycleLR
                group["betas"] = (momentum, *group["betas"][1:])
        return lr

    def train_step(self, last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the (augmented) batch; its loss and correct count are at w (with SAM: before
        the perturbation). `ModelLoop.train_for` reports ``lr`` (``optimizer.lr``, the peak) and
        ``lr_now`` (the scheduled LR of the last step taken)."""
        self._set_lr()
        idx = self.batch_indices(self.steps)
        x, y = self.fetch_batch(self.steps, idx)             # (B, H, W, C) uint8, (B,)
        aug = self.cfg.augmentation
        if self.augment and aug.draws == "per_sample":   # own draws per image, on the uint8 batch
            x = augment_batch(x, aug, self.aug_generator, mean=self.mean)
        inputs = convert_and_center(x, self.mean, self.std)                   # (B, C, H, W) float
        if self.augment and aug.draws == "per_batch":    # SU: one draw for the batch, on the centred batch
            inputs = augment_centred(inputs, aug, self.aug_generator, mean=self.mean, std=self.std)
        scores = self.model(inputs)                            # (B, num_classes)
        loss = self.loss_fn(scores, y)
        if self.cfg.optimizer.sam_rho > 0:   # the second pass sees the same augmented batch
            sam_step(self.model, lambda: self.loss_fn(self.model(inputs), y), self.optimizer,
                     rho=self.cfg.optimizer.sam_rho, adaptive=self.cfg.optimizer.sam_adaptive, loss=loss)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.detach(), correct(scores.detach(), y).sum()

    # ------------------------------------------------------------------ evaluation
    def measure_sharpness(self) -> float:
        """Top eigenvalue of the training loss's Hessian over all trainable parameters.

        On the fixed batch (`sharpness_indices`, not augmented), in train mode as training
        sees the model (AOL recomputes its rescaling; eval would cache it as a constant), with
        buffers such as CPL's power-iteration vectors restored afterwards. The start vector is
        drawn from ``seed`` afresh each call, so the value is a function of the weights alone.
        Units: loss per parameter²; ``sharpness.iters`` Hessian-vector products.
        """
        x, y = self.data.train_batch(self.sharpness_indices)
        x = convert_and_center(x, self.mean, self.std)
        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + 3)
        self.model.train()
        return top_hessian_eigenvalue(self.model, lambda: self.loss_fn(self.model(x), y),
                                      iters=self.cfg.sharpness.iters, generator=g)

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """loss, clean accuracy (acc) and certified accuracy at ``eval.eps`` and the extra radii
        (certified_acc, certified_acc@<eps>) on one split; `ModelLoop` prefixes val_ or test_."""
        ev = self.cfg.eval
        self.model.eval()
        n = len(labels)
        loss_sum = torch.zeros((), device=self.device)
        counts = torch.zeros(2 + len(ev.extra_eps), device=self.device, dtype=torch.long)
        for start in range(0, n, ev.batch_size):
            x = convert_and_center(images[start:start + ev.batch_size], self.mean, self.std)
            y = labels[start:start + ev.batch_size]
            scores = self.model(x)
            loss_sum += self.loss_fn(scores, y) * len(y)
            counts[0] += correct(scores, y).sum()
            counts[1] += certified_correct(scores, y, ev.eps).sum()
            for i, e in enumerate(ev.extra_eps):
                counts[2 + i] += certified_correct(scores, y, e).sum()
        self.model.train()
        c = (counts.double() / n).tolist()                        # host sync
        out = {"loss": finite_or_worst((loss_sum / n).item()), "acc": c[0], "certified_acc": c[1]}
        out.update({f"certified_acc@{e:g}": c[2 + i] for i, e in enumerate(ev.extra_eps)})
        return out

    def evaluate_test(self) -> dict[str, float]:
        """`ModelLoop.evaluate_test` plus ``test_robust_acc``: accuracy under a PGD-L2 attack at
        radius ``eval.eps`` (``eval.robust_steps`` steps; `tune_lip.nn.losses.pgd_l2_robust`),
        and the check certified <= robust <= clean accuracy (`check_certificate`)."""
        out = super().evaluate_test()
        if self.cfg.eval.robust_steps > 0:
            out["test_robust_acc"] = 0.0 if self.diverged else self.robust_accuracy(
                self.data.test_images, self.data.test_labels)
            if not self.diverged:
                check_certificate(out, "test")
        return out

    def robust_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of ``images`` (uint8 (N, H, W, C)) still correct under PGD-L2 at ``eval.eps``,
        in eval mode, projected to the valid pixel box; one host sync at the end."""
        ev = self.cfg.eval
        lower, upper = -self.mean / self.std, (1.0 - self.mean) / self.std     # (C,): pixels 0 and 255
        self.model.eval()
        hits = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(labels), ev.batch_size):
            x = convert_and_center(images[start:start + ev.batch_size], self.mean, self.std)
            y = labels[start:start + ev.batch_size]
            hits += pgd_l2_robust(self.model, x, y, eps=ev.eps, steps=ev.robust_steps,
                                  lower=lower, upper=upper).sum()
        self.model.train()
        return float(hits.double() / len(labels))                          # host sync

    def diverged_eval_metrics(self) -> dict[str, float]:
        out = {"loss": DIVERGED_LOSS, "acc": 0.0, "certified_acc": 0.0}
        out.update({f"certified_acc@{e:g}": 0.0 for e in self.cfg.eval.extra_eps})
        return out

    @torch.no_grad()
    def weight_metrics(self) -> dict[str, float]:
        """weight_norm: ‖w‖ of all parameters. `ModelLoop.evaluate` adds ``sharpness`` every
        ``sharpness.every``-th time."""
        weight_norm = torch.sqrt(cast(torch.Tensor, sum(p.detach().double().pow(2).sum()
                                                        for p in self.model.parameters())))
        return {"weight_norm": float(weight_norm)}

    def diverged_weight_metrics(self) -> dict[str, float]:
        return {"weight_norm": DIVERGED_LOSS}

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"aug_generator": self.aug_generator.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.aug_generator.set_state(state["aug_generator"])


def check_certificate(metrics: dict[str, float], split: str = "test", *, tolerance: float = 0.0) -> bool:
    """True when ``<split>_certified_acc <= <split>_robust_acc <= <split>_acc`` (within
    ``tolerance``) in ``metrics``; otherwise log an error and warn with `CertificateWarning`: an
    attack broke a certified sample, so the certificate is wrong (a bug, never noise)."""
    certified, robust, clean = (metrics[f"{split}_{k}"] for k in ("certified_acc", "robust_acc", "acc"))
    if certified <= robust + tolerance and robust <= clean + tolerance:
        return True
    message = (f"certificate violated on {split}: certified {certified:.4f}, empirical robust {robust:.4f}, "
               f"clean {clean:.4f} (need certified <= robust <= clean): a bug in the certificate or the model")
    _log.error(message)
    warnings.warn(message, CertificateWarning, stacklevel=2)
    return False


def make_loop(config: dict[str, Any]) -> LipschitzLoop:
    """Build the loop for a trial config (resolving a reference_hours budget's step time)."""
    cfg = LipschitzConfig.from_dict(config)
    step_seconds = None
    if cfg.budget.kind == "reference_hours":
        assert cfg.budget.reference is not None
        if cfg.budget.calibration is None:
            raise ValueError("a reference_hours budget needs budget.calibration (set by the launcher)")
        table = read_calibration(cfg.budget.calibration)
        step_seconds = lookup_step_seconds(table, accelerator=cfg.budget.reference, model_key=model_key(cfg),
                                           batch_size=cfg.dataset.batch_size, where=cfg.budget.calibration)
    return LipschitzLoop(cfg, step_seconds=step_seconds)


STUDY = register(Study(
    name="lipschitz", config=LipschitzConfig, loop=make_loop, default_model="aol_mlp", step_key=model_key,
    # What a search may optimise: validation metrics (test_* come once, at a trial's end).
    metrics=frozenset({"val_certified_acc", "val_acc", "val_loss", "train_acc", "train_loss", "weight_norm"}),
    # Before the validation split, every report carried these test-set metrics; an experiment that
    # searched one still resumes (`tune_lip.trainables.base.LegacyReports`).
    legacy_metrics={"certified_acc": "test_certified_acc", "test_acc": "test_acc", "test_loss": "test_loss"},
))
