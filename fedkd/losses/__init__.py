"""Distillation losses, one small module per loss, and a registry to select them by name.

Modules: ``soft_target`` (response), ``hinton``, ``hint`` (FitNets), ``rkd``,
``attention``, ``born_again``, ``mutual``, ``takd``. What each catalogue method sends and
adds on the client is in :mod:`fedkd.knowledge` and :mod:`fedkd.kd_terms`.

A *distillation loss* in the registry maps ``(student_logits, teacher_targets, temperature)``
on a proxy batch to a scalar. Clients combine it with cross-entropy on their private batch as
``alpha * distill + (1 - alpha) * CE`` (``alpha`` = weight of the distillation term).

Add your own from any module and select it with ``distill.loss = "name"``::

    @fedkd.register_loss("mse")
    def mse(student_logits, teacher_logits, temperature):
        return ((student_logits - teacher_logits) ** 2).mean()
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedkd.losses.hinton import hinton_loss
from fedkd.losses.soft_target import soft_target_loss, soft_target_rows
from fedkd.losses.takd import takd_loss, takd_rows
from fedkd.registry import Registry

DistillLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
LOSS_REGISTRY: Registry[DistillLoss] = Registry("loss")
register_loss = LOSS_REGISTRY.register
"""Register a distillation loss under ``name`` for ``distill.loss`` (decorator)."""
get_loss = LOSS_REGISTRY.lookup
"""Return the registered distillation loss ``name``."""


register_loss("response")(soft_target_loss)
# catalogue methods (fedkd.knowledge): their logit part is the response loss; the client
# adds each method's own term (fedkd.kd_terms), the server sends what it needs
for _name in ("hint", "rkd", "attention", "born_again", "mutual"):
    register_loss(_name)(soft_target_loss)
register_loss("takd")(takd_loss)

RowLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ROW_LOSSES: dict[str, RowLoss] = {"response": soft_target_rows, "takd": takd_rows}
"""Per-row forms ``(..., C) -> (...)`` of registered losses, for the vectorized engine.

A loss listed here trains cohorts of clients together (``engine = "vectorized"``); a loss
without a per-row form falls back to one client after another.
"""

__all__ = [
    "LOSS_REGISTRY",
    "get_loss",
    "hinton_loss",
    "register_loss",
    "soft_target_loss",
    "soft_target_rows",
    "ROW_LOSSES",
]
