"""Image arrays: layouts and per-channel standardisation.

Inside fedkd, images are (N, C, H, W). ``data.layout`` says how a user's array is laid out:

* ``auto``: a 4-D array is channels-last (N, H, W, C) when its last axis has 1, 3 or 4
  entries and its second axis does not, else channels-first (N, C, H, W); a 3-D uint8
  array is (N, H, W) (one channel); a 3-D array of another dtype stays a 1-D signal
  (N, channels, length), as before images existed;
* ``channels_first``: (N, C, H, W), or (N, H, W) as one channel;
* ``channels_last``: (N, H, W, C), or (N, H, W) as one channel.
"""

from __future__ import annotations

import numpy as np

from fedkd.errors import DataError

LAYOUTS = ("auto", "channels_first", "channels_last")
_SMALL = (1, 3, 4)


def to_channels_first(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    """``x`` in fedkd's layout: images (N, C, H, W), 1-D samples unchanged.

    Raises
    ------
    DataError
        When ``layout`` does not fit the array's number of axes.

    """
    if layout not in LAYOUTS:
        raise DataError(f"{where}: data.layout={layout!r}; allowed: {', '.join(LAYOUTS)}")
    if layout == "auto":
        if x.ndim == 3 and x.dtype == np.uint8:
            return x[:, None]
        if x.ndim != 4:
            return x
        last = x.shape[-1] in _SMALL and x.shape[1] not in _SMALL
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if last else x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        shape = "(N, H, W, C)" if layout == "channels_last" else "(N, C, H, W)"
        raise DataError(
            f"{where}: data.layout={layout} needs images of shape (N, H, W) or {shape}, "
            f"x has shape {x.shape}; use data.layout=auto for 1-D samples"
        )
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "channels_last" else x


def channel_stats(
    x: np.ndarray, rows: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (population, plus 1e-8) of images ``x[rows]`` (float32 (C,)).

    Computed in float64 in chunks of ``chunk`` images, so uint8 images are never converted
    to float all at once.
    """
    c = x.shape[1]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(rows), chunk):
        part = x[rows[start : start + chunk]].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        sq += np.square(part).sum(axis=(0, 2, 3))
        n += part.shape[0] * part.shape[2] * part.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - np.square(mean), 0.0)) + 1e-8
    return mean.astype(np.float32), std.astype(np.float32)


def standardize_images(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per channel of images (N, C, H, W), as float32."""
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    return ((x.astype(np.float32) - m) / s).astype(np.float32, copy=False)
