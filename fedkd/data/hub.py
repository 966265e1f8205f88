"""``hf:NAME`` and ``hf:/PATH``: Hugging Face ``datasets``, offline.

* ``hf:uoft-cs/cifar10``: a hub dataset, read from the local Hugging Face cache only
  (offline mode is set for the call; a dataset not in the cache is one line saying how
  to pre-download it);
* ``hf:/path``: a local copy: a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  directory, a ``.parquet`` file or a directory of them, or an image folder
  (``class_name/image.png``, loaded with the ``imagefolder`` builder).

Images (a PIL ``Image`` column) are decoded to uint8 (N, C, H, W) and must share one size.
The decoded arrays are cached under ``$FEDKD_CACHE/hf/`` (keyed by name, revision, columns,
splits and, for a local copy, its files' sizes and times), so a second run does not
decode again. A proxy set (``data.proxy``) never touches the label column.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkd.data.dataset import (
    Dataset,
    atomic_save_npz,
    cache_dir,
    register_dataset,
    validate_dataset,
    validate_x,
)
from fedkd.data.images import to_channels_first
from fedkd.errors import DataError

if TYPE_CHECKING:
    from fedkd.config import DataConfig

_FORMAT = 1
"""Version of the decoded-array cache."""


@register_dataset("hf")
def load_hf(arg: str, cfg: DataConfig, _seed: int) -> Dataset:
    """A Hugging Face dataset (hub name from the local cache, or a local copy), pooled.

    ``cfg.hf_splits`` (default: all) are concatenated; samples from ``cfg.image_column``,
    labels from ``cfg.label_column``.
    """
    where = f"data.name=hf:{arg}"
    x, y = _arrays(arg, cfg, where, labels=True)
    assert y is not None
    return validate_dataset(Dataset(x, y), where)


def load_hf_samples(arg: str, cfg: DataConfig, where: str) -> np.ndarray:
    """Only the samples of a Hugging Face dataset (a proxy set: labels never touched)."""
    x, _ = _arrays(arg, cfg, where, labels=False)
    return validate_x(x, where)


def _is_local(arg: str) -> bool:
    return arg.startswith(("/", "./", "../", "~")) or Path(arg).expanduser().exists()


def _fingerprint(path: Path) -> list[Any]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [
        [str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files
    ]


def _cache_path(arg: str, cfg: DataConfig, labels: bool) -> Path:
    local = _is_local(arg)
    path = Path(arg).expanduser().resolve() if local else None
    blob = [
        str(path) if path else arg,
        cfg.hf_revision,
        cfg.image_column,
        cfg.label_column if labels else None,
        list(cfg.hf_splits),
        cfg.layout,
        _fingerprint(path) if path and path.exists() else None,
        _FORMAT,
    ]
    key = hashlib.sha256(json.dumps(blob).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", arg.strip("/~."))[-60:] or "local"
    return cache_dir() / "hf" / f"{slug}-{key}.npz"


def _arrays(
    arg: str, cfg: DataConfig, where: str, labels: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    path = _cache_path(arg, cfg, labels)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return f["x"], (f["y"] if labels else None)
    parts = _splits(_open(arg, cfg, where), cfg, where)
    xs, ys = [], []
    for ds in parts:
        x, y = _decode(ds, cfg, where, labels)
        xs.append(x)
        ys.append(y)
    x = _concat(xs, where)
    y = np.concatenate(ys) if labels else None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, x=x, **({"y": y} if y is not None else {}))
    return x, y


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hugging Face offline mode for the duration of the block (env and loaded configs)."""
    import datasets.config
    import huggingface_hub.constants as hub

    keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    env = {k: os.environ.get(k) for k in keys}
    saved = (datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE)
    os.environ.update(dict.fromkeys(keys, "1"))
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def _open(arg: str, cfg: DataConfig, where: str) -> Any:
    import datasets

    if not _is_local(arg):
        return _open_hub(arg, cfg, where)
    path = Path(arg).expanduser()
    if not path.exists():
        raise DataError(
            f"{where}: {path} not found (a local copy: a save_to_disk directory, "
            "parquet files or an image folder)"
        )
    try:
        with offline():
            if path.is_dir() and any(
                (path / f).is_file() for f in ("dataset_dict.json", "state.json")
            ):
                return datasets.load_from_disk(str(path))
            parquet = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))
            if parquet and (path.is_file() or path.is_dir()):
                return datasets.load_dataset("parquet", data_files=[str(p) for p in parquet])
            if path.is_dir():
                return datasets.load_dataset("imagefolder", data_dir=str(path))
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable copy is a user error
        raise DataError(f"{where}: cannot read the local copy ({_one_line(err)})") from None
    raise DataError(
        f"{where}: {path} is a file but not .parquet; give a save_to_disk "
        "directory, parquet files or an image folder"
    )


