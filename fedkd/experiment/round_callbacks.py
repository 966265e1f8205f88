"""What runs after each round: ``metrics.jsonl`` and the round checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from fedkd.checkpoint import prune_checkpoints, save_checkpoint
from fedkd.results import MetricsLog


class MetricsWriter:
    """Round callback: appends each row to ``metrics.jsonl`` (rewritten from ``rows`` first)."""

    def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
        self.log = MetricsLog(path, rows)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` (fsynced, so a killed run keeps it)."""
        self.log.append(row)


class CheckpointWriter:
    """Round callback: a checkpoint after each round, committed to the grid, older pruned.

    Parameters
    ----------
    out : Path
        Run directory.
    grid : Grid
        A grid with a state store (``commit_round``).
    digest : str
        The config's digest (:func:`fedkd.checkpoint.config_digest`).
    payload : callable
        Returns what the checkpoint holds (read when the round completes).

    """

    def __init__(
        self, out: Path, grid: Grid, digest: str, payload: Callable[[], dict[str, Any]]
    ) -> None:
        self.out, self.grid, self.digest, self.payload = out, grid, digest, payload

    def __call__(self, row: dict[str, Any]) -> None:
        """Checkpoint the round of ``row``."""
        rnd = int(row["round"])
        save_checkpoint(self.out, rnd, self.payload(), config_sha256=self.digest)
        self.grid.commit_round(rnd)  # type: ignore[attr-defined]
        prune_checkpoints(self.out, rnd)
