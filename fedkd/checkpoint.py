"""Round checkpoints of the server side of a run: what ``fedkd run --resume`` needs.

After every completed round, ``<run dir>/checkpoint/server-r<R>.pt`` holds the strategy's
state (:meth:`KDStrategy.checkpoint_state`), the metrics rows so far, the global RNG
states and the time spent; it is written to a temporary file and renamed, so a
half-written checkpoint is never read. Node states live in the engine's
:class:`fedkd.state_store.ClientStateStore`, committed right after the checkpoint.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedkd.results import atomic_write_bytes

_NAME = re.compile(r"^server-r(?P<round>\d+)\.pt$")


def checkpoint_dir(out: Path) -> Path:
    """Folder of a run's checkpoints."""
    return out / "checkpoint"


def rng_states() -> dict[str, Any]:
    """The process-wide RNG states (Python, numpy, torch)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def save_checkpoint(out: Path, server_round: int, payload: dict[str, Any]) -> Path:
    """Write round ``server_round``'s checkpoint atomically; older ones are removed."""
    folder = checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"server-r{server_round}.pt"
    buf = io.BytesIO()
    torch.save({"round": server_round, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def prune_checkpoints(out: Path, keep_round: int) -> None:
    """Delete checkpoints older than ``keep_round`` and stray temporary files."""
    folder = checkpoint_dir(out)
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m is None or int(m["round"]) < keep_round:
            p.unlink(missing_ok=True)


def latest_checkpoint(out: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint of the run in ``out`` (``None`` if there is none)."""
    folder = checkpoint_dir(out)
    if not folder.is_dir():
        return None
    found = sorted(
        (int(m["round"]), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) is not None
    )
    if not found:
        return None
    return torch.load(found[-1][1], weights_only=False)