def _open_hub(name: str, cfg: DataConfig, where: str) -> Any:
    import datasets
    import datasets.config

    try:
        with offline():
            return datasets.load_dataset(name, revision=cfg.hf_revision or None)
    except Exception as err:  # noqa: BLE001 - not cached (or unreadable) while offline
        raise DataError(
            f"{where}: not found in the local Hugging Face cache "
            f"{datasets.config.HF_DATASETS_CACHE} (hub cache {_hub_cache()}; fedkd reads the "
            f"hub offline; {_one_line(err)}); pre-download it on a machine with network: "
            f"python -c \"import datasets; datasets.load_dataset('{name}')\" (with the same "
            "HF_HOME), or save it with save_to_disk and set data.name=hf:/path/to/copy"
        ) from None


def _hub_cache() -> str:
    import huggingface_hub.constants as hub

    return str(hub.HF_HUB_CACHE)


def _splits(obj: Any, cfg: DataConfig, where: str) -> list[Any]:
    import datasets

    wanted = list(cfg.hf_splits)
    if isinstance(obj, datasets.Dataset):
        if wanted:
            raise DataError(f"{where}: a single Dataset has no splits; leave data.hf_splits empty")
        return [obj]
    have = list(obj)
    missing = [s for s in wanted if s not in obj]
    if missing:
        raise DataError(
            f"{where}: data.hf_splits asks for {', '.join(missing)}; the dataset has "
            f"{', '.join(have)}"
        )
    return [obj[s] for s in (wanted or have)]


def _image_column(ds: Any, cfg: DataConfig, where: str) -> str:
    import datasets

    cols = list(ds.column_names)
    if cfg.image_column != "auto":
        if cfg.image_column not in cols:
            raise DataError(
                f"{where}: data.image_column={cfg.image_column!r} is not a column; the "
                f"dataset has {', '.join(cols)}"
            )
        return cfg.image_column
    images = [c for c in cols if isinstance(ds.features[c], datasets.Image)]
    for c in [*images, "img", "image"]:
        if c in cols:
            return c
    raise DataError(
        f"{where}: no Image column and no 'img' or 'image' column (it has {', '.join(cols)}); "
        "set data.image_column"
    )


def _decode(ds: Any, cfg: DataConfig, where: str, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    import datasets

    col = _image_column(ds, cfg, where)
    y = np.zeros(0, np.int64)
    if labels:
        if cfg.label_column not in ds.column_names:
            raise DataError(
                f"{where}: data.label_column={cfg.label_column!r} is not a column; the "
                f"dataset has {', '.join(ds.column_names)}"
            )
        y = np.asarray(ds.select_columns([cfg.label_column])[cfg.label_column])
    sub = ds.select_columns([col])  # a proxy set never touches the label column
    if not isinstance(sub.features[col], datasets.Image):
        x = np.asarray(sub.with_format("numpy")[col])
        return to_channels_first(x, cfg.layout, where), y
    return _pil_arrays(sub, col, where), y


def _pil_arrays(sub: Any, col: str, where: str) -> np.ndarray:
    """Decode a PIL image column to uint8 (N, C, H, W); every image of one size."""
    arrays, sizes = [], {}
    for row in sub:
        img = row[col]
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        sizes[img.size] = sizes.get(img.size, 0) + 1
        arrays.append(np.asarray(img, dtype=np.uint8))
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sorted(sizes.items()))
        raise DataError(
            f"{where}: images of column {col!r} have different sizes: {listed}; all must "
            "share one size (resize them first)"
        )
    return _stack(arrays)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    color = any(a.ndim == 3 for a in arrays)
    out = []
    for a in arrays:
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2) if color else a[:, :, None]
        out.append(a)
    return np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2))


def _concat(xs: list[np.ndarray], where: str) -> np.ndarray:
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        raise DataError(f"{where}: the pooled splits have different sample shapes {sorted(shapes)}")
    return np.concatenate(xs)
