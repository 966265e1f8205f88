"""Golden values (against independent numpy formulas) and gradient flow of the catalogue
losses: hint, rkd, attention, born_again, mutual, takd."""

import itertools

import numpy as np
import pytest
import torch

from fedkd.losses import get_loss, soft_target_loss
from fedkd.losses.attention import attention_loss, attention_map
from fedkd.losses.born_again import generation_of, self_distill_loss
from fedkd.losses.hint import HintAdapter, hint_loss
from fedkd.losses.mutual import mutual_loss
from fedkd.losses.rkd import rkd_angle_loss, rkd_distance_loss, rkd_loss
from fedkd.losses.takd import takd_loss

RNG = np.random.default_rng(0)


def huber(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.where(d < 1, 0.5 * d**2, d - 0.5).mean())


def ref_soft_target(s: np.ndarray, t: np.ndarray, T: float) -> float:
    def softmax(z):
        z = z / T - (z / T).max(1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    pt, ps = softmax(t), softmax(s)
    return float(T**2 * (pt * (np.log(pt) - np.log(ps))).sum() / len(s))


# ------------------------------------------------------------------------------- hint
def test_hint_loss_is_mean_squared_error_over_every_element():
    s, t = RNG.normal(size=(3, 4, 5)), RNG.normal(size=(3, 4, 5))
    got = hint_loss(torch.tensor(s), torch.tensor(t)).item()
    assert got == pytest.approx(((s - t) ** 2).sum() / s.size, rel=1e-12)


def test_hint_adapter_maps_channels_and_length():
    torch.manual_seed(0)
    adapter = HintAdapter(student_channels=4, teacher_channels=6, teacher_length=10)
    f_s = torch.randn(2, 5, 4)
    out = adapter(f_s)
    assert out.shape == (2, 10, 6)
    # a 1x1 map over channels at each position: equal to the linear layer per position
    same = HintAdapter(4, 6, 5)
    same.load_state_dict(adapter.state_dict())
    ref = f_s.double() @ same.proj.weight.double().T + same.proj.bias.double()
    assert torch.allclose(same(f_s).double(), ref, atol=1e-6)


def test_hint_gradient_reaches_student_and_adapter_not_teacher():
    adapter = HintAdapter(3, 2, 4)
    f_s = torch.randn(5, 4, 3, requires_grad=True)
    f_t = torch.randn(5, 4, 2, requires_grad=True)
    hint_loss(adapter(f_s), f_t).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert adapter.proj.weight.grad is not None and adapter.proj.weight.grad.abs().sum() > 0
    assert f_t.grad is None


# -------------------------------------------------------------------------------- rkd
def ref_rkd_distance(s: np.ndarray, t: np.ndarray) -> float:
    def psi(e):
        n = len(e)
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
        return d / d[~np.eye(n, dtype=bool)].mean()

    return huber(psi(s), psi(t))


def ref_rkd_angle(s: np.ndarray, t: np.ndarray) -> float:
    def psi(e):
        out = []
        for i, j, k in itertools.product(range(len(e)), repeat=3):
            a, b = e[i] - e[j], e[k] - e[j]
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            out.append(0.0 if na == 0 or nb == 0 else a @ b / (na * nb))
        return np.array(out)

    return huber(psi(s), psi(t))


def test_rkd_distance_and_angle_match_independent_loops():
    s, t = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 7)) * 3
    st, tt = torch.tensor(s), torch.tensor(t)
    assert rkd_distance_loss(st, tt).item() == pytest.approx(ref_rkd_distance(s, t), rel=1e-6)
    assert rkd_angle_loss(st, tt).item() == pytest.approx(ref_rkd_angle(s, t), rel=1e-6)
    total = rkd_loss(st, tt, distance_weight=25, angle_weight=50).item()
    assert total == pytest.approx(25 * ref_rkd_distance(s, t) + 50 * ref_rkd_angle(s, t), rel=1e-6)


