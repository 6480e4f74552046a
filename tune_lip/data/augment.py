"""Per-sample data augmentation of uint8 image batches, on the device, in one vectorised pass.

`augment_batch` gives every sample of a batch its own random crop offset (zero padding),
horizontal flip, colour-jitter factors and erasing rectangle, with no Python loop over the
batch, no host sync, and all randomness drawn from one `torch.Generator` on the images'
device, so a run is exactly reproducible from the generator's state.

Hand-written on purpose: torchvision's transforms (v1 and v2) draw *one* set of random
parameters per call, so applied to a batch they crop, flip, jitter and erase every sample
alike, and their functional forms take Python scalars, not per-sample tensors. Per-image
torchvision transforms in a DataLoader are ~30x slower on this project's machines (DESIGN.md,
"Anchors"). The maths follows torchvision's: RandomCrop(padding=crop) with zero fill,
RandomHorizontalFlip(0.5), ColorJitter(brightness=contrast=saturation=jitter) in that fixed
order, and RandomErasing(p=erase, scale=erase_scale, ratio=(0.3, 3.3), value=0), except that
an erasing rectangle too large for the image is clipped to it instead of re-drawn.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    >>> y = augment_batch(x, AugmentConfig.from_dict("crop_flip"), g)
    >>> y.shape, y.dtype
    (torch.Size([16, 32, 32, 3]), torch.uint8)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "AUGMENTATIONS", "augment_batch"]

_ERASE_RATIO = (0.3, 3.3)  # erasing rectangle's height/width range, torchvision's default
_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations `augment_batch` applies; the defaults turn everything off.

    Build one from a search space with `from_dict` (a preset name plus overrides).

    Example:
        >>> AugmentConfig.from_dict({"name": "crop_flip", "crop": 2})
        AugmentConfig(crop=2, flip=True, jitter=0.0, erase=0.0, erase_scale=(0.02, 0.33))
    """

    crop: int = 0          # pixels of zero padding per side, then a random H x W crop; 0 = off
    flip: bool = False     # horizontal flip with probability 1/2
    jitter: float = 0.0    # strength s: brightness, contrast, saturation factors
    #                        ~ U[max(0, 1 - s), 1 + s] per sample; 0 = off
    erase: float = 0.0     # probability that a sample gets one rectangle set to 0; 0 = off
    erase_scale: tuple[float, float] = (0.02, 0.33)  # erased area / (H*W): (min, max)

    def __post_init__(self) -> None:
        if not isinstance(self.crop, int) or isinstance(self.crop, bool) or self.crop < 0:
            raise ValueError(f"augmentation.crop must be an integer >= 0 (pixels), "
                             f"got {self.crop!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"augmentation.flip must be true or false, got {self.flip!r}")
        for key in ("jitter", "erase"):
            value = getattr(self, key)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value)):
                raise ValueError(f"augmentation.{key} must be a number, got {value!r}")
            object.__setattr__(self, key, float(value))  # so that 0 and 0.0 configs compare equal
        if self.jitter < 0:
            raise ValueError(f"augmentation.jitter must be >= 0, got {self.jitter}")
        if not 0.0 <= self.erase <= 1.0:
            raise ValueError(f"augmentation.erase is a probability in [0, 1], got {self.erase}")
        scale = self.erase_scale
        if (not isinstance(scale, (tuple, list)) or len(scale) != 2
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale)
                or not 0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"augmentation.erase_scale must be [min, max] with "
                             f"0 < min <= max <= 1, got {scale!r}")
        object.__setattr__(self, "erase_scale", (float(scale[0]), float(scale[1])))

    @property
    def is_identity(self) -> bool:
        """True when `augment_batch` returns its input unchanged."""
        return self.crop == 0 and not self.flip and self.jitter == 0.0 and self.erase == 0.0

    @classmethod
    def from_dict(cls, spec: str | Mapping[str, Any] | None) -> AugmentConfig:
        """A preset by name, or ``{name: preset, **overrides}`` (name defaults to ``"none"``).

        Raises ValueError naming the valid presets or keys.

        Example:
            >>> AugmentConfig.from_dict("crop_flip_erase").erase
            0.5
        """
        if spec is None:
            spec = {}
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping):
            raise ValueError(f"augmentation must be a preset name or a mapping, got {spec!r}")
        overrides = dict(spec)
        name = overrides.pop("name", "none")
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation preset {name!r}; "
                             f"valid: {', '.join(AUGMENTATIONS)}")
        valid = [f.name for f in fields(cls)]
        for key in overrides:
            if key not in valid:
                raise ValueError(f"unknown augmentation key {key!r}; "
                                 f"valid: name, {', '.join(valid)}")
        return replace(AUGMENTATIONS[name], **overrides)


AUGMENTATIONS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "crop_flip": AugmentConfig(crop=4, flip=True),
    "crop_flip_erase": AugmentConfig(crop=4, flip=True, erase=0.5),
    # Mild jitter: CIFAR-sized images lose class evidence quickly under strong colour changes.
    "crop_flip_jitter_erase": AugmentConfig(crop=4, flip=True, jitter=0.2, erase=0.5),
}


