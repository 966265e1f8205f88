"""Relational knowledge distillation (Park et al., 2019): distance- and angle-wise losses.

Both compare *relations* between the samples of a proxy batch, so the student's embedding
may have any width; only pairwise distances and angles are matched. The server sends
teacher ``distill.feature_teacher``'s last-block features (optionally through a random
projection, ``distill.rkd_projection``); relations are taken among the first
``distill.relation_batch`` rows of each proxy batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd import seeds
from fedkd.losses.forward import teacher_features
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


def _gram_distances(emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrix ``G = E E^T`` and the pairwise distances (0 on the diagonal).

    ``||e_i - e_j||^2 = G_ii + G_jj - 2 G_ij`` costs O(N^2 D), not an (N, N, D) tensor.
    """
    gram = emb @ emb.T
    sq = gram.diagonal().unsqueeze(0) + gram.diagonal().unsqueeze(1) - 2 * gram
    off = 1 - torch.eye(len(emb), dtype=emb.dtype, device=emb.device)
    return gram, sq.clamp(min=1e-12).sqrt() * off


def _pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    return _gram_distances(emb)[1]


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
    """Cosines of the angle at j between ``e_i - e_j`` and ``e_k - e_j``, for all (j, i, k).

    From the Gram matrix: ``<e_i - e_j, e_k - e_j> = G_ik - G_ij - G_jk + G_jj``, divided by
    both distances; O(N^2 D + N^3) with no (N, N, D) tensor. Degenerate angles (i = j,
    k = j, or coinciding embeddings) are 0.
    """
    gram, dist = _gram_distances(emb)
    g_jj = gram.diagonal().view(-1, 1, 1)
    dot = gram.unsqueeze(0) - gram.unsqueeze(2) - gram.unsqueeze(1) + g_jj  # [j, i, k]
    valid = dist > 1e-6  # [j, i]
    inv = torch.where(valid, 1.0 / dist.clamp(min=1e-6), torch.zeros_like(dist))
    return (dot * inv.unsqueeze(2) * inv.unsqueeze(1)).flatten()


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


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """``(N, ...)`` features flattened and multiplied by a seeded ``N(0, 1/dim)`` matrix.

    Johnson-Lindenstrauss: pairwise distances (and so RKD's relations) are kept up to a
    relative error of about ``1/sqrt(dim)``, at ``dim`` floats per row.
    """
    flat = features.reshape(len(features), -1)
    rng = seeds.rng(seed, "rkd.projection")
    proj = rng.standard_normal((flat.shape[1], dim)).astype(np.float32) / np.sqrt(dim)
    return (flat @ proj).astype(np.float32)


class RKDTerm(ExtraTerm):
    """Relational KD on the proxy batch's flattened last-block features.

    Relations are taken among the first ``rows`` samples of each (shuffled) proxy batch:
    the angle term costs O(rows**3).
    """

    needs_features = True

    def __init__(self, beta: float, knowledge: torch.Tensor, rows: int = 64) -> None:
        super().__init__(beta)
        self.knowledge = knowledge
        self.rows = rows

    def term(self, batch: StepBatch) -> torch.Tensor | None:  # noqa: D102
        if batch.pi is None or batch.features is None or len(batch.pi) < 3:
            return None
        n = min(batch.n_proxy, self.rows)
        return rkd_loss(batch.features[:n], self.knowledge[batch.pi[:n]])


@register_method
class RKD(KDMethod):
    """Teacher features down, distance and angle relations matched on the client."""

    name = "rkd"
    kind = "relation-based"
    knowledge = "features"
    default_beta = 25.0
    formula = "response + beta * (Huber(psi_D^s, psi_D^t) + 2 Huber(psi_A^s, psi_A^t))"
    paper = "Park et al. 2019, Relational Knowledge Distillation"
    needs_teachers = True
    rank = 2
    loss = staticmethod(soft_target_loss)

    def client_term(self, ctx: TermContext) -> ExtraTerm | None:  # noqa: D102
        knowledge = received_knowledge(self, ctx)
        if knowledge is None:
            return None
        return RKDTerm(ctx.beta, knowledge, rows=ctx.distill.relation_batch)

    def teacher_knowledge(  # noqa: D102
        self, teachers: list[nn.Module], x_proxy: torch.Tensor, distill: DistillConfig, seed: int
    ) -> np.ndarray | None:
        require_teachers(self, teachers)
        feats = teacher_features(teachers, x_proxy, distill.feature_teacher)
        if distill.rkd_projection:
            return random_projection(feats, distill.rkd_projection, seed)
        return feats
