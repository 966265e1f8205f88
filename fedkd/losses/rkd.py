"""Relational knowledge distillation (Park et al., 2019): distance- and angle-wise losses.

Both compare *relations* between the samples of a proxy batch, so the student's embedding
may have any width; only pairwise distances and angles are matched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    sq = (emb.unsqueeze(0) - emb.unsqueeze(1)).pow(2).sum(-1)
    return sq.clamp(min=1e-12).sqrt() * (1 - torch.eye(len(emb), dtype=emb.dtype))


def _normalized_distances(emb: torch.Tensor) -> torch.Tensor:
    d = _pairwise_distances(emb)
    off_diag = d[d > 0]
    return d / off_diag.mean() if off_diag.numel() else d


def rkd_distance_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Huber (smooth L1) loss between the mean-normalised pairwise distance matrices.

    ``psi_D(i, j) = ||e_i - e_j|| / mu`` with ``mu`` the mean distance over pairs ``i != j``;
    the loss is the mean over all ``N**2`` entries of ``smooth_l1(psi_D^s, psi_D^t)``.
    """
    with torch.no_grad():
        t = _normalized_distances(teacher_emb.detach())
    return F.smooth_l1_loss(_normalized_distances(student_emb), t, reduction="mean")


def _angles(emb: torch.Tensor) -> torch.Tensor:
    # cos of the angle at j between (e_i - e_j) and (e_k - e_j), for all (i, j, k)
    diff = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), p=2, dim=2)  # [j, i] = e_i - e_j
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_angle_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Huber loss between the cosines of all triplet angles ``angle(e_i - e_j, e_k - e_j)``."""
    with torch.no_grad():
        t = _angles(teacher_emb.detach())
    return F.smooth_l1_loss(_angles(student_emb), t, reduction="mean")


def rkd_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    distance_weight: float = 1.0,
    angle_weight: float = 2.0,
) -> torch.Tensor:
    """``distance_weight * rkd_distance + angle_weight * rkd_angle`` (the paper's 25:50 ratio).

    Parameters
    ----------
    student_emb, teacher_emb : Tensor of shape (N, D_s), (N, D_t)
        Embeddings of the same N proxy samples (flattened last-block features).

    """
    s, t = student_emb.flatten(1), teacher_emb.flatten(1)
    return distance_weight * rkd_distance_loss(s, t) + angle_weight * rkd_angle_loss(s, t)
