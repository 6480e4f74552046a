"""Per-sample on-device augmentation: reproducibility, crop/flip/erase geometry, jitter, config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tune_lip.data.augment import AUGMENTATIONS, AugmentConfig, augment_batch


def gen(seed: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def batch(b: int = 32, h: int = 12, w: int = 12, c: int = 3, seed: int = 0) -> torch.Tensor:
    """Random uint8 (B, H, W, C) with values >= 1: a 0 can only come from padding or erasing."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (b, h, w, c), dtype=torch.uint8, generator=g)


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(H, W, C) image moved by (dy, dx) pixels, zeros where nothing moved in."""
    H, W, _ = img.shape
    out = torch.zeros_like(img)
    out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        img[max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def find_shift(out: torch.Tensor, img: torch.Tensor, pad: int) -> tuple[int, int] | None:
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            if torch.equal(out, shifted(img, dy, dx)):
                return dy, dx
    return None


@pytest.mark.parametrize("preset", list(AUGMENTATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_dtype_shape_and_are_reproducible(preset, channels):
    x = batch(c=channels)
    cfg = AugmentConfig.from_dict(preset)
    y1 = augment_batch(x, cfg, gen(7))
    y2 = augment_batch(x, cfg, gen(7))
    assert y1.dtype == torch.uint8 and y1.shape == x.shape and y1.device == x.device
    assert torch.equal(y1, y2)  # same generator state -> bit-identical output
    if preset != "none":
        assert not torch.equal(augment_batch(x, cfg, gen(8)), y1)  # another seed, another batch


def test_none_is_identity_and_input_is_never_modified():
    x = batch()
    assert augment_batch(x, AUGMENTATIONS["none"], gen()) is x
    before = x.clone()
    augment_batch(x, AUGMENTATIONS["crop_flip_jitter_erase"], gen())
    assert torch.equal(x, before)


def test_generator_advances_so_consecutive_batches_differ():
    x, g, cfg = batch(), gen(), AUGMENTATIONS["crop_flip"]
    assert not torch.equal(augment_batch(x, cfg, g), augment_batch(x, cfg, g))


def test_crop_only_shifts_content_per_sample():
    pad = 3
    x = batch(b=48, h=10, w=9)
    y = augment_batch(x, AugmentConfig(crop=pad), gen(1))
    shifts = [find_shift(y[i], x[i], pad) for i in range(len(x))]
    # Every sample is its original moved by at most `pad` pixels, with zeros moved in.
    assert all(s is not None for s in shifts)
    # ... and samples get their own offsets, covering the whole range.
    assert len(set(shifts)) > 20
    assert {s[0] for s in shifts} == set(range(-pad, pad + 1))


def test_identical_samples_get_different_crops():
    x = batch(b=1).expand(16, -1, -1, -1).contiguous()
    y = augment_batch(x, AugmentConfig(crop=4), gen(2))
    assert len({bytes(y[i].numpy()) for i in range(16)}) > 8


def test_flip_mirrors_some_samples_horizontally():
    x = batch(b=64)
    y = augment_batch(x, AugmentConfig(flip=True), gen(3))
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    mirrored = torch.tensor([torch.equal(y[i], x[i].flip(1)) for i in range(64)])
    assert torch.all(kept ^ mirrored)  # each sample is exactly one of the two
    assert 16 < int(mirrored.sum()) < 48  # probability 1/2 per sample


def test_crop_and_flip_compose():
    pad = 2
    x = batch(b=32, h=8, w=8)
    y = augment_batch(x, AugmentConfig(crop=pad, flip=True), gen(4))
    for i in range(32):
        assert (find_shift(y[i], x[i], pad) is not None
                or find_shift(y[i].flip(1), x[i], pad) is not None)


def test_erase_sets_one_rectangle_to_zero():
    x = batch(b=64, h=32, w=32)
    y = augment_batch(x, AugmentConfig(erase=1.0), gen(5))
    for i in range(64):
        changed = (y[i] != x[i]).any(-1)  # (H, W)
        assert changed.any()  # p = 1: every sample is erased
        rows = changed.any(1).nonzero().flatten()
        cols = changed.any(0).nonzero().flatten()
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        # The changed pixels fill their bounding box, are all zero, and nothing else changed.
        assert changed[box].all() and int(changed.sum()) == changed[box].numel()
        assert (y[i][box] == 0).all()
        area = changed[box].numel() / (32 * 32)
        assert 0.01 < area < 0.4  # erase_scale (0.02, 0.33), up to rounding and clipping


def test_erase_probability():
    x = batch(b=400, h=8, w=8, c=1)
    y = augment_batch(x, AugmentConfig(erase=0.5), gen(6))
    erased = (y != x).flatten(1).any(1).float().mean()
    assert 0.4 < erased < 0.6


def test_jitter_keeps_gray_gray_and_flat_flat():
    # Brightness, contrast and saturation all act equally on R, G and B of a gray image.
    gray = batch(b=32, c=1).expand(-1, -1, -1, 3).contiguous()
    y = augment_batch(gray, AugmentConfig(jitter=0.5), gen(7))
    assert torch.equal(y[..., 0], y[..., 1]) and torch.equal(y[..., 1], y[..., 2])
    # A flat image stays flat (contrast pulls towards its own mean), at a per-sample level.
    flat = torch.full((32, 6, 6, 1), 100, dtype=torch.uint8)
    z = augment_batch(flat, AugmentConfig(jitter=0.5), gen(8))
    assert torch.all(z == z[:, :1, :1, :])
    assert len(z[:, 0, 0, 0].unique()) > 10  # samples get their own factors
    assert int(z.min()) >= 50 and int(z.max()) <= 150  # brightness factor in [0.5, 1.5]


def test_no_host_sync_on_cpu(monkeypatch):
    # Any conversion of a tensor to a Python value would sync with the device on a GPU.
    def refuse(*args, **kwargs):
        raise AssertionError("augment_batch converted a tensor to a Python value")

    x = batch()
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    with pytest.raises(AssertionError):  # the trap works
        bool(x.sum() > 0)
    augment_batch(x, AUGMENTATIONS["crop_flip_jitter_erase"], gen())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stays_on_device_without_sync():
    x = batch().cuda()
    cfg = AUGMENTATIONS["crop_flip_jitter_erase"]
    torch.cuda.set_sync_debug_mode("error")
    try:
        y1 = augment_batch(x, cfg, gen(1, "cuda"))
        y2 = augment_batch(x, cfg, gen(1, "cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert y1.is_cuda and torch.equal(y1, y2)


@settings(max_examples=60, deadline=None)
@given(
    images=hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7),
                                          st.sampled_from([1, 3]))),
    pad=st.integers(0, 4),
    flip=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_crop_flip_only_moves_pixels(images, pad, flip, seed):
    x = torch.from_numpy(images)
    y = augment_batch(x, AugmentConfig(crop=pad, flip=flip), gen(seed))
    assert y.shape == x.shape and y.dtype == torch.uint8
    for i in range(len(x)):
        # Every output pixel (a C-vector) is one of the sample's own pixels or padding zeros.
        allowed = {tuple(p) for p in x[i].reshape(-1, x.shape[3]).tolist()} | {(0,) * x.shape[3]}
        assert {tuple(p) for p in y[i].reshape(-1, x.shape[3]).tolist()} <= allowed


# ---------------------------------------------------------------------------------------------
# AugmentConfig


def test_presets():
    assert AUGMENTATIONS["none"] == AugmentConfig() and AUGMENTATIONS["none"].is_identity
    assert AUGMENTATIONS["crop_flip"] == AugmentConfig(crop=4, flip=True)
    assert AUGMENTATIONS["crop_flip_erase"] == AugmentConfig(crop=4, flip=True, erase=0.5)
    full = AUGMENTATIONS["crop_flip_jitter_erase"]
    assert full.crop == 4 and full.flip and full.jitter > 0 and full.erase == 0.5


def test_from_dict():
    assert AugmentConfig.from_dict("crop_flip") == AUGMENTATIONS["crop_flip"]
    spec = {"name": "crop_flip_erase", "crop": 2, "erase_scale": [0.1, 0.2]}  # as YAML gives it
    assert AugmentConfig.from_dict(spec) == AugmentConfig(crop=2, flip=True, erase=0.5,
                                                          erase_scale=(0.1, 0.2))
    # name defaults to "none"
    assert AugmentConfig.from_dict({"flip": True}) == AugmentConfig(flip=True)
    assert AugmentConfig.from_dict(None) == AugmentConfig()
    with pytest.raises(ValueError, match="unknown augmentation preset 'crop'; valid: none, crop_"):
        AugmentConfig.from_dict("crop")
    with pytest.raises(ValueError, match="unknown augmentation key 'pad'; valid: name, crop, flip"):
        AugmentConfig.from_dict({"name": "crop_flip", "pad": 4})


@pytest.mark.parametrize("bad", [
    {"crop": -1}, {"crop": 2.5}, {"flip": "yes"}, {"jitter": -0.1}, {"erase": 1.5},
    {"erase_scale": (0.5, 0.2)}, {"erase_scale": (0.0, 0.2)}, {"erase_scale": (0.1,)},
])
def test_invalid_config(bad):
    with pytest.raises(ValueError, match=f"augmentation.{next(iter(bad))}"):
        AugmentConfig(**bad)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentConfig().crop = 4  # type: ignore[misc]


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(batch().float(), AUGMENTATIONS["crop_flip"], gen())
    with pytest.raises(ValueError, match="uint8"):
        augment_batch(batch()[0], AUGMENTATIONS["crop_flip"], gen())
