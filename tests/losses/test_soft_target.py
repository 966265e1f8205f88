"""Golden values and easy-to-get-wrong conventions of the soft-target and Hinton losses."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedkd.losses import get_loss, hinton_loss, soft_target_loss


def reference_soft_target(s: np.ndarray, t: np.ndarray, T: float) -> float:
    """Independent formula: T^2 / N * sum_i sum_c p_t log(p_t / p_s), in float64 numpy."""

    def softmax(z):
        z = z / T
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    pt, ps = softmax(t), softmax(s)
    return float(T**2 * np.sum(pt * (np.log(pt) - np.log(ps))) / len(s))


S = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 5.0]])
TT = np.array([[1.0, 1.5, -0.5], [2.0, -1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]])
Y = np.array([0, 2, 1, 2])


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
def test_soft_target_matches_independent_formula(T):
    got = soft_target_loss(torch.tensor(S), torch.tensor(TT), T).item()
    assert got == pytest.approx(reference_soft_target(S, TT, T), rel=1e-10)


def test_soft_target_golden_value():
    # computed once with a plain per-element Python loop over sum_c p_t log(p_t/p_s), T=2
    assert reference_soft_target(S, TT, 2.0) == pytest.approx(0.8069905, abs=1e-5)
    assert soft_target_loss(torch.tensor(S), torch.tensor(TT), 2.0).item() == pytest.approx(
        0.8069905, abs=1e-5
    )


def test_common_mistakes_give_different_values():
    s, t, T = torch.tensor(S), torch.tensor(TT), 4.0
    right = soft_target_loss(s, t, T).item()
    ls, lt = F.log_softmax(s / T, 1), F.log_softmax(t / T, 1)
    mean_reduction = F.kl_div(ls, lt, log_target=True, reduction="mean").item() * T**2
    no_t_squared = F.kl_div(ls, lt, log_target=True, reduction="batchmean").item()
    swapped = F.kl_div(lt, ls, log_target=True, reduction="batchmean").item() * T**2
    assert right == pytest.approx(mean_reduction * S.shape[1])  # batchmean = mean * C
    for wrong in (mean_reduction, no_t_squared, swapped):
        assert abs(right - wrong) > 1e-3


def test_zero_when_student_equals_teacher_and_positive_otherwise():
    z = torch.randn(8, 5)
    assert soft_target_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-7)
    assert soft_target_loss(z, torch.randn(8, 5), 3.0).item() > 0


def test_gradient_flows_only_into_student():
    s = torch.tensor(S, requires_grad=True)
    t = torch.tensor(TT, requires_grad=True)
    soft_target_loss(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_t_squared_keeps_gradient_scale():
    # with T^2 the gradient magnitude stays O(1) as T grows (Hinton et al. 2015)
    s = torch.tensor(S, requires_grad=True)
    grads = []
    for T in (2.0, 20.0):
        s.grad = None
        soft_target_loss(s, torch.tensor(TT), T).backward()
        grads.append(s.grad.abs().sum().item())
    assert 0.2 < grads[1] / grads[0] < 5


def test_hinton_alpha_is_the_distillation_weight():
    s, t, y = torch.tensor(S), torch.tensor(TT), torch.tensor(Y)
    kd = soft_target_loss(s, t, 4.0).item()
    ce = F.cross_entropy(s, y).item()
    assert hinton_loss(s, t, y, 4.0, alpha=1.0).item() == pytest.approx(kd)
    assert hinton_loss(s, t, y, 4.0, alpha=0.0).item() == pytest.approx(ce)
    assert hinton_loss(s, t, y, 4.0, alpha=0.7).item() == pytest.approx(0.7 * kd + 0.3 * ce)


def test_hinton_golden_value():
    s, t, y = torch.tensor(S), torch.tensor(TT), torch.tensor(Y)
    ce = -np.mean([S[i, Y[i]] - math.log(np.exp(S[i]).sum()) for i in range(len(Y))])
    expected = 0.5 * reference_soft_target(S, TT, 2.0) + 0.5 * ce
    assert hinton_loss(s, t, y, 2.0, 0.5).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_temperature_rejected(bad):
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(torch.tensor(S), torch.tensor(TT), bad)


def test_bad_alpha_rejected():
    with pytest.raises(ValueError, match="alpha"):
        hinton_loss(torch.tensor(S), torch.tensor(TT), torch.tensor(Y), 2.0, 1.5)


def test_registry_default_is_soft_target_and_custom_losses_register():
    import fedkd

    assert get_loss("response") is soft_target_loss

    @fedkd.register_loss("test_mse")
    def mse(s, t, T):
        return ((s - t) ** 2).mean()

    assert get_loss("test_mse") is mse
    with pytest.raises(KeyError, match="allowed"):
        get_loss("nope")
