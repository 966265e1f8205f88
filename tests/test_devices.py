"""Device tiers: pure clock and policy functions, tier assignment, and runs with tiers."""

import json
import math
import subprocess

import numpy as np
import pytest
import torch

import fedkd
from fedkd.config.devices import PRESETS, assign_tiers
from fedkd.devices import (
    apply_policy,
    client_time,
    fails,
    flops_per_sample,
    is_available,
    train_samples,
    training_memory_bytes,
)
from fedkd.models import build_model
from fedkd.training import distill_schedule
from fedkd.validation import load_config

from .conftest import ROOT, fedkd_cmd

EDGE_TINY = ROOT / "tests" / "edge_tiny.toml"


# ---------------------------------------------------------------- tier assignment
@pytest.mark.parametrize("n", [1, 7, 10, 33, 1000])
def test_tier_counts_follow_the_shares_within_one(n):
    shares = [0.2, 0.5, 0.3]
    tiers = assign_tiers(shares, n, seed=3)
    assert len(tiers) == n
    counts = np.bincount(tiers, minlength=3)
    assert counts.sum() == n
    assert np.all(np.abs(counts - np.asarray(shares) * n) < 1)


def test_tier_assignment_is_seeded_and_shares_are_normalized():
    a = assign_tiers([2, 5, 3], 50, seed=1)
    assert np.array_equal(a, assign_tiers([0.2, 0.5, 0.3], 50, seed=1))
    assert not np.array_equal(a, assign_tiers([0.2, 0.5, 0.3], 50, seed=2))
    assert np.array_equal(np.bincount(a), np.bincount(assign_tiers([0.2, 0.5, 0.3], 50, seed=2)))
    with pytest.raises(ValueError, match="non-negative"):
        assign_tiers([0.5, -0.1], 10, seed=0)


def test_availability_and_failure_draws_match_their_probabilities():
    online = np.mean([is_available(0.6, 0, p, r) for p in range(200) for r in range(1, 21)])
    crash = np.mean([fails(0.1, 0, p, r) for p in range(200) for r in range(1, 21)])
    assert abs(online - 0.6) < 0.02 and abs(crash - 0.1) < 0.015
    # independent draws: being online says nothing about crashing
    both = np.mean(
        [is_available(0.6, 0, p, r) and fails(0.1, 0, p, r) for p in range(200) for r in range(20)]
    )
    assert abs(both - 0.06) < 0.01
    assert is_available(0.6, 0, 5, 3) == is_available(0.6, 0, 5, 3)


# ---------------------------------------------------------------- virtual clock
@pytest.mark.parametrize(
    ("n_proxy", "n_local", "batch", "epochs", "alpha"),
    [
        (4000, 200, 128, 5, 0.7),
        (400, 0, 128, 1, 0.7),
        (10, 300, 128, 1, 0.7),
        (257, 1000, 64, 3, 0.5),
        (500, 90, 128, 2, 1.0),
        (500, 90, 32, 2, 0.0),
        (129, 128, 128, 4, 0.3),
    ],
)
def test_train_samples_counts_what_the_trainer_forwards(n_proxy, n_local, batch, epochs, alpha):
    schedule = distill_schedule(
        n_proxy if alpha > 0 else 0,
        n_local if alpha < 1 else 0,
        batch_size=batch,
        epochs=epochs,
        gen=torch.Generator().manual_seed(0),
    )
    forwarded = sum(
        (len(pi) if pi is not None else 0) + (len(li) if li is not None else 0)
        for epoch in schedule
        for pi, li in epoch
    )
    got = train_samples(n_proxy, n_local, batch_size=batch, epochs=epochs, alpha=alpha)
    assert got == forwarded


def test_flops_per_sample_golden():
    # cnn width 16, depth 2 on length 40: conv1 (1->16, k5, stride 2) at 20 positions,
    # conv2 (16->16, k5, stride 2) at 10 positions, head 160 -> 10
    cnn = build_model("cnn:width=16,depth=2", (40,), 10)
    assert flops_per_sample(cnn, (40,)) == 2 * (5 * 16 * 20 + 80 * 16 * 10 + 160 * 10)
    mlp = build_model("mlp:width=32", (40,), 10)  # 40 -> 32 -> 32 -> 10
    assert flops_per_sample(mlp, (40,)) == 2 * (40 * 32 + 32 * 32 + 32 * 10)
    conv = torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 38, 2)
    )
    assert flops_per_sample(conv, (1, 40)) == 2 * (12 * 38 + 4 * 38 * 2)


