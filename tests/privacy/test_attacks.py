"""Attacks on fedkd's privacy mechanisms: each protection is tested by trying to undo it.

The adversary knows everything in the run directory and the scenario file, the seed
included, and the code. DP noise must not be regenerable from any of it.
"""

import json
import subprocess

import numpy as np
import pytest
import torch
from fedkd.strategies.base import KDStrategy

import fedkd
from fedkd import keys
from fedkd.privacy.accounting import plan_privacy
from fedkd.privacy.client_dp import clip_upload, sensitivity
from fedkd.privacy.noise import TAG_CENTRAL, SeededNoise
from fedkd.privacy.pate import pate_targets
from fedkd.validation import load_config

from ..conftest import ROOT, TINY, fedkd_cmd

CENTRAL = ["privacy.mode=client_dp", "privacy.noise_multiplier=2.0", "privacy.delta=0.01"]


def _central_release(sets: list[str], uploads: np.ndarray, server_round: int = 1):
    """The consensus a central client_dp strategy releases for ``uploads`` (K, P, C)."""
    cfg = load_config(TINY, [*CENTRAL, "strategy.name=hybrid", *sets])
    plan = plan_privacy(cfg, [100] * cfg.num_clients, 1000)
    strategy = KDStrategy(cfg, uploads.shape[1], uploads.shape[2])
    strategy.node_of = {p: 100 + p for p in range(cfg.num_clients)}
    strategy.set_privacy(plan)
    release, _ = strategy.release_uploads(server_round, uploads.copy(), np.ones(len(uploads)))
    expected = plan.sample_rate * cfg.num_clients
    clean = np.sum([clip_upload(u, plan.clip) for u in uploads], axis=0) / expected
    return cfg, plan, release[0], clean, expected


def _seed_attack(cfg, plan, release, expected, server_round=1):
    """Regenerate the noise from the public seed (both the old and the debug stream)."""
    std = plan.noise_multiplier * sensitivity(plan.clip, release.shape[0])
    guesses = [
        SeededNoise(cfg.seed, TAG_CENTRAL, server_round).normal(std, release.shape),
        np.random.default_rng([cfg.seed, 41, server_round]).normal(0.0, std, release.shape),
    ]
    return [release - g / expected for g in guesses]


def test_regenerating_central_noise_from_the_seed_recovers_nothing():
    uploads = np.random.default_rng(5).normal(0, 3, (3, 40, 10)).astype(np.float32)
    cfg, plan, release, clean, expected = _central_release([], uploads)
    noise_scale = plan.noise_multiplier * sensitivity(plan.clip, 40) / expected  # per entry
    for recovered in _seed_attack(cfg, plan, release, expected):
        rms_error = float(np.sqrt(np.mean((recovered - clean) ** 2)))
        assert rms_error >= 0.9 * noise_scale  # at least the noise itself: nothing removed
    # the attack itself works: against the debugging switch it removes all the noise
    cfg, plan, release, clean, expected = _central_release(
        ["privacy.reproducible_noise=true"], uploads
    )
    recovered = _seed_attack(cfg, plan, release, expected)[0]
    assert np.abs(recovered - clean).max() < 1e-4
    assert plan.private is False and plan.summary()["private"] is False


def test_same_seed_twice_gives_different_releases():
    uploads = np.random.default_rng(6).normal(0, 3, (3, 40, 10)).astype(np.float32)
    a = _central_release([], uploads)[2]
    b = _central_release([], uploads)[2]
    assert not np.allclose(a, b)
    teacher_logits = np.random.default_rng(7).normal(0, 1, (4, 400, 10)).astype(np.float32)
    cfg = load_config(
        TINY, ["privacy.mode=pate", "privacy.noise_multiplier=20", "teachers.count=4"]
    )
    assert not np.array_equal(pate_targets(cfg, teacher_logits), pate_targets(cfg, teacher_logits))


