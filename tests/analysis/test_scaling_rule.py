"""The scaling-rule check on fabricated trajectories whose break is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

# matplotlib draws with Agg: tests/conftest.py sets MPLBACKEND
from tune_lip.analysis import check_scaling_rule, write_scaling_rule_report

SIZES = (32, 64, 128, 256, 512, 1024, 2048)


def frame(*, seeds: int = 3, drop_from: float | None = 512, noise: float = 0.005, seed: int = 0,
          reports: int = 20, sizes=SIZES, key: str = "config/dataset/batch_size",
          grad_stats: bool = False, sde_time: bool = True, legacy_lr: bool = False) -> pd.DataFrame:
    """Reports of runs that plateau at 0.9 up to ``drop_from`` and 0.05 lower per doubling past it.

    Time is SDE time k/10 for report k (horizon 2.0); without ``sde_time`` the runs follow the
    linear rule instead (lr_now = 0.1·b/2048, k·2048/b steps), so steps·lr_now is the same k/10,
    and ``lr``, the configured peak, is 10× lr_now (the wrong clock: it would give horizon 20).
    ``legacy_lr``: as experiments from before lr_now, which reported the current LR as ``lr``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for b in sizes:
        top = 0.9 if drop_from is None or b < drop_from else 0.9 - 0.05 * (1 + np.log2(b / drop_from))
        for s in range(seeds):
            offset = rng.normal(0, noise / 2)   # seeds differ a little in where they settle
            for k in range(1, reports + 1):
                t = k / 10
                row = {"trial_id": f"b{b}-s{s}", "training_iteration": k, key: b,
                       "val_acc": top * (1 - np.exp(-t / 0.3)) + offset + rng.normal(0, noise)}
                if sde_time:
                    row["sde_time"] = t
                else:
                    lr = 0.1 * b / 2048
                    if legacy_lr:
                        row.update(steps=k * 2048 // b, lr=lr)
                    else:
                        row.update(steps=k * 2048 // b, lr_now=lr, lr=10 * lr)
                if grad_stats:
                    row.update(grad_norm_sq=np.exp(-t) + 0.01, grad_noise=b * 0.1 * np.exp(-t / 2))
                rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seeds, source", [(3, "pooled seeds"), (1, "trajectory")])
def test_finds_the_break_at_512(seeds, source):
    check = check_scaling_rule(frame(seeds=seeds))
    pb = check.per_batch
    assert check.breaks_at == 512 and check.reference == 32 and check.horizon == pytest.approx(2.0)
    # holds up to 256, departs (for the worse) from 512 on; noise from seeds or from the trajectory
    assert pb["departs"].tolist() == [False, False, False, False, True, True, True]
    assert pb.loc[pb["departs"], "worse"].all()
    assert set(pb["noise_from"]) == {source}
    assert pb["final"].iloc[0] == pytest.approx(0.9, abs=0.02)
    assert (pb["lo"] < pb["final"]).all() and (pb["final"] < pb["hi"]).all()


def test_two_seeds_need_the_pooled_variance():
    # One batch size's 2 seeds leave t with 1 degree of freedom: too wide to see a 0.05 drop.
    # Pooled over 7 batch sizes there are 7, and the break shows.
    assert check_scaling_rule(frame(seeds=2), pool_seeds=False).breaks_at is None
    pooled = check_scaling_rule(frame(seeds=2))   # pooled: the default
    assert pooled.breaks_at == 512 and set(pooled.per_batch["noise_from"]) == {"pooled seeds"}
    assert check_scaling_rule(frame(seeds=2, drop_from=None), pool_seeds=True).breaks_at is None


@pytest.mark.parametrize("seeds", [3, 1])
def test_flat_data_has_no_break(seeds):
    check = check_scaling_rule(frame(seeds=seeds, drop_from=None))
    assert check.breaks_at is None and not check.per_batch["departs"].any()
    assert "holds at every batch size" in check.summary()


@pytest.mark.parametrize("seeds", [1, 3])
def test_spurious_breaks_are_rare_on_flat_data(seeds):
    # The intervals are simultaneous over the 6 comparisons: at most ~5% of flat searches break
    # (one seed: noise from the trajectory; three: the pooled seed variance, the default).
    broken = sum(check_scaling_rule(frame(seeds=seeds, drop_from=None, seed=s)).breaks_at is not None
                 for s in range(40))
    assert broken <= 5


@pytest.mark.parametrize("seeds", [1, 3])
def test_a_check_on_one_seed_says_so(seeds):
    check = check_scaling_rule(frame(seeds=seeds))
    assert check.one_seed == (seeds == 1) and check.to_dict()["one_seed"] == (seeds == 1)
    assert ("rests on one seed per batch size" in check.summary()) == (seeds == 1)


@pytest.mark.parametrize("legacy_lr", [False, True], ids=["lr_now", "lr-before-lr_now"])
def test_without_sde_time_the_time_is_steps_times_lr(legacy_lr):
    # Σ lr_now·Δsteps, not the peak lr; an old experiment's lr (then the current LR) stands in.
    check = check_scaling_rule(frame(sde_time=False, legacy_lr=legacy_lr))
    assert check.time == "steps·lr" and check.horizon == pytest.approx(2.0)
    assert check.breaks_at == 512


def test_svag_l_breaks_going_down_from_the_largest():
    # SVAG: larger l is closer to the SDE; here l = 1 and 2 miss the SDE's 0.9, l >= 4 reach it.
    df = frame(sizes=(1, 2, 4, 8, 16), key="config/gradient/l", drop_from=None)
    low = df["config/gradient/l"] <= 2
    df.loc[low, "val_acc"] -= 0.05 * (3 - df.loc[low, "config/gradient/l"])
    check = check_scaling_rule(df, batch_size="gradient.l", reference="largest")
    assert check.reference == 16 and check.breaks_at == 2
    assert check.per_batch["departs"].tolist() == [True, True, False, False, False]


def test_a_trial_stopped_early_is_left_out_with_a_note():
    df = frame()
    df = df[~((df["trial_id"] == "b64-s0") & (df["training_iteration"] > 10))]
    check = check_scaling_rule(df)
    assert check.horizon == pytest.approx(2.0) and check.breaks_at == 512
    assert check.per_batch.set_index("batch_size").loc[64, "n_trials"] == 2
    assert any("b64-s0" in n for n in check.notes)


def test_by_checks_each_group_and_errors_name_the_column():
    df = pd.concat([frame().assign(**{"config/model/name": "a"}),
                    frame(drop_from=None, seed=1).assign(**{"config/model/name": "b"})])
    checks = check_scaling_rule(df, by="model.name")
    assert checks["a"].breaks_at == 512 and checks["b"].breaks_at is None
    with pytest.raises(ValueError, match="config/dataset/bs"):
        check_scaling_rule(df, batch_size="dataset.bs")
    with pytest.raises(ValueError, match="one batch size"):
        check_scaling_rule(frame(sizes=(64,)))


@pytest.mark.parametrize("grad_stats, n_plots", [(True, 6), (False, 4)])
def test_report_writes_nonempty_plots_and_json(tmp_path, grad_stats, n_plots):
    report = write_scaling_rule_report(frame(grad_stats=grad_stats), out_dir=tmp_path, title="synthetic")
    assert len(report["plots"]) == n_plots   # PNG + PDF of final, trajectories (and grad stats)
    assert all((tmp_path / p).stat().st_size > 1000 for p in report["plots"])
    assert any("grad_stats" in p for p in report["plots"]) == grad_stats
    assert report["breaks_at"] == 512 and len(report["per_batch"]) == len(SIZES)
    assert "stops holding" in report["summary"]
    json.dumps(report)   # JSON-able throughout
