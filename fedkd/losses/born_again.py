"""Born-again networks (Furlanello et al., 2018): a student distils from its earlier self.

Rounds are cut into ``distill.generations`` equal generations. When a client first trains
in generation ``g >= 2`` it freezes its current student as the teacher of the new
generation and starts a freshly initialised student of the same architecture.
"""

from __future__ import annotations

import math

import torch

from fedkd.losses.soft_target import soft_target_loss


def generation_of(server_round: int, rounds: int, generations: int) -> int:
    """Generation (1-based) of ``server_round``: ``ceil(rounds / generations)`` rounds each."""
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    per = max(1, math.ceil(rounds / generations))
    return min(generations, (server_round - 1) // per + 1)


def self_distill_loss(
    student_logits: torch.Tensor, previous_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Soft-target loss towards the previous generation's logits (the same KL convention)."""
    return soft_target_loss(student_logits, previous_logits, temperature)
