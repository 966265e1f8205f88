"""Teacher assistants (``distill.loss = "takd"``), trained on the server before any round.

The server distils its teachers into a chain of mid-size models; the last one teaches
the clients.

Each assistant trains on the server's own data with the Hinton loss: soft targets of the
previous link (the fused teacher ensemble, then each assistant) on the proxy split, and
cross-entropy on the labelled teacher split, ``alpha * KD + (1 - alpha) * CE``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from fedkd.config import FedkdConfig
from fedkd.data import make_splits
from fedkd.models import build_seeded_model, count_parameters
from fedkd.teachers import TeacherBundle
from fedkd.training import accuracy, fit_distill, make_optimizer, predict_logits
from fedkd.views import teacher_shape, teacher_x

log = logging.getLogger("fedkd")


def train_assistant_chain(
    cfg: FedkdConfig,
    teachers: TeacherBundle,
    progress: Callable[[str], None] | None = None,
) -> tuple[TeacherBundle, list[dict[str, object]]]:
    """Distil ``teachers`` along ``distill.assistants``; a bundle holding the last one.

    Returns the bundle clients are taught from (one "teacher": the last assistant, its
    proxy and test logits) and one record per assistant (spec, parameters, accuracy).
    """
    d = cfg.distill
    splits = make_splits(cfg.data, cfg.seed)
    shape, k = teacher_shape(cfg.data, splits, cfg.seed), splits.data.num_classes
    x_lab = torch.from_numpy(teacher_x(cfg.data, splits, splits.teacher, cfg.seed))
    y_lab = torch.from_numpy(splits.data.y[splits.teacher])
    x_proxy = torch.from_numpy(teacher_x(cfg.data, splits, splits.proxy, cfg.seed))
    x_test = torch.from_numpy(teacher_x(cfg.data, splits, splits.test, cfg.seed))
    y_test = torch.from_numpy(splits.data.y[splits.test])
    targets = teachers.fused(
        teachers.proxy_logits, cfg.strategy.teacher_fusion, d.temperature, **cfg.fusion_params
    )
    current = torch.from_numpy(np.ascontiguousarray(targets, np.float32))
    records: list[dict[str, object]] = []
    bundle = teachers
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like teachers: results must not depend on the caller
    try:
        for i, spec in enumerate(d.assistants):
            if progress is not None:
                progress(f"teacher assistant {i + 1}/{len(d.assistants)}: {spec}")
            model = build_seeded_model(spec, shape, k, cfg.seed * 1000 + 61 + i)
            opt = make_optimizer("adam", list(model.parameters()), cfg.teachers.lr)
            fit_distill(
                model,
                opt,
                x_lab,
                y_lab,
                x_proxy,
                current,
                epochs=d.assistant_epochs,
                batch_size=cfg.teachers.batch_size,
                temperature=d.temperature,
                alpha=d.alpha,
                gen=torch.Generator().manual_seed(cfg.seed * 1000 + 62 + i),
            )
            current = predict_logits(model, x_proxy)
            test_logits = predict_logits(model, x_test)
            acc = accuracy(test_logits, y_test)
            log.info("teacher assistant %s: test accuracy %.4f", spec, acc)
            records.append(
                {"spec": spec, "parameters": count_parameters(model), "test_accuracy": acc}
            )
            bundle = replace(
                teachers,
                specs=[spec],
                parameters=[count_parameters(model)],
                proxy_logits=current.numpy()[None],
                test_logits=test_logits.numpy()[None],
                test_accuracy=[acc],
                train_accuracy=[accuracy(predict_logits(model, x_lab), y_lab)],
                cached=[False],
                models=[model],
            )
    finally:
        torch.set_num_threads(threads)
    return bundle, records
