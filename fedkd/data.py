"""Datasets (offline only), disjoint splits and client partitioners.

* ``mnist1d``: generated with ``mnist1d.data.make_dataset`` (never the downloading
  helper) and cached as ``$FEDKD_CACHE/mnist1d-<samples>-<seed>.npz``.
* ``npz:PATH``: a user's file with ``x`` of shape (N, features) or (N, channels, length)
  and integer labels ``y``.

Splits (teacher-train / proxy / client pool / test) are disjoint and seeded. The client
pool is partitioned with flwr-datasets partitioners; every client keeps at least
``partition.min_size`` samples (see :func:`partition_clients`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedkd.errors import DataError
from fedkd.registry import Registry
from fedkd.seeds import rng

if TYPE_CHECKING:
    from fedkd.config import DataConfig, PartitionConfig

log = logging.getLogger("fedkd")


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32) and integer labels ``y`` of one dataset."""

    x: np.ndarray
    y: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Other per-sample arrays of a user's npz (cross-modal views, ``array:NAME``)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """``max(y) + 1``."""
        return int(self.y.max()) + 1


DatasetLoader = Callable[[str, "DataConfig", int], Dataset]
DATASET_REGISTRY: Registry[DatasetLoader] = Registry("dataset")
register_dataset = DATASET_REGISTRY.register
"""Register a dataset loader ``fn(arg, data_config, seed) -> Dataset`` under ``name``.

``data.name = "name"`` or ``"name:arg"`` selects it; ``arg`` is the text after the colon.
"""


def cache_dir() -> Path:
    """``$FEDKD_CACHE`` or ``~/.cache/fedkd`` (created)."""
    path = Path(os.environ.get("FEDKD_CACHE", Path.home() / ".cache" / "fedkd"))
    path.mkdir(parents=True, exist_ok=True)
    return path


_CACHE_LOCK = threading.RLock()


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


@register_dataset("mnist1d")
def load_mnist1d(_arg: str, cfg: DataConfig, seed: int) -> Dataset:
    """MNIST-1D generated offline (``make_dataset``), train and test pooled, cached."""
    path = cache_dir() / f"mnist1d-{cfg.num_samples}-{seed}.npz"
    if not path.is_file():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = cfg.num_samples
        args.seed = seed
        ds = make_dataset(args)
        x = np.concatenate([ds["x"], ds["x_test"]]).astype(np.float32)
        y = np.concatenate([ds["y"], ds["y_test"]]).astype(np.int64)
        _atomic_save_npz(path, x=x, y=y)
    with np.load(path, allow_pickle=False) as f:
        return Dataset(f["x"], f["y"])


MAX_CLASSES = 10_000
"""Labels must lie in ``0..MAX_CLASSES-1`` (one-hot and per-class counts are that wide)."""
MAX_NPZ_BYTES = 8 * 2**30
"""Largest total size of the arrays of a user's ``.npz`` once loaded (8 GiB)."""


