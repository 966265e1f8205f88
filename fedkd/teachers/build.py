"""Building the server's teachers: trained (or cached, or from a checkpoint), or given."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fedkd.config import FedkdConfig
from fedkd.data import make_splits
from fedkd.errors import ConfigError
from fedkd.models import count_parameters
from fedkd.teachers import training
from fedkd.teachers.bundle import TeacherBundle
from fedkd.teachers.cache import cache_paths, found_teachers, save_cached
from fedkd.teachers.given import add_python_path, build_given, total_parameters
from fedkd.teachers.logits import activation_bytes, batched_logits, bounded_batch
from fedkd.training import accuracy
from fedkd.views import teacher_shape, teacher_x

log = logging.getLogger("fedkd")


@dataclass(frozen=True)
class _Inputs:
    """The splits as the teachers see them."""

    shape: tuple[int, ...]
    k: int
    xt: torch.Tensor
    yt: torch.Tensor
    xs: torch.Tensor
    ys: torch.Tensor
    xp: torch.Tensor


def _inputs(cfg: FedkdConfig) -> _Inputs:
    splits = make_splits(cfg.data, cfg.seed)
    try:
        shape = teacher_shape(cfg.data, splits, cfg.seed)
    except ValueError as err:
        raise ConfigError(f"data.teacher_view={cfg.data.teacher_view!r}: {err}") from None

    def x(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(teacher_x(cfg.data, splits, rows, cfg.seed))

    return _Inputs(
        shape=shape,
        k=splits.data.num_classes,
        xt=x(splits.teacher),
        yt=torch.from_numpy(splits.data.y[splits.teacher]),
        xs=x(splits.test),
        ys=torch.from_numpy(splits.data.y[splits.test]),
        xp=x(splits.proxy),
    )


def build_teachers(
    cfg: FedkdConfig, progress: Callable[[str], None] | None = None, workers: int = 1
) -> TeacherBundle:
    """The run's teachers: ``teachers.given``, or ``teachers.count`` trained ones.

    Trained teachers come from ``teachers.checkpoint`` or the cache when there; those
    not found train concurrently on ``workers`` threads (each depends only on its own
    seed, so the result does not depend on ``workers``). Given teachers are loaded from
    their weight files, never trained and never cached.

    Parameters
    ----------
    cfg : FedkdConfig
        The run's config (data, seed and the ``teachers`` section).
    progress : callable, optional
        Called with a status line before training.
    workers : int
        Threads that train the teachers not found.

    Returns
    -------
    TeacherBundle
        The teachers and their logits on the proxy and test splits.

    """
    inputs = _inputs(cfg)
    t = cfg.teachers
    if t.given:
        add_python_path(t.python_path)
        if progress:
            progress(f"loading {len(t.given)} given teacher(s)")
        sample = inputs.xs[:1] if len(inputs.xs) else inputs.xt[:1]
        models = [build_given(g, i, inputs.shape, inputs.k, sample) for i, g in enumerate(t.given)]
        specs = [g.label for g in t.given]
        cached, given = [False] * len(models), [True] * len(models)
        batches = [_given_batch(cfg, i, m, sample) for i, m in enumerate(models)]
    else:
        specs = training.teacher_specs(t.models, t.count, inputs.shape, inputs.k)
        models, cached = _trained(cfg, specs, inputs, progress, workers)
        given = [False] * len(specs)
        batches = [t.inference_batch_size] * len(specs)
    return _bundle(models, specs, cached, given, inputs, batches)


def _given_batch(cfg: FedkdConfig, index: int, model: torch.nn.Module, x1: torch.Tensor) -> int:
    """Rows per forward pass of given teacher ``index`` (its activations bounded)."""
    t = cfg.teachers
    per_row = activation_bytes(model, x1)
    batch = bounded_batch(per_row, t.inference_batch_size, t.inference_memory_mb)
    log.info(
        "given teacher %d: %.1f KB of activations per row, %d rows per forward pass",
        index,
        per_row / 1024,
        batch,
    )
    return batch


def _trained(
    cfg: FedkdConfig,
    specs: list[str],
    inputs: _Inputs,
    progress: Callable[[str], None] | None,
    workers: int,
) -> tuple[list[torch.nn.Module], list[bool]]:
    """Teachers found (cache, checkpoint) or trained on the teacher split; which were found."""
    t, shape, k = cfg.teachers, inputs.shape, inputs.k
    paths = cache_paths(cfg, specs)
    models, cached = found_teachers(t, specs, shape, k, paths)
    todo = [i for i, model in enumerate(models) if model is None]
    if todo and progress:
        progress(f"training {len(todo)} teacher(s) on {len(inputs.yt)} samples")

    def train(i: int) -> torch.nn.Module:
        model = training.train_one(cfg, i, specs[i], shape, k, inputs.xt, inputs.yt)
        if t.cache:
            save_cached(model, paths[i])
        return model

    training.train_concurrently(train, todo, models, workers)
    return [m for m in models if m is not None], cached


def _bundle(
    models: list[torch.nn.Module],
    specs: list[str],
    cached: list[bool],
    given: list[bool],
    inputs: _Inputs,
    batches: list[int],
) -> TeacherBundle:
    """Each teacher's logits (test, proxy) and accuracies (test, teacher split), once."""
    k = inputs.k

    def stacked(x: torch.Tensor, what: str) -> np.ndarray:
        if not models:
            return np.zeros((0, len(x), k), np.float32)
        out = []
        for i, m in enumerate(models):
            start = time.perf_counter()
            out.append(batched_logits(m, x, batches[i]).numpy())
            if given[i]:
                log.info(
                    "given teacher %d: %s logits of %d rows in %.2f s",
                    i,
                    what,
                    len(x),
                    time.perf_counter() - start,
                )
        return np.stack(out)

    test_logits = stacked(inputs.xs, "test")
    return TeacherBundle(
        specs=specs,
        parameters=[
            total_parameters(m) if g else count_parameters(m)
            for m, g in zip(models, given, strict=True)
        ],
        proxy_logits=stacked(inputs.xp, "proxy"),
        test_logits=test_logits,
        test_accuracy=[accuracy(torch.from_numpy(z), inputs.ys) for z in test_logits],
        train_accuracy=[
            accuracy(batched_logits(m, inputs.xt, b), inputs.yt)
            for m, b in zip(models, batches, strict=True)
        ],
        cached=cached,
        models=models,
        given=given,
    )
