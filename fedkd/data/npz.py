"""``npz:PATH``: a user's file with ``x`` and integer labels ``y``.

``x`` of shape (N, features), (N, channels, length) or images laid out as
``data.layout`` says (see :mod:`fedkd.data.images`). Nothing is unpickled: headers are
read first, arrays with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedkd.data.dataset import (
    MAX_CLASSES,
    Dataset,
    real_numbers,
    register_dataset,
    validate_dataset,
    validate_x,
)
from fedkd.data.images import to_channels_first
from fedkd.errors import DataError

if TYPE_CHECKING:
    from fedkd.config import DataConfig

MAX_NPZ_BYTES = 8 * 2**30
"""Largest total size of the arrays of a user's ``.npz`` once loaded (8 GiB)."""


def npz_headers(path: Path, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an ``.npz``, read from the headers only.

    Nothing is unpickled or loaded: object arrays (pickles inside the archive) and arrays
    too large to load are refused here.
    """
    try:
        with zipfile.ZipFile(path) as z:
            out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
            for info in z.infolist():
                name = info.filename.removesuffix(".npy")
                with z.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(fp)
                out[name] = (tuple(int(d) for d in shape), dtype)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, SyntaxError) as err:
        reason = " ".join(str(err).split())[:160]
        raise DataError(
            f"{where}: not a readable .npz archive of arrays ({type(err).__name__}: {reason})"
        ) from None
    total = 0
    for name, (shape, dtype) in out.items():
        if dtype.hasobject:
            raise DataError(
                f"{where}: array '{name}' holds Python objects (a pickle), which fedkd never "
                "loads; store numeric arrays only (np.savez with numbers)"
            )
        total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    if total > MAX_NPZ_BYTES:
        raise DataError(
            f"{where}: its arrays take {total / 2**30:.1f} GiB once loaded; at most "
            f"{MAX_NPZ_BYTES / 2**30:.0f} GiB"
        )
    return out


def _checked_path(arg: str, where: str, need: tuple[str, ...]) -> Path:
    path = Path(arg).expanduser()
    if path.is_dir():
        raise DataError(f"{where}: is a directory; give a .npz file")
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    headers = npz_headers(path, where)
    missing = [k for k in need if k not in headers]
    if missing:
        raise DataError(
            f"{where}: missing array(s) {', '.join(missing)}; the file has "
            f"{', '.join(headers) or 'none'}; need {' and '.join(repr(k) for k in need)}"
        )
    return path


def _samples(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    if not real_numbers(x):
        raise DataError(f"{where}: x has dtype {x.dtype}; features must be real numbers")
    x = to_channels_first(x, layout, where)
    if x.ndim == 4 and x.dtype == np.uint8:
        return x  # compact images: standardised when a split is taken
    with np.errstate(over="ignore"):
        return x.astype(np.float32)


def _read_error(where: str, err: Exception) -> DataError:
    reason = " ".join(str(err).split())[:160]
    return DataError(f"{where}: not a readable .npz file ({reason})")


@register_dataset("npz")
def load_npz(arg: str, cfg: DataConfig, _seed: int) -> Dataset:
    """A user's ``.npz`` with ``x`` and integer labels ``y`` (N,).

    Arrays are read with ``allow_pickle=False`` after their headers were checked (see
    :func:`validate_dataset` for what ``x`` and ``y`` must hold). Other numeric arrays of
    shape (N, ...) are kept as ``extras`` (cross-modal views). Images follow
    ``cfg.layout`` and stay uint8 when stored so.
    """
    where = f"data.name=npz:{arg}"
    path = _checked_path(arg, where, ("x", "y"))
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
            extras = {}
            for k in f.files:
                if k in ("x", "y"):
                    continue
                a = f[k]
                if a.ndim in (2, 3) and len(a) == len(x) and real_numbers(a):
                    extras[k] = a.astype(np.float32)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error
        raise _read_error(where, err) from None
    x = _samples(x, str(getattr(cfg, "layout", "auto")), where)
    if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0):
        if np.abs(y).max() < 2**62:  # whole numbers: validate_dataset checks their range
            y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(
            f"{where}: y has dtype {y.dtype}; labels must be integers in 0..{MAX_CLASSES - 1}"
        )
    for k, a in extras.items():
        if not np.all(np.isfinite(a)):
            raise DataError(f"{where}: array '{k}' holds NaN or infinite values")
    return validate_dataset(Dataset(x, y, extras), where)


def load_npz_samples(arg: str, cfg: DataConfig, where: str) -> np.ndarray:
    """Only ``x`` of a user's ``.npz`` (a proxy set: ``y`` is neither needed nor read)."""
    path = _checked_path(arg, where, ("x",))
    try:
        with np.load(path, allow_pickle=False) as f:
            x = f["x"]
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error
        raise _read_error(where, err) from None
    return validate_x(_samples(x, str(getattr(cfg, "layout", "auto")), where), where)
