"""Attention transfer (Zagoruyko & Komodakis, 2017) for 1D feature maps.

The server sends the mean of its teachers' normalised attention maps of every proxy row;
the client matches its own map to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.losses.forward import predict_features
from fedkd.losses.method import (
    ExtraTerm,
    KDMethod,
    StepBatch,
    TermContext,
    received_knowledge,
    register_method,
    require_teachers,
)
from fedkd.losses.response import soft_target_loss

if TYPE_CHECKING:
    from fedkd.config import DistillConfig


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Channel-pooled, L2-normalised spatial map: ``Q = mean_c |f_c|**p``, ``Q / ||Q||_2``.

    Parameters
    ----------
    features : Tensor of shape (N, L, C)
        Channels-last activations of a conv block.

    Returns
    -------
    Tensor of shape (N, L)

    """
    return F.normalize(features.abs().pow(p).mean(-1), p=2, dim=1)


def attention_loss(student_features: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """``mean((Q_s - Q_t)**2)`` between normalised attention maps.

    ``teacher_map`` ``(N, L_t)`` is what travels (from :func:`attention_map`); when its
    length differs from the student's ``L_s`` it is linearly resampled to ``L_s`` and
    renormalised first.
    """
    q_s = attention_map(student_features)
    q_t = teacher_map.detach()
    if q_t.shape[1] != q_s.shape[1]:
        q_t = F.interpolate(q_t.unsqueeze(1), size=q_s.shape[1], mode="linear").squeeze(1)
        q_t = F.normalize(q_t, p=2, dim=1)
    return (q_s - q_t).pow(2).mean()


def mean_attention_map(teachers: list[nn.Module], x: torch.Tensor) -> np.ndarray:
    """The teachers' attention maps on ``x`` averaged and renormalised, ``(P, L)``.

    Maps of other lengths are resampled to the first teacher's length first.
    """
    maps = [attention_map(predict_features(t, x)) for t in teachers]
    length = maps[0].shape[1]
    maps = [
        m
        if m.shape[1] == length
        else F.interpolate(m.unsqueeze(1), size=length, mode="linear").squeeze(1)
        for m in maps
    ]
    mean = F.normalize(torch.stack(maps).mean(0), p=2, dim=1)
    return mean.numpy().astype(np.float32)


class AttentionTerm(ExtraTerm):
    """Attention transfer towards the teachers' maps on the proxy batch."""

    needs_features = True

    def __init__(self, beta: float, knowledge: torch.Tensor) -> None:
        super().__init__(beta)
        self.knowledge = knowledge

    def term(self, batch: StepBatch) -> torch.Tensor | None:  # noqa: D102
        if batch.pi is None or batch.features is None:
            return None
        return attention_loss(batch.features[: batch.n_proxy], self.knowledge[batch.pi])


@register_method
class Attention(KDMethod):
    """The teachers' mean attention maps down, matched on the client."""

    name = "attention"
    kind = "attention transfer"
    knowledge = "attention"
    default_beta = 100.0
    formula = "response + beta * mean((Q_s - Q_t)^2), Q = normalize(mean_c |f|^2)"
    paper = "Zagoruyko & Komodakis 2017, Paying More Attention to Attention"
    needs_teachers = True
    rank = 3
    loss = staticmethod(soft_target_loss)

    def client_term(self, ctx: TermContext) -> ExtraTerm | None:  # noqa: D102
        knowledge = received_knowledge(self, ctx)
        if knowledge is None:
            return None
        return AttentionTerm(ctx.beta, knowledge)

    def teacher_knowledge(  # noqa: D102
        self, teachers: list[nn.Module], x_proxy: torch.Tensor, distill: DistillConfig, seed: int
    ) -> np.ndarray | None:
        require_teachers(self, teachers)
        return mean_attention_map(teachers, x_proxy)
