"""PATE's GNMax aggregator: noisy argmax of teacher votes on proxy samples.

Teachers train on disjoint shards (``teachers.disjoint``). For each queried proxy row,
each teacher votes for its argmax class; Gaussian noise ``N(0, sigma^2)`` is added to every
class count and the noisy argmax becomes the row's label. Changing one record of the
teacher data changes one teacher's vote: the histogram moves by sqrt(2) in L2, so a query
is a Gaussian mechanism with noise multiplier ``sigma / sqrt(2)`` (Papernot et al., 2018,
data-independent bound; accounted in :mod:`fedkd.privacy.accounting`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedkd.privacy.noise import TAG_GNMAX, NoiseSource, noise_source
from fedkd.seeds import rng


def query_rows(num_proxy: int, queries: int, seed: int) -> np.ndarray:
    """The proxy rows PATE labels (seeded, sorted): ``min(queries, num_proxy)`` of them."""
    k = min(queries, num_proxy)
    rows = rng(seed, "pate.query_rows").choice(num_proxy, size=k, replace=False)
    return np.sort(rows).astype(np.int64)  # public: which rows are asked is data-free


def vote_histogram(teacher_logits: np.ndarray) -> np.ndarray:
    """``(P, C)`` counts of teachers' argmax votes from ``(T, P, C)`` logits."""
    t, p, c = teacher_logits.shape
    votes = teacher_logits.argmax(-1)  # (T, P)
    hist = np.zeros((p, c), np.int64)
    for row in votes:
        hist[np.arange(p), row] += 1
    return hist


def gnmax(hist: np.ndarray, sigma: float, source: NoiseSource) -> np.ndarray:
    """Noisy-argmax labels ``(P,)``: ``argmax(hist + N(0, sigma^2))`` per row."""
    noisy = hist + source.normal(sigma, hist.shape) if sigma > 0 else hist.astype(float)
    return noisy.argmax(-1).astype(np.int64)


def label_logits(labels: np.ndarray, num_classes: int, temperature: float) -> np.ndarray:
    """Hard labels as soft-target logits: 99% on the label after softmax at ``temperature``.

    ``softmax(L * onehot / T)`` puts ``e^(L/T) / (e^(L/T) + C - 1)`` on the label; with
    ``L = T * ln(99 (C - 1))`` that is exactly 0.99.
    """
    big = temperature * math.log(99.0 * max(num_classes - 1, 1))
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels] = big
    return out


def pate_sigma(cfg: Any) -> float:
    """GNMax vote noise of a config: ``sqrt(2)`` x the noise multiplier for its target."""
    from fedkd.privacy.accounting import planned_noise

    z = planned_noise(cfg.privacy, 1.0, cfg.privacy.queries)
    return z * math.sqrt(2)


def pate_targets(cfg: Any, teacher_logits: np.ndarray) -> np.ndarray:
    """``(P, C)`` soft-target logits: GNMax labels on the queried rows, zeros elsewhere.

    The zero rows are never sent (the strategy restricts targets to :func:`query_rows`).
    Each call is a new release with fresh noise that costs privacy again: a run draws it
    once (:func:`fedkd.server_app.run_server`) and keeps it in its checkpoints.
    """
    _, p, c = teacher_logits.shape
    rows = query_rows(p, cfg.privacy.queries, cfg.seed)
    hist = vote_histogram(teacher_logits[:, rows])
    source = noise_source(cfg.privacy.reproducible_noise, cfg.seed, TAG_GNMAX)
    labels = gnmax(hist, pate_sigma(cfg), source)
    out = np.zeros((p, c), np.float32)
    out[rows] = label_logits(labels, c, cfg.distill.temperature)
    return out