def test_training_memory_counts_parameters_and_activations():
    mlp = build_model("mlp:width=32", (40,), 10)
    params = 40 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    acts = 40 + 32 + 32 + 32 + 32 + 10  # flatten, linear, relu, linear, relu, linear
    assert training_memory_bytes(mlp, (40,), 128) == 16 * params + 4 * acts * 2 * 128


def test_client_time_golden():
    t = client_time(
        bytes_down=250_000,
        bytes_up=125_000,
        train_samples=1000,
        infer_samples=400,
        flops_per_sample=10_000,
        gflops=0.5,
        downlink_mbps=2.0,
        uplink_mbps=0.5,
        latency_ms=100.0,
    )
    assert t.download_s == pytest.approx(0.1 + 250_000 * 8 / 2e6)  # 1.1 s
    assert t.compute_s == pytest.approx((3 * 1000 + 400) * 10_000 / 0.5e9)  # 0.068 s
    assert t.upload_s == pytest.approx(0.1 + 125_000 * 8 / 0.5e6)  # 2.1 s
    assert t.total_s == pytest.approx(1.1 + 0.068 + 2.1)


def test_round_policies_golden():
    times = {3: 5.0, 1: 12.0, 7: 2.0, 4: 30.0}
    sync = apply_policy("sync", times, deadline_s=10, keep=2)
    assert (sync.kept, sync.late, sync.round_time_s) == ([1, 3, 4, 7], [], 30.0)
    dl = apply_policy("deadline", times, deadline_s=10, keep=2)
    assert (dl.kept, dl.late, dl.round_time_s) == ([3, 7], [1, 4], 10.0)
    dl_all = apply_policy("deadline", times, deadline_s=40, keep=2)
    assert (dl_all.late, dl_all.round_time_s) == ([], 30.0)
    over = apply_policy("over_select", times, deadline_s=10, keep=3)
    assert (over.kept, over.late, over.round_time_s) == ([1, 3, 7], [4], 12.0)
    assert apply_policy("sync", {}, deadline_s=1, keep=1).round_time_s == 0.0
    with pytest.raises(ValueError, match="allowed: sync, deadline, over_select"):
        apply_policy("fastest", times, deadline_s=1, keep=1)


def test_presets_fill_only_what_a_tier_does_not_set():
    cfg = load_config(EDGE_TINY)
    mcu, phone = cfg.devices.tiers[0], cfg.devices.tiers[1]
    assert mcu.gflops == PRESETS["microcontroller"]["gflops"]
    assert phone.failure_prob == 0.3 != PRESETS["low_end_phone"]["failure_prob"]
    assert phone.uplink_mbps == PRESETS["low_end_phone"]["uplink_mbps"]
    assert [cfg.student_model(p) for p in range(cfg.num_clients)].count("cnn:width=8,depth=1") == 4


