"""Warm start: the initial student every client starts from, trained on the server.

With ``strategy.warm_start_epochs > 0`` the server trains one student of
``student.model`` before round 1 and ships it to each client the first time it talks to
that client (train or evaluate instruction, under ``keys.WEIGHTS``; the client adopts it
with a fresh optimizer):

* strategies that use teachers (``uses_teachers``): the client recipe on the server,
  ``distill.alpha`` x KD towards the teachers' ensemble (``strategy.teacher_fusion``) on the
  proxy set + ``(1 - distill.alpha)`` x cross-entropy on the labeled teacher split;
* teacher-free strategies, or no teachers: supervised training on the labeled teacher
  split, FedMD's "transfer learning on a labeled public dataset" (Li & Wang, 2019).

Weight-sharing strategies (fedavg, feddf) use it as their initial global model and
``centralized_kd`` as its initial student. Costs one student's weights per client in
bytes down.
"""

from __future__ import annotations

import numpy as np
import torch

from fedkd.config import FedkdConfig
from fedkd.data import make_splits
from fedkd.models import build_seeded_model
from fedkd.teachers import TeacherBundle
from fedkd.training import fit_distill, fit_supervised, make_optimizer
from fedkd.views import student_shape, student_x


def warm_start_model(
    cfg: FedkdConfig, teachers: TeacherBundle, use_teachers: bool = True
) -> torch.nn.Module | None:
    """The warm-started student (``None`` when ``strategy.warm_start_epochs == 0``).

    ``use_teachers=False`` (teacher-free strategies) takes the supervised path even when
    the config has teachers.
    """
    epochs = cfg.strategy.warm_start_epochs
    if epochs == 0:
        return None
    splits = make_splits(cfg.data, cfg.seed)
    model = build_seeded_model(
        cfg.student_model(0),
        student_shape(cfg.data, splits, cfg.seed),
        splits.data.num_classes,
        cfg.seed + 17,
    )
    opt = make_optimizer(cfg.distill.optimizer, list(model.parameters()), cfg.distill.lr)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    d = cfg.distill
    x_lab = torch.from_numpy(student_x(cfg.data, splits, splits.teacher, cfg.seed))
    y_lab = torch.from_numpy(splits.data.y[splits.teacher])
    if use_teachers and teachers.count:
        targets = teachers.fused(
            teachers.proxy_logits,
            cfg.strategy.teacher_fusion,
            d.temperature,
            **cfg.fusion_params,
        )
        x_proxy = torch.from_numpy(student_x(cfg.data, splits, splits.proxy, cfg.seed))
        fit_distill(
            model,
            opt,
            x_lab,
            y_lab,
            x_proxy,
            torch.from_numpy(np.ascontiguousarray(targets, np.float32)),
            epochs=epochs,
            batch_size=d.batch_size,
            temperature=d.temperature,
            alpha=d.alpha,
            gen=gen,
            loss=d.loss,
        )
    else:
        fit_supervised(
            model,
            opt,
            x_lab,
            y_lab,
            epochs=epochs,
            batch_size=d.batch_size,
            gen=gen,
        )
    return model
