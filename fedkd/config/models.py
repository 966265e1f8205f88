"""The ``[teachers]`` and ``[student]`` tables: which models are trained where.

Model specs are parsed and checked by :mod:`fedkd.validation`.
"""

from __future__ import annotations

from pydantic import Field

from fedkd.config.section import MAX_BATCH, Section


class TeachersConfig(Section):
    """Server-side teachers, trained on the teacher split (cached by config hash)."""

    count: int = Field(3, ge=0, le=64, description="Number of teachers (0 = teacher-free).")
    models: list[str] = Field(
        default_factory=lambda: ["cnn:width=32"],
        min_length=1,
        description="Model specs, cycled over the teachers (e.g. ['cnn:width=32', "
        "'mlp:width=256']).",
    )
    epochs: int = Field(20, ge=1, le=10_000, description="Training epochs per teacher.")
    lr: float = Field(1e-2, gt=0, le=10, description="Adam learning rate.")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Mini-batch size.")
    bootstrap: bool = Field(
        True, description="Train each teacher on a different bootstrap of the split."
    )
    disjoint: bool = Field(
        False,
        description="Train each teacher on its own disjoint shard of the split (PATE "
        "needs it; overrides bootstrap).",
    )
    checkpoint: str | None = Field(
        None,
        description="Path to a .pt file saved by fedkd (list of state dicts); loads "
        "teachers instead of training.",
    )
    cache: bool = Field(True, description="Reuse teachers trained by an earlier run.")


class StudentConfig(Section):
    """The clients' student model."""

    model: str = Field("cnn:width=16,depth=2", description="Model spec of every client's student.")