def test_dp_sgd_noise_and_poisson_batches_do_not_follow_the_seed():
    from fedkd.models import build_model
    from fedkd.privacy.dp_sgd import fit_distill_dp
    from fedkd.training import make_optimizer

    x = torch.randn(64, 1, 40)
    y = torch.randint(0, 10, (64,))
    xp, tp = torch.randn(32, 1, 40), torch.randn(32, 10)

    def fit() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("cnn:width=4,depth=1", (1, 40), 10)
        opt = make_optimizer("adam", list(model.parameters()), 1e-2)
        fit_distill_dp(
            model, opt, x, y, xp, tp, epochs=1, batch_size=16, temperature=2.0, alpha=0.5,
            gen=torch.Generator().manual_seed(1), noise_multiplier=1.0, clip=1.0,
        )  # fmt: skip
        return [p.detach().clone() for p in model.parameters()]

    a, b = fit(), fit()  # same seed, same generator: the private randomness still differs
    assert any(not torch.allclose(p, q) for p, q in zip(a, b, strict=True))


def _run(tmp_path, name, sets):
    return fedkd.run(TINY, overrides=sets, out=tmp_path / name)


def test_private_runs_differ_unless_reproducible_and_report_the_snr(tmp_path):
    sets = [*CENTRAL, "strategy.name=hybrid", "rounds=2", "baselines.local_only=false"]
    a, b = _run(tmp_path, "a", sets), _run(tmp_path, "b", sets)
    assert [r["distill_loss"] for r in a.metrics] != [r["distill_loss"] for r in b.metrics]
    p = json.loads((tmp_path / "a" / "summary.json").read_text())["privacy"]
    assert p["private"] is True and "urandom" in p["noise_source"]
    assert p["snr_mean"] > 0 and np.isfinite(p["snr_mean"]) and p["snr_min"] <= p["snr_mean"]
    assert "trusted server" in p["threat_model"]
    assert all(r["privacy_snr"] is None or r["privacy_snr"] > 0 for r in a.metrics)
    debug = [*sets, "privacy.reproducible_noise=true"]
    c, d = _run(tmp_path, "c", debug), _run(tmp_path, "d", debug)
    assert c.metrics[-1]["distill_loss"] == d.metrics[-1]["distill_loss"]
    assert c.summary["privacy"]["private"] is False
    assert "NOT private" in c.summary["privacy"]["noise_source"]


def test_local_dp_noise_is_2Cz_even_when_the_server_asks_for_none(tmp_path, monkeypatch):
    """A hostile server instructs no noise; the client applies its own, at scale 2 C z."""
    seen: list[np.ndarray] = []
    configure = KDStrategy.configure_train
    release_uploads = KDStrategy.release_uploads

    def hostile_configure(self, *args, **kw):
        msgs = list(configure(self, *args, **kw))
        for m in msgs:
            conf = m.content.config_records[keys.CONFIG]
            conf[keys.DP_NOISE] = 0.0
            conf[keys.DP_LOCAL] = False
            conf[keys.DP_CLIP] = 1e6
        return msgs

    def record(self, server_round, logits, weights):
        seen.append(logits.copy())
        return release_uploads(self, server_round, logits, weights)

    monkeypatch.setattr(KDStrategy, "configure_train", hostile_configure)
    monkeypatch.setattr(KDStrategy, "release_uploads", record)
    z, clip = 1.5, 0.5
    sets = [
        "privacy.mode=client_dp",
        f"privacy.noise_multiplier={z}",
        f"privacy.clip={clip}",
        "privacy.local=true",
        "privacy.delta=0.01",
        "strategy.name=hybrid",
        "strategy.proxy_fraction=0.25",
        "rounds=1",
        "baselines.local_only=false",
    ]
    result = _run(tmp_path, "local", sets)
    uploads = np.concatenate(seen)  # (K, P, C)
    rows = uploads.shape[1]
    assert rows == 100
    # clipped rows have norm <= clip; the rest is noise of std 2 C z sqrt(rows)
    expected_std = 2 * clip * z * np.sqrt(rows)
    assert uploads.std() == pytest.approx(expected_std, rel=0.05)
    p = result.summary["privacy"]
    assert p["local"] is True and p["sample_rate"] == 1.0 and p["noise_multiplier"] == z
    assert "the adversary is the server" in p["threat_model"]


