"""DKD (Zhao et al. 2022): golden values against an independent numpy reading of the paper."""

import numpy as np
import pytest
import torch

from fedkd.losses import METHODS, ROW_LOSSES, resolve_loss
from fedkd.losses.dkd import dkd_loss, dkd_parts, dkd_rows
from fedkd.losses.response import soft_target_rows

RNG = np.random.default_rng(2022)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * (np.log(p) - np.log(q))).sum())


def ref_dkd(s: np.ndarray, t: np.ndarray, T: float, a: float, b: float) -> float:
    """Row by row from the definitions: binary (target, rest) KL and the renormalised rest."""
    total = 0.0
    for srow, trow in zip(s, t, strict=True):
        ps, pt = softmax(srow / T), softmax(trow / T)
        g = int(trow.argmax())
        rest = np.arange(len(trow)) != g
        tckd = kl(np.array([pt[g], 1 - pt[g]]), np.array([ps[g], 1 - ps[g]]))
        nckd = kl(pt[rest] / pt[rest].sum(), ps[rest] / ps[rest].sum())
        total += T**2 * (a * tckd + b * nckd)
    return total / len(s)


@pytest.mark.parametrize(("T", "a", "b"), [(1.0, 1.0, 8.0), (4.0, 1.0, 8.0), (2.0, 0.5, 2.0)])
def test_dkd_matches_the_definitions_with_t_squared_and_batchmean(T, a, b):
    s, t = RNG.normal(size=(6, 5)) * 3, RNG.normal(size=(6, 5)) * 3
    got = dkd_loss(torch.tensor(s), torch.tensor(t), T, a, b).item()
    assert got == pytest.approx(ref_dkd(s, t, T, a, b), rel=1e-10)


def test_a_hand_computed_row():
    # teacher (2, 0, 0) at T=1: target class 0; student uniform over 3 classes
    s, t = torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[2.0, 0.0, 0.0]]).double()
    pt0 = np.exp(2) / (np.exp(2) + 2)
    tckd = pt0 * np.log(pt0 / (1 / 3)) + (1 - pt0) * np.log((1 - pt0) / (2 / 3))
    # non-target classes are uniform on both sides: NCKD = 0
    assert dkd_loss(s, t, 1.0, 1.0, 8.0).item() == pytest.approx(tckd, rel=1e-12)
    tc, nc = dkd_parts(s, t, 1.0)
    assert nc.item() == pytest.approx(0.0, abs=1e-15)


def test_kd_decomposes_into_tckd_plus_damped_nckd_per_row():
    # the paper's identity: KD = TCKD + (1 - p_target^teacher) * NCKD (before T^2)
    s, t = torch.randn(8, 10, dtype=torch.float64) * 2, torch.randn(8, 10, dtype=torch.float64) * 2
    T = 3.0
    tckd, nckd = dkd_parts(s, t, T)
    pt = torch.softmax(t / T, -1).max(-1).values
    assert torch.allclose(soft_target_rows(s, t, T), T**2 * (tckd + (1 - pt) * nckd), rtol=1e-10)


def test_direction_is_teacher_to_student_and_the_target_comes_from_the_teacher():
    s, t = RNG.normal(size=(4, 6)) * 2, RNG.normal(size=(4, 6)) * 2
    forward = dkd_loss(torch.tensor(s), torch.tensor(t), 2.0).item()
    assert forward == pytest.approx(ref_dkd(s, t, 2.0, 1.0, 8.0), rel=1e-10)
    assert forward != pytest.approx(ref_dkd(t, s, 2.0, 1.0, 8.0), rel=1e-3)
    assert dkd_loss(torch.tensor(t), torch.tensor(t), 2.0).item() == pytest.approx(0, abs=1e-12)


def test_gradient_reaches_the_student_only_and_stays_finite_at_extreme_logits():
    s = torch.tensor([[80.0, -80.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[-90.0, 90.0, 0.0], [100.0, 0.0, -100.0]], requires_grad=True)
    dkd_loss(s, t, 1.0).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_rows_are_the_loss_per_row_and_batch_under_vmap():
    s, t = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    rows = torch.func.vmap(lambda a, b: dkd_rows(a, b, 2.0))(s, t)
    for k in range(3):
        assert rows[k].mean().item() == pytest.approx(dkd_loss(s[k], t[k], 2.0).item(), rel=1e-6)


def test_registered_with_its_two_weights_as_distill_params():
    assert METHODS["dkd"].params == {"alpha_tckd": 1.0, "beta_nckd": 8.0}
    assert "dkd" in ROW_LOSSES  # the vectorized engine trains dkd cohorts together
    s, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    bound = resolve_loss("dkd", {"beta_nckd": 2.0})(s, t, 2.0)
    assert bound.item() == pytest.approx(dkd_loss(s, t, 2.0, 1.0, 2.0).item(), rel=1e-12)
    with pytest.raises(ValueError, match="allowed: alpha_tckd, beta_nckd"):
        resolve_loss("dkd", {"gamma": 1.0})


def test_a_run_with_dkd_and_its_params_trains(tmp_path):
    import json

    import fedkd

    from ..conftest import TINY

    out = tmp_path / "run"
    fedkd.run(
        TINY,
        overrides=[
            "distill.loss=dkd",
            "distill.params.beta_nckd=2.0",
            "rounds=1",
            "baselines.local_only=false",
        ],
        out=out,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert np.isfinite(rows[-1]["distill_loss"]) and rows[-1]["distill_loss"] > 0
    assert json.loads((out / "config.json").read_text())["distill"]["params"] == {"beta_nckd": 2.0}
