"""Cross-client strategies and poisoned clients."""

import numpy as np
import pytest
from fedkd.strategies.client_fusion import DSFL, FedMD, Hybrid
from fedkd.strategies.fusion import entropy_reduction, mean_logits, softmax

import fedkd
from fedkd.attacks import corrupt_logits, flip_labels, malicious_partitions
from fedkd.teachers import TeacherBundle
from fedkd.validation import load_config

from ..conftest import TINY


def _bundle(k=2, p=5, c=3, seed=0):
    z = np.random.default_rng(seed).normal(size=(k, p, c)).astype(np.float32)
    return TeacherBundle(["mlp"] * k, [1] * k, z, z, [0.5] * k, [0.5] * k, [False] * k)


def test_fedmd_round_one_sends_nothing_then_the_consensus():
    cfg = load_config(TINY, ["strategy.name=fedmd"])
    s = FedMD(cfg, num_proxy=5, num_classes=3)
    rows, targets = s.round_targets(1, np.arange(5))
    assert rows.shape == (0,) and targets.shape == (0, 3)
    logits = np.random.default_rng(1).normal(size=(4, 5, 3))
    s.fuse_client_logits(1, np.arange(5), logits, np.array([1.0, 1.0, 2.0, 4.0]))
    rows, targets = s.round_targets(2, np.arange(5))
    np.testing.assert_array_equal(rows, np.arange(5))
    np.testing.assert_allclose(
        targets, mean_logits(logits, weights=np.array([1, 1, 2, 4.0])), rtol=1e-6
    )


def test_dsfl_uses_era_by_default():
    cfg = load_config(TINY, ["strategy.name=dsfl", "strategy.era_temperature=0.2"])
    s = DSFL(cfg, num_proxy=5, num_classes=3)
    logits = np.random.default_rng(2).normal(size=(3, 5, 3))
    s.fuse_client_logits(1, np.arange(5), logits, np.ones(3))
    expected = entropy_reduction(logits, temperature=cfg.distill.temperature, era_temperature=0.2)
    np.testing.assert_allclose(s.round_targets(2, np.arange(5))[1], expected, rtol=1e-6)


def test_robust_rules_use_data_sizes_unless_uniform():
    logits = np.random.default_rng(3).normal(size=(3, 5, 3))
    for weighting, expected in (("uniform", np.median(logits, 0)), ("data_size", logits[0])):
        cfg = load_config(
            TINY,
            [
                "strategy.name=fedmd",
                "strategy.fusion=median",
                f"strategy.client_weights={weighting}",
            ],
        )
        s = FedMD(cfg, num_proxy=5, num_classes=3)
        # client 0 holds > half the data: the weighted median is its logits
        s.fuse_client_logits(1, np.arange(5), logits, np.array([100.0, 1.0, 1.0]))
        np.testing.assert_allclose(s.round_targets(2, np.arange(5))[1], expected, rtol=1e-6)


def test_hybrid_teacher_weight_schedule_and_mixture():
    cfg = load_config(
        TINY,
        [
            "strategy.name=hybrid",
            "strategy.teacher_weight_floor=0.25",
            "strategy.teacher_decay_rounds=3",
        ],
    )
    s = Hybrid(cfg, _bundle())
    assert [s.teacher_weight(r) for r in (1, 2, 3, 4, 9)] == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.25]
    )
    t = cfg.distill.temperature
    rows, first = s.round_targets(1, np.arange(5))
    np.testing.assert_allclose(softmax(first, t), softmax(s.teacher_targets, t), rtol=1e-5)
    clients = np.random.default_rng(4).normal(size=(2, 3, 3))
    s.fuse_client_logits(1, np.array([0, 2, 4]), clients, np.ones(2))
    _, mixed = s.round_targets(3, np.arange(5))
    p_t, p_c = softmax(s.teacher_targets, t), softmax(mean_logits(clients), t)
    expected = p_t.copy()
    expected[[0, 2, 4]] = 0.5 * p_t[[0, 2, 4]] + 0.5 * p_c
    np.testing.assert_allclose(softmax(mixed, t), expected, rtol=1e-5)


def test_malicious_set_is_seeded_and_sized():
    a = malicious_partitions(50, 0.2, seed=1)
    assert a == malicious_partitions(50, 0.2, seed=1) and len(a) == 10
    assert a != malicious_partitions(50, 0.2, seed=2)
    assert malicious_partitions(50, 0.0, seed=1) == frozenset()


