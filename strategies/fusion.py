"""Pure fusion rules: a stack of logits in, one array of logits out. No Flower types.

Every rule takes ``logits`` of shape ``(K, N, C)`` (K sources: teachers or clients, N proxy
samples, C classes) and returns logits ``(N, C)``. Rules that average *probabilities*
return ``T * log(p)``, whose softmax at temperature ``T`` is exactly the averaged ``p``, so
every output can be used as soft-target logits at the same temperature.

Register your own with ``@fedkd.register_fusion("name")``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from fedkd.registry import Registry

FusionFn = Callable[..., np.ndarray]
FUSION_REGISTRY: Registry[FusionFn] = Registry("fusion")
register_fusion = FUSION_REGISTRY.register
"""Register a fusion rule ``fn(logits, *, weights, temperature, ...) -> logits``."""


def apply_fusion(
    name: str,
    logits: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    temperature: float = 1.0,
    **params: float,
) -> np.ndarray:
    """Run fusion rule ``name``, passing only the extra ``params`` that the rule accepts.

    ``params`` typically comes from the ``[strategy]`` config (``trim_fraction``,
    ``era_temperature``), so every rule can be selected by name alone.
    """
    fn = FUSION_REGISTRY[name]
    accepted = inspect.signature(fn).parameters
    extra = {k: v for k, v in params.items() if k in accepted}
    return fn(logits, weights=weights, temperature=temperature, **extra)


def softmax(z: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``z / temperature``."""
    z = np.asarray(z, dtype=np.float64) / temperature
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _normalized(weights: np.ndarray | None, k: int) -> np.ndarray:
    if weights is None:
        return np.full(k, 1.0 / k)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
    return w / w.sum()


def _check(logits: np.ndarray) -> np.ndarray:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"logits must have shape (K>0, N, C), got {arr.shape}")
    return arr