def _npz_headers(path: Path, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
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


def _real_numbers(a: np.ndarray) -> bool:
    return a.dtype.kind in "iuf"


@register_dataset("npz")
def load_npz(arg: str, _cfg: DataConfig, _seed: int) -> Dataset:
    """A user's ``.npz`` with ``x`` (N, F) or (N, C, L) and integer labels ``y`` (N,).

    Arrays are read with ``allow_pickle=False`` after their headers were checked (see
    :func:`validate_dataset` for what ``x`` and ``y`` must hold). Other numeric arrays of
    shape (N, ...) are kept as ``extras`` (cross-modal views).
    """
    where = f"data.name=npz:{arg}"
    path = Path(arg).expanduser()
    if path.is_dir():
        raise DataError(f"{where}: is a directory; give a .npz file")
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    headers = _npz_headers(path, where)
    missing = [k for k in ("x", "y") if k not in headers]
    if missing:
        raise DataError(
            f"{where}: missing array(s) {', '.join(missing)}; the file has "
            f"{', '.join(headers) or 'none'}; need 'x' and 'y'"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
            extras = {}
            for k in f.files:
                if k in ("x", "y"):
                    continue
                a = f[k]
                if a.ndim in (2, 3) and len(a) == len(x) and _real_numbers(a):
                    extras[k] = a.astype(np.float32)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error
        reason = " ".join(str(err).split())[:160]
        raise DataError(f"{where}: not a readable .npz file ({reason})") from None
    if not _real_numbers(x):
        raise DataError(f"{where}: x has dtype {x.dtype}; features must be real numbers")
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
    with np.errstate(over="ignore"):
        ds = Dataset(x.astype(np.float32), y, extras)
    return validate_dataset(ds, where)


def validate_dataset(ds: Dataset, where: str) -> Dataset:
    """Check what every dataset must be; return it with ``y`` as int64.

    ``x`` of shape (N, features) or (N, channels, length) with no empty axis and finite
    float32 values; ``y`` of shape (N,), integers in ``0..MAX_CLASSES-1`` with at least
    two classes present.

    Raises
    ------
    DataError
        One line naming ``where`` (e.g. ``data.name=npz:PATH``), what is wrong and what
        is allowed.

    """
    x, y = np.asarray(ds.x), np.asarray(ds.y)
    if x.ndim not in (2, 3) or 0 in x.shape[1:]:
        raise DataError(
            f"{where}: x has shape {x.shape}; allowed: (N, features) or (N, channels, "
            "length), no axis of length 0"
        )
    if x.dtype != np.float32 or not np.all(np.isfinite(x)):
        if not _real_numbers(x) or not np.all(np.isfinite(x.astype(np.float32))):
            raise DataError(
                f"{where}: x holds NaN, infinite or non-numeric values (or values beyond "
                "float32's range); features must be finite numbers"
            )
        x = x.astype(np.float32)
    if len(x) < 2:
        raise DataError(f"{where}: x has {len(x)} samples; need at least 2")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{where}: y has shape {y.shape} but x has {len(x)} samples; need y of shape (N,)"
        )
    if y.dtype.kind not in "iu":
        raise DataError(
            f"{where}: y has dtype {y.dtype}; labels must be integers in 0..{MAX_CLASSES - 1}"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= MAX_CLASSES:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{where}: label {bad} out of range; labels must be in 0..{MAX_CLASSES - 1} "
            f"(at most {MAX_CLASSES:,} classes)"
        )
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: every label is {lo}; classification needs at least 2 classes")
    return Dataset(x, y.astype(np.int64, copy=False), ds.extras)


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load the dataset ``cfg.name`` (cached in process, thread-safe)."""
    with _CACHE_LOCK:
        return _load_dataset(cfg, seed)


@functools.lru_cache(maxsize=4)
def _load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    base, _, arg = cfg.name.partition(":")
    return validate_dataset(DATASET_REGISTRY[base](arg, cfg, seed), f"data.name={cfg.name}")


@dataclass(frozen=True)
class Splits:
    """Disjoint index arrays into the dataset, plus the normalised data."""

    data: Dataset
    teacher: np.ndarray
    proxy: np.ndarray
    clients: np.ndarray
    test: np.ndarray
    norm_mean: float = 0.0
    norm_std: float = 1.0

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Apply the splits' feature standardisation to other data (a device's own file)."""
        return ((x - self.norm_mean) / self.norm_std).astype(np.float32)

    def xy(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of split ``part``."""
        idx = getattr(self, part)
        return self.data.x[idx], self.data.y[idx]


def _resolve_sizes(cfg: DataConfig, n: int) -> list[int]:
    raw = [cfg.teacher_size, cfg.proxy_size, cfg.client_pool_size, cfg.test_size]
    names = ["teacher_size", "proxy_size", "client_pool_size", "test_size"]
    sizes = []
    for name, s in zip(names, raw, strict=True):
        if isinstance(s, float) and s < 1:
            sizes.append(int(round(s * n)))
        elif float(s).is_integer():
            sizes.append(int(s))
        else:
            raise DataError(f"data.{name}={s}: use a fraction in (0, 1) or a whole count")
    if sum(sizes) > n:
        raise DataError(
            f"data splits need {sum(sizes)} samples ({dict(zip(names, sizes, strict=True))}) "
            f"but the dataset has {n}; lower the sizes"
        )
    for name, s in zip(names, sizes, strict=True):
        if s < 1:
            raise DataError(f"data.{name} gives an empty split for {n} samples")
    return sizes


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    """Seeded disjoint teacher / proxy / client-pool / test splits of the dataset.

    With ``cfg.normalize``, features are standardised with the teacher split's statistics
    (a server-side fact, shared with clients as part of the public recipe).
    """
    with _CACHE_LOCK:
        return _make_splits(cfg, seed)


@functools.lru_cache(maxsize=4)
def _make_splits(cfg: DataConfig, seed: int) -> Splits:
    ds = load_dataset(cfg, seed)
    sizes = _resolve_sizes(cfg, len(ds.y))
    perm = rng(seed, "data.split").permutation(len(ds.y))
    cuts = np.cumsum(sizes)
    teacher, proxy, clients, test = (perm[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True))
    mean, std = 0.0, 1.0
    if cfg.normalize:
        ref = ds.x[teacher]
        mean, std = float(ref.mean()), float(ref.std() + 1e-8)
    x = ((ds.x - mean) / std).astype(np.float32)
    extras = {
        k: ((a - a[teacher].mean()) / (a[teacher].std() + 1e-8)).astype(np.float32)
        if cfg.normalize
        else a
        for k, a in ds.extras.items()
    }
    return Splits(Dataset(x, ds.y, extras), teacher, proxy, clients, test, mean, std)


# --------------------------------------------------------------------------- partitions


def _flwr_partitions(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int, min_partition_size: int
) -> list[np.ndarray]:
    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if cfg.kind == "iid":
        part = IidPartitioner(num_partitions=num_clients)
    elif cfg.kind == "dirichlet":
        part = DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=cfg.alpha,
            min_partition_size=min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    else:
        part = PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=cfg.classes_per_client,
            class_assignment_mode="random",
            shuffle=True,
            seed=seed,
        )
    part.dataset = HFDataset.from_dict({"label": labels.tolist(), "row": list(range(len(labels)))})
    return [np.asarray(part.load_partition(i)["row"], dtype=np.int64) for i in range(num_clients)]


def _ensure_min_size(parts: list[np.ndarray], min_size: int, seed: int) -> list[np.ndarray]:
    """Move random samples from the largest clients to clients below ``min_size``."""
    draw = rng(seed, "data.min_size")
    parts = [p.copy() for p in parts]
    for i in range(len(parts)):
        while len(parts[i]) < min_size:
            donor = int(np.argmax([len(p) for p in parts]))
            if len(parts[donor]) <= min_size:
                raise DataError("client pool too small for partition.min_size")
            take = draw.integers(len(parts[donor]))
            parts[i] = np.append(parts[i], parts[donor][take])
            parts[donor] = np.delete(parts[donor], take)
    return parts


def data_holders(pool: int, num_clients: int, min_size: int) -> int:
    """How many clients a pool of ``pool`` samples gives private data (see partition_clients)."""
    if pool >= num_clients * max(min_size, 1):
        return num_clients
    return max(1, pool // max(min_size, 2))


def partition_clients(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int
) -> list[np.ndarray]:
    """Split positions ``0..len(labels)-1`` among ``num_clients`` clients.

    Uses flwr-datasets (``IidPartitioner``, ``DirichletPartitioner``,
    ``PathologicalPartitioner``). Dirichlet partitioning at small alpha often cannot
    give every client ``min_size`` samples within its retry budget; fedkd then partitions
    with no minimum and moves single random samples from the largest clients to the
    clients below ``cfg.min_size``. The result is a partition: disjoint, covering, seeded.

    When the pool cannot give every client ``min_size`` samples (e.g. 10,000 clients on a
    4,000-sample pool), only ``len(labels) // max(min_size, 2)`` seeded-random clients get
    private data (at least ``min_size`` each) and the others none, with a warning: clients
    without private data learn from soft targets only.
    """
    active = data_holders(len(labels), num_clients, cfg.min_size)
    if active < num_clients:
        log.warning(
            "client pool has %d samples for %d clients: %d clients get private data "
            "(>= partition.min_size = %d each), the other %d learn from soft targets only "
            "(raise data.client_pool_size for more)",
            len(labels),
            num_clients,
            active,
            cfg.min_size,
            num_clients - active,
        )
        owners = np.sort(rng(seed, "data.owners").choice(num_clients, active, replace=False))
        out = [np.zeros(0, np.int64) for _ in range(num_clients)]
        for part, owner in zip(partition_clients(labels, active, cfg, seed), owners, strict=True):
            out[int(owner)] = part
        return out
    if cfg.kind == "classes" and cfg.classes_per_client > int(labels.max()) + 1:
        raise DataError(
            f"partition.classes_per_client={cfg.classes_per_client} exceeds the "
            f"{int(labels.max()) + 1} classes of the dataset"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Dirichlet retry warnings are handled here
        try:
            parts = _flwr_partitions(labels, num_clients, cfg, seed, cfg.min_size)
        except ValueError:
            parts = _flwr_partitions(labels, num_clients, cfg, seed, 0)
    return _ensure_min_size(parts, cfg.min_size, seed)


_PARTITION_FORMAT = 2
"""Version of cached partitions; 2: the data owners of a small pool have their own stream
(``data.owners``; it shared tag 3 with the strategy's train sampling before)."""


def _partition_cache_key(data: DataConfig, part: PartitionConfig, n: int, seed: int) -> str:
    blob = json.dumps(
        [data.model_dump(), part.model_dump(), n, seed, _PARTITION_FORMAT], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def client_partitions(
    data: DataConfig, part: PartitionConfig, num_clients: int, seed: int
) -> tuple[np.ndarray, ...]:
    """Dataset indices of every client's private data (cached in process and on disk)."""
    with _CACHE_LOCK:
        return _client_partitions(data, part, num_clients, seed)


@functools.lru_cache(maxsize=4)
def _client_partitions(
    data: DataConfig, part: PartitionConfig, num_clients: int, seed: int
) -> tuple[np.ndarray, ...]:
    splits = make_splits(data, seed)
    path = cache_dir() / "partitions" / f"{_partition_cache_key(data, part, num_clients, seed)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            flat, offsets = f["flat"], f["offsets"]
    else:
        pos = partition_clients(splits.data.y[splits.clients], num_clients, part, seed)
        flat = np.concatenate(pos)
        offsets = np.cumsum([0] + [len(p) for p in pos])
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save_npz(path, flat=flat, offsets=offsets)
    return tuple(splits.clients[flat[offsets[i] : offsets[i + 1]]] for i in range(num_clients))