# ---------------------------------------------------------------- bad configs
def _exit2(tmp_path, *sets):
    proc = subprocess.run(
        fedkd_cmd(
            "run",
            str(EDGE_TINY),
            "--out",
            str(tmp_path / "r"),
            *sum((["--set", s] for s in sets), []),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_student_too_big_for_the_tier_memory_is_one_line_exit_2(tmp_path):
    line = _exit2(tmp_path, "devices.tiers[0].student=cnn:width=64,depth=3")
    assert "microcontroller" in line or "mcu" in line
    assert "memory_mb" in line and "MB to train" in line


def test_bad_tier_configs_are_one_line_exit_2(tmp_path):
    line = _exit2(tmp_path, "strategy.name=fedavg")
    assert "same student" in line and "fedavg" in line
    line = _exit2(tmp_path, "strategy.warm_start_epochs=2")
    assert "warm_start_epochs" in line


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(fedkd.errors.ConfigError, match="allowed: edge_gpu, high_end_phone"):
        load_config({"devices": {"tiers": [{"name": "x", "preset": "toaster", "share": 1}]}})
    with pytest.raises(fedkd.errors.ConfigError, match="unique"):
        load_config({"devices": {"tiers": [{"name": "x", "preset": "edge_gpu", "share": 1}] * 2}})


# ---------------------------------------------------------------- runs with tiers
def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("engine", ["inprocess", "vectorized"])
def test_twenty_percent_crashes_are_reported_and_the_run_completes(tmp_path, engine):
    overrides = [f"engine={engine}", "num_clients=10", "rounds=3"]
    overrides += [f"devices.tiers[{i}].failure_prob=0.2" for i in range(3)]
    overrides += [f"devices.tiers[{i}].availability=1.0" for i in range(3)]
    cfg = load_config(EDGE_TINY, overrides)
    result = fedkd.run(cfg, out=tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3
    for row in rows:
        expected = sum(fails(0.2, cfg.seed, p, row["round"]) for p in range(10))
        assert row["sampled"] == 10 and row["failed"] == expected
        assert row["kept"] + row["dropped_late"] == 10 - expected
        crashes = [r for r in row["rejections"] if r["kind"] == "client_error"]
        assert len(crashes) == expected
        assert all("simulated crash" in r["reason"] for r in crashes)
    total = sum(r["failed"] for r in rows)
    assert total > 0
    s = result.summary
    assert s["devices"]["failed"] == total == s["rejected_by_kind"]["client_error"]
    assert sum(t["failed"] for t in s["final"]["by_tier"].values()) == total
    assert s["final"]["student_accuracy_mean"] is not None


def test_deadline_drops_late_replies_and_caps_round_time(tmp_path):
    sync = fedkd.run(EDGE_TINY, out=tmp_path / "sync").summary
    dl = fedkd.run(
        EDGE_TINY, overrides=["devices.deadline_s=1.0"], out=tmp_path / "deadline"
    ).summary
    rows = _rows(tmp_path / "deadline")
    assert dl["devices"]["dropped_late"] > 0
    for row in rows:
        if row["dropped_late"]:
            assert row["round_virtual_time_s"] == 1.0
    assert dl["virtual_time_s"] < sync["virtual_time_s"] or sync["devices"]["policy"] == "deadline"
    # the slowest tier (microcontroller uplink) is the one dropped
    assert dl["final"]["by_tier"]["mcu"]["dropped_late"] > 0
    assert dl["final"]["by_tier"]["gpu"]["dropped_late"] == 0


def test_over_select_samples_more_and_keeps_k(tmp_path):
    overrides = ["devices.policy=over_select", "devices.over_select=0.5", "strategy.fraction=0.5"]
    overrides += [f"devices.tiers[{i}].availability=1.0" for i in range(3)]
    overrides += [f"devices.tiers[{i}].failure_prob=0.0" for i in range(3)]
    fedkd.run(EDGE_TINY, overrides=overrides, out=tmp_path / "run")
    for row in _rows(tmp_path / "run"):
        assert row["sampled"] == 6  # k = 4 of 8, sampled ceil(4 x 1.5)
        assert row["kept"] == 4 and row["dropped_late"] == 2
        assert row["virtual_time_s"] > 0


def test_tier_results_and_plots_are_written(tmp_path):
    result = fedkd.run(EDGE_TINY, out=tmp_path / "run")
    by_tier = result.summary["final"]["by_tier"]
    assert set(by_tier) == {"mcu", "phone", "gpu"}
    assert by_tier["gpu"]["student_parameters"] > by_tier["mcu"]["student_parameters"]
    for t in by_tier.values():
        for key in (
            "accuracy_mean",
            "accuracy_p10",
            "local_only_accuracy_mean",
            "participation_rate",
            "mean_round_time_s",
        ):
            assert t[key] is not None and math.isfinite(t[key])
    # microcontrollers upload over 0.1 Mbit/s: the slowest tier
    assert (
        by_tier["mcu"]["mean_round_time_s"]
        > by_tier["phone"]["mean_round_time_s"]
        > by_tier["gpu"]["mean_round_time_s"]
    )
    assert result.summary["virtual_time_s"] == pytest.approx(
        sum(r["round_virtual_time_s"] for r in result.metrics)
    )
    assert (tmp_path / "run" / "tiers.png").stat().st_size > 1000
    assert (tmp_path / "run" / "accuracy_virtual_time.png").stat().st_size > 1000
