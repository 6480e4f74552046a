"""The scaling-rules study's budgeted training loop, free of Ray: LR rules, SVAG, NGD, gradient noise.

From *On the Validity of Modeling SGD with SDEs* (Li, Malladi, Arora 2021) and *On the SDEs and
Scaling Rules for Adaptive Gradient Algorithms* (Malladi et al. 2022). The maths (SVAG, NGD, the
noise estimates; hand-written, no library has them) is in `tune_lip.nn.scaling_rules`.

- ``optimizer.lr_rule``: at batch size B, lr = η·B/B₀ (``linear``; default for SGD, η = 0.8),
  η·√(B/B₀) (``sqrt``, the SDE rule for Adam/RMSprop; their default, η = 1e-3) or η (``none``);
  η = ``optimizer.eta``, B₀ = ``optimizer.base_batch`` (128).
- ``gradient.name``: ``minibatch``; ``svag`` (``l``): draw 2B, split into halves b₁, b₂,
  minimise c₁L(b₁) + c₂L(b₂), c = √(2l−1), c₁ = (1+c)/2, c₂ = (1−c)/2 (mean gradient kept,
  noise covariance ×l) at lr/l for l× the steps; l = 1 is minibatch training, bit for bit;
  ``ngd``: on a fixed subset of N = ``gradient.subset`` examples, the full gradient with
  per-example weights 1 + √(N/B)(zᵢ − z̄), z ~ N(0, I) -- covariance exactly Σ/B -- summed over
  ``gradient.chunk``-sized chunks (with BatchNorm each chunk has its own statistics: use GN).
- ``budget_rule``: ``none`` reads the budget at the trial's B (``{epochs: E}`` is then E passes
  at every B, which under either rule is already a fixed SDE time); ``sde_time`` reads it at B₀
  and scales the steps by B₀/B. SVAG multiplies both by l. Progress is reported as ``sde_time``
  = Σ_k lr_k over the step sizes taken (``lr_now``, not the trial's ``lr``), the time of the
  SDE the run approximates: it is the same for every l (l× the steps
  at lr/l) and for every B under the linear rule with a fixed-epoch budget (B₀/B× the steps at
  B/B₀× the LR), so curves align on it. Use ``scheduler: none`` (ASHA's max_t ignores the ×l).
- ``grad_stats_every: K`` (0 = off): after every K-th step, k = ``grad_stats_batches`` fresh
  minibatches of B (uniform with replacement from the training pool, own generator, augmented
  as in training, BN statistics restored) give loss gradients g₁..g_k (no weight decay), and
  from them (`tune_lip.nn.scaling_rules.gradient_noise`) ``grad_norm_sq`` G, unbiased for ‖∇L‖²,
  ``grad_noise`` N, unbiased for tr Σ, and ``noise_scale`` = N/G (B_simple; ratio of the
  slice's mean G and N, NaN if G ≤ 0). Cost: k extra forward+backward passes of B every K steps.
- ``optimizer.sam_rho`` > 0: SAM steps (`tune_lip.nn.sam`; minibatch and SVAG);
  ``sharpness: {every: k}``: the top Hessian eigenvalue at every k-th evaluation.

Determinism: init from ``seed``; the batch at step t is a pure function of (seed, t);
augmentation, NGD noise and statistics batches use three checkpointed generators.

Example:
    >>> cfg = ScalingConfig.from_dict({"dataset": {"name": "digits", "batch_size": 32},
    ...     "model": {"name": "preresnet32", "norm": "gn", "width": 0.25},
    ...     "gradient": {"name": "svag", "l": 2}, "budget": {"steps": 4}, "reports": 1})
    >>> m = ScalingLoop(cfg).train_for(8)
    >>> m["steps"], round(m["sde_time"], 6), m["lr"], round(m["lr_now"], 4)   # 0.8·32/128, then /l
    (8, 0.8, 0.2, 0.1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from tune_lip.data.augment import AugmentConfig, augment_batch
from tune_lip.data.datasets import ImageData, convert_and_center
from tune_lip.data.sampling import BatchOrder
from tune_lip.errors import ConfigError, UserError
from tune_lip.nn.losses import cross_entropy_and_accuracy
from tune_lip.nn.models import build_model
from tune_lip.nn.models.scaling_nets import NORMS
from tune_lip.nn.optim import OPTIMIZERS, OptimizerConfig, build_optimizer
from tune_lip.nn.sam import SharpnessConfig, buffers_restored, sam_step, top_hessian_eigenvalue
from tune_lip.nn.scaling_rules import (
    gradient_noise,
    ngd_backward,
    ngd_weights,
    scaled_lr,
    svag_objective,
)
from tune_lip.studies.budget import Budget, ScheduleConfig, lr_at, parse_budget
from tune_lip.studies.config import (
    DataConfig,
    ModelConfig,
    _dataset,
    _from_dict,
    _model_config,
    _section,
    config_to_dict,
    pick_device,
)
from tune_lip.studies.loop import DIVERGED_LOSS, ModelLoop, finite_or_worst
from tune_lip.studies.registry import Study, register

__all__ = ["BUDGET_RULES", "GRADIENTS", "LR_RULES", "GradientConfig", "ScalingConfig", "ScalingLoop",
           "ScalingOptimizerConfig"]

LR_RULES = ("linear", "sqrt", "none")
GRADIENTS = ("minibatch", "svag", "ngd")
BUDGET_RULES = ("none", "sde_time")
EVAL_BATCH = 1024   # examples per evaluation forward pass


# ---------------------------------------------------------------------------- config

def _check_int(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
        raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class ScalingOptimizerConfig:
    name: str = "sgd"               # sgd | adam | adamw | rmsprop (tune_lip.nn.optim)
    lr_rule: str | None = None      # linear | sqrt | none; None = linear for sgd, sqrt otherwise
    eta: float | None = None        # LR per step at base_batch and l = 1; None = 0.8 (sgd), 1e-3
    base_batch: int = 128           # B₀, examples
    momentum: float = 0.0           # SGD/RMSprop; 0 = the plain SGD that the SDE papers model
    nesterov: bool = False          # SGD only
    weight_decay: float = 5e-4      # L2 coefficient (decoupled for adamw)
    betas: tuple[float, float] = (0.9, 0.999)   # Adam/AdamW
    eps: float = 1e-8               # Adam/AdamW/RMSprop denominator epsilon
    sam_rho: float = 0.0            # SAM radius in parameter space (tune_lip.nn.sam); 0 = off
    sam_adaptive: bool = False      # ASAM

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid: {', '.join(OPTIMIZERS)}")
        rule = self.lr_rule or ("linear" if self.name == "sgd" else "sqrt")
        if rule not in LR_RULES:
            raise ValueError(f"unknown lr_rule {rule!r}; valid: {', '.join(LR_RULES)}")
        eta = (0.8 if self.name == "sgd" else 1e-3) if self.eta is None else self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta < math.inf:
            raise ValueError(f"optimizer.eta must be a positive number, got {eta!r}")
        _check_int("optimizer.base_batch", self.base_batch, 1)
        object.__setattr__(self, "lr_rule", rule)   # resolved, so the saved config says what ran
        object.__setattr__(self, "eta", float(eta))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.torch_config(1.0)   # tune_lip.nn.optim checks the remaining knobs

    def lr(self, batch_size: int) -> float:
        """The rule's LR at ``batch_size`` (before SVAG's 1/l and the schedule)."""
        return scaled_lr(str(self.lr_rule), eta=float(self.eta or 0), batch_size=batch_size,
                         base_batch=int(self.base_batch))

    def torch_config(self, lr: float) -> OptimizerConfig:
        return OptimizerConfig(name=self.name, lr=lr, momentum=float(self.momentum), nesterov=self.nesterov,
                               weight_decay=float(self.weight_decay), betas=(self.betas[0], self.betas[1]), eps=float(self.eps),
                               sam_rho=float(self.sam_rho), sam_adaptive=self.sam_adaptive)


@dataclass(frozen=True)
class GradientConfig:
    name: str = "minibatch"     # minibatch | svag | ngd
    l: float = 1.0              # svag: noise covariance ×l, lr /l, steps ×l; 1 = minibatch
    subset: int | None = None   # train on a fixed seeded subset of this many examples (ngd: required)
    chunk: int = 512            # ngd: examples per forward/backward of the full gradient (memory)

    def __post_init__(self) -> None:
        if self.name not in GRADIENTS:
            raise ValueError(f"unknown gradient {self.name!r}; valid: {', '.join(GRADIENTS)}")
        if isinstance(self.l, bool) or not isinstance(self.l, (int, float)) or not 1 <= self.l < math.inf:
            raise ValueError(f"gradient.l must be a number >= 1, got {self.l!r}")
        object.__setattr__(self, "l", float(self.l))
        if self.name != "svag" and self.l != 1:
            raise ValueError(f"gradient.l is SVAG's: use name: svag, or drop l (got {self.l:g} for {self.name})")
        if self.name == "ngd" and self.subset is None:
            raise ValueError("gradient ngd needs subset: N, the examples of its full gradient")
        if self.subset is not None:
            _check_int("gradient.subset", self.subset, 1)
        _check_int("gradient.chunk", self.chunk, 1)


def _scaling_model(raw: Any) -> ModelConfig:
    cfg = _model_config(raw, default="preresnet32")
    if cfg.options.get("norm", "bn") not in NORMS:   # fail at config time, not in a trial's setup
        raise ValueError(f"unknown norm {cfg.options['norm']!r}; valid: {', '.join(NORMS)}")
    return cfg


@dataclass(frozen=True)
class ScalingConfig:
    """Everything one scaling-rules trial needs; `from_dict` takes a trial's (Ray) config."""

    seed: int = 0
    model: ModelConfig = field(default_factory=lambda: ModelConfig("preresnet32"))
    dataset: DataConfig = field(default_factory=lambda: DataConfig(batch_size=128))
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: ScalingOptimizerConfig = field(default_factory=ScalingOptimizerConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig("constant"))
    budget: Budget = field(default_factory=lambda: Budget("epochs", 1.0))
    budget_rule: str = "none"       # none: the budget at the trial's B; sde_time: at B₀, steps ×B₀/B
    reports: int = 20               # train slices per trial (each ends with an evaluation)
    grad_stats_every: int = 0       # steps between gradient-noise measurements; 0 = off
    grad_stats_batches: int = 4     # k >= 2 minibatch gradients per measurement
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)   # top Hessian eigenvalue; off
    device: str = "auto"            # auto = cuda when visible, else cpu

    def __post_init__(self) -> None:
        if self.budget_rule not in BUDGET_RULES:
            raise ConfigError("budget_rule", f"unknown rule {self.budget_rule!r}; valid: {', '.join(BUDGET_RULES)}")
        if self.budget.kind not in ("steps", "epochs", "examples"):
            raise ConfigError("budget", f"a {self.budget.kind} budget is not supported here; "
                              "use {steps: N}, {epochs: E} or {examples: X}")
        if self.gradient.name == "ngd" and not self.augmentation.is_identity:
            raise ConfigError("augmentation", "ngd's full gradient is of the fixed subset; use augmentation: none")
        if self.gradient.name == "ngd" and self.optimizer.sam_rho > 0:
            raise ConfigError("optimizer.sam_rho", "SAM is for minibatch and svag gradients, not ngd")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScalingConfig:
        """Build from a nested mapping (a trial's config); raises ConfigError naming the key."""
        known = {f.name for f in fields(cls)}
        if set(raw) - known:
            raise ConfigError(min(set(raw) - known), f"unknown config key; valid: {', '.join(sorted(known))}")
        try:
            budget = parse_budget(raw.get("budget", {"epochs": 1}), where="config")
        except UserError as exc:
            raise ConfigError(exc.key or "budget", exc.problem) from None
        ints = {"seed": 0, "reports": 1, "grad_stats_every": 0, "grad_stats_batches": 2}   # key: lowest value
        for key, low in ints.items():
            if key in raw:
                _section(key, lambda: _check_int(key, raw[key], low))  # noqa: B023 (called at once)
        dataset = raw.get("dataset") or {}
        return _section("config", lambda: cls(
            seed=int(raw.get("seed", 0)),
            model=_section("model", lambda: _scaling_model(raw.get("model"))),
            dataset=_section("dataset", lambda: _from_dict(
                DataConfig, {"batch_size": 128, **dataset} if isinstance(dataset, dict) else dataset,
                "dataset", free="options")),
            augmentation=_section("augmentation", lambda: AugmentConfig.from_dict(raw.get("augmentation"))),
            optimizer=_section("optimizer", lambda: _from_dict(ScalingOptimizerConfig, raw.get("optimizer"),
                                                                "optimizer")),
            gradient=_section("gradient", lambda: _from_dict(GradientConfig, raw.get("gradient"), "gradient")),
            schedule=_section("schedule", lambda: ScheduleConfig.from_dict(raw.get("schedule", "constant"))),
            budget=budget,
            budget_rule=str(raw.get("budget_rule", "none")),
            reports=int(raw.get("reports", 20)),
            grad_stats_every=int(raw.get("grad_stats_every", 0)),
            grad_stats_batches=int(raw.get("grad_stats_batches", 4)),
            sharpness=_section("sharpness", lambda: SharpnessConfig.from_dict(raw.get("sharpness"))),
            device=str(raw.get("device", "auto")),
        ))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def total_steps(self, num_train: int) -> int:
        """Optimizer steps of the trial: the budget at B (sde_time: at B₀, ×B₀/B), ×l."""
        b, b0 = self.dataset.batch_size, self.optimizer.base_batch
        at = b0 if self.budget_rule == "sde_time" else b
        steps = self.budget.total_steps(batch_size=at, num_train=num_train)
        assert steps is not None   # steps, epochs and examples budgets are exact
        return max(1, round(steps * at / b * self.gradient.l))


