"""On-device augmentation: per-sample and per-batch (SU's) draws; reproducibility, crop/flip/erase
geometry, reflect padding, erase size and value, jitter, config.

SU = *Scaling Up Lipschitz Networks*, lipschitz/training/augmentation.py (augmentation94percent,
color_crop_flip_erase), applied to the centred batch in lipschitz/training/trainer.py. Measured with
torchvision 0.29.1 on a (4, 3, 32, 32) batch: RandomCrop(padding=4, reflect) gave every sample the
same offset, RandomErasing(p=1, scale=1/16, ratio=1) the same 8x8 square; scale 0 erases nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tune_lip.data.augment import AUGMENTATIONS, AugmentConfig, augment_batch, augment_centred


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
    # The per-batch presets (SU's) run per sample too, with draws: per_sample.
    cfg = dataclasses.replace(AugmentConfig.from_dict(preset), draws="per_sample")
    mean = torch.full((channels,), 0.5)
    y1 = augment_batch(x, cfg, gen(7), mean=mean)
    y2 = augment_batch(x, cfg, gen(7), mean=mean)
    assert y1.dtype == torch.uint8 and y1.shape == x.shape and y1.device == x.device
    assert torch.equal(y1, y2)  # same generator state -> bit-identical output
    if preset != "none":
        assert not torch.equal(augment_batch(x, cfg, gen(8), mean=mean), y1)  # another seed, another batch


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
    assert full.crop == 4 and full.flip and full.erase == 0.5
    assert full.brightness == full.contrast == full.saturation == 0.2 and full.jitter == 0.0  # shorthand resolved
    # SU (lipschitz/training/augmentation.py): augmentation94percent and color_crop_flip_erase.
    su = AUGMENTATIONS["94percent"]
    assert (su.crop, su.pad_mode, su.flip, su.erase, su.erase_scale, su.erase_ratio, su.erase_value, su.draws) == \
        (4, "reflect", True, 1.0, (1 / 16, 1 / 16), (1.0, 1.0), "mean", "per_batch")
    colour = AUGMENTATIONS["color_crop_flip_erase"]
    assert (colour.brightness, colour.contrast, colour.saturation) == (0.2, 0.0, 0.1)
    assert dataclasses.replace(colour, brightness=0.0, saturation=0.0) == su


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


# ---------------------------------------------------------------------------------------------
# SU's augmentation: reflect padding, a fixed 8x8 erased square, draws shared by the batch


def _centred(b: int = 6, c: int = 3, hw: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, hw, hw, generator=g) - 0.5 + 1e-3   # no exact zeros: 0 marks erasing


def test_per_batch_erases_one_shared_8x8_square_to_the_mean_colour():
    x = _centred()
    cfg = dataclasses.replace(AUGMENTATIONS["94percent"], crop=0, flip=False)
    for seed in range(5):
        y = augment_centred(x, cfg, gen(seed), mean=torch.zeros(3))
        erased = (y == 0).all(dim=1)                                     # (B, H, W)
        assert torch.equal(erased, erased[:1].expand_as(erased))         # the same square in every sample
        rows, cols = erased[0].nonzero(as_tuple=True)
        assert len(rows) == 64 and rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        torch.testing.assert_close(y[~erased[:, None].expand_as(y)], x[~erased[:, None].expand_as(x)])


def test_per_batch_crop_is_torch_reflect_padding_shared_by_the_batch():
    x = _centred(hw=12)
    cfg = AugmentConfig(crop=4, pad_mode="reflect", draws="per_batch")
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")                     # torchvision's padding_mode="reflect"
    offsets = set()
    for seed in range(12):
        y = augment_centred(x, cfg, gen(seed), mean=torch.zeros(3))
        match = [(i, j) for i in range(9) for j in range(9) if torch.equal(y, padded[:, :, i:i + 12, j:j + 12])]
        assert len(match) == 1                                           # one window for the whole batch
        offsets.add(match[0])
    assert len(offsets) > 4


def test_per_batch_zero_padding_is_black_after_centring():
    x = _centred(hw=8)
    mean = torch.tensor([0.2, 0.4, 0.6])
    cfg = AugmentConfig(crop=3, draws="per_batch")
    ys = [augment_centred(x, cfg, gen(s), mean=mean) for s in range(8)]
    black = -mean.view(1, 3, 1, 1)
    assert any(torch.isclose(y, black.expand_as(y)).all(dim=1).any() for y in ys)


def test_per_sample_reflect_crop_matches_torch_reflect_and_differs_per_sample():
    x = batch(b=16, h=10, w=10)
    cfg = AugmentConfig(crop=3, pad_mode="reflect")
    y = augment_batch(x, cfg, gen(3))
    padded = F.pad(x.permute(0, 3, 1, 2).float(), (3, 3, 3, 3), mode="reflect")   # (B, C, 16, 16)
    found = []
    for b in range(16):
        hits = [(i, j) for i in range(7) for j in range(7)
                if torch.equal(y[b].permute(2, 0, 1).float(), padded[b, :, i:i + 10, j:j + 10])]
        assert hits, b
        found.append(hits[0])
    assert len(set(found)) > 1                                           # per-sample draws differ


def test_per_sample_erase_fills_the_rounded_mean():
    x = batch(b=8, h=16, w=16)
    mean = torch.tensor([0.491, 0.482, 0.447])
    cfg = AugmentConfig(erase=1.0, erase_scale=(1 / 16, 1 / 16), erase_ratio=(1.0, 1.0), erase_value="mean")
    y = augment_batch(x, cfg, gen(0), mean=mean)
    fill = torch.tensor([125, 123, 114], dtype=torch.uint8)              # round(255 * mean)
    erased = (y == fill).all(dim=3) & ~(x == fill).all(dim=3)
    assert all(int(erased[b].sum()) == 16 for b in range(8))             # a 4x4 square = 1/16 of 16x16
    masks = {tuple(erased[b].flatten().nonzero().flatten().tolist()) for b in range(8)}
    assert len(masks) > 1
    with pytest.raises(ValueError, match="the channel mean"):
        augment_batch(x, cfg, gen(0))


def test_per_batch_colour_jitter_is_one_factor_for_the_batch_and_clamped():
    x = _centred(b=4, hw=4)
    mean = torch.tensor([0.5, 0.5, 0.5])
    cfg = AugmentConfig(brightness=0.2, draws="per_batch")
    y = augment_centred(x, cfg, gen(1), mean=mean)
    ratio = (y + 0.5) / (x + 0.5)                                        # brightness scales the image
    unclamped = (x + 0.5) * ratio.max() < 1.0
    torch.testing.assert_close(ratio[unclamped], torch.full_like(ratio[unclamped], float(ratio[unclamped][0])))
    assert 0.8 <= float(ratio[unclamped][0]) <= 1.2
    assert float((y + 0.5).max()) <= 1.0 + 1e-6
    # The colour step with factors 0 is the identity; saturation on a gray image changes nothing.
    gray = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2)).expand(2, 3, 4, 4) - 0.5
    torch.testing.assert_close(augment_centred(gray, AugmentConfig(saturation=0.5, draws="per_batch"), gen(0),
                                               mean=mean), gray)


def test_draws_are_checked_by_the_function_that_applies_them():
    with pytest.raises(ValueError, match="per_batch"):
        augment_batch(batch(), AUGMENTATIONS["94percent"], gen())
    with pytest.raises(ValueError, match="per_sample"):
        augment_centred(_centred(), AUGMENTATIONS["crop_flip"], gen(), mean=torch.zeros(3))
    for bad in ({"draws": "per_epoch"}, {"pad_mode": "wrap"}, {"erase_value": "noise"}, {"erase_ratio": (2.0, 1.0)},
                {"brightness": -0.1}):
        with pytest.raises(ValueError, match=f"augmentation.{next(iter(bad))}"):
            AugmentConfig(**bad)
    with pytest.raises(ValueError, match="either jitter"):
        AugmentConfig(jitter=0.1, brightness=0.2)
    # The shorthand overrides a preset's three factors.
    assert AugmentConfig.from_dict({"name": "color_crop_flip_erase", "jitter": 0.3}).contrast == 0.3


def test_mean_padding_fills_the_mean_colour_per_sample_and_per_batch():
    """LLC pads after centring (ToTensor, Normalize(mean, 1), RandomCrop(32, 4): datasets/datasets_.py),
    so its padding is the mean colour: pad_mode mean."""
    x = batch(b=16, h=6, w=6)
    mean = torch.tensor([0.2, 0.4, 0.6])
    fill = torch.tensor([51, 102, 153], dtype=torch.uint8)
    y = augment_batch(x, AugmentConfig(crop=3, pad_mode="mean"), gen(0), mean=mean)
    padded = (y == fill).all(dim=3)
    assert padded.any() and len({int(padded[b].sum()) for b in range(16)}) > 1   # per-sample offsets
    for b in range(16):   # every sample is a crop of its image padded with the mean colour
        framed = fill.view(1, 1, 3).repeat(12, 12, 1)
        framed[3:9, 3:9] = x[b]
        assert any(torch.equal(y[b], framed[dy:dy + 6, dx:dx + 6]) for dy in range(7) for dx in range(7))
    xc = _centred(b=4, hw=6)
    yc = augment_centred(xc, AugmentConfig(crop=3, pad_mode="mean", draws="per_batch"), gen(1), mean=mean)
    assert ((yc == 0).all(dim=1).any(dim=(1, 2)) | torch.equal(yc, xc)).all()


# The per-sample path before issue 15's optimisation (three broadcast index tensors for the crop,
# a torch.where over the batch for the erase), kept as the reference the fast path must equal.
# (Its mean padding indexed the zero-padded copy with unpadded positions; corrected here.)
def _reference_crop_flip(images, pad, flip, g, *, reflect=False, fill=None):
    from tune_lip.data.augment import _source_index

    B, H, W, _ = images.shape
    rows, cols = torch.arange(H), torch.arange(W)
    if pad and not reflect:
        source = F.pad(images, (0, 0, pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (B, 1), generator=g)
        dx = torch.randint(0, 2 * pad + 1, (B, 1), generator=g)
    elif pad:
        source = images
        dy = torch.randint(0, 2 * pad + 1, (B, 1), generator=g)
        dx = torch.randint(0, 2 * pad + 1, (B, 1), generator=g)
    else:
        source, dy, dx = images, 0, 0
    row_idx, col_idx = rows + dy, cols.expand(B, W)
    if flip:
        col_idx = torch.where(torch.rand(B, 1, generator=g) < 0.5, W - 1 - cols, cols)
    col_idx = col_idx + dx
    batch_idx = torch.arange(B).view(B, 1, 1)
    row_idx = row_idx.expand(B, H)
    if pad and reflect:
        row_idx = _source_index(row_idx - pad, H, reflect=True)
        col_idx = _source_index(col_idx - pad, W, reflect=True)
    elif pad and fill is not None:
        row_idx = _source_index(row_idx - pad, H, reflect=False)
        col_idx = _source_index(col_idx - pad, W, reflect=False)
        outside = (row_idx < 0)[:, :, None] | (col_idx < 0)[:, None, :]
        out = images[batch_idx, row_idx.clamp(min=0)[:, :, None], col_idx.clamp(min=0)[:, None, :]]
        return torch.where(outside[..., None], fill.view(1, 1, 1, -1), out)
    return source[batch_idx, row_idx[:, :, None], col_idx[:, None, :]]


def _reference_augment(images, cfg, g, mean=None):
    from tune_lip.data.augment import _erase_mask, _jitter

    if cfg.is_identity:
        return images
    fill = None if mean is None else (mean * 255.0).round().to(torch.uint8)
    out = images
    if cfg.crop or cfg.flip:
        out = _reference_crop_flip(out, cfg.crop, cfg.flip, g, reflect=cfg.pad_mode == "reflect",
                                   fill=fill if cfg.pad_mode == "mean" else None)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        out = _jitter(out, (cfg.brightness, cfg.contrast, cfg.saturation), g)
    if cfg.erase:
        B, H, W, _ = out.shape
        mask = _erase_mask(B, H, W, cfg.erase, cfg.erase_scale, cfg.erase_ratio, g, out.device)[..., None]
        out = (torch.where(mask, fill.view(1, 1, 1, -1), out) if cfg.erase_value == "mean"
               else out.masked_fill(mask, 0))
    return out


@pytest.mark.parametrize("pad_mode", ["zero", "reflect", "mean"])
@pytest.mark.parametrize("crop,flip,jitter,erase", [
    (4, True, 0.0, 0.0), (4, False, 0.0, 1.0), (0, True, 0.0, 0.5), (0, False, 0.0, 1.0),
    (3, True, 0.2, 1.0), (4, True, 0.0, 1.0)])
@pytest.mark.parametrize("erase_value", ["zero", "mean"])
def test_fast_per_sample_path_equals_the_reference(pad_mode, crop, flip, jitter, erase, erase_value):
    """Issue 15: the flat-index gather and the in-place erase give exactly the old path's bytes,
    draw for draw (same generator state after)."""
    cfg = AugmentConfig(crop=crop, flip=flip, jitter=jitter, erase=erase, pad_mode=pad_mode,
                        erase_value=erase_value, erase_scale=(0.02, 0.3), erase_ratio=(0.3, 3.0))
    mean = torch.tensor([0.49, 0.48, 0.45])
    images = batch(b=64, h=16, w=14)
    before = images.clone()
    g_fast, g_ref = gen(7), gen(7)
    fast = augment_batch(images, cfg, g_fast, mean=mean)
    ref = _reference_augment(images, cfg, g_ref, mean=mean)
    assert torch.equal(fast, ref)
    assert torch.equal(images, before)                     # the input is never written
    assert torch.equal(torch.rand(3, generator=g_fast), torch.rand(3, generator=g_ref))
