"""Golden tests for the pure fusion rules."""

import numpy as np
import pytest
from fedkd.strategies.fusion import (
    FUSION_REGISTRY,
    accuracy_weighted,
    coordinate_median,
    mean_logits,
    mean_probs,
    softmax,
    trimmed_mean,
)

# two sources, two samples, three classes
Z = np.array(
    [
        [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
        [[3.0, 2.0, 1.0], [2.0, 0.0, -2.0]],
    ]
)


def test_mean_logits_golden():
    np.testing.assert_allclose(mean_logits(Z), [[2.0, 2.0, 2.0], [1.0, 0.0, -1.0]], rtol=1e-6)


def test_weighted_mean_logits_golden():
    out = mean_logits(Z, weights=np.array([3.0, 1.0]))
    np.testing.assert_allclose(out, [[1.5, 2.0, 2.5], [0.5, 0.0, -0.5]], rtol=1e-6)


def test_accuracy_weighted_uses_normalised_accuracies():
    out = accuracy_weighted(Z, weights=np.array([0.9, 0.3]))
    np.testing.assert_allclose(out, 0.75 * Z[0] + 0.25 * Z[1], rtol=1e-6)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_mean_probs_is_the_average_of_probabilities(T):
    out = mean_probs(Z, temperature=T)
    expected = (softmax(Z[0], T) + softmax(Z[1], T)) / 2
    # the returned logits, softened at the same T, give back the averaged probabilities
    np.testing.assert_allclose(softmax(out, T), expected, rtol=1e-5)
    # golden number: first sample at T=1 averages [.090,.245,.665] and [.665,.245,.090]
    if T == 1.0:
        np.testing.assert_allclose(softmax(out, 1.0)[0], [0.377636, 0.244728, 0.377636], atol=1e-5)


def test_mean_probs_differs_from_mean_logits():
    # averaging logits and averaging probabilities are different ensembles
    a = softmax(mean_logits(Z), 1.0)
    b = softmax(mean_probs(Z, temperature=1.0), 1.0)
    assert np.abs(a - b).max() > 0.05


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="shape"):
        mean_logits(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="weights"):
        mean_logits(Z, weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="weights"):
        mean_logits(Z, weights=np.array([1.0]))


def test_registry_holds_the_documented_rules():
    assert {"mean", "mean_probs", "accuracy_weighted"} <= set(FUSION_REGISTRY)


def test_era_golden():
    from fedkd.strategies.fusion import entropy_reduction

    # mean probabilities of sample 0 are [.3776, .2447, .3776]; ERA at 0.1 sharpens them
    out = entropy_reduction(Z, temperature=1.0, era_temperature=0.1)
    q = softmax(out, 1.0)[0]
    p = np.array([0.377636, 0.244728, 0.377636])
    expected = np.exp(p / 0.1) / np.exp(p / 0.1).sum()
    np.testing.assert_allclose(q, expected, atol=1e-4)
    np.testing.assert_allclose(q, [0.4416, 0.1169, 0.4416], atol=1e-3)
    # sharper than plain averaging of probabilities
    assert q.max() > p.max()


def test_median_and_trimmed_mean_golden():
    from fedkd.strategies.fusion import coordinate_median, trimmed_mean

    stack = np.array([[[1.0, 0.0]], [[2.0, 0.0]], [[3.0, 1.0]], [[4.0, 1.0]], [[100.0, -50.0]]])
    np.testing.assert_allclose(coordinate_median(stack), [[3.0, 0.0]])
    # K=5, trim 0.2 drops one at each end: mean of [2,3,4] and of sorted [-50,0,0,1,1][1:4]
    np.testing.assert_allclose(
        trimmed_mean(stack, trim_fraction=0.2), [[3.0, 1.0 / 3.0]], rtol=1e-6
    )
    np.testing.assert_allclose(trimmed_mean(stack, trim_fraction=0.0), stack.mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean(stack, trim_fraction=0.5)


def test_robust_rules_resist_one_outlier_that_moves_the_mean():
    from fedkd.strategies.fusion import coordinate_median, trimmed_mean

    rng = np.random.default_rng(0)
    honest = rng.normal(size=(4, 6, 3))
    attacked = np.concatenate([honest, 1000 * np.ones((1, 6, 3))])
    assert np.abs(mean_logits(attacked) - mean_logits(honest)).max() > 100
    assert np.abs(coordinate_median(attacked) - np.median(honest, 0)).max() < 3
    assert np.abs(trimmed_mean(attacked, trim_fraction=0.2)).max() < 5


def test_confidence_and_entropy_weighting_golden():
    from fedkd.strategies.fusion import confidence_weighted, entropy_weighted

    confident = np.array([[10.0, 0.0]])  # p ~ [1, 0]
    unsure = np.array([[0.0, 0.0]])  # p = [.5, .5]
    stack = np.stack([confident, unsure])
    c = 1 / (1 + np.exp(-10.0))  # max probability of the confident source
    np.testing.assert_allclose(
        confidence_weighted(stack), (c * confident + 0.5 * unsure) / (c + 0.5), rtol=1e-5
    )
    # a uniform prediction has entropy log 2: weight 0, so only the confident source counts
    np.testing.assert_allclose(entropy_weighted(stack), confident, rtol=1e-4)
    # all uniform: falls back to the plain mean
    np.testing.assert_allclose(entropy_weighted(np.stack([unsure, unsure])), unsure)


def test_data_size_weights_enter_the_mean_rules():
    w = np.array([30.0, 10.0])
    np.testing.assert_allclose(mean_logits(Z, weights=w), 0.75 * Z[0] + 0.25 * Z[1], rtol=1e-6)
    pm = softmax(mean_probs(Z, weights=w, temperature=1.0), 1.0)
    np.testing.assert_allclose(pm, 0.75 * softmax(Z[0]) + 0.25 * softmax(Z[1]), rtol=1e-5)


def test_apply_fusion_passes_only_accepted_params():
    from fedkd.strategies.fusion import apply_fusion, trimmed_mean

    params = {"trim_fraction": 0.0, "era_temperature": 0.5}
    np.testing.assert_allclose(apply_fusion("mean", Z, **params), mean_logits(Z))
    np.testing.assert_allclose(
        apply_fusion("trimmed_mean", Z, **params), trimmed_mean(Z, trim_fraction=0.0)
    )


def test_weighted_median_and_trimmed_mean_golden():
    z = np.array([1.0, 2.0, 10.0, 3.0], np.float32).reshape(4, 1, 1)
    heavy = np.array([1.0, 1.0, 1.0, 5.0])  # the source with value 3 holds 5/8 of the weight
    assert coordinate_median(z, weights=heavy)[0, 0] == pytest.approx(3.0)
    # equal weights give the unweighted definitions back (mean of the middle two)
    assert coordinate_median(z, weights=np.ones(4))[0, 0] == pytest.approx(2.5)
    assert trimmed_mean(z, weights=np.ones(4), trim_fraction=0.25)[0, 0] == pytest.approx(2.5)
    # weight band [0.25, 0.75]: only the heavy source's value 3 lies inside
    assert trimmed_mean(z, weights=heavy, trim_fraction=0.25)[0, 0] == pytest.approx(3.0)
    # trim 0.1 of the mass at each end: 1 keeps 0.025, 2 keeps 0.125, 3 keeps 0.625,
    # 10 keeps 0.025 of the weight
    band = np.array([0.025, 0.125, 0.625, 0.025])
    expected = (band * np.array([1, 2, 3, 10])).sum() / band.sum()
    assert trimmed_mean(z, weights=heavy, trim_fraction=0.1)[0, 0] == pytest.approx(expected)
