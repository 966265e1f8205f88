"""The ``[teachers]`` and ``[student]`` tables: which models are trained where.

Model specs are parsed and checked by :mod:`fedkd.validation`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from fedkd.config.section import MAX_BATCH, Section

_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class GivenTeacher(Section):
    """One teacher the user brings (``[[teachers.given]]``): a model and its weights.

    Exactly one of ``factory`` (any importable callable returning an ``nn.Module``) or
    ``model`` (a registered model spec). The weights are loaded without pickle and never
    trained.
    """

    factory: str | None = Field(
        None,
        description="Import path 'package.module:callable' of a function (or class) that "
        "returns the teacher nn.Module; input_shape/num_classes are passed if it accepts them.",
    )
    model: str | None = Field(
        None, description="A registered model spec instead of a factory (e.g. 'cnn:width=32')."
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the factory (factory only)."
    )
    weights: str = Field(
        description="The teacher's weights: a .safetensors file or an .npz of arrays "
        "(state_dict names as keys); pickle files (.pt/.pth/.bin) are refused."
    )
    name: str | None = Field(
        None, max_length=200, description="Label in logs and summary.json (default: factory)."
    )

    @field_validator("factory")
    @classmethod
    def _import_path(cls, v: str | None) -> str | None:
        if v is not None and not _FACTORY.match(v):
            raise ValueError(
                f"{v!r} is not an import path; use 'package.module:callable' (e.g. "
                "'mypkg.nets:make_teacher')"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> GivenTeacher:
        if (self.factory is None) == (self.model is None):
            raise ValueError("give exactly one of factory='pkg.module:callable' or model='spec'")
        if self.model is not None and self.kwargs:
            raise ValueError("kwargs go with factory; a model spec carries its own arguments")
        return self

    @property
    def label(self) -> str:
        """What logs and ``summary.json`` call this teacher."""
        return self.name or self.factory or f"{self.model}"


class TeachersConfig(Section):
    """Server-side teachers: trained on the teacher split (cached by config hash), or given."""

    count: int = Field(
        3,
        ge=0,
        le=64,
        description="Number of teachers (0 = teacher-free); with teachers.given (which "
        "replace trained teachers), leave it unset or equal to their number.",
    )
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
    given: list[GivenTeacher] = Field(
        default_factory=list,
        max_length=64,
        description="Teachers the user brings ([[teachers.given]] tables: factory or model, "
        "kwargs, weights); they replace trained teachers and are never retrained "
        "(docs/teachers.md).",
    )
    python_path: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Folders put in front of sys.path to import teachers.given factories.",
    )
    inference_batch_size: int = Field(
        2048,
        ge=1,
        le=MAX_BATCH,
        description="Rows per forward pass when the teachers compute their logits "
        "(proxy, test and teacher split).",
    )
    inference_memory_mb: float = Field(
        256.0,
        gt=0,
        le=1e6,
        description="Given teachers: fewer rows per forward pass when one batch's "
        "activations (every module's output, measured on one input) would exceed this.",
    )

    @model_validator(mode="before")
    @classmethod
    def _count_of_given(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("given"), list):
            return data
        n = len(data["given"])
        if not n:
            return data
        if "count" not in data:
            return {**data, "count": n}
        if data["count"] != n:
            raise ValueError(
                f"teachers.count={data['count']!r} but {n} teachers.given: the given "
                "teachers replace trained ones; leave count unset or set it to their number"
            )
        return data

    @model_validator(mode="after")
    def _given_alone(self) -> TeachersConfig:
        if self.given and self.checkpoint is not None:
            raise ValueError(
                "teachers.given and teachers.checkpoint both load teachers; use one of them"
            )
        return self


class StudentConfig(Section):
    """The clients' student model."""

    model: str = Field("cnn:width=16,depth=2", description="Model spec of every client's student.")
