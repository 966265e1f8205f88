"""Golden tests for the pure fusion rules."""

import numpy as np
import pytest
from fedkd.strategies.fusion import (
    FUSION_REGISTRY,
    accuracy_weighted,
    mean_logits,
    mean_probs,
    softmax,
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
