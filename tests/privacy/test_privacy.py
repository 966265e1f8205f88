"""Privacy: accounting against a second library, mechanisms' golden values, runs, attack."""

import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fedkd
from fedkd.models import build_model
from fedkd.privacy.accounting import epsilon, epsilon_dp_accounting, noise_for_epsilon
from fedkd.privacy.client_dp import clip_upload, noisy_mean, sensitivity
from fedkd.privacy.dp_sgd import _register_grad_samplers, fit_distill_dp
from fedkd.privacy.noise import SecureNoise, SeededNoise
from fedkd.privacy.pate import gnmax, label_logits, query_rows, vote_histogram
from fedkd.training import fit_distill, make_optimizer
from fedkd.validation import load_config

from ..conftest import TINY, fedkd_cmd


# ---------------------------------------------------------------- accounting
@pytest.mark.parametrize(
    ("z", "q", "steps"), [(1.1, 0.5, 10), (0.8, 1.0, 5), (2.0, 0.01, 1000), (5.0, 1.0, 500)]
)
def test_opacus_and_dp_accounting_agree_within_one_percent(z, q, steps):
    a = epsilon(z, q, steps, 1e-5)
    b = epsilon_dp_accounting(z, q, steps, 1e-5)
    assert a > 0 and abs(a - b) / b < 0.01


@pytest.mark.parametrize(
    ("target", "q", "steps"), [(1.0, 1.0, 10), (8.0, 0.3, 20), (4.0, 1.0, 500)]
)
def test_noise_for_epsilon_meets_the_target(target, q, steps):
    z = noise_for_epsilon(target, q, steps, 1e-5)
    eps = epsilon(z, q, steps, 1e-5)
    assert 0.95 * target <= eps <= target
    assert epsilon(z * 0.9, q, steps, 1e-5) > target  # less noise would overspend


# ---------------------------------------------------------------- client_dp
def test_clip_upload_centres_rows_and_bounds_each_row():
    logits = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0]], np.float32)
    small = clip_upload(logits, clip=100.0)  # centred only: same softmax
    assert np.allclose(small, [[-1, 0, 1], [-1, -1, 2]])
    assert np.allclose(
        torch.softmax(torch.tensor(small), 1), torch.softmax(torch.tensor(logits), 1)
    )
    clipped = clip_upload(logits, clip=1.0)  # each row to norm 1 (not the whole matrix)
    golden = [
        [-1 / np.sqrt(2), 0, 1 / np.sqrt(2)],
        [-1 / np.sqrt(6), -1 / np.sqrt(6), 2 / np.sqrt(6)],
    ]
    assert np.allclose(clipped, golden, atol=1e-6)
    assert np.linalg.norm(clipped, axis=1) == pytest.approx([1.0, 1.0], abs=1e-6)
    assert np.linalg.norm(clipped) <= sensitivity(1.0, 2) + 1e-6  # clip * sqrt(rows)
    # a row already inside the ball is left alone, the other one scaled
    mixed = clip_upload(logits, clip=2.0)
    assert np.allclose(mixed[0], [-1, 0, 1]) and np.linalg.norm(mixed[1]) == pytest.approx(2.0)


def test_noisy_mean_is_the_clipped_sum_plus_calibrated_noise_over_expected_k():
    rng = np.random.default_rng(0)
    uploads = rng.normal(0, 5, (4, 50, 10)).astype(np.float32)
    total = np.sum([clip_upload(u, 2.0) for u in uploads], axis=0)
    no_noise, snr = noisy_mean(uploads, 2.0, 0.0, SecureNoise(), expected_clients=8)
    assert no_noise.shape == (1, 50, 10) and np.allclose(no_noise[0], total / 8, atol=1e-5)
    assert snr == float("inf")
    noisy, snr = noisy_mean(uploads, 2.0, 1.5, SecureNoise(), expected_clients=8)
    # std z * clip * sqrt(rows) / E[K]
    assert (noisy[0] - total / 8).std() == pytest.approx(1.5 * 2.0 * np.sqrt(50) / 8, rel=0.05)
    noise_norm = 1.5 * 2.0 * np.sqrt(50) * np.sqrt(500)
    assert snr == pytest.approx(np.linalg.norm(total) / noise_norm, rel=0.05)


