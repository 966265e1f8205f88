"""Deep mutual learning (Zhang et al., 2018): peers learn from each other's predictions.

Each client holds ``distill.peers`` co-located students; at every step each peer adds the
soft-target loss towards the mean of the *other* peers' current logits (detached). Across
devices, the server's consensus of the clients' uploads (cross-client strategies) plays the
same role between cohorts.
"""

from __future__ import annotations

import torch

from fedkd.losses.soft_target import soft_target_loss


def mutual_loss(logits: list[torch.Tensor], index: int, temperature: float) -> torch.Tensor:
    """``mean_{j != index} T**2 KL(softmax(z_j / T) || softmax(z_index / T))``.

    Parameters
    ----------
    logits : list of Tensor of shape (N, C)
        Every peer's logits on the same batch.
    index : int
        The peer whose loss this is; the others are constant targets.

    """
    others = [z for j, z in enumerate(logits) if j != index]
    if not others:
        raise ValueError("mutual learning needs at least two peers")
    terms = [soft_target_loss(logits[index], z.detach(), temperature) for z in others]
    return torch.stack(terms).mean()
