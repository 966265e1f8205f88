"""Response-based distillation (Hinton et al., 2015): the soft-target loss.

Every other method's logit part is this loss; ``response`` itself adds nothing on the
client and sends nothing but the soft targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkd.losses.method import KDMethod, register_method


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T**2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (N, C)
        Logits (not probabilities). The teacher side is treated as a constant target
        (detached), so gradients flow into the student only.
    temperature : float
        Softening temperature ``T > 0``. The ``T**2`` factor keeps gradient magnitudes
        comparable across temperatures.

    Returns
    -------
    Tensor
        Scalar: the KL divergence *from the teacher to the student*, summed over classes
        and divided by the batch size (``reduction="batchmean"``), times ``T**2``.

    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = teacher_logits.detach()
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.log_softmax(t / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def soft_target_rows(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-row terms of :func:`soft_target_loss`: ``T**2 * KL(p_t || p_s)`` for each row.

    Works on any leading batch shape (``(..., C)`` in, ``(...)`` out); the mean over the
    rows of a batch equals :func:`soft_target_loss`. Written without ``F.kl_div`` so that
    ``torch.func.vmap`` batches it (``kl_div`` has no batching rule).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1) * temperature**2


@register_method
class Response(KDMethod):
    """Soft targets only."""

    name = "response"
    kind = "response-based"
    formula = "T^2 KL(softmax(t/T) || softmax(s/T)), batchmean"
    paper = "Hinton et al. 2015, Distilling the Knowledge in a Neural Network"
    rank = 0
    loss = staticmethod(soft_target_loss)
    rows = staticmethod(soft_target_rows)
