"""Distillation methods, one file each, and the registries that select them by name.

Every module of this package is imported here (:func:`pkgutil.iter_modules`), and each
method file registers itself (:func:`fedkd.losses.method.register_method`): adding a
method is adding one file. Built in: ``response`` (Hinton soft targets), ``hint``
(FitNets), ``rkd``, ``attention``, ``born_again``, ``mutual``, ``takd``; see
:mod:`fedkd.losses.method` for what a method holds and docs/losses.md for the catalogue.

A *distillation loss* maps ``(student_logits, teacher_targets, temperature)`` on a proxy
batch to a scalar. Clients combine it with cross-entropy on their private batch as
``alpha * distill + (1 - alpha) * CE`` (``alpha`` = weight of the distillation term).

Add your own logit loss from any module and select it with ``distill.loss = "name"``::

    @fedkd.register_loss("mse")
    def mse(student_logits, teacher_logits, temperature):
        return ((student_logits - teacher_logits) ** 2).mean()
"""

from __future__ import annotations

import importlib
import pkgutil

from fedkd.losses.hinton import hinton_loss
from fedkd.losses.method import (
    LOSS_REGISTRY,
    METHODS,
    ROW_LOSSES,
    DistillLoss,
    ExtraTerm,
    KDMethod,
    RowLoss,
    StepBatch,
    TermContext,
    catalogue,
    get_loss,
    method_of,
    register_loss,
    register_method,
    resolve_loss,
    resolve_rows,
)
from fedkd.losses.response import soft_target_loss, soft_target_rows

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "LOSS_REGISTRY",
    "METHODS",
    "ROW_LOSSES",
    "DistillLoss",
    "ExtraTerm",
    "KDMethod",
    "RowLoss",
    "StepBatch",
    "TermContext",
    "catalogue",
    "get_loss",
    "hinton_loss",
    "method_of",
    "register_loss",
    "register_method",
    "resolve_loss",
    "resolve_rows",
    "soft_target_loss",
    "soft_target_rows",
]
