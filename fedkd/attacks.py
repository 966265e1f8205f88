"""Poisoned clients for robustness studies (``[attack]``): who is malicious and what they do.

* ``random_logits``: upload Gaussian noise, ``attack.scale`` times the honest logits' spread;
* ``scaled_logits``: upload the honest logits times ``attack.scale``;
* ``label_flip``: train on flipped private labels ``y -> C - 1 - y`` (uploads are honest
  predictions of a poisoned student).

The malicious set depends only on the seed, ``attack.fraction`` and ``num_clients``, so
server and clients agree on it without talking. :func:`corrupt_logits` is the first stage
of the upload chain (:class:`fedkd.uploads.Corrupt`).
"""

from __future__ import annotations

import numpy as np


def malicious_partitions(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """``round(fraction * num_clients)`` partition ids drawn with the run's seed."""
    k = int(round(fraction * num_clients))
    if k == 0:
        return frozenset()
    rng = np.random.default_rng([seed, 11])
    return frozenset(int(p) for p in rng.choice(num_clients, size=k, replace=False))


def corrupt_logits(
    logits: np.ndarray, kind: str, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """What a malicious client uploads instead of ``logits`` (``label_flip``: unchanged)."""
    if kind == "random_logits":
        std = scale * float(max(1.0, logits.std()))
        return rng.normal(0.0, std, size=logits.shape).astype(np.float32)
    if kind == "scaled_logits":
        return (logits * scale).astype(np.float32)
    return logits


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """``y -> num_classes - 1 - y`` (every label wrong when num_classes > 1)."""
    return (num_classes - 1 - y).astype(y.dtype)