# ---------------------------------------------------------------- pate
def test_gnmax_golden():
    teacher_logits = np.zeros((3, 2, 4), np.float32)
    teacher_logits[0, 0, 1] = teacher_logits[1, 0, 1] = teacher_logits[2, 0, 3] = 1
    teacher_logits[:, 1, 2] = 1
    hist = vote_histogram(teacher_logits)
    assert hist.tolist() == [[0, 2, 0, 1], [0, 0, 3, 0]]
    assert gnmax(hist, 0.0, SecureNoise()).tolist() == [1, 2]
    noisy = [gnmax(hist, 50.0, SeededNoise(s))[0] for s in range(400)]
    assert len(set(noisy)) == 4  # huge noise: any class
    soft = torch.softmax(torch.tensor(label_logits(np.array([1, 2]), 4, 4.0)) / 4.0, 1)
    assert soft[0, 1] == pytest.approx(0.99) and soft[1, 2] == pytest.approx(0.99)
    rows = query_rows(100, 30, seed=0)
    assert len(set(rows.tolist())) == 30 and rows.tolist() == sorted(rows.tolist())
    assert np.array_equal(rows, query_rows(100, 30, seed=0))


# ---------------------------------------------------------------- dp_sgd
def test_opacus_per_sample_gradients_of_the_cnn_are_exact():
    from opacus import GradSampleModule

    _register_grad_samplers()
    model = build_model("cnn:width=4,depth=3", (40,), 10)
    x, y = torch.randn(6, 40), torch.randint(0, 10, (6,))
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    F.cross_entropy(gsm(x), y, reduction="sum").backward()
    for i in range(6):
        ref = build_model("cnn:width=4,depth=3", (40,), 10)
        ref.load_state_dict(model.state_dict())
        F.cross_entropy(ref(x[i : i + 1]), y[i : i + 1]).backward()
        for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            assert torch.allclose(p.grad_sample[i], q.grad, atol=1e-5), name
    gsm._close()


def test_dp_sgd_without_noise_or_clipping_is_plain_training():
    torch.manual_seed(0)
    x, y = torch.randn(50, 40), torch.randint(0, 10, (50,))
    xp, tp = torch.randn(64, 40), torch.randn(64, 10)
    a = build_model("cnn:width=4,depth=2", (40,), 10)
    b = build_model("cnn:width=4,depth=2", (40,), 10)
    b.load_state_dict(a.state_dict())
    common = dict(epochs=1, batch_size=64, temperature=4.0, alpha=0.7)
    # 50 private samples <= batch: sampling rate 1, every sample in every step
    fit_distill_dp(
        a,
        make_optimizer("sgd", list(a.parameters()), 0.05),
        x,
        y,
        xp,
        tp,
        gen=torch.Generator().manual_seed(1),
        noise_multiplier=0.0,
        clip=1e9,
        **common,
    )
    fit_distill(
        b,
        make_optimizer("sgd", list(b.parameters()), 0.05),
        x,
        y,
        xp,
        tp,
        gen=torch.Generator().manual_seed(1),
        **common,
    )
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


# ---------------------------------------------------------------- runs
def test_client_dp_run_records_what_recomputes_epsilon(tmp_path):
    sets = [
        "privacy.mode=client_dp",
        "privacy.epsilon=8",
        "privacy.delta=0.01",
        "strategy.name=hybrid",
        "strategy.fraction=0.5",
        "rounds=3",
    ]
    result = fedkd.run(TINY, overrides=sets, out=tmp_path / "run")
    p = result.summary["privacy"]
    assert p["mechanism"] == "client_dp" and p["delta"] == 0.01 and p["sample_rate"] == 0.5
    assert p["steps"] == 3 and p["clip"] == 1.0 and "opacus" in p["accountant"]
    assert 7.6 <= p["epsilon"] <= 8.0
    again = epsilon_dp_accounting(p["noise_multiplier"], p["sample_rate"], p["steps"], p["delta"])
    assert abs(again - p["epsilon"]) / p["epsilon"] < 0.01
    eps = [row["epsilon"] for row in result.metrics]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(p["epsilon"])


@pytest.mark.parametrize("engine", ["inprocess", "vectorized"])
def test_dp_sgd_run_is_reproducible_with_the_debugging_switch(tmp_path, engine):
    sets = [
        "privacy.mode=dp_sgd",
        "privacy.noise_multiplier=1.0",
        "privacy.delta=1e-3",
        "privacy.reproducible_noise=true",  # debugging switch: same seed, same noise
        f"engine={engine}",
        "rounds=1",
    ]
    a = fedkd.run(TINY, overrides=sets, out=tmp_path / "a").summary
    b = fedkd.run(TINY, overrides=sets, out=tmp_path / "b").summary
    assert a["final"] == b["final"]
    assert a["privacy"]["private"] is False  # and then the run says it is not private
    assert a["privacy"]["mechanism"] == "dp_sgd" and a["privacy"]["epsilon"] > 0
    assert 0 < a["privacy"]["sample_rate"] <= 1


