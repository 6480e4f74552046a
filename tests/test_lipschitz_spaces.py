"""The Lipschitz spaces faithful to the papers' code, through the real command line on small data.

aol_lr_batch_generated (SU's LR x batch search on the generated data) and aol_final (SU's final
run) need the 20M-image npz and CIFAR-10, which this offline machine lacks: each runs here on a
small npz written in the DM-Improves-AT format (``image`` N x 32 x 32 x 3 uint8, ``label`` N)
and a fake CIFAR-10 in the official format, with the model shrunk and the batch sizes cut to
what 64 images allow; everything else is the shipped file. llc_convnet_s is checked likewise on
a fake CIFAR-10. Each space's every setting is cited in docs/RECIPES.md.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import TUNE_LIP
from test_data import write_fake_cifar10

from tune_lip import search_spaces
from tune_lip.studies.lipschitz import LipschitzConfig
from tune_lip.tune.spec import load_spec

pytestmark = pytest.mark.slow


def _space(name: str) -> dict[str, Any]:
    return yaml.safe_load(search_spaces.path_of(name).read_text())


def _small_copy(name: str, tmp_path: Path, **space_over: Any) -> Path:
    """The shipped space with its data in ``tmp_path``, a small model and small batches."""
    raw = _space(name)
    data = raw["space"]["dataset"]
    data.update(data_dir=str(tmp_path / "data"), validation=10)       # the fake CIFAR-10 has 30 training images
    if data["name"] == "generated":
        data["path"] = "edm_cifar10/20m.npz"
    for key, value in space_over.items():
        section, _, field = key.partition(".")
        if field:
            raw["space"][section][field] = value
        else:
            raw["space"][section] = value
    raw["reports"] = 2
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _write_data(tmp_path: Path, n: int = 64) -> None:
    write_fake_cifar10(tmp_path / "data")
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "edm_cifar10").mkdir()
    np.savez(tmp_path / "data" / "edm_cifar10" / "20m.npz",
             image=rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
             label=rng.integers(0, 10, size=n).astype(np.uint8))       # DM-Improves-AT's keys and dtypes


def _cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MPLBACKEND": "Agg"}
    done = subprocess.run([*TUNE_LIP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def test_generated_spaces_are_su_recipes():
    """What the shipped files say, against SU's code (lipschitz/scripts/train/configurations/
    lipschitz_network.py, README's commands, data/datasets/cifar10.py and edm_cifar10.py)."""
    search = load_spec("aol_lr_batch_generated")
    cfg = LipschitzConfig.from_dict(search.representative_config())
    assert search.scheduler.name == "none" and search.searcher.name == "random" and search.num_samples == 12
    assert search.budget.to_dict() == {"reference_hours": 1, "reference": "A100"}
    assert _space("aol_lr_batch_generated")["space"]["optimizer"]["lr"] == {"loguniform": [0.01, 1.0]}
    assert _space("aol_lr_batch_generated")["space"]["dataset"]["batch_size"] == {"grid": [2 ** i for i in range(4, 12)]}
    final = LipschitzConfig.from_dict(load_spec("aol_final").representative_config())
    for c in (cfg, final):
        assert c.dataset.name == "generated" and c.dataset.options["validation_from"] == "cifar10"
        assert (c.dataset.validation, c.dataset.split_seed, c.dataset.split_rng) == (5000, 1111, "numpy")
        assert c.dataset.mean == (0.491, 0.482, 0.447) and c.dataset.normalize == "mean"
        assert c.model.name == "aol_mlp" and c.model.options["width"] == 3072
        assert (c.optimizer.momentum, c.optimizer.nesterov, c.optimizer.weight_decay) == (0.9, True, 0.0)
        assert c.schedule.name == "one_cycle" and c.schedule.cycle_momentum and c.schedule.interval == "step"
        assert c.loss.eps == pytest.approx(36 / 255, abs=1e-4) and c.loss.temperature == 0.25
        assert c.eval.eps == pytest.approx(36 / 255, abs=1e-4)
    assert cfg.model.options["depth"] == 8 and cfg.augmentation.draws == "per_batch" and cfg.augmentation.erase == 1.0
    assert final.model.options["depth"] == 16 and final.dataset.batch_size == 2048 and final.optimizer.lr == 0.3
    aug = final.augmentation     # color_crop_flip_erase with erase_proportion 0 (README "Test set experiments")
    assert (aug.brightness, aug.contrast, aug.saturation, aug.crop, aug.pad_mode, aug.erase) == \
        (0.2, 0.0, 0.1, 4, "reflect", 0.0)
    assert final.eval.robust_steps > 0