# ---------------------------------------------------------------------------- the loop

class ScalingLoop(ModelLoop):
    """Budgeted training of one scaling-rules trial; see the module docstring.

    ``pool``: (N,) indices of the training examples (a fixed seeded subset with ``gradient.subset``);
    ``draw``: examples per step (B, 2B for SVAG, N for NGD); ``lr``: the trial's LR, the one its
    ``lr_rule`` gives at its batch size (`ScalingOptimizerConfig.lr`); ``peak_lr``: the peak of the
    steps actually taken, ``lr`` / l (SVAG), which the schedule then shapes.
    """

    def __init__(self, cfg: ScalingConfig, *, data: ImageData | None = None) -> None:
        g, b = cfg.gradient, cfg.dataset.batch_size
        self.device = pick_device(cfg.device)
        self.data = data.to(self.device) if data is not None else _dataset(cfg.dataset, self.device)
        n = self.data.num_train
        if (g.subset or 0) > n:
            raise ConfigError("gradient.subset", f"{g.subset} examples asked for; the training set has {n}")
        self.generators: dict[str, torch.Generator] = {}   # checkpointed: augment, ngd noise, statistics
        for offset, name in enumerate(("subset", "augment", "noise", "stats")):
            self.generators[name] = torch.Generator(device=self.device)
            self.generators[name].manual_seed(cfg.seed * 7919 + offset)
        pick = self.generators.pop("subset")   # used once, here: the subset is a function of the seed
        self.pool = (torch.randperm(n, generator=pick, device=self.device)[:g.subset] if g.subset
                     else torch.arange(n, device=self.device))                              # (N,)
        if b > len(self.pool):
            raise ConfigError("dataset.batch_size", f"{b} exceeds the {len(self.pool)} training examples")
        total_steps = cfg.total_steps(len(self.pool))
        if total_steps < cfg.reports:
            raise ConfigError("budget", f"buys {total_steps} steps, fewer than the {cfg.reports} reports")
        self.l, self.svag = g.l, g.name == "svag" and g.l > 1
        self.draw = len(self.pool) if g.name == "ngd" else 2 * b if self.svag else b
        super().__init__(cfg, total_steps=total_steps, examples_per_step=self.draw)
        self.total_steps: int = total_steps

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, input_shape=self.data.input_shape,
                                 num_classes=self.data.num_classes, **cfg.model.options).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]   # PreResNet's head is frozen
        self.lr = cfg.optimizer.lr(b)
        self.peak_lr = self.lr / self.l
        self.optimizer = build_optimizer(cfg.optimizer.torch_config(self.peak_lr), self.params)
        for group in self.optimizer.param_groups:   # lr_now before any step: the first step's
            group["lr"] = self._lr(0)
        self.mean = self.data.mean_tensor()                                  # (C,)
        self.augment = not cfg.augmentation.is_identity
        self.sde_time = 0.0         # Σ lr over the steps taken: the SDE's time
        self.measure_every = cfg.grad_stats_every   # gradient-noise statistics, off the clock
        self.batch_order = BatchOrder(num_examples=len(self.pool), batch_size=self.draw, seed=cfg.seed,
                                      device=self.device)

    def progress(self) -> dict[str, float]:
        """steps, examples (drawn by the gradient estimates), sde_time (Σ lr_now over the steps so far)."""
        return {"steps": self.steps, "examples": self.examples, "sde_time": self.sde_time,
                "wall_seconds": self.wall_seconds}

    def batch_indices(self, step: int) -> Tensor:
        """Training-set indices of step ``step``: (draw,), a pure function of (seed, step)."""
        return self.pool[self.batch_order(step)]

    def _inputs(self, idx: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x, y = self.data.train_images[idx], self.data.train_labels[idx]   # (n, H, W, C) uint8, (n,)
        if generator is not None and self.augment:
            x = augment_batch(x, self.cfg.augmentation, generator)
        return convert_and_center(x, self.mean), y                          # (n, C, H, W), (n,)

    def _losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example cross-entropy (n,) and the number of correct predictions (0-d)."""
        scores = self.model(x)                                              # (n, num_classes)
        return F.cross_entropy(scores, y, reduction="none"), (scores.detach().argmax(dim=1) == y).sum()

    # ------------------------------------------------------------------ training
    def _lr(self, step: int) -> float:
        """The step size of step ``step`` (0-based): the schedule at that point, peak ``peak_lr``."""
        return lr_at(step / self.total_steps, peak_lr=self.peak_lr, schedule=self.cfg.schedule,
                     total_steps=self.total_steps)

    def train_step(self, last: bool) -> tuple[Tensor, Tensor]:
        """One optimizer step at the scheduled lr; (mean plain loss, correct count) over the examples
        it drew. ``lr`` is the trial's LR (its ``lr_rule`` at its batch size, before SVAG's 1/l and the
        schedule: the LR of the SGD run whose SDE the trial follows, the same for every l of a SVAG
        sweep); ``lr_now`` is the last step's size (scheduled, divided by l)."""
        lr = self._lr(self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        b, o = self.cfg.dataset.batch_size, self.cfg.optimizer
        self.optimizer.zero_grad(set_to_none=True)
        self.sde_time += lr
        if self.cfg.gradient.name == "ngd":
            chunk_hits: list[Tensor] = []

            def losses_of(idx: Tensor) -> Tensor:
                losses, h = self._losses(*self._inputs(idx, None))
                chunk_hits.append(h)
                return losses

            weights = ngd_weights(len(self.pool), b, self.generators["noise"])     # (N,)
            loss = ngd_backward(losses_of, self.pool, weights, chunk=self.cfg.gradient.chunk)
            self.optimizer.step()
            return loss, torch.stack(chunk_hits).sum()
        x, y = self._inputs(self.batch_indices(self.steps), self.generators["augment"])

        def objective() -> tuple[Tensor, Tensor, Tensor]:
            if not self.svag:
                losses, hits = self._losses(x, y)
                return losses.mean(), losses.detach().mean(), hits
            # Two forward passes, so that BatchNorm normalises over B as plain SGD at B does.
            (l1, h1), (l2, h2) = self._losses(x[:b], y[:b]), self._losses(x[b:], y[b:])
            return svag_objective(l1, l2, self.l), torch.cat([l1, l2]).detach().mean(), h1 + h2

        value, loss, hits = objective()
        if o.sam_rho > 0:   # the second pass sees the same augmented batch (and the same halves)
            sam_step(self.model, lambda: objective()[0], self.optimizer, rho=o.sam_rho,
                     adaptive=o.sam_adaptive, loss=value)
        else:
            value.backward()
            self.optimizer.step()
        return loss, hits

    def start_slice(self) -> None:
        self.noise_sum = torch.zeros(2, dtype=torch.float64, device=self.device)   # Σ G, Σ N
        self.measured = 0

    def measure(self) -> None:
        """(G, N) at the current weights from ``grad_stats_batches`` fresh minibatches, summed
        into the slice's statistics. Train-mode passes as in training; BN running statistics are
        restored and the training generators untouched, so measuring never changes the run."""
        b, gen = self.cfg.dataset.batch_size, self.generators["stats"]
        batches = [self.pool[torch.randint(len(self.pool), (b,), generator=gen, device=self.device)]
                   for _ in range(self.cfg.grad_stats_batches)]
        with buffers_restored(self.model):
            self.noise_sum += torch.stack(gradient_noise(lambda idx: self._losses(*self._inputs(idx, gen))[0],
                                                         self.params, batches))
        self.measured += 1

    def slice_metrics(self, steps: int, mean_loss: float) -> dict[str, Any]:
        """grad_norm_sq / grad_noise / noise_scale (the slice's mean G, N and their ratio) when measured."""
        if not self.measured:
            return {}
        g_sq, noise = (self.noise_sum / self.measured).tolist()
        ratio = noise / g_sq if g_sq > 0 else math.nan
        if self.diverged or not math.isfinite(g_sq + noise):   # the three stand or fall together
            g_sq, noise, ratio = DIVERGED_LOSS, DIVERGED_LOSS, DIVERGED_LOSS
        return {"grad_norm_sq": g_sq, "grad_noise": noise, "noise_scale": ratio}

    # ------------------------------------------------------------------ evaluation
    def measure_sharpness(self) -> float:
        """Top Hessian eigenvalue of the training loss (`tune_lip.nn.sam`) on a fixed batch: the data
        order's first ``sharpness.batch_size`` examples, not augmented, in train mode; buffers
        restored, start vector from ``seed``: a function of the weights alone."""
        x, y = self._inputs(self.pool[self.batch_order.permutation(0)[:self.cfg.sharpness.batch_size]], None)
        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + 5)
        self.model.train()
        return top_hessian_eigenvalue(self.model, lambda: self._losses(x, y)[0].mean(),
                                      iters=self.cfg.sharpness.iters, generator=g)

    @torch.no_grad()
    def test_metrics(self) -> dict[str, float]:
        """Test loss and accuracy (eval mode) and weight_norm (‖w‖ of the trainable parameters)."""
        loss, acc = cross_entropy_and_accuracy(self.model, self.data.test_images, self.data.test_labels, self.mean,
                                       batch_size=EVAL_BATCH)
        test_loss, test_acc = torch.stack([loss, acc]).tolist()                                  # host sync
        weight_norm = float(torch.sqrt(cast(Tensor, sum(p.detach().double().pow(2).sum() for p in self.params))))
        return {"test_loss": finite_or_worst(test_loss), "test_acc": finite_or_worst(test_acc),
                "weight_norm": finite_or_worst(weight_norm)}

    def diverged_test_metrics(self) -> dict[str, float]:
        return {"test_loss": DIVERGED_LOSS, "test_acc": 0.0, "weight_norm": DIVERGED_LOSS}

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"generators": {name: g.get_state() for name, g in self.generators.items()},
                "sde_time": self.sde_time}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name, g in self.generators.items():
            g.set_state(state["generators"][name])
        self.sde_time = float(state["sde_time"])


STUDY = register(Study(
    name="scaling", config=ScalingConfig, loop=lambda config: ScalingLoop(ScalingConfig.from_dict(config)),
    default_model="preresnet32",
    metrics=frozenset({"test_acc", "test_loss", "train_loss", "train_acc", "grad_norm_sq", "grad_noise",
                       "noise_scale"}),
))
