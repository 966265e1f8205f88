"""Forward passes the distillation methods need: logits, and last-block features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, computed in chunks."""
    model.eval()
    if len(x) == 0:
        return torch.zeros((0, 0))
    return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-block features ``(N, L, C)`` and logits of ``model`` in one forward pass.

    Models with ``features()`` and ``head`` (fedkd's ``cnn``) give their last conv block,
    channels-last; an ``nn.Sequential`` (``mlp``) gives its last hidden layer as a
    length-1 map ``(N, 1, width)``.
    """
    if hasattr(model, "features") and isinstance(getattr(model, "head", None), nn.Module):
        feats = model.features(x)  # type: ignore[operator]
        return feats, model.head(feats.flatten(1))  # type: ignore[operator]
    if isinstance(model, nn.Sequential) and len(model) >= 2:
        hidden = model[:-1](x)
        return hidden.reshape(len(x), 1, -1), model[-1](hidden)
    raise ValueError(
        f"{type(model).__name__} exposes no features; feature-based losses need a model "
        "with features() and head (cnn) or an nn.Sequential (mlp)"
    )


@torch.no_grad()
def predict_features(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """:func:`features_and_logits` features of ``model`` on ``x`` in eval mode, in chunks."""
    model.eval()
    return torch.cat([features_and_logits(model, c)[0] for c in x.split(batch_size)])


def teacher_features(
    teachers: list[nn.Module], x_proxy: torch.Tensor, feature_teacher: int
) -> np.ndarray:
    """Teacher ``feature_teacher``'s last-block features ``(P, L, C)`` on ``x_proxy``.

    Features of different teachers have unrelated channels, so they are never averaged.
    """
    if not 0 <= feature_teacher < len(teachers):
        raise ValueError(
            f"distill.feature_teacher={feature_teacher} outside 0..{len(teachers) - 1}"
        )
    return predict_features(teachers[feature_teacher], x_proxy).numpy().astype(np.float32)