def test_corruptions():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 10)).astype(np.float32)
    np.testing.assert_allclose(corrupt_logits(z, "scaled_logits", 7.0, rng), 7 * z)
    noise = corrupt_logits(z, "random_logits", 5.0, rng)
    assert (
        noise.shape == z.shape
        and 3 < noise.std() < 7
        and abs(np.corrcoef(noise.ravel(), z.ravel())[0, 1]) < 0.1
    )
    assert corrupt_logits(z, "label_flip", 5.0, rng) is z
    np.testing.assert_array_equal(flip_labels(np.array([0, 3, 9]), 10), [9, 6, 0])


@pytest.mark.parametrize(
    "name", ["fedmd", "dsfl", "hybrid", "local", "fedavg", "feddf", "centralized_kd"]
)
def test_each_strategy_runs_end_to_end(tmp_path, name):
    s = fedkd.run(
        TINY, out=tmp_path, overrides=[f"strategy.name={name}", "baselines.local_only=false"]
    ).summary
    assert s["strategy"] == name and s["final"]["student_accuracy_mean"] is not None
    assert s["rejected_replies"] == 0


def test_weights_travel_only_where_the_strategy_sends_them(tmp_path):
    def run(name):
        over = [f"strategy.name={name}", "baselines.local_only=false", "rounds=1"]
        return fedkd.run(TINY, out=tmp_path / name, overrides=over).summary["communication"]

    local, fedavg, feddf, central = (run(n) for n in ("local", "fedavg", "feddf", "centralized_kd"))
    cnn4 = (1 * 5 * 4 + 4) + (4 * 20 * 10 + 10)  # student cnn:width=4,depth=1 on 40 inputs
    # fedavg: every sampled client gets the global model and sends its own back (float32),
    # and no proxy logits; local clients upload metrics only
    assert fedavg["by_phase_up"]["train"] - local["by_phase_up"]["train"] >= 4 * cnn4 * 4
    assert local["by_phase_up"]["train"] < 4 * 400
    assert fedavg["by_phase_down"]["train"] >= 4 * cnn4 * 4
    # feddf also uploads proxy logits (400 rows x 10 classes per client)
    assert feddf["by_phase_up"]["train"] - fedavg["by_phase_up"]["train"] >= 4 * 400 * 10 * 4
    assert "train" not in central["by_phase_down"]


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    from simulations.make_tabular_npz import make

    x, y = make(5000, seed=5)
    path = tmp_path_factory.mktemp("tab") / "tab.npz"
    np.savez(path, x=x, y=y)
    return path


def _fedmd(tmp_path, tabular, *extra):
    return fedkd.run(
        TINY,
        out=tmp_path,
        overrides=[
            f"data.name=npz:{tabular}",
            "teachers.count=0",
            "strategy.name=fedmd",
            "student.model=mlp:width=32,depth=1",
            "num_clients=10",
            "rounds=8",
            "distill.local_epochs=3",
            "partition.alpha=0.3",
            "baselines.local_only=false",
            *extra,
        ],
    ).summary


def test_random_logits_pull_the_mean_down_and_trimmed_mean_holds(tmp_path, tabular):
    attack = ("attack.fraction=0.2", "attack.kind=random_logits")
    clean = _fedmd(tmp_path / "clean", tabular)
    attacked = _fedmd(tmp_path / "mean", tabular, *attack)
    robust = _fedmd(tmp_path / "trim", tabular, *attack, "strategy.fusion=trimmed_mean")
    a = attacked["attack"]
    assert clean["attack"] is None and a["kind"] == "random_logits"
    assert len(a["malicious"]) == 2 and set(a["malicious"]) <= set(range(10))
    base = clean["final"]["student_accuracy_mean"]
    assert base > 0.75
    # plain mean fusion visibly drops for the honest clients (measured: 83.1% -> 74.8%)
    assert a["honest_accuracy_mean"] < base - 0.05
    # data-size-weighted trimmed mean stays close to the clean run (measured: 80.2%)
    assert robust["attack"]["honest_accuracy_mean"] > base - 0.035
    assert robust["attack"]["honest_accuracy_mean"] > a["honest_accuracy_mean"] + 0.04