def test_rkd_is_zero_for_a_scaled_and_rotated_copy_and_flattens_feature_maps():
    t = torch.randn(8, 3, 2, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    s = 5.0 * t.flatten(1) @ q  # same relations: distances scaled, angles kept
    assert rkd_loss(s, t).item() == pytest.approx(0.0, abs=1e-10)
    assert rkd_loss(s.reshape(8, 2, 3), t).item() == pytest.approx(0.0, abs=1e-10)


def test_rkd_gradient_reaches_student_only():
    s = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(6, 5, requires_grad=True)
    rkd_loss(s, t).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


# -------------------------------------------------------------------------- attention
def ref_attention_map(f: np.ndarray) -> np.ndarray:
    q = (np.abs(f) ** 2).mean(-1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_attention_map_and_loss_match_independent_formula():
    f_s, f_t = RNG.normal(size=(4, 6, 3)), RNG.normal(size=(4, 6, 9))
    q_t = ref_attention_map(f_t)
    assert np.allclose(attention_map(torch.tensor(f_t)).numpy(), q_t, atol=1e-12)
    got = attention_loss(torch.tensor(f_s), torch.tensor(q_t)).item()
    assert got == pytest.approx(((ref_attention_map(f_s) - q_t) ** 2).mean(), rel=1e-10)


def test_attention_resamples_a_longer_teacher_map():
    f_s = torch.randn(2, 5, 3, dtype=torch.float64)
    q_t = attention_map(torch.randn(2, 10, 4, dtype=torch.float64))
    # the teacher map resampled to the student's length (pairs averaged), renormalised
    pooled = (q_t[:, 0::2] + q_t[:, 1::2]) / 2
    pooled = pooled / pooled.norm(dim=1, keepdim=True)
    want = ((attention_map(f_s) - pooled) ** 2).mean().item()
    assert attention_loss(f_s, q_t).item() == pytest.approx(want, rel=1e-9)


def test_attention_gradient_reaches_student_only():
    f_s = torch.randn(3, 4, 2, requires_grad=True)
    q_t = attention_map(torch.randn(3, 4, 5)).requires_grad_(True)
    attention_loss(f_s, q_t).backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert q_t.grad is None


# ------------------------------------------------------------------------- born_again
@pytest.mark.parametrize(
    ("rounds", "generations", "expected"),
    [
        (10, 2, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]),
        (10, 3, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]),
        (4, 1, [1, 1, 1, 1]),
        (2, 5, [1, 2]),
    ],
)
def test_generations_cut_rounds_into_equal_parts(rounds, generations, expected):
    assert [generation_of(r, rounds, generations) for r in range(1, rounds + 1)] == expected


def test_self_distill_is_the_soft_target_loss_towards_the_previous_generation():
    s, prev = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))
    s_t = torch.tensor(s, requires_grad=True)
    p_t = torch.tensor(prev, requires_grad=True)
    loss = self_distill_loss(s_t, p_t, 3.0)
    assert loss.item() == pytest.approx(ref_soft_target(s, prev, 3.0), rel=1e-10)
    loss.backward()
    assert s_t.grad is not None and p_t.grad is None


# ----------------------------------------------------------------------------- mutual
def test_mutual_loss_is_the_mean_kl_from_the_other_peers():
    z = [RNG.normal(size=(4, 3)) for _ in range(3)]
    got = mutual_loss([torch.tensor(a) for a in z], 1, 2.0).item()
    want = (ref_soft_target(z[1], z[0], 2.0) + ref_soft_target(z[1], z[2], 2.0)) / 2
    assert got == pytest.approx(want, rel=1e-10)


def test_mutual_gradient_reaches_only_the_peer_whose_loss_it_is():
    z = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    mutual_loss(z, 0, 1.0).backward()
    assert z[0].grad is not None and z[0].grad.abs().sum() > 0
    assert z[1].grad is None and z[2].grad is None


def test_mutual_needs_two_peers():
    with pytest.raises(ValueError, match="at least two peers"):
        mutual_loss([torch.randn(2, 3)], 0, 1.0)


# ------------------------------------------------------------------------------- takd
def test_takd_client_loss_is_the_response_loss_and_every_name_is_registered():
    s, t = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    assert takd_loss(torch.tensor(s), torch.tensor(t), 4.0).item() == pytest.approx(
        ref_soft_target(s, t, 4.0), rel=1e-10
    )
    for name in ("hint", "rkd", "attention", "born_again", "mutual", "takd"):
        # the logit part of every catalogue method is the response loss
        assert get_loss(name)(torch.tensor(s), torch.tensor(t), 2.0).item() == pytest.approx(
            soft_target_loss(torch.tensor(s), torch.tensor(t), 2.0).item()
        )