def test_a_device_owners_local_dp_floor_beats_the_run_config():
    from flwr.app import ConfigRecord, Context, RecordDict

    from fedkd.client.local_dp import dp_parameters

    cfg = load_config(TINY, ["strategy.name=hybrid"])  # the run config: not private at all
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={keys.NODE_LOCAL_DP_NOISE: 3.0, keys.NODE_LOCAL_DP_CLIP: 0.25},
        state=RecordDict(),
        run_config={},
    )
    got = dp_parameters(cfg, ctx, ConfigRecord({keys.DP_NOISE: 0.0}))
    assert got["dp_mode"] == "client_dp" and got["dp_local"] is True
    assert got["dp_noise"] == 3.0 and got["dp_clip"] == 0.25 and got["dp_reproducible"] is False
    more = dp_parameters(
        cfg,
        ctx,
        ConfigRecord({keys.DP_MODE: "client_dp", keys.DP_LOCAL: True, keys.DP_NOISE: 5.0}),
    )
    assert more["dp_noise"] == 5.0  # a server may add noise, never remove it


def test_dp_sgd_replans_from_the_sizes_devices_report():
    from fedkd.experiment import replan_from_discovery
    from fedkd.privacy.accounting import epsilon
    from fedkd.privacy.dp_sgd import private_steps_per_epoch, sample_rate

    sets = [
        "privacy.mode=dp_sgd",
        "privacy.epsilon=4",
        "privacy.delta=1e-4",
        "distill.batch_size=32",
    ]
    cfg = load_config(TINY, sets)
    simulated = plan_privacy(cfg, [150, 150, 150, 150], 1000)

    class Discovered:  # what KDStrategy.discover leaves: the sizes the devices reported
        client_info = {0: {"size": 150}, 1: {"size": 60}, 2: {"size": 150}, 3: {"size": 150}}
        target_rows = None

        def set_privacy(self, plan, rows):
            self.plan = plan

    strategy = Discovered()
    plan = replan_from_discovery(cfg, strategy, 1000)
    assert strategy.plan is plan and plan.sizes_from == "sizes reported at discovery"

    def spent_by_60_sample_device(z: float) -> float:
        d = cfg.distill
        steps = d.local_epochs * private_steps_per_epoch(60, d.batch_size) * cfg.rounds
        return epsilon(z, sample_rate(60, d.batch_size), steps, cfg.privacy.delta)

    assert spent_by_60_sample_device(simulated.noise_multiplier) > 4.0  # the old plan overspent
    assert spent_by_60_sample_device(plan.noise_multiplier) <= 4.0 + 1e-6
    assert plan.summary()["epsilon"] <= 4.0


@pytest.mark.parametrize(
    ("config", "sets", "needle"),
    [
        (
            TINY,
            ["privacy.mode=pate", "privacy.epsilon=8", "strategy.warm_start_epochs=5"],
            "warm_start_epochs",
        ),
        (
            ROOT / "tests" / "edge_tiny.toml",
            ["privacy.mode=client_dp", "privacy.epsilon=8", "strategy.name=hybrid"],
            "privacy.amplification=false",
        ),
        (
            TINY,
            ["privacy.mode=client_dp", "privacy.epsilon=8", "strategy.name=multi_teacher"],
            "would protect nothing",
        ),
    ],
)
def test_unsafe_privacy_combinations_are_refused_with_exit_2(tmp_path, config, sets, needle):
    args = sum((["--set", s] for s in sets), [])
    proc = subprocess.run(
        fedkd_cmd("run", str(config), "--out", str(tmp_path / "r"), *args),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_client_dp_with_tiers_is_accounted_without_amplification_when_asked():
    sets = ["privacy.mode=client_dp", "privacy.epsilon=8", "strategy.name=hybrid"]
    cfg = load_config(ROOT / "tests" / "edge_tiny.toml", [*sets, "privacy.amplification=false"])
    plan = plan_privacy(cfg, [50] * cfg.num_clients, 1000)
    assert plan.sample_rate == 1.0  # every client counted in every round: sound for any tier
    assert plan.summary()["sampling"] == "none counted (q = 1)"
    free = plan_privacy(load_config(TINY, [*sets, "strategy.fraction=0.5"]), [50] * 4, 1000)
    assert free.sample_rate == 0.5 and free.noise_multiplier < plan.noise_multiplier