def test_pate_targets_only_queried_rows(tmp_path):
    sets = [
        "privacy.mode=pate",
        "privacy.noise_multiplier=2.0",
        "privacy.queries=50",
        "teachers.count=4",
        "teachers.models=['mlp:width=16']",
        "rounds=1",
    ]
    plain = fedkd.run(TINY, overrides=sets[3:], out=tmp_path / "plain").summary
    pate = fedkd.run(TINY, overrides=sets, out=tmp_path / "pate").summary
    p = pate["privacy"]
    assert p["pate_queries"] == 50 and p["steps"] == 50 and p["sample_rate"] == 1.0
    assert p["pate_sigma"] == pytest.approx(2.0 * np.sqrt(2))
    assert 0 <= p["pate_label_accuracy"] <= 1
    # soft targets travel on 50 of 400 proxy rows only
    assert (
        pate["communication"]["by_phase_down"]["train"]
        < 0.5 * plain["communication"]["by_phase_down"]["train"]
    )


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["privacy.mode=client_dp", "privacy.epsilon=0"], "privacy.epsilon"),
        (["privacy.mode=dp_sgd", "privacy.epsilon=8", "privacy.delta=0.1"], "smallest client"),
    ],
)
def test_bad_privacy_config_is_one_line_exit_2(tmp_path, sets, needle):
    args = sum((["--set", s] for s in sets), [])
    proc = subprocess.run(
        fedkd_cmd("run", str(TINY), "--out", str(tmp_path / "r"), *args),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (
            [
                "privacy.mode=client_dp",
                "privacy.epsilon=8",
                "privacy.delta=0.5",
                "strategy.name=hybrid",
            ],
            "below 1/num_clients",
        ),
        (["privacy.mode=dp_sgd", "privacy.epsilon=8", "privacy.clip=0"], "privacy.clip=0"),
        (
            ["privacy.mode=client_dp", "privacy.epsilon=8", "strategy.name=fedavg"],
            "not supported by strategy 'fedavg'",
        ),
        (
            ["privacy.mode=pate", "privacy.epsilon=8", "strategy.name=fedmd"],
            "not supported by strategy 'fedmd'",
        ),
        (["privacy.mode=client_dp"], "needs privacy.epsilon"),
        (["privacy.mode=pate", "privacy.epsilon=8", "teachers.count=1"], "teachers.count >= 2"),
    ],
)
def test_bad_privacy_config_names_the_key(sets, needle):
    # the same ConfigError the CLI prints as one line with exit 2 (tested above)
    with pytest.raises(fedkd.errors.ConfigError, match=needle.replace("(", ".").replace(")", ".")):
        load_config(TINY, sets)


def test_pate_delta_is_checked_against_the_teacher_split(tmp_path):
    sets = ["privacy.mode=pate", "privacy.epsilon=8", "privacy.delta=0.01"]
    with pytest.raises(fedkd.errors.ConfigError, match="1/1000 .samples of the teacher split"):
        fedkd.run(TINY, overrides=sets, out=tmp_path / "r")


def test_attack_writes_auc_and_roc(tmp_path):
    fedkd.run(TINY, overrides=["strategy.name=hybrid"], out=tmp_path / "run")
    proc = subprocess.run(
        fedkd_cmd("attack", str(tmp_path / "run"), "--reference-epochs", "3"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "run" / "attack.json").read_text())
    assert set(report["models"]) == {
        "students",
        "server_view_of_clients",
        "students_on_teacher_data",
        "teacher_0",
        "teacher_1",
    }
    for m in report["models"].values():
        assert m["members"] == m["non_members"] > 0
        for attack in ("loss", "reference"):
            assert 0 <= m[attack]["auc"] <= 1 and 0 <= m[attack]["tpr_at_1pct_fpr"] <= 1
    assert (tmp_path / "run" / "attack_roc.png").stat().st_size > 1000
    bad = subprocess.run(fedkd_cmd("attack", str(tmp_path)), capture_output=True, text=True)
    assert bad.returncode == 2 and "not a finished fedkd run" in bad.stderr
