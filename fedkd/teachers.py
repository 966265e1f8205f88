"""Server-side teachers: trained on the teacher split (or loaded), cached by config hash."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedkd.config import FedkdConfig, TeachersConfig
from fedkd.data import cache_dir, make_splits
from fedkd.errors import ConfigError
from fedkd.models import build_model, build_seeded_model, count_parameters
from fedkd.training import accuracy, fit_supervised, make_optimizer, predict_logits
from fedkd.views import teacher_shape, teacher_x

log = logging.getLogger("fedkd")


@dataclass(frozen=True)
class TeacherBundle:
    """What the server knows of its teachers.

    ``proxy_logits`` is ``(K, P, C)``: each teacher's logits on the proxy split.
    Accuracies are on the test split; ``train_accuracy`` on the teacher split.
    """

    specs: list[str]
    parameters: list[int]
    proxy_logits: np.ndarray
    test_logits: np.ndarray
    test_accuracy: list[float]
    train_accuracy: list[float]
    cached: list[bool]
    models: list[torch.nn.Module] = field(default_factory=list, repr=False)
    pate_targets: np.ndarray | None = field(default=None, repr=False)
    """privacy.mode='pate': the run's one GNMax release (drawn once, kept in checkpoints)."""

    @property
    def count(self) -> int:
        """Number of teachers."""
        return len(self.specs)

    def fusion_weights(self, fusion: str) -> np.ndarray | None:
        """Per-teacher weights a fusion rule needs (accuracy on the teacher split)."""
        return np.asarray(self.train_accuracy) if fusion == "accuracy_weighted" else None

    def fused(
        self, logits: np.ndarray, fusion: str, temperature: float, **params: float
    ) -> np.ndarray:
        """``fusion`` applied to per-teacher ``logits`` of shape (K, N, C)."""
        from fedkd.strategies.fusion import apply_fusion

        return apply_fusion(
            fusion, logits, weights=self.fusion_weights(fusion), temperature=temperature, **params
        )

    def ensemble_accuracy(
        self, y_test: np.ndarray, fusion: str, temperature: float, **params: float
    ) -> float | None:
        """Test accuracy of the fused ensemble (``None`` without teachers)."""
        if self.count == 0:
            return None
        pred = self.fused(self.test_logits, fusion, temperature, **params).argmax(-1)
        return float((pred == y_test).mean())


TRAINING_RECIPE = 3
"""Bumped whenever teacher training changes, so cached teachers are not reused wrongly."""


def _cache_key(cfg: FedkdConfig, index: int, spec: str) -> str:
    t = cfg.teachers
    blob = json.dumps(
        [
            cfg.data.model_dump(),
            cfg.seed,
            spec,
            index,
            t.epochs,
            t.lr,
            t.batch_size,
            t.bootstrap,
            [True, t.count] if t.disjoint or cfg.privacy.mode == "pate" else None,
            torch.__version__,
            TRAINING_RECIPE,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _teacher_seed(cfg: FedkdConfig, index: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, 7, index]).generate_state(1)[0])


def teacher_rows(cfg: FedkdConfig, index: int, n: int) -> np.ndarray | None:
    """Rows of the ``n``-sample teacher split that teacher ``index`` trains on (None: all).

    A disjoint shard (``teachers.disjoint`` or PATE), a bootstrap sample, or everything.
    """
    t = cfg.teachers
    if t.disjoint or cfg.privacy.mode == "pate":
        perm = np.random.default_rng([cfg.seed, 8]).permutation(n)
        return np.array_split(perm, t.count)[index]
    if t.bootstrap:
        return np.random.default_rng(_teacher_seed(cfg, index)).integers(0, n, n)
    return None


