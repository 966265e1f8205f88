"""Run directory I/O: config.json, metrics.jsonl (a row per round, flushed), summary.json."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file ``.<name>.tmp``, fsync, rename.

    A reader never sees a half-written file under ``path``.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=float) + "\n").encode())


class MetricsLog:
    """Appends one JSON line per completed round and fsyncs it, so a killed run keeps it."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows or []))
        os.replace(tmp, path)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` as one line."""
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class RunResult:
    """What :func:`fedkd.run` returns: the summary and the per-round metrics."""

    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]
