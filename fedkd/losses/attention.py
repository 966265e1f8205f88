"""Attention transfer (Zagoruyko & Komodakis, 2017) for 1D feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
