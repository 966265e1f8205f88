"""Vectorized cohorts train exactly like one client after another."""

from __future__ import annotations

import pytest
import torch

import fedkd
from fedkd.losses import LOSS_REGISTRY
from fedkd.models import build_seeded_model
from fedkd.stacked_training import Cohort, Member, stacked_forward
from fedkd.training import fit_distill, make_optimizer

from .conftest import TINY

C = 10
SIZES = [0, 7, 40, 150, 300]  # private data sizes differ (0: distillation only)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable data (class means + noise): well-conditioned training."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, 40, generator=torch.Generator().manual_seed(99)) * 2
    y = torch.randint(0, C, (n,), generator=g)
    return means[y] + torch.randn(n, 40, generator=g), y


def _members(opt: str, spec: str = "cnn:width=8,depth=2") -> list[Member]:
    out = []
    for i, n in enumerate(SIZES):
        model = build_seeded_model(spec, (40,), C, i)
        x, y = _data(n, 100 + i)
        out.append(
            Member(
                model,
                make_optimizer(opt, list(model.parameters()), 1e-2),
                x,
                y,
                torch.Generator().manual_seed(i),
            )
        )
    return out


def _max_diff(a: list[Member], b: list[Member]) -> float:
    return max(
        (pa - pb).abs().max().item()
        for ma, mb in zip(a, b, strict=True)
        for pa, pb in zip(ma.model.parameters(), mb.model.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("opt", "alpha", "n_proxy", "spec"),
    [
        ("adam", 0.7, 300, "cnn:width=8,depth=2"),
        ("adamw", 1.0, 300, "cnn:width=8,depth=2"),
        ("sgd", 0.0, 300, "cnn:width=8,depth=2"),  # CE only: clients take different step counts
        ("sgd", 0.5, 0, "cnn:width=8,depth=2"),  # no soft targets (a consensus round 1)
        ("adam", 0.0, 300, "cnn:width=8,depth=2"),  # masked Adam steps
        ("adam", 0.7, 300, "mlp:width=16,depth=1"),  # no forward_stacked: torch.func.vmap path
    ],
)
def test_cohort_equals_clients_trained_one_by_one(
    opt: str, alpha: float, n_proxy: int, spec: str
) -> None:
    x_proxy, _ = _data(300, 7)
    x_proxy = x_proxy[:n_proxy]
    targets = torch.randn(n_proxy, C, generator=torch.Generator().manual_seed(3)) * 3
    seq, vec = _members(opt, spec), _members(opt, spec)
    kw = {"epochs": 3, "batch_size": 64, "temperature": 4.0, "alpha": alpha}
    expected = [
        fit_distill(m.model, m.opt, m.x_local, m.y_local, x_proxy, targets, gen=m.gen, **kw)
        for m in seq
    ]
    cohort = Cohort(vec)
    got = cohort.fit_distill(x_proxy, targets, lr=1e-2, **kw)
    cohort.write_back()
    assert _max_diff(seq, vec) < 1e-4
    for e, g in zip(expected, got, strict=True):
        assert g.loss == pytest.approx(e.loss, abs=1e-4)
        assert g.distill_loss == pytest.approx(e.distill_loss, abs=1e-4)
        assert g.ce_loss == pytest.approx(e.ce_loss, abs=1e-4)
    # optimizer state came back in torch's own format: ordinary training continues alike
    for group in (seq, vec):
        for m in group:
            fit_distill(m.model, m.opt, m.x_local, m.y_local, x_proxy, targets, gen=m.gen, **kw)
    assert _max_diff(seq, vec) < 1e-4


def test_stacked_forward_matches_each_model() -> None:
    models = [build_seeded_model("cnn:width=6,depth=3", (40,), C, s) for s in range(4)]
    params = {
        n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
        for n, _ in models[0].named_parameters()
    }
    x = torch.randn(4, 9, 40)
    out = stacked_forward(models[0], params, x)
    for k, m in enumerate(models):
        torch.testing.assert_close(out[k], m(x[k]), atol=1e-5, rtol=1e-5)


def test_cohort_rejects_mixed_architectures_and_unknown_row_loss() -> None:
    a = _members("adam")[:2]
    b = _members("adam", "cnn:width=4,depth=2")[:1]
    with pytest.raises(ValueError, match="one architecture"):
        Cohort(a + b)
    with pytest.raises(ValueError, match="no per-row form"):
        Cohort(a).fit_distill(
            torch.zeros(4, 40),
            torch.zeros(4, C),
            epochs=1,
            batch_size=2,
            temperature=1.0,
            alpha=0.5,
            lr=1e-2,
            loss="nope",
        )


def test_vectorized_engine_matches_inprocess_end_to_end(tmp_path) -> None:
    # cohort_size 3 with 4 clients: two cohorts of unequal size, run on two workers
    over = ["rounds=3", "cohort_size=3", "workers=2", "strategy.name=hybrid"]
    a = fedkd.run(TINY, out=tmp_path / "a", overrides=[*over, "engine=inprocess"])
    b = fedkd.run(TINY, out=tmp_path / "b", overrides=[*over, "engine=vectorized"])
    c = fedkd.run(TINY, out=tmp_path / "c", overrides=[*over, "engine=vectorized"])
    assert [r["train_loss"] for r in b.metrics] == [r["train_loss"] for r in c.metrics]
    for ra, rb in zip(a.metrics, b.metrics, strict=True):
        assert rb["student_accuracy_mean"] == pytest.approx(ra["student_accuracy_mean"], abs=1e-3)
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4)
        assert rb["bytes_up"] == ra["bytes_up"]
        assert rb["replies_ok"] == ra["replies_ok"] == 4


def test_vectorized_engine_falls_back_for_losses_without_row_form(tmp_path) -> None:
    name = "test-vectorized-mse"
    if name not in LOSS_REGISTRY:
        fedkd.register_loss(name)(lambda s, t, temperature: ((s - t) ** 2).mean())
    over = ["rounds=1", f"distill.loss={name}"]
    a = fedkd.run(TINY, out=tmp_path / "a", overrides=[*over, "engine=inprocess"])
    b = fedkd.run(TINY, out=tmp_path / "b", overrides=[*over, "engine=vectorized"])
    assert b.metrics[0]["replies_ok"] == 4
    assert b.metrics[0]["train_loss"] == pytest.approx(a.metrics[0]["train_loss"], abs=1e-6)