def augment_batch(images: torch.Tensor, cfg: AugmentConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """Augment every sample of a uint8 (B, H, W, C) batch independently; returns uint8 (B, H, W, C).

    Order: crop and flip (one gather), colour jitter, erasing. Runs on the images' device with
    no host sync; ``generator`` must live on that device and is the only source of randomness,
    so the same generator state gives the same output. The input is never modified; with an
    identity config (`AugmentConfig.is_identity`) it is returned as is.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.arange(16, dtype=torch.uint8).view(1, 4, 4, 1)
        >>> augment_batch(x, AugmentConfig(), g) is x
        True
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (B, H, W, C), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if generator.device.type != images.device.type:
        raise ValueError(f"generator is on {generator.device}, images on {images.device}; "
                         f"create the generator with torch.Generator(device=images.device)")
    if cfg.is_identity:
        return images
    out = images
    if cfg.crop or cfg.flip:
        out = _crop_flip(out, cfg.crop, cfg.flip, generator)
    if cfg.jitter:
        out = _jitter(out, cfg.jitter, generator)
    if cfg.erase:
        out = _erase(out, cfg.erase, cfg.erase_scale, generator)
    return out


def _crop_flip(images: torch.Tensor, pad: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    B, H, W, _ = images.shape
    dev = images.device
    rows = torch.arange(H, device=dev)  # (H,)
    cols = torch.arange(W, device=dev)  # (W,)
    dy: torch.Tensor | int
    dx: torch.Tensor | int
    if pad:
        source = F.pad(images, (0, 0, pad, pad, pad, pad))  # (B, H + 2p, W + 2p, C), zeros around
        dy = torch.randint(0, 2 * pad + 1, (B, 1), generator=g, device=dev)  # (B, 1) crop offsets
        dx = torch.randint(0, 2 * pad + 1, (B, 1), generator=g, device=dev)
    else:
        source, dy, dx = images, 0, 0
    row_idx = rows + dy  # (B, H) or (H,)
    col_idx = cols.expand(B, W)
    if flip:
        flipped = torch.rand(B, 1, generator=g, device=dev) < 0.5  # (B, 1)
        # Flipping the crop is reading the crop window right to left.
        col_idx = torch.where(flipped, W - 1 - cols, cols)  # (B, W)
    col_idx = col_idx + dx
    batch_idx = torch.arange(B, device=dev).view(B, 1, 1)
    row_idx = row_idx.expand(B, H)
    # One gather: out[b, i, j] = source[b, i + dy_b, (j or W-1-j) + dx_b]
    return source[batch_idx, row_idx[:, :, None], col_idx[:, None, :]]  # (B, H, W, C)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """float (B, H, W, C) -> luma (B, H, W, 1); a single channel is its own luma."""
    if x.shape[3] == 1:
        return x
    weights = torch.tensor(_GRAY, dtype=x.dtype, device=x.device)
    return (x * weights).sum(dim=3, keepdim=True)


def _jitter(images: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    B, _, _, C = images.shape
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    # Always draw all three factors, so the random stream does not depend on C.
    u = torch.rand(B, 3, 1, 1, 1, generator=g, device=images.device)  # (B, 3, 1, 1, 1)
    factors = lo + (hi - lo) * u
    brightness, contrast, saturation = factors.unbind(1)  # each (B, 1, 1, 1)
    x = images.to(torch.float32)  # (B, H, W, C), 0..255
    # Clamp after every blend, as torchvision does, so each step sees a valid image.
    x = (x * brightness).clamp_(0.0, 255.0)
    gray_mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (contrast * x + (1.0 - contrast) * gray_mean).clamp_(0.0, 255.0)
    if C == 3:
        x = (saturation * x + (1.0 - saturation) * _gray(x)).clamp_(0.0, 255.0)
    return x.round_().to(torch.uint8)


def _erase(images: torch.Tensor, p: float, scale: tuple[float, float],
           g: torch.Generator) -> torch.Tensor:
    B, H, W, _ = images.shape
    dev = images.device
    u = torch.rand(B, 5, generator=g, device=dev)  # (B, 5): apply, area, aspect, top, left
    apply = u[:, 0] < p  # (B,)
    area = H * W * (scale[0] + (scale[1] - scale[0]) * u[:, 1])  # (B,) pixels
    log_lo, log_hi = math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 2])  # (B,) height / width, log-uniform
    h = torch.sqrt(area * aspect).round().clamp(1, H)  # (B,) float, whole pixels
    w = torch.sqrt(area / aspect).round().clamp(1, W)
    top = torch.floor(u[:, 3] * (H - h + 1))  # (B,) uniform over the valid positions
    left = torch.floor(u[:, 4] * (W - w + 1))
    rows = torch.arange(H, device=dev, dtype=torch.float32)
    cols = torch.arange(W, device=dev, dtype=torch.float32)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]  # (B, H, W)
    return images.masked_fill(mask[..., None], 0)
