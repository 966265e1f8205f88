"""Many nodes' train instructions at once, as vectorized cohorts (the vectorized engine)."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from flwr.app import Context, Message

from fedkd.client.node import private_size
from fedkd.client.train_job import TrainJob, prepare_train
from fedkd.client.train_reply import finish_train, reply_logits_and_accuracy
from fedkd.client.trainer import run_job
from fedkd.losses import resolve_rows
from fedkd.stacked_training import Cohort, Member

Pair = tuple[Message, Context]
"""A train instruction and its node's Context."""


def train_cohort(
    pairs: list[Pair],
    cohort_size: int,
    workers: int,
    done: Callable[[int, Message | Exception], None] | None = None,
    acquire: Callable[[int], Context] | None = None,
) -> list[Message | Exception]:
    """Vectorized ``train`` for many nodes at once (see :mod:`fedkd.stacked_training`).

    Nodes are ordered by private data size (similar sizes share a cohort: less padding)
    and cut into balanced windows of at most ``cohort_size`` (at least one per worker);
    a window's jobs that share architecture,
    hyperparameters and soft targets train as one cohort. ``workers`` windows run at once,
    on one torch thread each (on CPU, two single-threaded cohorts beat one cohort on two
    threads). A window is decoded only when it runs, so memory grows with
    ``workers x cohort_size``, not with the number of nodes. ``done(i, reply)`` is called
    as soon as pair ``i`` is finished (the engine stores its state then); ``acquire(i)``,
    when given, returns pair ``i``'s full Context just before its window runs (the pairs
    may then carry contexts without state). Each node ends
    with the same student, optimizer state and reply as after
    :func:`fedkd.client.trainer.train` (up to float rounding). Returns one reply, or the
    exception that node's instruction raised, per pair.
    """
    out: list[Message | Exception] = [ValueError("not run")] * len(pairs)

    def finish(i: int, reply: Message | Exception) -> None:
        out[i] = reply
        if done is not None:
            done(i, reply)

    def run(window: list[int]) -> None:
        _run_window(pairs, window, finish, acquire)

    windows = cohort_windows([private_size(ctx) for _, ctx in pairs], cohort_size, workers)
    torch.set_num_threads(1)
    if workers <= 1 or len(windows) <= 1:
        for window in windows:
            run(window)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="fedkd-cohort") as pool:
            list(pool.map(run, windows))
    return out


def cohort_windows(sizes: list[int], cohort_size: int, workers: int) -> list[list[int]]:
    """Node indices ordered by private data size, cut into balanced windows.

    At least one window per worker, at most ``cohort_size`` nodes each, sizes balanced
    (20 nodes on 2 workers: 10 + 10, not 16 + 4).
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    n = len(order)
    n_win = max(min(max(1, workers), n), math.ceil(n / max(1, cohort_size))) if n else 0
    return [order[w * n // n_win : (w + 1) * n // n_win] for w in range(n_win)]


def _run_window(
    pairs: list[Pair],
    window: list[int],
    finish: Callable[[int, Message | Exception], None],
    acquire: Callable[[int], Context] | None,
) -> None:
    """Prepare a window's jobs, train each group of compatible jobs as one cohort."""
    jobs: dict[int, TrainJob] = {}
    for i in window:
        if acquire is not None:
            pairs[i] = (pairs[i][0], acquire(i))
        try:
            jobs[i] = prepare_train(*pairs[i])
        except Exception as err:  # noqa: BLE001 - reported as this node's error reply
            finish(i, err)
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, job in jobs.items():
        groups.setdefault(job.cohort_key(), []).append(i)
    for members in groups.values():
        try:
            replies: list[Message | Exception] = list(
                _train_chunk([pairs[i] for i in members], [jobs[i] for i in members])
            )
        except Exception as err:  # noqa: BLE001 - every node of the cohort fails alike
            replies = [err] * len(members)
        for i, reply in zip(members, replies, strict=True):
            finish(i, reply)


def _train_chunk(pairs: list[Pair], jobs: list[TrainJob]) -> list[Message]:
    """Train compatible jobs as one cohort (one after another where no per-row form)."""
    first = jobs[0]
    rows = resolve_rows(first.cfg.distill.loss, first.cfg.distill.params)
    if rows is None or first.dp_mode == "dp_sgd":
        # no per-row form, or Opacus DP-SGD: one client after another
        return [run_job(msg, ctx, job) for (msg, ctx), job in zip(pairs, jobs, strict=True)]
    cohort = Cohort([Member(j.model, j.opt, j.x_local, j.y_local, j.gen) for j in jobs])
    stats = cohort.fit_distill(
        first.public.x_proxy[first.proxy_idx],
        first.soft,
        epochs=first.epochs,
        batch_size=first.cfg.distill.batch_size,
        temperature=first.temperature,
        alpha=first.alpha,
        lr=first.lr,
        loss=rows,
    )
    cohort.write_back()
    # inference one model at a time: on CPU, stacked forward passes over inputs shared by
    # every model are about 2x slower than the models' own forward passes
    return [
        finish_train(msg, ctx, job, st, *reply_logits_and_accuracy(job))
        for (msg, ctx), job, st in zip(pairs, jobs, stats, strict=True)
    ]
