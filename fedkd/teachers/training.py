"""Teachers fedkd trains itself: specs, seeds, the rows each trains on, concurrent training."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from fedkd import seeds
from fedkd.config import FedkdConfig
from fedkd.errors import ConfigError
from fedkd.models import build_model, build_seeded_model
from fedkd.training import fit_supervised, make_optimizer

TRAINING_RECIPE = 3
"""Bumped whenever teacher training changes, so cached teachers are not reused wrongly."""


def teacher_seed(cfg: FedkdConfig, index: int) -> int:
    """Seed of teacher ``index``: its initial weights, bootstrap and batches."""
    return seeds.int_seed(cfg.seed, "teachers.init", index)


def teacher_rows(cfg: FedkdConfig, index: int, n: int) -> np.ndarray | None:
    """Rows of the ``n``-sample teacher split that teacher ``index`` trains on (None: all).

    A disjoint shard (``teachers.disjoint`` or PATE), a bootstrap sample, or everything.
    """
    t = cfg.teachers
    if t.disjoint or cfg.privacy.mode == "pate":
        perm = seeds.rng(cfg.seed, "teachers.shards").permutation(n)
        return np.array_split(perm, t.count)[index]
    if t.bootstrap:
        return np.random.default_rng(teacher_seed(cfg, index)).integers(0, n, n)
    return None


def teacher_specs(models: list[str], count: int, shape: tuple[int, ...], k: int) -> list[str]:
    """Each teacher's model spec (``models`` round-robin); one that cannot fit is refused."""
    specs = [models[i % len(models)] for i in range(count)]
    for spec in specs:
        try:
            build_model(spec, shape, k)
        except ValueError as err:
            raise ConfigError(f"teachers.models: {spec!r}: {err}") from None
    return specs


def train_one(
    cfg: FedkdConfig,
    index: int,
    spec: str,
    shape: tuple[int, ...],
    k: int,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.nn.Module:
    """Train teacher ``index`` of model ``spec`` on its rows of the teacher split ``(x, y)``."""
    t = cfg.teachers
    seed = teacher_seed(cfg, index)
    model = build_seeded_model(spec, shape, k, seed)
    rows = teacher_rows(cfg, index, len(x))
    if rows is not None:
        x, y = x[torch.from_numpy(rows)], y[torch.from_numpy(rows)]
    opt = make_optimizer("adam", list(model.parameters()), t.lr)
    fit_supervised(
        model,
        opt,
        x,
        y,
        epochs=t.epochs,
        batch_size=t.batch_size,
        gen=torch.Generator().manual_seed(seed),
    )
    return model


def train_concurrently(
    train: Callable[[int], torch.nn.Module],
    todo: list[int],
    models: list[torch.nn.Module | None],
    workers: int,
) -> None:
    """``models[i] = train(i)`` for each ``i`` in ``todo``, on up to ``workers`` threads.

    Teachers are independent (own seed, own bootstrap): they train concurrently, each on
    one torch thread whatever the caller's setting (float results depend on it, and a
    cached teacher must not depend on which command trained it).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max(1, min(workers, len(todo) or 1))) as pool:
            for i, model in zip(todo, pool.map(train, todo), strict=True):
                models[i] = model
    finally:
        torch.set_num_threads(threads)
