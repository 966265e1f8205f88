"""Trained teachers kept between runs: the cache (by config hash) and fedkd's checkpoints.

Both are written by fedkd itself and read with ``torch.load(weights_only=True)``; a
user's own weights go through :mod:`fedkd.teachers.weights` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import torch

from fedkd.config import FedkdConfig, TeachersConfig
from fedkd.data import cache_dir
from fedkd.errors import ConfigError
from fedkd.models import build_model
from fedkd.teachers.training import TRAINING_RECIPE

log = logging.getLogger("fedkd")


def cache_key(cfg: FedkdConfig, index: int, spec: str) -> str:
    """Hash of everything teacher ``index`` of model ``spec`` depends on."""
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


def cache_paths(cfg: FedkdConfig, specs: list[str]) -> list[Path]:
    """Where each trained teacher is cached."""
    root = cache_dir() / "teachers"
    return [root / f"{cache_key(cfg, i, spec)}.pt" for i, spec in enumerate(specs)]


def found_teachers(
    t: TeachersConfig, specs: list[str], shape: tuple[int, ...], k: int, paths: list[Path]
) -> tuple[list[torch.nn.Module | None], list[bool]]:
    """Teachers from ``teachers.checkpoint`` or the cache (None: to train), and which were."""
    loaded: list[dict[str, torch.Tensor]] | None = None
    if t.checkpoint:
        path = Path(t.checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(f"teachers.checkpoint={t.checkpoint!r}: file not found")
        loaded = read_checkpoint(path, t.checkpoint, t.count)
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
        elif t.cache and paths[i].is_file() and (model := load_cached(paths[i], spec, shape, k)):
            models[i], cached[i] = model, True
    return models, cached


def save_cached(model: torch.nn.Module, path: Path) -> None:
    """Write a trained teacher to the cache atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, given: str, count: int) -> list[dict[str, torch.Tensor]]:
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


def load_cached(path: Path, spec: str, shape: tuple[int, ...], k: int) -> torch.nn.Module | None:
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