def _train_one(
    cfg: FedkdConfig,
    index: int,
    spec: str,
    shape: tuple[int, ...],
    k: int,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.nn.Module:
    t = cfg.teachers
    seed = _teacher_seed(cfg, index)
    model = build_seeded_model(spec, shape, k, seed)
    rows = teacher_rows(cfg, index, len(x))
    if rows is not None:
        x, y = x[torch.from_numpy(rows)], y[torch.from_numpy(rows)]
    opt = make_optimizer("adam", list(model.parameters()), t.lr)
    fit_supervised(
        model,
        opt,
        x,
        y,
        epochs=t.epochs,
        batch_size=t.batch_size,
        gen=torch.Generator().manual_seed(seed),
    )
    return model


def build_teachers(
    cfg: FedkdConfig, progress: Callable[[str], None] | None = None, workers: int = 1
) -> TeacherBundle:
    """Train (or load from ``teachers.checkpoint`` or the cache) ``teachers.count`` teachers.

    Teachers not in the cache train concurrently on ``workers`` threads; each depends
    only on its own seed, so the result does not depend on ``workers``.

    Parameters
    ----------
    cfg : FedkdConfig
        The run's config (data, seed and the ``teachers`` section).
    progress : callable, optional
        Called with a status line before training.
    workers : int
        Threads that train the teachers not found.

    Returns
    -------
    TeacherBundle
        The teachers and their logits on the proxy and test splits.

    """
    splits = make_splits(cfg.data, cfg.seed)
    k = splits.data.num_classes
    try:
        shape = teacher_shape(cfg.data, splits, cfg.seed)
    except ValueError as err:
        raise ConfigError(f"data.teacher_view={cfg.data.teacher_view!r}: {err}") from None
    xt = torch.from_numpy(teacher_x(cfg.data, splits, splits.teacher, cfg.seed))
    xs = torch.from_numpy(teacher_x(cfg.data, splits, splits.test, cfg.seed))
    xp = torch.from_numpy(teacher_x(cfg.data, splits, splits.proxy, cfg.seed))
    yt = torch.from_numpy(splits.data.y[splits.teacher])
    ys = torch.from_numpy(splits.data.y[splits.test])
    t = cfg.teachers
    specs = _teacher_specs(t.models, t.count, shape, k)
    paths = [
        cache_dir() / "teachers" / f"{_cache_key(cfg, i, spec)}.pt" for i, spec in enumerate(specs)
    ]
    models, cached = _found_teachers(t, specs, shape, k, paths)
    todo = [i for i, model in enumerate(models) if model is None]
    if todo and progress:
        progress(f"training {len(todo)} teacher(s) on {len(yt)} samples")

    def train(i: int) -> torch.nn.Module:
        model = _train_one(cfg, i, specs[i], shape, k, xt, yt)
        if t.cache:
            _save_cached(model, paths[i])
        return model

    _train_concurrently(train, todo, models, workers)
    ready = [m for m in models if m is not None]

    def stacked(x: torch.Tensor) -> np.ndarray:
        if not ready:
            return np.zeros((0, len(x), k), np.float32)
        return np.stack([predict_logits(m, x).numpy() for m in ready])

    test_logits = stacked(xs)
    return TeacherBundle(
        specs=specs,
        parameters=[count_parameters(m) for m in ready],
        proxy_logits=stacked(xp),
        test_logits=test_logits,
        test_accuracy=[accuracy(torch.from_numpy(z), ys) for z in test_logits],
        train_accuracy=[accuracy(predict_logits(m, xt), yt) for m in models],
        cached=cached,
        models=ready,
    )


def _teacher_specs(models: list[str], count: int, shape: tuple[int, ...], k: int) -> list[str]:
    """Each teacher's model spec (``models`` round-robin); one that cannot fit is refused."""
    specs = [models[i % len(models)] for i in range(count)]
    for spec in specs:
        try:
            build_model(spec, shape, k)
        except ValueError as err:
            raise ConfigError(f"teachers.models: {spec!r}: {err}") from None
    return specs


def _found_teachers(
    t: TeachersConfig, specs: list[str], shape: tuple[int, ...], k: int, paths: list[Path]
) -> tuple[list[torch.nn.Module | None], list[bool]]:
    """Teachers from ``teachers.checkpoint`` or the cache (None: to train), and which were."""
    loaded: list[dict[str, torch.Tensor]] | None = None
    if t.checkpoint:
        path = Path(t.checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(f"teachers.checkpoint={t.checkpoint!r}: file not found")
        loaded = _read_checkpoint(path, t.checkpoint, t.count)
    models: list[torch.nn.Module | None] = [None] * len(specs)
    cached = [False] * len(specs)
    for i, spec in enumerate(specs):
        if loaded is not None:
            model = build_model(spec, shape, k)
            try:
                model.load_state_dict(loaded[i])
            except (RuntimeError, ValueError, TypeError) as err:
                reason = " ".join(str(err).split())[:200]
                raise ConfigError(
                    f"teachers.checkpoint={t.checkpoint!r}: state dict {i} does not fit "
                    f"teacher model {spec!r} for inputs {shape} and {k} classes ({reason})"
                ) from None
            models[i], cached[i] = model, True
        elif t.cache and paths[i].is_file() and (model := _cached(paths[i], spec, shape, k)):
            models[i], cached[i] = model, True
    return models, cached


def _save_cached(model: torch.nn.Module, path: Path) -> None:
    """Write a trained teacher to the cache atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _train_concurrently(
    train: Callable[[int], torch.nn.Module],
    todo: list[int],
    models: list[torch.nn.Module | None],
    workers: int,
) -> None:
    """``models[i] = train(i)`` for each ``i`` in ``todo``, on up to ``workers`` threads.

    Teachers are independent (own seed, own bootstrap): they train concurrently, each on
    one torch thread whatever the caller's setting (float results depend on it, and a
    cached teacher must not depend on which command trained it).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max(1, min(workers, len(todo) or 1))) as pool:
            for i, model in zip(todo, pool.map(train, todo), strict=True):
                models[i] = model
    finally:
        torch.set_num_threads(threads)


def _read_checkpoint(path: Path, given: str, count: int) -> list[dict[str, torch.Tensor]]:
    """The list of ``count`` state dicts in a ``teachers.checkpoint`` file (one-line errors)."""
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - unreadable, truncated, foreign: one refusal
        reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
        raise ConfigError(
            f"teachers.checkpoint={given!r}: not a readable teacher checkpoint "
            f"({type(err).__name__}: {reason}); write one with save_teachers_checkpoint"
        ) from None
    ok = isinstance(loaded, list) and all(
        isinstance(sd, dict)
        and all(isinstance(n, str) and isinstance(v, torch.Tensor) for n, v in sd.items())
        for sd in loaded
    )
    if not ok or len(loaded) != count:
        got = f"a list of {len(loaded)}" if isinstance(loaded, list) else type(loaded).__name__
        raise ConfigError(
            f"teachers.checkpoint={given!r}: expected a list of {count} state dicts "
            f"(teachers.count), got {got}{'' if ok else ' (not all name -> tensor dicts)'}"
        )
    return loaded


def _cached(path: Path, spec: str, shape: tuple[int, ...], k: int) -> torch.nn.Module | None:
    """The teacher cached in ``path``; None (it is retrained) if the file is unreadable."""
    model = build_model(spec, shape, k)
    try:
        model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception as err:  # noqa: BLE001 - a corrupt cache entry is rebuilt, not fatal
        log.warning("cached teacher %s is unreadable (%s); training it again", path, err)
        return None
    return model


def save_teachers_checkpoint(models: list[torch.nn.Module], path: str | Path) -> None:
    """Write ``models`` in the format ``teachers.checkpoint`` loads (list of state dicts)."""
    torch.save([m.state_dict() for m in models], path)
