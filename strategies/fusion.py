"""Pure fusion rules: a stack of logits in, one array of logits out. No Flower types.

Every rule takes ``logits`` of shape ``(K, N, C)`` (K sources: teachers or clients, N proxy
samples, C classes) and returns logits ``(N, C)``. Rules that average *probabilities*
return ``T * log(p)``, whose softmax at temperature ``T`` is exactly the averaged ``p``, so
every output can be used as soft-target logits at the same temperature.

Register your own with ``@fedkd.register_fusion("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FusionFn = Callable[..., np.ndarray]
FUSION_REGISTRY: dict[str, FusionFn] = {}


def register_fusion(name: str) -> Callable[[FusionFn], FusionFn]:
    """Register a fusion rule ``fn(logits, *, weights, temperature) -> logits``."""

    def decorator(fn: FusionFn) -> FusionFn:
        FUSION_REGISTRY[name] = fn
        return fn

    return decorator


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
