"""Client-level DP on uploaded soft labels: clip each client's upload, add Gaussian noise.

A client's upload is its logit matrix on the round's proxy rows. Logits are shift-
invariant per row, so each row is centred first (free: same softmax, smaller norm); the
whole matrix is then scaled to L2 norm at most ``clip``. Adding or removing one client
changes the sum of clipped uploads by at most ``clip``, so the sum plus
``N(0, (noise_multiplier * clip)^2)`` per entry is the sampled Gaussian mechanism that
:mod:`fedkd.privacy.accounting` accounts for (central DP). In local mode each client adds
that noise to its own upload before it leaves the device.
"""

from __future__ import annotations

import numpy as np


def clip_upload(logits: np.ndarray, clip: float) -> np.ndarray:
    """Centre each row, then scale the matrix to Frobenius (L2) norm at most ``clip``."""
    centred = logits - logits.mean(axis=-1, keepdims=True)
    norm = float(np.linalg.norm(centred))
    return (centred * min(1.0, clip / norm) if norm > 0 else centred).astype(np.float32)


def local_noise(
    upload: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """``upload`` plus ``N(0, (noise_multiplier * clip)^2)`` per entry (local DP)."""
    noise = rng.normal(0.0, noise_multiplier * clip, upload.shape)
    return (upload + noise).astype(np.float32)


def noisy_mean(
    uploads: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Central DP: ``(sum of clipped uploads + N(0, (z * clip)^2)) / K`` as one ``(1, P, C)``.

    Uploads are clipped again here (a no-op for honest clients, a bound for the others).
    Each client counts once: data-size weights would change the sensitivity.
    """
    k = len(uploads)
    total = np.zeros(uploads.shape[1:], np.float64)
    for u in uploads:
        total += clip_upload(u, clip)
    total += rng.normal(0.0, noise_multiplier * clip, total.shape)
    return (total / max(k, 1))[None].astype(np.float32)
