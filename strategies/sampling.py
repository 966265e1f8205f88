"""Seeded sampling of clients and proxy rows (public seed streams, not privacy noise)."""

from __future__ import annotations

import numpy as np

from fedkd import seeds
from fedkd.privacy.noise import NoiseSource

TRAIN_TAG = seeds.tag("strategy.train_sample")
"""Seed stream of the train sample."""
EVALUATE_TAG = seeds.tag("strategy.evaluate_sample")
"""Seed stream of the evaluate sample."""
PROXY_TAG = seeds.tag("strategy.proxy_subset")
"""Seed stream of the round's proxy subset."""


def sample_count(pool_size: int, fraction: float, min_clients: int) -> int:
    """How many of ``pool_size`` clients a ``fraction`` samples (at least ``min_clients``)."""
    return min(pool_size, max(min_clients, int(round(fraction * pool_size))))


def seeded_sample(pool: list[int], k: int, seed: int, tag: int, server_round: int) -> list[int]:
    """``k`` of ``pool`` (sorted) drawn from the stream ``[seed, tag, server_round]``."""
    if k >= len(pool):
        return pool
    rng = np.random.default_rng([seed, tag, server_round])
    return sorted(int(p) for p in rng.choice(pool, size=k, replace=False))


def poisson_sample(pool: list[int], rate: float, source: NoiseSource) -> list[int]:
    """Each of ``pool`` independently with probability ``rate``, drawn from ``source``."""
    take = source.uniform((len(pool),)) < rate
    return [p for p, t in zip(pool, take, strict=True) if t]


def proxy_subset(num_proxy: int, fraction: float, seed: int, server_round: int) -> np.ndarray:
    """Proxy rows used in ``server_round``: all, or a seeded sorted subset of ``fraction``."""
    if fraction >= 1.0:
        return np.arange(num_proxy, dtype=np.int64)
    k = max(1, int(round(fraction * num_proxy)))
    rng = seeds.rng(seed, "strategy.proxy_subset", server_round)
    return np.sort(rng.choice(num_proxy, size=k, replace=False)).astype(np.int64)