def test_lr_batch_generated_runs_on_a_small_npz(tmp_path):
    _write_data(tmp_path)
    space = _small_copy("aol_lr_batch_generated", tmp_path, model={"name": "aol_mlp", "width": 64, "depth": 2},
                        **{"dataset.batch_size": {"grid": [16, 32]}})
    _cli(["search", str(space), "--num-samples", "1", "--budget", "steps=4", "--resources", "cpu=1",
          "--name", "e", "--storage-path", "res"], tmp_path)
    from tune_lip.analysis import load

    df = load(tmp_path / "res" / "e")
    last = df.sort_values("steps").groupby("trial_id").tail(1)
    assert len(last) == 2 and (last["steps"] == 4).all()                          # every trial ran to the end
    assert {"val_certified_acc", "test_certified_acc", "test_robust_acc"} <= set(df.columns)


def test_final_runs_places_and_reports_the_test_set(tmp_path):
    _write_data(tmp_path)
    space = _small_copy("aol_final", tmp_path, model={"name": "aol_mlp", "width": 64, "depth": 2},
                        **{"dataset.batch_size": 32})
    placed = _cli(["placement", str(space)], tmp_path, timeout=300)
    assert "aol_mlp" in placed.stdout or "gpu" in placed.stdout.lower()
    _cli(["search", str(space), "--budget", "steps=4", "--resources", "cpu=1", "--name", "f",
          "--storage-path", "res"], tmp_path)
    from tune_lip.analysis import load

    last = load(tmp_path / "res" / "f").sort_values("steps").tail(1).iloc[0]
    assert last["steps"] == 4
    assert 0.0 <= last["test_certified_acc"] <= last["test_robust_acc"] <= last["test_acc"] <= 1.0


def test_llc_convnet_s_is_llcs_recipe_and_trains_with_a_per_epoch_schedule(tmp_path):
    """llc_convnet_s against LLC (settings/defaults_CIFAR10.yml, make_tree.py, datasets/): then a
    few epochs on a fake CIFAR-10 with a shrunk ConvNetS, the LR constant within each epoch."""
    import torch

    from tune_lip.studies.lipschitz import LipschitzLoop

    spec = load_spec("llc_convnet_s")
    raw = spec.representative_config()
    cfg = LipschitzConfig.from_dict(raw)
    assert spec.searcher.name == "random" and spec.scheduler.name == "none"
    assert cfg.model.name == "cpl_convnet_s" and cfg.dataset.batch_size == 256 and cfg.dataset.validation == 0.1
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.nesterov) == ("sgd", 0.9, False)
    assert cfg.schedule.name == "one_cycle" and cfg.schedule.interval == "epoch"
    assert cfg.loss.offset == 0.3993 and cfg.loss.eps == pytest.approx(72 / 255, abs=1e-4) and cfg.loss.temperature == 0.25
    assert (cfg.augmentation.crop, cfg.augmentation.pad_mode, cfg.augmentation.flip) == (4, "mean", True)
    space = _space("llc_convnet_s")["space"]["optimizer"]
    assert space["lr"] == {"loguniform": [1e-4, 0.1]}
    assert space["weight_decay"]["loguniform"] == pytest.approx([10 ** -5.5, 10 ** -3.5], rel=1e-4)

    write_fake_cifar10(tmp_path)                        # 30 training images: 27 train, 3 validation
    raw = {**raw, "model": {"name": "cpl_convnet_s", "width": 8, "depth": 1},
           "dataset": {**raw["dataset"], "data_dir": str(tmp_path), "batch_size": 9},
           "optimizer": {**raw["optimizer"], "lr": 0.01, "weight_decay": 1e-4},
           "budget": {"epochs": 3}, "reports": 1, "device": "cpu"}
    with pytest.warns(UserWarning, match="md5 check failed"):
        loop = LipschitzLoop(LipschitzConfig.from_dict(raw))
    assert loop.total_steps == 9                        # 3 epochs of 27 images at batch 9
    lrs = []
    step = loop.optimizer.step

    def recording_step(*args, **kwargs):
        lrs.append(loop.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    loop.optimizer.step = recording_step  # type: ignore[method-assign]
    loop.train_for(9)
    assert lrs[0] == lrs[1] == lrs[2] != lrs[3] and lrs[3] == lrs[5] and len(set(lrs)) == 3
    out = loop.evaluate_test()
    assert 0.0 <= out["test_certified_acc"] <= out["test_robust_acc"] <= out["test_acc"] <= 1.0
    assert torch.isfinite(torch.tensor(out["test_loss"]))
