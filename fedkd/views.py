"""Cross-modal views: what teachers and students see of the same sample.

``data.teacher_view`` and ``data.student_view`` each name a view:

* ``full``: the sample as loaded;
* ``downsample:K``: the mean of every ``K`` consecutive positions along the length (a
  lower-resolution sensor; a remainder shorter than ``K`` is dropped);
* ``crop:A:B``: positions ``A..B-1`` only (a partial view of the signal);
* ``channels:I,J,...``: those channels of ``(C, L)`` samples (a subset of sensors);
* ``noise:S``: the sample plus Gaussian noise of std ``S`` (in standardised units), fixed
  per sample and seed (a noisy sensor);
* ``array:NAME``: another array of the user's npz, with one row per sample of ``x``
  (e.g. a second modality), standardised like ``x``.

On images (N, C, H, W) only ``full``, ``noise:S``, ``channels:I,J,...`` and ``array:NAME``
apply; ``downsample`` and ``crop`` act along a 1-D length and are refused with one line.

Views apply to every split a side sees: teachers train and predict on their view of the
teacher and proxy splits; students see their view of private data, proxy and test.
"""

from __future__ import annotations

import numpy as np

from fedkd.data import Splits
from fedkd.seeds import rng

_ALLOWED = "full, downsample:K, crop:A:B, channels:I,J,..., noise:S, array:NAME"


def parse_view(spec: str) -> tuple[str, tuple[object, ...]]:
    """Split a view spec into its kind and typed arguments (``ValueError`` when invalid)."""
    kind, _, rest = spec.strip().partition(":")
    try:
        if kind == "full" and not rest:
            return kind, ()
        if kind == "downsample":
            k = int(rest)
            if k < 1:
                raise ValueError
            return kind, (k,)
        if kind == "crop":
            a, b = (int(v) for v in rest.split(":"))
            if not 0 <= a < b:
                raise ValueError
            return kind, (a, b)
        if kind == "channels":
            chans = tuple(int(v) for v in rest.split(","))
            if not chans or min(chans) < 0:
                raise ValueError
            return kind, chans
        if kind == "noise":
            sigma = float(rest)
            if not sigma >= 0:
                raise ValueError
            return kind, (sigma,)
        if kind == "array" and rest:
            return kind, (rest,)
    except ValueError:
        pass
    raise ValueError(f"unknown view {spec!r}; allowed: {_ALLOWED}")


def transform(spec: str, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """Apply view ``spec`` to samples ``x`` (N, L), (N, C, L) or (N, C, H, W) (not ``array:``).

    ``noise`` (``noise:S`` only) is standard-normal noise of ``x``'s shape.
    """
    kind, args = parse_view(spec)
    length = x.shape[-1]
    if x.ndim == 4 and kind in ("downsample", "crop"):
        raise ValueError(
            f"view {spec!r} applies to 1-D samples (L) or (C, L), the samples are images "
            f"{x.shape[1:]}; images allow full, noise:S, channels:I,J,..., array:NAME"
        )
    if kind == "full":
        return x
    if kind == "downsample":
        (k,) = args
        assert isinstance(k, int)
        if k > length:
            raise ValueError(f"view {spec!r}: factor {k} exceeds the sample length {length}")
        n = length // k
        return x[..., : n * k].reshape(*x.shape[:-1], n, k).mean(-1).astype(np.float32)
    if kind == "crop":
        a, b = args
        assert isinstance(a, int) and isinstance(b, int)
        if b > length:
            raise ValueError(f"view {spec!r}: stop {b} exceeds the sample length {length}")
        return np.ascontiguousarray(x[..., a:b])
    if kind == "channels":
        if x.ndim not in (3, 4):
            raise ValueError(
                f"view {spec!r} needs samples of shape (C, L) or (C, H, W), got {x.shape[1:]}"
            )
        if max(args) >= x.shape[1]:  # type: ignore[type-var]
            raise ValueError(f"view {spec!r}: the samples have {x.shape[1]} channels")
        return np.ascontiguousarray(x[:, list(args)])  # type: ignore[arg-type]
    if kind == "noise":
        (sigma,) = args
        if noise is None:
            raise ValueError("view 'noise' needs noise")
        return (x + float(sigma) * noise).astype(np.float32)  # type: ignore[arg-type]
    raise ValueError(f"view {spec!r} selects another array; it cannot transform samples")


def view_rows(spec: str, splits: Splits, rows: np.ndarray, seed: int) -> np.ndarray:
    """Samples ``rows`` of the dataset as view ``spec`` sees them (float32)."""
    kind, args = parse_view(spec)
    if kind == "array":
        (name,) = args
        extras = splits.data.extras
        if name not in extras:
            raise ValueError(
                f"view 'array:{name}': the dataset has no array {name!r} "
                f"(it has: {', '.join(sorted(extras)) or 'only x and y'})"
            )
        return extras[str(name)][rows]
    noise = None
    if kind == "noise":
        noise = rng(seed, "views.noise").standard_normal(splits.data.x.shape, dtype=np.float32)
        noise = noise[rows]
    return transform(spec, splits.x(rows), noise)


def view_samples(spec: str, x: np.ndarray, seed: int) -> np.ndarray:
    """View ``spec`` of samples from outside the dataset (a device's own file).

    ``noise:S`` draws its noise from ``seed`` for these samples; ``array:`` views cannot
    apply (``ValueError``).
    """
    noise = None
    if parse_view(spec)[0] == "noise":
        noise = rng(seed, "views.outside_noise").standard_normal(x.shape, dtype=np.float32)
    return transform(spec, x, noise)


def view_shape(spec: str, splits: Splits, seed: int) -> tuple[int, ...]:
    """Shape of one sample under view ``spec`` (``ValueError`` when it does not apply)."""
    return tuple(int(d) for d in view_rows(spec, splits, splits.test[:1], seed).shape[1:])


def teacher_x(data_cfg: object, splits: Splits, rows: np.ndarray, seed: int) -> np.ndarray:
    """Samples ``rows`` as the teachers see them (``data.teacher_view``)."""
    return view_rows(str(getattr(data_cfg, "teacher_view", "full")), splits, rows, seed)


def student_x(data_cfg: object, splits: Splits, rows: np.ndarray, seed: int) -> np.ndarray:
    """Samples ``rows`` as the students see them (``data.student_view``)."""
    return view_rows(str(getattr(data_cfg, "student_view", "full")), splits, rows, seed)


def student_shape(data_cfg: object, splits: Splits, seed: int) -> tuple[int, ...]:
    """Shape of one sample as the students see it."""
    return view_shape(str(getattr(data_cfg, "student_view", "full")), splits, seed)


def teacher_shape(data_cfg: object, splits: Splits, seed: int) -> tuple[int, ...]:
    """Shape of one sample as the teachers see it."""
    return view_shape(str(getattr(data_cfg, "teacher_view", "full")), splits, seed)