@register_fusion("mean")
def mean_logits(
    logits: np.ndarray, *, weights: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """(Weighted) mean of logits: ``sum_k w_k z_k``. ``temperature`` is unused."""
    arr = _check(logits)
    w = _normalized(weights, arr.shape[0])
    return np.tensordot(w, arr, axes=1).astype(np.float32)


@register_fusion("mean_probs")
def mean_probs(
    logits: np.ndarray, *, weights: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """(Weighted) mean of probabilities at ``temperature``, returned as ``T * log p``."""
    arr = _check(logits)
    w = _normalized(weights, arr.shape[0])
    p = np.tensordot(w, softmax(arr, temperature), axes=1)
    return (temperature * np.log(np.clip(p, 1e-30, None))).astype(np.float32)


@register_fusion("accuracy_weighted")
def accuracy_weighted(
    logits: np.ndarray, *, weights: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Mean of logits weighted by each source's accuracy (``weights`` = accuracies).

    Weights are ``acc_k / sum(acc)``; without weights this is :func:`mean_logits`.
    """
    return mean_logits(logits, weights=weights, temperature=temperature)


def _as_logits(p: np.ndarray, temperature: float) -> np.ndarray:
    """Logits whose softmax at ``temperature`` is ``p``: ``T * log(p)``."""
    return (temperature * np.log(np.clip(p, 1e-30, None))).astype(np.float32)


@register_fusion("era")
def entropy_reduction(
    logits: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    temperature: float = 1.0,
    era_temperature: float = 0.1,
) -> np.ndarray:
    """DS-FL entropy reduction aggregation: ``softmax(mean_k softmax(z_k) / T_era)``.

    Sources' probabilities (at temperature 1, as DS-FL clients upload them) are averaged,
    then sharpened with ``T_era`` (about 0.1; smaller is sharper). Returned as
    ``T * log q`` so that softening at the distillation temperature ``T`` gives back ``q``.
    """
    arr = _check(logits)
    w = _normalized(weights, arr.shape[0])
    p = np.tensordot(w, softmax(arr, 1.0), axes=1)
    return _as_logits(softmax(p, era_temperature), temperature)


def _weighted_quantile_mean(arr: np.ndarray, w: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Per coordinate: the mean of the values whose weight mass lies in ``[lo, hi]``.

    Values are sorted per coordinate; each carries its source's weight (sum 1); a value
    straddling ``lo`` or ``hi`` counts with the part of its weight inside the band.
    """
    order = np.argsort(arr, axis=0, kind="stable")
    vals = np.take_along_axis(arr, order, axis=0).astype(np.float64)
    ws = w[order]  # (K, ...) weights in sorted order
    upper = np.cumsum(ws, axis=0)
    lower = upper - ws
    inside = np.clip(np.minimum(upper, hi) - np.maximum(lower, lo), 0.0, None)
    return (inside * vals).sum(axis=0) / inside.sum(axis=0)


@register_fusion("median")
def coordinate_median(
    logits: np.ndarray, *, weights: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Coordinate-wise median of logits, robust to sources holding < 50% of the weight.

    Unweighted: ``np.median``. With per-source ``weights`` (e.g. data sizes): the weighted
    median (the value where the sorted values' cumulative weight reaches one half; the
    mean of the two values when it falls exactly between them).
    """
    arr = _check(logits)
    if weights is None:
        return np.median(arr, axis=0).astype(np.float32)
    w = _normalized(weights, arr.shape[0])
    eps = 1e-9
    return _weighted_quantile_mean(arr, w, 0.5 - eps, 0.5 + eps).astype(np.float32)


@register_fusion("trimmed_mean")
def trimmed_mean(
    logits: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    temperature: float = 1.0,
    trim_fraction: float = 0.2,
) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``trim_fraction`` highest and lowest values.

    Unweighted: ``floor(trim_fraction * K)`` values are dropped at each end; with K = 5
    and 0.2, the middle three of each coordinate are averaged. With per-source
    ``weights``: ``trim_fraction`` of the weight mass is dropped at each end and the rest
    averaged by weight.
    """
    arr = _check(logits)
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    if weights is not None:
        w = _normalized(weights, arr.shape[0])
        return _weighted_quantile_mean(arr, w, trim_fraction, 1 - trim_fraction).astype(np.float32)
    k = arr.shape[0]
    cut = int(np.floor(trim_fraction * k))
    ordered = np.sort(arr, axis=0)
    return ordered[cut : k - cut].mean(axis=0).astype(np.float32)


@register_fusion("confidence_weighted")
def confidence_weighted(
    logits: np.ndarray, *, weights: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Per-sample mean of logits weighted by each source's confidence (max probability).

    Weight of source k on sample i: ``w_k * max_c softmax(z_ki)`` normalised over k.
    """
    arr = _check(logits)
    w = _normalized(weights, arr.shape[0])
    conf = softmax(arr, 1.0).max(axis=-1) * w[:, None]  # (K, N)
    conf = conf / conf.sum(axis=0, keepdims=True)
    return np.einsum("kn,knc->nc", conf, arr).astype(np.float32)


@register_fusion("entropy_weighted")
def entropy_weighted(
    logits: np.ndarray, *, weights: np.ndarray | None = None, temperature: float = 1.0
) -> np.ndarray:
    """Per-sample mean of logits weighted by ``1 - H(p_ki) / log C`` (low entropy counts more).

    A uniform prediction gets weight 0; a one-hot prediction weight 1. If every source is
    uniform on a sample, the plain (weighted) mean is used there.
    """
    arr = _check(logits)
    w = _normalized(weights, arr.shape[0])
    p = softmax(arr, 1.0)
    h = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1) / np.log(arr.shape[-1])  # (K, N)
    ew = np.clip(1.0 - h, 0.0, None) * w[:, None]
    total = ew.sum(axis=0, keepdims=True)
    ew = np.where(total > 1e-12, ew / np.where(total > 1e-12, total, 1.0), w[:, None])
    return np.einsum("kn,knc->nc", ew, arr).astype(np.float32)
