"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): TCKD and NCKD weighed apart.

The soft-target loss splits exactly into a *target-class* part and a *non-target-class*
part, ``KD = TCKD + (1 - p_t) * NCKD`` (per row, ``p_t`` the teacher's probability of the
target class). The second part is damped exactly where the teacher is confident; DKD
gives each part its own weight instead::

    DKD = T^2 * (alpha_tckd * TCKD + beta_nckd * NCKD)    (batch mean)

    TCKD = KL(b_t || b_s),  b = (p_target, 1 - p_target)          (binary)
    NCKD = KL(q_t || q_s),  q = softmax over the non-target classes

both directions teacher -> student, on ``softmax(z / T)``. ``alpha_tckd`` and
``beta_nckd`` are ``distill.params`` (paper defaults 1 and 8); they are not
``distill.alpha`` (the weight of the whole distillation side against cross-entropy) nor
``distill.beta`` (a method's extra client term, which DKD does not have).

The proxy set is unlabeled, so the *target class* of a row is the teacher's top class
(``argmax`` of the soft targets), not a ground-truth label. The paper's warm-up of the DKD
weight over the first epochs is not applied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedkd.losses.method import KDMethod, register_method


def dkd_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(TCKD, NCKD)`` without the ``T**2`` factor; shapes ``(..., C) -> (...)``.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (..., C)
        Logits (not probabilities); the teacher side is detached. ``C >= 2``.
    temperature : float
        Softening temperature ``T > 0``.

    Returns
    -------
    tuple of Tensor
        ``KL(b_t || b_s)`` over (target, rest) and ``KL(q_t || q_s)`` over the non-target
        classes, each of shape ``(...)``. Written with masks and ``logsumexp`` (no
        ``-inf`` reaches a product, so gradients stay finite) and without ``F.kl_div``, so
        ``torch.func.vmap`` batches it.

    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if teacher_logits.shape[-1] < 2:
        raise ValueError("dkd needs at least 2 classes")
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    classes = torch.arange(log_pt.shape[-1], device=log_pt.device)
    target = classes == log_pt.argmax(-1, keepdim=True)
    ps_target = log_ps.masked_fill(~target, 0.0).sum(-1)
    pt_target = log_pt.masked_fill(~target, 0.0).sum(-1)
    ps_rest = log_ps.masked_fill(target, float("-inf")).logsumexp(-1)
    pt_rest = log_pt.masked_fill(target, float("-inf")).logsumexp(-1)
    tckd = pt_target.exp() * (pt_target - ps_target) + pt_rest.exp() * (pt_rest - ps_rest)
    log_qs = log_ps - ps_rest.unsqueeze(-1)
    log_qt = log_pt - pt_rest.unsqueeze(-1)
    nckd = (log_qt.exp().masked_fill(target, 0.0) * (log_qt - log_qs)).sum(-1)
    return tckd, nckd


def dkd_rows(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    alpha_tckd: float = 1.0,
    beta_nckd: float = 8.0,
) -> torch.Tensor:
    """Per-row DKD: ``T**2 * (alpha_tckd * TCKD + beta_nckd * NCKD)``, ``(..., C) -> (...)``."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, temperature)
    return (alpha_tckd * tckd + beta_nckd * nckd) * temperature**2


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    alpha_tckd: float = 1.0,
    beta_nckd: float = 8.0,
) -> torch.Tensor:
    """DKD averaged over the batch (batchmean: summed over classes, divided by rows).

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (N, C)
        Logits; the target class of a row is the teacher's argmax.
    temperature : float
        Softening temperature ``T > 0``; both parts are scaled by ``T**2``.
    alpha_tckd, beta_nckd : float
        Weights of the target-class and the non-target-class parts.

    Returns
    -------
    Tensor
        Scalar with a gradient into the student only.

    """
    return dkd_rows(student_logits, teacher_logits, temperature, alpha_tckd, beta_nckd).mean()


@register_method
class DKD(KDMethod):
    """Response distillation with the target and non-target parts weighed apart."""

    name = "dkd"
    kind = "response-based (decoupled)"
    formula = "T^2 (alpha_tckd KL(b_t || b_s) + beta_nckd KL(q_t || q_s)), target = argmax t"
    paper = "Zhao et al. 2022, Decoupled Knowledge Distillation"
    params = {"alpha_tckd": 1.0, "beta_nckd": 8.0}
    rank = 1
    loss = staticmethod(dkd_loss)
    rows = staticmethod(dkd_rows)
