"""Where differential-privacy randomness comes from: never from the simulation seed.

Everything else in a fedkd run is seeded from ``cfg.seed`` so that runs are reproducible,
and that seed is public: it is in ``config.json``, in the scenario file every device loads
and in every shared result. DP noise drawn from it could be regenerated and subtracted by
anyone who reads the seed, and a sampling step replayed from it gives no amplification.
So every random draw a privacy guarantee rests on (Gaussian noise of client_dp, GNMax and
DP-SGD, client sampling of central client_dp, DP-SGD's Poisson batches) comes from a
:class:`NoiseSource`:

* :class:`SecureNoise` (the default): the operating system's cryptographic generator
  (``os.urandom``). Gaussian samples by Box-Muller in float64, each released sample the sum
  of four independent draws divided by two (same distribution; the defence Opacus'
  ``secure_mode`` uses against floating-point attacks on the low bits of a sample).
* :class:`SeededNoise`: seeded from the run seed and a stream tag, for debugging only
  (``privacy.reproducible_noise = true``). A run that uses it is marked *not private* in
  ``summary.json``: the seed regenerates its noise.
"""

from __future__ import annotations

import math
import os
from typing import Protocol

import numpy as np

from fedkd import seeds

SECURE = "os.urandom (cryptographic; Box-Muller, each sample (g1+g2+g3+g4)/2)"
SEEDED = "seeded from the run seed (privacy.reproducible_noise): reproducible, NOT private"


class NoiseSource(Protocol):
    """Random draws a privacy guarantee rests on."""

    description: str
    private: bool

    def normal(self, std: float, shape: tuple[int, ...]) -> np.ndarray:
        """``N(0, std^2)`` samples of ``shape`` (float64)."""
        ...

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform samples in (0, 1) of ``shape`` (float64)."""
        ...


class SecureNoise:
    """Draws from ``os.urandom``: unpredictable from anything in the run directory."""

    description = SECURE
    private = True

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        n = math.prod(shape)
        bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
        return ((bits.astype(np.float64) + 0.5) / 2.0**53).reshape(shape)

    def _standard_normal(self, n: int) -> np.ndarray:
        half = (n + 1) // 2
        u1, u2 = self.uniform((half,)), self.uniform((half,))
        r = np.sqrt(-2.0 * np.log(u1))
        return np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]

    def normal(self, std: float, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        n = math.prod(shape)
        if std == 0 or n == 0:
            return np.zeros(shape)
        total = sum(self._standard_normal(n) for _ in range(4))
        return (std * total / 2.0).reshape(shape)


class SeededNoise:
    """Draws from ``np.random.default_rng([seed, *tags])``: reproducible, so not private."""

    description = SEEDED
    private = False

    def __init__(self, seed: int, *tags: int) -> None:
        self._rng = np.random.default_rng([seed, *tags])

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        return self._rng.random(shape)

    def normal(self, std: float, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        return self._rng.normal(0.0, std, shape)


def noise_source(reproducible: bool, seed: int, *tags: int) -> NoiseSource:
    """The run's source: :class:`SecureNoise`, or :class:`SeededNoise` when debugging.

    ``tags`` name the stream (mechanism, client, round) of the seeded source; the secure
    source ignores them.
    """
    return SeededNoise(seed, *tags) if reproducible else SecureNoise()


# Stream tags of the seeded (debugging) source, one per use, never shared with the
# simulation's own seed streams.
TAG_CENTRAL = seeds.tag("noise.central")
TAG_LOCAL = seeds.tag("noise.local")
TAG_GNMAX = seeds.tag("noise.gnmax")
TAG_DP_SGD = seeds.tag("noise.dp_sgd")
TAG_CLIENT_SAMPLING = seeds.tag("noise.client_sampling")
