"""Client-level DP on uploaded soft labels: clip every row of an upload, add Gaussian noise.

A client's upload is its logit matrix on the round's ``P`` proxy rows. Logits are shift-
invariant per row, so each row is centred first (free: same softmax, smaller norm), then
each row (one proxy sample's logit vector) is scaled to L2 norm at most ``clip``. The
whole upload then has Frobenius norm at most ``S = clip * sqrt(P)``: that is the
sensitivity every mechanism below is calibrated to. Clipping per row, rather than the
whole matrix to one norm, keeps every row's signal at the same scale (a Frobenius clip to
1 leaves each of 4,000 rows a norm of about 0.016) while the noise per entry is the same.

* Central DP (trusted server): adding or removing one client changes the sum of clipped
  uploads by at most ``S``; :func:`noisy_mean` adds ``N(0, (z S)^2)`` per entry to the sum
  and divides by the *expected* number of clients (the actual number would itself leak).
* Local DP (untrusted server): replacing one client's data can move its upload anywhere
  in the ball of radius ``S``, a change of up to ``2 S``; :func:`local_noise` adds
  ``N(0, (2 z S)^2)`` on the device, a Gaussian mechanism with multiplier ``z``.

Noise comes from a :class:`fedkd.privacy.noise.NoiseSource` (cryptographic by default).
These functions are the client_dp stages of the upload chain (:mod:`fedkd.uploads`:
``Clip``, ``LocalNoise`` on the device, ``CentralNoise`` on the server).
"""

from __future__ import annotations

import math

import numpy as np

from fedkd.privacy.noise import NoiseSource


def clip_upload(logits: np.ndarray, clip: float) -> np.ndarray:
    """Centre each row, then scale each row to L2 norm at most ``clip`` (float32)."""
    centred = logits.astype(np.float64) - logits.mean(axis=-1, keepdims=True)
    norms = np.linalg.norm(centred, axis=-1, keepdims=True)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return (centred * scale).astype(np.float32)


def sensitivity(clip: float, rows: int) -> float:
    """L2 bound ``clip * sqrt(rows)`` of one clipped upload of ``rows`` proxy rows."""
    return float(clip) * math.sqrt(max(rows, 0))


def local_noise(
    upload: np.ndarray, clip: float, noise_multiplier: float, source: NoiseSource
) -> np.ndarray:
    """``upload`` plus ``N(0, (2 z S)^2)`` per entry: local DP, replace-one sensitivity.

    ``upload`` must already be clipped (:func:`clip_upload` with the same ``clip``).
    """
    std = 2.0 * noise_multiplier * sensitivity(clip, len(upload))
    return (upload + source.normal(std, upload.shape)).astype(np.float32)


def noisy_mean(
    uploads: np.ndarray,
    clip: float,
    noise_multiplier: float,
    source: NoiseSource,
    expected_clients: float,
) -> tuple[np.ndarray, float]:
    """Central DP: ``(sum of clipped uploads + N(0, (z S)^2)) / expected_clients``.

    Uploads are clipped again here (a no-op for honest clients, a bound for the others).
    Each client counts once: data-size weights would change the sensitivity. The
    denominator is the expected number of sampled clients, a public constant.

    Returns
    -------
    (consensus, snr)
        The ``(1, P, C)`` release and its signal-to-noise ratio: the Frobenius norm of the
        clipped uploads' sum over that of the noise (inf without noise).

    """
    rows = uploads.shape[1]
    total = np.zeros(uploads.shape[1:], np.float64)
    for u in uploads:
        total += clip_upload(u, clip)
    noise = source.normal(noise_multiplier * sensitivity(clip, rows), total.shape)
    noise_norm = float(np.linalg.norm(noise))
    snr = float(np.linalg.norm(total)) / noise_norm if noise_norm > 0 else math.inf
    release = (total + noise) / max(float(expected_clients), 1e-12)
    return release[None].astype(np.float32), snr


def local_snr(uploads: np.ndarray, clip: float, noise_multiplier: float) -> float:
    """Estimated SNR of the mean of ``K`` locally noised uploads ``(K, P, C)``.

    The server never sees the clean uploads; with the known noise std ``s`` per entry,
    ``E |mean noise|^2 = s^2 P C / K``, so the signal's norm is estimated as
    ``sqrt(max(0, |mean|^2 - s^2 P C / K))``.
    """
    k, rows, classes = uploads.shape
    if k == 0:
        return math.nan
    std = 2.0 * noise_multiplier * sensitivity(clip, rows)
    noise_sq = std**2 * rows * classes / k
    mean_sq = float(np.sum(uploads.astype(np.float64).mean(axis=0) ** 2))
    if noise_sq == 0:
        return math.inf
    return math.sqrt(max(0.0, mean_sq - noise_sq)) / math.sqrt(noise_sq)
