"""The distillation catalogue: what each ``distill.loss`` transfers and sends.

Besides the soft-target logits, some methods send teacher features or attention maps.

Every catalogue method trains the student on

    alpha * [soft_target(s, t, T) + beta * term] + (1 - alpha) * CE(private)

where ``alpha`` is the weight of the *distillation* side and ``beta`` the weight of the
method's own term (``distill.beta``; each method has a default). ``response`` and
``takd`` have no extra term on the client. The server computes the teachers' knowledge
(features or attention maps on the proxy split) once; the rows each instruction needs
travel in the Message and their bytes are counted like the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

Knowledge = Literal["logits", "features", "attention"]


@dataclass(frozen=True)
class Method:
    """One entry of the catalogue (used by the trainer, the server and ``docs/losses.md``)."""

    name: str
    kind: str
    knowledge: Knowledge
    """What travels down besides logits: nothing, teacher features, or attention maps."""
    default_beta: float
    formula: str
    paper: str
    needs_teachers: bool = False
    """The knowledge comes from the server's teachers (strategy must have teachers)."""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "response",
            "response-based",
            "logits",
            0.0,
            "T^2 KL(softmax(t/T) || softmax(s/T)), batchmean",
            "Hinton et al. 2015, Distilling the Knowledge in a Neural Network",
        ),
        Method(
            "hint",
            "feature-based",
            "features",
            1.0,
            "response + beta * mean((r(f_s) - f_t)^2), r a learned 1x1 adapter",
            "Romero et al. 2015, FitNets: Hints for Thin Deep Nets",
            needs_teachers=True,
        ),
        Method(
            "rkd",
            "relation-based",
            "features",
            25.0,
            "response + beta * (Huber(psi_D^s, psi_D^t) + 2 Huber(psi_A^s, psi_A^t))",
            "Park et al. 2019, Relational Knowledge Distillation",
            needs_teachers=True,
        ),
        Method(
            "attention",
            "attention transfer",
            "attention",
            100.0,
            "response + beta * mean((Q_s - Q_t)^2), Q = normalize(mean_c |f|^2)",
            "Zagoruyko & Komodakis 2017, Paying More Attention to Attention",
            needs_teachers=True,
        ),
        Method(
            "born_again",
            "self-distillation",
            "logits",
            1.0,
            "response + beta * T^2 KL(p_prev || p_s) on proxy and private batches",
            "Furlanello et al. 2018, Born-Again Neural Networks",
        ),
        Method(
            "mutual",
            "online (mutual)",
            "logits",
            1.0,
            "response + beta * mean_j T^2 KL(p_peer_j || p_s) on proxy and private batches",
            "Zhang et al. 2018, Deep Mutual Learning",
        ),
        Method(
            "takd",
            "progressive (assistants)",
            "logits",
            0.0,
            "response towards the last assistant of teachers -> TA_1 -> ... -> TA_n",
            "Mirzadeh et al. 2020, Improved KD via Teacher Assistant",
        ),
    )
}
"""Built-in catalogue. A loss registered with ``@fedkd.register_loss`` is a logit loss
(``knowledge = "logits"``, no extra term)."""


def method_of(loss: str) -> Method | None:
    """The catalogue entry of ``distill.loss`` (None for user-registered logit losses)."""
    return METHODS.get(loss)


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


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """``(N, ...)`` features flattened and multiplied by a seeded ``N(0, 1/dim)`` matrix.

    Johnson-Lindenstrauss: pairwise distances (and so RKD's relations) are kept up to a
    relative error of about ``1/sqrt(dim)``, at ``dim`` floats per row.
    """
    flat = features.reshape(len(features), -1)
    rng = np.random.default_rng([seed, 43])
    proj = rng.standard_normal((flat.shape[1], dim)).astype(np.float32) / np.sqrt(dim)
    return (flat @ proj).astype(np.float32)


def teacher_knowledge(
    method: Method,
    teachers: list[nn.Module],
    x_proxy: torch.Tensor,
    feature_teacher: int,
    projection: int = 0,
    seed: int = 0,
) -> np.ndarray | None:
    """What ``method`` sends besides logits, for every proxy row (None: nothing).

    ``features`` (hint, rkd): teacher ``feature_teacher``'s last-block features ``(P, L, C)``
    (features of different teachers have unrelated channels, so they are not averaged).
    ``attention``: the mean over all teachers of their normalised attention maps
    ``(P, L)``, renormalised (maps of other lengths are resampled to the first's).
    ``projection > 0`` (rkd only): the features go through :func:`random_projection`.
    """
    from fedkd.losses.attention import attention_map

    if method.knowledge == "logits":
        return None
    if not teachers:
        raise ValueError(f"distill.loss={method.name!r} needs teachers (teachers.count >= 1)")
    if method.knowledge == "features":
        if not 0 <= feature_teacher < len(teachers):
            raise ValueError(
                f"distill.feature_teacher={feature_teacher} outside 0..{len(teachers) - 1}"
            )
        feats = predict_features(teachers[feature_teacher], x_proxy).numpy().astype(np.float32)
        if projection and method.name == "rkd":
            return random_projection(feats, projection, seed)
        return feats
    maps = [attention_map(predict_features(t, x_proxy)) for t in teachers]
    length = maps[0].shape[1]
    maps = [
        m
        if m.shape[1] == length
        else torch.nn.functional.interpolate(m.unsqueeze(1), size=length, mode="linear").squeeze(1)
        for m in maps
    ]
    mean = torch.nn.functional.normalize(torch.stack(maps).mean(0), p=2, dim=1)
    return mean.numpy().astype(np.float32)
