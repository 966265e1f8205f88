"""Hinton distillation loss: soft targets mixed with hard-label cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkd.losses.response import soft_target_loss


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha * soft_target_loss(s, t, T) + (1 - alpha) * cross_entropy(s, y)``.

    ``alpha`` is the weight of the *distillation* term (``alpha = 1``: pure distillation,
    ``alpha = 0``: plain supervised cross-entropy). Some texts use ``alpha`` for the
    cross-entropy weight instead; fedkd never does.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (N, C)
        Logits, not probabilities.
    labels : Tensor of shape (N,)
        Integer class labels.
    temperature : float
        Softening temperature ``T > 0`` of the soft-target term.
    alpha : float
        Distillation weight in ``[0, 1]``.

    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * soft_target_loss(student_logits, teacher_logits, temperature) + (
        1.0 - alpha
    ) * F.cross_entropy(student_logits, labels)
