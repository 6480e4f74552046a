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
- ``schedule``: a function of the budget fraction (`tune_lip.studies.budget.lr_at`), stepped
  every step or, with ``interval: epoch``, at each epoch's start (of the draw: 2B for SVAG);
  ``step`` with ``milestones: [0.5, 0.75]`` is the SVAG code's x0.1 at epochs 80 and 120 of 160.
- ``drop_last``: each epoch's permutation cut into whole batches, the rest dropped (the SVAG
  code's ``drop_last_batch``); otherwise an endless stream in which a batch may straddle epochs.
- ``dataset.normalize: mean_std``: inputs (x/255 − mean)/std (the SVAG code's Normalize, with
  its CIFAR-10 mean and std set in ``dataset.mean``/``dataset.std``); default ``mean``: x/255 − mean.
- ``feature_rank`` (every evaluation, unless ``feature_rank_batch`` is 0): the effective rank
  (`tune_lip.nn.features.effective_rank`) of the penultimate features (``model.features``, the
  frozen head's input) on a fixed batch of the first validation images, eval-mode norms.
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
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from tune_lip.data.augment import augment_batch
from tune_lip.data.datasets import ImageData, convert_and_center
from tune_lip.data.sampling import BatchOrder
from tune_lip.errors import ConfigError
from tune_lip.nn.features import effective_rank
from tune_lip.nn.losses import cross_entropy_and_accuracy
from tune_lip.nn.models import build_model
from tune_lip.nn.optim import build_optimizer
from tune_lip.nn.sam import buffers_restored, sam_step, top_hessian_eigenvalue
from tune_lip.nn.scaling_rules import gradient_noise, ngd_backward, ngd_weights, svag_objective
from tune_lip.studies.budget import lr_at, schedule_clock
from tune_lip.studies.config import pick_device, training_data
from tune_lip.studies.loop import DIVERGED_LOSS, ModelLoop, finite_or_worst
from tune_lip.studies.registry import Study, register

# The typed config lives in scaling_config; every name this module held before is still importable here.
from tune_lip.studies.scaling_config import (  # noqa: F401
    BUDGET_RULES,
    GRADIENTS,
    LR_RULES,
    NORMS,
    OPTIMIZERS,
    AugmentConfig,
    Budget,
    DataConfig,
    GradientConfig,
    ModelConfig,
    OptimizerConfig,
    ScalingConfig,
    ScalingOptimizerConfig,
    ScheduleConfig,
    SharpnessConfig,
    UserError,
    _check_int,
    _from_dict,
    _model_config,
    _scaling_model,
    _section,
    config_to_dict,
    parse_budget,
    scaled_lr,
)

__all__ = ["BUDGET_RULES", "GRADIENTS", "LR_RULES", "GradientConfig", "ScalingConfig", "ScalingLoop",
           "ScalingOptimizerConfig"]

EVAL_BATCH = 1024   # examples per evaluation forward pass


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
        self.data = training_data(cfg.dataset, self.device, data)   # the validation split held out
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
        self.draw = len(self.pool) if g.name == "ngd" else cfg.draw
        self.steps_per_epoch = cfg.steps_per_epoch(len(self.pool))   # of the draw; whole with drop_last
        super().__init__(cfg, total_steps=total_steps, examples_per_step=self.draw)
        self.total_steps: int = total_steps

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, input_shape=self.data.input_shape,
                                 num_classes=self.data.num_classes, **cfg.model.options).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]   # PreResNet's head is frozen
        if cfg.feature_rank_batch and not callable(getattr(self.model, "features", None)):
            raise ConfigError("feature_rank_batch", f"model {cfg.model.name!r} has no features(x); set it to 0")
        self.lr = cfg.optimizer.lr(b)
        self.peak_lr = self.lr / self.l
        self.optimizer = build_optimizer(cfg.optimizer.torch_config(self.peak_lr), self.params)
        for group in self.optimizer.param_groups:   # lr_now before any step: the first step's
            group["lr"] = self._lr(0)
        self.mean = self.data.mean_tensor()                                  # (C,)
        self.std = self.data.std_tensor()              # (C,): all 1.0 unless dataset.normalize: mean_std
        self.augment = not cfg.augmentation.is_identity
        self.sde_time = 0.0         # Σ lr over the steps taken: the SDE's time
        self.measure_every = cfg.grad_stats_every   # gradient-noise statistics, off the clock
        self.batch_order = BatchOrder(num_examples=len(self.pool), batch_size=self.draw, seed=cfg.seed,
                                      device=self.device)
        # feature_rank's fixed batch: the first validation images (without a split, the data
        # order's first training images), uint8 (B_r, H, W, C).
        n = cfg.feature_rank_batch
        self.rank_images = (self.data.val_images[:n] if self.data.val_images is not None
                            else self.data.train_batch(self.batch_indices(0)[:n])[0])

    def progress(self) -> dict[str, float]:
        """steps, examples (drawn by the gradient estimates), sde_time (Σ lr_now over the steps so far)."""
        return {"steps": self.steps, "examples": self.examples, "sde_time": self.sde_time,
                "wall_seconds": self.wall_seconds}

    def batch_indices(self, step: int) -> Tensor:
        """Training-set indices of step ``step``: (draw,), a pure function of (seed, step)."""
        if not self.cfg.drop_last:
            return self.pool[self.batch_order(step)]
        epoch, k = divmod(step, int(self.steps_per_epoch))   # the epoch's k-th whole batch
        return self.pool[self.batch_order.permutation(epoch)[k * self.draw:(k + 1) * self.draw]]

    def _inputs(self, idx: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x, y = self.data.train_batch(idx)                                   # (n, H, W, C) uint8, (n,)
        if generator is not None and self.augment:
            x = augment_batch(x, self.cfg.augmentation, generator)
        return convert_and_center(x, self.mean, self.std), y                # (n, C, H, W), (n,)

    def _losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example cross-entropy (n,) and the number of correct predictions (0-d)."""
        scores = self.model(x)                                              # (n, num_classes)
        return F.cross_entropy(scores, y, reduction="none"), (scores.detach().argmax(dim=1) == y).sum()

    # ------------------------------------------------------------------ training
    def _lr(self, step: int) -> float:
        """The step size of step ``step`` (0-based): the schedule at that point, peak ``peak_lr``;
        with ``interval: epoch`` the schedule's clock is the epoch (of the draw) the step is in."""
        schedule = self.cfg.schedule
        ticks: int | None
        if schedule.interval == "epoch" and self.cfg.drop_last:
            per_epoch = int(self.steps_per_epoch)
            epochs = -(-self.total_steps // per_epoch)
            fraction, ticks = (step // per_epoch) / epochs, epochs
        else:
            fraction, ticks = schedule_clock(step, schedule=schedule, total_steps=self.total_steps,
                                             batch_size=self.draw, num_train=len(self.pool))
        return lr_at(fraction, peak_lr=self.peak_lr, schedule=schedule, total_steps=ticks)

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
    def eval_metrics(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """loss and acc on one split (eval mode); `ModelLoop` prefixes val_ or test_."""
        loss, acc = cross_entropy_and_accuracy(self.model, images, labels, self.mean, batch_size=EVAL_BATCH,
                                               std=self.std)
        loss_value, acc_value = torch.stack([loss, acc]).tolist()                                # host sync
        return {"loss": finite_or_worst(loss_value), "acc": finite_or_worst(acc_value)}

    def diverged_eval_metrics(self) -> dict[str, float]:
        return {"loss": DIVERGED_LOSS, "acc": 0.0}

    @torch.no_grad()
    def feature_rank(self) -> float:
        """Effective rank of the penultimate features on the fixed batch `rank_images`, eval-mode
        norms: between 1 (collapsed) and min(batch, feature width). One forward pass, one SVD."""
        self.model.eval()
        features = cast(Any, self.model).features(convert_and_center(self.rank_images, self.mean, self.std))  # (B_r, D)
        self.model.train()
        return effective_rank(features)

    @torch.no_grad()
    def weight_metrics(self) -> dict[str, float]:
        """weight_norm: ‖w‖ of the trainable parameters; feature_rank (unless feature_rank_batch is 0)."""
        weight_norm = float(torch.sqrt(cast(Tensor, sum(p.detach().double().pow(2).sum() for p in self.params))))
        out = {"weight_norm": finite_or_worst(weight_norm)}
        if self.cfg.feature_rank_batch:
            out["feature_rank"] = self.feature_rank()
        return out

    def diverged_weight_metrics(self) -> dict[str, float]:
        out = {"weight_norm": DIVERGED_LOSS}
        if self.cfg.feature_rank_batch:
            out["feature_rank"] = 1.0   # fully collapsed
        return out

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
    # What a search may optimise: validation metrics (test_* come once, at a trial's end).
    metrics=frozenset({"val_acc", "val_loss", "train_loss", "train_acc", "grad_norm_sq", "grad_noise",
                       "noise_scale", "weight_norm", "feature_rank"}),
    legacy_metrics={"test_acc": "test_acc", "test_loss": "test_loss"},   # every report's, before the split
))
