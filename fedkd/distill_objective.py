"""The loss of one distillation step, shared by every trainer.

    alpha * [distill + beta * term] + (1 - alpha) * CE

``alpha`` weighs the *distillation* side (proxy batch), ``1 - alpha`` the cross-entropy
on the private batch, ``beta`` a catalogue method's own term (:mod:`fedkd.losses`). The
sequential trainer sums scalars, the vectorized cohorts ``(K,)`` vectors (one entry per
client), DP-SGD the python floats it reports; all go through :func:`step_objective`, in
the same order of float operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch

V = TypeVar("V", torch.Tensor, float)


def step_objective(
    zero: V,
    kd: V | None,
    ce: V | None,
    alpha: float,
    term: V | None = None,
    beta: float = 0.0,
) -> V:
    """``zero + alpha * kd + (1 - alpha) * ce + alpha * beta * term``, absent parts skipped.

    Parameters
    ----------
    zero : Tensor or float
        The empty sum: ``torch.zeros(())``, ``torch.zeros(K)`` or ``0.0``.
    kd, ce, term : Tensor or float, optional
        The distillation loss on the proxy batch, the cross-entropy on the private batch
        and the method's own term (each None when the step has none).
    alpha : float
        Distillation weight in ``[0, 1]``.
    beta : float
        Weight of ``term``.

    """
    total = zero
    if kd is not None:
        total = total + alpha * kd
    if ce is not None:
        total = total + (1.0 - alpha) * ce
    if term is not None:
        total = total + alpha * beta * term
    return total


@dataclass(frozen=True)
class DistillStats:
    """Mean losses of the last epoch of a distillation fit."""

    loss: float
    distill_loss: float
    ce_loss: float


NO_STATS = DistillStats(float("nan"), float("nan"), float("nan"))
"""What a fit with no epoch reports."""
