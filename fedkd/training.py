"""Pure PyTorch training: supervised fitting, distillation, evaluation. Knows nothing of Flower.

All randomness comes from an explicit ``torch.Generator`` so results are reproducible.
Batches are drawn by index from tensors already in memory (no DataLoader): for the small
models fedkd simulates, this is several times faster.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.batch_schedule import Step, distill_schedule, fit_schedule, shuffled_batches
from fedkd.distill_objective import NO_STATS, DistillStats, step_objective
from fedkd.losses import DistillLoss, ExtraTerm, StepBatch, get_loss
from fedkd.losses.forward import features_and_logits, predict_logits
from fedkd.parse_lock import PARSE_LOCK

_FIRST_OPTIMIZER = threading.Event()


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (``adam``, ``sgd`` with momentum 0.9, ``adamw``).

    Adam and AdamW use the fused CPU kernel (about 20% faster for small students). The
    first one built in a process imports ``torch._dynamo`` (which parses ASTs); it is built
    under :data:`fedkd.parse_lock.PARSE_LOCK` so client threads cannot race it.
    """
    if not _FIRST_OPTIMIZER.is_set():
        with PARSE_LOCK:
            opt = _make_optimizer(name, params, lr)
            _FIRST_OPTIMIZER.set()
            return opt
    return _make_optimizer(name, params, lr)


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer '{name}'; allowed: adam, adamw, sgd")


def fit_supervised(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
) -> float:
    """Train ``model`` with cross-entropy on ``(x, y)``; returns the last epoch's mean loss."""
    model.train()
    last = float("nan")
    for _ in range(epochs):
        total, steps = 0.0, 0
        for idx in shuffled_batches(len(x), batch_size, gen):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        last = total / max(steps, 1)
    return last


def fit_distill(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x_local: torch.Tensor,
    y_local: torch.Tensor,
    x_proxy: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    temperature: float,
    alpha: float,
    gen: torch.Generator,
    loss: str | DistillLoss = "response",
    extra: ExtraTerm | None = None,
) -> DistillStats:
    """Train a student on private data plus soft targets on the proxy set.

    Each step takes one proxy batch and one private batch (:func:`fit_schedule`) and
    minimises ``alpha * [distill(s(x_proxy), targets, T) + beta * extra] + (1 - alpha) *
    CE(s(x_local), y_local)`` (:func:`fedkd.distill_objective.step_objective`), where
    ``alpha`` is the weight of the *distillation* side and ``extra`` an optional catalogue
    term (:class:`fedkd.losses.ExtraTerm`) of weight ``extra.beta``. One epoch is
    ``ceil(max(len(x_proxy), len(x_local)) / batch_size)`` steps; the shorter side is
    reshuffled and cycled.

    Parameters
    ----------
    targets : Tensor of shape (len(x_proxy), C)
        Soft targets as logits (not probabilities).
    loss : str or callable
        Registered distillation loss name (see :mod:`fedkd.losses`) or the loss itself.
    extra : ExtraTerm, optional
        The catalogue method's own term (hint, rkd, attention, born_again, mutual).

    """
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    schedule = fit_schedule(
        len(x_proxy), len(x_local), alpha=alpha, batch_size=batch_size, epochs=epochs, gen=gen
    )
    model.train()
    stats = NO_STATS
    for epoch in schedule:
        sums = [0.0, 0.0, 0.0]  # total, distill, ce
        for pi, li in epoch:
            # one forward pass over both batches (the models have no batch statistics)
            parts = ([x_proxy[pi]] if pi is not None else []) + (
                [x_local[li]] if li is not None else []
            )
            x = torch.cat(parts) if len(parts) > 1 else parts[0]
            step = _StepInputs(x, pi, li, targets, y_local, temperature, alpha)
            total = _step_loss(model, step, loss_fn, extra, sums)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if extra is not None:
                extra.step()
            sums[0] += total.item()
        n = max(len(epoch), 1)
        stats = DistillStats(sums[0] / n, sums[1] / n, sums[2] / n)
    return stats


@dataclass(frozen=True)
class _StepInputs:
    x: torch.Tensor
    pi: torch.Tensor | None
    li: torch.Tensor | None
    targets: torch.Tensor
    y_local: torch.Tensor
    temperature: float
    alpha: float


def _step_loss(
    model: nn.Module,
    step: _StepInputs,
    loss_fn: DistillLoss,
    extra: ExtraTerm | None,
    sums: list[float],
) -> torch.Tensor:
    """One step's objective on the proxy rows ``pi`` then the private rows ``li`` of ``x``.

    Adds the step's distillation (with ``beta * term``) and cross-entropy values to
    ``sums[1]`` and ``sums[2]``.
    """
    pi, li, x = step.pi, step.li, step.x
    feats = None
    if extra is not None and extra.needs_features:
        feats, out = features_and_logits(model, x)
    else:
        out = model(x)
    n_p = len(pi) if pi is not None else 0
    kd = ce = term = None
    if pi is not None:
        kd = loss_fn(out[:n_p], step.targets[pi], step.temperature)
        sums[1] += kd.item()
    if li is not None:
        ce = F.cross_entropy(out[n_p:], step.y_local[li])
        sums[2] += ce.item()
    if extra is None:
        return step_objective(torch.zeros(()), kd, ce, step.alpha)
    extra.zero_grad()
    term = extra.term(
        StepBatch(
            x=x,
            n_proxy=n_p,
            pi=pi,
            li=li,
            logits=out,
            features=feats,
            targets=step.targets[pi] if pi is not None else None,
            y=step.y_local[li] if li is not None else None,
            temperature=step.temperature,
            alpha=step.alpha,
        )
    )
    if term is not None:
        sums[1] += extra.beta * term.item()
    return step_objective(torch.zeros(()), kd, ce, step.alpha, term, extra.beta)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``logits`` whose argmax equals ``y``."""
    if len(y) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == y).float().mean())


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of ``model`` on ``(x, y)``."""
    return accuracy(predict_logits(model, x), y)


__all__ = [
    "DistillStats",
    "Step",
    "accuracy",
    "distill_schedule",
    "evaluate",
    "fit_distill",
    "fit_schedule",
    "fit_supervised",
    "make_optimizer",
    "predict_logits",
]
