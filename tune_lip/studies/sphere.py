"""The sphere study's budgeted training loop, free of Ray: three regimes of scale-invariant nets.

From *Training Scale-Invariant Neural Networks on the Sphere Can Happen in Three Regimes*
(Kodryan et al., 2022). A network whose scale-invariant (SI) weights w can be multiplied by
any c > 0 without changing its function has gradients orthogonal to w and ∝ 1/‖w‖, so an
SGD step of size lr moves the *direction* of w by ≈ lr/‖w‖² · ‖∇‖·‖w‖: what matters is the
**effective learning rate** ELR = lr / ‖w‖² (per step, dimensionless). Two modes:

- ``sphere``: fix the ELR (the original's ``--fix_elr``). The SI weights (all of them as one
  vector) stay on the sphere of their initial radius ρ₀ = ‖w₀‖: each step is SGD with
  lr = elr·ρ₀², then w is rescaled back to ‖w‖ = ρ₀, so lr/‖w‖² = elr at every step.
  ``fix_all_elr`` (the original's ``--fix_all_elr``, ``training_utils.fix_si_pnorms``): every
  conv filter is rescaled to one common norm r = sqrt(Σ‖w‖² / #filters), at init and after
  every step, with lr = elr·Σ‖w‖² (so ρ₀ is unchanged and every filter has the ELR
  lr/r² = elr·#filters). Hand-written here: no library has the projection.
- ``full``: plain SGD in the full parameter space (fixed lr, weight decay, momentum); ‖w‖
  drifts, and with it the ELR lr/‖w‖², which is reported.

Non-SI trainable parameters (the Af variants' BN affine and head) use ``optimizer.lr_other``
(0 freezes them). Reports, besides train and validation loss and accuracy (``val_loss``,
``val_acc``; ``test_loss``, ``test_acc`` once, at a trial's end): ``weight_norm`` (‖w‖ of
the SI weights), ``elr``, ``effective_grad_norm`` (‖∇_w L‖·‖w‖, the gradient on the unit
sphere), ``angular_update`` (radians between w_t and w_{t+1}), ``feature_rank`` (the effective
rank of the penultimate features on a fixed validation batch), optionally ``hessian_trace``;
and `SphereLoop.regime` labels the whole train-loss trajectory (converged/chaotic/diverged).

SAM (``optimizer.sam_rho > 0``, `tune_lip.nn.sam`) perturbs before the projection: gradients at w
(on the sphere), ε = ρ·g/‖g‖, gradients at w + ε, w restored, the per-filter gradient scaling,
the SGD step, then the projection. The SI weights' gradient is orthogonal to w, so w + ε lies
just off the sphere and, the net being scale-invariant, is an angular perturbation of
atan(ρ/ρ₀) radians. ``sharpness: {every: k}`` adds ``sharpness`` (the top Hessian eigenvalue
of the trainable weights on a fixed batch) to every k-th evaluation.

Determinism: as `tune_lip.studies.lipschitz` -- init from ``seed``, the batch at step t a pure
function of (seed, t), augmentation from one checkpointed generator.

Example:
    >>> cfg = SphereConfig.from_dict({"dataset": {"name": "synthetic", "batch_size": 32},
    ...     "model": {"name": "convnet_si", "width": 4}, "optimizer": {"elr": 1e-3},
    ...     "budget": {"steps": 4}, "reports": 4})
    >>> loop = SphereLoop(cfg)
    >>> m = loop.train_for(4)
    >>> round(m["elr"], 9), abs(m["weight_norm"] / loop.rho0 - 1) < 1e-6
    (0.001, True)
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
from tune_lip.nn.models.sphere_nets import ScaleInvariantNet
from tune_lip.nn.sam import (
    buffers_restored,
    hutchinson_trace,
    sam_gradients,
    top_hessian_eigenvalue,
)
from tune_lip.studies.config import pick_device, training_data
from tune_lip.studies.loop import DIVERGED_LOSS, LoopCheckpoint, ModelLoop, finite_or_worst  # noqa: F401 (LoopCheckpoint: re-exported)
from tune_lip.studies.registry import Study, register

# The typed config lives in sphere_config; every name this module held before is still importable here.
from tune_lip.studies.sphere_config import (  # noqa: F401
    MODES,
    SPHERE_MODELS,
    AugmentConfig,
    Budget,
    DataConfig,
    ModelConfig,
    SharpnessConfig,
    SphereConfig,
    SphereOptimizerConfig,
    UserError,
    _from_dict,
    _model_config,
    _section,
    _sphere_model,
    config_to_dict,
    parse_budget,
)

__all__ = ["SPHERE_MODELS", "MODES", "SphereOptimizerConfig", "SphereConfig", "SphereLoop"]

EVAL_BATCH = 1024   # examples per evaluation forward pass


def _filter_sq(w: Tensor) -> Tensor:
    """‖wᵢ‖² of every filter (output channel) of a conv weight: (out, 1, 1, 1), to broadcast."""
    return w.pow(2).sum(dim=tuple(range(1, w.dim())), keepdim=True)


class SphereLoop(ModelLoop):
    """Budgeted training of one scale-invariant network; see the module docstring.

    ``rho0``: ρ₀ = ‖w₀‖, the joint norm of the SI weights at initialisation.
    ``train_loss_history``: the mean train loss of every ``train_for`` slice, for `regime`.
    """

    def __init__(self, cfg: SphereConfig, *, data: ImageData | None = None) -> None:
        o = cfg.optimizer
        self.device = pick_device(cfg.device)
        self.data = training_data(cfg.dataset, self.device, data)   # the validation split held out
        steps = cfg.budget.total_steps(batch_size=cfg.dataset.batch_size, num_train=self.data.num_train)
        assert steps is not None   # steps, epochs and examples budgets are exact
        if steps < cfg.reports:
            raise ConfigError("budget", f"buys {steps} steps, fewer than the {cfg.reports} reports")
        super().__init__(cfg, total_steps=steps, examples_per_step=cfg.dataset.batch_size)

        torch.manual_seed(cfg.seed)
        self.model = cast(ScaleInvariantNet, build_model(
            cfg.model.name, input_shape=self.data.input_shape, num_classes=self.data.num_classes,
            **cfg.model.options).to(self.device))
        if o.fix_all_elr and cfg.model.name == "resnet18_si_af":   # as the original's train.py
            raise ConfigError("optimizer.fix_all_elr", "the paper's code fixes all filter norms only for "
                              "convnet_si, convnet_si_af and resnet18_si; use fix_all_elr: false")
        self.si: list[Tensor] = [p for p in self.model.scale_invariant_parameters()]
        others = [p for p in self.model.other_parameters() if p.requires_grad]
        if o.lr_other == 0:
            for p in others:
                p.requires_grad_(False)   # frozen: no gradient computed, nothing to update
            others = []
        with torch.no_grad():
            # fix_all_elr: the common filter norm keeps Σ‖w‖² (so ρ₀) as initialised.
            filters = sum(p.shape[0] for p in self.si)
            self.filter_norm0 = float(self._norm()) / math.sqrt(filters)
            if o.mode == "sphere" and o.fix_all_elr:
                self._project()
            self.rho0 = float(self._norm())
        # Sphere: lr = elr·ρ₀² makes lr/‖w‖² = elr while ‖w‖ = ρ₀ (with fix_all_elr too: ρ₀² = Σ‖w‖²).
        self.si_lr = o.lr if o.mode == "full" else o.elr * self.rho0 ** 2
        self.lr = self.si_lr   # reported as lr and, no schedule here, as lr_now
        groups = [{"params": self.si, "lr": self.si_lr}]
        if others:
            groups.append({"params": others, "lr": o.lr_other})
        self.optimizer = torch.optim.SGD(groups, lr=self.si_lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay)

        # dataset.normalize: mean_std (the paper's Normalize(mean, std)) divides by std; mean: std = 1.
        self.mean, self.std = self.data.mean_tensor(), self.data.std_tensor()   # (C,), (C,)
        self.aug_generator = torch.Generator(device=self.device)
        self.aug_generator.manual_seed(cfg.seed + 1)
        self.augment = not cfg.augmentation.is_identity
        self.train_loss_history: list[float] = []
        self.batch_order = BatchOrder(num_examples=self.data.num_train, batch_size=cfg.dataset.batch_size,
                                      seed=cfg.seed, device=self.device)
        # Sharpness's fixed batch: the data order's first examples (step 0's batch and on).
        self.sharpness_indices = self.batch_order.permutation(0)[:cfg.sharpness.batch_size]  # (B_s,)
        # feature_rank's fixed batch: the first validation images (without a split, the data
        # order's first training images), uint8 (B_r, H, W, C).
        n = cfg.feature_rank_batch
        self.rank_images = (self.data.val_images[:n] if self.data.val_images is not None
                            else self.data.train_batch(self.batch_order.permutation(0)[:n])[0])

    def batch_indices(self, step: int) -> Tensor:
        """Indices of the examples in step ``step``'s batch: (B,), a pure function of (seed, step)."""
        return self.batch_order(step)

    # ------------------------------------------------------------------ the sphere
    def _norm(self) -> Tensor:
        """‖w‖ of all SI weights as one vector: a float64 0-d tensor on the device (no sync)."""
        return torch.sqrt(cast(Tensor, sum(p.detach().double().pow(2).sum() for p in self.si)))

    @torch.no_grad()
    def _project(self) -> None:
        """Rescale the SI weights back onto their sphere: jointly to ρ₀, or (fix_all_elr) every
        filter to the common norm r = ρ₀/sqrt(#filters)."""
        if self.cfg.optimizer.fix_all_elr:
            for p in self.si:
                p.mul_((self.filter_norm0 / _filter_sq(p).double().sqrt()).float())
        else:
            # The scale in float64 keeps ‖w‖ within ~1e-7 (relative) of ρ₀ step after step.
            torch._foreach_mul_(self.si, (self.rho0 / self._norm()).float())

    def elr(self) -> float:
        """The current effective LR of the SI weights as one vector: lr/‖w‖². Host sync."""
        return self.si_lr / float(self._norm()) ** 2

    # ------------------------------------------------------------------ training
    def _inputs(self, idx: Tensor, *, augment: bool) -> tuple[Tensor, Tensor]:
        x, y = self.data.train_batch(idx)                                  # (B, H, W, C) uint8, (B,)
        if augment:
            x = augment_batch(x, self.cfg.augmentation, self.aug_generator)
        return convert_and_center(x, self.mean, self.std), y

    def _loss(self, idx: Tensor, *, augment: bool) -> tuple[Tensor, Tensor, Tensor]:
        x, y = self._inputs(idx, augment=augment)
        scores = self.model(x)                                             # (B, num_classes)
        return F.cross_entropy(scores, y), scores, y

    def start_slice(self) -> None:
        self.grad_sum = torch.zeros((), device=self.device, dtype=torch.float64)   # Σ ‖∇_w L‖·‖w‖
        self.angle_sum = torch.zeros((), device=self.device, dtype=torch.float64)  # Σ radians
        self.measured = 0

    def train_step(self, last: bool) -> tuple[Tensor, Tensor]:
        """One SGD step, then (sphere mode) the projection; measures the effective gradient norm
        and the angular update at every ``metrics_every``-th step, else at the slice's last.
        With SAM, the loss is at w and the measured gradient is the one the step uses (at w + ε)."""
        o, k = self.cfg.optimizer, self.cfg.metrics_every
        x, y = self._inputs(self.batch_indices(self.steps), augment=self.augment)
        scores = self.model(x)                                         # (B, num_classes)
        loss = F.cross_entropy(scores, y)
        if o.sam_rho > 0:   # perturb, re-take gradients and restore w; step and projection follow
            sam_gradients(self.model.parameters(), lambda: F.cross_entropy(self.model(x), y),
                          rho=o.sam_rho, adaptive=o.sam_adaptive, loss=loss)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        measure = (k > 0 and (self.steps + 1) % k == 0) or (last and self.measured == 0)
        grads = [cast(Tensor, p.grad) for p in self.si]                 # set by the backward above
        if measure:
            before = [p.detach().clone() for p in self.si]
            norm = self._norm()
            self.grad_sum += torch.sqrt(cast(Tensor, sum(g.double().pow(2).sum() for g in grads))) * norm
        self.optimizer.step()
        if o.mode == "sphere":
            self._project()
        if measure:
            # 2·asin(‖u − u'‖/2) between unit vectors: accurate for tiny angles, unlike acos(u·u').
            new_norm = self._norm()
            chord_sq = sum((a.double() / norm - b.detach().double() / new_norm).pow(2).sum()
                           for a, b in zip(before, self.si))
            chord = torch.sqrt(cast(Tensor, chord_sq))
            self.angle_sum += 2 * torch.asin(torch.clamp(chord / 2, max=1.0))
            self.measured += 1
        return loss.detach(), (scores.detach().argmax(dim=1) == y).sum()

    def weights_finite(self) -> bool:
        return math.isfinite(float(self._norm()))

    def slice_metrics(self, steps: int, mean_loss: float) -> dict[str, Any]:
        """weight_norm and elr at the slice's end; effective_grad_norm (‖∇_w L‖·‖w‖, the gradient on
        the unit sphere) and angular_update (radians) averaged over the measured steps (NaN if no
        step ran). ``lr`` is the SI weights' SGD LR: ``optimizer.lr`` in full mode, elr·ρ₀² on the
        sphere (with fix_all_elr too). Records the
        slice's mean train loss for `regime`."""
        if steps and not self.diverged:
            self.train_loss_history.append(mean_loss)
        nan = math.nan
        return {"weight_norm": float(self._norm()), "elr": self.elr(),
                "effective_grad_norm": float(self.grad_sum / self.measured) if self.measured else nan,
                "angular_update": float(self.angle_sum / self.measured) if self.measured else nan}

    def regime(self) -> str:
        """The trajectory's regime so far: ``converged``, ``chaotic`` or ``diverged``.

        Labels `train_loss_history` with `tune_lip.analysis.classify_regime`; a run whose loss
        or weights became non-finite is ``diverged`` outright.
        """
        if self.diverged:
            return "diverged"
        from tune_lip.analysis import classify_regime  # analysis imports pandas: only when asked

        return str(classify_regime(self.train_loss_history, num_classes=self.data.num_classes))

    def final_metrics(self) -> dict[str, str]:
        """Reported with the last report only: the trajectory's ``regime``."""
        return {"regime": self.regime()}

    # ------------------------------------------------------------------ evaluation
    def fixed_batch_loss(self) -> Tensor:
        """Cross-entropy on the Hessian's fixed batch: the first batch of the data order, not
        augmented, in train-mode BN (as in training). Updates BN running statistics."""
        self.model.train()
        return self._loss(self.batch_indices(0), augment=False)[0]

    def hessian_trace(self) -> tuple[float, float]:
        """Hutchinson estimate (and standard error) of the SI weights' Hessian trace on the
        fixed batch. The probes are drawn from ``seed`` afresh each call (the same probes at
        every report); BN running statistics are left as they were."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + 2)
        with buffers_restored(self.model):
            return hutchinson_trace(self.fixed_batch_loss, self.si, samples=self.cfg.hutchinson_samples,
                                    generator=g)

    def measure_sharpness(self) -> float:
        """Top eigenvalue of the trainable weights' Hessian on the fixed batch (`sharpness_indices`,
        not augmented), in train-mode BN as in training; BN running statistics are left as they
        were. The start vector is drawn from ``seed`` afresh each call. Units: loss per weight²
        (on the sphere ‖w‖ = ρ₀ is fixed, so values compare along a run)."""
        x, y = self._inputs(self.sharpness_indices, augment=False)
        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + 3)
        self.model.train()
        return top_hessian_eigenvalue(self.model, lambda: F.cross_entropy(self.model(x), y),
                                      iters=self.cfg.sharpness.iters, generator=g)

    def eval_metrics(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """loss and acc on one split (eval-mode BN); `ModelLoop` prefixes val_ or test_."""
        loss, acc = cross_entropy_and_accuracy(self.model, images, labels, self.mean, batch_size=EVAL_BATCH,
                                               std=self.std)
        loss_value, acc_value = torch.stack([loss, acc]).tolist()            # host sync
        return {"loss": finite_or_worst(loss_value), "acc": acc_value}

    def diverged_eval_metrics(self) -> dict[str, float]:
        return {"loss": DIVERGED_LOSS, "acc": 0.0}

    @torch.no_grad()
    def feature_rank(self) -> float:
        """Effective rank (`tune_lip.nn.features.effective_rank`) of the penultimate features, the
        head's input, on the fixed batch `rank_images`, in eval-mode BN: between 1 (collapsed)
        and min(batch, feature width). One forward pass and one SVD; host sync."""
        self.model.eval()
        model = cast(ScaleInvariantNet, self.model)
        features = model.embed(convert_and_center(self.rank_images, self.mean, self.std))   # (B_r, D)
        self.model.train()
        return effective_rank(features)

    def weight_metrics(self) -> dict[str, float]:
        """``feature_rank`` (unless ``feature_rank_batch`` is 0) and ``hessian_trace`` of the SI
        weights, when configured (``weight_norm`` is a slice metric)."""
        out = {"feature_rank": self.feature_rank()} if self.cfg.feature_rank_batch else {}
        if self.cfg.hessian_trace:
            out["hessian_trace"] = self.hessian_trace()[0]
        return out

    def diverged_weight_metrics(self) -> dict[str, float]:
        out = {"feature_rank": 1.0} if self.cfg.feature_rank_batch else {}   # 1: fully collapsed
        if self.cfg.hessian_trace:
            out["hessian_trace"] = DIVERGED_LOSS
        return out

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"aug_generator": self.aug_generator.get_state(), "train_loss_history": list(self.train_loss_history),
                "rho0": self.rho0, "filter_norm0": self.filter_norm0}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.aug_generator.set_state(state["aug_generator"])
        self.train_loss_history = [float(v) for v in state["train_loss_history"]]
        self.rho0 = float(state["rho0"])
        # A checkpoint from before fix_all_elr has no filter_norm0 (its runs never used one).
        self.filter_norm0 = float(state.get("filter_norm0", self.filter_norm0))


STUDY = register(Study(
    name="sphere", config=SphereConfig, loop=lambda config: SphereLoop(SphereConfig.from_dict(config)),
    default_model="convnet_si",
    # What a search may optimise: validation metrics (test_* come once, at a trial's end).
    metrics=frozenset({"train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "elr",
                       "effective_grad_norm", "angular_update", "feature_rank"}),
    legacy_metrics={"test_acc": "test_acc", "test_loss": "test_loss"},   # every report's, before the split
))
