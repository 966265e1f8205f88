"""Which proxy and private rows each training step sees: one schedule for every trainer.

The sequential trainer (:func:`fedkd.training.fit_distill`), the vectorized cohorts
(:meth:`fedkd.stacked_training.Cohort.fit_distill`) and DP-SGD
(:func:`fedkd.privacy.dp_sgd.fit_distill_dp`) all take their batches from
:func:`distill_schedule`, so for the same generator they see the same proxy batches.
"""

from __future__ import annotations

import math

import torch

Step = tuple[torch.Tensor | None, torch.Tensor | None]
"""One step's ``(proxy rows, private rows)``; a side is ``None`` when the step has none."""


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One random permutation of ``range(n)`` from ``gen``, cut into batches."""
    perm = torch.randperm(n, generator=gen)
    return list(perm.split(batch_size))


def steps_per_epoch(n_proxy: int, n_local: int, batch_size: int) -> int:
    """Steps of one epoch: ``ceil(max(n_proxy, n_local) / batch_size)``."""
    return math.ceil(max(n_proxy, n_local) / batch_size)


def distill_schedule(
    n_proxy: int,
    n_local: int,
    *,
    batch_size: int,
    epochs: int,
    gen: torch.Generator,
    draw_local: bool = True,
) -> list[list[Step]]:
    """The batches of a distillation fit: per epoch, per step ``(proxy rows, local rows)``.

    ``n_proxy = 0`` (no distillation) or ``n_local = 0`` (no cross-entropy) leaves that
    side ``None``. An epoch is :func:`steps_per_epoch` steps; the shorter side is
    reshuffled and cycled. Random draws come from ``gen`` in a fixed order (proxy
    permutation before local permutation), so the sequential and the vectorized trainers
    see the same batches for the same generator.

    Parameters
    ----------
    draw_local : bool
        False: the private side still sets the epoch's length, but its rows are not drawn
        (DP-SGD Poisson-samples them from its own noise source); every step's local side
        is ``None``.

    """
    n_steps = steps_per_epoch(n_proxy, n_local, batch_size)
    proxy_it: list[torch.Tensor] = []
    local_it: list[torch.Tensor] = []
    out: list[list[Step]] = []
    for _ in range(epochs):
        steps: list[Step] = []
        for _step in range(n_steps):
            pi = li = None
            if n_proxy:
                if not proxy_it:
                    proxy_it = shuffled_batches(n_proxy, batch_size, gen)
                pi = proxy_it.pop()
            if n_local and draw_local:
                if not local_it:
                    local_it = shuffled_batches(n_local, batch_size, gen)
                li = local_it.pop()
            steps.append((pi, li))
        out.append(steps)
    return out


def fit_schedule(
    n_proxy: int,
    n_local: int,
    *,
    alpha: float,
    batch_size: int,
    epochs: int,
    gen: torch.Generator,
) -> list[list[Step]]:
    """:func:`distill_schedule` of a fit with distillation weight ``alpha``.

    ``alpha = 0`` drops the proxy side (no distillation), ``alpha = 1`` the private side
    (no cross-entropy).
    """
    return distill_schedule(
        n_proxy if alpha > 0 else 0,
        n_local if alpha < 1 else 0,
        batch_size=batch_size,
        epochs=epochs,
        gen=gen,
    )
